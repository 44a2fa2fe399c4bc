//! Test support: servers with short deadlines and the glue between them and the chaos fault
//! toolkit, whose raw HTTP client, hostile clients, fake nameserver, upstreams and
//! `/debug/tasks` parser the tests use.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

pub use chaos::faults::clients::Held;
use chaos::faults::clients::{hold_until_closed, send_and_hold, slow_reader};
pub use chaos::faults::dns::FakeDns;
pub use chaos::faults::upstream::Upstream;
use chaos::http::Response;
pub use chaos::http::{get_request, keep_alive_get_request};
use chaos::server::Endpoints;
pub use chaos::server::{LiveTask, TasksSnapshot};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use leakcheck_server::{Bug, Config, Outcome, RunningServer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

/// The deadline every test server uses for handshake, header, write and DNS.
pub const SHORT: Duration = Duration::from_millis(300);
/// Upper bound for anything a test waits on; far above every deadline it exercises.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A configuration with short deadlines, so defenses fire within a test's time.
pub fn config() -> Config {
    Config {
        handshake_timeout: SHORT,
        header_timeout: SHORT,
        write_timeout: SHORT,
        dns_timeout: SHORT,
        body_timeout: SHORT,
        pool_acquire_timeout: Duration::from_millis(200),
        request_timeout: Duration::from_secs(2),
        shutdown_grace: Duration::from_millis(500),
        ..Config::default()
    }
}

/// `config()` with `bug` seeded.
pub fn with_bug(bug: Bug) -> Config {
    Config {
        bugs: vec![bug],
        ..config()
    }
}

/// Starts a server in-process.
pub fn start(config: Config) -> RunningServer {
    leakcheck_server::spawn(config).expect("server starts")
}

/// Asserts that the server's `/metrics` has the sample `line` (a name and its value).
pub async fn assert_metric(server: &RunningServer, line: &str) {
    let metrics = get(server, "/metrics").await.body;
    assert!(metrics.contains(line), "no `{line}` in {metrics}");
}

/// The deadline on a whole streamed response in the stream-deadline tests.
pub const STREAM_DEADLINE: Duration = Duration::from_secs(1);

/// `base` with a [`STREAM_DEADLINE`] and a write deadline far above any test, so only the
/// stream deadline can end a response the client reads slowly or not at all.
pub fn stream_deadline_config(base: Config) -> Config {
    Config {
        stream_timeout: STREAM_DEADLINE,
        write_timeout: Duration::from_secs(60),
        ..base
    }
}

/// Asserts that a response ended `took` after it started was ended by the stream deadline.
pub fn assert_cut_by_stream_deadline(took: Duration) {
    assert!(
        took >= STREAM_DEADLINE / 2 && took < STREAM_DEADLINE * 4,
        "ended after {took:?}, stream deadline {STREAM_DEADLINE:?}"
    );
}

/// Stops a server (graceful drain + leak verification) without blocking the test's runtime.
pub async fn stop(server: RunningServer) -> Outcome {
    tokio::task::spawn_blocking(move || server.shutdown())
        .await
        .expect("shutdown thread")
        .expect("server ran")
}

/// A response as the tests look at it.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub request_id: String,
    pub headers: HeaderMap,
    pub body: String,
}

impl From<Response> for Reply {
    fn from(response: Response) -> Self {
        let headers: HeaderMap = response
            .head
            .headers
            .iter()
            .map(|(name, value)| {
                let name = HeaderName::try_from(name.as_str()).expect("header name");
                (name, HeaderValue::from_str(value).expect("header value"))
            })
            .collect();
        Reply {
            status: StatusCode::from_u16(response.head.status).expect("status code"),
            request_id: response
                .head
                .header("x-request-id")
                .unwrap_or_default()
                .to_owned(),
            headers,
            body: String::from_utf8_lossy(&response.body).into_owned(),
        }
    }
}

/// GET `path` over plain HTTP.
pub async fn get(server: &RunningServer, path: &str) -> Reply {
    exchange(server.bound().http, path, &[]).await
}

/// GET `path` over plain HTTP with the given `x-request-id`.
pub async fn get_with_id(server: &RunningServer, path: &str, request_id: &str) -> Reply {
    exchange(server.bound().http, path, &[("x-request-id", request_id)]).await
}

async fn exchange(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    chaos::http::get(addr, path, headers, PATIENCE)
        .await
        .unwrap_or_else(|error| panic!("GET {path}: {error}"))
        .into()
}

/// GET `path` over HTTPS, trusting the server's generated certificate.
pub async fn get_tls(server: &RunningServer, path: &str) -> Reply {
    let exchange = async {
        let stream = TcpStream::connect(server.bound().https).await?;
        let mut tls = tls_connector(server)
            .connect(ServerName::try_from("localhost").unwrap(), stream)
            .await?;
        chaos::http::exchange(&mut tls, &get_request(path, &[])).await
    };
    tokio::time::timeout(PATIENCE, exchange)
        .await
        .expect("response within PATIENCE")
        .unwrap_or_else(|error| panic!("GET {path} over TLS: {error}"))
        .into()
}

