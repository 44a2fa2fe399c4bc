//! Spawn timestamps cheap enough for the spawn hook. A precise
//! `Instant::now()` costs ~20–40 ns on virtual machines, as much as the rest
//! of the hook; ages in a leak report need milliseconds, so Linux's coarse
//! monotonic clock (a read of the vDSO page, ~4 ms resolution) serves.

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
    #[test]
    fn coarse_clock_is_monotonic_and_advances() {
        let start = super::now_ns();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let later = super::now_ns();
        assert!(later >= start + 10_000_000, "{start} -> {later}");
    }
}
