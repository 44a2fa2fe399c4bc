//! The HTML pages: `leakcheck html` (summary table, the flame graph inline,
//! every report in full) and `leakcheck watch -o` (one chart per spawn site
//! over time). Self-contained (no external assets); all text from the
//! documents is HTML-escaped.
//!
//! The watch charts are hand-drawn SVG polylines: one line per chart, and a
//! plotting crate would add a large dependency tree for that.

use std::fmt::Write as _;

use std::path::Path;

use crate::document::{Document, LoadedReport};
use crate::error::CliError;
use crate::flamegraph;
use crate::summary::{self, Summary};
use crate::text;
use crate::watch::{Point, Watched};

const STYLE: &str = "\
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:110em}\
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse}th,td{padding:.25em .75em;border-bottom:1px solid #eee;text-align:left}\
td.n{text-align:right;font-variant-numeric:tabular-nums}\
code,pre{font-family:ui-monospace,monospace;font-size:.9em}\
pre{background:#f6f6f6;padding:.75em;overflow-x:auto}\
#flamegraph svg{width:100%;height:auto}\
.hint{color:#666}";

/// Escapes text for use in HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The `leakcheck html` page of `reports` (summarized as `summary`), with
/// the flame graph of their spawn backtraces; `output` names the file it is
/// for in an error. `cargo leakcheck test` writes the same page.
pub fn reports_page(
    summary: &Summary,
    reports: &[LoadedReport],
    output: &Path,
) -> Result<String, CliError> {
    let documents: Vec<Document> = reports
        .iter()
        .map(|loaded| Document::Report(loaded.report.clone()))
        .collect();
    let folded = flamegraph::fold(&documents);
    let svg = flamegraph::render_svg(&folded, flamegraph::DEFAULT_TITLE, reports.len()).map_err(
        |source| CliError::Output {
            path: output.to_owned(),
            source,
        },
    )?;
    Ok(render(summary, &String::from_utf8_lossy(&svg), reports))
}

/// The page. `svg` is a complete SVG document (its XML prolog is dropped).
pub fn render(summary: &Summary, svg: &str, reports: &[LoadedReport]) -> String {
    let headline = summary::headline(summary);
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>leakcheck: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>leakcheck</h1>\n<p id=\"headline\">{}</p>\n",
        escape(&headline),
        escape(&headline)
    );
    summary_table(&mut page, summary);
    page.push_str("<h2>Flame graph</h2>\n<div id=\"flamegraph\">\n");
    page.push_str(svg.find("<svg").map_or(svg, |start| &svg[start..]));
    page.push_str("\n</div>\n");
    site_details(&mut page, summary);
    page.push_str("<h2>Reports</h2>\n");
    for loaded in reports {
        let _ = write!(
            page,
            "<details class=\"report\"><summary><code>{}</code> · {} · <span class=\"hint\">{}</span></summary>\n<pre>{}</pre>\n</details>\n",
            escape(&loaded.report.test),
            escape(&text::count(loaded.report.leaked, "task")),
            escape(&loaded.path.display().to_string()),
            escape(&loaded.report.to_string())
        );
    }
    page.push_str("</body>\n</html>\n");
    page
}

fn summary_table(page: &mut String, summary: &Summary) {
    page.push_str("<h2>Spawn sites</h2>\n<table id=\"summary\">\n<thead><tr><th>Tasks</th><th>Tests</th><th>Oldest</th><th>Spawn site</th><th>Spawned in</th></tr></thead>\n<tbody>\n");
    for (index, site) in summary.sites.iter().enumerate() {
        // Behind a `#[track_caller]` helper, the function that really spawned.
        let spawned_in = site
            .spawn_call
            .as_ref()
            .or_else(|| site.representative.as_ref().and_then(|r| r.frames.first()))
            .map(|f| f.function.as_str())
            .unwrap_or("");
        let _ = writeln!(
            page,
            "<tr><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td><a href=\"#site-{index}\"><code>{}</code></a></td><td><code>{}</code></td></tr>",
            site.tasks,
            site.tests.len(),
            escape(&text::age(site.oldest_age_ms)),
            escape(&site.site.to_string()),
            escape(spawned_in)
        );
    }
    if let Some(degraded) = &summary.degraded {
        let _ = writeln!(
            page,
            "<tr><td class=\"n\">{}</td><td class=\"n\">{}</td><td></td><td>unknown (built without <code>--cfg tokio_unstable</code>)</td><td></td></tr>",
            degraded.tasks,
            degraded.tests.len()
        );
    }
    page.push_str("</tbody>\n</table>\n");
}

