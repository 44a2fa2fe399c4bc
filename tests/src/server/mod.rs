//! The real `leakcheck-server` process: starting it, its endpoints, and its shutdown verdict;
//! `binary` finds (or builds) it, `leak_report` reads what it reports, `dump` reads its task
//! dump and says where its tasks are stuck.

mod binary;
mod dump;
mod leak_report;
mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

pub use binary::{SERVER_BIN_ENV, build_location, server_binary, workspace_root};
pub use dump::{DumpedTask, Frame, StuckAt, StuckSource, TaskDump, Trace};
pub use leak_report::{LeakReport, LiveTask, Site, SiteGroup, TaskEntry, TasksSnapshot};
use parking_lot::Mutex;
use serde::Deserialize;
pub use tls::ServerTls;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::http;

/// How long the server may take to print its `listening` line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest wait for a debug or metrics endpoint; a server slower than this is wedged.
pub const ENDPOINT_DEADLINE: Duration = Duration::from_secs(3);

/// Longest wait for `/debug/dump`: the server waits up to 2 s for its workers to check in,
/// then symbolizes every task's trace.
pub const DUMP_DEADLINE: Duration = Duration::from_secs(10);

/// Exit code of a server whose shutdown verification found leaked tasks (contract).
pub const LEAK_EXIT_CODE: i32 = 3;

/// Most stderr kept from one server run (a leak report of thousands of tasks fits).
const MAX_STDERR_BYTES: usize = 32 * 1024 * 1024;

/// The `/metrics` line carrying the tracker's live task count (followed by the value).
const LIVE_TASKS_METRIC: &str = "leakcheck_live_tasks ";
/// The `/metrics` line carrying the pool's idle upstream connections.
const UPSTREAM_IDLE_METRIC: &str = "leakcheck_server_upstream_idle_connections ";
/// The `/metrics` line carrying the requests the server holds now.
const IN_FLIGHT_METRIC: &str = "leakcheck_server_requests_in_flight ";
/// The `/metrics` line carrying the most requests the server held at once.
const PEAK_IN_FLIGHT_METRIC: &str = "leakcheck_server_requests_in_flight_peak ";

/// Where a running server can be reached; cheap to clone into sampling tasks.
#[derive(Debug, Clone, Copy)]
pub struct Endpoints {
    /// Plain HTTP address.
    pub http: SocketAddr,
    /// HTTPS address.
    pub https: SocketAddr,
    /// Process id (for `/proc/<pid>/fd`).
    pub pid: u32,
}

#[derive(Deserialize)]
struct Cancellations {
    drained: Vec<Drained>,
}

#[derive(Deserialize)]
struct Drained {
    request_id: String,
    stage: DrainStage,
    drained_at_monotonic_ns: u64,
}

#[derive(Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum DrainStage {
    RequestEnded,
    TasksDrained,
}

/// When the server saw one request end, from `/debug/cancellations` (`CLOCK_MONOTONIC` ns).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestEnd {
    /// Its handler (or streamed body) was dropped or finished.
    pub request_ended_ns: Option<u64>,
    /// Its last labeled task ended.
    pub tasks_drained_ns: Option<u64>,
}

impl RequestEnd {
    /// When the request was wholly gone: the later of the two (`None` before either).
    pub fn gone_ns(&self) -> Option<u64> {
        self.request_ended_ns.max(self.tasks_drained_ns)
    }
}

impl Endpoints {
    /// `GET /healthz`: the time to a complete `200` response.
    pub async fn probe(&self, deadline: Duration) -> Result<Duration> {
        let started = Instant::now();
        let response = self.get("/healthz", deadline).await?;
        if response.head.status != 200 {
            return Err(endpoint(
                "/healthz",
                format!("status {}", response.head.status),
            ));
        }
        Ok(started.elapsed())
    }

