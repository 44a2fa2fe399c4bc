//! `leakcheck summary`: every leaked task of many reports grouped by spawn
//! site, worst site first, as a table for people or JSON for machines.
//!
//! A site is the pair the reports group by: where tokio says the task was
//! spawned and, when that location is a `#[track_caller]` helper's caller,
//! the `spawn` call inside the helper. Two library spawn points reached from
//! one line of a test stay two sites.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use leakcheck::{Frame, Mode, SCHEMA_VERSION, SourceLocation, TOKIO_UNSTABLE_HINT};
use serde::Serialize;

use crate::document::LoadedReport;
use crate::text::{self, Align};

/// How many test names a site's detail block (and `cargo leakcheck`'s
/// verdict) lists before "and N more".
pub const TESTS_LISTED: usize = 5;

/// The `kind` of `summary --json` output.
pub const KIND_SUMMARY: &str = "leak_summary";

/// All reports, folded by spawn site.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Always [`SCHEMA_VERSION`]: the summary follows the reports' versioning.
    pub schema_version: u32,
    /// Always [`KIND_SUMMARY`].
    pub kind: &'static str,
    /// Reports read.
    pub reports: usize,
    /// Reports with at least one leaked task.
    pub reports_with_leaks: usize,
    /// Leaked tasks over all reports, degraded ones included.
    pub leaked: usize,
    /// One entry per spawn site, most tasks first (then most tests, then site).
    pub sites: Vec<SiteSummary>,
    /// Leaks from reports written without `--cfg tokio_unstable`, whose spawn
    /// sites are unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degraded: Option<DegradedSummary>,
}

/// One spawn site across all reports.
#[derive(Debug, Serialize)]
pub struct SiteSummary {
    /// Where the tasks were spawned.
    pub site: SourceLocation,
    /// `warn` when every report with this site was written in `warn` mode
    /// (its leaks did not fail their tests), else `fail`.
    pub mode: Mode,
    /// The `spawn` call behind `site` when `site` is the caller of a
    /// `#[track_caller]` spawn helper.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spawn_call: Option<Frame>,
    /// Leaked tasks spawned here, over all reports.
    pub tasks: usize,
    /// Tests (report names) that leaked a task spawned here, sorted.
    pub tests: Vec<String>,
    /// Age of the oldest task spawned here when its report was written.
    pub oldest_age_ms: u64,
    /// Labels (e.g. request ids) carried by these tasks, sorted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// The spawn backtrace of the oldest task that has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub representative: Option<Representative>,
}

/// The task that stands for a site, and its spawn backtrace.
#[derive(Debug, Serialize)]
pub struct Representative {
    /// The report it comes from.
    pub test: String,
    /// tokio's task id in that test.
    pub task_id: u64,
    /// Its spawn backtrace, innermost frame first.
    pub frames: Vec<Frame>,
}

/// Leaks whose spawn sites are unknown.
#[derive(Debug, Serialize)]
pub struct DegradedSummary {
    /// Leaked tasks counted by the runtime.
    pub tasks: usize,
    /// The tests that leaked them, sorted.
    pub tests: Vec<String>,
}

#[derive(Default)]
struct SiteAccumulator {
    tasks: usize,
    failed_a_test: bool,
    tests: BTreeSet<String>,
    oldest_age_ms: u64,
    labels: BTreeSet<String>,
    representative: Option<(u64, Representative)>,
}

