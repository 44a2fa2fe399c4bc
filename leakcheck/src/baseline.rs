//! The leak baseline for gradual adoption (goleak's `IgnoreCurrent`, kept in
//! a committed file the insta way): [`Baseline`] lists the spawn sites that
//! leaked when it was recorded, and a test whose leaks are all listed passes
//! with a note instead of failing.
//!
//! `cargo leakcheck baseline` records the file from a run's reports;
//! `cargo leakcheck test` points `LEAKCHECK_BASELINE` at it. An entry is keyed
//! by test name, spawn-site file and the function that spawned (the first
//! frame of the spawn backtrace), so edits elsewhere in the file do not
//! invalidate it; the line only breaks ties between entries of one function.
//! For each test with entries the harness writes a [`BaselineOutcome`]
//! (which entries still leak, which are fixed) to `<report dir>/baseline/`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::report::{LeakReport, SiteGroup};

/// Version of the JSON layout of [`Baseline`] and [`BaselineOutcome`].
pub const BASELINE_SCHEMA_VERSION: u32 = 1;

/// The file name `cargo leakcheck baseline` writes at the workspace root.
pub const DEFAULT_BASELINE_FILE: &str = "leakcheck-baseline.json";

/// Subdirectory of the report directory receiving one [`BaselineOutcome`]
/// per test that has baseline entries.
pub const BASELINE_OUTCOME_DIR: &str = "baseline";

/// One spawn site that leaked in one test when the baseline was recorded.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BaselineEntry {
    /// The test, as in [`LeakReport::test`].
    pub test: String,
    /// The spawn site's file, workspace-relative.
    pub file: String,
    /// The function that called `spawn` (first frame of the spawn backtrace);
    /// absent when backtraces were off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// The spawn site's line when recorded: only breaks ties.
    pub line: u32,
}

impl std::fmt::Display for BaselineEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`: {}:{}", self.test, self.file, self.line)?;
        match &self.function {
            Some(function) => write!(f, " in {function}"),
            None => Ok(()),
        }
    }
}

/// The committed baseline file: entries sorted by test, file, function, line.
///
/// ```json
/// {
///   "schema_version": 1,
///   "kind": "leak_baseline",
///   "entries": [
///     { "test": "app::serves", "file": "src/conn.rs", "function": "app::conn::spawn_reader", "line": 88 }
///   ]
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    /// Always [`BASELINE_SCHEMA_VERSION`] when written by this version.
    pub schema_version: u32,
    /// Always `"leak_baseline"`.
    pub kind: String,
    /// The recorded leaks.
    pub entries: Vec<BaselineEntry>,
}

/// How one test's leaks compared with its baseline entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaselineOutcome {
    /// Always [`BASELINE_SCHEMA_VERSION`] when written by this version.
    pub schema_version: u32,
    /// Always `"baseline_outcome"`.
    pub kind: String,
    /// The test.
    pub test: String,
    /// Entries whose spawn site leaked again.
    pub still_leaking: Vec<BaselineEntry>,
    /// Entries whose spawn site did not leak: remove them from the baseline.
    pub fixed: Vec<BaselineEntry>,
}

/// A report split against a baseline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screened {
    /// The report with only the sites no entry covers; `None` when every
    /// leaked site was baselined.
    pub new: Option<LeakReport>,
    /// Leaked tasks at baselined sites.
    pub baselined_tasks: usize,
    /// The test's entries, split into still leaking and fixed.
    pub outcome: BaselineOutcome,
}

