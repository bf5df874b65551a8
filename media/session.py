"""One call leg's RTP media on asyncio: SDP offer/answer, paced G.711 sending, receiving, DTMF, stats.

    session = await RtpSession.open(allocator, host="0.0.0.0", public_address=cfg.sip.public_address)
    answer_sdp = session.answer(leg.remote_sdp)         # or: offer = session.local_sdp_offer(); ...accept_answer(a)
    await leg.answer(answer_sdp)
    await session.play(source)                           # -> "finished" | "stopped" | "failed"
    session.add_sink(recorder); session.add_dtmf_listener(on_digit); await session.send_dtmf("12w3")
    session.close()

Choices (and why):
* Pacing: every session has an absolute schedule, tick k at t0 + k * 0.020 (t0 = when the remote is first known,
  i.e. an SDP answer made or received, moved up to 20 ms later onto a slot of the clock), until `close()`. Relative
  sleeps drift (~+0.2 ms per packet here); an absolute schedule does not. By default the ticks of all sessions of a
  loop are driven by one shared `MediaClock`: 1 ms slots on the same absolute grid, one asyncio timer per slot
  instead of one per packet, and a wheel (one bucket per slot of the 20 ms period) on which each session stays, so
  nothing is scheduled per packet. New sessions are packed into slots already in use (up to SLOT_SESSIONS each):
  few calls wake the loop a few times per period, 1000 streams still spread over all 20 slots.
  `RtpSession(..., clock=loop)` gives a per-session `loop.call_at` chain instead (bench/media.py compares them). If
  the loop was blocked for more than MAX_BURST_TICKS ticks, the missed ticks are skipped (timestamp jumps, counted
  in `stats.skipped_ticks`) rather than sent as a burst.
* Idle stream: while the call is up and nothing is playing we send G.711 silence every 20 ms (`idle="silence"`, the
  default), like FreeSWITCH and Asterisk do: carriers and SBCs run RTP inactivity timers, NAT bindings and the
  remote's latch need traffic, and SIPp's -rtp_echo only echoes what we send. `idle="none"` sends nothing between
  plays (the clock keeps ticking so timestamps stay true; the next packet carries the marker bit).
* Timestamps advance 160 per tick whatever is sent (audio, silence, DTMF event, nothing), so they stay continuous
  across plays; SSRC and sequence numbers are one per session. The marker bit is set on the first packet of the
  stream, of each play(), and of audio after a gap (after a DTMF event, hold, or idle="none" silence).
* Hold: when the negotiated direction is recvonly/inactive, or the remote address is 0.0.0.0, nothing is sent; a
  playing source keeps being consumed in real time (the call's timeline does not stop because the peer holds).
* DTMF: packets with the negotiated telephone-event payload type go to an RFC 4733 receiver; each key press reaches
  the DTMF listeners once. `send_dtmf()` sends RFC 4733 events (audio paused during each event; see media/dtmf.py),
  or in-band tones when the peer did not negotiate telephone-event.
* Receiving: G.711 of either static type (PCMU 0 / PCMA 8) and any payload size is decoded and re-chunked into
  20 ms frames for the sinks; a sink with `write_payload` (a bridge's FrameRelay) gets 20 ms payloads as received
  instead, and nothing is decoded when no other sink needs PCM (same-codec pass-through, media/bridge.py).
  There is no jitter buffer: packets older than the newest one of their SSRC are counted
  (`reordered`) and dropped, duplicates are dropped, and a timestamp gap (loss, or a peer that stops sending during
  silence or a DTMF event) up to 1 s is filled with silence so recordings keep their length.
* Symmetric RTP (RFC 4961 / "comedia"): we send to the SDP address until the first valid RTP packet arrives, then to
  that packet's source address (NAT). Afterwards packets from another address are ignored unless RELATCH_PACKETS
  consecutive valid packets come from one new address (the peer moved), which re-latches. We latch the address, not
  the SSRC: all SSRCs from the latched address are accepted (peers change SSRC on re-INVITE/transfer, and SIPp plays
  its DTMF pcap with a different SSRC than its audio); loss is counted per SSRC.
* Sockets: the RTP sockets of a loop are watched through one epoll set (`RtpReaders`, itself one `loop.add_reader`;
  plain `loop.add_reader` per socket where there is no epoll) and read with recvfrom(4096), not through
  `create_datagram_endpoint` (whose transport reads one datagram per wake-up into a 256 KiB buffer: ~4x the CPU per
  received packet); we send with the socket's own sendto (non-blocking; a full buffer just counts a send error).
* RTCP: none. We neither send SR/RR nor read RTCP; the odd port above ours stays bound (see media/ports.py) so the
  peer's RTCP is dropped quietly. Quality figures come from `stats` instead. (A minimal SR/RR sender could be added
  here later without changing the API.)

This module must not parse SIP, fetch or decode files, or run the call flow: it moves 20 ms frames between
AudioSource/AudioSink objects and the network, and reports what happened.
"""

from __future__ import annotations

import asyncio
import heapq
import ipaddress
import random
import select
import socket
import struct
import time
import weakref
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import structlog

from . import g711, sdp
from .dtmf import DtmfEvent, DtmfPlayer, DtmfReceiver, EventPacket, parse_digits
from .frames import FRAME_BYTES, FRAME_SAMPLES, SILENCE_FRAME, AudioSink, AudioSource
from .ports import PortAllocator, PortPair
from .rtp import RtpError, RtpPacket, pack_header, seq_distance, ts_distance
from .rtp import _pack as _PACK  # the RTP header's struct packer, shared

log = structlog.get_logger("media.session")

TICK = 0.020  # seconds per frame
MAX_BURST_TICKS = 3  # more late than this: skip the missed ticks instead of bursting them
LATE_THRESHOLD = 0.005  # a send more than 5 ms behind its schedule counts as late
EARLY_LIMIT = 0.002  # a tick run more than this before it is due is not this tick (see MediaClock's wheel)
RELATCH_PACKETS = 5  # consecutive packets from a new source address before we follow it
MAX_GAP_FILL = 8000  # samples of silence inserted at most for one timestamp gap (1 s)
HIST_BIN = 0.0001  # lateness histogram: 0.1 ms bins ...
HIST_PER_SECOND = 1 / HIST_BIN
HIST_BINS = 501  # ... from 0 to 50 ms; the last bin holds everything later
CN_PAYLOAD_TYPE = 13
RECV_SIZE = 4096  # larger than any RTP packet on a 1500-byte MTU path
MAX_READS_PER_WAKEUP = 64

