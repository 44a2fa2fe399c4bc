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
  clippy-degraded the same clippy on the count-only build (without --cfg tokio_unstable),
                  in <target>/degraded
  doc             cargo doc --workspace --no-deps, warnings denied, with --cfg tokio_unstable
  shellcheck      shellcheck scripts/*.sh
  msrv            no package in the dependency graph needs a newer rustc than the declared
                  rust-version, and with that toolchain installed (CI installs it) they build
                  with it; LEAKCHECK_REQUIRE_MSRV=1 fails instead of skipping that build
  package         cargo publish --dry-run --workspace: the published crates package and build
                  from their packaged sources alone (nothing is uploaded)
  test            the tests with --cfg tokio_unstable (the .cargo/config.toml default):
                  cargo-nextest with profile NEXTEST_PROFILE (default "ci") and, when
                  NEXTEST_PARTITION is set, --partition (CI shards: count:K/N);
                  cargo test when nextest is not installed. With a browser installed
                  the HTML render test must run (LEAKCHECK_REQUIRE_CHROMIUM=1).
  doctest         cargo test --workspace --doc (nextest does not run doctests)
  test-degraded   leakcheck's degraded-mode and attribute tests, built without --cfg tokio_unstable,
                  in a separate target directory so the two builds do not evict each other
  leak-report     leakcheck summary + html over the report directories (one per CI shard),
                  and GitHub annotations under GitHub Actions
  leak-gate       leakcheck diff --fail-on-new of the reports against LEAKCHECK_BASE_DIR
                  (the main branch's reports): fails only on new leaks; not run by default

Environment:
  CARGO_TARGET_DIR       target directory (default: target); degraded steps use <it>/degraded
  NEXTEST_PROFILE        nextest profile for the test step (default "ci", see .config/nextest.toml)
  NEXTEST_PARTITION      e.g. count:1/3: run only that shard of the tests
  LEAKCHECK_REPORT_DIR   where the tests write reports (default <target>/leakcheck-reports)
  LEAKCHECK_REPORT_DIRS  space-separated report directories leak-report and leak-gate read
                         (default: LEAKCHECK_REPORT_DIR)
  LEAKCHECK_BASE_DIR     the main branch's reports, for leak-gate
  LEAKCHECK_HTML         the page leak-report writes (default <target>/leakcheck-reports.html)
  LEAKCHECK_LINK_BASE    leak-gate links sites to <it>/<file>#L<line> (default: this commit
                         on GitHub, from GITHUB_SERVER_URL, GITHUB_REPOSITORY and GITHUB_SHA)
  GITHUB_STEP_SUMMARY    when set, leak-report and leak-gate append their markdown to it
USAGE
}

# Setting RUSTFLAGS/RUSTDOCFLAGS replaces .cargo/config.toml's flags, so every
# step that sets them spells out all the flags it wants. Degraded mode keeps
# frame pointers and drops only `--cfg tokio_unstable`.
readonly DEGRADED_RUSTFLAGS="-C force-frame-pointers=yes"

target_dir() {
    echo "${CARGO_TARGET_DIR:-target}"
}

run() {
    printf '\n==> %s\n' "$*" >&2
    "$@"
}

# The triage CLI, built from this checkout.
leakcheck() {
    cargo run --quiet --locked -p leakcheck-cli -- "$@"
}

report_dirs() {
    local dirs="${LEAKCHECK_REPORT_DIRS:-${LEAKCHECK_REPORT_DIR:-$(target_dir)/leakcheck-reports}}"
    # Word splitting is the point: one argument per directory.
    # shellcheck disable=SC2086
    printf '%s\n' $dirs
}

# Appends stdin to the job summary under GitHub Actions, and shows it.
to_summary() {
    if [[ -n "${GITHUB_STEP_SUMMARY:-}" ]]; then
        tee -a "$GITHUB_STEP_SUMMARY"
    else
        cat
    fi
}

step_fmt() {
    run cargo fmt --all --check
}

step_clippy() {
    run cargo clippy --workspace --all-targets -- -D warnings
}

step_clippy_degraded() {
    RUSTFLAGS="$DEGRADED_RUSTFLAGS" RUSTDOCFLAGS="" CARGO_TARGET_DIR="$(target_dir)/degraded" \
        run cargo clippy --workspace --all-targets -- -D warnings
}

step_doc() {
    RUSTDOCFLAGS="--cfg tokio_unstable -D warnings" run cargo doc --workspace --no-deps
}

# The workspace's declared rust-version.
declared_msrv() {
    sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml
}

step_msrv() {
    local msrv
    msrv="$(declared_msrv)"
    printf '\n==> every package in the dependency graph against rust-version %s\n' "$msrv" >&2
    cargo metadata --format-version 1 --locked --filter-platform "$(rustc -vV | sed -n 's/^host: //p')" |
        python3 -c '
import json, sys
def version(text):
    return tuple(int(part) for part in (text.split(".") + ["0", "0"])[:3])
msrv = version(sys.argv[1])
meta = json.load(sys.stdin)
too_new = sorted(
    "{} {} needs rustc {}".format(p["name"], p["version"], p["rust_version"])
    for p in meta["packages"]
    if p.get("rust_version")
    and version(p["rust_version"]) > msrv
)
if too_new:
    sys.exit("check.sh: newer than rust-version " + sys.argv[1] + ":\n  " + "\n  ".join(too_new))
' "$msrv"
    if rustup run "$msrv" cargo --version >/dev/null 2>&1; then
        CARGO_TARGET_DIR="$(target_dir)/msrv" \
            run cargo "+$msrv" check --locked -p leakcheck -p leakcheck-macros -p leakcheck-cli
    elif [[ "${LEAKCHECK_REQUIRE_MSRV:-}" == 1 ]]; then
        echo "check.sh: toolchain $msrv is not installed (rustup toolchain install $msrv)" >&2
        return 1
    else
        echo "check.sh: msrv: skipped the build with $msrv: not installed (rustup toolchain install $msrv)" >&2
    fi
}

step_package() {
    run cargo publish --dry-run --locked --workspace
}

step_shellcheck() {
    if ! command -v shellcheck >/dev/null; then
        echo "check.sh: shellcheck is not installed (apt-get install shellcheck)" >&2
        return 1
    fi
    run shellcheck scripts/*.sh
}

step_test() {
    if command -v chromium >/dev/null 2>&1 || command -v google-chrome >/dev/null 2>&1; then
        export LEAKCHECK_REQUIRE_CHROMIUM="${LEAKCHECK_REQUIRE_CHROMIUM:-1}"
    fi
    export LEAKCHECK_REPORT_DIR="${LEAKCHECK_REPORT_DIR:-$PWD/$(target_dir)/leakcheck-reports}"
    if cargo nextest --version >/dev/null 2>&1; then
        local partition=()
        if [[ -n "${NEXTEST_PARTITION:-}" ]]; then
            partition=(--partition "$NEXTEST_PARTITION")
        fi
        run cargo nextest run --workspace --profile "${NEXTEST_PROFILE:-ci}" "${partition[@]}"
    elif [[ -n "${NEXTEST_PARTITION:-}" ]]; then
        echo "check.sh: NEXTEST_PARTITION=$NEXTEST_PARTITION needs cargo-nextest (cargo install cargo-nextest)" >&2
        return 2
    else
        echo "note: cargo-nextest not installed, running cargo test (doctests included)" >&2
        run cargo test --workspace
    fi
    # The off-by-default `task-names` feature has its own test (once, not per shard).
    if [[ -z "${NEXTEST_PARTITION:-}" || "$NEXTEST_PARTITION" == count:1/* ]]; then
        run cargo test -p leakcheck --features task-names --test task_names
    fi
}

step_doctest() {
    run cargo test --workspace --doc
}

step_test_degraded() {
    RUSTFLAGS="$DEGRADED_RUSTFLAGS" RUSTDOCFLAGS="" CARGO_TARGET_DIR="$(target_dir)/degraded" \
        run cargo test -p leakcheck --test degraded --test attribute
}

step_leak_report() {
    local dirs
    mapfile -t dirs < <(report_dirs)
    local html="${LEAKCHECK_HTML:-$(target_dir)/leakcheck-reports.html}"
    printf '\n==> leak report over %s\n' "${dirs[*]}" >&2
    {
        echo '### Leaked tokio tasks'
        echo '```'
        leakcheck summary --allow-empty "${dirs[@]}"
        echo '```'
    } | to_summary
    leakcheck html --allow-empty "${dirs[@]}" -o "$html"
    if [[ "${GITHUB_ACTIONS:-}" == "true" ]]; then
        # One ::error annotation per leaking spawn site, for the whole run.
        leakcheck summary --format github --allow-empty "${dirs[@]}"
    fi
}

step_leak_gate() {
    if [[ -z "${LEAKCHECK_BASE_DIR:-}" ]]; then
        echo "check.sh: leak-gate needs LEAKCHECK_BASE_DIR (the main branch's report directory)" >&2
        return 2
    fi
    local dirs
    mapfile -t dirs < <(report_dirs)
    # The reports of all shards, in one directory, to diff as one side.
    local merged
    merged="$(target_dir)/leakcheck-reports-merged"
    rm -rf "$merged"
    mkdir -p "$merged"
    local dir
    for dir in "${dirs[@]}"; do
        if [[ -d "$dir" ]]; then
            find "$dir" -maxdepth 1 -name '*.json' ! -name '.*' -exec cp {} "$merged"/ \;
        fi
    done
    local link=()
    if [[ -n "${LEAKCHECK_LINK_BASE:-}" ]]; then
        link=(--link-base "$LEAKCHECK_LINK_BASE")
    elif [[ -n "${GITHUB_REPOSITORY:-}" && -n "${GITHUB_SHA:-}" ]]; then
        link=(--link-base "${GITHUB_SERVER_URL:-https://github.com}/$GITHUB_REPOSITORY/blob/$GITHUB_SHA")
    fi
    printf '\n==> leak gate: %s against %s\n' "$merged" "$LEAKCHECK_BASE_DIR" >&2
    local status=0
    leakcheck diff --allow-empty --fail-on-new --format markdown "${link[@]}" \
        "$LEAKCHECK_BASE_DIR" "$merged" | to_summary || status=$?
    return "$status"
}

main() {
    # Paths below are relative to the workspace root.
    cd "$(dirname "${BASH_SOURCE[0]}")/.."
    local steps=("$@")
    if [[ ${#steps[@]} -eq 0 ]]; then
        steps=(fmt clippy clippy-degraded doc shellcheck msrv package test doctest test-degraded leak-report)
    fi
    for step in "${steps[@]}"; do
        case "$step" in
            fmt) step_fmt ;;
            clippy) step_clippy ;;
            clippy-degraded) step_clippy_degraded ;;
            doc) step_doc ;;
            shellcheck) step_shellcheck ;;
            msrv) step_msrv ;;
            package) step_package ;;
            test) step_test ;;
            doctest) step_doctest ;;
            test-degraded) step_test_degraded ;;
            leak-report) step_leak_report ;;
            leak-gate) step_leak_gate ;;
            -h | --help) usage; exit 0 ;;
            *) echo "check.sh: unknown step '$step'" >&2; usage >&2; exit 2 ;;
        esac
    done
    printf '\ncheck.sh: all steps passed: %s\n' "${steps[*]}" >&2
}

main "$@"
