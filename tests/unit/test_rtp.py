"""RTP packets (parse/serialise/garbage), the port allocator, and RtpSession on loopback against a raw UDP probe."""

from __future__ import annotations

import asyncio
import math
import socket
import struct
from collections.abc import Iterator

import pytest
import structlog
import structlog.testing

from media import g711
from media.frames import FRAME_BYTES
from media.ports import PortAllocator, PortsExhausted
from media.rtp import RtpError, RtpExtension, RtpPacket, pack_header, seq_distance, seq_newer, ts_distance
from media.session import RELATCH_PACKETS, MediaClock, RtpSession

HOST = "127.0.0.1"


# -- packets ------------------------------------------------------------------------------------------------------
def test_parse_minimal_packet() -> None:
    data = bytes([0x80, 0x88]) + struct.pack("!HII", 7, 1000, 0xDEADBEEF) + b"\xd5" * 160
    p = RtpPacket.parse(data)
    assert (p.payload_type, p.marker, p.sequence, p.timestamp, p.ssrc) == (8, True, 7, 1000, 0xDEADBEEF)
    assert p.payload == b"\xd5" * 160 and p.csrcs == () and p.extension is None and p.padding == 0
    assert p.to_bytes() == data


def test_round_trip_with_everything() -> None:
    p = RtpPacket(payload_type=101, sequence=65535, timestamp=2**32 - 1, ssrc=1, payload=b"\x01\x0a\x00\xa0",
                  marker=True, csrcs=(11, 22, 33), extension=RtpExtension(0xBEDE, b"\x10\xff\x00\x00"), padding=4)
    data = p.to_bytes()
    assert data[0] == 0x80 | 0x20 | 0x10 | 3
    assert len(data) == 12 + 12 + 4 + 4 + 4 + 4
    assert data[-1] == 4
    assert RtpPacket.parse(data) == p


def test_pack_header_matches_to_bytes() -> None:
    for marker in (False, True):
        header = pack_header(0, 0x1_0005, 0x1_0000_0010, 0xCAFEBABE, marker)  # seq/ts wrap into range
        assert header == RtpPacket(0, 5, 0x10, 0xCAFEBABE, marker=marker).to_bytes()
        assert len(header) == 12


@pytest.mark.parametrize("data", [
    b"",
    b"\x80\x00\x00",  # shorter than a header
    bytes(12),  # version 0
    b"\x40" + bytes(11),  # version 1
    b"\xc0" + bytes(11),  # version 3
    b"\x83" + bytes(11) + bytes(8),  # 3 CSRCs announced, 2 present
    b"\x90" + bytes(11) + b"\xbe\xde",  # extension header cut short
    b"\x90" + bytes(11) + b"\xbe\xde\x00\x02" + bytes(4),  # extension longer than the packet
    b"\xa0" + bytes(11) + b"\x01\x02\x00",  # padding count 0
    b"\xa0" + bytes(11) + b"\x01\x09",  # padding longer than the payload
    b"INVITE sip:x SIP/2.0\r\n",  # SIP on the RTP port ('I' = 0x49: version 1)
])
def test_garbage_is_rejected(data: bytes) -> None:
    with pytest.raises(RtpError):
        RtpPacket.parse(data)


def test_padding_only_payload() -> None:
    p = RtpPacket.parse(b"\xa0\x00" + bytes(10) + b"\x00\x00\x03")
    assert p.payload == b"" and p.padding == 3


def test_sequence_arithmetic() -> None:
    assert seq_distance(2, 65534) == 4 and seq_newer(2, 65534)
    assert seq_distance(65534, 2) == -4 and not seq_newer(65534, 2)
    assert not seq_newer(5, 5)
    assert ts_distance(80, 2**32 - 80) == 160
    assert ts_distance(2**32 - 80, 80) == -160


