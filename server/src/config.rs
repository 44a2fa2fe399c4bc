//! Command-line flags, their defaults, and the validated [`Config`] the server runs with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::bugs::Bug;

/// Default TLS handshake deadline.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default deadline for a connection's first request head (and for each idle keep-alive wait).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Default deadline for a whole request, from its head to its response head.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default deadline for reading a request body.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a write may stay blocked on a client that does not read.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default deadline for one upstream name resolution.
pub const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(2);
/// Default wait for a free upstream connection slot before answering 503.
pub const DEFAULT_POOL_ACQUIRE_TIMEOUT: Duration = Duration::from_millis(500);
/// Default deadline for connecting to the upstream.
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default deadline for the upstream's response head, from sending the request.
pub const DEFAULT_UPSTREAM_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default deadline for reading the upstream's response body, from its head.
pub const DEFAULT_UPSTREAM_BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// Default deadline for a whole streamed response (`/stream`), from its head to its last byte.
pub const DEFAULT_STREAM_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time given to in-flight work on shutdown before it is cancelled.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Default number of upstream connections (and concurrent upstream requests).
pub const DEFAULT_POOL_SIZE: usize = 16;
/// Default cap on concurrent client connections; more are shed at accept.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default deadline for an HTTP/2 client's connection preface and first SETTINGS frame, from
/// the end of the TLS handshake.
pub const DEFAULT_H2_PREFACE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `SETTINGS_MAX_CONCURRENT_STREAMS` of an HTTP/2 connection.
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Default number of streams an HTTP/2 client may reset before the server has accepted them
/// (h2's own default) before it gets GOAWAY `ENHANCE_YOUR_CALM`: the rapid-reset defense.
pub const DEFAULT_H2_MAX_PENDING_RESETS: usize = 20;
/// Default number of streams the server may reset for an HTTP/2 client's protocol errors
/// before it gets GOAWAY `ENHANCE_YOUR_CALM` (hyper's default).
pub const DEFAULT_H2_MAX_LOCAL_ERROR_RESETS: usize = 1024;
/// Default interval of the HTTP/2 keep-alive pings.
pub const DEFAULT_H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// Default wait for a keep-alive ping's acknowledgement before the connection is closed.
pub const DEFAULT_H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// `leakcheck-server`: an instrumented hyper/rustls HTTP service whose every
/// task is tracked by leakcheck.
///
/// Prints `listening http=ADDR https=ADDR` once bound. On SIGTERM or Ctrl-C it
/// drains within --shutdown-grace, cancels what is left, then verifies that no
/// task survived: leaks are printed to stderr and the exit code is 3.
#[derive(Debug, Parser)]
#[command(name = "leakcheck-server", version)]
pub struct Args {
    /// Plain HTTP/1.1 listen address (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// HTTPS listen address (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub tls_listen: SocketAddr,
    /// TLS certificate chain (PEM); a self-signed one for localhost is generated when absent.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// TLS private key (PEM), with --cert.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Deadline for a TLS handshake.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,
    /// Deadline for a request head, from connect (or from the previous response on keep-alive).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// Deadline for a whole request, head to response head (503 when exceeded).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Deadline for reading a request body (408 when exceeded).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// How long a write may stay blocked on a client that does not read before the connection is closed.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub write_timeout: Duration,
    /// Deadline for resolving the upstream's name (504 when exceeded).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub dns_timeout: Duration,
    /// Wait for a free upstream connection before answering 503.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub pool_acquire_timeout: Duration,
    /// Deadline for connecting to the upstream (502 when exceeded).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub upstream_connect_timeout: Duration,
    /// Deadline for the upstream's response head, from sending the request (504 when exceeded).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub upstream_response_timeout: Duration,
    /// Deadline for reading the upstream's response body, from its head (504 when exceeded).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub upstream_body_timeout: Duration,
    /// Deadline for a whole streamed response (/stream), head to last byte; the connection is closed when it passes.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub stream_timeout: Duration,
    /// Time given to in-flight connections on shutdown before they are cancelled.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Upstream base URL for /proxy, e.g. `http://upstream.test:9000/` (http only).
    #[arg(long)]
    pub upstream: Option<String>,
    /// Nameserver (IP:PORT, UDP) for upstream names; the system resolver configuration when absent.
    #[arg(long)]
    pub dns_server: Option<SocketAddr>,
    /// Upstream connections (and concurrent upstream requests).
    #[arg(long, default_value_t = DEFAULT_POOL_SIZE, value_parser = parse_positive)]
    pub pool_size: usize,
    /// Concurrent client connections; connections past the cap are shed at accept.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS, value_parser = parse_positive)]
    pub max_connections: usize,
    /// HTTP/2 (TLS port): deadline for the client's connection preface and first SETTINGS frame, from the end of the TLS handshake.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub h2_preface_timeout: Duration,
    /// HTTP/2: streams a client may have open at once on one connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(long, default_value_t = DEFAULT_H2_MAX_CONCURRENT_STREAMS, value_parser = parse_positive_u32)]
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2: streams a client may reset before the server accepted them before it gets GOAWAY ENHANCE_YOUR_CALM (rapid reset, CVE-2023-44487).
    #[arg(long, default_value_t = DEFAULT_H2_MAX_PENDING_RESETS, value_parser = parse_positive)]
    pub h2_max_pending_resets: usize,
    /// HTTP/2: streams the server may reset for a client's protocol errors before it gets GOAWAY ENHANCE_YOUR_CALM.
    #[arg(long, default_value_t = DEFAULT_H2_MAX_LOCAL_ERROR_RESETS, value_parser = parse_positive)]
    pub h2_max_local_error_resets: usize,
    /// HTTP/2: interval of the keep-alive pings that find a vanished client.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub h2_keep_alive_interval: Duration,
    /// HTTP/2: wait for a keep-alive ping's acknowledgement before the connection is closed.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub h2_keep_alive_timeout: Duration,
    /// Runtime worker threads (default: one per available core).
    #[arg(long, value_parser = parse_positive)]
    pub worker_threads: Option<usize>,
    /// How tasks are tracked: `full` (leakcheck with spawn backtraces), `sites` (spawn sites only), `off` (no tracker, for benchmarks).
    #[arg(long, value_enum, default_value_t = Tracking::Full)]
    pub tracking: Tracking,
    /// Also write the shutdown leak report as JSON to this file (atomically).
    #[arg(long)]
    pub leak_report: Option<PathBuf>,
    /// Remove one defense so that a real task leak appears (repeatable).
    #[arg(long = "bug", value_enum)]
    pub bugs: Vec<Bug>,
}

