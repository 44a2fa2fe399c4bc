//! Parallel tests are isolated: each scope sees only its own runtime's
//! tasks, so one test's leak never fails another running at the same time.

// `Result<(), LeakReport>` mirrors the public `VerifyGuard::verify` signature.
#![allow(clippy::result_large_err)]
#![cfg(tokio_unstable)]

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{Flavor, forever, scoped};

#[test]
fn concurrent_scopes_on_separate_runtimes_only_see_their_own_tasks() {
    const SCOPES: usize = 8;
    // Every scope is open, with its tasks spawned, before any verifies.
    let barrier = Arc::new(Barrier::new(SCOPES));
    let threads: Vec<_> = (0..SCOPES)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                scoped(Flavor::Multi, Duration::from_millis(100), || async move {
                    if i % 2 == 0 {
                        for _ in 0..=i {
                            tokio::spawn(forever());
                        }
                    } else {
                        tokio::spawn(async {}).await.unwrap();
                    }
                    tokio::task::block_in_place(|| barrier.wait());
                })
            })
        })
        .collect();
    for (i, thread) in threads.into_iter().enumerate() {
        match (i % 2, thread.join().unwrap()) {
            (0, Err(report)) => assert_eq!(
                report.leaked,
                i + 1,
                "scope {i} sees exactly its own leaks:\n{report}"
            ),
            (0, Ok(())) => panic!("scope {i} leaked but passed"),
            (_, Err(report)) => {
                panic!("clean scope {i} blamed for another scope's tasks:\n{report}")
            }
            (_, Ok(())) => {}
        }
    }
}

#[test]
fn nested_scopes_on_one_runtime_report_their_own_tasks() {
    let tracker = leakcheck::Tracker::new();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    tracker.install(builder.worker_threads(2).enable_all());
    let runtime = builder.build().unwrap();
    runtime.block_on(async {
        let outer = leakcheck::verify_none().grace(Duration::from_millis(50));
        tokio::spawn(forever());
        let inner_verdict = tokio::spawn(async {
            // A scope opened inside a task covers that task's children only.
            let inner = leakcheck::verify_none().grace(Duration::from_millis(50));
            tokio::spawn(async {}).await.unwrap();
            inner.verify().await
        })
        .await
        .unwrap();
        assert!(
            inner_verdict.is_ok(),
            "the outer scope's leak is not the inner scope's"
        );
        let report = outer.verify().await.unwrap_err();
        assert_eq!(report.leaked, 1, "{report}");
    });
}

fn tracked_runtime() -> tokio::runtime::Runtime {
    let tracker = leakcheck::Tracker::new();
    let mut builder = tokio::runtime::Builder::new_current_thread();
    tracker.install(builder.enable_all());
    builder.build().unwrap()
}

#[test]
fn spawning_onto_another_runtime_does_not_bind_this_one_to_its_tracker() {
    let here = tracked_runtime();
    let there = tracked_runtime();
    let there_handle = there.handle().clone();
    let verdict = here.block_on(async {
        // The other runtime's spawn hook runs on this thread, inside this
        // runtime's context.
        there_handle.spawn(async {});
        let guard = leakcheck::verify_none().grace(Duration::from_millis(10));
        tokio::spawn(forever());
        guard.verify().await
    });
    let report = verdict.expect_err("the scope uses this runtime's tracker and sees the leak");
    assert_eq!(report.leaked, 1, "{report}");
    drop(there);
}
