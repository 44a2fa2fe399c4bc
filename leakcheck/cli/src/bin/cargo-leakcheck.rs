//! `cargo-leakcheck`: the `cargo leakcheck` subcommand (`adopt`, `test`,
//! `nextest`, `baseline`); see [`leakcheck_cli::cargo`].

fn main() -> std::process::ExitCode {
    leakcheck_cli::cargo::main()
}
