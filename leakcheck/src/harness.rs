//! What `#[leakcheck::test]` expands to: take the runtime builder the
//! generated code set up exactly as `#[tokio::test]` would, install a tracker,
//! run the body with panics caught, verify before the runtime is dropped
//! (dropping it cancels leaked tasks and hides them), then fail, warn or pass.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::process::{ExitCode, Termination};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::report::LeakReport;
use crate::settings::Mode;
use crate::tracker::Tracker;
use crate::verify::VerifyGuard;

/// How long a runtime whose test leaked may take to shut down: leaked tasks
/// may be stuck in blocking code and must not hang the test once the verdict
/// is known.
const LEAKED_RUNTIME_SHUTDOWN: Duration = Duration::from_secs(1);

/// The runtime a test asked for; the generated code has already created the
/// builder for it, this says how to build it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `flavor = "current_thread"` (the default, as in `#[tokio::test]`).
    CurrentThread,
    /// `flavor = "multi_thread"`.
    MultiThread,
    /// `flavor = "local"`: a `LocalRuntime`.
    Local,
}

/// leakcheck's arguments of the attribute, validated at compile time (tokio's
/// arguments are already applied to the builder passed to [`run_test`]).
#[derive(Debug)]
pub struct TestConfig {
    /// `module_path!()::test_name`.
    pub name: &'static str,
    /// Runtime flavor.
    pub flavor: Flavor,
    /// `grace = "…"`, overriding the environment.
    pub grace: Option<Duration>,
    /// `ignore = "…"` patterns.
    pub ignore: &'static [&'static str],
    /// `mode = "…"`, overriding the environment.
    pub mode: Option<Mode>,
    /// The test is `#[should_panic]`: its leak report is an expected outcome,
    /// so it is not written to the report directory nor annotated.
    pub expects_panic: bool,
    /// An attribute below `#[leakcheck::test]` (`#[rstest]`) turns the
    /// function into several tests: each is named after libtest's name for
    /// it, not the function's.
    pub named_by_libtest: bool,
}

/// `crate::module::test`, unique per test so reports never overwrite each
/// other. libtest runs each test on a thread named after the test (its path
/// without the crate).
fn test_name(config: &TestConfig) -> String {
    if config.named_by_libtest {
        if let Some(test) = std::thread::current().name() {
            let krate = config.name.split("::").next().unwrap_or_default();
            return format!("{krate}::{test}");
        }
    }
    config.name.to_owned()
}

/// Polls the test body, its panics caught. A spawn backtrace taken inside
/// ends at this frame (see [`crate::capture::poll_started`]): above it lie
/// the runtime's `block_on`, this harness and libtest, a dozen or more
/// frames the same for every spawn of every test, which would otherwise be
/// walked and hashed at each spawn and end every reported stack.
#[inline(never)]
fn poll_body<F: Future>(
    body: Pin<&mut F>,
    cx: &mut Context<'_>,
) -> Poll<std::thread::Result<F::Output>> {
    crate::capture::poll_started();
    let polled = catch_unwind(AssertUnwindSafe(|| body.poll(cx)));
    crate::capture::poll_ended();
    match polled {
        Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
        Ok(Poll::Pending) => Poll::Pending,
        Err(panic) => Poll::Ready(Err(panic)),
    }
}

