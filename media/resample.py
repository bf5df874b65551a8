"""Conversion of decoded audio at any rate and channel count to the engine's one format (8 kHz mono s16le PCM).

Used by TTS (espeak-ng speaks at 22050 Hz) and by the file fetcher (WAV/MP3 at 8-48 kHz, mono or stereo).
Resampling goes through soxr at HQ quality, which has a proper anti-alias filter; `audioop.ratecv` and
miniaudio's built-in resampler alias (a 5 kHz tone comes back at 3 kHz, see media-notes §2 and §4), so they must
not be used. This module must not do I/O or know about codecs, files or frames: samples in, PCM bytes out.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr  # type: ignore[import-untyped]

from media.frames import SAMPLE_RATE

INT16_MIN = -32768
INT16_MAX = 32767

Samples = npt.NDArray[np.integer] | npt.NDArray[np.floating]


def _mono_float32(samples: Samples) -> npt.NDArray[np.float32]:
    """Average the channels of (n,) or (n, channels) samples into float32 on the int16 scale."""
    x = np.asarray(samples)
    scale = np.float32(32768.0) if np.issubdtype(x.dtype, np.floating) else np.float32(1.0)
    if x.ndim == 2:
        mono = x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0].astype(np.float32)
    elif x.ndim == 1:
        mono = x.astype(np.float32)
    else:
        raise ValueError(f"samples must be shaped (n,) or (n, channels), got {x.shape}")
    return mono * scale if scale != 1.0 else mono


def _to_pcm(mono: npt.NDArray[np.floating]) -> bytes:
    pcm: bytes = np.clip(np.rint(mono), INT16_MIN, INT16_MAX).astype("<i2").tobytes()
    return pcm


def to_8k_mono(samples: Samples, rate: int) -> bytes:
    """Downmix, resample (soxr HQ) and clip `samples` to 8 kHz mono signed 16-bit little-endian PCM.

    `samples` is shaped (n,) for mono or (n, channels) for multi-channel audio. Integer samples are taken on the
    int16 scale (convert 8/24/32-bit PCM first with `to_int16`); float samples on the [-1.0, 1.0] scale. Channels
    are averaged, so a stereo file carrying the same signal on both sides keeps its level.
    """
    if rate <= 0:
        raise ValueError(f"sample rate must be positive, got {rate}")
    mono = _mono_float32(samples)
    if mono.size == 0:
        return b""
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    return _to_pcm(mono)


class StreamResampler:
    """Chunk-by-chunk version of `to_8k_mono`, for long decodes that should not sit in memory at the source rate.

    Feed consecutive chunks with `feed`, then call `finish` once for the filter's tail. The concatenated output
    matches `to_8k_mono` on the whole signal to within the filter's rounding.
    """

    def __init__(self, rate: int) -> None:
        if rate <= 0:
            raise ValueError(f"sample rate must be positive, got {rate}")
        self.rate = rate
        self._stream: soxr.ResampleStream | None = None
        if rate != SAMPLE_RATE:
            self._stream = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")

    def feed(self, samples: Samples) -> bytes:
        mono = _mono_float32(samples)
        if self._stream is None:
            return _to_pcm(mono)
        return _to_pcm(self._stream.resample_chunk(mono, last=False))

    def finish(self) -> bytes:
        if self._stream is None:
            return b""
        return _to_pcm(self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))


def to_int16(raw: bytes, sample_width: int) -> npt.NDArray[np.int16]:
    """Interpret little-endian PCM with `sample_width` bytes per sample (WAV convention: 8-bit is unsigned, wider is
    signed) as int16, keeping the most significant 16 bits. Interleaved channels stay interleaved."""
    if sample_width == 1:
        return ((np.frombuffer(raw, dtype=np.uint8).astype(np.int16) - 128) << 8).astype(np.int16)
    if sample_width == 2:
        usable = len(raw) - len(raw) % 2
        return np.frombuffer(raw[:usable], dtype="<i2").astype(np.int16)
    if sample_width == 3:
        usable = len(raw) - len(raw) % 3
        triplets = np.frombuffer(raw[:usable], dtype=np.uint8).reshape(-1, 3)
        return (triplets[:, 1].astype(np.uint16) | (triplets[:, 2].astype(np.uint16) << 8)).view(np.int16)
    if sample_width == 4:
        usable = len(raw) - len(raw) % 4
        return (np.frombuffer(raw[:usable], dtype="<i4") >> 16).astype(np.int16)
    raise ValueError(f"unsupported sample width {sample_width} bytes")
