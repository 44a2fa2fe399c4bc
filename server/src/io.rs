//! A socket wrapper with a write deadline, so a client that stops reading cannot pin a connection.
//!
//! hyper has no write timeout, and body timeouts do not fire while hyper is
//! blocked writing, so the deadline lives at the socket: a write (or flush, or
//! shutdown) that makes no progress for `timeout` fails with `TimedOut`, which
//! ends the connection and drops its request. Progress re-arms the deadline,
//! so a slow but steady reader is served.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

pin_project! {
    /// `inner` with a write deadline (none when `timeout` is `None`).
    #[derive(Debug)]
    pub struct WriteDeadline<T> {
        #[pin]
        inner: T,
        timeout: Option<Duration>,
        stalled: Option<Pin<Box<Sleep>>>,
    }
}

impl<T> WriteDeadline<T> {
    /// Wraps `inner`; `None` disables the deadline.
    pub fn new(inner: T, timeout: Option<Duration>) -> Self {
        WriteDeadline {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

/// Turns a write attempt's result into a timeout when it has been pending too long.
fn check_stall<R>(
    attempt: Poll<io::Result<R>>,
    timeout: Option<Duration>,
    stalled: &mut Option<Pin<Box<Sleep>>>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<R>> {
    let Some(timeout) = timeout else {
        return attempt;
    };
    if attempt.is_ready() {
        *stalled = None;
        return attempt;
    }
    let sleep =
        stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + timeout)));
    ready!(sleep.as_mut().poll(cx));
    Poll::Ready(Err(io::Error::new(
        io::ErrorKind::TimedOut,
        "write deadline exceeded: the client stopped reading",
    )))
}

impl<T: AsyncRead> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<T: AsyncWrite> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let attempt = this.inner.poll_write(cx, buf);
        check_stall(attempt, *this.timeout, this.stalled, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let attempt = this.inner.poll_write_vectored(cx, bufs);
        check_stall(attempt, *this.timeout, this.stalled, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let attempt = this.inner.poll_flush(cx);
        check_stall(attempt, *this.timeout, this.stalled, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let attempt = this.inner.poll_shutdown(cx);
        check_stall(attempt, *this.timeout, this.stalled, cx)
    }
}
