#!/usr/bin/env bash
# Herald against sockudo 5.2.0, one after the other, same machine, same load generator, same
# settings; prints a markdown table with the ratios (and writes it to infra/benchmarks.md with
# --write). Not part of the test command: it takes minutes and installs sockudo.
#
# Every single-node run starts with the floor: the null server (infra/bench/null-server, the
# least a server can do for the load generator: no signature check, no JSON validation, one
# non-blocking send per subscriber) measured like the others, so each Herald figure is also
# reported as a fraction of what this machine allows ("Herald / floor"; issue 19). Its REST
# figure is the null endpoint's (the triggers are signed but not checked).
#
#   infra/bench/compare.sh [--quick] [--write] [--runs N] [--baseline BIN] [--no-sockudo] [--cluster|--fallback]
#
# --cluster measures the cluster rows instead: 2 Herald nodes (a scratch PostgreSQL database on
# 127.0.0.1:5432, their own redis-server on a free port) against 2 sockudo nodes on its Redis
# adapter (their own redis-server), the same load generator: subscribers on the second node,
# REST triggers through the first, so every delivery crosses Redis; CPU counts both nodes and
# Redis; Redis PUBLISH commands per publish come from Redis's own INFO commandstats (exact), and
# all commands per publish from INFO stats less the idle rate measured after the run (noisy: the
# nodes' heartbeats and pings are of the same order as 10 publishes a second). Each cluster run
# starts with the cluster's floor: the null server alone under the same fan-out loads (a
# cluster only adds work to a delivery, so its figure per CPU second is a bound on any cluster's).
#
# --fallback measures the HTTP fallback rows instead: Herald over WebSocket against Herald over
# pusher-js's xhr_streaming (sockudo serves no HTTP fallback: no sockudo column, the ratio is
# streaming over WebSocket), each measure on a fresh Herald: RSS per idle subscribed session
# (2,000 sessions opened after 500 held ones; see measure_fallback), and a fan-out of 1,000
# subscribers x 10 events/s (deliveries per server CPU second, latency p50/p99).
#
# --runs N measures each server N times (interleaved: herald, baseline, sockudo, herald, ...) and
# reports the median of each figure. --baseline BIN also measures a previous Herald binary (for
# an A/B of a change, "no figure more than 5% worse"); --no-sockudo leaves sockudo out.
#
# The SOCKUDO_DEFAULT_APP_* variables replace the config file's inline apps (sockudo 5.2.0's
# env/apps.rs), so the raised limits are given there too (its default connection limit is 100).
# sockudo is installed once into $HERALD_BENCH_CACHE (default ~/.cache/herald-bench) with
# `cargo install sockudo --version 5.2.0 --locked` (with `--features redis` for --cluster, into a
# second folder; Debian's protobuf-compiler is installed first when protoc is missing). Load targets loopback only and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/../.."

quick=0; write=0; runs=1; baseline=""; with_sockudo=1; cluster=0; fallback=0
usage() { echo "usage: $0 [--quick] [--write] [--runs N] [--baseline BIN] [--no-sockudo] [--cluster|--fallback]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --write) write=1 ;;
    --runs) shift; runs="${1:-}"; [[ "$runs" =~ ^[1-9][0-9]*$ ]] || usage ;;
    --baseline) shift; baseline="${1:-}"; [ -x "$baseline" ] || { echo "--baseline: $baseline is not an executable" >&2; exit 2; } ;;
    --no-sockudo) with_sockudo=0 ;;
    --cluster) cluster=1 ;;
    --fallback) fallback=1; with_sockudo=0 ;;
    *) usage ;;
  esac
  shift
done
[ "$cluster" = 1 ] && [ "$fallback" = 1 ] && usage
if [ "$write" = 1 ] && [ "$with_sockudo" = 0 ] && [ "$fallback" = 0 ]; then echo "--write keeps the sockudo table: drop --no-sockudo" >&2; exit 2; fi
[ -n "$baseline" ] && baseline="$(cd "$(dirname "$baseline")" && pwd)/$(basename "$baseline")"