IdleMode = Literal["silence", "none"]
_DECODERS = {pt: g711.decoder(codec) for pt, codec in g711.CODEC_BY_PAYLOAD_TYPE.items()}
_CODEC_BY_PT: dict[int, str] = dict(g711.CODEC_BY_PAYLOAD_TYPE)
_RX_HEADER = struct.Struct("!xBHII").unpack_from  # byte 1 (M, PT), sequence, timestamp, SSRC
# Shared by every session, not bound per session: a live call's objects are what each full garbage collection
# walks (docs/performance.md), and a bound method or builtin is one more object per session.
_SENDTO = socket.socket.sendto
_RECVFROM = socket.socket.recvfrom
PlayOutcome = Literal["finished", "stopped", "failed"]


@dataclass(slots=True)
class SourceStats:
    """Receive statistics for one remote SSRC (RFC 3550 A.1/A.3 style, without the probation step)."""

    ssrc: int
    base_seq: int
    max_seq: int
    cycles: int = 0
    received: int = 0  # distinct packets (duplicates of the newest are not counted)
    duplicates: int = 0
    reordered: int = 0  # arrived after a newer one: counted as received, not played
    last_audio_ts: int | None = None
    last_audio_samples: int = 0

    @property
    def expected(self) -> int:
        return self.cycles + self.max_seq - self.base_seq + 1

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.received)

    def update(self, seq: int) -> int:
        """Record `seq`; returns 1 for the newest packet so far, 0 for a duplicate of the newest, -1 for older."""
        d = seq_distance(seq, self.max_seq)
        if d > 0:
            if seq < self.max_seq:
                self.cycles += 0x10000
            self.max_seq = seq
            self.received += 1
            return 1
        if d == 0:
            self.duplicates += 1
            return 0
        self.received += 1
        self.reordered += 1
        return -1


@dataclass(slots=True)
class RtpStats:
    packets_sent: int = 0
    bytes_sent: int = 0  # RTP octets (header + payload)
    packets_received: int = 0  # every datagram on the RTP port
    bytes_received: int = 0
    invalid: int = 0  # not RTP
    ignored_source: int = 0  # from an address other than the latched one
    unknown_payload: int = 0  # a payload type we did not negotiate
    send_errors: int = 0
    receive_errors: int = 0
    late_sends: int = 0  # sent more than LATE_THRESHOLD behind schedule
    max_lateness: float = 0.0  # seconds
    skipped_ticks: int = 0
    frames_delivered: int = 0  # 20 ms frames handed to sinks
    gap_fill_samples: int = 0
    dtmf_received: int = 0
    dtmf_sent: int = 0
    sink_errors: int = 0
    relatches: int = 0
    lateness_hist: array[int] = field(default_factory=lambda: array("I", bytes(4 * HIST_BINS)))
    sources: dict[int, SourceStats] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        """Packets lost over all remote SSRCs (from sequence gaps)."""
        return sum(s.lost for s in self.sources.values())

    def lateness_percentile(self, fraction: float) -> float:
        """Send lateness (seconds, 0.1 ms resolution) below which `fraction` of the sends were."""
        return histogram_percentile(self.lateness_hist, fraction)

    def reset_timing(self) -> None:
        """Forget send-lateness figures (benchmarks: after a warm-up)."""
        self.late_sends = 0
        self.max_lateness = 0.0
        self.skipped_ticks = 0
        self.lateness_hist = array("I", bytes(4 * HIST_BINS))


def histogram_percentile(hist: array[int], fraction: float) -> float:
    total = sum(hist)
    if total == 0:
        return 0.0
    wanted = fraction * total
    running = 0
    for index, count in enumerate(hist):
        running += count
        if running >= wanted:
            return (index + 1) * HIST_BIN
    return len(hist) * HIST_BIN


class Playback:
    """A source being played; `await playback` gives "finished", "stopped" or "failed"."""

    __slots__ = ("source", "passthrough", "frames", "outcome", "error", "_loop", "_future")

    def __init__(self, source: AudioSource, loop: asyncio.AbstractEventLoop) -> None:
        self.source = source
        # a FrameRelay of a bridge can hand over G.711 payloads as received (same-codec pass-through)
        self.passthrough = hasattr(source, "read_payload")
        self.frames = 0
        self.outcome: PlayOutcome | None = None
        self.error: BaseException | None = None
        self._loop = loop
        self._future: asyncio.Future[PlayOutcome] | None = None  # made when awaited (a bridge never awaits)

    def __await__(self) -> Any:
        if self._future is None:
            self._future = self._loop.create_future()
            if self.outcome is not None:
                self._future.set_result(self.outcome)
        return self._future.__await__()

    def done(self) -> bool:
        return self.outcome is not None

    def _finish(self, outcome: PlayOutcome, error: BaseException | None = None) -> None:
        if self.outcome is not None:
            return
        self.outcome = outcome
        self.error = error
        if self._future is not None and not self._future.done():
            self._future.set_result(outcome)


class Clock(Protocol):
    """What schedules ticks: `call_at(when, callback)` on the loop's monotonic time (an asyncio loop qualifies)."""

    def call_at(self, when: float, callback: Callable[[], None]) -> Any: ...


