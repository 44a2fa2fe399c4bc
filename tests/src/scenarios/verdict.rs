//! What one run measured and its verdict: fixed mode must leak nothing and stay responsive,
//! leaky mode must have its leak caught at a server site.

use serde::Serialize;

use super::accounting::Accounting;
use super::{
    CANCEL_CPU_PER_REQUEST_LIMIT_US, CANCEL_MATCH_MIN, CANCEL_P99_LIMIT_MS, CANCEL_STORM_CLIENTS,
    Mode, PROBE_P99_LIMIT_MS, RapidResetFigures, Scale, Scenario,
};
use crate::calibration::CancelStormFigures;
use crate::error::Error;
use crate::history::Counts;
use crate::measure::{ProbeStats, ProbeSummary, Timeline};
use crate::server::{LEAK_EXIT_CODE, StuckAt};

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
    /// Unaccounted tasks after quiescence labeled with a request id this run sent.
    pub unaccounted_with_our_request_ids: u64,
    /// Tasks alive after quiescence above the baseline that the allow-list does not account
    /// for (see [`Accounting`]).
    pub stranded_tasks: u64,
    /// Open fds after quiescence above the baseline that the allow-list does not account for.
    pub unaccounted_fds: u64,
    /// Every task group and fd kind that changed, and what accounts for it.
    pub accounting: Accounting,
    /// The spawn site of the leak: the shutdown report's top site, or else the unaccounted
    /// task group to name (see [`Accounting::top_unaccounted`]).
    pub detected_site: Option<String>,
    /// Where most stranded or leaked tasks are parked: the most common stuck frame of the
    /// server's task dump after quiescence, over the tasks not alive at the baseline
    /// ([`crate::server::TaskDump::stuck_at`]); `None` when no dump could be taken or it has
    /// no such task, and then `stuck_at_reason` says why.
    pub stuck_at: Option<StuckAt>,
    /// Why `stuck_at` is `None`.
    pub stuck_at_reason: Option<String>,
    /// Which leakcheck view named `detected_site`.
    pub detected_by: Option<Detection>,
    /// Live tasks at the baseline, at the peak, after quiescence.
    pub live_tasks: BeforePeakAfter,
    /// Open fds at the baseline, at the peak, after quiescence.
    pub open_fds: BeforePeakAfter,
    /// Open fds after quiescence minus the baseline.
    pub fd_delta: Option<i64>,
    /// Health-probe latency during the storm over HTTP and HTTPS, from each probe's intended
    /// send time on a constant-rate schedule (no coordinated omission).
    pub probe: ProbeSummary,
    /// Client abort → last task of that request ended, p50.
    pub cancel_p50_ms: Option<f64>,
    /// Client abort → last task of that request ended, p99.
    pub cancel_p99_ms: Option<f64>,
    /// Client abort → last task ended, p99, each latency less the time the server's (or the
    /// client's) threads waited for a CPU meanwhile, per CPU ([`crate::measure::Starvation`]).
    pub cancel_net_p99_ms: Option<f64>,
    /// Client abort → the server dropped that request's handler (or streamed body), p50:
    /// the part of the cancel latency before the request's tasks were told to stop.
    pub cancel_request_ended_p50_ms: Option<f64>,
    /// The same, p99.
    pub cancel_request_ended_p99_ms: Option<f64>,
    /// cancel-storm: the bare-listener floor, the server's CPU and wait during the drain and
    /// the p99 budget they set (see [`crate::calibration`]).
    pub cancel_storm: Option<CancelStormFigures>,
    /// h2-rapid-reset: streams the attackers opened and reset, and how the server answered.
    pub rapid_reset: Option<RapidResetFigures>,
    /// Aborts made by the storm.
    pub cancels_sent: u64,
    /// Aborts whose drain the server reported after the abort (the cancel latencies).
    pub cancels_matched: u64,
    /// Aborted requests the server had already finished before the abort (not cancels:
    /// excluded from the latencies).
    pub cancels_gone_before_abort: u64,
    /// Most requests the server held at once (its own gauge).
    pub peak_in_flight: Option<u64>,
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
    pub(super) fn describe(self) -> &'static str {
        match self {
            Detection::ShutdownVerification => "shutdown leak report",
            Detection::LiveSnapshot => "live snapshot after quiescence",
        }
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
            unaccounted_with_our_request_ids: 0,
            stranded_tasks: 0,
            unaccounted_fds: 0,
            accounting: Accounting::default(),
            detected_site: None,
            stuck_at: None,
            stuck_at_reason: Some("not measured".into()),
            detected_by: None,
            live_tasks: BeforePeakAfter::default(),
            open_fds: BeforePeakAfter::default(),
            fd_delta: None,
            probe: ProbeSummary::default(),
            cancel_p50_ms: None,
            cancel_p99_ms: None,
            cancel_net_p99_ms: None,
            cancel_request_ended_p50_ms: None,
            cancel_request_ended_p99_ms: None,
            cancel_storm: None,
            rapid_reset: None,
            cancels_sent: 0,
            cancels_matched: 0,
            cancels_gone_before_abort: 0,
            peak_in_flight: None,
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