    /// `GET /healthz` over HTTPS on a fresh connection (handshake included), verifying the
    /// server's certificate with `tls`; the whole exchange bounded by `deadline`.
    pub async fn probe_tls(&self, tls: &ServerTls, deadline: Duration) -> Result<()> {
        let exchange = async {
            let stream = tokio::net::TcpStream::connect(self.https).await?;
            stream.set_nodelay(true)?;
            let mut stream = tls
                .connector
                .connect(ServerTls::server_name(), stream)
                .await?;
            let response = http::exchange(&mut stream, &http::get_request("/healthz", &[])).await?;
            Ok::<_, std::io::Error>(response.head.status)
        };
        match tokio::time::timeout(deadline, exchange).await {
            Ok(Ok(200)) => Ok(()),
            Ok(Ok(status)) => Err(endpoint("https /healthz", format!("status {status}"))),
            Ok(Err(error)) => Err(endpoint("https /healthz", error.to_string())),
            Err(_) => Err(endpoint("https /healthz", "timed out".to_owned())),
        }
    }

    /// Live tracked tasks: `leakcheck_live_tasks` of `/metrics` — the tracker's count, as
    /// `live` of `/debug/tasks`, without the cost of a snapshot (which symbolizes stacks on the
    /// server's runtime and, sampled during a storm, delayed its probes by up to a second).
    /// Falls back to `/debug/tasks` when the metric is missing.
    pub async fn live_tasks(&self) -> Result<u64> {
        let response = self.get("/metrics", ENDPOINT_DEADLINE).await?;
        if response.head.status == 200 {
            let text = String::from_utf8_lossy(&response.body);
            let live = text
                .lines()
                .find_map(|line| line.strip_prefix(LIVE_TASKS_METRIC))
                .and_then(|value| value.trim().parse().ok());
            if let Some(live) = live {
                return Ok(live);
            }
        }
        self.snapshot_live_tasks().await
    }

    /// Idle pooled upstream connections, as the server's pool counts them (`/metrics`).
    pub async fn upstream_idle(&self) -> Result<u64> {
        self.metric(UPSTREAM_IDLE_METRIC).await
    }

    /// The value of the `/metrics` line starting with `prefix` (name and a space).
    async fn metric(&self, prefix: &str) -> Result<u64> {
        let response = self.get("/metrics", ENDPOINT_DEADLINE).await?;
        if response.head.status != 200 {
            return Err(endpoint(
                "/metrics",
                format!("status {}", response.head.status),
            ));
        }
        String::from_utf8_lossy(&response.body)
            .lines()
            .find_map(|line| line.strip_prefix(prefix))
            .and_then(|value| value.trim().parse().ok())
            .ok_or_else(|| endpoint("/metrics", format!("no {}", prefix.trim())))
    }

    /// Live tracked tasks (`live` of `/debug/tasks`).
    pub async fn snapshot_live_tasks(&self) -> Result<u64> {
        Ok(self.tasks(ENDPOINT_DEADLINE).await?.live)
    }

    /// Asks for `/debug/tasks` once with a patient deadline: the server's first snapshot loads
    /// its debug info to symbolize spawn backtraces (seconds for a debug build on a busy
    /// machine), which must not count against [`ENDPOINT_DEADLINE`] later.
    pub async fn warm_symbolizer(&self) -> Result<()> {
        self.tasks(STARTUP_TIMEOUT).await.map(drop)
    }

    /// Live tracked tasks per spawn site (`sites` of `/debug/tasks`).
    pub async fn live_sites(&self) -> Result<Vec<SiteGroup>> {
        Ok(self.tasks(ENDPOINT_DEADLINE).await?.sites)
    }

    /// `/debug/tasks`, answered within `deadline`.
    pub async fn tasks(&self, deadline: Duration) -> Result<TasksSnapshot> {
        let response = self.get("/debug/tasks", deadline).await?;
        if response.head.status != 200 {
            return Err(endpoint(
                "/debug/tasks",
                format!("status {}", response.head.status),
            ));
        }
        TasksSnapshot::parse(&response.body).map_err(|message| endpoint("/debug/tasks", message))
    }

    /// Request id → when its handler (or streamed body) ended and when its last labeled task
    /// did (`/debug/cancellations`).
    pub async fn cancellations(&self) -> Result<HashMap<String, RequestEnd>> {
        let response = self.get("/debug/cancellations", ENDPOINT_DEADLINE).await?;
        let cancellations: Cancellations = parse_json("/debug/cancellations", &response)?;
        let mut ends: HashMap<String, RequestEnd> = HashMap::new();
        for entry in cancellations.drained {
            let end = ends.entry(entry.request_id).or_default();
            let at = match entry.stage {
                DrainStage::RequestEnded => &mut end.request_ended_ns,
                DrainStage::TasksDrained => &mut end.tasks_drained_ns,
            };
            *at = (*at).max(Some(entry.drained_at_monotonic_ns));
        }
        Ok(ends)
    }

