//! The live-task registry: one small record per tracked task, spread over
//! cache-padded shards so that a spawn on one worker and a terminate on
//! another rarely meet on one lock.
//!
//! Scope accounting lives in the shards too. A task's record points at its
//! [`Context`] (the scopes it belongs to), and each shard counts its
//! live tasks per context under the lock it already holds. A spawn and the
//! matching terminate therefore touch only that shard's cache line — no
//! shared counter or reference count bounces between the spawning thread and
//! the worker that runs the terminate — and a scope's live count is the sum
//! over 16 shards of a handful of entries: O(shards), not O(tasks).

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::num::NonZeroU64;
use std::panic::Location;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use parking_lot::{Condvar, Mutex};
use rustc_hash::FxHashMap;
use tokio::sync::Notify;

use crate::capture::StackId;
use crate::liveness::PollStats;

/// Number of shards; a power of two above the worker count of the machines
/// tests run on, so two workers rarely pick the same one. Consecutive spawns
/// go round-robin over them, so fewer shards keep more of their lock words
/// and ring lines in cache: 16 measured 0.05–0.1x below 64 in the spawn
/// bench on two cores, and no worse than 8.
const SHARDS: usize = 16;

/// Ids whose terminate arrived before their spawn (a spawn onto a closing
/// runtime does that), remembered per shard so the late spawn is dropped
/// instead of becoming a phantom. Terminates of untracked work (blocking
/// tasks) also land here, hence the bound.
const EARLY_ENDS_PER_SHARD: usize = 32;

/// Context entries a shard keeps before sweeping those with no live task.
/// Idle entries are kept so a spawn loop does not create and free one per
/// task (that would put a shared reference count back on the hot path).
const CONTEXT_SWEEP_AT: usize = 64;

/// What the registry keeps per live task: 48 bytes.
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) site: &'static Location<'static>,
    pub(crate) parent: Option<NonZeroU64>,
    /// When the task was spawned, on [`crate::clock::now_ns`].
    pub(crate) spawned_ns: u64,
    pub(crate) stack: Option<StackId>,
    /// Kept alive by the shard's context entry while this record exists.
    ctx: Option<NonNull<Context>>,
    /// Kept alive by the label's live count while this record exists (see
    /// [`Label`]).
    label: Option<NonNull<Label>>,
}

impl Record {
    pub(crate) fn new(
        site: &'static Location<'static>,
        parent: Option<NonZeroU64>,
        spawned_ns: u64,
        stack: Option<StackId>,
        label: Option<NonNull<Label>>,
    ) -> Record {
        Record {
            site,
            parent,
            spawned_ns,
            stack,
            ctx: None,
            label,
        }
    }

    /// The label the task carries, if any.
    pub(crate) fn label(&self) -> Option<&Label> {
        // SAFETY: an inserted record is counted in its label's live count,
        // which holds a strong reference while it is above zero (see
        // `Label`); a record not yet inserted borrows it from its spawner.
        self.label.map(|ptr| unsafe { ptr.as_ref() })
    }

    /// The task's scopes, if it has any.
    pub(crate) fn context(&self) -> Option<&Context> {
        // SAFETY: the shard holding this record holds an `Arc` of the context
        // (its entry's count includes this record) for as long as the record
        // exists, and records are only read under the shard's lock.
        self.ctx.map(|ptr| unsafe { ptr.as_ref() })
    }
}

/// Scopes shared by every task spawned under them: a child task points at
/// its parent's context, so membership is inherited for free.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) scopes: Box<[Arc<Scope>]>,
}

impl Context {
    pub(crate) fn contains(&self, scope: &Arc<Scope>) -> bool {
        self.scopes.iter().any(|s| Arc::ptr_eq(s, scope))
    }
}

/// A context for a task about to be inserted: either owned, or borrowed from
/// a holder that outlives the insert (the spawning parent's own record, or
/// the spawning thread's scope anchor: neither can go away while the spawn
/// hook runs on that thread).
#[derive(Debug)]
pub(crate) enum ContextRef {
    Owned(Arc<Context>),
    Borrowed(NonNull<Context>),
}

impl ContextRef {
    pub(crate) fn borrow(ctx: &Arc<Context>) -> ContextRef {
        ContextRef::Borrowed(NonNull::from(&**ctx))
    }

