//! [`Tracker`]: installs tokio's spawn and terminate hooks on a runtime
//! builder, records every spawned task in the registry, assigns it to the open
//! scopes it belongs to, and finds the tracker of the current runtime.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::hash::Hasher;
use std::num::NonZeroU64;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use rustc_hash::FxHashMap;

use crate::liveness::PollSlots;
use crate::registry::{Context, ContextRef, Label, Registry, Scope, Spawner};
use crate::report::{LeakReport, Snapshot};
use crate::settings::{BacktraceMode, Mode, Settings};

#[cfg(tokio_unstable)]
type TaskHook = Arc<dyn Fn(&tokio::runtime::TaskMeta<'_>) + Send + Sync>;
type LabelHook = Arc<dyn Fn(&str) + Send + Sync>;

/// Records the tasks of the runtimes it is installed on.
///
/// One tracker per runtime is the usual setup (`#[leakcheck::test]` builds
/// one per test); cloning is cheap and shares the same records.
///
/// ```no_run
/// let tracker = leakcheck::Tracker::new();
/// let mut builder = tokio::runtime::Builder::new_multi_thread();
/// tracker.install(builder.enable_all());
/// let runtime = builder.build().unwrap();
/// runtime.block_on(async {
///     let guard = leakcheck::verify_none();
///     tokio::spawn(async {}).await.unwrap();
///     guard.verify().await.unwrap();
/// });
/// ```
#[derive(Clone)]
pub struct Tracker {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) settings: Settings,
    pub(crate) ignore: Vec<String>,
    pub(crate) registry: Registry,
    /// Scopes not yet closed, for tasks whose spawner is unknown.
    open: Mutex<OpenScopes>,
    open_count: AtomicUsize,
    #[cfg(tokio_unstable)]
    user_spawn: Option<TaskHook>,
    #[cfg(tokio_unstable)]
    user_terminate: Option<TaskHook>,
    #[cfg(tokio_unstable)]
    user_before_poll: Option<TaskHook>,
    #[cfg(tokio_unstable)]
    user_after_poll: Option<TaskHook>,
    label_drained: Option<LabelHook>,
    /// Scopes waiting out their grace now: polls are counted while non-zero.
    pub(crate) verifying: AtomicUsize,
    /// The poll in progress on each thread that polls this tracker's tasks.
    pub(crate) poll_slots: PollSlots,
    /// Reports of guards dropped unverified inside tasks: their panic ends
    /// only that task, so the test harness fails with them.
    dropped: Mutex<Vec<LeakReport>>,
}

/// The open scopes of a tracker, each with its context (the scopes enclosing
/// it, then itself), and what a task whose spawner is unknown joins.
#[derive(Default)]
struct OpenScopes {
    chains: Vec<Arc<Context>>,
    /// The scopes every open scope lies in: the only ones a task of unknown
    /// spawner (a `spawn_blocking` closure, a plain thread) surely belongs
    /// to, whichever open scope started it. One open scope: that scope and
    /// its enclosing ones; unrelated parallel scopes: none, so they never
    /// blame each other. Recomputed on open and close, not per spawn.
    common: Option<Arc<Context>>,
}

impl OpenScopes {
    fn changed(&mut self) {
        let Some((first, rest)) = self.chains.split_first() else {
            self.common = None;
            return;
        };
        let scopes: Box<[Arc<Scope>]> = first
            .scopes
            .iter()
            .filter(|scope| rest.iter().all(|chain| chain.contains(scope)))
            .cloned()
            .collect();
        self.common = (!scopes.is_empty()).then(|| Arc::new(Context { scopes }));
    }
}

/// A scope opened outside tasks, and the context its thread's tasks get.
#[derive(Clone)]
struct Anchor {
    scope: Arc<Scope>,
    ctx: Arc<Context>,
}

impl fmt::Debug for Tracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracker")
            .field("live", &self.live())
            .field("backtrace", &self.inner.settings.backtrace)
            .field("grace", &self.inner.settings.grace)
            .field("mode", &self.inner.settings.mode)
            .finish_non_exhaustive()
    }
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker::new()
    }
}

impl Tracker {
    /// A tracker configured from the `LEAKCHECK_*` environment variables
    /// (see the crate docs); panics naming the variable if one is malformed.
    pub fn new() -> Tracker {
        TrackerBuilder::from_settings(Settings::from_env()).build()
    }

