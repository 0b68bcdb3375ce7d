#!/usr/bin/env bash
# Installs what the compat suite needs, idempotently: npm packages from the committed lockfile,
# pusher-http-python in a venv, Debian's Chromium when /usr/bin/chromium is missing, and Debian's
# nginx-light when nginx is missing (the load balancer of `node run.mjs --cluster`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

npm ci --no-audit --no-fund

if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r py/requirements.txt

missing=()
if [[ ! -x /usr/bin/chromium ]]; then
    echo "installing Debian's chromium (headless browser scenarios)"
    missing+=(chromium)
fi
if ! command -v nginx >/dev/null 2>&1 && [[ ! -x /usr/sbin/nginx ]]; then
    echo "installing Debian's nginx-light (the cluster variant's load balancer)"
    missing+=(nginx-light)
fi
if [[ ${#missing[@]} -gt 0 ]]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi
