//! One run, start to verdict: faults up → server up → baseline → storm → heal → quiesce →
//! final probe → SIGTERM; plus the client helpers the storms share.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::accounting::{Accounting, FdCensus, Peers, account, fd_census};
use super::environment::server_args;
use super::verdict::judge;
use super::{
    BeforePeakAfter, CLIENT_DEADLINE, Detection, Environment, Mode, RapidResetFigures, RunPlan,
    RunResult, SHUTDOWN_WAIT, STORM_BOUND, Scale, Scenario,
};
use crate::calibration::CancelStormFigures;
use crate::error::{Error, Result};
use crate::history::{History, Outcome};
use crate::measure::{self, Latencies, PROBE_DEADLINE, Sampler};
use crate::server::{Endpoints, ServerProcess, ServerTls, StuckAt, TaskDump};

/// What a storm gets to work with.
#[derive(Debug)]
pub struct StormContext<'a> {
    pub(super) endpoints: Endpoints,
    pub(super) env: &'a Environment,
    pub(super) history: Arc<History>,
    pub(super) seed: u64,
    pub(super) scale: Scale,
    pub(super) mode: Mode,
    pub(super) progress: &'a Progress,
    /// What the cancel storm measured beside the latencies (cancel-storm only).
    pub(super) cancel_storm: parking_lot::Mutex<Option<CancelStormFigures>>,
    /// What the rapid-reset attackers saw (h2-rapid-reset only).
    pub(super) rapid_reset: parking_lot::Mutex<Option<RapidResetFigures>>,
    /// The server's certificate, trusted, for clients of their own (HTTP/2).
    pub(super) tls: ServerTls,
}

impl StormContext<'_> {
    /// How many clients a storm starts: `campaign` or `smoke` by scale, except that a leaky
    /// campaign run starts `leaky_campaign`, sized by the storm so that the tasks its bug
    /// strands stay under [`super::LEAKY_STRANDED_MAX`] and the server's task dump after
    /// quiescence can say where they are stuck (smoke sizes are under it already).
    pub(super) fn clients<T>(&self, campaign: T, smoke: T, leaky_campaign: T) -> T {
        match (self.scale, self.mode) {
            (Scale::Campaign, Mode::Leaky) => leaky_campaign,
            (scale, _) => scale.pick(campaign, smoke),
        }
    }
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
    let tls = ServerTls::create(out_dir)?;
    let args = server_args(scenario, mode, &env, &tls);
    progress.say(&format!(
        "seed {seed}; starting {} {}",
        binary.display(),
        args.join(" ")
    ));
    let server = ServerProcess::start(binary, &args, &leak_report).await?;
    let stderr = server.stderr_log();
    let driven = drive(plan, origin, server, env, tls, out_dir, progress).await;
    if driven.is_err() {
        progress.say(&format!("server stderr (tail):\n{}", stderr.tail(20)));
    }
    driven
}

/// Everything after the server started: baseline, storm, heal, quiesce, task dump, shutdown,
/// verdict.
async fn drive(
    plan: RunPlan,
    origin: Instant,
    server: ServerProcess,
    env: Environment,
    tls: ServerTls,
    out_dir: &Path,
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
    let peers = Peers {
        server_ports: [endpoints.http.port(), endpoints.https.port()],
        upstream: env.proxy.addr(),
        nameserver: env.dns.addr(),
    };
    let census_before = settled_census(&endpoints, &peers).await;
    // A multi-thread server is dumped once in its life (tokio 1.54 can wedge a worker on a
    // second dump): the baseline is the ids of the tasks alive now.
    let baseline_ids: HashSet<u64> = sites_before
        .iter()
        .flat_map(|site| site.tasks.iter().map(|task| task.id))
        .collect();
    progress.say(&format!(
        "baseline: {} live tasks, {} open fds",
        show(live_before),
        show(fds_before)
    ));

    let sampler = Sampler::start(endpoints, tls.clone(), origin);
    let history = Arc::new(History::default());
    let ctx = StormContext {
        endpoints,
        env: &env,
        history: Arc::clone(&history),
        seed,
        scale,
        mode,
        progress,
        cancel_storm: parking_lot::Mutex::new(None),
        rapid_reset: parking_lot::Mutex::new(None),
        tls,
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
    let cancel_storm = ctx.cancel_storm.into_inner();
    let rapid_reset = ctx.rapid_reset.into_inner();
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
    let (quiesced, accounting) = quiesce(
        &endpoints,
        &sampler,
        &peers,
        &sites_before,
        &census_before,
        scale.quiesce_bound(),
    )
    .await;
    sampler.mark(if quiesced.is_some() {
        "quiesced"
    } else {
        "quiesce bound"
    });
    progress.say(&match quiesced {
        Some(after) => format!(
            "every task and fd accounted for after {} ms",
            after.as_millis()
        ),
        None => format!(
            "{} tasks and {} fds unaccounted for after {:?}",
            accounting.unaccounted_tasks(),
            accounting.unaccounted_fds(),
            scale.quiesce_bound()
        ),
    });
    // After quiescence and before shutdown: what is left above the baseline is what stranded.
    let dump_after = {
        let _quiet = sampler.quiet().await;
        take_dump(&endpoints, &plan, out_dir).await
    };
    let final_probe_ok = endpoints.probe(PROBE_DEADLINE).await.is_ok();
    let (live_after, fds_after) = measure::steady_reading(&endpoints, 5).await;
    let top_unaccounted = accounting.top_unaccounted().cloned();
    if let Some(top) = &top_unaccounted {
        progress.say(&format!(
            "{} tasks unaccounted for above the baseline, most at {} (label {})",
            accounting.unaccounted_tasks(),
            top.site,
            top.label.as_deref().unwrap_or("none")
        ));
    }

    let aborts = history.aborts();
    let mut cancel = Latencies::default();
    let mut request_ended = Latencies::default();
    // (abort, gone) on CLOCK_MONOTONIC, for the latencies net of CPU starvation.
    let mut cancelled = Vec::new();
    let mut gone_before_abort = 0;
    if !aborts.is_empty() {
        match endpoints.cancellations().await {
            Ok(ends) => {
                for abort in &aborts {
                    let Some(end) = ends.get(&abort.request_id) else {
                        continue;
                    };
                    match end.gone_ns() {
                        // Finished on its own before the client gave up: nothing was cancelled.
                        Some(at) if at < abort.at_monotonic_ns => gone_before_abort += 1,
                        Some(at) => {
                            cancel.record(Duration::from_nanos(at - abort.at_monotonic_ns));
                            cancelled.push((abort.at_monotonic_ns, at));
                            if let Some(ended) = end.request_ended_ns {
                                request_ended.record(Duration::from_nanos(
                                    ended.saturating_sub(abort.at_monotonic_ns),
                                ));
                            }
                        }
                        None => {}
                    }
                }
            }
            Err(error) => notes.push(error.to_string()),
        }
    }
    let peak_in_flight = match endpoints.peak_in_flight().await {
        Ok(peak) => Some(peak),
        Err(error) => {
            notes.push(error.to_string());
            None
        }
    };

    sampler.mark("sigterm");
    progress.say("SIGTERM");
    let parked_peers = history.parked() as u64;
    let shutdown = server.terminate(SHUTDOWN_WAIT).await;
    let sampled = sampler.stop();
    let mut cancel_net = Latencies::default();
    let since_origin_ms = |ns: u64| ns.saturating_sub(sampled.origin_monotonic_ns) as f64 / 1e6;
    for (aborted, gone) in cancelled {
        let latency_ms = (gone - aborted) as f64 / 1e6;
        let starved = sampled
            .starvation
            .between_ms(since_origin_ms(aborted), since_origin_ms(gone));
        cancel_net.record(Duration::from_secs_f64(
            (latency_ms - starved).max(0.0) / 1000.0,
        ));
    }
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
    let (detected_site, detected_by) = match (reported_site, &top_unaccounted) {
        (Some(site), _) => (Some(site), Some(Detection::ShutdownVerification)),
        (None, Some(top)) => (Some(top.site.clone()), Some(Detection::LiveSnapshot)),
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

    let (stuck_at, stuck_at_reason) = match stuck_at(&baseline_ids, dump_after) {
        Ok(stuck) => {
            progress.say(&format!(
                "task dump: {} of {} tasks above the baseline stuck at {}",
                stuck.tasks,
                stuck.of,
                stuck.frame()
            ));
            (Some(stuck), None)
        }
        Err(reason) => {
            progress.say(&format!("stuck at: unknown, {reason}"));
            (None, Some(reason))
        }
    };

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
        unaccounted_with_our_request_ids: accounting
            .tasks
            .iter()
            .filter(|group| {
                group
                    .label
                    .as_deref()
                    .is_some_and(|label| label.starts_with(&our_prefix))
            })
            .map(|group| group.unaccounted)
            .sum(),
        stranded_tasks: accounting.unaccounted_tasks(),
        unaccounted_fds: accounting.unaccounted_fds(),
        accounting,
        detected_site,
        stuck_at,
        stuck_at_reason,
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
        probe: sampled.probes,
        cancel_p50_ms: cancel.quantile_ms(0.5),
        cancel_p99_ms: cancel.quantile_ms(0.99),
        cancel_net_p99_ms: cancel_net.quantile_ms(0.99),
        cancel_request_ended_p50_ms: request_ended.quantile_ms(0.5),
        cancel_request_ended_p99_ms: request_ended.quantile_ms(0.99),
        cancel_storm,
        rapid_reset,
        cancels_sent: aborts.len() as u64,
        cancels_matched: cancel.len(),
        cancels_gone_before_abort: gone_before_abort,
        peak_in_flight,
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

/// Exercises the routes a storm uses once, so tasks started lazily on first use (the
/// resolver, the first pooled connection) are part of the baseline, and the server's
/// symbolizer is loaded before anything is timed.
async fn warm_up(scenario: Scenario, endpoints: &Endpoints, progress: &Progress) {
    for _ in 0..3 {
        if endpoints.probe(PROBE_DEADLINE).await.is_ok() {
            break;
        }
    }
    if let Err(error) = endpoints.warm_symbolizer().await {
        progress.say(&format!("warm-up /debug/tasks failed: {error}"));
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

/// The fd census of a quiet server: the smallest count of each kind over a few readings, so
/// a connection the server is still closing does not count.
async fn settled_census(endpoints: &Endpoints, peers: &Peers) -> FdCensus {
    let mut settled: Option<FdCensus> = None;
    for _ in 0..3 {
        if let Some(now) = fd_census(endpoints.pid, peers) {
            settled = Some(match settled {
                None => now,
                Some(low) => {
                    let mut kinds: Vec<_> = low.keys().chain(now.keys()).copied().collect();
                    kinds.dedup();
                    kinds
                        .into_iter()
                        .map(|kind| {
                            let count = |census: &FdCensus| census.get(&kind).copied().unwrap_or(0);
                            (kind, count(&low).min(count(&now)))
                        })
                        .collect()
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    settled.unwrap_or_default()
}

/// Accounts for the server's tasks and fds (with the sampler quiet) until everything is
/// accounted for or `bound` passes; returns when it was exact, and the last accounting.
async fn quiesce(
    endpoints: &Endpoints,
    sampler: &Sampler,
    peers: &Peers,
    sites_before: &[crate::server::SiteGroup],
    census_before: &FdCensus,
    bound: Duration,
) -> (Option<Duration>, Accounting) {
    let started = Instant::now();
    loop {
        let reading = {
            let _quiet = sampler.quiet().await;
            let idle = endpoints.upstream_idle().await;
            let sites = endpoints.live_sites().await;
            let census = fd_census(endpoints.pid, peers);
            match (idle, sites, census) {
                (Ok(idle), Ok(sites), Some(census)) => {
                    Some(account(sites_before, &sites, idle, census_before, &census))
                }
                _ => None,
            }
        };
        match reading {
            Some(accounting) if accounting.is_exact() => {
                return (Some(started.elapsed()), accounting);
            }
            Some(accounting) if started.elapsed() >= bound => return (None, accounting),
            None if started.elapsed() >= bound => return (None, Accounting::default()),
            _ => {}
        }
        tokio::time::sleep(QUIESCE_POLL).await;
    }
}

/// Time between two accountings while waiting for quiescence.
const QUIESCE_POLL: Duration = Duration::from_millis(250);

/// Every request id a run sends starts with this (so leaked tasks can be traced to the run).
pub(super) fn request_id_prefix(seed: u64) -> String {
    format!("chaos-{seed:016x}-")
}

/// `/debug/dump` after quiescence parsed, its text kept as `<scenario>-<mode>.after.dump.txt` in
/// `out_dir` for triage; or why there is none.
async fn take_dump(
    endpoints: &Endpoints,
    plan: &RunPlan,
    out_dir: &Path,
) -> std::result::Result<TaskDump, String> {
    let file = out_dir.join(format!(
        "{}-{}.after.dump.txt",
        plan.scenario.name(),
        plan.mode.name()
    ));
    // An earlier run's dump must not pass for this one's.
    let _ = std::fs::remove_file(&file);
    let text = match endpoints.task_dump().await {
        Ok(Ok(text)) => text,
        Ok(Err(refusal)) => return Err(format!("/debug/dump refused: {refusal}")),
        Err(error) => return Err(error.to_string()),
    };
    // Only a triage aid: a dump that cannot be saved is still parsed.
    let _ = std::fs::write(file, &text);
    Ok(TaskDump::parse(&text, &crate::server::workspace_root()))
}

/// Where the stranded tasks are stuck: the dump after quiescence less the tasks alive at the
/// baseline; or why that cannot be said.
fn stuck_at(
    baseline: &HashSet<u64>,
    after: std::result::Result<TaskDump, String>,
) -> std::result::Result<StuckAt, String> {
    let after = after?;
    let stuck = after.stuck_at(baseline);
    stuck.map(|stuck| stuck.named_from_source(&crate::server::workspace_root())).ok_or_else(|| {
        format!(
            "no task above the baseline is parked at a frame outside tokio and the standard library \
             in the dump after quiescence ({} tasks, {} at the baseline)",
            after.tasks.len(),
            baseline.len()
        )
    })
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
pub(super) async fn get_or_park(
    addr: std::net::SocketAddr,
    path: &str,
    request_id: &str,
    history: &History,
) {
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
            Ok(Ok(head)) if head.status == 200 => (Outcome::Ok, format!("{path} 200")),
            Ok(Ok(head)) => (Outcome::Fail, format!("{path} {}", head.status)),
            Ok(Err(_)) => (Outcome::Fail, format!("{path} closed without a response")),
            Err(_) => {
                history.park(stream);
                (
                    Outcome::Info,
                    format!("{path} unanswered at the client deadline"),
                )
            }
        })
    };
    let (outcome, class) = exchange
        .await
        .unwrap_or_else(|| (Outcome::Fail, format!("{path} not sent")));
    history.record(outcome, &class);
}

/// Starts `total` `client` futures, `per_batch` per `spacing`, whether or not earlier ones
/// finished (an open-loop load, as real clients arrive), spread evenly inside each period so
/// connects do not arrive as one burst (which would overflow the listen backlog and measure
/// SYN retransmits instead of the server); the futures get their global index.
pub(super) async fn open_loop<F, Fut>(
    total: usize,
    per_batch: usize,
    spacing: Duration,
    mut client: F,
) where
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
