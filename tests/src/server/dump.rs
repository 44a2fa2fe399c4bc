//! The server's `/debug/dump` (tokio's task dump as text: one `task N:` block per task, each a
//! tree of frames, outermost first) parsed, and where its tasks are stuck.

use std::collections::BTreeMap;
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
    fn forwards_reads(&self) -> bool {
        self.function
            .contains(" as tokio::io::async_read::AsyncRead>")
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

    /// Where this task is stuck, with the frame's depth in its tree: in the trace that waits
    /// deepest (the work, not a `select!` arm waiting for shutdown or a deadline; the deeper
    /// frame on a tie), the innermost frame in the server's own code (`server/src/`) that
    /// does not only forward a read, or else, when no trace has one, the innermost frame that
    /// is not tokio's or the standard library's.
    pub fn stuck_frame(&self) -> Option<(usize, &Frame)> {
        let deepest = |wanted: &dyn Fn(&Frame) -> bool| {
            self.traces
                .iter()
                .filter_map(|trace| Some((trace.0.len(), trace.innermost(wanted)?)))
                .max_by_key(|(leaf, (depth, _))| (*leaf, *depth))
                .map(|(_, found)| found)
        };
        deepest(&|frame| frame.is_server() && !frame.forwards_reads())
            .or_else(|| deepest(&|frame| !frame.is_runtime()))
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
            } else if let (Some((_, lines)), Some(frame)) =
                (current.as_mut(), parse_frame(line, root))
            {
                lines.push(frame);
            }
        }
        if let Some((id, lines)) = current {
            tasks.push(DumpedTask::from_tree(id, &lines));
        }
        TaskDump { tasks }
    }

    /// Where most of its tasks above `baseline` (a dump of the same server before the storm)
    /// are stuck: each task's [`DumpedTask::stuck_frame`] counted per `file:line`, less the
    /// baseline's count there. The most tasks win; on a tie the frame deepest in its task's
    /// tree (where they wait most specifically), then the smallest location. `None` when no
    /// location has more tasks than at the baseline.
    pub fn stuck_at(&self, baseline: Option<&TaskDump>) -> Option<StuckAt> {
        #[derive(Default)]
        struct Count {
            tasks: i64,
            depth: usize,
            function: String,
        }
        // None: tasks without a stuck frame (counted in `of`).
        let mut counts: BTreeMap<Option<String>, Count> = BTreeMap::new();
        let baseline_tasks = baseline.into_iter().flat_map(|dump| &dump.tasks);
        let weighted =
            (self.tasks.iter().map(|task| (task, 1))).chain(baseline_tasks.map(|task| (task, -1)));
        for (task, weight) in weighted {
            let stuck = task.stuck_frame();
            let count = counts
                .entry(stuck.and_then(|(_, frame)| frame.location()))
                .or_default();
            count.tasks += weight;
            if let Some((depth, frame)) = stuck {
                count.depth = count.depth.max(depth);
                if count.function.is_empty() {
                    count.function.clone_from(&frame.function);
                }
            }
        }
        let of: i64 = counts.values().map(|count| count.tasks.max(0)).sum();
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
                tasks: count.tasks as u64,
                of: of as u64,
                source: StuckSource::TaskDump,
            })
    }
}

/// What a stuck-at figure was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StuckSource {
    /// The server's `/debug/dump` after quiescence, less the tasks of its dump at the baseline.
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
    /// Tasks counted: those above the baseline.
    pub of: u64,
    /// What it was read from.
    pub source: StuckSource,
}

impl StuckAt {
    /// `function at file:line`: what a scenario's expected stuck point is matched against.
    pub fn frame(&self) -> String {
        format!("{} at {}", self.function, self.at)
    }
}

