"""Relaying audio and DTMF between two RTP sessions (a bridged call: A <-> B), and one-way relays (early media).

A `FrameRelay` is the sink on one side and the source played on the other, with a small jitter queue: frames that
arrive in a burst are kept (up to `depth`), an empty queue plays silence, never stops the stream; the other session
sends them on its own 20 ms schedule. When both legs use the same codec the G.711 payloads pass through as received
(no decode/encode: about a fifth of the CPU of a relayed packet); a PCMU leg and a PCMA leg are bridged by
decoding one and encoding the other (transcoding for free). Recorders, detectors and taps on a session still get
PCM (the session decodes for them only).

What does not live here: SIP, the Dial logic (engine/dialing), pacing and codecs (media.session, media.g711).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from . import g711
from .frames import FRAME_BYTES, SILENCE_FRAME

DEFAULT_DEPTH = 5  # frames (100 ms): beyond this the oldest frame is dropped to keep latency bounded


class FrameRelay:
    """An AudioSink on one session that is also the AudioSource played on another.

    Same-codec pass-through: a receiving RtpSession hands 20 ms G.711 payloads to `write_payload()` as they arrive
    (no decoding), and the sending session takes them with `read_payload(codec)` (no encoding) when its codec is
    the one they are in; the bytes go out as received, under the sender's own SSRC, sequence and timestamps, on its
    20 ms schedule. Anything else (PCM from `write_frame()`, a reader that wants PCM, a codec change mid-call) is
    converted on the way, so the relay works whichever way it is fed and read."""

    __slots__ = ("_frames", "_codec", "_stopped", "relayed", "underruns", "dropped")

    def __init__(self, depth: int = DEFAULT_DEPTH) -> None:
        self._frames: deque[bytes] = deque(maxlen=depth)
        self._codec: str | None = None  # None: the queue holds PCM frames; else G.711 payloads in this codec
        self._stopped = False
        self.relayed = 0
        self.underruns = 0
        self.dropped = 0

    @property
    def codec(self) -> str | None:
        """The codec of the queued payloads (None while the relay carries PCM)."""
        return self._codec

    # AudioSink
    def write_frame(self, pcm: bytes) -> None:
        if len(pcm) != FRAME_BYTES:
            return
        frames = self._frames
        if len(frames) == frames.maxlen:
            self.dropped += 1
        frames.append(pcm if self._codec is None else g711.encode(pcm, self._codec))

    def write_payload(self, payload: bytes, codec: str) -> None:
        """One 20 ms G.711 payload (160 bytes) in `codec`, as received."""
        frames = self._frames
        if codec != self._codec:
            if frames:  # keep what is queued in its format: convert this one
                self.write_frame(g711.decode(payload, codec))
                return
            self._codec = codec
        if len(frames) == frames.maxlen:
            self.dropped += 1
        frames.append(payload)

    # AudioSource
    def read_frame(self) -> bytes | None:
        if self._stopped:
            return None
        if self._frames:
            self.relayed += 1
            frame = self._frames.popleft()
            return frame if self._codec is None else g711.decode(frame, self._codec)
        self.underruns += 1
        return SILENCE_FRAME

    def read_payload(self, codec: str) -> bytes | None:
        """The next frame as a G.711 payload in `codec` (silence when nothing waits); None once stopped."""
        if self._stopped:
            return None
        if self._frames:
            self.relayed += 1
            frame = self._frames.popleft()
            if self._codec == codec:
                return frame
            return g711.encode(frame if self._codec is None else g711.decode(frame, self._codec), codec)
        self.underruns += 1
        return g711.SILENCE[codec]

    def stop(self) -> None:
        self._stopped = True


class Bridge:
    """A <-> B: audio both ways through FrameRelays, DTMF from either side re-sent to the other (RFC 4733)."""

    def __init__(self, a: Any, b: Any, *, relay_dtmf: bool = True) -> None:
        self.a = a
        self.b = b
        self.a_to_b = FrameRelay()
        self.b_to_a = FrameRelay()
        self.relay_dtmf = relay_dtmf
        self._started = False
        self._tasks: set[asyncio.Future[Any]] | None = None  # made on first use

    def _track(self, task: asyncio.Future[Any]) -> None:
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _a_digit(self, event: Any) -> None:
        if self.relay_dtmf and self._started and not self.b.closed:
            self._track(asyncio.ensure_future(self.b.send_dtmf(event.digit)))

    def _b_digit(self, event: Any) -> None:
        if self.relay_dtmf and self._started and not self.a.closed:
            self._track(asyncio.ensure_future(self.a.send_dtmf(event.digit)))

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        self.a.add_sink(self.a_to_b)
        self.b.add_sink(self.b_to_a)
        self.b.play(self.a_to_b)
        self.a.play(self.b_to_a)
        self.a.add_dtmf_listener(self._a_digit)
        self.b.add_dtmf_listener(self._b_digit)

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        for session, relay, listener in ((self.a, self.a_to_b, self._a_digit), (self.b, self.b_to_a, self._b_digit)):
            if not session.closed:
                session.remove_sink(relay)
                session.remove_dtmf_listener(listener)
        self.a_to_b.stop()
        self.b_to_a.stop()
        for session in (self.a, self.b):
            if not session.closed:
                session.stop_playing()

    @property
    def stats(self) -> dict[str, int]:
        return {"a_to_b": self.a_to_b.relayed, "b_to_a": self.b_to_a.relayed,
                "a_to_b_dropped": self.a_to_b.dropped, "b_to_a_dropped": self.b_to_a.dropped}
