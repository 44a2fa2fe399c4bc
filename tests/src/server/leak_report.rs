//! The parts of leakcheck's `LeakReport` and `Snapshot` JSON (schema_version 3) the suite
//! reads: the shutdown report and `/debug/tasks`, the one parser of each in the repository.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The only leak report / snapshot schema this suite reads.
pub(super) const SCHEMA_VERSION: u32 = 3;

/// The parts of a leakcheck `LeakReport` (schema_version 3) the suite uses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeakReport {
    /// The schema version; `parse` accepts only the one this parser reads.
    pub schema_version: u32,
    /// Always `"leak_report"`.
    #[serde(default)]
    pub kind: String,
    /// Leaked tasks.
    pub leaked: u64,
    /// Leaked tasks grouped by spawn site, most tasks first.
    #[serde(default)]
    pub sites: Vec<SiteGroup>,
}

/// Tasks from one spawn site: leaked ones in a report, live ones in a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteGroup {
    /// The spawn site.
    pub site: Site,
    /// How many tasks.
    pub count: u64,
    /// The tasks.
    #[serde(default)]
    pub tasks: Vec<TaskEntry>,
}

impl SiteGroup {
    /// Whether tasks from this site run on behalf of a request (carry a request-id label).
    pub fn is_request_scoped(&self) -> bool {
        self.tasks.iter().any(|task| task.label.is_some())
    }
}

/// `/debug/tasks`: the live tracked tasks, grouped by spawn site (a leakcheck `Snapshot`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TasksSnapshot {
    /// The schema version; `parse` accepts only the one this parser reads.
    pub schema_version: u32,
    /// Always `"snapshot"`.
    pub kind: String,
    /// Live tracked tasks.
    pub live: u64,
    /// Live tasks grouped by spawn site, most tasks first.
    #[serde(default)]
    pub sites: Vec<SiteGroup>,
}

/// One live task of a [`TasksSnapshot`], with the site it was spawned at.
#[derive(Debug, Clone, Copy)]
pub struct LiveTask<'a> {
    /// Where it was spawned.
    pub site: &'a Site,
    /// The task.
    pub task: &'a TaskEntry,
}

impl TasksSnapshot {
    /// Parses `/debug/tasks` and rejects unknown schema versions and other documents.
    pub fn parse(json: &[u8]) -> std::result::Result<Self, String> {
        let snapshot: TasksSnapshot =
            serde_json::from_slice(json).map_err(|e| format!("not a task snapshot: {e}"))?;
        check_schema(snapshot.schema_version)?;
        check_kind(&snapshot.kind, "snapshot")?;
        Ok(snapshot)
    }

    /// Every live task for which `keep` holds, in document order.
    pub fn tasks_where(&self, keep: impl Fn(&LiveTask<'_>) -> bool) -> Vec<LiveTask<'_>> {
        self.sites
            .iter()
            .flat_map(|group| {
                group.tasks.iter().map(|task| LiveTask {
                    site: &group.site,
                    task,
                })
            })
            .filter(|live| keep(live))
            .collect()
    }

    /// Live tasks carrying `label`.
    pub fn labeled(&self, label: &str) -> Vec<LiveTask<'_>> {
        self.tasks_where(|live| live.task.label.as_deref() == Some(label))
    }

    /// Live tasks spawned in `file` (workspace-relative, e.g. `server/src/upstream.rs`).
    pub fn spawned_in(&self, file: &str) -> Vec<LiveTask<'_>> {
        self.tasks_where(|live| live.site.file == file)
    }
}

/// A spawn site, workspace-relative.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Site {
    /// Source file, e.g. `server/src/conn.rs`.
    pub file: String,
    /// Line.
    pub line: u32,
    /// Column.
    pub column: u32,
}

impl std::fmt::Display for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One leaked or live task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskEntry {
    /// tokio's task id.
    #[serde(default)]
    pub id: u64,
    /// Milliseconds since it was spawned.
    #[serde(default)]
    pub age_ms: u64,
    /// The request id it was spawned under, if any.
    #[serde(default)]
    pub label: Option<String>,
}