/// A rustls client that trusts only this server's certificate.
pub fn tls_connector(server: &RunningServer) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(server.bound().certificate.clone())
        .expect("certificate is valid");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// The chaos toolkit's view of an in-process server (its pid is the test binary's).
pub fn endpoints(server: &RunningServer) -> Endpoints {
    Endpoints {
        http: server.bound().http,
        https: server.bound().https,
        pid: std::process::id(),
    }
}

/// Writes `bytes` and reads until the server closes; `None` if it did not close within PATIENCE.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Option<String> {
    send_and_hold(addr, bytes, Instant::now() + PATIENCE)
        .await
        .expect("connect")
        .reply()
}

/// Waits, without sending, until the server closes `stream` (a socket or a TLS stream): how
/// long that took, or `None` if it was still open after PATIENCE.
pub async fn time_until_closed(stream: impl AsyncRead + AsyncWrite + Unpin) -> Option<Duration> {
    match hold_until_closed(stream, Instant::now() + PATIENCE).await {
        Held::Closed { after, .. } => Some(after),
        Held::Open(_) => None,
    }
}

/// /debug/tasks, through the chaos toolkit's parser.
pub async fn tasks(server: &RunningServer) -> TasksSnapshot {
    endpoints(server)
        .tasks(PATIENCE)
        .await
        .unwrap_or_else(|error| panic!("{error}"))
}

/// Live tasks carrying `label`.
pub fn labeled<'a>(snapshot: &'a TasksSnapshot, label: &str) -> Vec<LiveTask<'a>> {
    snapshot.labeled(label)
}

/// Live tasks whose spawn site's file is `file`.
pub fn spawned_in<'a>(snapshot: &'a TasksSnapshot, file: &str) -> Vec<LiveTask<'a>> {
    snapshot.spawned_in(file)
}

/// Live tasks matching `keep`.
pub fn tasks_where<'a>(
    snapshot: &'a TasksSnapshot,
    keep: impl Fn(&LiveTask<'_>) -> bool,
) -> Vec<LiveTask<'a>> {
    snapshot.tasks_where(keep)
}

/// Polls /debug/tasks (bounded by PATIENCE) until `done` holds; returns the last snapshot.
pub async fn wait_for_tasks(
    server: &RunningServer,
    what: &str,
    done: impl Fn(&TasksSnapshot) -> bool,
) -> TasksSnapshot {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let snapshot = tasks(server).await;
        if done(&snapshot) {
            return snapshot;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last /debug/tasks: {snapshot:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Live task count at rest: the two accept loops plus the connection serving /debug/tasks.
pub async fn baseline(server: &RunningServer) -> u64 {
    tasks(server).await.live
}

/// The chaos toolkit's nameserver on 127.0.0.1, answering every A query with `answer`.
pub async fn fake_dns(answer: Ipv4Addr) -> FakeDns {
    FakeDns::start(answer).await.expect("fake DNS starts")
}

/// The chaos toolkit's nameserver, swallowing every query: a hung nameserver.
pub async fn silent_dns() -> FakeDns {
    let dns = fake_dns(Ipv4Addr::LOCALHOST).await;
    dns.blackhole();
    dns
}

/// The chaos toolkit's HTTP upstream on 127.0.0.1, answering `ok`.
pub async fn upstream() -> Upstream {
    Upstream::start().await.expect("upstream starts")
}

/// The chaos toolkit's upstream, accepting and never answering.
pub async fn stalled_upstream() -> Upstream {
    let upstream = upstream().await;
    upstream.stall();
    upstream
}

/// Reads `/stream` a trickle at a time (1 KiB every 20 ms through a 4 KiB receive buffer):
/// steady enough that writes keep progressing. Closed (and after how long) if the server
/// closed within `limit`, else the still-streaming connection.
pub async fn trickle_read(server: &RunningServer, request_id: &str, limit: Duration) -> Held {
    slow_reader(
        server.bound().http,
        "/stream?chunks=100000&interval_ms=5&size=16384",
        request_id,
        4096,
        1024,
        Duration::from_millis(20),
        Instant::now() + limit,
    )
    .await
    .expect("connect")
}

/// Runs `future` and returns its output with how long it took.
pub async fn timed<T>(future: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let output = future.await;
    (output, started.elapsed())
}

/// Asserts that each task in `tasks` was spawned in server code.
pub fn assert_server_sites(tasks: &[LiveTask<'_>]) {
    assert!(!tasks.is_empty(), "no task to check");
    for live in tasks {
        assert!(
            live.site.file.starts_with("server/src/"),
            "spawn site {} is not in server code: {live:#?}",
            live.site
        );
    }
}
