//! The slow path: reads records out of the registry and shapes them into the
//! report types — grouping by spawn site, parent chains, symbolized stacks,
//! ignore patterns, deterministic order.

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::panic::Location;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustc_hash::FxHashMap;

use crate::capture::StackId;
use crate::liveness::GraceWatch;
use crate::registry::Scope;
use crate::report::{
    Frame, Liveness, ParkedAt, SCHEMA_VERSION, SiteGroup, Snapshot, SourceLocation, Stack,
    TaskEntry,
};
use crate::tracker::Tracker;

/// A copy of one record, taken under its shard's lock.
#[derive(Debug, Clone)]
pub(crate) struct TaskView {
    pub(crate) id: NonZeroU64,
    site: &'static Location<'static>,
    spawned_by: Vec<u64>,
    age_ms: u64,
    stack: Option<StackId>,
    label: Option<Arc<str>>,
    liveness: Option<Liveness>,
}

impl TaskView {
    pub(crate) fn site(&self) -> SourceLocation {
        source_location(self.site)
    }
}

/// A spawn location as reports show it: the file workspace-relative.
fn source_location(site: &Location<'_>) -> SourceLocation {
    SourceLocation {
        file: crate::paths::relative(site.file()),
        line: site.line(),
        column: site.column(),
    }
}

/// Live tasks of `scope` (all of them when `None`), with their parent chains
/// and, at the end of a grace period (`watch`), their liveness.
pub(crate) fn tasks(
    tracker: &Tracker,
    scope: Option<&Arc<Scope>>,
    watch: Option<&GraceWatch>,
) -> Vec<TaskView> {
    let inner = &tracker.inner;
    let now_ns = crate::clock::now_ns();
    let in_poll = match watch {
        Some(_) => inner.poll_slots.in_poll(),
        None => FxHashMap::default(),
    };
    let mut parents: FxHashMap<NonZeroU64, Option<NonZeroU64>> = FxHashMap::default();
    let mut picked = Vec::new();
    inner.registry.for_each(|id, record, polls| {
        parents.insert(id, record.parent);
        let member = match scope {
            None => true,
            Some(scope) => record.context().is_some_and(|ctx| ctx.contains(scope)),
        };
        if member {
            picked.push(TaskView {
                id,
                site: record.site,
                spawned_by: record.parent.map(|p| vec![p.get()]).unwrap_or_default(),
                age_ms: now_ns.saturating_sub(record.spawned_ns) / 1_000_000,
                stack: record.stack,
                label: record.label().map(|l| l.name.clone()),
                liveness: watch.map(|watch| {
                    let in_poll = in_poll.get(&id.get()).copied();
                    watch.classify(now_ns, record.spawned_ns, in_poll, polls)
                }),
            });
        }
    });
    for task in &mut picked {
        // Follow the chain while the ancestors are alive; a dead ancestor is
        // still named (it spawned this task) but its own parent is unknown.
        let mut cursor = task.spawned_by.first().and_then(|&p| NonZeroU64::new(p));
        while let Some(ancestor) = cursor.and_then(|p| parents.get(&p).copied().flatten()) {
            if task.spawned_by.len() >= 32 || task.spawned_by.contains(&ancestor.get()) {
                break;
            }
            task.spawned_by.push(ancestor.get());
            cursor = Some(ancestor);
        }
    }
    picked
}

/// Splits `tasks` into those matching none of `patterns` and the ids of
/// those matching one.
pub(crate) fn without_ignored(
    tasks: Vec<TaskView>,
    patterns: &[String],
) -> (Vec<TaskView>, Vec<NonZeroU64>) {
    if patterns.is_empty() {
        return (tasks, Vec::new());
    }
    let (ignored, kept): (Vec<TaskView>, Vec<TaskView>) = tasks
        .into_iter()
        .partition(|task| patterns.iter().any(|p| ignores(task, p)));
    (kept, ignored.into_iter().map(|task| task.id).collect())
}

/// Whether `pattern` (a spawn-site path suffix, optionally with `:line` or
/// `:line:col`, or a function path prefix) matches `task`.
fn ignores(task: &TaskView, pattern: &str) -> bool {
    let site = task.site();
    let candidates = [
        site.file.clone(),
        format!("{}:{}", site.file, site.line),
        format!("{}:{}:{}", site.file, site.line, site.column),
    ];
    let suffix_match = candidates.iter().any(|candidate| {
        candidate
            .strip_suffix(pattern)
            .is_some_and(|rest| rest.is_empty() || rest.ends_with('/') || rest.ends_with('\\'))
    });
    suffix_match
        || task.stack.is_some_and(|stack| {
            crate::symbolize::resolve(stack)
                .iter()
                .any(|frame| frame.function.starts_with(pattern))
        })
}

