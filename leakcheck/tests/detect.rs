//! Every leak pattern the crate docs list is caught, with its spawn site.

// `Result<(), LeakReport>` mirrors the public `VerifyGuard::verify` signature.
#![allow(clippy::result_large_err)]
#![cfg(tokio_unstable)]

mod common;

use std::time::Duration;

use common::{Flavor, blocked, forever, only_site, scoped};

const GRACE: Duration = Duration::from_millis(50);

fn assert_site(report: &leakcheck::LeakReport, line: u32) {
    let group = only_site(report);
    assert_eq!(group.site.file, "leakcheck/tests/detect.rs", "{report}");
    assert_eq!(group.site.line, line, "{report}");
}

#[test]
fn tokio_spawn_is_caught_with_its_site_on_both_flavors() {
    for flavor in [Flavor::Current, Flavor::Multi] {
        let mut line = 0;
        let report = scoped(flavor, GRACE, || async {
            line = line!() + 1;
            tokio::spawn(forever());
        })
        .unwrap_err();
        assert_site(&report, line);
        assert_eq!(report.leaked, 1);
    }
}

#[test]
fn handle_spawn_is_caught() {
    let mut line = 0;
    let report = scoped(Flavor::Multi, GRACE, || async {
        let handle = tokio::runtime::Handle::current();
        line = line!() + 1;
        handle.spawn(forever());
    })
    .unwrap_err();
    assert_site(&report, line);
}

#[test]
fn joinset_kept_alive_is_caught() {
    let mut line = 0;
    let report = scoped(Flavor::Multi, GRACE, || async {
        let mut set = tokio::task::JoinSet::new();
        line = line!() + 1;
        set.spawn(forever());
        // A JoinSet aborts its tasks on drop; leaking the set leaks them.
        std::mem::forget(set);
    })
    .unwrap_err();
    assert_site(&report, line);
}

#[test]
fn task_builder_spawn_is_caught() {
    let mut line = 0;
    let report = scoped(Flavor::Current, GRACE, || async {
        let builder = tokio::task::Builder::new().name("named-leak");
        line = line!() + 1;
        builder.spawn(forever()).unwrap();
    })
    .unwrap_err();
    assert_site(&report, line);
}

#[test]
fn grandchild_is_caught_with_its_parent_chain() {
    let mut line = 0;
    let report = scoped(Flavor::Multi, GRACE, || async {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let parent = tokio::spawn(async move {
            let line = line!() + 1;
            tokio::spawn(forever());
            tx.send(line).unwrap();
            forever().await
        });
        line = rx.await.unwrap();
        parent.abort();
        let _ = parent.await;
    })
    .unwrap_err();
    assert_site(&report, line);
    let task = &only_site(&report).tasks[0];
    assert_eq!(
        task.spawned_by.len(),
        1,
        "spawned by the (aborted) parent task: {report}"
    );
}

#[test]
fn spawn_from_spawn_blocking_counts_in_the_open_scope() {
    let mut line = 0;
    let report = scoped(Flavor::Multi, GRACE, || async {
        let handle = tokio::runtime::Handle::current();
        line = tokio::task::spawn_blocking(move || {
            let line = line!() + 1;
            handle.spawn(forever());
            line
        })
        .await
        .unwrap();
    })
    .unwrap_err();
    assert_site(&report, line);
}

#[test]
fn spawn_local_on_a_local_runtime_is_caught() {
    let tracker = leakcheck::Tracker::new();
    let mut builder = tokio::runtime::Builder::new_current_thread();
    tracker.install(builder.enable_all());
    let runtime = builder
        .build_local(tokio::runtime::LocalOptions::default())
        .unwrap();
    let mut line = 0;
    let report = runtime
        .block_on(async {
            let guard = leakcheck::verify_none().grace(GRACE);
            line = line!() + 1;
            tokio::task::spawn_local(async { forever().await });
            guard.verify().await
        })
        .unwrap_err();
    assert_site(&report, line);
}

#[test]
fn task_still_blocked_after_grace_is_caught_and_released_one_is_not() {
    let report = scoped(Flavor::Multi, GRACE, || async {
        let (release, task) = blocked();
        tokio::spawn(task);
        let (keep, task) = blocked();
        tokio::spawn(task);
        drop(release);
        std::mem::forget(keep);
    })
    .unwrap_err();
    assert_eq!(report.leaked, 1, "{report}");
}

#[test]
fn many_tasks_from_one_site_form_one_group() {
    let report = scoped(Flavor::Multi, GRACE, || async {
        for _ in 0..10 {
            tokio::spawn(forever());
        }
    })
    .unwrap_err();
    let group = only_site(&report);
    assert_eq!(group.count, 10);
    assert_eq!(group.tasks.len(), 10);
    // One interned stack serves all ten.
    assert_eq!(report.stacks.len(), 1, "{report}");
}

