//! What a report says about each leaked task beyond its site: the real spawn
//! call behind `#[track_caller]` helpers.

#![cfg(tokio_unstable)]
// `Result<(), LeakReport>` mirrors the public `VerifyGuard::verify` signature.
#![allow(clippy::result_large_err)]

use std::future::Future;
use std::time::Duration;

use leakcheck::{LeakReport, LivenessClass};

/// A library that wraps `tokio::spawn` in `#[track_caller]` helpers, as task
/// supervisors and actor frameworks do: tokio then reports the user's call as
/// the spawn site, and the library's two `spawn` lines only show in the
/// backtrace.
mod supervisor {
    pub enum Kind {
        Worker,
        Ticker,
    }

    #[track_caller]
    pub fn start(kind: Kind) {
        match kind {
            Kind::Worker => drop(tokio::spawn(std::future::pending::<()>())),
            Kind::Ticker => drop(tokio::spawn(std::future::pending::<()>())),
        }
    }
}

/// Runs `body` in a `verify_none` scope on a fresh tracked current-thread
/// runtime with a short grace.
fn scoped<Fut: Future<Output = ()>>(body: impl FnOnce() -> Fut) -> Result<(), LeakReport> {
    let tracker = leakcheck::Tracker::new();
    let mut builder = tokio::runtime::Builder::new_current_thread();
    tracker.install(builder.enable_all());
    builder.build().unwrap().block_on(async {
        let guard = leakcheck::verify_none().grace(Duration::from_millis(10));
        body().await;
        guard.verify().await
    })
}

/// The 1-based line of this file holding `needle`.
fn line_of(needle: &str) -> u32 {
    let index = include_str!("report_details.rs")
        .lines()
        .position(|line| line.contains(needle))
        .expect("the needle is in this file");
    index as u32 + 1
}

#[test]
fn track_caller_helpers_show_the_spawn_call_and_split_groups_by_it() {
    let report = scoped(|| async {
        for kind in [supervisor::Kind::Worker, supervisor::Kind::Ticker] {
            supervisor::start(kind);
        }
    })
    .unwrap_err();
    assert_eq!(
        report.sites.len(),
        2,
        "one group per library spawn line:\n{report}"
    );
    let sites: Vec<_> = report.sites.iter().map(|g| g.site.clone()).collect();
    assert_eq!(sites[0], sites[1], "tokio reports the same (caller's) site");
    assert_eq!(sites[0].file, "leakcheck/tests/report_details.rs");
    let calls: Vec<_> = report
        .sites
        .iter()
        .map(|g| g.spawn_call.clone().expect("the spawn call is named"))
        .collect();
    for call in &calls {
        assert!(
            call.function.ends_with("supervisor::start"),
            "{}",
            call.function
        );
        assert_eq!(
            call.file.as_deref(),
            Some("leakcheck/tests/report_details.rs")
        );
    }
    assert_eq!(calls[0].line, Some(line_of("Kind::Worker => drop(")));
    assert_eq!(calls[1].line, Some(line_of("Kind::Ticker => drop(")));
    let text = report.to_string();
    assert!(
        text.contains(&format!(
            "  spawn call: {} (the site above is its #[track_caller] caller)",
            calls[0]
        )),
        "{text}"
    );
}

#[test]
fn a_direct_spawn_has_no_separate_spawn_call() {
    let report = scoped(|| async {
        tokio::spawn(std::future::pending::<()>());
    })
    .unwrap_err();
    assert_eq!(report.sites[0].spawn_call, None, "{report}");
    assert!(!report.to_string().contains("spawn call:"));
}

async fn wait_for_orders() {
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

async fn wait_for_payments() {
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

#[cfg(target_os = "linux")]
#[test]
fn parked_at_keeps_each_awaited_future_s_trace_separate() {
    let report = scoped(|| async {
        tokio::spawn(async {
            tokio::join!(wait_for_orders(), wait_for_payments());
        });
    })
    .unwrap_err();
    let parked = report.sites[0].tasks[0]
        .parked_at
        .clone()
        .unwrap_or_else(|| panic!("a task dump was taken:\n{report}"));
    assert_eq!(parked.traces.len(), 2, "{report}");
    assert!(
        parked.traces[0][0]
            .function
            .ends_with("wait_for_orders::{{closure}}"),
        "{parked:#?}"
    );
    assert!(
        parked.traces[1][0]
            .function
            .ends_with("wait_for_payments::{{closure}}"),
        "{parked:#?}"
    );
    let text = report.to_string();
    assert!(text.contains("  parked at (2 traces, one per awaited future):\n    trace 1:\n      report_details::wait_for_orders::{{closure}} at leakcheck/tests/report_details.rs:"), "{text}");
    assert!(
        text.contains("\n    trace 2:\n      report_details::wait_for_payments::{{closure}}"),
        "{text}"
    );
}

#[test]
fn a_task_waiting_for_a_wake_is_idle() {
    let report = scoped(|| async {
        let (started, running) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = started.send(());
            std::future::pending::<()>().await
        });
        // Its first poll happens before the grace, so the grace sees none.
        running.await.unwrap();
    })
    .unwrap_err();
    let liveness = report.sites[0].tasks[0]
        .liveness
        .expect("liveness is known");
    assert_eq!(liveness.class, LivenessClass::Idle, "{report}");
    assert_eq!(liveness.polls_during_grace, 0);
    assert!(
        report.to_string().contains(
            "\n  idle: not polled during the grace, waiting for a wake that has not come\n"
        ),
        "{report}"
    );
}

#[test]
fn a_self_waking_task_is_busy_and_its_polls_are_counted() {
    let report = scoped(|| async {
        tokio::spawn(async {
            // Wakes itself at every step: polled for as long as it runs.
            loop {
                tokio::task::yield_now().await;
            }
        });
    })
    .unwrap_err();
    let liveness = report.sites[0].tasks[0]
        .liveness
        .expect("liveness is known");
    assert_eq!(liveness.class, LivenessClass::Busy, "{report}");
    assert!(liveness.polls_during_grace >= 2, "{liveness:?}");
    assert!(report.to_string().contains("\n  busy: polled "), "{report}");
}

#[test]
fn a_task_stuck_in_one_poll_is_blocking() {
    let (release, stuck) = std::sync::mpsc::channel::<()>();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2);
    let tracker = leakcheck::Tracker::new();
    tracker.install(builder.enable_all());
    let runtime = builder.build().unwrap();
    let report = runtime
        .block_on(async {
            let guard = leakcheck::verify_none().grace(Duration::from_millis(20));
            let (started, running) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(async move {
                let _ = started.send(());
                // Blocks its worker thread until the test has its report.
                let _ = stuck.recv();
            });
            running.await.unwrap();
            guard.verify().await
        })
        .unwrap_err();
    release.send(()).unwrap();
    let liveness = report.sites[0].tasks[0]
        .liveness
        .expect("liveness is known");
    assert_eq!(liveness.class, LivenessClass::Blocking, "{report}");
    assert!(liveness.in_poll_ms.unwrap() >= 20, "{liveness:?}");
    assert!(
        report
            .to_string()
            .contains("\n  blocking: inside one poll for "),
        "{report}"
    );
}
