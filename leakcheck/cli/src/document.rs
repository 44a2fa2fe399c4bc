//! Reading leakcheck documents (leak reports and snapshots) from files and
//! directories, rejecting anything that is not one with an error naming the file.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use leakcheck::{LeakReport, SCHEMA_VERSION, Snapshot};
use serde_json::Value;
use serde_json::error::Category;

use crate::error::CliError;

/// Largest document read, so a wrong path (a core dump, a log) fails fast
/// instead of filling memory.
pub const MAX_DOCUMENT_BYTES: u64 = 64 * 1024 * 1024;

/// The oldest `schema_version` this CLI reads: version 1 documents lack the
/// fields version 2 added (spawn calls, ancestors, liveness, task names), which
/// read as absent.
pub const OLDEST_SCHEMA_VERSION: u32 = 1;

/// The `kind` of a leak report.
pub const KIND_LEAK_REPORT: &str = "leak_report";
/// The `kind` of a snapshot.
pub const KIND_SNAPSHOT: &str = "snapshot";

/// One parsed document.
#[derive(Debug)]
pub enum Document {
    /// A test's (or scope's) leak report.
    Report(LeakReport),
    /// A live snapshot of a runtime.
    Snapshot(Snapshot),
}

/// A leak report and the file it came from.
#[derive(Debug)]
pub struct LoadedReport {
    /// The file, as given or as found in a given directory.
    pub path: PathBuf,
    /// Its content.
    pub report: LeakReport,
}

/// Turns the command line's `<dir|files…>` into files: a directory stands for
/// its `*.json` files (sorted by name, hidden files such as a writer's
/// temporary files skipped); files are taken as given.
///
/// A directory with no reports, or a path that does not exist and does not
/// end in `.json` (a report directory the tests never created), is
/// [`CliError::NoReports`] unless `allow_empty`, when it contributes nothing.
pub fn expand_inputs(inputs: &[PathBuf], allow_empty: bool) -> Result<Vec<PathBuf>, CliError> {
    let mut files = Vec::new();
    for input in inputs {
        let metadata = match fs::metadata(input) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !names_a_file(input) => {
                if allow_empty {
                    continue;
                }
                return Err(CliError::NoReports {
                    path: input.clone(),
                    problem: "no such directory".to_owned(),
                });
            }
            Err(e) => return Err(CliError::input(input, io_problem(&e))),
        };
        if !metadata.is_dir() {
            files.push(input.clone());
            continue;
        }
        let entries = fs::read_dir(input).map_err(|e| CliError::input(input, io_problem(&e)))?;
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| CliError::input(input, io_problem(&e)))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            if entry.path().is_file() {
                found.push(entry.path());
            }
        }
        if found.is_empty() && !allow_empty {
            return Err(CliError::NoReports {
                path: input.clone(),
                problem: "directory holds no *.json reports".to_owned(),
            });
        }
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

/// Whether a path that does not exist was meant as a report file.
fn names_a_file(path: &Path) -> bool {
    path.extension()
        .is_some_and(|extension| extension == "json")
}

/// Loads every leak report named by `inputs` (see [`expand_inputs`]);
/// snapshots and other documents are rejected.
pub fn load_reports(
    inputs: &[PathBuf],
    command: &str,
    allow_empty: bool,
) -> Result<Vec<LoadedReport>, CliError> {
    expand_inputs(inputs, allow_empty)?
        .into_iter()
        .map(|path| match load(&path)? {
            Document::Report(report) => Ok(LoadedReport { path, report }),
            Document::Snapshot(_) => Err(CliError::input(
                path,
                format!("is a snapshot, but `leakcheck {command}` reads leak reports (compare snapshots with `leakcheck diff`)"),
            )),
        })
        .collect()
}

