//! Registry exactness under load: hundreds of thousands of spawns across two
//! workers with random completion, abort, panic and runtime shutdown. After
//! every round the tracker's live set equals the truth, and nothing is left
//! behind (no phantom entries) once everything has ended.

#![cfg(tokio_unstable)]

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ROUNDS: usize = 10;
const TASKS_PER_ROUND: usize = 25_000;
const SEED: u64 = 0x1eac_c4ec;

enum Fate {
    Complete,
    Panic,
    Abort,
    Release,
    Stay,
}

#[test]
fn live_set_equals_truth_through_random_fates() {
    // Silence the expected panics of the tasks that panic on purpose.
    std::panic::set_hook(Box::new(|_| {}));
    let tracker = leakcheck::Tracker::new();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    tracker.install(builder.worker_threads(2).enable_all());
    let runtime = builder.build().unwrap();
    let mut rng = StdRng::seed_from_u64(SEED);
    runtime.block_on(async {
        let mut staying = Vec::new();
        for round in 0..ROUNDS {
            let guard = leakcheck::verify_none()
                .named(format!("round {round}"))
                .grace(Duration::from_millis(200));
            let mut handles = Vec::with_capacity(TASKS_PER_ROUND);
            let mut releases = Vec::new();
            let mut expected_alive = 0;
            for _ in 0..TASKS_PER_ROUND {
                let fate = match rng.random_range(0..100) {
                    0..40 => Fate::Complete,
                    40..45 => Fate::Panic,
                    45..70 => Fate::Abort,
                    70..99 => Fate::Release,
                    _ => Fate::Stay,
                };
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                let panics = matches!(fate, Fate::Panic);
                let waits = matches!(fate, Fate::Abort | Fate::Release | Fate::Stay);
                let handle = tokio::spawn(async move {
                    if waits {
                        let _ = rx.await;
                    }
                    assert!(!panics, "task panics on purpose");
                });
                match fate {
                    Fate::Abort => handle.abort(),
                    Fate::Release => releases.push(tx),
                    Fate::Stay => {
                        expected_alive += 1;
                        staying.push(tx);
                    }
                    Fate::Complete | Fate::Panic => drop(tx),
                }
                if !matches!(fate, Fate::Stay) {
                    handles.push(handle);
                }
            }
            for release in releases {
                let _ = release.send(());
            }
            for handle in handles {
                let _ = handle.await;
            }
            match guard.verify().await {
                Err(report) => assert_eq!(report.leaked, expected_alive, "round {round}"),
                Ok(()) => assert_eq!(expected_alive, 0, "round {round}"),
            }
        }
        let total_staying = staying.len();
        assert_eq!(leakcheck::Tracker::current().unwrap().live(), total_staying);
        let guard = leakcheck::verify_none().grace(Duration::from_secs(5));
        let release_all = tokio::spawn(async move {
            for tx in staying {
                let _ = tx.send(());
            }
        });
        release_all.await.unwrap();
        guard.verify().await.unwrap();
    });
    let _ = std::panic::take_hook();
    // Shutdown: every leftover task gets its terminate; none stays behind.
    runtime.block_on(async {
        for _ in 0..10_000 {
            tokio::spawn(std::future::pending::<()>());
        }
    });
    let handle = runtime.handle().clone();
    drop(runtime);
    assert_eq!(tracker.live(), 0, "shutdown leaves no phantom entries");
    // Spawning onto a closed runtime fires terminate before spawn.
    for _ in 0..1_000 {
        drop(handle.spawn(async {}));
    }
    assert_eq!(
        tracker.live(),
        0,
        "terminate-before-spawn leaves no phantom entries"
    );
}
