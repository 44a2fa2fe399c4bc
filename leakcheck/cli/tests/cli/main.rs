//! Integration tests: the `leakcheck` binary run on the fixtures under
//! `tests/fixtures/`, one module per subcommand plus bad input and usage.

mod bad_input;
mod diff;
mod flamegraph;
mod html;
mod snapshot;
mod summary;
mod support;
mod usage;
