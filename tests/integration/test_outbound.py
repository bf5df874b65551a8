"""Outbound (API) calls end to end: `engine.originate(...)` places the A leg through a SIPp trunk, fires ring_url,
runs the answer_url's document on the answered call, and ends every request — answered, busy, unanswered, unroutable
— with one signed hangup callback and a call record (engine/outbound.py)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from engine_env import AUTH_TOKEN, EngineEnv, carrier_trunk
from sipharness import Sipp, parse_trace

pytestmark = pytest.mark.integration

FROM = "+15550001111"
TO = "15551230000"


def request(env: EngineEnv, **extra: Any) -> dict[str, Any]:
    return {"from": FROM, "to": TO, "answer_url": env.app.url("/answer"), **extra}


async def sipp_ok(sipp: Sipp, timeout: float = 15) -> str:
    result = await sipp.wait(timeout)
    assert result.returncode == 0, result.describe()
    return result.messages


def by_status(env: EngineEnv, path: str, status: str) -> list[Any]:
    return [r for r in env.app.requests_to(path) if r.params.get("CallStatus") == status]


async def test_answered_call_fires_ring_answer_and_hangup_callbacks(tmp_path: Path, make_sipp) -> None:
    # 401 challenge (trunk credentials), 183 + early media, 200, then the trunk hangs up after 2 s.
    trunk = await make_sipp("uas_trunk_auth_401_183.xml", extra=["-d", "2000"])
    async with EngineEnv(tmp_path, **carrier_trunk(trunk.port)) as env:
        env.xml("/answer", '<Speak>Hello from an outbound call.</Speak><Wait length="20"/>')
        env.app.route("/ring", "")
        request_uuid = await env.engine.originate(  # type: ignore[union-attr]
            request(env, ring_url=env.app.url("/ring"), caller_name="Acme Support", sip_headers="Tenant=acme,Plivo=x"))
        messages = await sipp_ok(trunk, 20)  # SIPp verified our digest and got its BYE answered
        [ring] = await env.app.wait_for("/ring", timeout=5)
        assert ring.signature_valid(AUTH_TOKEN)
        rp = ring.params
        assert (rp["CallStatus"], rp["Direction"], rp["RequestUUID"]) == ("ringing", "outbound", request_uuid)
        assert rp["CallUUID"] and rp["From"] == FROM.lstrip("+") and rp["To"] == TO
        [answer] = by_status(env, "/answer", "in-progress")
        assert answer.signature_valid(AUTH_TOKEN)
        ap = answer.params
        assert ap["Direction"] == "outbound" and ap["CallUUID"] == rp["CallUUID"]
        assert ap["ALegUUID"] == ap["CallUUID"] and ap["ALegRequestUUID"] == request_uuid
        assert ap["CallerName"] == "Acme Support"
        # No hangup_url: the hangup callback goes to answer_url (spec §2.5).
        hangups = await env.app.wait_for("/answer", count=2, timeout=10)
        hangup = next(r for r in hangups if r.params.get("CallStatus") == "completed")
        assert hangup.signature_valid(AUTH_TOKEN)
        hp = hangup.params
        assert hp["CallUUID"] == ap["CallUUID"] and hp["RequestUUID"] == request_uuid
        assert (hp["HangupCause"], hp["HangupSource"]) == ("NORMAL_CLEARING", "Call recipient")
        assert int(hp["Duration"]) >= 2
        invites = [m for m in parse_trace(messages) if m.direction == "received" and m.method == "INVITE"]
        assert len(invites) == 2 and invites[1].header("Authorization")
        assert invites[0].header("X-PH-Tenant") == "acme" and invites[0].header("X-PH-Plivo") is None
        assert '"Acme Support"' in (invites[0].header("From") or "")
        assert "trunkpass" not in messages
        record = await env.engine.store.get_call(ap["CallUUID"])  # type: ignore[union-attr]
        assert record is not None and record.direction == "outbound" and record.request_uuid == request_uuid
        assert record.answered_at is not None and record.hangup_cause == "NORMAL_CLEARING"
        events = [e["event"] for e in record.timeline]
        assert events.index("ringing") < events.index("answered") < events.index("verb")


async def test_busy_gets_hangup_callback_and_record_without_answer_fetch(tmp_path: Path, make_sipp) -> None:
    trunk = await make_sipp("uas_reject_486.xml")
    async with EngineEnv(tmp_path, **carrier_trunk(trunk.port, auth=False)) as env:
        env.xml("/answer", "<Speak>never</Speak>")
        request_uuid = await env.engine.originate(request(env, hangup_url=env.app.url("/hangup")))  # type: ignore
        hp = await env.hangup_callback()
        assert (hp["HangupCause"], hp["HangupCauseCode"], hp["CallStatus"]) == ("USER_BUSY", "3010", "busy")
        assert hp["RequestUUID"] == request_uuid and hp["CallUUID"] and hp["Direction"] == "outbound"
        assert hp["Duration"] == "0" and hp["AnswerTime"] == ""
        await sipp_ok(trunk)  # it got our ACK for the 486
        assert env.app.requests_to("/answer") == []  # never answered: the document is never fetched
        record = await env.engine.store.get_call(hp["CallUUID"])  # type: ignore[union-attr]
        assert record is not None and record.hangup_cause == "USER_BUSY" and record.answered_at is None
        assert record.request_uuid == request_uuid
        assert not env.engine.calls  # type: ignore[union-attr]


async def test_ring_timeout_cancels_and_reports_no_answer(tmp_path: Path, make_sipp) -> None:
    trunk = await make_sipp("uas_noanswer.xml")
    async with EngineEnv(tmp_path, **carrier_trunk(trunk.port, auth=False)) as env:
        env.app.route("/ring", "")
        request_uuid = await env.engine.originate(  # type: ignore[union-attr]
            request(env, hangup_url=env.app.url("/hangup"), ring_url=env.app.url("/ring"), ring_timeout=2))
        [ring] = await env.app.wait_for("/ring", timeout=5)
        assert ring.params["RequestUUID"] == request_uuid
        hp = await env.hangup_callback()
        assert (hp["HangupCause"], hp["HangupCauseCode"], hp["CallStatus"]) == ("NO_ANSWER", "6010", "no-answer")
        assert hp["CallUUID"] == ring.params["CallUUID"]
        await sipp_ok(trunk)  # CANCEL -> 200 + 487 -> our ACK
        assert env.app.requests_to("/answer") == []


async def test_unroutable_destination_still_gets_hangup_callback_and_record(tmp_path: Path) -> None:
    async with EngineEnv(tmp_path, SOFTSWITCH_TRUNKS="[]") as env:
        request_uuid = await env.engine.originate(request(env, hangup_url=env.app.url("/hangup")))  # type: ignore
        hp = await env.hangup_callback()
        assert (hp["HangupCause"], hp["HangupCauseCode"], hp["CallStatus"]) == ("INVALID_NUMBER_FORMAT", "2000",
                                                                                 "failed")
        assert hp["RequestUUID"] == request_uuid == hp["ALegRequestUUID"] and hp["CallUUID"] == hp["ALegUUID"]
        assert hp["From"] == FROM.lstrip("+") and hp["To"] == TO and hp["Direction"] == "outbound"
        record = await env.engine.store.get_call(hp["CallUUID"])  # type: ignore[union-attr]
        assert record is not None and record.hangup_code == 2000 and record.request_uuid == request_uuid


async def test_time_limit_hangs_up_the_answered_call(tmp_path: Path, make_sipp) -> None:
    trunk = await make_sipp("uas_trunk_auth_401_183_wait_bye.xml")  # exits 0 only if our BYE comes within 10 s
    async with EngineEnv(tmp_path, **carrier_trunk(trunk.port)) as env:
        env.xml("/answer", '<Wait length="30"/>')
        await env.engine.originate(request(env, hangup_url=env.app.url("/hangup"), time_limit=2))  # type: ignore
        hp = await env.hangup_callback(timeout=15)
        assert (hp["HangupCause"], hp["HangupCauseCode"], hp["CallStatus"]) == ("ALLOTTED_TIMEOUT", "6000",
                                                                                 "completed")
        assert 2 <= int(hp["Duration"]) <= 4
        await sipp_ok(trunk)


async def test_send_digits_after_answer_travel_over_rtp(tmp_path: Path, make_sipp) -> None:
    # SIPp echoes our RTP back (-rtp_echo): the RFC 4733 digits we send after the answer come back to the call.
    trunk = await make_sipp("media_uas_echo.xml", extra=["-rtp_echo"])
    async with EngineEnv(tmp_path, **carrier_trunk(trunk.port, auth=False)) as env:
        env.xml("/answer", '<Wait length="3"/>')
        await env.engine.originate(  # type: ignore[union-attr]
            request(env, hangup_url=env.app.url("/hangup"), send_digits="1w2#"))
        hp = await env.hangup_callback(timeout=15)
        assert hp["HangupCause"] == "NORMAL_CLEARING" and hp["CallStatus"] == "completed"
        await sipp_ok(trunk)  # it got our BYE at the end of the document
        record = await env.engine.store.get_call(hp["CallUUID"])  # type: ignore[union-attr]
        assert record is not None
        sent = [e for e in record.timeline if e["event"] == "send_digits"]
        echoed = "".join(e["digit"] for e in record.timeline if e["event"] == "dtmf")
        assert sent and sent[0]["digits"] == "1w2#"
        assert echoed == "12#"


async def test_bad_requests_are_refused_before_anything_is_placed(tmp_path: Path) -> None:
    from engine.outbound import RequestError

    async with EngineEnv(tmp_path) as env:
        engine = env.engine
        assert engine is not None
        for bad, message in [
            ({"to": TO, "answer_url": env.app.url("/a")}, "from parameter is missing"),
            ({"from": FROM, "answer_url": env.app.url("/a")}, "to parameter is missing"),
            ({"from": FROM, "to": TO}, "answer_url parameter is missing"),
            (request(env, answer_url="ftp://x/"), "answer_url must be an http(s) URL"),
            (request(env, answer_method="PUT"), "answer_method must be GET or POST"),
            (request(env, time_limit="soon"), "time_limit"),
            (request(env, ring_timeout=0), "ring_timeout"),
            (request(env, to="12ab"), "not a phone number"),
            (request(env, sip_headers="no-equals"), "sip_headers"),
            (request(env, send_digits="xyz"), "send_digits"),
            (request(env, caller_name="x" * 51), "caller_name"),
        ]:
            with pytest.raises(RequestError, match=re.escape(message)):
                await engine.originate(bad)
        await asyncio.sleep(0.2)
        assert not engine.calls and env.app.requests == []


async def test_shutdown_while_ringing_cancels_and_still_reports(tmp_path: Path, make_sipp) -> None:
    trunk = await make_sipp("uas_noanswer.xml")
    env = EngineEnv(tmp_path, **carrier_trunk(trunk.port, auth=False))
    async with env:
        env.app.route("/ring", "")
        request_uuid = await env.engine.originate(  # type: ignore[union-attr]
            request(env, hangup_url=env.app.url("/hangup"), ring_url=env.app.url("/ring")))
        await env.app.wait_for("/ring", timeout=5)
        assert len(env.engine.calls) == 1  # type: ignore[union-attr]  # a ringing outbound call is live
        app = env.app
    # Leaving the env stopped the engine (and then the app): the call was cancelled and reported first.
    [hangup] = app.requests_to("/hangup")
    hp = hangup.params
    assert hp["RequestUUID"] == request_uuid and hp["CallStatus"] == "failed"
    assert (hp["HangupCause"], hp["HangupCauseCode"]) == ("SYSTEM_SHUTDOWN", "5010")
    await sipp_ok(trunk)  # CANCEL -> 487 -> our ACK
