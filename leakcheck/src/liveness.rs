//! Why a leaked task is still alive, from tokio's poll hooks: which task each
//! thread is polling right now (always known, for a few relaxed stores per
//! poll), and how often each task was polled while a scope waited out its
//! grace (recorded only then, so the poll path takes no lock otherwise).

use std::cell::RefCell;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use crate::report::{Liveness, LivenessClass};
use crate::tracker::Inner;

/// Polls during the grace from which a task counts as busy.
const BUSY_POLLS: u64 = 2;

/// The poll in progress on one thread: the task's id (0 when none) and when
/// the poll began, on [`crate::clock::now_ns`].
#[derive(Debug, Default)]
pub(crate) struct PollSlot {
    task: AtomicU64,
    since_ns: AtomicU64,
}

/// Every thread's slot that has polled a tracker's tasks.
#[derive(Debug, Default)]
pub(crate) struct PollSlots(Mutex<Vec<Arc<PollSlot>>>);

impl PollSlots {
    /// Task id → start of the poll it is inside now.
    pub(crate) fn in_poll(&self) -> FxHashMap<u64, u64> {
        self.0
            .lock()
            .iter()
            .filter_map(|slot| {
                let task = slot.task.load(Ordering::Acquire);
                (task != 0).then(|| (task, slot.since_ns.load(Ordering::Relaxed)))
            })
            .collect()
    }

    /// Each task inside a poll now, the calling one aside, with when it
    /// entered it.
    pub(crate) fn others_in_poll(&self) -> impl Iterator<Item = (u64, u64)> + use<> {
        let current = tokio::task::try_id().map(|id| crate::tracker::task_id(id).get());
        self.in_poll()
            .into_iter()
            .filter(move |&(task, _)| Some(task) != current)
    }
}

thread_local! {
    /// This thread's slot and the tracker it was last registered with.
    static SLOT: RefCell<Option<(usize, Arc<PollSlot>)>> = const { RefCell::new(None) };
}

/// Marks `task` as being polled on this thread.
pub(crate) fn poll_started(inner: &Arc<Inner>, task: NonZeroU64) {
    let key = Arc::as_ptr(inner) as usize;
    let _ = SLOT.try_with(|slot| {
        let mut slot = slot.borrow_mut();
        let (registered, current) = slot.get_or_insert_with(|| (0, Arc::default()));
        if *registered != key {
            // A thread serves one runtime at a time; a test thread running
            // one test runtime after another registers with each tracker.
            inner.poll_slots.0.lock().push(current.clone());
            *registered = key;
        }
        current
            .since_ns
            .store(crate::clock::now_ns(), Ordering::Relaxed);
        current.task.store(task.get(), Ordering::Release);
    });
}

/// Marks this thread's poll as over.
pub(crate) fn poll_ended() {
    let _ = SLOT.try_with(|slot| {
        if let Some((_, current)) = slot.borrow().as_ref() {
            current.task.store(0, Ordering::Release);
        }
    });
}

/// Polls of one task counted while a scope waited out its grace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PollStats {
    pub(crate) polls: u64,
    /// End of the last counted poll.
    pub(crate) last_ns: u64,
}

/// One scope's grace period, while it is being waited out: polls are counted
/// for as long as any such watch lives.
pub(crate) struct GraceWatch {
    inner: Arc<Inner>,
    started_ns: u64,
    grace_ns: u64,
}

impl std::fmt::Debug for GraceWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraceWatch")
            .field("started_ns", &self.started_ns)
            .field("grace_ns", &self.grace_ns)
            .finish_non_exhaustive()
    }
}

impl GraceWatch {
    pub(crate) fn start(inner: &Arc<Inner>, grace: std::time::Duration) -> GraceWatch {
        inner.verifying.fetch_add(1, Ordering::AcqRel);
        GraceWatch {
            inner: inner.clone(),
            started_ns: crate::clock::now_ns(),
            grace_ns: u64::try_from(grace.as_nanos()).unwrap_or(u64::MAX),
        }
    }
}

impl Drop for GraceWatch {
    fn drop(&mut self) {
        if self.inner.verifying.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Counts belong to the grace they were taken in.
            self.inner.registry.clear_polls();
        }
    }
}

impl GraceWatch {
    /// What the poll hooks tell about one task now, at the end of the grace.
    pub(crate) fn classify(
        &self,
        now_ns: u64,
        spawned_ns: u64,
        in_poll_since_ns: Option<u64>,
        stats: Option<PollStats>,
    ) -> Liveness {
        classify(
            self.started_ns,
            self.grace_ns,
            now_ns,
            spawned_ns,
            in_poll_since_ns,
            stats,
        )
    }
}

