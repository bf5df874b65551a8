"""Shared helpers of the reliability suite: the long/quick switch, the engine as a real subprocess, network namespaces
with iptables loss, process memory, and the secret scan.

Everything binds to loopback or to the loopback of a network namespace this suite creates (and deletes) itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
LONG = os.environ.get("SOFTSWITCH_LONG", "") not in ("", "0", "false", "no")
"""SOFTSWITCH_LONG=1: the long runs docs/reliability.md reports; otherwise the quick ones CI runs."""


def pick(quick: Any, long: Any) -> Any:
    return long if LONG else quick


# -- the engine as a subprocess ---------------------------------------------------------------------------------
@dataclass
class Daemon:
    """`softswitch serve` (python -m engine.cli serve) in a subprocess, JSON logs in `log_path`."""

    proc: subprocess.Popen[bytes]
    sip_port: int
    http_port: int
    log_path: Path
    db_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"sip:100@{HOST}:{self.sip_port}"

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        return events

    async def wait_log(self, event: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("event") == event for e in self.log_events()):
            if self.proc.poll() is not None:
                raise AssertionError(f"engine exited ({self.proc.returncode}):\n{self.log_path.read_text()[-4000:]}")
            assert time.monotonic() < deadline, f"no {event} in the log:\n{self.log_path.read_text()[-4000:]}"
            await asyncio.sleep(0.05)

    def rss_kib(self) -> int:
        return rss_kib(self.proc.pid)

    async def metrics(self) -> str:
        async with aiohttp.ClientSession() as s, s.get(f"{self.base_url}/metrics") as r:
            return await r.text()

    def kill9(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def daemon_env(tmp_path: Path, sip_port: int, http_port: int, rtp: int, rtp_count: int,
               **overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "SOFTSWITCH_SIP__LISTEN": f'["udp:{HOST}:{sip_port}", "tcp:{HOST}:{sip_port}"]',
        "SOFTSWITCH_SIP__RTP_PORT_MIN": str(rtp),
        "SOFTSWITCH_SIP__RTP_PORT_MAX": str(rtp + rtp_count - 1),
        "SOFTSWITCH_HTTP__LISTEN": f"{HOST}:{http_port}",
        "SOFTSWITCH_STORAGE__PATH": str(tmp_path / "softswitch.db"),
        "SOFTSWITCH_STORAGE__RECORDINGS_DIR": str(tmp_path / "recordings"),
        "SOFTSWITCH_USERS": "[]",
        "PYTHONPATH": str(ROOT),
    })
    env.update(overrides)
    return env


async def start_daemon(tmp_path: Path, *, env: dict[str, str], sip_port: int, http_port: int,
                       name: str = "serve", drain_timeout: float = 5) -> Daemon:
    """Start the engine with `env` (see daemon_env); returns once it logged softswitch_started."""
    log_path = tmp_path / f"{name}.log"
    with log_path.open("a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "serve", "--log-json", "--drain-timeout", str(drain_timeout)],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
        )
    daemon = Daemon(proc, sip_port, http_port, log_path, Path(env["SOFTSWITCH_STORAGE__PATH"]), env)
    try:
        await daemon.wait_log("softswitch_started", timeout=20)
    except AssertionError:
        proc.kill()
        proc.wait()
        raise
    return daemon


def rss_kib(pid: int) -> int:
    """Resident memory of a process in KiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def db_rows(db_path: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        return db.execute(sql, args).fetchall()


# -- network namespaces -----------------------------------------------------------------------------------------
def netns_available() -> str | None:
    """None when `ip netns` and iptables can be used here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/setup.sh installs it)"
    return None


@contextlib.contextmanager
def netns(loss: float = 0.0) -> Iterator[str]:
    """A fresh, uniquely named network namespace with its loopback up, deleted afterwards. `loss` > 0: iptables drops
    that fraction of the UDP datagrams its loopback delivers (INPUT, -m statistic --mode random), each direction."""
    why = netns_available()
    if why:
        pytest.skip(why)
    name = f"ssrel-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        if loss > 0:
            # a rule without a target only counts: every UDP datagram the loopback delivers, before the drop
            subprocess.run(["ip", "netns", "exec", name, "iptables", "-A", "INPUT", "-p", "udp"], check=True)
            subprocess.run(["ip", "netns", "exec", name, "iptables", "-A", "INPUT", "-p", "udp", "-m", "statistic",
                            "--mode", "random", "--probability", f"{loss:.4f}", "-j", "DROP"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def iptables_counts(ns: str) -> tuple[int, int]:
    """(UDP datagrams offered to the namespace's loopback, datagrams the random DROP rule dropped)."""
    out = subprocess.run(["ip", "netns", "exec", ns, "iptables", "-L", "INPUT", "-v", "-n", "-x"],
                         capture_output=True, text=True, check=True).stdout
    seen = dropped = 0
    for line in out.splitlines():
        cols = line.split()
        if len(cols) > 3 and cols[0].isdigit():
            if cols[2] == "DROP":
                dropped = int(cols[0])
            elif cols[2] in ("udp", "17"):
                seen = int(cols[0])
    return seen, dropped


# -- secrets ----------------------------------------------------------------------------------------------------
def scan_for_secrets(secrets: list[str], *paths: Path, texts: dict[str, str] | None = None) -> list[str]:
    """Where any of `secrets` appears (raw bytes of every file under `paths`, SQLite files included, and `texts`):
    '<file>: <which secret>' for each hit. An empty list is a pass."""
    hits: list[str] = []
    needles = [(s, s.encode()) for s in secrets if s]
    for root in paths:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for path in files:
            try:
                data = path.read_bytes()
            except OSError:
                continue
            hits.extend(f"{path}: {s!r}" for s, b in needles if b in data)
    for name, text in (texts or {}).items():
        hits.extend(f"{name}: {s!r}" for s, _ in needles if s in text)
    return hits
