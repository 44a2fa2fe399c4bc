//! The scenarios and the run every one of them follows: faults up → server up → baseline →
//! storm (fault on its own schedule) → heal → quiesce → final probe → SIGTERM → verdict.
//!
//! Hostile peers that are still connected when their deadline passes stay connected
//! ([`History::park`]) until the server has exited: a client that vanished without a FIN never
//! comes back to close its socket, so the server's own defenses must free what it holds.

mod cancel_storm;
mod dns_hang;
mod panic;
mod pool_exhaustion;
mod slow_reader;
mod slowloris;
mod tls_stall;

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::faults::dns::FakeDns;
use crate::faults::proxy::FaultProxy;
use crate::faults::upstream::Upstream;
use crate::history::{Counts, History, Outcome};
use crate::measure::{self, Latencies, PROBE_DEADLINE, Sampler, Timeline};
use crate::server::{Endpoints, LEAK_EXIT_CODE, ServerProcess, SiteCount};

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
/// Live tasks allowed above the baseline after quiescence. In pool-exhaustion the pool's
/// slots (4) stay wedged on the stalled upstream until the whole-request deadline, each a
/// connection task plus a pooled-connection driver task (7 measured); elsewhere idle pooled
/// connections keep one driver task each, and the resolver keeps its background task.
pub const LIVE_SLACK: u64 = 8;
/// Open fds allowed above the baseline after quiescence: idle pooled upstream connections
/// (`LIVE_SLACK` of them at most), the resolver's sockets, and the sampler's own connection.
pub const FD_SLACK: i64 = 12;
/// Fixed mode: health-probe p99 must stay below this during the storm.
pub const PROBE_P99_LIMIT_MS: f64 = 100.0;
/// Fixed cancel-storm: cancel-propagation p99 must stay at or below this.
pub const CANCEL_P99_LIMIT_MS: f64 = 10.0;
/// Fixed cancel-storm: share of aborted requests whose drain the server must have reported.
pub const CANCEL_MATCH_MIN: f64 = 0.9;

/// One scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Scenario {
    /// Clients aborting mid-request on /stream and /proxy, in waves.
    CancelStorm,
    /// Stalled TLS handshakes.
    TlsStall,
    /// /proxy requests against a nameserver that never answers.
    DnsHang,
    /// /proxy requests against a stalled upstream and a small pool.
    PoolExhaustion,
    /// Header drips, silent connections, garbage and half-closes on the HTTP port.
    Slowloris,
    /// /stream clients that read a few bytes now and then through a tiny receive window.
    SlowReader,
    /// /panic requests (with and without a panicking child task) among /work requests.
    Panic,
}

