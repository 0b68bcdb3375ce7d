#!/usr/bin/env python3
"""The self-test of check_deploy.py (run by infra/validate.sh): copies the deployment files,
breaks one copy per entry of BREAKAGES, runs the checks of that kind of file on it, and fails
unless every breakage is reported with the expected message (and the unbroken copy passes).

    self_test.py
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

from check_deploy import REPO, Ctx, check_all, kind_of

# (file, old text or "re:" and a regex, new text, a substring the reported error must contain).
# Each breaks one copy of the files in one way; the checks of that kind of file must report it.
BREAKAGES = [
    (
        "infra/compose.yaml",
        "    restart: unless-stopped\n",
        "    restart: unless-stopped\n    restrat: always\n",
        "Compose Specification schema",
    ),
    (
        "infra/compose.yaml",
        "    stop_grace_period: 30s\n",
        "    stop_grace_period: 5s\n",
        "stop_grace_period",
    ),
    (
        "infra/compose.yaml",
        "      RUST_LOG: info\n",
        '      RUST_LOG: info\n      HERALD_SHUTDOWN_GRACE: "5"\n',
        "HERALD_SHUTDOWN_GRACE is not a variable Herald reads",
    ),
    (
        "infra/compose.yaml",
        "      - heralddata:/var/lib/herald\n",
        "      - herald-data:/var/lib/herald\n",
        "volume herald-data is not declared",
    ),
    (
        "infra/compose.yaml",
        "      - heralddata:/var/lib/herald\n",
        "      - heralddata:/srv/herald\n",
        "is not on a volume",
    ),
    (
        "infra/compose.yaml",
        'http://127.0.0.1:6001/ready"]',
        'http://127.0.0.1:6001/"]',
        "does not probe /ready",
    ),
    (
        "infra/cluster/compose.yaml",
        '      test: ["CMD", "redis-cli", "ping"]\n',
        "      disable: true\n",
        "service redis: no healthcheck",
    ),
    (
        "infra/cluster/compose.yaml",
        "    dockerfile: infra/Dockerfile\n",
        "    dockerfile: infra/Dockerfile.missing\n",
        "build dockerfile",
    ),
    (
        "infra/k8s/single/deployment.yaml",
        "              path: /ready\n",
        "              path: /readyz\n",
        "readinessProbe must be an httpGet on /ready",
    ),
    (
        "infra/k8s/single/deployment.yaml",
        "      terminationGracePeriodSeconds: 30\n",
        "      terminationGracePeriodSeconds: 10\n",
        "terminationGracePeriodSeconds (10) must exceed",
    ),
    (
        "infra/k8s/cluster/configmap.yaml",
        'HERALD_SHUTDOWN_GRACE_SECS: "10"',
        'HERALD_SHUTDOWN_GRACE_SECS: "25"',
        "plus HERALD_SHUTDOWN_GRACE_SECS (25)",
    ),
    (
        "infra/k8s/single/deployment.yaml",
        "            runAsNonRoot: true\n",
        "            runAsNonRoot: false\n",
        "runAsNonRoot is not true",
    ),
    ("infra/k8s/single/deployment.yaml", "  replicas: 1\n", "  replicas: 1\n  replica: 1\n", "replica"),
    (
        "infra/k8s/cluster/deployment.yaml",
        "            readOnlyRootFilesystem: true\n",
        "            readOnlyRootFilesystem: yes-please\n",
        "against Kubernetes",
    ),
    (
        "infra/k8s/single/pdb.yaml",
        "      app.kubernetes.io/name: herald\n",
        "      app.kubernetes.io/name: heraldd\n",
        "PodDisruptionBudget's selector matches no",
    ),
    (
        "infra/k8s/single/configmap.yaml",
        "  HERALD_DATA_DIR: /var/lib/herald/data\n",
        "  HERALD_DATA_DIR: /data\n",
        "is not on a mounted volume",
    ),
    (
        "infra/k8s/single/configmap.yaml",
        "  HERALD_DATA_DIR: /var/lib/herald/data\n",
        "  HERALD_DATA_DIR: /var/lib/herald\n",
        "is a volume's root",
    ),
    ("infra/k8s/single/kustomization.yaml", "  - pdb.yaml\n", "", "pdb.yaml: not in kustomization.yaml"),
    ("infra/Dockerfile", "USER 10001:10001\n", "", "no USER"),
    ("infra/Dockerfile", "USER 10001:10001\n", "USER root\n", "USER is root"),
    ("infra/Dockerfile", "HEALTHCHECK --interval", "# HEALTHCHECK --interval", "no HEALTHCHECK"),
    ("infra/Dockerfile", "EXPOSE 6001\n", "EXPOSE 8080\n", "EXPOSE 8080 is not HERALD_BIND's port"),
    ("infra/Dockerfile", "COPY dashboard dashboard\n", "", "does not copy dashboard"),
    ("infra/Dockerfile", "COPY dashboard dashboard\n", "", "cargo cannot read the workspace"),
    ("infra/Dockerfile", "COPY migrations migrations\n", "", "does not copy migrations"),
    (
        "infra/Dockerfile",
        "COPY Cargo.toml Cargo.lock ./\n",
        "COPY Cargo.toml ./\n",
        "does not copy Cargo.lock",
    ),
    ("infra/Dockerfile", "FROM debian:bookworm-slim\n", "", "not multi-stage"),
    ("infra/herald.service", "TimeoutStopSec=30\n", "TimeoutStopSec=5\n", "TimeoutStopSec (5) must exceed"),
    ("infra/herald.service", "StateDirectory=herald\n", "", "no StateDirectory=herald"),
    ("infra/herald.service", "Restart=on-failure\n", "Restart=sometimes\n", "systemd-analyze verify"),
    (
        "infra/herald.service",
        "KillSignal=SIGTERM\n",
        "KillSignal=SIGTERM\nKillSignl=SIGTERM\n",
        "systemd-analyze verify",
    ),
    (
        "infra/herald.service",
        "re:CapabilityBoundingSet=.*SystemCallErrorNumber=EPERM\n",
        "",
        "systemd-analyze security",
    ),
    ("infra/cluster/nginx.conf", "        keepalive 32;\n", "        keepalive 32\n", "nginx -t"),
    (
        "infra/cluster/nginx.conf",
        "proxy_read_timeout 3600s;",
        "proxy_read_timeout 60s;",
        "proxy_read_timeout 60s",
    ),
    (
        "infra/cluster/nginx.conf",
        "        keepalive 32;\n",
        "        keepalive 32;\n        ip_hash;\n",
        "stickiness",
    ),
]


def copy_tree(root: Path, dest: Path) -> None:
    for name in ("Cargo.toml", ".dockerignore", "README.md"):
        shutil.copy2(root / name, dest / name)
    shutil.copytree(
        root / "infra",
        dest / "infra",
        ignore=shutil.ignore_patterns(".venv", "target", "__pycache__", "loadgen", "bench"),
    )


def self_test(root: Path, ctx: Ctx) -> int:
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        base.mkdir()
        copy_tree(root, base)
        errors = check_all(base, ctx, report=lambda _: None)
        if errors:
            print("self-test: the unbroken copy already fails:\n" + "\n".join(errors))
            return 1
        for i, (rel, old, new, expect) in enumerate(BREAKAGES):
            work = Path(tmp) / f"case{i}"
            shutil.copytree(base, work)
            target = work / rel
            text = target.read_text()
            pattern = old[3:] if old.startswith("re:") else re.escape(old)
            if not re.search(pattern, text, re.S):
                print(f"  FAIL case {i}: {rel} no longer contains {old!r}: update BREAKAGES")
                failures += 1
                continue
            target.write_text(re.sub(pattern, lambda _: new, text, count=1, flags=re.S))
            errors = check_all(work, ctx, report=lambda _: None, kinds=(kind_of(rel),))
            hit = [e for e in errors if expect is None or expect in e]
            label = f"{rel}: {old.strip()[:40]!r} -> {new.strip()[:40]!r}"
            if hit:
                print(
                    f"  ok   caught  {label}: {' | '.join(hit[0].splitlines()[:2]).replace(str(work) + '/', '')[:160]}"
                )
            else:
                failures += 1
                print(f"  FAIL missed  {label} (expected {expect!r}; got {errors})")
            shutil.rmtree(work)
    print(f"self-test: {len(BREAKAGES) - failures} of {len(BREAKAGES)} broken copies caught")
    return 1 if failures else 0


def main() -> int:
    return self_test(REPO, Ctx(REPO))


if __name__ == "__main__":
    sys.exit(main())
