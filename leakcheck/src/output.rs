//! Where a leak report goes besides the test's panic message: one JSON file
//! per failing test (written atomically) and, under GitHub Actions, an
//! `::error` annotation at each leaking spawn site.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::report::{LeakReport, SourceLocation};

/// Writes `report` as `<dir>/<test name>.json` and returns the path.
///
/// The file appears complete or not at all (see [`write_atomically`]), so a
/// test killed mid-write never leaves half a report.
pub fn write_report(report: &LeakReport, dir: &Path) -> std::io::Result<PathBuf> {
    write_json(dir, &report.test, &report.to_json())
}

/// Writes `json` as `<dir>/<name>.json` (the name made file-safe), atomically
/// as [`write_report`] does, and returns the path.
pub(crate) fn write_json(dir: &Path, name: &str, json: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let stem: String = name
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
    let mut text = json.to_owned();
    text.push('\n');
    write_atomically(&path, text.as_bytes())?;
    Ok(path)
}

/// Writes `bytes` to `path` so that readers see the old file or the whole new
/// one, never a part: a temporary file in the same directory (hidden, so
/// `leakcheck summary <dir>` never reads it), synced, then renamed over
/// `path` by [`tempfile`]'s `persist`. On any error the temporary file is
/// removed and `path` is untouched. The `leakcheck` CLI writes its outputs
/// through this too.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".").suffix(".tmp");
    // The umask applies as for `File::create`, instead of tempfile's private 0600.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut file = builder.tempfile_in(directory)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
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
            github_annotation(&group.site, &format!("leakcheck: leaked {plural}"), &message)
        })
        .collect()
}

/// A GitHub Actions `::error` workflow command that puts `message` on the
/// pull request's diff at `site`; the `leakcheck summary --format github`
/// annotations of a merged CI run use it too.
pub fn github_annotation(site: &SourceLocation, title: &str, message: &str) -> String {
    format!(
        "::error file={},line={},col={},title={}::{}",
        escape_property(&site.file),
        site.line,
        site.column,
        escape_property(title),
        escape_data(message)
    )
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