class MediaClock:
    """One timer for all sessions of an event loop: callbacks are kept in 1 ms slots of the absolute time grid and
    a slot runs when its start time comes (so a send is at most ~1 ms early or late, never drifting).

    With one asyncio TimerHandle per session, every 20 ms packet costs a TimerHandle, a heap push and pop with
    Python-level comparisons and an event-loop iteration; here a whole slot (N/20 sessions) shares one. Measured with
    bench/media.py on 2 cores: 11.3-11.7 vs 13.8-14.9 µs of CPU per packet at 1000 streams (15-25 % less).

    Sessions do not re-schedule every tick: they join a wheel (`add_periodic`), one bucket per slot of the 20 ms
    period, and each bucket runs every period at its slot (no call_at, dict or heap work per packet). After a stall
    the wheel runs every slot that was missed (at most MAX_BURST_TICKS + 1 periods), so each session catches up the
    way a chain of call_at ticks would, and skips what is older than that.
    """

    RESOLUTION = 0.001
    SLOT_SESSIONS = 40  # sessions that start_slot() packs into one slot (1000 streams still fill all 20 slots)
    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MediaClock] = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop, resolution: float = RESOLUTION) -> None:
        # weak: the clock must not keep a finished loop alive (for_loop's dictionary is keyed weakly by the loop)
        self._loop_ref = weakref.ref(loop)
        self._resolution = resolution
        self._slots: dict[int, list[Callable[[], None]]] = {}
        self._heap: list[int] = []
        self._handle: asyncio.TimerHandle | None = None
        self._armed: int | None = None
        self._running = False
        self._period = max(1, round(TICK / resolution))  # slots per 20 ms
        self._wheel: list[list[Callable[[], None]]] = [[] for _ in range(self._period)]
        self._periodic = 0  # callbacks on the wheel
        self._next_slot = 0  # the first wheel slot not run yet

    @classmethod
    def for_loop(cls, loop: asyncio.AbstractEventLoop) -> MediaClock:
        clock = cls._by_loop.get(loop)
        if clock is None:
            clock = cls._by_loop[loop] = cls(loop)
        return clock

    def call_at(self, when: float, callback: Callable[[], None]) -> None:
        slot = int(when / self._resolution + 1e-6)
        bucket = self._slots.get(slot)
        if bucket is not None:
            bucket.append(callback)
            return
        self._slots[slot] = [callback]
        heapq.heappush(self._heap, slot)
        if not self._running and (self._armed is None or slot < self._armed):
            self._arm(slot)

    def _current_slot(self) -> int:
        """The slot that runs now: a slot runs from half a slot before its start (the loop's timers are ~1 ms)."""
        loop = self._loop_ref()
        now = loop.time() if loop is not None else 0.0
        return int((now + self._resolution / 2) / self._resolution)

    def start_slot(self, when: float) -> int:
        """The slot in which a stream that may start at `when` should have its ticks: the first slot of the next
        20 ms whose wheel bucket already has sessions but fewer than SLOT_SESSIONS, else the first empty one (the
        least loaded once every slot has SLOT_SESSIONS).
        Packing streams into few slots (a stream starts up to 20 ms later) means few loop wake-ups when there are
        few calls (each wake-up of a cold loop costs ~0.1 ms of CPU here), and at most SLOT_SESSIONS packets sent
        back to back when there are many."""
        first = int(when / self._resolution + (1 - 1e-6))  # the first slot starting at or after `when`
        wheel, period, limit = self._wheel, self._period, self.SLOT_SESSIONS
        best, best_count = first, len(wheel[first % period])
        for slot in range(first, first + period):
            count = len(wheel[slot % period])
            if 0 < count < limit:
                return slot
            if count < best_count:  # else the first free slot, or (all full) the least loaded one
                best, best_count = slot, count
        return best

    def slot_start(self, slot: int) -> float:
        return slot * self._resolution

    def slot_of(self, when: float) -> int:
        return int(when / self._resolution + 1e-6)  # a time on the grid (k * 5 ms) is in slot k * 5, not one before

    def add_periodic(self, slot: int, callback: Callable[[], None]) -> None:
        """Run `callback` every period (20 ms) at the slots congruent to `slot`, from the first such slot after the
        last slot run (the caller runs its own tick at `slot` first if it is due now)."""
        if not self._periodic:
            self._next_slot = max(self._next_slot, self._current_slot())
        self._wheel[slot % self._period].append(callback)
        self._periodic += 1
        if not self._running:
            self._arm_next()

    def remove_periodic(self, slot: int, callback: Callable[[], None]) -> None:
        bucket = self._wheel[slot % self._period]
        if callback in bucket:
            bucket.remove(callback)
            self._periodic -= 1
        if not self._periodic and not self._heap and self._handle is not None and not self._running:
            self._handle.cancel()  # nothing left: drop the timer (it refers to the loop, which we must not keep)
            self._handle = None
            self._armed = None

    def _next_wheel_slot(self) -> int | None:
        if not self._periodic:
            return None
        wheel, period, slot = self._wheel, self._period, self._next_slot
        for offset in range(period):
            if wheel[(slot + offset) % period]:
                return slot + offset
        return None  # pragma: no cover - _periodic counts the callbacks on the wheel

    def _arm_next(self) -> None:
        slot = self._heap[0] if self._heap else None
        wheel_slot = self._next_wheel_slot()
        if wheel_slot is not None and (slot is None or wheel_slot < slot):
            slot = wheel_slot
        if slot is not None and (self._armed is None or slot < self._armed):
            self._arm(slot)

    def _arm(self, slot: int) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed = slot
        loop = self._loop_ref()
        if loop is not None:
            self._handle = loop.call_at(slot * self._resolution, self._run)

    def _run(self) -> None:
        self._handle = None
        self._armed = None
        self._running = True
        heap, slots = self._heap, self._slots
        try:
            current = self._current_slot()
            while heap and heap[0] <= current:
                for callback in slots.pop(heapq.heappop(heap)):
                    try:
                        callback()
                    except Exception:
                        log.exception("media_clock_callback_failed")
            if self._periodic:
                wheel, period = self._wheel, self._period
                slot = max(self._next_slot, current + 1 - period * (MAX_BURST_TICKS + 1))
                self._next_slot = current + 1
                while slot <= current:
                    bucket = wheel[slot % period]
                    slot += 1
                    if bucket:
                        for callback in tuple(bucket):  # a callback may add or remove sessions
                            try:
                                callback()
                            except Exception:
                                log.exception("media_clock_callback_failed")
        finally:
            self._running = False
        self._arm_next()


