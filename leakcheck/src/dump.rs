//! "Parked at": where each leaked task is waiting now, from tokio's task dump
//! (Linux on x86, x86_64, aarch64 and s390x with `--cfg tokio_unstable` and
//! the `taskdump` feature; elsewhere reports simply omit it).

use rustc_hash::FxHashMap;

use crate::report::{Frame, ParkedAt};

/// How long a dump may take: on a multi-thread runtime every worker must
/// check in, and a worker stuck in blocking code never does.
#[cfg(leakcheck_taskdump)]
const DUMP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Most live tasks a runtime may have for a task dump to be taken. tokio
/// traces every task of the runtime, not only the leaked ones: measured with
/// `scripts/dump-scale.sh` (BENCHMARKS.md), ~0.05–0.1 ms per task in a debug
/// build, so 10,000 tasks take ~0.5–1.1 s, within the 2 s dump timeout.
pub const MAX_DUMPED_TASKS: usize = 10_000;

/// Most live tasks a multi-thread runtime may have for its task dump to be
/// taken. tokio's multi-thread dump first moves every worker's queued tasks
/// into one queue of 256 slots whose `steal_into` gives up once half of it is
/// full, and its `steal_all` loops until the workers' queues are empty: with
/// more than 128 tasks queued it spins forever, and no timeout can interrupt
/// it (the whole runtime stops). Queue depths cannot be checked beforehand —
/// a dump wakes every task it traced, and a burst of wakes fills a worker's
/// queue — so only a runtime with at most 128 live tasks, which can never
/// have more than 128 queued, is dumped. `scripts/dump-scale.sh`
/// (`dump_scale multi 300 busy 10`) wedges 1–2 runs in 8; 128 never did.
pub const MAX_DUMPED_TASKS_MULTI_THREAD: usize = 128;

/// Multi-thread runtimes whose one task dump was taken (tokio runtime ids;
/// never reused within a process). tokio 1.54's workers meet at a barrier to
/// trace, waiting 250 ms for each other; a worker that gives up leaves the
/// barrier miscounted for good (`Barrier::wait_timeout` keeps its arrival),
/// and the next trace then leaves one worker waiting for ever — the runtime
/// loses a worker and never shuts down. A worker gives up whenever it traces
/// alone, which happens right after a dump (a worker still sees the request
/// and starts one more trace). So a multi-thread runtime gets one dump, and
/// only while no other task is inside a poll (a busy worker is the other way
/// to make one give up): the registry stress and scope isolation tests hung
/// in 1 run in 2–4 with a dump per leaking scope.
#[cfg(tokio_unstable)]
static DUMPED_MULTI_THREAD: parking_lot::Mutex<Vec<tokio::runtime::Id>> =
    parking_lot::Mutex::new(Vec::new());

/// Whether a task dump of `handle`'s runtime may be taken now: `Err` says why
/// not — more than [`MAX_DUMPED_TASKS`] live tasks; on a multi-thread runtime
/// more than [`MAX_DUMPED_TASKS_MULTI_THREAD`], or its one dump already taken
/// (see above). `Ok` on a multi-thread runtime uses that one dump up: call it
/// right before `Handle::dump`, as leakcheck's reports and the reference
/// server's `/debug/dump` do. Callers on a multi-thread runtime must also
/// know that no other task is inside a poll (leakcheck checks its poll
/// hooks' record).
pub fn claim_task_dump(handle: &tokio::runtime::Handle) -> Result<(), String> {
    claim(handle, None).map_err(Refused::into_reason)
}

/// Why [`claim`] refused a dump.
enum Refused {
    /// For now: this task was inside a poll.
    Busy(u64),
    /// For good, or until the runtime has fewer live tasks: the reason.
    Unsafe(String),
}

impl Refused {
    fn into_reason(self) -> String {
        match self {
            Refused::Busy(task) => format!(
                "task {task} stayed inside a poll: a busy worker can wedge tokio's multi-thread task dump; try again when the runtime is idle"
            ),
            Refused::Unsafe(reason) => reason,
        }
    }
}