    pub(crate) fn ptr(&self) -> NonNull<Context> {
        match self {
            ContextRef::Owned(arc) => NonNull::from(&**arc),
            ContextRef::Borrowed(ptr) => *ptr,
        }
    }

    pub(crate) fn get(&self) -> &Context {
        // SAFETY: see the type's docs: the referent outlives this value.
        unsafe { self.ptr().as_ref() }
    }

    /// An owning handle; for a borrowed context, a new strong reference.
    fn into_arc(self) -> Arc<Context> {
        match self {
            ContextRef::Owned(arc) => arc,
            // SAFETY: the pointer came from an `Arc<Context>` that is alive
            // (see the type's docs); taking one more strong count is sound.
            ContextRef::Borrowed(ptr) => unsafe {
                Arc::increment_strong_count(ptr.as_ptr());
                Arc::from_raw(ptr.as_ptr())
            },
        }
    }
}

/// What a running task passes on to the tasks it spawns, borrowed from its
/// record (see [`Registry::spawner`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spawner {
    pub(crate) ctx: Option<NonNull<Context>>,
    pub(crate) label: Option<NonNull<Label>>,
}

/// A label (such as a request id) and how many live tasks carry it.
///
/// Records point at their label without a reference count of their own:
/// the live count owns one strong reference while it is above zero, taken
/// by the insert that moves it from zero and handed back by the remove that
/// returns it to zero. A labeled task therefore costs two atomic operations
/// on the label (where an `Arc` per record cost four), all on one cache
/// line that bounces between the spawning and the terminating worker.
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

    /// Counts one more live task of `label`.
    ///
    /// # Safety
    /// `label` points into a live `Arc<Label>`, held by the caller until
    /// this returns.
    unsafe fn count_in(label: NonNull<Label>) {
        // SAFETY: alive by the caller's contract.
        let live = unsafe { &label.as_ref().live };
        if live.fetch_add(1, Ordering::AcqRel) == 0 {
            // SAFETY: as above; this strong reference belongs to the count
            // until `count_out` takes it back.
            unsafe { Arc::increment_strong_count(label.as_ptr()) };
        }
    }

    /// Counts one live task of `label` out; returns the count's reference
    /// when that was the last one (the label is drained).
    ///
    /// # Safety
    /// The task was counted in by [`Label::count_in`] and not yet out.
    unsafe fn count_out(label: NonNull<Label>) -> Option<Arc<Label>> {
        // SAFETY: the count (at least this task) holds a strong reference.
        let live = unsafe { &label.as_ref().live };
        // SAFETY: the count went from one to zero: its reference is ours.
        (live.fetch_sub(1, Ordering::AcqRel) == 1).then(|| unsafe { Arc::from_raw(label.as_ptr()) })
    }
}

/// One `verify_none()` scope: who waits for its tasks to end. Its live count
/// is not stored here but summed from the shards ([`Registry::scope_live`]).
#[derive(Debug, Default)]
pub(crate) struct Scope {
    /// Number of waiters; terminates only look for a waiter to wake when an
    /// entry of this scope drops to zero.
    waiting: AtomicUsize,
    notify: Notify,
    /// For waits outside async code (an unverified guard dropped on a
    /// multi-thread runtime).
    blocking: (Mutex<()>, Condvar),
}

impl Scope {
    fn wake(&self) {
        self.notify.notify_waiters();
        let _lock = self.blocking.0.lock();
        self.blocking.1.notify_all();
    }
}

/// Ring slots a shard allocates at its first insert. Task ids come from one
/// process-wide counter, so a shard sees every 16th id: 128 slots hold the
/// live records of a window of 2,048 consecutive ids without a collision.
const INITIAL_RING: usize = 128;

/// Most ring slots per shard (16 shards: 262,144 slots, 14.7 MiB); records
/// beyond what the ring holds go to the overflow map.
const MAX_RING: usize = 16_384;

/// A shard's live records, indexed by task id: a ring of slots, slot
/// `(id / SHARDS) % ring.len()`, and a map for the ids whose slot a
/// longer-lived task still holds. tokio's ids are sequential, so nearly every
/// insert finds its slot free and an insert or remove is one indexed access
/// instead of a hash-table probe (and no table grows from empty in every fresh
/// tracker).
#[derive(Default)]
struct Records {
    ring: Box<[Option<(NonZeroU64, Record)>]>,
    overflow: FxHashMap<NonZeroU64, Record>,
    len: usize,
}