impl Scenario {
    /// Every scenario, in campaign order.
    pub const ALL: [Scenario; 7] = [
        Scenario::CancelStorm,
        Scenario::TlsStall,
        Scenario::DnsHang,
        Scenario::PoolExhaustion,
        Scenario::Slowloris,
        Scenario::SlowReader,
        Scenario::Panic,
    ];

    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::CancelStorm => "cancel-storm",
            Scenario::TlsStall => "tls-stall",
            Scenario::DnsHang => "dns-hang",
            Scenario::PoolExhaustion => "pool-exhaustion",
            Scenario::Slowloris => "slowloris",
            Scenario::SlowReader => "slow-reader",
            Scenario::Panic => "panic",
        }
    }

    /// The `--bug` its leaky twin starts the server with.
    pub fn bug(self) -> &'static str {
        match self {
            Scenario::CancelStorm => "detached-request-task",
            Scenario::TlsStall => "no-tls-handshake-timeout",
            Scenario::DnsHang => "no-dns-timeout",
            Scenario::PoolExhaustion => "no-pool-acquire-timeout",
            Scenario::Slowloris => "no-header-timeout",
            Scenario::SlowReader => "no-write-timeout",
            Scenario::Panic => "uncaught-panic-in-child",
        }
    }

    fn pool_size(self) -> usize {
        match self {
            Scenario::PoolExhaustion => 4,
            Scenario::CancelStorm => 64,
            _ => 8,
        }
    }

    /// Whether the warm-up opens a pooled upstream connection. Not for dns-hang: a pooled
    /// connection would spare the requests their lookup.
    fn warms_the_pool(self) -> bool {
        matches!(self, Scenario::CancelStorm | Scenario::PoolExhaustion)
    }

    async fn storm(self, ctx: &StormContext<'_>) -> Result<()> {
        match self {
            Scenario::CancelStorm => cancel_storm::storm(ctx).await,
            Scenario::TlsStall => tls_stall::storm(ctx).await,
            Scenario::DnsHang => dns_hang::storm(ctx).await,
            Scenario::PoolExhaustion => pool_exhaustion::storm(ctx).await,
            Scenario::Slowloris => slowloris::storm(ctx).await,
            Scenario::SlowReader => slow_reader::storm(ctx).await,
            Scenario::Panic => panic::storm(ctx).await,
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
    async fn start(seed: u64) -> Result<Self> {
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

/// What a storm gets to work with.
#[derive(Debug)]
pub struct StormContext<'a> {
    endpoints: Endpoints,
    env: &'a Environment,
    history: Arc<History>,
    seed: u64,
    scale: Scale,
    progress: &'a Progress,
}

/// Progress lines on stderr while a run goes on.
#[derive(Debug, Clone)]
pub struct Progress {
    prefix: String,
    enabled: bool,
    origin: Instant,
}

impl Progress {
    /// Progress for one run, silent unless `enabled`.
    pub fn new(scenario: Scenario, mode: Mode, enabled: bool) -> Self {
        Self {
            prefix: format!("{}/{}", scenario.name(), mode.name()),
            enabled,
            origin: Instant::now(),
        }
    }

    /// Prints one line, with the time since the run started.
    pub fn say(&self, message: &str) {
        if self.enabled {
            eprintln!(
                "  [{:>6.1}s] {:<24} {message}",
                self.origin.elapsed().as_secs_f64(),
                self.prefix
            );
        }
    }
}

/// Everything measured in one run, and the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Scenario name.
    pub name: &'static str,
    /// Fixed or leaky.
    pub mode: Mode,
    /// The `--bug` of the leaky twin (given to the server only in leaky mode).
    pub bug: &'static str,
    /// The seed of this run (replay with `--seed` on the campaign's master seed).
    pub seed: u64,
    /// Whether the verdict passed.
    pub passed: bool,
    /// Why it did not pass (empty when it did).
    pub failures: Vec<String>,
    /// Operations issued by the storm.
    pub requests: u64,
    /// ok / fail / info totals.
    pub outcomes: Counts,
    /// Tasks the server's shutdown verification reported as leaked.
    pub leaked_tasks: u64,
    /// Leaked tasks labeled with a request id this run sent.
    pub leaked_with_our_request_ids: u64,
    /// Tasks alive after quiescence above the baseline, per `/debug/tasks` (summed over the
    /// spawn sites whose count grew).
    pub stranded_tasks: u64,
    /// The spawn site of the leak: the shutdown report's top site, or else (when the stranded
    /// tasks pass the slack) the site whose live count grew most.
    pub detected_site: Option<String>,
    /// Which leakcheck view named `detected_site`.
    pub detected_by: Option<Detection>,
    /// Live tasks at the baseline, at the peak, after quiescence.
    pub live_tasks: BeforePeakAfter,
    /// Open fds at the baseline, at the peak, after quiescence.
    pub open_fds: BeforePeakAfter,
    /// Open fds after quiescence minus the baseline.
    pub fd_delta: Option<i64>,
    /// Health-probe latency during the storm, p50.
    pub probe_p50_ms: Option<f64>,
    /// Health-probe latency during the storm, p99.
    pub probe_p99_ms: Option<f64>,
    /// Probes that failed (or took over a second) during the storm.
    pub probe_failures: u64,
    /// Client abort → last task of that request ended, p50.
    pub cancel_p50_ms: Option<f64>,
    /// Client abort → last task of that request ended, p99.
    pub cancel_p99_ms: Option<f64>,
    /// Aborts made by the storm.
    pub cancels_sent: u64,
    /// Aborts whose drain the server reported.
    pub cancels_matched: u64,
    /// Time from the heal until live tasks were back at the baseline (+ slack).
    pub quiesced_after_ms: Option<u64>,
    /// Whether the health probe after quiescence answered 200.
    pub final_probe_ok: bool,
    /// Sockets of vanished peers still held when the server was stopped.
    pub parked_peers: u64,
    /// The server's exit code after SIGTERM (`None`: killed or signalled).
    pub exit_code: Option<i32>,
    /// SIGTERM to exit.
    pub shutdown_ms: u64,
    /// The whole run.
    pub duration_ms: u64,
    /// Samples over time.
    pub timeline: Timeline,
    /// The last lines the server wrote to stderr, when the verdict failed.
    pub server_stderr_tail: Option<String>,
}

/// Which view of the server's tracker caught a leak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Detection {
    /// The leak report of the server's shutdown verification (exit code 3).
    ShutdownVerification,
    /// `/debug/tasks` after the quiesce bound: tasks stranded above the baseline. Catches
    /// tasks that the server's shutdown would cancel before verifying (a connection task
    /// pinned by a peer that never leaves).
    LiveSnapshot,
}

