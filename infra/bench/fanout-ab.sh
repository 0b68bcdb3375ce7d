#!/usr/bin/env bash
# Fan-out deliveries per server CPU second and latency, A/B (issue 19): the null server (the
# floor), a baseline Herald binary and a new one, interleaved (null, base, new, null, base, new,
# ...), each on a fresh process with the bench app, the load generator's `fanout` mode as
# compare.sh runs it. Prints each run's JSON line, then the medians and the new / base ratio.
#
#   infra/bench/fanout-ab.sh BASE_BIN [NEW_BIN] [RUNS] [SUBSCRIBERS] [RATE] [SECONDS]
#
# NEW_BIN defaults to target/release/herald; RUNS to 3; SUBSCRIBERS to 1000; RATE (events a
# second) to 10; SECONDS to 10. Build first: cargo build --release -p herald-server -p
# herald-loadgen -p herald-null-server. Load targets loopback only and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
base="${1:?usage: $0 BASE_BIN [NEW_BIN] [RUNS] [SUBSCRIBERS] [RATE] [SECONDS]}"
new="${2:-target/release/herald}"; runs="${3:-3}"; subscribers="${4:-1000}"; rate="${5:-10}"
seconds="${6:-10}"
loadgen=target/release/herald-loadgen
results="$(mktemp)"
ulimit -n 20000 2>/dev/null || true
# shellcheck source=infra/bench/ab-lib.sh
. infra/bench/ab-lib.sh

run() {
  start_server "$1" "$2"
  sleep 0.5
  $loadgen fanout --addr "127.0.0.1:$port" --app-id $APP --key $KEY --secret $SECRET \
    --server-pid "$pid" --label "$1" --subscribers "$subscribers" --rate "$rate" \
    --duration "$seconds" --payload 100 | tee -a "$results"
  stop_server
}

for _ in $(seq "$runs"); do
  run null ""
  run base "$base"
  run new "$new"
done

python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def median(label, key):
    values = [r[key] for r in rows if r["label"] == label and r.get(key) is not None]
    return statistics.median(values) if values else None
figures = {}
for label in ("null", "base", "new"):
    per_cpu = [round(r["deliveries_per_cpu_second"]) for r in rows
               if r["label"] == label and r.get("deliveries_per_cpu_second")]
    figures[label] = median(label, "deliveries_per_cpu_second")
    print(f"{label}: deliveries per CPU second {sorted(per_cpu)} median {figures[label]:,.0f}; "
          f"p50 {median(label, 'latency_ms_p50'):.2f} ms, p99 {median(label, 'latency_ms_p99'):.2f} ms; "
          f"lost {sum(r['lost'] for r in rows if r['label'] == label)}")
null, base, new = figures["null"], figures["base"], figures["new"]
print(f"new / base {new / base:.2f}x; base / floor {base / null:.0%}; new / floor {new / null:.0%}")
PY
