//! The scenarios (one module each), their settings, and the run every one of them follows
//! (`run`): faults up (`environment`) → server up → baseline → storm (fault on its own
//! schedule) → heal → quiesce → final probe → SIGTERM → verdict (`verdict`).
//!
//! Hostile peers that are still connected when their deadline passes stay connected
//! ([`crate::history::History::park`]) until the server has exited: a client that vanished without a FIN never
//! comes back to close its socket, so the server's own defenses must free what it holds.

pub mod accounting;
mod cancel_storm;
mod cancel_waves;
mod dns_hang;
mod environment;
mod h2_rapid_reset;
mod panic;
mod pool_exhaustion;
mod run;
mod slow_reader;
mod slowloris;
mod tls_stall;
mod verdict;

use std::time::Duration;

use serde::Serialize;

pub use environment::Environment;
pub use h2_rapid_reset::RapidResetFigures;
pub use run::{Progress, StormContext, run};
use run::{get_or_park, open_loop, request_id_prefix};
pub use verdict::{BeforePeakAfter, Detection, RunResult, judge_campaign};

/// TLS handshake deadline given to the server.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);
/// First-byte / header deadline given to the server.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// Whole-request deadline given to the server. Deliberately longer than [`QUIESCE_BOUND`]:
/// it is the server's last-resort defense, and each seeded bug removes a more specific one
/// (pool acquire, panic watch…). With a short whole-request deadline those leaks would end by
/// themselves before the verdict and go unseen; in fixed mode nothing may depend on it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Write deadline given to the server.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// DNS deadline given to the server.
pub const DNS_TIMEOUT: Duration = Duration::from_millis(500);
/// Pool acquire deadline given to the server.
pub const POOL_ACQUIRE_TIMEOUT: Duration = Duration::from_millis(250);
/// Upstream connect, response-head and body deadline given to the server: what frees the
/// pool slots a stalled upstream holds.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(1);
/// Whole-response deadline of `/stream` given to the server: above every stream a
/// scenario reads to its end.
pub const STREAM_TIMEOUT: Duration = Duration::from_secs(15);
/// HTTP/2 preface deadline given to the server.
pub const H2_PREFACE_TIMEOUT: Duration = Duration::from_secs(1);
/// HTTP/2 keep-alive ping interval given to the server. With [`H2_KEEP_ALIVE_TIMEOUT`] it is
/// what frees a vanished HTTP/2 peer, and deliberately longer than [`QUIESCE_BOUND`]: like
/// [`REQUEST_TIMEOUT`] it is a last resort, and the rapid-reset bug's stranded connections
/// would otherwise end by themselves before the verdict.
pub const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// Wait for a keep-alive ping's acknowledgement given to the server.
pub const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Shutdown grace given to the server.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Connection cap given to the server: above any storm, so probes are never shed.
pub const MAX_CONNECTIONS: usize = 12_000;
/// The upstream's host name; resolved by the fake DNS server.
pub const UPSTREAM_HOST: &str = "upstream.chaos.test";
/// How long a client waits for a response before it gives up (`info`) and vanishes (its
/// socket is parked); every specific server deadline is well below it.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(4);
/// Longest storm; a storm still running then is cut short (and the run says so).
pub const STORM_BOUND: Duration = Duration::from_secs(90);
/// Longest wait for live tasks to come back to the baseline after the heal (campaign);
/// every specific server deadline is at most a third of it.
pub const QUIESCE_BOUND: Duration = Duration::from_secs(6);
/// The same bound at smoke scale, where storms are small and drain fast.
pub const SMOKE_QUIESCE_BOUND: Duration = Duration::from_secs(4);
/// Longest wait for the server to exit after SIGTERM.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);
/// Fixed mode: health-probe p99 must stay below this during the storm, net of the time the
/// server's or the client's threads waited for a CPU ([`crate::measure::Starvation`]).
pub const PROBE_P99_LIMIT_MS: f64 = 100.0;
/// Fixed cancel-storm: the cancel-propagation p99 target. On a machine that cannot reach it
/// (the server's threads busy or waiting for a CPU through the drain) the p99 is judged by
/// the budget the drain sets instead ([`crate::calibration::cancel_budget_ms`]); both are
/// reported side by side.
pub const CANCEL_P99_LIMIT_MS: f64 = 10.0;
/// Fixed cancel-storm: CPU the server may spend per cancelled request (connection teardown,
/// the request's task aborts, leakcheck's bookkeeping), the work of holding the requests
/// taken out. Measured at 19–31 µs; a bare tokio listener spends 14–21 µs per close.
pub const CANCEL_CPU_PER_REQUEST_LIMIT_US: f64 = 60.0;
/// cancel-storm: requests held in flight at once and aborted together (campaign, smoke).
pub const CANCEL_STORM_CLIENTS: (usize, usize) = (5_000, 100);
/// Fixed cancel-storm: share of aborted requests whose drain the server must have reported.
pub const CANCEL_MATCH_MIN: f64 = 0.9;
/// Most tasks a leaky campaign storm may strand. Where they are stuck comes from the
/// server's task dump after quiescence, which it takes only with at most
/// `leakcheck::MAX_DUMPED_TASKS_MULTI_THREAD` (128) live tasks — above that tokio's dump can
/// wedge the runtime, so the limit stays — and the baseline's tasks and the dump's own
/// connection need room too: each leaky storm that strands tasks per client sizes itself from
/// this (`StormContext::clients`).
pub const LEAKY_STRANDED_MAX: usize = 100;

