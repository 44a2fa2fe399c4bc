//! Spawn + join cost of empty tasks on a 2-worker multi-thread runtime,
//! side by side in one run: untracked, leakcheck with spawn sites only,
//! leakcheck with full spawn backtraces, tokio-metrics' `TaskMonitor`, and
//! console-subscriber; then the cost per poll of leakcheck's poll hooks, on
//! tasks that yield [`YIELDS`] times: untracked, leakcheck with its poll hooks
//! replaced by empty ones, leakcheck as installed, and leakcheck while a
//! scope waits out its grace (when polls are counted).
//!
//! `cargo bench -p leakcheck --bench spawn_cost [-- ROUNDS] [--current-thread]`
//!
//! A plain bench binary rather than criterion: on a shared 2-core machine the
//! load drifts over seconds, and criterion measures one variant after the
//! other. Here every round runs each variant once, in rotating order, and the
//! medians over rounds are compared, so drift hits all variants alike. Samples
//! are short (2,000 tasks) and the 10th percentile is reported beside the
//! median: on a loaded machine the fastest samples are those that ran
//! undisturbed, the closest thing to the cost on an idle one.
//!
//! The tracked variants spawn inside an open `verify_none` scope, as a test
//! body does, so scope accounting (and the parent lookup of a spawn made by a
//! task) is part of the measured cost.

// Every variant measures tokio's task hooks, which exist only under
// `--cfg tokio_unstable` (the workspace's .cargo/config.toml sets it).
#[cfg(tokio_unstable)]
fn main() {
    bench::main();
}

#[cfg(not(tokio_unstable))]
fn main() {
    eprintln!(
        "spawn_cost measures tokio's task hooks: build it with RUSTFLAGS=\"--cfg tokio_unstable\""
    );
    std::process::exit(2);
}

#[cfg(tokio_unstable)]
mod bench {

    use std::time::{Duration, Instant};

    use leakcheck::{BacktraceMode, Tracker};
    use tokio::runtime::{Builder, Runtime};

    /// Tasks spawned, then joined, per batch.
    const BATCH: usize = 1_000;
    /// Batches per variant per round.
    const BATCHES: usize = 2;
    const DEFAULT_ROUNDS: usize = 200;
    /// Yields per task in the poll phase: each task is polled `YIELDS + 1` times.
    const YIELDS: usize = 20;

    fn current_thread() -> bool {
        std::env::args().any(|arg| arg == "--current-thread")
    }

    fn runtime(configure: impl FnOnce(&mut Builder)) -> Runtime {
        let mut builder = if std::env::var("CT").is_ok() {
            Builder::new_current_thread()
        } else {
            let mut b = Builder::new_multi_thread();
            b.worker_threads(2);
            b
        };
        builder.enable_all();
        configure(&mut builder);
        builder.build().unwrap()
    }

    struct Variant {
        name: &'static str,
        /// Runs `BATCHES` batches and returns the elapsed time.
        run: Box<dyn Fn() -> Duration>,
        samples: Vec<f64>,
    }

    /// Times batches of spawn-all-then-join-all inside `block_on`.
    /// Times batches of spawn-all-then-join-all, run in a task on the runtime
    /// (a worker spawning, as servers and most test code do).
    fn spawn_join<F>(runtime: &Runtime, spawn: F) -> Duration
    where
        F: Fn() -> tokio::task::JoinHandle<()> + Send + 'static,
    {
        let driver = runtime.spawn(async move {
            let mut handles = Vec::with_capacity(BATCH);
            let started = Instant::now();
            for _ in 0..BATCHES {
                handles.extend((0..BATCH).map(|_| spawn()));
                for handle in handles.drain(..) {
                    handle.await.unwrap();
                }
            }
            started.elapsed()
        });
        runtime.block_on(driver).unwrap()
    }

    fn tracked(name: &'static str, mode: BacktraceMode) -> Variant {
        Variant {
            name,
            run: Box::new(move || {
                let tracker = Tracker::builder().backtrace(mode).build();
                let runtime = runtime(|b| {
                    tracker.install(b);
                });
                let scope = runtime.block_on(async { leakcheck::verify_none() });
                let elapsed = spawn_join(&runtime, || tokio::spawn(async {}));
                runtime
                    .block_on(scope.verify())
                    .expect("the benchmark leaks nothing");
                elapsed
            }),
            samples: Vec::new(),
        }
    }

