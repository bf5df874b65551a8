"""The client's seed examples (spec §0.4) that need no Dial, plus Record, DTMF, GetInput and webhook outages —
served as XML built with the real `plivo` SDK (plivo.plivoxml) by a real local app, called by a real caller."""

from __future__ import annotations

import asyncio
import io
import math
import time
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest
from engine_env import AUTH_TOKEN, EngineEnv, Phone, rms
from plivo import plivoxml

from media.sources import Silence, Tone, beep

pytestmark = pytest.mark.integration


def xml(*elements: object) -> str:
    response = plivoxml.ResponseElement()
    for element in elements:
        response.add(element)
    return response.to_string()


def tone_wav(seconds: float, freq: float = 1000.0, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.4 * 32767 * np.sin(2 * math.pi * freq * t)).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return buf.getvalue()


def speech_runs(frames: list[bytes], threshold: float = 300.0) -> list[tuple[int, int]]:
    """(start, end) frame indexes of loud stretches, gaps under 0.5 s merged."""
    runs: list[tuple[int, int]] = []
    for i, frame in enumerate(frames):
        if rms(frame) > threshold:
            if runs and i - runs[-1][1] <= 25:
                runs[-1] = (runs[-1][0], i)
            else:
                runs.append((i, i))
    return runs


async def test_seed_2_speak_then_hangup(tmp_path: Path) -> None:
    async with EngineEnv(tmp_path) as env, Phone() as phone:
        env.xml("/answer", xml(plivoxml.SpeakElement("Thank you for calling."), plivoxml.HangupElement()))
        await phone.dial(env.uri)
        await asyncio.wait_for(phone.ended.wait(), 15)
        assert phone.answered.is_set() and phone.heard.loud_frames() > 25
        assert (await env.hangup_callback())["HangupCauseCode"] == "4000"


async def test_seed_3_scheduled_hangup_cuts_an_endless_play(tmp_path: Path) -> None:
    """`<Speak/><Hangup schedule=N/><Play loop="0">URL</Play>` (N=3 here to keep the test short)."""
    async with EngineEnv(tmp_path) as env, Phone() as phone:
        env.app.route("/tone.wav", tone_wav(0.5), content_type="audio/wav")
        env.xml("/answer", xml(plivoxml.SpeakElement("This call will end in 3 seconds."),
                               plivoxml.HangupElement(schedule=3),
                               plivoxml.PlayElement(env.app.url("/tone.wav"), loop=0)))
        await phone.dial(env.uri)
        await asyncio.wait_for(phone.answered.wait(), 10)
        await asyncio.wait_for(phone.ended.wait(), 15)
        hangup = await env.hangup_callback()
        assert hangup["HangupCause"] == "NORMAL_CLEARING"
        timeline = (await env.engine.store.get_call(hangup["CallUUID"])).timeline  # type: ignore[union-attr]
        at = {e["event"]: e["t"] for e in timeline}
        assert 2.9 <= at["ended"] - at["hangup_scheduled"] <= 3.5  # execution went on; the hangup came at +3 s
        # The looped 1 kHz file reached the caller: its frames are tonal at 1 kHz.
        tonal = [f for f in phone.heard.frames[-60:] if rms(f) > 1000]
        assert len(tonal) > 20
        spectrum = np.abs(np.fft.rfft(np.frombuffer(b"".join(tonal[:20]), "<i2")))
        assert abs(np.argmax(spectrum) * 8000 / (160 * 20) - 1000) < 30


@pytest.mark.parametrize("open_now", [False])
async def test_seed_4_business_hours_closed_branch(tmp_path: Path, open_now: bool) -> None:
    async with EngineEnv(tmp_path) as env, Phone() as phone:
        def answer(req: object) -> tuple[int, str]:
            if open_now:
                return 200, xml(plivoxml.SpeakElement("Connecting you."))
            return 200, xml(plivoxml.SpeakElement("We are closed. Call again tomorrow."), plivoxml.HangupElement())

        env.app.route("/answer", answer)
        await phone.dial(env.uri)
        await asyncio.wait_for(phone.ended.wait(), 15)
        assert phone.heard.loud_frames() > 25
        assert phone.end_cause.kind == "bye" and phone.end_cause.by == "remote"


