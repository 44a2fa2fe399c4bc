//! `scripts/bisect-leaks.sh`, run against a stand-in test binary, and
//! `scripts/check.sh` against the CI workflow that calls it.

use std::path::Path;
use std::process::Command;

use crate::support::{Scratch, fixtures};

#[test]
fn bisect_lists_tests_that_leak_by_report_or_by_message() {
    let scratch = Scratch::new("bisect");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bisect-leaks.sh");
    let keep = scratch.join("work");
    let output = Command::new("bash")
        .arg(&script)
        .args(["-t", "30", "-o", &keep])
        .arg(fixtures().join("fake-libtest.sh"))
        .output()
        .expect("bash runs the script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "leaks found: {stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "ok       tests::clean");
    assert_eq!(
        lines[1],
        format!("leak     tests::leaks  ({keep}/reports/tests__leaks.json)")
    );
    assert_eq!(lines[2], "leak     tests::warns");
    assert!(
        lines[3].starts_with("fail     tests::fails (exit 101, no leak report; log: "),
        "{}",
        lines[3]
    );
    assert!(
        stdout.contains("4 tests run alone: 2 leak, 1 fail or time out without a leak report\n")
    );
    assert!(stdout.contains("leaking tests:\n  tests::leaks\n  tests::warns\n"));
    assert!(Path::new(&keep).join("reports/tests__leaks.json").is_file());
}

fn repository_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// Every `scripts/check.sh STEP...` the workflow runs.
fn workflow_steps(workflow: &str) -> Vec<String> {
    workflow
        .lines()
        .filter_map(|line| line.split_once("scripts/check.sh "))
        .flat_map(|(_, rest)| rest.split_whitespace().map(str::to_owned))
        .collect()
}

#[test]
fn ci_runs_its_checks_through_check_sh_and_check_sh_runs_them_all() {
    let workflow = repository_file(".github/workflows/ci.yml");
    let check = repository_file("scripts/check.sh");
    let default_steps: Vec<&str> = check
        .lines()
        .find_map(|line| line.trim().strip_prefix("steps=("))
        .and_then(|steps| steps.strip_suffix(')'))
        .expect("check.sh lists its default steps")
        .split_whitespace()
        .collect();
    let in_ci = workflow_steps(&workflow);
    assert!(in_ci.len() >= 8, "{in_ci:?}");
    for step in &in_ci {
        assert!(
            check.contains(&format!("            {step}) step_")),
            "ci.yml runs `scripts/check.sh {step}`, which check.sh does not know"
        );
        // The gate needs main's reports, so only CI (or a person who has them) runs it.
        if step != "leak-gate" {
            assert!(
                default_steps.contains(&step.as_str()),
                "`scripts/check.sh` alone skips `{step}`, which CI runs"
            );
        }
    }
    for step in &default_steps {
        assert!(
            in_ci.iter().any(|s| s == step),
            "check.sh runs `{step}` by default but no CI job does"
        );
    }
}
