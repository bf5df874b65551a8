"""Writes a call's audio to a WAV or MP3 file for `<Record>` (and recordSession / startOnDialAnswer).

A `Recorder` takes two tracks of 8 kHz mono s16le PCM: A (`write_a`, e.g. what the caller says) and B (`write_b`,
e.g. the other leg or what the engine plays). Stereo puts A on the left and B on the right; mono mixes A+B. The
tracks are kept time-aligned frame by frame in one of two ways:

- clocked: the media clock calls `tick()` every 20 ms; each tick writes one frame per track, silence for a track
  that has nothing queued (silence suppression, a leg on hold, no B leg at all). Duration = ticks x 20 ms.
- self-clocked (no `tick()` ever called): frames are paired as they arrive; when one track runs more than
  `max_skew_s` ahead of the other, the other is filled with silence, so skew stays within `max_skew_s`.

WAV is stdlib `wave` (8 kHz, 16-bit), the header is refreshed every second so a crash leaves a readable file. MP3 is
lameenc CBR (MPEG-2.5 layer III at 8 kHz; 32 kbit/s mono, 64 kbit/s stereo by default) with a LAME "Info" tag in
the first frame carrying the encoder delay and padding, so decoders (miniaudio, ffmpeg, browsers) return exactly the
recorded samples instead of 138 ms of encoder delay plus up to 72 ms of padding.

It must not decide when recording starts or stops (silence timeout, maxLength, finishOnKey are the verb's job), or
upload anything; `close()` returns a `RecordingInfo` and the caller reports it.
"""

from __future__ import annotations

import struct
import wave
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import lameenc  # type: ignore[import-not-found]
import numpy as np

from media.frames import FRAME_BYTES, FRAME_MS, SAMPLE_RATE, SILENCE_FRAME

FRAME_S = FRAME_MS / 1000
FORMATS = ("wav", "mp3")
FLUSH_FRAMES = 50  # write to disk once a second
DEFAULT_MAX_SKEW_S = 0.1
DEFAULT_MP3_KBPS = {1: 32, 2: 64}
MP3_KBPS_ALLOWED = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)  # MPEG-2/2.5 layer III
MP3_QUALITY = 5  # lameenc 2 (best) .. 7 (fastest); 5 encodes 10 s of 8 kHz stereo in about 9 ms
MP3_SAMPLES_PER_FRAME = 576  # MPEG-2/2.5 layer III
LAME_ENCODER_DELAY = 576  # LAME 3.100 (bundled by lameenc); decoders add their own 529
LAME_VERSION = b"LAME3.100"


@dataclass(frozen=True)
class RecordingInfo:
    """What was written: the file, its exact audio duration (a whole number of 20 ms frames), format, channels and
    size on disk in bytes."""

    path: Path
    duration_s: float
    format: str
    channels: int
    bytes: int


class _TrackSink:
    """An `AudioSink` view of one track of a Recorder, to hang on a media path's list of sinks."""

    def __init__(self, recorder: Recorder, track: str) -> None:
        self._recorder = recorder
        self._track = track

    def write_frame(self, pcm: bytes) -> None:
        if self._track == "a":
            self._recorder.write_a(pcm)
        else:
            self._recorder.write_b(pcm)


