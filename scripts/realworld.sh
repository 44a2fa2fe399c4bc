#!/usr/bin/env bash
# Runs leakcheck on published crates' own tokio test suites the way a new user
# adopts it (`cargo leakcheck adopt`, then `cargo leakcheck test`) and compares
# each suite with its plain `cargo test` baseline; prints REALWORLD.md's table.
# Every suite is built three times (plain, leakcheck, adopted under plain
# cargo), so this is a long run and not part of .ci/run.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: scripts/realworld.sh [--work DIR] [--crates FILE] [--only NAME]... [--steps LIST] [--repeat N]

For each crate of the list: copy its published source (fetched through cargo) to
DIR/crates/NAME-VERSION as a standalone git repository, run its suite with plain
`cargo test`, run `cargo leakcheck adopt --path <this checkout>/leakcheck` and
`cargo leakcheck test`, then plain `cargo test` again on the adopted tree (count-only
mode), and print one table row per crate.

  --work DIR     scratch directory (default: $REALWORLD_DIR, else /work/realworld); it
                 receives crates/, results/, target/ (one CARGO_TARGET_DIR for every crate)
                 and bin/ (cargo-leakcheck installed from this checkout)
  --crates FILE  tab-separated lines: name, version, cargo test arguments (the features
                 the crate's CI tests with); '#' starts a comment
                 (default: scripts/realworld-crates.tsv)
  --only NAME    only this crate of the list (repeatable)
  --steps LIST   comma-separated, in this order (default: all of them):
                   prepare     fetch, copy, make standalone, lock, git commit (tag `published`)
                   plain       cargo test on the published tree (the baseline)
                   install     cargo install leakcheck-cli from this checkout into DIR/bin
                   adopt       cargo leakcheck adopt on the published tree (tag `adopted`)
                   leakcheck   cargo leakcheck test on the adopted tree
                   count-only  plain cargo test on the adopted tree
                   table       print the table from DIR/results
  --repeat N     run each timed test phase N times and keep the median wall time (default 1)

Test phases run `cargo test --tests --no-fail-fast ARGS` after a `--no-run` build, so the
times compare test execution, not compilation. Doctests are left out: they hold no
#[tokio::test] and cost a rustdoc build each. Needs git, jq and network access to crates.io.
USAGE
}

die() {
    echo "realworld.sh: $*" >&2
    exit 2
}

repo_root=$(cd "$(dirname "$0")/.." && pwd)
work=${REALWORLD_DIR:-/work/realworld}
crates_file="$repo_root/scripts/realworld-crates.tsv"
only=()
steps="prepare,plain,install,adopt,leakcheck,count-only,table"
repeat=1

while (($#)); do
    case "$1" in
        --work) work=${2:?--work needs a directory}; shift 2 ;;
        --crates) crates_file=${2:?--crates needs a file}; shift 2 ;;
        --only) only+=("${2:?--only needs a crate name}"); shift 2 ;;
        --steps) steps=${2:?--steps needs a list}; shift 2 ;;
        --repeat) repeat=${2:?--repeat needs a number}; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument '$1'" ;;
    esac
done

[[ -r "$crates_file" ]] || die "--crates: cannot read '$crates_file'"
[[ "$repeat" =~ ^[1-9][0-9]*$ ]] || die "--repeat: '$repeat' is not a positive number"
for step in ${steps//,/ }; do
    case "$step" in
        prepare | plain | install | adopt | leakcheck | count-only | table) ;;
        *) die "--steps: unknown step '$step' (prepare, plain, install, adopt, leakcheck, count-only, table)" ;;
    esac
done
for tool in git jq cargo; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done

mkdir -p "$work"
work=$(cd "$work" && pwd)
export CARGO_TARGET_DIR="$work/target"
# As CI builds: incremental caches would add a third to the disk the crates'
# three builds take, and speed up nothing in a run that builds each once.
export CARGO_INCREMENTAL=0
export PATH="$work/bin/bin:$PATH"
# The scratch repositories get their own identity: no global git config needed.
git_scratch() {
    git -c user.name=realworld -c user.email=realworld@localhost -c init.defaultBranch=main "$@"
}

