//! [`verify_none`] and its [`VerifyGuard`]: open a scope, and after the body
//! wait (event-driven, up to the grace period) for the scope's tasks to end,
//! then report those that did not.

use std::future::Future as _;
use std::num::NonZeroU64;
use std::panic::Location;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, RuntimeFlavor};

use crate::collect;
use crate::liveness::GraceWatch;
use crate::report::{LeakReport, SCHEMA_VERSION, Subject, TOKIO_UNSTABLE_HINT};
use crate::settings::{Mode, Settings};
use crate::tracker::{OpenScope, Tracker};

/// The shortest wait a verification makes, whatever the grace: tokio wakes a
/// `JoinHandle` before it runs the task's terminate hook, so a task the body
/// has just joined can still count as alive for a moment on a multi-thread
/// runtime. The wait still ends at the terminate of the scope's last task;
/// only a scope that really leaks waits this long with `grace = "0"`.
const MIN_WAIT: Duration = Duration::from_millis(50);

/// Opens a leak-check scope on the current runtime: every task spawned after
/// this call from the current task (or, outside tasks, from the current
/// thread), directly or transitively, must have ended when
/// [`VerifyGuard::verify`] returns. Tasks alive before the call are not this
/// scope's leaks.
///
/// The runtime's tracker is found from `Handle::current()`; install one with
/// [`Tracker::install`] or use [`#[leakcheck::test]`](crate::test). On a
/// runtime without a tracker, or built without `--cfg tokio_unstable`, the
/// guard falls back to comparing the runtime's live task count
/// (`num_alive_tasks`) and its report cannot name spawn sites.
///
/// # Dropping the guard unverified
/// A guard is meant to be consumed by `verify().await`. If it is dropped
/// instead (early return, `?`), and not during a panic, the drop still checks:
/// - **multi-thread runtime**: the dropping worker steps aside
///   (`block_in_place`) and waits up to the grace period for the scope's tasks;
/// - **current-thread and local runtimes**: nothing else can run while the drop
///   blocks, so it checks immediately, without grace.
///
/// Leaks found on drop panic with the report (or print it in `warn` mode).
/// A panic inside a spawned task ends only that task, so a guard dropped in
/// one also hands its report to the tracker, and the `#[leakcheck::test]`
/// running on that runtime fails with it.
///
/// # Panics
/// Outside a tokio runtime.
#[track_caller]
pub fn verify_none() -> VerifyGuard {
    // Named after where it was opened; reports of unnamed scopes also get
    // file names of their own (see `publish`).
    let name = format!("verify_none scope at {}", Location::caller());
    let handle = Handle::current();
    // Counted before `Tracker::current`, whose lookup may spawn a probe task.
    let baseline = handle.metrics().num_alive_tasks();
    if let Some(tracker) = Tracker::current() {
        let grace = tracker.grace();
        let mut guard = VerifyGuard::for_tracker(&tracker, name, grace, Vec::new());
        guard.subject = Subject::Scope;
        guard.unnamed = true;
        return guard;
    }
    let settings = Settings::from_env();
    VerifyGuard {
        state: Some(State::Counted {
            baseline,
            reason: degraded_reason(),
        }),
        handle,
        name,
        subject: Subject::Scope,
        unnamed: true,
        grace: settings.grace,
        mode: settings.mode,
        report_dir: settings.report_dir,
        // Not applied (no spawn sites), but said so in a report.
        ignore: settings.ignore,
    }
}

fn degraded_reason() -> &'static str {
    if cfg!(tokio_unstable) {
        "this runtime has no leakcheck tracker: build it with `leakcheck::Tracker::install` or use `#[leakcheck::test]`"
    } else {
        TOKIO_UNSTABLE_HINT
    }
}

/// A leak-check scope; see [`verify_none`].
#[must_use = "call `.verify().await` to check the scope"]
#[derive(Debug)]
pub struct VerifyGuard {
    state: Option<State>,
    handle: Handle,
    name: String,
    subject: Subject,
    /// Not given a name with [`VerifyGuard::named`].
    unnamed: bool,
    grace: Duration,
    mode: Mode,
    report_dir: Option<PathBuf>,
    ignore: Vec<String>,
}

#[derive(Debug)]
enum State {
    Tracked {
        tracker: Tracker,
        open: OpenScope,
    },
    Counted {
        baseline: usize,
        reason: &'static str,
    },
}