class RtpReaders:
    """All RTP sockets of an event loop in one epoll set, which is itself the one reader the loop watches (Linux).

    With `loop.add_reader` per socket, every received packet costs the loop a selector key lookup, a Handle and a
    context switch into it (~2-3 µs of Python per packet on this machine); here one wake-up polls the set once and
    calls each ready socket's handler directly. The set is level-triggered: a handler reads one datagram, and a
    socket that still has data is reported again by the next poll (so a flooded socket gets one read per round like
    every other, and the usual case - one packet waiting - costs no failing recvfrom). `for_loop()` gives None where
    there is no epoll (macOS, Windows); sessions then use `loop.add_reader` themselves.
    """

    ROUNDS = 4  # polls per wake-up at most (packets that arrived meanwhile are read without another loop iteration)
    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RtpReaders] = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # a weak reference: the set lives as long as its loop (the loop's reader holds it), never keeps it alive
        self._loop_ref = weakref.ref(loop)
        self._epoll = select.epoll()
        self._poll = self._epoll.poll
        self._handlers: dict[int, Callable[[], object]] = {}
        self._closed = False
        loop.add_reader(self._epoll.fileno(), self._dispatch)

    @classmethod
    def for_loop(cls, loop: asyncio.AbstractEventLoop) -> RtpReaders | None:
        if not hasattr(select, "epoll"):
            return None
        readers = cls._by_loop.get(loop)
        if readers is None:
            readers = cls._by_loop[loop] = cls(loop)
        return readers

    def add(self, fd: int, handler: Callable[[], object]) -> None:
        self._epoll.register(fd, select.EPOLLIN)
        self._handlers[fd] = handler

    def remove(self, fd: int) -> None:
        """Stop watching `fd` (before it is closed). The set itself stays for the next session of the loop."""
        if self._handlers.pop(fd, None) is None:
            return
        try:
            self._epoll.unregister(fd)
        except (OSError, ValueError):  # pragma: no cover - already closed
            pass

    def close(self) -> None:
        """Stop watching the set and close it (sessions still in it stop receiving)."""
        if self._closed:
            return
        self._closed = True
        self._handlers.clear()
        loop = self._loop_ref()
        if loop is not None:
            if self._by_loop.get(loop) is self:
                del self._by_loop[loop]
            if not loop.is_closed():
                loop.remove_reader(self._epoll.fileno())
        self._epoll.close()

    def _dispatch(self) -> None:
        handlers = self._handlers
        poll = self._poll
        for _ in range(self.ROUNDS):
            if self._closed:  # closed from inside a handler
                return
            events = poll(0)
            if not events:
                return
            for fd, _mask in events:
                handler = handlers.get(fd)
                if handler is not None:
                    try:
                        handler()
                    except Exception:
                        log.exception("rtp_reader_failed")