/// Reads and parses one file.
pub fn load(path: &Path) -> Result<Document, CliError> {
    let file = fs::File::open(path).map_err(|e| CliError::input(path, io_problem(&e)))?;
    let mut bytes = Vec::new();
    file.take(MAX_DOCUMENT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| CliError::input(path, io_problem(&e)))?;
    if bytes.len() as u64 > MAX_DOCUMENT_BYTES {
        return Err(CliError::input(
            path,
            format!(
                "larger than the {} MiB limit for a leakcheck document",
                MAX_DOCUMENT_BYTES >> 20
            ),
        ));
    }
    parse(&bytes).map_err(|problem| CliError::input(path, problem))
}

/// Parses a document, checking `schema_version` and `kind` before the
/// fields so the error says the most useful thing. Errors are sentence
/// fragments meant to follow the file name.
pub fn parse(bytes: &[u8]) -> Result<Document, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        format!(
            "binary data, not a JSON leakcheck document (invalid UTF-8 at byte {})",
            e.valid_up_to()
        )
    })?;
    if let Some(offset) = text.find('\0') {
        return Err(format!(
            "binary data, not a JSON leakcheck document (NUL byte at byte {offset})"
        ));
    }
    if text.trim().is_empty() {
        return Err("empty file, expected a JSON leakcheck report or snapshot".to_owned());
    }
    let value: Value = serde_json::from_str(text).map_err(|e| match e.classify() {
        Category::Eof => format!(
            "truncated JSON: the document ends early at line {} column {} (was its writer killed?)",
            e.line(),
            e.column()
        ),
        _ => format!("invalid JSON: {e}"),
    })?;
    let Value::Object(fields) = &value else {
        return Err(format!(
            "expected a JSON object (a leakcheck report or snapshot), found {}",
            json_type(&value)
        ));
    };
    let version = match fields.get("schema_version") {
        None => {
            return Err("no `schema_version` field: not a leakcheck report or snapshot".to_owned());
        }
        Some(v) => v
            .as_u64()
            .ok_or_else(|| format!("`schema_version` must be a whole number, found {v}"))?,
    };
    if !(u64::from(OLDEST_SCHEMA_VERSION)..=u64::from(SCHEMA_VERSION)).contains(&version) {
        return Err(format!(
            "schema_version {version} is not supported: this leakcheck reads versions {OLDEST_SCHEMA_VERSION} to {SCHEMA_VERSION} (use the leakcheck-cli release that matches the library that wrote it)"
        ));
    }
    let mut value = value;
    if version == 1 {
        upgrade_v1(&mut value);
    }
    let kind = match value.get("kind") {
        None => return Err("no `kind` field: not a leakcheck report or snapshot".to_owned()),
        Some(Value::String(kind)) => kind.clone(),
        Some(other) => return Err(format!("`kind` must be a string, found {other}")),
    };
    let schema_error = |e: serde_json::Error| format!("does not match the {kind} schema: {e}");
    let document = match kind.as_str() {
        KIND_LEAK_REPORT => serde_json::from_value(value)
            .map(Document::Report)
            .map_err(schema_error)?,
        KIND_SNAPSHOT => serde_json::from_value(value)
            .map(Document::Snapshot)
            .map_err(schema_error)?,
        _ => {
            return Err(format!(
                "unknown kind {kind:?}: expected {KIND_LEAK_REPORT:?} or {KIND_SNAPSHOT:?}"
            ));
        }
    };
    check_counts(&document)?;
    Ok(document)
}

/// Most tasks one count may claim. No runtime holds more; a larger number
/// is a corrupt document, and refusing it keeps every sum the commands
/// make far from overflowing.
pub const MAX_COUNT: usize = u32::MAX as usize;

fn check_counts(document: &Document) -> Result<(), String> {
    let (total_name, total, sites) = match document {
        Document::Report(report) => ("leaked", report.leaked, &report.sites),
        Document::Snapshot(snapshot) => ("live", snapshot.live, &snapshot.sites),
    };
    let too_many = |field: &str, value: usize| {
        format!(
            "`{field}` is {value}, more than the {MAX_COUNT} tasks a leakcheck document can count: the file is corrupt"
        )
    };
    if total > MAX_COUNT {
        return Err(too_many(total_name, total));
    }
    if let Document::Report(report) = document {
        if report.ignored > MAX_COUNT {
            return Err(too_many("ignored", report.ignored));
        }
    }
    match sites.iter().find(|group| group.count > MAX_COUNT) {
        Some(group) => Err(too_many(
            &format!("count` of site `{}", group.site),
            group.count,
        )),
        None => Ok(()),
    }
}

