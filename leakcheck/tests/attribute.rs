//! Every argument of `#[leakcheck::test]` does what it says, in both builds
//! (with `--cfg tokio_unstable` and count-only, which `scripts/check.sh
//! test-degraded` runs), and the attribute composes with `#[should_panic]`,
//! `#[ignore]`, rstest and test-log as `#[tokio::test]` does.
//!
//! The `fixture_*` tests are `#[ignore]`d; the others run them in a child
//! process (this same test binary) to read what they print.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::runtime::{Handle, RuntimeFlavor};

#[leakcheck::test]
async fn default_flavor_is_current_thread() {
    assert_eq!(
        Handle::current().runtime_flavor(),
        RuntimeFlavor::CurrentThread
    );
}

#[leakcheck::test(flavor = "multi_thread", worker_threads = 3)]
async fn multi_thread_gets_its_worker_threads() {
    let handle = Handle::current();
    assert_eq!(handle.runtime_flavor(), RuntimeFlavor::MultiThread);
    assert_eq!(handle.metrics().num_workers(), 3);
}

#[leakcheck::test(flavor = "local")]
async fn local_flavor_runs_spawn_local() {
    let not_send = std::rc::Rc::new(5);
    let value = tokio::task::spawn_local(async move { *not_send })
        .await
        .unwrap();
    assert_eq!(value, 5);
}

#[leakcheck::test(flavor = "local", grace = "20ms")]
#[should_panic(expected = "leakcheck: 1 leaked task in `attribute::local_flavor_catches_a_leak`")]
async fn local_flavor_catches_a_leak() {
    tokio::task::spawn_local(std::future::pending::<()>());
}

#[leakcheck::test(start_paused = true)]
async fn start_paused_pauses_the_clock() {
    let started = tokio::time::Instant::now();
    let wall = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(started.elapsed() >= Duration::from_secs(3600));
    assert!(wall.elapsed() < Duration::from_secs(3600));
}

#[leakcheck::test(name = "named-by-the-attribute")]
async fn name_names_the_runtime() {
    assert_eq!(Handle::current().name(), Some("named-by-the-attribute"));
}

/// A stand-in for a renamed or re-exported tokio that records its use.
mod recording_tokio {
    pub mod runtime {
        pub struct Builder;

        impl Builder {
            pub fn new_current_thread() -> tokio::runtime::Builder {
                super::super::TOKIO_PATH_USED.store(true, std::sync::atomic::Ordering::SeqCst);
                tokio::runtime::Builder::new_current_thread()
            }
        }
    }
}

static TOKIO_PATH_USED: AtomicBool = AtomicBool::new(false);

#[leakcheck::test(crate = "recording_tokio")]
async fn crate_is_the_path_to_tokio() {
    assert!(TOKIO_PATH_USED.load(Ordering::SeqCst));
}

mod reexport {
    pub use leakcheck as checker;
}

#[leakcheck::test(leakcheck_crate = "crate::reexport::checker", grace = "20ms")]
#[should_panic(
    expected = "leakcheck: 1 leaked task in `attribute::leakcheck_crate_is_the_path_to_leakcheck`"
)]
async fn leakcheck_crate_is_the_path_to_leakcheck() {
    tokio::spawn(std::future::pending::<()>());
}

// The task outlives the default grace (250 ms), not this one; the sleep is
// the task's work, not a synchronisation.
#[leakcheck::test(grace = "30s")]
async fn grace_waits_as_long_as_it_says() {
    tokio::spawn(tokio::time::sleep(Duration::from_millis(400)));
}

#[leakcheck::test(grace = "0")]
#[should_panic(expected = "leakcheck: 1 leaked task")]
async fn grace_zero_reports_at_once() {
    tokio::spawn(std::future::pending::<()>());
}

#[leakcheck::test(grace = "20ms", mode = "warn")]
async fn warn_mode_does_not_fail() {
    tokio::spawn(std::future::pending::<()>());
}

#[leakcheck::test(grace = "20ms", mode = "fail")]
#[should_panic(expected = "leakcheck: 1 leaked task")]
async fn fail_mode_fails() {
    tokio::spawn(std::future::pending::<()>());
}

#[cfg(tokio_unstable)]
#[leakcheck::test(unhandled_panic = "shutdown_runtime")]
#[should_panic(
    expected = "a spawned task panicked and the runtime is configured to shut down on unhandled panic"
)]
async fn unhandled_panic_shuts_the_runtime_down() {
    tokio::spawn(async { panic!("a spawned task's panic") });
    // Bounded: if the runtime did not shut down, the test returns and fails.
    for _ in 0..1_000 {
        tokio::task::yield_now().await;
    }
}

#[cfg(tokio_unstable)]
#[leakcheck::test(unhandled_panic = "ignore")]
async fn unhandled_panic_ignore_keeps_running() {
    let panicked = tokio::spawn(async { panic!("a spawned task's panic") }).await;
    assert!(panicked.unwrap_err().is_panic());
}

