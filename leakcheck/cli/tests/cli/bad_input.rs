//! Bad inputs: each is refused with one line naming the file and the problem,
//! exit code 2, no panic, whichever subcommand reads it.

use crate::support::{Scratch, run};

const CASES: &[(&str, &str)] = &[
    (
        "bad/truncated.json",
        "truncated JSON: the document ends early at line 1 column 187",
    ),
    (
        "bad/binary.json",
        "binary data, not a JSON leakcheck document",
    ),
    (
        "bad/schema_v99.json",
        "schema_version 99 is not supported: this leakcheck reads versions 1 to 3",
    ),
    (
        "bad/wrong_kind.json",
        "unknown kind \"coverage_report\": expected \"leak_report\" or \"snapshot\"",
    ),
    ("bad/no_version.json", "no `schema_version` field"),
    (
        "bad/not_object.json",
        "expected a JSON object (a leakcheck report or snapshot), found an array",
    ),
    (
        "bad/schema_mismatch.json",
        "does not match the leak_report schema: invalid type: string \"three\"",
    ),
    ("bad/empty.json", "empty file"),
    (
        "bad/invalid.json",
        "invalid JSON: key must be a string at line 1 column 45",
    ),
    ("bad/does_not_exist.json", "no such file or directory"),
];

#[test]
fn every_subcommand_names_the_bad_file_and_the_problem() {
    for (file, problem) in CASES {
        let expected = format!("{file}: {problem}");
        run(&["summary", file]).assert_one_line_error(2, &[&expected]);
        run(&["flamegraph", file, "-o", "-"]).assert_one_line_error(2, &[&expected]);
        run(&["html", file, "-o", "-"]).assert_one_line_error(2, &[&expected]);
        run(&["diff", "snapshots/before.json", file]).assert_one_line_error(2, &[&expected]);
    }
}

#[test]
fn one_bad_file_in_a_directory_stops_the_command() {
    run(&["summary", "bad"]).assert_one_line_error(2, &["bad/binary.json: binary data"]);
}

#[test]
fn an_empty_or_missing_directory_is_not_no_leaks() {
    let scratch = Scratch::new("empty-dir");
    std::fs::write(scratch.path().join("notes.txt"), "not a report").expect("write");
    let dir = scratch.join("");
    let missing = scratch.join("never-created");
    for input in [&dir, &missing] {
        run(&["summary", input]).assert_one_line_error(4, &[input, "--allow-empty"]);
        run(&["html", input, "-o", "-"]).assert_one_line_error(4, &[input]);
    }
    run(&["summary", &dir]).assert_one_line_error(4, &["directory holds no *.json reports"]);
    run(&["summary", &missing]).assert_one_line_error(4, &["no such directory"]);
    // A missing *.json is a mistyped file, not a directory the tests never made.
    run(&["summary", "reports/typo.json"]).assert_one_line_error(2, &["no such file"]);
}

#[test]
fn allow_empty_reads_an_empty_or_missing_directory_as_no_leaks() {
    let scratch = Scratch::new("allow-empty");
    let missing = scratch.join("never-created");
    let run = run(&["summary", "--allow-empty", &missing, "--fail-on-leaks"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "leakcheck: no leaked tasks in 0 reports\n");
    let merged = crate::support::run(&["summary", "--allow-empty", &missing, "reports"]);
    assert_eq!(merged.code, 0, "{}", merged.stderr);
    assert!(
        merged.stdout.contains("in 3 of 3 reports"),
        "{}",
        merged.stdout
    );
}

#[test]
fn a_failed_command_leaves_no_output_file() {
    let scratch = Scratch::new("no-half-file");
    let output = scratch.join("leaks.html");
    run(&["html", "reports", "bad/truncated.json", "-o", &output])
        .assert_one_line_error(2, &["truncated JSON"]);
    assert!(scratch.files().is_empty(), "{:?}", scratch.files());
}
