//! Where tokio's `Handle::dump` stops working: several task dumps in a row of
//! a runtime with N idle tasks (each parked on a `Notify`, all woken from a
//! worker after each dump), optionally with its workers kept busy by tasks
//! that yield in a loop. Prints one line; run each case in
//! its own process under a timeout (`scripts/dump-scale.sh`), because a dump
//! that wedges a worker cannot be interrupted from inside.
//!
//! `cargo run -p leakcheck --example dump_scale -- multi 1000 busy 5` (or
//! `idle`, `runnable`; the last number is how many dumps are taken in a row)

#[cfg(all(tokio_unstable, target_os = "linux"))]
fn main() {
    use std::time::{Duration, Instant};

    let mut args = std::env::args().skip(1);
    let flavor = args.next().unwrap_or_else(|| "current".to_owned());
    let tasks: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(100);
    let load = args.next().unwrap_or_else(|| "idle".to_owned());
    let dumps: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(5);
    // `busy`: two tasks keep the workers busy; `runnable`: every task does,
    // so the run queues are full when the dump starts.
    let busy = load == "busy";
    let runnable = load == "runnable";
    let mut builder = match flavor.as_str() {
        "multi" => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(2);
            b
        }
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = builder.enable_all().build().unwrap();
    runtime.block_on(async {
        // Idle tasks park on one `Notify`, so one call wakes them all.
        let bell = std::sync::Arc::new(tokio::sync::Notify::new());
        for _ in 0..tasks {
            let bell = bell.clone();
            tokio::spawn(async move {
                if runnable {
                    loop {
                        tokio::task::yield_now().await;
                    }
                }
                loop {
                    bell.notified().await;
                }
            });
        }
        if busy {
            for _ in 0..2 {
                tokio::spawn(async {
                    loop {
                        tokio::task::yield_now().await;
                    }
                });
            }
        }
        // Let every task reach its first await.
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Several dumps in a row, as a suite with several leaking tests takes
        // them: each dump wakes every task it traced, and tokio may start one
        // more trace right after a dump returns (a worker still sees the
        // request), which is when a multi-thread runtime wedges.
        let mut slowest = Duration::ZERO;
        for round in 1..=dumps {
            let started = Instant::now();
            let dump = tokio::time::timeout(
                Duration::from_secs(5),
                tokio::runtime::Handle::current().dump(),
            )
            .await;
            slowest = slowest.max(started.elapsed());
            let Ok(dump) = dump else {
                println!("{flavor} tasks={tasks} {load}: dump {round} timed out after 5 s");
                std::process::exit(1);
            };
            if round == dumps {
                // Symbolizing every trace would take longer than the dump:
                // check a sample.
                let traced = dump
                    .tasks()
                    .iter()
                    .take(20)
                    .filter(|t| !t.trace().to_string().is_empty())
                    .count();
                println!(
                    "{flavor} tasks={tasks} {load}: {dumps} dumps, slowest {:.1} ms, {} tasks, {traced} of the first 20 traced",
                    slowest.as_secs_f64() * 1e3,
                    dump.tasks().iter().count()
                );
            }
            // What a suite may do right after a dump: wake many tasks from a
            // worker (they land in that worker's run queue).
            let wake_all = bell.clone();
            tokio::spawn(async move { wake_all.notify_waiters() })
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    std::process::exit(0);
}

#[cfg(not(all(tokio_unstable, target_os = "linux")))]
fn main() {
    eprintln!("dump_scale needs --cfg tokio_unstable on Linux (tokio's task dump)");
}
