//! Where tokio's `Handle::dump` stops working: one task dump of a runtime
//! with N idle tasks (each parked on a channel), optionally with its workers
//! kept busy by tasks that yield in a loop. Prints one line; run each case in
//! its own process under a timeout (`scripts/dump-scale.sh`), because a dump
//! that wedges a worker cannot be interrupted from inside.
//!
//! `cargo run -p leakcheck --example dump_scale -- multi 1000 busy` (or `idle`, `runnable`)

#[cfg(all(tokio_unstable, target_os = "linux"))]
fn main() {
    use std::time::{Duration, Instant};

    let mut args = std::env::args().skip(1);
    let flavor = args.next().unwrap_or_else(|| "current".to_owned());
    let tasks: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(100);
    let load = args.next().unwrap_or_else(|| "idle".to_owned());
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
        let mut senders = Vec::with_capacity(tasks);
        for _ in 0..tasks {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            senders.push(tx);
            tokio::spawn(async move {
                if runnable {
                    loop {
                        tokio::task::yield_now().await;
                    }
                }
                let _ = rx.await;
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
        let started = Instant::now();
        let dump = tokio::time::timeout(Duration::from_secs(5), tokio::runtime::Handle::current().dump()).await;
        let took = started.elapsed();
        match dump {
            Ok(dump) => {
                // Symbolizing every trace would take longer than the dump:
                // check a sample.
                let traced = dump
                    .tasks()
                    .iter()
                    .take(20)
                    .filter(|t| !t.trace().to_string().is_empty())
                    .count();
                println!(
                    "{flavor} tasks={tasks} {load}: dump in {:.1} ms, {} tasks, {traced} of the first 20 traced",
                    took.as_secs_f64() * 1e3,
                    dump.tasks().iter().count()
                );
            }
            Err(_) => println!("{flavor} tasks={tasks} {load}: timed out after {took:?}"),
        }
        drop(senders);
    });
    std::process::exit(0);
}

#[cfg(not(all(tokio_unstable, target_os = "linux")))]
fn main() {
    eprintln!("dump_scale needs --cfg tokio_unstable on Linux (tokio's task dump)");
}
