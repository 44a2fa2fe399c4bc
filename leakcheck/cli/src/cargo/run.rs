//! `cargo leakcheck test`, `cargo leakcheck nextest` and the run behind
//! `cargo leakcheck baseline`: the user's suite with leakcheck's flags added
//! to theirs ([`super::rustflags`]), built in `<target dir>/leakcheck` so
//! their normal and release builds are never rebuilt, with reports on; then
//! the summary of what leaked, the HTML page, and the baseline entries now
//! fixed.
//!
//! Tests run with `LEAKCHECK_MODE=warn` (unless the user set
//! `LEAKCHECK_MODE`): a leak then never fails its test, so cargo's exit
//! status says whether tests failed for other reasons, cargo's fail-fast
//! does not skip the binaries after the first leak, and the reports say
//! which tests leaked. The verdict is made here from both.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use leakcheck::{BASELINE_OUTCOME_DIR, BaselineEntry, BaselineOutcome, DEFAULT_BASELINE_FILE};

use crate::cargo::rustflags::{self, Addition, Tool, UserConfig};
use crate::cargo::workspace::{self, Workspace};
use crate::document::{self, LoadedReport};
use crate::error::CliError;
use crate::{exit, output, summary, text};

/// The subdirectory of the target directory `cargo leakcheck` builds in.
pub const TARGET_SUBDIR: &str = "leakcheck";
/// Where the reports go, under [`TARGET_SUBDIR`]; cleared before each run.
pub const REPORTS_SUBDIR: &str = "reports";
/// The HTML page written after a run with leaks, under [`TARGET_SUBDIR`].
pub const HTML_PAGE: &str = "report.html";

/// Which test runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runner {
    /// `cargo test`.
    CargoTest,
    /// `cargo nextest` (the arguments start with its subcommand, `run`).
    Nextest,
}

/// What the run is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `test` / `nextest`: fail on leaks the baseline does not list.
    Check,
    /// `baseline`: every leak is recorded, none screened.
    RecordBaseline,
}

/// What a run left behind.
#[derive(Debug)]
pub struct Outcome {
    /// The workspace.
    pub workspace: Workspace,
    /// cargo's exit code (`None`: killed by a signal).
    pub cargo_code: Option<i32>,
    /// The leak reports the tests wrote.
    pub reports: Vec<LoadedReport>,
    /// Whether `--no-run` was passed (nothing ran).
    pub no_run: bool,
}

/// `cargo leakcheck test` / `nextest`: runs, reports, returns the exit code.
pub fn check(runner: Runner, args: &[OsString]) -> Result<u8, CliError> {
    let outcome = run(runner, args, Purpose::Check)?;
    let target = outcome.workspace.target_dir.join(TARGET_SUBDIR);
    let leaked_tests = outcome
        .reports
        .iter()
        .filter(|r| r.report.leaked > 0)
        .count();
    if !outcome.no_run {
        print_summary(&outcome, &target)?;
        print_fixed_entries(&target.join(REPORTS_SUBDIR))?;
    }
    let warn_only =
        std::env::var("LEAKCHECK_MODE").is_ok_and(|m| m.trim().eq_ignore_ascii_case("warn"));
    match outcome.cargo_code {
        Some(0) if leaked_tests == 0 => Ok(exit::OK),
        Some(0) if warn_only => {
            eprintln!(
                "cargo leakcheck: {} leaked; not failing: LEAKCHECK_MODE=warn",
                text::count(leaked_tests, "test")
            );
            Ok(exit::OK)
        }
        Some(0) => {
            eprintln!(
                "cargo leakcheck: {} leaked (every other check passed); exit code {}",
                text::count(leaked_tests, "test"),
                exit::LEAKS_FOUND
            );
            Ok(exit::LEAKS_FOUND)
        }
        code => {
            let also = if leaked_tests > 0 {
                format!(", and {} leaked", text::count(leaked_tests, "test"))
            } else {
                String::new()
            };
            eprintln!(
                "cargo leakcheck: {} failed for reasons other than leaks (see its output above){also}; exiting with its code",
                runner_name(runner)
            );
            Ok(cargo_exit(code))
        }
    }
}

