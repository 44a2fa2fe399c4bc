//! The grace period is real time: not burnt by a paused tokio clock, not
//! shorter than the terminate hooks of tasks already joined, and available on
//! runtimes built without tokio's time driver.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use common::forever;
use leakcheck::Tracker;

/// Ends a task from a plain thread `after` from now, as a signal from outside
/// the runtime (a child process, a socket peer) would.
fn released_from_a_thread(after: Duration) -> tokio::sync::oneshot::Receiver<()> {
    let (release, wait) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        std::thread::sleep(after);
        let _ = release.send(());
    });
    wait
}

// tokio's auto-advance would burn a grace measured on the paused clock the
// moment the body returns, and report this task.
#[leakcheck::test(start_paused = true, grace = "5s")]
async fn paused_clock_does_not_burn_the_grace() {
    let wait = released_from_a_thread(Duration::from_millis(40));
    tokio::spawn(async move {
        let _ = wait.await;
    });
}

#[test]
fn ages_and_the_wait_are_real_time_under_a_paused_clock() {
    let tracker = Tracker::new();
    let mut builder = tokio::runtime::Builder::new_current_thread();
    tracker.install(builder.enable_all().start_paused(true));
    let runtime = builder.build().unwrap();
    let report = runtime
        .block_on(async {
            let guard = leakcheck::verify_none().grace(Duration::from_millis(60));
            tokio::spawn(forever());
            guard.verify().await
        })
        .unwrap_err();
    assert!(report.grace_ms >= 60, "the wait is real: {report}");
    let age = report.sites[0].tasks[0].age_ms;
    // The coarse clock behind ages ticks every few milliseconds.
    assert!(age >= 50, "the task's age is real time: {report}");
}

/// A JoinHandle waker that signals the joining side and then holds the
/// worker for a while, as a worker descheduled by the OS between waking the
/// JoinHandle and running the task's terminate hook would be.
struct DescheduledWorker {
    woken: Mutex<mpsc::Sender<()>>,
}

impl Wake for DescheduledWorker {
    fn wake(self: Arc<Self>) {
        let _ = self.woken.lock().unwrap().send(());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn zero_grace_still_waits_for_the_terminate_of_a_joined_task() {
    let tracker = Tracker::new();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2);
    tracker.install(builder.enable_all());
    let runtime = builder.build().unwrap();
    runtime.block_on(async {
        let guard = leakcheck::verify_none().grace(Duration::ZERO);
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let mut task = tokio::spawn(async move {
            let _ = released.await;
        });
        let (woken, joined) = mpsc::channel();
        let waker = Waker::from(Arc::new(DescheduledWorker {
            woken: Mutex::new(woken),
        }));
        let poll = Pin::new(&mut task).poll(&mut Context::from_waker(&waker));
        assert!(poll.is_pending());
        release.send(()).unwrap();
        joined
            .recv_timeout(Duration::from_secs(10))
            .expect("the worker completes the task");
        assert!(task.is_finished(), "the task is joined");
        guard
            .verify()
            .await
            .expect("a joined task is not a leak, terminate hook pending or not");
    });
}

#[test]
fn runtime_without_the_time_driver_is_verified() {
    for multi_thread in [false, true] {
        let tracker = Tracker::new();
        let mut builder = if multi_thread {
            tokio::runtime::Builder::new_multi_thread()
        } else {
            tokio::runtime::Builder::new_current_thread()
        };
        // No `enable_time`: leakcheck's waits must not need tokio's timer.
        tracker.install(&mut builder);
        let runtime = builder.build().unwrap();
        runtime.block_on(async {
            let guard = leakcheck::verify_none().grace(Duration::from_millis(10));
            tokio::spawn(async {}).await.unwrap();
            guard.verify().await.expect("a clean scope passes");

            let guard = leakcheck::verify_none().grace(Duration::from_millis(10));
            let line = line!() + 1;
            tokio::spawn(forever());
            let report = guard.verify().await.expect_err("a leak is caught");
            assert_eq!(report.sites[0].site.line, line, "{report}");
        });
    }
}
