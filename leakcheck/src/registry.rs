//! The live-task registry: one small record per tracked task, spread over
//! cache-padded shards so that a spawn on one worker and a terminate on
//! another rarely meet on one lock, plus the per-scope live counts that let a
//! clean `verify` return without looking at the registry at all.

use std::collections::VecDeque;
use std::num::NonZeroU64;
use std::panic::Location;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::{Condvar, Mutex};
use rustc_hash::FxHashMap;
use tokio::sync::Notify;

use crate::capture::StackId;

/// Number of shards; a power of two well above the worker count of the
/// machines tests run on, so two workers rarely pick the same one.
const SHARDS: usize = 64;

/// Ids whose terminate arrived before their spawn (a spawn onto a closing
/// runtime does that), remembered per shard so the late spawn is dropped
/// instead of becoming a phantom. Terminates of untracked work (blocking
/// tasks) also land here, hence the bound.
const EARLY_ENDS_PER_SHARD: usize = 32;

/// What the registry keeps per live task: 48 bytes.
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) site: &'static Location<'static>,
    pub(crate) parent: Option<NonZeroU64>,
    /// Nanoseconds since the tracker's epoch.
    pub(crate) spawned_ns: u64,
    pub(crate) stack: Option<StackId>,
    /// The scopes and label the task belongs to; `None` for most tasks
    /// outside any scope.
    pub(crate) ctx: Option<Arc<Context>>,
}

/// Scopes and label shared by every task spawned under them: a child task
/// holds its parent's context, so membership is inherited for free.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) scopes: Box<[Arc<Scope>]>,
    pub(crate) label: Option<Arc<Label>>,
}

impl Context {
    fn enter(&self) {
        for scope in self.scopes.iter() {
            scope.live.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(label) = &self.label {
            label.live.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Returns the label if this task was its last one.
    fn leave(&self) -> Option<&Arc<Label>> {
        for scope in self.scopes.iter() {
            scope.leave();
        }
        let label = self.label.as_ref()?;
        (label.live.fetch_sub(1, Ordering::AcqRel) == 1).then_some(label)
    }

    pub(crate) fn contains(&self, scope: &Arc<Scope>) -> bool {
        self.scopes.iter().any(|s| Arc::ptr_eq(s, scope))
    }
}

/// A label (such as a request id) and how many live tasks carry it.
#[derive(Debug)]
pub(crate) struct Label {
    pub(crate) name: Arc<str>,
    live: AtomicUsize,
}

impl Label {
    pub(crate) fn new(name: Arc<str>) -> Label {
        Label {
            name,
            live: AtomicUsize::new(0),
        }
    }
}

/// One `verify_none()` scope: how many of its tasks are alive, and a way to
/// wake whoever waits for that number to reach zero.
#[derive(Debug, Default)]
pub(crate) struct Scope {
    live: AtomicUsize,
    notify: Notify,
    /// For waits outside async code (an unverified guard dropped on a
    /// multi-thread runtime).
    blocking: (Mutex<()>, Condvar),
}

impl Scope {
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    fn leave(&self) {
        if self.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.notify.notify_waiters();
            let _lock = self.blocking.0.lock();
            self.blocking.1.notify_all();
        }
    }

    /// Waits until no task of the scope is alive or `deadline` passes; wakes
    /// on the terminate that brings the count to zero, never on a timer tick.
    pub(crate) async fn drained(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.live() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.live() == 0;
            }
        }
    }

    /// Blocking twin of [`Scope::drained`].
    pub(crate) fn drained_blocking(&self, deadline: std::time::Instant) -> bool {
        let mut lock = self.blocking.0.lock();
        while self.live() != 0 {
            if self.blocking.1.wait_until(&mut lock, deadline).timed_out() {
                return self.live() == 0;
            }
        }
        true
    }
}

#[derive(Default)]
struct Shard {
    live: FxHashMap<NonZeroU64, Record>,
    early_ends: VecDeque<NonZeroU64>,
}

#[repr(align(128))]
#[derive(Default)]
struct Padded(Mutex<Shard>);

