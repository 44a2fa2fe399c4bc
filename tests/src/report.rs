//! The campaign's outputs: the terminal scoreboard, `summary.json` and a self-contained
//! `report.html` with one inline-SVG timeline per run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::measure::{Scheme, Timeline};
use crate::scenarios::{Detection, Mode, RunResult};

/// The summary file's format version.
pub const SUMMARY_SCHEMA_VERSION: u32 = 2;

#[derive(Debug, Serialize)]
struct Summary<'a> {
    schema_version: u32,
    master_seed: u64,
    passed: bool,
    duration_ms: u64,
    /// Each run carries the required fields (`name`, `mode`, `passed`, `requests`,
    /// `leaked_tasks`, `fd_delta`, `probe`, `cancel_p99_ms`, `peak_in_flight`, `detected_site`,
    /// `stuck_at` with `stuck_at_reason`) and the rest.
    scenarios: &'a [RunResult],
}

/// The scoreboard: one line per run.
pub fn scoreboard(runs: &[RunResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<6} {:>6} {:>16} {:>7} {:>8} {:>8} {:>10} {:>10} {:>10} {:>10}  {:<7} detected site (by)",
        "scenario",
        "mode",
        "reqs",
        "ok/fail/info",
        "leaked",
        "stranded",
        "fd delta",
        "probe p99",
        "net p99",
        "cancel p99",
        "budget",
        "verdict"
    );
    for run in runs {
        let outcomes = format!(
            "{}/{}/{}",
            run.outcomes.ok, run.outcomes.fail, run.outcomes.info
        );
        let _ = writeln!(
            out,
            "{:<16} {:<6} {:>6} {:>16} {:>7} {:>8} {:>8} {:>10} {:>10} {:>10} {:>10}  {:<7} {}",
            run.name,
            run.mode.name(),
            run.requests,
            outcomes,
            run.leaked_tasks,
            run.stranded_tasks,
            run.fd_delta
                .map_or_else(|| "?".into(), |d| format!("{d:+}")),
            ms(run.probe.worst_p99_ms()),
            ms(run.probe.worst_net_p99_ms()),
            ms(run.cancel_p99_ms),
            ms(cancel_budget(run)),
            if run.passed { "PASS" } else { "FAIL" },
            detected(run),
        );
    }
    out
}

/// Every failed run with its reasons; empty when all passed.
pub fn failure_details(runs: &[RunResult]) -> String {
    let mut out = String::new();
    for run in runs.iter().filter(|run| !run.passed) {
        let _ = writeln!(
            out,
            "{} / {} (seed {}):",
            run.name,
            run.mode.name(),
            run.seed
        );
        for failure in &run.failures {
            let _ = writeln!(out, "  - {failure}");
        }
    }
    out
}

/// The detected site and which view of the tracker named it, or `-`; then where the stranded
/// tasks are stuck (leaky runs say so when that is unknown).
fn detected(run: &RunResult) -> String {
    let named = match (&run.detected_site, run.detected_by) {
        (Some(site), Some(Detection::ShutdownVerification)) => format!("{site} (shutdown report)"),
        (Some(site), Some(Detection::LiveSnapshot)) => format!("{site} (live snapshot)"),
        (Some(site), None) => site.clone(),
        (None, _) => "-".into(),
    };
    match &run.stuck_at {
        Some(stuck) => format!(
            "{named}, {} of {} stuck at {}",
            stuck.tasks,
            stuck.of,
            stuck.frame()
        ),
        None if run.mode == Mode::Leaky => format!(
            "{named}, stuck at: unknown ({})",
            run.stuck_at_reason.as_deref().unwrap_or("no reason given")
        ),
        None => named,
    }
}

/// Where the stranded tasks are stuck, in a phrase: `N of M tasks … in function at file:line
/// (task dump)`, or why that is unknown.
fn stuck_at(run: &RunResult) -> String {
    match &run.stuck_at {
        Some(stuck) => format!(
            "{} of {} tasks above the baseline: {} (task dump after quiescence)",
            stuck.tasks,
            stuck.of,
            stuck.frame()
        ),
        None => format!(
            "unknown: {}",
            run.stuck_at_reason.as_deref().unwrap_or("no reason given")
        ),
    }
}

/// What the run's cancel p99 is judged by: the target, or the larger budget the cancel
/// storm's drain sets; `None` without cancel latencies.
fn cancel_budget(run: &RunResult) -> Option<f64> {
    run.cancel_p99_ms?;
    let target = crate::scenarios::CANCEL_P99_LIMIT_MS;
    Some(
        run.cancel_storm
            .and_then(|figures| figures.budget_ms)
            .map_or(target, |budget| budget.max(target)),
    )
}

