//! `cargo leakcheck baseline`: runs the suite as `cargo leakcheck test`
//! does, with no baseline applied and `--no-fail-fast`, and records every
//! leaked spawn site in `leakcheck-baseline.json` at the workspace root
//! (the core's [`leakcheck::Baseline`], sorted, written atomically). Later
//! `cargo leakcheck test` runs point `LEAKCHECK_BASELINE` at it and fail
//! only on leaks it does not list.

use std::ffi::OsString;

use leakcheck::{Baseline, DEFAULT_BASELINE_FILE};

use crate::cargo::run::{self, Purpose, Runner};
use crate::error::CliError;
use crate::text;

/// Runs the suite and writes the baseline; returns the exit code.
pub fn record(args: &[OsString]) -> Result<u8, CliError> {
    let outcome = run::run(Runner::CargoTest, args, Purpose::RecordBaseline)?;
    if outcome.no_run {
        return Err(CliError::Usage(
            "`--no-run` runs no tests, so there is no leak to record; run `cargo leakcheck baseline` without it".to_owned(),
        ));
    }
    run::print_summary(&outcome)?;
    let degraded = outcome.reports.iter().filter(|r| r.report.degraded).count();
    if degraded > 0 {
        eprintln!(
            "cargo leakcheck baseline: warning: {} written without spawn sites (count-only) cannot be recorded",
            text::count(degraded, "report")
        );
    }
    let baseline = Baseline::from_reports(outcome.reports.iter().map(|r| &r.report));
    let path = outcome.workspace.root.join(DEFAULT_BASELINE_FILE);
    leakcheck::write_atomically(&path, baseline.to_json().as_bytes()).map_err(|source| {
        CliError::Output {
            path: path.clone(),
            source,
        }
    })?;
    let tests = outcome
        .reports
        .iter()
        .filter(|r| !r.report.sites.is_empty())
        .count();
    let entries = if baseline.entries.len() == 1 {
        "entry"
    } else {
        "entries"
    };
    eprintln!(
        "cargo leakcheck baseline: wrote {} with {} {entries} from {}; commit it: `cargo leakcheck test` now fails only on leaks it does not list",
        path.display(),
        baseline.entries.len(),
        text::count(tests, "leaking test"),
    );
    // Leaks are what a baseline records: only other failures fail it.
    Ok(outcome.conclude(Runner::CargoTest, "cargo leakcheck baseline", false))
}