/// [`claim_task_dump`], also refused on a multi-thread runtime while `busy`
/// (a task other than the caller) is inside a poll. The lasting refusals
/// come first, so a caller who retries is not told to wait for nothing.
fn claim(handle: &tokio::runtime::Handle, busy: Option<u64>) -> Result<(), Refused> {
    let live = handle.metrics().num_alive_tasks();
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        if live > MAX_DUMPED_TASKS {
            return Err(Refused::Unsafe(format!(
                "{live} live tasks: a task dump is only taken with at most {MAX_DUMPED_TASKS} (tokio traces every live task)"
            )));
        }
        return Ok(());
    }
    if live > MAX_DUMPED_TASKS_MULTI_THREAD {
        return Err(Refused::Unsafe(format!(
            "{live} live tasks: a task dump is only taken with at most {MAX_DUMPED_TASKS_MULTI_THREAD} on a multi-thread runtime (above it tokio's dump can spin forever and stop the runtime)"
        )));
    }
    #[cfg(tokio_unstable)]
    {
        let mut dumped = DUMPED_MULTI_THREAD.lock();
        if dumped.contains(&handle.id()) {
            return Err(Refused::Unsafe("this multi-thread runtime has had its one task dump (a second can wedge one of its workers for good in tokio 1.54)".to_owned()));
        }
        if let Some(task) = busy {
            return Err(Refused::Busy(task));
        }
        dumped.push(handle.id());
        Ok(())
    }
    #[cfg(not(tokio_unstable))]
    {
        let _ = busy;
        Err(Refused::Unsafe(
            "task dumps need --cfg tokio_unstable".to_owned(),
        ))
    }
}

/// How long a dump waits for the other tasks of a multi-thread runtime to
/// leave their polls: a connection closing or a timer firing is over in
/// well under a millisecond; a task that polls for longer is busy, and the
/// dump is refused.
#[cfg(leakcheck_taskdump)]
const IDLE_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// Frames kept per parked trace; deeper frames are counted, not shown.
const MAX_TRACE_FRAMES: usize = 16;

/// Traces kept per task (one per awaited leaf future); more are counted.
const MAX_TRACES: usize = 8;

/// tokio's task dump of the current runtime under the rules above: the
/// runtime may be dumped ([`claim_task_dump`]), on a multi-thread runtime no
/// other task is inside a poll (`busy` names one that is, from the poll
/// hooks: a busy worker can make another give up on the trace barrier; it
/// is asked again every millisecond for up to [`IDLE_WAIT`]), and every
/// worker checks in within [`DUMP_TIMEOUT`]. `Err` says which rule refused.
#[cfg(leakcheck_taskdump)]
async fn take(busy: impl Fn() -> Option<u64>) -> Result<tokio::runtime::Dump, String> {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return Err("outside a tokio runtime, so no task dump could be taken".to_owned());
    };
    let idle_by = std::time::Instant::now() + IDLE_WAIT;
    loop {
        match claim(&handle, busy()) {
            Ok(()) => break,
            Err(Refused::Busy(_)) if std::time::Instant::now() < idle_by => {
                crate::clock::sleep(std::time::Duration::from_millis(1)).await;
            }
            Err(refused) => return Err(refused.into_reason()),
        }
    }
    let deadline = std::time::Instant::now() + DUMP_TIMEOUT;
    crate::clock::within(deadline, handle.dump())
        .await
        .ok_or_else(|| {
            format!(
                "tokio's task dump did not finish within {} s (a worker did not check in)",
                DUMP_TIMEOUT.as_secs()
            )
        })
}

/// The task dump of the current runtime as text, one `task ID:` block per
/// task with its trace, as tokio prints it; see [`take`] for when it is
/// refused.
#[cfg(leakcheck_taskdump)]
pub(crate) async fn text(busy: impl Fn() -> Option<u64>) -> Result<String, String> {
    use std::fmt::Write as _;
    let dump = take(busy).await?;
    let mut text = String::new();
    for task in dump.tasks().iter() {
        let _ = writeln!(text, "task {}:\n{}\n", task.id(), task.trace());
    }
    Ok(text)
}

/// Without tokio's task dump there is no text to give.
#[cfg(not(leakcheck_taskdump))]
pub(crate) async fn text(_busy: impl Fn() -> Option<u64>) -> Result<String, String> {
    Err(NO_TASK_DUMP.to_owned())
}

/// Why a build has no task dump.
#[cfg(not(leakcheck_taskdump))]
const NO_TASK_DUMP: &str = "task dumps need --cfg tokio_unstable, leakcheck's `taskdump` feature and Linux on x86, x86_64, aarch64 or s390x";

