#!/usr/bin/env bash
# The Mercure rows: Herald's WebSocket subscribers against its Mercure (SSE) subscribers, same
# binary, same load generator (`--transport sse`: raw-socket EventSource clients with a subscriber
# JWT, on the topic named as the channel, so the REST triggers reach them through the hub's
# Pusher bridge), each measure on a fresh server: RSS per idle subscriber (IDLE opened after
# WARMUP held ones, MIMALLOC_PURGE_DELAY=0 as the fallback rows), and a fan-out of SUBS
# subscribers x RATE events/s for SECONDS s (deliveries per server CPU second, latency).
# Loopback only; stops by itself; prints the loadgen JSON lines and a markdown table.
#
#   infra/bench/sse.sh [--quick]
#
# SSE_AB=1 adds a third column: SSE subscribers whose connection first serves a keep-alive
# `GET /health`, so that hyper serves the subscribe (the path every subscribe took before the
# direct path): an A/B in one binary.
set -euo pipefail
cd "$(dirname "$0")/../.."

IDLE=2000; WARMUP=200; SUBS=1000; RATE=10; SECONDS_EACH=10
if [ "${1:-}" = "--quick" ]; then IDLE=500; WARMUP=100; SUBS=200; SECONDS_EACH=4; fi

ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release -q -p herald-server -p herald-loadgen
loadgen=target/release/herald-loadgen
KEY=bench-key-0123456789; SECRET=bench-secret-0123456789; APP=1
results="$(mktemp)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {
  for _ in $(seq 200); do
    python3 - "$1" <<'PY' 2>/dev/null && return 0
import socket, sys
socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.2).close()
PY
    sleep 0.1
  done
  return 1
}

# start_herald [NAME=VALUE...]
start_herald() {
  local dir; dir="$(mktemp -d)"; port="$(free_port)"
  env "$@" HERALD_BIND="127.0.0.1:$port" HERALD_DATA_DIR="$dir" HERALD_DEFAULT_APP_ID=$APP \
    HERALD_DEFAULT_APP_KEY=$KEY HERALD_DEFAULT_APP_SECRET=$SECRET HERALD_ADMIN_PASSWORD=bench-admin-pass \
    RUST_LOG=warn target/release/herald >"$dir/log" 2>&1 &
  pid=$!
  wait_port "$port" || { cat "$dir/log"; exit 1; }
}

stop() { kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
trap 'kill -TERM "${pid:-0}" 2>/dev/null || true' EXIT

for transport in websocket sse ${SSE_AB:+sse_after_request}; do
  common=(--app-id $APP --key $KEY --secret $SECRET --label "$transport" --transport "$transport")
  start_herald MIMALLOC_PURGE_DELAY=0
  $loadgen idle --addr "127.0.0.1:$port" --server-pid "$pid" "${common[@]}" \
    --warmup "$WARMUP" --connections "$IDLE" --hold 1 | tee -a "$results"
  stop
  start_herald
  $loadgen fanout --addr "127.0.0.1:$port" --server-pid "$pid" "${common[@]}" \
    --subscribers "$SUBS" --rate "$RATE" --duration "$SECONDS_EACH" --payload 100 | tee -a "$results"
  stop
done

python3 - "$results" "$IDLE" "$SUBS" "$RATE" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
get = lambda label, mode, key: next((r.get(key) for r in rows if r["label"] == label and r["mode"] == mode), None)
fmt = lambda v: "n/a" if v is None else f"{v:,.2f}"
labels = [("websocket", "WebSocket"), ("sse", "Mercure SSE")]
if any(r["label"] == "sse_after_request" for r in rows):
    labels.append(("sse_after_request", "SSE after a keep-alive request (hyper)"))
row = lambda name, cell: print(f"| {name} | " + " | ".join(cell(l) for l, _ in labels) + " |")
print()
print("| measure | " + " | ".join(title for _, title in labels) + " |")
print("|---|" + "---|" * len(labels))
row(f"RSS per idle subscriber at {int(sys.argv[2]):,} (KiB)", lambda l: fmt(get(l, 'idle', 'kib_per_connection')))
row(f"fan-out deliveries per server CPU second ({int(sys.argv[3]):,} subscribers x {sys.argv[4]} events/s)", lambda l: fmt(get(l, 'fanout', 'deliveries_per_cpu_second')))
row("fan-out latency p50 / p99 (ms)", lambda l: f"{fmt(get(l, 'fanout', 'latency_ms_p50'))} / {fmt(get(l, 'fanout', 'latency_ms_p99'))}")
row("fan-out messages lost", lambda l: str(get(l, 'fanout', 'lost')))
PY
