#!/usr/bin/env bash
# The management API's contract test: schemathesis (from PyPI, in a venv here, as
# sdk-compat-tests/setup.sh makes its venv) generates requests from the served OpenAPI document
# (/api/v1/openapi.json) and checks every answer: no 5xx, a documented status, the documented
# content type and a body matching the documented schema. It runs against a real herald on a free
# port with a fresh SQLite store and a token with every scope, a bounded number of examples per
# operation, so it ends within a few minutes.
#
#   server/tests/api-contract/run.sh            (HERALD_BIN: the binary; default target/debug/herald)
#   CONTRACT_EXAMPLES=N                         examples per operation (default 25)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
bin="${HERALD_BIN:-$root/target/debug/herald}"
[[ -x "$bin" ]] || { echo "api-contract: no herald binary at $bin (cargo build first)" >&2; exit 1; }

if [[ ! -x "$here/.venv/bin/schemathesis" ]]; then
    python3 -m venv "$here/.venv"
    "$here/.venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r "$here/requirements.txt"
fi

work="$(mktemp -d)"
pid=""
cleanup() {
    if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# Only this run's settings: a fresh store in $work, any port, a rate no test run reaches.
for name in $(env | sed -n 's/^\(HERALD_[A-Z0-9_]*\)=.*/\1/p'); do
    [[ "$name" == HERALD_BIN ]] || unset "$name"
done
export HERALD_DATA_DIR="$work" HERALD_BIND=127.0.0.1:0 HERALD_API_RATE=1000
export HERALD_WEBHOOK_ALLOW_PRIVATE=127.0.0.0/8

tenant="$("$bin" tenants create --name contract --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
# Unlimited apps for the tenant, so generated creations are not all refused by the app cap.
"$bin" tenants update "$tenant" --max-apps 0 --json > /dev/null
token="$("$bin" tokens create --tenant "$tenant" --name contract \
    --scopes apps:read,apps:write,keys:write,webhooks:read,webhooks:write,usage:read --json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')"

"$bin" serve > "$work/herald.log" 2>&1 &
pid=$!
url=""
for _ in $(seq 1 100); do
    url="$(sed -n 's/.* listening on \(http:\/\/[0-9.:]*\).*/\1/p' "$work/herald.log" | head -n 1)"
    [[ -n "$url" ]] && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/herald.log" >&2; exit 1; }
    sleep 0.1
done
[[ -n "$url" ]] || { echo "api-contract: herald did not start" >&2; cat "$work/herald.log" >&2; exit 1; }

status=0
# From the scratch directory: schemathesis keeps its cache (.schemathesis/) in the working one.
cd "$work"
timeout 170 "$here/.venv/bin/schemathesis" run "$url/api/v1/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-examples "${CONTRACT_EXAMPLES:-25}" \
    --workers 1 \
    --request-timeout 10 \
    --generation-database none \
    --no-color || status=$?
if [[ $status -ne 0 ]]; then
    echo "api-contract: FAILED (status $status); the server's log:" >&2
    tail -n 50 "$work/herald.log" >&2
fi
exit $status