    /// A builder starting from the environment's settings.
    pub fn builder() -> TrackerBuilder {
        TrackerBuilder::from_settings(Settings::from_env())
    }

    /// Installs the spawn, terminate and poll hooks on `builder`, replacing
    /// any hooks set on it before (tokio keeps one per runtime); pass your own
    /// through [`TrackerBuilder::on_task_spawn`],
    /// [`TrackerBuilder::on_task_terminate`],
    /// [`TrackerBuilder::on_before_task_poll`] and
    /// [`TrackerBuilder::on_after_task_poll`] to keep them.
    ///
    /// Without `--cfg tokio_unstable` tokio has no hooks: the builder is left
    /// as it is and verification falls back to counting the runtime's tasks.
    pub fn install<'a>(
        &self,
        builder: &'a mut tokio::runtime::Builder,
    ) -> &'a mut tokio::runtime::Builder {
        #[cfg(tokio_unstable)]
        {
            let on_spawn = self.inner.clone();
            let on_terminate = self.inner.clone();
            let before_poll = self.inner.clone();
            let after_poll = self.inner.clone();
            builder
                .on_task_spawn(move |meta| on_spawn.on_spawn(meta))
                .on_task_terminate(move |meta| on_terminate.on_terminate(meta))
                .on_before_task_poll(move |meta| {
                    // First, in this closure's own frame: see the function.
                    crate::capture::poll_started();
                    before_poll.on_before_poll(meta)
                })
                .on_after_task_poll(move |meta| after_poll.on_after_poll(meta))
        }
        #[cfg(not(tokio_unstable))]
        {
            builder
        }
    }

    /// Live tracked tasks now, grouped by spawn site, with ages, labels and
    /// spawn backtraces (symbolized on the spot; the first call in a process
    /// pays ~0.1 s to load debug info).
    pub fn snapshot(&self) -> Snapshot {
        crate::collect::snapshot(self)
    }

    /// Live tracked tasks per spawn site, most first: no symbolization, so
    /// cheap enough for every metrics scrape (a gauge per site).
    pub fn live_by_site(&self) -> Vec<(crate::SourceLocation, usize)> {
        crate::collect::live_by_site(self)
    }

    /// tokio's task dump of the current runtime as text, one `task ID:` block
    /// per task with where it is parked now, for a debug endpoint. `Err` says
    /// why none was taken: a build without tokio's task dump, or one of the
    /// rules that keep tokio 1.54's dump from wedging the runtime (too many
    /// live tasks, a multi-thread runtime's one dump already taken — see
    /// [`claim_task_dump`](crate::claim_task_dump) — another of this
    /// tracker's tasks inside a poll for 200 ms on a multi-thread runtime, or
    /// a worker that did not check in within 2 s).
    pub async fn task_dump(&self) -> Result<String, String> {
        let busy = || {
            self.inner
                .poll_slots
                .others_in_poll()
                .next()
                .map(|(task, _)| task)
        };
        crate::dump::text(busy).await
    }

    /// Number of live tracked tasks.
    pub fn live(&self) -> usize {
        self.inner.registry.len()
    }

    /// The tracker installed on the current tokio runtime, if any.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn current() -> Option<Tracker> {
        let handle = tokio::runtime::Handle::current();
        if let Some(tracker) = lookup(&handle) {
            return Some(tracker);
        }
        // tokio runs the spawn hook synchronously inside `spawn`, on this
        // thread: the hook that fires for this probe belongs to `handle`'s
        // runtime, and registers its tracker for it. Without hooks nothing
        // would answer.
        if !cfg!(tokio_unstable) {
            return None;
        }
        let _ = PROBING.try_with(|probing| probing.set(Some(handle.id())));
        drop(handle.spawn(async {}));
        let _ = PROBING.try_with(|probing| probing.set(None));
        lookup(&handle)
    }

    /// Maps `handle`'s runtime to this tracker now (the test harness knows
    /// both, so it need not wait for a spawn).
    pub(crate) fn register(&self, handle: &tokio::runtime::Handle) {
        register(handle.id(), &self.inner);
    }

    pub(crate) fn grace(&self) -> Duration {
        self.inner.settings.grace
    }

    pub(crate) fn mode(&self) -> Mode {
        self.inner.settings.mode
    }

    /// Opens a scope in the current task (or, outside tasks, on the current
    /// thread): tasks spawned from here on, and their descendants, join it.
    pub(crate) fn open_scope(&self) -> OpenScope {
        let inner = &self.inner;
        let scope = Arc::new(Scope::default());
        let owner = tokio::task::try_id().map(task_id);
        // The new scope's tasks also belong to every scope the owner is in.
        let scopes_of = |ctx: &Context| ctx.scopes.to_vec();
        let base = match owner {
            Some(task) => match inner.registry.anchor_of(task) {
                Some(anchor) => Some(scopes_of(&anchor)),
                None => inner
                    .registry
                    .with_context(task, |ctx| ctx.map(scopes_of))
                    .ok()
                    .flatten(),
            },
            None => thread_anchor(inner).map(|anchor| scopes_of(anchor.get())),
        };
        let mut scopes = base.unwrap_or_default();
        scopes.push(scope.clone());
        let ctx = Arc::new(Context {
            scopes: scopes.into(),
        });
        {
            let mut open = inner.open.lock();
            open.chains.push(ctx.clone());
            open.changed();
            inner.open_count.fetch_add(1, Ordering::AcqRel);
        }
        match owner {
            Some(task) => inner.registry.anchor(task, ctx),
            None => {
                let anchor = Anchor {
                    scope: scope.clone(),
                    ctx,
                };
                THREAD_ANCHORS.with(|anchors| {
                    anchors
                        .borrow_mut()
                        .push((Arc::as_ptr(inner) as usize, anchor))
                })
            }
        }
        OpenScope { scope, owner }
    }

    /// Closes a scope: no new task joins it; its tasks keep being counted.
    pub(crate) fn close_scope(&self, open: &OpenScope) {
        let inner = &self.inner;
        let is_this = |anchor: &Anchor| Arc::ptr_eq(&anchor.scope, &open.scope);
        match open.owner {
            Some(task) => inner.registry.unanchor(task, &open.scope),
            None => {
                // A guard may be dropped on another thread than the one that
                // opened it (multi-thread block_on bodies do not move, but be
                // safe): a missing entry just means nothing to undo here.
                let _ = THREAD_ANCHORS
                    .try_with(|anchors| anchors.borrow_mut().retain(|(_, a)| !is_this(a)));
            }
        }
        let mut open_scopes = inner.open.lock();
        let is_its_chain = |chain: &Arc<Context>| {
            chain
                .scopes
                .last()
                .is_some_and(|s| Arc::ptr_eq(s, &open.scope))
        };
        if let Some(pos) = open_scopes.chains.iter().position(is_its_chain) {
            open_scopes.chains.swap_remove(pos);
            open_scopes.changed();
            inner.open_count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A scope between `open_scope` and `close_scope`.
#[derive(Debug)]
pub(crate) struct OpenScope {
    pub(crate) scope: Arc<Scope>,
    owner: Option<NonZeroU64>,
}

thread_local! {
    static SPAWNER: RefCell<Option<CachedSpawner>> = const { RefCell::new(None) };
}

/// What a task passes on, as [`Registry::spawner`] answered for it, for
/// [`Inner::spawner`].
struct CachedSpawner {
    /// (tracker, task, registry generation) the answer is for.
    key: (usize, NonZeroU64, u64),
    spawner: Result<Spawner, ()>,
    /// Held here so spawns can borrow it: see [`Inner::spawner`].
    anchor: Option<Arc<Context>>,
}

thread_local! {
    // Scopes opened outside any task (a block_on body, such as a test body),
    // keyed by tracker: tasks spawned from this thread with no parent join
    // the innermost one.
    static THREAD_ANCHORS: RefCell<Vec<(usize, Anchor)>> = const { RefCell::new(Vec::new()) };
}

/// The innermost scope anchored on this thread for `inner`, borrowed: the
/// anchor cannot be removed while this thread is inside a spawn hook.
fn thread_anchor(inner: &Arc<Inner>) -> Option<ContextRef> {
    let key = Arc::as_ptr(inner) as usize;
    THREAD_ANCHORS
        .try_with(|anchors| {
            anchors
                .borrow()
                .iter()
                .rev()
                .find(|(k, _)| *k == key)
                .map(|(_, a)| ContextRef::borrow(&a.ctx))
        })
        .ok()
        .flatten()
}

impl Inner {
    /// The context of a task whose spawner is unknown (a `spawn_blocking`
    /// closure, a plain thread): see [`OpenScopes::common`].
    fn unknown_spawner(&self) -> Option<ContextRef> {
        if self.open_count.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.open.lock().common.clone().map(ContextRef::Owned)
    }

    /// What the running task `parent` passes on, and the context of the
    /// innermost scope opened inside it, from a one-entry cache per thread: a
    /// task spawning in a loop is looked up once, not per child, and takes no
    /// lock. Task ids are never reused and the registry's generation moves
    /// whenever an answer could change, so an entry stays right while its
    /// task runs (on this thread, now) in that generation. The anchor is
    /// borrowed from the cache, which keeps it until this thread's next
    /// lookup, after this spawn.
    fn spawner(self: &Arc<Self>, parent: NonZeroU64) -> (Result<Spawner, ()>, Option<ContextRef>) {
        let key = (
            Arc::as_ptr(self) as usize,
            parent,
            self.registry.generation(),
        );
        let cached = SPAWNER.try_with(|cell| {
            let mut cell = cell.try_borrow_mut().ok()?;
            if cell.as_ref().is_none_or(|cached| cached.key != key) {
                let (spawner, anchor) = self.registry.spawner(parent);
                *cell = Some(CachedSpawner {
                    key,
                    spawner,
                    anchor,
                });
            }
            let cached = cell.as_ref()?;
            Some((
                cached.spawner,
                cached.anchor.as_ref().map(ContextRef::borrow),
            ))
        });
        match cached {
            Ok(Some(answer)) => answer,
            // No cache on this thread now (it is exiting): ask directly.
            _ => {
                let (spawner, anchor) = self.registry.spawner(parent);
                (spawner, anchor.map(ContextRef::Owned))
            }
        }
    }

    /// The scopes and label of a task spawned by `parent` (`None` when
    /// spawned outside any task). The label is the one being polled on this
    /// thread ([`crate::labeled`]), else the parent's.
    fn context_for(
        self: &Arc<Self>,
        parent: Option<NonZeroU64>,
    ) -> (Option<ContextRef>, Option<NonNull<Label>>) {
        let current = crate::label::current();
        let Some(parent) = parent else {
            return (
                thread_anchor(self).or_else(|| self.unknown_spawner()),
                current,
            );
        };
        // Anchors exist only while a scope is open.
        if self.open_count.load(Ordering::Acquire) == 0
            && current.is_none()
            && !crate::label::ever_used()
        {
            return (None, None);
        }
        let (spawner, anchor) = self.spawner(parent);
        // Both borrowed from `parent`'s record: `parent` is running on this
        // thread (it is inside spawn), so the record outlives the spawn hook.
        let (ctx, inherited) = match spawner {
            Ok(spawner) => (spawner.ctx.map(ContextRef::Borrowed), spawner.label),
            Err(()) => (None, None),
        };
        let ctx = match (anchor, ctx) {
            (Some(anchor), _) => Some(anchor),
            (None, Some(ctx)) => Some(ctx),
            (None, None) if spawner.is_err() => self.unknown_spawner(),
            (None, None) => None,
        };
        (ctx, current.or(inherited))
    }

    #[cfg(tokio_unstable)]
    fn on_spawn(self: &Arc<Self>, meta: &tokio::runtime::TaskMeta<'_>) {
        if let Ok(Some(runtime)) = PROBING.try_with(Cell::take) {
            register(runtime, self);
        }
        let id = task_id(meta.id());
        let parent = tokio::task::try_id().map(task_id);
        let (ctx, label) = self.context_for(parent);
        let stack = match self.settings.backtrace {
            BacktraceMode::Full => crate::capture::capture(),
            BacktraceMode::Off => None,
        };
        let spawned_ns = crate::clock::now_ns();
        let record =
            crate::registry::Record::new(meta.spawned_at(), parent, spawned_ns, stack, label);
        self.registry.insert(id, record, ctx);
        if let Some(hook) = &self.user_spawn {
            hook(meta);
        }
    }

    #[cfg(tokio_unstable)]
    fn on_terminate(&self, meta: &tokio::runtime::TaskMeta<'_>) {
        if let Some(label) = self.registry.remove(task_id(meta.id())) {
            self.drained(&label);
        }
        if let Some(hook) = &self.user_terminate {
            hook(meta);
        }
    }

    #[cfg(tokio_unstable)]
    fn on_before_poll(self: &Arc<Self>, meta: &tokio::runtime::TaskMeta<'_>) {
        crate::liveness::poll_started(self, task_id(meta.id()));
        if let Some(hook) = &self.user_before_poll {
            hook(meta);
        }
    }

    #[cfg(tokio_unstable)]
    fn on_after_poll(&self, meta: &tokio::runtime::TaskMeta<'_>) {
        crate::capture::poll_ended();
        crate::liveness::poll_ended();
        if self.verifying.load(Ordering::Relaxed) > 0 {
            self.registry
                .polled(task_id(meta.id()), crate::clock::now_ns());
        }
        if let Some(hook) = &self.user_after_poll {
            hook(meta);
        }
    }

    /// Keeps the report of a guard dropped unverified inside a task.
    pub(crate) fn dropped_in_task(&self, report: LeakReport) {
        self.dropped.lock().push(report);
    }

    /// The reports kept by [`Inner::dropped_in_task`] so far.
    pub(crate) fn take_dropped(&self) -> Vec<LeakReport> {
        std::mem::take(&mut *self.dropped.lock())
    }

    fn drained(&self, label: &Label) {
        if let Some(hook) = &self.label_drained {
            hook(&label.name);
        }
    }
}

/// `tokio::task::Id` as the integer it wraps (its `Hash` writes exactly that).
pub(crate) fn task_id(id: tokio::task::Id) -> NonZeroU64 {
    #[derive(Default)]
    struct Capture(u64);
    impl Hasher for Capture {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for byte in bytes {
                self.0 = (self.0 << 8) | u64::from(*byte);
            }
        }
        fn write_u64(&mut self, n: u64) {
            self.0 = n;
        }
    }
    let mut capture = Capture::default();
    std::hash::Hash::hash(&id, &mut capture);
    NonZeroU64::new(capture.0).unwrap_or(NonZeroU64::MIN)
}

thread_local! {
    /// The runtime whose tracker [`Tracker::current`] is asking for, set
    /// around the spawn of its probe task. Not `Handle::try_current()` in the
    /// hook: that is the spawner's runtime, which differs when code on one
    /// runtime spawns onto another's handle.
    static PROBING: Cell<Option<tokio::runtime::Id>> = const { Cell::new(None) };
}

fn runtimes() -> &'static RwLock<FxHashMap<tokio::runtime::Id, Weak<Inner>>> {
    static MAP: OnceLock<RwLock<FxHashMap<tokio::runtime::Id, Weak<Inner>>>> = OnceLock::new();
    MAP.get_or_init(Default::default)
}

