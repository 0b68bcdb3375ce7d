#!/usr/bin/env bash
# Installs what the compat suite needs, idempotently: npm packages from the committed lockfile,
# pusher-http-python in a venv, and Debian's Chromium when /usr/bin/chromium is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

npm ci --no-audit --no-fund

if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r py/requirements.txt

if [[ ! -x /usr/bin/chromium ]]; then
    echo "installing Debian's chromium (headless browser scenarios)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
fi
