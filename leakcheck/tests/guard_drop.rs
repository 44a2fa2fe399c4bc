//! What dropping an unverified `VerifyGuard` does on each runtime flavor
//! (documented on `verify_none`).

#![cfg(tokio_unstable)]

use std::time::Duration;

fn runtime(multi_thread: bool) -> (leakcheck::Tracker, tokio::runtime::Runtime) {
    let tracker = leakcheck::Tracker::builder()
        .grace(Duration::from_secs(5))
        .build();
    let mut builder = if multi_thread {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(2);
        builder
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    tracker.install(builder.enable_all());
    (tracker, builder.build().unwrap())
}

#[test]
#[should_panic(expected = "the VerifyGuard was dropped without `.verify().await`")]
fn current_thread_drop_checks_at_once() {
    let (_tracker, runtime) = runtime(false);
    runtime.block_on(async {
        let _guard = leakcheck::verify_none();
        tokio::spawn(std::future::pending::<()>());
    });
}

#[test]
fn multi_thread_drop_waits_for_tasks_to_end() {
    let (_tracker, runtime) = runtime(true);
    runtime.block_on(async {
        let guard = leakcheck::verify_none();
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = wait.await;
        });
        // The task ends only after the guard's drop has started waiting.
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let _ = release.send(());
        });
        let started = std::time::Instant::now();
        drop(guard);
        // Woken by the terminate, not by the 5 s grace running out.
        assert!(started.elapsed() < Duration::from_secs(5));
        releaser.join().unwrap();
    });
}

#[test]
#[should_panic(expected = "1 leaked task")]
fn multi_thread_drop_reports_after_grace() {
    let tracker = leakcheck::Tracker::builder()
        .grace(Duration::from_millis(30))
        .build();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    tracker.install(builder.worker_threads(2).enable_all());
    builder.build().unwrap().block_on(async {
        let _guard = leakcheck::verify_none();
        tokio::spawn(std::future::pending::<()>());
    });
}

#[test]
fn a_panicking_scope_does_not_panic_again_on_drop() {
    let (_tracker, runtime) = runtime(false);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(async {
            let _guard = leakcheck::verify_none();
            tokio::spawn(std::future::pending::<()>());
            panic!("the scope's own panic");
        })
    }));
    let payload = result.unwrap_err();
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"the scope's own panic")
    );
}

// The guard's panic ends only the task it was dropped in, here even caught:
// the test still fails with its verdict.
#[leakcheck::test]
#[should_panic(expected = "inside a spawned task found the leaks above")]
async fn a_guard_dropped_in_a_task_still_fails_the_test() {
    tokio::spawn(async {
        let guard = leakcheck::verify_none();
        let leaked = tokio::spawn(std::future::pending::<()>());
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(guard)));
        assert!(dropped.is_err(), "the drop found the leak");
        // The test body itself leaks nothing.
        leaked.abort();
        let _ = leaked.await;
    })
    .await
    .unwrap();
}

#[test]
fn unnamed_scopes_dropped_in_a_loop_keep_every_report() {
    let dir = std::env::temp_dir().join(format!("leakcheck-unnamed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let tracker = leakcheck::Tracker::builder()
        .mode(leakcheck::Mode::Warn)
        .report_dir(&dir)
        .build();
    let mut builder = tokio::runtime::Builder::new_current_thread();
    tracker.install(builder.enable_all());
    builder.build().unwrap().block_on(async {
        for _ in 0..3 {
            let _guard = leakcheck::verify_none();
            tokio::spawn(std::future::pending::<()>());
        }
    });
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(names.len(), 3, "one report per scope: {names:?}");
    assert!(
        names[0].starts_with("verify_none_scope_at_leakcheck_tests_guard_drop.rs_"),
        "named after where the scope was opened: {names:?}"
    );
}