impl Records {
    fn slot(&self, id: NonZeroU64) -> usize {
        // `ring.len()` is zero or a power of two; callers check for zero.
        (id.get() as usize / SHARDS) & (self.ring.len().wrapping_sub(1))
    }

    fn len(&self) -> usize {
        self.len
    }

    /// The ring slot holding `id`'s record, if the ring (not the overflow
    /// map) holds it.
    fn ring_slot_of(&self, id: NonZeroU64) -> Option<usize> {
        if self.ring.is_empty() {
            return None;
        }
        let slot = self.slot(id);
        matches!(&self.ring[slot], Some((held, _)) if *held == id).then_some(slot)
    }

    fn get(&self, id: NonZeroU64) -> Option<&Record> {
        if let Some(slot) = self.ring_slot_of(id) {
            return self.ring[slot].as_ref().map(|(_, record)| record);
        }
        if self.overflow.is_empty() {
            return None;
        }
        self.overflow.get(&id)
    }

    fn get_mut(&mut self, id: NonZeroU64) -> Option<&mut Record> {
        if let Some(slot) = self.ring_slot_of(id) {
            return self.ring[slot].as_mut().map(|(_, record)| record);
        }
        if self.overflow.is_empty() {
            return None;
        }
        self.overflow.get_mut(&id)
    }

    fn contains(&self, id: NonZeroU64) -> bool {
        self.get(id).is_some()
    }

    /// Adds the record of a task not yet in the shard.
    #[inline]
    fn insert(&mut self, id: NonZeroU64, record: Record) {
        self.len += 1;
        if self.ring.is_empty() {
            self.ring = first_ring();
        }
        let mut slot = self.slot(id);
        if self.ring[slot].is_some() && self.len > self.ring.len() / 2 && self.ring.len() < MAX_RING
        {
            // Dense enough that collisions would become the rule: double.
            self.grow();
            slot = self.slot(id);
        }
        self.place(slot, id, record);
    }

    #[inline]
    fn place(&mut self, slot: usize, id: NonZeroU64, record: Record) {
        let held = &mut self.ring[slot];
        if held.is_none() {
            *held = Some((id, record));
        } else {
            self.spill(id, record);
        }
    }

    /// Keeps a record whose ring slot a longer-lived task holds.
    #[cold]
    fn spill(&mut self, id: NonZeroU64, record: Record) {
        self.overflow.insert(id, record);
    }

    #[cold]
    fn grow(&mut self) {
        let doubled = empty_ring(self.ring.len() * 2);
        let old = std::mem::replace(&mut self.ring, doubled);
        let overflow = std::mem::take(&mut self.overflow);
        for (id, record) in old.into_vec().into_iter().flatten().chain(overflow) {
            self.place(self.slot(id), id, record);
        }
    }

    fn remove(&mut self, id: NonZeroU64) -> Option<Record> {
        if let Some(slot) = self.ring_slot_of(id) {
            self.len -= 1;
            return self.ring[slot].take().map(|(_, record)| record);
        }
        if self.overflow.is_empty() {
            return None;
        }
        let record = self.overflow.remove(&id)?;
        self.len -= 1;
        Some(record)
    }

    fn iter(&self) -> impl Iterator<Item = (NonZeroU64, &Record)> {
        let ring = self.ring.iter().flatten().map(|(id, record)| (*id, record));
        ring.chain(self.overflow.iter().map(|(id, record)| (*id, record)))
    }
}

#[cold]
fn first_ring() -> Box<[Option<(NonZeroU64, Record)>]> {
    empty_ring(INITIAL_RING)
}

fn empty_ring(len: usize) -> Box<[Option<(NonZeroU64, Record)>]> {
    (0..len).map(|_| None).collect()
}

/// Live tasks of one context in one shard.
struct ContextEntry {
    ctx: Arc<Context>,
    live: usize,
}

#[derive(Default)]
struct Shard {
    live: Records,
    contexts: FxHashMap<NonNull<Context>, ContextEntry>,
    /// Scopes opened inside a task of this shard (owner id → the contexts
    /// its children get, innermost last), kept with the owner's record so
    /// that looking them up takes the lock the spawner lookup takes anyway.
    anchors: FxHashMap<NonZeroU64, Vec<Arc<Context>>>,
    sweep_at: usize,
    early_ends: VecDeque<NonZeroU64>,
    /// No id above this is in `early_ends` (0: none is). Task ids grow, and
    /// the ring mostly holds blocking tasks' ids, older than the spawns that
    /// follow: an insert compares once instead of scanning the ring.
    early_max: u64,
    /// Polls counted during a grace period (see `liveness`); empty otherwise.
    polls: FxHashMap<NonZeroU64, PollStats>,
}

