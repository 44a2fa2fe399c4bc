//! The modules behind the two binaries of `leakcheck-cli`: `leakcheck`
//! (triage of leak reports and snapshots: `src/main.rs`) and
//! `cargo leakcheck` (adopt leakcheck in a workspace and run its suite with
//! tokio's task hooks on: `src/bin/cargo-leakcheck.rs`, [`cargo`]). The
//! subcommand's end-of-run summary and HTML page are the triage tool's
//! [`summary`] and [`html`] modules, shared here rather than copied.

pub mod cargo;
pub mod cli;
pub mod diff;
pub mod document;
pub mod error;
pub mod exit;
pub mod fetch;
pub mod flamegraph;
pub mod html;
pub mod http;
pub mod output;
#[cfg(test)]
mod properties;
pub mod summary;
pub mod text;
pub mod watch;
