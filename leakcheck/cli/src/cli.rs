//! The command line: subcommands, their arguments and help text (clap derive).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::exit;

/// How long `leakcheck snapshot` may take unless `--timeout` says otherwise.
pub const DEFAULT_FETCH_TIMEOUT: &str = "10s";

/// Triage leakcheck's JSON leak reports and live snapshots.
///
/// Reports are the files `#[leakcheck::test]` writes for each leaking test
/// when LEAKCHECK_REPORT_DIR is set (by default `target/leakcheck-reports/`
/// under CI). A directory argument stands for the `*.json` files in it.
#[derive(Debug, Parser)]
#[command(name = "leakcheck", version, after_help = exit::HELP_TABLE)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Group every leaked task of the reports by spawn site, worst first.
    #[command(after_help = exit::HELP_TABLE)]
    Summary {
        /// Report files, or directories of them.
        #[arg(required = true, value_name = "DIR|FILE")]
        inputs: Vec<PathBuf>,
        /// Print JSON (kind "leak_summary") instead of a table.
        #[arg(long)]
        json: bool,
        /// Exit with 1 when any report leaked a task.
        #[arg(long)]
        fail_on_leaks: bool,
    },
    /// Compare two reports or two snapshots: which spawn sites grew, shrank,
    /// appeared or disappeared.
    #[command(after_help = exit::HELP_TABLE)]
    Diff {
        /// The earlier report or snapshot.
        before: PathBuf,
        /// The later one, of the same kind.
        after: PathBuf,
        /// Print JSON (kind "leak_diff") instead of a table.
        #[arg(long)]
        json: bool,
        /// List unchanged sites too.
        #[arg(long)]
        all: bool,
        /// Exit with 1 when a site grew or appeared.
        #[arg(long)]
        fail_on_growth: bool,
    },
    /// Draw leaked tasks folded by spawn backtrace as an SVG flame graph
    /// (reports and snapshots both work).
    #[command(after_help = exit::HELP_TABLE)]
    Flamegraph {
        /// Report or snapshot files, or directories of them.
        #[arg(required = true, value_name = "DIR|FILE")]
        inputs: Vec<PathBuf>,
        /// The SVG file to write (`-` for standard output).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Title drawn above the graph.
        #[arg(long, default_value = crate::flamegraph::DEFAULT_TITLE)]
        title: String,
    },
    /// Write one self-contained HTML page: summary table, flame graph and
    /// every report.
    #[command(after_help = exit::HELP_TABLE)]
    Html {
        /// Report files, or directories of them.
        #[arg(required = true, value_name = "DIR|FILE")]
        inputs: Vec<PathBuf>,
        /// The HTML file to write (`-` for standard output).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Fetch a running server's /debug/tasks snapshot into a file for `diff`.
    #[command(after_help = exit::HELP_TABLE)]
    Snapshot {
        /// e.g. http://127.0.0.1:8080 (the path defaults to /debug/tasks).
        url: String,
        /// Where to write it (default: snapshot-<captured_at_unix_ms>.json;
        /// `-` for standard output).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Give up after this long, e.g. `10s` or `500ms`.
        #[arg(long, default_value = DEFAULT_FETCH_TIMEOUT, value_parser = parse_duration)]
        timeout: Duration,
    },
}

/// Parses `250ms`, `10s` or `2m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("expected a duration like 10s or 500ms, got {text:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        _ => Err(format!("unknown unit in {text:?}: use ms, s or m")),
    }
}
