//! Without tokio's hooks (no `--cfg tokio_unstable`, or a runtime without a
//! tracker) leakcheck still catches leaks by counting the runtime's live
//! tasks, and its report says what to do to get spawn sites. Runs in both
//! builds; `.ci/run` builds it without the cfg.

use std::time::Duration;

fn untracked_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn counting_catches_a_leak_and_says_why_sites_are_missing() {
    let report = untracked_runtime()
        .block_on(async {
            let guard = leakcheck::verify_none().grace(Duration::from_millis(50));
            tokio::spawn(std::future::pending::<()>());
            guard.verify().await
        })
        .unwrap_err();
    assert!(report.degraded);
    assert_eq!(report.leaked, 1);
    assert!(report.sites.is_empty());
    let text = report.to_string();
    if cfg!(tokio_unstable) {
        assert!(
            text.contains("this runtime has no leakcheck tracker"),
            "{text}"
        );
    } else {
        assert!(
            text.contains("run the tests with `cargo leakcheck test`"),
            "{text}"
        );
    }
}

#[test]
fn counting_says_its_ignore_patterns_were_not_applied() {
    let report = untracked_runtime()
        .block_on(async {
            let guard = leakcheck::verify_none()
                .grace(Duration::from_millis(20))
                .ignore("src/metrics.rs");
            tokio::spawn(std::future::pending::<()>());
            guard.verify().await
        })
        .unwrap_err();
    let text = report.to_string();
    assert!(
        text.contains("the `ignore` patterns \"src/metrics.rs\" were not applied"),
        "{text}"
    );
}

#[test]
fn counting_passes_a_clean_scope() {
    untracked_runtime().block_on(async {
        let guard = leakcheck::verify_none().grace(Duration::from_secs(5));
        tokio::spawn(async {}).await.unwrap();
        guard.verify().await.unwrap();
    });
}

#[leakcheck::test(grace = "50ms")]
#[should_panic(
    expected = "leakcheck: 1 leaked task in `degraded::attribute_fails_a_leak_in_either_build`"
)]
async fn attribute_fails_a_leak_in_either_build() {
    tokio::spawn(std::future::pending::<()>());
}

#[cfg(not(tokio_unstable))]
#[leakcheck::test(grace = "50ms")]
#[should_panic(expected = "run the tests with `cargo leakcheck test`")]
async fn attribute_failure_says_how_to_get_spawn_sites() {
    tokio::spawn(std::future::pending::<()>());
}
