"""Things that can be played into a call: frame sources over PCM, silence, tones and sequences of them.

Every source here implements `media.frames.AudioSource`: `read_frame()` returns the next 20 ms frame of 8 kHz mono
s16le PCM (exactly `FRAME_BYTES`) or None once it has finished, and `stop()` makes it finish at the next read (a
player calls it on barge-in, hangup or when a verb is cut short). Sources are pulled by the caller's 20 ms clock;
they must not do I/O, sleep, keep time themselves or know about RTP/G.711. Also here: `PcmCache`, the byte-bounded
LRU that TTS and the file fetcher use for PCM ready to be wrapped in a `PcmSource`.

Levels are RMS dBFS relative to a full-scale square wave (a full-scale sine is -3 dBFS), the same scale
`media.detect` measures in.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from collections.abc import Sequence as SequenceOf

import numpy as np

from media.frames import FRAME_BYTES, FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE, SILENCE_FRAME

FRAMES_PER_SECOND = 1000 // FRAME_MS  # 50
BYTES_PER_SECOND = SAMPLE_RATE * 2

# Tone levels. US call-progress tones are -19 dBm0 per frequency (ANSI T1.401); on the G.711 scale 0 dBm0 is a sine
# 3.17 dB below full scale, i.e. -6.2 dBFS RMS, so -19 dBm0 is about -25 dBFS RMS.
RINGBACK_LEVEL_DBFS = -25.0
BEEP_LEVEL_DBFS = -13.0
DTMF_LEVEL_DBFS = -16.0  # about -10 dBm0 per frequency, inside the Q.23/Q.24 acceptance range
EDGE_RAMP_S = 0.0025  # raised-cosine ramp on each tone burst edge so bursts do not click

DTMF_FREQUENCIES: dict[str, tuple[int, int]] = {
    "1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "A": (697, 1633),
    "4": (770, 1209), "5": (770, 1336), "6": (770, 1477), "B": (770, 1633),
    "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "C": (852, 1633),
    "*": (941, 1209), "0": (941, 1336), "#": (941, 1477), "D": (941, 1633),
}  # fmt: skip


def pcm_duration(pcm: bytes) -> float:
    """Duration in seconds of 8 kHz mono s16le PCM."""
    return len(pcm) / BYTES_PER_SECOND


def frame_count(duration_s: float) -> int:
    """Number of whole 20 ms frames in `duration_s`, rounded to the nearest frame (halves round up: 0.25 s is 13)."""
    return max(0, math.floor(duration_s * FRAMES_PER_SECOND + 0.5))


class FrameSource(ABC):
    """Base for the sources here: handles `stop()` and counts the frames handed out."""

    def __init__(self) -> None:
        self._stopped = False
        self.frames_played = 0

    def stop(self) -> None:
        """Finish at the next `read_frame` (idempotent)."""
        self._stopped = True

    @property
    def stopped(self) -> bool:
        return self._stopped

    def read_frame(self) -> bytes | None:
        if self._stopped:
            return None
        frame = self._next_frame()
        if frame is None:
            self._stopped = True
        else:
            self.frames_played += 1
        return frame

    @abstractmethod
    def _next_frame(self) -> bytes | None: ...


class PcmSource(FrameSource):
    """Plays PCM `loop` times (0 = forever, until `stop()`). The last partial frame is padded with silence, on every
    pass, so each pass starts on a frame boundary. Empty PCM finishes at once, even with loop=0."""

    def __init__(self, pcm: bytes, loop: int = 1) -> None:
        super().__init__()
        if loop < 0:
            raise ValueError(f"loop must be >= 0, got {loop}")
        if len(pcm) % 2:
            raise ValueError(f"PCM must be whole 16-bit samples, got {len(pcm)} bytes")
        remainder = len(pcm) % FRAME_BYTES
        self._pcm = pcm + bytes(FRAME_BYTES - remainder) if remainder else pcm
        self.loop = loop
        self.passes_done = 0
        self._offset = 0

    @property
    def frames_per_pass(self) -> int:
        return len(self._pcm) // FRAME_BYTES

    def _next_frame(self) -> bytes | None:
        if not self._pcm:
            return None
        if self._offset >= len(self._pcm):
            self.passes_done += 1
            if self.loop and self.passes_done >= self.loop:
                return None
            self._offset = 0
        frame = self._pcm[self._offset : self._offset + FRAME_BYTES]
        self._offset += FRAME_BYTES
        return frame


class Silence(FrameSource):
    """`duration_s` of silence (rounded to the nearest 20 ms frame), or endless silence when None."""

    def __init__(self, duration_s: float | None) -> None:
        super().__init__()
        if duration_s is not None and duration_s < 0:
            raise ValueError(f"duration must be >= 0, got {duration_s}")
        self._frames_left = None if duration_s is None else frame_count(duration_s)

    def _next_frame(self) -> bytes | None:
        if self._frames_left is None:
            return SILENCE_FRAME
        if self._frames_left <= 0:
            return None
        self._frames_left -= 1
        return SILENCE_FRAME


@functools.lru_cache(maxsize=64)
def _cadence_pcm(
    frequencies: tuple[float, ...], cadence: tuple[tuple[float, float], ...], level_dbfs: float, ramp_edges: bool
) -> bytes:
    """One pass over the cadence as PCM: each (on, off) step is a tone burst, frame-rounded, then silence.

    Each burst starts at phase 0 and, with `ramp_edges`, fades in and out over `EDGE_RAMP_S`. A continuous tone
    (repeating, off=0, no ramps) whose frequencies are whole Hz and whose on-time is a whole number of seconds loops
    without a phase jump.
    """
    amplitude = 32768.0 * math.sqrt(2.0) * 10.0 ** (level_dbfs / 20.0)
    ramp_len = int(EDGE_RAMP_S * SAMPLE_RATE)
    parts: list[bytes] = []
    for on_s, off_s in cadence:
        n_on = frame_count(on_s) * FRAME_SAMPLES
        t = np.arange(n_on) / SAMPLE_RATE
        burst = sum((np.sin(2.0 * np.pi * f * t) for f in frequencies), start=np.zeros(n_on)) * amplitude
        if ramp_edges and n_on > 2 * ramp_len:
            ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp_len) / ramp_len)
            burst[:ramp_len] *= ramp
            burst[n_on - ramp_len :] *= ramp[::-1]
        parts.append(np.clip(np.rint(burst), -32768, 32767).astype("<i2").tobytes())
        parts.append(bytes(frame_count(off_s) * FRAME_BYTES))
    return b"".join(parts)


class Tone(FrameSource):
    """A call-progress style tone: the sum of `frequencies` (each at `level_dbfs` RMS) played on a cadence of
    (on_s, off_s) steps, once or repeating until `stop()`. Times are rounded to whole 20 ms frames."""

    def __init__(
        self,
        frequencies: SequenceOf[float],
        cadence: SequenceOf[tuple[float, float]],
        *,
        repeat: bool = False,
        level_dbfs: float = BEEP_LEVEL_DBFS,
    ) -> None:
        super().__init__()
        if not frequencies or any(not 0 < f < SAMPLE_RATE / 2 for f in frequencies):
            raise ValueError(f"tone frequencies must be within (0, {SAMPLE_RATE // 2}) Hz, got {list(frequencies)}")
        if not cadence or any(on < 0 or off < 0 for on, off in cadence):
            raise ValueError(f"cadence must be non-empty (on_s, off_s) steps >= 0, got {list(cadence)}")
        self.frequencies = tuple(float(f) for f in frequencies)
        self.cadence = tuple((float(on), float(off)) for on, off in cadence)
        self.repeat = repeat
        continuous = repeat and all(off == 0 for _, off in self.cadence)
        self._pass = _cadence_pcm(self.frequencies, self.cadence, float(level_dbfs), not continuous)
        self._offset = 0

    def _next_frame(self) -> bytes | None:
        if self._offset >= len(self._pass):
            if not self.repeat or not self._pass:
                return None
            self._offset = 0
        frame = self._pass[self._offset : self._offset + FRAME_BYTES]
        self._offset += FRAME_BYTES
        return frame


def ringback_us() -> Tone:
    """North American audible ringing: 440 + 480 Hz, 2 s on / 4 s off, repeating until stopped."""
    return Tone((440, 480), ((2.0, 4.0),), repeat=True, level_dbfs=RINGBACK_LEVEL_DBFS)


def beep(duration_s: float = 0.25, freq: float = 1000) -> Tone:
    """A single beep (GetDigits playBeep, Record playBeep)."""
    return Tone((freq,), ((duration_s, 0.0),), level_dbfs=BEEP_LEVEL_DBFS)


def dtmf_tone(digit: str, duration_s: float = 0.1, gap_s: float = 0.1) -> Tone:
    """The in-band DTMF pair for `digit` (0-9, *, #, A-D) for `duration_s`, followed by `gap_s` of silence."""
    pair = DTMF_FREQUENCIES.get(digit.upper())
    if pair is None:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return Tone(pair, ((duration_s, gap_s),), level_dbfs=DTMF_LEVEL_DBFS)


class Sequence(FrameSource):
    """Plays `sources` one after another with no gap frame between them; `stop()` stops the current one and the
    rest."""

    def __init__(self, sources: Iterable[FrameSource]) -> None:
        super().__init__()
        self.sources = list(sources)
        self.index = 0

    @property
    def current(self) -> FrameSource | None:
        return self.sources[self.index] if self.index < len(self.sources) else None

    def stop(self) -> None:
        super().stop()
        for source in self.sources:
            source.stop()

    def _next_frame(self) -> bytes | None:
        while self.index < len(self.sources):
            frame = self.sources[self.index].read_frame()
            if frame is not None:
                return frame
            self.index += 1
        return None


class PcmCache:
    """In-memory LRU of PCM keyed by anything hashable, bounded by the total bytes it holds.

    An entry larger than the whole bound is not kept. Not thread-safe: use it from the event loop only.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.size_bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Hashable, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def get(self, key: Hashable) -> bytes | None:
        pcm = self._entries.get(key)
        if pcm is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return pcm

    def put(self, key: Hashable, pcm: bytes) -> None:
        self.discard(key)
        if len(pcm) > self.max_bytes:
            return
        self._entries[key] = pcm
        self.size_bytes += len(pcm)
        while self.size_bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.size_bytes -= len(evicted)

    def discard(self, key: Hashable) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self.size_bytes -= len(old)

    def clear(self) -> None:
        self._entries.clear()
        self.size_bytes = 0
