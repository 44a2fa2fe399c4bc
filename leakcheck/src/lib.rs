//! Fail tokio tests whose spawned tasks outlive them.
//!
//! A `#[tokio::test]` that returns while tasks it spawned are still running
//! hides a leak: the test drops its runtime, which silently cancels them,
//! while in production the same code leaks forever. leakcheck records every
//! spawned task with its spawn site and a cheap spawn backtrace, and fails the
//! test with a report naming each task that outlived it:
//!
//! ```text
//! leakcheck: 1 leaked task in `my_crate::tests::accepts` (still running 250 ms after the body returned)
//!
//! ── src/conn.rs:88:5 · 1 task ──
//!   task 12 · age 253 ms · spawned by task 7 ← the test body
//!   spawn backtrace:
//!     0: my_crate::conn::accept_loop::{{closure}} at src/conn.rs:88
//!     1: my_crate::tests::accepts::{{closure}} at src/tests.rs:12
//!   parked at:
//!     my_crate::conn::accept_loop::{{closure}} at src/conn.rs:91
//!
//! hint: the task spawned at src/conn.rs:88:5 is still running; keep its JoinHandle and await or abort it …
//! ```
//!
//! # Use
//! Replace `#[tokio::test]` with [`#[leakcheck::test]`](macro@test) (same
//! arguments, plus `grace`, `ignore`, `mode` and `leakcheck_crate`), or check
//! a scope by hand with [`verify_none`] on a runtime built with a [`Tracker`]
//! installed:
//!
//! ```
//! #[leakcheck::test]
//! async fn joins_what_it_spawns() {
//!     let worker = tokio::spawn(async { 1 + 1 });
//!     assert_eq!(worker.await.unwrap(), 2);
//! }
//! ```
//!
//! Spawn sites need tokio's task hooks, which need `--cfg tokio_unstable`,
//! and frame pointers make spawn backtraces ~50× cheaper. Run the suite with
//! `cargo leakcheck test` (`cargo install leakcheck-cli`; `cargo leakcheck
//! adopt` rewrites every `#[tokio::test]` for you): it adds both flags to the
//! ones you already have, for the test build only, in its own target
//! directory. Without the subcommand, extend the flags for that run only —
//! not `[build] rustflags` in `.cargo/config.toml`, which also changes release
//! builds and which a `RUSTFLAGS` set in CI silently replaces:
//!
//! ```sh
//! RUSTFLAGS="${RUSTFLAGS:-} --cfg tokio_unstable -C force-frame-pointers=yes" \
//! RUSTDOCFLAGS="${RUSTDOCFLAGS:-} --cfg tokio_unstable" \
//! CARGO_TARGET_DIR=target/leakcheck cargo test
//! ```
//!
//! Under a plain `cargo test` (no `--cfg tokio_unstable`) leakcheck still
//! works but degrades to comparing the runtime's live task count
//! (`num_alive_tasks`), and its reports say so.
//!
//! # Features
//! - `taskdump` (default): "parked at" traces from tokio's task dump in leak
//!   reports. It switches on tokio's `taskdump` feature only where tokio has
//!   it (Linux x86, x86_64, aarch64 and s390x, built with
//!   `--cfg tokio_unstable`) and does nothing elsewhere, so a default build
//!   never fails. A multi-thread runtime is dumped at most once, with at most
//!   [`MAX_DUMPED_TASKS_MULTI_THREAD`] live tasks (tokio 1.54's multi-thread
//!   dump can otherwise stop the runtime; see [`claim_task_dump`]); a report
//!   without "parked at" says why. [`Tracker::task_dump`] gives the same dump,
//!   under the same rules, as text for a debug endpoint.
//! - `task-names` (off by default): `TaskNames`, a `tracing-subscriber`
//!   layer that gives reports the names tasks were spawned with
//!   (`tokio::task::Builder::name`): tokio's hooks do not pass names, its
//!   `tracing` spans do.
//! - `tower` (off by default): `leakcheck::service`, a tower layer that labels every
//!   task spawned under a request with the request's id, and a service that
//!   serves the live tasks as JSON, for hyper/axum services.
//!
//! # What counts as a leak
//! Every task spawned during the scope (the test body, or the code between
//! [`verify_none`] and [`VerifyGuard::verify`]), directly or transitively —
//! `tokio::spawn`, `Handle::spawn`, `JoinSet`, `task::Builder`, `spawn_local`
//! on a `LocalRuntime` — that is still alive when the body has returned and
//! the grace period (default [`DEFAULT_GRACE`]) has passed. The wait ends as
//! soon as the last such task terminates: a clean test pays no fixed delay.
//! The grace is measured in real time, also on a runtime whose clock is paused
//! (`start_paused`), and needs no time driver.
//! Tasks that were alive before the scope began are not its leaks.
//!
//! Each `#[leakcheck::test]` owns its runtime and tracker, so tests running in
//! parallel never blame each other's tasks — something goleak, which inspects
//! every goroutine of the process, cannot do (`t.Parallel` breaks it).
//!
//! # Not detected (limitations)
//! - Tasks on a `LocalSet`: tokio fires no hooks for them. Use a
//!   `LocalRuntime` (`flavor = "local"`) instead.
//! - `spawn_blocking` closures and `std::thread`s: tokio reports their end but
//!   not their start, so they are not tracked. A task spawned *from* them is
//!   tracked, but tokio does not say which task started the closure or
//!   thread, so it joins only the scopes that enclose every scope open on its
//!   runtime: the one scope of a `#[leakcheck::test]` (each test has its own
//!   runtime), the outer scope when several are nested or run in parallel
//!   inside it, and none of several unrelated parallel scopes — which
//!   therefore never blame each other, and miss such a task.
//! - Tasks on other runtimes than the test's.
//! - A test body's own futures that are dropped unfinished (not tasks).
//!
//! # Configuration
//! | variable | values | default |
//! |---|---|---|
//! | `LEAKCHECK_BACKTRACE` | `off` (spawn site only) or `full` (spawn site and spawn backtrace) | `full` |
//! | `LEAKCHECK_GRACE` | time tasks get to finish after the body, e.g. `250ms`, `2s`, `0` | `250ms` |
//! | `LEAKCHECK_IGNORE` | comma-separated ignore patterns for every test, e.g. `src/metrics.rs,hyper_util::client` | none |
//! | `LEAKCHECK_MODE` | `fail` (panic with the report) or `warn` (print it, pass) | `fail` |
//! | `LEAKCHECK_REPORT_DIR` | directory receiving one JSON report per leaking test, written atomically (`"mode": "warn"` when the leak only warned; none for an expected `#[should_panic]` leak) | unset; `target/leakcheck-reports` in the workspace when `CI` is set |
//! | `LEAKCHECK_BASELINE` | a baseline file (`cargo leakcheck baseline`): leaks at the spawn sites it lists do not fail their test | unset (`cargo leakcheck test` sets it to `leakcheck-baseline.json` when that exists) |
//!
//! Crate-wide settings can also live in the manifest, read by every test of
//! the package (the package's table over the workspace's):
//!
//! ```toml
//! [workspace.metadata.leakcheck]   # or [package.metadata.leakcheck]
//! grace = "500ms"
//! ignore = ["hyper_util::client::legacy::pool", "src/metrics.rs"]
//! ```
//!
//! Precedence: attribute argument, then environment, then
//! `[package.metadata.leakcheck]`, then `[workspace.metadata.leakcheck]`, then
//! the default; `ignore` patterns from all of them add up. A malformed table
//! fails the test with a message naming the file.
//!
//! Under GitHub Actions
//! (`GITHUB_ACTIONS=true`) each leaking spawn site is also printed as an
//! `::error file=…,line=…` annotation, so the leak shows on the pull request
//! (`::warning` in `warn` mode; none for a `#[should_panic]` test's expected
//! leak).
//!
//! # Cost
//! The spawn hook captures the spawn site (free) and, with backtraces on, up
//! to 64 return addresses by a bounded frame-pointer walk, interned so equal
//! stacks are stored once; symbols are resolved only for reported tasks.
//! Records live in 16 shards, each a ring indexed by task id (48 bytes per
//! record). See `BENCHMARKS.md` for measured ratios against an untracked
//! runtime, tokio-metrics and console-subscriber.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    rust_2018_idioms
)]
// Without tokio's hooks the recording half (capture, registry inserts) has no
// caller; the data types stay ungated so reports read the same either way.
#![cfg_attr(not(tokio_unstable), allow(dead_code))]

