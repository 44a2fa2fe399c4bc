//! Misbehaving HTTP clients on real loopback sockets: stall, drip, half-close, slow read, RST, abort, garbage.
//!
//! Each client is bounded by a deadline it is given; a client that is still connected when its
//! deadline passes hands its socket back ([`Held::Open`]) so the scenario can keep it open
//! (a peer that vanished without closing) or drop it.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until};

use crate::history::monotonic_now_ns;
use crate::http::{self, Response};

/// What became of a hostile connection by its deadline: a plain socket unless the client held
/// another stream (a TLS session).
#[derive(Debug)]
pub enum Held<S = TcpStream> {
    /// The server closed (or reset) the connection.
    Closed {
        /// Time from the start of the hostile behaviour to the close.
        after: Duration,
        /// The status code of a response the server sent before closing, if it sent one.
        status: Option<u16>,
        /// What the server sent before closing (up to [`MAX_KEPT_REPLY`] bytes; a slow reader
        /// keeps only the first few).
        received: Vec<u8>,
    },
    /// Still connected at the deadline; the stream is handed back.
    Open(S),
}

impl<S> Held<S> {
    /// True when the server closed the connection.
    pub fn is_closed(&self) -> bool {
        matches!(self, Held::Closed { .. })
    }

    /// What the server sent before it closed the connection, as text; `None` while open.
    pub fn reply(&self) -> Option<String> {
        match self {
            Held::Closed { received, .. } => Some(String::from_utf8_lossy(received).into_owned()),
            Held::Open(_) => None,
        }
    }
}

/// Most bytes of the server's reply a [`Held::Closed`] keeps.
pub const MAX_KEPT_REPLY: usize = 64 * 1024;

/// How a client lets go of a connection in the middle of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortStyle {
    /// An orderly close: the server reads EOF.
    Fin,
    /// `SO_LINGER=0` then close: the kernel sends a RST and the server's next read or write fails.
    Rst,
}

/// Connects and sends nothing.
pub async fn connect_and_stall(addr: SocketAddr) -> io::Result<TcpStream> {
    TcpStream::connect(addr).await
}

/// Sends `bytes` one at a time, one every `interval`, then stays silent, until the server closes
/// the connection or `deadline` passes.
pub async fn drip<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    bytes: &[u8],
    interval: Duration,
    deadline: Instant,
) -> Held<S> {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut next_byte = 0;
    let mut next_write = started;
    let mut buf = [0u8; 1024];
    loop {
        let writing = next_byte < bytes.len();
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => return closed(started, received),
                Ok(n) => keep(&mut received, &buf[..n]),
            },
            () = sleep_until(next_write), if writing => {
                if stream.write_all(&bytes[next_byte..=next_byte]).await.is_err() {
                    return closed(started, received);
                }
                next_byte += 1;
                next_write += interval;
            }
            () = sleep_until(deadline) => return Held::Open(stream),
        }
    }
}

/// Slowloris: a request line and a `Host` header, then one header byte every `interval`, never
/// ending the head.
pub async fn slowloris(
    addr: SocketAddr,
    interval: Duration,
    deadline: Instant,
) -> io::Result<Held> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await?;
    // Enough header bytes to outlast any deadline a scenario sets at one byte per interval.
    let endless_header = b"X-Slowloris: ".repeat(64);
    Ok(drip(stream, &endless_header, interval, deadline).await)
}

/// Waits, without sending, until the server closes the connection (a socket or a TLS stream,
/// whose bytes are read and kept) or `deadline` passes.
pub async fn hold_until_closed<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    deadline: Instant,
) -> Held<S> {
    drip(stream, &[], Duration::ZERO, deadline).await
}

/// Sends the request, shuts down the write side (FIN), and reads whatever comes back.
/// `Ok(None)` when the server closed without a response.
pub async fn half_close_after_request(
    addr: SocketAddr,
    request: &[u8],
    deadline: Duration,
) -> io::Result<Option<Response>> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request).await?;
        stream.shutdown().await?;
        let mut buffered = Vec::new();
        let head = match http::read_head(&mut stream, &mut buffered).await {
            Ok(head) => head,
            Err(error) if is_disconnect(&error) => return Ok(None),
            Err(error) => return Err(error),
        };
        let body = http::read_body(&mut stream, &head, buffered).await?;
        Ok(Some(Response { head, body }))
    };
    tokio::time::timeout(deadline, exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "half-closed request timed out"))?
}