/// Groups tasks by spawn site and spawn call (most tasks first, then by
/// location; inside a group oldest first) and resolves their stacks into a
/// shared table.
pub(crate) fn group(
    tasks: Vec<TaskView>,
    parked: &FxHashMap<u64, ParkedAt>,
) -> (Vec<SiteGroup>, Vec<Stack>) {
    let mut resolved: FxHashMap<StackId, Vec<Frame>> = FxHashMap::default();
    let mut by_site: BTreeMap<GroupKey, (Option<Frame>, Vec<TaskView>)> = BTreeMap::new();
    for task in tasks {
        let site = task.site();
        let frames = task.stack.map(|stack| {
            resolved
                .entry(stack)
                .or_insert_with(|| crate::symbolize::resolve(stack))
        });
        let call = frames.and_then(|frames| spawn_call(&site, frames));
        let key = (site, call.as_ref().map(CallKey::of));
        by_site
            .entry(key)
            .or_insert_with(|| (call, Vec::new()))
            .1
            .push(task);
    }
    let mut stacks: Vec<Stack> = Vec::new();
    let mut stack_index: FxHashMap<StackId, usize> = FxHashMap::default();
    let mut groups: Vec<SiteGroup> = by_site
        .into_iter()
        .map(|((site, _), (spawn_call, mut tasks))| {
            tasks.sort_by(|a, b| b.age_ms.cmp(&a.age_ms).then(a.id.cmp(&b.id)));
            let entries = tasks
                .iter()
                .map(|task| TaskEntry {
                    id: task.id.get(),
                    name: crate::names::name_of(task.id.get()),
                    age_ms: task.age_ms,
                    spawned_by: task.spawned_by.clone(),
                    label: task.label.as_deref().map(str::to_owned),
                    stack: task.stack.map(|stack| {
                        *stack_index.entry(stack).or_insert_with(|| {
                            stacks.push(Stack {
                                frames: resolved.get(&stack).cloned().unwrap_or_default(),
                            });
                            stacks.len() - 1
                        })
                    }),
                    parked_at: parked.get(&task.id.get()).cloned(),
                    liveness: task.liveness,
                })
                .collect::<Vec<_>>();
            SiteGroup {
                site,
                spawn_call,
                count: entries.len(),
                oldest_age_ms: entries.first().map_or(0, |t| t.age_ms),
                tasks: entries,
            }
        })
        .collect();
    // BTreeMap already ordered by location; a stable sort keeps that as the
    // tie-breaker.
    groups.sort_by_key(|g| std::cmp::Reverse(g.count));
    (groups, stacks)
}

/// What a site group is keyed by: the reported site and the spawn call.
type GroupKey = (SourceLocation, Option<CallKey>);

/// Orders and distinguishes spawn calls by position, then function.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct CallKey(Option<String>, Option<u32>, String);

impl CallKey {
    fn of(frame: &Frame) -> CallKey {
        CallKey(frame.file.clone(), frame.line, frame.function.clone())
    }
}

/// The code that called into tokio's `spawn` — the innermost user frame of
/// the spawn backtrace — when it is somewhere else than the reported `site`,
/// which happens when `spawn` is wrapped in `#[track_caller]` helpers.
fn spawn_call(site: &SourceLocation, frames: &[Frame]) -> Option<Frame> {
    let innermost = frames.first()?;
    let at_site =
        innermost.file.as_deref() == Some(site.file.as_str()) && innermost.line == Some(site.line);
    // A frame without a position cannot be compared: say nothing.
    (innermost.file.is_some() && innermost.line.is_some() && !at_site).then(|| innermost.clone())
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Live tasks per spawn site, most first (ties by site): a registry walk
/// without symbolization, cheap enough for every metrics scrape.
pub(crate) fn live_by_site(tracker: &Tracker) -> Vec<(SourceLocation, usize)> {
    let mut counts: FxHashMap<&'static Location<'static>, usize> = FxHashMap::default();
    tracker.inner.registry.for_each(|_, record, _| {
        *counts.entry(record.site).or_default() += 1;
    });
    let mut sites: Vec<(SourceLocation, usize)> = counts
        .into_iter()
        .map(|(site, count)| (source_location(site), count))
        .collect();
    sites.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    sites
}

pub(crate) fn snapshot(tracker: &Tracker) -> Snapshot {
    let tasks = tasks(tracker, None, None);
    let live = tasks.len();
    let (sites, stacks) = group(tasks, &FxHashMap::default());
    Snapshot {
        schema_version: SCHEMA_VERSION,
        kind: "snapshot".to_owned(),
        captured_at_unix_ms: unix_ms(),
        live,
        sites,
        stacks,
    }
}
