//! `leakcheck diff`: how leaks changed between two reports, two report
//! directories (a pull request's run against main's) or two snapshots (the
//! LeakProf way to find a slow leak in a running service: snapshot it twice
//! and look at the sites that grew).
//!
//! A spawn site is matched across the two sides by where it is, not only by
//! its line: the same `file:line:column` is the same site; otherwise sites in
//! the same file spawned from the same function are paired, nearest line
//! first, so an unrelated edit above a `spawn` does not turn a known leak
//! into a "new" one. A site behind a `#[track_caller]` spawn helper is the
//! pair (reported location, the helper's `spawn` call), as in the reports, and
//! its spawn call must match too (by function and file). Reports without
//! spawn sites (built without `--cfg tokio_unstable`) are compared by their
//! counts.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use leakcheck::{Frame, SCHEMA_VERSION, SiteGroup, SourceLocation, Stack};
use serde::Serialize;

use crate::document::{Document, KIND_LEAK_REPORT, KIND_SNAPSHOT, LoadedReport};
use crate::error::CliError;
use crate::text::{self, Align};

/// The `kind` of `diff --json` output.
pub const KIND_DIFF: &str = "leak_diff";

/// How one site's count changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Absent before, present after.
    Appeared,
    /// More tasks after.
    Grew,
    /// Fewer tasks after, but some left.
    Shrank,
    /// Present before, absent after.
    Disappeared,
    /// Same count.
    Unchanged,
}

impl Change {
    fn of(before: usize, after: usize) -> Change {
        match (before, after) {
            (0, 0) => Change::Unchanged,
            (0, _) => Change::Appeared,
            (_, 0) => Change::Disappeared,
            (b, a) if a > b => Change::Grew,
            (b, a) if a < b => Change::Shrank,
            _ => Change::Unchanged,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Change::Appeared => "appeared",
            Change::Grew => "grew",
            Change::Shrank => "shrank",
            Change::Disappeared => "disappeared",
            Change::Unchanged => "unchanged",
        }
    }

    fn is_growth(self) -> bool {
        matches!(self, Change::Appeared | Change::Grew)
    }
}

/// One side of the comparison as read from the command line.
#[derive(Debug)]
pub enum Input {
    /// A live snapshot.
    Snapshot(PathBuf, leakcheck::Snapshot),
    /// Leak reports: one file, or every report of a directory.
    Reports(PathBuf, Vec<LoadedReport>),
}

impl Input {
    fn kind(&self) -> &'static str {
        match self {
            Input::Snapshot(..) => KIND_SNAPSHOT,
            Input::Reports(..) => KIND_LEAK_REPORT,
        }
    }

    fn path(&self) -> &Path {
        match self {
            Input::Snapshot(path, _) | Input::Reports(path, _) => path,
        }
    }
}

/// Reads one side: a directory is a set of reports (empty or missing only
/// with `allow_empty`), a file is a report or a snapshot.
pub fn load_input(path: &Path, allow_empty: bool) -> Result<Input, CliError> {
    if path.is_dir() || !path.exists() {
        let reports = crate::document::load_reports(&[path.to_owned()], "diff", allow_empty)?;
        return Ok(Input::Reports(path.to_owned(), reports));
    }
    Ok(match crate::document::load(path)? {
        Document::Snapshot(snapshot) => Input::Snapshot(path.to_owned(), snapshot),
        Document::Report(report) => Input::Reports(
            path.to_owned(),
            vec![LoadedReport {
                path: path.to_owned(),
                report,
            }],
        ),
    })
}

/// One side of the comparison, as summarized in the output.
#[derive(Debug, Serialize)]
pub struct Side {
    /// The file or directory.
    pub path: PathBuf,
    /// Documents read (1 for a file).
    pub documents: usize,
    /// Tasks: `live` of a snapshot, `leaked` summed over reports.
    pub tasks: usize,
    /// `captured_at_unix_ms` of a snapshot, the latest `created_at_unix_ms`
    /// of the reports (0 when there are none).
    pub at_unix_ms: u64,
}

