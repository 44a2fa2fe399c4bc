//! HTTP/2 on the TLS port (ALPN `h2`): hyper's HTTP/2 connection with its defenses — the
//! preface deadline, the concurrent-stream cap, the rapid-reset limits (CVE-2023-44487) and
//! keep-alive pings — and the executor that spawns its stream tasks.
//!
//! hyper's HTTP/2 server has no deadline of its own before the client's preface: its timer
//! only drives keep-alive pings, which start once the handshake is done. [`PrefaceDeadline`]
//! covers that gap the way the header-read deadline does for HTTP/1.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::http2;
use hyper_util::rt::TokioTimer;
use pin_project_lite::pin_project;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::bugs::Bug;
use crate::config::Config;

/// The ALPN id of HTTP/2, offered first on the TLS port.
pub const ALPN_H2: &[u8] = b"h2";
/// The ALPN id of HTTP/1.1; a client that offers no ALPN is served HTTP/1.1 too.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The client connection preface (RFC 9113 §3.4) that starts every HTTP/2 connection.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Bytes of an HTTP/2 frame header.
const FRAME_HEADER_LEN: usize = 9;

/// The HTTP/2 settings of a server, with seeded bugs applied.
#[derive(Debug, Clone)]
pub struct Http2Settings {
    /// See [`crate::config::DEFAULT_H2_PREFACE_TIMEOUT`]; `None` (no deadline) with
    /// `no-h2-preface-deadline`.
    pub preface_timeout: Option<Duration>,
    /// See [`crate::config::DEFAULT_H2_MAX_CONCURRENT_STREAMS`].
    pub max_concurrent_streams: u32,
    /// See [`crate::config::DEFAULT_H2_MAX_PENDING_RESETS`]; `None` (no limit) with
    /// `no-h2-reset-limit`.
    pub max_pending_resets: Option<usize>,
    /// See [`crate::config::DEFAULT_H2_MAX_LOCAL_ERROR_RESETS`].
    pub max_local_error_resets: usize,
    /// See [`crate::config::DEFAULT_H2_KEEP_ALIVE_INTERVAL`].
    pub keep_alive_interval: Duration,
    /// See [`crate::config::DEFAULT_H2_KEEP_ALIVE_TIMEOUT`].
    pub keep_alive_timeout: Duration,
}

impl Http2Settings {
    /// The settings of `config`.
    pub fn new(config: &Config) -> Self {
        Http2Settings {
            preface_timeout: (!config.has_bug(Bug::NoH2PrefaceDeadline))
                .then_some(config.h2_preface_timeout),
            max_concurrent_streams: config.h2_max_concurrent_streams,
            max_pending_resets: (!config.has_bug(Bug::NoH2ResetLimit))
                .then_some(config.h2_max_pending_resets),
            max_local_error_resets: config.h2_max_local_error_resets,
            keep_alive_interval: config.h2_keep_alive_interval,
            keep_alive_timeout: config.h2_keep_alive_timeout,
        }
    }

    /// A hyper HTTP/2 connection builder with these settings.
    pub fn builder(&self) -> http2::Builder<StreamExecutor> {
        let mut builder = http2::Builder::new(StreamExecutor);
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.max_concurrent_streams)
            // hyper's `None` means h2's default (20), so "no limit" is the largest count.
            .max_pending_accept_reset_streams(self.max_pending_resets.unwrap_or(usize::MAX))
            .max_local_error_reset_streams(self.max_local_error_resets)
            .keep_alive_interval(self.keep_alive_interval)
            .keep_alive_timeout(self.keep_alive_timeout);
        builder
    }
}

/// Spawns hyper's HTTP/2 stream tasks (one per request stream, running the service and then
/// writing the response body) here, so leakcheck names a server spawn site for them. They carry
/// no request label of their own: the service's request-label layer labels what a request
/// spawns.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamExecutor;

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, stream: F) {
        tokio::spawn(stream);
    }
}

pin_project! {
    /// An HTTP/2 connection being served: hyper's connection future, polled through a frame of
    /// the server's own (never inlined, never a tail call), so a task dump names where an
    /// HTTP/2 connection waits even in a release build, apart from HTTP/1's header read.
    #[derive(Debug)]
    pub struct Served<C> {
        #[pin]
        connection: C,
    }
}

impl<C> Served<C> {
    /// Wraps hyper's connection future.
    pub fn new(connection: C) -> Self {
        Served { connection }
    }

    /// hyper's connection, for `graceful_shutdown`.
    pub fn connection(self: Pin<&mut Self>) -> Pin<&mut C> {
        self.project().connection
    }
}

impl<C: Future> Future for Served<C> {
    type Output = C::Output;

    #[inline(never)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        // `black_box` keeps hyper's poll out of tail position: a release build would otherwise
        // turn the call into a jump, and this frame would vanish from the dump all the same.
        std::hint::black_box(self.project().connection.poll(cx))
    }
}