IDLE=10000; IDLE_WARMUP=1000; FANOUT=5000; FANOUT_RATE=20; LATENCY_SUBS=1000; LATENCY_RATE=10; SECONDS_EACH=10
FALLBACK_IDLE=2000; FALLBACK_WARMUP=500; FALLBACK_SUBS=1000; FALLBACK_RATE=10
if [ "$quick" = 1 ]; then IDLE=2000; IDLE_WARMUP=200; FANOUT=1000; LATENCY_SUBS=200; SECONDS_EACH=4; FALLBACK_IDLE=500; FALLBACK_SUBS=200; fi

cache="${HERALD_BENCH_CACHE:-$HOME/.cache/herald-bench}"
# The cluster rows need sockudo's Redis adapter and cache, which its default features leave out.
flavour=sockudo-5.2.0; features=()
if [ "$cluster" = 1 ]; then flavour=sockudo-5.2.0-redis; features=(--features redis); fi
sockudo="$cache/$flavour/bin/sockudo"
if [ "$with_sockudo" = 1 ] && [ ! -x "$sockudo" ]; then
  command -v protoc >/dev/null || { apt-get update -qq && apt-get install -y -qq protobuf-compiler; }
  echo "installing sockudo 5.2.0 ${features[*]} into $cache (once; this takes a while)" >&2
  cargo install sockudo --version 5.2.0 --locked "${features[@]}" --root "$cache/$flavour" >&2
fi

ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release -q -p herald-server -p herald-loadgen -p herald-null-server
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

# Extra NAME=VALUE settings for the next start_herald.
server_env=()
start_herald() {
  local bin="${1:-target/release/herald}" dir; dir="$(mktemp -d)"; port="$(free_port)"
  env "${server_env[@]}" HERALD_BIND="127.0.0.1:$port" HERALD_DATA_DIR="$dir" HERALD_DEFAULT_APP_ID=$APP \
    HERALD_DEFAULT_APP_KEY=$KEY HERALD_DEFAULT_APP_SECRET=$SECRET HERALD_ADMIN_PASSWORD=bench-admin-pass \
    RUST_LOG=warn "$bin" >"$dir/log" 2>&1 &
  pid=$!
  wait_port "$port" || { cat "$dir/log"; exit 1; }
}

# Starts sockudo in the background from DIR (its config.json and log there) on PORT, with the
# adapter ADAPTER (JSON) and the cache driver CACHE; the extra environment NAME=VALUE... after
# them. The bench app's limits are all out of the way. $! is then sockudo itself (exec), whose
# memory and CPU time are read from /proc.
spawn_sockudo() {
  local dir="$1" p="$2" adapter="$3" cache="$4"; shift 4
  cat >"$dir/config.json" <<JSON
{
  "host": "127.0.0.1", "port": $p, "debug": false,
  "adapter": $adapter,
  "cache": { "driver": "$cache" },
  "queue": { "driver": "memory" },
  "rate_limiter": { "enabled": false, "driver": "memory" },
  "metrics": { "enabled": false },
  "app_manager": { "driver": "memory", "array": { "apps": [ {
    "id": "$APP", "key": "$KEY", "secret": "$SECRET", "enabled": true,
    "enable_client_messages": true, "max_connections": 1000000,
    "max_backend_events_per_second": 1000000, "max_client_events_per_second": 1000000,
    "max_read_requests_per_second": 1000000 } ] } }
}
JSON
  (cd "$dir" && exec env HOST=127.0.0.1 PORT="$p" RATE_LIMITER_ENABLED=false "$@" \
    CACHE_DRIVER="$cache" QUEUE_DRIVER=memory APP_MANAGER_DRIVER=memory METRICS_ENABLED=false \
    SOCKUDO_DEFAULT_APP_ID=$APP SOCKUDO_DEFAULT_APP_KEY=$KEY SOCKUDO_DEFAULT_APP_SECRET=$SECRET \
    SOCKUDO_DEFAULT_APP_MAX_CONNECTIONS=1000000 SOCKUDO_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SECOND=1000000 \
    SOCKUDO_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SECOND=1000000 SOCKUDO_DEFAULT_APP_MAX_READ_REQUESTS_PER_SECOND=1000000 \
    "$sockudo" --config "$dir/config.json" >"$dir/log" 2>&1) &
}