class RtpSession:
    # the per-packet paths read a dozen attributes each: slots are faster than an instance dict of ~60 keys
    __slots__ = (
        "_candidate", "_candidate_count", "_clock", "_clock_started", "_closed", "_codec", "_decode",
        "_dtmf_jobs", "_dtmf_listeners", "_dtmf_receiver", "_dtmf_rx_pt", "_due", "_encode", "_handle", "_k",
        "_last_offer", "_latched", "_log", "_loop", "_marker", "_media_clock", "_on_wheel", "_payload_type",
        "_payload_writers", "_pcm_sinks", "_playback", "_readers", "_reading", "_remote",
        "_rx_buffer", "_sdp_id", "_sdp_last", "_sdp_version", "_send_sinks", "_sending", "_seq",
        "_silence", "_sinks", "_slot", "_sock", "_tick_cb", "_time", "_ts", "_call_uuid", "codecs", "idle",
        "negotiated", "offer_dtmf_payload_type", "ports", "public_address", "ssrc", "stats", "_t0",
        "__weakref__",
    )

    def __init__(self, ports: PortPair, public_address: str, loop: asyncio.AbstractEventLoop, *,
                 codecs: tuple[str, ...] = ("PCMU", "PCMA"), dtmf_payload_type: int | None = 101,
                 idle: IdleMode = "silence", clock: Clock | None = None) -> None:
        """Use `await RtpSession.open(...)`; this only wires an already-bound port pair. `clock` is what schedules
        the 20 ms ticks: the loop's shared MediaClock by default; pass the event loop itself for one
        `loop.call_at` timer per session."""
        self.ports = ports
        self.public_address = public_address
        self.codecs = codecs
        self.offer_dtmf_payload_type = dtmf_payload_type
        self.idle = idle
        self.stats = RtpStats()
        self.negotiated: sdp.NegotiatedMedia | None = None
        self.ssrc = random.getrandbits(32)
        self._loop = loop
        # asyncio's own loop.time() is a Python-level wrapper of time.monotonic(): skip that frame on every tick
        self._time = time.monotonic if type(loop).time is asyncio.BaseEventLoop.time else loop.time
        the_clock = clock if clock is not None else MediaClock.for_loop(loop)
        self._clock = the_clock
        # on a MediaClock the session joins its wheel after the first tick (no re-scheduling per packet)
        self._media_clock: MediaClock | None = the_clock if isinstance(the_clock, MediaClock) else None
        self._on_wheel = False
        self._slot = 0
        self._tick_cb = self._tick
        self._sock = ports.rtp_socket
        self._encode = g711.encoder("PCMU")
        self._decode = g711.decoder("PCMU")
        self._reading = False
        self._readers: RtpReaders | None = None
        self._closed = False
        self._call_uuid: str | None = None  # the owning call's (`call_uuid`): bound on this session's log events
        self._log: Any = None  # bound on first use (`log`)
        # sending
        self._seq = random.getrandbits(16)
        self._ts = random.getrandbits(32)
        self._payload_type = 0
        self._codec = "PCMU"
        self._silence = g711.SILENCE["PCMU"]
        self._remote: tuple[Any, ...] = ("0.0.0.0", 0)  # set by apply() before the clock starts
        self._sending = False
        self._handle: asyncio.TimerHandle | None = None  # None with the shared MediaClock
        self._clock_started = False
        self._t0 = 0.0
        self._k = 0
        self._due = 0.0
        self._marker = True
        self._playback: Playback | None = None
        self._dtmf_jobs: deque[tuple[DtmfPlayer, asyncio.Future[str]]] | None = None  # made by send_dtmf()
        # receiving
        self._latched = False
        self._candidate: tuple[Any, ...] | None = None
        self._candidate_count = 0
        # tuples, replaced on change: iterating one is a snapshot for free, and the empty tuple is a shared object
        self._sinks: tuple[AudioSink, ...] = ()
        # of _sinks: those that take G.711 payloads as received (bridge relays: `write_payload`) and those that
        # only take PCM
        self._payload_writers: tuple[Any, ...] = ()
        self._pcm_sinks: tuple[AudioSink, ...] = ()
        self._send_sinks: tuple[AudioSink, ...] = ()
        self._rx_buffer = bytearray()
        self._dtmf_receiver: DtmfReceiver | None = None  # made on the first RFC 4733 packet
        self._dtmf_rx_pt: int | None = dtmf_payload_type
        self._dtmf_listeners: tuple[Callable[[DtmfEvent], None], ...] = ()
        # SDP versioning (RFC 3264 §8: same o= id, version bumped only when the description changes)
        self._sdp_id = sdp.new_session_id()
        self._sdp_version = 0
        self._sdp_last: str | None = None
        self._last_offer: str | None = None

    @classmethod
    async def open(cls, allocator: PortAllocator, host: str, public_address: str, **kwargs: Any) -> RtpSession:
        """Bind a port pair from `allocator` on `host`; SDP will advertise `public_address`."""
        ports = allocator.allocate(host)
        loop = asyncio.get_running_loop()
        try:
            session = cls(ports, public_address, loop, **kwargs)
            # A plain reader, not create_datagram_endpoint(): asyncio's datagram transport reads one datagram per
            # wake-up into a fresh 256 KiB buffer (an mmap/munmap per packet); draining with recvfrom(4096) costs
            # about a quarter of the CPU per received packet (bench/media.py --echo).
            readers = RtpReaders.for_loop(loop)
            if readers is not None:
                readers.add(ports.rtp_socket.fileno(), session._on_readable)
                session._readers = readers
            else:
                loop.add_reader(ports.rtp_socket.fileno(), session._drain)
            session._reading = True
        except BaseException:
            ports.release()
            raise
        return session

    # -- state ------------------------------------------------------------------------------------------------------
    @property
    def local_port(self) -> int:
        return self.ports.rtp_port

    @property
    def remote_address(self) -> tuple[Any, ...] | None:
        """Where we send now (the SDP address, or the latched source); None before any SDP or packet."""
        return self._remote if self.negotiated is not None or self._latched else None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def call_uuid(self) -> str | None:
        return self._call_uuid

    @call_uuid.setter
    def call_uuid(self, value: str | None) -> None:
        self._call_uuid = value
        self._log = None  # bound again, with it, on next use

    @property
    def log(self) -> Any:
        """This session's logger (rtp_port and the owner's call_uuid bound), made on first use: most sessions
        never log above info, and a bound logger is two more objects per session for the garbage collector."""
        if self._log is None:
            self._log = log.bind(**self._log_fields())
        return self._log

    def _info(self, event: str, **fields: Any) -> None:
        """An info event without making the bound logger (filtered out at the daemon's usual warning level)."""
        if self._log is not None:
            self._log.info(event, **fields)
        else:
            log.info(event, **self._log_fields(), **fields)

    def _log_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"rtp_port": self.ports.rtp_port}
        if self._call_uuid is not None:
            fields["call_uuid"] = self._call_uuid
        return fields

    @property
    def playing(self) -> bool:
        return self._playback is not None

    @property
    def sending(self) -> bool:
        return self._sending

    # -- SDP --------------------------------------------------------------------------------------------------------
    def _versioned(self, build: Callable[[int], str]) -> str:
        text = build(self._sdp_version)
        body = _without_origin(text)
        if self._sdp_last is not None and body != self._sdp_last:
            self._sdp_version += 1
            text = build(self._sdp_version)
        self._sdp_last = body
        return text

    def local_sdp_offer(self, direction: str = "sendrecv") -> str:
        """Our offer (initial INVITE, or a hold/resume re-INVITE with direction sendonly/sendrecv)."""
        text = self._versioned(lambda version: sdp.build_offer(
            self.public_address, self.local_port, codecs=self.codecs, dtmf_pt=self.offer_dtmf_payload_type,
            direction=direction, session_id=self._sdp_id, session_version=version))
        self._last_offer = text
        return text

    def answer(self, offer: str, direction: str = "sendrecv") -> str:
        """Answer the peer's offer (initial or re-INVITE) and start media; raises sdp.SdpError (-> 488)."""
        result: list[sdp.NegotiatedMedia] = []

        def build(version: int) -> str:
            text, negotiated = sdp.build_answer(offer, self.public_address, self.local_port, supported=self.codecs,
                                                dtmf=self.offer_dtmf_payload_type is not None, direction=direction,
                                                session_id=self._sdp_id, session_version=version)
            result.append(negotiated)
            return text

        text = self._versioned(build)
        self.apply(result[-1])
        return text

    def accept_answer(self, answer: str) -> sdp.NegotiatedMedia:
        """The peer answered our last offer: take its codec, address and DTMF type, and start media."""
        if self._last_offer is None:
            raise RuntimeError("accept_answer() without a local_sdp_offer() first")
        negotiated = sdp.negotiate_answer(self._last_offer, answer)
        self.apply(negotiated)
        return negotiated

    def apply(self, negotiated: sdp.NegotiatedMedia) -> None:
        """Use negotiated media (new codec, address, direction) and make sure the clock runs."""
        if self._closed:
            raise RuntimeError("RTP session is closed")
        previous = self.negotiated
        self.negotiated = negotiated
        self._codec = negotiated.codec
        self._payload_type = negotiated.payload_type
        self._silence = g711.SILENCE[negotiated.codec]
        self._encode = g711.encoder(negotiated.codec)
        self._decode = g711.decoder(negotiated.codec)
        self._dtmf_rx_pt = negotiated.dtmf_payload_type
        address_changed = previous is None or (previous.remote_address, previous.remote_port) != (
            negotiated.remote_address, negotiated.remote_port)
        if address_changed:
            self._remote = (_numeric_host(negotiated.remote_address), negotiated.remote_port)
            self._latched = False
            self._candidate = None
        sending = negotiated.sending
        if sending and not self._sending:
            self._marker = True
        self._sending = sending
        self._info("rtp_negotiated", codec=negotiated.codec, pt=negotiated.payload_type,
                   remote=f"{negotiated.remote_address}:{negotiated.remote_port}", direction=negotiated.direction,
                   dtmf_pt=negotiated.dtmf_payload_type)
        if not self._clock_started:
            self._clock_started = True
            self._start_clock()

    # -- sending ------------------------------------------------------------------------------------------------------
    def play(self, source: AudioSource) -> Playback:
        """Start sending `source` (replacing whatever plays now); await the result for how it ended."""
        if self._closed:
            raise RuntimeError("RTP session is closed")
        self.stop_playing()
        playback = Playback(source, self._loop)
        self._playback = playback
        self._marker = True
        return playback

    def stop_playing(self) -> bool:
        """Stop the current playback (it ends "stopped"); False if nothing was playing."""
        playback, self._playback = self._playback, None
        if playback is None:
            return False
        playback._finish("stopped")
        return True

    async def send_dtmf(self, digits: str, *, gap_ms: int | None = None) -> str:
        """Send a digit string (Plivo syntax: '12w3W#', 'group@ms', '+'); returns the keys sent once all went out.
        RFC 4733 events if negotiated, in-band tones otherwise. Calls queue behind each other. Raises ValueError for
        a bad string; cancelling the caller stops after the key in flight."""
        if self._closed:
            raise RuntimeError("RTP session is closed")
        steps = parse_digits(digits)
        kwargs: dict[str, Any] = {"inband": self._dtmf_send_pt() is None}
        if gap_ms is not None:
            kwargs["gap_ms"] = gap_ms
        player = DtmfPlayer(steps, **kwargs)
        future: asyncio.Future[str] = self._loop.create_future()
        job = (player, future)
        jobs = self._dtmf_jobs
        if jobs is None:
            jobs = self._dtmf_jobs = deque()
        jobs.append(job)
        try:
            return await future
        except asyncio.CancelledError:  # the verb was cancelled: finish the key in flight, drop the rest
            if jobs and jobs[0] is job:
                player.cancel()
            elif job in jobs:
                jobs.remove(job)
            raise

    def _dtmf_send_pt(self) -> int | None:
        return self.negotiated.dtmf_payload_type if self.negotiated is not None else None

    def _start_clock(self) -> None:
        self._t0 = self._loop.time()
        self._k = 0
        self._due = self._t0
        if self._media_clock is not None:
            # on the wheel at once (start_slot counts it for the streams that start next); the first tick also as
            # a one-shot, in case the wheel already ran that slot: whichever runs second finds it not due yet
            self._slot = self._media_clock.start_slot(self._t0)
            self._t0 = self._due = self._media_clock.slot_start(self._slot)
            self._media_clock.add_periodic(self._slot, self._tick_cb)
            self._on_wheel = True
        self._handle = self._clock.call_at(self._t0, self._tick_cb)

    def _tick(self) -> None:
        """One 20 ms slot: schedule the next one on the absolute grid, then send this slot's packet."""
        if self._closed:
            return
        now = self._time()
        late = now - self._due
        if late < -EARLY_LIMIT:  # a wheel visit while catching up after a stall, before this tick is due
            if not self._on_wheel:  # (a chain timer that fired early: keep the chain going)
                self._handle = self._clock.call_at(self._due, self._tick_cb)
            return
        if late > MAX_BURST_TICKS * TICK:
            skipped = int(late / TICK)
            self._k += skipped
            self._ts = (self._ts + skipped * FRAME_SAMPLES) & 0xFFFFFFFF
            self.stats.skipped_ticks += skipped
            late = now - (self._t0 + self._k * TICK)
            self._marker = True
        k = self._k = self._k + 1
        due = self._due = self._t0 + k * TICK
        if not self._on_wheel:
            self._handle = self._clock.call_at(due, self._tick_cb)

        ts = self._ts
        self._ts = (ts + FRAME_SAMPLES) & 0xFFFFFFFF
        payload: bytes | None = None
        jobs = self._dtmf_jobs
        if jobs:
            player, future = jobs[0]
            action = player.tick(ts)
            if player.done:
                jobs.popleft()
                self.stats.dtmf_sent += len(player.digits_sent)
                if not future.done():
                    future.set_result(player.digits_sent)
            if action is not None:
                if isinstance(action, EventPacket):
                    if self._sending:
                        self._send_event(action, late)
                    self._marker = True  # audio after the event starts a new talkspurt
                    if self._send_sinks:
                        self._to_send_sinks(SILENCE_FRAME)
                    return
                payload = self._encode(action.pcm)  # an InbandFrame
                if self._send_sinks:
                    self._to_send_sinks(action.pcm)
        playback = self._playback
        if payload is None and playback is not None:
            try:
                if playback.passthrough:  # a bridge relay: G.711 in our codec, as received
                    payload = playback.source.read_payload(self._codec)  # type: ignore[attr-defined]
                    frame = payload
                else:
                    frame = playback.source.read_frame()
            except Exception as exc:  # a broken source must not kill the stream
                self.log.exception("rtp_source_failed")
                payload = None
                self._playback = None
                playback._finish("failed", exc)
            else:
                if frame is None:
                    self._playback = None
                    playback._finish("finished")
                elif payload is not None:
                    playback.frames += 1
                    if self._send_sinks:
                        self._to_send_sinks(self._decode(payload))
                else:
                    if len(frame) != FRAME_BYTES:
                        frame = frame[:FRAME_BYTES].ljust(FRAME_BYTES, b"\0")
                    payload = self._encode(frame)
                    playback.frames += 1
                    if self._send_sinks:
                        self._to_send_sinks(frame)
        if payload is None and self._send_sinks:
            self._to_send_sinks(SILENCE_FRAME)
        if payload is None:
            if self.idle != "silence":
                self._marker = True
                return
            payload = self._silence
        if not self._sending:
            self._marker = True
            return
        seq = self._seq
        self._seq = (seq + 1) & 0xFFFF
        if self._marker:
            self._marker = False
            packet = pack_header(self._payload_type, seq, ts, self.ssrc, True) + payload
        else:
            packet = _PACK(0x80, self._payload_type, seq, ts, self.ssrc) + payload
        # the same as self._send(packet, late), inlined: this is the per-packet hot path
        stats = self.stats
        try:
            _SENDTO(self._sock, packet, self._remote)
        except OSError:
            stats.send_errors += 1
            return
        stats.packets_sent += 1
        stats.bytes_sent += len(packet)
        if late > 0.0:
            if late > LATE_THRESHOLD:
                stats.late_sends += 1
            if late > stats.max_lateness:
                stats.max_lateness = late
            index = int(late * HIST_PER_SECOND)
            stats.lateness_hist[index if index < HIST_BINS else HIST_BINS - 1] += 1
        else:
            stats.lateness_hist[0] += 1

    def _send_event(self, event: EventPacket, late: float) -> None:
        pt = self._dtmf_send_pt()
        if pt is None:
            return
        if event.repeat:
            seq = (self._seq - 1) & 0xFFFF
        else:
            seq = self._seq
            self._seq = (seq + 1) & 0xFFFF
        packet = pack_header(pt, seq, event.timestamp, self.ssrc, event.marker) + event.payload
        self._send(packet, late)

    def _send(self, packet: bytes, late: float) -> None:
        stats = self.stats
        try:
            _SENDTO(self._sock, packet, self._remote)
        except OSError:  # buffer full, unreachable network, ...: RTP is best effort
            stats.send_errors += 1
            return
        stats.packets_sent += 1
        stats.bytes_sent += len(packet)
        if late > 0.0:
            if late > LATE_THRESHOLD:
                stats.late_sends += 1
            if late > stats.max_lateness:
                stats.max_lateness = late
            index = int(late * HIST_PER_SECOND)
            stats.lateness_hist[index if index < HIST_BINS else HIST_BINS - 1] += 1
        else:
            stats.lateness_hist[0] += 1

    # -- receiving ---------------------------------------------------------------------------------------------------
    def add_sink(self, sink: AudioSink) -> None:
        """Deliver received audio to `sink` as 20 ms frames. A sink that also has `write_payload(payload, codec)` (a
        bridge's FrameRelay) is handed 20 ms G.711 payloads as received instead, without decoding."""
        if sink not in self._sinks:
            self._sinks = (*self._sinks, sink)
            self._sinks_changed()

    def _sinks_changed(self) -> None:
        writers = tuple(sink for sink in self._sinks if hasattr(sink, "write_payload"))
        self._payload_writers = self._sinks if len(writers) == len(self._sinks) else writers  # one tuple, not two
        self._pcm_sinks = tuple(sink for sink in self._sinks if not hasattr(sink, "write_payload"))

    def add_send_sink(self, sink: AudioSink) -> None:
        """Also deliver what we send (one 20 ms frame per tick, silence when nothing plays): the far side's track of
        a call recording."""
        if sink not in self._send_sinks:
            self._send_sinks = (*self._send_sinks, sink)

    def remove_send_sink(self, sink: AudioSink) -> None:
        self._send_sinks = tuple(s for s in self._send_sinks if s is not sink)

    def _to_send_sinks(self, pcm: bytes) -> None:
        for sink in self._send_sinks:
            try:
                sink.write_frame(pcm)
            except Exception:
                self.stats.sink_errors += 1
                self.remove_send_sink(sink)
                self.log.exception("rtp_send_sink_failed")

    def remove_sink(self, sink: AudioSink) -> None:
        if sink in self._sinks:
            self._sinks = tuple(s for s in self._sinks if s is not sink)
            self._sinks_changed()
        if not self._sinks:
            self._rx_buffer.clear()

    def add_dtmf_listener(self, listener: Callable[[DtmfEvent], None]) -> None:
        """Call `listener(event)` once per key press received (event.digit is '0'-'9', '*', '#', 'A'-'D')."""
        self._dtmf_listeners = (*self._dtmf_listeners, listener)

    def remove_dtmf_listener(self, listener: Callable[[DtmfEvent], None]) -> None:
        if listener in self._dtmf_listeners:
            listeners = list(self._dtmf_listeners)
            listeners.remove(listener)
            self._dtmf_listeners = tuple(listeners)

    def _on_readable(self) -> bool:
        """The socket is readable (RtpReaders): read one datagram; if more wait, the next poll reports it again.
        False when there was nothing (more) to read."""
        try:
            data, addr = _RECVFROM(self._sock, RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:  # e.g. an ICMP error queued on the socket
            self.stats.receive_errors += 1
            return False
        self._on_datagram(data, addr)
        return True

    def _drain(self) -> None:
        """The socket has data (loop.add_reader, without epoll): drain it (bounded, so one flooded session cannot
        starve the loop)."""
        for _ in range(MAX_READS_PER_WAKEUP):
            if not self._on_readable():
                return

    def _on_datagram(self, data: bytes, addr: tuple[Any, ...]) -> None:
        stats = self.stats
        stats.packets_received += 1
        stats.bytes_received += len(data)
        if len(data) >= 12 and data[0] == 0x80:  # fast path: no padding, extension or CSRC
            b1, seq, ts, ssrc = _RX_HEADER(data)
            pt = b1 & 0x7F
            payload = data[12:]
        else:
            try:
                packet = RtpPacket.parse(data)
            except RtpError:
                stats.invalid += 1
                return
            pt, seq, ts, ssrc, payload = (packet.payload_type, packet.sequence, packet.timestamp, packet.ssrc,
                                          packet.payload)
        if pt == self._dtmf_rx_pt:
            kind = "dtmf"
        elif pt in _DECODERS:
            kind = "audio"
        elif pt == CN_PAYLOAD_TYPE:
            kind = "cn"
        else:
            stats.unknown_payload += 1
            return
        if addr != self._remote:
            if not self._latch(addr):
                stats.ignored_source += 1
                return
        elif self._candidate is not None or not self._latched:
            self._latched = True
            self._candidate = None
        source = stats.sources.get(ssrc)
        if source is None:
            source = stats.sources[ssrc] = SourceStats(ssrc, seq, seq, received=1)
            order = 1
        elif 0 < (seq - source.max_seq) & 0xFFFF < 0x8000:  # the newest so far: SourceStats.update(), inlined
            if seq < source.max_seq:
                source.cycles += 0x10000
            source.max_seq = seq
            source.received += 1
            order = 1
        else:
            order = source.update(seq)
        if kind == "dtmf":
            receiver = self._dtmf_receiver
            if receiver is None:
                receiver = self._dtmf_receiver = DtmfReceiver()
            event = receiver.feed_payload(ssrc, ts, payload)
            if event is not None:
                stats.dtmf_received += 1
                self.log.info("dtmf_received", digit=event.digit)
                for listener in self._dtmf_listeners:
                    try:
                        listener(event)
                    except Exception:
                        self.log.exception("dtmf_listener_failed")
            return
        if order != 1 or kind != "audio":
            return
        last_ts = source.last_audio_ts
        size = len(payload)
        if last_ts is not None and ts != (last_ts + source.last_audio_samples) & 0xFFFFFFFF:
            gap = ts_distance(ts, last_ts) - source.last_audio_samples
            if 0 < gap <= MAX_GAP_FILL and self._sinks:
                stats.gap_fill_samples += gap
                self._deliver(bytes(2 * gap))
        source.last_audio_ts = ts
        source.last_audio_samples = size
        if not self._sinks or not size:
            return
        if self._payload_writers and size == FRAME_SAMPLES and not self._rx_buffer:
            # bridged: the relay takes the payload as it came; only PCM sinks (recorder, detector) need decoding
            stats.frames_delivered += 1
            codec = _CODEC_BY_PT[pt]
            for sink in self._payload_writers:
                try:
                    sink.write_payload(payload, codec)
                except Exception:
                    self._sink_failed(sink)
            if self._pcm_sinks:
                frame = _DECODERS[pt](payload)
                for sink in self._pcm_sinks:
                    try:
                        sink.write_frame(frame)
                    except Exception:
                        self._sink_failed(sink)
            return
        self._deliver(_DECODERS[pt](payload))

    def _latch(self, addr: tuple[Any, ...]) -> bool:
        """Whether to accept a packet from `addr`, which is not where we send; may move our destination."""
        if not self._latched:
            self.log.info("rtp_latched", source=f"{addr[0]}:{addr[1]}",
                          sdp=f"{self._remote[0]}:{self._remote[1]}")
            self._remote = addr
            self._latched = True
            self._candidate = None
            return True
        if addr == self._candidate:
            self._candidate_count += 1
        else:
            self._candidate = addr
            self._candidate_count = 1
        if self._candidate_count >= RELATCH_PACKETS:
            self.log.info("rtp_relatched", source=f"{addr[0]}:{addr[1]}")
            self._remote = addr
            self._candidate = None
            self.stats.relatches += 1
            return True
        return False

    def _deliver(self, pcm: bytes) -> None:
        buffer = self._rx_buffer
        if not buffer and len(pcm) == FRAME_BYTES:
            self._write_frame(pcm)
            return
        buffer += pcm
        while len(buffer) >= FRAME_BYTES:
            frame = bytes(buffer[:FRAME_BYTES])
            del buffer[:FRAME_BYTES]
            self._write_frame(frame)

    def _write_frame(self, frame: bytes) -> None:
        self.stats.frames_delivered += 1
        for sink in self._sinks:
            try:
                sink.write_frame(frame)
            except Exception:
                self._sink_failed(sink)

    def _sink_failed(self, sink: AudioSink) -> None:
        self.stats.sink_errors += 1
        self.log.exception("rtp_sink_failed", sink=type(sink).__name__)
        self.remove_sink(sink)

    # -- lifecycle ----------------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the clock, end playback and pending DTMF, close the sockets and give the ports back. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._on_wheel and self._media_clock is not None:
            self._media_clock.remove_periodic(self._slot, self._tick_cb)
            self._on_wheel = False
        self.stop_playing()
        while self._dtmf_jobs:
            player, future = self._dtmf_jobs.popleft()
            if not future.done():
                future.set_result(player.digits_sent)
        self._sinks = ()
        self._sinks_changed()
        self._dtmf_listeners = ()
        if self._reading:
            if self._readers is not None:
                self._readers.remove(self.ports.rtp_socket.fileno())
                self._readers = None
            else:
                self._loop.remove_reader(self.ports.rtp_socket.fileno())
            self._reading = False
        self.ports.release()
        self._info("rtp_closed", sent=self.stats.packets_sent, received=self.stats.packets_received,
                   lost=self.stats.lost, late=self.stats.late_sends)


def _numeric_host(host: str) -> str:
    """SDP c= may carry a host name (RFC 4566 allows an FQDN): resolve it once here, so that sendto() never does a
    DNS lookup per packet. This blocks the loop for that one lookup; peers practically always send an address."""
    try:
        socket.inet_pton(socket.AF_INET, host)  # the usual case, ~10x cheaper than ipaddress
        return host
    except OSError:
        pass
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    try:
        return socket.gethostbyname(host)
    except OSError:
        log.warning("rtp_unresolvable_address", host=host)
        return host


def _without_origin(text: str) -> str:
    """The SDP without its o= line (only compared with another result of this function)."""
    if text.startswith("v=0\r\no="):  # how sdp.build_offer / build_answer write it
        return text.partition("\r\n")[2].partition("\r\n")[2]
    return "\n".join(line for line in text.splitlines() if not line.startswith("o="))