impl Detection {
    fn describe(self) -> &'static str {
        match self {
            Detection::ShutdownVerification => "shutdown leak report",
            Detection::LiveSnapshot => "live snapshot after quiescence",
        }
    }
}

/// Tasks alive above the baseline, by spawn site.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Stranded {
    tasks: u64,
    top_site: Option<String>,
}

/// Per-site growth of live tasks from `before` to `after`.
fn stranded(before: &[SiteCount], after: &[SiteCount]) -> Stranded {
    let mut growth: Vec<(String, u64)> = after
        .iter()
        .map(|now| {
            let was = before
                .iter()
                .filter(|then| then.site == now.site)
                .map(|then| then.count)
                .sum::<u64>();
            (now.site.to_string(), now.count.saturating_sub(was))
        })
        .filter(|(_, grew)| *grew > 0)
        .collect();
    growth.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Stranded {
        tasks: growth.iter().map(|(_, grew)| grew).sum(),
        top_site: growth.first().map(|(site, _)| site.clone()),
    }
}

impl RunResult {
    /// A run the harness could not complete (server did not start, endpoint wedged…): failed,
    /// with the reason, and nothing measured.
    pub fn harness_failure(scenario: Scenario, mode: Mode, seed: u64, error: &Error) -> Self {
        RunResult {
            name: scenario.name(),
            mode,
            bug: scenario.bug(),
            seed,
            passed: false,
            failures: vec![format!("harness: {error}")],
            requests: 0,
            outcomes: Counts::default(),
            leaked_tasks: 0,
            leaked_with_our_request_ids: 0,
            stranded_tasks: 0,
            detected_site: None,
            detected_by: None,
            live_tasks: BeforePeakAfter::default(),
            open_fds: BeforePeakAfter::default(),
            fd_delta: None,
            probe_p50_ms: None,
            probe_p99_ms: None,
            probe_failures: 0,
            cancel_p50_ms: None,
            cancel_p99_ms: None,
            cancels_sent: 0,
            cancels_matched: 0,
            quiesced_after_ms: None,
            final_probe_ok: false,
            parked_peers: 0,
            exit_code: None,
            shutdown_ms: 0,
            duration_ms: 0,
            timeline: Timeline::default(),
            server_stderr_tail: None,
        }
    }
}

/// A before / peak / after triple (each absent when it could not be read).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct BeforePeakAfter {
    /// At the baseline.
    pub before: Option<u64>,
    /// Largest sample during the run.
    pub peak: Option<u64>,
    /// After quiescence.
    pub after: Option<u64>,
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

/// Runs `plan` against `binary`; the server's leak report goes to `out_dir`.
pub async fn run(
    plan: RunPlan,
    binary: &Path,
    out_dir: &Path,
    progress: &Progress,
) -> Result<RunResult> {
    let RunPlan {
        scenario,
        mode,
        seed,
        ..
    } = plan;
    let origin = Instant::now();
    let env = Environment::start(seed).await?;
    std::fs::create_dir_all(out_dir).map_err(|source| Error::Output {
        path: out_dir.to_owned(),
        source,
    })?;
    let leak_report = out_dir.join(format!(
        "{}-{}.leak-report.json",
        scenario.name(),
        mode.name()
    ));
    let args = server_args(scenario, mode, &env);
    progress.say(&format!(
        "seed {seed}; starting {} {}",
        binary.display(),
        args.join(" ")
    ));
    let server = ServerProcess::start(binary, &args, &leak_report).await?;
    let stderr = server.stderr_log();
    let driven = drive(plan, origin, server, env, progress).await;
    if driven.is_err() {
        progress.say(&format!("server stderr (tail):\n{}", stderr.tail(20)));
    }
    driven
}

