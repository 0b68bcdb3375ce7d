#!/usr/bin/env bash
# Validates the deployment files (the compose files, the Kubernetes manifests, the Dockerfile,
# the systemd unit, nginx.conf) with what these machines can install, then breaks copies of
# them one way at a time and checks that every breakage is caught. Run by .ci/test-all.
#
#   infra/validate.sh                 check, then self-test
#   infra/validate.sh --no-self-test  check only
#
# Installs, when missing: a venv at infra/validate/.venv with infra/validate/requirements.txt
# (PyPI: check-jsonschema, which vendors the Compose Specification's schema; kubernetes-validate,
# which vendors the Kubernetes schemas; dockerfile-parse; PyYAML), Debian's systemd
# (systemd-analyze) and nginx-light (nginx -t). What each file is checked with, and what cannot
# be run here (no Docker engine, no Kubernetes), is in infra/README.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

self_test=1
case "${1:-}" in
    "") ;;
    --no-self-test) self_test=0 ;;
    *) echo "usage: infra/validate.sh [--no-self-test]" >&2; exit 2 ;;
esac

venv=infra/validate/.venv
requirements=infra/validate/requirements.txt
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    echo "installing the validators into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    echo "$want" >"$stamp"
fi

missing=()
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "installing Debian's ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Grafana dashboard's queries use only metric names the server exports (standard library).
if [[ $self_test -eq 1 ]]; then
    python3 infra/validate/check_grafana.py --self-test
else
    python3 infra/validate/check_grafana.py
fi
"$venv/bin/python" infra/validate/check_deploy.py
if [[ $self_test -eq 1 ]]; then
    echo
    echo "self-test: each broken copy must be caught"
    "$venv/bin/python" infra/validate/self_test.py
fi