/// The cancel storm's calibration in one sentence for the HTML report.
fn cancel_storm_details(run: &RunResult) -> String {
    let Some(figures) = &run.cancel_storm else {
        return String::new();
    };
    let sched = |time: Option<crate::cpu::SchedMillis>| {
        time.map_or_else(
            || "?".into(),
            |time| {
                format!(
                    "{:.0} ms on a CPU, {:.0} ms waiting for one",
                    time.on_cpu_ms, time.waiting_ms
                )
            },
        )
    };
    format!(
        " Cancel storm: {} requests aborted in {:.1} ms; server drained in {}; during the drain {}; \
         {} µs of CPU per cancelled request; cancel p99 {} against the target {} ms and the budget {}. \
         Bare-listener floor just before: p50/p99 {}/{}, {} µs of CPU per close.",
        figures.aborted,
        figures.aborts_sent_ms,
        ms(figures.drain_ms),
        sched(figures.server_drain),
        figures
            .server_cpu_per_cancel_us
            .map_or_else(|| "?".into(), |us| format!("{us:.1}")),
        ms(run.cancel_p99_ms),
        crate::scenarios::CANCEL_P99_LIMIT_MS,
        ms(figures.budget_ms),
        ms(figures.floor.p50_ms),
        ms(figures.floor.p99_ms),
        figures
            .floor
            .cpu_per_close_us
            .map_or_else(|| "?".into(), |us| format!("{us:.1}")),
    )
}

/// What the rapid-reset attackers saw, in one sentence for the HTML report.
fn rapid_reset_details(run: &RunResult) -> String {
    let Some(figures) = &run.rapid_reset else {
        return String::new();
    };
    let goaways: Vec<String> = figures
        .goaways
        .iter()
        .map(|(reason, count)| format!("{count} {reason}"))
        .collect();
    format!(
        " Rapid reset: {} connections opened and reset {} streams (at most {} each); GOAWAY: {} \
         (at most {} streams before one); {} closed without one; {} still served after every stream.",
        figures.connections,
        figures.streams_sent,
        figures.streams_per_connection,
        if goaways.is_empty() {
            "none".to_owned()
        } else {
            goaways.join(", ")
        },
        figures.most_streams_before_goaway,
        figures.closed_without_goaway,
        figures.still_served
    )
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.2}ms"))
}

/// Writes `summary.json` in `dir` atomically and returns its path.
pub fn write_summary(
    dir: &Path,
    master_seed: u64,
    duration_ms: u64,
    runs: &[RunResult],
) -> Result<PathBuf> {
    let summary = Summary {
        schema_version: SUMMARY_SCHEMA_VERSION,
        master_seed,
        passed: runs.iter().all(|run| run.passed),
        duration_ms,
        scenarios: runs,
    };
    let json = serde_json::to_vec_pretty(&summary).map_err(|e| Error::Output {
        path: dir.join("summary.json"),
        source: std::io::Error::other(e),
    })?;
    write_atomically(&dir.join("summary.json"), &json)
}

/// Writes `report.html` in `dir` atomically and returns its path.
pub fn write_html(dir: &Path, master_seed: u64, runs: &[RunResult]) -> Result<PathBuf> {
    write_atomically(&dir.join("report.html"), html(master_seed, runs).as_bytes())
}

/// Writes `bytes` to a temporary file beside `path`, then renames it into place.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let output = |source| Error::Output {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(output)?;
    }
    let mut temp = path.as_os_str().to_owned();
    temp.push(format!(".tmp{}", std::process::id()));
    let temp = PathBuf::from(temp);
    std::fs::write(&temp, bytes).map_err(output)?;
    std::fs::rename(&temp, path).map_err(output)?;
    Ok(path.to_owned())
}

