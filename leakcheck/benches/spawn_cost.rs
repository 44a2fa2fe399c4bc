//! Spawn + join cost of empty tasks from every spawn pattern of issue #10, on
//! a 2-worker multi-thread runtime and on a current-thread one, side by side
//! in one run: untracked, tokio's hooks with empty callbacks (the control),
//! leakcheck with spawn sites only, leakcheck with full spawn backtraces, and
//! tokio-metrics' `TaskMonitor`. Then the cost per poll of leakcheck's poll
//! hooks, and console-subscriber in a phase of its own.
//!
//! `cargo bench -p leakcheck --bench spawn_cost [-- ROUNDS] [--current-thread | --multi-thread] [--pattern TEXT] [--variant TEXT] [--spawn-only]`
//!
//! Both flavors run unless one is named; `--pattern` keeps the patterns whose
//! name contains TEXT, `--variant` the variants whose name contains TEXT
//! (untracked always runs: it is every ratio's denominator), and
//! `--spawn-only` skips the poll and console phases (all three for
//! profiling: with one tracked variant kept, every leakcheck sample in a
//! profile is that variant's). The patterns:
//! - **block_on body, no scope / in a scope**: spawned from the `block_on`
//!   future (where a `#[leakcheck::test]` body spawns; not a task, so tokio
//!   names no parent), without and inside an open `verify_none` scope;
//! - **one parent task**: spawned by one task that opened the scope (a scope
//!   anchored in a task, as a helper task or a server's request check does);
//! - **1,000 parents**: that task spawns 1,000 parents at once, each spawns two
//!   children (every task counts);
//! - **1,024 call stacks**: one parent spawning through 1,024 distinct call
//!   paths, so no per-thread stack cache hits;
//! - **labeled**: one parent spawning inside `leakcheck::labeled`, one label
//!   per batch of [`BATCH`] tasks;
//! - **cross-thread terminate**: multi-thread: a task on one worker spawns
//!   and spins until the other worker has run every child (LIFO slot off,
//!   so each child is stolen), so every spawn hook runs on one thread and
//!   every terminate on the other; current-thread: a plain thread spawns
//!   through the runtime's `Handle` (tokio names no spawner) and the runtime's
//!   thread runs and terminates the tasks.
//!
//! Every tracked variant but the first runs inside an open scope, as a test
//! does, so scope accounting is part of the measured cost.
//!
//! A plain bench binary rather than criterion: on a shared 2-core machine the
//! load drifts over seconds, and criterion measures one variant after the
//! other. Here every round runs every variant once, each pattern's variants in
//! rotating order, and the medians over rounds are compared, so drift hits all
//! variants alike. Samples are short (2,000–3,000 tasks, a fresh runtime each,
//! built outside the timed part) and the 10th percentile is reported beside
//! the median: on a loaded machine the fastest samples are those that ran
//! undisturbed, the closest thing to the cost on an idle one.

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

    use std::future::Future;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use leakcheck::{BacktraceMode, Tracker};
    use tokio::runtime::{Builder, Handle, Runtime};
    use tokio::task::JoinHandle;
    use tokio_metrics::TaskMonitor;

    /// Tasks spawned, then joined, per batch.
    const BATCH: usize = 1_000;
    /// Batches per sample.
    const BATCHES: usize = 2;
    /// Parent tasks alive at once in the many-parents pattern.
    const PARENTS: usize = 1_000;
    /// Children each of those parents spawns.
    const CHILDREN_PER_PARENT: usize = 2;
    /// Levels of the call tree the distinct-stacks pattern spawns through:
    /// 2^10 = 1,024 distinct call paths, far beyond the per-thread stack
    /// cache's 64 slots.
    const CALL_LEVELS: u32 = 10;
    const DEFAULT_ROUNDS: usize = 200;
    /// Yields per task in the poll phase: each task is polled `YIELDS + 1` times.
    const YIELDS: usize = 20;
    /// How long the cross-thread pattern waits for the other worker before
    /// it gives up (a safety net; a sample takes milliseconds).
    const CROSS_THREAD_PATIENCE: Duration = Duration::from_secs(30);

    /// Issue #10's targets, as ratios of the median to untracked.
    const SITES_TARGET: f64 = 1.20;
    const FULL_TARGET: f64 = 1.30;

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Flavor {
        MultiThread,
        CurrentThread,
    }

    impl Flavor {
        fn name(self) -> &'static str {
            match self {
                Flavor::MultiThread => "2-worker multi-thread",
                Flavor::CurrentThread => "current-thread",
            }
        }

        fn builder(self) -> Builder {
            match self {
                Flavor::MultiThread => {
                    let mut builder = Builder::new_multi_thread();
                    builder.worker_threads(2);
                    builder
                }
                Flavor::CurrentThread => Builder::new_current_thread(),
            }
        }
    }

    /// Where the measured tasks are spawned from (see the module docs).
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Pattern {
        BlockOnNoScope,
        BlockOnScope,
        OneParent,
        ManyParents,
        DistinctStacks,
        Labeled,
        CrossThread,
    }

    const PATTERNS: [Pattern; 7] = [
        Pattern::BlockOnNoScope,
        Pattern::BlockOnScope,
        Pattern::OneParent,
        Pattern::ManyParents,
        Pattern::DistinctStacks,
        Pattern::Labeled,
        Pattern::CrossThread,
    ];

    impl Pattern {
        fn name(self) -> &'static str {
            match self {
                Pattern::BlockOnNoScope => "block_on body, no scope",
                Pattern::BlockOnScope => "block_on body, in a scope",
                Pattern::OneParent => "one parent task",
                Pattern::ManyParents => "1,000 parents at once",
                Pattern::DistinctStacks => "1,024 call stacks",
                Pattern::Labeled => "labeled",
                Pattern::CrossThread => "cross-thread terminate",
            }
        }
    }

    /// The column of `instrument` in a [`Row`].
    fn column(instrument: Instrument) -> usize {
        INSTRUMENTS
            .iter()
            .position(|&i| i == instrument)
            .expect("every instrument has a column")
    }

    /// What `--pattern` chooses from: a row of the table, or the test-body
    /// phase.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Measured {
        Table(Pattern),
        TestBody,
    }

    impl Measured {
        fn name(self) -> &'static str {
            match self {
                Measured::Table(pattern) => pattern.name(),
                Measured::TestBody => TEST_BODY,
            }
        }
    }

    /// What watches the runtime's tasks.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Instrument {
        Untracked,
        EmptyHooks,
        Sites,
        Full,
        TaskMonitor,
    }

    /// Column order of the table; the first is every ratio's denominator.
    const INSTRUMENTS: [Instrument; 5] = [
        Instrument::Untracked,
        Instrument::EmptyHooks,
        Instrument::Sites,
        Instrument::Full,
        Instrument::TaskMonitor,
    ];

    impl Instrument {
        fn name(self) -> &'static str {
            match self {
                Instrument::Untracked => "untracked",
                Instrument::EmptyHooks => "empty hooks",
                Instrument::Sites => "spawn sites",
                Instrument::Full => "full backtraces",
                Instrument::TaskMonitor => "TaskMonitor",
            }
        }

        fn tracker(self) -> Option<Tracker> {
            let mode = match self {
                Instrument::Sites => BacktraceMode::Off,
                Instrument::Full => BacktraceMode::Full,
                _ => return None,
            };
            Some(Tracker::builder().backtrace(mode).build())
        }
    }

    /// Spawns the measured tasks, through `TaskMonitor::instrument` in that
    /// variant and as they are otherwise.
    #[derive(Clone)]
    struct Spawns {
        monitor: Option<TaskMonitor>,
    }

    impl Spawns {
        fn spawn<F: Future<Output = ()> + Send + 'static>(&self, future: F) -> JoinHandle<()> {
            match &self.monitor {
                Some(monitor) => tokio::spawn(monitor.instrument(future)),
                None => tokio::spawn(future),
            }
        }

        fn spawn_on(&self, handle: &Handle) -> JoinHandle<()> {
            match &self.monitor {
                Some(monitor) => handle.spawn(monitor.instrument(async {})),
                None => handle.spawn(async {}),
            }
        }
    }

    /// Spawns an empty task through the call path `path` names: at each of
    /// `levels` levels its lowest bit picks which of two functions makes the
    /// next call, so every path leaves different return addresses on the
    /// stack. The two are distinct functions (the constants they keep apart
    /// stop the compiler merging them) and `black_box` after each call keeps
    /// the calls out of tail position.
    #[inline(never)]
    fn via_left(spawns: &Spawns, path: u32, levels: u32) -> JoinHandle<()> {
        std::hint::black_box(0u8);
        let handle = match (levels, path & 1) {
            (0, _) => spawns.spawn(async {}),
            (_, 0) => via_left(spawns, path >> 1, levels - 1),
            _ => via_right(spawns, path >> 1, levels - 1),
        };
        std::hint::black_box(handle)
    }

    /// The other function of [`via_left`]'s call tree.
    #[inline(never)]
    fn via_right(spawns: &Spawns, path: u32, levels: u32) -> JoinHandle<()> {
        std::hint::black_box(1u8);
        let handle = match (levels, path & 1) {
            (0, _) => spawns.spawn(async {}),
            (_, 0) => via_left(spawns, path >> 1, levels - 1),
            _ => via_right(spawns, path >> 1, levels - 1),
        };
        std::hint::black_box(handle)
    }

    /// Checks that the call tree really gives every path its own stack: the
    /// distinct-stacks pattern would otherwise measure the cache hits it is
    /// meant to avoid.
    fn assert_distinct_stacks() {
        let tracker = Tracker::builder().backtrace(BacktraceMode::Full).build();
        let mut builder = Builder::new_current_thread();
        tracker.install(&mut builder);
        let runtime = builder.build().unwrap();
        let paths = 1usize << CALL_LEVELS;
        let stacks = runtime.block_on(async {
            let spawns = Spawns { monitor: None };
            // Nothing runs before this body yields: every task is live at
            // the snapshot.
            let handles: Vec<_> = (0..paths)
                .map(|path| via_left(&spawns, path as u32, CALL_LEVELS))
                .collect();
            let stacks = tracker.snapshot().stacks.len();
            for handle in handles {
                handle.await.unwrap();
            }
            stacks
        });
        assert_eq!(
            stacks, paths,
            "the distinct-stacks pattern must spawn from {paths} distinct stacks"
        );
    }

    /// Spawns `BATCHES` batches of `BATCH` tasks with `spawn`, joining each
    /// batch; returns the elapsed time.
    async fn batches(mut spawn: impl FnMut(usize) -> JoinHandle<()>) -> Duration {
        let mut handles = Vec::with_capacity(BATCH);
        let started = Instant::now();
        for _ in 0..BATCHES {
            handles.extend((0..BATCH).map(&mut spawn));
            for handle in handles.drain(..) {
                handle.await.unwrap();
            }
        }
        started.elapsed()
    }

    /// Runs `body` in `runtime`'s `block_on`, inside a scope when `scoped`.
    fn in_block_on<F: Future<Output = Duration>>(
        runtime: &Runtime,
        scoped: bool,
        body: F,
    ) -> Duration {
        runtime.block_on(async {
            let guard = scoped.then(leakcheck::verify_none);
            let elapsed = body.await;
            if let Some(guard) = guard {
                guard.verify().await.expect("the benchmark leaks nothing");
            }
            elapsed
        })
    }

    /// Runs `body` in a task on `runtime` that opens the scope itself when
    /// `scoped`.
    fn in_task<F>(runtime: &Runtime, scoped: bool, body: F) -> Duration
    where
        F: Future<Output = Duration> + Send + 'static,
    {
        let driver = runtime.spawn(async move {
            let guard = scoped.then(leakcheck::verify_none);
            let elapsed = body.await;
            if let Some(guard) = guard {
                guard.verify().await.expect("the benchmark leaks nothing");
            }
            elapsed
        });
        runtime.block_on(driver).unwrap()
    }

    /// Tasks one sample of `pattern` spawns.
    fn tasks_per_sample(pattern: Pattern) -> usize {
        match pattern {
            Pattern::ManyParents => PARENTS * (1 + CHILDREN_PER_PARENT),
            _ => BATCH * BATCHES,
        }
    }

    /// One sample: nanoseconds per task of `pattern` under `instrument`.
    fn sample(
        flavor: Flavor,
        pattern: Pattern,
        instrument: Instrument,
        monitor: &TaskMonitor,
    ) -> f64 {
        let tracker = instrument.tracker();
        let mut builder = flavor.builder();
        builder.enable_all();
        if let Some(tracker) = &tracker {
            tracker.install(&mut builder);
        }
        if instrument == Instrument::EmptyHooks {
            builder
                .on_task_spawn(|meta| {
                    std::hint::black_box(meta.id());
                })
                .on_task_terminate(|meta| {
                    std::hint::black_box(meta.id());
                });
        }
        if pattern == Pattern::CrossThread {
            // Tasks in the LIFO slot cannot be stolen: the spinning spawner
            // would wait for the last one forever.
            builder.disable_lifo_slot();
        }
        let runtime = builder.build().unwrap();
        let spawns = Spawns {
            monitor: (instrument == Instrument::TaskMonitor).then(|| monitor.clone()),
        };
        let scoped = tracker.is_some() && pattern != Pattern::BlockOnNoScope;
        let elapsed = match pattern {
            Pattern::BlockOnNoScope | Pattern::BlockOnScope => {
                in_block_on(&runtime, scoped, batches(|_| spawns.spawn(async {})))
            }
            Pattern::OneParent => in_task(&runtime, scoped, async move {
                batches(|_| spawns.spawn(async {})).await
            }),
            Pattern::ManyParents => in_task(&runtime, scoped, async move {
                let started = Instant::now();
                let parents: Vec<_> = (0..PARENTS)
                    .map(|_| {
                        let children = spawns.clone();
                        spawns.spawn(async move {
                            let handles: [_; CHILDREN_PER_PARENT] =
                                std::array::from_fn(|_| children.spawn(async {}));
                            for handle in handles {
                                handle.await.unwrap();
                            }
                        })
                    })
                    .collect();
                for parent in parents {
                    parent.await.unwrap();
                }
                started.elapsed()
            }),
            Pattern::DistinctStacks => in_task(&runtime, scoped, async move {
                batches(|i| via_left(&spawns, i as u32, CALL_LEVELS)).await
            }),
            Pattern::Labeled => in_task(&runtime, scoped, async move {
                let mut elapsed = Duration::ZERO;
                for batch in 0..BATCHES {
                    let label = format!("request {batch}");
                    elapsed += leakcheck::labeled(label, async {
                        let started = Instant::now();
                        let handles: Vec<_> = (0..BATCH).map(|_| spawns.spawn(async {})).collect();
                        for handle in handles {
                            handle.await.unwrap();
                        }
                        started.elapsed()
                    })
                    .await;
                }
                elapsed
            }),
            Pattern::CrossThread => match flavor {
                Flavor::MultiThread => in_task(&runtime, scoped, async move {
                    let finished = Arc::new(AtomicUsize::new(0));
                    let started = Instant::now();
                    let mut handles = Vec::with_capacity(BATCH);
                    for batch in 1..=BATCHES {
                        handles.extend((0..BATCH).map(|_| {
                            let finished = finished.clone();
                            spawns.spawn(async move {
                                finished.fetch_add(1, Ordering::Relaxed);
                            })
                        }));
                        // Hold this worker: the other one must run them all.
                        let deadline = Instant::now() + CROSS_THREAD_PATIENCE;
                        while finished.load(Ordering::Relaxed) < batch * BATCH {
                            assert!(
                                Instant::now() < deadline,
                                "the other worker never ran the spawned tasks"
                            );
                            std::thread::yield_now();
                        }
                        for handle in handles.drain(..) {
                            handle.await.unwrap();
                        }
                    }
                    started.elapsed()
                }),
                Flavor::CurrentThread => {
                    let (go, batches_wanted) = mpsc::channel::<()>();
                    let (send_handles, spawned) = mpsc::channel();
                    let handle = runtime.handle().clone();
                    let spawner = std::thread::spawn(move || {
                        for () in batches_wanted {
                            let handles: Vec<_> =
                                (0..BATCH).map(|_| spawns.spawn_on(&handle)).collect();
                            send_handles.send(handles).unwrap();
                        }
                    });
                    let elapsed = in_block_on(&runtime, scoped, async {
                        let started = Instant::now();
                        for _ in 0..BATCHES {
                            go.send(()).unwrap();
                            for handle in spawned.recv().unwrap() {
                                handle.await.unwrap();
                            }
                        }
                        started.elapsed()
                    });
                    drop(go);
                    spawner.join().unwrap();
                    elapsed
                }
            },
        };
        elapsed.as_nanos() as f64 / tasks_per_sample(pattern) as f64
    }

    fn percentile(samples: &[f64], pct: usize) -> f64 {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted[(sorted.len() * pct / 100).min(sorted.len() - 1)]
    }

    /// Samples of one (flavor, pattern): one list per instrument, in
    /// [`INSTRUMENTS`] order (empty for an instrument not measured).
    struct Row {
        pattern: Pattern,
        samples: [Vec<f64>; INSTRUMENTS.len()],
    }

    /// Every pattern on every flavor, `rounds` rounds, each pattern's
    /// instruments in rotating order.
    fn measure_spawns(
        flavors: &[Flavor],
        patterns: &[Pattern],
        instruments: &[Instrument],
        rounds: usize,
    ) -> Vec<(Flavor, Vec<Row>)> {
        let monitor = TaskMonitor::new();
        let mut tables: Vec<(Flavor, Vec<Row>)> = flavors
            .iter()
            .map(|&flavor| {
                let rows = patterns
                    .iter()
                    .map(|&pattern| Row {
                        pattern,
                        samples: Default::default(),
                    })
                    .collect();
                (flavor, rows)
            })
            .collect();
        // Warm-up: first symbol loads, thread starts, allocator growth, and
        // the 1,024 call stacks interned once.
        for (flavor, rows) in &tables {
            for row in rows {
                for &instrument in instruments {
                    sample(*flavor, row.pattern, instrument, &monitor);
                }
            }
        }
        let count = instruments.len();
        for round in 0..rounds {
            for (flavor, rows) in &mut tables {
                for row in rows.iter_mut() {
                    for i in 0..count {
                        let instrument = instruments[(round + i) % count];
                        let ns = sample(*flavor, row.pattern, instrument, &monitor);
                        row.samples[column(instrument)].push(ns);
                    }
                }
            }
        }
        tables
    }

    /// One table per flavor: untracked's median and p10, then each
    /// instrument's median ratio to untracked with the p10 ratio beside it,
    /// then which of issue #10's targets the medians miss.
    fn print_spawns(flavor: Flavor, rows: &[Row], rounds: usize) {
        println!(
            "spawn+join of empty tasks, {} runtime, {rounds} interleaved rounds; \
             untracked ns per task (median / p10), then median ratio to untracked (p10 ratio)",
            flavor.name()
        );
        print!("{:<27} {:>13}", "pattern", "untracked ns");
        for instrument in &INSTRUMENTS[1..] {
            print!(" {:>16}", instrument.name());
        }
        println!(
            "  targets (sites ≤ {SITES_TARGET:.2}x, full ≤ {FULL_TARGET:.2}x and < TaskMonitor)"
        );
        for row in rows {
            let base_p50 = percentile(&row.samples[0], 50);
            let base_p10 = percentile(&row.samples[0], 10);
            print!(
                "{:<27} {:>13}",
                row.pattern.name(),
                format!("{base_p50:.0} / {base_p10:.0}")
            );
            let mut medians = [None; INSTRUMENTS.len()];
            for (i, samples) in row.samples.iter().enumerate().skip(1) {
                if samples.is_empty() {
                    print!(" {:>16}", "-");
                    continue;
                }
                let median = percentile(samples, 50) / base_p50;
                let p10 = percentile(samples, 10) / base_p10;
                medians[i] = Some(median);
                print!(" {:>16}", format!("{median:.2}x ({p10:.2}x)"));
            }
            let (sites, full, monitor) = (
                medians[column(Instrument::Sites)],
                medians[column(Instrument::Full)],
                medians[column(Instrument::TaskMonitor)],
            );
            let mut missed = Vec::new();
            if let Some(sites) = sites.filter(|&sites| sites > SITES_TARGET) {
                missed.push(format!("sites +{:.2}x", sites - SITES_TARGET));
            }
            if let Some(full) = full.filter(|&full| full > FULL_TARGET) {
                missed.push(format!("full +{:.2}x", full - FULL_TARGET));
            }
            if let (Some(full), Some(monitor)) = (full, monitor)
                && full >= monitor
            {
                missed.push("full ≥ TaskMonitor".to_owned());
            }
            if missed.is_empty() {
                println!("  met");
            } else {
                println!("  MISSED: {}", missed.join(", "));
            }
        }
        println!();
    }

    struct Variant {
        name: &'static str,
        /// Runs one sample and returns the elapsed time.
        run: Box<dyn Fn() -> Duration>,
        samples: Vec<f64>,
    }

    /// Times batches of spawn-all-then-join-all, run in a task on the runtime.
    fn spawn_join<F>(runtime: &Runtime, spawn: F) -> Duration
    where
        F: Fn() -> JoinHandle<()> + Send + 'static,
    {
        let driver = runtime.spawn(batches(move |_| spawn()));
        runtime.block_on(driver).unwrap()
    }

    fn runtime(flavor: Flavor, configure: impl FnOnce(&mut Builder)) -> Runtime {
        let mut builder = flavor.builder();
        builder.enable_all();
        configure(&mut builder);
        builder.build().unwrap()
    }

    fn untracked(flavor: Flavor) -> Variant {
        Variant {
            name: "untracked",
            run: Box::new(move || spawn_join(&runtime(flavor, |_| {}), || tokio::spawn(async {}))),
            samples: Vec::new(),
        }
    }

    /// The test-body phase's name, for `--pattern`.
    const TEST_BODY: &str = "#[leakcheck::test] body";

    /// Spawn+join from the body of a `#[leakcheck::test]`, run through the
    /// harness the attribute expands to (its tracker takes the environment's
    /// settings: full backtraces unless `LEAKCHECK_BACKTRACE=off`).
    fn test_body(flavor: Flavor) -> Variant {
        Variant {
            name: TEST_BODY,
            run: Box::new(move || {
                let config = leakcheck::__private::TestConfig {
                    name: "spawn_cost::test_body",
                    flavor: match flavor {
                        Flavor::MultiThread => leakcheck::__private::Flavor::MultiThread,
                        Flavor::CurrentThread => leakcheck::__private::Flavor::CurrentThread,
                    },
                    grace: None,
                    ignore: &[],
                    mode: None,
                    expects_panic: false,
                    named_by_libtest: false,
                };
                let mut builder = flavor.builder();
                builder.enable_all();
                let mut elapsed = Duration::ZERO;
                leakcheck::__private::run_test(config, builder, async {
                    elapsed = batches(|_| tokio::spawn(async {})).await;
                });
                elapsed
            }),
            samples: Vec::new(),
        }
    }

    /// The same loop in a plain `block_on` body, untracked or in a
    /// `verify_none` scope of a tracker with full backtraces.
    fn block_on_body(flavor: Flavor, tracked: bool) -> Variant {
        Variant {
            name: if tracked {
                "block_on body, full, scope"
            } else {
                "block_on body, untracked"
            },
            run: Box::new(move || {
                let tracker =
                    tracked.then(|| Tracker::builder().backtrace(BacktraceMode::Full).build());
                let runtime = runtime(flavor, |b| {
                    if let Some(tracker) = &tracker {
                        tracker.install(b);
                    }
                });
                in_block_on(&runtime, tracked, batches(|_| tokio::spawn(async {})))
            }),
            samples: Vec::new(),
        }
    }

    fn console_subscriber(flavor: Flavor) -> Variant {
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
                let runtime = runtime(flavor, move |b| {
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

    fn polled(flavor: Flavor, name: &'static str, hooks: PollHooks) -> Variant {
        Variant {
            name,
            run: Box::new(move || {
                let tracker = Tracker::builder().build();
                let runtime = runtime(flavor, |b| {
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

    /// The items of `all` whose name contains the value of `flag` (all of
    /// them without the flag); exits with a message naming the choices when
    /// the value is missing or matches none.
    fn chosen<T: Copy>(
        args: &[String],
        flag: &str,
        what: &str,
        all: &[T],
        name: fn(T) -> &'static str,
    ) -> Vec<T> {
        let Some(at) = args.iter().position(|arg| arg == flag) else {
            return all.to_vec();
        };
        let Some(text) = args.get(at + 1) else {
            eprintln!("{flag} needs a value: part of a {what}'s name");
            std::process::exit(2);
        };
        let chosen: Vec<T> = all
            .iter()
            .copied()
            .filter(|&item| name(item).contains(text.as_str()))
            .collect();
        if chosen.is_empty() {
            let names: Vec<_> = all.iter().map(|&item| name(item)).collect();
            eprintln!(
                "{flag} {text:?} matches no {what}; the {what}s are: {}",
                names.join("; ")
            );
            std::process::exit(2);
        }
        chosen
    }

    pub(crate) fn main() {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let rounds = args
            .iter()
            .find_map(|arg| arg.parse::<usize>().ok())
            .unwrap_or(DEFAULT_ROUNDS);
        let wants = |flag: &str| args.iter().any(|arg| arg == flag);
        let flavors = match (wants("--multi-thread"), wants("--current-thread")) {
            (true, false) => vec![Flavor::MultiThread],
            (false, true) => vec![Flavor::CurrentThread],
            _ => vec![Flavor::MultiThread, Flavor::CurrentThread],
        };
        // `--pattern TEXT` / `--variant TEXT`: only those whose name contains
        // TEXT (for profiling one of them); untracked always runs.
        let all: Vec<Measured> = PATTERNS
            .iter()
            .map(|&pattern| Measured::Table(pattern))
            .chain([Measured::TestBody])
            .collect();
        let picked = chosen(&args, "--pattern", "pattern", &all, Measured::name);
        let patterns: Vec<Pattern> = picked
            .iter()
            .filter_map(|measured| match measured {
                Measured::Table(pattern) => Some(*pattern),
                Measured::TestBody => None,
            })
            .collect();
        let mut instruments = chosen(
            &args,
            "--variant",
            "variant",
            &INSTRUMENTS[1..],
            Instrument::name,
        );
        instruments.insert(0, Instrument::Untracked);
        if patterns.contains(&Pattern::DistinctStacks) {
            assert_distinct_stacks();
        }
        if !patterns.is_empty() {
            for (flavor, rows) in measure_spawns(&flavors, &patterns, &instruments, rounds) {
                print_spawns(flavor, &rows, rounds);
            }
        }
        // A test body spawns like a `block_on` body, but through the
        // harness, whose frame ends spawn walks (not in the table above: its
        // tracker takes the environment's settings, so no sites column).
        if picked.contains(&Measured::TestBody) {
            for &flavor in &flavors {
                let mut variants = vec![
                    block_on_body(flavor, false),
                    block_on_body(flavor, true),
                    test_body(flavor),
                ];
                measure(&mut variants, rounds, BATCH * BATCHES);
                print(
                    &format!(
                        "spawn+join from a test body, {} runtime, {rounds} interleaved rounds",
                        flavor.name()
                    ),
                    &variants,
                );
            }
        }
        if wants("--spawn-only") {
            return;
        }
        // The poll hooks' and console-subscriber's phases run on the first
        // flavor asked for.
        let flavor = flavors[0];
        let poll_rounds = (rounds / 4).max(5);
        let mut variants = vec![
            Variant {
                name: "untracked",
                run: Box::new(move || {
                    spawn_join(&runtime(flavor, |_| {}), || tokio::spawn(yielding()))
                }),
                samples: Vec::new(),
            },
            polled(flavor, "leakcheck, empty poll hooks", PollHooks::Empty),
            polled(flavor, "leakcheck, poll hooks", PollHooks::Installed),
            polled(flavor, "leakcheck, counting polls", PollHooks::Counting),
        ];
        measure(&mut variants, poll_rounds, POLLS_PER_SAMPLE);
        print(
            &format!(
                "cost per poll (ns) of tasks yielding {YIELDS} times, {} runtime, \
                 {poll_rounds} interleaved rounds of {POLLS_PER_SAMPLE} polls",
                flavor.name()
            ),
            &variants,
        );
        // console-subscriber's aggregator thread keeps a core busy from the
        // moment it starts, which would slow every other variant: it gets a
        // phase of its own, last, against a fresh untracked baseline.
        let console_rounds = (rounds / 10).max(5);
        let mut variants = vec![untracked(flavor), console_subscriber(flavor)];
        measure(&mut variants, console_rounds, BATCH * BATCHES);
        print(
            &format!(
                "console-subscriber phase, {} runtime, {console_rounds} interleaved rounds",
                flavor.name()
            ),
            &variants,
        );
    }
}
