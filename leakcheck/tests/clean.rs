//! Clean patterns pass, and pass fast: no fixed delay when nothing is alive.

mod common;

use std::time::{Duration, Instant};

use common::{Flavor, blocked, forever, scoped};

/// Long enough that a verdict reached by waiting it out would be obvious.
const LONG_GRACE: Duration = Duration::from_secs(5);

fn assert_clean_and_prompt<F, Fut>(flavor: Flavor, body: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    if let Err(report) = scoped(flavor, LONG_GRACE, body) {
        panic!("false alarm:\n{report}");
    }
    // Not a timing assertion on speed: only that the 5 s grace was not
    // waited out (the wait wakes on the last terminate).
    assert!(
        started.elapsed() < LONG_GRACE,
        "verify waited out the grace period"
    );
}

#[test]
fn joined_tasks_are_clean() {
    for flavor in [Flavor::Current, Flavor::Multi] {
        assert_clean_and_prompt(flavor, || async {
            let handles: Vec<_> = (0..100).map(|i| tokio::spawn(async move { i })).collect();
            for handle in handles {
                handle.await.unwrap();
            }
        });
    }
}

#[test]
fn aborted_tasks_are_clean() {
    assert_clean_and_prompt(Flavor::Multi, || async {
        let handle = tokio::spawn(forever());
        handle.abort();
        assert!(handle.await.unwrap_err().is_cancelled());
    });
}

#[test]
fn dropped_joinset_is_clean() {
    assert_clean_and_prompt(Flavor::Multi, || async {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..50 {
            set.spawn(forever());
        }
        // Dropping a JoinSet aborts its tasks; their terminates arrive later,
        // on whichever worker runs the cancellation.
        drop(set);
    });
}

#[test]
fn task_released_during_the_grace_period_is_clean() {
    assert_clean_and_prompt(Flavor::Multi, || async {
        let (release, task) = blocked();
        tokio::spawn(task);
        // The delay is the scenario (the task ends after the body returned),
        // not a stand-in for synchronisation.
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let _ = release.send(());
        });
    });
}

#[test]
fn panicking_task_is_clean() {
    assert_clean_and_prompt(Flavor::Multi, || async {
        let handle = tokio::spawn(async { panic!("child task panics on purpose") });
        assert!(handle.await.unwrap_err().is_panic());
    });
}

#[test]
fn tasks_alive_before_the_scope_are_not_its_leaks() {
    let tracker = leakcheck::Tracker::new();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    tracker.install(builder.worker_threads(2).enable_all());
    let runtime = builder.build().unwrap();
    runtime.block_on(async {
        let background = tokio::spawn(forever());
        let guard = leakcheck::verify_none().grace(LONG_GRACE);
        tokio::spawn(async {}).await.unwrap();
        let started = Instant::now();
        guard
            .verify()
            .await
            .expect("the background task predates the scope");
        assert!(started.elapsed() < LONG_GRACE);
        background.abort();
    });
}

#[test]
fn spawn_blocking_is_not_a_task_leak() {
    assert_clean_and_prompt(Flavor::Multi, || async {
        tokio::task::spawn_blocking(|| 1).await.unwrap();
        let _ = tokio::fs::metadata(".").await;
    });
}

#[leakcheck::test]
async fn attribute_passes_a_clean_body() {
    tokio::spawn(async {}).await.unwrap();
}

#[leakcheck::test(flavor = "multi_thread", worker_threads = 2)]
async fn attribute_returns_the_body_result() -> Result<(), std::io::Error> {
    let value = tokio::spawn(async { Ok::<_, std::io::Error>(7) }).await??;
    assert_eq!(value, 7);
    Ok(())
}

#[leakcheck::test(start_paused = true)]
async fn attribute_supports_paused_time() {
    let started = tokio::time::Instant::now();
    tokio::spawn(tokio::time::sleep(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(3600));
}

#[leakcheck::test(ignore = "tests/clean.rs")]
async fn attribute_ignore_covers_a_deliberate_background_task() {
    tokio::spawn(forever());
}

#[cfg(tokio_unstable)]
#[leakcheck::test(flavor = "local")]
async fn attribute_local_flavor_runs_spawn_local() {
    tokio::task::spawn_local(async {}).await.unwrap();
}
