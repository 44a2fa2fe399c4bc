//! Integration tests of `cargo leakcheck` (the `cargo-leakcheck` binary) on
//! fixture workspaces copied to a scratch directory and git-initialised
//! there: `adopt` (the rewrite, idempotence, `--check`, the VCS checks, the
//! manifest forms, bad input) and `test` / `baseline` end to end.

mod adopt;
mod run;
mod support;
mod usage;
