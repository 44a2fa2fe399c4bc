#!/usr/bin/env bash
# Runs every test of one test binary alone and lists the tests that leak
# tokio tasks. For suites whose leaks only show per process (tests sharing a
# runtime, a verify-at-exit hook), one process per test pins each leak on a test.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: scripts/bisect-leaks.sh [-t SECONDS] [-o DIR] TEST_BINARY [FILTER]

Runs each test of TEST_BINARY in its own process (with --exact --test-threads=1)
and reports the ones that leak. A test leaks when it writes a leakcheck report
into its LEAKCHECK_REPORT_DIR or prints leakcheck's "N leaked tasks" line.

  TEST_BINARY  a libtest test binary: the "Executable" path that
               `cargo test -p PACKAGE --no-run` prints
  FILTER       only tests whose name contains FILTER
  -t SECONDS   time limit per test (default 120); a test that hits it is listed as "timeout"
  -o DIR       keep the logs (DIR/<n>/log) and the leak reports (DIR/reports/) for
               `leakcheck summary DIR/reports` (default: a temporary directory, removed at exit)

Runs in the current directory; cargo runs tests from the package root, so cd there
first if the tests read files by relative path.

Exit status: 0 no test leaked, 1 at least one test leaked, 2 usage error.
USAGE
}

limit=120
keep=""
while getopts ':t:o:h' option; do
    case "$option" in
        t) limit="$OPTARG" ;;
        o) keep="$OPTARG" ;;
        h) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
if [[ $# -lt 1 || $# -gt 2 ]]; then
    usage >&2
    exit 2
fi
binary="$1"
filter="${2:-}"
if [[ ! -x "$binary" ]]; then
    echo "bisect-leaks.sh: $binary: not an executable test binary (build it with cargo test --no-run)" >&2
    exit 2
fi
if ! [[ "$limit" =~ ^[1-9][0-9]*$ ]]; then
    echo "bisect-leaks.sh: -t $limit: expected a whole number of seconds" >&2
    exit 2
fi

if [[ -n "$keep" ]]; then
    mkdir -p "$keep"
    work="$(cd "$keep" && pwd)"
else
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
fi

# libtest's terse listing: "path::to::test: test" (benchmarks end in ": benchmark").
mapfile -t tests < <("$binary" --list --format terse | sed -n 's/: test$//p' | grep -F -- "$filter" || true)
if [[ ${#tests[@]} -eq 0 ]]; then
    matching=""
    [[ -z "$filter" ]] || matching=" matching \"$filter\""
    echo "bisect-leaks.sh: $binary lists no tests$matching" >&2
    exit 2
fi

mkdir -p "$work/reports"
leaking=()
failing=0
for index in "${!tests[@]}"; do
    name="${tests[$index]}"
    dir="$work/$index"
    mkdir -p "$dir/reports"
    status=0
    LEAKCHECK_REPORT_DIR="$dir/reports" timeout "$limit" \
        "$binary" --exact "$name" --test-threads=1 >"$dir/log" 2>&1 || status=$?
    report="$(find "$dir/reports" -maxdepth 1 -name '*.json' -not -name '.*' -print -quit)"
    if [[ -n "$report" ]]; then
        # Report names come from test names, so they do not collide.
        mv "$dir/reports/"*.json "$work/reports/"
        report="$work/reports/${report##*/}"
    fi
    rmdir "$dir/reports" 2>/dev/null || true
    if [[ -n "$report" ]] || grep -Eq 'leakcheck: [0-9]+ leaked tasks? in' "$dir/log"; then
        leaking+=("$name")
        printf 'leak     %s%s\n' "$name" "${report:+  ($report)}"
    elif [[ $status -eq 124 ]]; then
        failing=$((failing + 1))
        printf 'timeout  %s (after %ss; log: %s)\n' "$name" "$limit" "$dir/log"
    elif [[ $status -ne 0 ]]; then
        failing=$((failing + 1))
        printf 'fail     %s (exit %s, no leak report; log: %s)\n' "$name" "$status" "$dir/log"
    else
        printf 'ok       %s\n' "$name"
    fi
done

printf '\n%d tests run alone: %d leak, %d fail or time out without a leak report\n' \
    "${#tests[@]}" "${#leaking[@]}" "$failing"
if [[ ${#leaking[@]} -gt 0 ]]; then
    printf 'leaking tests:\n'
    printf '  %s\n' "${leaking[@]}"
    if [[ -n "$keep" ]]; then
        printf 'reports: leakcheck summary %s/reports\n' "$work"
    fi
    exit 1
fi