fn site_details(page: &mut String, summary: &Summary) {
    if summary.sites.is_empty() {
        return;
    }
    page.push_str("<h2>Sites in detail</h2>\n");
    for (index, site) in summary.sites.iter().enumerate() {
        let location = site.site.to_string();
        let _ = writeln!(
            page,
            "<section class=\"site\" id=\"site-{index}\"><h3><code>{}</code> · {} in {}</h3>",
            escape(&location),
            text::count(site.tasks, "task"),
            text::count(site.tests.len(), "test")
        );
        if let Some(call) = &site.spawn_call {
            let _ = writeln!(
                page,
                "<p>Spawn call: <code>{}</code> (the site above is its <code>#[track_caller]</code> caller)</p>",
                escape(&call.to_string())
            );
        }
        page.push_str("<p>Tests: ");
        for (i, test) in site.tests.iter().enumerate() {
            let separator = if i == 0 { "" } else { ", " };
            let _ = write!(page, "{separator}<code>{}</code>", escape(test));
        }
        page.push_str("</p>\n");
        if !site.labels.is_empty() {
            let _ = writeln!(
                page,
                "<p>Labels: <code>{}</code></p>",
                escape(&site.labels.join(", "))
            );
        }
        if let Some(r) = &site.representative {
            let _ = write!(
                page,
                "<p>Spawn backtrace of task {} in <code>{}</code>:</p>\n<pre>",
                r.task_id,
                escape(&r.test)
            );
            for (i, frame) in r.frames.iter().enumerate() {
                let _ = writeln!(page, "{i}: {}", escape(&frame.to_string()));
            }
            page.push_str("</pre>\n");
        }
        page.push_str("</section>\n");
    }
}

/// Width and height of one watch chart, in SVG units.
const CHART: (u32, u32) = (640, 120);

/// The `leakcheck watch -o` page: the flagged sites, then one chart of live
/// tasks (and the oldest task's age) per site, flagged sites first.
pub fn watch_page(watched: &Watched, url: &str) -> String {
    let headline = crate::watch::render_text(watched);
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>leakcheck watch: {}</title>\n<style>{STYLE}svg.chart{{background:#fafafa;border:1px solid #eee}}.live{{fill:none;stroke:#c0392b;stroke-width:2}}.age{{fill:none;stroke:#888;stroke-dasharray:4 3}}</style>\n</head>\n<body>\n<h1>leakcheck watch</h1>\n<p><code>{}</code></p>\n<pre id=\"headline\">{}</pre>\n",
        escape(url),
        escape(url),
        escape(&headline)
    );
    let mut order: Vec<(&leakcheck::SourceLocation, &Vec<Option<Point>>)> =
        watched.sites.iter().collect();
    let flagged_rank = |site: &leakcheck::SourceLocation| {
        watched
            .flagged
            .iter()
            .position(|(flagged, _)| flagged == site)
            .unwrap_or(usize::MAX)
    };
    let peak =
        |series: &[Option<Point>]| series.iter().flatten().map(|p| p.live).max().unwrap_or(0);
    order.sort_by(|a, b| {
        flagged_rank(a.0)
            .cmp(&flagged_rank(b.0))
            .then(peak(b.1).cmp(&peak(a.1)))
    });
    page.push_str("<h2>Spawn sites over time</h2>\n<p class=\"hint\">red: live tasks; grey dashes: age of the oldest (own scale)</p>\n");
    for (site, series) in order {
        let reason = watched
            .flagged
            .iter()
            .find(|(flagged, _)| flagged == site)
            .map(|(_, reason)| format!(" · <strong>growing</strong>: {}", escape(reason)))
            .unwrap_or_default();
        let function = watched
            .functions
            .get(site)
            .map(|f| format!(" in <code>{}</code>", escape(f)))
            .unwrap_or_default();
        let _ = writeln!(
            page,
            "<section class=\"site\"><h3><code>{}</code>{function}</h3>\n<p>peak {}{reason}</p>\n{}</section>",
            escape(&site.to_string()),
            text::count(peak(series), "live task"),
            chart(&watched.times_ms, series)
        );
    }
    page.push_str("</body>\n</html>\n");
    page
}

fn chart(times_ms: &[u64], series: &[Option<Point>]) -> String {
    let (width, height) = CHART;
    let span = times_ms.last().copied().unwrap_or(0).max(1) as f64;
    let max_live = series
        .iter()
        .flatten()
        .map(|p| p.live)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let max_age = series
        .iter()
        .flatten()
        .map(|p| p.oldest_age_ms)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let line = |value: &dyn Fn(Point) -> f64, max: f64| {
        times_ms
            .iter()
            .zip(series)
            .map(|(&t, point)| {
                let point = point.unwrap_or(Point {
                    live: 0,
                    oldest_age_ms: 0,
                });
                let x = t as f64 / span * f64::from(width - 20) + 10.0;
                let y = f64::from(height - 10) - value(point) / max * f64::from(height - 30);
                format!("{x:.1},{y:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\"><polyline class=\"age\" points=\"{}\"/><polyline class=\"live\" points=\"{}\"/><text x=\"10\" y=\"14\" font-size=\"11\">max {} live · oldest {} · over {}</text></svg>\n",
        line(&|p| p.oldest_age_ms as f64, max_age),
        line(&|p| p.live as f64, max_live),
        max_live,
        escape(&text::age(max_age as u64)),
        escape(&text::age(span as u64)),
    )
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
