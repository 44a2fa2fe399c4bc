//! The /proxy upstream: name resolution through hickory (coalesced, with a deadline, done
//! before a pool slot is taken) and a bounded connection pool whose slots are acquired with a
//! deadline (fast 503 instead of a queue), every exchange bounded by connect, response-head and
//! body deadlines.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hickory_resolver::Resolver;
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfigGroup, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::task::{AbortOnDropHandle, TaskTracker};

use crate::bugs::Bug;
use crate::config::Config;
use crate::labels::{DNS_LOOKUP_LABEL, UPSTREAM_CONNECTION_LABEL, spawn_labeled};
use crate::metrics::Metrics;

/// Largest upstream response body relayed by /proxy.
pub const MAX_UPSTREAM_BODY: usize = 1024 * 1024;

/// What the resolver is told when `no-dns-timeout` is seeded: hickory needs some
/// value, and a day is "never" for any client.
const UNBOUNDED_DNS_TIMEOUT: Duration = Duration::from_secs(86_400);

/// Why /proxy could not relay a response.
#[derive(Debug)]
#[non_exhaustive]
pub enum UpstreamError {
    /// No `--upstream` was given.
    NotConfigured,
    /// The name did not resolve within the DNS deadline.
    DnsTimeout,
    /// The resolver answered with an error or no address.
    DnsFailed(String),
    /// No pool slot became free within the acquire deadline.
    PoolExhausted,
    /// The upstream did not accept the connection within the connect deadline.
    ConnectTimeout,
    /// The upstream sent no response head within the response deadline.
    ResponseTimeout,
    /// The upstream's response body did not arrive within the body deadline.
    BodyTimeout,
    /// TCP connect or HTTP exchange with the upstream failed.
    Exchange(String),
}

impl UpstreamError {
    /// The status /proxy answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            UpstreamError::NotConfigured
            | UpstreamError::DnsFailed(_)
            | UpstreamError::ConnectTimeout
            | UpstreamError::Exchange(_) => StatusCode::BAD_GATEWAY,
            UpstreamError::DnsTimeout
            | UpstreamError::ResponseTimeout
            | UpstreamError::BodyTimeout => StatusCode::GATEWAY_TIMEOUT,
            UpstreamError::PoolExhausted => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::NotConfigured => {
                f.write_str("no upstream configured (start the server with --upstream URL)")
            }
            UpstreamError::DnsTimeout => f.write_str("upstream name resolution timed out"),
            UpstreamError::DnsFailed(reason) => {
                write!(f, "upstream name resolution failed: {reason}")
            }
            UpstreamError::PoolExhausted => f.write_str("upstream pool exhausted, try again later"),
            UpstreamError::ConnectTimeout => f.write_str("upstream connect timed out"),
            UpstreamError::ResponseTimeout => {
                f.write_str("upstream sent no response head within the deadline")
            }
            UpstreamError::BodyTimeout => {
                f.write_str("upstream response body did not arrive within the deadline")
            }
            UpstreamError::Exchange(reason) => write!(f, "upstream exchange failed: {reason}"),
        }
    }
}

/// An `--upstream` URL that cannot be used.
#[derive(Debug)]
pub struct BadUpstream(String);

impl fmt::Display for BadUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadUpstream {}

#[derive(Debug, Clone)]
struct Target {
    host: String,
    port: u16,
    /// Path prefix from the URL, without a trailing slash.
    base_path: String,
    authority: String,
}