/// One scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Scenario {
    /// Thousands of requests held in flight at once, then aborted together.
    CancelStorm,
    /// Clients aborting mid-request on /stream and /proxy, in waves, while the upstream link misbehaves.
    CancelWaves,
    /// Stalled TLS handshakes.
    TlsStall,
    /// /proxy requests against a nameserver that never answers.
    DnsHang,
    /// /proxy requests against a stalled upstream and a small pool.
    PoolExhaustion,
    /// Header drips, silent connections, garbage and half-closes on the HTTP port.
    Slowloris,
    /// /stream clients that read slowly through a tiny receive window, then stop reading.
    SlowReader,
    /// /panic requests (with and without a panicking child task) among /work requests.
    Panic,
    /// HTTP/2 clients that open streams and reset them at once (rapid reset, CVE-2023-44487).
    H2RapidReset,
}

impl Scenario {
    /// Every scenario, in campaign order.
    pub const ALL: [Scenario; 9] = [
        Scenario::CancelStorm,
        Scenario::CancelWaves,
        Scenario::TlsStall,
        Scenario::DnsHang,
        Scenario::PoolExhaustion,
        Scenario::Slowloris,
        Scenario::SlowReader,
        Scenario::Panic,
        Scenario::H2RapidReset,
    ];

    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::CancelStorm => "cancel-storm",
            Scenario::CancelWaves => "cancel-waves",
            Scenario::TlsStall => "tls-stall",
            Scenario::DnsHang => "dns-hang",
            Scenario::PoolExhaustion => "pool-exhaustion",
            Scenario::Slowloris => "slowloris",
            Scenario::SlowReader => "slow-reader",
            Scenario::Panic => "panic",
            Scenario::H2RapidReset => "h2-rapid-reset",
        }
    }

    /// The `--bug` its leaky twin starts the server with.
    pub fn bug(self) -> &'static str {
        match self {
            Scenario::CancelStorm | Scenario::CancelWaves => "detached-request-task",
            Scenario::TlsStall => "no-tls-handshake-timeout",
            Scenario::DnsHang => "no-dns-timeout",
            Scenario::PoolExhaustion => "no-upstream-timeouts",
            Scenario::Slowloris => "no-header-timeout",
            Scenario::SlowReader => "no-write-timeout",
            Scenario::Panic => "uncaught-panic-in-child",
            Scenario::H2RapidReset => "no-h2-reset-limit",
        }
    }

    /// Whether the leaky twin's leaked tasks run on behalf of the clients' requests (and so
    /// must carry the request ids the clients sent); otherwise they are connection or shared
    /// infrastructure tasks, which must carry none.
    pub fn leaks_request_tasks(self) -> bool {
        matches!(
            self,
            Scenario::CancelStorm | Scenario::CancelWaves | Scenario::SlowReader | Scenario::Panic
        )
    }

    /// The client outcome classes (see [`crate::history::History::record`]) the fixed
    /// server may produce; any other outcome fails the fixed run.
    pub fn expected_outcomes(self) -> &'static [&'static str] {
        match self {
            Scenario::CancelStorm => &["held, then aborted"],
            // The nemesis' toxics break some upstream exchanges before the client aborts.
            Scenario::CancelWaves => &[
                "aborted mid-request",
                "/proxy 200 before the abort",
                "/proxy failed before the abort",
            ],
            Scenario::TlsStall => &["handshake cut by the server"],
            Scenario::DnsHang => &["/proxy 504"],
            // Slot holders get the upstream response deadline's 504, the others a fast 503.
            Scenario::PoolExhaustion => &["/proxy 503", "/proxy 504"],
            // A half-closed request is answered if it finishes before hyper reads the FIN,
            // and dropped (half_close(false)) otherwise.
            Scenario::Slowloris => &[
                "closed by the server",
                "half-closed /work 200",
                "half-closed /work dropped at the FIN",
            ],
            Scenario::SlowReader => &[
                "still connected when it stopped reading",
                "closed by the server",
            ],
            Scenario::Panic => &["/panic 500", "/panic?child=1 500", "/work 200"],
            // h2's rapid-reset defense answers with ENHANCE_YOUR_CALM, every attacker.
            Scenario::H2RapidReset => &["GOAWAY ENHANCE_YOUR_CALM"],
        }
    }

    /// Where its leaky twin's stranded tasks must be stuck: substrings of the most common
    /// stuck frame of the server's task dump (`module::fn at file:line`, see
    /// [`crate::server::TaskDump::stuck_at`]), one of which must match; empty where the dump
    /// cannot say.
    pub fn expected_stuck_at(self) -> &'static [&'static str] {
        match self {
            // The detached lease keeper is its task's root future: a release build inlines it
            // into the task's poll, below where tokio's trace starts, so its dump shows only
            // tokio's interval (a debug build's names routes::keep_lease).
            Scenario::CancelStorm | Scenario::CancelWaves => &[],
            // The TLS handshake, in serve_connection (plain HTTP goes on into serve_http).
            Scenario::TlsStall => &["listener::serve_connection at server/src/listener.rs"],
            Scenario::DnsHang => &["upstream::resolve at server/src/upstream.rs"],
            // The exchange with the stalled upstream, holding its pool slot: the bug removes
            // the upstream's deadlines, not the pool's, so no request waits on the pool past
            // the acquire deadline (the others get their 503).
            Scenario::PoolExhaustion => &["upstream::exchange at server/src/upstream.rs"],
            // The header read: hyper's HTTP/1 connection without a request, polled by
            // `listener::drive` (a release build inlines it into hyper's poll, and the read
            // wrapper's frame is what is left).
            Scenario::Slowloris => &[
                "listener::drive at server/src/listener.rs",
                "io::poll_read at server/src/io.rs",
            ],
            // The write to a client that stopped reading, in the write deadline's wrapper.
            Scenario::SlowReader => &["io::poll_write"],
            // The request waiting on the child that panicked.
            Scenario::Panic => &["routes::panic_route at server/src/routes.rs"],
            // The attacker's HTTP/2 connection, still served: hyper's connection polled in
            // the server's own frame (see `http2::Served`), waiting on a peer that vanished.
            Scenario::H2RapidReset => &["http2::poll at server/src/http2.rs"],
        }
    }

    fn pool_size(self) -> usize {
        match self {
            Scenario::PoolExhaustion => 4,
            Scenario::CancelWaves => 64,
            _ => 8,
        }
    }

    /// Whether the warm-up opens a pooled upstream connection. Not for dns-hang: a pooled
    /// connection would spare the requests their lookup.
    fn warms_the_pool(self) -> bool {
        matches!(self, Scenario::CancelWaves | Scenario::PoolExhaustion)
    }

    async fn storm(self, ctx: &StormContext<'_>) -> crate::error::Result<()> {
        match self {
            Scenario::CancelStorm => cancel_storm::storm(ctx).await,
            Scenario::CancelWaves => cancel_waves::storm(ctx).await,
            Scenario::TlsStall => tls_stall::storm(ctx).await,
            Scenario::DnsHang => dns_hang::storm(ctx).await,
            Scenario::PoolExhaustion => pool_exhaustion::storm(ctx).await,
            Scenario::Slowloris => slowloris::storm(ctx).await,
            Scenario::SlowReader => slow_reader::storm(ctx).await,
            Scenario::Panic => panic::storm(ctx).await,
            Scenario::H2RapidReset => h2_rapid_reset::storm(ctx).await,
        }
    }

    /// Ends the fault for new work: the dependency answers again, toxics go away. What is
    /// already stuck (a swallowed DNS query, a wedged upstream connection, a parked peer)
    /// stays stuck: the server has to free it.
    fn heal(self, env: &Environment) {
        env.proxy.heal();
        env.upstream.heal();
        env.dns.heal();
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether the server runs with all its defenses or with the scenario's `--bug`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every defense on: must leak nothing and stay responsive.
    Fixed,
    /// One defense removed: the leak must be caught and its spawn site named.
    Leaky,
}

