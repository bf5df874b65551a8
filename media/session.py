"""One call leg's RTP media on asyncio: SDP offer/answer, paced G.711 sending, receiving, DTMF, stats.

    session = await RtpSession.open(allocator, host="0.0.0.0", public_address=cfg.sip.public_address)
    answer_sdp = session.answer(leg.remote_sdp)         # or: offer = session.local_sdp_offer(); ...accept_answer(a)
    await leg.answer(answer_sdp)
    await session.play(source)                           # -> "finished" | "stopped" | "failed"
    session.add_sink(recorder); session.add_dtmf_listener(on_digit); await session.send_dtmf("12w3")
    session.close()

Choices (and why):
* Pacing: every session has an absolute schedule, tick k at t0 + k * 0.020 (t0 = when the remote is first known,
  i.e. an SDP answer made or received), until `close()`. Relative sleeps drift (~+0.2 ms per packet here); an
  absolute schedule does not. By default the ticks of all sessions of a loop are driven by one shared `MediaClock`
  (1 ms slots on the same absolute grid, one asyncio timer per slot instead of one per packet): measured in
  bench/media.py it needs 15-25 % less CPU per packet than one `loop.call_at` chain per session (1000 streams at
  ~57 % of one core, p99 lateness ~1.5 ms on a quiet machine); `RtpSession(..., clock=loop)` gives the per-session
  `loop.call_at` chain instead. If the
  loop was blocked for more than MAX_BURST_TICKS ticks, the missed ticks are skipped (timestamp jumps, counted in
  `stats.skipped_ticks`) rather than sent as a burst.
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
  20 ms frames for the sinks. There is no jitter buffer: packets older than the newest one of their SSRC are counted
  (`reordered`) and dropped, duplicates are dropped, and a timestamp gap (loss, or a peer that stops sending during
  silence or a DTMF event) up to 1 s is filled with silence so recordings keep their length.
* Symmetric RTP (RFC 4961 / "comedia"): we send to the SDP address until the first valid RTP packet arrives, then to
  that packet's source address (NAT). Afterwards packets from another address are ignored unless RELATCH_PACKETS
  consecutive valid packets come from one new address (the peer moved), which re-latches. We latch the address, not
  the SSRC: all SSRCs from the latched address are accepted (peers change SSRC on re-INVITE/transfer, and SIPp plays
  its DTMF pcap with a different SSRC than its audio); loss is counted per SSRC.
* Sockets: the RTP socket is read with `loop.add_reader` and drained with recvfrom(4096), not through
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
import socket
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
from .rtp import _HEADER, RtpError, RtpPacket, pack_header, seq_distance, ts_distance

log = structlog.get_logger("media.session")

TICK = 0.020  # seconds per frame
MAX_BURST_TICKS = 3  # more late than this: skip the missed ticks instead of bursting them
LATE_THRESHOLD = 0.005  # a send more than 5 ms behind its schedule counts as late
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
PlayOutcome = Literal["finished", "stopped", "failed"]


@dataclass
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


@dataclass
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

    def __init__(self, source: AudioSource, loop: asyncio.AbstractEventLoop) -> None:
        self.source = source
        self.read_frame = source.read_frame
        self.frames = 0
        self.outcome: PlayOutcome | None = None
        self.error: BaseException | None = None
        self._future: asyncio.Future[PlayOutcome] = loop.create_future()

    def __await__(self) -> Any:
        return self._future.__await__()

    def done(self) -> bool:
        return self.outcome is not None

    def _finish(self, outcome: PlayOutcome, error: BaseException | None = None) -> None:
        if self.outcome is not None:
            return
        self.outcome = outcome
        self.error = error
        if not self._future.done():
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
    """

    RESOLUTION = 0.001
    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MediaClock] = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop, resolution: float = RESOLUTION) -> None:
        self._loop = loop
        self._resolution = resolution
        self._slots: dict[int, list[Callable[[], None]]] = {}
        self._heap: list[int] = []
        self._handle: asyncio.TimerHandle | None = None
        self._armed: int | None = None
        self._running = False

    @classmethod
    def for_loop(cls, loop: asyncio.AbstractEventLoop) -> MediaClock:
        clock = cls._by_loop.get(loop)
        if clock is None:
            clock = cls._by_loop[loop] = cls(loop)
        return clock

    def call_at(self, when: float, callback: Callable[[], None]) -> None:
        slot = int(when / self._resolution)
        bucket = self._slots.get(slot)
        if bucket is not None:
            bucket.append(callback)
            return
        self._slots[slot] = [callback]
        heapq.heappush(self._heap, slot)
        if not self._running and (self._armed is None or slot < self._armed):
            self._arm(slot)

    def _arm(self, slot: int) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed = slot
        self._handle = self._loop.call_at(slot * self._resolution, self._run)

    def _run(self) -> None:
        self._handle = None
        self._armed = None
        self._running = True
        heap, slots = self._heap, self._slots
        try:
            current = int((self._loop.time() + self._resolution / 2) / self._resolution)
            while heap and heap[0] <= current:
                for callback in slots.pop(heapq.heappop(heap)):
                    try:
                        callback()
                    except Exception:
                        log.exception("media_clock_callback_failed")
        finally:
            self._running = False
        if heap:
            self._arm(heap[0])