fn parse_target(url: &str) -> Result<Target, BadUpstream> {
    let bad = |why: &str| {
        BadUpstream(format!(
            "--upstream `{url}` {why}; expected e.g. http://upstream.test:9000/"
        ))
    };
    let uri: Uri = url.parse().map_err(|_| bad("is not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad("must use the http scheme"));
    }
    let authority = uri.authority().ok_or_else(|| bad("has no host"))?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok(Target {
        host,
        port: authority.port_u16().unwrap_or(80),
        base_path: uri.path().trim_end_matches('/').to_owned(),
        authority: authority.as_str().to_owned(),
    })
}

/// A settled lookup as published to every request waiting on it.
type LookupAnswer = Option<Result<IpAddr, UpstreamError>>;

/// A pooled HTTP/1 connection; its driver task ends when this is dropped.
struct PooledConnection {
    sender: SendRequest<Empty<Bytes>>,
    _driver: AbortOnDropHandle<()>,
}

/// Where an exchange on a pooled connection failed.
enum ExchangeFailure {
    /// No response head arrived (the connection was closed or refused the request).
    BeforeResponse(String),
    /// A deadline passed: the upstream is slow, not gone, so the request is not sent again.
    TimedOut(UpstreamError),
    /// The response head arrived, then its body failed.
    Body(String),
}

impl ExchangeFailure {
    fn into_error(self) -> UpstreamError {
        match self {
            ExchangeFailure::BeforeResponse(reason) | ExchangeFailure::Body(reason) => {
                UpstreamError::Exchange(reason)
            }
            ExchangeFailure::TimedOut(error) => error,
        }
    }
}

/// The upstream deadlines (each `None` with `no-upstream-timeouts`).
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    connect: Option<Duration>,
    response: Option<Duration>,
    body: Option<Duration>,
}

/// `future` bounded by `deadline` (unbounded when `None`); `Err(())` when it passed.
async fn bounded<T>(deadline: Option<Duration>, future: impl Future<Output = T>) -> Result<T, ()> {
    match deadline {
        Some(deadline) => timeout(deadline, future).await.map_err(|_| ()),
        None => Ok(future.await),
    }
}

/// Sends `request` on `connection` and reads the whole (bounded) response, each half
/// under its deadline.
async fn exchange(
    connection: &mut PooledConnection,
    request: Request<Empty<Bytes>>,
    deadlines: Deadlines,
) -> Result<(StatusCode, Bytes), ExchangeFailure> {
    let before_response = |error: hyper::Error| ExchangeFailure::BeforeResponse(error.to_string());
    let response = bounded(deadlines.response, async {
        connection.sender.ready().await.map_err(before_response)?;
        connection
            .sender
            .send_request(request)
            .await
            .map_err(before_response)
    })
    .await
    .map_err(|()| ExchangeFailure::TimedOut(UpstreamError::ResponseTimeout))??;
    let status = response.status();
    let body = bounded(
        deadlines.body,
        Limited::new(response.into_body(), MAX_UPSTREAM_BODY).collect(),
    )
    .await
    .map_err(|()| ExchangeFailure::TimedOut(UpstreamError::BodyTimeout))?
    .map_err(|error| ExchangeFailure::Body(error.to_string()))?;
    Ok((status, body.to_bytes()))
}

/// Resolver, in-flight lookups and the connection pool for one upstream.
pub struct Upstream {
    target: Option<Target>,
    resolver: Resolver<TokioConnectionProvider>,
    /// Lookups in flight by host name, so concurrent requests share one.
    lookups: Mutex<HashMap<String, watch::Receiver<LookupAnswer>>>,
    lookup_tasks: TaskTracker,
    dns_timeout: Option<Duration>,
    slots: Arc<Semaphore>,
    acquire_timeout: Option<Duration>,
    deadlines: Deadlines,
    idle: Mutex<Vec<PooledConnection>>,
    metrics: Arc<Metrics>,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("target", &self.target)
            .field("idle", &self.idle.lock().len())
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds the resolver and the (empty) pool from the configuration.
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Self, BadUpstream> {
        let target = config.upstream.as_deref().map(parse_target).transpose()?;
        let dns_timeout = (!config.has_bug(Bug::NoDnsTimeout)).then_some(config.dns_timeout);
        let mut options = ResolverOpts::default();
        options.timeout = dns_timeout.unwrap_or(UNBOUNDED_DNS_TIMEOUT);
        options.attempts = 1;
        options.ip_strategy = LookupIpStrategy::Ipv4Only;
        let resolver_config = match config.dns_server {
            Some(server) => {
                // The given nameserver is the only source of truth, hosts file included.
                options.use_hosts_file = ResolveHosts::Never;
                let servers =
                    NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
                ResolverConfig::from_parts(None, vec![], servers)
            }
            None => match hickory_resolver::system_conf::read_system_conf() {
                Ok((system, _)) => system,
                Err(error) => {
                    tracing::warn!(%error, "no usable /etc/resolv.conf; /proxy names will not resolve (use --dns-server)");
                    ResolverConfig::from_parts(None, vec![], NameServerConfigGroup::new())
                }
            },
        };
        let resolver =
            Resolver::builder_with_config(resolver_config, TokioConnectionProvider::default())
                .with_options(options)
                .build();
        Ok(Upstream {
            target,
            resolver,
            lookups: Mutex::new(HashMap::new()),
            lookup_tasks: TaskTracker::new(),
            dns_timeout,
            slots: Arc::new(Semaphore::new(config.pool_size)),
            acquire_timeout: (!config.has_bug(Bug::NoPoolAcquireTimeout))
                .then_some(config.pool_acquire_timeout),
            deadlines: {
                let unless_bug =
                    |value| (!config.has_bug(Bug::NoUpstreamTimeouts)).then_some(value);
                Deadlines {
                    connect: unless_bug(config.upstream_connect_timeout),
                    response: unless_bug(config.upstream_response_timeout),
                    body: unless_bug(config.upstream_body_timeout),
                }
            },
            idle: Mutex::new(Vec::new()),
            metrics,
        })
    }

