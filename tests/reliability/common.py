"""Shared helpers of the reliability suite: the long/quick switch, network namespaces with iptables loss, SQLite
rows and the secret scan (the engine as a subprocess is tests/helpers/daemon.py).

Everything binds to loopback or to the loopback of a network namespace this suite creates (and deletes) itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
LONG = os.environ.get("SOFTSWITCH_LONG", "") not in ("", "0", "false", "no")
"""SOFTSWITCH_LONG=1: the long runs docs/reliability.md reports; otherwise the quick ones CI runs."""


def pick(quick: Any, long: Any) -> Any:
    return long if LONG else quick


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
