//! Where a leak report goes besides the test's panic message: one JSON file
//! per failing test (written atomically) and, under GitHub Actions, an
//! `::error` annotation at each leaking spawn site.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::report::{LeakReport, SourceLocation};
use crate::settings::Mode;

/// Writes `report` as `<dir>/<test name>.json` and returns the path.
///
/// The file appears complete or not at all (see [`write_atomically`]), so a
/// test killed mid-write never leaves half a report.
pub fn write_report(report: &LeakReport, dir: &Path) -> std::io::Result<PathBuf> {
    write_json(dir, &report.test, &report.to_json())
}

/// Writes `report` as `<dir>/<test name>.json`, or `<test name>-2.json` and
/// so on when that exists: for scopes without a name of their own, whose
/// names may repeat (a helper opened in a loop, from several tests).
fn write_report_beside_others(report: &LeakReport, dir: &Path) -> std::io::Result<PathBuf> {
    /// Files tried before giving up.
    const MAX_NAMES: usize = 1000;
    std::fs::create_dir_all(dir)?;
    let stem = file_stem(&report.test);
    let mut text = report.to_json();
    text.push('\n');
    let path_for = |n: usize| match n {
        1 => dir.join(format!("{stem}.json")),
        n => dir.join(format!("{stem}-{n}.json")),
    };
    let mut file = temporary_file_beside(&path_for(1))?;
    file.write_all(text.as_bytes())?;
    file.as_file().sync_all()?;
    for n in 1..=MAX_NAMES {
        let path = path_for(n);
        match file.persist_noclobber(&path) {
            Ok(_) => return Ok(path),
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => file = e.file,
            Err(e) => return Err(e.error),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!("{MAX_NAMES} reports named {stem}*.json already exist"),
    ))
}

/// `name` with every character a file name should not hold replaced by `_`.
fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes `json` as `<dir>/<name>.json` (the name made file-safe), atomically
/// as [`write_report`] does, and returns the path.
pub(crate) fn write_json(dir: &Path, name: &str, json: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{}.json", file_stem(name)));
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
    let mut file = temporary_file_beside(path)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// A hidden temporary file in `path`'s directory, to be renamed to `path`.
fn temporary_file_beside(path: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".").suffix(".tmp");
    // The umask applies as for `File::create`, instead of tempfile's private 0600.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    builder.tempfile_in(directory)
}

/// Writes the report file (if a directory is configured; `beside_others`
/// for reports whose name may repeat, see [`write_report_beside_others`])
/// and the GitHub annotations (if running under GitHub Actions): `::error`,
/// or `::warning` for a `warn` mode report. Failures to write are printed,
/// not raised: the test's own verdict matters more.
pub(crate) fn publish(report: &LeakReport, dir: Option<&Path>, beside_others: bool) {
    if let Some(dir) = dir {
        let written = if beside_others {
            write_report_beside_others(report, dir)
        } else {
            write_report(report, dir)
        };
        match written {
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

/// Workflow commands, one per leaking spawn site: `::error`, or `::warning`
/// when the leak did not fail its test (`warn` mode).
pub(crate) fn annotations(report: &LeakReport) -> Vec<String> {
    let level = level(report.mode);
    report
        .sites
        .iter()
        .map(|group| {
            let plural = if group.count == 1 { "task" } else { "tasks" };
            let message = format!(
                "{} {plural} spawned here outlived test `{}` (oldest {} ms); await or abort it before the test returns",
                group.count, report.test, group.oldest_age_ms
            );
            let title = format!("leakcheck: leaked {plural}");
            workflow_command(level, &group.site, &title, &message)
        })
        .collect()
}

/// A GitHub Actions workflow command that puts `message` on the pull
/// request's diff at `site`: `::error` for leaks that failed their tests,
/// `::warning` for `warn` mode's; the `leakcheck summary --format github`
/// annotations of a merged CI run use it too.
pub fn github_annotation(site: &SourceLocation, mode: Mode, title: &str, message: &str) -> String {
    workflow_command(level(mode), site, title, message)
}

fn level(mode: Mode) -> &'static str {
    match mode {
        Mode::Fail => "error",
        Mode::Warn => "warning",
    }
}

/// `::<level> file=…` at `site`.
fn workflow_command(level: &str, site: &SourceLocation, title: &str, message: &str) -> String {
    format!(
        "::{level} file={},line={},col={},title={}::{}",
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
