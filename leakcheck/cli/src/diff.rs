//! `leakcheck diff`: how the per-site task counts changed between two reports
//! or two snapshots (the LeakProf way to find a slow leak in a running service:
//! snapshot it twice and look at the sites that grew).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use leakcheck::{SCHEMA_VERSION, SiteGroup, SourceLocation, Stack};
use serde::Serialize;

use crate::document::{Document, KIND_SNAPSHOT};
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
}

/// One side of the comparison.
#[derive(Debug, Serialize)]
pub struct Side {
    /// The file.
    pub path: PathBuf,
    /// Tasks in the document: `live` of a snapshot, `leaked` of a report.
    pub tasks: usize,
    /// `captured_at_unix_ms` of a snapshot, `created_at_unix_ms` of a report.
    pub at_unix_ms: u64,
}

/// One spawn site's change.
#[derive(Debug, Serialize)]
pub struct SiteDelta {
    /// Where the tasks were spawned.
    pub site: SourceLocation,
    /// How the count changed.
    pub change: Change,
    /// Tasks before.
    pub before: usize,
    /// Tasks after.
    pub after: usize,
    /// `after - before`.
    pub delta: i64,
    /// The innermost frame of the site's oldest task's spawn backtrace (from
    /// the later document when the site is in it): the function that spawned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spawned_in: Option<String>,
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
    /// The first document.
    pub before: Side,
    /// The second document.
    pub after: Side,
    /// Changed sites first (appeared, grew, shrank, disappeared, each by size
    /// of change), then unchanged ones.
    pub sites: Vec<SiteDelta>,
}

/// Compares two documents of the same kind.
pub fn diff(before: (&Path, &Document), after: (&Path, &Document)) -> Result<Diff, CliError> {
    let (before_path, before_doc) = before;
    let (after_path, after_doc) = after;
    if before_doc.kind() != after_doc.kind() {
        return Err(CliError::Usage(format!(
            "cannot diff {} ({}) with {} ({}): compare two snapshots or two leak reports",
            before_path.display(),
            before_doc.kind(),
            after_path.display(),
            after_doc.kind()
        )));
    }
    let (before_side, before_sites, before_stacks) = side(before_path, before_doc);
    let (after_side, after_sites, after_stacks) = side(after_path, after_doc);

    let mut counts: BTreeMap<&SourceLocation, (usize, usize, Option<String>)> = BTreeMap::new();
    for group in before_sites {
        let entry = counts.entry(&group.site).or_default();
        entry.0 += group.count;
        entry.2 = spawned_in(group, before_stacks);
    }
    for group in after_sites {
        let entry = counts.entry(&group.site).or_default();
        entry.1 += group.count;
        if let Some(function) = spawned_in(group, after_stacks) {
            entry.2 = Some(function);
        }
    }
    let mut sites: Vec<SiteDelta> = counts
        .into_iter()
        .map(|(site, (before, after, spawned_in))| SiteDelta {
            site: site.clone(),
            change: Change::of(before, after),
            before,
            after,
            delta: after as i64 - before as i64,
            spawned_in,
        })
        .collect();
    sites.sort_by(|a, b| {
        a.change
            .cmp(&b.change)
            .then(b.delta.abs().cmp(&a.delta.abs()))
    });
    Ok(Diff {
        schema_version: SCHEMA_VERSION,
        kind: KIND_DIFF,
        compared: before_doc.kind(),
        before: before_side,
        after: after_side,
        sites,
    })
}

fn side<'d>(path: &Path, document: &'d Document) -> (Side, &'d [SiteGroup], &'d [Stack]) {
    let (tasks, at_unix_ms, sites, stacks) = match document {
        Document::Report(r) => (r.leaked, r.created_at_unix_ms, &r.sites, &r.stacks),
        Document::Snapshot(s) => (s.live, s.captured_at_unix_ms, &s.sites, &s.stacks),
    };
    (
        Side {
            path: path.to_owned(),
            tasks,
            at_unix_ms,
        },
        sites,
        stacks,
    )
}

fn spawned_in(group: &SiteGroup, stacks: &[Stack]) -> Option<String> {
    let stack = group
        .tasks
        .iter()
        .find_map(|t| t.stack.and_then(|i| stacks.get(i)))?;
    stack.frames.first().map(|frame| frame.function.clone())
}

/// Whether any site grew or appeared.
pub fn has_growth(diff: &Diff) -> bool {
    diff.sites
        .iter()
        .any(|s| matches!(s.change, Change::Appeared | Change::Grew))
}

/// The comparison as a table; unchanged sites only with `all`.
pub fn render_text(diff: &Diff, all: bool) -> String {
    let mut out = String::new();
    let noun = if diff.compared == KIND_SNAPSHOT {
        "live"
    } else {
        "leaked"
    };
    let total = diff.after.tasks as i64 - diff.before.tasks as i64;
    let _ = write!(
        out,
        "leakcheck diff: {} ({} {noun}) → {} ({} {noun}): {total:+} {}",
        diff.before.path.display(),
        diff.before.tasks,
        diff.after.path.display(),
        diff.after.tasks,
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
                let site = match &s.spawned_in {
                    Some(function) => format!("{} in {function}", s.site),
                    None => s.site.to_string(),
                };
                vec![
                    s.change.label().to_owned(),
                    s.before.to_string(),
                    s.after.to_string(),
                    format!("{:+}", s.delta),
                    site,
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
    out
}
