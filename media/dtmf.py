"""DTMF over RTP: RFC 4733 telephone-events in both directions, plus in-band tones when a peer has no events.

Receiving (`DtmfReceiver`): fed every RTP packet of the negotiated telephone-event payload type, it reports each
key press exactly once, on the first packet seen of that event. An event is identified by (SSRC, RTP timestamp):
all packets of one event share the timestamp, the end packet is sent three times (SIPp's dtmf_2833_*.pcap even
repeats the sequence number), and the start packets may be lost - so de-duplication never uses sequence numbers or
the duration field (SIPp's runs at twice the clock). Events 0-15 map to "0123456789*#ABCD"; other events (flash,
tones) are ignored. A long event split into segments (RFC 4733 §2.5.1.3) is reported once. Only the first event
block of a packet is read (multi-event packets and RFC 2198 redundancy are not used by telephony peers we meet).

Sending (`parse_digits` + `DtmfPlayer`): digit strings follow Plivo's DTMF / sendDigits syntax as implemented by
FreeSWITCH (`switch_core_session_send_dtmf_string`): `0-9 * # A-D` are keys, `w` pauses 0.5 s, `W` pauses 1 s,
`+` separates groups and a group may end in `@<ms>` to set the tone length of its keys (values <= 50 ms are ignored,
as FreeSWITCH does; the cap is 8000 ms, the most a 16-bit duration holds at 8 kHz). The default tone length is
FreeSWITCH's 250 ms (2000 samples). Between two keys we leave DEFAULT_GAP_MS of audio.
Each key becomes RFC 4733 packets, one per 20 ms tick: marker bit on the first, a constant timestamp (the stream's
timestamp when the key starts), duration growing by 160 per packet, the E bit on the last update, and that end
packet sent three times in total (on three consecutive ticks, with the same sequence number, as Asterisk and SIPp
do). While a key is being signalled the audio stream pauses: no audio packets for those ticks, so nothing of the key
can also reach a peer in-band and be detected twice by one that listens for in-band DTMF too (RFC 4733 leaves audio
during an event to the sender; pausing is the safe choice). The playing source is not consumed meanwhile, so no
audio is lost, and timestamps keep advancing one frame per tick, so audio resumes with the right timestamp and a
marker bit. With no telephone-event negotiated, `DtmfPlayer(inband=True)` produces the dual-tone audio instead.

This module is sans-IO: no sockets, no clock, no asyncio. The RTP session drives it.
"""

from __future__ import annotations

import math
import struct
from collections import OrderedDict
from dataclasses import dataclass

from .frames import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE
from .rtp import RtpPacket, ts_distance

EVENT_DIGITS = "0123456789*#ABCD"  # RFC 4733 §3.2: events 0-9, 10 = *, 11 = #, 12-15 = A-D
DIGIT_EVENTS = {d: i for i, d in enumerate(EVENT_DIGITS)}
DEFAULT_TONE_MS = 250  # FreeSWITCH SWITCH_DEFAULT_DTMF_DURATION (2000 samples at 8 kHz)
MIN_TONE_MS = 50  # FreeSWITCH ignores "@ms" at or below this
MAX_TONE_MS = 8000  # 64000 samples: fits the 16-bit duration field without segmenting
DEFAULT_GAP_MS = 60  # audio between two keys (plus the 40 ms of end-packet repeats: ~100 ms of no event)
PAUSES = {"w": 500, "W": 1000}
DEFAULT_VOLUME = 10  # -10 dBm0, what SIPp and most gateways send
_EVENT = struct.Struct("!BBH")

# DTMF frequency pairs (ITU-T Q.23): row (low) and column (high) tones.
_LOW = (697, 770, 852, 941)
_HIGH = (1209, 1336, 1477, 1633)
_KEYPAD = ("123A", "456B", "789C", "*0#D")
TONE_FREQUENCIES: dict[str, tuple[int, int]] = {
    key: (_LOW[r], _HIGH[c]) for r, row in enumerate(_KEYPAD) for c, key in enumerate(row)
}


@dataclass(frozen=True)
class DtmfEvent:
    """One key press reported by the receiver."""

    digit: str
    ssrc: int
    timestamp: int
    volume: int
    ended: bool  # the first packet we saw already had the E bit (the start packets were lost)