/// Why a run fails its verdict; empty when it passes.
pub(super) fn judge(scenario: Scenario, scale: Scale, run: &RunResult) -> Vec<String> {
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
            for group in run
                .accounting
                .tasks
                .iter()
                .filter(|group| group.unaccounted > 0)
            {
                failures.push(format!(
                    "{} tasks from {} (label {}) unaccounted for after quiescence ({} at the baseline, {} after{})",
                    group.unaccounted,
                    group.site,
                    group.label.as_deref().unwrap_or("none"),
                    group.before,
                    group.after,
                    group
                        .allowed_by
                        .map(|by| format!("; allowed: {by}"))
                        .unwrap_or_default()
                ));
            }
            for group in run
                .accounting
                .fds
                .iter()
                .filter(|group| group.unaccounted > 0)
            {
                failures.push(format!(
                    "{} {:?} fds unaccounted for after quiescence ({} at the baseline, {} after)",
                    group.unaccounted, group.kind, group.before, group.after
                ));
            }
            let expected = scenario.expected_outcomes();
            for (class, count) in &run.outcomes.classes {
                if !expected.contains(&class.as_str()) {
                    failures.push(format!(
                        "{count} client outcomes `{class}`, not expected here (expected: {})",
                        expected.join(", ")
                    ));
                }
            }
            if run.quiesced_after_ms.is_none() {
                failures.push(format!(
                    "tasks and fds were not all accounted for within {:?}",
                    scale.quiesce_bound()
                ));
            }
            if !run.final_probe_ok {
                failures.push("final health probe failed".into());
            }
            if scale == Scale::Campaign {
                for (scheme, stats) in [("http", &run.probe.http), ("https", &run.probe.https)] {
                    judge_probes(scheme, stats, &mut failures);
                }
            }
            if scenario == Scenario::CancelStorm {
                let clients = scale.pick(CANCEL_STORM_CLIENTS.0, CANCEL_STORM_CLIENTS.1) as u64;
                if run.cancels_sent < clients {
                    failures.push(format!(
                        "{} aborts sent, fewer than the {clients} requests the storm holds at once",
                        run.cancels_sent
                    ));
                }
                match run.peak_in_flight {
                    Some(peak) if peak >= clients => {}
                    peak => failures.push(format!(
                        "the server held at most {peak:?} requests at once (expected {clients})"
                    )),
                }
            }
            if scenario == Scenario::H2RapidReset {
                judge_rapid_reset_fixed(run.rapid_reset.as_ref(), &mut failures);
            }
            if matches!(scenario, Scenario::CancelStorm | Scenario::CancelWaves) {
                let matched = (run.cancels_matched + run.cancels_gone_before_abort) as f64
                    / run.cancels_sent.max(1) as f64;
                if matched < CANCEL_MATCH_MIN {
                    failures.push(format!(
                        "server reported the drain of {} of {} aborted requests (< {:.0}%)",
                        run.cancels_matched,
                        run.cancels_sent,
                        CANCEL_MATCH_MIN * 100.0
                    ));
                }
                if scale == Scale::Campaign {
                    judge_cancel_latency(run, &mut failures);
                }
            }
        }
        Mode::Leaky => {
            if run.detected_by.is_none() {
                failures.push(format!(
                    "leak not caught: exit code {:?} after SIGTERM (expected {LEAK_EXIT_CODE}), \
                     no task unaccounted for after quiescence",
                    run.exit_code
                ));
            }
            let ours = run.leaked_with_our_request_ids + run.unaccounted_with_our_request_ids;
            if scenario.leaks_request_tasks() && ours == 0 && run.detected_by.is_some() {
                failures
                    .push("the leaked tasks carry none of the request ids the clients sent".into());
            }
            if !scenario.leaks_request_tasks() && ours > 0 {
                failures.push(format!(
                    "{ours} leaked connection or shared tasks carry a client's request id \
                     (they must be spawned under their own label or none)"
                ));
            }
            if scenario == Scenario::H2RapidReset
                && run
                    .rapid_reset
                    .as_ref()
                    .is_none_or(|figures| figures.still_served == 0)
            {
                failures.push(
                    "no attacker connection was still served after its streams: the bug did not \
                     remove the rapid-reset defense"
                        .into(),
                );
            }
            match &run.detected_site {
                Some(site) if site.starts_with("server/") => {}
                Some(site) => failures.push(format!("named site {site} is not in server code")),
                None => failures.push("no spawn site named".into()),
            }
            let expected = scenario.expected_stuck_at();
            let wanted = || {
                expected
                    .iter()
                    .map(|place| format!("`{place}`"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            };
            match &run.stuck_at {
                _ if expected.is_empty() => {}
                Some(stuck) if expected.iter().any(|place| stuck.frame().contains(place)) => {}
                Some(stuck) => failures.push(format!(
                    "{} of {} stranded tasks stuck at {}, expected a frame matching {}",
                    stuck.tasks,
                    stuck.of,
                    stuck.frame(),
                    wanted()
                )),
                None => failures.push(format!(
                    "no stuck_at (expected a frame matching {}): {}",
                    wanted(),
                    run.stuck_at_reason.as_deref().unwrap_or("no reason given")
                )),
            }
        }
    }
    failures
}

