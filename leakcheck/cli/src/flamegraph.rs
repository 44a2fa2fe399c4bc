//! `leakcheck flamegraph`: leaked tasks folded by spawn backtrace into an SVG
//! flame graph (with inferno). The root of each tower is the outermost frame,
//! the leaf the innermost one (the caller of `spawn`); a frame's width is the
//! number of tasks spawned through it.

use std::collections::BTreeMap;

use leakcheck::{Frame, SiteGroup, Stack};

use crate::document::Document;
use crate::text;

/// The title drawn above the graph unless `--title` says otherwise.
pub const DEFAULT_TITLE: &str = "Leaked tasks by spawn backtrace";

/// The frame shown for leaks from reports written without `--cfg tokio_unstable`.
pub const UNKNOWN_SITE_FRAME: &str = "spawn site unknown (built without --cfg tokio_unstable)";

/// Leaked tasks folded by backtrace.
#[derive(Debug)]
pub struct Folded {
    /// `outer;…;inner count`, one line per distinct backtrace, sorted: the
    /// format inferno and other flame graph tools read.
    pub lines: Vec<String>,
    /// Tasks over all lines.
    pub tasks: usize,
}

/// Folds every task of the documents by its spawn backtrace.
pub fn fold<'d>(documents: impl IntoIterator<Item = &'d Document>) -> Folded {
    let mut stacks: BTreeMap<String, usize> = BTreeMap::new();
    for document in documents {
        let (sites, stacks_table) = match document {
            Document::Report(report) if report.degraded => {
                if report.leaked > 0 {
                    *stacks.entry(UNKNOWN_SITE_FRAME.to_owned()).or_default() += report.leaked;
                }
                continue;
            }
            Document::Report(report) => (&report.sites, &report.stacks),
            Document::Snapshot(snapshot) => (&snapshot.sites, &snapshot.stacks),
        };
        for group in sites {
            fold_group(group, stacks_table, &mut stacks);
        }
    }
    Folded {
        tasks: stacks.values().sum(),
        lines: stacks
            .into_iter()
            .map(|(stack, count)| format!("{stack} {count}"))
            .collect(),
    }
}

fn fold_group(group: &SiteGroup, table: &[Stack], stacks: &mut BTreeMap<String, usize>) {
    let site_only = format!("spawn at {}", group.site);
    for task in &group.tasks {
        let key = match task.stack.and_then(|i| table.get(i)) {
            Some(stack) if !stack.frames.is_empty() => folded(&stack.frames),
            _ => site_only.clone(),
        };
        *stacks.entry(key).or_default() += 1;
    }
    // A writer may list fewer tasks than it counts; the rest still belong to the site.
    let unlisted = group.count.saturating_sub(group.tasks.len());
    if unlisted > 0 {
        *stacks.entry(site_only).or_default() += unlisted;
    }
}

fn folded(frames: &[Frame]) -> String {
    frames
        .iter()
        .rev()
        .map(|frame| frame.to_string().replace(';', ","))
        .collect::<Vec<_>>()
        .join(";")
}

/// Renders folded stacks as an SVG document; with no stacks, a small SVG
/// that says so (inferno refuses empty input).
pub fn render_svg(folded: &Folded, title: &str, inputs: usize) -> std::io::Result<Vec<u8>> {
    if folded.tasks == 0 {
        let message = format!("No leaked tasks in {}", text::count(inputs, "input"));
        return Ok(format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"600\" height=\"40\" viewBox=\"0 0 600 40\"><text x=\"10\" y=\"25\" font-family=\"Verdana\" font-size=\"14\">{message}</text></svg>\n"
        )
        .into_bytes());
    }
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_owned();
    options.subtitle = Some(format!(
        "{} from {}",
        text::count(folded.tasks, "task"),
        text::count(inputs, "input")
    ));
    options.count_name = "tasks".to_owned();
    options.name_type = "Frame:".to_owned();
    // Colour by name, so the same input always gives the same picture.
    options.deterministic = true;
    // Narrow frames keep the function name and lose the file position.
    options.text_truncate_direction = inferno::flamegraph::TextTruncateDirection::Right;
    let mut svg = Vec::new();
    inferno::flamegraph::from_lines(
        &mut options,
        folded.lines.iter().map(String::as_str),
        &mut svg,
    )?;
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document;

    fn fixture(name: &str) -> Document {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        document::load(std::path::Path::new(&path)).expect("fixtures are valid")
    }

    #[test]
    fn tasks_fold_outermost_frame_first_and_unknown_sites_get_their_own_tower() {
        let documents = [
            fixture("reports/server__tests__accept_loop_leaks.json"),
            fixture("reports/server__tests__pool_idle_reaper.json"),
            fixture("reports/server__tests__degraded_build.json"),
        ];
        let folded = fold(&documents);
        assert_eq!(folded.tasks, 8);
        assert_eq!(
            folded.lines,
            [
                "server::pool::Pool::new at server/src/pool.rs:20;server::pool::Pool::spawn_reaper at server/src/pool.rs:41 1",
                "server::tests::accept_loop_leaks at server/src/tests.rs:14;server::conn::accept_loop at server/src/conn.rs:61;<server::conn::Acceptor as tower::Service<http::Request<B>>>::call at server/src/conn.rs:88 2",
                "server::tests::accept_loop_leaks at server/src/tests.rs:14;server::conn::accept_tls at server/src/conn.rs:70;<server::conn::Acceptor as tower::Service<http::Request<B>>>::call at server/src/conn.rs:88 1",
                "server::tests::pool_idle_reaper at server/src/tests.rs:40;server::pool::Pool::checkout at server/src/pool.rs:77;server::pool::Pool::spawn_reaper at server/src/pool.rs:41 1",
                "spawn at server/src/pool.rs:41:9 1",
                "spawn site unknown (built without --cfg tokio_unstable) 2",
            ]
        );
    }

    #[test]
    fn semicolons_in_names_do_not_split_frames() {
        let folded = fold(&[fixture("hostile/markup_in_names.json")]);
        assert_eq!(
            folded.lines,
            ["<&str as evil::Trait<[u8, 4]>>::run at src/<b>evil</b>.rs:1 1"]
        );
    }

    #[test]
    fn unlisted_tasks_count_at_their_site() {
        let Document::Report(mut report) = fixture("reports/server__tests__pool_idle_reaper.json")
        else {
            unreachable!("the fixture is a report")
        };
        report.sites[0].count = 5;
        let folded = fold(&[Document::Report(report)]);
        assert_eq!(folded.tasks, 5);
        assert!(
            folded
                .lines
                .contains(&"spawn at server/src/pool.rs:41:9 4".to_owned()),
            "{:?}",
            folded.lines
        );
    }
}