    fn console_subscriber() -> Variant {
        use tracing_subscriber::layer::SubscriberExt;
        // Instruments tokio's spawn spans through tracing; the subscriber is
        // installed on the measured runtime's threads only, its server on
        // loopback.
        let layer = console_subscriber::ConsoleLayer::builder()
            .server_addr(([127, 0, 0, 1], 0))
            .spawn();
        let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
        Variant {
            name: "console-subscriber",
            run: Box::new(move || {
                let on_workers = dispatch.clone();
                let runtime = runtime(move |b| {
                    b.on_thread_start(move || {
                        std::mem::forget(tracing::dispatcher::set_default(&on_workers))
                    });
                });
                tracing::dispatcher::with_default(&dispatch, || {
                    spawn_join(&runtime, || tokio::spawn(async {}))
                })
            }),
            samples: Vec::new(),
        }
    }

    fn percentile(samples: &[f64], pct: usize) -> f64 {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted[(sorted.len() * pct / 100).min(sorted.len() - 1)]
    }

    /// A task polled `YIELDS + 1` times.
    async fn yielding() {
        for _ in 0..YIELDS {
            tokio::task::yield_now().await;
        }
    }

    /// Polls in one sample of the poll phase.
    const POLLS_PER_SAMPLE: usize = BATCH * BATCHES * (YIELDS + 1);

    /// How leakcheck's poll hooks are set up in a poll-phase variant.
    #[derive(Clone, Copy)]
    enum PollHooks {
        /// Replaced by hooks that do nothing: tokio's dispatch cost only.
        Empty,
        /// As installed: the in-poll slot, polls not counted.
        Installed,
        /// As installed, while another scope waits out its grace: polls counted.
        Counting,
    }

    fn polled(name: &'static str, hooks: PollHooks) -> Variant {
        Variant {
            name,
            run: Box::new(move || {
                let tracker = Tracker::builder().build();
                let runtime = runtime(|b| {
                    tracker.install(b);
                    if let PollHooks::Empty = hooks {
                        b.on_before_task_poll(|meta| {
                            std::hint::black_box(meta.id());
                        })
                        .on_after_task_poll(|meta| {
                            std::hint::black_box(meta.id());
                        });
                    }
                });
                // A scope kept waiting (its task is held) for the whole sample.
                let (release, waiting) = match hooks {
                    PollHooks::Counting => {
                        let (release, held) = tokio::sync::oneshot::channel::<()>();
                        // The scope's owner task verifies it, so the verify is
                        // not one of the scope's own tasks.
                        let waiting = runtime.spawn(async move {
                            let scope = leakcheck::verify_none().grace(Duration::from_secs(60));
                            tokio::spawn(async move { held.await.ok() });
                            scope.verify().await
                        });
                        (Some(release), Some(waiting))
                    }
                    _ => (None, None),
                };
                let elapsed = spawn_join(&runtime, || tokio::spawn(yielding()));
                drop(release);
                if let Some(waiting) = waiting {
                    runtime
                        .block_on(waiting)
                        .unwrap()
                        .expect("the held task ends once released");
                }
                elapsed
            }),
            samples: Vec::new(),
        }
    }

    /// Runs `rounds` rounds of every variant, in rotating order; samples are
    /// nanoseconds per unit (`units` per sample).
    fn measure(variants: &mut [Variant], rounds: usize, units: usize) {
        // Warm-up: first symbol loads, runtime thread start, allocator growth.
        for variant in variants.iter() {
            (variant.run)();
        }
        let count = variants.len();
        for round in 0..rounds {
            for i in 0..count {
                let variant = &mut variants[(round + i) % count];
                let elapsed = (variant.run)();
                variant
                    .samples
                    .push(elapsed.as_nanos() as f64 / units as f64);
            }
        }
    }

