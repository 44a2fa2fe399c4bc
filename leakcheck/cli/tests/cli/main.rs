//! Integration tests: the `leakcheck` binary run on the fixtures under
//! `tests/fixtures/`, one module per subcommand, plus bad input, usage
//! and `scripts/bisect-leaks.sh`.

mod bad_input;
mod diff;
mod flamegraph;
mod gate;
mod html;
mod scripts;
mod snapshot;
mod summary;
mod support;
mod usage;
mod watch;