# The floor (see the top of this file): it answers on its port at once.
start_null() {
  port="$(free_port)"
  target/release/herald-null-server "127.0.0.1:$port" &
  pid=$!
  wait_port "$port" || { echo "the null server did not start" >&2; exit 1; }
}

start_sockudo() {
  local dir; dir="$(mktemp -d)"; port="$(free_port)"
  spawn_sockudo "$dir" "$port" '{ "driver": "local" }' memory ADAPTER_DRIVER=local
  pid=$!
  wait_port "$port" || { cat "$dir/log"; exit 1; }
  sleep 1
}

measure() {
  local label="$1" common
  common=(--addr "127.0.0.1:$port" --app-id $APP --key $KEY --secret $SECRET --server-pid "$pid" --label "$label")
  # The baseline is read once IDLE_WARMUP connections are held: read on the fresh server, it
  # holds memory freed after startup that the first connections reuse, which hid about half of
  # the per-connection cost (2.5 against 4.3-4.8 KiB for Herald, 2026-11-28).
  $loadgen idle "${common[@]}" --warmup "$IDLE_WARMUP" --connections "$IDLE" --hold 1 | tee -a "$results"
  $loadgen fanout "${common[@]}" --subscribers "$FANOUT" --rate "$FANOUT_RATE" --duration "$SECONDS_EACH" --payload 100 | tee -a "$results"
  $loadgen fanout "${common[@]}" --subscribers "$LATENCY_SUBS" --rate "$LATENCY_RATE" --duration "$SECONDS_EACH" --payload 100 | sed 's/"mode":"fanout"/"mode":"latency"/' | tee -a "$results"
  $loadgen rest "${common[@]}" --duration "$SECONDS_EACH" --workers 32 | tee -a "$results"
}

# The fallback rows of one server binary ($2, default the new one) over one transport ($1),
# each measure on a fresh server. The memory one runs with MIMALLOC_PURGE_DELAY=0 (mimalloc gives
# freed pages back at once rather than at its next allocations: else the 15-20 MiB freed after
# startup leave at an unforeseeable point of the run) and reads its baseline after warm-up
# sessions, so per-session container growth and lazily built state are not in the figure.
measure_fallback() {
  local transport="$1" bin="${2:-}" label=herald common
  [ -n "$bin" ] && label=baseline
  common=(--app-id $APP --key $KEY --secret $SECRET --label "$label" --transport "$transport")
  server_env=(MIMALLOC_PURGE_DELAY=0); start_herald ${bin:+"$bin"}; server_env=()
  $loadgen idle --addr "127.0.0.1:$port" --server-pid "$pid" "${common[@]}" \
    --warmup "$FALLBACK_WARMUP" --connections "$FALLBACK_IDLE" --hold 1 | tee -a "$results"
  stop
  start_herald ${bin:+"$bin"}
  $loadgen fanout --addr "127.0.0.1:$port" --server-pid "$pid" "${common[@]}" \
    --subscribers "$FALLBACK_SUBS" --rate "$FALLBACK_RATE" --duration "$SECONDS_EACH" --payload 100 | tee -a "$results"
  stop
}