#[test]
fn spawn_backtrace_names_the_helper_and_its_caller() {
    #[inline(never)]
    fn start_worker() {
        tokio::spawn(forever());
    }
    let report = scoped(Flavor::Current, GRACE, || async { start_worker() }).unwrap_err();
    let stack = &report.stacks[only_site(&report).tasks[0]
        .stack
        .expect("backtraces are on by default")];
    let functions: Vec<&str> = stack.frames.iter().map(|f| f.function.as_str()).collect();
    assert!(
        functions[0].ends_with("start_worker"),
        "innermost user frame first: {functions:#?}"
    );
    assert!(
        functions
            .iter()
            .any(|f| f.contains("spawn_backtrace_names_the_helper_and_its_caller")),
        "the caller of the helper is kept: {functions:#?}"
    );
    assert!(
        functions.iter().all(|f| !f.starts_with("tokio::")),
        "tokio frames are trimmed: {functions:#?}"
    );
}

#[test]
fn spawn_backtrace_from_a_task_keeps_the_task_frames() {
    #[inline(never)]
    fn start_worker_in_task() {
        tokio::spawn(forever());
    }
    async fn parent_body() {
        // The same call twice, from two polls: the scheduler polls a task
        // from several places, yet both spawns have one stack.
        for _ in 0..2 {
            start_worker_in_task();
            tokio::task::yield_now().await;
        }
    }
    for flavor in [Flavor::Current, Flavor::Multi] {
        let report = scoped(flavor, GRACE, || async {
            tokio::spawn(parent_body()).await.unwrap();
        })
        .unwrap_err();
        let group = only_site(&report);
        assert_eq!(group.count, 2);
        assert_eq!(report.stacks.len(), 1, "one stack for both polls: {report}");
        let functions: Vec<&str> = report.stacks[0]
            .frames
            .iter()
            .map(|f| f.function.as_str())
            .collect();
        assert!(
            functions[0].ends_with("start_worker_in_task"),
            "innermost user frame first: {functions:#?}"
        );
        assert!(
            functions.iter().any(|f| f.contains("parent_body")),
            "the task's own frames are kept: {functions:#?}"
        );
    }
}

fn verdict_ignoring(
    tracker_pattern: Option<&str>,
    guard_pattern: Option<&str>,
) -> Result<(), leakcheck::LeakReport> {
    let mut tracker = leakcheck::Tracker::builder();
    if let Some(pattern) = tracker_pattern {
        tracker = tracker.ignore(pattern);
    }
    let tracker = tracker.build();
    let mut builder = tokio::runtime::Builder::new_current_thread();
    tracker.install(builder.enable_all());
    builder.build().unwrap().block_on(async {
        let mut guard = leakcheck::verify_none().grace(GRACE);
        if let Some(pattern) = guard_pattern {
            guard = guard.ignore(pattern);
        }
        tokio::spawn(forever());
        guard.verify().await
    })
}

#[test]
fn ignore_patterns_match_site_suffix_and_function_prefix() {
    verdict_ignoring(Some("tests/detect.rs"), None).expect("a site-suffix ignore covers the leak");
    verdict_ignoring(None, Some("detect::verdict_ignoring"))
        .expect("a function-prefix ignore covers the leak");
    let report = verdict_ignoring(Some("etect.rs"), None)
        .expect_err("a suffix matches at a path boundary only");
    assert_eq!(report.ignored, 0);
    verdict_ignoring(Some("detect.rs:1"), None).expect_err("`file:line` must match the line");
}

/// A leaked task parked on a tokio channel in a frame of its own: what the
/// "parked at" tests look for in a task dump.
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
#[inline(never)]
async fn wait_for_shutdown(rx: tokio::sync::oneshot::Receiver<()>) {
    let _ = rx.await;
}

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
#[test]
fn report_says_where_each_leaked_task_is_parked() {
    // Repeated, with a hundred leaked tasks, on a multi-thread runtime: the
    // task dump must neither hang nor miss the parked future.
    for _ in 0..20 {
        let mut keep = Vec::new();
        let report = scoped(Flavor::Multi, GRACE, || async {
            for _ in 0..100 {
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                keep.push(tx);
                tokio::spawn(wait_for_shutdown(rx));
            }
        })
        .unwrap_err();
        let task = &only_site(&report).tasks[0];
        let innermost = task
            .parked_at
            .as_ref()
            .and_then(|parked| parked.traces.first()?.first());
        assert!(
            innermost.is_some_and(|frame| frame.function.contains("wait_for_shutdown")),
            "{report}"
        );
    }
}

/// A grace long enough that waiting it out cannot go unnoticed.
const LONG_GRACE: Duration = Duration::from_secs(10);

