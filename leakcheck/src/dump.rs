//! "Parked at": where each leaked task is waiting now, from tokio's task dump
//! (Linux on x86, x86_64, aarch64 and s390x with `--cfg tokio_unstable` and
//! the `taskdump` feature; elsewhere reports simply omit it).

use rustc_hash::FxHashMap;

/// How long a dump may take: on a multi-thread runtime every worker must
/// check in, and a worker stuck in blocking code never does.
#[cfg(leakcheck_taskdump)]
const DUMP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Most live tasks a runtime may have for a dump to be taken. tokio traces
/// every task of the runtime, not just the leaked ones, with every worker
/// stopped meanwhile; and on a multi-thread runtime its `steal_all` can spin
/// forever once more tasks are queued than a worker's local queue holds
/// (256), which no timeout can interrupt. Leak reports of small test scopes
/// keep their "parked at"; a runtime this busy goes without.
const MAX_DUMPED_TASKS: usize = 128;

/// Lines kept per parked trace.
#[cfg(leakcheck_taskdump)]
const MAX_LINES: usize = 8;

/// The parked trace of each task in `ids`, as indented text, innermost await
/// first, trimmed to the user's frames.
#[cfg(leakcheck_taskdump)]
pub(crate) async fn parked(ids: &[u64]) -> FxHashMap<u64, String> {
    let mut parked = FxHashMap::default();
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return parked;
    };
    if handle.metrics().num_alive_tasks() > MAX_DUMPED_TASKS {
        return parked;
    }
    let Ok(dump) = tokio::time::timeout(DUMP_TIMEOUT, handle.dump()).await else {
        return parked;
    };
    for task in dump.tasks().iter() {
        let id = crate::tracker::task_id(task.id()).get();
        if !ids.contains(&id) {
            continue;
        }
        let mut lines: Vec<String> = Vec::new();
        for backtrace in task.trace().resolve_backtraces() {
            for frame in backtrace.frames() {
                for symbol in frame.symbols() {
                    let Some(name) = symbol.name_demangled() else {
                        continue;
                    };
                    if crate::symbolize::is_plumbing(name) {
                        continue;
                    }
                    let name = strip_hash(name);
                    let line = match (symbol.filename(), symbol.lineno()) {
                        (Some(file), Some(line)) => {
                            format!(
                                "{name} at {}:{line}",
                                crate::paths::relative(&file.to_string_lossy())
                            )
                        }
                        _ => name.to_owned(),
                    };
                    if lines.last() != Some(&line) {
                        lines.push(line);
                    }
                }
            }
        }
        lines.truncate(MAX_LINES);
        if !lines.is_empty() {
            parked.insert(id, lines.join("\n"));
        }
    }
    parked
}

/// Without tokio's task dump there is nothing to add.
#[cfg(not(leakcheck_taskdump))]
pub(crate) async fn parked(_ids: &[u64]) -> FxHashMap<u64, String> {
    FxHashMap::default()
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
