//! `cargo leakcheck`, the cargo subcommand: its command line and dispatch.
//! cargo runs it as `cargo-leakcheck leakcheck <args>`.
//!
//! - `adopt` ([`adopt`]): the codemod to `#[leakcheck::test]` plus the
//!   dev-dependency;
//! - `test`, `nextest` ([`run`](mod@run)): the suite with leakcheck's flags added to
//!   the user's ([`rustflags`]), in its own target directory, then the leak
//!   summary and HTML page;
//! - `baseline` ([`baseline`]): the same run, recording what leaked.
//!
//! # Exit codes
//! | code | constant | meaning |
//! |---|---|---|
//! | 0 | [`exit::OK`] | nothing leaked, nothing failed (`adopt`: done, or nothing to change) |
//! | 1 | [`exit::LEAKS_FOUND`] | tests failed on leaks and nothing else failed; `adopt --check`: something would change |
//! | 2 | [`exit::INPUT_ERROR`] | bad command line or input (a file that does not parse, a dirty tree, a bad baseline) |
//! | 3 | [`exit::RUN_ERROR`] | a file could not be written, or cargo or git could not run |
//! | 100 | [`exit::TESTS_FAILED`] | tests failed for other reasons than leaks (some may have leaked too) |
//! | other | cargo's | cargo failed without a failing test (a build error) |

pub mod adopt;
pub mod baseline;
pub mod failures;
pub mod manifest;
pub mod rewrite;
pub mod run;
pub mod rustflags;
pub mod sources;
pub mod vcs;
pub mod workspace;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::error::CliError;
use crate::exit;

/// Adopt leakcheck in a workspace and run its tests with tokio's task hooks on.
#[derive(Debug, Parser)]
#[command(
    name = "cargo leakcheck",
    bin_name = "cargo leakcheck",
    version,
    after_help = exit::CARGO_HELP_TABLE
)]
pub struct CargoLeakcheck {
    /// What to do.
    #[command(subcommand)]
    pub command: CargoCommand,
}

/// The subcommands of `cargo leakcheck`. Their doc comments are clap's help text, written for a
/// terminal, not rustdoc markup.
#[allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]
#[derive(Debug, Subcommand)]
pub enum CargoCommand {
    /// Rewrite every #[tokio::test] of the workspace's targets to
    /// #[leakcheck::test] (arguments, comments and formatting kept) and add
    /// the leakcheck dev-dependency to each package that needs it.
    Adopt {
        /// Change nothing; exit with 1 when something would change (listing it).
        #[arg(long)]
        check: bool,
        /// Rewrite even when the git work tree has uncommitted changes.
        #[arg(long)]
        allow_dirty: bool,
        /// Rewrite even outside a git repository.
        #[arg(long)]
        allow_no_vcs: bool,
        /// Depend on the leakcheck crate in this directory (a path
        /// dependency) instead of `leakcheck = "0.1"` from crates.io.
        #[arg(long, value_name = "DIR")]
        path: Option<PathBuf>,
        /// The workspace's (or package's) Cargo.toml.
        #[arg(long, value_name = "PATH")]
        manifest_path: Option<PathBuf>,
    },
    /// Run `cargo test` with `--cfg tokio_unstable -C force-frame-pointers=yes`
    /// added to your flags, in <target dir>/leakcheck, with leak reports on;
    /// print what leaked, write <target dir>/leakcheck/report.html. Leaks
    /// listed in leakcheck-baseline.json do not fail; exit 1 when the only
    /// failures were leaks, 100 when tests failed for other reasons.
    #[command(after_help = exit::CARGO_HELP_TABLE)]
    Test {
        /// Arguments for `cargo test`, passed through.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CARGO TEST ARGS"
        )]
        args: Vec<OsString>,
    },
    /// The same with cargo-nextest: `cargo leakcheck nextest run [ARGS]`.
    Nextest {
        /// Arguments for `cargo nextest`, starting with its subcommand (`run`).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            required = true,
            value_name = "NEXTEST ARGS"
        )]
        args: Vec<OsString>,
    },
    /// Run the suite as `test` does and record every leaked spawn site in
    /// leakcheck-baseline.json at the workspace root: later runs fail only
    /// on leaks not in it.
    Baseline {
        /// Arguments for `cargo test`, passed through.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CARGO TEST ARGS"
        )]
        args: Vec<OsString>,
    },
}

/// The arguments after the program name, without the `leakcheck` that cargo
/// inserts when it runs the binary as a subcommand.
pub fn arguments(mut args: Vec<OsString>) -> Vec<OsString> {
    if args.get(1).is_some_and(|arg| arg == "leakcheck") {
        args.remove(1);
    }
    args
}

/// Runs a parsed command; returns the exit code.
pub fn run(command: CargoCommand) -> Result<u8, CliError> {
    match command {
        CargoCommand::Adopt {
            check,
            allow_dirty,
            allow_no_vcs,
            path,
            manifest_path,
        } => adopt::run(&adopt::AdoptOptions {
            check,
            allow: vcs::Allow {
                dirty: allow_dirty,
                no_vcs: allow_no_vcs,
            },
            path,
            manifest_path,
        }),
        CargoCommand::Test { args } => run::check(run::Runner::CargoTest, &args),
        CargoCommand::Nextest { args } => run::check(run::Runner::Nextest, &args),
        CargoCommand::Baseline { args } => baseline::record(&args),
    }
}

/// The binary's `main`: parse, run, print an error as one line.
pub fn main() -> std::process::ExitCode {
    let cli = CargoLeakcheck::parse_from(arguments(std::env::args_os().collect()));
    match run(cli.command) {
        Ok(code) => exit::code(code),
        Err(error) => {
            eprintln!("cargo leakcheck: error: {error}");
            exit::code(error.exit_code())
        }
    }
}