/// One spawn site's change.
#[derive(Debug, Serialize)]
pub struct SiteDelta {
    /// Where the tasks were spawned (in the later document when the site is in it).
    pub site: SourceLocation,
    /// The `spawn` call behind `site` when `site` is the caller of a
    /// `#[track_caller]` spawn helper.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spawn_call: Option<Frame>,
    /// Where the same site was in the earlier document, when an edit moved it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moved_from: Option<SourceLocation>,
    /// How the count changed.
    pub change: Change,
    /// Tasks before.
    pub before: usize,
    /// Tasks after.
    pub after: usize,
    /// `after - before`.
    pub delta: i64,
    /// The innermost frame of the site's spawn backtrace (from the later
    /// document when it has one): the function that spawned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spawned_in: Option<String>,
    /// Tests that leaked tasks here (in the later reports, or the earlier
    /// ones for a site that disappeared), sorted; empty for snapshots.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<String>,
}

/// Leaks of count-only reports (built without `--cfg tokio_unstable`),
/// whose spawn sites are unknown.
#[derive(Debug, Serialize)]
pub struct CountOnly {
    /// Tasks before.
    pub before: usize,
    /// Tasks after.
    pub after: usize,
    /// How the count changed.
    pub change: Change,
}

/// A test whose leaks changed.
#[derive(Debug, Serialize)]
pub struct TestDelta {
    /// The report's test name.
    pub test: String,
    /// Tasks it leaked before (0: no report).
    pub before: usize,
    /// Tasks it leaked after (0: no report).
    pub after: usize,
}

/// Which tests leak now that did not, and the other way round.
#[derive(Debug, Default, Serialize)]
pub struct TestChanges {
    /// Tests that leak after but did not before.
    pub newly_leaking: Vec<TestDelta>,
    /// Tests that leaked before and do not after.
    pub stopped_leaking: Vec<TestDelta>,
    /// Tests that leak on both sides.
    pub still_leaking: Vec<TestDelta>,
}

/// The whole comparison.
#[derive(Debug, Serialize)]
pub struct Diff {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Always [`KIND_DIFF`].
    pub kind: &'static str,
    /// The kind of both inputs: `snapshot` or `leak_report`.
    pub compared: &'static str,
    /// The first side.
    pub before: Side,
    /// The second side.
    pub after: Side,
    /// Changed sites first (appeared, grew, shrank, disappeared, each by size
    /// of change), then unchanged ones.
    pub sites: Vec<SiteDelta>,
    /// Count-only leaks, when either side has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count_only: Option<CountOnly>,
    /// Per-test changes (reports only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tests: Option<TestChanges>,
}

/// One site's tasks on one side.
#[derive(Debug, Default)]
struct Tally {
    tasks: usize,
    tests: BTreeSet<String>,
    function: Option<String>,
}

/// A site as the reports group them: the reported location and, behind a
/// `#[track_caller]` helper, the helper's `spawn` call.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SiteKey {
    site: SourceLocation,
    spawn_call: Option<Frame>,
}

impl SiteKey {
    /// Whether both spawn calls are the same call, an edit's line shift aside.
    fn same_spawn_call(&self, other: &SiteKey) -> bool {
        match (&self.spawn_call, &other.spawn_call) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                normalized(&a.function) == normalized(&b.function) && a.file == b.file
            }
            _ => false,
        }
    }
}

#[derive(Debug, Default)]
struct Tallied {
    sites: BTreeMap<SiteKey, Tally>,
    count_only: usize,
    tests: BTreeMap<String, usize>,
    tasks: usize,
    documents: usize,
    at_unix_ms: u64,
}

impl Tallied {
    fn add_groups(&mut self, groups: &[SiteGroup], stacks: &[Stack], test: Option<&str>) {
        for group in groups {
            let key = SiteKey {
                site: group.site.clone(),
                spawn_call: group.spawn_call.clone(),
            };
            let tally = self.sites.entry(key).or_default();
            tally.tasks += group.count;
            if let Some(test) = test {
                tally.tests.insert(test.to_owned());
            }
            if tally.function.is_none() {
                tally.function = spawned_in(group, stacks);
            }
        }
    }

