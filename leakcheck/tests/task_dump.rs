//! `Tracker::task_dump`: tokio's task dump as text for a debug endpoint,
//! refused (with the reason) wherever tokio 1.54's dump could wedge the
//! runtime.
#![cfg(all(
    tokio_unstable,
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]

use std::time::Duration;

use leakcheck::Tracker;
use tokio::runtime::{Builder, Runtime};

async fn wait_for_shutdown(rx: tokio::sync::oneshot::Receiver<()>) {
    let _ = rx.await;
}

fn runtime(tracker: &Tracker, multi_thread: bool) -> Runtime {
    let mut builder = if multi_thread {
        let mut builder = Builder::new_multi_thread();
        builder.worker_threads(2);
        builder
    } else {
        Builder::new_current_thread()
    };
    tracker.install(builder.enable_all());
    builder.build().unwrap()
}

#[test]
fn a_current_thread_runtime_is_dumped_as_text_every_time() {
    let tracker = Tracker::new();
    let runtime = runtime(&tracker, false);
    let (_tx, rx) = tokio::sync::oneshot::channel();
    runtime.spawn(wait_for_shutdown(rx));
    for _ in 0..2 {
        let text = runtime.block_on(tracker.task_dump()).unwrap();
        assert!(text.starts_with("task "), "{text}");
        assert!(text.contains("wait_for_shutdown"), "{text}");
    }
}

#[test]
fn a_multi_thread_runtime_is_dumped_as_text_once() {
    let tracker = Tracker::new();
    let runtime = runtime(&tracker, true);
    let (_tx, rx) = tokio::sync::oneshot::channel();
    runtime.spawn(wait_for_shutdown(rx));
    let text = runtime.block_on(tracker.task_dump()).unwrap();
    assert!(text.contains("wait_for_shutdown"), "{text}");
    let again = runtime.block_on(tracker.task_dump()).unwrap_err();
    assert!(again.contains("had its one task dump"), "{again}");
}

#[test]
fn a_busy_worker_defers_the_multi_thread_dump_without_using_it_up() {
    let tracker = Tracker::new();
    let runtime = runtime(&tracker, true);
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let busy = runtime.spawn(async move {
        entered_tx.send(()).unwrap();
        // Inside one poll for longer than the dump waits for the runtime
        // to go idle.
        std::thread::sleep(Duration::from_millis(600));
    });
    entered_rx.recv().unwrap();
    let refused = runtime.block_on(tracker.task_dump()).unwrap_err();
    assert!(refused.contains("stayed inside a poll"), "{refused}");
    runtime.block_on(busy).unwrap();
    let text = runtime.block_on(tracker.task_dump());
    assert!(
        text.is_ok(),
        "the refusal did not use the one dump: {text:?}"
    );
}