/// Fixed h2-rapid-reset: every attacker connection was told GOAWAY `ENHANCE_YOUR_CALM`
/// (each connection's class is judged with the outcomes; this checks none went missing).
fn judge_rapid_reset_fixed(figures: Option<&RapidResetFigures>, failures: &mut Vec<String>) {
    let Some(figures) = figures else {
        failures.push("the rapid-reset storm reported no figures".into());
        return;
    };
    if figures.told_to_calm_down() != figures.connections {
        failures.push(format!(
            "{} of {} attacker connections got GOAWAY ENHANCE_YOUR_CALM ({:?}, {} closed without one, \
             {} still served, {} not connected)",
            figures.told_to_calm_down(),
            figures.connections,
            figures.goaways,
            figures.closed_without_goaway,
            figures.still_served,
            figures.not_connected
        ));
    }
}

/// The campaign's verdict across runs: leaky runs of different bugs must be stuck at different
/// places (two bugs stuck at one `file:line` are not told apart); a run that shares its
/// stuck_at with another bug's fails. Run after every run's own verdict.
pub fn judge_campaign(runs: &mut [RunResult]) {
    let leaky: Vec<(usize, &'static str, String)> = runs
        .iter()
        .enumerate()
        .filter(|(_, run)| run.mode == Mode::Leaky)
        .filter_map(|(index, run)| Some((index, run.bug, run.stuck_at.as_ref()?.at.clone())))
        .collect();
    for (index, bug, at) in &leaky {
        let others: Vec<String> = leaky
            .iter()
            .filter(|(other, other_bug, other_at)| {
                other != index && other_bug != bug && other_at == at
            })
            .map(|(other, other_bug, _)| format!("{} (--bug {other_bug})", runs[*other].name))
            .collect();
        if !others.is_empty() {
            let run = &mut runs[*index];
            run.failures.push(format!(
                "stuck at {at}, like {}: the stuck point does not tell the bugs apart",
                others.join(", ")
            ));
            run.passed = false;
        }
    }
}

/// The cancel p99 against the target, or where the storm measured one (cancel-storm),
/// against the budget its drain sets ([`crate::calibration::cancel_budget_ms`]), and the
/// CPU per cancelled request against its own limit (the budget grows with CPU spent).
fn judge_cancel_latency(run: &RunResult, failures: &mut Vec<String>) {
    let Some(p99) = run.cancel_p99_ms else {
        return;
    };
    let figures = run.cancel_storm.as_ref();
    match figures.and_then(|figures| figures.budget_ms) {
        Some(budget) if p99 > budget.max(CANCEL_P99_LIMIT_MS) => failures.push(format!(
            "cancel p99 {p99:.2} ms > its budget {budget:.1} ms (target {CANCEL_P99_LIMIT_MS} ms + the drain's busy time per CPU): \
             the server sat idle while cancelled requests were still alive"
        )),
        Some(_) => {}
        None if figures.is_some() => failures.push(format!(
            "cancel p99 {p99:.2} ms: no budget, the server did not drain within the wait"
        )),
        // Without a drain budget (waves of aborts over seconds): the latencies net of the
        // time the server or the client waited for a CPU.
        None => match run.cancel_net_p99_ms {
            Some(net) if net > CANCEL_P99_LIMIT_MS => failures.push(format!(
                "cancel p99 {net:.2} ms net of CPU starvation > {CANCEL_P99_LIMIT_MS} ms (raw p99 {p99:.2} ms)"
            )),
            Some(_) => {}
            None if p99 > CANCEL_P99_LIMIT_MS => {
                failures.push(format!("cancel p99 {p99:.2} ms > {CANCEL_P99_LIMIT_MS} ms"));
            }
            None => {}
        },
    }
    if let Some(per_cancel) = figures
        .and_then(|figures| figures.server_cpu_per_cancel_us)
        .filter(|per_cancel| *per_cancel > CANCEL_CPU_PER_REQUEST_LIMIT_US)
    {
        failures.push(format!(
            "{per_cancel:.1} µs of server CPU per cancelled request > {CANCEL_CPU_PER_REQUEST_LIMIT_US} µs"
        ));
    }
}

/// A scheme's probe p99 net of CPU starvation (each probe less the time the server's or the
/// client's threads waited for a CPU during its flight) must stay under [`PROBE_P99_LIMIT_MS`];
/// the raw p99 and the bare-responder floor's are reported beside it.
fn judge_probes(scheme: &str, stats: &ProbeStats, failures: &mut Vec<String>) {
    match (stats.net_p99_ms, stats.p99_ms) {
        (Some(net), Some(raw)) if net >= PROBE_P99_LIMIT_MS => failures.push(format!(
            "{scheme} probe p99 {net:.1} ms net of CPU starvation >= {PROBE_P99_LIMIT_MS} ms \
             (raw {raw:.1} ms, from intended send times)"
        )),
        (None, _) | (_, None) => {
            failures.push(format!("no {scheme} health probe during the storm"))
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        run.stuck_at = Some(stuck(
            "listener::serve_connection",
            "server/src/listener.rs:171",
        ));
        assert!(judge(Scenario::TlsStall, Scale::Campaign, &run).is_empty());
        run.detected_site = Some("leakcheck/src/registry.rs:1:1".into());
        assert_eq!(judge(Scenario::TlsStall, Scale::Campaign, &run).len(), 1);
        run.detected_site = None;
        run.detected_by = None;
        assert_eq!(judge(Scenario::TlsStall, Scale::Campaign, &run).len(), 2);
    }

    fn stuck(function: &str, at: &str) -> StuckAt {
        StuckAt {
            at: at.into(),
            function: function.into(),
            tasks: 9,
            of: 10,
            source: crate::server::StuckSource::TaskDump,
        }
    }

    fn leaky_run(scenario: Scenario, stuck_at: Option<StuckAt>) -> RunResult {
        let mut run = RunResult::harness_failure(
            scenario,
            Mode::Leaky,
            1,
            &Error::ServerStart("unused".into()),
        );
        run.failures.clear();
        run.passed = true;
        run.detected_site = Some("server/src/listener.rs:119:29".into());
        run.detected_by = Some(Detection::LiveSnapshot);
        run.stuck_at = stuck_at;
        run
    }

    #[test]
    fn a_leaky_run_must_be_stuck_where_its_scenario_expects() {
        let header_read = stuck(
            "leakcheck_server::listener::drive",
            "server/src/listener.rs:290",
        );
        let run = leaky_run(Scenario::Slowloris, Some(header_read.clone()));
        assert!(judge(Scenario::Slowloris, Scale::Smoke, &run).is_empty());
        // The same place for the TLS stall: the handshake is not where it waits.
        let run = leaky_run(Scenario::TlsStall, Some(header_read));
        let failures = judge(Scenario::TlsStall, Scale::Smoke, &run);
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(
            failures[0].starts_with(
                "9 of 10 stranded tasks stuck at leakcheck_server::listener::drive at \
                 server/src/listener.rs:290, expected a frame matching `listener::serve_connection"
            ),
            "{failures:?}"
        );
        let mut run = leaky_run(Scenario::TlsStall, None);
        run.stuck_at_reason = Some("/debug/dump refused: 300 live tasks".into());
        let failures = judge(Scenario::TlsStall, Scale::Smoke, &run);
        assert!(
            failures[0].starts_with("no stuck_at") && failures[0].ends_with("300 live tasks"),
            "{failures:?}"
        );
    }

    #[test]
    fn the_campaign_fails_two_bugs_stuck_at_one_place() {
        let lease = || {
            Some(stuck(
                "leakcheck_server::routes::keep_lease",
                "server/src/routes.rs:413",
            ))
        };
        let mut runs = vec![
            leaky_run(Scenario::CancelStorm, lease()),
            // The same bug as cancel-storm: the same place is right.
            leaky_run(Scenario::CancelWaves, lease()),
            leaky_run(Scenario::Panic, lease()),
            leaky_run(Scenario::DnsHang, None),
        ];
        let mut fixed = leaky_run(Scenario::Slowloris, lease());
        fixed.mode = Mode::Fixed;
        runs.push(fixed);
        judge_campaign(&mut runs);
        let passed: Vec<bool> = runs.iter().map(|run| run.passed).collect();
        assert_eq!(passed, [false, false, false, true, true]);
        assert_eq!(
            runs[2].failures,
            [
                "stuck at server/src/routes.rs:413, like cancel-storm (--bug detached-request-task), \
                 cancel-waves (--bug detached-request-task): the stuck point does not tell the bugs apart"
            ]
        );
        assert_eq!(runs[0].failures.len(), 1, "{:?}", runs[0].failures);
    }

    #[test]
    fn request_scoped_leaks_must_carry_the_clients_request_ids() {
        let mut run = RunResult::harness_failure(
            Scenario::Panic,
            Mode::Leaky,
            1,
            &Error::ServerStart("unused".into()),
        );
        run.detected_site = Some("server/src/routes.rs:10:5".into());
        run.detected_by = Some(Detection::LiveSnapshot);
        run.stuck_at = Some(stuck(
            "leakcheck_server::routes::panic_route",
            "server/src/routes.rs:622",
        ));
        let failures = judge(Scenario::Panic, Scale::Smoke, &run);
        assert!(
            failures
                .iter()
                .any(|failure| failure.contains("request ids")),
            "{failures:?}"
        );
        run.unaccounted_with_our_request_ids = 3;
        assert!(judge(Scenario::Panic, Scale::Smoke, &run).is_empty());
        // A connection leak that carries a request id is mislabeled.
        let failures = judge(Scenario::Slowloris, Scale::Smoke, &run);
        assert!(
            failures
                .iter()
                .any(|failure| failure.contains("carry a client's request id")),
            "{failures:?}"
        );
    }

    #[test]
    fn a_fixed_run_fails_on_an_outcome_its_scenario_does_not_expect() {
        let mut run = RunResult::harness_failure(
            Scenario::Panic,
            Mode::Fixed,
            1,
            &Error::ServerStart("unused".into()),
        );
        run.outcomes.classes = [("/work 200".to_owned(), 3), ("/work 500".to_owned(), 1)]
            .into_iter()
            .collect();
        let failures = judge(Scenario::Panic, Scale::Smoke, &run);
        assert!(
            failures
                .iter()
                .any(|failure| failure.starts_with("1 client outcomes `/work 500`")),
            "{failures:?}"
        );
        assert!(
            !failures
                .iter()
                .any(|failure| failure.contains("`/work 200`"))
        );
    }

    fn cancel_storm_run(p99_ms: f64, on_cpu_ms: u64, waiting_ms: u64) -> RunResult {
        use crate::cpu::SchedTime;
        use std::time::Duration;
        let mut run = RunResult::harness_failure(
            Scenario::CancelStorm,
            Mode::Fixed,
            1,
            &Error::ServerStart("unused".into()),
        );
        run.cancel_p99_ms = Some(p99_ms);
        run.cancel_storm = Some(CancelStormFigures::new(
            crate::calibration::CancelFloor::default(),
            5_000,
            100.0,
            Some(Duration::from_millis(400)),
            Some(SchedTime::default()),
            Some(SchedTime {
                on_cpu: Duration::from_millis(on_cpu_ms),
                waiting: Duration::from_millis(waiting_ms),
            }),
        ));
        run
    }

    fn cancel_failures(run: &RunResult) -> Vec<String> {
        let mut failures = Vec::new();
        judge_cancel_latency(run, &mut failures);
        failures
    }

    #[test]
    fn a_cancel_p99_over_the_target_passes_only_while_the_server_was_busy_or_waiting_for_a_cpu() {
        let cpus = std::thread::available_parallelism().unwrap().get() as u64;
        // Busy or runnable for 300 ms per CPU: a 150 ms p99 is the hardware's limit.
        assert!(cancel_failures(&cancel_storm_run(150.0, 100 * cpus, 200 * cpus)).is_empty());
        // The same p99 from a server that was mostly idle: it waited on something.
        let idle = cancel_failures(&cancel_storm_run(150.0, 10 * cpus, 10 * cpus));
        assert!(
            idle.iter().any(|failure| failure.contains("sat idle")),
            "{idle:?}"
        );
        // Under the target, no budget is needed.
        assert!(cancel_failures(&cancel_storm_run(9.0, 0, 0)).is_empty());
    }

    #[test]
    fn too_much_cpu_per_cancel_fails_even_within_the_budget() {
        // 5,000 cancels at 100 µs each: 500 ms of CPU.
        let failures = cancel_failures(&cancel_storm_run(100.0, 500, 2_000));
        assert!(
            failures
                .iter()
                .any(|failure| failure.contains("µs of server CPU per cancelled request")),
            "{failures:?}"
        );
        assert_eq!(failures.len(), 1, "{failures:?}");
    }
}
