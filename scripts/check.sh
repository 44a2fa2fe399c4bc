#!/usr/bin/env bash
# Runs the checks of .github/workflows/ci.yml, step for step: the workflow
# calls this script, so a green run here means the same commands pass there.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: scripts/check.sh [STEP...]

Runs the CI checks locally, in this order (all of them when no STEP is given):
  fmt             cargo fmt --all --check
  clippy          cargo clippy --workspace --all-targets -- -D warnings
  doc             cargo doc --workspace --no-deps, warnings denied, with --cfg tokio_unstable
  shellcheck      shellcheck scripts/*.sh
  test            the tests with --cfg tokio_unstable (the .cargo/config.toml default):
                  cargo-nextest (profile from NEXTEST_PROFILE, default "default")
                  plus doctests when nextest is installed, cargo test otherwise
  test-degraded   leakcheck's degraded-mode and attribute tests, built without --cfg tokio_unstable,
                  in a separate target directory so the two builds do not evict each other

Environment:
  CARGO_TARGET_DIR  target directory (default: target); test-degraded uses <it>/degraded
  NEXTEST_PROFILE   nextest profile for the test step (CI uses "ci", see .config/nextest.toml)
USAGE
}

# Setting RUSTFLAGS/RUSTDOCFLAGS replaces .cargo/config.toml's flags, so every
# step that sets them spells out all the flags it wants. Degraded mode keeps
# frame pointers and drops only `--cfg tokio_unstable`.
readonly DEGRADED_RUSTFLAGS="-C force-frame-pointers=yes"

run() {
    printf '\n==> %s\n' "$*" >&2
    "$@"
}

step_fmt() {
    run cargo fmt --all --check
}

step_clippy() {
    run cargo clippy --workspace --all-targets -- -D warnings
}

step_doc() {
    RUSTDOCFLAGS="--cfg tokio_unstable -D warnings" run cargo doc --workspace --no-deps
}

step_shellcheck() {
    if ! command -v shellcheck >/dev/null; then
        echo "check.sh: shellcheck is not installed (apt-get install shellcheck)" >&2
        return 1
    fi
    run shellcheck scripts/*.sh
}

step_test() {
    if cargo nextest --version >/dev/null 2>&1; then
        run cargo nextest run --workspace --profile "${NEXTEST_PROFILE:-default}"
        # nextest does not run doctests.
        run cargo test --workspace --doc
    else
        echo "note: cargo-nextest not installed, running cargo test" >&2
        run cargo test --workspace
    fi
}

step_test_degraded() {
    local target_dir="${CARGO_TARGET_DIR:-target}/degraded"
    RUSTFLAGS="$DEGRADED_RUSTFLAGS" RUSTDOCFLAGS="" CARGO_TARGET_DIR="$target_dir" \
        run cargo test -p leakcheck --test degraded --test attribute
}

main() {
    # Paths below are relative to the workspace root.
    cd "$(dirname "${BASH_SOURCE[0]}")/.."
    local steps=("$@")
    if [[ ${#steps[@]} -eq 0 ]]; then
        steps=(fmt clippy doc shellcheck test test-degraded)
    fi
    for step in "${steps[@]}"; do
        case "$step" in
            fmt) step_fmt ;;
            clippy) step_clippy ;;
            doc) step_doc ;;
            shellcheck) step_shellcheck ;;
            test) step_test ;;
            test-degraded) step_test_degraded ;;
            -h | --help) usage; exit 0 ;;
            *) echo "check.sh: unknown step '$step'" >&2; usage >&2; exit 2 ;;
        esac
    done
    printf '\ncheck.sh: all steps passed: %s\n' "${steps[*]}" >&2
}

main "$@"
