//! `leakcheck`: triage the JSON leak reports and snapshots written by the
//! leakcheck crate.
//!
//! - `leakcheck summary <dir|files…>`: leaked tasks grouped by spawn site
//!   (count, tests affected, oldest age, a representative backtrace), worst
//!   first; several directories (CI shards) merge into one.
//! - `leakcheck diff <a> <b>`: per-site changes between two reports, two
//!   report directories or two snapshots; `--fail-on-new` gates a pull request.
//! - `leakcheck flamegraph <dir|files…> -o leaks.svg`: tasks folded by spawn backtrace.
//! - `leakcheck html <dir|files…> -o leaks.html`: one self-contained page.
//! - `leakcheck snapshot <url> [-o file]`: save a server's `/debug/tasks`.
//! - `leakcheck watch <url> --every 10s --for 5m`: flag sites that keep growing.
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
//! | 1 | [`exit::LEAKS_FOUND`] | `--fail-on-leaks` / `--fail-on-new` / `--fail-on-growth` found something |
//! | 2 | [`exit::INPUT_ERROR`] | bad command line or bad input file |
//! | 3 | [`exit::RUN_ERROR`] | output not writable, or snapshot fetch failed |
//! | 4 | [`exit::NO_REPORTS`] | a report directory is empty or missing (`--allow-empty` reads it as no leaks) |

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use leakcheck_cli::cli::{Cli, Command, DiffFormat, SummaryFormat};
use leakcheck_cli::error::CliError;
use leakcheck_cli::{
    diff, document, exit, fetch, flamegraph, html, http, output, summary, text, watch,
};

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
            format,
            json,
            fail_on_leaks,
            empty,
        } => {
            let format = if json { SummaryFormat::Json } else { format };
            run_summary(&inputs, format, fail_on_leaks, empty.allow_empty)
        }
        Command::Diff {
            before,
            after,
            format,
            json,
            all,
            fail_on_growth,
            fail_on_new,
            link_base,
            empty,
        } => {
            let format = if json { DiffFormat::Json } else { format };
            let before = diff::load_input(&before, empty.allow_empty)?;
            let after = diff::load_input(&after, empty.allow_empty)?;
            let diff = diff::diff(&before, &after)?;
            let rendered = match format {
                DiffFormat::Text => diff::render_text(&diff, all),
                DiffFormat::Json => to_json(&diff),
                DiffFormat::Markdown => diff::render_markdown(&diff, link_base.as_deref()),
            };
            output::write_stdout(rendered.as_bytes())?;
            let failed = (fail_on_growth && diff::has_growth(&diff))
                || (fail_on_new && diff::has_new(&diff));
            Ok(if failed { exit::LEAKS_FOUND } else { exit::OK })
        }
        Command::Flamegraph {
            inputs,
            output,
            title,
            empty,
        } => run_flamegraph(&inputs, &output, &title, empty.allow_empty),
        Command::Html {
            inputs,
            output,
            empty,
        } => run_html(&inputs, &output, empty.allow_empty),
        Command::Snapshot {
            url,
            output,
            connection,
        } => {
            let path = fetch::run(&url, output, &connection.client_options())?;
            announce(&path, "snapshot saved");
            Ok(exit::OK)
        }
        Command::Watch {
            url,
            every,
            duration,
            window,
            output,
            fail_on_growth,
            connection,
        } => {
            let client = http::Client::new(&url, &connection.client_options())?;
            let options = watch::WatchOptions {
                every,
                duration,
                window: window as usize,
            };
            let watched = watch::watch(&client, &options, |line| {
                let _ = output::write_stdout(format!("{line}\n").as_bytes());
            })?;
            output::write_stdout(watch::render_text(&watched).as_bytes())?;
            if let Some(path) = &output {
                watch::write_html(&watched, client.url(), path)?;
                announce(
                    path,
                    &format!("{} charted", text::count(watched.sites.len(), "spawn site")),
                );
            }
            Ok(if fail_on_growth && !watched.flagged.is_empty() {
                exit::LEAKS_FOUND
            } else {
                exit::OK
            })
        }
    }
}

fn run_summary(
    inputs: &[PathBuf],
    format: SummaryFormat,
    fail_on_leaks: bool,
    allow_empty: bool,
) -> Result<u8, CliError> {
    let reports = document::load_reports(inputs, "summary", allow_empty)?;
    let summary = summary::summarize(&reports);
    let rendered = match format {
        SummaryFormat::Text => summary::render_text(&summary),
        SummaryFormat::Json => to_json(&summary),
        SummaryFormat::Github => summary::render_github(&summary),
    };
    output::write_stdout(rendered.as_bytes())?;
    Ok(if fail_on_leaks && summary::has_leaks(&summary) {
        exit::LEAKS_FOUND
    } else {
        exit::OK
    })
}

fn run_flamegraph(
    inputs: &[PathBuf],
    output: &Path,
    title: &str,
    allow_empty: bool,
) -> Result<u8, CliError> {
    let documents = document::expand_inputs(inputs, allow_empty)?
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

fn run_html(inputs: &[PathBuf], output: &Path, allow_empty: bool) -> Result<u8, CliError> {
    let reports = document::load_reports(inputs, "html", allow_empty)?;
    let summary = summary::summarize(&reports);
    let page = html::reports_page(&summary, &reports, output)?;
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