/// One line of tokio's tree, `│  ├╼ function at file:line:column`, with its depth (the
/// column of its `╼`); `None` for any other line.
fn parse_frame(line: &str, root: &Path) -> Option<(usize, Frame)> {
    let depth = line.chars().position(|c| c == '╼')?;
    let (_, symbol) = line.split_once('╼')?;
    let symbol = symbol.trim_start_matches(['\u{a0}', ' ']).trim_end();
    let (function, location) = match symbol.rsplit_once(" at ") {
        Some((function, location)) => (function, Some(location)),
        None => (symbol, None),
    };
    let (file, line) = match location.map(|location| location.rsplitn(3, ':').collect::<Vec<_>>()) {
        Some(parts) => match parts[..] {
            [_column, line, file] => (Some(file), line.parse().ok()),
            [line, file] => (Some(file), line.parse().ok()),
            _ => (location, None),
        },
        None => (None, None),
    };
    let file = file.map(|file| match Path::new(file).strip_prefix(root) {
        Ok(relative) => relative.to_string_lossy().into_owned(),
        Err(_) => file.to_owned(),
    });
    Some((
        depth,
        Frame {
            function: function.to_owned(),
            file,
            line,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios::Scenario;

    /// Where the fixtures were captured: `tests/fixtures/dumps/<scenario>.{baseline,after}.txt`
    /// are `/debug/dump` of a debug-build server in leaky mode at the baseline and after
    /// quiescence (`chaos --smoke --mode leaky --seed 5`), cut to a few stranded tasks per
    /// place (whole `task N:` blocks; the baseline's tasks all kept).
    const CAPTURED_IN: &str = "/work/wt/stuck";

    fn fixture(scenario: Scenario) -> (TaskDump, TaskDump) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/dumps");
        let read = |moment: &str| {
            let path = dir.join(format!("{}.{moment}.txt", scenario.name()));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            TaskDump::parse(&text, Path::new(CAPTURED_IN))
        };
        (read("baseline"), read("after"))
    }

    #[test]
    fn the_five_leaky_twins_are_stuck_where_their_scenarios_expect_and_apart() {
        let cases = [
            (Scenario::TlsStall, "server/src/listener.rs:171", 3, 3),
            (Scenario::Slowloris, "server/src/listener.rs:222", 3, 3),
            // 2 requests in the exchange, 3 pooled connections' drivers (one of the baseline's
            // warm-up): 2 and 2 above the baseline, and the deeper frame wins.
            (Scenario::PoolExhaustion, "server/src/upstream.rs:206", 2, 4),
            // The hung lookups have no frame with a location; they count in `of`.
            (Scenario::DnsHang, "server/src/upstream.rs:417", 3, 5),
            // Connection, producer and lease keeper, 2 each: the connection's write is deepest.
            (Scenario::SlowReader, "server/src/io.rs:96", 2, 6),
        ];
        let mut places = std::collections::HashSet::new();
        for (scenario, at, tasks, of) in cases {
            let (baseline, after) = fixture(scenario);
            assert!(after.tasks.len() > baseline.tasks.len(), "{scenario}");
            let stuck = after.stuck_at(Some(&baseline)).unwrap();
            assert_eq!(
                (stuck.at.as_str(), stuck.tasks, stuck.of),
                (at, tasks, of),
                "{scenario}: {stuck:?}"
            );
            assert!(
                stuck.frame().contains(scenario.expected_stuck_at()),
                "{scenario}: {} does not match `{}`",
                stuck.frame(),
                scenario.expected_stuck_at()
            );
            assert!(places.insert(stuck.at), "{scenario} shares its stuck_at");
        }
    }

    #[test]
    fn a_dump_with_nothing_above_its_baseline_has_no_stuck_at() {
        let (baseline, _) = fixture(Scenario::TlsStall);
        assert_eq!(
            baseline.tasks.len(),
            3,
            "two accept loops and the dumping request"
        );
        assert_eq!(baseline.stuck_at(Some(&baseline)), None);
        let alone = baseline.stuck_at(None).unwrap();
        assert_eq!(
            (alone.at.as_str(), alone.tasks, alone.of),
            ("server/src/listener.rs:100", 2, 3)
        );
    }

    /// Two tasks as tokio prints them (the no-break spaces included).
    const TREE: &str = "task 7:\n\
        ╼ <core::pin::Pin<P> as core::future::future::Future> at /rustc/abc/library/core/src/future/future.rs:133:9\n\
        \u{a0} └╼ app::serve at /repo/server/src/listener.rs:10:5\n\
        \u{a0}    ├╼ app::serve::{{closure}} at /repo/server/src/listener.rs:12:9\n\
        \u{a0}    │  └╼ tokio::sync::notify::Notified at /registry/tokio-1.54.1/src/sync/notify.rs:1026:24\n\
        \u{a0}    └╼ app::serve::{{closure}} at /repo/server/src/listener.rs:14:9\n\
        \u{a0}       └╼ hyper::proto::h1::conn::Conn<I,B,T> at /registry/hyper-1.12.0/src/proto/h1/conn.rs:856:39\n\
        \u{a0}          └╼ <app::io::Wrapper<T> as tokio::io::async_read::AsyncRead> at /repo/server/src/io.rs:75:30\n\
        \u{a0}             └╼ tokio::net::tcp::stream::TcpStream at /registry/tokio-1.54.1/src/net/tcp/stream.rs:1457:26\n\
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
        assert_eq!(task.traces.len(), 2);
        let leaves: Vec<_> = task
            .traces
            .iter()
            .map(|trace| trace.0[0].function.as_str())
            .collect();
        assert_eq!(
            leaves,
            [
                "tokio::net::tcp::stream::TcpStream",
                "tokio::sync::notify::Notified"
            ]
        );
        assert_eq!(task.traces[0].0.len(), 6, "leaf to root");
        assert_eq!(
            task.traces[0].0[5].function,
            "<core::pin::Pin<P> as core::future::future::Future>"
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
        assert_eq!(dump.stuck_at(None), None);
    }
}
