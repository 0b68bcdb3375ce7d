#!/usr/bin/env python3
"""Validates Herald's deployment files (run by infra/validate.sh, in its venv).

    check_deploy.py [--root DIR]      check every deployment file under DIR (default: this repo)

self_test.py beside it breaks copies of the files one way at a time and checks that each
breakage is reported.

What is checked, per kind of file (infra/README.md has the table):
- compose files (infra/compose.yaml, infra/cluster/compose.yaml): the Compose Specification's
  JSON schema (vendored in check-jsonschema), then Herald's rules: every service has an image or
  a build (whose context and Dockerfile exist) and a healthcheck, Herald services probe /ready,
  stop after more than HERALD_SHUTDOWN_GRACE_SECS, name only HERALD_* variables the server
  reads, keep an SQLite data dir on a volume; named volumes and networks are declared, bind
  mounts exist, depends_on service_healthy targets have a healthcheck.
- Kubernetes manifests (infra/k8s/*/): every resource against the Kubernetes schemas vendored in
  kubernetes-validate (strict: unknown fields fail), for two Kubernetes versions; the
  kustomization lists files that exist and every manifest but *.example.yaml; Herald's rules:
  readiness on /ready, liveness on /health, terminationGracePeriodSeconds above the preStop pause
  plus HERALD_SHUTDOWN_GRACE_SECS, non-root (the Dockerfile's user), no privilege escalation, a
  read-only root filesystem with the data dir on a volume, known HERALD_* variables, and the
  Service, PodDisruptionBudget, ConfigMaps and claims match the Deployment.
- infra/Dockerfile (dockerfile-parse): multi-stage, the build stage copies every workspace
  member, the runtime stage is a slim base with a numeric non-root USER, a HEALTHCHECK on
  /ready or /health, EXPOSE of HERALD_BIND's port, an ENTRYPOINT; COPY sources exist and are
  not excluded by .dockerignore.
- systemd units (infra/*.service): `systemd-analyze verify` (any warning fails), `systemd-analyze
  security --offline=true --threshold=20`, and Herald's rules: StateDirectory=herald with
  HERALD_DATA_DIR in it, a non-root user, TimeoutStopSec above HERALD_SHUTDOWN_GRACE_SECS, a
  restart policy.
- nginx.conf (infra/cluster/): `nginx -t` on a copy whose upstream host names are replaced by
  127.0.0.1 (nginx resolves them while testing), plus Herald's rules: WebSocket upgrade headers,
  read timeout well above the 120 s activity timeout, no stickiness.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
K8S_VERSIONS = ["1.37.0", "1.29.0"]
DEFAULT_GRACE_SECS = 10
# systemd-analyze security's overall exposure, times ten (2.0 "OK"): what remains for a
# network server that must reach any address.
SYSTEMD_EXPOSURE_THRESHOLD = 20
# nginx's read timeout must be well above pusher's 120 s activity timeout.
MIN_PROXY_READ_TIMEOUT_SECS = 300


class Ctx:
    """What the checks compare against, read from the real repository."""

    def __init__(self, repo: Path):
        self.repo = repo
        names: set[str] = set()
        for sub in ("server/src", "dashboard/src"):
            for path in (repo / sub).rglob("*.rs"):
                names.update(re.findall(r'"(HERALD_[A-Z0-9_]+)"', path.read_text()))
        self.known_env = names
        self.readme = (repo / "README.md").read_text()
        cargo = (repo / "Cargo.toml").read_text()
        members = re.search(r"members\s*=\s*\[([^\]]*)\]", cargo)
        self.members = re.findall(r'"([^"]+)"', members.group(1)) if members else []


# ----------------------------------------------------------------------------------- helpers


def load_yaml_docs(path: Path) -> list:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def duration_secs(value) -> float | None:
    """Compose durations (`30s`, `1m30s`, `500ms`) and plain numbers, in seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str):
        return None
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", value):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}[m.group(2)]
        pos = m.end()
    return total if pos == len(value) and pos > 0 else None


def interpolate(value):
    """Compose's ${VAR:-default} / ${VAR-default} / ${VAR} with nothing set: the defaults."""
    if isinstance(value, str):
        return re.sub(r"\$\{[A-Za-z0-9_]+(?::?[-?+]([^}]*))?\}", lambda m: m.group(1) or "", value)
    return value


