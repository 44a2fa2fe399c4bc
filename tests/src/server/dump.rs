//! The server's `/debug/dump` (tokio's task dump as text: one `task N:` block per task, each a
//! tree of frames, outermost first) parsed, and where its tasks are stuck.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::Serialize;

/// The server's own sources, workspace-relative.
const SERVER_SOURCES: &str = "server/src/";

/// One frame of a dumped task.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Frame {
    /// The function as tokio prints it (`leakcheck_server::upstream::Upstream::resolve`).
    pub function: String,
    /// Source file, workspace-relative when it is in the workspace.
    pub file: Option<String>,
    /// Line.
    pub line: Option<u32>,
}

impl Frame {
    /// `file:line`, when both are known.
    pub fn location(&self) -> Option<String> {
        Some(format!("{}:{}", self.file.as_deref()?, self.line?))
    }

    fn is_server(&self) -> bool {
        self.file
            .as_deref()
            .is_some_and(|file| file.starts_with(SERVER_SOURCES))
    }

    /// The server's read wrappers only forward to the socket, and hyper keeps a read pending
    /// on every connection, so such a frame names no step: its caller does (the TLS
    /// handshake, hyper's connection). The write wrapper stays: it is the write deadline.
    /// A debug build names the frame by its impl (`<… as tokio::io::async_read::AsyncRead>`),
    /// a release build (line tables only) by its method (`poll_read<…`).
    fn forwards_reads(&self) -> bool {
        self.function
            .contains(" as tokio::io::async_read::AsyncRead>")
            || self.function.starts_with("poll_read")
    }

    /// A write wrapper's frame (named as [`Frame::forwards_reads`] says, `AsyncWrite` and
    /// `poll_write…` / `poll_flush` / `poll_shutdown`).
    fn writes(&self) -> bool {
        self.function
            .contains(" as tokio::io::async_write::AsyncWrite>")
            || ["poll_write", "poll_flush", "poll_shutdown"]
                .iter()
                .any(|method| self.function.starts_with(method))
    }

    /// tokio's and the standard library's own frames (the runtime, the dump's capture,
    /// `Future::poll` shims): never where a bug is.
    fn is_runtime(&self) -> bool {
        let file = self.file.as_deref().unwrap_or_default();
        ["tokio::", "std::", "core::", "alloc::"]
            .iter()
            .any(|krate| {
                self.function.starts_with(krate) || self.function.starts_with(&format!("<{krate}"))
            })
            || file.starts_with("/rustc/")
            || file.contains("/tokio-1.")
    }
}

/// One root-to-leaf path of a task's tree: the frames, innermost first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Trace(pub Vec<Frame>);

impl Trace {
    /// The innermost frame that satisfies `wanted`, with its depth (0: the task's root).
    fn innermost(&self, wanted: impl Fn(&Frame) -> bool) -> Option<(usize, &Frame)> {
        let frames = &self.0;
        frames
            .iter()
            .enumerate()
            .find(|(_, frame)| frame.location().is_some() && wanted(frame))
            .map(|(index, frame)| (frames.len() - 1 - index, frame))
    }
}

/// One task of a dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedTask {
    /// tokio's task id.
    pub id: u64,
    /// One trace per leaf of the task's tree, sorted (tokio prints the branches of a tree in
    /// hash order).
    pub traces: Vec<Trace>,
}

impl DumpedTask {
    /// Turns the tree's lines (each with its depth) into its root-to-leaf traces.
    fn from_tree(id: u64, lines: &[(usize, Frame)]) -> Self {
        let mut traces = Vec::new();
        let mut path: Vec<(usize, &Frame)> = Vec::new();
        for (index, (depth, frame)) in lines.iter().enumerate() {
            while path.last().is_some_and(|(above, _)| above >= depth) {
                path.pop();
            }
            path.push((*depth, frame));
            let is_leaf = lines
                .get(index + 1)
                .is_none_or(|(next_depth, _)| next_depth <= depth);
            if is_leaf {
                traces.push(Trace(
                    path.iter()
                        .rev()
                        .map(|(_, frame)| (*frame).clone())
                        .collect(),
                ));
            }
        }
        traces.sort();
        traces.dedup();
        DumpedTask { id, traces }
    }

