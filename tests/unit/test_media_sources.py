"""Frame sources (PCM, silence, tones, sequences), the PCM cache and the 8 kHz resampler, on generated signals."""

from __future__ import annotations

import numpy as np
import pytest

from media.frames import FRAME_BYTES, SILENCE_FRAME, AudioSource
from media.resample import StreamResampler, to_8k_mono, to_int16
from media.sources import (
    FrameSource,
    PcmCache,
    PcmSource,
    Sequence,
    Silence,
    Tone,
    beep,
    dtmf_tone,
    frame_count,
    pcm_duration,
    ringback_us,
)


# -- helpers -----------------------------------------------------------------------------------------------------------
def drain(source: AudioSource, limit: int = 10_000) -> list[bytes]:
    frames = []
    while len(frames) < limit and (frame := source.read_frame()) is not None:
        frames.append(frame)
    return frames


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def rms_dbfs(pcm: bytes) -> float:
    x = samples(pcm)
    return 20 * np.log10(np.sqrt(np.mean(x**2)) / 32768)


def peak_frequencies(pcm: bytes, rate: int = 8000, count: int = 1) -> list[float]:
    x = samples(pcm)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    peaks = [i for i in range(1, len(spectrum) - 1) if spectrum[i - 1] < spectrum[i] >= spectrum[i + 1]]
    peaks.sort(key=lambda i: spectrum[i], reverse=True)
    return sorted(float(freqs[i]) for i in peaks[:count])


def sine(freq: float, seconds: float, rate: int, amplitude: float = 10_000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * freq * t) * amplitude).astype(np.int16)


# -- PcmSource ---------------------------------------------------------------------------------------------------------
def test_pcm_source_pads_last_partial_frame_with_silence() -> None:
    pcm = bytes(range(256)) * 3  # 768 bytes = 2 frames + 128 bytes
    frames = drain(PcmSource(pcm))
    assert [len(f) for f in frames] == [FRAME_BYTES] * 3
    assert b"".join(frames)[: len(pcm)] == pcm
    assert frames[-1][128:] == bytes(FRAME_BYTES - 128)


def test_pcm_source_loops_exactly() -> None:
    pcm = b"\x01\x00" * 400  # 2.5 frames
    source = PcmSource(pcm, loop=3)
    frames = drain(source)
    assert len(frames) == 9
    assert frames[0:3] == frames[3:6] == frames[6:9]
    assert source.passes_done == 3 and source.frames_played == 9
    assert source.read_frame() is None


def test_pcm_source_loop_zero_plays_until_stopped() -> None:
    source = PcmSource(b"\x01\x00" * 160, loop=0)
    assert len(drain(source, limit=5000)) == 5000
    source.stop()
    assert source.read_frame() is None and source.stopped


def test_pcm_source_stop_mid_play_and_edge_cases() -> None:
    source = PcmSource(bytes(FRAME_BYTES * 10))
    assert source.read_frame() is not None
    source.stop()
    assert source.read_frame() is None
    assert PcmSource(b"", loop=0).read_frame() is None  # empty never spins, even forever
    with pytest.raises(ValueError):
        PcmSource(b"\x00" * 3)
    with pytest.raises(ValueError):
        PcmSource(b"", loop=-1)


def test_pcm_duration_and_frame_count() -> None:
    assert pcm_duration(bytes(16000)) == 1.0
    assert pcm_duration(bytes(FRAME_BYTES)) == 0.02
    assert frame_count(0.25) == 13 and frame_count(0.1) == 5 and frame_count(2.0) == 100 and frame_count(0.009) == 0


# -- Silence -----------------------------------------------------------------------------------------------------------
def test_silence_of_a_duration_and_forever() -> None:
    frames = drain(Silence(1.0))
    assert len(frames) == 50 and all(f == SILENCE_FRAME for f in frames)
    assert drain(Silence(0)) == []
    forever = Silence(None)
    assert len(drain(forever, limit=3000)) == 3000
    forever.stop()
    assert forever.read_frame() is None


