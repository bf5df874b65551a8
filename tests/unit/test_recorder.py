"""Recording to WAV and MP3: exact durations, channel placement, A/B alignment in both clock modes, and MP3 files
that decode back (miniaudio) to the recorded length thanks to the LAME gapless tag."""

from __future__ import annotations

import wave
from pathlib import Path

import miniaudio
import numpy as np
import pytest

from media.frames import FRAME_BYTES, SILENCE_FRAME
from media.recorder import Recorder, RecordingInfo

A_HZ, B_HZ = 440, 1000


def tone(freq: float, seconds: float, amplitude: float = 8000) -> bytes:
    t = np.arange(int(8000 * seconds)) / 8000
    return (np.sin(2 * np.pi * freq * t) * amplitude).astype("<i2").tobytes()


def frames_of(pcm: bytes) -> list[bytes]:
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]


def read_wav(path: Path) -> tuple[np.ndarray, int, int]:
    with wave.open(str(path), "rb") as wav:
        channels, rate = wav.getnchannels(), wav.getframerate()
        assert wav.getsampwidth() == 2
        x = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, channels)
    return x.astype(np.float64), rate, channels


def read_mp3(path: Path) -> tuple[np.ndarray, int, int]:
    decoded = miniaudio.mp3_read_s16(path.read_bytes())
    x = np.asarray(decoded.samples, dtype=np.int16).reshape(-1, decoded.nchannels)
    return x.astype(np.float64), decoded.sample_rate, decoded.nchannels


def dominant_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / 8000)[int(np.argmax(spectrum))])


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)))


def record_call(recorder: Recorder, a_seconds: float = 3.0, b_seconds: float = 2.0) -> RecordingInfo:
    """A talks for `a_seconds` (440 Hz); B for the first `b_seconds` (1 kHz); frames arrive interleaved."""
    a_frames, b_frames = frames_of(tone(A_HZ, a_seconds)), frames_of(tone(B_HZ, b_seconds))
    for i, frame in enumerate(a_frames):
        recorder.write_a(frame)
        if i < len(b_frames):
            recorder.write_b(b_frames[i])
    return recorder.close()


# -- WAV ---------------------------------------------------------------------------------------------------------------
def test_wav_stereo_puts_a_left_and_b_right(tmp_path: Path) -> None:
    info = record_call(Recorder(tmp_path / "call.wav", "wav", 2))
    x, rate, channels = read_wav(info.path)
    assert (rate, channels) == (8000, 2)
    assert info.duration_s == 3.0 and len(x) == 24_000
    assert info.bytes == info.path.stat().st_size == 44 + 24_000 * 4
    left, right = x[:, 0], x[:, 1]
    assert left.tobytes() == np.frombuffer(tone(A_HZ, 3.0), "<i2").astype(np.float64).tobytes()  # A untouched
    assert dominant_hz(right[:16_000]) == pytest.approx(B_HZ, abs=1)
    assert not right[16_000:].any()  # B stopped after 2 s: silence, not A


def test_wav_mono_mixes_a_and_b(tmp_path: Path) -> None:
    info = record_call(Recorder(tmp_path / "call.wav"))
    x, _, channels = read_wav(info.path)
    assert channels == 1 and info.channels == 1 and info.format == "wav"
    a = np.frombuffer(tone(A_HZ, 3.0), "<i2").astype(np.float64)
    b = np.frombuffer(tone(B_HZ, 2.0), "<i2").astype(np.float64)
    expected = a.copy()
    expected[: len(b)] += b
    assert np.array_equal(x[:, 0], np.clip(expected, -32768, 32767))


def test_single_track_recording_as_an_audio_sink(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "a.wav")
    for frame in frames_of(tone(A_HZ, 1.23)):
        recorder.write_frame(frame)
    info = recorder.close()
    assert info.duration_s == pytest.approx(1.24)  # 1.23 s is 61.5 frames: the partial frame is padded
    x, _, _ = read_wav(info.path)
    assert len(x) == 9920


def test_any_chunk_size_is_cut_into_frames(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "chunks.wav", channels=2)
    a, b = tone(A_HZ, 1.0), tone(B_HZ, 1.0)
    b_offset = 0
    for offset in range(0, len(a), 480):  # 30 ms packets on A
        recorder.sink_a.write_frame(a[offset : offset + 480])
        while b_offset < offset + 480:  # odd-sized chunks on B, keeping up with A
            recorder.sink_b.write_frame(b[b_offset : b_offset + 100])
            b_offset += 100
    info = recorder.close()
    x, _, _ = read_wav(info.path)
    assert info.duration_s == 1.0
    assert x[:, 0].astype("<i2").tobytes() == a and x[:, 1].astype("<i2").tobytes() == b