    fn of(input: &Input) -> Tallied {
        let mut tallied = Tallied::default();
        match input {
            Input::Snapshot(_, snapshot) => {
                tallied.add_groups(&snapshot.sites, &snapshot.stacks, None);
                tallied.tasks = snapshot.live;
                tallied.documents = 1;
                tallied.at_unix_ms = snapshot.captured_at_unix_ms;
            }
            Input::Reports(_, reports) => {
                for LoadedReport { report, .. } in reports {
                    tallied.documents += 1;
                    tallied.tasks += report.leaked;
                    tallied.at_unix_ms = tallied.at_unix_ms.max(report.created_at_unix_ms);
                    if report.leaked > 0 {
                        *tallied.tests.entry(report.test.clone()).or_default() += report.leaked;
                    }
                    if report.degraded {
                        tallied.count_only += report.leaked;
                    } else {
                        tallied.add_groups(&report.sites, &report.stacks, Some(&report.test));
                    }
                }
            }
        }
        tallied
    }

    fn side(&self, path: &Path) -> Side {
        Side {
            path: path.to_owned(),
            documents: self.documents,
            tasks: self.tasks,
            at_unix_ms: self.at_unix_ms,
        }
    }
}

/// Compares two sides of the same kind.
pub fn diff(before: &Input, after: &Input) -> Result<Diff, CliError> {
    if before.kind() != after.kind() {
        return Err(CliError::Usage(format!(
            "cannot diff {} ({}) with {} ({}): compare two snapshots, or two leak reports or report directories",
            before.path().display(),
            before.kind(),
            after.path().display(),
            after.kind()
        )));
    }
    let old = Tallied::of(before);
    let new = Tallied::of(after);
    let mut sites: Vec<SiteDelta> = match_sites(&old.sites, &new.sites)
        .into_iter()
        .map(|(was, is)| site_delta(was, is))
        .collect();
    sites.sort_by(|a, b| {
        a.change
            .cmp(&b.change)
            .then(b.delta.abs().cmp(&a.delta.abs()))
            .then(a.site.cmp(&b.site))
            .then(a.spawn_call.cmp(&b.spawn_call))
    });
    let count_only = (old.count_only > 0 || new.count_only > 0).then(|| CountOnly {
        before: old.count_only,
        after: new.count_only,
        change: Change::of(old.count_only, new.count_only),
    });
    let tests = matches!(after, Input::Reports(..)).then(|| test_changes(&old.tests, &new.tests));
    Ok(Diff {
        schema_version: SCHEMA_VERSION,
        kind: KIND_DIFF,
        compared: before.kind(),
        before: old.side(before.path()),
        after: new.side(after.path()),
        sites,
        count_only,
        tests,
    })
}

type Entry<'t> = (&'t SiteKey, &'t Tally);

/// Pairs the sites of both sides: same location first, then same file and
/// spawning function, nearest line first; the rest stand alone.
fn match_sites<'t>(
    before: &'t BTreeMap<SiteKey, Tally>,
    after: &'t BTreeMap<SiteKey, Tally>,
) -> Vec<(Option<Entry<'t>>, Option<Entry<'t>>)> {
    let mut pairs = Vec::new();
    let mut old: Vec<Entry<'t>> = Vec::new();
    for entry in before {
        match after.get_key_value(entry.0) {
            Some(same) => pairs.push((Some(entry), Some(same))),
            None => old.push(entry),
        }
    }
    let mut new: Vec<Entry<'t>> = after
        .iter()
        .filter(|(site, _)| !before.contains_key(*site))
        .collect();
    let mut candidates: Vec<(u32, usize, usize)> = Vec::new();
    for (i, (old_site, old_tally)) in old.iter().enumerate() {
        for (j, (new_site, new_tally)) in new.iter().enumerate() {
            let same_function = match (&old_tally.function, &new_tally.function) {
                (Some(a), Some(b)) => normalized(a) == normalized(b),
                _ => false,
            };
            if old_site.site.file == new_site.site.file
                && same_function
                && old_site.same_spawn_call(new_site)
            {
                candidates.push((old_site.site.line.abs_diff(new_site.site.line), i, j));
            }
        }
    }
    candidates.sort_unstable();
    let (mut old_used, mut new_used) = (vec![false; old.len()], vec![false; new.len()]);
    for (_, i, j) in candidates {
        if !old_used[i] && !new_used[j] {
            old_used[i] = true;
            new_used[j] = true;
            pairs.push((Some(old[i]), Some(new[j])));
        }
    }
    let mut j = 0;
    new.retain(|_| {
        j += 1;
        !new_used[j - 1]
    });
    let mut i = 0;
    old.retain(|_| {
        i += 1;
        !old_used[i - 1]
    });
    pairs.extend(old.into_iter().map(|entry| (Some(entry), None)));
    pairs.extend(new.into_iter().map(|entry| (None, Some(entry))));
    pairs
}

