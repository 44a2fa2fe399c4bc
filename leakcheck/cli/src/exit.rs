//! The process exit codes of `leakcheck`, one named constant each.

use std::process::ExitCode;

/// The command did what was asked (and, with `--fail-on-*`, found nothing to fail on).
pub const OK: u8 = 0;
/// `summary --fail-on-leaks` found leaked tasks, or `diff --fail-on-growth`
/// found spawn sites that grew or appeared.
pub const LEAKS_FOUND: u8 = 1;
/// Bad command line or bad input: a missing file, a file
/// that is not a leakcheck document of a known `schema_version` and `kind`.
/// Also what clap returns for unknown flags.
pub const INPUT_ERROR: u8 = 2;
/// The inputs were fine but the work failed: an output file could not be
/// written, or a snapshot could not be fetched.
pub const RUN_ERROR: u8 = 3;
/// A report directory is empty or does not exist, so there was nothing to
/// read: distinct from [`OK`] so that "no leaks" is never confused with
/// "looked in the wrong place". `--allow-empty` turns it into an empty input.
pub const NO_REPORTS: u8 = 4;

/// `cargo leakcheck test` / `baseline`: tests failed for other reasons than
/// leaks (some may have leaked too); as nextest's "test run failed".
pub const TESTS_FAILED: u8 = 100;

/// The exit-code table shown at the end of `leakcheck --help`.
pub const HELP_TABLE: &str = "\
Exit codes:
  0  success (no leaks found when --fail-on-leaks / --fail-on-growth is given)
  1  --fail-on-leaks found leaked tasks, --fail-on-new found new leaks, or --fail-on-growth
     found sites that grew or appeared
  2  bad command line or bad input (missing file, truncated or binary file,
     unknown schema_version or kind)
  3  an output file could not be written, or a snapshot could not be fetched
  4  a report directory is empty or missing (--allow-empty reads it as no leaks)";

/// The exit-code table shown at the end of `cargo leakcheck --help`.
pub const CARGO_HELP_TABLE: &str = "\
Exit codes:
  0    nothing leaked and nothing failed (adopt: done, or nothing to change)
  1    tests failed on leaks and nothing else failed; adopt --check: something would change
  2    bad command line or input (a file that does not parse, a dirty git tree, a bad baseline)
  3    a file could not be written, or cargo or git could not run
  100  tests failed for other reasons than leaks (some may have leaked too)
  *    cargo's own code when it failed without a failing test (a build error)";

/// Converts one of the constants above into the process exit status.
pub fn code(value: u8) -> ExitCode {
    ExitCode::from(value)
}