def test_self_clocked_tracks_stay_aligned_when_one_side_pauses(tmp_path: Path) -> None:
    # B (silence suppression) sends nothing for 1 s in the middle; A keeps talking. B must resume at 2 s, not 1 s.
    recorder = Recorder(tmp_path / "gap.wav", channels=2, max_skew_s=0.1)
    a_frames = frames_of(tone(A_HZ, 3.0))
    b_frames = frames_of(tone(B_HZ, 3.0))
    for i, frame in enumerate(a_frames):
        recorder.write_a(frame)
        if not 50 <= i < 100:
            recorder.write_b(b_frames[i])
    x, _, _ = read_wav(recorder.close().path)
    right = x[:, 1]
    active = [bool(right[i * 160 : (i + 1) * 160].any()) for i in range(150)]
    gap = [i for i, on in enumerate(active) if not on]
    # B's gap is 50 frames; the skew bound lets B's return be written up to 5 frames early
    assert len(gap) == 50 and 45 <= gap[0] <= 50
    assert len(x) == 150 * 160


def test_clocked_mode_fills_missing_frames_with_silence(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "clocked.wav", channels=2)
    a_frames = frames_of(tone(A_HZ, 1.0))
    for tick in range(100):  # 2 s of media clock, A only talks for the first second, B never
        if tick < 50:
            recorder.write_a(a_frames[tick])
        recorder.tick()
    info = recorder.close()
    x, _, _ = read_wav(info.path)
    assert info.duration_s == 2.0 and len(x) == 16_000
    assert x[:8000, 0].astype("<i2").tobytes() == tone(A_HZ, 1.0)
    assert not x[8000:].any() and not x[:, 1].any()


def test_clocked_mode_bounds_a_fast_sender(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "fast.wav", max_skew_s=0.1)
    recorder.tick()
    for _ in range(20):  # a burst of 20 frames between two ticks: only the newest 5 are kept
        recorder.write_a(SILENCE_FRAME)
    for _ in range(10):
        recorder.tick()
    assert recorder.close().duration_s == pytest.approx(0.22)


# -- MP3 ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [1, 2])
def test_mp3_decodes_back_to_the_recorded_duration(tmp_path: Path, channels: int) -> None:
    info = record_call(Recorder(tmp_path / "call.mp3", "mp3", channels))
    assert info.format == "mp3" and info.duration_s == 3.0 and info.bytes == info.path.stat().st_size
    kbps = 32 if channels == 1 else 64
    assert info.bytes == pytest.approx(3.0 * kbps * 1000 / 8, rel=0.15)
    x, rate, decoded_channels = read_mp3(info.path)
    assert (rate, decoded_channels) == (8000, channels)
    assert abs(len(x) / 8000 - info.duration_s) <= 0.060  # in fact exact: the LAME tag carries delay and padding
    if channels == 2:
        left, right = x[:, 0], x[:, 1]
        assert dominant_hz(left) == pytest.approx(A_HZ, abs=5)
        assert dominant_hz(right[:16_000]) == pytest.approx(B_HZ, abs=5)
        assert rms(right[17_000:]) < rms(left[17_000:]) / 300  # B silent after 2 s: > 50 dB below A
    else:
        assert rms(x[:, 0]) > 4000


def test_mp3_keeps_time_alignment(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "click.mp3", "mp3")
    pcm = bytes(16_000) + tone(B_HZ, 0.5, amplitude=16_000) + bytes(16_000)  # tone from 1.0 s to 1.5 s
    for frame in frames_of(pcm):
        recorder.write_a(frame)
    x, _, _ = read_mp3(recorder.close().path)
    envelope = np.abs(x[:, 0]) > 4000
    assert np.argmax(envelope) / 8000 == pytest.approx(1.0, abs=0.01)
    assert len(x) == len(pcm) // 2


def test_empty_recordings(tmp_path: Path) -> None:
    assert Recorder(tmp_path / "empty.wav").close().duration_s == 0.0
    info = Recorder(tmp_path / "empty.mp3", "mp3").close()
    assert info.duration_s == 0.0 and info.path.exists()


# -- misuse ------------------------------------------------------------------------------------------------------------
def test_invalid_options_and_closed_recorder(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Recorder(tmp_path / "x.ogg", "ogg")
    with pytest.raises(ValueError):
        Recorder(tmp_path / "x.wav", channels=3)
    with pytest.raises(ValueError):
        Recorder(tmp_path / "x.mp3", "mp3", bitrate_kbps=33)
    with pytest.raises(OSError):
        Recorder(tmp_path / "no-such-dir" / "x.wav")
    recorder = Recorder(tmp_path / "x.wav")
    recorder.close()
    with pytest.raises(ValueError):
        recorder.write_a(SILENCE_FRAME)
    with pytest.raises(ValueError):
        recorder.close()


def test_wav_header_is_valid_while_recording(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "live.wav")
    for frame in frames_of(tone(A_HZ, 2.5)):
        recorder.write_a(frame)
    x, _, _ = read_wav(recorder.path)  # not closed yet: the header was refreshed at the last 1 s flush
    assert len(x) in (8000, 16_000)
    assert recorder.close().duration_s == 2.5
