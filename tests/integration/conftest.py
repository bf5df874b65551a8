"""Fixtures for the SIPp / baresip integration tests (helpers live in sipharness.py)."""

from __future__ import annotations

import shutil
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sipharness import HOST, Baresip, Sipp, free_port, free_port_block, render_baresip, render_scenario

from sip.ua import UserAgent


@pytest.fixture
def need_sipp() -> None:
    if shutil.which("sipp") is None:
        pytest.skip("sipp is not installed")


@pytest.fixture
async def make_ua() -> AsyncIterator[Callable[..., Any]]:
    """`await make_ua(**UserAgent kwargs, transports=("udp", "tcp"))` -> a started UserAgent on free ports."""
    started: list[UserAgent] = []

    async def factory(*, transports: tuple[str, ...] = ("udp",), **kwargs: Any) -> UserAgent:
        ua = UserAgent(**kwargs)
        await ua.start([(t, HOST, 0) for t in transports])
        started.append(ua)
        return ua

    yield factory
    for ua in started:
        await ua.stop()


@pytest.fixture
async def make_sipp(tmp_path: Path, need_sipp: None) -> AsyncIterator[Callable[..., Any]]:
    """`await make_sipp("uas_x.xml", subs={...}, remote=..., transport=..., extra=[...])` -> a started Sipp."""
    runs: list[Sipp] = []

    async def factory(scenario: str, *, subs: dict[str, str | int] | None = None, remote: str | None = None,
                      transport: str = "udp", extra: list[str] | None = None, name: str | None = None) -> Sipp:
        work = tmp_path / (name or f"sipp{len(runs)}")
        work.mkdir()
        path = render_scenario(scenario, work, **(subs or {}))
        sipp = Sipp(path, work, remote=remote, transport=transport, extra=list(extra or []),
                    name=name or path.stem)
        runs.append(sipp)
        return await sipp.start()

    yield factory
    for sipp in runs:
        sipp.kill()
        if sipp.proc is not None:
            await sipp.proc.wait()


@pytest.fixture
def media_sink() -> Iterator[int]:
    """A bound UDP socket whose port our SDP advertises, so RTP SIPp plays at us lands somewhere harmless."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        yield int(s.getsockname()[1])


@pytest.fixture
async def make_baresip(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """`await make_baresip("callee"|"caller", quit_after=s, commands=[...])` -> a started Baresip on free ports."""
    if shutil.which("baresip") is None:
        pytest.skip("baresip is not installed")
    runs: list[Baresip] = []

    async def factory(role: str, *, quit_after: int = 10, commands: list[str] | None = None) -> Baresip:
        sip_port, rtp_base = free_port(), free_port_block(12)
        config = render_baresip(role, tmp_path / f"baresip{len(runs)}", sip_port, rtp_base)
        bs = Baresip(config, sip_port, quit_after=quit_after, commands=list(commands or []))
        runs.append(bs)
        return await bs.start()

    yield factory
    for bs in runs:
        bs.kill()
        if bs.proc is not None:
            await bs.proc.wait()