stop() { kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
# Never leave a server behind, whatever fails.
# (Never `kill 0` when no server was started: that would signal this script's own group.)
trap 'if [ -n "${pid:-}" ]; then kill -TERM "$pid" 2>/dev/null || true; fi' EXIT


# --- cluster mode -------------------------------------------------------------------------
pids=()
redis_pid=""; redis_port=""; bench_db=""

start_redis() {
  redis_port="$(free_port)"
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
  redis_pid=$!
  wait_port "$redis_port" || { echo "redis-server did not start" >&2; exit 1; }
}

start_herald_cluster() {
  local bin="${1:-target/release/herald}" node dir p
  start_redis
  bench_db="herald_bench_$$_$RANDOM"
  psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE $bench_db" >/dev/null
  pids=(); ports=()
  for node in a b; do
    dir="$(mktemp -d)"; p="$(free_port)"
    HERALD_BIND="127.0.0.1:$p" HERALD_DATA_DIR="$dir" \
      HERALD_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$bench_db" \
      HERALD_REDIS_URL="redis://127.0.0.1:$redis_port/" HERALD_CLUSTER=bench HERALD_NODE_ID="bench-$node" \
      HERALD_DEFAULT_APP_ID=$APP HERALD_DEFAULT_APP_KEY=$KEY HERALD_DEFAULT_APP_SECRET=$SECRET \
      HERALD_ADMIN_PASSWORD=bench-admin-pass RUST_LOG=warn "$bin" >"$dir/log" 2>&1 &
    pids+=($!); ports+=("$p")
    wait_port "$p" || { cat "$dir/log"; exit 1; }
  done
}

start_sockudo_cluster() {
  local node dir p url adapter
  start_redis
  url="redis://127.0.0.1:$redis_port"
  adapter="$(printf '{ "driver": "redis", "redis": { "prefix": "bench",
    "redis_pub_options": { "url": "%s" },
    "redis_sub_options": { "url": "%s" } } }' "$url" "$url")"
  pids=(); ports=()
  for node in a b; do
    dir="$(mktemp -d)"; p="$(free_port)"
    spawn_sockudo "$dir" "$p" "$adapter" redis ADAPTER_DRIVER=redis REDIS_URL="$url"
    pids+=($!); ports+=("$p")
    wait_port "$p" || { cat "$dir/log"; exit 1; }
  done
  sleep 1
}

# Subscribers on node b, triggers through node a: every delivery crosses Redis.
measure_cluster() {
  local label="$1" common
  common=(--addr "127.0.0.1:${ports[1]}" --publish-addr "127.0.0.1:${ports[0]}" --app-id $APP
    --key $KEY --secret $SECRET --server-pid "${pids[1]}" --extra-pid "${pids[0]}"
    --extra-pid "$redis_pid" --redis-addr "127.0.0.1:$redis_port" --label "$label")
  $loadgen fanout "${common[@]}" --subscribers "$FANOUT" --rate "$FANOUT_RATE" --duration "$SECONDS_EACH" --payload 100 | tee -a "$results"
  $loadgen fanout "${common[@]}" --subscribers "$LATENCY_SUBS" --rate "$LATENCY_RATE" --duration "$SECONDS_EACH" --payload 100 | sed 's/"mode":"fanout"/"mode":"latency"/' | tee -a "$results"
}

# The cluster's floor: the null server alone, subscribers and triggers on the one process. A
# cluster can only add work to a delivery (the publish crosses Redis into another process), so
# no cluster figure per CPU second can pass this one.
measure_cluster_floor() {
  local common
  common=(--addr "127.0.0.1:$port" --app-id $APP --key $KEY --secret $SECRET --server-pid "$pid" --label floor)
  $loadgen fanout "${common[@]}" --subscribers "$FANOUT" --rate "$FANOUT_RATE" --duration "$SECONDS_EACH" --payload 100 | tee -a "$results"
  $loadgen fanout "${common[@]}" --subscribers "$LATENCY_SUBS" --rate "$LATENCY_RATE" --duration "$SECONDS_EACH" --payload 100 | sed 's/"mode":"fanout"/"mode":"latency"/' | tee -a "$results"
}

stop_cluster() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
  kill -TERM "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; redis_pid=""
  if [ -n "$bench_db" ]; then
    psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $bench_db WITH (FORCE)" >/dev/null || true
    bench_db=""
  fi
}

if [ "$cluster" = 1 ]; then
  trap 'stop_cluster; if [ -n "${pid:-}" ]; then kill -TERM "$pid" 2>/dev/null || true; fi' EXIT
  pg_isready -h 127.0.0.1 -p 5432 -q || { echo "PostgreSQL must answer on 127.0.0.1:5432" >&2; exit 1; }
  command -v redis-server >/dev/null || { echo "redis-server is needed" >&2; exit 1; }
  for run in $(seq "$runs"); do
    [ "$runs" -gt 1 ] && echo "run $run of $runs" >&2
    start_null; measure_cluster_floor; stop; pid=""
    start_herald_cluster; measure_cluster herald; stop_cluster
    if [ -n "$baseline" ]; then start_herald_cluster "$baseline"; measure_cluster baseline; stop_cluster; fi
    if [ "$with_sockudo" = 1 ]; then start_sockudo_cluster; measure_cluster sockudo; stop_cluster; fi
  done
