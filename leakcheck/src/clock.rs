//! Time as leakcheck measures it: real, monotonic time, never the tokio
//! runtime's clock (a test may pause it).
//!
//! Spawn timestamps must be cheap enough for the spawn hook. A precise
//! `Instant::now()` costs ~20–40 ns on virtual machines, as much as the rest
//! of the hook; ages in a leak report need milliseconds, so Linux's coarse
//! monotonic clock (a read of the vDSO page, ~4 ms resolution) serves.
//!
//! Waits (the grace period, the task-dump timeout) run on futures-timer's
//! helper thread rather than tokio's timer: under `start_paused` tokio
//! auto-advances its clock whenever the runtime idles, which would end a grace
//! period the instant it begins, and a runtime built without the time driver
//! has no timer at all.

use std::future::Future;
use std::time::{Duration, Instant};

/// Completes `future`, or gives up when `deadline` passes on the monotonic
/// clock; `None` when it gave up.
pub(crate) async fn within<F: Future>(deadline: Instant, future: F) -> Option<F::Output> {
    let delay = futures_timer::Delay::new(deadline.saturating_duration_since(Instant::now()));
    tokio::select! {
        biased;
        output = future => Some(output),
        () = delay => None,
    }
}

/// Sleeps for `duration` of real time.
pub(crate) async fn sleep(duration: Duration) {
    futures_timer::Delay::new(duration).await;
}

/// Nanoseconds on a monotonic clock with at least jiffy (≤ 10 ms) resolution.
#[cfg(target_os = "linux")]
pub(crate) fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given; the coarse
    // monotonic clock exists on every Linux since 2.6.32.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Nanoseconds on a monotonic clock.
#[cfg(not(target_os = "linux"))]
pub(crate) fn now_ns() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    #[test]
    fn waits_run_on_real_time_while_tokio_time_is_paused() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let started = Instant::now();
        let waited = runtime.block_on(async {
            let deadline = Instant::now() + Duration::from_millis(30);
            super::within(deadline, std::future::pending::<()>()).await
        });
        assert_eq!(waited, None);
        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn waits_need_no_time_driver() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let done = runtime.block_on(async {
            super::sleep(Duration::from_millis(1)).await;
            super::within(Instant::now() + Duration::from_secs(60), async { 7 }).await
        });
        assert_eq!(done, Some(7));
    }

    #[test]
    fn coarse_clock_is_monotonic_and_advances() {
        let start = super::now_ns();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let later = super::now_ns();
        assert!(later >= start + 10_000_000, "{start} -> {later}");
    }
}
