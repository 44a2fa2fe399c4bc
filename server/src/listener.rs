//! Accept loops: the connection cap, the TLS handshake deadline, the protocol ALPN picked
//! (HTTP/2 or HTTP/1.1 on the TLS port, HTTP/1.1 only on the plain port), hyper's header-read
//! deadline, per-connection graceful shutdown, and the drain that ends them all.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::bugs::Bug;
use crate::config::Config;
use crate::deadline::ResponseDeadline;
use crate::http2::{ALPN_H2, Http2Settings, PrefaceDeadline, Served};
use crate::io::WriteDeadline;
use crate::metrics::Metrics;
use crate::routes::{AppService, ConnectionInfo};

/// Largest request head (and read buffer) per connection; larger heads get 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// What a shed plain-HTTP connection is told before it is closed.
const SHED_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\nretry-after: 1\r\n\r\n";

/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(20);

/// Which protocol a listener speaks.
#[derive(Clone)]
pub enum Transport {
    /// Plain HTTP/1.1 (no HTTP/2 without TLS: no h2c, no prior knowledge).
    Plain,
    /// TLS, then HTTP/2 when the client's ALPN picks `h2`, else HTTP/1.1.
    Tls(TlsAcceptor),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Plain => "Plain",
            Transport::Tls(_) => "Tls",
        })
    }
}

/// What every connection of a server shares.
#[derive(Debug)]
pub struct ConnectionContext {
    /// The service, cloned per connection.
    pub service: AppService,
    /// Counters for /metrics.
    pub metrics: Arc<Metrics>,
    /// One permit per open connection (`--max-connections`).
    pub slots: Arc<Semaphore>,
    /// TLS handshake deadline; `None` with `no-tls-handshake-timeout`.
    pub handshake_timeout: Option<Duration>,
    /// First-byte/header-read deadline; `None` with `no-header-timeout`.
    pub header_timeout: Option<Duration>,
    /// Write deadline; `None` with `no-write-timeout`.
    pub write_timeout: Option<Duration>,
    /// HTTP/2 settings (TLS port).
    pub http2: Http2Settings,
    /// How long connections get to finish after shutdown starts.
    pub shutdown_grace: Duration,
}

impl ConnectionContext {
    /// The connection settings from `config`, with seeded bugs applied.
    pub fn new(config: &Config, service: AppService, metrics: Arc<Metrics>) -> Self {
        let unless = |bug: Bug, value: Duration| (!config.has_bug(bug)).then_some(value);
        ConnectionContext {
            service,
            metrics,
            slots: Arc::new(Semaphore::new(config.max_connections)),
            handshake_timeout: unless(Bug::NoTlsHandshakeTimeout, config.handshake_timeout),
            header_timeout: unless(Bug::NoHeaderTimeout, config.header_timeout),
            write_timeout: unless(Bug::NoWriteTimeout, config.write_timeout),
            http2: Http2Settings::new(config),
            shutdown_grace: config.shutdown_grace,
        }
    }
}

/// Accepts connections until `shutdown`, then gives open ones the shutdown grace to finish
/// (hyper closes idle keep-alive connections at once) and cancels the rest.
pub async fn accept_loop(
    listener: TcpListener,
    transport: Transport,
    context: Arc<ConnectionContext>,
    shutdown: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                        continue;
                    }
                };
                context.metrics.connections_accepted.inc();
                let Ok(slot) = Arc::clone(&context.slots).try_acquire_owned() else {
                    shed(&stream, &transport);
                    context.metrics.connections_shed.inc();
                    continue;
                };
                connections.spawn(serve_connection(stream, peer, transport.clone(), Arc::clone(&context), shutdown.clone(), slot));
            }
        }
    }
    drop(listener);
    let deadline = Instant::now() + context.shutdown_grace;
    let drained = timeout_at(deadline, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = connections.len(),
            "connections still open after the shutdown grace; cancelling them"
        );
        connections.shutdown().await;
    }
}

/// Refuses a connection over the cap without waiting on the client.
fn shed(stream: &TcpStream, transport: &Transport) {
    if matches!(transport, Transport::Plain) {
        // Best effort: a full socket buffer just means the client sees a plain close.
        let _ = stream.try_write(SHED_RESPONSE);
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    transport: Transport,
    context: Arc<ConnectionContext>,
    shutdown: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let _open = context.metrics.connections_open.hold();
    let _ = stream.set_nodelay(true);
    let socket = Socket::of(&stream);
    let stream = WriteDeadline::new(stream, context.write_timeout);
    match transport {
        Transport::Plain => {
            serve_http(stream, socket, peer, Protocol::Http1, &context, &shutdown).await
        }
        Transport::Tls(acceptor) => {
            let handshake = acceptor.accept(stream);
            let handshake = async {
                match context.handshake_timeout {
                    Some(deadline) => timeout(deadline, handshake).await.unwrap_or_else(|_| {
                        context.metrics.handshake_timeouts.inc();
                        Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "handshake deadline exceeded",
                        ))
                    }),
                    None => handshake.await,
                }
            };
            let tls = tokio::select! {
                tls = handshake => tls,
                () = shutdown.cancelled() => return,
            };
            match tls {
                Ok(tls) => {
                    let protocol = match tls.get_ref().1.alpn_protocol() {
                        Some(ALPN_H2) => Protocol::Http2,
                        _ => Protocol::Http1,
                    };
                    serve_http(tls, socket, peer, protocol, &context, &shutdown).await
                }
                Err(error) => {
                    context.metrics.handshake_failures.inc();
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                }
            }
        }
    }
}