# -- ports --------------------------------------------------------------------------------------------------------
def _free_block(size: int) -> int:
    """An even base port with `size` ports above it free right now."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((HOST, 0))
            base = s.getsockname()[1] & ~1
        if base + size > 65535:
            continue
        probes = []
        try:
            for port in range(base, base + size):
                t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                probes.append(t)
                t.bind((HOST, port))
            return base
        except OSError:
            continue
        finally:
            for t in probes:
                t.close()
    raise RuntimeError("no free port block")


def test_allocator_hands_out_even_pairs_and_reserves_rtcp() -> None:
    base = _free_block(8)
    alloc = PortAllocator(base, base + 7, seed=1)
    assert alloc.capacity == 4
    pairs = [alloc.allocate(HOST) for _ in range(4)]
    assert sorted(p.rtp_port for p in pairs) == [base, base + 2, base + 4, base + 6]
    for p in pairs:
        assert p.rtp_port % 2 == 0 and p.rtcp_port == p.rtp_port + 1
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(OSError):
            s.bind((HOST, p.rtcp_port))  # the RTCP port is held
    with pytest.raises(PortsExhausted, match=r"no free RTP port pair .* 4 of 4 pairs in use"):
        alloc.allocate(HOST)
    pairs[1].release()
    pairs[1].release()  # idempotent
    again = alloc.allocate(HOST)
    assert again.rtp_port == pairs[1].rtp_port
    for p in pairs:
        p.release()
    again.release()
    assert alloc.in_use == 0


def test_allocator_skips_ports_taken_by_others() -> None:
    base = _free_block(6)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind((HOST, base + 3))  # the RTCP half of the second pair
        alloc = PortAllocator(base, base + 5, seed=0)
        got = sorted(alloc.allocate(HOST).rtp_port for _ in range(2))
        assert got == [base, base + 4]
        assert alloc.bind_failures >= 1
        with pytest.raises(PortsExhausted, match="1 taken by other processes"):
            alloc.allocate(HOST)


def test_allocator_validates_range() -> None:
    with pytest.raises(ValueError):
        PortAllocator(30001, 30001)  # no even/odd pair inside
    with pytest.raises(ValueError):
        PortAllocator(40000, 30000)
    assert PortAllocator(30001, 30004).evens == [30002]


# -- RtpSession on loopback ---------------------------------------------------------------------------------------
class Probe:
    """A raw UDP socket standing in for the remote party."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]

    def sdp(self, direction: str = "sendrecv", codecs: str = "0 8 101", address: str = HOST) -> str:
        return (f"v=0\r\no=probe 1 1 IN IP4 {address}\r\ns=-\r\nc=IN IP4 {address}\r\nt=0 0\r\n"
                f"m=audio {self.port} RTP/AVP {codecs}\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
                f"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na={direction}\r\n")

    async def collect(self, seconds: float) -> list[RtpPacket]:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        out: list[RtpPacket] = []
        while (left := end - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(loop.sock_recv(self.sock, 2048), left)
            except TimeoutError:
                break
            out.append(RtpPacket.parse(data))
        return out

    def drain(self) -> None:
        while True:
            try:
                self.sock.recv(2048)
            except BlockingIOError:
                return

    def close(self) -> None:
        self.sock.close()


class Tone:
    """A 440 Hz test source of `frames` 20 ms frames."""

    def __init__(self, frames: int, amplitude: int = 8000) -> None:
        self.frames = frames
        self.sent = 0
        self.amplitude = amplitude

    def read_frame(self) -> bytes | None:
        if self.sent >= self.frames:
            return None
        start = self.sent * 160
        self.sent += 1
        return struct.pack("<160h", *(int(self.amplitude * math.sin(2 * math.pi * 440 * (start + n) / 8000))
                                      for n in range(160)))


class Sink:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def write_frame(self, pcm: bytes) -> None:
        self.frames.append(pcm)


@pytest.fixture
async def rtp():
    base = _free_block(40)
    alloc = PortAllocator(base, base + 39)
    sessions: list[RtpSession] = []
    probes: list[Probe] = []

    async def session(**kwargs) -> RtpSession:
        s = await RtpSession.open(alloc, HOST, HOST, **kwargs)
        sessions.append(s)
        return s

    def probe() -> Probe:
        p = Probe()
        probes.append(p)
        return p

    yield session, probe
    for s in sessions:
        s.close()
    for p in probes:
        p.close()
    assert alloc.in_use == 0


async def test_answer_and_play_packet_headers(rtp) -> None:
    new_session, new_probe = rtp
    session, probe = await new_session(), new_probe()
    answer = session.answer(probe.sdp(codecs="8 0 101"))
    assert f"m=audio {session.local_port} RTP/AVP 8 101" in answer and "c=IN IP4 127.0.0.1" in answer
    first = await probe.collect(0.1)  # idle: silence flows at once
    assert first and all(p.payload == g711.SILENCE["PCMA"] and p.payload_type == 8 for p in first)
    assert first[0].marker
    playback = session.play(Tone(10))
    assert await playback == "finished" and playback.frames == 10
    second = await probe.collect(0.1)
    packets = first + second
    for a, b in zip(packets, packets[1:], strict=False):
        assert b.sequence == (a.sequence + 1) & 0xFFFF
        assert b.timestamp == (a.timestamp + 160) & 0xFFFFFFFF
        assert b.ssrc == a.ssrc == session.ssrc
    audio = [p for p in packets if p.payload != g711.SILENCE["PCMA"]]
    assert len(audio) == 10
    assert audio[0].marker and not any(p.marker for p in audio[1:])
    decoded = struct.unpack("<160h", g711.decode(audio[3].payload, "PCMA"))
    assert max(decoded) > 6000


async def test_timestamps_continue_across_plays_and_stop(rtp) -> None:
    new_session, new_probe = rtp
    session, probe = await new_session(idle="none"), new_probe()
    session.answer(probe.sdp())
    assert await probe.collect(0.08) == []  # idle="none": nothing while nothing plays
    one = session.play(Tone(3))
    await one
    await asyncio.sleep(0.1)  # 5 idle ticks
    two = session.play(Tone(1000))
    await asyncio.sleep(0.1)
    three = session.play(Tone(2))  # replaces `two`
    assert await two == "stopped"
    assert await three == "finished"
    packets = await probe.collect(0.1)
    assert [p.marker for p in packets[:3]] == [True, False, False]
    assert {p.ssrc for p in packets} == {session.ssrc}
    for a, b in zip(packets, packets[1:], strict=False):
        assert b.sequence == (a.sequence + 1) & 0xFFFF  # no gaps in seq even across idle time
        assert (b.timestamp - a.timestamp) % 160 == 0 and b.timestamp != a.timestamp
    gap = packets[3].timestamp - packets[2].timestamp
    assert gap >= 160 * 5 and packets[3].marker  # idle time shows in timestamps, new talkspurt marked
    assert session.stop_playing() is False


@pytest.mark.parametrize("per_stream_timer", [False, True])
async def test_pacing_is_20ms_without_drift(rtp, per_stream_timer: bool) -> None:
    new_session, new_probe = rtp
    kwargs = {"clock": asyncio.get_running_loop()} if per_stream_timer else {}
    session, probe = await new_session(**kwargs), new_probe()
    session.answer(probe.sdp())
    loop = asyncio.get_running_loop()
    start = loop.time()
    packets = await probe.collect(1.0)
    elapsed = loop.time() - start
    assert abs(len(packets) - elapsed / 0.02) <= 3
    assert session.stats.max_lateness < 0.1
    assert session.stats.late_sends <= len(packets) // 10  # shared CI machine: allow a little scheduling noise
    assert sum(session.stats.lateness_hist) == session.stats.packets_sent


async def test_hold_and_resume(rtp) -> None:
    new_session, new_probe = rtp
    session, probe = await new_session(), new_probe()
    session.answer(probe.sdp())
    assert await probe.collect(0.06)
    held = session.answer(probe.sdp(direction="sendonly"))  # peer puts us on hold
    assert "a=recvonly" in held and session.negotiated is not None and session.negotiated.on_hold
    await asyncio.sleep(0.03)
    probe.drain()
    assert await probe.collect(0.1) == []
    inactive = session.answer(probe.sdp(direction="inactive"))
    assert "a=inactive" in inactive
    old_style = session.answer(probe.sdp(address="0.0.0.0"))  # RFC 2543 hold
    assert "a=recvonly" in old_style and not session.sending
    resumed = session.answer(probe.sdp())
    assert "a=sendrecv" in resumed
    packets = await probe.collect(0.1)
    assert packets and packets[0].marker
    versions = [int(text.split("\r\n")[1].split()[2]) for text in (held, inactive, old_style, resumed)]
    assert versions == sorted(versions) and len(set(versions)) == 4


async def test_receive_rechunks_30ms_payloads_and_fills_gaps(rtp) -> None:
    new_session, new_probe = rtp
    session, probe = await new_session(), new_probe()
    session.answer(probe.sdp(codecs="8"))
    sink = Sink()
    session.add_sink(sink)
    pcm = struct.pack("<240h", *(int(5000 * math.sin(n / 3)) for n in range(240)))
    payload = g711.encode(pcm, "PCMA")
    target = (HOST, session.local_port)
    for i in range(8):
        if i == 5:
            continue  # lost: a 240-sample hole to fill
        probe.sock.sendto(RtpPacket(8, 100 + i, 1000 + 240 * i, 42, payload, marker=i == 0).to_bytes(), target)
    probe.sock.sendto(RtpPacket(8, 103, 1000 + 240 * 3, 42, payload).to_bytes(), target)  # a late duplicate
    await asyncio.sleep(0.1)
    assert all(len(f) == FRAME_BYTES for f in sink.frames)
    assert len(sink.frames) == 8 * 240 // 160  # 7 payloads + 1 filled hole = 1920 samples = 12 frames
    source = session.stats.sources[42]
    assert source.lost == 0 and source.reordered == 1  # the late one made up the hole in the count
    assert session.stats.gap_fill_samples == 240
    session.remove_sink(sink)


async def test_symmetric_rtp_latching(rtp) -> None:
    new_session, new_probe = rtp
    session = await new_session()
    advertised, real, intruder = new_probe(), new_probe(), new_probe()
    session.answer(advertised.sdp())
    assert session.remote_address == (HOST, advertised.port)
    target = (HOST, session.local_port)

    def send(probe: Probe, seq: int, ssrc: int = 7) -> None:
        probe.sock.sendto(RtpPacket(0, seq, seq * 160, ssrc, g711.SILENCE["PCMU"]).to_bytes(), target)

    send(real, 1)
    await asyncio.sleep(0.05)
    assert session.remote_address == (HOST, real.port)  # NAT: follow the real source
    real.drain()
    assert await real.collect(0.06)
    send(intruder, 1, ssrc=99)
    send(real, 2)
    await asyncio.sleep(0.03)
    assert session.remote_address == (HOST, real.port)
    assert session.stats.ignored_source == 1
    for seq in range(2, 2 + RELATCH_PACKETS):
        send(intruder, seq, ssrc=99)
    await asyncio.sleep(0.05)
    assert session.remote_address == (HOST, intruder.port)  # a steady new source wins
    assert session.stats.relatches == 1


async def test_garbage_and_unknown_payload_types_are_counted(rtp) -> None:
    new_session, new_probe = rtp
    session, probe = await new_session(), new_probe()
    session.answer(probe.sdp())
    target = (HOST, session.local_port)
    probe.sock.sendto(b"hello", target)
    probe.sock.sendto(b"\x40" + bytes(20), target)
    probe.sock.sendto(RtpPacket(18, 1, 160, 5, b"\x00" * 20).to_bytes(), target)  # G.729: not negotiated
    await asyncio.sleep(0.05)
    assert session.stats.invalid == 2 and session.stats.unknown_payload == 1
    assert await probe.collect(0.05)  # still sending


async def test_two_sessions_offer_answer_and_close(rtp) -> None:
    new_session, _ = rtp
    caller, callee = await new_session(codecs=("PCMA", "PCMU")), await new_session()
    offer = caller.local_sdp_offer()
    assert "RTP/AVP 8 0 101" in offer
    answer = callee.answer(offer)
    negotiated = caller.accept_answer(answer)
    assert (negotiated.codec, negotiated.dtmf_payload_type, negotiated.remote_port) == ("PCMA", 101,
                                                                                       callee.local_port)
    sink = Sink()
    callee.add_sink(sink)
    await caller.play(Tone(5, amplitude=12000))
    await asyncio.sleep(0.06)
    loud = [f for f in sink.frames if max(struct.unpack("<160h", f)) > 9000]
    assert len(loud) == 5
    caller.close()
    caller.close()
    assert caller.closed
    with pytest.raises(RuntimeError):
        caller.play(Tone(1))


async def test_media_clock_runs_callbacks_on_the_absolute_grid() -> None:
    loop = asyncio.get_running_loop()
    clock = MediaClock.for_loop(loop)
    assert MediaClock.for_loop(loop) is clock
    ran: list[tuple[str, float, float]] = []
    base = loop.time() + 0.01

    def at(name: str, when: float) -> None:
        clock.call_at(when, lambda: ran.append((name, when, loop.time())))

    at("c", base + 0.030)
    at("a", base)
    at("b", base + 0.0102)
    at("b2", base + 0.0104)  # same 1 ms slot as b
    at("past", loop.time() - 0.5)  # already due: runs at once
    await asyncio.sleep(0.06)
    assert [r[0] for r in ran] == ["past", "a", "b", "b2", "c"]
    for name, when, actual in ran[1:]:
        assert actual >= when - 0.0015, name  # never more than a slot early
        assert actual - when < 0.05, name


ClockLoop = tuple[asyncio.AbstractEventLoop, MediaClock]


@pytest.fixture
def clock_loop() -> Iterator[ClockLoop]:
    """A private event loop (driven with run_until_complete) and a MediaClock on it."""
    loop = asyncio.new_event_loop()
    try:
        yield loop, MediaClock(loop)
    finally:
        loop.close()


def test_media_clock_survives_a_failing_callback(clock_loop: ClockLoop) -> None:
    loop, clock = clock_loop
    ran: list[str] = []

    def boom() -> None:
        raise RuntimeError("bad session")

    now = loop.time()
    clock.call_at(now, boom)
    clock.call_at(now, lambda: ran.append("after"))
    loop.run_until_complete(asyncio.sleep(0.01))
    assert ran == ["after"]


def test_media_clock_wheel_runs_every_period_and_catches_up_after_a_stall(clock_loop: ClockLoop) -> None:
    loop, clock = clock_loop
    times: list[float] = []

    def tick() -> None:
        times.append(loop.time())

    slot = clock.start_slot(loop.time())
    clock.add_periodic(slot, tick)
    loop.run_until_complete(asyncio.sleep(0.105))
    assert 4 <= len(times) <= 6
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(0.015 < g < 0.03 for g in gaps)
    assert all(t >= clock.slot_start(slot) + 0.020 * i - 0.0015 for i, t in enumerate(times))
    times.clear()
    import time as _time

    loop.call_soon(_time.sleep, 0.05)  # the loop is blocked 2.5 periods: the slot runs once per missed period
    loop.run_until_complete(asyncio.sleep(0.07))
    assert len(times) >= 3
    clock.remove_periodic(slot, tick)
    times.clear()
    loop.run_until_complete(asyncio.sleep(0.05))
    assert times == []


def test_media_clock_packs_new_streams_into_used_slots(clock_loop: ClockLoop) -> None:
    loop, clock = clock_loop
    now = loop.time()
    first = clock.start_slot(now)
    assert clock.slot_start(first) >= now - 1e-9
    clock.add_periodic(first, lambda: None)
    # a stream starting 7 ms later joins the same phase (one period on) instead of waking the loop again
    later = clock.start_slot(now + 0.007)
    assert later % 20 == first % 20 and clock.slot_start(later) >= now + 0.007 - 1e-9
    for _ in range(MediaClock.SLOT_SESSIONS - 1):
        clock.add_periodic(first, lambda: None)
    assert clock.start_slot(now + 0.007) % 20 != first % 20  # full: a new phase


async def test_session_ticks_stay_on_its_grid_with_the_wheel(rtp) -> None:
    new_session, new_probe = rtp
    sessions = [await new_session() for _ in range(3)]
    probes = [new_probe() for _ in sessions]
    for s, p in zip(sessions, probes, strict=True):
        s.answer(p.sdp())
        await asyncio.sleep(0.003)
    await asyncio.sleep(0.05)
    for p in probes:
        p.drain()
    packets = await asyncio.gather(*(p.collect(0.3) for p in probes))
    for s, got in zip(sessions, packets, strict=True):
        assert 11 <= len(got) <= 18
        assert s.stats.late_sends <= len(got) // 5  # shared CI machine: a little scheduling noise
    # the three streams share one slot of the clock (phase packing), so their ticks start 20 ms apart at most
    assert len({s._slot % 20 for s in sessions}) == 1


async def test_bridge_passes_same_codec_payloads_through_unchanged(rtp) -> None:
    from media.bridge import Bridge

    new_session, new_probe = rtp
    a, b = await new_session(), await new_session()
    caller, trunk = new_probe(), new_probe()
    a.answer(caller.sdp(codecs="0 101"))
    b.answer(trunk.sdp(codecs="0 101"))
    recorded = Sink()
    a.add_sink(recorded)  # a PCM sink beside the bridge still gets decoded audio
    bridge = Bridge(a, b)
    bridge.start()
    await asyncio.sleep(0.05)
    trunk.drain()
    payloads = [bytes([(7 * i + n) % 256 for n in range(160)]) for i in range(10)]
    target = (HOST, a.local_port)
    for i, payload in enumerate(payloads):
        caller.sock.sendto(RtpPacket(0, 100 + i, 1600 * 10 + 160 * i, 77, payload).to_bytes(), target)
        await asyncio.sleep(0.02)
    got = await trunk.collect(0.15)
    relayed = [p.payload for p in got if p.payload != g711.SILENCE["PCMU"]]
    assert relayed == payloads  # byte for byte, in order
    assert {p.ssrc for p in got} == {b.ssrc}  # under B's own stream
    for x, y in zip(got, got[1:], strict=False):
        assert y.sequence == (x.sequence + 1) & 0xFFFF and y.timestamp == (x.timestamp + 160) & 0xFFFFFFFF
    assert [f for f in recorded.frames if f in {g711.decode(p, "PCMU") for p in payloads}]
    assert bridge.a_to_b.codec == "PCMU"
    bridge.stop()


async def test_bridge_transcodes_when_the_codecs_differ(rtp) -> None:
    from media.bridge import Bridge

    new_session, new_probe = rtp
    a, b = await new_session(), await new_session()
    caller, trunk = new_probe(), new_probe()
    a.answer(caller.sdp(codecs="0 101"))
    b.answer(trunk.sdp(codecs="8 101"))
    bridge = Bridge(a, b)
    bridge.start()
    await asyncio.sleep(0.05)
    trunk.drain()
    pcm = struct.pack("<160h", *(int(9000 * math.sin(2 * math.pi * 440 * n / 8000)) for n in range(160)))
    target = (HOST, a.local_port)
    for i in range(5):
        caller.sock.sendto(RtpPacket(0, i, 160 * i, 78, g711.encode(pcm, "PCMU")).to_bytes(), target)
        await asyncio.sleep(0.02)
    got = await trunk.collect(0.1)
    loud = [p for p in got if p.payload_type == 8 and p.payload != g711.SILENCE["PCMA"]]
    assert len(loud) == 5
    assert max(struct.unpack("<160h", g711.decode(loud[0].payload, "PCMA"))) > 8000
    bridge.stop()


def test_frame_relay_converts_between_pcm_and_payloads() -> None:
    from media.bridge import FrameRelay

    pcm = struct.pack("<160h", *(int(5000 * math.sin(n / 5)) for n in range(160)))
    relay = FrameRelay(depth=3)
    relay.write_payload(g711.encode(pcm, "PCMU"), "PCMU")
    assert relay.codec == "PCMU"
    assert relay.read_payload("PCMU") == g711.encode(pcm, "PCMU")  # as received
    relay.write_payload(g711.encode(pcm, "PCMU"), "PCMU")
    assert relay.read_frame() == g711.decode(g711.encode(pcm, "PCMU"), "PCMU")  # a PCM reader
    relay.write_payload(g711.encode(pcm, "PCMU"), "PCMU")
    assert relay.read_payload("PCMA") == g711.encode(g711.decode(g711.encode(pcm, "PCMU"), "PCMU"), "PCMA")
    relay.write_frame(pcm)  # PCM into a payload relay: encoded once
    assert relay.read_payload("PCMU") == g711.encode(pcm, "PCMU")
    assert relay.read_payload("PCMA") == g711.SILENCE["PCMA"] and relay.underruns == 1
    for _ in range(5):
        relay.write_payload(g711.SILENCE["PCMU"], "PCMU")
    assert relay.dropped == 2
    plain = FrameRelay()
    plain.write_frame(pcm)
    plain.write_payload(g711.encode(pcm, "PCMA"), "PCMA")  # PCM queued: this one is converted to PCM
    assert plain.codec is None and plain.read_frame() == pcm
    assert plain.read_payload("PCMA") == g711.encode(g711.decode(g711.encode(pcm, "PCMA"), "PCMA"), "PCMA")
    plain.stop()
    assert plain.read_frame() is None and plain.read_payload("PCMU") is None


async def test_sessions_share_one_epoll_reader_without_leaking_it() -> None:
    import gc
    import os

    from media.session import RtpReaders

    base = _free_block(8)

    async def one_loop() -> None:
        alloc = PortAllocator(base, base + 7)
        s = await RtpSession.open(alloc, HOST, HOST)
        t = await RtpSession.open(alloc, HOST, HOST)
        readers = RtpReaders.for_loop(asyncio.get_running_loop())
        assert readers is not None and len(readers._handlers) == 2
        t.answer(s.local_sdp_offer())
        s.accept_answer(t.answer(s.local_sdp_offer()))
        await asyncio.sleep(0.05)
        assert s.stats.packets_received > 0 and t.stats.packets_received > 0
        s.close()
        t.close()
        assert readers._handlers == {}

    def run_in_new_loop() -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(one_loop())
        finally:
            loop.close()

    await asyncio.to_thread(run_in_new_loop)
    gc.collect()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        await asyncio.to_thread(run_in_new_loop)
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= before


async def test_session_events_carry_the_owners_call_uuid_and_the_logger_is_made_only_when_needed(rtp) -> None:
    new_session, new_probe = rtp
    s = await new_session()
    s.log.warning("rtp_before_its_call")  # a logger made before the session had an owner ...
    s.call_uuid = "c-123"  # ... is bound again with the owner's call_uuid
    peer = new_probe()
    with structlog.testing.capture_logs() as logs:
        s.answer(peer.sdp())
        assert s._log is None  # an info event does not keep a bound logger on the session
        s.log.warning("rtp_test_warning")
        s.close()
    events = {e["event"]: e for e in logs}
    for name in ("rtp_negotiated", "rtp_test_warning", "rtp_closed"):
        assert events[name]["call_uuid"] == "c-123" and events[name]["rtp_port"] == s.local_port, name


async def test_a_bridged_session_pair_shares_callbacks_instead_of_binding_its_own(rtp) -> None:
    """What a live bridged call keeps for the garbage collector to walk: no bound socket methods, no logger, no
    DTMF queue or receiver until used, one tuple for its sinks (docs/performance.md, full collections)."""
    import gc

    from media.bridge import Bridge

    new_session, new_probe = rtp
    a, b = await new_session(), await new_session()
    a.answer(new_probe().sdp(codecs="0 101"))
    b.answer(new_probe().sdp(codecs="0 101"))
    Bridge(a, b).start()
    await asyncio.sleep(0.05)
    for s in (a, b):
        kept = [o for o in gc.get_referents(s) if gc.is_tracked(o)]
        own_bound = [o for o in kept if getattr(o, "__self__", None) in (s, s._sock)]
        assert own_bound == [s._tick_cb]  # the wheel's callback only (removed from the wheel by identity)
        assert "BoundLoggerFilteringAtWarning" not in {type(o).__name__ for o in kept}
        assert s._log is None and s._dtmf_jobs is None and s._dtmf_receiver is None
        assert s._payload_writers is s._sinks  # the relay is both: one tuple