# The selected crates as "name<TAB>version<TAB>args" lines.
selected=()
while IFS=$'\t' read -r name version args || [[ -n "$name" ]]; do
    [[ -z "$name" || "$name" == \#* ]] && continue
    [[ -n "$version" ]] || die "$crates_file: '$name' has no version"
    if ((${#only[@]})); then
        keep=0
        for wanted in "${only[@]}"; do [[ "$wanted" == "$name" ]] && keep=1; done
        ((keep)) || continue
    fi
    selected+=("$name"$'\t'"$version"$'\t'"$args")
done <"$crates_file"
((${#selected[@]})) || die "no crate selected from $crates_file"

has_step() {
    [[ ",$steps," == *",$1,"* ]]
}

log() {
    printf '\n==> %s\n' "$*" >&2
}

# fetch_sources: one scratch package depending on every selected crate at its
# exact version; `cargo metadata` then names where cargo unpacked each source.
fetch_sources() {
    local fetch="$work/fetch" line name version args
    mkdir -p "$fetch/src"
    echo 'fn main() {}' >"$fetch/src/main.rs"
    {
        printf '[package]\nname = "realworld-fetch"\nversion = "0.0.0"\nedition = "2021"\npublish = false\n\n[workspace]\n\n[dependencies]\n'
        for line in "${selected[@]}"; do
            IFS=$'\t' read -r name version args <<<"$line"
            printf '%s = "=%s"\n' "$name" "$version"
        done
    } >"$fetch/Cargo.toml"
    rm -f "$fetch/Cargo.lock"
    (cd "$fetch" && cargo fetch --quiet)
    (cd "$fetch" && cargo metadata --format-version 1) >"$fetch/metadata.json"
}

source_dir() {
    jq -r --arg n "$1" --arg v "$2" \
        '.packages[] | select(.name == $n and .version == $v and .source != null) | .manifest_path' \
        "$work/fetch/metadata.json" | head -n1 | xargs -r dirname
}

# count_attrs DIR PATTERN: how many .rs lines under DIR carry PATTERN.
count_attrs() {
    (cd "$1" && git grep -E "$2" -- '*.rs' | wc -l) | tr -d ' '
}

# prepare NAME VERSION: a standalone, locked, committed copy of the published crate.
prepare() {
    local name=$1 version=$2 src dest="$work/crates/$1-$2"
    src=$(source_dir "$name" "$version")
    [[ -n "$src" ]] || die "cargo did not fetch $name $version"
    rm -rf "$dest"
    mkdir -p "$work/crates"
    cp -r "$src" "$dest"
    chmod -R u+w "$dest"
    # A published manifest is standalone, but cargo would look for a
    # workspace above it (DIR/crates) without its own table.
    grep -q '^\[workspace\]' "$dest/Cargo.toml" || printf '\n[workspace]\n' >>"$dest/Cargo.toml"
    # A fresh lock, as the crates' CI resolves one: the Cargo.lock a package
    # ships is the publisher's workspace lock (tower 0.5.3's pins tracing 0.1.9,
    # which cannot build its `tracing` feature).
    (cd "$dest" && rm -f Cargo.lock && cargo generate-lockfile --quiet)
    (cd "$dest" && git_scratch init --quiet && git_scratch add -A && git_scratch add -f Cargo.lock &&
        git_scratch commit --quiet -m "$name $version as published" && git_scratch tag published)
    echo "tokio_attrs=$(count_attrs "$dest" '#\[(::)?tokio::test')" >"$work/results/$name-$version/prepare.facts"
}

# tally LOG OUTCOMES FACTS PREFIX: sums libtest's result lines of LOG into FACTS
# (PREFIX_passed, _failed, _ignored, _binaries, _crashed) and writes one
# "target<TAB>test<TAB>outcome" line per test to OUTCOMES.
tally() {
    local log=$1 outcomes=$2 facts=$3 prefix=$4
    awk -v out="$outcomes" -v prefix="$prefix" '
        /^ +Running / { target = ($2 == "unittests") ? $3 : $2; binaries++ }
        /^test .* \.\.\. (ok|FAILED|ignored)/ {
            status = $0; sub(/^.* \.\.\. /, "", status); sub(/,.*/, "", status)
            print target "\t" $2 "\t" status > out
        }
        /^test result: / {
            results++
            for (i = 1; i <= NF; i++) {
                if ($(i + 1) ~ /^passed;/) passed += $i
                if ($(i + 1) ~ /^failed;/) failed += $i
                if ($(i + 1) ~ /^ignored;/) ignored += $i
            }
        }
        END {
            printf "%s_passed=%d\n%s_failed=%d\n%s_ignored=%d\n", prefix, passed, prefix, failed, prefix, ignored
            printf "%s_binaries=%d\n%s_crashed=%d\n", prefix, binaries, prefix, binaries - results
        }' "$log" >>"$facts"
    sort -o "$outcomes" "$outcomes" 2>/dev/null || : >"$outcomes"
}

# leak_sites RESULTS FACTS: keeps the reports `cargo leakcheck test` wrote (it
# clears its report directory before each run) in RESULTS/reports, their
# `leakcheck summary` as RESULTS/summary.json, one
# "tests<TAB>tasks<TAB>site<TAB>spawning function" line per spawn site in
# RESULTS/leakcheck.sites, and the counts in FACTS.
leak_sites() {
    local results=$1 facts=$2
    rm -rf "$results/reports"
    if [[ -d "$CARGO_TARGET_DIR/leakcheck/reports" ]]; then
        cp -r "$CARGO_TARGET_DIR/leakcheck/reports" "$results/reports"
    else
        mkdir -p "$results/reports"
    fi
    leakcheck summary --json --allow-empty "$results/reports" >"$results/summary.json"
    jq -r '.sites[] | [(.tests | length), .tasks, "\(.site.file):\(.site.line)", (.representative.frames[0].function // "?")] | @tsv' \
        "$results/summary.json" >"$results/leakcheck.sites"
    {
        echo "leaking_tests=$(jq '.reports_with_leaks' "$results/summary.json")"
        echo "leak_sites=$(jq '.sites | length' "$results/summary.json")"
        echo "leaked_tasks=$(jq '.leaked' "$results/summary.json")"
    } >>"$facts"
}

# timed_test FACTS PREFIX LOG CMD...: runs CMD --repeat times, keeps the
# last run's log and exit code (the reports on disk are the last run's too),
# records the median wall time in seconds.
timed_test() {
    local facts=$1 prefix=$2 log=$3 start end i status=0
    shift 3
    local times=()
    for ((i = 0; i < repeat; i++)); do
        start=$(date +%s.%N)
        status=0
        "$@" >"$log" 2>&1 || status=$?
        end=$(date +%s.%N)
        times+=("$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')")
    done
    {
        printf '%s_exit=%s\n' "$prefix" "$status"
        printf '%s_seconds=%s\n' "$prefix" "$(printf '%s\n' "${times[@]}" | sort -g | sed -n "$(((repeat + 1) / 2))p")"
        printf '%s_all_seconds=%s\n' "$prefix" "${times[*]}"
    } >>"$facts"
}

in_dir() {
    (cd "$1" && shift && "$@")
}

# run_suite NAME-VERSION PREFIX ARGS CARGO_SUBCOMMAND...: build, then the timed test phase.
run_suite() {
    local id=$1 prefix=$2 args=$3 dir="$work/crates/$1" results="$work/results/$1"
    shift 3
    local -a extra
    read -r -a extra <<<"$args"
    local facts="$results/$prefix.facts"
    : >"$facts"
    local status=0
    (cd "$dir" && "$@" --tests --no-run "${extra[@]}") >"$results/$prefix.build.log" 2>&1 || status=$?
    printf '%s_build_exit=%s\n' "$prefix" "$status" >>"$facts"
    if ((status != 0)); then
        echo "realworld.sh: $id: $prefix build failed, see $results/$prefix.build.log" >&2
        return 0
    fi
    # Run from the crate's directory, as its CI does (tests read fixtures relative to it).
    timed_test "$facts" "$prefix" "$results/$prefix.log" \
        in_dir "$dir" "$@" --tests --no-fail-fast "${extra[@]}"
    tally "$results/$prefix.log" "$results/$prefix.outcomes" "$facts" "$prefix"
    if [[ "$prefix" == leakcheck ]]; then
        echo "leakcheck_commit=$(git -C "$repo_root" rev-parse --short HEAD 2>/dev/null || echo unknown)" >>"$facts"
        leak_sites "$results" "$facts"
    fi
}

adopt() {
    local id=$1 dir="$work/crates/$1" results="$work/results/$1"
    local facts="$results/adopt.facts"
    # From the published commit on the main branch, as a user's clean checkout.
    (cd "$dir" && git_scratch checkout --quiet -f -B main published && git_scratch clean --quiet -fdx)
    : >"$facts"
    local status=0
    (cd "$dir" && cargo leakcheck adopt --path "$repo_root/leakcheck") >"$results/adopt.log" 2>&1 || status=$?
    {
        echo "adopt_exit=$status"
        echo "leakcheck_attrs=$(count_attrs "$dir" '#\[(::)?leakcheck::test')"
        echo "tokio_attrs_left=$(count_attrs "$dir" '#\[(::)?tokio::test')"
        echo "files_changed=$(cd "$dir" && git diff --name-only | wc -l | tr -d ' ')"
    } >>"$facts"
    (cd "$dir" && git_scratch diff) >"$results/adopt.diff"
    # Idempotence, as a second run by the user would see it.
    local again=0
    (cd "$dir" && cargo leakcheck adopt --check --allow-dirty --path "$repo_root/leakcheck") \
        >"$results/adopt-check.log" 2>&1 || again=$?
    echo "adopt_check_exit=$again" >>"$facts"
    (cd "$dir" && git_scratch add -A && git_scratch commit --quiet -m "cargo leakcheck adopt" &&
        git_scratch tag -f adopted >/dev/null)
}

install_cli() {
    log "cargo install leakcheck-cli from $repo_root/leakcheck/cli"
    CARGO_TARGET_DIR="$work/target/install" cargo install --quiet --locked --force --debug \
        --path "$repo_root/leakcheck/cli" --root "$work/bin"
}

fact() {
    local file=$1 key=$2
    [[ -r "$file" ]] || { echo "pending"; return; }
    local value
    value=$(sed -n "s/^$key=//p" "$file" | tail -n1)
    echo "${value:-pending}"
}

# newly_failing ID: tests that pass plain and fail under leakcheck.
newly_failing() {
    local results="$work/results/$1"
    [[ -r "$results/plain.outcomes" && -r "$results/leakcheck.outcomes" ]] || return 0
    join -t $'\t' \
        <(awk -F'\t' '$3 == "ok" { print $1 "::" $2 "\t" $3 }' "$results/plain.outcomes" | sort) \
        <(awk -F'\t' '$3 == "FAILED" { print $1 "::" $2 "\t" $3 }' "$results/leakcheck.outcomes" | sort) |
        cut -f1
}

ratio() {
    [[ "$1" =~ ^[0-9.]+$ && "$2" =~ ^[0-9.]+$ ]] || { echo "pending"; return; }
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f\n", b / a }'
}

print_table() {
    local line name version args id r
    echo "| crate | version | #[tokio::test] | rewritten | plain pass/fail | leakcheck pass/fail | new failures | leaking tests | leak sites | count-only pass/fail | plain s | leakcheck s | ratio | leakcheck at |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    for line in "${selected[@]}"; do
        IFS=$'\t' read -r name version args <<<"$line"
        id="$name-$version"
        r="$work/results/$id"
        local new
        new=$(newly_failing "$id" | wc -l | tr -d ' ')
        [[ -r "$r/leakcheck.outcomes" ]] || new=pending
        printf '| %s | %s | %s | %s | %s/%s | %s/%s | %s | %s | %s | %s/%s | %s | %s | %s | %s |\n' \
            "$name" "$version" "$(fact "$r/prepare.facts" tokio_attrs)" "$(fact "$r/adopt.facts" leakcheck_attrs)" \
            "$(fact "$r/plain.facts" plain_passed)" "$(fact "$r/plain.facts" plain_failed)" \
            "$(fact "$r/leakcheck.facts" leakcheck_passed)" "$(fact "$r/leakcheck.facts" leakcheck_failed)" \
            "$new" "$(fact "$r/leakcheck.facts" leaking_tests)" "$(fact "$r/leakcheck.facts" leak_sites)" \
            "$(fact "$r/count-only.facts" count-only_passed)" "$(fact "$r/count-only.facts" count-only_failed)" \
            "$(fact "$r/plain.facts" plain_seconds)" "$(fact "$r/leakcheck.facts" leakcheck_seconds)" \
            "$(ratio "$(fact "$r/plain.facts" plain_seconds)" "$(fact "$r/leakcheck.facts" leakcheck_seconds)")" \
            "$(fact "$r/leakcheck.facts" leakcheck_commit)"
    done
}

if has_step prepare; then
    log "fetching ${#selected[@]} crates"
    fetch_sources
fi
if has_step install; then
    install_cli
fi
for line in "${selected[@]}"; do
    IFS=$'\t' read -r name version args <<<"$line"
    id="$name-$version"
    mkdir -p "$work/results/$id"
    if has_step prepare; then
        log "$id: prepare"
        prepare "$name" "$version"
    fi
    if has_step plain; then
        log "$id: cargo test $args (plain)"
        (cd "$work/crates/$id" && git_scratch checkout --quiet published)
        run_suite "$id" plain "$args" cargo test
    fi
    if has_step adopt; then
        log "$id: cargo leakcheck adopt"
        adopt "$id"
    fi
    if has_step leakcheck; then
        log "$id: cargo leakcheck test $args"
        (cd "$work/crates/$id" && git_scratch checkout --quiet adopted)
        run_suite "$id" leakcheck "$args" cargo leakcheck test
    fi
    if has_step count-only; then
        log "$id: cargo test $args (adopted, count-only)"
        (cd "$work/crates/$id" && git_scratch checkout --quiet adopted)
        run_suite "$id" count-only "$args" cargo test
    fi
done
if has_step table; then
    print_table
fi
