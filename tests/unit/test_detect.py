"""Silence and beep detection on real signals: espeak-ng speech, white noise, generated tones and call-progress
tones. These pin the thresholds documented in media/detect.py."""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

import numpy as np
import pytest

from media.detect import (
    DEFAULT_SILENCE_THRESHOLD_DBFS,
    FLOOR_DBFS,
    BeepDetector,
    SilenceDetector,
    frame_dbfs,
)
from media.frames import FRAME_BYTES, SILENCE_FRAME, AudioSink
from media.sources import FrameSource, Tone, beep, dtmf_tone, ringback_us
from media.tts import Tts

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

PROMPTS = [
    "Hi, you have reached the voicemail of John Smith. Please leave a message after the tone.",
    "Eeeeeeee. Aaaaaaaah. Mmmmmmmm. Ooooooooh.",  # sustained vowels: the most tone-like speech there is
]


@pytest.fixture(scope="module")
def speech() -> list[bytes]:
    async def render_all() -> list[bytes]:
        tts = Tts()
        jobs = [
            tts.render(text, voice, language)
            for text in PROMPTS
            for voice in ("WOMAN", "MAN")
            for language in ("en-US", "fr-FR", "de-DE")
        ]
        return list(await asyncio.gather(*jobs))

    return asyncio.run(render_all())


def frames_of(pcm: bytes) -> list[bytes]:
    pcm += bytes(-len(pcm) % FRAME_BYTES)
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]


def drain(source: FrameSource, limit: int = 5000) -> bytes:
    out = []
    while len(out) < limit and (frame := source.read_frame()) is not None:
        out.append(frame)
    return b"".join(out)


def feed(sink: AudioSink, pcm: bytes) -> None:
    for frame in frames_of(pcm):
        sink.write_frame(frame)


def noise(seconds: float, dbfs: float, seed: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 32768 * 10 ** (dbfs / 20), int(8000 * seconds))
    return np.clip(x, -32768, 32767).astype("<i2").tobytes()


def mix(a: bytes, b: bytes) -> bytes:
    n = min(len(a), len(b)) // 2
    x = np.frombuffer(a[: 2 * n], "<i2").astype(np.int32) + np.frombuffer(b[: 2 * n], "<i2")
    return np.clip(x, -32768, 32767).astype("<i2").tobytes()


def silence(seconds: float) -> bytes:
    return bytes(int(16000 * seconds))


# -- levels ------------------------------------------------------------------------------------------------------------
def test_frame_level_scale() -> None:
    assert frame_dbfs(SILENCE_FRAME) == FLOOR_DBFS
    full_square = np.full(160, 32767, dtype="<i2").tobytes()
    assert frame_dbfs(full_square) == pytest.approx(0.0, abs=0.01)
    assert frame_dbfs(frames_of(drain(beep(0.1)))[2]) == pytest.approx(-13.0, abs=0.1)
    with pytest.raises(ValueError):
        frame_dbfs(b"\x00" * 100)


# -- silence -----------------------------------------------------------------------------------------------------------
@needs_espeak
def test_silence_after_speech_is_timed_to_the_frame(speech: list[bytes]) -> None:
    for pcm in speech:
        detector = SilenceDetector(min_silence_s=1.0)
        frames = frames_of(pcm)
        last_voiced = max(i for i, f in enumerate(frames) if frame_dbfs(f) >= DEFAULT_SILENCE_THRESHOLD_DBFS)
        reached_at = None
        for i, frame in enumerate(frames + frames_of(silence(2.0))):
            detector.write_frame(frame)
            if detector.silence_reached and reached_at is None and i > last_voiced:
                reached_at = i
        assert detector.heard_speech
        assert reached_at is not None
        assert abs(reached_at - (last_voiced + 50)) <= 1  # 1.0 s = 50 frames after the last voiced frame
        assert detector.silent_for == pytest.approx((len(frames) + 100 - 1 - last_voiced) * 0.02)


@needs_espeak
def test_speech_over_line_noise_is_still_speech_and_the_noise_is_silence(speech: list[bytes]) -> None:
    clean = frames_of(speech[0] + silence(2.0))
    last_voiced = max(i for i, f in enumerate(clean) if frame_dbfs(f) >= DEFAULT_SILENCE_THRESHOLD_DBFS)
    detector = SilenceDetector(min_silence_s=1.5)
    feed(detector, mix(b"".join(clean), noise(20.0, -55)))  # -55 dBFS: a quiet line's hiss
    assert detector.heard_speech and detector.silence_reached
    assert detector.silent_for == pytest.approx((len(clean) - 1 - last_voiced) * 0.02, abs=0.021)


def test_noise_below_threshold_never_counts_as_speech() -> None:
    detector = SilenceDetector(min_silence_s=2.0)
    feed(detector, noise(3.0, -50))
    assert not detector.heard_speech
    assert detector.silence_reached and detector.silent_for == pytest.approx(3.0)
    assert detector.elapsed == pytest.approx(3.0)