/// A client with a tiny receive buffer that asks for `path` (with `x-request-id: request_id`)
/// and then reads `read_size` bytes every `read_interval`, until the server closes or
/// `deadline` passes.
pub async fn slow_reader(
    addr: SocketAddr,
    path: &str,
    request_id: &str,
    receive_buffer: usize,
    read_size: usize,
    read_interval: Duration,
    deadline: Instant,
) -> io::Result<Held> {
    let started = Instant::now();
    let mut stream = connect_with_receive_buffer(addr, receive_buffer).await?;
    stream
        .write_all(&http::get_request(path, &[("x-request-id", request_id)]))
        .await?;
    let mut buf = vec![0u8; read_size.max(1)];
    let mut received = Vec::new();
    loop {
        tokio::select! {
            () = tokio::time::sleep(read_interval) => {}
            () = sleep_until(deadline) => break,
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return Ok(closed(started, received)),
            Ok(n) if received.len() < 64 => received.extend_from_slice(&buf[..n]),
            Ok(_) => {}
        }
    }
    // The close may sit behind unread data: drain briefly to see it, then give the socket back.
    let drain_until = Instant::now() + Duration::from_millis(50);
    let mut drain = [0u8; 64 * 1024];
    loop {
        match tokio::time::timeout_at(drain_until, stream.read(&mut drain)).await {
            Ok(Ok(0) | Err(_)) => return Ok(closed(started, received)),
            Ok(Ok(_)) => {}
            Err(_) => return Ok(Held::Open(stream)),
        }
    }
}

/// Connects from a socket whose `SO_RCVBUF` is set to `receive_buffer` bytes before the
/// handshake (so the advertised window is small from the start).
pub async fn connect_with_receive_buffer(
    addr: SocketAddr,
    receive_buffer: usize,
) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_recv_buffer_size(receive_buffer)?;
    socket.set_nonblocking(true)?;
    let std_socket: std::net::TcpStream = socket.into();
    let tokio_socket = tokio::net::TcpSocket::from_std_stream(std_socket);
    tokio_socket.connect(addr).await
}

/// Lets go of `stream` in `style` and returns the time of the abort (`CLOCK_MONOTONIC` ns).
pub fn abort(stream: TcpStream, style: AbortStyle) -> u64 {
    if style == AbortStyle::Rst {
        // Failing to set the option leaves an orderly close, which is still an abort.
        let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    }
    let at = monotonic_now_ns();
    drop(stream);
    at
}

/// Sends `bytes` verbatim (garbage, half a request or a whole one) and waits until the server
/// closes or `deadline` passes. A write the server cut short by answering and closing first is
/// no error: its reply is in [`Held::Closed`].
pub async fn send_and_hold(addr: SocketAddr, bytes: &[u8], deadline: Instant) -> io::Result<Held> {
    let mut stream = TcpStream::connect(addr).await?;
    if tokio::time::timeout_at(deadline, stream.write_all(bytes))
        .await
        .is_err()
    {
        return Ok(Held::Open(stream));
    }
    Ok(hold_until_closed(stream, deadline).await)
}