/// The HTTP version a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// Serves HTTP on `io` until the client leaves, a deadline cuts it, or shutdown completes it
/// (HTTP/1.1: the response in progress ends the connection; HTTP/2: GOAWAY, then the open
/// streams drain).
async fn serve_http<I>(
    io: I,
    socket: Socket,
    peer: SocketAddr,
    protocol: Protocol,
    context: &ConnectionContext,
    shutdown: &CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let deadline = ResponseDeadline::default();
    let info = ConnectionInfo {
        peer,
        deadline: deadline.clone(),
    };
    let service =
        context
            .service
            .clone()
            .map_request(move |mut request: Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(info.clone());
                request
            });
    let service = TowerToHyperService::new(service);
    let cut = || cut_by_deadline(socket, peer, context);
    let result = match protocol {
        Protocol::Http1 => {
            let mut builder = http1::Builder::new();
            // With a timer, hyper's header-read deadline runs from connect (so it is also the
            // first-byte deadline) and covers every idle keep-alive wait.
            builder
                .timer(TokioTimer::new())
                .max_buf_size(MAX_HEAD_BYTES)
                .max_header_size(MAX_HEAD_BYTES)
                .header_read_timeout(context.header_timeout);
            let connection = builder.serve_connection(TokioIo::new(io), service);
            let connection = std::pin::pin!(connection);
            drive(
                connection,
                |connection| connection.graceful_shutdown(),
                &deadline,
                shutdown,
                cut,
            )
            .await
        }
        Protocol::Http2 => {
            let io = PrefaceDeadline::new(
                io,
                context.http2.preface_timeout,
                context.metrics.h2_preface_timeouts.clone(),
            );
            let connection = context
                .http2
                .builder()
                .serve_connection(TokioIo::new(io), service);
            let connection = std::pin::pin!(Served::new(connection));
            drive(
                connection,
                |served| served.connection().graceful_shutdown(),
                &deadline,
                shutdown,
                cut,
            )
            .await
        }
    };
    if let Some(Err(error)) = result {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// Polls `connection` to its end, starting its graceful shutdown when `shutdown` fires; when
/// the response deadline passes first, calls `cut` while the connection (and so its socket)
/// is still alive, and returns `None`: the caller drops the connection then.
async fn drive<C>(
    mut connection: std::pin::Pin<&mut C>,
    graceful_shutdown: impl FnOnce(std::pin::Pin<&mut C>),
    deadline: &ResponseDeadline,
    shutdown: &CancellationToken,
    cut: impl FnOnce(),
) -> Option<hyper::Result<()>>
where
    C: std::future::Future<Output = hyper::Result<()>>,
{
    let result = tokio::select! {
        result = connection.as_mut() => Some(result),
        () = deadline.expired() => None,
        () = shutdown.cancelled() => {
            graceful_shutdown(connection.as_mut());
            tokio::select! {
                result = connection.as_mut() => Some(result),
                () = deadline.expired() => None,
            }
        }
    };
    if result.is_none() {
        cut();
    }
    result
}

/// The raw socket under a connection's IO stack (TLS, write deadline), kept so a connection
/// cut by a deadline can be reset.
#[derive(Debug, Clone, Copy)]
struct Socket(std::os::fd::RawFd);

impl Socket {
    fn of(stream: &TcpStream) -> Self {
        use std::os::fd::AsRawFd as _;
        Socket(stream.as_raw_fd())
    }
}

/// Called just before the connection (which still owns the socket) is dropped: a zero linger
/// makes the close a reset, so the kernel discards the unsent bytes instead of trickling
/// megabytes out to the very client the deadline is cutting off. Dropping the connection
/// then drops the response body and the request's tasks.
fn cut_by_deadline(socket: Socket, peer: SocketAddr, context: &ConnectionContext) {
    context.metrics.stream_timeouts.inc();
    tracing::debug!(%peer, "response deadline exceeded; resetting the connection");
    // SAFETY: the fd belongs to the TcpStream inside the connection future, which the caller
    // still holds (not yet dropped), so it is open and is this connection's socket.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(socket.0) };
    let _ = socket2::SockRef::from(&fd).set_linger(Some(Duration::ZERO));
}