/// Rewrites what version 2 changed in place: `parked_at` was one string of
/// `function at file:line` lines and is now a [`leakcheck::ParkedAt`] (that
/// string read as a single trace).
fn upgrade_v1(document: &mut Value) {
    let Some(sites) = document.get_mut("sites").and_then(Value::as_array_mut) else {
        return;
    };
    let tasks = sites
        .iter_mut()
        .filter_map(|site| site.get_mut("tasks").and_then(Value::as_array_mut))
        .flatten();
    for task in tasks {
        let Some(parked) = task.get_mut("parked_at") else {
            continue;
        };
        let Some(text) = parked.as_str() else {
            continue;
        };
        let frames: Vec<Value> = text.lines().map(v1_frame).collect();
        *parked = serde_json::json!({ "traces": [frames] });
    }
}

/// `function at file:line` (or a bare function) as a frame object.
fn v1_frame(line: &str) -> Value {
    let (function, position) = match line.rsplit_once(" at ") {
        Some((function, position)) => (function, Some(position)),
        None => (line, None),
    };
    let (file, number) = match position.and_then(|p| p.rsplit_once(':')) {
        Some((file, number)) if number.parse::<u32>().is_ok() => (Some(file), number.parse().ok()),
        _ => (position, None::<u32>),
    };
    serde_json::json!({ "function": function, "file": file, "line": number })
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn io_problem(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        std::io::ErrorKind::IsADirectory => "is a directory".to_owned(),
        _ => format!("cannot read: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_version_1_report_with_the_new_fields_absent() {
        let v1 = include_bytes!("../tests/fixtures/reports/server__tests__accept_loop_leaks.json");
        let Ok(Document::Report(report)) = parse(v1) else {
            panic!("a version 1 report is read");
        };
        assert_eq!(report.schema_version, 1);
        assert_eq!(report.leaked, 4);
        assert!(report.sites.iter().all(|g| g.spawn_call.is_none()));
        let parked = report.sites[0].tasks[0].parked_at.as_ref().unwrap();
        assert_eq!(parked.traces.len(), 1);
        assert_eq!(
            parked.traces[0][0].to_string(),
            "server::conn::serve at server/src/conn.rs:120"
        );
    }

    #[test]
    fn reads_a_version_2_report_with_a_spawn_call() {
        let v2 = br#"{"schema_version": 2, "kind": "leak_report", "test": "a::b",
            "created_at_unix_ms": 1, "grace_ms": 250, "leaked": 1,
            "sites": [{"site": {"file": "tests/a.rs", "line": 9, "column": 5},
                       "spawn_call": {"function": "lib::start", "file": "src/lib.rs", "line": 40},
                       "count": 1, "oldest_age_ms": 3, "tasks": [{"id": 4, "age_ms": 3}]}]}"#;
        let Ok(Document::Report(report)) = parse(v2) else {
            panic!("a version 2 report is read");
        };
        let call = report.sites[0].spawn_call.as_ref().unwrap();
        assert_eq!(call.to_string(), "lib::start at src/lib.rs:40");
        assert_eq!(
            report.mode,
            leakcheck::Mode::Fail,
            "before version 3: failures"
        );
        assert_eq!(report.subject, leakcheck::Subject::Test);
    }

    #[test]
    fn reads_a_version_3_warning_of_a_scope() {
        let v3 = br#"{"schema_version": 3, "kind": "leak_report", "test": "a::b",
            "created_at_unix_ms": 1, "grace_ms": 250, "leaked": 0,
            "mode": "warn", "subject": "scope", "sites": []}"#;
        let Ok(Document::Report(report)) = parse(v3) else {
            panic!("a version 3 report is read");
        };
        assert_eq!(report.mode, leakcheck::Mode::Warn);
        assert_eq!(report.subject, leakcheck::Subject::Scope);
    }
}