# -- Tones -------------------------------------------------------------------------------------------------------------
def test_ringback_cadence_is_exactly_2s_on_4s_off() -> None:
    frames = drain(ringback_us(), limit=900)  # 18 s: three full cycles
    assert len(frames) == 900
    loud = [rms_dbfs(f) > -40 if any(f) else False for f in frames]
    for cycle in range(3):
        start = cycle * 300
        assert all(loud[start : start + 100]), f"cycle {cycle} on-part"
        assert not any(loud[start + 100 : start + 300]), f"cycle {cycle} off-part"
        assert all(f == SILENCE_FRAME for f in frames[start + 100 : start + 300])


def test_ringback_frequencies_and_level() -> None:
    on = b"".join(drain(ringback_us(), limit=100))
    assert peak_frequencies(on, count=2) == pytest.approx([440, 480], abs=2)
    # two tones at -25 dBFS each add up to -22 dBFS (the edge ramps take a little off)
    assert rms_dbfs(on) == pytest.approx(-22.0, abs=0.3)


def test_beep_frequency_duration_and_custom_frequency() -> None:
    frames = drain(beep())
    assert len(frames) == 13  # 0.25 s rounds to 13 frames
    assert peak_frequencies(b"".join(frames)) == pytest.approx([1000], abs=2)
    assert peak_frequencies(b"".join(drain(beep(0.5, 425)))) == pytest.approx([425], abs=2)
    assert len(drain(beep(0.5, 425))) == 25


def test_beep_has_no_click_at_its_edges() -> None:
    pcm = samples(b"".join(drain(beep())))
    assert np.max(np.abs(pcm[:5])) < 1500 and np.max(np.abs(pcm[-5:])) < 1500
    assert np.max(np.abs(pcm[100:200])) > 7000


def test_continuous_tone_loops_without_a_phase_jump() -> None:
    frames = drain(Tone((1000, 1300), ((1.0, 0.0),), repeat=True), limit=100)
    x = samples(b"".join(frames))
    n = np.arange(16000)
    amplitude = 32768 * np.sqrt(2) * 10 ** (-13 / 20)
    expected = amplitude * (np.sin(2 * np.pi * 1000 * n / 8000) + np.sin(2 * np.pi * 1300 * n / 8000))
    assert np.max(np.abs(x - np.clip(expected, -32768, 32767))) <= 1  # one unbroken waveform across the loop point


@pytest.mark.parametrize(("digit", "pair"), [("1", (697, 1209)), ("5", (770, 1336)), ("#", (941, 1477))])
def test_dtmf_tone_pairs(digit: str, pair: tuple[int, int]) -> None:
    frames = drain(dtmf_tone(digit, duration_s=0.1, gap_s=0.06))
    assert len(frames) == 8
    assert peak_frequencies(b"".join(frames[:5]), count=2) == pytest.approx(list(pair), abs=5)
    assert all(f == SILENCE_FRAME for f in frames[5:])


def test_tone_validation() -> None:
    with pytest.raises(ValueError):
        dtmf_tone("x")
    with pytest.raises(ValueError):
        Tone((5000,), ((1, 0),))
    with pytest.raises(ValueError):
        Tone((1000,), ())


def test_tone_with_multi_step_cadence_repeats() -> None:
    uk_ring = Tone((400, 450), ((0.4, 0.2), (0.4, 2.0)), repeat=True)
    frames = drain(uk_ring, limit=300)
    pattern = [any(f) for f in frames[:150]]
    assert pattern == [True] * 20 + [False] * 10 + [True] * 20 + [False] * 100
    assert [any(f) for f in frames[150:300]] == pattern


# -- Sequence ----------------------------------------------------------------------------------------------------------
def test_sequence_plays_one_after_another_without_gaps() -> None:
    a, b = bytes([1]) * FRAME_BYTES, bytes([2]) * FRAME_BYTES
    seq = Sequence([PcmSource(a * 2), Silence(0.04), PcmSource(b, loop=2), PcmSource(b"")])
    frames = drain(seq)
    assert frames == [a, a, SILENCE_FRAME, SILENCE_FRAME, b, b]
    assert seq.read_frame() is None