impl Baseline {
    /// The baseline of every leaked site in `reports` (degraded reports have
    /// no sites and contribute nothing).
    pub fn from_reports<'a>(reports: impl IntoIterator<Item = &'a LeakReport>) -> Baseline {
        let mut entries: Vec<BaselineEntry> = reports
            .into_iter()
            .flat_map(|report| report.sites.iter().map(|g| entry_for(report, g)))
            .collect();
        // Two groups can share a site (one per `#[track_caller]` spawn
        // call): each keeps its own entry, so duplicates stay.
        entries.sort();
        Baseline {
            schema_version: BASELINE_SCHEMA_VERSION,
            kind: "leak_baseline".to_owned(),
            entries,
        }
    }

    /// Parses a baseline file's text, checking its version and kind.
    pub fn parse(text: &str) -> Result<Baseline, String> {
        let baseline: Baseline = serde_json::from_str(text)
            .map_err(|err| format!("is not a leakcheck baseline: {err}"))?;
        if baseline.kind != "leak_baseline" {
            return Err(format!(
                "has kind {:?}, expected \"leak_baseline\"",
                baseline.kind
            ));
        }
        if baseline.schema_version != BASELINE_SCHEMA_VERSION {
            return Err(format!(
                "has schema_version {}, this leakcheck reads {BASELINE_SCHEMA_VERSION}: re-record it with `cargo leakcheck baseline`",
                baseline.schema_version
            ));
        }
        Ok(baseline)
    }

    /// The JSON form, pretty-printed, ending with a newline.
    pub fn to_json(&self) -> String {
        let mut json = serde_json::to_string_pretty(self).expect("a Baseline always serializes");
        json.push('\n');
        json
    }

    /// Whether `test` has entries.
    pub fn covers(&self, test: &str) -> bool {
        self.entries.iter().any(|e| e.test == test)
    }

    /// Splits `test`'s verdict into new leaks and baselined ones.
    ///
    /// A leaked site matches an unused entry of the same test, file and
    /// function (a missing function matches any); among several, the one on
    /// the same line wins. Entries left unmatched are fixed.
    pub fn screen(&self, test: &str, verdict: Option<LeakReport>) -> Screened {
        let entries: Vec<&BaselineEntry> = self.entries.iter().filter(|e| e.test == test).collect();
        let mut used = vec![false; entries.len()];
        let mut still_leaking = Vec::new();
        let mut baselined_tasks = 0;
        let new = verdict.and_then(|mut report| {
            let mut kept = Vec::new();
            for group in std::mem::take(&mut report.sites) {
                let leaked = entry_for(&report, &group);
                let same_key = |i: &usize| {
                    !used[*i]
                        && entries[*i].file == leaked.file
                        && (entries[*i].function.is_none()
                            || leaked.function.is_none()
                            || entries[*i].function == leaked.function)
                };
                let pick = (0..entries.len())
                    .filter(same_key)
                    .find(|&i| entries[i].line == leaked.line)
                    .or_else(|| (0..entries.len()).find(same_key));
                match pick {
                    Some(i) => {
                        used[i] = true;
                        still_leaking.push(entries[i].clone());
                        baselined_tasks += group.count;
                    }
                    None => kept.push(group),
                }
            }
            if kept.is_empty() && !report.degraded {
                return None;
            }
            report.leaked -= baselined_tasks.min(report.leaked);
            report.sites = kept;
            Some(report)
        });
        let fixed = entries
            .iter()
            .zip(&used)
            .filter(|(_, used)| !**used)
            .map(|(entry, _)| (*entry).clone())
            .collect();
        Screened {
            new,
            baselined_tasks,
            outcome: BaselineOutcome {
                schema_version: BASELINE_SCHEMA_VERSION,
                kind: "baseline_outcome".to_owned(),
                test: test.to_owned(),
                still_leaking,
                fixed,
            },
        }
    }
}

/// The entry that would record `group` of `report`.
fn entry_for(report: &LeakReport, group: &SiteGroup) -> BaselineEntry {
    let function = group
        .tasks
        .iter()
        .find_map(|task| task.stack)
        .and_then(|index| report.stacks.get(index))
        .and_then(|stack| stack.frames.first())
        .map(|frame| frame.function.clone());
    BaselineEntry {
        test: report.test.clone(),
        file: group.site.file.clone(),
        function,
        line: group.site.line,
    }
}