/// Folds the reports by spawn site.
pub fn summarize(reports: &[LoadedReport]) -> Summary {
    let mut sites: BTreeMap<(&SourceLocation, Option<&Frame>), SiteAccumulator> = BTreeMap::new();
    let mut degraded_tasks = 0;
    let mut degraded_tests = BTreeSet::new();
    for LoadedReport { report, .. } in reports {
        if report.degraded {
            degraded_tasks += report.leaked;
            if report.leaked > 0 {
                degraded_tests.insert(report.test.clone());
            }
            continue;
        }
        for group in &report.sites {
            let acc = sites
                .entry((&group.site, group.spawn_call.as_ref()))
                .or_default();
            acc.tasks += group.count;
            acc.failed_a_test |= report.mode == Mode::Fail;
            acc.tests.insert(report.test.clone());
            acc.oldest_age_ms = acc.oldest_age_ms.max(group.oldest_age_ms);
            for task in &group.tasks {
                if let Some(label) = &task.label {
                    acc.labels.insert(label.clone());
                }
                let Some(stack) = task.stack.and_then(|i| report.stacks.get(i)) else {
                    continue;
                };
                if acc
                    .representative
                    .as_ref()
                    .is_none_or(|(age, _)| task.age_ms > *age)
                {
                    let representative = Representative {
                        test: report.test.clone(),
                        task_id: task.id,
                        frames: stack.frames.clone(),
                    };
                    acc.representative = Some((task.age_ms, representative));
                }
            }
        }
    }
    let mut sites: Vec<SiteSummary> = sites
        .into_iter()
        .map(|((site, spawn_call), acc)| SiteSummary {
            site: site.clone(),
            spawn_call: spawn_call.cloned(),
            mode: if acc.failed_a_test {
                Mode::Fail
            } else {
                Mode::Warn
            },
            tasks: acc.tasks,
            tests: acc.tests.into_iter().collect(),
            oldest_age_ms: acc.oldest_age_ms,
            labels: acc.labels.into_iter().collect(),
            representative: acc.representative.map(|(_, r)| r),
        })
        .collect();
    // Worst first; the map already ordered equal sites by location.
    sites.sort_by(|a, b| {
        b.tasks
            .cmp(&a.tasks)
            .then(b.tests.len().cmp(&a.tests.len()))
    });
    Summary {
        schema_version: SCHEMA_VERSION,
        kind: KIND_SUMMARY,
        reports: reports.len(),
        reports_with_leaks: reports.iter().filter(|r| r.report.leaked > 0).count(),
        leaked: reports.iter().map(|r| r.report.leaked).sum(),
        sites,
        degraded: (degraded_tasks > 0).then(|| DegradedSummary {
            tasks: degraded_tasks,
            tests: degraded_tests.into_iter().collect(),
        }),
    }
}

/// Whether any report leaked anything.
pub fn has_leaks(summary: &Summary) -> bool {
    summary.leaked > 0
}

/// One sentence: how many tasks leaked, in how many reports, from how many sites.
pub fn headline(summary: &Summary) -> String {
    if summary.leaked == 0 {
        return format!(
            "no leaked tasks in {}",
            text::count(summary.reports, "report")
        );
    }
    let mut line = format!(
        "{} leaked in {} of {}",
        text::count(summary.leaked, "task"),
        summary.reports_with_leaks,
        text::count(summary.reports, "report"),
    );
    if !summary.sites.is_empty() {
        let _ = write!(
            line,
            ", from {}",
            text::count(summary.sites.len(), "spawn site")
        );
    }
    if let Some(degraded) = &summary.degraded {
        let _ = write!(
            line,
            "; {} with unknown sites",
            text::count(degraded.tasks, "task")
        );
    }
    line
}

/// GitHub Actions `::error` annotations: one per spawn site, at the site,
/// plus one without a file for leaks whose sites are unknown.
pub fn render_github(summary: &Summary) -> String {
    let mut out = String::new();
    for site in &summary.sites {
        let message = format!(
            "{} spawned here leaked in {} ({}), oldest {}; await or abort it before the test returns",
            text::count(site.tasks, "task"),
            text::count(site.tests.len(), "test"),
            list_names(&site.tests),
            text::age(site.oldest_age_ms)
        );
        out.push_str(&leakcheck::github_annotation(
            &site.site,
            site.mode,
            "leakcheck: leaked tasks",
            &message,
        ));
        out.push('\n');
    }
    if let Some(degraded) = &summary.degraded {
        let _ = writeln!(
            out,
            "::error title=leakcheck%3A leaked tasks::{} leaked in {} ({}) with unknown spawn sites; {}",
            text::count(degraded.tasks, "task"),
            text::count(degraded.tests.len(), "test"),
            list_names(&degraded.tests).replace('%', "%25"),
            TOKIO_UNSTABLE_HINT.replace('%', "%25")
        );
    }
    out
}

/// The table and one detail block per site, for people.
pub fn render_text(summary: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "leakcheck: {}", headline(summary));
    if summary.leaked == 0 {
        return out;
    }
    if !summary.sites.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = summary
            .sites
            .iter()
            .map(|s| {
                vec![
                    s.tasks.to_string(),
                    s.tests.len().to_string(),
                    text::age(s.oldest_age_ms),
                    match &s.spawn_call {
                        Some(call) => format!("{} via {}", s.site, call.function),
                        None => s.site.to_string(),
                    },
                ]
            })
            .collect();
        out.push_str(&text::table(
            &[
                ("TASKS", Align::Right),
                ("TESTS", Align::Right),
                ("OLDEST", Align::Right),
                ("SPAWN SITE", Align::Left),
            ],
            &rows,
        ));
    }
    for site in &summary.sites {
        out.push('\n');
        render_site(&mut out, site);
    }
    if let Some(degraded) = &summary.degraded {
        let _ = writeln!(
            out,
            "\n── spawn site unknown · {} in {} ──\n  tests: {}\n  these reports were written without `--cfg tokio_unstable`\n  hint: {TOKIO_UNSTABLE_HINT}",
            text::count(degraded.tasks, "task"),
            text::count(degraded.tests.len(), "test"),
            list_names(&degraded.tests),
        );
    }
    out
}