fn register(runtime: tokio::runtime::Id, inner: &Arc<Inner>) {
    let mut map = runtimes().write();
    map.retain(|_, tracker| tracker.strong_count() > 0);
    map.insert(runtime, Arc::downgrade(inner));
}

fn lookup(handle: &tokio::runtime::Handle) -> Option<Tracker> {
    let inner = runtimes().read().get(&handle.id())?.upgrade()?;
    Some(Tracker { inner })
}

/// Explicit settings for a [`Tracker`]; starts from the environment.
#[must_use]
pub struct TrackerBuilder {
    settings: Settings,
    ignore: Vec<String>,
    #[cfg(tokio_unstable)]
    user_spawn: Option<TaskHook>,
    #[cfg(tokio_unstable)]
    user_terminate: Option<TaskHook>,
    #[cfg(tokio_unstable)]
    user_before_poll: Option<TaskHook>,
    #[cfg(tokio_unstable)]
    user_after_poll: Option<TaskHook>,
    label_drained: Option<LabelHook>,
}

impl fmt::Debug for TrackerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackerBuilder")
            .field("settings", &self.settings)
            .field("ignore", &self.ignore)
            .finish_non_exhaustive()
    }
}

impl TrackerBuilder {
    pub(crate) fn from_settings(mut settings: Settings) -> Self {
        TrackerBuilder {
            // Crate-wide patterns start the list; `ignore` calls add to it.
            ignore: std::mem::take(&mut settings.ignore),
            settings,
            #[cfg(tokio_unstable)]
            user_spawn: None,
            #[cfg(tokio_unstable)]
            user_terminate: None,
            #[cfg(tokio_unstable)]
            user_before_poll: None,
            #[cfg(tokio_unstable)]
            user_after_poll: None,
            label_drained: None,
        }
    }

