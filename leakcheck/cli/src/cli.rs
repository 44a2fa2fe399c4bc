//! The command line: subcommands, their arguments and help text (clap derive).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::exit;

/// How long one fetch of `/debug/tasks` may take unless `--timeout` says otherwise.
pub const DEFAULT_FETCH_TIMEOUT: &str = "10s";
/// How often `leakcheck watch` samples unless `--every` says otherwise.
pub const DEFAULT_WATCH_EVERY: &str = "10s";
/// How long `leakcheck watch` runs unless `--for` says otherwise.
pub const DEFAULT_WATCH_FOR: &str = "5m";

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
// Doc comments here are clap's help text, written for a terminal, not rustdoc markup.
#[allow(rustdoc::bare_urls)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Group every leaked task of the reports by spawn site, worst first.
    /// Several directories (one per CI shard) merge into one summary.
    #[command(after_help = exit::HELP_TABLE)]
    Summary {
        /// Report files, or directories of them.
        #[arg(required = true, value_name = "DIR|FILE")]
        inputs: Vec<PathBuf>,
        /// Output format: a table, JSON (kind "leak_summary"), or GitHub
        /// `::error` annotations, one per spawn site.
        #[arg(long, value_enum, default_value_t = SummaryFormat::Text)]
        format: SummaryFormat,
        /// Shorthand for `--format json`.
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// Exit with 1 when any report leaked a task.
        #[arg(long)]
        fail_on_leaks: bool,
        #[command(flatten)]
        empty: EmptyArgs,
    },
    /// Compare two reports, two report directories (a pull request's run
    /// against the main branch's) or two snapshots: which spawn sites grew,
    /// shrank, appeared or disappeared, and which tests newly leak.
    #[command(after_help = exit::HELP_TABLE)]
    Diff {
        /// The earlier report, report directory or snapshot.
        before: PathBuf,
        /// The later one, of the same kind.
        after: PathBuf,
        /// Output format: a table, JSON (kind "leak_diff"), or markdown
        /// (new / fixed / still leaking, for $GITHUB_STEP_SUMMARY).
        #[arg(long, value_enum, default_value_t = DiffFormat::Text)]
        format: DiffFormat,
        /// Shorthand for `--format json`.
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// List unchanged sites too (text format).
        #[arg(long)]
        all: bool,
        /// Exit with 1 when a site grew or appeared.
        #[arg(long)]
        fail_on_growth: bool,
        /// Exit with 1 only for new leaks: a site that appeared or a test
        /// that newly leaks (the pull-request gate).
        #[arg(long)]
        fail_on_new: bool,
        /// Markdown links point at `<URL>/<file>#L<line>`, e.g.
        /// https://github.com/OWNER/REPO/blob/SHA
        #[arg(long, value_name = "URL")]
        link_base: Option<String>,
        #[command(flatten)]
        empty: EmptyArgs,
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
        #[command(flatten)]
        empty: EmptyArgs,
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
        #[command(flatten)]
        empty: EmptyArgs,
    },
    /// Fetch a running server's /debug/tasks snapshot into a file for `diff`.
    #[command(after_help = exit::HELP_TABLE)]
    Snapshot {
        /// e.g. http://127.0.0.1:8080 or https://host:8443 (the path defaults
        /// to /debug/tasks).
        url: String,
        /// Where to write it (default: snapshot-<captured_at_unix_ms>.json;
        /// `-` for standard output).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Sample a running service's /debug/tasks and flag the spawn sites whose
    /// live count or oldest age keeps growing (a slow leak), as they appear.
    #[command(after_help = exit::HELP_TABLE)]
    Watch {
        /// e.g. http://127.0.0.1:8080 (the path defaults to /debug/tasks).
        url: String,
        /// Time between samples, e.g. `10s` or `200ms`.
        #[arg(long, default_value = DEFAULT_WATCH_EVERY, value_parser = parse_duration)]
        every: Duration,
        /// How long to watch, e.g. `5m`.
        #[arg(long = "for", default_value = DEFAULT_WATCH_FOR, value_parser = parse_duration)]
        duration: Duration,
        /// Consecutive growing samples that flag a site.
        #[arg(long, default_value_t = crate::watch::DEFAULT_WINDOW, value_parser = clap::value_parser!(u32).range(2..=1000))]
        window: u32,
        /// Also write an HTML page with a chart of each site over time.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Exit with 1 when a site was flagged.
        #[arg(long)]
        fail_on_growth: bool,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
}

/// `--allow-empty`, shared by the commands that read report directories.
#[derive(Debug, Args)]
pub struct EmptyArgs {
    /// Read an empty or missing report directory as "no leaks" instead of
    /// exiting with 4 (tests write reports only when they leak).
    #[arg(long)]
    pub allow_empty: bool,
}

/// How to reach a running service.
#[derive(Debug, Args)]
pub struct ConnectionArgs {
    /// Give up on one fetch after this long, e.g. `10s` or `500ms`.
    #[arg(long, default_value = DEFAULT_FETCH_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
    /// Bearer token sent as `Authorization: Bearer <TOKEN>`.
    #[arg(long, env = "LEAKCHECK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Certificates to trust for https instead of the built-in web roots (a
    /// self-signed or internal CA): a PEM file, or one DER certificate.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

impl ConnectionArgs {
    /// The HTTP client's options.
    pub fn client_options(&self) -> crate::http::ClientOptions {
        crate::http::ClientOptions {
            timeout: self.timeout,
            bearer_token: self.token.clone(),
            ca_cert: self.ca_cert.clone(),
        }
    }
}

/// `summary --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SummaryFormat {
    /// A table and one block per site.
    Text,
    /// JSON, kind "leak_summary".
    Json,
    /// GitHub workflow `::error` commands, one per spawn site.
    Github,
}

/// `diff --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiffFormat {
    /// A table.
    Text,
    /// JSON, kind "leak_diff".
    Json,
    /// Markdown tables of new, fixed and still-leaking sites.
    Markdown,
}

/// Parses a duration with the core's parser (`250ms`, `10s`, `1.5s`, `2m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    leakcheck::parse_duration(text)
        .ok_or_else(|| format!("expected a duration like 10s, 500ms or 2m, got {text:?}"))
}
