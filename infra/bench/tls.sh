#!/usr/bin/env bash
# The TLS rows: Herald over plain WebSocket against Herald over TLS (HERALD_TLS_CERT, a test CA
# made here with openssl), same binary, same load generator (`--tls-ca`), each measure on a fresh
# server: RSS per idle subscribed connection (IDLE connections opened after WARMUP held ones), and
# a fan-out of SUBS subscribers x RATE events/s for SECONDS s (deliveries per server CPU second).
# Loopback only; stops by itself; prints the loadgen JSON lines and a markdown table.
#
#   infra/bench/tls.sh [--quick]
#
# Over TLS the load generator reads deliveries through rustls and tungstenite (plain: off the raw
# socket), so compare the server's figures (memory, CPU), not the latencies.
set -euo pipefail
cd "$(dirname "$0")/../.."

IDLE=2000; WARMUP=200; SUBS=1000; RATE=10; SECONDS_EACH=10
if [ "${1:-}" = "--quick" ]; then IDLE=500; WARMUP=100; SUBS=200; SECONDS_EACH=4; fi

ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release -q -p herald-server -p herald-loadgen
loadgen=target/release/herald-loadgen
KEY=bench-key-0123456789; SECRET=bench-secret-0123456789; APP=1
results="$(mktemp)"
certs="$(mktemp -d)"

# A CA and a leaf for localhost / 127.0.0.1 (ECDSA P-256, as a modern certificate would be).
(
  cd "$certs"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
    -days 2 -subj "/CN=Herald bench CA" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign" 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem -out leaf.csr \
    -subj "/CN=localhost" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >leaf.ext
  openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -sha256 \
    -extfile leaf.ext -out cert.pem 2>/dev/null
)

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

# start_herald tls|plain [NAME=VALUE...]
start_herald() {
  local mode="$1" dir; shift; dir="$(mktemp -d)"; port="$(free_port)"
  local tls_env=()
  [ "$mode" = tls ] && tls_env=(HERALD_TLS_CERT="$certs/cert.pem" HERALD_TLS_KEY="$certs/key.pem")
  env "$@" "${tls_env[@]}" HERALD_BIND="127.0.0.1:$port" HERALD_DATA_DIR="$dir" HERALD_DEFAULT_APP_ID=$APP \
    HERALD_DEFAULT_APP_KEY=$KEY HERALD_DEFAULT_APP_SECRET=$SECRET HERALD_ADMIN_PASSWORD=bench-admin-pass \
    RUST_LOG=warn target/release/herald >"$dir/log" 2>&1 &
  pid=$!
  wait_port "$port" || { cat "$dir/log"; exit 1; }
}

stop() { kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
trap 'kill -TERM "${pid:-0}" 2>/dev/null || true; rm -rf "$certs"' EXIT

for mode in plain tls; do
  extra=(); [ "$mode" = tls ] && extra=(--tls-ca "$certs/ca.pem")
  # The certificate names 127.0.0.1 too (an IP SAN), so the address is the same in both modes.
  host=127.0.0.1
  common=(--app-id $APP --key $KEY --secret $SECRET --label "$mode" "${extra[@]}")
  # As the fallback rows: mimalloc returns freed pages at once, the baseline is read after
  # warm-up connections.
  start_herald "$mode" MIMALLOC_PURGE_DELAY=0
  $loadgen idle --addr "$host:$port" --server-pid "$pid" "${common[@]}" \
    --warmup "$WARMUP" --connections "$IDLE" --hold 1 | tee -a "$results"
  stop
  start_herald "$mode"
  $loadgen fanout --addr "$host:$port" --server-pid "$pid" "${common[@]}" \
    --subscribers "$SUBS" --rate "$RATE" --duration "$SECONDS_EACH" --payload 100 | tee -a "$results"
  stop
done

python3 - "$results" "$IDLE" "$SUBS" "$RATE" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
get = lambda label, mode, key: next((r.get(key) for r in rows if r["label"] == label and r["mode"] == mode), None)
fmt = lambda v: "n/a" if v is None else f"{v:,.2f}"
print()
print("| measure | plain | TLS |")
print("|---|---|---|")
print(f"| RSS per idle subscribed connection at {int(sys.argv[2]):,} (KiB) | {fmt(get('plain','idle','kib_per_connection'))} | {fmt(get('tls','idle','kib_per_connection'))} |")
print(f"| fan-out deliveries per server CPU second ({int(sys.argv[3]):,} subscribers x {sys.argv[4]} events/s) | {fmt(get('plain','fanout','deliveries_per_cpu_second'))} | {fmt(get('tls','fanout','deliveries_per_cpu_second'))} |")
print(f"| fan-out messages lost | {get('plain','fanout','lost')} | {get('tls','fanout','lost')} |")
PY