    /// Whether this is the request task that asked for the dump: it waits in leakcheck's
    /// `dump.rs` (`Tracker::task_dump`; a release build names the frame `{async_fn#0}`) for the
    /// dump to finish. New since any baseline, and never stranded.
    pub fn is_the_dump_request(&self) -> bool {
        self.traces
            .iter()
            .flat_map(|trace| &trace.0)
            .any(|frame| frame.file.as_deref() == Some("leakcheck/src/dump.rs"))
    }

    /// Where this task is stuck, with the frame's depth in its tree. Each trace offers its
    /// innermost frame in the server's own code (`server/src/`) that does not only forward a
    /// read, or else its read wrapper's. A write wrapper's frame wins (a connection that
    /// waits to write is stuck on its peer, while hyper keeps a read pending on every
    /// connection); then the trace that waits deepest (the work, not a `select!` arm waiting
    /// for shutdown or a deadline), then the deeper frame. When no trace has a server frame:
    /// the innermost frame that is not tokio's or the standard library's, chosen the same way.
    pub fn stuck_frame(&self) -> Option<(usize, &Frame)> {
        let deepest = |offer: &dyn Fn(&Trace) -> Option<(usize, &Frame)>| {
            self.traces
                .iter()
                .filter_map(|trace| Some((trace.0.len(), offer(trace)?)))
                .max_by_key(|(leaf, (depth, frame))| (frame.writes(), *leaf, *depth))
                .map(|(_, found)| found)
        };
        deepest(&|trace| {
            trace
                .innermost(|frame| frame.is_server() && !frame.forwards_reads())
                .or_else(|| trace.innermost(Frame::is_server))
        })
        .or_else(|| deepest(&|trace| trace.innermost(|frame| !frame.is_runtime())))
    }
}

/// A parsed `/debug/dump`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskDump {
    /// The tasks, in the dump's order.
    pub tasks: Vec<DumpedTask>,
}

impl TaskDump {
    /// Parses the dump text; file paths under `root` become relative to it. Lines that are
    /// neither a `task N:` header nor a frame are skipped.
    pub fn parse(text: &str, root: &Path) -> TaskDump {
        let mut tasks = Vec::new();
        // The task being read: its id and its tree's lines.
        let mut current: Option<(u64, Vec<(usize, Frame)>)> = None;
        for line in text.lines() {
            if let Some(id) = line
                .strip_prefix("task ")
                .and_then(|rest| rest.trim_end().strip_suffix(':'))
                .and_then(|id| id.parse().ok())
            {
                if let Some((id, lines)) = current.take() {
                    tasks.push(DumpedTask::from_tree(id, &lines));
                }
                current = Some((id, Vec::new()));
            } else if let Some((_, lines)) = current.as_mut() {
                lines.extend(parse_frames(line, root));
            }
        }
        if let Some((id, lines)) = current {
            tasks.push(DumpedTask::from_tree(id, &lines));
        }
        TaskDump { tasks }
    }