/// The baseline named by `LEAKCHECK_BASELINE`, read once per process; a
/// missing or malformed file panics naming it (every test would otherwise
/// fail or pass for the wrong reason).
fn load(path: &Path) -> &'static Baseline {
    static BASELINE: OnceLock<Result<Baseline, String>> = OnceLock::new();
    let loaded = BASELINE.get_or_init(|| {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("{}: cannot be read: {err}", path.display()))?;
        Baseline::parse(&text).map_err(|problem| format!("{}: {problem}", path.display()))
    });
    match loaded {
        Ok(baseline) => baseline,
        Err(problem) => panic!("leakcheck: LEAKCHECK_BASELINE={problem}"),
    }
}

/// What the harness does with a test's leaks when a baseline is set: leaks
/// at baselined sites become a note on stderr, the outcome is written next to
/// the reports, and only the new leaks are returned.
pub(crate) fn apply(
    test: &str,
    leaks: Option<LeakReport>,
    baseline: Option<&Path>,
    report_dir: Option<&Path>,
) -> Option<LeakReport> {
    let Some(path) = baseline else {
        return leaks;
    };
    let baseline = load(path);
    if !baseline.covers(test) {
        return leaks;
    }
    let screened = baseline.screen(test, leaks);
    if screened.baselined_tasks > 0 {
        let plural = if screened.baselined_tasks == 1 {
            "task"
        } else {
            "tasks"
        };
        eprintln!(
            "leakcheck: {} leaked {plural} in `{test}` at spawn sites recorded in {}: not failing",
            screened.baselined_tasks,
            path.display()
        );
    }
    for entry in &screened.outcome.fixed {
        eprintln!(
            "leakcheck: baseline entry fixed, no longer leaks: {entry} (run `cargo leakcheck baseline` to drop it)"
        );
    }
    if let Some(dir) = report_dir {
        let dir: PathBuf = dir.join(BASELINE_OUTCOME_DIR);
        let json = serde_json::to_string_pretty(&screened.outcome)
            .expect("a BaselineOutcome always serializes");
        if let Err(err) = crate::output::write_json(&dir, test, &json) {
            eprintln!(
                "leakcheck: could not write the baseline outcome to {}: {err}",
                dir.display()
            );
        }
    }
    screened.new
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Frame, SourceLocation, Stack, TaskEntry};

    fn group(file: &str, line: u32, stack: Option<usize>) -> SiteGroup {
        SiteGroup {
            site: SourceLocation {
                file: file.to_owned(),
                line,
                column: 5,
            },
            spawn_call: None,
            count: 1,
            oldest_age_ms: 300,
            tasks: vec![TaskEntry {
                id: u64::from(line),
                name: None,
                age_ms: 300,
                spawned_by: Vec::new(),
                label: None,
                stack,
                parked_at: None,
                liveness: None,
            }],
        }
    }

    fn report(test: &str, sites: Vec<SiteGroup>) -> LeakReport {
        let stack = |function: &str| Stack {
            frames: vec![Frame {
                function: function.to_owned(),
                file: None,
                line: None,
            }],
        };
        LeakReport {
            schema_version: crate::SCHEMA_VERSION,
            kind: "leak_report".to_owned(),
            test: test.to_owned(),
            created_at_unix_ms: 0,
            grace_ms: 250,
            leaked: sites.iter().map(|g| g.count).sum(),
            ignored: 0,
            degraded: false,
            degraded_reason: None,
            mode: crate::Mode::Fail,
            subject: crate::report::Subject::Test,
            sites,
            stacks: vec![stack("app::start_heartbeat"), stack("app::accept_loop")],
            parked_at_missing: None,
        }
    }

    #[test]
    fn recorded_entries_are_sorted_and_keyed_by_function() {
        let a = report("app::b_test", vec![group("src/net.rs", 40, Some(1))]);
        let b = report("app::a_test", vec![group("src/beat.rs", 10, Some(0))]);
        let baseline = Baseline::from_reports([&a, &b]);
        assert_eq!(
            baseline.entries,
            [
                BaselineEntry {
                    test: "app::a_test".to_owned(),
                    file: "src/beat.rs".to_owned(),
                    function: Some("app::start_heartbeat".to_owned()),
                    line: 10,
                },
                BaselineEntry {
                    test: "app::b_test".to_owned(),
                    file: "src/net.rs".to_owned(),
                    function: Some("app::accept_loop".to_owned()),
                    line: 40,
                },
            ]
        );
        assert_eq!(Baseline::parse(&baseline.to_json()).unwrap(), baseline);
    }

    #[test]
    fn a_moved_baselined_site_still_matches_and_a_new_one_does_not() {
        let recorded = report("app::t", vec![group("src/beat.rs", 10, Some(0))]);
        let baseline = Baseline::from_reports([&recorded]);
        // The spawn moved down 3 lines (an edit above it); a new leak appeared.
        let today = report(
            "app::t",
            vec![
                group("src/beat.rs", 13, Some(0)),
                group("src/net.rs", 40, Some(1)),
            ],
        );
        let screened = baseline.screen("app::t", Some(today));
        let new = screened.new.expect("the net.rs leak is new");
        assert_eq!(new.leaked, 1);
        assert_eq!(new.sites.len(), 1);
        assert_eq!(new.sites[0].site.file, "src/net.rs");
        assert_eq!(screened.baselined_tasks, 1);
        assert_eq!(screened.outcome.still_leaking, baseline.entries);
        assert!(screened.outcome.fixed.is_empty());
    }

    #[test]
    fn entries_that_no_longer_leak_are_fixed() {
        let recorded = report(
            "app::t",
            vec![
                group("src/beat.rs", 10, Some(0)),
                group("src/net.rs", 40, Some(1)),
            ],
        );
        let baseline = Baseline::from_reports([&recorded]);
        let today = report("app::t", vec![group("src/beat.rs", 10, Some(0))]);
        let screened = baseline.screen("app::t", Some(today));
        assert_eq!(screened.new, None);
        assert_eq!(screened.outcome.fixed.len(), 1);
        assert_eq!(screened.outcome.fixed[0].file, "src/net.rs");

        let clean = baseline.screen("app::t", None);
        assert_eq!(clean.new, None);
        assert_eq!(clean.outcome.fixed, baseline.entries);
    }

    #[test]
    fn the_line_breaks_ties_within_one_function() {
        let recorded = report(
            "app::t",
            vec![
                group("src/beat.rs", 10, Some(0)),
                group("src/beat.rs", 20, Some(0)),
            ],
        );
        let baseline = Baseline::from_reports([&recorded]);
        let today = report("app::t", vec![group("src/beat.rs", 20, Some(0))]);
        let screened = baseline.screen("app::t", Some(today));
        assert_eq!(screened.outcome.still_leaking[0].line, 20);
        assert_eq!(screened.outcome.fixed[0].line, 10);
    }

    #[test]
    fn other_tests_entries_do_not_cover_a_test() {
        let recorded = report("app::other", vec![group("src/beat.rs", 10, Some(0))]);
        let baseline = Baseline::from_reports([&recorded]);
        assert!(!baseline.covers("app::t"));
        let today = report("app::t", vec![group("src/beat.rs", 10, Some(0))]);
        assert!(baseline.screen("app::t", Some(today)).new.is_some());
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        assert!(
            Baseline::parse("{")
                .unwrap_err()
                .starts_with("is not a leakcheck baseline")
        );
        let wrong = r#"{"schema_version": 9, "kind": "leak_baseline", "entries": []}"#;
        assert!(
            Baseline::parse(wrong)
                .unwrap_err()
                .contains("schema_version 9")
        );
    }
}