/// Runs a test body on a runtime built from `builder` with a [`Tracker`]
/// installed, checks it leaked nothing, and returns the body's exit code.
///
/// The body's own failure always comes first: a panic is re-raised after the
/// leak report is printed; a returned `Err` is reported (std's `Error: …`
/// line) before the leak report, and its exit code fails the test as libtest
/// would.
#[track_caller]
pub fn run_test<F>(config: TestConfig, mut builder: tokio::runtime::Builder, body: F) -> ExitCode
where
    F: Future,
    F::Output: Termination,
{
    let mut tracker = Tracker::builder();
    if let Some(grace) = config.grace {
        tracker = tracker.grace(grace);
    }
    if let Some(mode) = config.mode {
        tracker = tracker.mode(mode);
    }
    let tracker = tracker.build();
    tracker.install(&mut builder);

    let ignore = config.ignore.iter().map(|p| (*p).to_owned()).collect();
    let name = test_name(&config);
    let grace = tracker.grace();
    let run = async {
        let guard = VerifyGuard::for_tracker(&tracker, name, grace, ignore);
        let mut body = std::pin::pin!(body);
        let outcome = std::future::poll_fn(|cx| poll_body(body.as_mut(), cx)).await;
        (outcome, guard.verify().await)
    };
    let (outcome, verdict) = match config.flavor {
        Flavor::Local => {
            let runtime = builder
                .build_local(tokio::runtime::LocalOptions::default())
                .expect("leakcheck: failed to build the test's tokio LocalRuntime");
            tracker.register(runtime.handle());
            let result = runtime.block_on(run);
            if result.1.is_err() {
                runtime.shutdown_timeout(LEAKED_RUNTIME_SHUTDOWN);
            }
            result
        }
        Flavor::CurrentThread | Flavor::MultiThread => {
            let runtime = builder
                .build()
                .expect("leakcheck: failed to build the test's tokio runtime");
            tracker.register(runtime.handle());
            let result = runtime.block_on(run);
            if result.1.is_err() {
                runtime.shutdown_timeout(LEAKED_RUNTIME_SHUTDOWN);
            }
            result
        }
    };

    // Verdicts of guards dropped unverified in tasks, whose panics ended only
    // those tasks: the test fails with them.
    let dropped = tracker.inner.take_dropped();
    for report in &dropped {
        eprintln!("{report}\n{DROPPED_IN_TASK}");
    }
    let settings = &tracker.inner.settings;
    let verdict = match crate::baseline::apply(
        &test_name(&config),
        verdict.err(),
        settings.baseline.as_deref(),
        settings.report_dir.as_deref(),
    ) {
        Some(report) => Err(report),
        None => Ok(()),
    };
    let output = match outcome {
        Ok(output) => output,
        Err(panic) => {
            // The panic message is already printed; leaks follow it as context.
            if let Err(report) = verdict {
                if !config.expects_panic {
                    crate::output::publish(&report, settings.report_dir.as_deref(), false);
                }
                eprintln!("{report}");
            }
            resume_unwind(panic)
        }
    };
    // Prints `Error: …` for a failed body, before anything about leaks.
    let code = output.report();
    let Err(mut report) = verdict else {
        if !dropped.is_empty() && tracker.mode() == Mode::Fail {
            panic!("{DROPPED_IN_TASK}");
        }
        return code;
    };
    let unappliable_ignore =
        report.degraded && (!config.ignore.is_empty() || !tracker.inner.ignore.is_empty());
    if unappliable_ignore {
        // It does not fail the test: not a failure report.
        report.mode = Mode::Warn;
    }
    if !config.expects_panic {
        crate::output::publish(&report, settings.report_dir.as_deref(), false);
    }
    if unappliable_ignore {
        eprintln!("{report}\n{}", unappliable_ignore_note(&report));
        return code;
    }
    match tracker.mode() {
        Mode::Fail => panic!("{report}"),
        Mode::Warn => {
            eprintln!("{report}");
            code
        }
    }
}

/// Why a test fails on a report printed above it.
const DROPPED_IN_TASK: &str = "leakcheck: a VerifyGuard dropped without `.verify().await` inside a spawned task found the leaks above; its panic ended only that task, so the test fails here";

/// Why a count-only verdict does not fail a test with `ignore` patterns: the
/// count cannot tell the tasks they cover from leaked ones.
fn unappliable_ignore_note(report: &LeakReport) -> String {
    format!(
        "leakcheck: not failing `{}`: the tasks counted above may all be ones its `ignore` patterns cover; build with `--cfg tokio_unstable` (for example `cargo leakcheck test`) to check them",
        report.test
    )
}

/// The attribute's switch on `--cfg tokio_unstable`, read where leakcheck
/// (and so tokio, built with the same flags) is compiled: `require "message"`
/// is a compile error without the cfg, `then { code }` is the code with it and
/// nothing without. `unhandled_panic` calls a tokio API that exists only with
/// the cfg.
#[cfg(tokio_unstable)]
#[doc(hidden)]
#[macro_export]
macro_rules! __tokio_unstable_only {
    (require $message:literal) => {};
    (then { $($code:tt)* }) => { $($code)* };
}

/// See the `tokio_unstable` version above.
#[cfg(not(tokio_unstable))]
#[doc(hidden)]
#[macro_export]
macro_rules! __tokio_unstable_only {
    (require $message:literal) => {
        ::core::compile_error!($message);
    };
    (then { $($code:tt)* }) => {};
}
