//! The data leakcheck hands to people and tools: [`LeakReport`] (what a failing
//! scope leaked) and [`Snapshot`] (what a runtime has alive right now), both
//! serializable with a [`SCHEMA_VERSION`], and the text rendering of a report.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Version of the JSON layout of [`LeakReport`] and [`Snapshot`].
///
/// Bumped whenever a field changes meaning or disappears; readers must reject
/// versions they do not know.
///
/// Version 2 added `SiteGroup::spawn_call` (site groups are keyed by the pair
/// reported site, spawn call) and made `TaskEntry::parked_at` a [`ParkedAt`]
/// (one frame list per trace, with what was cut) instead of one string, and
/// added `TaskEntry::liveness`.
///
/// Version 3 added `LeakReport::mode` (a `warn` report is a warning, not a
/// failure), `LeakReport::subject` (a test or a `verify_none()` scope) and
/// `TaskEntry::name`.
pub const SCHEMA_VERSION: u32 = 3;

/// What a [`LeakReport`] checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Subject {
    /// A `#[leakcheck::test]` body.
    #[default]
    Test,
    /// The code between [`crate::verify_none`] and its verification.
    Scope,
}

impl Subject {
    /// Who spawned a task from outside any task.
    fn code(self) -> &'static str {
        match self {
            Subject::Test => "the test body",
            Subject::Scope => "the scope's code",
        }
    }

    /// When the grace began.
    fn end(self) -> &'static str {
        match self {
            Subject::Test => "the body returned",
            Subject::Scope => "the scope ended",
        }
    }
}

/// A source position, relative to the workspace root when it lies inside it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SourceLocation {
    /// File path, workspace-relative where possible.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One resolved frame of a spawn backtrace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Frame {
    /// Demangled function path without the hash suffix.
    pub function: String,
    /// Source file, workspace-relative where possible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// 1-based line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.function)?;
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, " at {file}:{line}"),
            (Some(file), None) => write!(f, " at {file}"),
            _ => Ok(()),
        }
    }
}

/// One live (or leaked) task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEntry {
    /// tokio's task id (`tokio::task::Id`), unique within the process.
    pub id: u64,
    /// Milliseconds since the task was spawned.
    pub age_ms: u64,
    /// The spawning task first, then its spawner, and so on. Empty when the
    /// task was spawned from outside any task (a `block_on` body, such as a
    /// test body, or another thread).
    #[serde(default)]
    pub spawned_by: Vec<u64>,
    /// The name it was spawned with (`tokio::task::Builder::name`), when a
    /// `leakcheck::TaskNames` layer saw the spawn (schema version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The label active where the task (or one of its ancestors) was spawned,
    /// such as a request id; see [`crate::Labeled`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Index into the document's `stacks` table: the task's spawn backtrace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<usize>,
    /// Where the task is parked now, from tokio's task dump, if one was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked_at: Option<ParkedAt>,
    /// Why it is still alive, from tokio's poll hooks during the grace (leak
    /// reports only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<Liveness>,
}

/// What a leaked task did while the scope waited out its grace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LivenessClass {
    /// Polled at most once during the grace (which may be its first poll):
    /// waiting for a wake that has not come (see where it is parked).
    Idle,
    /// Polled twice or more during the grace, or in a poll now: a loop, an
    /// interval, a task that wakes itself.
    Busy,
    /// Inside one poll for longer than the grace: it blocks a worker thread.
    Blocking,
    /// Spawned during the grace and never run: the runtime had no thread to
    /// spare for it.
    NeverPolled,
}

/// A leaked task's liveness class and the poll facts behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liveness {
    /// The class.
    pub class: LivenessClass,
    /// Polls that ended during the grace.
    pub polls_during_grace: u64,
    /// Milliseconds since the end of its last poll during the grace; absent
    /// when it was not polled then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_last_poll_ms: Option<u64>,
    /// Milliseconds it has been inside the poll it is in now, if it is in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_poll_ms: Option<u64>,
}

impl fmt::Display for Liveness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let times = |n: u64| {
            if n == 1 {
                "once".to_owned()
            } else {
                format!("{n} times")
            }
        };
        match self.class {
            LivenessClass::Idle => match self.since_last_poll_ms {
                Some(ms) => write!(
                    f,
                    "idle: polled once during the grace ({ms} ms ago), then waiting for a wake that has not come"
                ),
                None => f.write_str(
                    "idle: not polled during the grace, waiting for a wake that has not come",
                ),
            },
            LivenessClass::Busy => {
                write!(
                    f,
                    "busy: polled {} during the grace",
                    times(self.polls_during_grace)
                )?;
                match (self.in_poll_ms, self.since_last_poll_ms) {
                    (Some(ms), _) => write!(f, ", in a poll for {ms} ms now")?,
                    (None, Some(ms)) => write!(f, ", last {ms} ms ago")?,
                    (None, None) => {}
                }
                f.write_str(" (a loop, an interval or a task that wakes itself)")
            }
            LivenessClass::Blocking => write!(
                f,
                "blocking: inside one poll for {} ms, longer than the grace: it blocks a worker thread",
                self.in_poll_ms.unwrap_or_default()
            ),
            LivenessClass::NeverPolled => {
                f.write_str("never polled: spawned during the grace and not run since")
            }
        }
    }
}

