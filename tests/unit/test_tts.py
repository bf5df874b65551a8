"""Speak rendering with the real espeak-ng: audio is speech-like, SSML works, voices differ, the cache and the
process limit hold, and every failure is a TtsError that says what went wrong."""

from __future__ import annotations

import asyncio
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from media.tts import (
    LANGUAGES,
    Tts,
    TtsError,
    espeak_voice,
    is_ssml,
    resolve_language,
    resolve_voice,
    wav_to_samples,
)

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

SPEC_LANGUAGES = [  # Plivo XML spec §4.4
    "da-DK", "nl-NL", "en-AU", "en-GB", "en-US", "fr-FR", "fr-CA", "de-DE",
    "it-IT", "pl-PL", "pt-PT", "pt-BR", "ru-RU", "es-ES", "es-US", "sv-SE",
]  # fmt: skip


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def rms(pcm: bytes) -> float:
    return float(np.sqrt(np.mean(samples(pcm) ** 2)))


def longest_silence_s(pcm: bytes) -> float:
    """Longest run of samples within +-32 of zero (-60 dBFS)."""
    best = run = 0
    for q in np.abs(samples(pcm)) <= 32:
        run = run + 1 if q else 0
        best = max(best, run)
    return best / 8000


def median_f0(pcm: bytes) -> float:
    """Rough pitch: autocorrelation peak (60-400 Hz) of the loud 40 ms windows, median over the utterance."""
    x = samples(pcm)
    estimates = []
    for start in range(0, len(x) - 320, 160):
        w = x[start : start + 320]
        if np.sqrt(np.mean(w**2)) < 1000:
            continue
        w = w - w.mean()
        ac = np.correlate(w, w, mode="full")[319:]
        lo, hi = 8000 // 400, 8000 // 60
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.3 * ac[0]:
            estimates.append(8000 / lag)
    return float(np.median(estimates))


@pytest.fixture
def tts() -> Tts:
    return Tts()


async def test_speech_is_loud_and_about_as_long_as_the_text(tts: Tts) -> None:
    short_text = "Hello there."
    long_text = "Please hold while we connect your call to the next available agent. Thank you for waiting."
    short = await tts.render(short_text)
    long = await tts.render(long_text)
    assert rms(short) > 1000 and rms(long) > 1000  # about -25 dBFS; silence would be 0
    for text, pcm in ((short_text, short), (long_text, long)):
        seconds_per_char = len(pcm) / 16000 / len(text)
        assert 0.04 < seconds_per_char < 0.15, (text, seconds_per_char)
    assert len(long) > 4 * len(short)


async def test_ssml_break_adds_the_requested_silence(tts: Tts) -> None:
    plain = await tts.render("<speak>Hello world</speak>")
    with_break = await tts.render('<speak>Hello <break time="1s"/> world</speak>')
    added = (len(with_break) - len(plain)) / 16000
    assert 0.85 < added < 1.15
    assert 0.8 < longest_silence_s(with_break) < 1.1  # espeak-ng keeps some of the break as a fading word gap
    assert longest_silence_s(plain) < 0.5


async def test_ssml_tags_are_not_read_aloud(tts: Tts) -> None:
    marked_up = await tts.render('<speak><prosody rate="medium">Good morning</prosody></speak>')
    plain = await tts.render("Good morning")
    assert abs(len(marked_up) - len(plain)) / len(plain) < 0.2


async def test_woman_and_man_differ_in_pitch(tts: Tts) -> None:
    text = "Your call is important to us. Please stay on the line."
    woman = await tts.render(text, "WOMAN")
    man = await tts.render(text, "MAN")
    assert woman != man
    f0_woman, f0_man = median_f0(woman), median_f0(man)
    assert f0_woman > 150 > 130 > f0_man, (f0_woman, f0_man)


async def test_cache_hit_does_not_start_a_process(tts: Tts) -> None:
    first = await tts.render("Cached prompt", "MAN", "en-GB")
    assert tts.processes_started == 1
    again = await tts.render("Cached prompt", "MAN", "en-GB")
    assert again is first and tts.processes_started == 1 and tts.cache.hits == 1
    # en-AU is rendered by the same espeak-ng voice as en-GB: same cache entry
    assert await tts.render("Cached prompt", "MAN", "en-AU") is first and tts.processes_started == 1
    await tts.render("Cached prompt", "WOMAN", "en-GB")
    assert tts.processes_started == 2


async def test_concurrent_requests_for_one_prompt_share_a_process(tts: Tts) -> None:
    results = await asyncio.gather(*(tts.render("Shared prompt") for _ in range(8)))
    assert tts.processes_started == 1
    assert all(r == results[0] for r in results)


