#!/usr/bin/env bash
# Where tokio's Handle::dump stops working on this machine: DUMPS dumps in a
# row per case (flavor x idle/busy/runnable x live tasks), all of a runtime's
# tasks woken from a worker after each (as a suite does between two leaking
# tests), each case RUNS times in its own process under a timeout, since a
# wedged dump cannot be interrupted from inside. Figures go to BENCHMARKS.md
# ("Task dumps at scale").
set -euo pipefail
cd "$(dirname "$0")/.."
TIMEOUT="${TIMEOUT:-15}"
cargo build -q -p leakcheck --example dump_scale
bin="${CARGO_TARGET_DIR:-target}/debug/examples/dump_scale"
for flavor in current multi; do
    for load in ${LOADS:-idle busy runnable}; do
        for tasks in ${TASKS:-100 128 256 300 1000 3000 10000}; do
            for _ in $(seq "${RUNS:-1}"); do
                if ! timeout "$TIMEOUT" "$bin" "$flavor" "$tasks" "$load" "${DUMPS:-10}"; then
                    echo "$flavor tasks=$tasks $load: wedged or timed out (no answer within ${TIMEOUT}s, or a dump over 5 s)"
                fi
            done
        done
    done
done
