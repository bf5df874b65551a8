"""`softswitch serve` as a real subprocess for tests: its environment (free loopback ports, its own SQLite file),
start-up (returns once it logged softswitch_started), JSON log events, /health, /metrics, memory, and stopping it
(SIGTERM, SIGKILL)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


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

    async def health(self) -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as s, s.get(f"{self.base_url}/health") as r:
            return r.status, await r.json()

    async def exit_code(self, timeout: float = 20.0) -> int:
        return await asyncio.to_thread(self.proc.wait, timeout)

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
