//! Deterministic leak fixtures shared by the integration tests (goleak's
//! `startBlockedG` / `unblock`): a task that stays alive until released.

// `Result<(), LeakReport>` mirrors the public `VerifyGuard::verify` signature.
#![allow(clippy::result_large_err)]
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::time::Duration;

use leakcheck::{LeakReport, Tracker};
use tokio::sync::oneshot;

/// Releases a blocked task when sent to (or dropped).
pub type Release = oneshot::Sender<()>;

/// The future of a task blocked until `release` fires.
pub fn blocked() -> (Release, impl Future<Output = ()> + Send + 'static) {
    let (release, wait) = oneshot::channel::<()>();
    (release, async move {
        let _ = wait.await;
    })
}

/// A future that never completes (the task leaks until its runtime drops).
pub async fn forever() {
    std::future::pending::<()>().await
}

#[derive(Debug, Clone, Copy)]
pub enum Flavor {
    Current,
    Multi,
}

/// Runs `body` in a `verify_none` scope on a fresh tracked runtime and returns
/// the verdict.
pub fn scoped<F, Fut>(flavor: Flavor, grace: Duration, body: F) -> Result<(), LeakReport>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let tracker = Tracker::new();
    let mut builder = match flavor {
        Flavor::Current => tokio::runtime::Builder::new_current_thread(),
        Flavor::Multi => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(2);
            b
        }
    };
    tracker.install(builder.enable_all());
    let runtime = builder.build().unwrap();
    runtime.block_on(async {
        let guard = leakcheck::verify_none().named("scoped").grace(grace);
        body().await;
        guard.verify().await
    })
}

/// The one site group of a report, asserting there is exactly one.
pub fn only_site(report: &LeakReport) -> &leakcheck::SiteGroup {
    assert_eq!(
        report.sites.len(),
        1,
        "expected one leaking site:\n{report}"
    );
    &report.sites[0]
}

pub const THIS_DIR: &str = "leakcheck/tests/";
