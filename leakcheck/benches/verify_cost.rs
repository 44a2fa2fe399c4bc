//! Cost of `verify().await` on a clean scope while many unrelated tasks are
//! alive: it must depend on the scope, not on the runtime's task count.
//! `cargo bench -p leakcheck --bench verify_cost`.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use leakcheck::Tracker;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify_clean");
    group.measurement_time(Duration::from_secs(3));
    for unrelated in [1_000usize, 100_000] {
        let tracker = Tracker::new();
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        tracker.install(builder.worker_threads(2).enable_all());
        let runtime = builder.build().unwrap();
        let (_release, wait) = tokio::sync::watch::channel(());
        runtime.block_on(async {
            for _ in 0..unrelated {
                let mut wait = wait.clone();
                tokio::spawn(async move { wait.changed().await.ok() });
            }
        });
        assert_eq!(tracker.live(), unrelated);

        group.bench_with_input(
            BenchmarkId::new("empty_scope", unrelated),
            &unrelated,
            |b, _| {
                b.iter_custom(|iters| {
                    runtime.block_on(async {
                        let started = Instant::now();
                        for _ in 0..iters {
                            leakcheck::verify_none().verify().await.unwrap();
                        }
                        started.elapsed()
                    })
                })
            },
        );
        // A scope whose one task was just joined: the terminate may still be
        // in flight, so this includes the event-driven wait for it.
        group.bench_with_input(
            BenchmarkId::new("one_joined_task", unrelated),
            &unrelated,
            |b, _| {
                b.iter_custom(|iters| {
                    runtime.block_on(async {
                        let mut measured = Duration::ZERO;
                        for _ in 0..iters {
                            let guard = leakcheck::verify_none();
                            tokio::spawn(async {}).await.unwrap();
                            let started = Instant::now();
                            guard.verify().await.unwrap();
                            measured += started.elapsed();
                        }
                        measured
                    })
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
