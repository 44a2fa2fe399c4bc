//! What one run measured and its verdict: fixed mode must leak nothing and stay responsive,
//! leaky mode must have its leak caught at a server site.

use serde::Serialize;

use super::{
    CANCEL_MATCH_MIN, CANCEL_P99_LIMIT_MS, FD_SLACK, LIVE_SLACK, Mode, PROBE_P99_LIMIT_MS, Scale,
    Scenario,
};
use crate::error::Error;
use crate::history::Counts;
use crate::measure::Timeline;
use crate::server::{LEAK_EXIT_CODE, SiteCount};

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

/// Tasks alive above the baseline, by spawn site.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Stranded {
    pub(super) tasks: u64,
    pub(super) top_site: Option<String>,
}

/// Per-site growth of live tasks from `before` to `after`. The site named is the one that
/// grew most among those whose tasks run on behalf of a request (it points into the handler
/// that hangs) when one grew past [`LIVE_SLACK`]; otherwise the one that grew most (for leaks
/// with no request, e.g. a stalled handshake, that is the connection task).
pub(super) fn stranded(before: &[SiteCount], after: &[SiteCount]) -> Stranded {
    let mut growth: Vec<(String, u64, bool)> = after
        .iter()
        .map(|now| {
            let was = before
                .iter()
                .filter(|then| then.site == now.site)
                .map(|then| then.count)
                .sum::<u64>();
            (
                now.site.to_string(),
                now.count.saturating_sub(was),
                now.is_request_scoped(),
            )
        })
        .filter(|(_, grew, _)| *grew > 0)
        .collect();
    growth.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let request_site = growth
        .iter()
        .find(|(_, grew, request_scoped)| *request_scoped && *grew > LIVE_SLACK);
    Stranded {
        tasks: growth.iter().map(|(_, grew, _)| grew).sum(),
        top_site: request_site
            .or(growth.first())
            .map(|(site, _, _)| site.clone()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stranded_tasks_are_the_per_site_growth() {
        let at = |line: u32, count: u64, label: Option<&str>| SiteCount {
            site: crate::server::Site {
                file: "server/src/x.rs".into(),
                line,
                column: 1,
            },
            count,
            tasks: vec![crate::server::TaskEntry {
                label: label.map(str::to_owned),
            }],
        };
        let growth = stranded(
            &[at(1, 3, None), at(2, 1, None)],
            &[at(1, 2, None), at(2, 40, None), at(3, 5, None)],
        );
        assert_eq!(growth.tasks, 44);
        assert_eq!(growth.top_site.as_deref(), Some("server/src/x.rs:2:1"));
        assert_eq!(
            stranded(&[at(1, 3, None)], &[at(1, 3, None)]),
            Stranded::default()
        );

        // A request-scoped site that grew past the slack is named before a bigger one.
        let request = stranded(&[], &[at(1, 60, None), at(2, 30, Some("req-1"))]);
        assert_eq!(request.top_site.as_deref(), Some("server/src/x.rs:2:1"));
        let small = stranded(&[], &[at(1, 60, None), at(2, LIVE_SLACK, Some("req-1"))]);
        assert_eq!(small.top_site.as_deref(), Some("server/src/x.rs:1:1"));
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