/// Everything after the server started: baseline, storm, heal, quiesce, shutdown, verdict.
async fn drive(
    plan: RunPlan,
    origin: Instant,
    server: ServerProcess,
    env: Environment,
    progress: &Progress,
) -> Result<RunResult> {
    let RunPlan {
        scenario,
        mode,
        scale,
        seed,
    } = plan;
    let endpoints = server.endpoints();

    warm_up(scenario, &endpoints, progress).await;
    let (live_before, fds_before) = measure::steady_reading(&endpoints, 5).await;
    let sites_before = endpoints.live_sites().await?;
    progress.say(&format!(
        "baseline: {} live tasks, {} open fds",
        show(live_before),
        show(fds_before)
    ));

    let sampler = Sampler::start(endpoints, origin);
    let history = Arc::new(History::default());
    let ctx = StormContext {
        endpoints,
        env: &env,
        history: Arc::clone(&history),
        seed,
        scale,
        progress,
    };
    sampler.mark("storm");
    sampler.count_probes(true);
    let storm = tokio::time::timeout(STORM_BOUND, scenario.storm(&ctx)).await;
    sampler.count_probes(false);
    let mut notes = Vec::new();
    match storm {
        Ok(result) => result?,
        Err(_) => notes.push(format!("storm cut short at {STORM_BOUND:?}")),
    }
    let counts = history.counts();
    progress.say(&format!(
        "storm over: {} ops (ok {} / fail {} / info {}), {} peers parked",
        counts.total(),
        counts.ok,
        counts.fail,
        counts.info,
        history.parked()
    ));

    sampler.mark("heal");
    scenario.heal(&env);
    let quiesce_target = live_before.map(|live| live + LIVE_SLACK);
    let quiesced = match quiesce_target {
        Some(target) => {
            measure::wait_for_live_at_most(&endpoints, target, scale.quiesce_bound()).await
        }
        None => None,
    };
    sampler.mark(if quiesced.is_some() {
        "quiesced"
    } else {
        "quiesce bound"
    });
    progress.say(&match quiesced {
        Some(after) => format!("quiesced in {} ms", after.as_millis()),
        None => format!(
            "live tasks still above baseline after {:?}",
            scale.quiesce_bound()
        ),
    });
    let final_probe_ok = endpoints.probe(PROBE_DEADLINE).await.is_ok();
    let (live_after, fds_after) = measure::steady_reading(&endpoints, 5).await;
    let stranded = match endpoints.live_sites().await {
        Ok(sites_after) => stranded(&sites_before, &sites_after),
        Err(error) => {
            notes.push(error.to_string());
            Stranded::default()
        }
    };
    if stranded.tasks > 0 {
        progress.say(&format!(
            "{} tasks stranded above the baseline, most at {}",
            stranded.tasks,
            stranded.top_site.as_deref().unwrap_or("?")
        ));
    }

    let aborts = history.aborts();
    let mut cancel = Latencies::default();
    if !aborts.is_empty() {
        match endpoints.cancellations().await {
            Ok(drained) => {
                for abort in &aborts {
                    if let Some(&at) = drained.get(&abort.request_id) {
                        cancel.record(Duration::from_nanos(at.saturating_sub(abort.at_unix_ns)));
                    }
                }
            }
            Err(error) => notes.push(error.to_string()),
        }
    }

    sampler.mark("sigterm");
    progress.say("SIGTERM");
    let parked_peers = history.parked() as u64;
    let shutdown = server.terminate(SHUTDOWN_WAIT).await;
    let sampled = sampler.stop();
    history.release_parked();
    drop(env);

    let leaked_tasks = shutdown
        .leak_report
        .as_ref()
        .map_or(0, |report| report.leaked);
    let our_prefix = request_id_prefix(seed);
    let leaked_with_our_request_ids = shutdown.leak_report.as_ref().map_or(0, |report| {
        report.labeled(|label| label.starts_with(&our_prefix))
    });
    let reported_site = shutdown
        .leak_report
        .as_ref()
        .and_then(|report| report.top_site())
        .map(ToString::to_string);
    let (detected_site, detected_by) = match (reported_site, &stranded.top_site) {
        (Some(site), _) => (Some(site), Some(Detection::ShutdownVerification)),
        (None, Some(site)) if stranded.tasks > LIVE_SLACK => {
            (Some(site.clone()), Some(Detection::LiveSnapshot))
        }
        _ => (None, None),
    };
    if let Some(error) = &shutdown.leak_report_error {
        notes.push(error.clone());
    }
    if shutdown.killed {
        notes.push(format!(
            "server did not exit within {SHUTDOWN_WAIT:?} of SIGTERM; killed"
        ));
    }
    progress.say(&format!(
        "exit {:?} after {} ms; shutdown verification reported {} leaked{}",
        shutdown.exit_code,
        shutdown.took.as_millis(),
        leaked_tasks,
        match (&detected_site, detected_by) {
            (Some(site), Some(by)) => format!("; leak named at {site} by the {}", by.describe()),
            _ => String::new(),
        }
    ));

    let mut result = RunResult {
        name: scenario.name(),
        mode,
        bug: scenario.bug(),
        seed,
        passed: false,
        failures: notes,
        requests: counts.total(),
        outcomes: counts,
        leaked_tasks,
        leaked_with_our_request_ids,
        stranded_tasks: stranded.tasks,
        detected_site,
        detected_by,
        live_tasks: BeforePeakAfter {
            before: live_before,
            peak: sampled.timeline.peak_live(),
            after: live_after,
        },
        open_fds: BeforePeakAfter {
            before: fds_before,
            peak: sampled.timeline.peak_fds(),
            after: fds_after,
        },
        fd_delta: fds_before
            .zip(fds_after)
            .map(|(before, after)| after as i64 - before as i64),
        probe_p50_ms: sampled.probe_latencies.quantile_ms(0.5),
        probe_p99_ms: sampled.probe_latencies.quantile_ms(0.99),
        probe_failures: sampled.probe_failures,
        cancel_p50_ms: cancel.quantile_ms(0.5),
        cancel_p99_ms: cancel.quantile_ms(0.99),
        cancels_sent: aborts.len() as u64,
        cancels_matched: cancel.len(),
        quiesced_after_ms: quiesced.map(|after| after.as_millis() as u64),
        final_probe_ok,
        parked_peers,
        exit_code: shutdown.exit_code,
        shutdown_ms: shutdown.took.as_millis() as u64,
        duration_ms: origin.elapsed().as_millis() as u64,
        timeline: sampled.timeline,
        server_stderr_tail: None,
    };
    result.failures.extend(judge(scenario, scale, &result));
    result.passed = result.failures.is_empty();
    if !result.passed {
        result.server_stderr_tail = Some(tail(&shutdown.stderr, 40));
        progress.say(&format!(
            "server stderr (tail):\n{}",
            tail(&shutdown.stderr, 20)
        ));
    }
    Ok(result)
}