/// How the runtime's tasks are tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Tracking {
    /// leakcheck tracker with a spawn backtrace for every task.
    Full,
    /// leakcheck tracker with spawn sites only.
    Sites,
    /// No tracker: /debug/tasks answers 503 and shutdown verification is skipped.
    Off,
}

/// TLS certificate source.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// Generate a self-signed certificate for `localhost` and `127.0.0.1` at start-up.
    SelfSigned,
    /// PEM files given on the command line.
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
}

/// Everything the server needs to run; built from [`Args`] or by hand in tests.
#[derive(Debug, Clone)]
pub struct Config {
    /// Plain HTTP listen address.
    pub listen: SocketAddr,
    /// HTTPS listen address.
    pub tls_listen: SocketAddr,
    /// Where the TLS certificate comes from.
    pub cert: CertSource,
    /// See [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub handshake_timeout: Duration,
    /// See [`DEFAULT_HEADER_TIMEOUT`].
    pub header_timeout: Duration,
    /// See [`DEFAULT_REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
    /// See [`DEFAULT_BODY_TIMEOUT`].
    pub body_timeout: Duration,
    /// See [`DEFAULT_WRITE_TIMEOUT`].
    pub write_timeout: Duration,
    /// See [`DEFAULT_DNS_TIMEOUT`].
    pub dns_timeout: Duration,
    /// See [`DEFAULT_POOL_ACQUIRE_TIMEOUT`].
    pub pool_acquire_timeout: Duration,
    /// See [`DEFAULT_UPSTREAM_CONNECT_TIMEOUT`].
    pub upstream_connect_timeout: Duration,
    /// See [`DEFAULT_UPSTREAM_RESPONSE_TIMEOUT`].
    pub upstream_response_timeout: Duration,
    /// See [`DEFAULT_UPSTREAM_BODY_TIMEOUT`].
    pub upstream_body_timeout: Duration,
    /// See [`DEFAULT_STREAM_TIMEOUT`].
    pub stream_timeout: Duration,
    /// See [`DEFAULT_SHUTDOWN_GRACE`].
    pub shutdown_grace: Duration,
    /// Upstream base URL for /proxy.
    pub upstream: Option<String>,
    /// Nameserver for upstream names.
    pub dns_server: Option<SocketAddr>,
    /// See [`DEFAULT_POOL_SIZE`].
    pub pool_size: usize,
    /// See [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// See [`DEFAULT_H2_PREFACE_TIMEOUT`].
    pub h2_preface_timeout: Duration,
    /// See [`DEFAULT_H2_MAX_CONCURRENT_STREAMS`].
    pub h2_max_concurrent_streams: u32,
    /// See [`DEFAULT_H2_MAX_PENDING_RESETS`].
    pub h2_max_pending_resets: usize,
    /// See [`DEFAULT_H2_MAX_LOCAL_ERROR_RESETS`].
    pub h2_max_local_error_resets: usize,
    /// See [`DEFAULT_H2_KEEP_ALIVE_INTERVAL`].
    pub h2_keep_alive_interval: Duration,
    /// See [`DEFAULT_H2_KEEP_ALIVE_TIMEOUT`].
    pub h2_keep_alive_timeout: Duration,
    /// Runtime worker threads; `None` = one per core.
    pub worker_threads: Option<usize>,
    /// Task tracking mode.
    pub tracking: Tracking,
    /// Seeded bugs: defenses removed.
    pub bugs: Vec<Bug>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            cert: CertSource::SelfSigned,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            dns_timeout: DEFAULT_DNS_TIMEOUT,
            pool_acquire_timeout: DEFAULT_POOL_ACQUIRE_TIMEOUT,
            upstream_connect_timeout: DEFAULT_UPSTREAM_CONNECT_TIMEOUT,
            upstream_response_timeout: DEFAULT_UPSTREAM_RESPONSE_TIMEOUT,
            upstream_body_timeout: DEFAULT_UPSTREAM_BODY_TIMEOUT,
            stream_timeout: DEFAULT_STREAM_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            upstream: None,
            dns_server: None,
            pool_size: DEFAULT_POOL_SIZE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            h2_preface_timeout: DEFAULT_H2_PREFACE_TIMEOUT,
            h2_max_concurrent_streams: DEFAULT_H2_MAX_CONCURRENT_STREAMS,
            h2_max_pending_resets: DEFAULT_H2_MAX_PENDING_RESETS,
            h2_max_local_error_resets: DEFAULT_H2_MAX_LOCAL_ERROR_RESETS,
            h2_keep_alive_interval: DEFAULT_H2_KEEP_ALIVE_INTERVAL,
            h2_keep_alive_timeout: DEFAULT_H2_KEEP_ALIVE_TIMEOUT,
            worker_threads: None,
            tracking: Tracking::Full,
            bugs: Vec::new(),
        }
    }
}