class Recorder:
    """Records tracks A and B to `path` as WAV or MP3, mono (A+B mixed) or stereo (A left, B right); see the module
    docstring. Opening the file happens here, so a bad path fails at once with OSError."""

    def __init__(
        self,
        path: str | Path,
        format: str = "wav",
        channels: int = 1,
        *,
        bitrate_kbps: int | None = None,
        max_skew_s: float = DEFAULT_MAX_SKEW_S,
    ) -> None:
        if format not in FORMATS:
            raise ValueError(f"recording format must be one of {FORMATS}, got {format!r}")
        if channels not in (1, 2):
            raise ValueError(f"recording channels must be 1 or 2, got {channels}")
        self.path = Path(path)
        self.format = format
        self.channels = channels
        self.max_skew_frames = max(1, round(max_skew_s / FRAME_S))
        self.frames_written = 0
        self.closed = False
        self.sink_a = _TrackSink(self, "a")
        self.sink_b = _TrackSink(self, "b")
        self._clocked = False
        self._queues: dict[str, deque[bytes]] = {"a": deque(), "b": deque()}
        self._partial: dict[str, bytes] = {"a": b"", "b": b""}
        self._pending: list[bytes] = []
        self._writer: _WavWriter | _Mp3Writer
        if format == "wav":
            self._writer = _WavWriter(self.path, channels)
        else:
            kbps = bitrate_kbps or DEFAULT_MP3_KBPS[channels]
            if kbps not in MP3_KBPS_ALLOWED:
                raise ValueError(f"MP3 bitrate at 8 kHz must be one of {MP3_KBPS_ALLOWED} kbit/s, got {kbps}")
            self._writer = _Mp3Writer(self.path, channels, kbps)

    @property
    def duration_s(self) -> float:
        """Audio written so far (frames still queued for alignment are not counted yet)."""
        return (self.frames_written + len(self._pending)) * FRAME_S

    def write_a(self, pcm: bytes) -> None:
        """Track A audio: any length of PCM, cut into 20 ms frames (a partial frame waits for the rest)."""
        self._enqueue("a", pcm)

    def write_b(self, pcm: bytes) -> None:
        """Track B audio: any length of PCM, cut into 20 ms frames (a partial frame waits for the rest)."""
        self._enqueue("b", pcm)

    def write_frame(self, pcm: bytes) -> None:
        """`AudioSink` for single-track recording: same as `write_a`."""
        self.write_a(pcm)

    def tick(self) -> None:
        """One 20 ms step of the media clock: write one frame per track, silence where a track has none queued.
        From the first call on, the recorder is clocked and frames only ever leave the queues here."""
        self._check_open()
        self._clocked = True
        a, b = self._queues["a"], self._queues["b"]
        self._emit(a.popleft() if a else SILENCE_FRAME, b.popleft() if b else SILENCE_FRAME)

    def close(self) -> RecordingInfo:
        """Flush what is queued (a partial frame is padded with silence), finish the file and describe it.
        A second call raises ValueError."""
        self._check_open()
        for track in ("a", "b"):
            if self._partial[track]:
                rest = self._partial[track]
                self._partial[track] = b""
                self._queues[track].append(rest + bytes(FRAME_BYTES - len(rest)))
        a, b = self._queues["a"], self._queues["b"]
        while a or b:
            self._emit(a.popleft() if a else SILENCE_FRAME, b.popleft() if b else SILENCE_FRAME)
        self._flush()
        self._writer.close()
        self.closed = True
        return RecordingInfo(
            path=self.path,
            duration_s=round(self.frames_written * FRAME_S, 3),
            format=self.format,
            channels=self.channels,
            bytes=self.path.stat().st_size,
        )

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(f"recording {self.path} is closed")

    def _enqueue(self, track: str, pcm: bytes) -> None:
        self._check_open()
        data = self._partial[track] + pcm if self._partial[track] else pcm
        whole = len(data) - len(data) % FRAME_BYTES
        queue = self._queues[track]
        for offset in range(0, whole, FRAME_BYTES):
            queue.append(data[offset : offset + FRAME_BYTES])
        self._partial[track] = data[whole:]
        if self._clocked:
            while len(queue) > self.max_skew_frames:
                queue.popleft()  # the sender's clock runs fast: drop the oldest, keep latency bounded
            return
        a, b = self._queues["a"], self._queues["b"]
        while a and b:
            self._emit(a.popleft(), b.popleft())
        while len(a) > self.max_skew_frames:
            self._emit(a.popleft(), SILENCE_FRAME)
        while len(b) > self.max_skew_frames:
            self._emit(SILENCE_FRAME, b.popleft())

    def _emit(self, frame_a: bytes, frame_b: bytes) -> None:
        a = np.frombuffer(frame_a, dtype="<i2")
        b = np.frombuffer(frame_b, dtype="<i2")
        if self.channels == 2:
            mixed = np.column_stack((a, b)).astype("<i2")
        elif frame_b is SILENCE_FRAME:
            mixed = a
        elif frame_a is SILENCE_FRAME:
            mixed = b
        else:
            mixed = np.clip(a.astype(np.int32) + b, -32768, 32767).astype("<i2")
        self._pending.append(mixed.tobytes())
        if len(self._pending) >= FLUSH_FRAMES:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write(b"".join(self._pending), len(self._pending))
            self.frames_written += len(self._pending)
            self._pending.clear()


class _WavWriter:
    def __init__(self, path: Path, channels: int) -> None:
        # Open the file first: wave.open(path) on a bad path leaves a half-built Wave_write that errors in __del__.
        self._file: BinaryIO = path.open("wb")
        self._wav = wave.open(self._file, "wb")  # noqa: SIM115 - closed in close()
        self._wav.setnchannels(channels)
        self._wav.setsampwidth(2)
        self._wav.setframerate(SAMPLE_RATE)

    def write(self, pcm: bytes, frames: int) -> None:
        self._wav.writeframes(pcm)  # also rewrites the header's sizes, so the file is valid after each flush

    def close(self) -> None:
        self._wav.close()  # patches the header; does not close a file object it was given
        self._file.close()


