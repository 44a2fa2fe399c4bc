//! `leakcheck diff`.

use serde_json::Value;

use crate::support::run;

#[test]
fn snapshots_show_sites_that_appeared_grew_shrank_and_disappeared() {
    let run = run(&["diff", "snapshots/before.json", "snapshots/after.json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "\
leakcheck diff: snapshots/before.json (9 live) → snapshots/after.json (17 live): +8 tasks in 30.0 s

  CHANGE      BEFORE AFTER DELTA SPAWN SITE
  appeared         0     6    +6 server/src/upstream.rs:55:17 in server::upstream::Client::send
  grew             4     9    +5 server/src/conn.rs:88:5 in server::conn::accept_loop
  shrank           2     1    -1 server/src/pool.rs:41:9
  disappeared      2     0    -2 server/src/dns.rs:30:13

1 site unchanged (--all lists them)
"
    );
}

#[test]
fn all_lists_unchanged_sites_and_json_has_every_site() {
    let text = run(&[
        "diff",
        "--all",
        "snapshots/before.json",
        "snapshots/after.json",
    ]);
    assert!(
        text.stdout
            .contains("  unchanged        1     1    +0 server/src/metrics.rs:12:5\n"),
        "{}",
        text.stdout
    );
    let json = run(&[
        "diff",
        "--json",
        "snapshots/before.json",
        "snapshots/after.json",
    ]);
    let diff: Value = serde_json::from_str(&json.stdout).expect("valid JSON");
    assert_eq!(diff["kind"], "leak_diff");
    assert_eq!(diff["compared"], "snapshot");
    assert_eq!(diff["before"]["tasks"], 9);
    assert_eq!(diff["after"]["tasks"], 17);
    let changes: Vec<(&str, i64)> = diff["sites"]
        .as_array()
        .expect("sites")
        .iter()
        .map(|s| {
            (
                s["change"].as_str().expect("change"),
                s["delta"].as_i64().expect("delta"),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("appeared", 6),
            ("grew", 5),
            ("shrank", -1),
            ("disappeared", -2),
            ("unchanged", 0)
        ]
    );
}

#[test]
fn fail_on_growth_sets_exit_code_1_only_for_growth() {
    assert_eq!(
        run(&[
            "diff",
            "--fail-on-growth",
            "snapshots/before.json",
            "snapshots/after.json"
        ])
        .code,
        1
    );
    let same = run(&[
        "diff",
        "--fail-on-growth",
        "snapshots/after.json",
        "snapshots/after.json",
    ]);
    assert_eq!(same.code, 0, "{}", same.stderr);
    assert!(
        same.stdout.contains("no spawn site changed\n"),
        "{}",
        same.stdout
    );
}

#[test]
fn reports_compare_like_snapshots() {
    let run = run(&[
        "diff",
        "reports/server__tests__accept_loop_leaks.json",
        "reports/server__tests__pool_idle_reaper.json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("(4 leaked) → "), "{}", run.stdout);
    assert!(run.stdout.contains("  grew             1     2    +1 server/src/pool.rs:41:9 in server::pool::Pool::spawn_reaper\n"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("  disappeared      3     0    -3 server/src/conn.rs:88:5 in "),
        "{}",
        run.stdout
    );
}

#[test]
fn a_report_and_a_snapshot_do_not_compare() {
    run(&["diff", "snapshots/before.json", "clean/server__tests__no_leak.json"]).assert_one_line_error(
        2,
        &["cannot diff snapshots/before.json (snapshot) with clean/server__tests__no_leak.json (leak_report)"],
    );
}

#[test]
fn count_only_reports_compare_by_count() {
    let run = run(&[
        "diff",
        "--fail-on-new",
        "clean/server__tests__no_leak.json",
        "reports/server__tests__degraded_build.json",
    ]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(
            "spawn site unknown (reports built without --cfg tokio_unstable): 0 → 2 tasks, appeared\n"
        ),
        "{}",
        run.stdout
    );
    let same = crate::support::run(&[
        "diff",
        "--fail-on-new",
        "--fail-on-growth",
        "reports/server__tests__degraded_build.json",
        "reports/server__tests__degraded_build.json",
    ]);
    assert_eq!(same.code, 0, "{}", same.stdout);
    assert!(
        same.stdout.contains("2 → 2 tasks, unchanged\n"),
        "{}",
        same.stdout
    );
}

#[test]
fn report_directories_compare_in_json_with_per_test_changes() {
    let run = run(&["diff", "--json", "clean", "reports"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let diff: Value = serde_json::from_str(&run.stdout).expect("valid JSON");
    assert_eq!(diff["compared"], "leak_report");
    assert_eq!(diff["before"]["documents"], 1);
    assert_eq!(diff["after"]["documents"], 3);
    let newly: Vec<&str> = diff["tests"]["newly_leaking"]
        .as_array()
        .expect("newly_leaking")
        .iter()
        .map(|t| t["test"].as_str().expect("test"))
        .collect();
    assert_eq!(
        newly,
        [
            "server::tests::accept_loop_leaks",
            "server::tests::degraded_build",
            "server::tests::pool_idle_reaper"
        ]
    );
    assert_eq!(diff["count_only"]["after"], 2);
}
