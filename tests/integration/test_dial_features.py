"""`<Dial>` attributes end to end against far ends built on softswitch's own stack (real SIP and RTP on loopback):
confirm keys, time limits, hangupOnStar, B-leg callbacks, digit matches, caller ID, dial music, sendDigits,
WhatsApp routing, leg lifecycle (A hangs up while B rings / is bridged), transcoding, and no credential leaks."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
import structlog
from engine_env import AUTH_TOKEN, EngineEnv, FarEnd, Phone

from media.sources import Tone

pytestmark = pytest.mark.integration

SECRET = "s3cret-pass-42"


def trunks(*far_ends: tuple[str, FarEnd, str], whatsapp: str | None = None) -> dict[str, str]:
    items = []
    for i, (name, far, prefix) in enumerate(far_ends):
        prefixes = f'["{prefix}"]' if prefix else "[]"
        wa = "true" if name == whatsapp else "false"
        items.append(f'{{name = "{name}", uri = "sip:127.0.0.1:{far.port}", prefixes = {prefixes}, '
                     f'default = {"true" if i == 0 else "false"}, whatsapp = {wa}}}')
    return {"SOFTSWITCH_TRUNKS": "[" + ", ".join(items) + "]"}


async def dial_status(env: EngineEnv, timeout: float = 20) -> dict[str, str]:
    [req] = await env.app.wait_for("/status", count=1, timeout=timeout)
    assert req.signature_valid(AUTH_TOKEN)
    return req.params


async def test_confirm_key_pressed_bridges(tmp_path: Path) -> None:
    async with FarEnd() as far, EngineEnv(tmp_path, **trunks(("t", far, ""))) as env, Phone() as phone:
        env.xml("/confirm", "<Speak>Press one to accept.</Speak>")
        env.xml("/answer", '<Dial action="/status" confirmSound="/confirm" confirmKey="1">'
                           "<Number>15550001111</Number></Dial>")
        env.xml("/status", "<Hangup/>")
        await phone.dial(env.uri)
        await asyncio.wait_for(far.answered.wait(), 10)
        await asyncio.sleep(0.3)
        assert not phone.answered.is_set()  # not bridged (nor answered) before the key
        await far.press("1")
        await asyncio.wait_for(phone.answered.wait(), 10)
        await asyncio.sleep(0.3)
        await far.hangup()
        p = await dial_status(env)
        assert p["DialStatus"] == "completed"


async def test_confirm_timeout_without_the_key_fails_the_leg(tmp_path: Path) -> None:
    async with FarEnd() as far, EngineEnv(tmp_path, **trunks(("t", far, ""))) as env, Phone() as phone:
        env.xml("/confirm", "<Speak>Press one.</Speak>")
        env.xml("/answer", '<Dial action="/status" confirmSound="/confirm" confirmKey="1" confirmTimeout="2">'
                           "<Number>15550001111</Number></Dial>")
        env.xml("/status", "<Hangup/>")
        await phone.dial(env.uri)
        await asyncio.wait_for(far.answered.wait(), 10)
        await far.press("2")  # the wrong key
        p = await dial_status(env)
        assert p["DialStatus"] == "failed" and not phone.answered.is_set()
        await asyncio.wait_for(far.ended.wait(), 5)  # we hung up the unconfirmed leg


async def test_time_limit_hangs_up_b_only_and_a_continues(tmp_path: Path) -> None:
    async with FarEnd() as far, EngineEnv(tmp_path, **trunks(("t", far, ""))) as env, Phone() as phone:
        env.xml("/answer", '<Dial timeLimit="2"><Number>15550001111</Number></Dial>'
                           '<Redirect>/after</Redirect>')
        env.xml("/after", "<Hangup/>")
        await phone.dial(env.uri)
        await asyncio.wait_for(far.answered.wait(), 10)
        await asyncio.wait_for(far.ended.wait(), 6)
        assert far.end_cause.kind == "bye" and far.end_cause.by == "remote"
        await env.app.wait_for("/after", count=1, timeout=5)  # A went on to the next element


async def test_hangup_on_star_ends_b_and_a_continues(tmp_path: Path) -> None:
    async with FarEnd() as far, EngineEnv(tmp_path, **trunks(("t", far, ""))) as env, Phone() as phone:
        env.xml("/answer", '<Dial hangupOnStar="true" action="/status"><Number>15550001111</Number></Dial>')
        env.xml("/status", "<Hangup/>")
        await phone.dial(env.uri)
        await asyncio.wait_for(phone.answered.wait(), 10)
        await asyncio.sleep(0.3)
        await phone.send_digits("*")
        await asyncio.wait_for(far.ended.wait(), 5)
        p = await dial_status(env)
        assert p["DialStatus"] == "completed"
        await asyncio.wait_for(phone.ended.wait(), 5)


async def test_callback_url_events_and_digits_match(tmp_path: Path) -> None:
    async with FarEnd() as far, EngineEnv(tmp_path, **trunks(("t", far, ""))) as env, Phone() as phone:
        env.xml("/answer", '<Dial callbackUrl="/events" digitsMatch="12" digitsMatchBLeg="9" action="/status">'
                           "<Number>15550001111</Number></Dial>")
        env.xml("/events", "")
        env.xml("/status", "<Hangup/>")
        await phone.dial(env.uri)
        await asyncio.wait_for(phone.answered.wait(), 10)
        await asyncio.sleep(0.3)
        await phone.send_digits("12")
        await far.press("9")
        await asyncio.sleep(0.5)
        await far.hangup()
        await dial_status(env)
        events = await env.app.wait_for("/events", count=4, timeout=5)
        actions = [(r.params["DialAction"], r.params.get("DialDigitsMatch") or r.params.get("DialDigitsMatchBLeg"))
                   for r in events]
        assert ("answer", None) in actions and ("hangup", None) in actions
        assert ("digits", "12") in actions and ("digits", "9") in actions
        hangup = [r for r in events if r.params["DialAction"] == "hangup"][0]
        assert hangup.params["DialBLegHangupCause"] == "NORMAL_CLEARING"
        assert hangup.params["DialALegUUID"] == hangup.params["CallUUID"]


async def test_caller_id_and_name_none_give_an_empty_identity(tmp_path: Path) -> None:
    async with FarEnd() as far, EngineEnv(tmp_path, **trunks(("t", far, ""))) as env, Phone() as phone:
        env.xml("/answer", '<Dial callerId="none" callerName="none"><Number>15550001111</Number></Dial>')
        await phone.dial(env.uri)
        await asyncio.wait_for(far.answered.wait(), 10)
        from_header = far.invites[0].headers.get("From")
        assert "15557770000" not in from_header and '"' not in from_header.split("<")[0]
        await far.hangup()


async def test_caller_id_defaults_to_the_callers_number(tmp_path: Path) -> None:
    async with FarEnd() as far, EngineEnv(tmp_path, **trunks(("t", far, ""))) as env, Phone() as phone:
        env.xml("/answer", '<Dial callerId="+14155550100" callerName="Sales"><Number>15550001111</Number></Dial>')
        await phone.dial(env.uri)
        await asyncio.wait_for(far.answered.wait(), 10)
        from_header = far.invites[0].headers.get("From")
        assert "+14155550100@" in from_header and from_header.startswith('"Sales"')
        assert far.invites[0].uri.startswith("sip:15550001111@")
        await far.hangup()


async def test_generated_ringback_plays_while_b_rings(tmp_path: Path) -> None:
    async with FarEnd(ring_for=2.0) as far, EngineEnv(tmp_path, **trunks(("t", far, ""))) as env, Phone() as phone:
        env.xml("/answer", "<Dial><Number>15550001111</Number></Dial>")
        await phone.dial(env.uri)
        await asyncio.wait_for(far.answered.wait(), 10)
        assert phone.early.is_set()  # ringback as early media (183) on the unanswered caller
        assert phone.heard.loud_frames(200) > 20
        await far.hangup()


async def test_dial_music_url_plays_its_xml(tmp_path: Path) -> None:
    async with FarEnd(ring_for=2.0) as far, EngineEnv(tmp_path, **trunks(("t", far, ""))) as env, Phone() as phone:
        env.xml("/music", "<Speak>Please hold.</Speak>")
        env.xml("/answer", '<Dial dialMusic="/music"><Number>15550001111</Number></Dial>')
        await phone.dial(env.uri)
        await asyncio.wait_for(far.answered.wait(), 10)
        [req] = env.app.requests_to("/music")
        assert req.method == "POST"
        assert phone.heard.loud_frames() > 20
        await far.hangup()


async def test_send_digits_after_answer(tmp_path: Path) -> None:
    async with FarEnd() as far, EngineEnv(tmp_path, **trunks(("t", far, ""))) as env, Phone() as phone:
        env.xml("/answer", '<Dial><Number sendDigits="1w2">15550001111</Number></Dial>')
        await phone.dial(env.uri)
        await asyncio.wait_for(far.answered.wait(), 10)
        for _ in range(50):
            if far.digits == ["1", "2"]:
                break
            await asyncio.sleep(0.1)
        assert far.digits == ["1", "2"]
        await far.hangup()


async def test_whatsapp_dial_to_a_pstn_number_fails_clearly(tmp_path: Path) -> None:
    async with FarEnd() as far, EngineEnv(tmp_path, **trunks(("t", far, ""))) as env, Phone() as phone:
        env.xml("/answer", '<Dial type="whatsapp" action="/status"><Number>15550001111</Number></Dial>')
        env.xml("/status", "<Hangup/>")
        await phone.dial(env.uri)
        p = await dial_status(env)
        assert (p["DialStatus"], p["DialHangupCause"], p["DialHangupCauseCode"]) == (
            "failed", "OUTGOING_CALL_BARRED", "2040")
        assert not far.invites


async def test_whatsapp_dial_uses_a_whatsapp_trunk(tmp_path: Path) -> None:
    async with FarEnd() as pstn, FarEnd() as wa, \
            EngineEnv(tmp_path, **trunks(("pstn", pstn, ""), ("wa", wa, "1"), whatsapp="wa")) as env, \
            Phone() as phone:
        env.xml("/answer", '<Dial type="whatsapp"><Number>15550001111</Number></Dial>')
        await phone.dial(env.uri)
        await asyncio.wait_for(wa.answered.wait(), 10)
        assert not pstn.invites
        await wa.hangup()


async def test_user_sip_uri_is_dialed_directly_with_per_user_headers(tmp_path: Path) -> None:
    async with FarEnd() as far, EngineEnv(tmp_path) as env, Phone() as phone:
        env.xml("/answer", f'<Dial sipHeaders="Team=blue"><User sipHeaders="Team=red,Desk=7">'
                           f"sip:bob@127.0.0.1:{far.port}</User></Dial>")
        await phone.dial(env.uri)
        await asyncio.wait_for(far.answered.wait(), 10)
        invite = far.invites[0]
        assert invite.uri == f"sip:bob@127.0.0.1:{far.port}"
        assert invite.headers.get("X-PH-Team") == "red" and invite.headers.get("X-PH-Desk") == "7"
        await far.hangup()


async def test_caller_hangs_up_while_b_rings_cancels_b(tmp_path: Path) -> None:
    async with FarEnd(answer=False) as far, EngineEnv(tmp_path, **trunks(("t", far, ""))) as env, \
            Phone() as phone:
        env.xml("/answer", "<Dial><Number>15550001111</Number></Dial>")
        await phone.dial(env.uri)
        for _ in range(50):
            if far.legs:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        await phone.hangup()
        await asyncio.wait_for(far.ended.wait(), 5)
        assert far.end_cause.kind == "cancelled" and far.end_cause.by == "remote"
        hangup = await env.hangup_callback()
        assert hangup["HangupSource"] == "Caller"


async def test_caller_hangs_up_while_bridged_byes_b(tmp_path: Path) -> None:
    async with FarEnd() as far, EngineEnv(tmp_path, **trunks(("t", far, ""))) as env, Phone() as phone:
        env.xml("/answer", "<Dial><Number>15550001111</Number></Dial>")
        await phone.dial(env.uri)
        await asyncio.wait_for(phone.answered.wait(), 10)
        await asyncio.sleep(0.3)
        await phone.hangup()
        await asyncio.wait_for(far.ended.wait(), 5)
        assert far.end_cause.kind == "bye" and far.end_cause.by == "remote"


async def test_bridge_transcodes_pcmu_caller_to_pcma_trunk_both_ways(tmp_path: Path) -> None:
    async with FarEnd(codecs=("PCMA",)) as far, EngineEnv(tmp_path, **trunks(("t", far, ""))) as env, \
            Phone() as phone:
        env.xml("/answer", "<Dial><Number>15550001111</Number></Dial>")
        await phone.dial(env.uri)  # the phone offers PCMU first: the A leg is PCMU
        await asyncio.wait_for(phone.answered.wait(), 10)
        assert phone.media is not None and far.media is not None
        assert phone.media.negotiated.codec == "PCMU" and far.media.negotiated.codec == "PCMA"
        phone.media.play(Tone([600.0], [(1.5, 0.0)]))
        far.media.play(Tone([900.0], [(1.5, 0.0)]))
        await asyncio.sleep(2.0)
        assert far.heard.loud_frames(1000) > 40  # A's tone reached B, re-encoded as PCMA
        assert phone.heard.loud_frames(1000) > 40  # B's tone reached A, re-encoded as PCMU
        await far.hangup()


async def test_credentials_never_leave(tmp_path: Path, make_sipp) -> None:
    """The Dial password is in the app's XML only: never in logs, callbacks, or anything sent to the trunk."""
    out = io.StringIO()
    structlog.configure(processors=[structlog.processors.JSONRenderer()],
                        logger_factory=structlog.WriteLoggerFactory(file=out))
    try:
        trunk = await make_sipp("uas_trunk_auth_401.xml")  # verifies trunkuser/trunkpass: ours is refused
        env_vars = {"SOFTSWITCH_TRUNKS": f'[{{name = "t", uri = "sip:127.0.0.1:{trunk.port}", default = true}}]'}
        async with EngineEnv(tmp_path, **env_vars) as env, Phone() as phone:
            env.xml("/answer", f'<Dial action="/status" callbackUrl="/events" sipAuthUsername="trunkuser" '
                               f'sipAuthPassword="{SECRET}"><Number>15550001111</Number></Dial>')
            env.xml("/status", "<Hangup/>")
            env.xml("/events", "")
            await phone.dial(env.uri)
            p = await dial_status(env)
            assert p["DialHangupCause"] == "sip_auth_failed"
            await env.hangup_callback()
            sent = [r for r in env.app.requests if r.path != "/answer"]
            assert sent
            for req in sent:
                assert SECRET not in req.body.decode(errors="replace") and SECRET not in json.dumps(req.headers)
        result = await trunk.wait(10)
        assert "Authorization: Digest" in result.messages and SECRET not in result.messages
    finally:
        structlog.reset_defaults()
    logs = out.getvalue()
    assert "dial_b_leg" in logs and SECRET not in logs
