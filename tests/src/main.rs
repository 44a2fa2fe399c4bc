//! The chaos campaign runner: `cargo run --release -p chaos [-- SCENARIO…]`.

use std::path::PathBuf;
use std::process::ExitCode;

use chaos::report;
use chaos::scenarios::{self, Mode, Progress, RunPlan, Scale, Scenario};
use chaos::server;
use clap::Parser;
use tokio::time::Instant;

/// Exit code when every run passed its verdict.
const EXIT_PASSED: u8 = 0;
/// Exit code when at least one run failed its verdict.
const EXIT_FAILED: u8 = 1;
/// Exit code when the harness itself could not run (build, ports, files).
const EXIT_HARNESS_ERROR: u8 = 2;

/// Storms the real leakcheck-server with faults, in fixed mode (every defense on) and in
/// leaky mode (one `--bug`), and checks with leakcheck that nothing leaks — and that every
/// seeded leak is caught with its spawn site. Writes <target>/chaos/summary.json and report.html.
#[derive(Debug, Parser)]
#[command(name = "chaos")]
struct Args {
    /// Scenarios to run (default: all).
    #[arg(value_enum)]
    scenarios: Vec<Scenario>,
    /// Only this mode (default: both).
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// Master seed; every run's seed derives from it (default: from the clock, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Tens of clients instead of thousands, no latency verdicts (what `cargo test` runs).
    #[arg(long)]
    smoke: bool,
    /// Output directory (default: <target dir>/chaos).
    #[arg(long)]
    out: Option<PathBuf>,
    /// No progress lines.
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("chaos: cannot start the tokio runtime: {error}");
            return ExitCode::from(EXIT_HARNESS_ERROR);
        }
    };
    runtime.block_on(campaign(args))
}

async fn campaign(args: Args) -> ExitCode {
    let scenarios = if args.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenarios.clone()
    };
    let modes = match args.mode {
        Some(mode) => vec![mode],
        None => vec![Mode::Fixed, Mode::Leaky],
    };
    let master_seed = args.seed.unwrap_or_else(clock_seed);
    let scale = if args.smoke {
        Scale::Smoke
    } else {
        Scale::Campaign
    };
    let out = match args
        .out
        .clone()
        .map(Ok)
        .unwrap_or_else(|| server::build_location().map(|(target, _)| target.join("chaos")))
    {
        Ok(out) => out,
        Err(error) => return harness_error(&error),
    };
    // Client sockets of the biggest storm, plus room for everything else.
    let needed = scenarios::CANCEL_STORM_CLIENTS.0 as u64 + 1_024;
    match chaos::limits::raise_open_files() {
        Ok(limit) if limit >= needed => {}
        Ok(limit) => eprintln!(
            "chaos: open-file limit {limit} (hard limit) is below the {needed} the cancel storm needs; \
             raise it (ulimit -Hn) or expect cancel-storm to fail"
        ),
        Err(error) => eprintln!("chaos: {error}"),
    }
    let building = Instant::now();
    let binary = match server::server_binary() {
        Ok(binary) => binary,
        Err(error) => return harness_error(&error),
    };
    eprintln!(
        "chaos: server binary {} ready in {:.1} s",
        binary.display(),
        building.elapsed().as_secs_f64()
    );
    // The campaign's duration counts the runs, not the build.
    let started = Instant::now();
    eprintln!(
        "chaos: master seed {master_seed} (replay: cargo run --release -p chaos -- --seed {master_seed}); \
         {} runs; results in {}",
        scenarios.len() * modes.len(),
        out.display()
    );

    let mut runs = Vec::new();
    for scenario in &scenarios {
        for mode in &modes {
            let seed = scenarios::run_seed(master_seed, *scenario, *mode);
            let progress = Progress::new(*scenario, *mode, !args.quiet);
            let plan = RunPlan {
                scenario: *scenario,
                mode: *mode,
                scale,
                seed,
            };
            match scenarios::run(plan, &binary, &out, &progress).await {
                Ok(run) => {
                    eprintln!(
                        "chaos: {}/{}: {} in {:.1} s",
                        run.name,
                        mode.name(),
                        if run.passed { "PASS" } else { "FAIL" },
                        run.duration_ms as f64 / 1000.0
                    );
                    runs.push(run);
                }
                Err(error) => {
                    eprintln!(
                        "chaos: {}/{}: harness error: {error}",
                        scenario,
                        mode.name()
                    );
                    runs.push(scenarios::RunResult::harness_failure(
                        *scenario, *mode, seed, &error,
                    ));
                }
            }
        }
    }

    scenarios::judge_campaign(&mut runs);
    let duration_ms = started.elapsed().as_millis() as u64;
    println!("\n{}", report::scoreboard(&runs));
    let details = report::failure_details(&runs);
    if !details.is_empty() {
        println!("{details}");
    }
    let written = report::write_summary(&out, master_seed, duration_ms, &runs)
        .and_then(|summary| Ok((summary, report::write_html(&out, master_seed, &runs)?)));
    match written {
        Ok((summary, html)) => println!(
            "{} of {} runs passed in {:.1} s (master seed {master_seed}); wrote {} and {}",
            runs.iter().filter(|run| run.passed).count(),
            runs.len(),
            duration_ms as f64 / 1000.0,
            summary.display(),
            html.display()
        ),
        Err(error) => return harness_error(&error),
    }
    if runs.iter().all(|run| run.passed) {
        ExitCode::from(EXIT_PASSED)
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}

fn clock_seed() -> u64 {
    chaos::history::unix_now_ns() % 1_000_000_007
}

fn harness_error(error: &chaos::error::Error) -> ExitCode {
    eprintln!("chaos: {error}");
    ExitCode::from(EXIT_HARNESS_ERROR)
}
