//! The real `leakcheck-server` process: finding (or building) the binary, starting it, its
//! endpoints, and its shutdown verdict.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::http;

/// Environment variable naming a server binary to use instead of building one.
pub const SERVER_BIN_ENV: &str = "CHAOS_SERVER_BIN";
/// How long the server may take to print its `listening` line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a debug or metrics endpoint; a server slower than this is wedged.
pub const ENDPOINT_DEADLINE: Duration = Duration::from_secs(3);
/// Exit code of a server whose shutdown verification found leaked tasks (contract).
pub const LEAK_EXIT_CODE: i32 = 3;
/// Most stderr kept from one server run (a leak report of thousands of tasks fits).
const MAX_STDERR_BYTES: usize = 32 * 1024 * 1024;
/// The `/metrics` line carrying the tracker's live task count (followed by the value).
const LIVE_TASKS_METRIC: &str = "leakcheck_live_tasks ";
/// The only leak report / snapshot schema this suite reads.
const SCHEMA_VERSION: u32 = 1;

/// The workspace root (the parent of this package's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The cargo target directory this executable was built into, and its profile directory name
/// (`debug`, `release`, …): `target/<profile>/chaos` or `target/<profile>/deps/<test>`.
pub fn build_location() -> Result<(PathBuf, String)> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::ServerBinary(format!("cannot locate the running executable: {e}")))?;
    let mut profile_dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if profile_dir.file_name().is_some_and(|name| name == "deps") {
        profile_dir.pop();
    }
    let profile = profile_dir
        .file_name()
        .and_then(|name| name.to_str())
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::ServerBinary(format!("{} is not in a cargo target dir", exe.display()))
        })?;
    let target = profile_dir.parent().map(Path::to_path_buf).ok_or_else(|| {
        Error::ServerBinary(format!("{} is not in a cargo target dir", exe.display()))
    })?;
    Ok((target, profile))
}

/// The server binary to run: `$CHAOS_SERVER_BIN` if set, otherwise
/// `target/<profile>/leakcheck-server` after `cargo build -p leakcheck-server` in the same
/// target dir and profile as this executable (a no-op when it is up to date). Built once per
/// process.
pub fn server_binary() -> Result<PathBuf> {
    static BINARY: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(|| find_or_build().map_err(|e| e.to_string()))
        .clone()
        .map_err(Error::ServerBinary)
}

fn find_or_build() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(SERVER_BIN_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::ServerBinary(format!(
                "{SERVER_BIN_ENV}={} is not a file; unset it to build the server",
                path.display()
            )))
        };
    }
    let (target, profile) = build_location()?;
    let binary = target.join(&profile).join("leakcheck-server");
    if is_newer_than_sources(&binary, &workspace_root()) {
        return Ok(binary);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let cargo_profile = if profile == "debug" {
        "dev"
    } else {
        profile.as_str()
    };
    eprintln!(
        "chaos: building leakcheck-server ({cargo_profile} profile) into {}",
        target.display()
    );
    let status = std::process::Command::new(&cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "leakcheck-server",
            "--bin",
            "leakcheck-server",
        ])
        .args(["--profile", cargo_profile])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .status();
    match status {
        Ok(status) if status.success() && binary.is_file() => Ok(binary),
        Ok(status) => Err(Error::ServerBinary(format!(
            "`cargo build -p leakcheck-server --profile {cargo_profile}` failed ({status}); \
             fix the build or set {SERVER_BIN_ENV}"
        ))),
        Err(error) if binary.is_file() => {
            eprintln!(
                "chaos: cannot run cargo ({error}); using the existing {}",
                binary.display()
            );
            Ok(binary)
        }
        Err(error) => Err(Error::ServerBinary(format!(
            "cannot run cargo to build it ({error}); set {SERVER_BIN_ENV}"
        ))),
    }
}