fi

loads=(); for _ in $(seq "$runs"); do loads+=(""); done
for run in $(seq "$runs"); do
  [ "$fallback" = 1 ] || break
  [ "$runs" -gt 1 ] && echo "run $run of $runs" >&2
  loads[$((run - 1))]="$(cut -d' ' -f1-3 /proc/loadavg)"
  for transport in websocket xhr_streaming; do
    measure_fallback "$transport"
    if [ -n "$baseline" ]; then measure_fallback "$transport" "$baseline"; fi
  done
done

for run in $(seq "$runs"); do
  [ "$cluster" = 1 ] || [ "$fallback" = 1 ] && break
  [ "$runs" -gt 1 ] && echo "run $run of $runs" >&2
  start_null; measure floor; stop
  start_herald; measure herald; stop
  if [ -n "$baseline" ]; then start_herald "$baseline"; measure baseline; stop; fi
  if [ "$with_sockudo" = 1 ]; then start_sockudo; measure sockudo; stop; fi
done

if [ "$fallback" = 1 ]; then
table="$(python3 - "$results" "$FALLBACK_IDLE" "$FALLBACK_WARMUP" "$FALLBACK_SUBS" "$FALLBACK_RATE" "$runs" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
idle, warmup, subs, rate, runs = (int(a) for a in sys.argv[2:7])
labels = [l for l in ("herald", "baseline") if any(r.get("label") == l for r in rows)]
names = {"herald": "Herald", "baseline": "previous Herald"}
transports = {"websocket": "WebSocket", "xhr_streaming": "xhr_streaming"}
def get(label, transport, mode, key):
    values = [r.get(key) for r in rows
              if r.get("label") == label and r.get("transport") == transport and r.get("mode") == mode]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None
def fmt(v, digits):
    return "n/a" if v is None else (f"{v:,.{digits}f}" if isinstance(v, float) else f"{v:,}")
columns = [(l, t) for l in labels for t in transports]
median = f" (median of {runs} runs)" if runs > 1 else ""
header = [f"HTTP fallback{median}"] + [f"{names[l]}, {transports[t]}" for l, t in columns]
header.append("xhr_streaming / WebSocket")
if "baseline" in labels:
    header.append("xhr_streaming, Herald vs previous")
lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
def row(name, mode, key, digits=1, lower_is_better=False):
    cells = [fmt(get(l, t, mode, key), digits) for l, t in columns]
    ws, xhr = get("herald", "websocket", mode, key), get("herald", "xhr_streaming", mode, key)
    cells.append(f"{xhr / ws:.2f}x" if ws and xhr is not None else "n/a")
    if "baseline" in labels:
        old, ratio = get("baseline", "xhr_streaming", mode, key), "n/a"
        if old and xhr is not None:
            change = (xhr - old) / old * 100
            worse = change > 5 if lower_is_better else change < -5
            ratio = f"{change:+.1f}%" + (" (worse)" if worse else "")
        cells.append(ratio)
    lines.append(f"| {name} | {' | '.join(cells)} |")
row(f"RSS per idle subscribed session at {idle:,}, after {warmup:,} held (KiB)", "idle", "kib_per_connection", 2, True)
for r in rows:
    if r.get("mode") == "fanout" and r.get("connect_seconds"):
        r["opened_per_second"] = r["subscribers"] / r["connect_seconds"]