/// Live records of one tracker.
pub(crate) struct Registry {
    shards: Box<[Padded]>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("live", &self.len())
            .finish()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            shards: (0..SHARDS).map(|_| Padded::default()).collect(),
        }
    }
}

impl Registry {
    fn shard(&self, id: NonZeroU64) -> &Mutex<Shard> {
        // Task ids are sequential: the low bits spread consecutive spawns
        // round-robin over the shards.
        &self.shards[id.get() as usize % SHARDS].0
    }

    /// Adds a record, unless the task already ended (terminate before spawn).
    /// The caller has already counted the task into `record.ctx`; on a refused
    /// insert that count is undone here.
    pub(crate) fn insert(&self, id: NonZeroU64, record: Record) -> Option<Arc<Label>> {
        let mut shard = self.shard(id).lock();
        if let Some(pos) = shard.early_ends.iter().position(|&ended| ended == id) {
            shard.early_ends.remove(pos);
            drop(shard);
            return record.ctx.as_deref().and_then(Context::leave).cloned();
        }
        shard.live.insert(id, record);
        None
    }

    /// Removes a record; an id never seen is remembered briefly in case its
    /// spawn is still on its way. Returns the label this task drained.
    pub(crate) fn remove(&self, id: NonZeroU64) -> Option<Arc<Label>> {
        let record = {
            let mut shard = self.shard(id).lock();
            match shard.live.remove(&id) {
                Some(record) => record,
                None => {
                    if shard.early_ends.len() == EARLY_ENDS_PER_SHARD {
                        shard.early_ends.pop_front();
                    }
                    shard.early_ends.push_back(id);
                    return None;
                }
            }
        };
        record.ctx.as_deref().and_then(Context::leave).cloned()
    }

    /// The context of a live task, `Err` when the task is not tracked.
    pub(crate) fn context_of(&self, id: NonZeroU64) -> Result<Option<Arc<Context>>, ()> {
        self.shard(id)
            .lock()
            .live
            .get(&id)
            .map(|r| r.ctx.clone())
            .ok_or(())
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().live.len()).sum()
    }

    /// Calls `f` on every live record, one shard at a time.
    pub(crate) fn for_each(&self, mut f: impl FnMut(NonZeroU64, &Record)) {
        for shard in self.shards.iter() {
            for (id, record) in shard.0.lock().live.iter() {
                f(*id, record);
            }
        }
    }
}

/// Counts `ctx`'s task in its scopes and label before the record is inserted,
/// so a terminate racing the insert can never underflow a count.
pub(crate) fn enter(ctx: &Option<Arc<Context>>) {
    if let Some(ctx) = ctx {
        ctx.enter();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> NonZeroU64 {
        NonZeroU64::new(n).unwrap()
    }

    fn record(ctx: Option<Arc<Context>>) -> Record {
        Record {
            site: Location::caller(),
            parent: None,
            spawned_ns: 0,
            stack: None,
            ctx,
        }
    }

    #[test]
    fn terminate_before_spawn_leaves_no_phantom() {
        let registry = Registry::default();
        let scope = Arc::new(Scope::default());
        let ctx = Some(Arc::new(Context {
            scopes: Box::new([scope.clone()]),
            label: None,
        }));
        assert!(registry.remove(id(7)).is_none());
        enter(&ctx);
        registry.insert(id(7), record(ctx));
        assert_eq!(registry.len(), 0);
        assert_eq!(scope.live(), 0);
    }

    #[test]
    fn last_task_of_a_label_drains_it() {
        let registry = Registry::default();
        let label = Arc::new(Label::new("req-1".into()));
        let ctx = Some(Arc::new(Context {
            scopes: Box::new([]),
            label: Some(label),
        }));
        for n in 1..=2 {
            enter(&ctx);
            registry.insert(id(n), record(ctx.clone()));
        }
        assert!(registry.remove(id(1)).is_none());
        assert_eq!(
            registry.remove(id(2)).map(|l| l.name.to_string()),
            Some("req-1".to_owned())
        );
    }

    #[test]
    fn record_stays_small() {
        assert!(
            std::mem::size_of::<Record>() <= 48,
            "{}",
            std::mem::size_of::<Record>()
        );
    }
}