@dataclass
class _Ongoing:
    event: int
    timestamp: int
    duration: int
    ended: bool


class DtmfReceiver:
    """Turns RFC 4733 packets into key presses, each reported once."""

    def __init__(self, memory: int = 64) -> None:
        self._seen: OrderedDict[tuple[int, int], None] = OrderedDict()
        self._memory = memory
        self._last: dict[int, _Ongoing] = {}
        self.invalid = 0  # payloads too short to be an event
        self.ignored = 0  # events that are not keys (16+)

    def feed(self, packet: RtpPacket) -> DtmfEvent | None:
        return self.feed_payload(packet.ssrc, packet.timestamp, packet.payload)

    def feed_payload(self, ssrc: int, timestamp: int, payload: bytes) -> DtmfEvent | None:
        """The key press this packet starts, or None (a repeat, an update, an end packet, or not a key)."""
        if len(payload) < 4:
            self.invalid += 1
            return None
        event, flags, duration = _EVENT.unpack_from(payload)
        ended = bool(flags & 0x80)
        key = (ssrc, timestamp)
        last = self._last.get(ssrc)
        if key in self._seen:
            if last is not None and last.timestamp == timestamp:
                last.duration = max(last.duration, duration)
                last.ended = last.ended or ended
            return None
        self._seen[key] = None
        if len(self._seen) > self._memory:
            self._seen.popitem(last=False)
        continuation = (last is not None and not last.ended and last.event == event
                        and last.duration >= 0xFFFF - 1600 and 0 < ts_distance(timestamp, last.timestamp) <= 0xFFFF)
        self._last[ssrc] = _Ongoing(event, timestamp, duration, ended)
        if continuation:
            return None  # the next segment of a long event already reported
        if event >= len(EVENT_DIGITS):
            self.ignored += 1
            return None
        return DtmfEvent(EVENT_DIGITS[event], ssrc, timestamp, flags & 0x3F, ended)


def event_payload(event: int, duration: int, end: bool = False, volume: int = DEFAULT_VOLUME) -> bytes:
    """One RFC 4733 event block: event code, E bit, volume (0-63, -dBm0), duration in timestamp units."""
    return _EVENT.pack(event, (0x80 if end else 0) | (volume & 0x3F), min(duration, 0xFFFF))


# -- digit strings ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DtmfStep:
    """A key to signal for `duration_ms`, or a pause (digit None) of `duration_ms` of ordinary audio."""

    digit: str | None
    duration_ms: int


def parse_digits(text: str, default_tone_ms: int = DEFAULT_TONE_MS) -> list[DtmfStep]:
    """'12w3W#@500' -> steps. Raises ValueError for characters that are neither keys nor pauses."""
    steps: list[DtmfStep] = []
    for group in text.split("+"):
        digits, at, length = group.partition("@")
        tone_ms = default_tone_ms
        if at:
            length = length.strip()
            if not length.isdigit():
                raise ValueError(f"bad tone length after '@' in {text!r}: {length!r}")
            if int(length) > MIN_TONE_MS:
                tone_ms = min(int(length), MAX_TONE_MS)
        for ch in digits:
            if ch in PAUSES:
                steps.append(DtmfStep(None, PAUSES[ch]))
            elif ch.upper() in DIGIT_EVENTS:
                steps.append(DtmfStep(ch.upper(), tone_ms))
            elif ch in " \t":
                continue
            else:
                raise ValueError(f"bad DTMF character {ch!r} in {text!r} (allowed: 0-9 * # A-D w W + @ms)")
    return steps


# -- in-band tones ------------------------------------------------------------------------------------------------
def tone_pcm(digit: str, duration_ms: int, amplitude: float = 0.3) -> bytes:
    """The dual tone of a key as 8 kHz s16le PCM (each component at `amplitude` of full scale)."""
    low, high = TONE_FREQUENCIES[digit.upper()]
    samples = SAMPLE_RATE * duration_ms // 1000
    scale = amplitude * 32767
    w1, w2 = 2 * math.pi * low / SAMPLE_RATE, 2 * math.pi * high / SAMPLE_RATE
    values = [int(scale * (math.sin(w1 * n) + math.sin(w2 * n))) for n in range(samples)]
    return struct.pack(f"<{samples}h", *values)