mod baseline;
mod capture;
mod clock;
mod collect;
mod dump;
mod duration;
mod harness;
mod label;
mod liveness;
mod manifest;
mod modules;
mod names;
mod output;
mod paths;
mod registry;
mod report;
#[cfg(feature = "tower")]
pub mod service;
mod settings;
mod symbolize;
mod tracker;
mod verify;

pub use baseline::{
    BASELINE_OUTCOME_DIR, BASELINE_SCHEMA_VERSION, Baseline, BaselineEntry, BaselineOutcome,
    DEFAULT_BASELINE_FILE, Screened,
};
pub use dump::{MAX_DUMPED_TASKS, MAX_DUMPED_TASKS_MULTI_THREAD, claim_task_dump};
pub use duration::parse_duration;
pub use label::{Labeled, labeled};
#[cfg(feature = "task-names")]
pub use names::TaskNames;
pub use output::{github_annotation, write_atomically, write_report};
pub use report::{
    Frame, LeakReport, Liveness, LivenessClass, ParkedAt, SCHEMA_VERSION, SiteGroup, Snapshot,
    SourceLocation, Stack, Subject, TOKIO_UNSTABLE_HINT, TaskEntry,
};
pub use settings::{
    BacktraceMode, DEFAULT_BACKTRACE, DEFAULT_CI_REPORT_DIR, DEFAULT_GRACE, DEFAULT_MODE,
    IGNORE_SEPARATOR, Mode, SettingError,
};
pub use tracker::{Tracker, TrackerBuilder};
pub use verify::{VerifyGuard, verify_none};

/// Runs an async test on a fresh tokio runtime with a [`Tracker`] installed
/// and fails it if tasks it spawned outlive it.
///
/// A drop-in for `#[tokio::test]`: it takes every argument of tokio's
/// attribute, with the same meaning and the same compile errors —
/// - `flavor = "current_thread"` (the default), `"multi_thread"` or `"local"`
///   (a `LocalRuntime`, for `spawn_local`);
/// - `worker_threads = 2` (`multi_thread` only);
/// - `start_paused = true` (not `multi_thread`; needs tokio's `test-util`
///   feature in your own dependencies, as with tokio);
/// - `unhandled_panic = "ignore" | "shutdown_runtime"` (not `multi_thread`;
///   needs `--cfg tokio_unstable`, as with tokio: a compile error without it);
/// - `name = "…"`, the runtime's name (`Handle::name`);
/// - `crate = "path::to::tokio"`, for a renamed or re-exported tokio (default:
///   the tokio leakcheck itself uses, so your crate need not name it) —
///
/// and adds its own:
/// - `grace = "250ms"`: time tasks get to finish after the body returns
///   (checked at compile time, same syntax as `LEAKCHECK_GRACE`);
/// - `ignore = "pattern"` (repeatable): tasks whose spawn-site path ends with
///   the pattern (`"conn.rs"`, `"src/conn.rs:88"`) or whose spawn backtrace
///   has a function starting with it (`"hyper_util::client"`) are not leaks;
/// - `mode = "fail" | "warn"`;
/// - `leakcheck_crate = "path::to::leakcheck"`, for a renamed or re-exported
///   leakcheck.
///
/// The body may return whatever a `#[test]` may (`()`, `Result<(), E: Debug>`,
/// …), and its own failure always comes first: a panic fails the test with its
/// own message, a returned `Err` is printed (`Error: …`) before any leak
/// report follows.
///
/// It works beside `#[should_panic]` and `#[ignore]`, above or below
/// `#[rstest]` (each case is checked, and reported, on its own), and inside
/// wrappers that take the test attribute as an argument:
/// `#[test_log::test(leakcheck::test)]`.
/// As with tokio, a second test attribute (`#[test]`, or a bare
/// `#[test_log::test]` above it, which adds one) is a compile error that says
/// so.
///
/// Without `--cfg tokio_unstable` (count-only mode) every argument is
/// honoured, with one limit: `ignore` patterns need spawn sites, so a test
/// with patterns whose count finds tasks left prints the report with a note
/// saying so and is not failed.
///
/// ```
/// #[leakcheck::test(flavor = "multi_thread", worker_threads = 2, grace = "100ms")]
/// async fn pool_shuts_down() -> Result<(), std::io::Error> {
///     let (tx, rx) = tokio::sync::oneshot::channel::<()>();
///     let worker = tokio::spawn(async move { rx.await.ok() });
///     drop(tx);
///     worker.await?;
///     Ok(())
/// }
/// ```
pub use leakcheck_macros::test;

#[doc(hidden)]
pub mod __private {
    pub use crate::__tokio_unstable_only as tokio_unstable_only;
    pub use crate::harness::{Flavor, TestConfig, run_test};
    pub use crate::settings::Mode;
    pub use std::time::Duration;
    pub use tokio;
}