def test_sequence_stop_stops_current_and_rest() -> None:
    children: list[FrameSource] = [Silence(None), beep()]
    seq = Sequence(children)
    assert seq.read_frame() == SILENCE_FRAME
    seq.stop()
    assert seq.read_frame() is None
    assert all(child.stopped for child in children)


def test_sources_satisfy_the_audio_source_protocol() -> None:
    sources: list[AudioSource] = [PcmSource(b""), Silence(0), beep(), ringback_us(), Sequence([])]
    assert all(callable(s.read_frame) for s in sources)


# -- PcmCache ----------------------------------------------------------------------------------------------------------
def test_pcm_cache_evicts_least_recently_used_by_bytes() -> None:
    cache = PcmCache(max_bytes=1000)
    cache.put("a", bytes(400))
    cache.put("b", bytes(400))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", bytes(400))  # over the bound: b goes
    assert "b" not in cache and "a" in cache and "c" in cache
    assert cache.size_bytes == 800 and len(cache) == 2
    cache.put("huge", bytes(1001))  # larger than the bound: not kept, nothing evicted
    assert "huge" not in cache and len(cache) == 2
    cache.put("a", bytes(100))  # replacing updates the size
    assert cache.size_bytes == 500
    assert (cache.hits, cache.misses) == (1, 0)
    assert cache.get("zzz") is None and cache.misses == 1


# -- resampling --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (16000, 1), (22050, 1), (44100, 2), (48000, 2)])
def test_to_8k_mono_keeps_duration_frequency_and_level(rate: int, channels: int) -> None:
    tone = sine(1000, 1.0, rate)
    x = np.column_stack([tone] * channels) if channels > 1 else tone
    pcm = to_8k_mono(x, rate)
    assert len(pcm) == 16000
    assert peak_frequencies(pcm) == pytest.approx([1000], abs=1)
    assert rms_dbfs(pcm) == pytest.approx(20 * np.log10(10_000 / np.sqrt(2) / 32768), abs=0.1)


def test_to_8k_mono_filters_instead_of_aliasing() -> None:
    # 5 kHz is above the 4 kHz Nyquist frequency: a linear-interpolating resampler would fold it to 3 kHz at -1.5 dB
    pcm = to_8k_mono(sine(5000, 1.0, 22050), 22050)
    assert rms_dbfs(pcm[1600:-1600]) < rms_dbfs(sine(5000, 1.0, 22050).tobytes()) - 60


def test_to_8k_mono_floats_downmix_and_clipping() -> None:
    stereo = np.column_stack([sine(1000, 0.5, 8000), np.zeros(4000, dtype=np.int16)])
    assert rms_dbfs(to_8k_mono(stereo, 8000)) == pytest.approx(
        rms_dbfs(sine(1000, 0.5, 8000).tobytes()) - 6.02, abs=0.05
    )
    floats = np.full(100, 2.0)  # beyond full scale: clipped, not wrapped
    assert set(samples(to_8k_mono(floats, 8000))) == {32767}
    assert to_8k_mono(np.zeros(0, dtype=np.int16), 44100) == b""
    with pytest.raises(ValueError):
        to_8k_mono(np.zeros((2, 2, 2)), 8000)


def test_stream_resampler_matches_whole_signal() -> None:
    x = sine(1000, 2.0, 44100)
    stream = StreamResampler(44100)
    chunked = b"".join(stream.feed(x[i : i + 882]) for i in range(0, len(x), 882)) + stream.finish()
    whole = to_8k_mono(x, 44100)
    assert len(chunked) == len(whole) == 32000
    assert np.max(np.abs(samples(chunked) - samples(whole))) <= 2


def test_to_int16_sample_widths() -> None:
    assert list(to_int16(bytes([0, 128, 255]), 1)) == [-32768, 0, 32512]
    assert list(to_int16(bytes([0xFF, 0x34, 0x12]), 3)) == [0x1234]
    assert list(to_int16(np.array([-0x12345678], dtype="<i4").tobytes(), 4)) == [-0x1235]
    with pytest.raises(ValueError):
        to_int16(b"", 5)