row(f"sessions opened per second (the fan-out's {subs:,} subscribers)", "fanout", "opened_per_second")
row(f"fan-out deliveries per server CPU second ({subs:,} subscribers, {rate} events/s)", "fanout", "deliveries_per_cpu_second")
row("fan-out deliveries per second", "fanout", "deliveries_per_second")
row("fan-out messages lost", "fanout", "lost", 0, True)
row("latency p50 ms", "fanout", "latency_ms_p50", 2, True)
row("latency p99 ms", "fanout", "latency_ms_p99", 2, True)
row("latency max ms", "fanout", "latency_ms_max", 2, True)
print("\n".join(lines))
PY
)"
else
table="$(python3 - "$results" "$IDLE" "$FANOUT" "$LATENCY_SUBS" "$runs" "$cluster" "$IDLE_WARMUP" "$FANOUT_RATE" "$LATENCY_RATE" <<'PY'
import json, statistics, sys
cluster = sys.argv[6] == "1"
fanout_rate, latency_rate = int(sys.argv[8]), int(sys.argv[9])
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
labels = [l for l in ("floor", "herald", "baseline", "sockudo") if any(r.get("label") == l for r in rows)]
def get(label, mode, key):
    values = [r.get(key) for r in rows if r.get("label") == label and r.get("mode") == mode]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None
def fmt(v, digits=1):
    return "n/a" if v is None else (f"{v:,.{digits}f}" if isinstance(v, float) else f"{v:,}")
names = {"floor": "floor (null server)", "herald": "Herald", "baseline": "previous Herald",
         "sockudo": "sockudo 5.2.0"}
others = [l for l in labels if l != "herald"]
median = " (median of %s runs)" % sys.argv[5] if int(sys.argv[5]) > 1 else ""
lines = ["| measure%s | %s | %s | target |" % (median, " | ".join(names[l] for l in labels),
         " | ".join("Herald / floor" if l == "floor" else f"Herald vs {names[l]}" for l in others)),
         "|---|" + "---|" * (len(labels) + len(others) + 1)]
def row(name, mode, key, target, lower_is_better=False, digits=1):
    h = get("herald", mode, key)
    cells = [fmt(get(l, mode, key), digits) for l in labels]
    for l in others:
        o, ratio = get(l, mode, key), "n/a"
        if h and o:
            if l == "floor":
                # A fraction of the floor: of its throughput, or a multiple of its cost.
                ratio = f"{h / o:.2f}x" if lower_is_better else f"{h / o * 100:.0f}%"
            elif l == "baseline":
                change = (h - o) / o * 100
                worse = change > 5 if lower_is_better else change < -5
                ratio = f"{change:+.1f}%" + (" (worse)" if worse else "")
            else:
                ratio = f"{(o / h if lower_is_better else h / o):.1f}x {'less' if lower_is_better else 'more'}"
        cells.append(ratio)
    lines.append(f"| {name} | {' | '.join(cells)} | {target} |")
if cluster:
    lines[0] = lines[0].replace("| measure", "| cluster of 2 nodes, cross-node", 1)
    row(f"fan-out deliveries per CPU second, both nodes and Redis ({int(sys.argv[3]):,} subscribers; the floor: one null server)", "fanout", "deliveries_per_cpu_second", ">= 2x sockudo")
    row("fan-out deliveries per second", "fanout", "deliveries_per_second", "")
    row("fan-out messages lost", "fanout", "lost", "0", digits=0)
    row(f"Redis PUBLISH commands per publish ({int(sys.argv[3]):,} subscribers)", "fanout", "redis_publish_commands_per_publish", "independent of subscribers", True, 2)
    row(f"Redis PUBLISH commands per publish ({int(sys.argv[4]):,} subscribers)", "latency", "redis_publish_commands_per_publish", "independent of subscribers", True, 2)
    row(f"all Redis commands per publish, less the idle rate ({int(sys.argv[3]):,} subscribers; noisy)", "fanout", "redis_commands_per_publish", "", True, 2)
    row(f"trigger-to-delivery p50 ms, other node ({int(sys.argv[4]):,} subscribers, 10 events/s)", "latency", "latency_ms_p50", "", True, 2)
    row("trigger-to-delivery p99 ms, other node", "latency", "latency_ms_p99", "", True, 2)
    floor, sockudo = get("floor", "fanout", "deliveries_per_cpu_second"), get("sockudo", "fanout", "deliveries_per_cpu_second")
    if floor and sockudo:
        lines.append("")
        lines.append(f"2x sockudo's cluster figure is {2 * sockudo:,.0f} deliveries per CPU second: "
                     f"{2 * sockudo / floor * 100:.0f}% of the floor (the null server alone, same load, same sitting).")
    print("\n".join(lines))
    sys.exit(0)