#[test]
fn ignored_tasks_do_not_make_the_scope_wait_out_its_grace() {
    for (tracker_pattern, guard_pattern) in [
        (Some("tests/detect.rs"), None),
        (None, Some("detect::ignored_tasks_do_not_make")),
    ] {
        let mut tracker = leakcheck::Tracker::builder();
        if let Some(pattern) = tracker_pattern {
            tracker = tracker.ignore(pattern);
        }
        let tracker = tracker.build();
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        tracker.install(builder.worker_threads(2).enable_all());
        let runtime = builder.build().unwrap();
        let (verdict, waited) = runtime.block_on(async {
            let mut guard = leakcheck::verify_none().grace(LONG_GRACE);
            if let Some(pattern) = guard_pattern {
                guard = guard.ignore(pattern);
            }
            tokio::spawn(forever());
            let (release, wait) = blocked();
            let joined = tokio::spawn(async move {
                // A child of the ignored site's task is ignored by its own site.
                tokio::spawn(forever());
                wait.await
            });
            drop(release);
            joined.await.unwrap();
            let started = std::time::Instant::now();
            (guard.verify().await, started.elapsed())
        });
        verdict.expect("ignored tasks are not leaks");
        assert!(
            waited < LONG_GRACE,
            "the wait ended once only ignored tasks were left, not at the grace ({waited:?}; {tracker_pattern:?} {guard_pattern:?})"
        );
    }
}

#[inline(never)]
fn spawn_ignored() {
    tokio::spawn(forever());
}

#[test]
fn ignored_tasks_are_counted_beside_a_real_leak() {
    let tracker = leakcheck::Tracker::builder()
        .ignore("detect::spawn_ignored")
        .build();
    let mut builder = tokio::runtime::Builder::new_current_thread();
    tracker.install(builder.enable_all());
    let report = builder.build().unwrap().block_on(async {
        let guard = leakcheck::verify_none().grace(GRACE);
        spawn_ignored();
        spawn_ignored();
        tokio::spawn(forever());
        guard.verify().await.unwrap_err()
    });
    assert_eq!(report.leaked, 1, "{report}");
    assert_eq!(report.ignored, 2, "{report}");
}

