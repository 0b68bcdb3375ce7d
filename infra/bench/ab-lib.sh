# Shared by rest-ab.sh and fanout-ab.sh (sourced, not run): the bench app's credentials and
# starting the null server or a Herald binary with that app on a free loopback port.
# shellcheck shell=bash
KEY=bench-key-0123456789; SECRET=bench-secret-0123456789; APP=1
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 200); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1',$1),timeout=0.2).close()" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# start_server LABEL BIN: the null server when LABEL is `null`, else BIN with the bench app, in
# the background; sets pid, port and dir (the server's data and log). Exits if it never answers.
pid=""; port=""; dir=""
start_server() {
  local label="$1" bin="$2"
  dir="$(mktemp -d)"; port="$(free_port)"
  if [ "$label" = null ]; then
    target/release/herald-null-server "127.0.0.1:$port" >"$dir/log" 2>&1 &
  else
    HERALD_BIND="127.0.0.1:$port" HERALD_DATA_DIR="$dir" HERALD_DEFAULT_APP_ID=$APP \
      HERALD_DEFAULT_APP_KEY=$KEY HERALD_DEFAULT_APP_SECRET=$SECRET \
      HERALD_ADMIN_PASSWORD=bench-admin-pass RUST_LOG=warn "$bin" >"$dir/log" 2>&1 &
  fi
  pid=$!
  wait_port "$port" || { cat "$dir/log"; kill "$pid"; exit 1; }
}

# Stops the server start_server started.
stop_server() {
  kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  rm -rf "$dir"; pid=""
}
# Never leave a server behind (and never `kill 0`, which would signal the script's own group).
trap 'if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; fi' EXIT
