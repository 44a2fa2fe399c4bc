//! `leakcheck watch`: sample a running service's `/debug/tasks` at a fixed
//! interval and flag the spawn sites that keep growing (LeakProf's approach:
//! a leak is a site whose live tasks pile up while the service runs).
//!
//! A site is flagged when, over the last `window` samples, either
//! - its live count never fell and rose at most steps (more than half of
//!   them: a request in flight at one sample is not growth), or
//! - its oldest task kept ageing at every sample while the count changed at
//!   most steps: tasks there come and go, yet one of them never finishes.
//!
//! A site whose count stays constant while its age grows (an accept loop, a
//! worker pool) is long-lived by design and not flagged. A leak slower than
//! one task per sample shows with a slower `--every` or a longer `--window`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use leakcheck::{Snapshot, SourceLocation};
use serde::Serialize;

use crate::document::{self, Document};
use crate::error::CliError;
use crate::http::Client;
use crate::text;

/// Consecutive samples a site must keep growing across, unless `--window` says otherwise.
pub const DEFAULT_WINDOW: u32 = 5;
/// Shortest `--every`: faster sampling measures the sampler, not the service.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Longest `--for`.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// How to watch.
#[derive(Debug)]
pub struct WatchOptions {
    /// Time between samples.
    pub every: Duration,
    /// How long to watch.
    pub duration: Duration,
    /// Samples a site must keep growing across.
    pub window: usize,
}

/// One sample of one site.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Point {
    /// Live tasks spawned here.
    pub live: usize,
    /// Age of the oldest of them.
    pub oldest_age_ms: u64,
}

/// Everything seen, for the final table and the HTML page.
#[derive(Debug, Default)]
pub struct Watched {
    /// Milliseconds since the first sample, one per sample.
    pub times_ms: Vec<u64>,
    /// Live tasks per sample.
    pub live: Vec<usize>,
    /// Per site, one point per sample (`None`: absent from that sample).
    pub sites: BTreeMap<SourceLocation, Vec<Option<Point>>>,
    /// The function that spawned at each site, when a backtrace says.
    pub functions: BTreeMap<SourceLocation, String>,
    /// Flagged sites, in the order they were flagged, with the reason.
    pub flagged: Vec<(SourceLocation, String)>,
    /// Fetches that failed after the first sample.
    pub failed_samples: usize,
}

