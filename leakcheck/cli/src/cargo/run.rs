//! `cargo leakcheck test`, `cargo leakcheck nextest` and the run behind
//! `cargo leakcheck baseline`: the user's suite with leakcheck's flags added
//! to theirs ([`super::rustflags`]), built in `<target dir>/leakcheck` so
//! their normal and release builds are never rebuilt, with reports on; then
//! the summary of what leaked, the HTML page, the baseline entries now
//! fixed, and a verdict that tells leaks from other failures.
//!
//! A leaking test fails as a test (fail mode, unless the user set
//! `LEAKCHECK_MODE`). The runner's output is forwarded as it comes and read
//! for the names of failed tests ([`super::failures`]); a failed test with
//! a leak report failed on its leak, any other failed for another reason.
//! Being piped, cargo and the runner print without colours (forcing them
//! would put escape codes in the lines being read).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use leakcheck::{BASELINE_OUTCOME_DIR, BaselineEntry, BaselineOutcome, DEFAULT_BASELINE_FILE};

use crate::cargo::failures;
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
    /// The target directory the suite was built in.
    pub target: PathBuf,
    /// cargo's exit code (`None`: killed by a signal).
    pub cargo_code: Option<i32>,
    /// The names of the tests the runner reported as failed.
    pub failed: BTreeSet<String>,
    /// The leak reports the tests wrote.
    pub reports: Vec<LoadedReport>,
    /// Whether `--no-run` was passed (nothing ran).
    pub no_run: bool,
    /// Whether `--no-fail-fast` was passed (every test binary ran).
    pub no_fail_fast: bool,
}

/// The failed tests split by cause.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Tests that wrote a leak report (they may also have failed otherwise).
    pub leaked: Vec<String>,
    /// Failed tests without a leak report.
    pub other_failures: Vec<String>,
}

/// Splits the runner's failed tests: a report names a test by its crate
/// and path (`leaks::leaks_a_task`), the runner by its path in the crate
/// (`leaks_a_task`).
pub fn classify(failed: &BTreeSet<String>, report_tests: &[&str]) -> Verdict {
    let has_report = |name: &str| {
        report_tests.iter().any(|test| {
            *test == name
                || test
                    .strip_suffix(name)
                    .and_then(|krate| krate.strip_suffix("::"))
                    .is_some_and(|krate| !krate.contains("::"))
        })
    };
    let mut leaked: Vec<String> = report_tests.iter().map(|t| (*t).to_owned()).collect();
    leaked.sort();
    leaked.dedup();
    Verdict {
        leaked,
        other_failures: failed
            .iter()
            .filter(|name| !has_report(name))
            .cloned()
            .collect(),
    }
}

impl Outcome {
    /// The verdict of this run.
    pub fn verdict(&self) -> Verdict {
        let tests: Vec<&str> = self
            .reports
            .iter()
            .filter(|r| r.report.leaked > 0)
            .map(|r| r.report.test.as_str())
            .collect();
        classify(&self.failed, &tests)
    }

    /// The exit code, after saying on stderr what it means: `what` is the
    /// command (`cargo leakcheck` or `cargo leakcheck baseline`); leaks are
    /// a failure only when `leaks_fail`.
    pub fn conclude(&self, runner: Runner, what: &str, leaks_fail: bool) -> u8 {
        let verdict = self.verdict();
        let leaked = text::count(verdict.leaked.len(), "test");
        let code = match self.cargo_code {
            Some(0) if verdict.leaked.is_empty() => exit::OK,
            Some(0) => {
                eprintln!(
                    "{what}: {leaked} leaked without failing (LEAKCHECK_MODE=warn or `mode = \"warn\"`)"
                );
                exit::OK
            }
            _ if !verdict.other_failures.is_empty() => {
                let also = if verdict.leaked.is_empty() {
                    String::new()
                } else {
                    format!("; {leaked} leaked")
                };
                eprintln!(
                    "{what}: {} failed for other reasons than leaks: {}{also}; exit code {}",
                    text::count(verdict.other_failures.len(), "test"),
                    summary::list_names(&verdict.other_failures),
                    exit::TESTS_FAILED
                );
                exit::TESTS_FAILED
            }
            _ if !self.failed.is_empty() => {
                if leaks_fail {
                    eprintln!(
                        "{what}: {leaked} failed on leaks and nothing else failed: {}; exit code {}",
                        summary::list_names(&verdict.leaked),
                        exit::LEAKS_FOUND
                    );
                    exit::LEAKS_FOUND
                } else {
                    exit::OK
                }
            }
            code => {
                eprintln!(
                    "{what}: {} failed without a failing test (a build error? see its output above); exiting with its code",
                    runner_name(runner)
                );
                cargo_exit(code)
            }
        };
        if code != exit::OK && self.cargo_code != Some(0) && !self.no_fail_fast {
            eprintln!(
                "{what}: hint: the runner stops at the first test binary that fails; pass --no-fail-fast to run them all"
            );
        }
        code
    }
}