/// Where each task in `ids` is parked, trimmed to the user's frames, or why
/// no task dump was taken (for the report to say). `busy`: a task other than
/// the caller inside a poll now (see [`take`]).
#[cfg(leakcheck_taskdump)]
pub(crate) async fn parked(
    ids: &[u64],
    busy: impl Fn() -> Option<u64>,
) -> Result<FxHashMap<u64, ParkedAt>, String> {
    let mut parked = FxHashMap::default();
    let dump = take(busy).await?;
    for task in dump.tasks().iter() {
        let id = crate::tracker::task_id(task.id()).get();
        if !ids.contains(&id) {
            continue;
        }
        let traces = task
            .trace()
            .resolve_backtraces()
            .iter()
            .map(|backtrace| {
                let mut frames: Vec<Frame> = Vec::new();
                for symbol in backtrace.frames().flat_map(|frame| frame.symbols()) {
                    let Some(name) = symbol.name_demangled() else {
                        continue;
                    };
                    let file = symbol.filename();
                    let function = crate::modules::qualify(strip_hash(name).to_owned(), file);
                    if crate::symbolize::is_plumbing(&function) {
                        continue;
                    }
                    let frame = Frame {
                        function,
                        file: file.map(|file| crate::paths::relative(&file.to_string_lossy())),
                        line: symbol.lineno(),
                    };
                    if frames.last() != Some(&frame) {
                        frames.push(frame);
                    }
                }
                frames
            })
            .collect();
        if let Some(at) = limited(traces) {
            parked.insert(id, at);
        }
    }
    Ok(parked)
}

/// Without tokio's task dump there is nothing to add (and nothing to
/// explain: the build chose it).
#[cfg(not(leakcheck_taskdump))]
pub(crate) async fn parked(
    _ids: &[u64],
    _busy: impl Fn() -> Option<u64>,
) -> Result<FxHashMap<u64, ParkedAt>, String> {
    Ok(FxHashMap::default())
}

/// Keeps the traces separate, drops empty and repeated ones (tokio traces
/// each leaf future; two leaves in one user frame read the same), sorts them
/// (tokio's order rotates with `join!`'s fairness), and cuts
/// at [`MAX_TRACES`] traces of [`MAX_TRACE_FRAMES`] frames, counting what
/// was cut. `None` when nothing is left.
fn limited(traces: Vec<Vec<Frame>>) -> Option<ParkedAt> {
    let mut kept: Vec<Vec<Frame>> = Vec::new();
    for trace in traces {
        if !trace.is_empty() && !kept.contains(&trace) {
            kept.push(trace);
        }
    }
    if kept.is_empty() {
        return None;
    }
    kept.sort();
    let omitted_traces = kept.len().saturating_sub(MAX_TRACES);
    kept.truncate(MAX_TRACES);
    let mut omitted_frames = 0;
    for trace in &mut kept {
        omitted_frames += trace.len().saturating_sub(MAX_TRACE_FRAMES);
        trace.truncate(MAX_TRACE_FRAMES);
    }
    Some(ParkedAt {
        traces: kept,
        omitted_frames,
        omitted_traces,
    })
}

/// `foo::bar::h0123456789abcdef` → `foo::bar`.
#[cfg(leakcheck_taskdump)]
fn strip_hash(name: &str) -> &str {
    match name.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            head
        }
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(prefix: &str, depth: usize) -> Vec<Frame> {
        (0..depth)
            .map(|i| Frame {
                function: format!("{prefix}::f{i}"),
                file: Some("src/lib.rs".to_owned()),
                line: Some(i as u32 + 1),
            })
            .collect()
    }

    #[test]
    fn traces_stay_separate_and_cuts_are_counted() {
        let mut traces = vec![trace("b", 2), Vec::new(), trace("a", MAX_TRACE_FRAMES + 3)];
        traces.push(trace("b", 2));
        traces.extend((0..MAX_TRACES).map(|i| trace(&format!("c{i}"), 1)));
        let at = limited(traces).unwrap();
        assert_eq!(at.traces.len(), MAX_TRACES);
        assert_eq!(at.traces[0].len(), MAX_TRACE_FRAMES);
        assert_eq!(
            at.traces[1],
            trace("b", 2),
            "a second trace is not merged into the first"
        );
        assert_eq!(at.omitted_frames, 3);
        assert_eq!(
            at.omitted_traces, 2,
            "empty and repeated traces are dropped, not counted"
        );
    }

    #[test]
    fn no_user_frame_means_no_parked_at() {
        assert_eq!(limited(vec![Vec::new(), Vec::new()]), None);
    }
}
