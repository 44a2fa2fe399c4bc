//! The report is the product: these tests pin what a failing test prints,
//! what it writes to `LEAKCHECK_REPORT_DIR`, and that a panicking body keeps
//! its own message.
//!
//! The `fixture_*` tests are `#[ignore]`d leaky tests; the others run them in
//! a child process (this same test binary) with a controlled environment.

#![cfg(tokio_unstable)]

use std::process::Command;
use std::time::Duration;

#[leakcheck::test(grace = "20ms")]
#[should_panic(expected = "leakcheck: 1 leaked task in `wording::leak_fails_with_count_and_name`")]
async fn leak_fails_with_count_and_name() {
    tokio::spawn(std::future::pending::<()>());
}

#[leakcheck::test(grace = "20ms")]
#[should_panic(expected = "── leakcheck/tests/wording.rs:23:9 · 2 tasks ──")]
async fn report_groups_by_workspace_relative_site() {
    for _ in 0..2 {
        tokio::spawn(std::future::pending::<()>());
    }
}

#[leakcheck::test(grace = "20ms")]
#[should_panic(
    expected = "hint: the task spawned at leakcheck/tests/wording.rs:32:5 is still running"
)]
async fn report_ends_with_a_hint_naming_the_site() {
    tokio::spawn(std::future::pending::<()>());
}

#[leakcheck::test(grace = "20ms", mode = "warn")]
async fn warn_mode_passes() {
    tokio::spawn(std::future::pending::<()>());
}

#[leakcheck::test(grace = "20ms")]
#[ignore = "fixture run by body_panic_keeps_its_message"]
async fn fixture_panicking_body_that_also_leaks() {
    tokio::spawn(std::future::pending::<()>());
    panic!("the body's own failure");
}

#[leakcheck::test(grace = "20ms")]
#[ignore = "fixture run by the report-file tests"]
async fn fixture_leaky() {
    tokio::spawn(std::future::pending::<()>());
}