    /// GETs `path_and_query` (appended to the upstream URL's path) and returns status and body.
    ///
    /// The name is resolved before a pool slot is taken, so a silent resolver cannot hold
    /// the slots that requests to a healthy upstream need.
    pub async fn get(
        self: &Arc<Self>,
        path_and_query: &str,
    ) -> Result<(StatusCode, Bytes), UpstreamError> {
        let target = self.target.as_ref().ok_or(UpstreamError::NotConfigured)?;
        let ip = match target.host.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => self.resolve(&target.host).await?,
        };
        let _slot = self.acquire_slot().await?;
        let request = || {
            Request::get(format!("{}{}", target.base_path, path_and_query))
                .header(http::header::HOST, &target.authority)
                .body(Empty::new())
                .map_err(|error| UpstreamError::Exchange(error.to_string()))
        };
        if let Some(mut reused) = self.take_idle() {
            match exchange(&mut reused, request()?, self.deadlines).await {
                Ok(relayed) => {
                    self.keep(reused);
                    return Ok(relayed);
                }
                // The upstream closed the idle connection before answering; a GET may be sent
                // again, once, on a fresh connection.
                Err(ExchangeFailure::BeforeResponse(_)) => {}
                Err(failure) => return Err(self.failed(failure)),
            }
        }
        let mut fresh = self.dial(SocketAddr::new(ip, target.port)).await?;
        let relayed = exchange(&mut fresh, request()?, self.deadlines)
            .await
            .map_err(|failure| self.failed(failure))?;
        self.keep(fresh);
        Ok(relayed)
    }

    /// The error a failed exchange answers with; deadlines that fired are counted.
    fn failed(&self, failure: ExchangeFailure) -> UpstreamError {
        if matches!(failure, ExchangeFailure::TimedOut(_)) {
            self.metrics.upstream_timeouts.inc();
        }
        failure.into_error()
    }

    /// Idle pooled connections now: each keeps one driver task and one socket.
    pub fn idle_connections(&self) -> usize {
        self.idle.lock().len()
    }

    /// Returns a connection to the idle list unless the upstream closed it.
    fn keep(&self, connection: PooledConnection) {
        if !connection.sender.is_closed() {
            self.idle.lock().push(connection);
        }
    }

    async fn acquire_slot(&self) -> Result<OwnedSemaphorePermit, UpstreamError> {
        let acquire = self.slots.clone().acquire_owned();
        let permit = match self.acquire_timeout {
            Some(deadline) => timeout(deadline, acquire).await.map_err(|_| {
                self.metrics.pool_rejections.inc();
                UpstreamError::PoolExhausted
            })?,
            None => acquire.await,
        };
        permit.map_err(|_| UpstreamError::PoolExhausted)
    }

    fn take_idle(&self) -> Option<PooledConnection> {
        let mut idle = self.idle.lock();
        while let Some(connection) = idle.pop() {
            if !connection.sender.is_closed() {
                return Some(connection);
            }
        }
        None
    }

    async fn dial(&self, addr: SocketAddr) -> Result<PooledConnection, UpstreamError> {
        let stream = bounded(self.deadlines.connect, TcpStream::connect(addr))
            .await
            .map_err(|()| {
                self.metrics.upstream_timeouts.inc();
                UpstreamError::ConnectTimeout
            })?
            .map_err(|error| UpstreamError::Exchange(format!("connect to {addr}: {error}")))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| UpstreamError::Exchange(error.to_string()))?;
        // Shared by every request the pool hands it to: labeled as the pool's, not the dialler's.
        let driver = spawn_labeled(UPSTREAM_CONNECTION_LABEL, || {
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "upstream connection ended");
                }
            })
        });
        Ok(PooledConnection {
            sender,
            _driver: AbortOnDropHandle::new(driver),
        })
    }

    /// Resolves `host`, sharing one lookup task among concurrent requests for the same name.
    async fn resolve(self: &Arc<Self>, host: &str) -> Result<IpAddr, UpstreamError> {
        // The guard must be gone before `start_lookup` locks again.
        let pending = self.lookups.lock().get(host).cloned();
        let mut answer = pending.unwrap_or_else(|| self.start_lookup(host));
        let settled = answer.wait_for(Option::is_some);
        let settled = match self.dns_timeout {
            Some(deadline) => timeout(deadline, settled).await.map_err(|_| {
                self.metrics.dns_timeouts.inc();
                UpstreamError::DnsTimeout
            })?,
            None => settled.await,
        };
        let answer = settled.map_err(|_| {
            UpstreamError::DnsFailed("lookup task ended without an answer".to_owned())
        })?;
        match answer.as_ref() {
            Some(Ok(ip)) => Ok(*ip),
            Some(Err(UpstreamError::DnsTimeout)) => Err(UpstreamError::DnsTimeout),
            Some(Err(UpstreamError::DnsFailed(reason))) => {
                Err(UpstreamError::DnsFailed(reason.clone()))
            }
            Some(Err(other)) => Err(UpstreamError::DnsFailed(other.to_string())),
            None => unreachable!("wait_for returned an unsettled answer"),
        }
    }

    fn start_lookup(self: &Arc<Self>, host: &str) -> watch::Receiver<LookupAnswer> {
        let (publish, answer) = watch::channel(None);
        self.lookups.lock().insert(host.to_owned(), answer.clone());
        let this = Arc::clone(self);
        let host = host.to_owned();
        // Runs to completion even when its first requester gives up, so the others still get the answer;
        // its deadline is what bounds it.
        let lookup = self.lookup_tasks.track_future(async move {
            let lookup = this.resolver.lookup_ip(host.as_str());
            let result = match this.dns_timeout {
                Some(deadline) => timeout(deadline, lookup)
                    .await
                    .map_err(|_| UpstreamError::DnsTimeout),
                None => Ok(lookup.await),
            };
            let answer = match result {
                Ok(Ok(found)) => found
                    .iter()
                    .next()
                    .ok_or_else(|| UpstreamError::DnsFailed(format!("no address for {host}"))),
                Ok(Err(error)) if error.is_no_records_found() => {
                    Err(UpstreamError::DnsFailed(format!("no address for {host}")))
                }
                Ok(Err(error)) => Err(UpstreamError::DnsFailed(error.to_string())),
                Err(timed_out) => Err(timed_out),
            };
            this.lookups.lock().remove(&host);
            publish.send_replace(Some(answer));
        });
        // Shared by every request waiting on the name: labeled as the resolver's.
        spawn_labeled(DNS_LOOKUP_LABEL, || tokio::spawn(lookup));
        answer
    }

    /// Waits (until `deadline`) for in-flight lookups, then closes idle pooled connections.
    pub async fn drain(&self, deadline: Instant) {
        self.lookup_tasks.close();
        if timeout_at(deadline, self.lookup_tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                pending = self.lookup_tasks.len(),
                "DNS lookups still running after the shutdown grace"
            );
        }
        self.idle.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_are_checked() {
        let target = parse_target("http://upstream.test:9000/api/").unwrap();
        assert_eq!(
            (target.host.as_str(), target.port, target.base_path.as_str()),
            ("upstream.test", 9000, "/api")
        );
        assert_eq!(target.authority, "upstream.test:9000");
        assert_eq!(parse_target("http://127.0.0.1").unwrap().port, 80);
        assert!(
            parse_target("https://x.test/")
                .unwrap_err()
                .to_string()
                .contains("http scheme")
        );
        assert!(
            parse_target("not a url")
                .unwrap_err()
                .to_string()
                .contains("--upstream")
        );
    }
}