    /// The server's task dump (`/debug/dump`) as text: `Ok(Err(reason))` when the server
    /// refused one (too many live tasks for tokio's dump to be safe, a worker that did not
    /// check in, no task-dump support), with its reason.
    pub async fn task_dump(&self) -> Result<std::result::Result<String, String>> {
        let response = self.get("/debug/dump", DUMP_DEADLINE).await?;
        let text = String::from_utf8_lossy(&response.body).into_owned();
        Ok(match response.head.status {
            200 => Ok(text),
            503 => Err(text.trim().to_owned()),
            status => return Err(endpoint("/debug/dump", format!("status {status}"))),
        })
    }

    /// Requests the server holds now (`leakcheck_server_requests_in_flight`).
    pub async fn in_flight(&self) -> Result<u64> {
        self.metric(IN_FLIGHT_METRIC).await
    }

    /// Most requests the server held at once (`leakcheck_server_requests_in_flight_peak`).
    pub async fn peak_in_flight(&self) -> Result<u64> {
        self.metric(PEAK_IN_FLIGHT_METRIC).await
    }

    /// Open file descriptors of the server process, or `None` once it is gone.
    pub fn open_fds(&self) -> Option<u64> {
        let entries = std::fs::read_dir(format!("/proc/{}/fd", self.pid)).ok()?;
        Some(entries.count() as u64)
    }

    async fn get(&self, path: &str, deadline: Duration) -> Result<http::Response> {
        http::get(self.http, path, &[], deadline)
            .await
            .map_err(|error| endpoint(path, error.to_string()))
    }
}

fn parse_json<T: for<'de> Deserialize<'de>>(path: &str, response: &http::Response) -> Result<T> {
    if response.head.status != 200 {
        return Err(endpoint(path, format!("status {}", response.head.status)));
    }
    serde_json::from_slice(&response.body)
        .map_err(|error| endpoint(path, format!("bad JSON: {error}")))
}

fn endpoint(path: &str, message: String) -> Error {
    Error::Endpoint {
        path: path.to_owned(),
        message,
    }
}

/// A started server process; killed if dropped before [`ServerProcess::terminate`].
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    endpoints: Endpoints,
    stderr: Arc<Mutex<Vec<u8>>>,
    pipes: Vec<JoinHandle<()>>,
    leak_report: PathBuf,
}

/// A handle on a server's stderr, readable while it runs.
#[derive(Debug, Clone)]
pub struct StderrLog(Arc<Mutex<Vec<u8>>>);