row(f"RSS per idle subscribed connection at {int(sys.argv[2]):,}, after {int(sys.argv[7]):,} held (KiB)", "idle", "kib_per_connection", "<= 4 KiB", True, 2)
row("connections opened per second", "idle", "connections_per_second", "")
row(f"fan-out deliveries per second ({int(sys.argv[3]):,} subscribers, {fanout_rate} events/s)", "fanout", "deliveries_per_second", "")
row("fan-out deliveries per server CPU second", "fanout", "deliveries_per_cpu_second", ">= 5x sockudo; >= 90% of the floor")
row("fan-out messages lost", "fanout", "lost", "0", digits=0)
row(f"fan-out deliveries per server CPU second ({int(sys.argv[4]):,} subscribers, {latency_rate} events/s)", "latency", "deliveries_per_cpu_second", ">= 90% of the floor")
row(f"latency p50 ms ({int(sys.argv[4]):,} subscribers, {latency_rate} events/s)", "latency", "latency_ms_p50", "", True, 2)
row("latency p99 ms", "latency", "latency_ms_p99", "< 5 ms; <= 1.2x the floor", True, 2)
row("latency max ms", "latency", "latency_ms_max", "", True, 2)
row("signed REST triggers per second (the floor: not checked)", "rest", "triggers_per_second", "")
row("signed REST triggers per server CPU second (the floor: the null endpoint)", "rest", "triggers_per_cpu_second", ">= 3x sockudo; >= 50,000")
print("\n".join(lines))
PY
)"
fi
echo
echo "$table"
if [ "$write" = 1 ]; then
  # Only the generated block is replaced (the single-node table or the cluster one); the notes
  # written by hand around them stay.
  block="$(mktemp)"
  {
    echo "- Machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr); $(date -u +%Y-%m-%d)."
    if [ "$cluster" = 1 ]; then
      echo "- Command: \`infra/bench/compare.sh --cluster --write$([ "$runs" -gt 1 ] && echo " --runs $runs")\`."
    elif [ "$fallback" = 1 ]; then
      echo "- Command: \`infra/bench/compare.sh --fallback --write$([ "$runs" -gt 1 ] && echo " --runs $runs")\`."
      echo "- Load average (1, 5, 15 min) at the start of each run: $(printf '%s; ' "${loads[@]}" | sed 's/; $//')."
    else
      echo "- Command: \`infra/bench/compare.sh --write$([ "$runs" -gt 1 ] && echo " --runs $runs")\`."
    fi
    echo
    echo "$table"
    echo
    echo "Raw results (one JSON line per run):"
    echo
    echo '```'
    cat "$results"
    echo '```'
  } > "$block"
  marker=single; [ "$cluster" = 1 ] && marker=cluster; [ "$fallback" = 1 ] && marker=fallback
  python3 - infra/benchmarks.md "$block" "$marker" <<'PY'
import pathlib, sys
path, block, marker = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]).read_text(), sys.argv[3]
begin, end = f"<!-- compare.sh {marker}: begin -->", f"<!-- compare.sh {marker}: end -->"
text = path.read_text() if path.exists() else "# Benchmarks\n"
new = f"{begin}\n{block}{end}"
if begin in text and end in text:
    head, rest = text.split(begin, 1)
    text = head + new + rest.split(end, 1)[1]
else:
    title = {"cluster": "## Cluster (2 nodes on Redis)",
             "fallback": "## HTTP fallbacks (xhr_streaming against WebSocket)"}.get(marker, "## Single node")
    text = text.rstrip("\n") + f"\n\n{title}\n\n{new}\n"
path.write_text(text)
PY
  rm -f "$block"
  echo "wrote the $marker table into infra/benchmarks.md"
fi
rm -f "$results"