/// Where a task is parked, from tokio's task dump: one trace per future the
/// task waits on (a `join!` or `select!` waits on several), each innermost
/// await first, trimmed to the user's frames. Traces are sorted (tokio's own
/// order changes from poll to poll), so reports stay deterministic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedAt {
    /// The traces, each a call stack of its own.
    pub traces: Vec<Vec<Frame>>,
    /// Frames cut from the end of traces that were too long (summed).
    #[serde(default)]
    pub omitted_frames: usize,
    /// Traces cut after the first ones.
    #[serde(default)]
    pub omitted_traces: usize,
}

/// The tasks that share one spawn site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteGroup {
    /// Where tokio says the tasks were spawned: the `#[track_caller]`
    /// location of the `spawn` call, which is the caller's line when `spawn`
    /// is wrapped in `#[track_caller]` helpers.
    pub site: SourceLocation,
    /// The innermost frame of the spawn backtrace (the code that called into
    /// tokio's `spawn`) when it is not at `site`: the real `spawn` line
    /// inside a `#[track_caller]` helper. Tasks are grouped by the pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spawn_call: Option<Frame>,
    /// How many tasks of this site are in the document.
    pub count: usize,
    /// Age of the oldest of them.
    pub oldest_age_ms: u64,
    /// The tasks, oldest first (ascending id on ties).
    pub tasks: Vec<TaskEntry>,
}

/// A spawn backtrace, trimmed to the user's frames (innermost first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stack {
    /// Frames, innermost (the caller of `spawn`) first.
    pub frames: Vec<Frame>,
}

/// Live tasks of a tracked runtime at one instant, grouped by spawn site.
///
/// Produced by [`crate::Tracker::snapshot`]; served by the reference server's
/// `/debug/tasks`; compared by `leakcheck diff`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Always [`SCHEMA_VERSION`] when written by this version.
    pub schema_version: u32,
    /// Always `"snapshot"`.
    pub kind: String,
    /// Wall-clock time of capture, Unix milliseconds.
    pub captured_at_unix_ms: u64,
    /// Number of live tracked tasks.
    pub live: usize,
    /// Groups, largest count first, then by site.
    pub sites: Vec<SiteGroup>,
    /// Spawn backtraces referenced by `TaskEntry::stack`.
    #[serde(default)]
    pub stacks: Vec<Stack>,
}

/// Tasks that outlived the scope that spawned them.
///
/// Rendered for people by [`Display`](fmt::Display) and for machines by serde
/// (JSON, see [`SCHEMA_VERSION`]). Site groups are ordered deterministically:
/// most tasks first, then by file, line and column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeakReport {
    /// Always [`SCHEMA_VERSION`] when written by this version.
    pub schema_version: u32,
    /// Always `"leak_report"`.
    pub kind: String,
    /// The test (or scope) name, e.g. `my_crate::tests::handles_cancel`.
    pub test: String,
    /// Wall-clock time the report was made, Unix milliseconds.
    pub created_at_unix_ms: u64,
    /// How long leakcheck waited for tasks to finish after the scope ended.
    pub grace_ms: u64,
    /// Number of leaked tasks (summed over `sites`, or counted by the
    /// runtime in degraded mode).
    pub leaked: usize,
    /// Tasks matched by `ignore` patterns and therefore not counted.
    #[serde(default)]
    pub ignored: usize,
    /// True when tokio's hooks were unavailable (no `--cfg tokio_unstable`):
    /// only a count is known, `sites` is empty.
    #[serde(default)]
    pub degraded: bool,
    /// Why the check was degraded, and what to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded_reason: Option<String>,
    /// `fail`: the leak failed its test; `warn`: it was only reported (a
    /// warning). Absent before schema version 3: `fail`.
    #[serde(default)]
    pub mode: crate::Mode,
    /// A test or a `verify_none()` scope. Absent before schema version 3:
    /// `test`.
    #[serde(default)]
    pub subject: Subject,
    /// Leaked tasks grouped by spawn site.
    pub sites: Vec<SiteGroup>,
    /// Spawn backtraces referenced by `TaskEntry::stack`.
    #[serde(default)]
    pub stacks: Vec<Stack>,
    /// Why no task has a `parked_at`: the task dump was wanted but not taken
    /// (too many live tasks for tokio's dump to be safe, a worker stuck in a
    /// poll, a dump that timed out). Absent when a dump was taken or the
    /// build has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked_at_missing: Option<String>,
}

