//! The fault environment of a run (fake DNS server, upstream, fault proxy) and the server
//! command line that points at it.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::{
    DNS_TIMEOUT, H2_KEEP_ALIVE_INTERVAL, H2_KEEP_ALIVE_TIMEOUT, H2_PREFACE_TIMEOUT,
    HANDSHAKE_TIMEOUT, HEADER_TIMEOUT, MAX_CONNECTIONS, Mode, POOL_ACQUIRE_TIMEOUT,
    REQUEST_TIMEOUT, SHUTDOWN_GRACE, STREAM_TIMEOUT, Scenario, UPSTREAM_HOST, UPSTREAM_TIMEOUT,
    WRITE_TIMEOUT,
};
use crate::error::{Error, Result};
use crate::faults::dns::FakeDns;
use crate::faults::proxy::FaultProxy;
use crate::faults::upstream::Upstream;
use crate::server::ServerTls;

/// The fault environment of one run: a fake DNS server resolving [`UPSTREAM_HOST`] to
/// 127.0.0.1, an upstream, and a fault proxy in front of it (the server's `--upstream`).
/// The DNS server is the server's `--dns-server` in every scenario.
#[derive(Debug)]
pub struct Environment {
    /// The server's `--dns-server`.
    pub dns: FakeDns,
    /// The upstream behind the proxy.
    pub upstream: Upstream,
    /// The proxy the server talks to.
    pub proxy: FaultProxy,
}

impl Environment {
    pub(super) async fn start(seed: u64) -> Result<Self> {
        let upstream = Upstream::start().await.map_err(|source| Error::Fault {
            what: "the upstream",
            source,
        })?;
        let proxy = FaultProxy::start(upstream.addr(), seed)
            .await
            .map_err(|source| Error::Fault {
                what: "the fault proxy",
                source,
            })?;
        let dns = FakeDns::start(Ipv4Addr::LOCALHOST)
            .await
            .map_err(|source| Error::Fault {
                what: "the fake DNS server",
                source,
            })?;
        Ok(Self {
            dns,
            upstream,
            proxy,
        })
    }

    /// The server's `--upstream`: by name (through the fake DNS server) for the scenario that
    /// is about DNS, by address for the others so their faults stay the only ones.
    fn upstream_url(&self, scenario: Scenario) -> String {
        let host = if scenario == Scenario::DnsHang {
            UPSTREAM_HOST.to_owned()
        } else {
            self.proxy.addr().ip().to_string()
        };
        format!("http://{host}:{}/", self.proxy.addr().port())
    }
}

pub(super) fn server_args(
    scenario: Scenario,
    mode: Mode,
    env: &Environment,
    tls: &ServerTls,
) -> Vec<String> {
    let mut args: Vec<String> = [
        ("--listen", "127.0.0.1:0".to_owned()),
        ("--tls-listen", "127.0.0.1:0".to_owned()),
        ("--handshake-timeout", millis(HANDSHAKE_TIMEOUT)),
        ("--header-timeout", millis(HEADER_TIMEOUT)),
        ("--request-timeout", millis(REQUEST_TIMEOUT)),
        ("--write-timeout", millis(WRITE_TIMEOUT)),
        ("--dns-timeout", millis(DNS_TIMEOUT)),
        ("--pool-acquire-timeout", millis(POOL_ACQUIRE_TIMEOUT)),
        ("--upstream-connect-timeout", millis(UPSTREAM_TIMEOUT)),
        ("--upstream-response-timeout", millis(UPSTREAM_TIMEOUT)),
        ("--upstream-body-timeout", millis(UPSTREAM_TIMEOUT)),
        ("--stream-timeout", millis(STREAM_TIMEOUT)),
        ("--h2-preface-timeout", millis(H2_PREFACE_TIMEOUT)),
        ("--h2-keep-alive-interval", millis(H2_KEEP_ALIVE_INTERVAL)),
        ("--h2-keep-alive-timeout", millis(H2_KEEP_ALIVE_TIMEOUT)),
        ("--shutdown-grace", millis(SHUTDOWN_GRACE)),
        ("--pool-size", scenario.pool_size().to_string()),
        ("--max-connections", MAX_CONNECTIONS.to_string()),
        ("--upstream", env.upstream_url(scenario)),
        ("--dns-server", env.dns.addr().to_string()),
        ("--cert", tls.cert.display().to_string()),
        ("--key", tls.key.display().to_string()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_owned(), value])
    .collect();
    if mode == Mode::Leaky {
        args.push("--bug".into());
        args.push(scenario.bug().into());
    }
    args
}

fn millis(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}
