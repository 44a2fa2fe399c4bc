#!/usr/bin/env bash
# Where tokio's Handle::dump stops working on this machine: one dump per case
# (flavor x idle/busy workers x live tasks), each in its own process under a
# timeout, since a wedged dump cannot be interrupted from inside. Figures go
# to BENCHMARKS.md ("Task dumps at scale").
set -euo pipefail
cd "$(dirname "$0")/.."
TIMEOUT="${TIMEOUT:-15}"
cargo build -q -p leakcheck --example dump_scale
bin="${CARGO_TARGET_DIR:-target}/debug/examples/dump_scale"
for flavor in current multi; do
    for load in ${LOADS:-idle busy runnable}; do
        for tasks in ${TASKS:-100 128 256 300 1000 3000 10000}; do
            if ! timeout "$TIMEOUT" "$bin" "$flavor" "$tasks" "$load"; then
                echo "$flavor tasks=$tasks $load: no answer within ${TIMEOUT}s (killed)"
            fi
        done
    done
done