impl VerifyGuard {
    pub(crate) fn for_tracker(
        tracker: &Tracker,
        name: String,
        grace: Duration,
        ignore: Vec<String>,
    ) -> VerifyGuard {
        let handle = Handle::current();
        let mut ignore = ignore;
        // Without tokio's hooks the tracker sees no task: count instead.
        let state = if cfg!(tokio_unstable) {
            State::Tracked {
                tracker: tracker.clone(),
                open: tracker.open_scope(),
            }
        } else {
            // Counted reports name every pattern they could not apply.
            ignore.splice(0..0, tracker.inner.ignore.iter().cloned());
            State::Counted {
                baseline: handle.metrics().num_alive_tasks(),
                reason: degraded_reason(),
            }
        };
        VerifyGuard {
            handle,
            state: Some(state),
            name,
            subject: Subject::Test,
            unnamed: false,
            grace,
            mode: tracker.mode(),
            report_dir: tracker.inner.settings.report_dir.clone(),
            ignore,
        }
    }

    /// The name the report gives the scope (default `"verify_none scope at
    /// <file>:<line>:<column>"`, where `verify_none` was called).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self.unnamed = false;
        self
    }

    /// How long `verify` waits for the scope's tasks to end. Default: the
    /// tracker's grace ([`DEFAULT_GRACE`](crate::DEFAULT_GRACE) unless configured).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Tasks matching `pattern` are not leaks; see
    /// [`TrackerBuilder::ignore`](crate::TrackerBuilder::ignore).
    pub fn ignore(mut self, pattern: impl Into<String>) -> Self {
        self.ignore.push(pattern.into());
        self
    }

    /// Waits until every task of the scope has ended (returns at once when
    /// none is alive; otherwise wakes on the terminate of the last one) or the
    /// grace period passes, then reports the tasks still alive.
    pub async fn verify(mut self) -> Result<(), LeakReport> {
        let state = self
            .state
            .take()
            .expect("state is only taken by verify or drop");
        // Real time, not the runtime's clock (see `clock`).
        let started = Instant::now();
        let deadline = started + self.grace.max(MIN_WAIT);
        match state {
            State::Tracked { tracker, open } => {
                tracker.close_scope(&open);
                let watch = GraceWatch::start(&tracker.inner, self.grace);
                let ignored = self.detach_ignored(&tracker, &open.scope);
                if tracker.inner.registry.drained(&open.scope, deadline).await {
                    return Ok(());
                }
                let waited = started.elapsed();
                self.tracked_report(&tracker, &open.scope, waited, true, &watch, &ignored)
                    .await
            }
            State::Counted { baseline, reason } => {
                // No hooks, no events: back off from 1 ms to 16 ms between looks.
                let mut pause = Duration::from_millis(1);
                loop {
                    let alive = self.handle.metrics().num_alive_tasks();
                    if alive <= baseline {
                        return Ok(());
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        let waited = now - started;
                        return Err(self.counted_report(alive - baseline, waited, reason));
                    }
                    crate::clock::sleep(pause.min(deadline - now)).await;
                    pause = (pause * 2).min(Duration::from_millis(16));
                }
            }
        }
    }

    /// The tracker's `ignore` patterns and this scope's.
    fn patterns(&self, tracker: &Tracker) -> Vec<String> {
        tracker
            .inner
            .ignore
            .iter()
            .chain(&self.ignore)
            .cloned()
            .collect()
    }

    /// Takes the scope's live tasks that an `ignore` pattern matches out of
    /// it, so the wait ends when the last task that can leak ends instead of
    /// running out the grace on a task meant to outlive the scope; returns
    /// their ids. Ignored tasks spawned later, during the grace, stay in the
    /// scope (they only cost the wait) and are filtered from the report.
    fn detach_ignored(
        &self,
        tracker: &Tracker,
        scope: &Arc<crate::registry::Scope>,
    ) -> Vec<NonZeroU64> {
        let patterns = self.patterns(tracker);
        let registry = &tracker.inner.registry;
        if patterns.is_empty() || registry.scope_live(scope) == 0 {
            return Vec::new();
        }
        let (_, ignored) =
            collect::without_ignored(collect::tasks(tracker, Some(scope), None), &patterns);
        registry.detach(scope, &ignored)
    }

    async fn tracked_report(
        &self,
        tracker: &Tracker,
        scope: &Arc<crate::registry::Scope>,
        waited: Duration,
        with_dump: bool,
        watch: &GraceWatch,
        detached: &[NonZeroU64],
    ) -> Result<(), LeakReport> {
        let patterns = self.patterns(tracker);
        let (tasks, ignored) =
            collect::without_ignored(collect::tasks(tracker, Some(scope), Some(watch)), &patterns);
        let registry = &tracker.inner.registry;
        let ignored = ignored.len() + detached.iter().filter(|&&id| registry.contains(id)).count();
        if tasks.is_empty() {
            return Ok(());
        }
        let parked = if !with_dump {
            Ok(Default::default())
        } else if watch.worker_blocked() {
            Err("a worker has been inside one task's poll for the whole grace, and a task dump waits for every worker".to_owned())
        } else {
            let ids: Vec<u64> = tasks.iter().map(|t| t.id.get()).collect();
            crate::dump::parked(&ids, || watch.another_task_in_poll()).await
        };
        let (parked, parked_at_missing) = match parked {
            Ok(parked) => (parked, None),
            Err(why) => (Default::default(), Some(why)),
        };
        let (sites, stacks) = collect::group(tasks, &parked);
        Err(LeakReport {
            schema_version: SCHEMA_VERSION,
            kind: "leak_report".to_owned(),
            test: self.name.clone(),
            created_at_unix_ms: collect::unix_ms(),
            grace_ms: waited.as_millis() as u64,
            leaked: sites.iter().map(|g| g.count).sum(),
            ignored,
            degraded: false,
            degraded_reason: None,
            mode: self.mode,
            subject: self.subject,
            sites,
            stacks,
            parked_at_missing,
        })
    }

    fn counted_report(&self, leaked: usize, waited: Duration, reason: &str) -> LeakReport {
        LeakReport {
            schema_version: SCHEMA_VERSION,
            kind: "leak_report".to_owned(),
            test: self.name.clone(),
            created_at_unix_ms: collect::unix_ms(),
            grace_ms: waited.as_millis() as u64,
            leaked,
            ignored: 0,
            degraded: true,
            degraded_reason: Some(match self.ignore.as_slice() {
                [] => reason.to_owned(),
                patterns => format!(
                    "{reason}; the `ignore` patterns {} were not applied: matching them needs spawn sites, which counting does not have",
                    patterns
                        .iter()
                        .map(|p| format!("{p:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
            mode: self.mode,
            subject: self.subject,
            sites: Vec::new(),
            stacks: Vec::new(),
            parked_at_missing: None,
        }
    }

    /// The check an unverified guard makes when dropped; see [`verify_none`].
    fn check_on_drop(&mut self, state: State) -> Option<LeakReport> {
        match state {
            State::Tracked { tracker, open } => {
                tracker.close_scope(&open);
                if tracker.inner.registry.scope_live(&open.scope) == 0 {
                    return None;
                }
                let started = Instant::now();
                let watch = GraceWatch::start(&tracker.inner, self.grace);
                let ignored = self.detach_ignored(&tracker, &open.scope);
                if self.handle.runtime_flavor() == RuntimeFlavor::MultiThread {
                    let deadline = started + self.grace.max(MIN_WAIT);
                    let drained = tokio::task::block_in_place(|| {
                        tracker
                            .inner
                            .registry
                            .drained_blocking(&open.scope, deadline)
                    });
                    if drained {
                        return None;
                    }
                }
                let waited = started.elapsed();
                let report =
                    self.tracked_report(&tracker, &open.scope, waited, false, &watch, &ignored);
                // No await point is reached without a dump: poll it once.
                let waker = std::task::Waker::noop();
                match std::pin::pin!(report).poll(&mut std::task::Context::from_waker(waker)) {
                    std::task::Poll::Ready(result) => result.err(),
                    std::task::Poll::Pending => None,
                }
            }
            State::Counted { baseline, reason } => {
                let alive = self.handle.metrics().num_alive_tasks();
                (alive > baseline)
                    .then(|| self.counted_report(alive - baseline, Duration::ZERO, reason))
            }
        }
    }
}

impl Drop for VerifyGuard {
    fn drop(&mut self) {
        let Some(state) = self.state.take() else {
            return;
        };
        if std::thread::panicking() {
            if let State::Tracked { tracker, open } = &state {
                tracker.close_scope(open);
            }
            return;
        }
        let tracker = match &state {
            State::Tracked { tracker, .. } => Some(tracker.clone()),
            State::Counted { .. } => None,
        };
        if let Some(report) = self.check_on_drop(state) {
            crate::output::publish(&report, self.report_dir.as_deref(), self.unnamed);
            match self.mode {
                Mode::Fail => {
                    if let Some(tracker) = tracker.filter(|_| tokio::task::try_id().is_some()) {
                        tracker.inner.dropped_in_task(report.clone());
                    }
                    panic!("{report}\n(the VerifyGuard was dropped without `.verify().await`)")
                }
                Mode::Warn => eprintln!("{report}"),
            }
        }
    }
}