// SAFETY: the raw context pointers in a shard are owned through the `Arc`s in
// its `contexts` map, the label pointers through their labels' live counts,
// and `Context` and `Label` are Send + Sync.
unsafe impl Send for Shard {}

impl Shard {
    /// Forgets `id`'s early terminate; whether there was one.
    #[cold]
    fn take_early_end(&mut self, id: NonZeroU64) -> bool {
        let Some(pos) = self.early_ends.iter().position(|&ended| ended == id) else {
            return false;
        };
        self.early_ends.remove(pos);
        self.early_max = self.early_ends.iter().map(|id| id.get()).max().unwrap_or(0);
        true
    }

    /// A new context entry with one live task.
    #[cold]
    fn add_context(&mut self, ctx: ContextRef) {
        if self.contexts.len() >= self.sweep_at.max(CONTEXT_SWEEP_AT) {
            self.contexts.retain(|_, entry| entry.live > 0);
            self.sweep_at = self.contexts.len() * 2;
        }
        let ptr = ctx.ptr();
        let entry = ContextEntry {
            ctx: ctx.into_arc(),
            live: 1,
        };
        self.contexts.insert(ptr, entry);
    }
}

impl Drop for Shard {
    /// Records dropped with their registry (a tracker dropped while tasks
    /// live) count out of their labels, so the labels are freed.
    fn drop(&mut self) {
        for (_, record) in self.live.iter() {
            if let Some(label) = record.label {
                // SAFETY: every record in a shard was counted in by its
                // insert, and is counted out only here or by `remove`.
                drop(unsafe { Label::count_out(label) });
            }
        }
    }
}

#[repr(align(128))]
#[derive(Default)]
struct Padded(ShardLock<Shard>);

/// The shards' lock: a spin lock whose unlock is a plain release store, where
/// a mutex's unlock is a second atomic read-modify-write (it must look for
/// parked waiters). Every spawn and every terminate takes one shard lock for
/// a few dozen nanoseconds; with round-robin shards, two threads rarely want
/// the same one, and a waiter that spins too long yields its time slice (the
/// holder may have been preempted). Longer holds — a report walking a shard's
/// records — are rare and off the hot path. Written here because no crate in
/// the tree offers that pair: parking_lot's unlock is a compare-exchange (the
/// RMW this saves, 50–67% of insert/remove samples under `perf`), and the
/// `spin` crate's locks either spin for ever or yield at once.
#[derive(Default)]
struct ShardLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out access to `value` to one thread at a time.
unsafe impl<T: Send> Sync for ShardLock<T> {}

/// Spins before a waiter starts yielding.
const SPINS_BEFORE_YIELD: u32 = 64;

impl<T> ShardLock<T> {
    #[inline]
    fn lock(&self) -> ShardGuard<'_, T> {
        if self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        ShardGuard { lock: self }
    }

    #[cold]
    fn lock_contended(&self) {
        let mut spins = 0;
        loop {
            while self.locked.load(Ordering::Relaxed) {
                if spins < SPINS_BEFORE_YIELD {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            if self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }
}

struct ShardGuard<'a, T> {
    lock: &'a ShardLock<T>,
}

impl<T> std::ops::Deref for ShardGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> std::ops::DerefMut for ShardGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock, and `&mut self` is unique.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for ShardGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}

/// Live records of one tracker.
pub(crate) struct Registry {
    shards: Box<[Padded]>,
    /// Bumped whenever what a live task passes on to its children changes
    /// (a scope anchored on it or taken off, its context replaced by
    /// `detach`): a per-thread cache of [`Registry::spawner`] answers is valid
    /// only for the generation it was filled in.
    generation: AtomicU64,
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
            generation: AtomicU64::new(0),
        }
    }
}

impl Registry {
    fn shard(&self, id: NonZeroU64) -> &ShardLock<Shard> {
        // Task ids are sequential: the low bits spread consecutive spawns
        // round-robin over the shards.
        &self.shards[id.get() as usize % SHARDS].0
    }

