"""The one audio format inside softswitch, and the two interfaces every media piece speaks.

Audio between media pieces is always 20 ms frames of 8 kHz mono signed 16-bit little-endian PCM (320 bytes).
Codecs (G.711) exist only at the RTP edge; sources (TTS, files, tones) produce frames; sinks (recorder, detectors,
the RTP sender) consume them. Nothing here does I/O.
"""

from __future__ import annotations

from typing import Protocol

SAMPLE_RATE = 8000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000  # 160
FRAME_BYTES = FRAME_SAMPLES * 2  # 320
SILENCE_FRAME = bytes(FRAME_BYTES)


class AudioSource(Protocol):
    """Something that can be played: gives the next 20 ms frame, or None when it has finished."""

    def read_frame(self) -> bytes | None: ...


class AudioSink(Protocol):
    """Something that takes 20 ms frames as they arrive (recorder, silence/beep detector, bridge)."""

    def write_frame(self, pcm: bytes) -> None: ...