impl Config {
    /// Whether `bug` was seeded (its defense removed).
    pub fn has_bug(&self, bug: Bug) -> bool {
        self.bugs.contains(&bug)
    }
}

impl From<Args> for Config {
    fn from(args: Args) -> Self {
        let cert = match (args.cert, args.key) {
            (Some(cert), Some(key)) => CertSource::Files { cert, key },
            _ => CertSource::SelfSigned,
        };
        Config {
            listen: args.listen,
            tls_listen: args.tls_listen,
            cert,
            handshake_timeout: args.handshake_timeout,
            header_timeout: args.header_timeout,
            request_timeout: args.request_timeout,
            body_timeout: args.body_timeout,
            write_timeout: args.write_timeout,
            dns_timeout: args.dns_timeout,
            pool_acquire_timeout: args.pool_acquire_timeout,
            upstream_connect_timeout: args.upstream_connect_timeout,
            upstream_response_timeout: args.upstream_response_timeout,
            upstream_body_timeout: args.upstream_body_timeout,
            stream_timeout: args.stream_timeout,
            shutdown_grace: args.shutdown_grace,
            upstream: args.upstream,
            dns_server: args.dns_server,
            pool_size: args.pool_size,
            max_connections: args.max_connections,
            h2_preface_timeout: args.h2_preface_timeout,
            h2_max_concurrent_streams: args.h2_max_concurrent_streams,
            h2_max_pending_resets: args.h2_max_pending_resets,
            h2_max_local_error_resets: args.h2_max_local_error_resets,
            h2_keep_alive_interval: args.h2_keep_alive_interval,
            h2_keep_alive_timeout: args.h2_keep_alive_timeout,
            worker_threads: args.worker_threads,
            tracking: args.tracking,
            bugs: args.bugs,
        }
    }
}