    /// Where most of its tasks not in `baseline` (the ids of the tasks alive before the storm,
    /// from `/debug/tasks`: a multi-thread server is dumped once) are stuck: each task's
    /// [`DumpedTask::stuck_frame`] counted per `file:line`. The most tasks win; on a tie the
    /// frame deepest in its task's tree (where they wait most specifically), then the smallest
    /// location. `None` when no task outside the baseline has a stuck frame.
    pub fn stuck_at(&self, baseline: &HashSet<u64>) -> Option<StuckAt> {
        #[derive(Default)]
        struct Count {
            tasks: u64,
            depth: usize,
            function: String,
        }
        // None: tasks without a stuck frame (counted in `of`).
        let mut counts: BTreeMap<Option<String>, Count> = BTreeMap::new();
        for task in self
            .tasks
            .iter()
            .filter(|task| !baseline.contains(&task.id) && !task.is_the_dump_request())
        {
            let stuck = task.stuck_frame();
            let count = counts
                .entry(stuck.and_then(|(_, frame)| frame.location()))
                .or_default();
            count.tasks += 1;
            if let Some((depth, frame)) = stuck {
                count.depth = count.depth.max(depth);
                if count.function.is_empty() {
                    count.function.clone_from(&frame.function);
                }
            }
        }
        let of: u64 = counts.values().map(|count| count.tasks).sum();
        counts
            .iter()
            .filter_map(|(at, count)| Some((at.as_ref()?, count)))
            .filter(|(_, count)| count.tasks > 0)
            // max_by_key keeps the last of equals: iterate locations largest first.
            .rev()
            .max_by_key(|(_, count)| (count.tasks, count.depth))
            .map(|(at, count)| StuckAt {
                at: at.clone(),
                function: count.function.clone(),
                tasks: count.tasks,
                of,
                source: StuckSource::TaskDump,
            })
    }
}

/// What a stuck-at figure was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StuckSource {
    /// The server's `/debug/dump` after quiescence, less the tasks alive at the baseline.
    TaskDump,
}

/// Where most of the stranded (or leaked) tasks are parked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StuckAt {
    /// `file:line`, workspace-relative (`server/src/upstream.rs:123`).
    pub at: String,
    /// The function of that frame, as tokio's dump prints it.
    pub function: String,
    /// Tasks parked there.
    pub tasks: u64,
    /// Tasks counted: those not alive at the baseline.
    pub of: u64,
    /// What it was read from.
    pub source: StuckSource,
}

impl StuckAt {
    /// `function at file:line`: what a scenario's expected stuck point is matched against.
    pub fn frame(&self) -> String {
        format!("{} at {}", self.function, self.at)
    }

    /// The same, its `function` named `module::fn` from the source under `root` at that line
    /// (`enclosing_fn`) when the file is there: a release build's dump (line tables only)
    /// names the server's frames `{async_fn#0}` and `{async_block#1}`, a debug build's by
    /// their path, and one name for both is what a scenario's expectation can match.
    pub fn named_from_source(mut self, root: &Path) -> StuckAt {
        let Some((file, line)) = self.at.rsplit_once(':') else {
            return self;
        };
        let (Ok(source), Ok(line)) = (std::fs::read_to_string(root.join(file)), line.parse())
        else {
            return self;
        };
        let path = Path::new(file);
        let module = match path.file_stem().and_then(|stem| stem.to_str()) {
            Some("mod") => path.parent().and_then(|dir| dir.file_name()),
            _ => path.file_stem(),
        };
        if let (Some(module), Some(name)) = (module, enclosing_fn(&source, line)) {
            self.function = format!("{}::{name}", module.to_string_lossy());
        }
        self
    }
}

/// The frames of one line of tokio's tree, `│  ├╼ function at file:line:column`, each with
/// its depth (the column of its `╼`); none for any other line. tokio writes a tree's roots
/// one after another without a line break, so a line can end with the next root's frame
/// (`…:160:16╼ function at …`), which is at depth 0.
fn parse_frames(line: &str, root: &Path) -> Vec<(usize, Frame)> {
    let Some(depth) = line.chars().position(|c| c == '╼') else {
        return Vec::new();
    };
    line.split('╼')
        .skip(1)
        .enumerate()
        .map(|(index, symbol)| {
            let depth = if index == 0 { depth } else { 0 };
            (depth, parse_symbol(symbol, root))
        })
        .collect()
}