/// cargo's exit code as ours (101 when it was killed).
pub fn cargo_exit(code: Option<i32>) -> u8 {
    code.and_then(|c| u8::try_from(c).ok()).unwrap_or(101)
}

fn runner_name(runner: Runner) -> &'static str {
    match runner {
        Runner::CargoTest => "`cargo test`",
        Runner::Nextest => "`cargo nextest`",
    }
}

/// Runs the suite for `purpose` and collects its reports.
pub fn run(runner: Runner, args: &[OsString], purpose: Purpose) -> Result<Outcome, CliError> {
    let cargo_args = cargo_args(args);
    let manifest_path = value_of(cargo_args, "--manifest-path").map(PathBuf::from);
    let config_args: Vec<OsString> = rustflags::config_values(args)
        .into_iter()
        .flat_map(|value| [OsString::from("--config"), OsString::from(value)])
        .collect();
    let workspace = workspace::load(manifest_path.as_deref(), &config_args)?;
    let target = workspace.target_dir.join(TARGET_SUBDIR);
    let reports_dir = target.join(REPORTS_SUBDIR);
    reset_dir(&reports_dir)?;

    let cwd = match manifest_path.as_deref().and_then(Path::parent) {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => std::env::current_dir()
            .map_err(|err| CliError::Usage(format!("cannot read the current directory: {err}")))?,
    };
    let config = rustflags::load_config(&cwd)?;
    let user = UserConfig::from_args(args)?;
    let mut additions: Vec<Addition> = Vec::new();
    for triple in rustflags::targets(args, &config)? {
        for tool in [Tool::Rustc, Tool::Rustdoc] {
            let sources = rustflags::sources(
                tool,
                &triple,
                |name| std::env::var(name).ok(),
                &config,
                &user,
            )?;
            if let Some(addition) = rustflags::addition(tool, &triple, &sources) {
                if !additions.contains(&addition) {
                    additions.push(addition);
                }
            }
        }
    }

    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    let mut rest = args;
    match runner {
        Runner::CargoTest => {
            command.arg("test");
        }
        Runner::Nextest => {
            command.arg("nextest");
            // `--config` goes after nextest's own subcommand (`run`).
            if let Some((first, others)) = args.split_first() {
                command.arg(first);
                rest = others;
            }
        }
    }
    for addition in &additions {
        match addition {
            Addition::Env { var, value } => {
                command.env(var, value);
            }
            Addition::Config(value) => {
                command.arg("--config").arg(value);
            }
        }
    }
    if purpose == Purpose::RecordBaseline && !cargo_args.iter().any(|a| a == "--no-fail-fast") {
        // A baseline records every binary's leaks, not those before the first failure.
        command.arg("--no-fail-fast");
    }
    command.args(rest);
    command.env("CARGO_TARGET_DIR", &target);
    command.env("LEAKCHECK_REPORT_DIR", &reports_dir);
    if std::env::var_os("LEAKCHECK_MODE").is_none() {
        command.env("LEAKCHECK_MODE", "warn");
    }
    match purpose {
        Purpose::RecordBaseline => {
            command.env_remove("LEAKCHECK_BASELINE");
        }
        Purpose::Check => {
            if let Some(baseline) = baseline_in_use(&workspace)? {
                command.env("LEAKCHECK_BASELINE", baseline);
            }
        }
    }
    let shown: Vec<String> = additions
        .iter()
        .map(|a| match a {
            Addition::Env { var, value } => format!("{var}={:?}", value.replace('\x1f', " ")),
            Addition::Config(value) => format!("--config {value}"),
        })
        .collect();
    eprintln!(
        "cargo leakcheck: building in {} with {}; reports in {}",
        target.display(),
        if shown.is_empty() {
            "the flags already set".to_owned()
        } else {
            shown.join(" and ")
        },
        reports_dir.display()
    );
    let status = command.status().map_err(|err| CliError::Tool {
        command: runner_name(runner).trim_matches('`').to_owned(),
        problem: format!("could not be started: {err}"),
    })?;
    let reports = document::load_reports(&[reports_dir], "summary", true)?;
    Ok(Outcome {
        workspace,
        cargo_code: status.code(),
        reports,
        no_run: cargo_args.iter().any(|a| a == "--no-run"),
    })
}

