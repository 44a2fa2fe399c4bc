#!/usr/bin/env bash
# Runs the tests with leak reports switched on, then turns the reports into a
# summary on the terminal, an HTML page and a flame graph.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: scripts/triage.sh [-o DIR] [--nextest] [-- TEST_ARGS...]

  1. empties DIR/reports and runs `cargo test TEST_ARGS` (or `cargo nextest run
     TEST_ARGS` with --nextest) with LEAKCHECK_REPORT_DIR=DIR/reports
  2. leakcheck summary DIR/reports
  3. leakcheck html DIR/reports -o DIR/leaks.html
  4. leakcheck flamegraph DIR/reports -o DIR/leaks.svg

  -o DIR     where reports and pages go (default: target/leakcheck-triage)
  --nextest  run the tests with cargo-nextest

The leakcheck binary is $LEAKCHECK_BIN when set, else this workspace's
leakcheck-cli (cargo run -p leakcheck-cli).

Exit status: that of the test run (so a leak still fails the script), or 2 on a
usage error.
USAGE
}

out="target/leakcheck-triage"
runner=(cargo test)
while [[ $# -gt 0 ]]; do
    case "$1" in
        -o)
            [[ $# -ge 2 ]] || { echo "triage.sh: -o needs a directory" >&2; exit 2; }
            out="$2"
            shift 2
            ;;
        --nextest) runner=(cargo nextest run); shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; break ;;
        *) echo "triage.sh: unknown argument '$1' (test arguments go after --)" >&2; usage >&2; exit 2 ;;
    esac
done

leakcheck() {
    if [[ -n "${LEAKCHECK_BIN:-}" ]]; then
        "$LEAKCHECK_BIN" "$@"
    else
        cargo run --quiet -p leakcheck-cli -- "$@"
    fi
}

mkdir -p "$out"
out="$(cd "$out" && pwd)"
# Absolute, because cargo runs each test binary from its own package root.
reports="$out/reports"
rm -rf "$reports"
mkdir -p "$reports"

status=0
LEAKCHECK_REPORT_DIR="$reports" "${runner[@]}" "$@" || status=$?

if ! compgen -G "$reports/*.json" >/dev/null; then
    echo "triage.sh: no leak reports written (test run exit status $status)" >&2
    exit "$status"
fi
leakcheck summary "$reports"
leakcheck html "$reports" -o "$out/leaks.html"
leakcheck flamegraph "$reports" -o "$out/leaks.svg"
echo "triage.sh: open $out/leaks.html" >&2
exit "$status"