impl Watched {
    fn record(&mut self, elapsed: Duration, snapshot: &Snapshot) {
        let index = self.times_ms.len();
        self.times_ms
            .push(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
        self.live.push(snapshot.live);
        for group in &snapshot.sites {
            let series = self.sites.entry(group.site.clone()).or_default();
            series.resize(index + 1, None);
            let point = series[index].get_or_insert(Point {
                live: 0,
                oldest_age_ms: 0,
            });
            point.live += group.count;
            point.oldest_age_ms = point.oldest_age_ms.max(group.oldest_age_ms);
            if let Some(function) = group
                .tasks
                .iter()
                .find_map(|t| t.stack.and_then(|i| snapshot.stacks.get(i)))
                .and_then(|stack| stack.frames.first())
            {
                self.functions
                    .entry(group.site.clone())
                    .or_insert_with(|| function.function.clone());
            }
        }
        for series in self.sites.values_mut() {
            series.resize(index + 1, None);
        }
    }

    /// Flags the sites that started growing with the latest sample; returns them.
    fn flag_new(&mut self, window: usize, every: Duration) -> Vec<(SourceLocation, String)> {
        let mut newly = Vec::new();
        for (site, series) in &self.sites {
            if self.flagged.iter().any(|(flagged, _)| flagged == site) {
                continue;
            }
            if let Some(reason) = growth(series, window, every) {
                newly.push((site.clone(), reason));
            }
        }
        self.flagged.extend(newly.iter().cloned());
        newly
    }

    fn site_text(&self, site: &SourceLocation) -> String {
        match self.functions.get(site) {
            Some(function) => format!("{site} in {function}"),
            None => site.to_string(),
        }
    }
}

/// Why the last `window` points of a series count as growth, if they do.
fn growth(series: &[Option<Point>], window: usize, every: Duration) -> Option<String> {
    if series.len() < window {
        return None;
    }
    let recent: Vec<Point> = series[series.len() - window..]
        .iter()
        .map(|p| {
            p.unwrap_or(Point {
                live: 0,
                oldest_age_ms: 0,
            })
        })
        .collect();
    let (first, last) = (recent[0], recent[window - 1]);
    let never_fell = recent.windows(2).all(|pair| pair[1].live >= pair[0].live);
    let rising_steps = recent
        .windows(2)
        .filter(|pair| pair[1].live > pair[0].live)
        .count();
    if never_fell && rising_steps * 2 > window - 1 {
        return Some(format!(
            "live {} → {} over {window} samples",
            first.live, last.live
        ));
    }
    // Half an interval per step: the same task stayed, whatever the jitter.
    let step_ms = u64::try_from(every.as_millis() / 2).unwrap_or(u64::MAX);
    let kept_ageing = recent.windows(2).all(|pair| {
        pair[0].live > 0 && pair[1].oldest_age_ms >= pair[0].oldest_age_ms.saturating_add(step_ms)
    });
    let moving_steps = recent
        .windows(2)
        .filter(|pair| pair[1].live != pair[0].live)
        .count();
    if kept_ageing && moving_steps * 2 > window - 1 {
        return Some(format!(
            "oldest task aged {} → {} over {window} samples while tasks there came and went",
            text::age(first.oldest_age_ms),
            text::age(last.oldest_age_ms)
        ));
    }
    None
}

/// Samples until `options.duration` has passed, printing each flagged site
/// on `flag` as it appears.
pub fn watch(
    client: &Client,
    options: &WatchOptions,
    mut flag: impl FnMut(&str),
) -> Result<Watched, CliError> {
    check_options(options)?;
    let fetch_error = |problem: String| CliError::Fetch {
        url: client.url().to_owned(),
        problem,
    };
    let start = Instant::now();
    let deadline = start + options.duration;
    let mut watched = Watched::default();
    let mut next = start;
    loop {
        let fetched = client.get().and_then(|body| match document::parse(&body)? {
            Document::Snapshot(snapshot) => Ok(snapshot),
            Document::Report(_) => {
                Err("served a leak report, expected a snapshot (is this /debug/tasks?)".to_owned())
            }
        });
        match fetched {
            Ok(snapshot) => {
                watched.record(start.elapsed(), &snapshot);
                for (site, reason) in watched.flag_new(options.window, options.every) {
                    flag(&format!(
                        "leakcheck watch: growing: {} ({reason})",
                        watched.site_text(&site)
                    ));
                }
            }
            // Without a first sample there is nothing to watch.
            Err(problem) if watched.times_ms.is_empty() => return Err(fetch_error(problem)),
            Err(problem) => {
                watched.failed_samples += 1;
                eprintln!("leakcheck: warning: {}: {problem}", client.url());
            }
        }
        next += options.every;
        if next > deadline {
            break;
        }
        // Sampling at a fixed rate is the point here: no event to wait on.
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    Ok(watched)
}

fn check_options(options: &WatchOptions) -> Result<(), CliError> {
    if options.every < MIN_INTERVAL {
        return Err(CliError::Usage(format!(
            "--every {:?} is too short: sample at most every {} ms",
            options.every,
            MIN_INTERVAL.as_millis()
        )));
    }
    if options.duration > MAX_DURATION {
        return Err(CliError::Usage(format!(
            "--for {:?} is too long: watch at most {} days",
            options.duration,
            MAX_DURATION.as_secs() / 86_400
        )));
    }
    let window_span = u32::try_from(options.window - 1)
        .ok()
        .and_then(|steps| options.every.checked_mul(steps));
    if window_span.is_none_or(|span| options.duration < span) {
        return Err(CliError::Usage(format!(
            "--for {:?} gives fewer than --window {} samples at --every {:?}: watch longer or sample more often",
            options.duration, options.window, options.every
        )));
    }
    Ok(())
}

/// The closing report: samples taken and the flagged sites.
pub fn render_text(watched: &Watched) -> String {
    let mut out = String::new();
    let span = watched.times_ms.last().copied().unwrap_or(0);
    let _ = write!(
        out,
        "leakcheck watch: {} over {}, live tasks {} → {}",
        text::count(watched.times_ms.len(), "sample"),
        text::age(span),
        watched.live.first().copied().unwrap_or(0),
        watched.live.last().copied().unwrap_or(0),
    );
    if watched.failed_samples > 0 {
        let _ = write!(out, " ({} failed)", watched.failed_samples);
    }
    out.push('\n');
    if watched.flagged.is_empty() {
        out.push_str("no spawn site kept growing\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{} kept growing:",
        text::count(watched.flagged.len(), "spawn site")
    );
    for (site, reason) in &watched.flagged {
        let _ = writeln!(out, "  {} ({reason})", watched.site_text(site));
    }
    out
}

/// Writes the HTML page with one chart per site: flagged sites first, then
/// the others by their largest live count.
pub fn write_html(watched: &Watched, url: &str, path: &Path) -> Result<(), CliError> {
    crate::output::write(path, crate::html::watch_page(watched, url).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(points: &[(usize, u64)]) -> Vec<Option<Point>> {
        points
            .iter()
            .map(|&(live, oldest_age_ms)| {
                Some(Point {
                    live,
                    oldest_age_ms,
                })
            })
            .collect()
    }

    const EVERY: Duration = Duration::from_millis(100);

    #[test]
    fn a_count_that_never_falls_and_rises_is_growth() {
        let rising = series(&[(1, 0), (2, 100), (2, 200), (4, 300)]);
        let in_flight = series(&[(1, 0), (1, 100), (1, 200), (2, 300)]);
        assert_eq!(growth(&in_flight, 4, EVERY), None, "one step up is noise");
        assert_eq!(
            growth(&rising, 4, EVERY).as_deref(),
            Some("live 1 → 4 over 4 samples")
        );
        assert_eq!(growth(&rising, 5, EVERY), None, "too few samples");
        let noisy = series(&[(1, 0), (3, 100), (2, 10), (4, 20)]);
        assert_eq!(growth(&noisy, 4, EVERY), None);
    }

    #[test]
    fn a_long_lived_singleton_is_not_growth_but_a_stuck_task_among_churn_is() {
        let accept_loop = series(&[(1, 0), (1, 100), (1, 200), (1, 300)]);
        assert_eq!(growth(&accept_loop, 4, EVERY), None);
        let stuck = series(&[(3, 1000), (1, 1100), (2, 1200), (1, 1300)]);
        assert!(
            growth(&stuck, 4, EVERY)
                .unwrap()
                .starts_with("oldest task aged 1.0 s → 1.3 s")
        );
    }
}