/// cargo's own arguments: those before a `--`.
fn cargo_args(args: &[OsString]) -> &[OsString] {
    match args.iter().position(|a| a == "--") {
        Some(end) => &args[..end],
        None => args,
    }
}

/// The value of `--name V` or `--name=V`.
fn value_of(args: &[OsString], name: &str) -> Option<OsString> {
    let prefix = format!("{name}=");
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == name {
            return iter.next().cloned();
        }
        if let Some(value) = arg.to_str().and_then(|a| a.strip_prefix(&prefix)) {
            return Some(value.into());
        }
    }
    None
}

/// The baseline the tests read: `LEAKCHECK_BASELINE` if the user set it,
/// else `leakcheck-baseline.json` at the workspace root if it exists;
/// checked here so a bad file is one error, not a panic in every test.
fn baseline_in_use(workspace: &Workspace) -> Result<Option<PathBuf>, CliError> {
    let path = match std::env::var_os("LEAKCHECK_BASELINE").filter(|p| !p.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => {
            let default = workspace.root.join(DEFAULT_BASELINE_FILE);
            if !default.is_file() {
                return Ok(None);
            }
            default
        }
    };
    let text = std::fs::read_to_string(&path).map_err(|err| {
        CliError::input(&path, format!("cannot be read as the leak baseline: {err}"))
    })?;
    leakcheck::Baseline::parse(&text).map_err(|problem| CliError::input(&path, problem))?;
    let absolute = std::fs::canonicalize(&path).unwrap_or(path);
    eprintln!(
        "cargo leakcheck: leaks recorded in {} do not fail their tests",
        workspace.relative(&absolute)
    );
    Ok(Some(absolute))
}

/// Empties (or creates) the report directory, so only this run's reports
/// are read.
fn reset_dir(dir: &Path) -> Result<(), CliError> {
    let problem = |err: std::io::Error| CliError::Output {
        path: dir.to_owned(),
        source: err,
    };
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(problem(err)),
    }
    std::fs::create_dir_all(dir).map_err(problem)
}

/// The summary of what leaked, and the HTML page when something did.
pub fn print_summary(outcome: &Outcome, target: &Path) -> Result<(), CliError> {
    let summary = summary::summarize(&outcome.reports);
    if !summary::has_leaks(&summary) {
        eprintln!("cargo leakcheck: no test leaked a task");
        return Ok(());
    }
    output::write_stdout(format!("\n{}", summary::render_text(&summary)).as_bytes())?;
    let page = target.join(HTML_PAGE);
    let html = crate::html::reports_page(&summary, &outcome.reports, &page)?;
    output::write(&page, html.as_bytes())?;
    eprintln!(
        "cargo leakcheck: wrote {} (every report, a flame graph); `leakcheck summary {}` prints the above again",
        page.display(),
        target.join(REPORTS_SUBDIR).display()
    );
    Ok(())
}

/// The baseline entries the tests found fixed (from the outcomes the
/// harness writes under `<reports>/baseline/`).
fn print_fixed_entries(reports_dir: &Path) -> Result<(), CliError> {
    let fixed = fixed_entries(&reports_dir.join(BASELINE_OUTCOME_DIR))?;
    if fixed.is_empty() {
        return Ok(());
    }
    let entries = if fixed.len() == 1 { "entry" } else { "entries" };
    eprintln!(
        "cargo leakcheck: {} baseline {entries} no longer leak; run `cargo leakcheck baseline` to drop them:",
        fixed.len()
    );
    for entry in &fixed {
        eprintln!("  fixed: {entry}");
    }
    Ok(())
}

/// Every `fixed` entry of the outcome files in `dir`, sorted.
pub fn fixed_entries(dir: &Path) -> Result<Vec<BaselineEntry>, CliError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(CliError::input(dir, format!("cannot be read: {err}"))),
    };
    let mut fixed = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|err| CliError::input(dir, format!("cannot be read: {err}")))?
            .path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|err| CliError::input(&path, format!("cannot be read: {err}")))?;
        let outcome: BaselineOutcome = serde_json::from_str(&text)
            .map_err(|err| CliError::input(&path, format!("is not a baseline outcome: {err}")))?;
        fixed.extend(outcome.fixed);
    }
    fixed.sort();
    Ok(fixed)
}
