//! What `#[leakcheck::test]` expands to: build the runtime exactly as
//! `#[tokio::test]` would, with a tracker installed, run the body with panics
//! caught, verify before the runtime is dropped (dropping it cancels leaked
//! tasks and hides them), then fail, warn or pass.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::task::Poll;
use std::time::Duration;

use crate::settings::Mode;
use crate::tracker::Tracker;
use crate::verify::VerifyGuard;

/// The runtime a test asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `flavor = "current_thread"` (the default, as in `#[tokio::test]`).
    CurrentThread,
    /// `flavor = "multi_thread"`.
    MultiThread,
    /// `flavor = "local"`: a `LocalRuntime` (needs `--cfg tokio_unstable`).
    Local,
}

/// The attribute's arguments, validated at compile time.
#[derive(Debug)]
pub struct TestConfig {
    /// `module_path!()::test_name`.
    pub name: &'static str,
    /// Runtime flavor.
    pub flavor: Flavor,
    /// `worker_threads`, multi-thread only.
    pub worker_threads: Option<usize>,
    /// `start_paused = true`.
    pub start_paused: bool,
    /// `grace = "…"`, overriding the environment.
    pub grace: Option<Duration>,
    /// `ignore = "…"` patterns.
    pub ignore: &'static [&'static str],
    /// `mode = "…"`, overriding the environment.
    pub mode: Option<Mode>,
    /// The test is `#[should_panic]`: its leak report is an expected outcome,
    /// so it is not written to the report directory nor annotated.
    pub expects_panic: bool,
}

/// Runs a test body on a fresh tracked runtime and checks it leaked nothing.
#[track_caller]
pub fn run_test<F: Future>(config: TestConfig, body: F) -> F::Output {
    let mut tracker = Tracker::builder();
    if let Some(grace) = config.grace {
        tracker = tracker.grace(grace);
    }
    if let Some(mode) = config.mode {
        tracker = tracker.mode(mode);
    }
    let tracker = tracker.build();
    let mut builder = match config.flavor {
        Flavor::CurrentThread | Flavor::Local => tokio::runtime::Builder::new_current_thread(),
        Flavor::MultiThread => tokio::runtime::Builder::new_multi_thread(),
    };
    if let Some(workers) = config.worker_threads {
        builder.worker_threads(workers);
    }
    builder.enable_all();
    if config.start_paused {
        builder.start_paused(true);
    }
    tracker.install(&mut builder);

    let ignore = config.ignore.iter().map(|p| (*p).to_owned()).collect();
    let name = config.name.to_owned();
    let grace = tracker.grace();
    let run = async {
        let guard = VerifyGuard::for_tracker(&tracker, name, grace, ignore);
        let mut body = std::pin::pin!(body);
        let outcome = std::future::poll_fn(|cx| {
            match catch_unwind(AssertUnwindSafe(|| body.as_mut().poll(cx))) {
                Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
                Ok(Poll::Pending) => Poll::Pending,
                Err(panic) => Poll::Ready(Err(panic)),
            }
        })
        .await;
        (outcome, guard.verify().await)
    };
    let (outcome, verdict) = match config.flavor {
        Flavor::Local => run_local(&tracker, &mut builder, run),
        _ => {
            let runtime = builder
                .build()
                .expect("leakcheck: failed to build the test's tokio runtime");
            tracker.register(runtime.handle());
            let result = runtime.block_on(run);
            if result.1.is_err() {
                // Leaked tasks may be stuck in blocking code: do not let them
                // hang the test after the verdict is known.
                runtime.shutdown_timeout(Duration::from_secs(1));
            }
            result
        }
    };

    let settings = &tracker.inner.settings;
    let verdict = match crate::baseline::apply(
        config.name,
        verdict.err(),
        settings.baseline.as_deref(),
        settings.report_dir.as_deref(),
    ) {
        Some(report) => Err(report),
        None => Ok(()),
    };
    match (outcome, verdict) {
        (Err(panic), verdict) => {
            // The body's own panic is the failure; leaks follow it as context.
            if let Err(report) = verdict {
                if !config.expects_panic {
                    crate::output::publish(&report, tracker.inner.settings.report_dir.as_deref());
                }
                eprintln!("{report}");
            }
            resume_unwind(panic)
        }
        (Ok(output), Ok(())) => output,
        (Ok(output), Err(report)) => {
            if !config.expects_panic {
                crate::output::publish(&report, tracker.inner.settings.report_dir.as_deref());
            }
            match tracker.mode() {
                Mode::Fail => panic!("{report}"),
                Mode::Warn => {
                    eprintln!("{report}");
                    output
                }
            }
        }
    }
}

#[cfg(tokio_unstable)]
fn run_local<T: Future>(
    tracker: &Tracker,
    builder: &mut tokio::runtime::Builder,
    run: T,
) -> T::Output {
    let runtime = builder
        .build_local(tokio::runtime::LocalOptions::default())
        .expect("leakcheck: failed to build the test's tokio LocalRuntime");
    tracker.register(runtime.handle());
    runtime.block_on(run)
}

#[cfg(not(tokio_unstable))]
fn run_local<T: Future>(_: &Tracker, _: &mut tokio::runtime::Builder, _: T) -> T::Output {
    panic!(
        "leakcheck: `flavor = \"local\"` needs tokio's LocalRuntime: {}",
        crate::report::TOKIO_UNSTABLE_HINT
    )
}