# -- the per-tick sender ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EventPacket:
    """What the session sends on a tick taken by an RFC 4733 event."""

    payload: bytes
    marker: bool
    timestamp: int  # the event's timestamp (constant through the event)
    repeat: bool  # a retransmission of the end packet: reuse the previous sequence number


@dataclass(frozen=True)
class InbandFrame:
    """A 20 ms PCM frame of tone that replaces the audio on this tick (no telephone-event negotiated)."""

    pcm: bytes


END_REPEATS = 3


class DtmfPlayer:
    """Drives one digit string, one 20 ms tick at a time: `tick(stream_timestamp)` returns an EventPacket, an
    InbandFrame, or None (send ordinary audio on this tick). `done` turns True after the last tick."""

    def __init__(self, steps: list[DtmfStep], *, inband: bool = False, gap_ms: int = DEFAULT_GAP_MS,
                 volume: int = DEFAULT_VOLUME) -> None:
        self.steps = steps
        self.inband = inband
        self.volume = volume
        self.gap_ticks = max(0, math.ceil(gap_ms / FRAME_MS))
        self._plan = self._expand()
        self._index = 0
        self._event_ts = 0
        self._end_payload = b""
        self._tone = b""
        self.digits_sent = ""

    @property
    def done(self) -> bool:
        return self._index >= len(self._plan)

    @property
    def ticks_left(self) -> int:
        return len(self._plan) - self._index

    def cancel(self) -> None:
        """Stop after the key being signalled now (its end packets still go out, so the peer sees a clean event);
        drop the keys and pauses after it."""
        j = self._index
        while j < len(self._plan):
            t = self._plan[j]
            if t.kind == "audio" or (t.kind in ("event", "tone") and t.i == 0):
                break
            j += 1
        del self._plan[j:]

    def _expand(self) -> list[_Tick]:
        plan: list[_Tick] = []
        for step in self.steps:
            ticks = max(1, math.ceil(step.duration_ms / FRAME_MS))
            if step.digit is None:
                plan += [_Tick("audio", None, i, ticks, 0) for i in range(ticks)]
                continue
            samples = step.duration_ms * SAMPLE_RATE // 1000
            if self.inband:
                plan += [_Tick("tone", step.digit, i, ticks, samples) for i in range(ticks)]
            else:
                plan += [_Tick("event", step.digit, i, ticks, samples) for i in range(ticks)]
                plan += [_Tick("end", step.digit, i, ticks, samples) for i in range(END_REPEATS - 1)]
            plan += [_Tick("audio", None, i, self.gap_ticks, 0) for i in range(self.gap_ticks)]
        return plan

    def tick(self, timestamp: int) -> EventPacket | InbandFrame | None:
        if self.done:
            return None
        t = self._plan[self._index]
        self._index += 1
        if t.kind == "audio" or t.digit is None:
            return None
        if t.kind == "tone":
            if t.i == 0:
                self._tone = tone_pcm(t.digit, t.ticks * FRAME_MS)
                self.digits_sent += t.digit
            return InbandFrame(self._tone[t.i * FRAME_SAMPLES * 2:(t.i + 1) * FRAME_SAMPLES * 2])
        if t.kind == "event":
            if t.i == 0:
                self._event_ts = timestamp
                self.digits_sent += t.digit
            last = t.i == t.ticks - 1
            duration = t.samples if last else min((t.i + 1) * FRAME_SAMPLES, t.samples)
            self._end_payload = event_payload(DIGIT_EVENTS[t.digit], duration, end=last, volume=self.volume)
            return EventPacket(self._end_payload, t.i == 0, self._event_ts, False)
        return EventPacket(self._end_payload, False, self._event_ts, True)  # a repeat of the end packet


@dataclass(frozen=True, slots=True)
class _Tick:
    kind: str  # "event" | "end" (repeat of the end packet) | "tone" | "audio"
    digit: str | None
    i: int  # index of this tick within its step
    ticks: int  # ticks of the step
    samples: int  # the key's duration in timestamp units
