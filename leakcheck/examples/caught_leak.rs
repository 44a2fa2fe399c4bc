//! A service helper that forgets the task it spawns, caught by leakcheck.
//!
//! `cargo run -p leakcheck --example caught_leak` prints the report a failing
//! test would show; it exits 0 when the leak is caught and 1 if it is missed.

use std::time::Duration;

/// Starts a heartbeat and returns without keeping its handle: the bug.
fn start_heartbeat(interval: Duration) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
        }
    });
}

async fn serve_one_request() {
    start_heartbeat(Duration::from_millis(10));
    let worker = tokio::spawn(async { 40 + 2 });
    assert_eq!(worker.await.unwrap(), 42);
}

fn main() -> std::process::ExitCode {
    let tracker = leakcheck::Tracker::new();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    tracker.install(builder.worker_threads(2).enable_all());
    let runtime = builder.build().expect("build runtime");
    let verdict = runtime.block_on(async {
        let guard = leakcheck::verify_none()
            .named("caught_leak::serve_one_request")
            .grace(Duration::from_millis(100));
        serve_one_request().await;
        guard.verify().await
    });
    match verdict {
        Ok(()) => {
            eprintln!("leakcheck missed the heartbeat task spawned by start_heartbeat");
            std::process::ExitCode::FAILURE
        }
        Err(report) => {
            println!("{report}");
            std::process::ExitCode::SUCCESS
        }
    }
}
