//! The command line itself: help with the exit codes, bad subcommands.

use crate::support::cargo_leakcheck;

#[test]
fn help_lists_the_subcommands_and_exit_codes() {
    let run = cargo_leakcheck(std::path::Path::new("."), &["--help"], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    for needle in [
        "adopt",
        "test",
        "nextest",
        "baseline",
        "Exit codes:",
        "100  tests failed for other reasons",
    ] {
        assert!(
            run.stdout.contains(needle),
            "{needle:?} missing: {}",
            run.stdout
        );
    }
}

#[test]
fn an_unknown_subcommand_is_a_usage_error() {
    let run = cargo_leakcheck(std::path::Path::new("."), &["frobnicate"], &[]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("unrecognized subcommand 'frobnicate'"),
        "{}",
        run.stderr
    );
}