impl LeakReport {
    /// Reads and checks a report file.
    pub fn read(path: &Path) -> std::result::Result<Self, String> {
        let text =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses a report and rejects unknown schema versions and other documents.
    pub fn parse(json: &[u8]) -> std::result::Result<Self, String> {
        let report: LeakReport =
            serde_json::from_slice(json).map_err(|e| format!("not a leak report: {e}"))?;
        check_schema(report.schema_version)?;
        check_kind(&report.kind, "leak_report")?;
        Ok(report)
    }

    /// The spawn site with the most leaked tasks.
    pub fn top_site(&self) -> Option<&Site> {
        self.sites
            .iter()
            .max_by_key(|group| group.count)
            .map(|group| &group.site)
    }

    /// Leaked tasks whose label satisfies `matches`.
    pub fn labeled(&self, matches: impl Fn(&str) -> bool) -> u64 {
        self.sites
            .iter()
            .flat_map(|group| &group.tasks)
            .filter(|task| task.label.as_deref().is_some_and(&matches))
            .count() as u64
    }
}

fn check_schema(version: u32) -> std::result::Result<(), String> {
    if version == SCHEMA_VERSION {
        Ok(())
    } else {
        Err(format!(
            "schema_version {version} (this suite reads {SCHEMA_VERSION}); update the chaos suite"
        ))
    }
}

fn check_kind(kind: &str, expected: &str) -> std::result::Result<(), String> {
    if kind == expected {
        Ok(())
    } else {
        Err(format!("kind {kind:?}, not {expected:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_leak_report_and_names_its_top_site() {
        let json = br#"{"schema_version":3,"kind":"leak_report","test":"leakcheck-server","created_at_unix_ms":1,
            "grace_ms":250,"leaked":3,"ignored":0,"degraded":false,
            "sites":[{"site":{"file":"server/src/tls.rs","line":40,"column":9},"count":1,"oldest_age_ms":5,"tasks":[{"id":1,"age_ms":5,"spawned_by":[]}]},
                     {"site":{"file":"server/src/routes.rs","line":88,"column":5},"count":2,"oldest_age_ms":9,
                      "tasks":[{"id":2,"age_ms":9,"spawned_by":[1],"label":"cs-1"},{"id":3,"age_ms":9,"spawned_by":[1],"label":"other"}]}],
            "stacks":[]}"#;
        let report = LeakReport::parse(json).unwrap();
        assert_eq!(report.leaked, 3);
        assert_eq!(
            report.top_site().unwrap().to_string(),
            "server/src/routes.rs:88:5"
        );
        assert_eq!(report.labeled(|label| label.starts_with("cs-")), 1);
    }

    #[test]
    fn reads_a_snapshot_and_finds_tasks_by_label_and_file() {
        let json = br#"{"schema_version":3,"kind":"snapshot","captured_at_unix_ms":1,"live":3,
            "sites":[{"site":{"file":"server/src/lib.rs","line":7,"column":5},"count":1,"oldest_age_ms":90,"tasks":[{"id":1,"age_ms":90,"spawned_by":[]}]},
                     {"site":{"file":"server/src/routes.rs","line":88,"column":5},"count":2,"oldest_age_ms":9,
                      "tasks":[{"id":2,"age_ms":9,"spawned_by":[1],"label":"r-1"},{"id":3,"age_ms":4,"spawned_by":[1],"label":"r-2"}]}],
            "stacks":[]}"#;
        let snapshot = TasksSnapshot::parse(json).unwrap();
        assert_eq!(snapshot.live, 3);
        let labeled = snapshot.labeled("r-1");
        assert_eq!(labeled.len(), 1);
        assert_eq!((labeled[0].task.id, labeled[0].task.age_ms), (2, 9));
        assert_eq!(labeled[0].site.to_string(), "server/src/routes.rs:88:5");
        assert_eq!(snapshot.spawned_in("server/src/routes.rs").len(), 2);
        assert!(snapshot.spawned_in("server/src/upstream.rs").is_empty());
        assert!(snapshot.sites[1].is_request_scoped() && !snapshot.sites[0].is_request_scoped());
        let report = LeakReport::parse(json).unwrap_err();
        assert!(
            report.contains("leaked"),
            "a snapshot is not a leak report: {report}"
        );
        let report =
            LeakReport::parse(br#"{"schema_version":3,"kind":"snapshot","leaked":0}"#).unwrap_err();
        assert!(report.contains("\"snapshot\""), "{report}");
        let error = TasksSnapshot::parse(br#"{"schema_version":3,"kind":"leak_report","live":0}"#)
            .unwrap_err();
        assert!(error.contains("leak_report"), "{error}");
    }

    #[test]
    fn rejects_an_unknown_schema_version() {
        let error = LeakReport::parse(br#"{"schema_version":99,"leaked":0}"#).unwrap_err();
        assert!(error.contains("schema_version 99"), "{error}");
    }
}