async def test_seed_5_blocked_caller_is_rejected_with_603_never_answered(tmp_path: Path) -> None:
    async with EngineEnv(tmp_path) as env, Phone() as phone:
        env.xml("/answer", xml(plivoxml.HangupElement(reason="rejected")))
        await phone.dial(env.uri)
        await asyncio.wait_for(phone.ended.wait(), 15)
        assert not phone.answered.is_set() and phone.end_cause.status == 603
        hangup = await env.hangup_callback()
        assert hangup["HangupCause"] == "CALL_REJECTED" and hangup["CallStatus"] != "in-progress"
        record = await env.engine.store.get_call(hangup["CallUUID"])  # type: ignore[union-attr]
        assert record is not None and record.answered_at is None  # a call record for an unanswered call


async def test_seed_6_wait_between_speaks(tmp_path: Path) -> None:
    async with EngineEnv(tmp_path) as env, Phone() as phone:
        env.xml("/answer", xml(plivoxml.SpeakElement("First."), plivoxml.WaitElement(length=2),
                               plivoxml.SpeakElement("Second."), plivoxml.HangupElement()))
        await phone.dial(env.uri)
        await asyncio.wait_for(phone.ended.wait(), 20)
        runs = speech_runs(phone.heard.frames)
        assert len(runs) == 2, runs
        gap = (runs[1][0] - runs[0][1]) * 0.02
        assert 1.8 <= gap <= 2.6


async def test_seed_6_voicemail_drop_waits_for_the_beep(tmp_path: Path) -> None:
    """`<Wait length="5" beep="true"/><Speak/>`: the message starts right after the voicemail's beep."""
    async with EngineEnv(tmp_path) as env, Phone() as phone:
        env.xml("/answer", xml(plivoxml.SpeakElement("Hi."), plivoxml.WaitElement(length=5, beep=True),
                               plivoxml.SpeakElement("This is your reminder."), plivoxml.HangupElement()))
        await phone.dial(env.uri)
        await asyncio.wait_for(phone.answered.wait(), 10)
        assert phone.media is not None
        answered = time.monotonic()
        phone.media.play(Silence(1.0))
        await asyncio.sleep(1.0)
        await phone.media.play(beep(0.4))
        beep_end = time.monotonic()
        await asyncio.wait_for(phone.ended.wait(), 20)
        runs = speech_runs(phone.heard.frames)
        assert len(runs) == 2, runs
        # The reminder started well before the 5 s Wait would have ended, and after the beep.
        reminder_start = answered + runs[1][0] * 0.02
        assert reminder_start - beep_end < 1.5
        [event] = [e for e in (await env.engine.store.get_call(  # type: ignore[union-attr]
            (await env.hangup_callback())["CallUUID"])).timeline if e["event"] == "wait_beep"]  # type: ignore[union-attr]
        assert 900 <= event["frequency"] <= 1100


async def test_record_writes_a_file_served_at_record_url(tmp_path: Path) -> None:
    async with EngineEnv(tmp_path) as env, Phone() as phone:
        env.xml("/answer", xml(plivoxml.RecordElement(action="/recorded", file_format="wav", max_length=10,
                                                      timeout=1, play_beep=False)))
        env.xml("/recorded", xml(plivoxml.HangupElement()))
        await phone.dial(env.uri)
        await asyncio.wait_for(phone.answered.wait(), 10)
        assert phone.media is not None
        await phone.media.play(Tone([440.0], [(2.0, 0.0)]))
        await asyncio.wait_for(phone.ended.wait(), 15)
        [req] = env.app.requests_to("/recorded")
        assert req.signature_valid(AUTH_TOKEN)
        p = req.params
        assert p["RecordingFileFormat"] == "wav" and p["RecordUrl"].endswith(".wav")
        duration_ms = int(p["RecordingDurationMs"])
        assert 2000 <= duration_ms <= 4000  # 2 s of tone, then 1 s of silence ends it
        async with httpx.AsyncClient() as client:
            wav_bytes = (await client.get(p["RecordUrl"])).content
        with wave.open(io.BytesIO(wav_bytes)) as w:
            file_ms = w.getnframes() * 1000 / w.getframerate()
            frames = np.frombuffer(w.readframes(w.getnframes()), "<i2")
        assert abs(file_ms - duration_ms) <= 60
        assert float(np.sqrt(np.mean(frames[:8000].astype(float) ** 2))) > 1000  # the caller's tone is in it