/// A function path without the closure and hash suffixes an edit may change.
fn normalized(function: &str) -> &str {
    let mut name = function;
    loop {
        let trimmed = name
            .strip_suffix("::{{closure}}")
            .or_else(|| name.strip_suffix("::{closure}"));
        match trimmed {
            Some(shorter) => name = shorter,
            None => return name,
        }
    }
}

fn site_delta(before: Option<Entry<'_>>, after: Option<Entry<'_>>) -> SiteDelta {
    let count = |entry: Option<Entry<'_>>| entry.map_or(0, |(_, tally)| tally.tasks);
    let (before_count, after_count) = (count(before), count(after));
    let (key, latest) = match (before, after) {
        (_, Some((key, tally))) | (Some((key, tally)), None) => (key, tally),
        (None, None) => unreachable!("a pair has at least one side"),
    };
    let moved_from = match (before, after) {
        (Some((was, _)), Some((is, _))) if was.site != is.site => Some(was.site.clone()),
        _ => None,
    };
    let function = latest
        .function
        .clone()
        .or_else(|| before.and_then(|(_, tally)| tally.function.clone()));
    SiteDelta {
        site: key.site.clone(),
        spawn_call: key.spawn_call.clone(),
        moved_from,
        change: Change::of(before_count, after_count),
        before: before_count,
        after: after_count,
        delta: after_count as i64 - before_count as i64,
        spawned_in: function,
        tests: latest.tests.iter().cloned().collect(),
    }
}

fn test_changes(before: &BTreeMap<String, usize>, after: &BTreeMap<String, usize>) -> TestChanges {
    let mut changes = TestChanges::default();
    let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for test in names {
        let delta = TestDelta {
            test: test.clone(),
            before: before.get(test).copied().unwrap_or(0),
            after: after.get(test).copied().unwrap_or(0),
        };
        match (delta.before, delta.after) {
            (0, _) => changes.newly_leaking.push(delta),
            (_, 0) => changes.stopped_leaking.push(delta),
            _ => changes.still_leaking.push(delta),
        }
    }
    changes
}

fn spawned_in(group: &SiteGroup, stacks: &[Stack]) -> Option<String> {
    let stack = group
        .tasks
        .iter()
        .find_map(|t| t.stack.and_then(|i| stacks.get(i)))?;
    stack.frames.first().map(|frame| frame.function.clone())
}

/// Whether any site grew or appeared (or count-only leaks did).
pub fn has_growth(diff: &Diff) -> bool {
    diff.sites.iter().any(|s| s.change.is_growth())
        || diff
            .count_only
            .as_ref()
            .is_some_and(|c| c.change.is_growth())
}

/// Whether anything leaks that did not before: a site that appeared, a test
/// that newly leaks, or count-only leaks where there were none.
pub fn has_new(diff: &Diff) -> bool {
    diff.sites.iter().any(|s| s.change == Change::Appeared)
        || diff
            .tests
            .as_ref()
            .is_some_and(|t| !t.newly_leaking.is_empty())
        || diff
            .count_only
            .as_ref()
            .is_some_and(|c| c.change == Change::Appeared)
}

