//! Test support: servers with short deadlines, HTTP/HTTPS clients, hostile peers, and bounded
//! polling of /debug/tasks; the fake nameserver and upstreams are the chaos fault toolkit's.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
pub use chaos::faults::dns::FakeDns;
pub use chaos::faults::upstream::Upstream;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use leakcheck_server::{Bug, Config, Outcome, RunningServer};
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
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
    pub headers: http::HeaderMap,
    pub body: String,
}

/// GET `path` over plain HTTP.
pub async fn get(server: &RunningServer, path: &str) -> Reply {
    let stream = TcpStream::connect(server.bound().http)
        .await
        .expect("connect");
    exchange(stream, path, None).await
}

/// GET `path` over plain HTTP with the given `x-request-id`.
pub async fn get_with_id(server: &RunningServer, path: &str, request_id: &str) -> Reply {
    let stream = TcpStream::connect(server.bound().http)
        .await
        .expect("connect");
    exchange(stream, path, Some(request_id)).await
}

/// GET `path` over HTTPS, trusting the server's generated certificate.
pub async fn get_tls(server: &RunningServer, path: &str) -> Reply {
    let stream = TcpStream::connect(server.bound().https)
        .await
        .expect("connect");
    let tls = tls_connector(server)
        .connect(ServerName::try_from("localhost").unwrap(), stream)
        .await
        .expect("TLS handshake");
    exchange(tls, path, None).await
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

async fn exchange<I>(io: I, path: &str, request_id: Option<&str>) -> Reply
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("HTTP handshake");
    let driver = tokio::spawn(connection);
    let mut request = Request::get(path).header("host", "localhost");
    if let Some(id) = request_id {
        request = request.header("x-request-id", id);
    }
    let response = timeout(
        PATIENCE,
        sender.send_request(request.body(Empty::<Bytes>::new()).unwrap()),
    )
    .await
    .expect("response within PATIENCE")
    .expect("response");
    let status = response.status();
    let request_id = response
        .headers()
        .get("x-request-id")
        .map(|id| id.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let headers = response.headers().clone();
    let body = timeout(PATIENCE, response.into_body().collect())
        .await
        .expect("body within PATIENCE")
        .expect("body")
        .to_bytes();
    driver.abort();
    Reply {
        status,
        request_id,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Writes `bytes` and reads until the server closes; `None` if it did not close within PATIENCE.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Option<String> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.write_all(bytes).await;
    let mut reply = Vec::new();
    match timeout(PATIENCE, stream.read_to_end(&mut reply)).await {
        Ok(_) => Some(String::from_utf8_lossy(&reply).into_owned()),
        Err(_) => None,
    }
}

/// How long the server took to close `stream` (reading and discarding), or `None` within PATIENCE.
pub async fn time_until_closed(stream: &mut TcpStream) -> Option<Duration> {
    let started = Instant::now();
    let mut buffer = [0u8; 4096];
    let closing = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    timeout(PATIENCE, closing)
        .await
        .ok()
        .map(|()| started.elapsed())
}

/// /debug/tasks as JSON.
pub async fn tasks(server: &RunningServer) -> Value {
    let reply = get(server, "/debug/tasks").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    serde_json::from_str(&reply.body).expect("/debug/tasks is JSON")
}

/// Live tasks carrying `label`.
pub fn labeled(snapshot: &Value, label: &str) -> Vec<Value> {
    tasks_where(snapshot, |_, task| task["label"] == label)
}

/// Live tasks whose spawn site's file is `file`.
pub fn spawned_in(snapshot: &Value, file: &str) -> Vec<Value> {
    tasks_where(snapshot, |site, _| site["file"] == file)
}

/// Live tasks (each with its site merged in as `site`) matching `keep(site, task)`.
pub fn tasks_where(snapshot: &Value, keep: impl Fn(&Value, &Value) -> bool) -> Vec<Value> {
    let mut found = Vec::new();
    for group in snapshot["sites"].as_array().expect("sites") {
        for task in group["tasks"].as_array().expect("tasks") {
            if keep(&group["site"], task) {
                let mut task = task.clone();
                task["site"] = group["site"].clone();
                found.push(task);
            }
        }
    }
    found
}

/// Polls /debug/tasks (bounded by PATIENCE) until `done` holds; returns the last snapshot.
pub async fn wait_for_tasks(
    server: &RunningServer,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let snapshot = tasks(server).await;
        if done(&snapshot) {
            return snapshot;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last /debug/tasks: {snapshot:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Live task count at rest: the two accept loops plus the connection serving /debug/tasks.
pub async fn baseline(server: &RunningServer) -> u64 {
    tasks(server).await["live"].as_u64().unwrap()
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
/// steady enough that writes keep progressing. Returns how long until the server closed,
/// or the still-streaming connection after `limit`.
pub async fn trickle_read(
    server: &RunningServer,
    request_id: &str,
    limit: Duration,
) -> Result<Duration, TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut reader = socket.connect(server.bound().http).await.unwrap();
    let request = format!(
        "GET /stream?chunks=100000&interval_ms=5&size=16384 HTTP/1.1\r\nHost: x\r\nx-request-id: {request_id}\r\n\r\n"
    );
    reader.write_all(request.as_bytes()).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut buffer = [0u8; 1024];
    while started.elapsed() < limit {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => return Ok(started.elapsed()),
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    Err(reader)
}

/// Runs `future` and returns its output with how long it took.
pub async fn timed<T>(future: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let output = future.await;
    (output, started.elapsed())
}

/// Asserts that each task in `tasks` was spawned in server code.
pub fn assert_server_sites(tasks: &[Value]) {
    assert!(!tasks.is_empty(), "no task to check");
    for task in tasks {
        let file = task["site"]["file"].as_str().unwrap_or_default();
        assert!(
            file.starts_with("server/src/"),
            "spawn site {file} is not in server code: {task:#}"
        );
    }
}

/// An upstream on 127.0.0.1 that answers the first request of each connection (keep-alive) and
/// drops the connection, unanswered, on its second request.
pub async fn fickle_upstream() -> (SocketAddr, JoinHandle<()>) {
    async fn read_head(stream: &mut TcpStream) -> bool {
        let mut head = Vec::new();
        let mut buffer = [0u8; 1024];
        while !head.windows(4).any(|window| window == b"\r\n\r\n") {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buffer[..n]),
            }
        }
        true
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            connections.spawn(async move {
                if read_head(&mut stream).await {
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi")
                        .await;
                    read_head(&mut stream).await;
                }
            });
        }
    });
    (addr, task)
}
