//! The `leakcheck-server` binary: flags, logging, the one "listening" line, exit codes.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use leakcheck_server::{Args, Config, EXIT_LEAKS, SHUTDOWN_SLACK, VERIFY_GRACE, run, shutdown};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// mimalloc, not glibc's malloc: a cancelled request frees on one worker what another worker
/// allocated, and glibc serialises those frees on the allocating arena's lock (measured in the
/// 5,000-way cancel storm, BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Log filter when RUST_LOG is not set: per-request spans are at debug level.
const DEFAULT_LOG_FILTER: &str = "warn,leakcheck_server=info";

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging();
    let leak_report = args.leak_report.clone();
    let config = Config::from(args);
    let announce = |bound: &leakcheck_server::Bound| {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(
            stdout,
            "listening http={} https={}",
            bound.http, bound.https
        );
        let _ = stdout.flush();
    };
    let shutdown_limit = config.shutdown_grace + VERIFY_GRACE + SHUTDOWN_SLACK;
    // `run` calls this inside its runtime before it announces the listeners: the signal handlers
    // are in place by the time the "listening" line is out.
    let stop = move || {
        let signal = shutdown::signal();
        async move {
            signal.await;
            shutdown::exit_if_stuck(shutdown_limit, EXIT_LEAKS);
        }
    };
    let outcome = match run(config, announce, stop) {
        Ok(outcome) => outcome,
        Err(error) => {
            eprintln!("leakcheck-server: {error}");
            return ExitCode::FAILURE;
        }
    };
    let Some(report) = outcome.leaks else {
        if outcome.verified {
            tracing::info!("shutdown verified: no task outlived the server");
        }
        return ExitCode::SUCCESS;
    };
    eprintln!("{report}");
    if let Some(path) = leak_report {
        if let Err(error) = shutdown::write_atomically(&path, &report.to_json()) {
            eprintln!(
                "leakcheck-server: cannot write --leak-report {}: {error}",
                path.display()
            );
        }
    }
    ExitCode::from(EXIT_LEAKS)
}

fn init_logging() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let registry = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter),
    );
    #[cfg(feature = "console")]
    let registry = registry.with(
        console_subscriber::ConsoleLayer::builder()
            .server_addr(([127, 0, 0, 1], 6669))
            .spawn(),
    );
    registry.init();
}