impl Mode {
    /// `fixed` or `leaky`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Fixed => "fixed",
            Mode::Leaky => "leaky",
        }
    }
}

/// How big the storms are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// The campaign's sizes (thousands of clients); latency SLOs are part of the verdict.
    Campaign,
    /// Tens of clients, for `cargo test`; latency is measured but not judged (debug builds,
    /// tests running side by side).
    Smoke,
}

impl Scale {
    /// How long quiescence may take.
    pub fn quiesce_bound(self) -> Duration {
        self.pick(QUIESCE_BOUND, SMOKE_QUIESCE_BOUND)
    }

    /// `campaign` when `self` is the campaign, otherwise `smoke`.
    fn pick<T>(self, campaign: T, smoke: T) -> T {
        match self {
            Scale::Campaign => campaign,
            Scale::Smoke => smoke,
        }
    }
}

/// What one run is: a scenario, a mode, a scale and a seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunPlan {
    /// The storm.
    pub scenario: Scenario,
    /// Fixed or leaky.
    pub mode: Mode,
    /// Campaign or smoke sizes.
    pub scale: Scale,
    /// The run's seed (see [`run_seed`]).
    pub seed: u64,
}

/// The seed of one run, derived from the campaign's master seed (splitmix64).
pub fn run_seed(master: u64, scenario: Scenario, mode: Mode) -> u64 {
    let index = Scenario::ALL
        .iter()
        .position(|s| *s == scenario)
        .unwrap_or(0) as u64;
    let mut z =
        master ^ (index * 2 + u64::from(mode == Mode::Leaky)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_seeds_differ_per_scenario_and_mode_and_replay() {
        let a = run_seed(42, Scenario::CancelStorm, Mode::Fixed);
        assert_eq!(a, run_seed(42, Scenario::CancelStorm, Mode::Fixed));
        assert_ne!(a, run_seed(42, Scenario::CancelStorm, Mode::Leaky));
        assert_ne!(a, run_seed(42, Scenario::TlsStall, Mode::Fixed));
        assert_ne!(a, run_seed(43, Scenario::CancelStorm, Mode::Fixed));
    }

    #[test]
    fn every_scenario_has_a_distinct_name_and_every_leak_bug_a_scenario() {
        let names: std::collections::HashSet<_> = Scenario::ALL.iter().map(|s| s.name()).collect();
        let bugs: std::collections::HashSet<_> = Scenario::ALL.iter().map(|s| s.bug()).collect();
        assert_eq!(names.len(), Scenario::ALL.len());
        // Both cancel storms remove the same defense; every other scenario its own.
        assert_eq!(bugs.len(), Scenario::ALL.len() - 1);
    }
}