impl GraceWatch {
    /// Whether a thread has been inside one task's poll for the whole grace
    /// (the calling task aside). Such a worker never checks in for a task
    /// dump, and with it blocked the dump's own timeout may never fire.
    pub(crate) fn worker_blocked(&self) -> bool {
        let now = crate::clock::now_ns();
        self.others_in_poll()
            .any(|since| now.saturating_sub(since) >= self.grace_ns)
    }

    /// A task but the calling one inside a poll now, if any: on a
    /// multi-thread runtime its worker is busy, and tokio's dump must not
    /// start then (see `dump::claim_task_dump`).
    pub(crate) fn another_task_in_poll(&self) -> Option<u64> {
        self.inner
            .poll_slots
            .others_in_poll()
            .next()
            .map(|(task, _)| task)
    }

    /// When each task inside a poll now, the calling one aside, entered it.
    fn others_in_poll(&self) -> impl Iterator<Item = u64> {
        self.inner
            .poll_slots
            .others_in_poll()
            .map(|(_, since)| since)
    }
}

fn classify(
    grace_started_ns: u64,
    grace_ns: u64,
    now_ns: u64,
    spawned_ns: u64,
    in_poll_since_ns: Option<u64>,
    stats: Option<PollStats>,
) -> Liveness {
    let ms = |ns: u64| ns / 1_000_000;
    let polls = stats.map_or(0, |s| s.polls);
    let since_last_poll_ms = stats.map(|s| ms(now_ns.saturating_sub(s.last_ns)));
    let class = match in_poll_since_ns {
        Some(since) if now_ns.saturating_sub(since) >= grace_ns => LivenessClass::Blocking,
        // One poll may be the task's first (a test body spawns, then
        // verifies: the task starts during the grace) and says nothing about
        // wakes; a second one does.
        _ if polls >= BUSY_POLLS || in_poll_since_ns.is_some() => LivenessClass::Busy,
        // Polls are counted from the grace's start: only a task spawned
        // since then is known never to have run.
        // The clock is coarse: a spawn in the tick the grace began is not
        // known to come after it.
        _ if polls == 0 && spawned_ns > grace_started_ns => LivenessClass::NeverPolled,
        _ => LivenessClass::Idle,
    };
    Liveness {
        class,
        polls_during_grace: polls,
        since_last_poll_ms,
        in_poll_ms: in_poll_since_ns.map(|since| ms(now_ns.saturating_sub(since))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    /// A 100 ms grace that began at 1 s; "now" is its end.
    const START: u64 = 1_000 * MS;
    const GRACE: u64 = 100 * MS;
    const NOW: u64 = START + GRACE;

    fn class(spawned: u64, in_poll: Option<u64>, stats: Option<PollStats>) -> Liveness {
        classify(START, GRACE, NOW, spawned, in_poll, stats)
    }

    #[test]
    fn a_task_not_polled_in_the_grace_is_idle() {
        let liveness = class(START - 5 * MS, None, None);
        assert_eq!(liveness.class, LivenessClass::Idle);
        assert_eq!(liveness.polls_during_grace, 0);
        assert_eq!(liveness.since_last_poll_ms, None);
        let first_poll = PollStats {
            polls: 1,
            last_ns: START + MS,
        };
        let started_then_parked = class(START - 5 * MS, None, Some(first_poll));
        assert_eq!(started_then_parked.class, LivenessClass::Idle);
        assert_eq!(started_then_parked.since_last_poll_ms, Some(99));
    }

    #[test]
    fn a_task_polled_in_the_grace_is_busy_with_its_count() {
        let stats = PollStats {
            polls: 7,
            last_ns: NOW - 3 * MS,
        };
        let liveness = class(START - 5 * MS, None, Some(stats));
        assert_eq!(liveness.class, LivenessClass::Busy);
        assert_eq!(liveness.polls_during_grace, 7);
        assert_eq!(liveness.since_last_poll_ms, Some(3));
    }

    #[test]
    fn a_poll_longer_than_the_grace_is_blocking() {
        let liveness = class(0, Some(START - 20 * MS), None);
        assert_eq!(liveness.class, LivenessClass::Blocking);
        assert_eq!(liveness.in_poll_ms, Some(120));
        let short = class(0, Some(NOW - MS), None);
        assert_eq!(short.class, LivenessClass::Busy, "a short poll in progress");
    }

    #[test]
    fn only_a_task_spawned_in_the_grace_is_known_never_polled() {
        assert_eq!(
            class(START + MS, None, None).class,
            LivenessClass::NeverPolled
        );
        let once = PollStats {
            polls: 1,
            last_ns: NOW,
        };
        assert_eq!(
            class(START + MS, None, Some(once)).class,
            LivenessClass::Idle
        );
        assert_eq!(class(START - MS, None, None).class, LivenessClass::Idle);
    }
}
