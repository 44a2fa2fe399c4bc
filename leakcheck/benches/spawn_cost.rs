//! Spawn + join cost of empty tasks on a 2-worker multi-thread runtime,
//! side by side in one run: untracked, leakcheck with spawn sites only,
//! leakcheck with full spawn backtraces, tokio-metrics' `TaskMonitor`, and
//! console-subscriber. Compare the ratios, not the absolute times (shared,
//! noisy machines). `cargo bench -p leakcheck --bench spawn_cost`.
//!
//! The tracked variants spawn inside an open `verify_none` scope, as a test
//! body does, so scope accounting is part of the measured cost.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use leakcheck::{BacktraceMode, Tracker};
use tokio::runtime::{Builder, Runtime};

/// Tasks spawned, then joined, per iteration.
const BATCH: usize = 1_000;

fn runtime(configure: impl FnOnce(&mut Builder)) -> Runtime {
    let mut builder = Builder::new_multi_thread();
    builder.worker_threads(2).enable_all();
    configure(&mut builder);
    builder.build().unwrap()
}

/// Times `iters` batches of spawn-all-then-join-all, run inside `block_on`.
fn spawn_join(
    runtime: &Runtime,
    iters: u64,
    spawn: impl Fn() -> tokio::task::JoinHandle<()>,
) -> Duration {
    runtime.block_on(async {
        let mut handles = Vec::with_capacity(BATCH);
        let started = Instant::now();
        for _ in 0..iters {
            handles.extend((0..BATCH).map(|_| spawn()));
            for handle in handles.drain(..) {
                handle.await.unwrap();
            }
        }
        started.elapsed()
    })
}

fn tracked(mode: BacktraceMode) -> (Runtime, leakcheck::VerifyGuard) {
    let tracker = Tracker::builder().backtrace(mode).build();
    let runtime = runtime(|b| {
        tracker.install(b);
    });
    let guard = runtime.block_on(async { leakcheck::verify_none() });
    (runtime, guard)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("spawn_join");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.measurement_time(Duration::from_secs(4));

    let untracked = runtime(|_| {});
    group.bench_function("untracked", |b| {
        b.iter_custom(|iters| spawn_join(&untracked, iters, || tokio::spawn(async {})))
    });

    let (sites, _sites_scope) = tracked(BacktraceMode::Off);
    group.bench_function("leakcheck_sites", |b| {
        b.iter_custom(|iters| spawn_join(&sites, iters, || tokio::spawn(async {})))
    });

    let (full, _full_scope) = tracked(BacktraceMode::Full);
    group.bench_function("leakcheck_backtraces", |b| {
        b.iter_custom(|iters| spawn_join(&full, iters, || tokio::spawn(async {})))
    });

    let monitor = tokio_metrics::TaskMonitor::new();
    group.bench_function("tokio_metrics_task_monitor", |b| {
        b.iter_custom(|iters| {
            spawn_join(&untracked, iters, || {
                tokio::spawn(monitor.instrument(async {}))
            })
        })
    });

    // console-subscriber instruments tokio's spawn spans through tracing; its
    // subscriber is installed on this runtime's threads only.
    use tracing_subscriber::layer::SubscriberExt;
    let layer = console_subscriber::ConsoleLayer::builder()
        .server_addr(([127, 0, 0, 1], 0))
        .spawn();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    let on_workers = dispatch.clone();
    let console = runtime(move |b| {
        b.on_thread_start(move || std::mem::forget(tracing::dispatcher::set_default(&on_workers)));
    });
    group.bench_function("console_subscriber", |b| {
        b.iter_custom(|iters| {
            tracing::dispatcher::with_default(&dispatch, || {
                spawn_join(&console, iters, || tokio::spawn(async {}))
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
