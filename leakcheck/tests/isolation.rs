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

/// Where a scope's task is spawned from.
#[derive(Debug, Clone, Copy)]
enum Origin {
    /// The scope's own task.
    Scope,
    /// A child task of the scope's task.
    Child,
    /// A `spawn_blocking` closure the scope's task started: tokio names no
    /// spawner for it.
    Blocking,
    /// A plain thread the scope's task started, spawning through a handle.
    Thread,
}

impl Origin {
    fn spawner_known(self) -> bool {
        matches!(self, Origin::Scope | Origin::Child)
    }
}

/// Spawns a task from `origin` that leaks (never ends) or ends and is joined.
async fn spawn_from(origin: Origin, leaks: bool) {
    let task = move || {
        tokio::spawn(async move {
            if leaks {
                forever().await
            }
        })
    };
    let joined = match origin {
        Origin::Scope => task(),
        // The child hands the JoinHandle of the task it spawned back.
        #[allow(clippy::async_yields_async)]
        Origin::Child => tokio::spawn(async move { task() }).await.unwrap(),
        Origin::Blocking => tokio::task::spawn_blocking(task).await.unwrap(),
        Origin::Thread => {
            let handle = tokio::runtime::Handle::current();
            std::thread::spawn(move || {
                let _entered = handle.enter();
                task()
            })
            .join()
            .unwrap()
        }
    };
    if !leaks {
        joined.await.unwrap();
    }
}

/// A random plan per scope: where each of its tasks is spawned from, and
/// whether it leaks.
fn random_plans(rng: &mut rand::rngs::StdRng, scopes: usize) -> Vec<Vec<(Origin, bool)>> {
    use rand::Rng;
    const ORIGINS: [Origin; 4] = [
        Origin::Scope,
        Origin::Child,
        Origin::Blocking,
        Origin::Thread,
    ];
    (0..scopes)
        .map(|_| {
            (0..rng.random_range(0..=4))
                .map(|_| (ORIGINS[rng.random_range(0..4)], rng.random_bool(0.5)))
                .collect()
        })
        .collect()
}

fn leaks(plan: &[(Origin, bool)], unknown_spawners_count: bool) -> usize {
    plan.iter()
        .filter(|(origin, leaks)| *leaks && (origin.spawner_known() || unknown_spawners_count))
        .count()
}

const PROPERTY_GRACE: Duration = Duration::from_millis(30);

#[test]
fn a_lone_scope_owns_the_tasks_of_unknown_spawners() {
    use rand::SeedableRng;
    let runtime = {
        let tracker = leakcheck::Tracker::new();
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        tracker.install(builder.worker_threads(2).enable_all());
        builder.build().unwrap()
    };
    for seed in 0..8 {
        let plan = random_plans(&mut rand::rngs::StdRng::seed_from_u64(seed), 1).remove(0);
        // Like a `#[leakcheck::test]` body: the one scope of its runtime.
        let verdict = runtime.block_on(async {
            let guard = leakcheck::verify_none().grace(PROPERTY_GRACE);
            for &(origin, leaks) in &plan {
                spawn_from(origin, leaks).await;
            }
            guard.verify().await
        });
        let leaked = verdict.as_ref().err().map_or(0, |report| report.leaked);
        assert_eq!(leaked, leaks(&plan, true), "seed {seed}, plan {plan:?}");
    }
}

#[test]
fn parallel_scopes_on_one_runtime_never_blame_each_other() {
    use rand::{Rng, SeedableRng};
    const CASES: u64 = 24;
    let runtime = {
        let tracker = leakcheck::Tracker::new();
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        tracker.install(builder.worker_threads(2).enable_all());
        builder.build().unwrap()
    };
    for seed in 0..CASES {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let scopes = rng.random_range(1..=4usize);
        let plans = random_plans(&mut rng, scopes);
        // Every scope is open before any spawns, and every spawn is done
        // before any scope verifies.
        let opened = Arc::new(tokio::sync::Barrier::new(scopes));
        let spawned = Arc::new(tokio::sync::Barrier::new(scopes));
        let (inner, outer) = runtime.block_on(async {
            // The body's own scope: the scope tasks below are its tasks, and
            // it encloses every scope they open.
            let outer = leakcheck::verify_none().grace(PROPERTY_GRACE);
            let runs: Vec<_> = plans
                .iter()
                .cloned()
                .map(|plan| {
                    let (opened, spawned) = (opened.clone(), spawned.clone());
                    tokio::spawn(async move {
                        let guard = leakcheck::verify_none().grace(PROPERTY_GRACE);
                        opened.wait().await;
                        for (origin, leaks) in plan {
                            spawn_from(origin, leaks).await;
                        }
                        spawned.wait().await;
                        guard.verify().await
                    })
                })
                .collect();
            let mut inner = Vec::new();
            for run in runs {
                inner.push(run.await.unwrap());
            }
            (inner, outer.verify().await)
        });
        let shown = |verdict: &Result<(), leakcheck::LeakReport>| {
            verdict
                .as_ref()
                .err()
                .map(ToString::to_string)
                .unwrap_or_default()
        };
        for (i, (plan, verdict)) in plans.iter().zip(&inner).enumerate() {
            // A task whose spawner tokio does not name (a blocking closure, a
            // plain thread) may be any inner scope's: it is only the outer's.
            let leaked = verdict.as_ref().err().map_or(0, |report| report.leaked);
            assert_eq!(
                leaked,
                leaks(plan, false),
                "seed {seed}, scope {i} of {scopes}, plans {plans:?}: {}",
                shown(verdict)
            );
        }
        let leaked = outer.as_ref().err().map_or(0, |report| report.leaked);
        let expected: usize = plans.iter().map(|plan| leaks(plan, true)).sum();
        assert_eq!(
            leaked,
            expected,
            "seed {seed}, the outer scope, plans {plans:?}: {}",
            shown(&outer)
        );
    }
}

#[test]
fn a_scope_opened_in_a_task_owns_its_next_spawn_at_once() {
    // One thread, so the task's spawns share one per-thread spawner cache.
    let runtime = tracked_runtime();
    runtime.block_on(async {
        let outer = leakcheck::verify_none().grace(Duration::from_millis(50));
        tokio::spawn(async {
            // Looked up before the inner scope opens: the cached answer says
            // "the outer scope only", and must not outlive that opening.
            tokio::spawn(async {}).await.unwrap();
            let inner = leakcheck::verify_none().grace(Duration::from_millis(50));
            let leaked = tokio::spawn(forever());
            let report = inner.verify().await.unwrap_err();
            assert_eq!(report.leaked, 1, "{report}");
            leaked.abort();
        })
        .await
        .unwrap();
        outer.verify().await.unwrap();
    });
}