/// The HTML page: the scoreboard as a table, then one chart per run.
pub fn html(master_seed: u64, runs: &[RunResult]) -> String {
    let mut page = String::new();
    let passed = runs.iter().filter(|run| run.passed).count();
    let _ = write!(
        page,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>leakcheck chaos campaign</title><style>\
         body{{font:14px system-ui,sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child,th:first-child,td:last-child,th:last-child{{text-align:left}}\
         .pass{{color:#070;font-weight:bold}}.fail{{color:#b00;font-weight:bold}}code{{font-size:12px}}\
         section{{margin-top:28px}}ul{{margin:4px 0}}</style></head><body>\
         <h1>leakcheck chaos campaign</h1><p>{passed} of {} runs passed. Master seed <code>{master_seed}</code> \
         (replay: <code>cargo run --release -p chaos -- --seed {master_seed}</code>).</p><table><tr>\
         <th>scenario</th><th>mode</th><th>requests</th><th>ok/fail/info</th><th>leaked</th><th>stranded</th><th>fd delta</th>\
         <th>probe p99</th><th>net p99</th><th>cancel p99</th><th>budget</th><th>verdict</th><th>detected site</th></tr>",
        runs.len()
    );
    for run in runs {
        let _ = write!(
            page,
            "<tr><td><a href=\"#{name}-{mode}\">{name}</a></td><td>{mode}</td><td>{}</td><td>{}/{}/{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{verdict}</td><td><code>{}</code></td></tr>",
            run.requests,
            run.outcomes.ok,
            run.outcomes.fail,
            run.outcomes.info,
            run.leaked_tasks,
            run.stranded_tasks,
            run.fd_delta
                .map_or_else(|| "?".into(), |d| format!("{d:+}")),
            ms(run.probe.worst_p99_ms()),
            ms(run.probe.worst_net_p99_ms()),
            ms(run.cancel_p99_ms),
            ms(cancel_budget(run)),
            escape(&detected(run)),
            name = run.name,
            mode = run.mode.name(),
            class = if run.passed { "pass" } else { "fail" },
            verdict = if run.passed { "PASS" } else { "FAIL" },
        );
    }
    page.push_str("</table>");
    for run in runs {
        let _ = write!(
            page,
            "<section id=\"{name}-{mode}\"><h2>{name} / {mode}</h2><p>seed <code>{}</code>; leaky twin: <code>--bug {}</code>; \
             live tasks {} → peak {} → {}; open fds {} → peak {} → {}; requests in flight at most {}; \
             probes (from intended send time) http p50/p99/p99.9/max {}, https {}, bare-responder floor {}; \
             cancel p50/p99 {}/{} (net of CPU starvation p99 {}; request dropped p50/p99 {}/{}; {} of {} aborts matched); \
             quiesced {}; stuck at {}; exit code {}; \
             run {:.1} s.{}</p>",
            run.seed,
            run.bug,
            opt(run.live_tasks.before),
            opt(run.live_tasks.peak),
            opt(run.live_tasks.after),
            opt(run.open_fds.before),
            opt(run.open_fds.peak),
            opt(run.open_fds.after),
            opt(run.peak_in_flight),
            percentiles(&run.probe.http),
            percentiles(&run.probe.https),
            percentiles(&run.probe.floor),
            ms(run.cancel_p50_ms),
            ms(run.cancel_p99_ms),
            ms(run.cancel_net_p99_ms),
            ms(run.cancel_request_ended_p50_ms),
            ms(run.cancel_request_ended_p99_ms),
            run.cancels_matched,
            run.cancels_sent,
            run.quiesced_after_ms
                .map_or_else(|| "never".into(), |ms| format!("after {ms} ms")),
            escape(&stuck_at(run)),
            run.exit_code
                .map_or_else(|| "none".into(), |code| code.to_string()),
            run.duration_ms as f64 / 1000.0,
            escape(&(cancel_storm_details(run) + &rapid_reset_details(run))),
            name = run.name,
            mode = run.mode.name(),
        );
        if !run.failures.is_empty() {
            page.push_str("<ul>");
            for failure in &run.failures {
                let _ = write!(page, "<li class=\"fail\">{}</li>", escape(failure));
            }
            page.push_str("</ul>");
        }
        page.push_str(&timeline_svg(&run.timeline));
        page.push_str("</section>");
    }
    page.push_str("</body></html>\n");
    page
}

fn percentiles(stats: &crate::measure::ProbeStats) -> String {
    format!(
        "{}/{}/{}/{} (p99 net of CPU starvation {}; {} sent, {} failed)",
        ms(stats.p50_ms),
        ms(stats.p99_ms),
        ms(stats.p999_ms),
        ms(stats.max_ms),
        ms(stats.net_p99_ms),
        stats.sent,
        stats.failures
    )
}

fn opt(value: Option<u64>) -> String {
    value.map_or_else(|| "?".into(), |v| v.to_string())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const CHART_WIDTH: f64 = 900.0;
const PANEL_HEIGHT: f64 = 110.0;
const MARGIN_LEFT: f64 = 70.0;
const MARGIN_RIGHT: f64 = 20.0;

/// One chart panel: its label, its line colour and its points (time, value or gap).
type Panel = (&'static str, &'static str, Vec<(u64, Option<f64>)>);

/// Four stacked panels sharing the time axis: live tasks, open fds, HTTP and HTTPS probe
/// latency (from intended send times); phase
/// marks as dashed vertical lines.
pub fn timeline_svg(timeline: &Timeline) -> String {
    let end_ms = timeline
        .probes
        .iter()
        .map(|p| p.at_ms)
        .chain(timeline.resources.iter().map(|r| r.at_ms))
        .chain(timeline.phases.iter().map(|p| p.at_ms))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let start_ms = timeline
        .probes
        .iter()
        .map(|p| p.at_ms)
        .chain(timeline.resources.iter().map(|r| r.at_ms))
        .min()
        .unwrap_or(0) as f64;
    let span = (end_ms - start_ms).max(1.0);
    let x = |at: u64| {
        MARGIN_LEFT + (at as f64 - start_ms) / span * (CHART_WIDTH - MARGIN_LEFT - MARGIN_RIGHT)
    };
    let probes = |scheme: Scheme| -> Vec<(u64, Option<f64>)> {
        timeline
            .probes
            .iter()
            .filter(|p| p.scheme == scheme)
            .map(|p| (p.at_ms, p.latency_ms))
            .collect()
    };
    let panels: [Panel; 4] = [
        (
            "live tasks",
            "#1f77b4",
            timeline
                .resources
                .iter()
                .map(|r| (r.at_ms, r.live_tasks.map(|v| v as f64)))
                .collect(),
        ),
        (
            "open fds",
            "#2ca02c",
            timeline
                .resources
                .iter()
                .map(|r| (r.at_ms, r.open_fds.map(|v| v as f64)))
                .collect(),
        ),
        ("http probe ms", "#d62728", probes(Scheme::Http)),
        ("https probe ms", "#9467bd", probes(Scheme::Https)),
    ];
    let height = PANEL_HEIGHT * panels.len() as f64 + 40.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{CHART_WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {CHART_WIDTH} {height}\" font-size=\"11\" font-family=\"sans-serif\">"
    );
    for (index, (label, color, points)) in panels.iter().enumerate() {
        let top = index as f64 * PANEL_HEIGHT + 10.0;
        let bottom = top + PANEL_HEIGHT - 20.0;
        let max = points
            .iter()
            .filter_map(|(_, v)| *v)
            .fold(0.0_f64, f64::max)
            .max(1.0);
        let y = |value: f64| bottom - value / max * (bottom - top);
        let _ = write!(
            svg,
            "<rect x=\"{MARGIN_LEFT}\" y=\"{top}\" width=\"{}\" height=\"{}\" fill=\"#fafafa\" stroke=\"#ddd\"/>\
             <text x=\"4\" y=\"{}\">{label}</text><text x=\"4\" y=\"{}\" fill=\"#666\">max {}</text>\
             <text x=\"{}\" y=\"{bottom}\" text-anchor=\"end\" fill=\"#666\">0</text>",
            CHART_WIDTH - MARGIN_LEFT - MARGIN_RIGHT,
            bottom - top,
            top + 12.0,
            top + 26.0,
            if max >= 100.0 {
                format!("{max:.0}")
            } else {
                format!("{max:.1}")
            },
            MARGIN_LEFT - 4.0,
        );
        // Gaps (missing samples, failed probes) break the line; failed probes get a red tick.
        let mut path = String::new();
        let mut pen_down = false;
        for (at, value) in points {
            match value {
                Some(value) => {
                    let _ = write!(
                        path,
                        "{}{:.1},{:.1} ",
                        if pen_down { "L" } else { "M" },
                        x(*at),
                        y(*value)
                    );
                    pen_down = true;
                }
                None => {
                    pen_down = false;
                    if label.ends_with("probe ms") {
                        let _ = write!(
                            svg,
                            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{top}\" y2=\"{1}\" stroke=\"#b00\"/>",
                            x(*at),
                            top + 8.0
                        );
                    }
                }
            }
        }
        let _ = write!(
            svg,
            "<path d=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\"/>",
            path.trim_end()
        );
        for phase in &timeline.phases {
            let _ = write!(
                svg,
                "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{top}\" y2=\"{bottom}\" stroke=\"#888\" stroke-dasharray=\"4 3\"/>",
                x(phase.at_ms)
            );
        }
    }
    // Phases often come close together (heal, quiesced, sigterm): labels take turns on
    // three rows so they do not overprint.
    let axis_y = PANEL_HEIGHT * panels.len() as f64 + 5.0;
    for (index, phase) in timeline.phases.iter().enumerate() {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" fill=\"#444\">{}</text>",
            x(phase.at_ms),
            axis_y + (index % 3) as f64 * 12.0,
            escape(&phase.name)
        );
    }
    let _ = write!(
        svg,
        "<text x=\"4\" y=\"{0}\" fill=\"#666\">{1:.1} s</text><text x=\"{2}\" y=\"{0}\" text-anchor=\"end\" fill=\"#666\">{3:.1} s</text></svg>",
        axis_y + 12.0,
        start_ms / 1000.0,
        CHART_WIDTH - 2.0,
        end_ms / 1000.0
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::{Phase, ProbePoint, ResourcePoint, Scheme};

    #[test]
    fn the_chart_is_inline_svg_with_every_panel_and_phase() {
        let timeline = Timeline {
            probes: vec![
                ProbePoint {
                    scheme: Scheme::Http,
                    at_ms: 0,
                    latency_ms: Some(1.0),
                    counted: true,
                },
                ProbePoint {
                    scheme: Scheme::Http,
                    at_ms: 50,
                    latency_ms: None,
                    counted: true,
                },
                ProbePoint {
                    scheme: Scheme::Http,
                    at_ms: 100,
                    latency_ms: Some(3.0),
                    counted: true,
                },
            ],
            resources: vec![
                ResourcePoint {
                    at_ms: 0,
                    live_tasks: Some(5),
                    open_fds: Some(20),
                    read_ms: None,
                },
                ResourcePoint {
                    at_ms: 100,
                    live_tasks: Some(500),
                    open_fds: Some(520),
                    read_ms: None,
                },
            ],
            phases: vec![
                Phase {
                    at_ms: 10,
                    name: "storm".into(),
                },
                Phase {
                    at_ms: 90,
                    name: "heal".into(),
                },
            ],
        };
        let svg = timeline_svg(&timeline);
        assert!(svg.starts_with("<svg"));
        assert!(svg.ends_with("</svg>"));
        for label in [
            "live tasks",
            "open fds",
            "http probe ms",
            "https probe ms",
            ">storm<",
            ">heal<",
            "max 500",
        ] {
            assert!(svg.contains(label), "missing {label}");
        }
        assert!(
            !svg.contains("http://") || svg.matches("http://").count() == 1,
            "only the SVG namespace"
        );
    }

    #[test]
    fn the_scoreboard_has_one_line_per_run_and_says_who_caught_the_leak() {
        use crate::scenarios::{Mode, Scenario};
        let error = crate::error::Error::ServerStart("unused".into());
        let mut caught = RunResult::harness_failure(Scenario::TlsStall, Mode::Leaky, 1, &error);
        caught.passed = true;
        caught.stranded_tasks = 1000;
        caught.detected_site = Some("server/src/listener.rs:118:29".into());
        caught.detected_by = Some(Detection::LiveSnapshot);
        caught.stuck_at = Some(crate::server::StuckAt {
            at: "server/src/listener.rs:171".into(),
            function: "leakcheck_server::listener::serve_connection::{{closure}}".into(),
            tasks: 97,
            of: 100,
            source: crate::server::StuckSource::TaskDump,
        });
        let failed = RunResult::harness_failure(Scenario::Panic, Mode::Fixed, 2, &error);
        let mut unknown = RunResult::harness_failure(Scenario::DnsHang, Mode::Leaky, 3, &error);
        unknown.stuck_at_reason = Some("/debug/dump refused: 300 live tasks".into());
        let board = scoreboard(&[caught.clone(), failed.clone(), unknown]);
        let lines: Vec<&str> = board.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].contains("stranded"));
        assert!(lines[1].starts_with("tls-stall"));
        assert!(lines[1].contains("PASS"));
        assert!(lines[1].ends_with(
            "server/src/listener.rs:118:29 (live snapshot), 97 of 100 stuck at \
             leakcheck_server::listener::serve_connection::{{closure}} at server/src/listener.rs:171"
        ));
        assert!(lines[2].contains("FAIL"));
        assert!(
            lines[2].ends_with(" -"),
            "a fixed run says nothing of an unknown stuck_at"
        );
        assert!(
            lines[3].ends_with("-, stuck at: unknown (/debug/dump refused: 300 live tasks)"),
            "{}",
            lines[3]
        );
        assert!(failure_details(&[]).is_empty());
        let page = html(1, &[caught, failed]);
        assert!(page.contains(
            "stuck at 97 of 100 tasks above the baseline: \
             leakcheck_server::listener::serve_connection::{{closure}} at server/src/listener.rs:171 (task dump after quiescence)"
        ));
        assert!(page.contains("stuck at unknown: not measured"));
    }

    #[test]
    fn atomic_writes_leave_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("chaos-report-{}", std::process::id()));
        let path = write_atomically(&dir.join("summary.json"), b"{}").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("summary.json")]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
