"""`<Dial>` end to end: a caller reaches the engine, the engine dials SIPp trunks (401/407 digest, 183, no answer,
rejects), bridges media, and posts DialStatus / DialHangupCause to the action URL — one test per cause-table row."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from engine_env import AUTH_TOKEN, EngineEnv, Phone
from sipharness import HOST, parse_trace

from sip.auth import Credentials

pytestmark = pytest.mark.integration

PASSWORD = "trunkpass"


def trunk_env(*trunks: tuple[str, int, str]) -> dict[str, str]:
    """SOFTSWITCH_TRUNKS for (name, port, prefix) trunks; the first is the default."""
    items = []
    for i, (name, port, prefix) in enumerate(trunks):
        prefixes = f'["{prefix}"]' if prefix else "[]"
        items.append(f'{{name = "{name}", uri = "sip:{HOST}:{port}", prefixes = {prefixes}, '
                     f'default = {"true" if i == 0 else "false"}}}')
    return {"SOFTSWITCH_TRUNKS": "[" + ", ".join(items) + "]"}


def dial(number: str = "15551230000", auth: bool = True, **attrs: str) -> str:
    extra = "".join(f' {k}="{v}"' for k, v in attrs.items())
    creds = f' sipAuthUsername="trunkuser" sipAuthPassword="{PASSWORD}"' if auth else ""
    return f'<Dial action="/dial-status"{creds}{extra}><Number>{number}</Number></Dial>'


async def call_and_get_dial_status(env: EngineEnv, phone: Phone, timeout: float = 25) -> dict[str, str]:
    await phone.dial(env.uri)
    [req] = await env.app.wait_for("/dial-status", count=1, timeout=timeout)
    assert req.signature_valid(AUTH_TOKEN)
    assert PASSWORD not in req.body.decode()
    return req.params


async def test_401_trunk_answers_bridge_carries_media_both_ways(tmp_path: Path, make_sipp) -> None:
    trunk = await make_sipp("uas_trunk_auth_401.xml", extra=["-d", "3000"])
    async with EngineEnv(tmp_path, **trunk_env(("carrier", trunk.port, ""))) as env, Phone() as phone:
        env.xml("/answer", dial() + "<Speak>The other party hung up.</Speak><Hangup/>")
        env.xml("/dial-status", "")
        await phone.dial(env.uri, headers=[("X-PH-Tenant", "acme")])
        await asyncio.wait_for(phone.answered.wait(), 15)
        assert phone.media is not None
        phone.media.play(_tone())  # the caller talks: audio must reach the trunk through the bridge
        result = await trunk.wait(20)
        assert result.returncode == 0, result.describe()  # SIPp verified our digest (verifyauth)
        [req] = await env.app.wait_for("/dial-status", count=1, timeout=10)
        p = req.params
        assert p["DialStatus"] == "completed" and p["DialRingStatus"] in ("true", "false")
        assert p["DialALegUUID"] and p["DialBLegUUID"] and p["DialALegUUID"] != p["DialBLegUUID"]
        assert p["DialHangupCause"] == "NORMAL_CLEARING"
        await asyncio.wait_for(phone.ended.wait(), 15)  # A went on after B hung up: Speak, then Hangup
        assert phone.heard.loud_frames() > 50  # SIPp's g711a.pcap reached the caller through the bridge
        record = await env.engine.store.get_call(p["DialALegUUID"])  # type: ignore[union-attr]
        timeline = {e["event"] for e in record.timeline}  # type: ignore[union-attr]
        assert {"dial_answered", "dial_finished", "verb"} <= timeline
        trace = parse_trace(result.messages)
        invites = [m for m in trace if m.direction == "received" and m.method == "INVITE"]
        assert len(invites) == 2 and invites[1].header("Authorization")
        for m in invites:
            assert PASSWORD not in m.text


def _tone():  # noqa: ANN202
    from media.sources import Tone

    return Tone([700.0], [(10.0, 0.0)])


async def test_407_trunk(tmp_path: Path, make_sipp) -> None:
    trunk = await make_sipp("uas_trunk_auth_407.xml", extra=["-d", "500"])
    async with EngineEnv(tmp_path, **trunk_env(("carrier", trunk.port, ""))) as env, Phone() as phone:
        env.xml("/answer", dial())
        env.xml("/dial-status", "")
        p = await call_and_get_dial_status(env, phone)
        assert p["DialStatus"] == "completed"
        result = await trunk.wait(10)
        assert result.returncode == 0, result.describe()
        invites = [m for m in parse_trace(result.messages) if m.direction == "received" and m.method == "INVITE"]
        assert invites[1].header("Proxy-Authorization")


async def test_401_then_183_early_media_reaches_the_caller_with_dialmusic_real(tmp_path: Path, make_sipp) -> None:
    trunk = await make_sipp("uas_trunk_auth_401_183.xml", extra=["-d", "500"])
    async with EngineEnv(tmp_path, **trunk_env(("carrier", trunk.port, ""))) as env, Phone() as phone:
        env.xml("/answer", dial(dialMusic="real"))
        env.xml("/dial-status", "")
        p = await call_and_get_dial_status(env, phone)
        assert p["DialStatus"] == "completed" and p["DialRingStatus"] == "true"
        assert phone.early.is_set()  # the caller got 183 with SDP before the 200


@pytest.mark.parametrize(
    ("scenario", "dial_status", "cause", "code"),
    [
        ("uas_reject_486.xml", "busy", "USER_BUSY", None),
        ("uas_reject_503.xml", "failed", "NORMAL_TEMPORARY_FAILURE", None),
        ("uas_reject_404.xml", "failed", "UNALLOCATED_NUMBER", None),
        ("uas_reject_603.xml", "failed", "CALL_REJECTED", None),
        ("uas_reject_480.xml", "no-answer", "NO_ANSWER", None),
    ],
)
async def test_rejects_map_to_dial_status(tmp_path: Path, make_sipp, scenario: str, dial_status: str, cause: str,
                                          code: str | None) -> None:
    trunk = await make_sipp(scenario)
    async with EngineEnv(tmp_path, **trunk_env(("carrier", trunk.port, ""))) as env, Phone() as phone:
        env.xml("/answer", dial(auth=False))
        env.xml("/dial-status", "<Hangup/>")
        p = await call_and_get_dial_status(env, phone)
        assert (p["DialStatus"], p["DialHangupCause"]) == (dial_status, cause)
        assert p["DialBLegUUID"] == ""
        result = await trunk.wait(10)
        assert result.returncode == 0, result.describe()  # it got our ACK


async def test_no_answer_ring_timeout_cancels_and_reports_no_answer(tmp_path: Path, make_sipp) -> None:
    trunk = await make_sipp("uas_noanswer.xml")
    async with EngineEnv(tmp_path, **trunk_env(("carrier", trunk.port, ""))) as env, Phone() as phone:
        env.xml("/answer", dial(auth=False, timeout="2"))
        env.xml("/dial-status", "<Hangup/>")
        p = await call_and_get_dial_status(env, phone)
        assert (p["DialStatus"], p["DialHangupCause"]) == ("no-answer", "NO_ANSWER")
        assert p["DialRingStatus"] == "true"
        result = await trunk.wait(10)
        assert result.returncode == 0, result.describe()  # CANCEL -> 200 + 487 -> our ACK


async def test_wrong_password_is_sip_auth_failed_4240(tmp_path: Path, make_sipp) -> None:
    trunk = await make_sipp("uas_trunk_auth_401.xml")
    async with EngineEnv(tmp_path, **trunk_env(("carrier", trunk.port, ""))) as env, Phone() as phone:
        env.xml("/answer", dial(auth=False, sipAuthUsername="trunkuser", sipAuthPassword="wrong-password"))
        env.xml("/dial-status", "<Hangup/>")
        p = await call_and_get_dial_status(env, phone)
        assert (p["DialStatus"], p["DialHangupCause"], p["DialHangupCauseCode"]) == ("failed", "sip_auth_failed",
                                                                                     "4240")


async def test_no_final_response_to_the_authenticated_retry_is_sip_auth_timeout_4250(tmp_path: Path,
                                                                                       make_sipp) -> None:
    trunk = await make_sipp("uas_auth_then_silent.xml", subs={"SILENCE_MS": 6000})
    async with EngineEnv(tmp_path, t1=0.05, **trunk_env(("carrier", trunk.port, ""))) as env, Phone() as phone:
        env.xml("/answer", dial())
        env.xml("/dial-status", "<Hangup/>")
        p = await call_and_get_dial_status(env, phone, timeout=20)
        assert (p["DialStatus"], p["DialHangupCause"], p["DialHangupCauseCode"]) == ("timeout", "sip_auth_timeout",
                                                                                     "4250")


async def test_seed_1_sequential_fallback_first_busy_second_answers_after_401(tmp_path: Path, make_sipp) -> None:
    busy = await make_sipp("uas_reject_486.xml", name="busy")
    good = await make_sipp("uas_trunk_auth_401.xml", name="good", extra=["-d", "500"])
    env_vars = trunk_env(("busy", busy.port, "1555"), ("good", good.port, "1666"))
    async with EngineEnv(tmp_path, **env_vars) as env, Phone() as phone:
        env.xml("/answer",
                '<Dial timeout="15" action="/dial-status/"><Number>15551230000</Number></Dial>'
                f'<Dial timeout="15" action="/dial-status/" sipAuthUsername="trunkuser" sipAuthPassword="{PASSWORD}">'
                "<Number>16661230000</Number></Dial><Speak>Goodbye.</Speak>")
        env.xml("/dial-status/", "")  # nothing usable: the engine continues with the next element
        await phone.dial(env.uri)
        reqs = await env.app.wait_for("/dial-status/", count=2, timeout=25)
        assert [r.params["DialStatus"] for r in reqs] == ["busy", "completed"]
        for sipp in (busy, good):
            result = await sipp.wait(10)
            assert result.returncode == 0, result.describe()
        await asyncio.wait_for(phone.ended.wait(), 15)
        assert (await env.hangup_callback())["HangupCauseCode"] == "4010"


async def test_parallel_ringing_first_answer_wins_the_other_is_cancelled(tmp_path: Path, make_sipp) -> None:
    ringing = await make_sipp("uas_noanswer.xml", name="ringing")
    answering = await make_sipp("uas_trunk_auth_401.xml", name="answering", extra=["-d", "500"])
    env_vars = trunk_env(("ringing", ringing.port, "1555"), ("answering", answering.port, "1666"))
    async with EngineEnv(tmp_path, **env_vars) as env, Phone() as phone:
        env.xml("/answer", f'<Dial action="/dial-status" callbackUrl="/dial-events" sipAuthUsername="trunkuser" '
                           f'sipAuthPassword="{PASSWORD}"><Number>15551230000</Number><Number>16661230000</Number>'
                           "</Dial>")
        env.xml("/dial-status", "")
        env.xml("/dial-events", "")
        p = await call_and_get_dial_status(env, phone)
        assert p["DialStatus"] == "completed"
        for sipp in (ringing, answering):
            result = await sipp.wait(10)
            assert result.returncode == 0, result.describe()  # the loser got CANCEL and ACKed 487
        await env.app.wait_for("/dial-events", count=2, timeout=5)
        events = [r.params["DialAction"] for r in env.app.requests_to("/dial-events")]
        assert events.count("answer") == 1 and events.count("hangup") == 1  # no callback for the LOSE_RACE leg


async def test_sip_headers_reserved_prefixes_dropped(tmp_path: Path, make_sipp) -> None:
    trunk = await make_sipp("uas_trunk_auth_401.xml", extra=["-d", "300"])
    async with EngineEnv(tmp_path, **trunk_env(("carrier", trunk.port, ""))) as env, Phone() as phone:
        headers = "CustomerId=123,PH-Secret=x,ClientRegion=eu,plivoTrace=1,Twilio-Sid=9,FS-Var=1,SipAuthHint=1,ZT-A=1"
        env.xml("/answer", dial(sipHeaders=headers))
        env.xml("/dial-status", "")
        await call_and_get_dial_status(env, phone)
        result = await trunk.wait(10)
        invite = [m for m in parse_trace(result.messages) if m.direction == "received" and m.method == "INVITE"][0]
        assert invite.header("X-PH-CustomerId") == "123"
        x_headers = [line.split(":")[0] for line in invite.text.splitlines() if line.lower().startswith("x-")]
        assert x_headers == ["X-PH-CustomerId"]


async def test_raw_mode_when_the_caller_authenticated_with_digest(tmp_path: Path, make_sipp) -> None:
    trunk = await make_sipp("uas_trunk_auth_401.xml", extra=["-d", "300"])
    users = {"SOFTSWITCH_USERS": '[{username = "alice", password = "alice-secret-1"}]'}
    async with EngineEnv(tmp_path, **trunk_env(("carrier", trunk.port, "")), **users) as env, Phone() as phone:
        env.xml("/answer", dial(sipHeaders="CustomerId=123"))
        env.xml("/dial-status", "")
        await phone.dial(env.uri, from_uri=f"sip:alice@{HOST}", credentials=Credentials("alice", "alice-secret-1"))
        await env.app.wait_for("/dial-status", count=1, timeout=20)
        result = await trunk.wait(10)
        invite = [m for m in parse_trace(result.messages) if m.direction == "received" and m.method == "INVITE"][0]
        assert invite.header("X-CustomerId") == "123" and invite.header("X-PH-CustomerId") is None
        assert "alice-secret-1" not in result.messages
