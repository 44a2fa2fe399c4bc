//! An HTTP upstream on loopback that answers `200 ok`, or accepts, reads and never responds,
//! or sends a response head and never the body, or drops keep-alive connections when reused.
//!
//! The switch is checked per request, so a pooled keep-alive connection stalls too. A request
//! that arrived while stalled stays unanswered after [`Upstream::heal`]: a wedged connection
//! stays wedged, only new requests are served.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok";
/// A head announcing a body that never comes.
const HEAD_ONLY: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-length: 1024\r\ncontent-type: text/plain\r\n\r\nok";
const MAX_REQUEST_HEAD: usize = 64 * 1024;

const ANSWER: u8 = 0;
const STALL: u8 = 1;
const STALL_BODY: u8 = 2;
const DROP_REUSED: u8 = 3;

/// The upstream server; stops (closing every connection) when dropped.
#[derive(Debug)]
pub struct Upstream {
    addr: SocketAddr,
    state: Arc<UpstreamState>,
    task: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct UpstreamState {
    behaviour: AtomicU8,
    accepted: AtomicU64,
    requests: AtomicU64,
    last_target: parking_lot::Mutex<String>,
}

impl Upstream {
    /// Starts on `127.0.0.1:<free port>`, answering every request.
    pub async fn start() -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(UpstreamState::default());
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&state)));
        Ok(Self { addr, state, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on requests are read and never answered (connections stay open).
    pub fn stall(&self) {
        self.state.behaviour.store(STALL, Ordering::SeqCst);
    }

    /// From now on requests get a response head announcing 1 KiB, two bytes of it, and
    /// nothing more (connections stay open).
    pub fn stall_body(&self) {
        self.state.behaviour.store(STALL_BODY, Ordering::SeqCst);
    }

    /// From now on a connection's first request is answered and its second dropped unanswered
    /// with the connection: a pooled connection the upstream closed while it sat idle.
    pub fn drop_reused(&self) {
        self.state.behaviour.store(DROP_REUSED, Ordering::SeqCst);
    }

    /// From now on new requests are answered.
    pub fn heal(&self) {
        self.state.behaviour.store(ANSWER, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::Relaxed)
    }

    /// The request target (path and query) of the last request read.
    pub fn last_target(&self) -> String {
        self.state.last_target.lock().clone()
    }

    /// Request heads read so far, answered or not.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<UpstreamState>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    state.accepted.fetch_add(1, Ordering::Relaxed);
                    connections.spawn(serve(stream, Arc::clone(&state)));
                }
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

async fn serve(mut stream: TcpStream, state: Arc<UpstreamState>) {
    let mut buffered = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut answered = 0u64;
    loop {
        let Some(head_end) = buffered.windows(4).position(|w| w == b"\r\n\r\n") else {
            if buffered.len() > MAX_REQUEST_HEAD {
                return;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffered.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let body_len = content_length(&buffered[..head_end]);
        if let Some(target) = String::from_utf8_lossy(&buffered[..head_end])
            .split_whitespace()
            .nth(1)
        {
            target.clone_into(&mut state.last_target.lock());
        }
        let request_len = head_end + 4 + body_len;
        while buffered.len() < request_len {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffered.extend_from_slice(&chunk[..n]),
            }
        }
        buffered.drain(..request_len);
        state.requests.fetch_add(1, Ordering::Relaxed);
        match state.behaviour.load(Ordering::SeqCst) {
            ANSWER => {}
            DROP_REUSED if answered == 0 => {}
            DROP_REUSED => return,
            behaviour => {
                if behaviour == STALL_BODY && stream.write_all(HEAD_ONLY).await.is_err() {
                    return;
                }
                // Never finish; keep reading so the peer's close is noticed and the task ends.
                while matches!(stream.read(&mut chunk).await, Ok(n) if n > 0) {}
                return;
            }
        }
        if stream.write_all(RESPONSE).await.is_err() {
            return;
        }
        answered += 1;
    }
}

fn content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http;
    use std::time::Duration;

    #[tokio::test]
    async fn answers_then_stalls_then_answers_new_requests() {
        let upstream = Upstream::start().await.unwrap();
        let response = http::get(upstream.addr(), "/", &[], Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(response.head.status, 200);
        assert_eq!(response.body, b"ok");
        assert_eq!(upstream.last_target(), "/");

        upstream.stall();
        let stalled = http::get(upstream.addr(), "/", &[], Duration::from_millis(200)).await;
        assert_eq!(stalled.unwrap_err().kind(), io::ErrorKind::TimedOut);

        upstream.stall_body();
        let mut stream = TcpStream::connect(upstream.addr()).await.unwrap();
        stream
            .write_all(&http::get_request("/", &[]))
            .await
            .unwrap();
        let mut buffered = Vec::new();
        let head = http::read_head(&mut stream, &mut buffered).await.unwrap();
        assert_eq!(head.header("content-length"), Some("1024"));
        let body = tokio::time::timeout(
            Duration::from_millis(200),
            http::read_body(&mut stream, &head, buffered),
        );
        assert!(body.await.is_err(), "the body arrived");

        upstream.heal();
        let response = http::get(upstream.addr(), "/", &[], Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(response.head.status, 200);
        assert_eq!(upstream.accepted(), 4);
        assert_eq!(upstream.requests(), 4);
    }

    #[tokio::test]
    async fn a_reused_connection_is_dropped_when_told() {
        let upstream = Upstream::start().await.unwrap();
        upstream.drop_reused();
        let mut stream = TcpStream::connect(upstream.addr()).await.unwrap();
        let request = http::keep_alive_get_request("/", &[]);
        let first = http::exchange(&mut stream, &request).await.unwrap();
        assert_eq!(first.body, b"ok");
        let second = http::exchange(&mut stream, &request).await.unwrap_err();
        assert_eq!(second.kind(), io::ErrorKind::UnexpectedEof);
        let fresh = http::get(upstream.addr(), "/", &[], Duration::from_secs(5)).await;
        assert_eq!(fresh.unwrap().body, b"ok", "a new connection is answered");
        assert_eq!(upstream.requests(), 3);
    }

    #[tokio::test]
    async fn keep_alive_connections_serve_several_requests() {
        let upstream = Upstream::start().await.unwrap();
        let mut stream = TcpStream::connect(upstream.addr()).await.unwrap();
        for _ in 0..3 {
            stream
                .write_all(b"POST / HTTP/1.1\r\nHost: u\r\nContent-Length: 3\r\n\r\nabc")
                .await
                .unwrap();
            let mut buffered = Vec::new();
            let head = http::read_head(&mut stream, &mut buffered).await.unwrap();
            let body = http::read_body(&mut stream, &head, buffered).await.unwrap();
            assert_eq!(body, b"ok");
        }
        assert_eq!(upstream.accepted(), 1);
    }
}
