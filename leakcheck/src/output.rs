//! Where a leak report goes besides the test's panic message: one JSON file
//! per failing test (written atomically) and, under GitHub Actions, an
//! `::error` annotation at each leaking spawn site.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::report::LeakReport;

/// Writes `report` as `<dir>/<test name>.json` and returns the path.
///
/// The file appears complete or not at all: the JSON is written to a
/// temporary file in `dir` and renamed over the target, so a test killed
/// mid-write never leaves half a report.
pub fn write_report(report: &LeakReport, dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let stem: String = report
        .test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = dir.join(format!("{stem}.json"));
    let tmp = dir.join(format!(".{stem}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(report.to_json().as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| path)
}

/// Writes the report file (if a directory is configured) and the GitHub
/// annotations (if running under GitHub Actions). Failures to write are
/// printed, not raised: the test's own verdict matters more.
pub(crate) fn publish(report: &LeakReport, dir: Option<&Path>) {
    if let Some(dir) = dir {
        match write_report(report, dir) {
            Ok(path) => eprintln!("leakcheck: report written to {}", path.display()),
            Err(err) => eprintln!(
                "leakcheck: could not write the report to {}: {err}",
                dir.display()
            ),
        }
    }
    if std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true") {
        // Workflow commands must start a line; libtest may be mid-line
        // ("test name ... ") when the test fails.
        println!();
        for line in annotations(report) {
            println!("{line}");
        }
    }
}

/// `::error` workflow commands, one per leaking spawn site.
pub(crate) fn annotations(report: &LeakReport) -> Vec<String> {
    report
        .sites
        .iter()
        .map(|group| {
            let plural = if group.count == 1 { "task" } else { "tasks" };
            let message = format!(
                "{} {plural} spawned here outlived test `{}` (oldest {} ms); await or abort it before the test returns",
                group.count, report.test, group.oldest_age_ms
            );
            format!(
                "::error file={},line={},col={},title={}::{}",
                escape_property(&group.site.file),
                group.site.line,
                group.site.column,
                escape_property(&format!("leakcheck: leaked {plural}")),
                escape_data(&message)
            )
        })
        .collect()
}

// Escaping rules of GitHub's workflow commands.
fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}