async def test_dtmf_verb_sends_digits_the_caller_detects(tmp_path: Path) -> None:
    async with EngineEnv(tmp_path) as env, Phone() as phone:
        env.xml("/answer", xml(plivoxml.DTMFElement("12#", async_=False), plivoxml.WaitElement(length=1),
                               plivoxml.HangupElement()))
        heard: list[str] = []
        await phone.dial(env.uri)
        assert phone.media is not None
        phone.media.add_dtmf_listener(lambda event: heard.append(event.digit))
        await asyncio.wait_for(phone.ended.wait(), 15)
        assert heard == ["1", "2", "#"]


async def test_getinput_speech_is_a_clear_error_and_the_call_goes_on(tmp_path: Path) -> None:
    async with EngineEnv(tmp_path) as env, Phone() as phone:
        gi = plivoxml.GetInputElement(action="/input", input_type="speech")
        env.xml("/answer", xml(gi, plivoxml.RedirectElement("/after")))
        env.xml("/after", xml(plivoxml.HangupElement()))
        await phone.dial(env.uri)
        await asyncio.wait_for(phone.ended.wait(), 15)
        assert env.app.requests_to("/after") and not env.app.requests_to("/input")


async def test_hangup_callback_survives_a_webhook_outage(tmp_path: Path) -> None:
    async with EngineEnv(tmp_path) as env, Phone() as phone:
        env.xml("/answer", xml(plivoxml.SpeakElement("Please wait.", loop=0)))
        await phone.dial(env.uri)
        await asyncio.wait_for(phone.answered.wait(), 10)
        await env.app.stop()  # the app goes down while the call is up
        await phone.hangup()
        await asyncio.sleep(1.0)
        assert await env.engine.store.depth() >= 1  # type: ignore[union-attr]  # kept, not dropped
        await env.app.start()
        hangup = await env.hangup_callback(timeout=15)
        assert hangup["HangupSource"] == "Caller"
        assert len(env.app.requests_to("/hangup")) == 1


async def test_record_session_records_both_sides_in_stereo_in_the_background(tmp_path: Path) -> None:
    """recordSession: non-blocking; the caller on the left channel, what the caller hears on the right; posted when
    the call ends."""
    async with EngineEnv(tmp_path) as env, Phone() as phone:
        env.xml("/answer", xml(plivoxml.RecordElement(action="/rec", record_session=True, file_format="mp3",
                                                      record_channel_type="stereo"),
                               plivoxml.SpeakElement("This call is recorded. Goodbye."), plivoxml.HangupElement()))
        env.xml("/rec", "")
        await phone.dial(env.uri)
        await asyncio.wait_for(phone.answered.wait(), 10)
        assert phone.media is not None
        phone.media.play(Tone([440.0], [(10.0, 0.0)]))
        await asyncio.wait_for(phone.ended.wait(), 20)
        [req] = await env.app.wait_for("/rec", count=1, timeout=10)
        p = req.params
        assert p["RecordingFileFormat"] == "mp3" and p["RecordUrl"].endswith(".mp3")
        async with httpx.AsyncClient() as client:
            mp3 = (await client.get(p["RecordUrl"])).content
        import miniaudio

        decoded = miniaudio.decode(mp3, output_format=miniaudio.SampleFormat.SIGNED16, nchannels=2,
                                   sample_rate=8000)
        frames = np.frombuffer(decoded.samples, "<i2").reshape(-1, 2).astype(float)
        assert abs(len(frames) / 8000 * 1000 - int(p["RecordingDurationMs"])) < 200
        left, right = frames[:, 0], frames[:, 1]
        assert np.sqrt(np.mean(left**2)) > 500  # the caller's tone
        assert np.sqrt(np.mean(right**2)) > 200  # the engine's speech
        spectrum = np.abs(np.fft.rfft(left[:8000]))
        assert abs(np.argmax(spectrum) * 8000 / 8000 - 440) < 15