async def test_a_caller_hanging_up_does_not_cancel_a_shared_render(tts: Tts) -> None:
    hung_up = asyncio.ensure_future(tts.render("Shared by two calls"))
    waiting = asyncio.ensure_future(tts.render("Shared by two calls"))
    await asyncio.sleep(0)
    hung_up.cancel()
    pcm = await waiting
    assert rms(pcm) > 1000 and tts.processes_started == 1
    assert hung_up.cancelled()
    assert await tts.render("Shared by two calls") is pcm  # and it was cached


async def test_parallel_espeak_processes_are_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    tts = Tts(max_parallel=2)
    running = peak = 0
    original = tts._run_espeak

    async def counting(text: str, variant: str, ssml: bool) -> bytes:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await asyncio.sleep(0.02)
            return await original(text, variant, ssml)
        finally:
            running -= 1

    monkeypatch.setattr(tts, "_run_espeak", counting)
    await asyncio.gather(*(tts.render(f"Prompt number {i}") for i in range(6)))
    assert peak == 2 and tts.processes_started == 6


async def test_every_spec_language_renders_with_both_voices(tts: Tts) -> None:
    assert set(LANGUAGES) == set(SPEC_LANGUAGES)
    jobs = [tts.render("One two three", voice, lang) for lang in SPEC_LANGUAGES for voice in ("WOMAN", "MAN")]
    for pcm in await asyncio.gather(*jobs):
        assert rms(pcm) > 500 and 0.4 < len(pcm) / 16000 < 3.0


def test_language_mapping_documents_every_approximation() -> None:
    assert espeak_voice("WOMAN", "en-US") == "en-us+f3"
    assert espeak_voice("MAN", "es-US") == "es-419+m3"
    assert espeak_voice("MAN", "en-au") == "en-gb+m3"  # case-insensitive
    assert espeak_voice("WOMAN", "fr_CA") == "fr-fr+f3"  # underscore accepted
    for code in ("en-AU", "fr-CA", "es-US"):
        assert resolve_language(code).approximation
    assert not resolve_language("de-DE").approximation


def test_polly_voices_map_by_gender() -> None:
    assert resolve_voice("Polly.Matthew") == "m3"
    assert resolve_voice("Polly.Joanna-Neural") == "f3"
    assert resolve_voice("woman") == "f3"


async def test_unknown_language_and_voice_are_named(tts: Tts) -> None:
    with pytest.raises(TtsError, match="'xx-YY'"):
        await tts.render("Hello", language="xx-YY")
    with pytest.raises(TtsError, match="'ROBOT'"):
        await tts.render("Hello", voice="ROBOT")
    assert tts.processes_started == 0


async def test_text_starting_with_dashes_is_spoken_not_parsed(tts: Tts) -> None:
    pcm = await tts.render("--help me please")
    assert rms(pcm) > 1000 and len(pcm) / 16000 > 0.5


async def test_empty_and_oversized_text(tts: Tts) -> None:
    assert await tts.render("   ") == b""
    assert tts.processes_started == 0
    with pytest.raises(TtsError, match="characters"):
        await Tts(max_chars=10).render("This text is too long")


async def test_missing_espeak_raises_tts_error() -> None:
    with pytest.raises(TtsError, match="cannot run /nonexistent/espeak-ng"):
        await Tts(executable="/nonexistent/espeak-ng").render("Hello")


async def test_failing_espeak_reports_its_stderr(tmp_path: Path) -> None:
    fake = tmp_path / "espeak-ng"
    fake.write_text("#!/bin/sh\necho 'Error: voice data missing' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(TtsError, match=r"exit 3\): Error: voice data missing"):
        await Tts(executable=str(fake)).render("Hello")


async def test_hanging_espeak_times_out(tmp_path: Path) -> None:
    fake = tmp_path / "espeak-ng"
    fake.write_text("#!/bin/sh\nexec sleep 5\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(TtsError, match="longer than 0.2 s"):
        await Tts(executable=str(fake), timeout_s=0.2).render("Hello")


def test_ssml_detection() -> None:
    assert is_ssml('<speak>Hi <break time="1s"/></speak>')
    assert is_ssml("Hello <emphasis level='strong'>there</emphasis>")
    assert not is_ssml("if a < b and c > d then")
    assert not is_ssml("plain text")


def test_wav_parsing_ignores_placeholder_sizes() -> None:
    header = b"RIFF" + b"\x24\xf0\xff\x7f" + b"WAVEfmt " + (16).to_bytes(4, "little")
    header += (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (22050).to_bytes(4, "little")
    header += (44100).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    wav = header + b"data" + b"\x00\xf0\xff\x7f" + np.arange(10, dtype="<i2").tobytes()
    x, rate = wav_to_samples(wav)
    assert rate == 22050 and x.shape == (10, 1) and list(x[:, 0]) == list(range(10))
    with pytest.raises(TtsError):
        wav_to_samples(b"not a wav file at all")
