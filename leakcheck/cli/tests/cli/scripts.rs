//! `scripts/bisect-leaks.sh`, run against a stand-in test binary.

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
