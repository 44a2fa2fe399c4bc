//! Command-line usage: help text and flag errors.

use crate::support::run;

#[test]
fn help_documents_the_exit_codes() {
    let run = run(&["--help"]);
    assert_eq!(run.code, 0);
    for line in [
        "Exit codes:",
        "  1  --fail-on-leaks",
        "  2  bad command line or bad input",
        "  3  an output file",
        "  4  a report directory is empty or missing",
    ] {
        assert!(
            run.stdout.contains(line),
            "{line:?} missing from --help:\n{}",
            run.stdout
        );
    }
    for command in ["summary", "diff", "flamegraph", "html", "snapshot", "watch"] {
        assert!(
            run.stdout.contains(command),
            "{command} missing from --help"
        );
    }
}

#[test]
fn usage_errors_exit_with_2() {
    assert_eq!(run(&[]).code, 2);
    assert_eq!(run(&["summary"]).code, 2, "inputs are required");
    assert_eq!(run(&["flamegraph", "reports"]).code, 2, "-o is required");
    assert_eq!(run(&["frobnicate"]).code, 2);
    let bad_timeout = run(&["snapshot", "http://127.0.0.1:1", "--timeout", "soon"]);
    assert_eq!(bad_timeout.code, 2);
    assert!(
        bad_timeout
            .stderr
            .contains("expected a duration like 10s, 500ms or 2m"),
        "{}",
        bad_timeout.stderr
    );
}
