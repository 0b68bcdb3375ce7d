#!/usr/bin/env bash
# Memory per idle connection: Herald as configured vs Herald with tungstenite's default 128 KiB
# read buffer (the baseline every peer ships), measured in the same run on loopback.
# Usage: infra/bench/idle-memory.sh [CONNECTIONS]   (default 5000)
set -euo pipefail
cd "$(dirname "$0")/../.."
connections="${1:-5000}"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release -q -p herald-server -p herald-loadgen

run() {
  local label="$1" read_buffer="$2"
  local dir log pid addr
  dir="$(mktemp -d)"
  log="$dir/log"
  HERALD_BIND=127.0.0.1:0 HERALD_DATA_DIR="$dir" HERALD_DEFAULT_APP_ID=1 \
    HERALD_DEFAULT_APP_KEY=bench-key-0123456789 HERALD_DEFAULT_APP_SECRET=bench-secret-0123456789 \
    HERALD_WS_READ_BUFFER_BYTES="$read_buffer" RUST_LOG=warn,herald=info \
    target/release/herald >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    addr="$(grep -o 'listening on http://[^ ]*' "$log" | sed 's|listening on http://||' || true)"
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || { cat "$log"; kill "$pid"; exit 1; }
  target/release/herald-loadgen idle --addr "$addr" --key bench-key-0123456789 \
    --connections "$connections" --hold 1 --server-pid "$pid" --label "$label"
  kill -TERM "$pid"
  wait "$pid" || true
  rm -rf "$dir"
}

run "herald (4 KiB read buffer)" 4096
run "baseline (128 KiB read buffer)" 131072
