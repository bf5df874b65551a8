"""Graceful shutdown of the real daemon (`python -m engine.cli serve` as a subprocess, like test_serve.py).

SIGTERM: new INVITEs get 503 with Retry-After and /health says draining; live calls go on for up to
--drain-timeout; the ones still up are then hung up (BYE, SYSTEM_SHUTDOWN 5010) and their hangup callbacks reach
the app — or the SQLite outbox when the app is down — before the process exits with code 0.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from engine_env import AUTH_TOKEN, Phone
from rawsip import invite_burst, options_probe
from sipharness import free_port, free_port_block

from tests.helpers.daemon import Daemon, daemon_env, start_daemon
from tests.helpers.webapp import WebApp

pytestmark = pytest.mark.integration

ENDLESS = '<Response><Speak loop="0">This call goes on until somebody ends it.</Speak></Response>'


@pytest.fixture
async def app() -> AsyncIterator[WebApp]:
    async with WebApp() as web:
        web.route("/answer", ENDLESS)
        web.route("/hangup", "")
        yield web


async def start_engine(tmp_path: Path, app: WebApp, drain_timeout: float) -> Daemon:
    sip_port, http_port = free_port(), free_port()
    rtp = free_port_block(20)
    rtp += rtp % 2
    env = daemon_env(tmp_path, sip_port, http_port, rtp, 20, SOFTSWITCH_HTTP__AUTH_TOKEN=AUTH_TOKEN,
                     SOFTSWITCH_INBOUND__ANSWER_URL=app.url("/answer"),
                     SOFTSWITCH_INBOUND__HANGUP_URL=app.url("/hangup"))
    return await start_daemon(tmp_path, env=env, sip_port=sip_port, http_port=http_port, drain_timeout=drain_timeout)


@pytest.fixture
async def daemons() -> AsyncIterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def assert_call_events_carry_the_uuid(daemon: Daemon, call_uuid: str) -> None:
    call_events = {"call_started", "call_answered", "verb_start", "call_shutdown_hangup", "call_ended"}
    seen = [e for e in daemon.log_events() if e.get("event") in call_events]
    assert {e["event"] for e in seen} == call_events
    assert all(e.get("call_uuid") == call_uuid for e in seen), seen


async def test_sigterm_refuses_new_calls_drains_then_hangs_up_with_a_callback(
    tmp_path: Path, app: WebApp, daemons: list[Daemon]
) -> None:
    daemon = await start_engine(tmp_path, app, drain_timeout=2)
    daemons.append(daemon)
    async with Phone() as phone:
        await phone.dial(daemon.uri)
        await asyncio.wait_for(phone.answered.wait(), 20)
        assert await daemon.health() == (200, {"status": "ok", "calls": 1, "draining": False, "outbox_depth": 0})
        probe = await options_probe(daemon.sip_port)
        assert probe is not None and probe.status == 200

        daemon.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        await daemon.wait_log("softswitch_stopping")
        [refused] = await invite_burst(daemon.sip_port, 1)
        assert [r.status for r in refused.replies] == [503]
        assert refused.replies[0].headers["retry-after"] == "2"  # the drain timeout
        probe = await options_probe(daemon.sip_port)  # a dispatcher's probe sees the node out of service
        assert probe is not None and probe.status == 503 and probe.headers["retry-after"] == "2"
        status, body = await daemon.health()
        assert status == 503 and body["status"] == "draining" and body["draining"] is True and body["calls"] == 1

        await asyncio.wait_for(phone.ended.wait(), 15)
        held = time.monotonic() - signalled
        assert held >= 1.8, f"the live call was hung up {held:.2f} s after SIGTERM, before the drain timeout"
        assert phone.end_cause.kind == "bye" and phone.end_cause.by == "remote"
        assert phone.heard_seconds() > 1.5  # the call really was live through the drain

    [hangup] = await app.wait_for("/hangup", count=1, timeout=10)
    assert hangup.signature_valid(AUTH_TOKEN)
    assert hangup.params["HangupCause"] == "SYSTEM_SHUTDOWN" and hangup.params["HangupCauseCode"] == "5010"
    assert hangup.params["HangupSource"] == "Plivo" and hangup.params["CallStatus"] == "completed"
    assert await daemon.exit_code() == 0
    assert len(app.requests_to("/answer")) == 1  # the refused INVITE never reached the app
    events = [e.get("event") for e in daemon.log_events()]
    assert "drain_timeout" in events and events[-1] == "softswitch_stopped"
    assert_call_events_carry_the_uuid(daemon, hangup.params["CallUUID"])
    with sqlite3.connect(daemon.db_path) as db:
        row = db.execute("SELECT hangup_cause, hangup_code FROM calls WHERE call_uuid = ?",
                         (hangup.params["CallUUID"],)).fetchone()
        assert row == ("SYSTEM_SHUTDOWN", 5010)
        assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0


async def test_calls_that_end_during_the_drain_end_normally_and_the_daemon_exits_early(
    tmp_path: Path, app: WebApp, daemons: list[Daemon]
) -> None:
    app.route("/answer", '<Response><Speak>Almost done.</Speak><Wait length="2"/></Response>')
    daemon = await start_engine(tmp_path, app, drain_timeout=30)
    daemons.append(daemon)
    async with Phone() as phone:
        await phone.dial(daemon.uri)
        await asyncio.wait_for(phone.answered.wait(), 20)
        daemon.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        await asyncio.wait_for(phone.ended.wait(), 15)
    [hangup] = await app.wait_for("/hangup", count=1, timeout=10)
    assert hangup.params["HangupCause"] == "NORMAL_CLEARING"
    assert await daemon.exit_code() == 0
    assert time.monotonic() - signalled < 15  # gone once the call ended, long before the 30 s drain timeout
    events = [e.get("event") for e in daemon.log_events()]
    assert "drain_finished" in events and "drain_timeout" not in events


async def test_second_signal_cuts_the_drain_and_an_undeliverable_callback_lands_in_the_outbox(
    tmp_path: Path, app: WebApp, daemons: list[Daemon]
) -> None:
    daemon = await start_engine(tmp_path, app, drain_timeout=60)
    daemons.append(daemon)
    async with Phone() as phone:
        await phone.dial(daemon.uri)
        await asyncio.wait_for(phone.answered.wait(), 20)
        call_uuid = app.requests_to("/answer")[0].params["CallUUID"]
        await app.stop()  # the app is down: the hangup callback cannot be delivered
        daemon.proc.send_signal(signal.SIGTERM)
        await daemon.wait_log("softswitch_stopping")
        await asyncio.sleep(0.3)
        daemon.proc.send_signal(signal.SIGINT)
        signalled = time.monotonic()
        await asyncio.wait_for(phone.ended.wait(), 10)
        assert time.monotonic() - signalled < 5  # not the 60 s drain
        assert phone.end_cause.kind == "bye" and phone.end_cause.by == "remote"
    assert await daemon.exit_code() == 0
    events = [e.get("event") for e in daemon.log_events()]
    assert "drain_cut_short" in events
    with sqlite3.connect(daemon.db_path) as db:
        rows = db.execute("SELECT kind, call_uuid, params FROM outbox").fetchall()
    assert len(rows) == 1
    kind, uuid, params = rows[0]
    assert kind == "hangup" and uuid == call_uuid
    assert json.loads(params)["HangupCause"] == "SYSTEM_SHUTDOWN"