/// Parses `250ms`, `2s`, `1m` or `1.5s` into a [`Duration`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let hint = "use a number with a unit, e.g. 250ms, 2s or 1m";
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: {hint}"))?;
    let seconds_per_unit = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "" => return Err(format!("`{text}` has no unit: {hint}")),
        other => return Err(format!("`{other}` in `{text}` is not a unit: {hint}")),
    };
    Duration::try_from_secs_f64(value * seconds_per_unit)
        .ok()
        .filter(|duration| !duration.is_zero())
        .ok_or_else(|| format!("`{text}` must be a positive duration: {hint}"))
}

fn parse_positive(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) | Err(_) => Err(format!("`{text}` is not a positive whole number")),
        Ok(value) => Ok(value),
    }
}

fn parse_positive_u32(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(0) | Err(_) => Err(format!(
            "`{text}` is not a positive whole number up to {}",
            u32::MAX
        )),
        Ok(value) => Ok(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
    }

    #[test]
    fn bad_durations_say_what_to_write() {
        for bad in ["", "5", "2h", "s", "0s", "-1s", "1e9999s"] {
            let error = parse_duration(bad).unwrap_err();
            assert!(error.contains("e.g. 250ms"), "{bad}: {error}");
        }
    }

    #[test]
    fn every_flag_has_a_sane_default() {
        let config = Config::from(Args::parse_from(["leakcheck-server"]));
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.tls_listen, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(config.header_timeout, DEFAULT_HEADER_TIMEOUT);
        assert_eq!(config.request_timeout, DEFAULT_REQUEST_TIMEOUT);
        assert_eq!(config.pool_acquire_timeout, DEFAULT_POOL_ACQUIRE_TIMEOUT);
        assert_eq!(
            config.upstream_connect_timeout,
            DEFAULT_UPSTREAM_CONNECT_TIMEOUT
        );
        assert_eq!(
            config.upstream_response_timeout,
            DEFAULT_UPSTREAM_RESPONSE_TIMEOUT
        );
        assert_eq!(config.upstream_body_timeout, DEFAULT_UPSTREAM_BODY_TIMEOUT);
        assert_eq!(config.stream_timeout, DEFAULT_STREAM_TIMEOUT);
        assert_eq!(config.h2_preface_timeout, DEFAULT_H2_PREFACE_TIMEOUT);
        assert_eq!(
            config.h2_max_concurrent_streams,
            DEFAULT_H2_MAX_CONCURRENT_STREAMS
        );
        assert_eq!(config.h2_max_pending_resets, DEFAULT_H2_MAX_PENDING_RESETS);
        assert_eq!(
            config.h2_max_local_error_resets,
            DEFAULT_H2_MAX_LOCAL_ERROR_RESETS
        );
        assert_eq!(
            config.h2_keep_alive_interval,
            DEFAULT_H2_KEEP_ALIVE_INTERVAL
        );
        assert_eq!(config.h2_keep_alive_timeout, DEFAULT_H2_KEEP_ALIVE_TIMEOUT);
        assert!(config.bugs.is_empty());
    }

    #[test]
    fn bugs_repeat() {
        let args = Args::parse_from([
            "leakcheck-server",
            "--bug",
            "no-header-timeout",
            "--bug",
            "detached-request-task",
        ]);
        assert_eq!(
            args.bugs,
            vec![Bug::NoHeaderTimeout, Bug::DetachedRequestTask]
        );
    }
}