/// Why a run fails its verdict; empty when it passes.
fn judge(scenario: Scenario, scale: Scale, run: &RunResult) -> Vec<String> {
    let mut failures = Vec::new();
    match run.mode {
        Mode::Fixed => {
            if run.exit_code != Some(0) {
                failures.push(format!(
                    "server exit code {:?} after SIGTERM (0 = clean shutdown verification)",
                    run.exit_code
                ));
            }
            if run.leaked_tasks > 0 {
                failures.push(format!("{} leaked tasks", run.leaked_tasks));
            }
            if run.stranded_tasks > LIVE_SLACK {
                failures.push(format!(
                    "{} tasks stranded after quiescence (slack {LIVE_SLACK}), most at {}",
                    run.stranded_tasks,
                    run.detected_site.as_deref().unwrap_or("?")
                ));
            }
            if run.quiesced_after_ms.is_none() {
                failures.push(format!(
                    "live tasks did not return to baseline + {LIVE_SLACK} within {:?}",
                    scale.quiesce_bound()
                ));
            }
            match run.fd_delta {
                Some(delta) if delta > FD_SLACK => {
                    failures.push(format!("fd delta {delta} > slack {FD_SLACK}"));
                }
                None => failures.push("open fds could not be read".into()),
                Some(_) => {}
            }
            if !run.final_probe_ok {
                failures.push("final health probe failed".into());
            }
            if scale == Scale::Campaign {
                match run.probe_p99_ms {
                    Some(p99) if p99 >= PROBE_P99_LIMIT_MS => {
                        failures.push(format!("probe p99 {p99:.1} ms >= {PROBE_P99_LIMIT_MS} ms"));
                    }
                    None => failures.push("no health probe during the storm".into()),
                    Some(_) => {}
                }
            }
            if scenario == Scenario::CancelStorm {
                let matched = run.cancels_matched as f64 / run.cancels_sent.max(1) as f64;
                if matched < CANCEL_MATCH_MIN {
                    failures.push(format!(
                        "server reported the drain of {} of {} aborted requests (< {:.0}%)",
                        run.cancels_matched,
                        run.cancels_sent,
                        CANCEL_MATCH_MIN * 100.0
                    ));
                }
                if scale == Scale::Campaign {
                    if let Some(p99) = run.cancel_p99_ms.filter(|p99| *p99 > CANCEL_P99_LIMIT_MS) {
                        failures.push(format!("cancel p99 {p99:.2} ms > {CANCEL_P99_LIMIT_MS} ms"));
                    }
                }
            }
        }
        Mode::Leaky => {
            if run.detected_by.is_none() {
                failures.push(format!(
                    "leak not caught: exit code {:?} after SIGTERM (expected {LEAK_EXIT_CODE}), \
                     {} tasks stranded after quiescence (slack {LIVE_SLACK})",
                    run.exit_code, run.stranded_tasks
                ));
            }
            match &run.detected_site {
                Some(site) if site.starts_with("server/") => {}
                Some(site) => failures.push(format!("named site {site} is not in server code")),
                None => failures.push("no spawn site named".into()),
            }
        }
    }
    failures
}