#[leakcheck::test]
#[ignore = "shows that `#[ignore]` is kept: this body would fail"]
async fn ignore_attribute_is_kept() {
    panic!("an #[ignore]d test ran");
}

mod rstest_cases {
    use rstest::rstest;

    #[rstest]
    #[case(1)]
    #[case(2)]
    #[leakcheck::test]
    async fn rstest_above(#[case] workers: u32) {
        let echoed = tokio::spawn(async move { workers }).await.unwrap();
        assert_eq!(echoed, workers);
    }

    // tokio's attribute also works above `#[rstest]`; so does leakcheck's.
    #[leakcheck::test]
    #[rstest]
    #[case(3)]
    async fn rstest_below(#[case] value: u32) {
        assert_eq!(tokio::spawn(async move { value }).await.unwrap(), 3);
    }

    // Each case is its own test, and its report carries the case's name.
    #[leakcheck::test(grace = "20ms")]
    #[rstest]
    #[case::leaky(1)]
    #[should_panic(
        expected = "leakcheck: 1 leaked task in `attribute::rstest_cases::rstest_below_leak::case_1_leaky`"
    )]
    async fn rstest_below_leak(#[case] tasks: u32) {
        for _ in 0..tasks {
            tokio::spawn(std::future::pending::<()>());
        }
    }

    #[rstest]
    #[case::leaky(1)]
    #[leakcheck::test(grace = "20ms")]
    #[should_panic(
        expected = "leakcheck: 1 leaked task in `attribute::rstest_cases::rstest_case_leak::case_1_leaky`"
    )]
    async fn rstest_case_leak(#[case] tasks: u32) {
        for _ in 0..tasks {
            tokio::spawn(std::future::pending::<()>());
        }
    }
}

mod test_log_wrapper {
    #[test_log::test(leakcheck::test)]
    async fn test_log_wraps_the_attribute() {
        tokio::spawn(async {}).await.unwrap();
    }

    #[test_log::test(leakcheck::test(grace = "20ms"))]
    #[should_panic(
        expected = "leakcheck: 1 leaked task in `attribute::test_log_wrapper::test_log_keeps_the_check`"
    )]
    async fn test_log_keeps_the_check() {
        tokio::spawn(std::future::pending::<()>());
    }

    #[leakcheck::test]
    #[test_log::test]
    async fn test_log_below_the_attribute() {
        tokio::spawn(async {}).await.unwrap();
    }
}

#[leakcheck::test(grace = "20ms")]
#[ignore = "fixture run by body_error_comes_before_the_leak_report"]
async fn fixture_failing_body_that_also_leaks() -> Result<(), String> {
    tokio::spawn(std::future::pending::<()>());
    Err("the body's own failure".to_owned())
}

#[leakcheck::test(grace = "20ms", mode = "warn")]
#[ignore = "fixture run by body_error_comes_before_the_leak_report"]
async fn fixture_failing_body_that_also_leaks_warn() -> Result<(), String> {
    tokio::spawn(std::future::pending::<()>());
    Err("the body's own failure".to_owned())
}

#[leakcheck::test(grace = "20ms", ignore = "tests/attribute.rs")]
#[ignore = "fixture run by ignore_is_applied_or_said_to_be_unapplicable"]
async fn fixture_ignored_background_task() {
    tokio::spawn(std::future::pending::<()>());
}

fn run_fixture(name: &str) -> (bool, String) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args([
        name,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for var in [
        "LEAKCHECK_REPORT_DIR",
        "LEAKCHECK_MODE",
        "LEAKCHECK_GRACE",
        "LEAKCHECK_IGNORE",
        "CI",
        "GITHUB_ACTIONS",
    ] {
        command.env_remove(var);
    }
    let output = command.output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The position of `needle` in `haystack`, failing with both when absent.
fn position(haystack: &str, needle: &str) -> usize {
    haystack
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in:\n{haystack}"))
}

#[test]
fn body_error_comes_before_the_leak_report() {
    for fixture in [
        "fixture_failing_body_that_also_leaks",
        "fixture_failing_body_that_also_leaks_warn",
    ] {
        let (passed, stderr) = run_fixture(fixture);
        assert!(!passed, "a body returning Err fails its test:\n{stderr}");
        let error = position(&stderr, "Error: \"the body's own failure\"");
        let report = position(&stderr, "leakcheck: 1 leaked task");
        assert!(error < report, "the body's error comes first:\n{stderr}");
    }
}

#[test]
fn ignore_is_applied_or_said_to_be_unapplicable() {
    let (passed, stderr) = run_fixture("fixture_ignored_background_task");
    assert!(passed, "an ignored task does not fail its test:\n{stderr}");
    if cfg!(tokio_unstable) {
        assert!(!stderr.contains("leaked task"), "{stderr}");
    } else {
        position(&stderr, "leakcheck: 1 leaked task");
        position(
            &stderr,
            "the `ignore` patterns \"tests/attribute.rs\" were not applied: matching them needs spawn sites",
        );
        position(
            &stderr,
            "not failing `attribute::fixture_ignored_background_task`: the tasks counted above may all be ones its `ignore` patterns cover",
        );
    }
}
