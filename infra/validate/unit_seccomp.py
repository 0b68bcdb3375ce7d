#!/usr/bin/env python3
"""Runs Herald under the system call filter of infra/herald.service (run by .ci/test-all after
the release build; systemd is not PID 1 on these machines, so the unit itself cannot be started).

    unit_seccomp.py HERALD_BIN              the smoke run under the unit's filter: must pass
    unit_seccomp.py HERALD_BIN --self-test  the same under filters that leave out what Herald
                                            needs: each must fail

The unit's SystemCallFilter= (allow-list, then ~ removals, groups expanded by `systemd-analyze
syscall-filter`), SystemCallErrorNumber=, SystemCallArchitectures=native,
RestrictAddressFamilies= and MemoryDenyWriteExecute= are rebuilt with libseccomp (through
ctypes) the way systemd applies them, and loaded in the child after it drops to an unprivileged
user, right before exec, as systemd does. Herald then serves one node on a scratch SQLite store:
/health and /ready answer 200, a WebSocket subscribes to a channel, a signed REST trigger reaches
it, the dashboard's sign-in page renders, and SIGTERM closes the socket with 4200 and exits 0.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import hmac
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "infra/herald.service"
NOBODY = 65534
APP_ID, APP_KEY, APP_SECRET = "424242", "unitseccompkey000001", "unitseccompsecret0000001"

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_CMP_EQ = 4
SCMP_CMP_MASKED_EQ = 7
PROT_WRITE, PROT_EXEC = 0x2, 0x4
ADDRESS_FAMILIES = {"AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10, "AF_NETLINK": 16, "AF_PACKET": 17}
ERRNOS = {"EPERM": 1, "EACCES": 13, "ENOSYS": 38}
# systemd allows these in every allow-list (seccomp_filter_set_add's implicit set).
ALWAYS_ALLOWED = ["execve", "exit", "exit_group", "getrlimit", "rt_sigreturn", "sigreturn"]


def scmp_act_errno(errno: int) -> int:
    return 0x00050000 | (errno & 0xFFFF)


class ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def expand_group(name: str, seen: set[str] | None = None) -> set[str]:
    """A systemd syscall group (@name), its nested groups included, or a plain syscall name."""
    if not name.startswith("@"):
        return {name}
    seen = seen if seen is not None else set()
    if name in seen:
        return set()
    seen.add(name)
    out = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"systemd-analyze syscall-filter {name}: {out.stderr.strip()}")
    calls: set[str] = set()
    for line in out.stdout.splitlines()[1:]:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        calls |= expand_group(line, seen)
    return calls


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


class Filter:
    """The unit's seccomp settings as one libseccomp filter."""

    def __init__(self, unit_text: str):
        settings = unit_settings(unit_text)
        allowed: set[str] | None = None
        denied: set[str] = set()
        for value in settings.get("SystemCallFilter", []):
            if value == "":
                allowed, denied = None, set()
                continue
            invert = value.startswith("~")
            names = set()
            for item in value.lstrip("~").split():
                names |= expand_group(item)
            if invert:
                if allowed is None:
                    denied |= names
                else:
                    allowed -= names
            else:
                allowed = (allowed or set()) | names
                denied -= names
        if allowed is not None:
            allowed |= set(ALWAYS_ALLOWED)
        self.allowed, self.denied = allowed, denied
        errno = (settings.get("SystemCallErrorNumber") or [""])[-1]
        self.refuse = scmp_act_errno(ERRNOS[errno]) if errno else SCMP_ACT_KILL_PROCESS
        families = (settings.get("RestrictAddressFamilies") or [""])[-1].split()
        self.families = [ADDRESS_FAMILIES[f] for f in families] if families else None
        self.mdwe = (settings.get("MemoryDenyWriteExecute") or ["no"])[-1] in ("yes", "true", "1")
        if (settings.get("SystemCallArchitectures") or [""])[-1] not in ("", "native"):
            raise SystemExit("only SystemCallArchitectures=native is rebuilt here")
        self.lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        self.lib.seccomp_init.restype = ctypes.c_void_p
        self.lib.seccomp_init.argtypes = [ctypes.c_uint32]
        self.lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        self.lib.seccomp_rule_add_array.argtypes = [
            ctypes.c_void_p,
            ctypes.c_uint32,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.POINTER(ArgCmp),
        ]
        self.lib.seccomp_load.argtypes = [ctypes.c_void_p]
        self.ctx = self._build()

    def _nr(self, name: str) -> int | None:
        nr = self.lib.seccomp_syscall_resolve_name(name.encode())
        return None if nr < 0 else nr

    def _rule(self, action: int, name: str, *cmps: tuple[int, int, int, int]) -> None:
        nr = self._nr(name)
        if nr is None or action == self.default:
            # Unknown here, or what the filter does anyway (libseccomp refuses such a rule).
            return
        array = (ArgCmp * max(len(cmps), 1))(*[ArgCmp(*c) for c in cmps])
        rc = self.lib.seccomp_rule_add_array(self.ctx_ptr, action, nr, len(cmps), array)
        if rc != 0:
            raise SystemExit(f"seccomp_rule_add_array({name}) failed: {rc}")

    def _build(self):
        self.default = self.refuse if self.allowed is not None else SCMP_ACT_ALLOW
        self.ctx_ptr = self.lib.seccomp_init(self.default)
        if not self.ctx_ptr:
            raise SystemExit("seccomp_init failed")
        conditional = set()
        if self.families is not None:
            conditional.add("socket")
        if self.mdwe:
            conditional |= {"mmap", "mprotect", "pkey_mprotect"}
        if self.allowed is not None:
            for name in sorted(self.allowed - conditional):
                self._rule(SCMP_ACT_ALLOW, name)
        else:
            for name in sorted(self.denied - conditional):
                self._rule(self.refuse, name)

        def permitted(name: str) -> bool:
            if self.allowed is not None:
                return name in self.allowed
            return name not in self.denied

        allow = SCMP_ACT_ALLOW
        if self.families is not None and permitted("socket"):
            for family in self.families:
                self._rule(allow, "socket", (0, SCMP_CMP_EQ, family, 0))
            if self.allowed is None:
                # Deny-list mode: refuse the other families (systemd answers EAFNOSUPPORT).
                for family in range(0, 64):
                    if family not in self.families:
                        self._rule(scmp_act_errno(97), "socket", (0, SCMP_CMP_EQ, family, 0))
        if self.mdwe:
            # mmap: not both writable and executable; mprotect: never executable.
            if permitted("mmap"):
                self._rule(allow, "mmap", (2, SCMP_CMP_MASKED_EQ, PROT_EXEC, 0))
                self._rule(allow, "mmap", (2, SCMP_CMP_MASKED_EQ, PROT_WRITE, 0))
            for name in ("mprotect", "pkey_mprotect"):
                if permitted(name):
                    self._rule(allow, name, (2, SCMP_CMP_MASKED_EQ, PROT_EXEC, 0))
        return self.ctx_ptr

    def load(self) -> None:
        rc = self.lib.seccomp_load(self.ctx_ptr)
        if rc != 0:
            raise OSError(-rc, "seccomp_load failed")