/// How to get spawn sites: run with tokio's hooks, for the test build only.
pub const TOKIO_UNSTABLE_HINT: &str = "run the tests with `cargo leakcheck test` (`cargo install leakcheck-cli`), or add `--cfg tokio_unstable` to RUSTFLAGS for the test run, to see each leaked task's spawn site";

impl LeakReport {
    /// The JSON form, pretty-printed.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a LeakReport always serializes")
    }
}

impl fmt::Display for LeakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.leaked == 1 { "task" } else { "tasks" };
        writeln!(
            f,
            "leakcheck: {} leaked {plural} in `{}` (still running {} ms after {})",
            self.leaked,
            self.test,
            self.grace_ms,
            self.subject.end()
        )?;
        if self.degraded {
            writeln!(
                f,
                "  spawn sites unknown: only the runtime's live task count was checked"
            )?;
            let reason = self
                .degraded_reason
                .as_deref()
                .unwrap_or(TOKIO_UNSTABLE_HINT);
            return writeln!(f, "hint: {reason}");
        }
        for group in &self.sites {
            let plural = if group.count == 1 { "task" } else { "tasks" };
            writeln!(f)?;
            writeln!(f, "── {} · {} {plural} ──", group.site, group.count)?;
            if let Some(call) = &group.spawn_call {
                writeln!(
                    f,
                    "  spawn call: {call} (the site above is its #[track_caller] caller)"
                )?;
            }
            // The oldest task stands for the group; the others are listed by id.
            let Some(first) = group.tasks.first() else {
                continue;
            };
            write!(f, "  task {}", first.id)?;
            if let Some(name) = &first.name {
                write!(f, " \"{name}\"")?;
            }
            write!(f, " · age {} ms · spawned by ", first.age_ms)?;
            write_chain(f, &first.spawned_by, self.subject)?;
            if let Some(label) = &first.label {
                write!(f, " · label {label}")?;
            }
            writeln!(f)?;
            if let Some(liveness) = &first.liveness {
                writeln!(f, "  {liveness}")?;
            }
            if group.tasks.len() > 1 {
                let others: Vec<String> =
                    group.tasks[1..].iter().map(|t| t.id.to_string()).collect();
                let plural = if others.len() == 1 { "task" } else { "tasks" };
                writeln!(f, "  also {plural} {}", others.join(", "))?;
            }
            if let Some(stack) = first.stack.and_then(|i| self.stacks.get(i)) {
                writeln!(f, "  spawn backtrace:")?;
                write_folded(f, &stack.frames)?;
            }
            if let Some(parked) = &first.parked_at {
                write_parked(f, parked)?;
            }
        }
        if let Some(why) = &self.parked_at_missing {
            writeln!(f)?;
            writeln!(f, "no \"parked at\": {why}")?;
        }
        writeln!(f)?;
        match self.sites.first() {
            Some(group) => writeln!(
                f,
                "hint: the task spawned at {} is still running; keep its JoinHandle and await or abort it before {} (or cancel it with a token), or add `ignore = \"{}\"` if it is meant to outlive {}",
                group.site,
                match self.subject {
                    Subject::Test => "the test returns",
                    Subject::Scope => "the scope ends",
                },
                narrowest_ignore(&group.site),
                match self.subject {
                    Subject::Test => "the test",
                    Subject::Scope => "the scope",
                },
            ),
            None => Ok(()),
        }
    }
}

/// The `ignore` pattern that matches this spawn site and nothing else in its
/// file (`path:line`; the column adds nothing, one line rarely spawns twice),
/// so following the hint does not hide other leaks of the same file.
pub(crate) fn narrowest_ignore(site: &SourceLocation) -> String {
    format!("{}:{}", site.file, site.line)
}

/// Longest run of frames folded as one repeated block (mutual recursion,
/// layers that alternate).
const MAX_FOLDED_PERIOD: usize = 4;

/// A stretch of a backtrace: `block` repeated `times` times from `start`.
#[derive(Debug, PartialEq, Eq)]
struct Run<'a> {
    start: usize,
    block: &'a [Frame],
    times: usize,
}