/// Whether `binary` exists and is newer than every file it is built from (the server's and
/// leakcheck's sources and manifests, the workspace manifest and lock file). A workspace
/// `cargo test` has just built it: asking cargo again could rebuild it with a different
/// feature set for nothing.
fn is_newer_than_sources(binary: &Path, root: &Path) -> bool {
    let Some(built) = modified(binary) else {
        return false;
    };
    let mut pending: Vec<PathBuf> = ["server", "leakcheck", "Cargo.toml", "Cargo.lock"]
        .iter()
        .map(|name| root.join(name))
        .collect();
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            let Ok(entries) = std::fs::read_dir(&path) else {
                return false;
            };
            pending.extend(
                entries
                    .filter_map(|entry| entry.ok())
                    .map(|entry| entry.path()),
            );
        } else if modified(&path).is_none_or(|changed| changed > built) {
            return false;
        }
    }
    true
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path)
        .and_then(|meta| meta.modified())
        .ok()
}

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
struct SnapshotHead {
    schema_version: u32,
    live: u64,
}

#[derive(Deserialize)]
struct SnapshotSites {
    schema_version: u32,
    sites: Vec<SiteCount>,
}

/// Live tasks from one spawn site.
#[derive(Debug, Clone, Deserialize)]
pub struct SiteCount {
    /// The spawn site.
    pub site: Site,
    /// Live tasks spawned there.
    pub count: u64,
}

#[derive(Deserialize)]
struct Cancellations {
    drained: Vec<Drained>,
}

#[derive(Deserialize)]
struct Drained {
    request_id: String,
    drained_at_unix_ns: u64,
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

    /// Live tracked tasks (`live` of `/debug/tasks`).
    pub async fn snapshot_live_tasks(&self) -> Result<u64> {
        let response = self.get("/debug/tasks", ENDPOINT_DEADLINE).await?;
        let snapshot: SnapshotHead = parse_json("/debug/tasks", &response)?;
        check_schema("/debug/tasks", snapshot.schema_version)?;
        Ok(snapshot.live)
    }

    /// Live tracked tasks per spawn site (`sites` of `/debug/tasks`).
    pub async fn live_sites(&self) -> Result<Vec<SiteCount>> {
        let response = self.get("/debug/tasks", ENDPOINT_DEADLINE).await?;
        let snapshot: SnapshotSites = parse_json("/debug/tasks", &response)?;
        check_schema("/debug/tasks", snapshot.schema_version)?;
        Ok(snapshot.sites)
    }

    /// Request id → Unix ns at which its last labeled task ended (`/debug/cancellations`).
    pub async fn cancellations(&self) -> Result<HashMap<String, u64>> {
        let response = self.get("/debug/cancellations", ENDPOINT_DEADLINE).await?;
        let cancellations: Cancellations = parse_json("/debug/cancellations", &response)?;
        Ok(cancellations
            .drained
            .into_iter()
            .map(|entry| (entry.request_id, entry.drained_at_unix_ns))
            .collect())
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

fn check_schema(path: &str, version: u32) -> Result<()> {
    if version == SCHEMA_VERSION {
        Ok(())
    } else {
        Err(endpoint(
            path,
            format!("schema_version {version} (this suite reads {SCHEMA_VERSION})"),
        ))
    }
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

/// The parts of a leakcheck `LeakReport` (schema_version 1) the suite uses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeakReport {
    /// Always 1.
    pub schema_version: u32,
    /// Leaked tasks.
    pub leaked: u64,
    /// Leaked tasks grouped by spawn site, most tasks first.
    #[serde(default)]
    pub sites: Vec<SiteGroup>,
}

/// Leaked tasks from one spawn site.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteGroup {
    /// The spawn site.
    pub site: Site,
    /// How many tasks.
    pub count: u64,
    /// The tasks (only their labels are read).
    #[serde(default)]
    pub tasks: Vec<TaskEntry>,
}

/// A spawn site, workspace-relative.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Site {
    /// Source file, e.g. `server/src/conn.rs`.
    pub file: String,
    /// Line.
    pub line: u32,
    /// Column.
    pub column: u32,
}