    /// Whether to capture a spawn backtrace per task. Default:
    /// [`DEFAULT_BACKTRACE`](crate::DEFAULT_BACKTRACE), or `LEAKCHECK_BACKTRACE`.
    pub fn backtrace(mut self, mode: BacktraceMode) -> Self {
        self.settings.backtrace = mode;
        self
    }

    /// How long scopes wait for their tasks after their body. Default:
    /// [`DEFAULT_GRACE`](crate::DEFAULT_GRACE), or `LEAKCHECK_GRACE`.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.settings.grace = grace;
        self
    }

    /// Fail or warn on a leak. Default: [`DEFAULT_MODE`](crate::DEFAULT_MODE),
    /// or `LEAKCHECK_MODE`.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.settings.mode = mode;
        self
    }

    /// Where failing scopes write their JSON report. Default: none, or
    /// `LEAKCHECK_REPORT_DIR`, or `target/leakcheck-reports` under `CI`.
    pub fn report_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.settings.report_dir = Some(dir.into());
        self
    }

    /// Tasks matching `pattern` are not leaks: a spawn-site path suffix
    /// (`"conn.rs"`, `"src/conn.rs:88"`) or a function path prefix matched
    /// against the spawn backtrace (`"hyper_util::client"`). A scope neither
    /// reports nor waits for the tasks a pattern matches.
    pub fn ignore(mut self, pattern: impl Into<String>) -> Self {
        self.ignore.push(pattern.into());
        self
    }

    #[cfg(tokio_unstable)]
    #[cfg_attr(docsrs, doc(cfg(tokio_unstable)))]
    /// Your own spawn hook, called after leakcheck's (tokio allows one).
    pub fn on_task_spawn(
        mut self,
        hook: impl Fn(&tokio::runtime::TaskMeta<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.user_spawn = Some(Arc::new(hook));
        self
    }

    #[cfg(tokio_unstable)]
    #[cfg_attr(docsrs, doc(cfg(tokio_unstable)))]
    /// Your own terminate hook, called after leakcheck's (tokio allows one).
    pub fn on_task_terminate(
        mut self,
        hook: impl Fn(&tokio::runtime::TaskMeta<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.user_terminate = Some(Arc::new(hook));
        self
    }

    #[cfg(tokio_unstable)]
    #[cfg_attr(docsrs, doc(cfg(tokio_unstable)))]
    /// Your own before-poll hook, called after leakcheck's (tokio allows one).
    pub fn on_before_task_poll(
        mut self,
        hook: impl Fn(&tokio::runtime::TaskMeta<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.user_before_poll = Some(Arc::new(hook));
        self
    }

    #[cfg(tokio_unstable)]
    #[cfg_attr(docsrs, doc(cfg(tokio_unstable)))]
    /// Your own after-poll hook, called after leakcheck's (tokio allows one).
    pub fn on_after_task_poll(
        mut self,
        hook: impl Fn(&tokio::runtime::TaskMeta<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.user_after_poll = Some(Arc::new(hook));
        self
    }

    /// Called with a label (see [`labeled`](crate::labeled)) when the last
    /// live task carrying it ends, on the thread that ran that terminate.
    /// Servers use it to time how fast a cancelled request's tasks stop.
    pub fn on_label_drained(mut self, hook: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.label_drained = Some(Arc::new(hook));
        self
    }

    /// The tracker.
    pub fn build(self) -> Tracker {
        Tracker {
            inner: Arc::new(Inner {
                settings: self.settings,
                ignore: self.ignore,
                registry: Registry::default(),
                open: Mutex::new(OpenScopes::default()),
                open_count: AtomicUsize::new(0),
                #[cfg(tokio_unstable)]
                user_spawn: self.user_spawn,
                #[cfg(tokio_unstable)]
                user_terminate: self.user_terminate,
                #[cfg(tokio_unstable)]
                user_before_poll: self.user_before_poll,
                #[cfg(tokio_unstable)]
                user_after_poll: self.user_after_poll,
                label_drained: self.label_drained,
                verifying: AtomicUsize::new(0),
                poll_slots: PollSlots::default(),
                dropped: Mutex::new(Vec::new()),
            }),
        }
    }
}