fn keep(received: &mut Vec<u8>, bytes: &[u8]) {
    let room = MAX_KEPT_REPLY.saturating_sub(received.len());
    received.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

fn closed<S>(started: Instant, received: Vec<u8>) -> Held<S> {
    let status = std::str::from_utf8(received.get(..12).unwrap_or(&received))
        .ok()
        .filter(|text| text.starts_with("HTTP/1."))
        .and_then(|text| text.get(9..12))
        .and_then(|code| code.parse().ok());
    Held::Closed {
        after: started.elapsed(),
        status,
        received,
    }
}

fn is_disconnect(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn listener() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    #[tokio::test]
    async fn drip_sends_one_byte_per_interval_and_sees_the_close() {
        let (listener, addr) = listener().await;
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut byte = [0u8; 8];
            while got.len() < 3 {
                let n = conn.read(&mut byte).await.unwrap();
                assert_eq!(n, 1, "a drip must arrive one byte per read");
                got.extend_from_slice(&byte[..n]);
            }
            conn.write_all(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
                .await
                .unwrap();
            got
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let held = drip(
            stream,
            b"abcdef",
            Duration::from_millis(20),
            Instant::now() + Duration::from_secs(5),
        )
        .await;
        assert_eq!(server.await.unwrap(), b"abc");
        match held {
            Held::Closed { after, status, .. } => {
                assert_eq!(status, Some(408));
                assert!(after >= Duration::from_millis(40), "closed after {after:?}");
            }
            Held::Open(_) => panic!("the server closed, the drip must see it"),
        }
    }

    #[tokio::test]
    async fn slowloris_holds_an_unfinished_head_until_the_deadline() {
        let (listener, addr) = listener().await;
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 256];
            while let Ok(n) = conn.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            got
        });
        let deadline = Instant::now() + Duration::from_millis(150);
        let held = slowloris(addr, Duration::from_millis(10), deadline)
            .await
            .unwrap();
        let Held::Open(stream) = held else {
            panic!("nobody closed the slowloris connection");
        };
        drop(stream);
        let got = String::from_utf8(server.await.unwrap()).unwrap();
        assert!(got.starts_with("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow"));
        assert!(!got.contains("\r\n\r\n"), "a slowloris head never ends");
    }

    #[tokio::test]
    async fn rst_abort_resets_the_server_side() {
        let (listener, addr) = listener().await;
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut conn, _) = listener.accept().await.unwrap();
        let before = monotonic_now_ns();
        let at = abort(stream, AbortStyle::Rst);
        assert!(at >= before);
        let mut buf = [0u8; 16];
        let error = conn.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);
    }

    #[tokio::test]
    async fn fin_abort_is_an_orderly_eof() {
        let (listener, addr) = listener().await;
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut conn, _) = listener.accept().await.unwrap();
        abort(stream, AbortStyle::Fin);
        let mut buf = [0u8; 16];
        assert_eq!(conn.read(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn half_close_still_reads_the_response() {
        let (listener, addr) = listener().await;
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            conn.read_to_end(&mut request).await.unwrap();
            assert!(request.starts_with(b"GET /work "));
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
        });
        let response = half_close_after_request(
            addr,
            &http::get_request("/work", &[]),
            Duration::from_secs(5),
        )
        .await
        .unwrap()
        .expect("the server answered");
        assert_eq!(response.head.status, 200);
        assert_eq!(response.body, b"ok");
    }

    #[tokio::test]
    async fn slow_reader_advertises_a_small_window_and_stalls_the_writer() {
        let (listener, addr) = listener().await;
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            SockRef::from(&conn).set_send_buffer_size(4096).unwrap();
            let chunk = [b'x'; 4096];
            let mut written = 0usize;
            // The writer is stuck once the tiny window and send buffer are full.
            while let Ok(Ok(())) =
                tokio::time::timeout(Duration::from_millis(200), conn.write_all(&chunk)).await
            {
                written += chunk.len();
                assert!(written < 8 * 1024 * 1024, "the reader is not slow");
            }
            written
        });
        let held = slow_reader(
            addr,
            "/stream",
            "slow-1",
            2048,
            16,
            Duration::from_millis(100),
            Instant::now() + Duration::from_millis(400),
        )
        .await
        .unwrap();
        let written = server.await.unwrap();
        assert!(written < 2 * 1024 * 1024, "wrote {written} bytes");
        drop(held);
    }

    #[tokio::test]
    async fn bytes_are_sent_verbatim_and_the_reply_and_close_are_seen() {
        let (listener, addr) = listener().await;
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4];
            conn.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"\x00\xff\x13\x37");
            conn.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                .await
                .unwrap();
        });
        let held = send_and_hold(
            addr,
            b"\x00\xff\x13\x37",
            Instant::now() + Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert!(matches!(
            held,
            Held::Closed {
                status: Some(400),
                ..
            }
        ));
        assert_eq!(
            held.reply().as_deref(),
            Some("HTTP/1.1 400 Bad Request\r\n\r\n")
        );
    }

    #[tokio::test]
    async fn connect_and_stall_sends_nothing() {
        let (listener, addr) = listener().await;
        let stream = connect_and_stall(addr).await.unwrap();
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(100), conn.read(&mut buf)).await;
        assert!(read.is_err(), "a stalled client sent something");
        drop(stream);
    }
}
