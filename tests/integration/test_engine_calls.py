"""Calls into the engine, end to end on loopback: a caller (softswitch's own stack, or SIPp) dials the engine, the
engine fetches XML from a real local app, runs it, and posts callbacks the app records."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from engine_env import AUTH_TOKEN, EngineEnv, Phone

pytestmark = pytest.mark.integration


async def test_speak_then_hangup_plays_audio_and_posts_the_hangup_callback(tmp_path: Path) -> None:
    async with EngineEnv(tmp_path) as env, Phone() as phone:
        env.xml("/answer", "<Speak>Hello from softswitch.</Speak><Hangup/>")
        await phone.dial(env.uri, headers=[("X-PH-Tenant", "acme")])
        await asyncio.wait_for(phone.ended.wait(), 15)
        assert phone.answered.is_set()
        assert phone.end_cause.kind == "bye" and phone.end_cause.by == "remote"
        # The caller heard the speech: well over half a second of non-silent audio.
        assert phone.heard.loud_frames() > 25
        [answer] = env.app.requests_to("/answer")
        assert answer.signature_valid(AUTH_TOKEN)
        assert answer.params["Direction"] == "inbound" and answer.params["CallStatus"] == "ringing"
        assert answer.params["From"] == "15557770000" and answer.params["To"] == "100"
        assert answer.params["X-PH-Tenant"] == "acme"
        hangup = await env.hangup_callback()
        assert hangup["CallUUID"] == answer.params["CallUUID"]
        assert hangup["HangupCause"] == "NORMAL_CLEARING" and hangup["CallStatus"] == "completed"
        assert int(hangup["Duration"]) >= 1 and hangup["BillDuration"] == hangup["Duration"]
        record = await env.engine.store.get_call(answer.params["CallUUID"])  # type: ignore[union-attr]
        assert record is not None and record.hangup_cause == "NORMAL_CLEARING"


async def test_end_of_document_hangs_up_with_4010(tmp_path: Path) -> None:
    async with EngineEnv(tmp_path) as env, Phone() as phone:
        env.xml("/answer", "<Wait length=\"1\"/><Speak>Bye.</Speak>")
        await phone.dial(env.uri)
        await asyncio.wait_for(phone.ended.wait(), 15)
        hangup = await env.hangup_callback()
        assert hangup["HangupCauseCode"] == "4010" and hangup["HangupCause"] == "NORMAL_CLEARING"


async def test_hangup_rejected_first_gives_603_and_never_answers(tmp_path: Path) -> None:
    async with EngineEnv(tmp_path) as env, Phone() as phone:
        env.xml("/answer", '<Hangup reason="rejected"/>')
        await phone.dial(env.uri)
        await asyncio.wait_for(phone.ended.wait(), 15)
        assert not phone.answered.is_set()
        assert phone.end_cause.kind == "rejected" and phone.end_cause.status == 603
        hangup = await env.hangup_callback()
        assert hangup["HangupCause"] == "CALL_REJECTED" and hangup["Duration"] == "0"


async def test_hangup_busy_gives_486(tmp_path: Path) -> None:
    async with EngineEnv(tmp_path) as env, Phone() as phone:
        env.xml("/answer", '<Hangup reason="busy"/>')
        await phone.dial(env.uri)
        await asyncio.wait_for(phone.ended.wait(), 15)
        assert phone.end_cause.status == 486
        assert (await env.hangup_callback())["HangupCause"] == "USER_BUSY"


async def test_preanswer_gives_183_with_audio_before_any_200(tmp_path: Path) -> None:
    async with EngineEnv(tmp_path) as env, Phone() as phone:
        env.xml("/answer", "<PreAnswer><Speak>Please hold while we connect you.</Speak></PreAnswer>"
                           '<Hangup reason="busy"/>')
        await phone.dial(env.uri)
        await asyncio.wait_for(phone.ended.wait(), 20)
        assert phone.early.is_set() and not phone.answered.is_set()
        assert phone.heard.loud_frames() > 25  # early media reached the caller
        assert phone.end_cause.status == 486


async def test_caller_hangs_up_mid_speak_and_the_callback_still_comes(tmp_path: Path) -> None:
    async with EngineEnv(tmp_path) as env, Phone() as phone:
        env.xml("/answer", '<Speak loop="0">This goes on and on until you hang up.</Speak>')
        await phone.dial(env.uri)
        await asyncio.wait_for(phone.answered.wait(), 10)
        await asyncio.sleep(0.5)
        await phone.hangup()
        hangup = await env.hangup_callback()
        assert hangup["HangupCause"] == "NORMAL_CLEARING" and hangup["HangupSource"] == "Caller"
        await asyncio.sleep(0.2)
        assert not env.engine.calls  # type: ignore[union-attr]


async def test_answer_url_500_uses_fallback(tmp_path: Path) -> None:
    async with EngineEnv(tmp_path, SOFTSWITCH_INBOUND__FALLBACK_URL="{app}/fallback") as env, Phone() as phone:
        env.app.fail("/answer", status=500)
        env.xml("/fallback", '<Hangup reason="busy"/>')
        await phone.dial(env.uri)
        await asyncio.wait_for(phone.ended.wait(), 20)
        assert len(env.app.requests_to("/answer")) == 3
        assert len(env.app.requests_to("/fallback")) == 1
        assert phone.end_cause.status == 486


async def test_broken_xml_uses_fallback_and_without_one_ends_with_invalid_answer_xml(tmp_path: Path) -> None:
    async with EngineEnv(tmp_path) as env, Phone() as phone:
        env.xml("/answer", "<Response><Speak>unclosed</Response>")
        await phone.dial(env.uri)
        await asyncio.wait_for(phone.ended.wait(), 20)
        assert not phone.answered.is_set()
        hangup = await env.hangup_callback()
        assert hangup["HangupCause"] == "INVALID_ANSWER_XML"


async def test_hangup_schedule_cuts_an_endless_play(tmp_path: Path) -> None:
    async with EngineEnv(tmp_path) as env, Phone() as phone:
        env.xml("/answer", '<Speak>This call will end in 2 seconds.</Speak><Hangup schedule="2"/>'
                           '<Speak loop="0">music music music</Speak>')
        await phone.dial(env.uri)
        await asyncio.wait_for(phone.ended.wait(), 15)
        hangup = await env.hangup_callback()
        assert hangup["HangupCause"] == "NORMAL_CLEARING"
        assert 2 <= int(hangup["Duration"]) <= 5


async def test_getdigits_posts_digits_to_action_and_runs_its_document(tmp_path: Path) -> None:
    async with EngineEnv(tmp_path) as env, Phone() as phone:
        env.xml("/answer", '<GetDigits action="/digits" numDigits="3" timeout="5">'
                           "<Speak>Enter three digits.</Speak></GetDigits><Speak>No input.</Speak>")
        env.xml("/digits", '<Hangup reason="busy"/>')
        await phone.dial(env.uri)
        await asyncio.wait_for(phone.answered.wait(), 10)
        await asyncio.sleep(0.3)
        await phone.send_digits("123")
        await asyncio.wait_for(phone.ended.wait(), 15)
        [req] = env.app.requests_to("/digits")
        assert req.params["Digits"] == "123" and req.signature_valid(AUTH_TOKEN)
        assert req.params["CallStatus"] == "in-progress"


async def test_redirect_follows_to_the_next_document(tmp_path: Path) -> None:
    async with EngineEnv(tmp_path) as env, Phone() as phone:
        env.xml("/answer", '<Redirect method="GET">/next?step=2</Redirect><Speak>never</Speak>')
        env.xml("/next", '<Hangup reason="busy"/>')
        await phone.dial(env.uri)
        await asyncio.wait_for(phone.ended.wait(), 15)
        [req] = env.app.requests_to("/next")
        assert req.method == "GET" and req.query["step"] == "2" and "CallUUID" in req.query
        assert phone.end_cause.status == 486 or phone.end_cause.kind == "bye"
