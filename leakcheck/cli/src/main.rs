//! `leakcheck`: triage the JSON leak reports and snapshots written by the
//! leakcheck crate.
//!
//! - `leakcheck summary <dir|files…>`: leaked tasks grouped by spawn site
//!   (count, tests affected, oldest age, a representative backtrace), worst first.
//! - `leakcheck diff <a> <b>`: per-site growth between two reports or snapshots.
//! - `leakcheck flamegraph <dir|files…> -o leaks.svg`: tasks folded by spawn backtrace.
//! - `leakcheck html <dir|files…> -o leaks.html`: one self-contained page.
//! - `leakcheck snapshot <url> [-o file]`: save a server's `/debug/tasks`.
//!
//! Every input is checked for `schema_version` and `kind` before use; a bad
//! one stops the command with one line naming the file. Output files are
//! written atomically.
//!
//! # Exit codes
//!
//! | code | constant | meaning |
//! |---|---|---|
//! | 0 | [`exit::OK`] | success |
//! | 1 | [`exit::LEAKS_FOUND`] | `--fail-on-leaks` / `--fail-on-growth` found something |
//! | 2 | [`exit::INPUT_ERROR`] | bad command line or bad input file |
//! | 3 | [`exit::RUN_ERROR`] | output not writable, or snapshot fetch failed |

mod cli;
mod diff;
mod document;
mod error;
mod exit;
mod fetch;
mod flamegraph;
mod html;
mod http;
mod output;
mod summary;
mod text;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::document::Document;
use crate::error::CliError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => exit::code(code),
        Err(error) => {
            eprintln!("leakcheck: error: {error}");
            exit::code(error.exit_code())
        }
    }
}

fn run(command: Command) -> Result<u8, CliError> {
    match command {
        Command::Summary {
            inputs,
            json,
            fail_on_leaks,
        } => run_summary(&inputs, json, fail_on_leaks),
        Command::Diff {
            before,
            after,
            json,
            all,
            fail_on_growth,
        } => run_diff(&before, &after, json, all, fail_on_growth),
        Command::Flamegraph {
            inputs,
            output,
            title,
        } => run_flamegraph(&inputs, &output, &title),
        Command::Html { inputs, output } => run_html(&inputs, &output),
        Command::Snapshot {
            url,
            output,
            timeout,
        } => {
            let path = fetch::run(&url, output, timeout)?;
            announce(&path, "snapshot saved");
            Ok(exit::OK)
        }
    }
}

fn run_summary(inputs: &[PathBuf], json: bool, fail_on_leaks: bool) -> Result<u8, CliError> {
    let reports = document::load_reports(inputs, "summary")?;
    let summary = summary::summarize(&reports);
    let rendered = if json {
        to_json(&summary)
    } else {
        summary::render_text(&summary)
    };
    output::write_stdout(rendered.as_bytes())?;
    Ok(if fail_on_leaks && summary::has_leaks(&summary) {
        exit::LEAKS_FOUND
    } else {
        exit::OK
    })
}

fn run_diff(
    before: &Path,
    after: &Path,
    json: bool,
    all: bool,
    fail_on_growth: bool,
) -> Result<u8, CliError> {
    let before_doc = document::load(before)?;
    let after_doc = document::load(after)?;
    let diff = diff::diff((before, &before_doc), (after, &after_doc))?;
    let rendered = if json {
        to_json(&diff)
    } else {
        diff::render_text(&diff, all)
    };
    output::write_stdout(rendered.as_bytes())?;
    Ok(if fail_on_growth && diff::has_growth(&diff) {
        exit::LEAKS_FOUND
    } else {
        exit::OK
    })
}

fn run_flamegraph(inputs: &[PathBuf], output: &Path, title: &str) -> Result<u8, CliError> {
    let documents = document::expand_inputs(inputs)?
        .iter()
        .map(|file| document::load(file))
        .collect::<Result<Vec<_>, _>>()?;
    let folded = flamegraph::fold(&documents);
    let svg = render_svg(&folded, title, documents.len(), output)?;
    output::write(output, &svg)?;
    let what = format!(
        "{} in {}",
        text::count(folded.tasks, "task"),
        text::count(folded.lines.len(), "backtrace")
    );
    announce(output, &what);
    Ok(exit::OK)
}

fn run_html(inputs: &[PathBuf], output: &Path) -> Result<u8, CliError> {
    let reports = document::load_reports(inputs, "html")?;
    let summary = summary::summarize(&reports);
    let documents: Vec<Document> = reports
        .iter()
        .map(|loaded| Document::Report(loaded.report.clone()))
        .collect();
    let folded = flamegraph::fold(&documents);
    let svg = render_svg(&folded, flamegraph::DEFAULT_TITLE, reports.len(), output)?;
    let page = html::render(&summary, &String::from_utf8_lossy(&svg), &reports);
    output::write(output, page.as_bytes())?;
    let what = format!(
        "{} from {}",
        text::count(summary.leaked, "leaked task"),
        text::count(reports.len(), "report")
    );
    announce(output, &what);
    Ok(exit::OK)
}

fn render_svg(
    folded: &flamegraph::Folded,
    title: &str,
    inputs: usize,
    output: &Path,
) -> Result<Vec<u8>, CliError> {
    flamegraph::render_svg(folded, title, inputs).map_err(|source| CliError::Output {
        path: output.to_owned(),
        source,
    })
}

/// Says on stderr what was written, unless it went to stdout.
fn announce(path: &Path, what: &str) {
    if path.as_os_str() != output::STDOUT {
        eprintln!("leakcheck: wrote {} ({what})", path.display());
    }
}

fn to_json(value: &impl serde::Serialize) -> String {
    let mut json = serde_json::to_string_pretty(value).expect("summaries and diffs are plain data");
    json.push('\n');
    json
}
