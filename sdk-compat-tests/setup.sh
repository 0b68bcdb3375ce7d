#!/usr/bin/env bash
# Installs what the compat suite needs, idempotently: npm packages from the committed lockfile,
# pusher-http-python in a venv, Debian's Chromium when /usr/bin/chromium is missing, Debian's
# nginx-light when nginx is missing (the load balancer of `node run.mjs --cluster`), and PHP with
# pusher-http-php's dependencies from Debian's packages when any of them is missing (the SDK itself
# is not installed: Packagist is not reachable; lib/php.mjs finds the unmodified copy in
# shared/vendor/pusher-http-php, or $HERALD_PHP_SDK_DIR, and the run fails if it cannot).
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
# pusher-http-php 7.2.x: PHP with curl, json, mbstring and sodium (built into Debian's PHP), Guzzle 7
# and the PSR interfaces it needs, each with its Debian autoloader under /usr/share/php.
php_packages=(php-cli php-curl php-mbstring php-guzzlehttp-guzzle php-guzzlehttp-psr7
    php-guzzlehttp-promises php-psr-http-message php-psr-http-client php-psr-log)
for package in "${php_packages[@]}"; do
    if [[ "$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null)" != "install ok installed" ]]; then
        echo "installing Debian's $package (pusher-http-php scenarios)"
        missing+=("$package")
    fi
done
if [[ ${#missing[@]} -gt 0 ]]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi
