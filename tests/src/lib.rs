//! Chaos suite for `leakcheck-server`: real faults thrown at the real server binary, and after
//! each storm a verdict from leakcheck.
//!
//! [`faults`] is the toolkit (hostile clients, TLS stalls, a fake DNS server, a stalling
//! upstream, a toxic proxy); [`server`] finds, builds, starts and talks to the server process;
//! [`history`] keeps the Jepsen-style ok / fail / info record; [`measure`] samples the server on
//! a timeline; [`scenarios`] are the storms and their verdicts; [`report`] renders the results.
//!
//! The campaign is `cargo run --release -p chaos [-- SCENARIO…]`; the same scenarios at smoke
//! scale are the `scenarios` integration tests.
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

pub mod calibration;
pub mod cpu;
pub mod error;
pub mod faults;
pub mod history;
pub mod http;
pub mod limits;
pub mod measure;
pub mod report;
pub mod scenarios;
pub mod server;