def env_errors(where: str, names, ctx: Ctx) -> list[str]:
    errors = []
    for name in names:
        if not name.startswith("HERALD_"):
            continue
        if name not in ctx.known_env:
            errors.append(f"{where}: {name} is not a variable Herald reads (server/src, dashboard/src)")
        elif name not in ctx.readme and not name.startswith("HERALD_DEFAULT_APP_"):
            errors.append(f"{where}: {name} is not documented in README.md")
    return errors


def grace_of(env: dict) -> float:
    raw = env.get("HERALD_SHUTDOWN_GRACE_SECS")
    try:
        return float(raw) if raw not in (None, "") else DEFAULT_GRACE_SECS
    except ValueError:
        return DEFAULT_GRACE_SECS


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


# ----------------------------------------------------------------------------------- compose


def compose_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "infra").rglob("compose*.yaml") if ".venv" not in p.parts)


def check_compose_schema(path: Path) -> list[str]:
    result = run([str(VENV_BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)])
    if result.returncode != 0:
        return [f"{path}: the Compose Specification schema rejects it:\n{result.stdout}{result.stderr}"]
    return []


def compose_env(service: dict) -> dict:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: interpolate(v if v is None else str(v)) for k, v in env.items()}


def is_herald_service(service: dict) -> bool:
    build = service.get("build")
    dockerfile = build.get("dockerfile", "") if isinstance(build, dict) else ""
    return str(service.get("image", "")).startswith("herald") or dockerfile.endswith("infra/Dockerfile")


def check_compose_rules(path: Path, ctx: Ctx) -> list[str]:
    errors: list[str] = []
    try:
        (doc,) = load_yaml_docs(path)
    except (yaml.YAMLError, ValueError) as e:
        return [f"{path}: not one YAML document: {e}"]
    services = doc.get("services") or {}
    declared_volumes = set((doc.get("volumes") or {}).keys())
    declared_networks = set((doc.get("networks") or {}).keys()) | {"default"}
    herald_count = 0
    for name, svc in services.items():
        where = f"{path}: service {name}"
        if "image" not in svc and "build" not in svc:
            errors.append(f"{where}: neither image nor build")
        build = svc.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            ctx_dir = (path.parent / interpolate(context)).resolve()
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            if not ctx_dir.is_dir():
                errors.append(f"{where}: build context {context} does not exist")
            elif not (ctx_dir / dockerfile).is_file():
                errors.append(f"{where}: build dockerfile {dockerfile} not found in {ctx_dir}")
        health = svc.get("healthcheck")
        if not health or health.get("disable") or not health.get("test"):
            errors.append(f"{where}: no healthcheck")
        depends = svc.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {dep: {} for dep in depends}
        for dep, spec in depends.items():
            if dep not in services:
                errors.append(f"{where}: depends on unknown service {dep}")
            elif spec.get("condition") == "service_healthy" and not services[dep].get("healthcheck"):
                errors.append(f"{where}: waits for {dep} to be healthy, but {dep} has no healthcheck")
        nets = svc.get("networks") or []
        for net in nets if isinstance(nets, list) else nets.keys():
            if net not in declared_networks:
                errors.append(f"{where}: network {net} is not declared")
        mounts: list[str] = []
        for vol in svc.get("volumes") or []:
            source, target = (
                (vol.split(":")[0], vol.split(":")[1])
                if isinstance(vol, str)
                else (vol.get("source", ""), vol.get("target", ""))
            )
            mounts.append(target)
            if source.startswith((".", "/")):
                if not (path.parent / source).exists():
                    errors.append(f"{where}: bind mount source {source} does not exist")
            elif source and source not in declared_volumes:
                errors.append(f"{where}: volume {source} is not declared")
        if not is_herald_service(svc):
            continue
        herald_count += 1
        env = compose_env(svc)
        errors += env_errors(where, env.keys(), ctx)
        test = (
            " ".join(health.get("test", []))
            if health and isinstance(health.get("test"), list)
            else str((health or {}).get("test", ""))
        )
        if health and "/ready" not in test:
            errors.append(f"{where}: the healthcheck does not probe /ready")
        grace = grace_of(env)
        stop = duration_secs(svc.get("stop_grace_period", "10s"))
        if stop is None or stop <= grace:
            errors.append(
                f"{where}: stop_grace_period ({svc.get('stop_grace_period', '10s, the default')}) must exceed "
                f"HERALD_SHUTDOWN_GRACE_SECS ({grace:g}s)"
            )
        db = env.get("HERALD_DATABASE_URL") or "sqlite:"
        data_dir = env.get("HERALD_DATA_DIR")
        if not data_dir:
            errors.append(f"{where}: HERALD_DATA_DIR is not set")
        elif db.startswith("sqlite:") and not any(
            data_dir == m or data_dir.startswith(m.rstrip("/") + "/") for m in mounts
        ):
            errors.append(
                f"{where}: the SQLite data dir {data_dir} is not on a volume (the store would die with the container)"
            )
        bind = env.get("HERALD_BIND", "")
        if not bind.startswith("0.0.0.0:") and not bind.startswith("[::]:"):
            errors.append(
                f"{where}: HERALD_BIND ({bind or 'unset: 127.0.0.1'}) is not reachable from outside the container"
            )
    if herald_count == 0:
        errors.append(f"{path}: no Herald service (image herald... or build of infra/Dockerfile)")
    return errors