/// Splits `frames` into runs, folding back-to-back repeats of a block of up
/// to [`MAX_FOLDED_PERIOD`] frames; at each position the block covering the
/// most frames wins, the shortest on ties.
fn fold(frames: &[Frame]) -> Vec<Run<'_>> {
    let mut runs = Vec::new();
    let mut start = 0;
    while start < frames.len() {
        let mut best = Run {
            start,
            block: &frames[start..=start],
            times: 1,
        };
        for period in 1..=MAX_FOLDED_PERIOD.min(frames.len() - start) {
            let block = &frames[start..start + period];
            let times = frames[start..]
                .chunks_exact(period)
                .take_while(|chunk| *chunk == block)
                .count();
            if times >= 2 && period * times > best.block.len() * best.times {
                best = Run {
                    start,
                    block,
                    times,
                };
            }
        }
        start += best.block.len() * best.times;
        runs.push(best);
    }
    runs
}

/// A backtrace, numbered as in the JSON, with repeated frames folded.
fn write_folded(f: &mut fmt::Formatter<'_>, frames: &[Frame]) -> fmt::Result {
    for run in fold(frames) {
        let end = run.start + run.block.len() * run.times - 1;
        match run.block {
            [frame] if run.times == 1 => writeln!(f, "    {}: {frame}", run.start)?,
            [frame] => writeln!(f, "    {}–{end}: {frame} ×{}", run.start, run.times)?,
            block => {
                writeln!(
                    f,
                    "    {}–{end}: these {} frames ×{}:",
                    run.start,
                    block.len(),
                    run.times
                )?;
                for frame in block {
                    writeln!(f, "      {frame}")?;
                }
            }
        }
    }
    Ok(())
}

fn write_parked(f: &mut fmt::Formatter<'_>, parked: &ParkedAt) -> fmt::Result {
    let single = parked.traces.len() == 1 && parked.omitted_traces == 0;
    if single {
        writeln!(f, "  parked at:")?;
    } else {
        let total = parked.traces.len() + parked.omitted_traces;
        writeln!(f, "  parked at ({total} traces, one per awaited future):")?;
    }
    let indent = if single { "    " } else { "      " };
    for (i, trace) in parked.traces.iter().enumerate() {
        if !single {
            writeln!(f, "    trace {}:", i + 1)?;
        }
        for frame in trace {
            writeln!(f, "{indent}{frame}")?;
        }
    }
    if parked.omitted_frames > 0 {
        let plural = if parked.omitted_frames == 1 {
            "frame"
        } else {
            "frames"
        };
        writeln!(f, "    … {} more {plural} cut", parked.omitted_frames)?;
    }
    if parked.omitted_traces > 0 {
        let plural = if parked.omitted_traces == 1 {
            "trace"
        } else {
            "traces"
        };
        writeln!(f, "    … {} more {plural} cut", parked.omitted_traces)?;
    }
    Ok(())
}

fn write_chain(f: &mut fmt::Formatter<'_>, chain: &[u64], subject: Subject) -> fmt::Result {
    for id in chain {
        write!(f, "task {id} ← ")?;
    }
    f.write_str(subject.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str) -> Frame {
        Frame {
            function: function.to_owned(),
            file: Some("src/lib.rs".to_owned()),
            line: Some(7),
        }
    }

    #[test]
    fn repeated_frames_and_blocks_are_folded() {
        let [a, b, c] = ["a", "b", "c"].map(frame);
        let frames = vec![
            c.clone(),
            a.clone(),
            a.clone(),
            a.clone(),
            b.clone(),
            c.clone(),
            b.clone(),
            c.clone(),
            a.clone(),
        ];
        struct Show<'a>(&'a [Frame]);
        impl fmt::Display for Show<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_folded(f, self.0)
            }
        }
        assert_eq!(
            Show(&frames).to_string(),
            "    0: c at src/lib.rs:7
    1–3: a at src/lib.rs:7 ×3
    4–7: these 2 frames ×2:
      b at src/lib.rs:7
      c at src/lib.rs:7
    8: a at src/lib.rs:7
"
        );
        assert_eq!(Show(&[]).to_string(), "");
    }

    #[test]
    fn parked_at_marks_what_was_cut() {
        let parked = ParkedAt {
            traces: vec![vec![frame("a::wait")], vec![frame("b::wait")]],
            omitted_frames: 1,
            omitted_traces: 3,
        };
        struct Show<'a>(&'a ParkedAt);
        impl fmt::Display for Show<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_parked(f, self.0)
            }
        }
        assert_eq!(
            Show(&parked).to_string(),
            "  parked at (5 traces, one per awaited future):
    trace 1:
      a::wait at src/lib.rs:7
    trace 2:
      b::wait at src/lib.rs:7
    … 1 more frame cut
    … 3 more traces cut
"
        );
        let single = ParkedAt {
            traces: vec![vec![frame("a::wait")]],
            omitted_frames: 0,
            omitted_traces: 0,
        };
        assert_eq!(
            Show(&single).to_string(),
            "  parked at:\n    a::wait at src/lib.rs:7\n"
        );
    }
}