class RtpSession:
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
        self._time = loop.time
        self._call_at = (clock if clock is not None else MediaClock.for_loop(loop)).call_at
        self._sock = ports.rtp_socket
        self._sendto = ports.rtp_socket.sendto
        self._pack = _HEADER.pack
        self._encode = g711.encoder("PCMU")
        self._recvfrom = ports.rtp_socket.recvfrom
        self._reading = False
        self._closed = False
        self.log = log.bind(rtp_port=ports.rtp_port)
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
        self._dtmf_jobs: deque[tuple[DtmfPlayer, asyncio.Future[str]]] = deque()
        # receiving
        self._latched = False
        self._candidate: tuple[Any, ...] | None = None
        self._candidate_count = 0
        self._sinks: list[AudioSink] = []
        self._send_sinks: list[AudioSink] = []
        self._rx_buffer = bytearray()
        self._dtmf_receiver = DtmfReceiver()
        self._dtmf_rx_pt: int | None = dtmf_payload_type
        self._dtmf_listeners: list[Callable[[DtmfEvent], None]] = []
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
            loop.add_reader(ports.rtp_socket.fileno(), session._on_readable)
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
        self.log.info("rtp_negotiated", codec=negotiated.codec, pt=negotiated.payload_type,
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
        self._dtmf_jobs.append(job)
        try:
            return await future
        except asyncio.CancelledError:  # the verb was cancelled: finish the key in flight, drop the rest
            if self._dtmf_jobs and self._dtmf_jobs[0] is job:
                player.cancel()
            elif job in self._dtmf_jobs:
                self._dtmf_jobs.remove(job)
            raise

    def _dtmf_send_pt(self) -> int | None:
        return self.negotiated.dtmf_payload_type if self.negotiated is not None else None

    def _start_clock(self) -> None:
        self._t0 = self._loop.time()
        self._k = 0
        self._due = self._t0
        self._handle = self._call_at(self._t0, self._tick)

    def _tick(self) -> None:
        """One 20 ms slot: schedule the next one on the absolute grid, then send this slot's packet."""
        if self._closed:
            return
        now = self._time()
        late = now - self._due
        if late > MAX_BURST_TICKS * TICK:
            skipped = int(late / TICK)
            self._k += skipped
            self._ts = (self._ts + skipped * FRAME_SAMPLES) & 0xFFFFFFFF
            self.stats.skipped_ticks += skipped
            late = now - (self._t0 + self._k * TICK)
            self._marker = True
        k = self._k = self._k + 1
        due = self._due = self._t0 + k * TICK
        self._handle = self._call_at(due, self._tick)

        ts = self._ts
        self._ts = (ts + FRAME_SAMPLES) & 0xFFFFFFFF
        payload: bytes | None = None
        if self._dtmf_jobs:
            player, future = self._dtmf_jobs[0]
            action = player.tick(ts)
            if player.done:
                self._dtmf_jobs.popleft()
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
                frame = playback.read_frame()
            except Exception as exc:  # a broken source must not kill the stream
                self.log.exception("rtp_source_failed")
                frame = None
                self._playback = None
                playback._finish("failed", exc)
            else:
                if frame is None:
                    self._playback = None
                    playback._finish("finished")
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
            packet = self._pack(0x80, self._payload_type, seq, ts, self.ssrc) + payload
        # the same as self._send(packet, late), inlined: this is the per-packet hot path
        stats = self.stats
        try:
            self._sendto(packet, self._remote)
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
            self._sendto(packet, self._remote)
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
        """Deliver received audio to `sink` as 20 ms frames."""
        if sink not in self._sinks:
            self._sinks.append(sink)

    def add_send_sink(self, sink: AudioSink) -> None:
        """Also deliver what we send (one 20 ms frame per tick, silence when nothing plays): the far side's track of
        a call recording."""
        if sink not in self._send_sinks:
            self._send_sinks.append(sink)

    def remove_send_sink(self, sink: AudioSink) -> None:
        if sink in self._send_sinks:
            self._send_sinks.remove(sink)

    def _to_send_sinks(self, pcm: bytes) -> None:
        for sink in list(self._send_sinks):
            try:
                sink.write_frame(pcm)
            except Exception:
                self.stats.sink_errors += 1
                self._send_sinks.remove(sink)
                self.log.exception("rtp_send_sink_failed")

    def remove_sink(self, sink: AudioSink) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)
        if not self._sinks:
            self._rx_buffer.clear()

    def add_dtmf_listener(self, listener: Callable[[DtmfEvent], None]) -> None:
        """Call `listener(event)` once per key press received (event.digit is '0'-'9', '*', '#', 'A'-'D')."""
        self._dtmf_listeners.append(listener)

    def remove_dtmf_listener(self, listener: Callable[[DtmfEvent], None]) -> None:
        if listener in self._dtmf_listeners:
            self._dtmf_listeners.remove(listener)

    def _on_readable(self) -> None:
        """The socket has data: drain it (bounded, so one flooded session cannot starve the loop)."""
        recvfrom = self._recvfrom
        for _ in range(MAX_READS_PER_WAKEUP):
            try:
                data, addr = recvfrom(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. an ICMP error queued on the socket
                self.stats.receive_errors += 1
                return
            self._on_datagram(data, addr)

    def _on_datagram(self, data: bytes, addr: tuple[Any, ...]) -> None:
        stats = self.stats
        stats.packets_received += 1
        stats.bytes_received += len(data)
        if len(data) >= 12 and data[0] == 0x80:  # fast path: no padding, extension or CSRC
            _, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
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
        else:
            order = source.update(seq)
        if kind == "dtmf":
            event = self._dtmf_receiver.feed_payload(ssrc, ts, payload)
            if event is not None:
                stats.dtmf_received += 1
                self.log.info("dtmf_received", digit=event.digit)
                for listener in list(self._dtmf_listeners):
                    try:
                        listener(event)
                    except Exception:
                        self.log.exception("dtmf_listener_failed")
            return
        if order != 1 or kind != "audio":
            return
        if source.last_audio_ts is not None:
            gap = ts_distance(ts, source.last_audio_ts) - source.last_audio_samples
            if 0 < gap <= MAX_GAP_FILL and self._sinks:
                stats.gap_fill_samples += gap
                self._deliver(bytes(2 * gap))
        source.last_audio_ts = ts
        source.last_audio_samples = len(payload)
        if self._sinks and payload:
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
        for sink in list(self._sinks):
            try:
                sink.write_frame(frame)
            except Exception:
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
        self.stop_playing()
        while self._dtmf_jobs:
            player, future = self._dtmf_jobs.popleft()
            if not future.done():
                future.set_result(player.digits_sent)
        self._sinks.clear()
        self._dtmf_listeners.clear()
        if self._reading:
            self._loop.remove_reader(self.ports.rtp_socket.fileno())
            self._reading = False
        self.ports.release()
        self.log.info("rtp_closed", sent=self.stats.packets_sent, received=self.stats.packets_received,
                      lost=self.stats.lost, late=self.stats.late_sends)


def _numeric_host(host: str) -> str:
    """SDP c= may carry a host name (RFC 4566 allows an FQDN): resolve it once here, so that sendto() never does a
    DNS lookup per packet. This blocks the loop for that one lookup; peers practically always send an address."""
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
    return "\n".join(line for line in text.splitlines() if not line.startswith("o="))