# ----------------------------------------------------------------------------------- kubernetes


def k8s_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in (root / "infra/k8s").glob("*/kustomization.yaml"))


def check_k8s_schema(path: Path) -> list[str]:
    import kubernetes_validate

    errors = []
    for doc in load_yaml_docs(path):
        if doc.get("kind") == "Kustomization":
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                loc = ".".join(str(p) for p in e.path)
                errors.append(f"{path}: {doc.get('kind')} against Kubernetes {version}: {loc}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                errors.append(f"{path}: no schema: {e}")
    return errors


def probe_path(probe) -> str | None:
    return ((probe or {}).get("httpGet") or {}).get("path")


def check_k8s_dir(directory: Path, ctx: Ctx, image_uid: int | None) -> list[str]:
    errors: list[str] = []
    kust = load_yaml_docs(directory / "kustomization.yaml")[0]
    listed = kust.get("resources") or []
    for res in listed:
        if not (directory / res).is_file():
            errors.append(f"{directory}/kustomization.yaml: resource {res} does not exist")
    for path in sorted(directory.glob("*.yaml")):
        if (
            path.name != "kustomization.yaml"
            and path.name not in listed
            and not path.name.endswith(".example.yaml")
        ):
            errors.append(
                f"{path}: not in kustomization.yaml's resources (name it *.example.yaml if it is an example)"
            )
    docs = []
    for path in sorted(directory.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        errors += check_k8s_schema(path)
        docs += [(path, d) for d in load_yaml_docs(path)]
    by_kind: dict[str, list] = {}
    for path, doc in docs:
        by_kind.setdefault(doc.get("kind"), []).append((path, doc))
    configmaps = {d["metadata"]["name"]: d.get("data") or {} for _, d in by_kind.get("ConfigMap", [])}
    secrets = {
        d["metadata"]["name"]: {**(d.get("stringData") or {}), **(d.get("data") or {})}
        for _, d in by_kind.get("Secret", [])
    }
    claims = {d["metadata"]["name"] for _, d in by_kind.get("PersistentVolumeClaim", [])}
    for path, cm in by_kind.get("ConfigMap", []) + by_kind.get("Secret", []):
        data = {**(cm.get("data") or {}), **(cm.get("stringData") or {})}
        errors += env_errors(f"{path}", data.keys(), ctx)
    deployments = by_kind.get("Deployment", [])
    if not deployments:
        errors.append(f"{directory}: no Deployment")
    image_names = set()
    pod_label_sets = []
    for path, dep in deployments:
        where = f"{path}: Deployment {dep['metadata']['name']}"
        pod = dep["spec"]["template"]["spec"]
        labels = dep["spec"]["template"]["metadata"].get("labels") or {}
        pod_label_sets.append(labels)
        pod_sc = pod.get("securityContext") or {}
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        for v in volumes.values():
            claim = (v.get("persistentVolumeClaim") or {}).get("claimName")
            if claim and claim not in claims:
                errors.append(f"{where}: volume {v['name']} claims {claim}, which no manifest here defines")
        for c in pod.get("containers") or []:
            cw = f"{where}, container {c['name']}"
            image_names.add(c.get("image", "").split(":")[0])
            sc = c.get("securityContext") or {}
            env: dict = {}
            for src in c.get("envFrom") or []:
                if "configMapRef" in src:
                    name = src["configMapRef"]["name"]
                    if name not in configmaps:
                        errors.append(f"{cw}: envFrom ConfigMap {name} is not defined here")
                    env.update(configmaps.get(name, {}))
                if "secretRef" in src:
                    env.update(secrets.get(src["secretRef"]["name"], {}))
            for e in c.get("env") or []:
                env[e["name"]] = e.get("value", "")
            errors += env_errors(cw, env.keys(), ctx)
            ports = {p.get("name") for p in c.get("ports") or []} | {
                p["containerPort"] for p in c.get("ports") or []
            }
            for kind, want in (("readinessProbe", "/ready"), ("livenessProbe", "/health")):
                probe = c.get(kind)
                if probe_path(probe) != want:
                    errors.append(f"{cw}: {kind} must be an httpGet on {want} (is {probe_path(probe)})")
                elif probe["httpGet"].get("port") not in ports:
                    errors.append(f"{cw}: {kind} port {probe['httpGet'].get('port')} is not a container port")
            if c.get("startupProbe") and probe_path(c["startupProbe"]) not in ("/health", "/ready"):
                errors.append(f"{cw}: startupProbe must probe /health")
            grace = grace_of(env)
            pre_stop = ((c.get("lifecycle") or {}).get("preStop") or {}).get("exec", {}).get("command") or []
            pause = float(pre_stop[1]) if len(pre_stop) == 2 and pre_stop[0] == "sleep" else 0.0
            tgps = pod.get("terminationGracePeriodSeconds", 30)
            if tgps <= grace + pause:
                errors.append(
                    f"{where}: terminationGracePeriodSeconds ({tgps}) must exceed the preStop pause ({pause:g}) "
                    f"plus HERALD_SHUTDOWN_GRACE_SECS ({grace:g})"
                )
            non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
            uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
            if non_root is not True:
                errors.append(f"{cw}: runAsNonRoot is not true")
            if uid == 0:
                errors.append(f"{cw}: runAsUser is 0")
            if image_uid is not None and uid is not None and uid != image_uid:
                errors.append(f"{cw}: runAsUser {uid} is not the image's user {image_uid} (infra/Dockerfile)")
            if sc.get("allowPrivilegeEscalation") is not False:
                errors.append(f"{cw}: allowPrivilegeEscalation is not false")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                errors.append(f"{cw}: capabilities do not drop ALL")
            mounts = [m["mountPath"] for m in c.get("volumeMounts") or []]
            for m in c.get("volumeMounts") or []:
                if m["name"] not in volumes:
                    errors.append(f"{cw}: volumeMount {m['name']} has no volume")
            if sc.get("readOnlyRootFilesystem") is not True:
                errors.append(f"{cw}: readOnlyRootFilesystem is not true")
            data_dir = env.get("HERALD_DATA_DIR")
            if not data_dir:
                errors.append(f"{cw}: HERALD_DATA_DIR is not set")
            elif not any(data_dir == m or data_dir.startswith(m.rstrip("/") + "/") for m in mounts):
                errors.append(
                    f"{cw}: HERALD_DATA_DIR {data_dir} is not on a mounted volume (the root filesystem is read-only)"
                )
            elif str(env.get("HERALD_DATABASE_URL") or "sqlite:").startswith("sqlite:") and data_dir.rstrip(
                "/"
            ) in [m.rstrip("/") for m in mounts]:
                errors.append(
                    f"{cw}: HERALD_DATA_DIR {data_dir} is a volume's root: with SQLite Herald makes its data dir "
                    "0700, which it cannot do on a directory owned by root (use a directory inside the volume)"
                )
            if not str(env.get("HERALD_BIND", "")).startswith(("0.0.0.0:", "[::]:")):
                errors.append(
                    f"{cw}: HERALD_BIND is not 0.0.0.0:PORT (probes and the Service could not reach it)"
                )
    for image in kust.get("images") or []:
        if image.get("name") not in image_names:
            errors.append(
                f"{directory}/kustomization.yaml: images entry {image.get('name')} matches no container image"
            )

    def selects(selector: dict) -> bool:
        return any(all(labels.get(k) == v for k, v in selector.items()) for labels in pod_label_sets)

    for path, svc in by_kind.get("Service", []):
        if not selects(svc["spec"].get("selector") or {}) or not svc["spec"].get("selector"):
            errors.append(
                f"{path}: Service {svc['metadata']['name']}'s selector matches no Deployment's pods"
            )
    pdbs = by_kind.get("PodDisruptionBudget", [])
    if not pdbs:
        errors.append(f"{directory}: no PodDisruptionBudget")
    for path, pdb in pdbs:
        if not selects((pdb["spec"].get("selector") or {}).get("matchLabels") or {}):
            errors.append(f"{path}: PodDisruptionBudget's selector matches no Deployment's pods")
    if not by_kind.get("Service"):
        errors.append(f"{directory}: no Service")
    return errors


# ----------------------------------------------------------------------------------- Dockerfile


def dockerignore_patterns(root: Path) -> list[str]:
    path = root / ".dockerignore"
    if not path.is_file():
        return []
    return [
        l.strip().lstrip("/") for l in path.read_text().splitlines() if l.strip() and not l.startswith("#")
    ]


def ignored(path: str, patterns: list[str]) -> bool:
    import fnmatch

    parts = path.strip("/").split("/")
    for pat in patterns:
        bare = pat.replace("**/", "")
        for i in range(len(parts)):
            if fnmatch.fnmatch("/".join(parts[: i + 1]), pat) or (
                "**/" in pat and fnmatch.fnmatch(parts[i], bare)
            ):
                return True
    return False


def dockerfile_uid(path: Path) -> int | None:
    from dockerfile_parse import DockerfileParser

    users = [i["value"] for i in DockerfileParser(path=str(path)).structure if i["instruction"] == "USER"]
    if users and users[-1].split(":")[0].isdigit():
        return int(users[-1].split(":")[0])
    return None


def host_triple() -> str:
    out = run(["rustc", "-vV"]).stdout
    m = re.search(r"^host: (\S+)", out, re.M)
    return m.group(1) if m else "x86_64-unknown-linux-gnu"


def check_build_inputs(path: Path, ctx: Ctx, copied: list[str]) -> list[str]:
    """The files the members' sources read at compile time (include_str!, include_bytes!,
    sqlx::migrate!) lie in what the build stage copies, and cargo resolves herald-server from the
    copied files alone with the committed lockfile (`cargo tree --locked` in a scratch copy)."""
    errors: list[str] = []

    def is_copied(target: Path) -> bool:
        try:
            rel = target.resolve().relative_to(ctx.repo)
        except ValueError:
            return False
        return any(rel == Path(c) or Path(c) in rel.parents for c in copied)

    for member in ctx.members:
        for rs in sorted((ctx.repo / member / "src").rglob("*.rs")):
            text = rs.read_text()
            targets = [rs.parent / m for m in re.findall(r'include_(?:str|bytes)!\(\s*"([^"]+)"', text)]
            targets += [ctx.repo / member / m for m in re.findall(r'sqlx::migrate!\(\s*"([^"]+)"', text)]
            for target in targets:
                if not is_copied(target):
                    rel = os.path.relpath(target.resolve(), ctx.repo)
                    errors.append(
                        f"{path}: the build stage does not copy {rel} ({rs.relative_to(ctx.repo)} reads it while compiling)"
                    )
    cargo = shutil.which("cargo")
    if not cargo:
        return errors + [f"{path}: cargo is not installed: cannot check the workspace the build stage copies"]
    with tempfile.TemporaryDirectory() as tmp:
        for c in copied:
            src = ctx.repo / c
            if src.is_dir():
                shutil.copytree(
                    src, Path(tmp) / c, ignore=shutil.ignore_patterns("target", "node_modules", ".venv")
                )
            elif src.is_file():
                (Path(tmp) / c).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, Path(tmp) / c)
        # The dependency graph for this machine's target (all targets would need the manifests
        # of Windows-only crates, which the build never downloads).
        result = run(
            [cargo, "tree", "--locked", "--target", host_triple(), "-e", "normal", "-p", "herald-server"],
            cwd=tmp,
        )
        if result.returncode != 0:
            errors.append(
                f"{path}: cargo cannot read the workspace from what the build stage copies:\n"
                f"{result.stderr.strip()}"
            )
    return errors


def check_dockerfile(path: Path, ctx: Ctx) -> list[str]:
    from dockerfile_parse import DockerfileParser

    errors: list[str] = []
    if not path.is_file():
        return [f"{path}: missing"]
    parser = DockerfileParser(path=str(path))
    stages: list[list[dict]] = []
    for ins in parser.structure:
        if ins["instruction"] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    if len(stages) < 2:
        return [f"{path}: not multi-stage ({len(stages)} FROM): the runtime image would carry the toolchain"]
    build, final = stages[0], stages[-1]
    final_base = final[0]["value"].split()[0]
    if not re.search(r"slim|distroless|alpine|scratch|busybox", final_base):
        errors.append(
            f"{path}: the runtime stage's base {final_base} is not a small image (slim, distroless, alpine)"
        )
    if final_base == build[0]["value"].split()[0]:
        errors.append(f"{path}: the runtime stage is built on the build stage's image")
    patterns = dockerignore_patterns(ctx_root := path.parent.parent)
    if not (ctx_root / ".dockerignore").is_file():
        errors.append(
            f"{ctx_root}/.dockerignore is missing (the build context would include target/ and .git)"
        )
    else:
        for must in ("target", ".git"):
            if not ignored(must, patterns):
                errors.append(f"{ctx_root}/.dockerignore does not exclude {must}")
    copied = []
    for ins in build:
        if ins["instruction"] in ("COPY", "ADD"):
            args = [a for a in ins["value"].split() if not a.startswith("--")]
            for src in args[:-1]:
                copied.append(src.rstrip("/"))
                if not (ctx.repo / src).exists():
                    errors.append(f"{path}:{ins['startline'] + 1}: COPY source {src} does not exist")
                elif ignored(src, patterns):
                    errors.append(
                        f"{path}:{ins['startline'] + 1}: COPY source {src} is excluded by .dockerignore"
                    )
    for need in ["Cargo.toml", "Cargo.lock", *ctx.members]:
        if need not in copied:
            errors.append(f"{path}: the build stage does not copy {need} (a workspace member or build input)")
    errors += check_build_inputs(path, ctx, copied)
    final_ins = {i["instruction"]: i["value"] for i in final}
    for ins in final:
        if ins["instruction"] in ("COPY", "ADD") and "--from=" not in ins["value"]:
            errors.append(
                f"{path}:{ins['startline'] + 1}: the runtime stage copies from the build context, not a stage"
            )
    user = final_ins.get("USER")
    if user is None:
        errors.append(f"{path}: the runtime stage has no USER (it would run as root)")
    else:
        uid = user.split(":")[0]
        if uid in ("root", "0"):
            errors.append(f"{path}: the runtime stage's USER is root")
        elif not uid.isdigit():
            errors.append(
                f"{path}: USER {user} is not numeric (Kubernetes' runAsNonRoot cannot check a name)"
            )
    health = final_ins.get("HEALTHCHECK")
    if not health or health.strip().upper() == "NONE":
        errors.append(f"{path}: the runtime stage has no HEALTHCHECK")
    elif "/ready" not in health and "/health" not in health:
        errors.append(f"{path}: the HEALTHCHECK probes neither /ready nor /health")
    expose = final_ins.get("EXPOSE")
    env = {}
    for ins in final:
        if ins["instruction"] == "ENV":
            env.update(dict(re.findall(r'(\w+)=("[^"]*"|\S+)', ins["value"])))
    bind_port = env.get("HERALD_BIND", "127.0.0.1:6001").strip('"').rsplit(":", 1)[-1]
    if not expose:
        errors.append(f"{path}: the runtime stage has no EXPOSE")
    elif bind_port not in expose.split() and f"{bind_port}/tcp" not in expose.split():
        errors.append(f"{path}: EXPOSE {expose} is not HERALD_BIND's port {bind_port}")
    if health and bind_port not in health:
        errors.append(f"{path}: the HEALTHCHECK does not use HERALD_BIND's port {bind_port}")
    if not env.get("HERALD_BIND", "").strip('"').startswith("0.0.0.0:"):
        errors.append(
            f"{path}: HERALD_BIND is not 0.0.0.0:PORT (the default 127.0.0.1 is unreachable from outside)"
        )
    errors += env_errors(str(path), env.keys(), ctx)
    if "ENTRYPOINT" not in final_ins:
        errors.append(f"{path}: no ENTRYPOINT")
    return errors


# ----------------------------------------------------------------------------------- systemd


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        elif "=" in line and current is not None:
            key, value = line.split("=", 1)
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def check_systemd_unit(path: Path, ctx: Ctx) -> list[str]:
    errors: list[str] = []
    text = path.read_text()
    unit = parse_unit(text)
    svc = unit.get("Service", {})
    last = {k: v[-1] for k, v in svc.items()}
    exec_start = last.get("ExecStart", "").split()
    if not exec_start:
        return [f"{path}: no ExecStart"]
    env = {}
    for item in svc.get("Environment", []):
        for k, v in re.findall(r'"?(\w+)=([^"\s]*)"?', item):
            env[k] = v
    errors += env_errors(str(path), env.keys(), ctx)
    state = last.get("StateDirectory", "").split()
    if "herald" not in state:
        errors.append(f"{path}: no StateDirectory=herald")
    data_dir = env.get("HERALD_DATA_DIR", "")
    if data_dir not in ("%S/herald", "/var/lib/herald"):
        errors.append(
            f"{path}: HERALD_DATA_DIR ({data_dir or 'unset'}) is not the state directory (%S/herald)"
        )
    if last.get("StateDirectoryMode", "0755") not in ("0700", "700"):
        errors.append(f"{path}: StateDirectoryMode is not 0700 (the store holds every app secret)")
    user = last.get("User")
    if last.get("DynamicUser", "no") not in ("yes", "true", "1") and (user is None or user in ("root", "0")):
        errors.append(f"{path}: runs as root (neither DynamicUser=yes nor a User)")
    grace = grace_of(env)
    stop = duration_secs(last.get("TimeoutStopSec", "90s").replace(" ", ""))
    if stop is None or stop <= grace:
        errors.append(
            f"{path}: TimeoutStopSec ({last.get('TimeoutStopSec')}) must exceed HERALD_SHUTDOWN_GRACE_SECS ({grace:g})"
        )
    if last.get("Restart", "no") not in ("on-failure", "always", "on-abnormal"):
        errors.append(f"{path}: no restart policy (Restart=on-failure)")
    if not shutil.which("systemd-analyze"):
        errors.append(
            f"{path}: systemd-analyze is not installed (infra/validate.sh installs Debian's systemd)"
        )
        return errors
    # verify checks that the ExecStart binary exists: point it at a stub in a scratch copy.
    with tempfile.TemporaryDirectory() as tmp:
        stub = Path(tmp) / "herald"
        stub.write_text("#!/bin/sh\n")
        stub.chmod(0o755)
        copy = Path(tmp) / path.name
        copy.write_text(text.replace(exec_start[0], str(stub)))
        result = run(["systemd-analyze", "verify", "--man=no", str(copy)])
        output = (result.stdout + result.stderr).strip()
        if result.returncode != 0 or output:
            errors.append(f"{path}: systemd-analyze verify:\n{output.replace(str(copy), str(path))}")
        result = run(
            [
                "systemd-analyze",
                "security",
                "--offline=true",
                f"--threshold={SYSTEMD_EXPOSURE_THRESHOLD}",
                str(copy),
            ]
        )
        if result.returncode != 0:
            summary = [l for l in result.stdout.splitlines() if "Overall exposure" in l]
            errors.append(
                f"{path}: systemd-analyze security: exposure above {SYSTEMD_EXPOSURE_THRESHOLD / 10:g} "
                f"({summary[-1].strip() if summary else result.stderr.strip()})"
            )
    return errors


# ----------------------------------------------------------------------------------- nginx


def check_nginx(path: Path) -> list[str]:
    errors: list[str] = []
    text = path.read_text()
    for needed, why in (
        (r"proxy_set_header\s+Upgrade\s+\$http_upgrade", "WebSocket upgrades (Upgrade header)"),
        (r"proxy_set_header\s+Connection\s+\$connection_upgrade", "WebSocket upgrades (Connection header)"),
        (r"proxy_http_version\s+1\.1", "HTTP/1.1 to the nodes"),
    ):
        if not re.search(needed, text):
            errors.append(f"{path}: missing {why}")
    timeout = re.search(r"proxy_read_timeout\s+(\d+)(s|m|h)?\s*;", text)
    secs = int(timeout.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[timeout.group(2)] if timeout else 60
    if secs < MIN_PROXY_READ_TIMEOUT_SECS:
        errors.append(
            f"{path}: proxy_read_timeout {secs}s would cut idle sockets (at least {MIN_PROXY_READ_TIMEOUT_SECS}s)"
        )
    for directive in ("ip_hash", "sticky", "hash"):
        if re.search(rf"^\s*{directive}\b", text, re.M):
            errors.append(f"{path}: stickiness ({directive}): Herald needs round robin")
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if not nginx:
        errors.append(f"{path}: nginx is not installed (infra/validate.sh installs Debian's nginx-light)")
        return errors
    with tempfile.TemporaryDirectory() as tmp:
        port = iter(range(16001, 16100))
        copy = re.sub(
            r"(\bserver\s+)[A-Za-z][\w.-]*:\d+", lambda m: f"{m.group(1)}127.0.0.1:{next(port)}", text
        )
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(copy)
        result = run([nginx, "-t", "-q", "-e", "stderr", "-p", tmp + "/", "-c", str(conf)])
        if result.returncode != 0:
            errors.append(
                f"{path}: nginx -t:\n{(result.stdout + result.stderr).strip().replace(str(conf), str(path))}"
            )
    return errors


# ----------------------------------------------------------------------------------- all


def kind_of(rel: str) -> str:
    if "compose" in rel:
        return "compose"
    if "/k8s/" in rel:
        return "k8s"
    if rel.endswith(".service"):
        return "systemd"
    if "nginx" in rel:
        return "nginx"
    return "docker"


def check_all(
    root: Path, ctx: Ctx, report=print, kinds=("compose", "docker", "k8s", "systemd", "nginx")
) -> list[str]:
    """Every check of the given kinds of file under root/infra."""
    errors: list[str] = []

    def section(name: str, found: list[str]) -> None:
        report(f"  {'ok  ' if not found else 'FAIL'} {name}")
        errors.extend(found)

    composes = compose_files(root) if "compose" in kinds else []
    if "compose" in kinds and not composes:
        errors.append(f"{root}/infra: no compose file")
    for path in composes:
        rel = path.relative_to(root)
        section(
            f"{rel}: Compose Specification schema (check-jsonschema vendor.compose-spec)",
            check_compose_schema(path),
        )
        section(f"{rel}: Herald's compose rules", check_compose_rules(path, ctx))
    dockerfile = root / "infra/Dockerfile"
    if "docker" in kinds:
        section("infra/Dockerfile: dockerfile-parse rules", check_dockerfile(dockerfile, ctx))
    uid = dockerfile_uid(dockerfile) if dockerfile.is_file() else None
    dirs = k8s_dirs(root) if "k8s" in kinds else []
    if "k8s" in kinds and not dirs:
        errors.append(f"{root}/infra/k8s: no kustomization")
    for directory in dirs:
        section(
            f"{directory.relative_to(root)}/: kubernetes-validate --strict ({', '.join(K8S_VERSIONS)}) "
            "and Herald's rules",
            check_k8s_dir(directory, ctx, uid),
        )
    units = sorted((root / "infra").glob("*.service")) if "systemd" in kinds else []
    if "systemd" in kinds and not units:
        errors.append(f"{root}/infra: no systemd unit")
    for path in units:
        section(
            f"{path.relative_to(root)}: systemd-analyze verify, security --offline, Herald's rules",
            check_systemd_unit(path, ctx),
        )
    for path in sorted((root / "infra").rglob("nginx*.conf")) if "nginx" in kinds else []:
        section(f"{path.relative_to(root)}: nginx -t and Herald's rules", check_nginx(path))
    return errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=REPO, help="a copy of the repository to check")
    args = ap.parse_args()
    ctx = Ctx(REPO)
    root = args.root.resolve()
    errors = check_all(root, ctx)
    if errors:
        print(f"\n{len(errors)} problem(s):")
        for e in errors:
            print(f"- {e.replace(str(root) + '/', '')}")
        return 1
    print("deployment files: every check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