fn run_fixture(name: &str, envs: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args([
        name,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for var in [
        "LEAKCHECK_REPORT_DIR",
        "LEAKCHECK_MODE",
        "LEAKCHECK_GRACE",
        "CI",
        "GITHUB_ACTIONS",
    ] {
        command.env_remove(var);
    }
    command.envs(envs.iter().copied());
    let output = command.output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn body_panic_keeps_its_message_and_leaks_follow() {
    let (ok, _, stderr) = run_fixture("fixture_panicking_body_that_also_leaks", &[]);
    assert!(!ok);
    let panic = stderr
        .find("the body's own failure")
        .expect("the original panic message is kept");
    let leak = stderr
        .find("leakcheck: 1 leaked task")
        .expect("leak details are printed");
    assert!(
        panic < leak,
        "the body's panic comes first, leak details follow:\n{stderr}"
    );
}

#[test]
fn report_dir_receives_one_complete_json_report() {
    let dir = std::env::temp_dir().join(format!("leakcheck-wording-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (ok, _, stderr) = run_fixture(
        "fixture_leaky",
        &[("LEAKCHECK_REPORT_DIR", dir.to_str().unwrap())],
    );
    assert!(!ok, "{stderr}");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        files.len(),
        1,
        "one report, no temporary left behind: {files:?}"
    );
    assert!(
        files[0]
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with("wording__fixture_leaky.json")
    );
    let report: leakcheck::LeakReport =
        serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    assert_eq!(report.schema_version, leakcheck::SCHEMA_VERSION);
    assert_eq!(report.kind, "leak_report");
    assert_eq!(report.test, "wording::fixture_leaky");
    assert_eq!(report.leaked, 1);
    assert_eq!(report.sites[0].site.file, "leakcheck/tests/wording.rs");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn github_actions_gets_an_annotation_at_the_spawn_site() {
    let (ok, stdout, _) = run_fixture("fixture_leaky", &[("GITHUB_ACTIONS", "true")]);
    assert!(!ok);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("::error "))
        .unwrap_or_else(|| panic!("no annotation on stdout:\n{stdout}"));
    assert!(
        line.starts_with("::error file=leakcheck/tests/wording.rs,line=50,col=5,title=leakcheck%3A leaked task::1 task spawned here outlived test `wording::fixture_leaky`"),
        "{line}"
    );
}

#[test]
fn env_mode_warn_lets_the_test_pass() {
    let (ok, _, stderr) = run_fixture("fixture_leaky", &[("LEAKCHECK_MODE", "warn")]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("leakcheck: 1 leaked task"));
}

#[test]
fn warn_mode_annotates_a_warning_and_marks_its_report() {
    let dir = std::env::temp_dir().join(format!("leakcheck-warn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (ok, stdout, stderr) = run_fixture(
        "fixture_leaky",
        &[
            ("LEAKCHECK_MODE", "warn"),
            ("GITHUB_ACTIONS", "true"),
            ("LEAKCHECK_REPORT_DIR", dir.to_str().unwrap()),
        ],
    );
    assert!(ok, "{stderr}");
    assert!(!stdout.contains("::error"), "no error annotation: {stdout}");
    assert!(
        stdout.contains("::warning file=leakcheck/tests/wording.rs,line=50,"),
        "{stdout}"
    );
    let path = dir.join("wording__fixture_leaky.json");
    let report: leakcheck::LeakReport =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        report.mode,
        leakcheck::Mode::Warn,
        "a warning, not a failure report"
    );
}

#[test]
fn malformed_env_names_the_variable() {
    let (ok, _, stderr) = run_fixture("fixture_leaky", &[("LEAKCHECK_GRACE", "soon")]);
    assert!(!ok);
    assert!(
        stderr.contains("LEAKCHECK_GRACE=\"soon\" is not valid: expected a duration"),
        "{stderr}"
    );
}

#[test]
fn json_round_trips_and_display_is_deterministic() {
    let report = common_report();
    let json = report.to_json();
    let back: leakcheck::LeakReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);
    assert_eq!(back.to_string(), report.to_string());
}

fn common_report() -> leakcheck::LeakReport {
    let tracker = leakcheck::Tracker::new();
    let mut builder = tokio::runtime::Builder::new_current_thread();
    tracker.install(builder.enable_all());
    builder
        .build()
        .unwrap()
        .block_on(async {
            let guard = leakcheck::verify_none().grace(Duration::from_millis(10));
            tokio::spawn(std::future::pending::<()>());
            guard.verify().await
        })
        .unwrap_err()
}

#[leakcheck::test(grace = "20ms")]
#[should_panic(expected = "\n  also task ")]
async fn one_other_task_is_named_in_the_singular() {
    for _ in 0..2 {
        tokio::spawn(std::future::pending::<()>());
    }
}

/// Two leaks from one file, spawned on two lines.
#[allow(clippy::result_large_err)] // mirrors `VerifyGuard::verify`
fn two_sites_report(ignore: Option<&str>) -> Result<(), leakcheck::LeakReport> {
    let tracker = leakcheck::Tracker::new();
    let mut builder = tokio::runtime::Builder::new_current_thread();
    tracker.install(builder.enable_all());
    builder.build().unwrap().block_on(async {
        let mut guard = leakcheck::verify_none().grace(Duration::from_millis(10));
        if let Some(pattern) = ignore {
            guard = guard.ignore(pattern);
        }
        tokio::spawn(std::future::pending::<()>());
        tokio::spawn(std::future::pending::<()>());
        guard.verify().await
    })
}

#[test]
fn the_hinted_ignore_hides_that_site_and_not_the_rest_of_its_file() {
    let text = two_sites_report(None).unwrap_err().to_string();
    let pattern = text
        .split("ignore = \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("the hint offers an ignore pattern:\n{text}"));
    assert!(
        pattern.starts_with("leakcheck/tests/wording.rs:"),
        "the pattern names the site, not the file: {pattern}"
    );
    let rest = two_sites_report(Some(pattern)).unwrap_err();
    assert_eq!(rest.leaked, 1, "{rest}");
    assert_eq!(rest.ignored, 1);
    assert_ne!(
        format!("{}:{}", rest.sites[0].site.file, rest.sites[0].site.line),
        pattern
    );
}

#[test]
fn expected_leak_of_a_should_panic_test_is_not_published() {
    let dir = std::env::temp_dir().join(format!("leakcheck-expected-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args(["leak_fails_with_count_and_name", "--exact", "--nocapture"]);
    command
        .env("GITHUB_ACTIONS", "true")
        .env("LEAKCHECK_REPORT_DIR", &dir);
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the should_panic test passes: {stdout}"
    );
    assert!(
        !stdout.contains("::error"),
        "no annotation for an expected leak: {stdout}"
    );
    assert!(!dir.exists(), "no report file for an expected leak");
}

/// Replaces what changes between runs (task ids, ages, the real time waited)
/// with placeholders.
fn redact(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(pos) = rest.find(|c: char| c.is_ascii_digit()) {
        let (head, tail) = rest.split_at(pos);
        let digits = tail.len() - tail.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        out.push_str(head);
        let varies = head.ends_with("task ")
            || head.ends_with("age ")
            || head.ends_with("tasks ")
            || head.ends_with("still running ")
            || head.ends_with("grace (");
        out.push_str(if varies { "N" } else { &tail[..digits] });
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
}

#[test]
fn report_layout_is_pinned() {
    let text = redact(&common_report().to_string());
    assert_eq!(text, EXPECTED_LAYOUT);
}

const EXPECTED_LAYOUT: &str = "\
leakcheck: 1 leaked task in `verify_none scope at leakcheck/tests/wording.rs:209:25` (still running N ms after the scope ended)

── leakcheck/tests/wording.rs:210:13 · 1 task ──
  task N · age N ms · spawned by the scope's code
  idle: polled once during the grace (N ms ago), then waiting for a wake that has not come
  spawn backtrace:
    0: wording::common_report::{{closure}} at leakcheck/tests/wording.rs:210
    1: wording::common_report at leakcheck/tests/wording.rs:208
    2: wording::report_layout_is_pinned at leakcheck/tests/wording.rs:307
    3: wording::report_layout_is_pinned::{{closure}} at leakcheck/tests/wording.rs:306

hint: the task spawned at leakcheck/tests/wording.rs:210:13 is still running; keep its JoinHandle and await or abort it before the scope ends (or cancel it with a token), or add `ignore = \"leakcheck/tests/wording.rs:210\"` if it is meant to outlive the scope
";