fn describe_side(side: &Side, compared: &str, is_dir: bool) -> String {
    if compared == KIND_SNAPSHOT {
        format!("{} ({} live)", side.path.display(), side.tasks)
    } else if is_dir {
        format!(
            "{} ({} leaked in {})",
            side.path.display(),
            side.tasks,
            text::count(side.documents, "report")
        )
    } else {
        format!("{} ({} leaked)", side.path.display(), side.tasks)
    }
}

fn site_text(site: &SiteDelta) -> String {
    let mut text = site.site.to_string();
    if let Some(call) = &site.spawn_call {
        let _ = write!(text, " via {call}");
    } else if let Some(function) = &site.spawned_in {
        let _ = write!(text, " in {function}");
    }
    if let Some(was) = &site.moved_from {
        let _ = write!(text, " (was {was})");
    }
    text
}

/// The comparison as a table; unchanged sites only with `all`.
pub fn render_text(diff: &Diff, all: bool) -> String {
    let mut out = String::new();
    let total = diff.after.tasks as i64 - diff.before.tasks as i64;
    let dirs = diff.before.path.is_dir() || diff.after.path.is_dir();
    let _ = write!(
        out,
        "leakcheck diff: {} → {}: {total:+} {}",
        describe_side(&diff.before, diff.compared, dirs),
        describe_side(&diff.after, diff.compared, dirs),
        if total.abs() == 1 { "task" } else { "tasks" },
    );
    if diff.after.at_unix_ms >= diff.before.at_unix_ms && diff.compared == KIND_SNAPSHOT {
        let _ = write!(
            out,
            " in {}",
            text::age(diff.after.at_unix_ms - diff.before.at_unix_ms)
        );
    }
    out.push('\n');
    let shown: Vec<&SiteDelta> = diff
        .sites
        .iter()
        .filter(|s| all || s.change != Change::Unchanged)
        .collect();
    let unchanged = diff
        .sites
        .iter()
        .filter(|s| s.change == Change::Unchanged)
        .count();
    if shown.is_empty() {
        out.push_str("no spawn site changed\n");
    } else {
        out.push('\n');
        let rows: Vec<Vec<String>> = shown
            .iter()
            .map(|s| {
                vec![
                    s.change.label().to_owned(),
                    s.before.to_string(),
                    s.after.to_string(),
                    format!("{:+}", s.delta),
                    site_text(s),
                ]
            })
            .collect();
        out.push_str(&text::table(
            &[
                ("CHANGE", Align::Left),
                ("BEFORE", Align::Right),
                ("AFTER", Align::Right),
                ("DELTA", Align::Right),
                ("SPAWN SITE", Align::Left),
            ],
            &rows,
        ));
    }
    if !all && unchanged > 0 {
        let _ = writeln!(
            out,
            "\n{} unchanged (--all lists them)",
            text::count(unchanged, "site")
        );
    }
    if let Some(count_only) = &diff.count_only {
        let _ = writeln!(
            out,
            "\nspawn site unknown (reports built without --cfg tokio_unstable): {} → {} tasks, {}",
            count_only.before,
            count_only.after,
            count_only.change.label()
        );
    }
    if let Some(tests) = &diff.tests {
        for (title, list) in [
            ("tests that newly leak", &tests.newly_leaking),
            ("tests that stopped leaking", &tests.stopped_leaking),
        ] {
            if list.is_empty() {
                continue;
            }
            let _ = writeln!(out, "\n{title}:");
            for test in list {
                let _ = writeln!(out, "  {} ({} → {})", test.test, test.before, test.after);
            }
        }
    }
    out
}

/// Escapes text for a code span in a markdown table cell (where `<` is
/// literal and only `|`, backticks and line breaks could break out).
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
        .replace('`', "'")
        .replace(['\n', '\r'], " ")
}