// Forty layers of helpers between the test body and the spawn, as deep
// middleware stacks have: distinct functions, none inlined, none a tail call.
#[inline(never)]
fn helper_00() {
    helper_01();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_01() {
    helper_02();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_02() {
    helper_03();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_03() {
    helper_04();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_04() {
    helper_05();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_05() {
    helper_06();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_06() {
    helper_07();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_07() {
    helper_08();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_08() {
    helper_09();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_09() {
    helper_10();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_10() {
    helper_11();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_11() {
    helper_12();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_12() {
    helper_13();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_13() {
    helper_14();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_14() {
    helper_15();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_15() {
    helper_16();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_16() {
    helper_17();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_17() {
    helper_18();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_18() {
    helper_19();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_19() {
    helper_20();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_20() {
    helper_21();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_21() {
    helper_22();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_22() {
    helper_23();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_23() {
    helper_24();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_24() {
    helper_25();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_25() {
    helper_26();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_26() {
    helper_27();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_27() {
    helper_28();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_28() {
    helper_29();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_29() {
    helper_30();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_30() {
    helper_31();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_31() {
    helper_32();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_32() {
    helper_33();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_33() {
    helper_34();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_34() {
    helper_35();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_35() {
    helper_36();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_36() {
    helper_37();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_37() {
    helper_38();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_38() {
    helper_39();
    std::hint::black_box(());
}

#[inline(never)]
fn helper_39() {
    tokio::spawn(forever());
    std::hint::black_box(());
}

#[test]
fn spawn_backtrace_reaches_the_test_body_through_forty_helpers() {
    let report = scoped(Flavor::Current, GRACE, || async { helper_00() }).unwrap_err();
    let stack = &report.stacks[only_site(&report).tasks[0]
        .stack
        .expect("backtraces are on")];
    let functions: Vec<&str> = stack.frames.iter().map(|f| f.function.as_str()).collect();
    for i in 0..40 {
        let helper = format!("detect::helper_{i:02}");
        assert!(
            functions.contains(&helper.as_str()),
            "{helper} in {functions:#?}"
        );
    }
    assert!(
        functions
            .iter()
            .any(|f| f.contains("spawn_backtrace_reaches_the_test_body_through_forty_helpers")),
        "the test body is reached: {functions:#?}"
    );
}

#[inline(never)]
fn recurse(depth: usize) {
    if depth == 0 {
        tokio::spawn(forever());
    } else {
        recurse(depth - 1);
    }
    std::hint::black_box(());
}

#[test]
fn recursion_is_folded_in_the_text_report() {
    let report = scoped(Flavor::Current, GRACE, || async { recurse(40) }).unwrap_err();
    let stack = &report.stacks[only_site(&report).tasks[0]
        .stack
        .expect("backtraces are on")];
    let recursive = stack
        .frames
        .iter()
        .filter(|f| f.function == "detect::recurse")
        .count();
    assert_eq!(
        recursive, 41,
        "the JSON keeps every frame: {:#?}",
        stack.frames
    );
    let text = report.to_string();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("detect::recurse"))
        .collect();
    assert_eq!(
        lines.len(),
        2,
        "the spawning call, then one folded line:\n{text}"
    );
    assert!(lines[1].contains("×40"), "{text}");
    assert!(
        text.contains("recursion_is_folded_in_the_text_report"),
        "the test body follows the fold:\n{text}"
    );
}

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
#[test]
fn leaked_tasks_say_where_they_are_parked_up_to_each_flavors_dump_limit() {
    // (flavor, leaked tasks, how many get a parked-at): a current-thread
    // runtime is dumped up to MAX_DUMPED_TASKS live tasks, a multi-thread one
    // only up to MAX_DUMPED_TASKS_MULTI_THREAD, above which tokio's dump can
    // spin forever (`dump_scale -- multi 300 busy 10`).
    let multi_limit = leakcheck::MAX_DUMPED_TASKS_MULTI_THREAD;
    for (flavor, leaked, parked_expected) in [
        (Flavor::Current, 1_000, 1_000),
        (Flavor::Multi, multi_limit, multi_limit),
        (Flavor::Multi, 1_000, 0),
    ] {
        let mut keep = Vec::new();
        let report = scoped(flavor, GRACE, || async {
            for _ in 0..leaked {
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                keep.push(tx);
                tokio::spawn(wait_for_shutdown(rx));
            }
        })
        .unwrap_err();
        let tasks = &only_site(&report).tasks;
        assert_eq!(tasks.len(), leaked);
        let parked = tasks.iter().filter(|task| task.parked_at.is_some()).count();
        assert_eq!(parked, parked_expected, "{flavor:?} with {leaked} leaked");
        if parked_expected == 0 {
            // The report says why, in the JSON and in the text.
            let why = report.parked_at_missing.as_deref().unwrap_or_default();
            assert!(
                why.contains(&format!("{leaked} live tasks"))
                    && why.contains(&format!("at most {multi_limit} on a multi-thread runtime")),
                "{why:?}"
            );
            let text = report.to_string();
            assert!(text.contains(&format!("no \"parked at\": {why}")), "{text}");
        } else {
            assert_eq!(report.parked_at_missing, None);
        }
    }
}

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
#[test]
fn a_multi_thread_runtime_is_dumped_once() {
    // tokio 1.54 can wedge a multi-thread runtime's worker for good on its
    // second task dump: the first leaking scope gets "parked at", the next
    // one says why it has none.
    let tracker = leakcheck::Tracker::new();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    tracker.install(builder.worker_threads(2).enable_all());
    let runtime = builder.build().unwrap();
    let mut keep = Vec::new();
    let reports: Vec<leakcheck::LeakReport> = runtime.block_on(async {
        let mut reports = Vec::new();
        for _ in 0..2 {
            let guard = leakcheck::verify_none().grace(GRACE);
            // Parked on a tokio channel in a user frame: what a dump shows.
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            keep.push(tx);
            tokio::spawn(wait_for_shutdown(rx));
            reports.push(guard.verify().await.unwrap_err());
        }
        reports
    });
    let parked = |report: &leakcheck::LeakReport| only_site(report).tasks[0].parked_at.is_some();
    assert!(parked(&reports[0]), "{}", reports[0]);
    assert_eq!(reports[0].parked_at_missing, None);
    assert!(!parked(&reports[1]), "{}", reports[1]);
    let why = reports[1].parked_at_missing.as_deref().unwrap_or_default();
    assert!(why.contains("had its one task dump"), "{why:?}");
    drop(runtime);
}

#[test]
fn a_multi_thread_runtime_full_of_runnable_tasks_is_not_dumped() {
    // tokio's dump never returns with this many tasks queued on two workers
    // (`dump_scale -- multi 200 runnable`): the report must come back,
    // without parked-at.
    let report = scoped(Flavor::Multi, GRACE, || async {
        for _ in 0..300 {
            tokio::spawn(async {
                loop {
                    tokio::task::yield_now().await;
                }
            });
        }
    })
    .unwrap_err();
    let tasks = &only_site(&report).tasks;
    assert_eq!(tasks.len(), 300);
    assert!(tasks.iter().all(|task| task.parked_at.is_none()));
    if cfg!(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )) {
        assert!(report.parked_at_missing.is_some(), "the report says why");
    }
}
