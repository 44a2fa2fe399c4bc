//! The parts of leakcheck's `LeakReport` JSON (schema_version 3) the suite reads.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The only leak report / snapshot schema this suite reads.
pub(super) const SCHEMA_VERSION: u32 = 3;

/// The parts of a leakcheck `LeakReport` (schema_version 3) the suite uses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeakReport {
    /// Always 2.
    pub schema_version: u32,
    /// Leaked tasks.
    pub leaked: u64,
    /// Leaked tasks grouped by spawn site, most tasks first.
    #[serde(default)]
    pub sites: Vec<SiteGroup>,
}

/// Leaked tasks from one spawn site.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteGroup {
    /// The spawn site.
    pub site: Site,
    /// How many tasks.
    pub count: u64,
    /// The tasks (only their labels are read).
    #[serde(default)]
    pub tasks: Vec<TaskEntry>,
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

/// One leaked task (only its label is read).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskEntry {
    /// tokio's task id.
    #[serde(default)]
    pub id: u64,
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

    /// Parses a report and rejects unknown schema versions.
    pub fn parse(json: &[u8]) -> std::result::Result<Self, String> {
        let report: LeakReport =
            serde_json::from_slice(json).map_err(|e| format!("not a leak report: {e}"))?;
        if report.schema_version != SCHEMA_VERSION {
            return Err(format!(
                "schema_version {} (this suite reads {SCHEMA_VERSION}); update the chaos suite",
                report.schema_version
            ));
        }
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
    fn rejects_an_unknown_schema_version() {
        let error = LeakReport::parse(br#"{"schema_version":99,"leaked":0}"#).unwrap_err();
        assert!(error.contains("schema_version 99"), "{error}");
    }
}
