//! The seeded bugs: each one removes exactly one defense so that a real task leak appears.

use clap::ValueEnum;

/// A defense that `--bug NAME` removes. The doc comment of each variant is its `--help` text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum Bug {
    /// No TLS handshake deadline: a client that opens the TLS port and sends nothing (or half a ClientHello) pins a connection task forever.
    NoTlsHandshakeTimeout,
    /// No first-byte or header-read deadline: a plain-HTTP client that sends nothing (or half a request head) pins a connection task forever.
    NoHeaderTimeout,
    /// No DNS deadline: against a silent nameserver, each /proxy lookup task hangs forever, outliving the request that started it.
    NoDnsTimeout,
    /// No upstream connect, response-head or body deadline: a stalled upstream holds each pool slot, its pooled connection and the request until the whole-request deadline.
    NoUpstreamTimeouts,
    /// No pool acquire deadline: with the upstream stalled, /proxy requests queue on the pool without bound instead of failing fast with 503.
    NoPoolAcquireTimeout,
    /// /work, /stream and /panic?child=1 spawn their lease keeper detached instead of in the request's scope: it keeps running forever after the response, even after a client abort.
    DetachedRequestTask,
    /// No write deadline: a client that stops reading a /stream pins the connection task and the request's tasks for as long as it stays connected.
    NoWriteTimeout,
    /// No whole-response deadline on /stream: a client that reads a trickle (fast enough for the write deadline) pins the connection and the request's tasks for as long as the stream lasts.
    NoStreamTimeout,
    /// /panic?child=1 does not watch its children's join results: a child's panic goes unnoticed and the request hangs, with all its tasks, until the whole-request deadline.
    UncaughtPanicInChild,
    /// No HTTP/2 rapid-reset limit (CVE-2023-44487): a client that opens streams and resets each at once is never told GOAWAY ENHANCE_YOUR_CALM, so the server starts and cancels a handler for every stream it sends, and its connection stays served (its task pinned) for as long as it stays.
    NoH2ResetLimit,
    /// No HTTP/2 preface deadline: a client that picks `h2` by ALPN and then sends no connection preface (or no SETTINGS after it) pins a connection task forever; hyper has no timer before the preface and keep-alive pings start only after it.
    NoH2PrefaceDeadline,
}
