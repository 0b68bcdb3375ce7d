#!/usr/bin/env bash
# Signed REST triggers per server CPU second, A/B (issue 19): the null server (the floor), a
# baseline Herald binary and a new one, interleaved (null, base, new, null, base, new, ...), each
# on a fresh process with the bench app, the load generator's rest mode as compare.sh runs it.
# Prints each run's JSON line, then the medians and the new / base ratio.
#
#   infra/bench/rest-ab.sh BASE_BIN [NEW_BIN] [RUNS] [SECONDS]
#
# NEW_BIN defaults to target/release/herald; RUNS to 3; SECONDS to 10. Build first:
# cargo build --release -p herald-server -p herald-loadgen -p herald-null-server
set -euo pipefail
cd "$(dirname "$0")/../.."

base="${1:?usage: $0 BASE_BIN [NEW_BIN] [RUNS] [SECONDS]}"; new="${2:-target/release/herald}"
runs="${3:-3}"; seconds="${4:-10}"
loadgen=target/release/herald-loadgen
results="$(mktemp)"
ulimit -n 20000 2>/dev/null || true

# shellcheck source=infra/bench/ab-lib.sh
. infra/bench/ab-lib.sh

run() {
  start_server "$1" "$2"
  sleep 1
  $loadgen rest --addr "127.0.0.1:$port" --app-id $APP --key $KEY --secret $SECRET \
    --server-pid "$pid" --label "$1" --duration "$seconds" --workers 32 | tee -a "$results"
  stop_server
}

for _ in $(seq "$runs"); do
  run null ""
  run base "$base"
  run new "$new"
done

python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
med = {}
for label in ("null", "base", "new"):
    cpu = [r["triggers_per_cpu_second"] for r in rows if r["label"] == label]
    wall = [r["triggers_per_second"] for r in rows if r["label"] == label]
    med[label] = statistics.median(cpu)
    print(f"{label}: triggers per CPU second {sorted(round(c) for c in cpu)} median {med[label]:,.0f}; "
          f"per second median {statistics.median(wall):,.0f}")
print(f"new / base {med['new'] / med['base']:.2f}x; base / floor {med['base'] / med['null']:.0%}; "
      f"new / floor {med['new'] / med['null']:.0%}")
PY