    /// Adds a record, unless the task already ended (terminate before spawn).
    ///
    /// Inlined into the spawn hook, its rare branches (early terminate, new
    /// context entry, spill, growth) kept out of line, so the common path is
    /// a short straight run under the lock (the call's copies of the record
    /// took 30% of this function's samples; the lock's compare-exchange is
    /// what is left on top).
    #[inline]
    pub(crate) fn insert(&self, id: NonZeroU64, mut record: Record, ctx: Option<ContextRef>) {
        let mut shard = self.shard(id).lock();
        if id.get() <= shard.early_max && shard.take_early_end(id) {
            return;
        }
        if let Some(ctx) = ctx {
            let ptr = ctx.ptr();
            match shard.contexts.get_mut(&ptr) {
                Some(entry) => entry.live += 1,
                None => shard.add_context(ctx),
            }
            record.ctx = Some(ptr);
        }
        if let Some(label) = record.label {
            // SAFETY: the spawner holds the label while its spawn hook runs
            // (`Record::label`).
            unsafe { Label::count_in(label) };
        }
        shard.live.insert(id, record);
    }

    /// Removes a record; an id never seen is remembered briefly in case its
    /// spawn is still on its way. Returns the label this task drained, if it
    /// was the label's last live task.
    pub(crate) fn remove(&self, id: NonZeroU64) -> Option<Arc<Label>> {
        let mut wake: Vec<Arc<Scope>> = Vec::new();
        let mut drained = None;
        {
            let mut shard = self.shard(id).lock();
            if !shard.polls.is_empty() {
                shard.polls.remove(&id);
            }
            let Some(record) = shard.live.remove(id) else {
                if shard.early_ends.len() == EARLY_ENDS_PER_SHARD {
                    shard.early_ends.pop_front();
                }
                shard.early_ends.push_back(id);
                // Kept when the front is dropped: an upper bound stays right.
                shard.early_max = shard.early_max.max(id.get());
                return None;
            };
            if let Some(ptr) = record.ctx {
                let entry = shard
                    .contexts
                    .get_mut(&ptr)
                    .expect("a record's context has an entry in its shard");
                entry.live -= 1;
                if entry.live == 0 {
                    let waited = entry
                        .ctx
                        .scopes
                        .iter()
                        .filter(|s| s.waiting.load(Ordering::SeqCst) > 0);
                    wake.extend(waited.cloned());
                }
            }
            if let Some(label) = record.label {
                // SAFETY: the record was counted in by its insert.
                drained = unsafe { Label::count_out(label) };
            }
        }
        for scope in wake {
            scope.wake();
        }
        drained
    }

    /// Runs `f` on the context of a live task; `Err` when it is not tracked.
    pub(crate) fn with_context<T>(
        &self,
        id: NonZeroU64,
        f: impl FnOnce(Option<&Context>) -> T,
    ) -> Result<T, ()> {
        let shard = self.shard(id).lock();
        let record = shard.live.get(id).ok_or(())?;
        Ok(f(record.context()))
    }

    /// The context and label of a live task, borrowed for a spawn it is
    /// making (`Err` when the task is not tracked), and the context of the
    /// innermost scope opened inside it.
    ///
    /// The caller must be running inside task `id` (its spawn hook), so the
    /// record, and the context and label it holds, outlive the borrow.
    pub(crate) fn spawner(&self, id: NonZeroU64) -> (Result<Spawner, ()>, Option<Arc<Context>>) {
        let shard = self.shard(id).lock();
        let anchor = anchor_in(&shard, id);
        let spawner = shard.live.get(id).ok_or(()).map(|record| Spawner {
            ctx: record.ctx,
            label: record.label,
        });
        (spawner, anchor)
    }

    /// The generation [`Registry::spawner`] answers belong to; read it before
    /// the lookup it validates.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Anchors a scope opened inside task `owner`: the tasks `owner` spawns
    /// from now on get `ctx` (that scope and the ones enclosing it).
    pub(crate) fn anchor(&self, owner: NonZeroU64, ctx: Arc<Context>) {
        self.shard(owner)
            .lock()
            .anchors
            .entry(owner)
            .or_default()
            .push(ctx);
        self.changed();
    }