/// `cargo leakcheck test` / `nextest`: runs, reports, returns the exit code.
pub fn check(runner: Runner, args: &[OsString]) -> Result<u8, CliError> {
    let outcome = run(runner, args, Purpose::Check)?;
    if outcome.no_run {
        return Ok(if outcome.cargo_code == Some(0) {
            exit::OK
        } else {
            cargo_exit(outcome.cargo_code)
        });
    }
    print_summary(&outcome)?;
    print_fixed_entries(&outcome.target.join(REPORTS_SUBDIR))?;
    Ok(outcome.conclude(runner, "cargo leakcheck", true))
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
    if !workspace.members.iter().any(|m| m.depends_on_leakcheck) {
        eprintln!(
            "cargo leakcheck: warning: no package of this workspace depends on leakcheck, so no test can report a leak; run `cargo leakcheck adopt` first"
        );
    }
    // The user's own `--target-dir` wins over leakcheck's, as for cargo.
    let target = value_of(cargo_args, "--target-dir")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.target_dir.join(TARGET_SUBDIR));
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
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| CliError::Tool {
            command: runner_name(runner).trim_matches('`').to_owned(),
            problem: format!("could not be started: {err}"),
        })?;
    let stdout = failures::forward(child.stdout.take().expect("piped"), std::io::stdout());
    let stderr = failures::forward(child.stderr.take().expect("piped"), std::io::stderr());
    let status = child.wait().map_err(|err| CliError::Tool {
        command: runner_name(runner).trim_matches('`').to_owned(),
        problem: format!("could not be waited for: {err}"),
    })?;
    let mut failed = stdout.join().unwrap_or_default();
    failed.extend(stderr.join().unwrap_or_default());
    let reports = document::load_reports(&[reports_dir], "summary", true)?;
    Ok(Outcome {
        workspace,
        target,
        cargo_code: status.code(),
        failed,
        reports,
        no_run: cargo_args.iter().any(|a| a == "--no-run"),
        no_fail_fast: cargo_args
            .iter()
            .any(|a| a == "--no-fail-fast" || a == "--nff")
            || purpose == Purpose::RecordBaseline,
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
pub fn print_summary(outcome: &Outcome) -> Result<(), CliError> {
    let target = &outcome.target;
    let summary = summary::summarize(&outcome.reports);
    if !summary::has_leaks(&summary) {
        eprintln!("cargo leakcheck: no test leaked a task");
        return Ok(());
    }
    output::write_stdout(format!("\n{}", summary::render_text(&summary)).as_bytes())?;
    let degraded = outcome.reports.iter().filter(|r| r.report.degraded).count();
    if degraded > 0 {
        eprintln!(
            "cargo leakcheck: warning: {} without spawn sites: those tests were built without `--cfg tokio_unstable` although it was added above (a `RUSTC_WRAPPER` or build script replacing rustc's flags?)",
            text::count(degraded, "report")
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn failed_tests_with_a_report_failed_on_their_leak() {
        let failed = names(&["leaks_a_task", "tests::panics", "tests::leaks"]);
        let verdict = classify(&failed, &["leaks::leaks_a_task", "app::tests::leaks"]);
        assert_eq!(verdict.leaked, ["app::tests::leaks", "leaks::leaks_a_task"]);
        assert_eq!(verdict.other_failures, ["tests::panics"]);
    }

    fn outcome(cargo_code: Option<i32>, failed: &[&str]) -> Outcome {
        let fixture = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/reports/server__tests__accept_loop_leaks.json"
        );
        let document::Document::Report(report) = document::load(Path::new(fixture)).unwrap() else {
            panic!("{fixture} is a leak report");
        };
        Outcome {
            workspace: Workspace {
                root: PathBuf::from("/ws"),
                target_dir: PathBuf::from("/ws/target"),
                members: Vec::new(),
            },
            target: PathBuf::from("/ws/target/leakcheck"),
            cargo_code,
            failed: names(failed),
            reports: vec![LoadedReport {
                path: PathBuf::from(fixture),
                report,
            }],
            no_run: false,
            no_fail_fast: true,
        }
    }

    #[test]
    fn exit_codes_tell_leaks_from_other_failures_and_build_errors() {
        let check = |o: &Outcome| o.conclude(Runner::CargoTest, "test", true);
        assert_eq!(
            check(&outcome(Some(101), &["tests::accept_loop_leaks"])),
            exit::LEAKS_FOUND
        );
        assert_eq!(
            check(&outcome(
                Some(101),
                &["tests::accept_loop_leaks", "tests::other"]
            )),
            exit::TESTS_FAILED
        );
        // cargo failed, yet no test did: a build error keeps cargo's code.
        assert_eq!(check(&outcome(Some(101), &[])), 101);
        assert_eq!(check(&outcome(None, &[])), 101);
        // A leak that did not fail its test (`mode = "warn"`) does not fail the run.
        assert_eq!(check(&outcome(Some(0), &[])), exit::OK);
        // Recording a baseline, leaks are what it is for.
        let record = outcome(Some(101), &["tests::accept_loop_leaks"]);
        assert_eq!(
            record.conclude(Runner::CargoTest, "baseline", false),
            exit::OK
        );
    }

    #[test]
    fn a_report_matches_only_its_own_crate_level_path() {
        // `b::leaks` in crate `a` is not the runner's `leaks`.
        let verdict = classify(&names(&["leaks"]), &["a::b::leaks"]);
        assert_eq!(verdict.other_failures, ["leaks"]);
    }
}