impl std::fmt::Display for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One leaked task (only its label is read).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskEntry {
    /// The request id it was spawned under, if any.
    #[serde(default)]
    pub label: Option<String>,
}

impl LeakReport {
    /// Reads and checks a report file.
    pub fn read(path: &Path) -> std::result::Result<Self, String> {
        let text =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses a report and rejects unknown schema versions.
    pub fn parse(json: &[u8]) -> std::result::Result<Self, String> {
        let report: LeakReport =
            serde_json::from_slice(json).map_err(|e| format!("not a leak report: {e}"))?;
        if report.schema_version != SCHEMA_VERSION {
            return Err(format!(
                "schema_version {} (this suite reads {SCHEMA_VERSION}); update the chaos suite",
                report.schema_version
            ));
        }
        Ok(report)
    }

    /// The spawn site with the most leaked tasks.
    pub fn top_site(&self) -> Option<&Site> {
        self.sites
            .iter()
            .max_by_key(|group| group.count)
            .map(|group| &group.site)
    }

    /// Leaked tasks whose label satisfies `matches`.
    pub fn labeled(&self, matches: impl Fn(&str) -> bool) -> u64 {
        self.sites
            .iter()
            .flat_map(|group| &group.tasks)
            .filter(|task| task.label.as_deref().is_some_and(&matches))
            .count() as u64
    }
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

    #[test]
    fn reads_a_leak_report_and_names_its_top_site() {
        let json = br#"{"schema_version":1,"kind":"leak_report","test":"leakcheck-server","created_at_unix_ms":1,
            "grace_ms":250,"leaked":3,"ignored":0,"degraded":false,
            "sites":[{"site":{"file":"server/src/tls.rs","line":40,"column":9},"count":1,"oldest_age_ms":5,"tasks":[{"id":1,"age_ms":5,"spawned_by":[]}]},
                     {"site":{"file":"server/src/routes.rs","line":88,"column":5},"count":2,"oldest_age_ms":9,
                      "tasks":[{"id":2,"age_ms":9,"spawned_by":[1],"label":"cs-1"},{"id":3,"age_ms":9,"spawned_by":[1],"label":"other"}]}],
            "stacks":[]}"#;
        let report = LeakReport::parse(json).unwrap();
        assert_eq!(report.leaked, 3);
        assert_eq!(
            report.top_site().unwrap().to_string(),
            "server/src/routes.rs:88:5"
        );
        assert_eq!(report.labeled(|label| label.starts_with("cs-")), 1);
    }

    #[test]
    fn rejects_an_unknown_schema_version() {
        let error = LeakReport::parse(br#"{"schema_version":2,"leaked":0}"#).unwrap_err();
        assert!(error.contains("schema_version 2"), "{error}");
    }

    #[test]
    fn a_binary_older_than_a_source_is_stale() {
        let root = std::env::temp_dir().join(format!("chaos-fresh-{}", std::process::id()));
        std::fs::create_dir_all(root.join("server/src")).unwrap();
        std::fs::create_dir_all(root.join("leakcheck/src")).unwrap();
        for file in [
            "server/src/lib.rs",
            "leakcheck/src/lib.rs",
            "Cargo.toml",
            "Cargo.lock",
        ] {
            std::fs::write(root.join(file), "").unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
        let binary = root.join("leakcheck-server");
        std::fs::write(&binary, "").unwrap();
        assert!(is_newer_than_sources(&binary, &root));
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(root.join("server/src/lib.rs"), "// changed").unwrap();
        assert!(!is_newer_than_sources(&binary, &root));
        assert!(!is_newer_than_sources(&root.join("missing"), &root));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn the_build_location_is_a_profile_dir_inside_a_target_dir() {
        let (target, profile) = build_location().unwrap();
        assert!(target.join(&profile).is_dir());
    }
}