    /// Prints each variant against the first one.
    fn print(title: &str, variants: &[Variant]) {
        let baseline_p10 = percentile(&variants[0].samples, 10);
        let baseline_p50 = percentile(&variants[0].samples, 50);
        println!("{title}");
        println!(
            "{:<28} {:>10} {:>10} {:>10} {:>13} {:>12}",
            "variant", "p10 ns", "median ns", "p90 ns", "ratio at p10", "ratio median"
        );
        for variant in variants {
            let p10 = percentile(&variant.samples, 10);
            let p50 = percentile(&variant.samples, 50);
            let p90 = percentile(&variant.samples, 90);
            println!(
                "{:<28} {:>10.0} {:>10.0} {:>10.0} {:>12.2}x {:>11.2}x",
                variant.name,
                p10,
                p50,
                p90,
                p10 / baseline_p10,
                p50 / baseline_p50
            );
        }
        println!();
    }

    fn untracked() -> Variant {
        Variant {
            name: "untracked",
            run: Box::new(|| spawn_join(&runtime(|_| {}), || tokio::spawn(async {}))),
            samples: Vec::new(),
        }
    }

    pub(crate) fn main() {
        let rounds = std::env::args()
            .skip(1)
            .find_map(|arg| arg.parse::<usize>().ok())
            .unwrap_or(DEFAULT_ROUNDS);
        let monitor = tokio_metrics::TaskMonitor::new();
        // Every sample builds a fresh runtime (outside the timed part), so no
        // variant is favoured by where one runtime's threads happened to land.
        let mut variants = vec![
            untracked(),
            tracked("leakcheck, spawn sites", BacktraceMode::Off),
            tracked("leakcheck, full backtraces", BacktraceMode::Full),
            // tokio's hook mechanism itself, with hooks that do nothing.
            Variant {
                name: "empty hooks",
                run: Box::new(|| {
                    let runtime = runtime(|b| {
                        b.on_task_spawn(|meta| {
                            std::hint::black_box(meta.id());
                        })
                        .on_task_terminate(|meta| {
                            std::hint::black_box(meta.id());
                        });
                    });
                    spawn_join(&runtime, || tokio::spawn(async {}))
                }),
                samples: Vec::new(),
            },
            Variant {
                name: "tokio-metrics TaskMonitor",
                run: Box::new(move || {
                    let monitor = monitor.clone();
                    spawn_join(&runtime(|_| {}), move || {
                        tokio::spawn(monitor.instrument(async {}))
                    })
                }),
                samples: Vec::new(),
            },
        ];
        measure(&mut variants, rounds, BATCH * BATCHES);
        print(
            &format!(
                "spawn+join of empty tasks, {} runtime, {rounds} interleaved rounds of {} tasks",
                if current_thread() {
                    "current-thread"
                } else {
                    "2-worker multi-thread"
                },
                BATCH * BATCHES
            ),
            &variants,
        );
        // console-subscriber's aggregator thread keeps a core busy from the
        // moment it starts, which would slow every other variant: it gets a phase
        // of its own, against a fresh untracked baseline.
        let poll_rounds = (rounds / 4).max(5);
        let mut variants = vec![
            Variant {
                name: "untracked",
                run: Box::new(|| spawn_join(&runtime(|_| {}), || tokio::spawn(yielding()))),
                samples: Vec::new(),
            },
            polled("leakcheck, empty poll hooks", PollHooks::Empty),
            polled("leakcheck, poll hooks", PollHooks::Installed),
            polled("leakcheck, counting polls", PollHooks::Counting),
        ];
        measure(&mut variants, poll_rounds, POLLS_PER_SAMPLE);
        print(
            &format!(
                "cost per poll (ns) of tasks yielding {YIELDS} times, {poll_rounds} interleaved rounds of {POLLS_PER_SAMPLE} polls"
            ),
            &variants,
        );
        let console_rounds = (rounds / 10).max(5);
        let mut variants = vec![untracked(), console_subscriber()];
        measure(&mut variants, console_rounds, BATCH * BATCHES);
        print(
            &format!("console-subscriber phase, {console_rounds} interleaved rounds"),
            &variants,
        );
    }
}