fn render_site(out: &mut String, site: &SiteSummary) {
    let _ = writeln!(
        out,
        "── {} · {} in {} · oldest {} ──",
        site.site,
        text::count(site.tasks, "task"),
        text::count(site.tests.len(), "test"),
        text::age(site.oldest_age_ms)
    );
    if let Some(call) = &site.spawn_call {
        let _ = writeln!(
            out,
            "  spawn call: {call} (the site above is its #[track_caller] caller)"
        );
    }
    let _ = writeln!(out, "  tests: {}", list_names(&site.tests));
    if !site.labels.is_empty() {
        let _ = writeln!(out, "  labels: {}", list_names(&site.labels));
    }
    match &site.representative {
        Some(r) => {
            let _ = writeln!(out, "  spawn backtrace (task {} in {}):", r.task_id, r.test);
            for (i, frame) in r.frames.iter().enumerate() {
                let _ = writeln!(out, "    {i}: {frame}");
            }
        }
        None => {
            out.push_str("  no spawn backtrace recorded (LEAKCHECK_BACKTRACE=full records one)\n")
        }
    }
}

/// Up to [`TESTS_LISTED`] names, then "and N more".
pub fn list_names(names: &[String]) -> String {
    let shown = names
        .iter()
        .take(TESTS_LISTED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    match names.len().saturating_sub(TESTS_LISTED) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::{Document, parse};

    /// A report of `test` with one task spawned at tests/a.rs:9 through the
    /// given `#[track_caller]` helper's `spawn` line.
    fn report(test: &str, spawn_line: u32) -> LoadedReport {
        report_in_mode(test, spawn_line, "fail")
    }

    fn report_in_mode(test: &str, spawn_line: u32, mode: &str) -> LoadedReport {
        let json = format!(
            r#"{{"schema_version": 3, "kind": "leak_report", "test": "{test}", "mode": "{mode}",
            "created_at_unix_ms": 1, "grace_ms": 250, "leaked": 1,
            "sites": [{{"site": {{"file": "tests/a.rs", "line": 9, "column": 5}},
                       "spawn_call": {{"function": "lib::start", "file": "src/lib.rs", "line": {spawn_line}}},
                       "count": 1, "oldest_age_ms": 3, "tasks": [{{"id": 4, "age_ms": 3}}]}}]}}"#
        );
        let Ok(Document::Report(report)) = parse(json.as_bytes()) else {
            panic!("the fixture is a leak report");
        };
        LoadedReport {
            path: format!("{test}.json").into(),
            report,
        }
    }

    #[test]
    fn sites_are_the_pair_of_reported_location_and_spawn_call() {
        let summary = summarize(&[report("a", 40), report("b", 40), report("c", 57)]);
        let sites: Vec<(String, usize)> = summary
            .sites
            .iter()
            .map(|s| (s.spawn_call.as_ref().unwrap().to_string(), s.tasks))
            .collect();
        assert_eq!(
            sites,
            [
                ("lib::start at src/lib.rs:40".to_owned(), 2),
                ("lib::start at src/lib.rs:57".to_owned(), 1)
            ]
        );
        let text = render_text(&summary);
        assert!(text.contains("from 2 spawn sites"), "{text}");
        assert!(text.contains("tests/a.rs:9:5 via lib::start"), "{text}");
        assert!(
            text.contains("  spawn call: lib::start at src/lib.rs:57 (the site above"),
            "{text}"
        );
    }

    #[test]
    fn sites_only_warn_mode_reports_leaked_at_are_github_warnings() {
        let summary = summarize(&[
            report_in_mode("a", 40, "warn"),
            report_in_mode("b", 57, "warn"),
            report_in_mode("c", 57, "fail"),
        ]);
        let github = render_github(&summary);
        let levels: Vec<&str> = github
            .lines()
            .map(|line| line.split_once(' ').unwrap().0)
            .collect();
        // The site with a failing test first (more tasks), then the warn-only one.
        assert_eq!(levels, ["::error", "::warning"], "{github}");
    }
}
