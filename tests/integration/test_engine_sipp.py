"""Real third-party callers into the engine: SIPp (RFC 2833 digits, early media, rejects) and baresip."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_env import EngineEnv
from sipharness import HOST, parse_trace

pytestmark = pytest.mark.integration


async def test_sipp_caller_presses_1_and_the_action_gets_it(tmp_path: Path, make_sipp) -> None:
    """uac_call.xml plays G.711 audio, sends RFC 2833 '1' at +3 s, holds, then hangs up."""
    async with EngineEnv(tmp_path) as env:
        env.xml("/answer", '<GetDigits action="/digits" numDigits="1" timeout="8">'
                           "<Speak>Press one for sales.</Speak></GetDigits><Speak>No input.</Speak>")
        env.xml("/digits", '<Speak loop="0">You pressed one. Please hold.</Speak>')
        sipp = await make_sipp("uac_call.xml", remote=f"{HOST}:{env.sip_port}", extra=["-d", "1500"])
        result = await sipp.wait(25)
        assert result.returncode == 0, result.describe()
        [req] = env.app.requests_to("/digits")
        assert req.params["Digits"] == "1"
        hangup = await env.hangup_callback()
        assert hangup["HangupSource"] == "Caller" and hangup["CallStatus"] == "completed"
        trace = parse_trace(result.messages)
        ok = [m for m in trace
              if m.direction == "received" and m.status == 200 and "INVITE" in (m.header("CSeq") or "")]
        assert ok and "m=audio " in ok[0].body and "a=rtpmap:101 telephone-event/8000" in ok[0].body


async def test_sipp_caller_gets_183_with_sdp_before_any_200(tmp_path: Path, make_sipp) -> None:
    async with EngineEnv(tmp_path) as env:
        env.xml("/answer", "<PreAnswer><Speak>Your call is important to us.</Speak></PreAnswer>"
                           "<Speak>Welcome.</Speak><Hangup/>")
        sipp = await make_sipp("uac_wait_bye.xml", remote=f"{HOST}:{env.sip_port}")
        result = await sipp.wait(25)
        assert result.returncode == 0, result.describe()
        statuses = [m.status for m in parse_trace(result.messages) if m.direction == "received" and m.status]
        assert 183 in statuses and statuses.index(183) < statuses.index(200)
        early = [m for m in parse_trace(result.messages) if m.status == 183][0]
        assert early.header("Content-Type") == "application/sdp" and "m=audio " in early.body


async def test_sipp_blocked_caller_gets_603_and_no_200(tmp_path: Path, make_sipp) -> None:
    async with EngineEnv(tmp_path) as env:
        env.xml("/answer", '<Hangup reason="rejected"/>')
        sipp = await make_sipp("uac_expect_reject.xml", remote=f"{HOST}:{env.sip_port}")
        result = await sipp.wait(20)
        assert result.returncode == 0, result.describe()
        statuses = [m.status for m in parse_trace(result.messages) if m.direction == "received" and m.status]
        assert 603 in statuses and 200 not in statuses


async def test_baresip_calls_the_engine(tmp_path: Path, make_baresip) -> None:
    async with EngineEnv(tmp_path) as env:
        env.xml("/answer", '<Speak loop="0">Hello baresip.</Speak>')
        caller = await make_baresip("caller", quit_after=4, commands=[f"/dial sip:100@{HOST}:{env.sip_port}"])
        hangup = await env.hangup_callback(timeout=15)
        await caller.wait(5)
        assert "Call established" in caller.output
        assert hangup["HangupSource"] == "Caller" and int(hangup["Duration"]) >= 1
        # baresip received our RTP: its summary line counts packets received.
        assert "Receive" in caller.output or "incoming rtp" in caller.output