    /// Undoes [`Registry::anchor`] for `scope`; nothing when it is not
    /// anchored on `owner`.
    pub(crate) fn unanchor(&self, owner: NonZeroU64, scope: &Arc<Scope>) {
        let mut shard = self.shard(owner).lock();
        if let Some(list) = shard.anchors.get_mut(&owner) {
            list.retain(|ctx| !ctx.scopes.last().is_some_and(|s| Arc::ptr_eq(s, scope)));
            if list.is_empty() {
                shard.anchors.remove(&owner);
            }
        }
        drop(shard);
        self.changed();
    }

    /// The context of the innermost scope anchored on task `owner`.
    pub(crate) fn anchor_of(&self, owner: NonZeroU64) -> Option<Arc<Context>> {
        anchor_in(&self.shard(owner).lock(), owner)
    }

    /// Takes the live tasks `ids` out of `scope` (an `ignore` pattern matched
    /// them): they keep their other scopes, and tasks they spawn from now on
    /// inherit the context without `scope`. Returns the ids that were live
    /// members of `scope`. The caller is the scope's only waiter and counts
    /// again afterwards, so no waiter is woken here.
    pub(crate) fn detach(&self, scope: &Arc<Scope>, ids: &[NonZeroU64]) -> Vec<NonZeroU64> {
        // One replacement context per old one, shared by all its moved tasks.
        let mut without: FxHashMap<NonNull<Context>, Option<Arc<Context>>> = FxHashMap::default();
        let mut detached = Vec::new();
        for &id in ids {
            let mut guard = self.shard(id).lock();
            let shard = &mut *guard;
            let Some(record) = shard.live.get_mut(id) else {
                continue;
            };
            let Some(old) = record.ctx else { continue };
            let Some(entry) = shard.contexts.get_mut(&old) else {
                continue;
            };
            if !entry.ctx.contains(scope) {
                continue;
            }
            let replacement = without
                .entry(old)
                .or_insert_with(|| {
                    let scopes: Box<[Arc<Scope>]> = entry
                        .ctx
                        .scopes
                        .iter()
                        .filter(|s| !Arc::ptr_eq(s, scope))
                        .cloned()
                        .collect();
                    (!scopes.is_empty()).then(|| Arc::new(Context { scopes }))
                })
                .clone();
            entry.live -= 1;
            record.ctx = replacement.as_ref().map(|ctx| NonNull::from(&**ctx));
            if let Some(ctx) = replacement {
                shard
                    .contexts
                    .entry(NonNull::from(&*ctx))
                    .or_insert(ContextEntry { ctx, live: 0 })
                    .live += 1;
            }
            detached.push(id);
        }
        if !detached.is_empty() {
            self.changed();
        }
        detached
    }

    /// Whether task `id` is alive.
    pub(crate) fn contains(&self, id: NonZeroU64) -> bool {
        self.shard(id).lock().live.contains(id)
    }

    /// Live tasks that belong to `scope`.
    pub(crate) fn scope_live(&self, scope: &Arc<Scope>) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let shard = shard.0.lock();
                shard
                    .contexts
                    .values()
                    .filter(|e| e.live > 0 && e.ctx.contains(scope))
                    .map(|e| e.live)
                    .sum::<usize>()
            })
            .sum()
    }

    /// Waits until no task of `scope` is alive or `deadline` passes; wakes on
    /// the terminate that empties the scope, never on a timer tick.
    pub(crate) async fn drained(&self, scope: &Arc<Scope>, deadline: std::time::Instant) -> bool {
        // Registered before the first count, so a terminate that empties an
        // entry after the count sees the waiter (the shard locks order them).
        let _waiting = Waiting::register(scope);
        loop {
            let notified = scope.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.scope_live(scope) == 0 {
                return true;
            }
            if crate::clock::within(deadline, notified).await.is_none() {
                return self.scope_live(scope) == 0;
            }
        }
    }

    /// Blocking twin of [`Registry::drained`].
    pub(crate) fn drained_blocking(
        &self,
        scope: &Arc<Scope>,
        deadline: std::time::Instant,
    ) -> bool {
        let _waiting = Waiting::register(scope);
        let mut lock = scope.blocking.0.lock();
        while self.scope_live(scope) != 0 {
            if scope.blocking.1.wait_until(&mut lock, deadline).timed_out() {
                return self.scope_live(scope) == 0;
            }
        }
        true
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().live.len()).sum()
    }

    /// Calls `f` on every live record and its counted polls, one shard at a
    /// time.
    pub(crate) fn for_each(&self, mut f: impl FnMut(NonZeroU64, &Record, Option<PollStats>)) {
        for shard in self.shards.iter() {
            let shard = shard.0.lock();
            for (id, record) in shard.live.iter() {
                f(id, record, shard.polls.get(&id).copied());
            }
        }
    }

    /// Counts a poll of a live task that ended at `now_ns`.
    pub(crate) fn polled(&self, id: NonZeroU64, now_ns: u64) {
        let mut shard = self.shard(id).lock();
        if !shard.live.contains(id) {
            return;
        }
        let stats = shard.polls.entry(id).or_insert(PollStats {
            polls: 0,
            last_ns: now_ns,
        });
        stats.polls += 1;
        stats.last_ns = now_ns;
    }

    /// Forgets every counted poll.
    pub(crate) fn clear_polls(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard.0.lock();
            shard.polls.clear();
            shard.polls.shrink_to(0);
        }
    }
}