# ----------------------------------------------------------------------------------- the run


def ws_send(sock: socket.socket, text: str) -> None:
    payload = text.encode()
    mask = os.urandom(4)
    header = bytes([0x81])
    n = len(payload)
    header += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n)
    sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def ws_recv(sock: socket.socket, buf: bytearray) -> tuple[int, bytes]:
    def need(n: int) -> bytes:
        while len(buf) < n:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("socket closed")
            buf.extend(chunk)
        out = bytes(buf[:n])
        del buf[:n]
        return out

    b0, b1 = need(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", need(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", need(8))[0]
    return b0 & 0x0F, need(n)


def ws_event(sock: socket.socket, buf: bytearray, want: str) -> dict:
    while True:
        opcode, payload = ws_recv(sock, buf)
        if opcode == 1:
            msg = json.loads(payload)
            if msg.get("event") == want:
                return msg
        elif opcode == 8:
            raise ConnectionError(f"closed while waiting for {want}: {payload!r}")


def trigger(base: str) -> int:
    body = json.dumps({"name": "smoke", "channels": ["smoke"], "data": '"hello"'}).encode()
    path = f"/apps/{APP_ID}/events"
    params = {
        "auth_key": APP_KEY,
        "auth_timestamp": str(int(time.time())),
        "auth_version": "1.0",
        "body_md5": hashlib.md5(body).hexdigest(),
    }
    query = "&".join(f"{k}={params[k]}" for k in sorted(params))
    signature = hmac.new(APP_SECRET.encode(), f"POST\n{path}\n{query}".encode(), hashlib.sha256).hexdigest()
    req = urllib.request.Request(
        f"{base}{path}?{query}&auth_signature={signature}",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status


def smoke(binary: Path, unit_text: str) -> list[str]:
    """Herald under the filter of unit_text: the problems seen (none when it works)."""
    flt = Filter(unit_text)
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir(mode=0o700)
        os.chown(data, NOBODY, NOBODY)
        os.chmod(tmp, 0o755)
        # A copy user 65534 can execute wherever the build lives (a checkout under /root is not).
        binary = Path(shutil.copy2(binary, Path(tmp) / "herald"))
        os.chmod(binary, 0o755)
        env = {
            "PATH": "/usr/bin:/bin",
            "HERALD_BIND": "127.0.0.1:0",
            "HERALD_DATA_DIR": str(data),
            "HERALD_DEFAULT_APP_ID": APP_ID,
            "HERALD_DEFAULT_APP_KEY": APP_KEY,
            "HERALD_DEFAULT_APP_SECRET": APP_SECRET,
            "HERALD_ADMIN_PASSWORD": "unit-seccomp-smoke-password",
            "HERALD_SHUTDOWN_GRACE_SECS": "10",
            "RUST_LOG": "info",
        }

        def enter_sandbox() -> None:
            # As systemd does: drop to the service's user, then load the filter, then exec.
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            flt.load()

        proc = subprocess.Popen(
            [str(binary), "serve"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=enter_sandbox,
        )
        lines: list[str] = []
        address: list[str] = []
        ready = threading.Event()

        def reader() -> None:
            for line in proc.stdout:
                lines.append(line.rstrip())
                m = re.search(r"listening on http://(\S+)", line)
                if m and not address:
                    address.append(m.group(1))
                    ready.set()
            ready.set()

        threading.Thread(target=reader, daemon=True).start()
        try:
            if not ready.wait(30) or not address:
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
                return [f"herald did not start under the filter (exit {proc.poll()}):", *lines[-15:]]
            base = f"http://{address[0]}"
            for path in ("/health", "/ready"):
                with urllib.request.urlopen(base + path, timeout=5) as resp:
                    if resp.status != 200:
                        problems.append(f"GET {path}: {resp.status}")
            with urllib.request.urlopen(base + "/dashboard/login", timeout=5) as resp:
                if resp.status != 200 or b"<form" not in resp.read():
                    problems.append("the dashboard's sign-in page did not render")
            host, port = address[0].rsplit(":", 1)
            sock = socket.create_connection((host, int(port)), timeout=10)
            key = base64.b64encode(os.urandom(16)).decode()
            sock.sendall(
                (
                    f"GET /app/{APP_KEY}?protocol=7&client=smoke&version=1 HTTP/1.1\r\nHost: {address[0]}\r\n"
                    f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError("closed during the handshake")
                head += chunk
            head, rest = head.split(b"\r\n\r\n", 1)
            if b" 101 " not in head.split(b"\r\n")[0]:
                return [f"WebSocket handshake: {head.splitlines()[0]!r}"]
            buf = bytearray(rest)
            ws_event(sock, buf, "pusher:connection_established")
            ws_send(sock, json.dumps({"event": "pusher:subscribe", "data": {"channel": "smoke"}}))
            ws_event(sock, buf, "pusher_internal:subscription_succeeded")
            status = trigger(base)
            if status != 200:
                problems.append(f"REST trigger: {status}")
            event = ws_event(sock, buf, "smoke")
            if event.get("data") != '"hello"':
                problems.append(f"the triggered event arrived as {event}")
            proc.terminate()
            code = None
            while True:
                opcode, payload = ws_recv(sock, buf)
                if opcode == 8:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    break
            if code != 4200:
                problems.append(f"SIGTERM closed the socket with {code}, not 4200")
            status = proc.wait(timeout=20)
            if status != 0:
                problems.append(f"herald exited {status} after SIGTERM")
        except (OSError, ConnectionError, ValueError, subprocess.TimeoutExpired) as e:
            problems.append(f"{type(e).__name__}: {e}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if problems:
            problems += ["its log:", *lines[-15:]]
    return problems


def refused(unit_text: str, code: str) -> bool:
    """Whether a Python snippet fails under the unit's filter (as user 65534) and works without."""

    def run(flt: Filter | None) -> int:
        def enter() -> None:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            if flt is not None:
                flt.load()

        # Debian's python3: user 65534 may not reach the venv's interpreter.
        return subprocess.run(
            ["/usr/bin/python3", "-c", code], preexec_fn=enter, capture_output=True
        ).returncode

    return run(None) == 0 and run(Filter(unit_text)) != 0


# What the filter must refuse, checked with a Python snippet that works without it.
PROBES = [
    (
        "a writable and executable mapping (MemoryDenyWriteExecute)",
        "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)",
    ),
    ("a lower priority (setpriority, in @resources)", "import os; os.setpriority(os.PRIO_PROCESS, 0, 5)"),
    (
        "a netlink socket (RestrictAddressFamilies)",
        "import socket; socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)",
    ),
]

# Each leaves out something Herald needs; the run must fail under each.
BREAKAGES = [
    (
        "no network system calls",
        "SystemCallFilter=~@privileged @resources\n",
        "SystemCallFilter=~@privileged @resources @network-io\n",
    ),
    (
        "IPv4 sockets refused",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX\n",
        "RestrictAddressFamilies=AF_INET6 AF_UNIX\n",
    ),
    (
        "no file system calls",
        "SystemCallFilter=~@privileged @resources\n",
        "SystemCallFilter=~@privileged @resources @file-system\n",
    ),
]


def main() -> int:
    if len(sys.argv) not in (2, 3) or (len(sys.argv) == 3 and sys.argv[2] != "--self-test"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    binary = Path(sys.argv[1]).resolve()
    if os.geteuid() != 0:
        print(
            "unit_seccomp.py runs as root (it drops to user 65534 itself, as systemd would)", file=sys.stderr
        )
        return 2
    if not shutil.which("systemd-analyze"):
        print("systemd-analyze is missing (Debian's systemd)", file=sys.stderr)
        return 1
    unit = UNIT.read_text()
    if len(sys.argv) == 2:
        problems = smoke(binary, unit)
        if problems:
            print("herald under infra/herald.service's system call filter: FAILED")
            print("\n".join(f"  {p}" for p in problems))
            return 1
        print(
            "herald under infra/herald.service's system call filter (as user 65534): /health, /ready, "
            "the dashboard, a WebSocket subscription, a signed trigger and a 4200 shutdown: ok"
        )
        return 0
    failures = 0
    for label, old, new in BREAKAGES:
        if old not in unit:
            print(f"  FAIL {label}: infra/herald.service no longer contains {old.strip()!r}")
            failures += 1
            continue
        problems = smoke(binary, unit.replace(old, new, 1))
        if problems:
            print(f"  ok   caught  {label}: {problems[0][:80]} {problems[-1][-100:]}")
        else:
            print(f"  FAIL missed  {label}: herald worked without it")
            failures += 1
    for label, code in PROBES:
        if refused(unit, code):
            print(f"  ok   refused {label}")
        else:
            print(f"  FAIL allowed {label}")
            failures += 1
    total = len(BREAKAGES) + len(PROBES)
    print(f"unit_seccomp self-test: {total - failures} of {total} checks of the rebuilt filter passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