impl StderrLog {
    /// The last `lines` lines written so far.
    pub fn tail(&self, lines: usize) -> String {
        let text = String::from_utf8_lossy(&self.0.lock()).into_owned();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// How the server's shutdown went.
#[derive(Debug, Clone)]
pub struct Shutdown {
    /// Exit code; `None` when it had to be killed (or died from a signal).
    pub exit_code: Option<i32>,
    /// Time from SIGTERM to exit.
    pub took: Duration,
    /// True when it did not exit in time and was killed.
    pub killed: bool,
    /// Everything it wrote to stderr.
    pub stderr: String,
    /// The JSON leak report it wrote, when it reported leaks.
    pub leak_report: Option<LeakReport>,
    /// Why a leak report that should be there could not be read.
    pub leak_report_error: Option<String>,
}

impl ServerProcess {
    /// Starts `binary` with `args` plus `--leak-report <leak_report>` and waits for its
    /// `listening http=ADDR https=ADDR` line.
    pub async fn start(binary: &Path, args: &[String], leak_report: &Path) -> Result<Self> {
        let _ = std::fs::remove_file(leak_report);
        let mut command = Command::new(binary);
        // SAFETY: prctl(2) is async-signal-safe and touches only the new child: if this
        // process dies without stopping the server (killed by a CI timeout), the kernel kills it.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command
            .args(args)
            // A caller's RUST_BACKTRACE=1 would make every /panic symbolize a backtrace on a
            // runtime worker (a ~1 s stall in a panic storm): the campaign must not depend on it.
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .arg("--leak-report")
            .arg(leak_report)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::ServerStart(format!("cannot run {}: {e}", binary.display())))?;
        let pid = child
            .id()
            .ok_or_else(|| Error::ServerStart("exited at once".into()))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipes = Vec::new();
        if let Some(mut pipe) = child.stderr.take() {
            let sink = Arc::clone(&stderr);
            pipes.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = pipe.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let mut sink = sink.lock();
                    if sink.len() + n <= MAX_STDERR_BYTES {
                        sink.extend_from_slice(&buf[..n]);
                    }
                }
            }));
        }
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::ServerStart("no stdout pipe".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(STARTUP_TIMEOUT, lines.next_line()).await;
        let line = match first {
            Ok(Ok(Some(line))) => line,
            Ok(_) => {
                let status = child.wait().await.ok();
                tokio::time::sleep(Duration::from_millis(50)).await;
                let err = String::from_utf8_lossy(&stderr.lock()).into_owned();
                return Err(Error::ServerStart(format!(
                    "exited ({status:?}) before printing `listening`: {}",
                    err.trim()
                )));
            }
            Err(_) => {
                return Err(Error::ServerStart(format!(
                    "no `listening` line within {STARTUP_TIMEOUT:?}"
                )));
            }
        };
        let (http, https) = parse_listening(&line)?;
        // Keep draining stdout so the server never blocks on a full pipe.
        pipes.push(tokio::spawn(async move {
            while let Ok(Some(_)) = lines.next_line().await {}
        }));
        Ok(Self {
            child,
            endpoints: Endpoints { http, https, pid },
            stderr,
            pipes,
            leak_report: leak_report.to_owned(),
        })
    }

    /// Where it can be reached.
    pub fn endpoints(&self) -> Endpoints {
        self.endpoints
    }

    /// What it has written to stderr so far (kept growing until it exits).
    pub fn stderr_log(&self) -> StderrLog {
        StderrLog(Arc::clone(&self.stderr))
    }

    /// Sends SIGTERM and waits up to `wait` for the exit (then kills it), and reads the verdict.
    pub async fn terminate(mut self, wait: Duration) -> Shutdown {
        let started = Instant::now();
        let pid = libc::pid_t::try_from(self.endpoints.pid).unwrap_or(0);
        // SAFETY: kill(2) on the pid of a child we own and have not reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let (status, killed) = match tokio::time::timeout(wait, self.child.wait()).await {
            Ok(status) => (status.ok(), false),
            Err(_) => {
                let _ = self.child.kill().await;
                (None, true)
            }
        };
        let took = started.elapsed();
        for pipe in self.pipes.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), pipe).await;
        }
        let exit_code = status.and_then(|status| status.code());
        let (leak_report, leak_report_error) = if exit_code == Some(LEAK_EXIT_CODE) {
            match LeakReport::read(&self.leak_report) {
                Ok(report) => (Some(report), None),
                Err(error) => (None, Some(error)),
            }
        } else {
            (None, None)
        };
        Shutdown {
            exit_code,
            took,
            killed,
            stderr: String::from_utf8_lossy(&self.stderr.lock()).into_owned(),
            leak_report,
            leak_report_error,
        }
    }
}

/// Parses `listening http=ADDR https=ADDR`.
pub fn parse_listening(line: &str) -> Result<(SocketAddr, SocketAddr)> {
    let bad = || {
        Error::ServerStart(format!(
            "expected `listening http=ADDR https=ADDR`, got {line:?}"
        ))
    };
    let rest = line.trim().strip_prefix("listening ").ok_or_else(bad)?;
    let mut http = None;
    let mut https = None;
    for field in rest.split_whitespace() {
        match field.split_once('=') {
            Some(("http", addr)) => http = addr.parse().ok(),
            Some(("https", addr)) => https = addr.parse().ok(),
            _ => return Err(bad()),
        }
    }
    Ok((http.ok_or_else(bad)?, https.ok_or_else(bad)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_listening_line() {
        let (http, https) =
            parse_listening("listening http=127.0.0.1:4000 https=127.0.0.1:4443\n").unwrap();
        assert_eq!(http, "127.0.0.1:4000".parse().unwrap());
        assert_eq!(https, "127.0.0.1:4443".parse().unwrap());
        assert!(parse_listening("listening http=127.0.0.1:4000").is_err());
        assert!(parse_listening("ready on 4000").is_err());
    }
}