fn server_args(scenario: Scenario, mode: Mode, env: &Environment) -> Vec<String> {
    let mut args: Vec<String> = [
        ("--listen", "127.0.0.1:0".to_owned()),
        ("--tls-listen", "127.0.0.1:0".to_owned()),
        ("--handshake-timeout", millis(HANDSHAKE_TIMEOUT)),
        ("--header-timeout", millis(HEADER_TIMEOUT)),
        ("--request-timeout", millis(REQUEST_TIMEOUT)),
        ("--write-timeout", millis(WRITE_TIMEOUT)),
        ("--dns-timeout", millis(DNS_TIMEOUT)),
        ("--pool-acquire-timeout", millis(POOL_ACQUIRE_TIMEOUT)),
        ("--shutdown-grace", millis(SHUTDOWN_GRACE)),
        ("--pool-size", scenario.pool_size().to_string()),
        ("--max-connections", MAX_CONNECTIONS.to_string()),
        ("--upstream", env.upstream_url(scenario)),
        ("--dns-server", env.dns.addr().to_string()),
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

/// Exercises the routes a storm uses once, so tasks started lazily on first use (the
/// resolver, the first pooled connection) are part of the baseline.
async fn warm_up(scenario: Scenario, endpoints: &Endpoints, progress: &Progress) {
    for _ in 0..3 {
        if endpoints.probe(PROBE_DEADLINE).await.is_ok() {
            break;
        }
    }
    if scenario.warms_the_pool() {
        match crate::http::get(endpoints.http, "/proxy", &[], CLIENT_DEADLINE).await {
            Ok(response) if response.head.status == 200 => {}
            Ok(response) => {
                progress.say(&format!("warm-up /proxy answered {}", response.head.status))
            }
            Err(error) => progress.say(&format!("warm-up /proxy failed: {error}")),
        }
    }
}

/// Every request id a run sends starts with this (so leaked tasks can be traced to the run).
fn request_id_prefix(seed: u64) -> String {
    format!("chaos-{seed:016x}-")
}

fn millis(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

fn show(value: Option<u64>) -> String {
    value.map_or_else(|| "?".to_owned(), |value| value.to_string())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `GET path` with `x-request-id`: `ok` on 200, `fail` on another status or a broken
/// connection, `info` when [`CLIENT_DEADLINE`] passes first — then the client vanishes
/// without closing (its socket is parked), so the server cannot lean on the client's FIN.
async fn get_or_park(addr: std::net::SocketAddr, path: &str, request_id: &str, history: &History) {
    use tokio::io::AsyncWriteExt;
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = crate::http::get_request(path, &[("x-request-id", request_id)]);
        stream.write_all(&request).await.ok()?;
        let mut buffered = Vec::new();
        let waited = tokio::time::timeout(
            CLIENT_DEADLINE,
            crate::http::read_head(&mut stream, &mut buffered),
        )
        .await;
        Some(match waited {
            Ok(Ok(head)) if head.status == 200 => Outcome::Ok,
            Ok(_) => Outcome::Fail,
            Err(_) => {
                history.park(stream);
                Outcome::Info
            }
        })
    };
    history.record(exchange.await.unwrap_or(Outcome::Fail));
}

/// Starts `total` `client` futures, `per_batch` per `spacing`, whether or not earlier ones
/// finished (an open-loop load, as real clients arrive), spread evenly inside each period so
/// connects do not arrive as one burst (which would overflow the listen backlog and measure
/// SYN retransmits instead of the server); the futures get their global index.
async fn open_loop<F, Fut>(total: usize, per_batch: usize, spacing: Duration, mut client: F)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut clients = tokio::task::JoinSet::new();
    let gap = spacing / u32::try_from(per_batch.max(1)).unwrap_or(u32::MAX);
    let mut next_start = Instant::now();
    for index in 0..total {
        tokio::time::sleep_until(next_start).await;
        clients.spawn(client(index));
        next_start += gap;
    }
    while clients.join_next().await.is_some() {}
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
    fn every_scenario_has_a_distinct_name_and_bug() {
        let names: std::collections::HashSet<_> = Scenario::ALL.iter().map(|s| s.name()).collect();
        let bugs: std::collections::HashSet<_> = Scenario::ALL.iter().map(|s| s.bug()).collect();
        assert_eq!(names.len(), Scenario::ALL.len());
        assert_eq!(bugs.len(), Scenario::ALL.len());
    }

    #[test]
    fn stranded_tasks_are_the_per_site_growth() {
        let at = |line: u32, count: u64| SiteCount {
            site: crate::server::Site {
                file: "server/src/x.rs".into(),
                line,
                column: 1,
            },
            count,
        };
        let growth = stranded(&[at(1, 3), at(2, 1)], &[at(1, 2), at(2, 40), at(3, 5)]);
        assert_eq!(growth.tasks, 44);
        assert_eq!(growth.top_site.as_deref(), Some("server/src/x.rs:2:1"));
        assert_eq!(stranded(&[at(1, 3)], &[at(1, 3)]), Stranded::default());
    }

    #[test]
    fn a_leaky_run_passes_only_with_a_server_site() {
        let mut run = RunResult::harness_failure(
            Scenario::TlsStall,
            Mode::Leaky,
            1,
            &Error::ServerStart("unused".into()),
        );
        run.requests = 1;
        run.leaked_tasks = 2;
        run.detected_site = Some("server/src/tls.rs:10:5".into());
        run.detected_by = Some(Detection::ShutdownVerification);
        run.exit_code = Some(LEAK_EXIT_CODE);
        assert!(judge(Scenario::TlsStall, Scale::Campaign, &run).is_empty());
        run.detected_site = Some("leakcheck/src/registry.rs:1:1".into());
        assert_eq!(judge(Scenario::TlsStall, Scale::Campaign, &run).len(), 1);
        run.detected_site = None;
        run.detected_by = None;
        assert_eq!(judge(Scenario::TlsStall, Scale::Campaign, &run).len(), 2);
    }
}