def test_voiced_frame_resets_silence_and_speech_needs_60ms() -> None:
    detector = SilenceDetector(min_silence_s=0.5)
    feed(detector, silence(0.4))
    tone = drain(Tone((300,), ((0.04, 0.0),), level_dbfs=-30))  # 40 ms: loud, but too short to be speech
    feed(detector, tone)
    assert detector.silent_for == 0.0 and not detector.heard_speech and not detector.silence_reached
    feed(detector, drain(Tone((300,), ((0.06, 0.0),), level_dbfs=-30)))
    assert detector.heard_speech
    feed(detector, silence(0.48))
    assert not detector.silence_reached
    feed(detector, silence(0.02))
    assert detector.silence_reached
    detector.reset()
    assert detector.frames_seen == 0 and not detector.heard_speech


def test_threshold_boundary() -> None:
    just_above = drain(Tone((500,), ((0.2, 0.0),), level_dbfs=-38))
    just_below = drain(Tone((500,), ((0.2, 0.0),), level_dbfs=-42))
    above, below = SilenceDetector(), SilenceDetector()
    feed(above, just_above)
    feed(below, just_below)
    assert above.heard_speech and not below.heard_speech


# -- beep --------------------------------------------------------------------------------------------------------------
def run_beep_detector(pcm: bytes, **options: Any) -> BeepDetector:
    detector = BeepDetector(**options)
    feed(detector, pcm)
    return detector


@pytest.mark.parametrize("freq", [600, 850, 950, 1000, 1400, 2000])
def test_beep_is_detected_with_its_frequency_start_and_end(freq: int) -> None:
    pcm = silence(0.5) + drain(beep(0.3, freq)) + silence(0.5)
    detector = run_beep_detector(pcm)
    assert detector.beep_detected and detector.beep_ended
    assert detector.beep_frequency == pytest.approx(freq, abs=5)
    assert detector.beep_started_at == pytest.approx(0.5, abs=0.02)
    assert detector.beep_ended_at == pytest.approx(0.8, abs=0.02)


def test_beep_is_reported_after_100ms_of_tone() -> None:
    detector = BeepDetector()
    feed(detector, silence(0.2))
    frames_until_detected = 0
    for frame in frames_of(drain(beep(1.0))):
        detector.write_frame(frame)
        frames_until_detected += 1
        if detector.beep_detected:
            break
    assert frames_until_detected == 5  # the fifth 20 ms frame completes 100 ms
    assert not detector.beep_ended
    assert not run_beep_detector(drain(beep(0.08))).beep_detected
    assert run_beep_detector(drain(beep(0.1))).beep_detected


@needs_espeak
def test_greeting_then_beep(speech: list[bytes]) -> None:
    greeting = speech[0]
    pcm = mix(greeting + silence(0.3) + drain(beep(0.4)) + silence(1.0), noise(30.0, -55))
    detector = run_beep_detector(pcm)
    beep_at = len(greeting) / 16000 + 0.3
    assert detector.beep_detected
    assert detector.beep_started_at == pytest.approx(beep_at, abs=0.04)
    assert detector.beep_ended_at == pytest.approx(beep_at + 0.4, abs=0.04)


@needs_espeak
def test_no_beep_in_speech(speech: list[bytes]) -> None:
    for pcm in speech:
        detector = run_beep_detector(pcm)
        assert not detector.beep_detected, detector.beep_frequency
        runs, run = [], 0
        for frame in frames_of(pcm):
            run = run + 1 if detector.tone_in_frame(frame) is not None else 0
            runs.append(run)
        assert max(runs) <= 2  # measured: at most 1; a beep needs 5


@pytest.mark.parametrize("dbfs", [-40, -20, -6])
def test_no_beep_in_white_noise(dbfs: float) -> None:
    assert not run_beep_detector(noise(10.0, dbfs)).beep_detected


def test_no_beep_in_call_progress_and_dtmf_tones() -> None:
    assert not run_beep_detector(drain(ringback_us(), limit=300)).beep_detected  # 440+480 Hz
    assert not run_beep_detector(drain(Tone((480, 620), ((0.5, 0.5),)))).beep_detected  # US busy
    assert not run_beep_detector(drain(Tone((425,), ((1.0, 0.0),)))).beep_detected  # European tone, below band
    for digit in "0123456789*#":
        assert not run_beep_detector(drain(dtmf_tone(digit, 0.5))).beep_detected


def test_beep_in_noise_and_level_floor() -> None:
    tone_pcm = silence(0.2) + drain(Tone((1000,), ((0.3, 0.0),), level_dbfs=-20)) + silence(0.2)
    assert run_beep_detector(mix(tone_pcm, noise(1.0, -30))).beep_detected  # 10 dB SNR
    assert not run_beep_detector(mix(tone_pcm, noise(1.0, -24))).beep_detected  # 4 dB SNR: too noisy
    assert run_beep_detector(drain(Tone((1000,), ((0.3, 0.0),), level_dbfs=-44))).beep_detected
    assert not run_beep_detector(drain(Tone((1000,), ((0.3, 0.0),), level_dbfs=-48))).beep_detected


def test_beep_band_is_configurable_and_detection_latches() -> None:
    low = drain(beep(0.3, 440))
    assert not run_beep_detector(low).beep_detected
    assert run_beep_detector(low, band_hz=(400.0, 500.0)).beep_detected
    detector = run_beep_detector(drain(beep(0.3)) + silence(0.2) + drain(beep(0.3, 1400)))
    assert detector.beep_frequency == pytest.approx(1000, abs=5)  # the first beep is the one reported
    detector.reset()
    assert not detector.beep_detected and detector.frames_seen == 0