/// The site as a markdown link to its line when `link_base` is given and the
/// file is inside the repository (a relative path).
fn site_link(site: &SourceLocation, link_base: Option<&str>) -> String {
    let label = format!("`{}`", cell(&site.to_string()));
    let in_repository = !site.file.starts_with('/') && !site.file.contains("..");
    match link_base {
        Some(base) if in_repository => format!(
            "[{label}]({}/{}#L{})",
            base.trim_end_matches('/'),
            site.file.replace(' ', "%20").replace(')', "%29"),
            site.line
        ),
        _ => label,
    }
}

/// The comparison as markdown for a pull request's job summary: new, fixed
/// and still-leaking sites, each linked to its line under `link_base` (e.g.
/// `https://github.com/OWNER/REPO/blob/SHA`).
pub fn render_markdown(diff: &Diff, link_base: Option<&str>) -> String {
    let new: Vec<&SiteDelta> = diff
        .sites
        .iter()
        .filter(|s| s.change == Change::Appeared)
        .collect();
    let fixed: Vec<&SiteDelta> = diff
        .sites
        .iter()
        .filter(|s| s.change == Change::Disappeared)
        .collect();
    let still: Vec<&SiteDelta> = diff
        .sites
        .iter()
        .filter(|s| !matches!(s.change, Change::Appeared | Change::Disappeared) && s.after > 0)
        .collect();
    let mut out = String::new();
    let verdict = if has_new(diff) {
        "❌ new leaks"
    } else {
        "✅ no new leaks"
    };
    let _ = writeln!(
        out,
        "### leakcheck: {verdict}\n\nspawn sites: {} new, {} fixed, {} still leaking · leaked tasks: {} before, {} after\n",
        new.len(),
        fixed.len(),
        still.len(),
        diff.before.tasks,
        diff.after.tasks
    );
    for (title, list) in [
        ("New leaks", &new),
        ("Fixed", &fixed),
        ("Still leaking", &still),
    ] {
        if list.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "#### {title}\n\n| spawn site | spawned in | before | after | tests |\n|---|---|--:|--:|---|"
        );
        for site in list.iter() {
            let mut location = site_link(&site.site, link_base);
            if let Some(was) = &site.moved_from {
                let _ = write!(location, " (was `{}`)", cell(&was.to_string()));
            }
            let function = match &site.spawn_call {
                Some(call) => format!("`{}`", cell(&call.to_string())),
                None => site
                    .spawned_in
                    .as_deref()
                    .map(|f| format!("`{}`", cell(f)))
                    .unwrap_or_default(),
            };
            let tests = site
                .tests
                .iter()
                .map(|t| format!("`{}`", cell(t)))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                out,
                "| {location} | {function} | {} | {} | {tests} |",
                site.before, site.after
            );
        }
        out.push('\n');
    }
    if let Some(count_only) = &diff.count_only {
        let _ = writeln!(
            out,
            "Spawn site unknown (built without `--cfg tokio_unstable`): {} → {} tasks, {}.\n",
            count_only.before,
            count_only.after,
            count_only.change.label()
        );
    }
    if let Some(tests) = &diff.tests {
        for (title, list) in [
            ("Tests that newly leak", &tests.newly_leaking),
            ("Tests that stopped leaking", &tests.stopped_leaking),
        ] {
            if list.is_empty() {
                continue;
            }
            let _ = writeln!(out, "#### {title}\n");
            for test in list.iter() {
                let _ = writeln!(
                    out,
                    "- `{}` ({} → {} tasks)",
                    cell(&test.test),
                    test.before,
                    test.after
                );
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(function: Option<&str>, tasks: usize) -> Tally {
        Tally {
            tasks,
            tests: BTreeSet::new(),
            function: function.map(str::to_owned),
        }
    }

    fn at(file: &str, line: u32) -> SiteKey {
        SiteKey {
            site: SourceLocation {
                file: file.to_owned(),
                line,
                column: 5,
            },
            spawn_call: None,
        }
    }

    /// The caller's line `at(file, line)` of a `#[track_caller]` helper
    /// whose `spawn` is at src/lib.rs:`spawn_line` in `function`.
    fn via(file: &str, line: u32, function: &str, spawn_line: u32) -> SiteKey {
        SiteKey {
            spawn_call: Some(Frame {
                function: function.to_owned(),
                file: Some("src/lib.rs".to_owned()),
                line: Some(spawn_line),
            }),
            ..at(file, line)
        }
    }

    #[test]
    fn sites_behind_a_track_caller_helper_match_by_their_spawn_call_too() {
        let before = BTreeMap::from([
            (
                via("tests/a.rs", 9, "lib::start", 40),
                tally(Some("lib::start"), 1),
            ),
            (
                via("tests/a.rs", 9, "lib::stop", 70),
                tally(Some("lib::stop"), 1),
            ),
        ]);
        // An edit moved both spawn calls and the test line; lib::stop's
        // leak is fixed and a new one comes from lib::restart.
        let after = BTreeMap::from([
            (
                via("tests/a.rs", 11, "lib::start", 44),
                tally(Some("lib::start"), 1),
            ),
            (
                via("tests/a.rs", 11, "lib::restart", 90),
                tally(Some("lib::restart"), 1),
            ),
        ]);
        let mut changes: Vec<(String, Change)> = match_sites(&before, &after)
            .into_iter()
            .map(|(b, a)| {
                let delta = site_delta(b, a);
                (delta.spawn_call.unwrap().function, delta.change)
            })
            .collect();
        changes.sort();
        assert_eq!(
            changes,
            [
                ("lib::restart".to_owned(), Change::Appeared),
                ("lib::start".to_owned(), Change::Unchanged),
                ("lib::stop".to_owned(), Change::Disappeared),
            ]
        );
    }

    #[test]
    fn a_site_moved_by_an_edit_is_matched_by_file_and_function() {
        let before = BTreeMap::from([
            (at("src/a.rs", 10), tally(Some("a::f::{{closure}}"), 1)),
            (at("src/a.rs", 20), tally(Some("a::f"), 2)),
            (at("src/a.rs", 30), tally(Some("a::g"), 1)),
        ]);
        // Two lines inserted at the top, f's first spawn removed.
        let after = BTreeMap::from([
            (at("src/a.rs", 22), tally(Some("a::f"), 2)),
            (at("src/a.rs", 32), tally(Some("a::h"), 1)),
        ]);
        let mut pairs: Vec<(Option<u32>, Option<u32>)> = match_sites(&before, &after)
            .into_iter()
            .map(|(b, a)| (b.map(|(s, _)| s.site.line), a.map(|(s, _)| s.site.line)))
            .collect();
        pairs.sort();
        assert_eq!(
            pairs,
            [
                (None, Some(32)),
                (Some(10), None),
                (Some(20), Some(22)),
                (Some(30), None)
            ]
        );
    }

    #[test]
    fn the_same_location_matches_even_without_a_backtrace() {
        let before = BTreeMap::from([(at("src/a.rs", 10), tally(None, 1))]);
        let after = BTreeMap::from([(at("src/a.rs", 10), tally(Some("a::f"), 3))]);
        let pairs = match_sites(&before, &after);
        assert_eq!(pairs.len(), 1);
        let delta = site_delta(pairs[0].0, pairs[0].1);
        assert_eq!(
            (delta.change, delta.delta, delta.spawned_in.as_deref()),
            (Change::Grew, 2, Some("a::f"))
        );
    }

    #[test]
    fn markdown_cells_cannot_break_the_table() {
        assert_eq!(cell("a|b`c\nd<e>"), "a\\|b'c d<e>");
        let site = at("src/my file.rs", 7).site;
        assert_eq!(
            site_link(&site, Some("https://x/blob/abc/")),
            "[`src/my file.rs:7:5`](https://x/blob/abc/src/my%20file.rs#L7)"
        );
        assert_eq!(
            site_link(&at("/rustc/x.rs", 1).site, Some("https://x")),
            "`/rustc/x.rs:1:5`"
        );
    }
}