fn anchor_in(shard: &Shard, owner: NonZeroU64) -> Option<Arc<Context>> {
    if shard.anchors.is_empty() {
        return None;
    }
    shard
        .anchors
        .get(&owner)
        .and_then(|list| list.last())
        .cloned()
}

/// Marks a scope as waited on for as long as it lives.
struct Waiting<'a>(&'a Scope);

impl<'a> Waiting<'a> {
    fn register(scope: &'a Scope) -> Waiting<'a> {
        scope.waiting.fetch_add(1, Ordering::SeqCst);
        Waiting(scope)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> NonZeroU64 {
        NonZeroU64::new(n).unwrap()
    }

    fn record() -> Record {
        Record::new(Location::caller(), None, 0, None, None)
    }

    fn context(scopes: &[Arc<Scope>]) -> Arc<Context> {
        Arc::new(Context {
            scopes: scopes.into(),
        })
    }

    #[test]
    fn terminate_before_spawn_leaves_no_phantom() {
        let registry = Registry::default();
        let scope = Arc::new(Scope::default());
        let ctx = context(std::slice::from_ref(&scope));
        assert!(registry.remove(id(7)).is_none());
        registry.insert(id(7), record(), Some(ContextRef::Owned(ctx)));
        assert_eq!(registry.len(), 0);
        assert_eq!(registry.scope_live(&scope), 0);
    }

    #[test]
    fn early_ends_are_found_below_the_newest_and_skipped_above_it() {
        let registry = Registry::default();
        // Same shard: ids 64 apart. Three terminates of unseen ids, then the
        // late spawn of the middle one and a spawn never ended.
        let ids: Vec<_> = (1..=3u64).map(|n| id(n * SHARDS as u64 + 5)).collect();
        for &ended in &ids {
            assert!(registry.remove(ended).is_none());
        }
        registry.insert(ids[1], record(), None);
        assert_eq!(registry.len(), 0, "the late spawn is dropped");
        registry.insert(ids[1], record(), None);
        assert_eq!(registry.len(), 1, "only once: the ring forgot it");
        let fresh = id(4 * SHARDS as u64 + 5);
        registry.insert(fresh, record(), None);
        assert_eq!(registry.len(), 2);
        registry.insert(ids[2], record(), None);
        registry.insert(ids[0], record(), None);
        assert_eq!(registry.len(), 2, "the other two late spawns dropped too");
    }

    #[test]
    fn scope_count_follows_inserts_and_removes_across_shards() {
        let registry = Registry::default();
        let scope = Arc::new(Scope::default());
        let other = Arc::new(Scope::default());
        let ctx = context(std::slice::from_ref(&scope));
        for n in 1..=200 {
            registry.insert(id(n), record(), Some(ContextRef::borrow(&ctx)));
        }
        registry.insert(
            id(1000),
            record(),
            Some(ContextRef::Owned(context(std::slice::from_ref(&other)))),
        );
        assert_eq!(registry.scope_live(&scope), 200);
        assert_eq!(registry.scope_live(&other), 1);
        for n in 1..=150 {
            registry.remove(id(n));
        }
        assert_eq!(registry.scope_live(&scope), 50);
        assert_eq!(registry.len(), 51);
    }

    #[test]
    fn a_detached_task_leaves_its_scope_and_keeps_the_others() {
        let registry = Registry::default();
        let outer = Arc::new(Scope::default());
        let inner = Arc::new(Scope::default());
        let both = context(&[outer.clone(), inner.clone()]);
        for n in 1..=3 {
            registry.insert(id(n), record(), Some(ContextRef::borrow(&both)));
        }
        assert_eq!(
            registry.detach(&inner, &[id(1), id(2), id(99)]),
            [id(1), id(2)]
        );
        assert_eq!(registry.scope_live(&inner), 1);
        assert_eq!(registry.scope_live(&outer), 3);
        assert!(registry.detach(&inner, &[id(1)]).is_empty(), "already out");
        assert_eq!(registry.detach(&outer, &[id(1)]), [id(1)]);
        assert_eq!(registry.scope_live(&outer), 2);
        registry.remove(id(1));
        registry.remove(id(2));
        assert_eq!(registry.scope_live(&outer), 1);
        assert_eq!(registry.len(), 1);
    }

    #[test]
    fn last_task_of_a_label_drains_it() {
        let registry = Registry::default();
        let label = Arc::new(Label::new("req-1".into()));
        for n in 1..=2 {
            let ptr = Some(NonNull::from(&*label));
            let record = Record::new(Location::caller(), None, 0, None, ptr);
            registry.insert(id(n), record, None);
        }
        assert!(registry.remove(id(1)).is_none());
        assert_eq!(
            registry.remove(id(2)).map(|l| l.name.to_string()),
            Some("req-1".to_owned())
        );
    }

    #[test]
    fn a_label_is_held_while_its_tasks_live_and_freed_with_the_registry() {
        let registry = Registry::default();
        let label = Arc::new(Label::new("req-2".into()));
        for n in 1..=3 {
            let ptr = Some(NonNull::from(&*label));
            let record = Record::new(Location::caller(), None, 0, None, ptr);
            registry.insert(id(n), record, None);
        }
        assert_eq!(Arc::strong_count(&label), 2, "one reference for all three");
        assert!(registry.remove(id(1)).is_none());
        assert_eq!(Arc::strong_count(&label), 2);
        drop(registry);
        assert_eq!(Arc::strong_count(&label), 1, "dropped with the registry");
        assert_eq!(label.live.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn idle_context_entries_are_swept() {
        let registry = Registry::default();
        for n in 0..1_000u64 {
            // Same shard every time, a new context every time.
            let task = id(1 + n * SHARDS as u64);
            registry.insert(task, record(), Some(ContextRef::Owned(context(&[]))));
            registry.remove(task);
        }
        let entries = registry.shards[1].0.lock().contexts.len();
        assert!(entries <= CONTEXT_SWEEP_AT, "{entries} entries kept");
    }

    #[test]
    fn records_sharing_a_ring_slot_overflow_and_survive_growth() {
        let registry = Registry::default();
        // Same shard and same slot of the initial ring: ids one ring apart.
        let stride = (SHARDS * INITIAL_RING) as u64;
        let colliding: Vec<_> = (0..3u64).map(|n| id(3 + n * stride)).collect();
        for &task in &colliding {
            registry.insert(task, record(), None);
        }
        assert_eq!(registry.len(), 3);
        assert!(colliding.iter().all(|&task| registry.contains(task)));
        // Fill that shard densely: the ring doubles, every record moves.
        let dense: Vec<_> = (1..=200u64).map(|n| id(3 + n * SHARDS as u64)).collect();
        for &task in &dense {
            if !registry.contains(task) {
                registry.insert(task, record(), None);
            }
        }
        let ring = registry.shards[3].0.lock().live.ring.len();
        assert!(ring > INITIAL_RING, "the ring grew: {ring} slots");
        let mut seen = 0;
        registry.for_each(|_, _, _| seen += 1);
        assert_eq!(seen, registry.len());
        for task in colliding.iter().chain(&dense) {
            registry.remove(*task);
        }
        assert_eq!(registry.len(), 0);
        assert!(colliding.iter().all(|&task| !registry.contains(task)));
    }

    #[test]
    fn shard_lock_excludes_other_threads() {
        let lock = Arc::new(ShardLock::<u64>::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for _ in 0..50_000 {
                        let mut value = lock.lock();
                        // A read and a write apart: a second holder would
                        // lose updates.
                        let seen = *value;
                        std::hint::black_box(&mut *value);
                        *value = seen + 1;
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(*lock.lock(), 200_000);
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
