//! What /debug/cancellations serves: when each request ended and when its last task ended.
//! (/debug/tasks and /debug/dump come from leakcheck: `TasksService`, `Tracker::task_dump`.)

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

use crate::metrics::Histogram;

/// Most request ids /debug/cancellations remembers; older ones are forgotten first.
pub const CANCELLATION_LOG_CAPACITY: usize = 65_536;

/// When each request ended (its handler or streamed body dropped) and when its last labeled
/// task ended (leakcheck's `on_label_drained`): a request is gone at the later of its entries.
/// Each entry says which of the two it is, so a slow cancellation can be told apart: hyper
/// late to drop the request, or the request's tasks late to stop after it was dropped.
///
/// It also times cancel propagation: for a request whose last task ends after the request did,
/// the delay between the two goes to [`CancellationLog::propagation`] (/metrics'
/// `leakcheck_server_cancel_propagation_seconds`).
#[derive(Debug, Default)]
pub struct CancellationLog {
    state: Mutex<LogState>,
    /// Request end to its last task's end, for requests whose tasks outlived them.
    pub propagation: Histogram,
}

#[derive(Debug)]
struct LogState {
    drained: VecDeque<Drained>,
    /// When each request in `drained` ended, until its tasks drain or its entry leaves the ring
    /// (a request that spawned no task never drains).
    ended_ns: HashMap<String, u64>,
}

impl Default for LogState {
    /// The ring at its full size from the start: grown on demand, it was reallocated (every
    /// entry copied, fresh pages zeroed) in the middle of a cancel storm's drain.
    fn default() -> Self {
        LogState {
            drained: VecDeque::with_capacity(CANCELLATION_LOG_CAPACITY),
            ended_ns: HashMap::new(),
        }
    }
}

/// What a [`CancellationLog`] entry records the end of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The request's handler future (or streamed body) was dropped or finished.
    RequestEnded,
    /// The last live task carrying the request's label ended.
    TasksDrained,
}

#[derive(Debug, Clone, Serialize)]
struct Drained {
    request_id: String,
    stage: Stage,
    drained_at_monotonic_ns: u64,
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process on the machine (unlike the
/// wall clock it never steps), so a client's abort time and the server's drain time compare.
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

#[derive(Serialize)]
struct CancellationsDocument<'a> {
    drained: &'a VecDeque<Drained>,
}

impl CancellationLog {
    /// Records that `request_id` reached `stage` now.
    pub fn record(&self, request_id: &str, stage: Stage) {
        let drained_at_monotonic_ns = monotonic_now_ns();
        let mut state = self.state.lock();
        match stage {
            Stage::RequestEnded => {
                state
                    .ended_ns
                    .insert(request_id.to_owned(), drained_at_monotonic_ns);
            }
            Stage::TasksDrained => {
                if let Some(ended) = state.ended_ns.remove(request_id) {
                    let delay = drained_at_monotonic_ns.saturating_sub(ended);
                    self.propagation.observe(Duration::from_nanos(delay));
                }
            }
        }
        if state.drained.len() == CANCELLATION_LOG_CAPACITY {
            if let Some(oldest) = state.drained.pop_front() {
                if oldest.stage == Stage::RequestEnded {
                    state.ended_ns.remove(&oldest.request_id);
                }
            }
        }
        state.drained.push_back(Drained {
            request_id: request_id.into(),
            stage,
            drained_at_monotonic_ns,
        });
    }

    /// `{"drained": [{"request_id": ..., "stage": "request_ended" | "tasks_drained",
    /// "drained_at_monotonic_ns": ...}, ...]}`, oldest first.
    pub fn to_json(&self) -> String {
        let state = self.state.lock();
        serde_json::to_string(&CancellationsDocument {
            drained: &state.drained,
        })
        .unwrap_or_else(|_| String::from("{\"drained\":[]}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cancellation_log_is_a_bounded_ring() {
        let log = CancellationLog::default();
        for n in 0..CANCELLATION_LOG_CAPACITY + 2 {
            log.record(&format!("req-{n}"), Stage::RequestEnded);
        }
        let document: serde_json::Value = serde_json::from_str(&log.to_json()).unwrap();
        let drained = document["drained"].as_array().unwrap();
        assert_eq!(drained.len(), CANCELLATION_LOG_CAPACITY);
        assert_eq!(drained[0]["request_id"], "req-2");
        assert_eq!(drained[0]["stage"], "request_ended");
        let first = drained[0]["drained_at_monotonic_ns"].as_u64().unwrap();
        let last = drained[CANCELLATION_LOG_CAPACITY - 1]["drained_at_monotonic_ns"]
            .as_u64()
            .unwrap();
        assert!(first > 0 && last >= first && last <= monotonic_now_ns());
        assert_eq!(
            log.state.lock().ended_ns.len(),
            CANCELLATION_LOG_CAPACITY,
            "request ends that never drain leave with their ring entry"
        );
    }

    #[test]
    fn propagation_is_timed_only_when_the_tasks_outlive_the_request() {
        let log = CancellationLog::default();
        log.record("cancelled", Stage::RequestEnded);
        log.record("cancelled", Stage::TasksDrained);
        log.record("drained-first", Stage::TasksDrained);
        log.record("drained-first", Stage::RequestEnded);
        log.record("no-tasks", Stage::RequestEnded);
        assert_eq!(log.propagation.count(), 1);
        assert_eq!(
            log.state.lock().ended_ns.len(),
            2,
            "awaiting a drain that may come"
        );
    }
}
