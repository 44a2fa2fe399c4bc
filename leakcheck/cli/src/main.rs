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

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
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
        } => {
            let reports = document::load_reports(&inputs, "summary")?;
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
        Command::Diff {
            before,
            after,
            json,
            all,
            fail_on_growth,
        } => {
            let before_doc = document::load(&before)?;
            let after_doc = document::load(&after)?;
            let diff = diff::diff((&before, &before_doc), (&after, &after_doc))?;
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
        Command::Flamegraph {
            inputs,
            output,
            title,
        } => {
            let files = document::expand_inputs(&inputs)?;
            let documents = files
                .iter()
                .map(|f| document::load(f))
                .collect::<Result<Vec<_>, _>>()?;
            let folded = flamegraph::fold(&documents);
            let svg =
                flamegraph::render_svg(&folded, &title, documents.len()).map_err(|source| {
                    CliError::Output {
                        path: output.clone(),
                        source,
                    }
                })?;
            output::write(&output, &svg)?;
            announce(
                &output,
                &format!(
                    "{} in {}",
                    text::count(folded.tasks, "task"),
                    text::count(folded.lines.len(), "backtrace")
                ),
            );
            Ok(exit::OK)
        }
        Command::Html { inputs, output } => {
            let reports = document::load_reports(&inputs, "html")?;
            let summary = summary::summarize(&reports);
            let documents: Vec<document::Document> = reports
                .iter()
                .map(|r| document::Document::Report(r.report.clone()))
                .collect();
            let folded = flamegraph::fold(&documents);
            let svg =
                flamegraph::render_svg(&folded, "Leaked tasks by spawn backtrace", reports.len())
                    .map_err(|source| CliError::Output {
                    path: output.clone(),
                    source,
                })?;
            let page = html::render(&summary, &String::from_utf8_lossy(&svg), &reports);
            output::write(&output, page.as_bytes())?;
            announce(
                &output,
                &format!(
                    "{} from {}",
                    text::count(summary.leaked, "leaked task"),
                    text::count(reports.len(), "report")
                ),
            );
            Ok(exit::OK)
        }
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

/// Says on stderr what was written, unless it went to stdout.
fn announce(path: &std::path::Path, what: &str) {
    if path.as_os_str() != output::STDOUT {
        eprintln!("leakcheck: wrote {} ({what})", path.display());
    }
}

fn to_json(value: &impl serde::Serialize) -> String {
    let mut json = serde_json::to_string_pretty(value).expect("summaries and diffs are plain data");
    json.push('\n');
    json
}
