//! The pull-request gate and sharded CI, end to end: a small suite of tests
//! run on leakcheck-tracked runtimes writes real reports (as
//! `#[leakcheck::test]` does under CI), and `leakcheck diff --fail-on-new`
//! and `leakcheck summary` read them.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::{Scratch, run};

/// Short: every leaked task here is parked forever, so waiting longer proves nothing.
const GRACE: Duration = Duration::from_millis(20);

#[inline(never)]
fn spawn_reaper() {
    tokio::spawn(std::future::pending::<()>());
}

#[inline(never)]
fn spawn_acceptor() {
    tokio::spawn(std::future::pending::<()>());
}

#[inline(never)]
fn spawn_heartbeat() {
    tokio::spawn(std::future::pending::<()>());
}

/// One test of the suite: its name and what its body does.
type SuiteTest = (&'static str, fn());

fn joins_its_worker() {
    // Spawned and awaited below: no leak.
}

fn leaks_reaper() {
    spawn_reaper();
}

fn leaks_two_acceptors() {
    spawn_acceptor();
    spawn_acceptor();
}

fn leaks_reaper_and_heartbeat() {
    spawn_reaper();
    spawn_heartbeat();
}

/// The main branch's suite.
const MAIN: &[SuiteTest] = &[
    ("suite::handshake", joins_its_worker),
    ("suite::pool_reaper", leaks_reaper),
    ("suite::accept_loop", leaks_two_acceptors),
    ("suite::shutdown", joins_its_worker),
];

/// A pull request that adds a leak: a new test leaks from a new site.
const ADDS_A_LEAK: &[SuiteTest] = &[
    ("suite::handshake", joins_its_worker),
    ("suite::pool_reaper", leaks_reaper),
    ("suite::accept_loop", leaks_two_acceptors),
    ("suite::shutdown", joins_its_worker),
    ("suite::heartbeat", leaks_reaper_and_heartbeat),
];

/// A pull request that fixes the reaper leak.
const FIXES_A_LEAK: &[SuiteTest] = &[
    ("suite::handshake", joins_its_worker),
    ("suite::pool_reaper", joins_its_worker),
    ("suite::accept_loop", leaks_two_acceptors),
    ("suite::shutdown", joins_its_worker),
];

/// Runs one test as `#[leakcheck::test]` would: own runtime and tracker,
/// the body, then a verify; a leak writes its report into `dir`.
fn run_test((name, body): SuiteTest, dir: &Path) {
    let tracker = leakcheck::Tracker::new();
    let mut builder = tokio::runtime::Builder::new_current_thread();
    tracker.install(builder.enable_time());
    let runtime = builder.build().expect("runtime");
    runtime.block_on(async {
        let guard = leakcheck::verify_none().named(name).grace(GRACE);
        let worker = tokio::spawn(async { 1 });
        body();
        assert_eq!(worker.await.expect("worker"), 1);
        if let Err(report) = guard.verify().await {
            leakcheck::write_report(&report, dir).expect("write report");
        }
    });
}

/// Runs the suite's tests whose index falls in shard `k` of `n` (round
/// robin, as `cargo nextest run --partition count:k/n` splits).
fn run_suite(suite: &[SuiteTest], dir: &Path, shard: Option<(usize, usize)>) {
    for (index, test) in suite.iter().enumerate() {
        if shard.is_none_or(|(k, n)| index % n == k - 1) {
            run_test(*test, dir);
        }
    }
}

fn diff_markdown(before: &Path, after: &Path) -> crate::support::Run {
    run(&[
        "diff",
        "--fail-on-new",
        "--format",
        "markdown",
        "--link-base",
        "https://github.com/o/r/blob/abc123",
        before.to_str().expect("UTF-8"),
        after.to_str().expect("UTF-8"),
    ])
}

const GATE_FILE: &str = "leakcheck/cli/tests/cli/gate.rs";

#[test]
fn a_pull_request_that_adds_a_leak_fails_the_gate_naming_the_new_site() {
    let scratch = Scratch::new("gate-adds");
    let (main, pr) = (scratch.path().join("main"), scratch.path().join("pr"));
    run_suite(MAIN, &main, None);
    run_suite(ADDS_A_LEAK, &pr, None);

    let gate = diff_markdown(&main, &pr);
    assert_eq!(gate.code, 1, "{}{}", gate.stdout, gate.stderr);
    let new_section = gate
        .stdout
        .split("#### New leaks")
        .nth(1)
        .and_then(|rest| rest.split("####").next())
        .unwrap_or_else(|| panic!("no New leaks section:\n{}", gate.stdout));
    assert!(
        new_section.contains(&format!(
            "[`{GATE_FILE}:28:5`](https://github.com/o/r/blob/abc123/{GATE_FILE}#L28)"
        )),
        "{new_section}"
    );
    assert!(new_section.contains("spawn_heartbeat"), "{new_section}");
    assert!(new_section.contains("`suite::heartbeat`"), "{new_section}");
    assert!(
        !new_section.contains("spawn_reaper"),
        "the reaper leaked on main already: {new_section}"
    );
    assert!(gate.stdout.starts_with("### leakcheck: ❌ new leaks"));
    assert!(
        gate.stdout
            .contains("#### Tests that newly leak\n\n- `suite::heartbeat` (0 → 2 tasks)"),
        "{}",
        gate.stdout
    );
    // The reaper grew (a new test leaks it too) but is not new: still leaking.
    let still = gate
        .stdout
        .split("#### Still leaking")
        .nth(1)
        .expect("still");
    assert!(still.contains("spawn_reaper"), "{still}");
}

#[test]
fn a_pull_request_that_fixes_a_leak_passes_and_lists_it_as_fixed() {
    let scratch = Scratch::new("gate-fixes");
    let (main, pr) = (scratch.path().join("main"), scratch.path().join("pr"));
    run_suite(MAIN, &main, None);
    run_suite(FIXES_A_LEAK, &pr, None);

    let gate = diff_markdown(&main, &pr);
    assert_eq!(gate.code, 0, "{}{}", gate.stdout, gate.stderr);
    assert!(gate.stdout.starts_with("### leakcheck: ✅ no new leaks"));
    let fixed = gate
        .stdout
        .split("#### Fixed")
        .nth(1)
        .expect("Fixed section");
    assert!(
        fixed.contains(&format!("{GATE_FILE}:18:5")) && fixed.contains("spawn_reaper"),
        "{fixed}"
    );
    assert!(
        gate.stdout
            .contains("#### Tests that stopped leaking\n\n- `suite::pool_reaper` (1 → 0 tasks)"),
        "{}",
        gate.stdout
    );

    // Text and JSON say the same.
    let text = run(&[
        "diff",
        main.to_str().expect("UTF-8"),
        pr.to_str().expect("UTF-8"),
    ]);
    assert!(
        text.stdout.contains("(3 leaked in 2 reports) → "),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .contains("tests that stopped leaking:\n  suite::pool_reaper (1 → 0)\n"),
        "{}",
        text.stdout
    );
}

#[test]
fn an_edit_that_moves_a_leaking_spawn_is_not_a_new_leak() {
    let scratch = Scratch::new("gate-moved");
    let (main, pr) = (scratch.path().join("main"), scratch.path().join("pr"));
    run_suite(MAIN, &main, None);
    // The pull request inserts three lines above every spawn in this file.
    std::fs::create_dir_all(&pr).expect("pr dir");
    for entry in std::fs::read_dir(&main).expect("main reports") {
        let path = entry.expect("entry").path();
        let mut report: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("JSON");
        shift_lines(&mut report, 3);
        std::fs::write(pr.join(path.file_name().expect("name")), report.to_string())
            .expect("write");
    }
    let gate = diff_markdown(&main, &pr);
    assert_eq!(gate.code, 0, "{}", gate.stdout);
    assert!(
        gate.stdout.contains(&format!("(was `{GATE_FILE}:18:5`)")),
        "{}",
        gate.stdout
    );
    assert!(!gate.stdout.contains("#### New leaks"), "{}", gate.stdout);
}

/// Adds `by` to every line of this file in a report's sites and frames.
fn shift_lines(value: &mut Value, by: u64) {
    match value {
        Value::Object(fields) => {
            let in_this_file = fields.get("file").and_then(Value::as_str) == Some(GATE_FILE);
            for (key, field) in fields.iter_mut() {
                match (key.as_str(), field.as_u64()) {
                    ("line", Some(line)) if in_this_file => *field = Value::from(line + by),
                    _ => shift_lines(field, by),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| shift_lines(item, by)),
        _ => {}
    }
}

/// The facts of a summary that do not depend on timing: ages, and the
/// representative task (the oldest one), vary from run to run.
fn timeless(summary: &str) -> Value {
    let mut value: Value = serde_json::from_str(summary).expect("summary JSON");
    for site in value["sites"].as_array_mut().expect("sites") {
        let site = site.as_object_mut().expect("site");
        site.remove("oldest_age_ms");
        let representative = site.remove("representative").expect("a backtrace");
        assert!(
            representative["frames"]
                .as_array()
                .is_some_and(|f| !f.is_empty())
        );
    }
    value
}

#[test]
fn merging_shards_gives_the_summary_of_one_unsharded_run() {
    const SHARDS: usize = 3;
    let scratch = Scratch::new("shards");
    let whole = scratch.path().join("whole");
    run_suite(ADDS_A_LEAK, &whole, None);
    let shard_dirs: Vec<String> = (1..=SHARDS)
        .map(|k| {
            let dir = scratch.path().join(format!("shard-{k}"));
            run_suite(ADDS_A_LEAK, &dir, Some((k, SHARDS)));
            dir.to_str().expect("UTF-8").to_owned()
        })
        .collect();

    let mut merged_args = vec!["summary", "--json", "--allow-empty"];
    merged_args.extend(shard_dirs.iter().map(String::as_str));
    let merged = run(&merged_args);
    assert_eq!(merged.code, 0, "{}", merged.stderr);
    let unsharded = run(&["summary", "--json", whole.to_str().expect("UTF-8")]);
    assert_eq!(unsharded.code, 0, "{}", unsharded.stderr);
    let merged = timeless(&merged.stdout);
    assert_eq!(merged, timeless(&unsharded.stdout));
    assert_eq!(merged["reports"], 3);
    assert_eq!(merged["leaked"], 5);

    // One set of annotations for the merged run: one per site.
    let mut annotate = vec!["summary", "--format", "github", "--allow-empty"];
    annotate.extend(shard_dirs.iter().map(String::as_str));
    let annotations = run(&annotate);
    assert_eq!(annotations.code, 0, "{}", annotations.stderr);
    let lines: Vec<&str> = annotations.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", annotations.stdout);
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with(&format!("::error file={GATE_FILE},line="))),
        "{}",
        annotations.stdout
    );
}
