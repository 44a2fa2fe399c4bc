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
/// build, so 10,000 tasks take ~0.5–1.1 s, within [`DUMP_TIMEOUT`].
pub const MAX_DUMPED_TASKS: usize = 10_000;

/// Most runnable tasks a multi-thread runtime may have queued for a task dump
/// to be taken. Above ~128 queued tasks on two workers tokio's dump never
/// returns — its `steal_all` spins, and no timeout can interrupt it
/// (reproduced by `cargo run -p leakcheck --example dump_scale -- multi 200
/// runnable`) — so leakcheck keeps well below what was measured to work.
/// Tasks parked on I/O, timers or channels are not queued and do not count.
pub const MAX_QUEUED_FOR_DUMP: usize = 64;

/// Why a task dump of `handle`'s runtime must not be taken now, or `None`:
/// more than [`MAX_DUMPED_TASKS`] live tasks, or on a multi-thread runtime
/// more than [`MAX_QUEUED_FOR_DUMP`] runnable ones (unless so few tasks are
/// live that even all of them queued stay under it). The reference server's
/// `/debug/dump` asks this too.
pub fn dump_refusal(handle: &tokio::runtime::Handle) -> Option<String> {
    let metrics = handle.metrics();
    let live = metrics.num_alive_tasks();
    if live > MAX_DUMPED_TASKS {
        return Some(format!(
            "{live} live tasks: a task dump is only taken with at most {MAX_DUMPED_TASKS}"
        ));
    }
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread
        || live <= MAX_QUEUED_FOR_DUMP
    {
        return None;
    }
    let queued = queued_tasks(&metrics);
    (queued > MAX_QUEUED_FOR_DUMP).then(|| {
        format!(
            "{queued} runnable tasks queued: tokio's task dump of a multi-thread runtime never returns with many queued (at most {MAX_QUEUED_FOR_DUMP} are allowed)"
        )
    })
}

/// Tasks waiting in the runtime's queues: the global one and every worker's.
fn queued_tasks(metrics: &tokio::runtime::RuntimeMetrics) -> usize {
    let global = metrics.global_queue_depth();
    #[cfg(tokio_unstable)]
    let local: usize = (0..metrics.num_workers())
        .map(|worker| metrics.worker_local_queue_depth(worker))
        .sum();
    // Without the cfg no dump can be taken at all; count what is known.
    #[cfg(not(tokio_unstable))]
    let local = 0;
    global + local
}

/// Frames kept per parked trace; deeper frames are counted, not shown.
const MAX_TRACE_FRAMES: usize = 16;

/// Traces kept per task (one per awaited leaf future); more are counted.
const MAX_TRACES: usize = 8;

/// Where each task in `ids` is parked, trimmed to the user's frames.
#[cfg(leakcheck_taskdump)]
pub(crate) async fn parked(ids: &[u64]) -> FxHashMap<u64, ParkedAt> {
    let mut parked = FxHashMap::default();
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return parked;
    };
    if dump_refusal(&handle).is_some() {
        return parked;
    }
    let deadline = std::time::Instant::now() + DUMP_TIMEOUT;
    let Some(dump) = crate::clock::within(deadline, handle.dump()).await else {
        return parked;
    };
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
                    if crate::symbolize::is_plumbing(name) {
                        continue;
                    }
                    let frame = Frame {
                        function: strip_hash(name).to_owned(),
                        file: symbol
                            .filename()
                            .map(|file| crate::paths::relative(&file.to_string_lossy())),
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
    parked
}

/// Without tokio's task dump there is nothing to add.
#[cfg(not(leakcheck_taskdump))]
pub(crate) async fn parked(_ids: &[u64]) -> FxHashMap<u64, ParkedAt> {
    FxHashMap::default()
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
