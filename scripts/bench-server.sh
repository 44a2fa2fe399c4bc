#!/usr/bin/env bash
# Throughput of leakcheck-server with the leakcheck tracker installed (full spawn
# backtraces) vs. without a tracker, measured side by side in one run.
#
# Both servers run at once, pinned to the same core with one worker thread each,
# and wrk runs on the other core (taskset), all on loopback. Only one server is
# loaded at a time: short wrk runs alternate between them (order flipped every
# round), so slow drifts in machine load hit both alike. The figure per path is
# the median of the per-round ratios tracked/untracked. Both servers must end
# with exit 0 (the tracked one after a clean shutdown leak verification).
#
# Usage: scripts/bench-server.sh            (defaults below)
#        ROUNDS=7 DURATION=10s scripts/bench-server.sh
# Needs: wrk (Debian: apt-get install -y wrk), taskset (util-linux), 2+ cores.
set -euo pipefail

ROUNDS=${ROUNDS:-10}
DURATION=${DURATION:-3s}
WARMUP=${WARMUP:-2s}
CONNECTIONS=${CONNECTIONS:-32}
PATHS=${PATHS:-"/work /healthz"}
SERVER_CORE=${SERVER_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
# --tracking of the "tracked" server; TRACKED_MODE=off makes an A/A run that shows the noise floor.
TRACKED_MODE=${TRACKED_MODE:-full}

cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "bench-server: wrk not found; install it with: apt-get install -y wrk" >&2; exit 1; }
command -v taskset >/dev/null || { echo "bench-server: taskset not found (util-linux)" >&2; exit 1; }

cargo build --release -q -p leakcheck-server
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
server_bin="$target_dir/release/leakcheck-server"
work=$(mktemp -d)
declare -A addr=() pid=()
cleanup() {
    for mode in "${!pid[@]}"; do kill "${pid[$mode]}" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# Starts the server `full` (--tracking $TRACKED_MODE) or `off`; sets addr[$1] and pid[$1].
start_server() {
    local mode=$1 tracking=off
    [ "$mode" = full ] && tracking=$TRACKED_MODE
    taskset -c "$SERVER_CORE" "$server_bin" --listen 127.0.0.1:0 --tls-listen 127.0.0.1:0 \
        --tracking "$tracking" --worker-threads 1 --shutdown-grace 2s >"$work/$mode.out" 2>"$work/$mode.err" &
    pid[$mode]=$!
    for _ in $(seq 1 200); do
        if grep -q '^listening ' "$work/$mode.out"; then
            addr[$mode]=$(sed -E 's/^listening http=([^ ]+) .*/\1/' "$work/$mode.out")
            return
        fi
        sleep 0.05
    done
    echo "bench-server: the server ($mode) did not start:" >&2
    cat "$work/$mode.err" >&2
    exit 1
}

stop_server() {
    local mode=$1 status=0
    kill -TERM "${pid[$mode]}"
    wait "${pid[$mode]}" || status=$?
    unset "pid[$mode]"
    if [ "$status" -ne 0 ]; then
        echo "bench-server: server ($mode) exited $status:" >&2
        tail -n 30 "$work/$mode.err" >&2
        exit 1
    fi
}

# CPU time (clock ticks, user + system) the server $1 has used so far.
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/${pid[$1]}/stat"
}

# One wrk run of $3 against server $1 at path $2; prints "requests/s requests-per-CPU-second".
measure() {
    local mode=$1 path=$2 duration=$3 before after report
    before=$(cpu_ticks "$mode")
    report=$(taskset -c "$LOAD_CORE" wrk -t1 -c"$CONNECTIONS" -d"$duration" "http://${addr[$mode]}$path")
    after=$(cpu_ticks "$mode")
    awk -v ticks=$((after - before)) -v hz="$(getconf CLK_TCK)" '
        /requests in/ { requests = $1 }
        /^Requests\/sec:/ { rps = $2 }
        END { printf "%s %.1f\n", rps, (ticks > 0) ? requests / (ticks / hz) : 0 }' <<<"$report"
}

ratio() { python3 -c "print(f'{$1 / $2 * 100:.1f}')"; }
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

start_server full
start_server off
echo "leakcheck-server throughput, --tracking $TRACKED_MODE vs. --tracking off ($(nproc) cores, load average $(cut -d' ' -f1 /proc/loadavg))"
echo "both servers on core $SERVER_CORE (1 worker each), wrk -t1 -c$CONNECTIONS on core $LOAD_CORE; $ROUNDS alternating rounds of $DURATION per mode and path"
echo "ratio = tracked / untracked: of requests/s (wall clock, shows other load on the machine) and of requests per server CPU-second (steadier)"
for path in $PATHS; do
    for mode in full off; do measure "$mode" "$path" "$WARMUP" >/dev/null; done
    wall=()
    cpu=()
    for round in $(seq 1 "$ROUNDS"); do
        if [ $((round % 2)) -eq 1 ]; then order="full off"; else order="off full"; fi
        declare -A rps=() per_cpu=()
        for mode in $order; do read -r "rps[$mode]" "per_cpu[$mode]" < <(measure "$mode" "$path" "$DURATION"); done
        wall+=("$(ratio "${rps[full]}" "${rps[off]}")")
        cpu+=("$(ratio "${per_cpu[full]}" "${per_cpu[off]}")")
        printf '  %-8s round %2d: tracked %8.0f req/s %8.0f req/CPU-s   untracked %8.0f req/s %8.0f req/CPU-s\n' \
            "$path" "$round" "${rps[full]}" "${per_cpu[full]}" "${rps[off]}" "${per_cpu[off]}"
        unset rps per_cpu
    done
    echo "$path median ratio: requests/s $(median "${wall[@]}")% (rounds ${wall[*]}); requests per CPU-second $(median "${cpu[@]}")% (rounds ${cpu[*]})"
done
stop_server full
stop_server off
echo "both servers exited 0 (tracked one: shutdown leak verification clean)"
