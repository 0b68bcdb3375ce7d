#!/usr/bin/env bash
# Builds the fuzz targets on the stable toolchain (libFuzzer through libfuzzer-sys, coverage
# instrumentation through rustc's sancov pass; no sanitizer) and runs each for a while.
#
#   fuzz/run.sh [--smoke | --seconds N] [target...]
#
#   --smoke       30 s per target (the default; the test command's step);
#   --seconds N   N seconds per target;
#   target...     some of the targets (default: all of them, listed in fuzz/Cargo.toml).
#
# The targets run side by side, as many at a time as there are cores (FUZZ_JOBS overrides it).
# Each target starts from its committed seeds (fuzz/corpus/<target>/) plus what earlier runs
# found (fuzz/target/corpus/<target>/, not committed), with its dictionary when there is one
# (fuzz/dict/<target>.dict). Prints, per target, the executions, executions per second and the
# corpus size. A crash (a panic, a failed invariant, a timeout or running out of memory) fails
# the run at the end, leaving the input in fuzz/artifacts/<target>/ and the log's tail printed:
# replay it with `fuzz/target/<host>/release/<target> fuzz/artifacts/<target>/crash-...`.
set -euo pipefail

FUZZ_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$FUZZ_DIR"

usage() {
    printf 'usage: %s [--smoke | --seconds N] [target...]\n' "$0" >&2
    exit 2
}

SECONDS_EACH=30
TARGETS=()
while (($#)); do
    case "$1" in
        --smoke) SECONDS_EACH=30 ;;
        --seconds)
            [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*$ ]] || usage
            SECONDS_EACH="$2"
            shift
            ;;
        -*) usage ;;
        *) TARGETS+=("$1") ;;
    esac
    shift
done

mapfile -t ALL_TARGETS < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -vx herald-fuzz)
if ((${#TARGETS[@]} == 0)); then
    TARGETS=("${ALL_TARGETS[@]}")
fi
for target in "${TARGETS[@]}"; do
    [[ -f "fuzz_targets/$target.rs" ]] || {
        printf 'error: no target %s (targets: %s)\n' "$target" "${ALL_TARGETS[*]}" >&2
        exit 2
    }
done

# What the build needs besides cargo: a C++ compiler for libFuzzer itself.
if ! command -v c++ >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "no C++ compiler: apt-get install g++"
        apt-get install -y --no-install-recommends g++ >/dev/null
    else
        echo "error: libFuzzer needs a C++ compiler (c++ on PATH; Debian: g++)" >&2
        exit 127
    fi
fi

HOST="$(rustc -vV | sed -n 's/^host: //p')"
TARGET_DIR="$FUZZ_DIR/target"
# cargo-fuzz's flags for `--sanitizer none`: coverage counters and comparison tracing for
# libFuzzer, `cfg(fuzzing)`. `--target` keeps them off build scripts and proc macros.
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares"
echo "building ${TARGETS[*]} ($HOST, release with debug assertions and overflow checks)"
build_args=()
for target in "${TARGETS[@]}"; do
    build_args+=(--bin "$target")
done
# The server's dependencies at exactly the workspace's versions: the package's lockfile is the
# workspace's, copied afresh (not committed, so it cannot drift when a dependency changes); cargo
# only adds libfuzzer-sys and what it needs.
cp "$FUZZ_DIR/../Cargo.lock" "$FUZZ_DIR/Cargo.lock"
cargo build --release --target "$HOST" --target-dir "$TARGET_DIR" "${build_args[@]}"

# Runs one target; writes "status seconds" to its .status file next to its log.
run_target() {
    local target="$1"
    local corpus="$TARGET_DIR/corpus/$target"
    local artifacts="$FUZZ_DIR/artifacts/$target"
    local log="$TARGET_DIR/logs/$target.log"
    mkdir -p "$corpus" "$artifacts" "$(dirname "$log")" "corpus/$target"
    local args=(
        -max_total_time="$SECONDS_EACH"
        -print_final_stats=1
        -timeout=10
        -rss_limit_mb=2048
        -artifact_prefix="$artifacts/"
    )
    [[ -f "dict/$target.dict" ]] && args+=(-dict="dict/$target.dict")
    local started=$SECONDS status=0
    "$TARGET_DIR/$HOST/release/$target" "${args[@]}" "$corpus" "corpus/$target" >"$log" 2>&1 ||
        status=$?
    echo "$status $((SECONDS - started))" >"$TARGET_DIR/logs/$target.status"
}

# The targets run side by side, one per core (each libFuzzer process uses one).
JOBS="${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}"
echo "running ${#TARGETS[@]} targets for ${SECONDS_EACH} s each, $JOBS at a time"
mkdir -p "$TARGET_DIR/logs"
running=0
for target in "${TARGETS[@]}"; do
    rm -f "$TARGET_DIR/logs/$target.status"
    if ((running >= JOBS)); then
        wait -n || true
        running=$((running - 1))
    fi
    run_target "$target" &
    running=$((running + 1))
done
wait || true

failed=()
printf '\n%-14s %8s %12s %10s %8s  %s\n' target seconds executions exec/s corpus result
for target in "${TARGETS[@]}"; do
    log="$TARGET_DIR/logs/$target.log"
    artifacts="$FUZZ_DIR/artifacts/$target"
    read -r status took <"$TARGET_DIR/logs/$target.status" || { status=1 took=0; }
    executions="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    corpus_size="$(grep -o 'corp: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2 || true)"
    executions="${executions:-0}"
    rate=$((executions / (took > 0 ? took : 1)))
    if [[ $status -eq 0 ]]; then
        result=ok
    else
        result="CRASH (exit $status)"
        failed+=("$target")
    fi
    printf '%-14s %8d %12d %10d %8s  %s\n' "$target" "$took" "$executions" "$rate" \
        "${corpus_size:-?}" "$result"
    if [[ $status -ne 0 ]]; then
        # The panic's message, then libFuzzer's report (the backtrace between is in the log).
        { grep -m 1 -A 3 'panicked at' "$log" || true; sed -n '/ERROR: libFuzzer/,$p' "$log"; } |
            head -n 40 | sed 's/^/    /'
        ls "$artifacts" | sed "s|^|    input: $artifacts/|"
    fi
done

if ((${#failed[@]})); then
    printf '\nfuzz: FAILED: %s (inputs in fuzz/artifacts/, logs in fuzz/target/logs/)\n' \
        "${failed[*]}" >&2
    exit 1
fi
printf '\nfuzz: OK - %d targets, %d s each, no crash\n' "${#TARGETS[@]}" "$SECONDS_EACH"