/// `function at file:line:column` (each part optional), as tokio prints a symbol.
fn parse_symbol(symbol: &str, root: &Path) -> Frame {
    let symbol = symbol.trim_start_matches(['\u{a0}', ' ']).trim_end();
    let (function, location) = match symbol.rsplit_once(" at ") {
        Some((function, location)) => (function, Some(location)),
        None => (symbol, None),
    };
    let parts = location.map(|location| location.rsplitn(3, ':').collect::<Vec<_>>());
    let (file, line) = match parts.as_deref() {
        Some([_column, line, file]) => (Some(*file), line.parse().ok()),
        Some([line, file]) => (Some(*file), line.parse().ok()),
        _ => (location, None),
    };
    let file = file.map(|file| match Path::new(file).strip_prefix(root) {
        Ok(relative) => relative.to_string_lossy().into_owned(),
        Err(_) => file.to_owned(),
    });
    Frame {
        function: function.to_owned(),
        file,
        line,
    }
}

/// The function that `line` (1-based) of `source` is in, by its declaration: the nearest
/// `fn NAME` at or above it (closures and async blocks belong to the function around them).
fn enclosing_fn(source: &str, line: u32) -> Option<&str> {
    let above: Vec<&str> = source.lines().take(line as usize).collect();
    above.into_iter().rev().find_map(|text| {
        if text.trim_start().starts_with("//") {
            return None;
        }
        let mut words = text.split_whitespace();
        words.find(|word| *word == "fn")?;
        let name = words.next()?;
        let end = name
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(name.len());
        (end > 0).then(|| &name[..end])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ids of a dump's tasks: a baseline, as `/debug/tasks` gives it in a run.
    fn ids(dump: &TaskDump) -> HashSet<u64> {
        dump.tasks.iter().map(|task| task.id).collect()
    }

    /// Where the fixtures were captured: `tests/fixtures/dumps/{debug,release}/<scenario>.
    /// {baseline,after}.txt` are `/debug/dump` of the server in leaky mode at the baseline
    /// and after quiescence (debug: `chaos --smoke --mode leaky --seed 5`; release:
    /// `cargo run --release -p chaos -- --seed 42`), cut to whole `task N:` blocks: a few
    /// stranded tasks per place, the accept loops, not the request that asked for the dump.
    const CAPTURED_IN: &str = "/work/wt/stuck";

    fn fixture(build: &str, scenario: &str) -> (TaskDump, TaskDump) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/dumps")
            .join(build);
        let read = |moment: &str| {
            let path = dir.join(format!("{scenario}.{moment}.txt"));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            TaskDump::parse(&text, Path::new(CAPTURED_IN))
        };
        (read("baseline"), read("after"))
    }

    fn check(build: &str, cases: &[(&str, &str, u64, u64)]) {
        let mut places = std::collections::HashSet::new();
        for (scenario, at, tasks, of) in cases {
            let (baseline, after) = fixture(build, scenario);
            let stuck = after.stuck_at(&ids(&baseline)).unwrap();
            assert_eq!(
                (stuck.at.as_str(), stuck.tasks, stuck.of),
                (*at, *tasks, *of),
                "{build} {scenario}: {stuck:?}"
            );
            assert!(
                places.insert(stuck.at),
                "{build} {scenario} shares its stuck_at"
            );
        }
    }

    #[test]
    fn a_debug_build_tells_the_five_leaky_twins_apart() {
        check(
            "debug",
            &[
                // In the TLS handshake, not in the shutdown arm beside it.
                ("tls-stall", "server/src/listener.rs:171", 3, 3),
                // hyper's connection reading a head: the read wrapper below names no step.
                ("slowloris", "server/src/listener.rs:222", 3, 3),
                // 2 requests in the exchange, 3 pooled connections' drivers (one the
                // baseline's warm-up): 2 and 2 above the baseline, the deeper frame wins.
                ("pool-exhaustion", "server/src/upstream.rs:206", 2, 4),
                // The hung lookups have no frame outside tokio; they count in `of`.
                ("dns-hang", "server/src/upstream.rs:417", 3, 5),
                // Connection, producer and lease keeper, 2 each: the connection waits in the
                // write wrapper, deepest.
                ("slow-reader", "server/src/io.rs:96", 2, 6),
            ],
        );
    }

    #[test]
    fn a_release_build_tells_them_apart_too() {
        check(
            "release",
            &[
                ("tls-stall", "server/src/listener.rs:171", 3, 3),
                // Inlined into hyper, serve_http has no frame left: the read wrapper's names
                // the read (the deadline's select! arm waits less deep).
                ("slowloris", "server/src/io.rs:75", 3, 3),
                // A pending write outranks the read hyper keeps pending; the producer and the
                // lease keeper lost their frames to inlining (no frame outside tokio).
                ("slow-reader", "server/src/io.rs:96", 2, 6),
            ],
        );
    }

    #[test]
    fn the_request_that_asked_for_the_dump_is_not_stuck() {
        // A fixed run's whole dump after quiescence (release build, captured from /work/main):
        // the two accept loops, alive at the baseline, and the dump's own request.
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/dumps/release/fixed-with-the-dump-request.txt");
        let dump = TaskDump::parse(
            &std::fs::read_to_string(path).unwrap(),
            Path::new("/work/main"),
        );
        let requests: Vec<u64> = dump
            .tasks
            .iter()
            .filter(|task| task.is_the_dump_request())
            .map(|task| task.id)
            .collect();
        assert_eq!(requests.len(), 1, "{dump:#?}");
        let accept_loops: HashSet<u64> = ids(&dump)
            .into_iter()
            .filter(|id| *id != requests[0])
            .collect();
        assert_eq!(accept_loops.len(), 2);
        assert_eq!(dump.stuck_at(&accept_loops), None);
    }

    #[test]
    fn a_dump_with_nothing_above_its_baseline_has_no_stuck_at() {
        let (baseline, _) = fixture("debug", "tls-stall");
        assert_eq!(baseline.tasks.len(), 2, "the two accept loops");
        assert_eq!(baseline.stuck_at(&ids(&baseline)), None);
        let alone = baseline.stuck_at(&HashSet::new()).unwrap();
        assert_eq!(
            (alone.at.as_str(), alone.tasks, alone.of),
            ("server/src/listener.rs:100", 2, 2)
        );
    }

    /// Two tasks as tokio prints them: no-break spaces, and a second root written right after
    /// the first tree's last leaf.
    const TREE: &str = "task 7:\n\
        ╼ <core::pin::Pin<P> as core::future::future::Future> at /rustc/abc/library/core/src/future/future.rs:133:9\n\
        \u{a0} └╼ app::serve at /repo/server/src/listener.rs:10:5\n\
        \u{a0}    ├╼ app::serve::{{closure}} at /repo/server/src/listener.rs:12:9\n\
        \u{a0}    │  └╼ tokio::sync::notify::Notified at /registry/tokio-1.54.1/src/sync/notify.rs:1026:24\n\
        \u{a0}    └╼ app::serve::{{closure}} at /repo/server/src/listener.rs:14:9\n\
        \u{a0}       └╼ hyper::proto::h1::conn::Conn<I,B,T> at /registry/hyper-1.12.0/src/proto/h1/conn.rs:856:39\n\
        \u{a0}          └╼ <app::io::Wrapper<T> as tokio::io::async_read::AsyncRead> at /repo/server/src/io.rs:75:30\n\
        \u{a0}             └╼ tokio::net::tcp::stream::TcpStream at /registry/tokio-1.54.1/src/net/tcp/stream.rs:1457:26╼ {async_fn#0} at /repo/server/src/routes.rs:40:9\n\
        \u{a0} └╼ poll_elapsed at /registry/tokio-1.54.1/src/time/sleep.rs:384:16\n\
        \n\
        task 8:\n\
        ╼ hickory_proto::xfer::DnsExchange at /registry/hickory-proto-0.25.2/src/xfer/mod.rs:40:1\n\
        \u{a0} └╼ tokio::time::sleep::Sleep at /registry/tokio-1.54.1/src/time/sleep.rs:384:16\n";

    #[test]
    fn a_tree_becomes_its_root_to_leaf_traces_with_workspace_relative_files() {
        let dump = TaskDump::parse(TREE, Path::new("/repo"));
        assert_eq!(dump.tasks.len(), 2);
        let task = &dump.tasks[0];
        assert_eq!(task.id, 7);
        let leaves: Vec<(&str, usize)> = task
            .traces
            .iter()
            .map(|trace| (trace.0[0].function.as_str(), trace.0.len()))
            .collect();
        assert_eq!(
            leaves,
            [
                ("poll_elapsed", 2),
                ("tokio::net::tcp::stream::TcpStream", 6),
                ("tokio::sync::notify::Notified", 4)
            ]
        );
        assert_eq!(
            task.traces[1].0[5].function,
            "<core::pin::Pin<P> as core::future::future::Future>"
        );
        assert_eq!(
            task.traces[0].0[1].file.as_deref(),
            Some("server/src/routes.rs")
        );
        // The deepest trace; its read wrapper forwards, so its caller is where it waits.
        let (depth, frame) = task.stuck_frame().unwrap();
        assert_eq!(
            (depth, frame.location().unwrap().as_str()),
            (2, "server/src/listener.rs:14")
        );
        // No server frame: the innermost frame that is not tokio's.
        let (_, frame) = dump.tasks[1].stuck_frame().unwrap();
        assert_eq!(frame.function, "hickory_proto::xfer::DnsExchange");
        assert_eq!(
            frame.file.as_deref(),
            Some("/registry/hickory-proto-0.25.2/src/xfer/mod.rs")
        );
    }

    #[test]
    fn lines_that_are_not_frames_are_skipped() {
        let dump = TaskDump::parse(
            "garbage\n╼ before any task\ntask x:\ntask 3:\n\n",
            Path::new("/"),
        );
        assert_eq!(dump.tasks.len(), 1);
        assert_eq!(dump.tasks[0].id, 3);
        assert!(dump.tasks[0].traces.is_empty());
        assert_eq!(dump.stuck_at(&HashSet::new()), None);
    }

    #[test]
    fn a_stuck_frame_is_named_by_the_function_around_its_line() {
        let root = std::env::temp_dir().join(format!("chaos-dump-{}", std::process::id()));
        std::fs::create_dir_all(root.join("server/src/pool")).unwrap();
        let source = "// fn commented_out()\n\
                      pub(crate) async fn acquire<T>(x: T) {\n\
                      \x20   let f = async move {\n\
                      \x20       wait().await;\n\
                      \x20   };\n\
                      }\n";
        std::fs::write(root.join("server/src/pool/mod.rs"), source).unwrap();
        let stuck = |at: &str| StuckAt {
            at: at.into(),
            function: "{async_block#0}".into(),
            tasks: 1,
            of: 1,
            source: StuckSource::TaskDump,
        };
        let named = stuck("server/src/pool/mod.rs:4").named_from_source(&root);
        assert_eq!(named.frame(), "pool::acquire at server/src/pool/mod.rs:4");
        // Above every fn, or a file that is not there: the dump's name stays.
        let above = stuck("server/src/pool/mod.rs:1").named_from_source(&root);
        assert_eq!(above.function, "{async_block#0}");
        let missing = stuck("server/src/gone.rs:4").named_from_source(&root);
        assert_eq!(missing.function, "{async_block#0}");
        std::fs::remove_dir_all(root).unwrap();
    }
}
