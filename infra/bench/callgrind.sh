#!/usr/bin/env bash
# Instructions per request, repeatable on a busy machine (issue 19): one server binary under
# valgrind's callgrind, the counters zeroed once it is up (startup and the operator's password
# hash are not counted), then a fixed load from the load generator, then one dump. Prints the
# instructions per signed REST trigger (or per fan-out delivery) and the top functions
# (inclusive and self), and keeps the profile for callgrind_annotate.
#
#   infra/bench/callgrind.sh rest   [BIN] [SECONDS]          # signed triggers, 4 workers
#   infra/bench/callgrind.sh fanout [BIN] [SUBSCRIBERS] [EVENTS]
#
# BIN defaults to target/release/herald (build it first: cargo build --release -p herald-server
# -p herald-loadgen -p herald-null-server); `null` measures the null server instead. The same
# workload against two binaries is the A/B; the count includes what the server does in the
# background while the load runs (a few timers), which is small beside the load.
#
# CACHE_SIM=1 also simulates this machine's caches (L1d 48 KiB 12-way, a 2 MiB 16-way last
# level, 64-byte lines) and prints the first-level and last-level data misses per request: a
# change that moves data between cache lines shows there, not in the instruction count.
set -euo pipefail
cd "$(dirname "$0")/../.."

mode="${1:-rest}"; bin="${2:-target/release/herald}"; null=0
[ "$bin" = null ] && bin=target/release/herald-null-server
[[ "$(basename "$bin")" == *null-server* ]] && null=1
loadgen=target/release/herald-loadgen
KEY=bench-key-0123456789; SECRET=bench-secret-0123456789; APP=1
out="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
ulimit -n 20000 2>/dev/null || true
vg=(valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out")
[ "${CACHE_SIM:-0}" = 1 ] && vg+=(--cache-sim=yes --D1=49152,12,64 --LL=2097152,16,64)

if [ "$null" = 1 ]; then
  "${vg[@]}" "$bin" "127.0.0.1:$port" >"$out/log" 2>&1 &
else
  HERALD_BIND="127.0.0.1:$port" HERALD_DATA_DIR="$out" HERALD_DEFAULT_APP_ID=$APP \
    HERALD_DEFAULT_APP_KEY=$KEY HERALD_DEFAULT_APP_SECRET=$SECRET \
    HERALD_ADMIN_PASSWORD=bench-admin-pass RUST_LOG=warn \
    "${vg[@]}" "$bin" >"$out/log" 2>&1 &
fi
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 1200); do
  python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),timeout=0.2).close()" \
    2>/dev/null && break
  sleep 0.5
done
sleep 1
callgrind_control -z "$pid" >/dev/null
common=(--addr "127.0.0.1:$port" --app-id $APP --key $KEY --secret $SECRET)
case "$mode" in
  rest)
    line="$($loadgen rest "${common[@]}" --duration "${3:-20}" --workers 4)"
    # The load generator's warm-up trigger is counted too.
    count="$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(r["triggers"]+r["refused"]+1)' "$line")"
    what="signed REST trigger" ;;
  fanout)
    line="$($loadgen fanout "${common[@]}" --subscribers "${3:-200}" --rate 5 --duration "$(( ${4:-20} / 5 ))" --payload 100)"
    count="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["deliveries_received"])' "$line")"
    # The subscribers' handshakes and subscribes are counted too (they come after the zeroing):
    # compare runs of the same size only.
    what="fan-out delivery (handshakes included)" ;;
  *) echo "usage: $0 rest|fanout [BIN] ..." >&2; exit 2 ;;
esac
echo "$line"
callgrind_control -d "$pid" >/dev/null
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
trap - EXIT
dump="$(ls "$out"/callgrind.out.* | sort -t. -k3 -n | tail -1 2>/dev/null || true)"
[ -n "$dump" ] || dump="$out/callgrind.out"
total="$(grep -m1 '^summary:' "$dump" | awk '{print $2}')"
[ -n "$total" ] || total="$(grep -m1 '^totals:' "$dump" | awk '{print $2}')"
echo "instructions: $total over $count, $(( total / count )) per $what"
if [ "${CACHE_SIM:-0}" = 1 ]; then
  # events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
  read -r -a ev <<<"$(grep -m1 -E '^(summary|totals):' "$dump" | cut -d' ' -f2-)"
  echo "data misses: L1 $(( ev[4] + ev[5] )) ($(( (ev[4] + ev[5]) / count )) per $what)," \
    "last level $(( ev[7] + ev[8] )) ($(( (ev[7] + ev[8]) / count )) per $what)"
fi
callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | sed -n '1,60p' | cut -c1-200 >"$out/inclusive.txt"
callgrind_annotate "$dump" 2>/dev/null | sed -n '1,60p' | cut -c1-200 >"$out/self.txt"
echo "profile: $dump (tables: $out/inclusive.txt, $out/self.txt)"