pin_project! {
    /// `inner` with a deadline on the client's first bytes: the connection preface and one whole
    /// frame (the SETTINGS frame the preface must be followed by). A read after the deadline
    /// fails with `TimedOut`, which ends hyper's connection, and counts once in `expired`; once
    /// those bytes are in, reads are passed through untouched.
    #[derive(Debug)]
    pub struct PrefaceDeadline<T> {
        #[pin]
        inner: T,
        // The preface and the first frame's header, as far as received.
        head: [u8; PREFACE.len() + FRAME_HEADER_LEN],
        // Bytes received so far (counted up to `needed`).
        received: usize,
        // Bytes that complete the preface and first frame; known once its header is in.
        needed: Option<usize>,
        // `None` once the preface and first frame are in.
        deadline: Option<Pin<Box<Sleep>>>,
        // Counts the connections cut by the deadline.
        expired: Counter,
        // The deadline passed: every read fails from then on.
        timed_out: bool,
    }
}

impl<T> PrefaceDeadline<T> {
    /// Wraps `inner`; the deadline runs from now. With no `timeout`, reads pass through.
    pub fn new(inner: T, timeout: Option<Duration>, expired: Counter) -> Self {
        PrefaceDeadline {
            inner,
            head: [0; PREFACE.len() + FRAME_HEADER_LEN],
            received: 0,
            needed: None,
            deadline: timeout.map(|timeout| Box::pin(tokio::time::sleep(timeout))),
            expired,
            timed_out: false,
        }
    }
}

impl<T: AsyncRead> AsyncRead for PrefaceDeadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if *this.timed_out {
            return Poll::Ready(Err(preface_deadline_exceeded()));
        }
        let Some(deadline) = this.deadline.as_mut() else {
            return this.inner.poll_read(cx, buf);
        };
        let before = buf.filled().len();
        match this.inner.poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                let head_len = this.head.len();
                if *this.received < head_len {
                    let take = new.len().min(head_len - *this.received);
                    this.head[*this.received..*this.received + take].copy_from_slice(&new[..take]);
                }
                *this.received += new.len();
                if this.needed.is_none() && *this.received >= head_len {
                    let header = &this.head[PREFACE.len()..];
                    let payload = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
                    *this.needed = Some(head_len + payload);
                }
                if this.needed.is_some_and(|needed| *this.received >= needed) {
                    *this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    *this.timed_out = true;
                    this.expired.inc();
                    Poll::Ready(Err(preface_deadline_exceeded()))
                }
                Poll::Pending => Poll::Pending,
            },
            error => error,
        }
    }
}

impl<T: AsyncWrite> AsyncWrite for PrefaceDeadline<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

fn preface_deadline_exceeded() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "HTTP/2 preface deadline exceeded")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn settings_frame(payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut frame = len.to_be_bytes()[1..].to_vec();
        frame.extend_from_slice(&[0x4, 0, 0, 0, 0, 0]);
        frame.extend_from_slice(payload);
        frame
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_cut_at_the_deadline() {
        let (client, server) = tokio::io::duplex(1024);
        let expired = Counter::default();
        let mut server =
            PrefaceDeadline::new(server, Some(Duration::from_secs(5)), expired.clone());
        let started = tokio::time::Instant::now();
        let mut buffer = [0u8; 64];
        let error = server.read(&mut buffer).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        // Cut once, counted once: a later read fails too and is not counted again.
        let again = server.read(&mut buffer).await.unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::TimedOut);
        assert_eq!(expired.get(), 1);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_preface_without_its_settings_is_cut_too() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut server =
            PrefaceDeadline::new(server, Some(Duration::from_secs(5)), Counter::default());
        client.write_all(PREFACE).await.unwrap();
        // Half of the SETTINGS frame: its header announces 6 bytes, 3 come.
        let frame = settings_frame(&[0, 3, 0, 0, 0, 100]);
        client.write_all(&frame[..12]).await.unwrap();
        let mut buffer = [0u8; 64];
        let mut read = 0;
        let error = loop {
            match server.read(&mut buffer).await {
                Ok(n) => read += n,
                Err(error) => break error,
            }
        };
        assert_eq!(read, PREFACE.len() + 12);
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_first_frame_reads_have_no_deadline() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut server =
            PrefaceDeadline::new(server, Some(Duration::from_secs(5)), Counter::default());
        let mut hello = PREFACE.to_vec();
        hello.extend(settings_frame(&[0, 3, 0, 0, 0, 100]));
        client.write_all(&hello).await.unwrap();
        let mut buffer = vec![0u8; hello.len()];
        server.read_exact(&mut buffer).await.unwrap();
        assert_eq!(buffer, hello);
        let idle =
            tokio::time::timeout(Duration::from_secs(3600), server.read(&mut [0u8; 8])).await;
        assert!(idle.is_err(), "a read after the first frame was cut");
    }
}
