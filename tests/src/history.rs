//! Jepsen-style bookkeeping: every operation a scenario issues ends `ok`, `fail` or `info`.
//!
//! `ok` — the operation completed as a client would want; `fail` — it definitely did not
//! (an error status, a refused or closed connection); `info` — the client gave up and cannot
//! know what the server did (it aborted, or its own deadline passed first). Every operation
//! is also classified (`/proxy 503`, `closed by the server`…), so a verdict can say which
//! outcomes a scenario expects and flag any other.

use std::collections::BTreeMap;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tokio::net::TcpStream;

/// How one operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Completed as intended.
    Ok,
    /// Definitely did not complete.
    Fail,
    /// Unknown: the client gave up.
    Info,
}

/// Totals of a history.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Operations that completed.
    pub ok: u64,
    /// Operations that definitely failed.
    pub fail: u64,
    /// Operations whose fate the client does not know.
    pub info: u64,
    /// Operations by class.
    pub classes: BTreeMap<String, u64>,
}

impl Counts {
    /// Every operation recorded.
    pub fn total(&self) -> u64 {
        self.ok + self.fail + self.info
    }
}

/// One client abort: the request id sent in `x-request-id` and when the client let go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abort {
    /// The `x-request-id` of the aborted request.
    pub request_id: String,
    /// Wall-clock time of the abort, Unix nanoseconds (the server's drain times use the same clock).
    pub at_monotonic_ns: u64,
}

/// The shared record of one scenario run; cheap to update from many client tasks.
#[derive(Debug, Default)]
pub struct History {
    ok: AtomicU64,
    fail: AtomicU64,
    info: AtomicU64,
    classes: Mutex<BTreeMap<String, u64>>,
    aborts: Mutex<Vec<Abort>>,
    parked: Mutex<Vec<TcpStream>>,
    parked_connections: Mutex<Vec<ParkedConnection>>,
}

/// A parked client connection of any type, only held.
struct ParkedConnection {
    _held: Box<dyn Send>,
}

impl std::fmt::Debug for ParkedConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ParkedConnection")
    }
}

impl History {
    /// Records how one operation ended, and its class.
    pub fn record(&self, outcome: Outcome, class: &str) {
        *self.classes.lock().entry(class.to_owned()).or_default() += 1;
        let counter = match outcome {
            Outcome::Ok => &self.ok,
            Outcome::Fail => &self.fail,
            Outcome::Info => &self.info,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a client abort of `request_id` that happened at `at_monotonic_ns`.
    pub fn record_abort(&self, request_id: String, at_monotonic_ns: u64) {
        self.aborts.lock().push(Abort {
            request_id,
            at_monotonic_ns,
        });
    }

    /// Keeps a socket open until the history is dropped: a peer that vanished without a FIN
    /// (a partition) still holds the server's side, which is what its defenses must deal with.
    pub fn park(&self, stream: TcpStream) {
        self.parked.lock().push(stream);
    }

    /// Keeps a whole client connection (a TLS stream, an HTTP/2 connection no longer polled)
    /// open until the history is dropped, as [`History::park`] does a socket.
    pub fn park_connection(&self, connection: impl Send + 'static) {
        self.parked_connections.lock().push(ParkedConnection {
            _held: Box::new(connection),
        });
    }

    /// How many sockets and connections are parked.
    pub fn parked(&self) -> usize {
        self.parked.lock().len() + self.parked_connections.lock().len()
    }

    /// Closes every parked socket and connection.
    pub fn release_parked(&self) {
        self.parked.lock().clear();
        self.parked_connections.lock().clear();
    }

    /// Totals so far.
    pub fn counts(&self) -> Counts {
        Counts {
            ok: self.ok.load(Ordering::Relaxed),
            fail: self.fail.load(Ordering::Relaxed),
            info: self.info.load(Ordering::Relaxed),
            classes: self.classes.lock().clone(),
        }
    }

    /// Every abort recorded so far.
    pub fn aborts(&self) -> Vec<Abort> {
        self.aborts.lock().clone()
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock the server stamps `/debug/cancellations`
/// with, shared by every process on the machine and never stepped like the wall clock.
pub fn monotonic_now_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer; CLOCK_MONOTONIC
    // always exists on Linux.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now);
    }
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0)
}

/// Now, as Unix nanoseconds (campaign seeds, timestamps for people).
pub fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_outcome_once() {
        let history = History::default();
        history.record(Outcome::Ok, "/work 200");
        history.record(Outcome::Info, "aborted");
        history.record(Outcome::Info, "aborted");
        history.record(Outcome::Fail, "/work 500");
        assert_eq!(
            history.counts(),
            Counts {
                ok: 1,
                fail: 1,
                info: 2,
                classes: [("/work 200", 1), ("/work 500", 1), ("aborted", 2)]
                    .into_iter()
                    .map(|(class, count)| (class.to_owned(), count))
                    .collect(),
            }
        );
        assert_eq!(history.counts().total(), 4);
    }
}