class _Mp3Writer:
    """CBR MP3 at 8 kHz whose first frame is a LAME Info tag, written as a placeholder and filled in at close."""

    def __init__(self, path: Path, channels: int, kbps: int) -> None:
        self.channels = channels
        self.kbps = kbps
        self.frame_bytes = 72_000 * kbps // SAMPLE_RATE  # MPEG-2/2.5 layer III, 576 samples per frame
        self.samples_in = 0
        self.bytes_out = 0
        self._first_header = b""
        self._encoder = lameenc.Encoder()
        self._encoder.set_in_sample_rate(SAMPLE_RATE)
        self._encoder.set_out_sample_rate(SAMPLE_RATE)
        self._encoder.set_channels(channels)
        self._encoder.set_bit_rate(kbps)
        self._encoder.set_quality(MP3_QUALITY)
        self._file: BinaryIO = path.open("wb")
        self._file.write(bytes(self.frame_bytes))  # the Info tag goes here at close

    def write(self, pcm: bytes, frames: int) -> None:
        self.samples_in += len(pcm) // (2 * self.channels)
        self._write_mp3(bytes(self._encoder.encode(pcm)))

    def _write_mp3(self, data: bytes) -> None:
        if data and not self._first_header:
            self._first_header = data[:4]
        self._file.write(data)
        self.bytes_out += len(data)

    def close(self) -> None:
        if self.samples_in:  # lameenc refuses to flush an encoder that never encoded
            self._write_mp3(bytes(self._encoder.flush()))
        if self._first_header and self.bytes_out % self.frame_bytes == 0:
            mp3_frames = self.bytes_out // self.frame_bytes
            padding = mp3_frames * MP3_SAMPLES_PER_FRAME - LAME_ENCODER_DELAY - self.samples_in
            tag = lame_info_frame(
                self._first_header,
                frame_bytes=self.frame_bytes,
                mp3_frames=mp3_frames,
                stream_bytes=self.bytes_out + self.frame_bytes,
                delay=LAME_ENCODER_DELAY,
                padding=max(0, padding),
                kbps=self.kbps,
            )
            self._file.seek(0)
            self._file.write(tag)
        self._file.close()


def lame_info_frame(
    first_header: bytes,
    *,
    frame_bytes: int,
    mp3_frames: int,
    stream_bytes: int,
    delay: int,
    padding: int,
    kbps: int,
) -> bytes:
    """A silent MPEG layer III frame carrying a Xing "Info" (CBR) header and a LAME tag with the encoder delay and
    padding (12 bits each), as LAME writes it. `first_header` is the 4-byte header of the first audio frame (its
    version and channel mode size the side information), `frame_bytes` the nominal frame length for its bitrate,
    `mp3_frames` and `stream_bytes` count the audio frames and all bytes including this one."""
    header = bytearray(first_header[:4])
    header[2] &= 0xFD  # no padding slot: the tag frame has the nominal length
    frame = bytearray(frame_bytes)
    frame[0:4] = header
    mpeg1 = (header[1] >> 3) & 0b11 == 0b11
    mono = header[3] >> 6 == 0b11
    side_info = (17 if mono else 32) if mpeg1 else (9 if mono else 17)
    offset = 4 + side_info
    toc = bytes(i * 256 // 100 for i in range(100))
    xing = b"Info" + struct.pack(">III", 0x0F, mp3_frames, stream_bytes) + toc + struct.pack(">I", 0)
    frame[offset : offset + len(xing)] = xing
    offset += len(xing)
    lame = bytearray(36)
    lame[0:9] = LAME_VERSION
    lame[9] = 0x01  # tag revision 0, CBR
    lame[20] = min(255, kbps)
    lame[21:24] = bytes((delay >> 4 & 0xFF, (delay & 0x0F) << 4 | (padding >> 8 & 0x0F), padding & 0xFF))
    lame[28:32] = struct.pack(">I", stream_bytes)
    frame[offset : offset + 36] = lame
    tag_crc = _crc16_arc(bytes(frame[: offset + 34]))
    frame[offset + 34 : offset + 36] = struct.pack(">H", tag_crc)
    return bytes(frame)


def _crc16_arc(data: bytes) -> int:
    """CRC-16 (polynomial 0x8005 reflected, initial 0), the checksum of the LAME tag."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc
