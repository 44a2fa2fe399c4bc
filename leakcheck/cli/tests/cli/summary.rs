//! `leakcheck summary`.

use serde_json::Value;

use crate::support::run;

#[test]
fn groups_leaks_by_site_worst_first_and_skips_hidden_files() {
    let run = run(&["summary", "reports"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "leakcheck: 8 tasks leaked in 3 of 3 reports, from 2 spawn sites; 2 tasks with unknown sites"
    );
    assert_eq!(lines[2], "  TASKS TESTS OLDEST SPAWN SITE");
    // Equal task counts: the site seen in more tests comes first.
    assert_eq!(lines[3], "      3     2  2.4 s server/src/pool.rs:41:9");
    assert_eq!(lines[4], "      3     1  1.3 s server/src/conn.rs:88:5");
    assert!(run.stdout.contains(
        "── server/src/pool.rs:41:9 · 3 tasks in 2 tests · oldest 2.4 s ──\n  tests: server::tests::accept_loop_leaks, server::tests::pool_idle_reaper\n  labels: req-7, req-8\n  spawn backtrace (task 3 in server::tests::pool_idle_reaper):\n    0: server::pool::Pool::spawn_reaper at server/src/pool.rs:41\n"
    ));
    assert!(run.stdout.contains(
        "── spawn site unknown · 2 tasks in 1 test ──\n  tests: server::tests::degraded_build\n"
    ));
}

#[test]
fn json_output_carries_the_same_facts() {
    let run = run(&["summary", "--json", "reports"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let summary: Value = serde_json::from_str(&run.stdout).expect("valid JSON");
    assert_eq!(summary["kind"], "leak_summary");
    assert_eq!(summary["schema_version"], leakcheck::SCHEMA_VERSION);
    assert_eq!(summary["reports"], 3);
    assert_eq!(summary["leaked"], 8);
    let first = &summary["sites"][0];
    assert_eq!(first["site"]["file"], "server/src/pool.rs");
    assert_eq!(first["tasks"], 3);
    assert_eq!(first["oldest_age_ms"], 2400);
    assert_eq!(first["tests"].as_array().map(Vec::len), Some(2));
    assert_eq!(first["representative"]["task_id"], 3);
    assert_eq!(
        first["representative"]["frames"][1]["function"],
        "server::pool::Pool::checkout"
    );
    assert_eq!(
        summary["sites"][1]["representative"]["task_id"], 12,
        "the oldest task with a backtrace"
    );
    assert_eq!(summary["degraded"]["tasks"], 2);
}

#[test]
fn fail_on_leaks_sets_exit_code_1_only_when_something_leaked() {
    assert_eq!(run(&["summary", "--fail-on-leaks", "reports"]).code, 1);
    let clean = run(&["summary", "--fail-on-leaks", "clean"]);
    assert_eq!(clean.code, 0, "{}", clean.stderr);
    assert_eq!(clean.stdout, "leakcheck: no leaked tasks in 1 report\n");
}

#[test]
fn files_and_directories_mix() {
    let run = run(&[
        "summary",
        "clean",
        "reports/server__tests__pool_idle_reaper.json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .starts_with("leakcheck: 2 tasks leaked in 1 of 2 reports, from 1 spawn site\n"),
        "{}",
        run.stdout
    );
}

#[test]
fn reports_without_spawn_sites_are_summed_apart() {
    let run = run(&["summary", "reports/server__tests__degraded_build.json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.starts_with(
            "leakcheck: 2 tasks leaked in 1 of 1 report; 2 tasks with unknown sites\n\n── spawn site unknown · 2 tasks in 1 test ──\n"
        ),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("TASKS"), "no table without sites");
}
