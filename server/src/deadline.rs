//! Whole-response deadlines that a route arms on its connection (`/stream`), enforced by the
//! connection task.
//!
//! A body-level timer does not help against a client that reads a trickle: hyper only polls
//! the body when the socket takes more bytes, and the write deadline is re-armed by every byte
//! that does go out. So the deadline lives where nothing can block it: the connection task
//! races hyper's connection future against it and drops the connection (and with it the
//! response body and the request's tasks) when it passes. Over HTTP/2 the streams' flow-control
//! windows stop hyper polling a body the same way, so there too the connection (with all its
//! streams) is cut when any armed deadline passes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;
use tokio::time::Instant;

/// The deadlines of the responses now being written on one connection (HTTP/1: one at a
/// time; HTTP/2: one per streamed response), keyed by arming order.
#[derive(Debug, Clone)]
pub struct ResponseDeadline(Arc<Armed>);

#[derive(Debug)]
struct Armed {
    deadlines: watch::Sender<BTreeMap<u64, Instant>>,
    next: AtomicU64,
}

impl Default for ResponseDeadline {
    fn default() -> Self {
        ResponseDeadline(Arc::new(Armed {
            deadlines: watch::Sender::new(BTreeMap::new()),
            next: AtomicU64::new(0),
        }))
    }
}

/// Disarms the deadline it was armed with when dropped (the response ended).
#[derive(Debug)]
pub struct ArmedDeadline(ResponseDeadline, u64);

impl Drop for ArmedDeadline {
    fn drop(&mut self) {
        let key = self.1;
        self.0.0.deadlines.send_modify(|deadlines| {
            deadlines.remove(&key);
        });
    }
}

impl ResponseDeadline {
    /// Arms a deadline at `at` until the returned guard drops.
    pub fn arm(&self, at: Instant) -> ArmedDeadline {
        let key = self.0.next.fetch_add(1, Ordering::Relaxed);
        self.0.deadlines.send_modify(|deadlines| {
            deadlines.insert(key, at);
        });
        ArmedDeadline(self.clone(), key)
    }

    /// Resolves once the earliest armed deadline passes; pending while none is armed.
    pub async fn expired(&self) {
        let mut armed = self.0.deadlines.subscribe();
        loop {
            let at = armed.borrow_and_update().values().min().copied();
            match at {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => return,
                        _ = armed.changed() => {}
                    }
                }
                // The sender lives as long as `self`, so `changed` only ends on a new value.
                None => {
                    let _ = armed.changed().await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn fires_only_while_armed() {
        let deadline = ResponseDeadline::default();
        let idle = tokio::time::timeout(Duration::from_secs(3600), deadline.expired()).await;
        assert!(idle.is_err(), "an unarmed deadline fired");

        let guard = deadline.arm(Instant::now() + Duration::from_secs(5));
        let started = Instant::now();
        deadline.expired().await;
        assert_eq!(started.elapsed(), Duration::from_secs(5));

        drop(guard);
        let disarmed = tokio::time::timeout(Duration::from_secs(3600), deadline.expired()).await;
        assert!(disarmed.is_err(), "a disarmed deadline fired");
    }

    #[tokio::test(start_paused = true)]
    async fn the_earliest_of_several_armed_deadlines_fires() {
        let deadline = ResponseDeadline::default();
        let started = Instant::now();
        let _late = deadline.arm(started + Duration::from_secs(9));
        let early = deadline.arm(started + Duration::from_secs(3));
        let _later = deadline.arm(started + Duration::from_secs(20));
        deadline.expired().await;
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        // The early response ended: the next one's deadline is the earliest left.
        drop(early);
        deadline.expired().await;
        assert_eq!(started.elapsed(), Duration::from_secs(9));
    }

    #[tokio::test(start_paused = true)]
    async fn arming_while_waiting_starts_the_clock() {
        let deadline = ResponseDeadline::default();
        let waiter = tokio::spawn({
            let deadline = deadline.clone();
            async move { deadline.expired().await }
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        let _guard = deadline.arm(Instant::now() + Duration::from_secs(2));
        let started = Instant::now();
        waiter.await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }
}
