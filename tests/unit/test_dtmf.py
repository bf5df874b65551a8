"""RFC 4733 DTMF: the receiver fed SIPp's real dtmf_2833_*.pcap packets, the digit-string parser, the per-tick
sender, and the RTP session sending events on loopback."""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path

import pytest

from media import g711
from media.dtmf import (
    DEFAULT_TONE_MS,
    DtmfPlayer,
    DtmfReceiver,
    DtmfStep,
    EventPacket,
    InbandFrame,
    event_payload,
    parse_digits,
    tone_pcm,
)
from media.ports import PortAllocator
from media.rtp import RtpPacket
from media.session import RtpSession

SIPP_PCAPS = Path("/usr/share/sip-tester")
PCAP_DIGITS = {**{str(d): str(d) for d in range(10)}, "star": "*", "pound": "#"}


def read_pcap_rtp(path: Path) -> list[RtpPacket]:
    """RTP packets of a classic libpcap file (Ethernet, Linux cooked or raw IP; IPv4/UDP)."""
    data = path.read_bytes()
    magic = data[:4]
    if magic == b"\xd4\xc3\xb2\xa1":
        endian = "<"
    elif magic == b"\xa1\xb2\xc3\xd4":
        endian = ">"
    else:
        raise ValueError(f"{path}: not a classic pcap file")
    linktype = struct.unpack_from(endian + "I", data, 20)[0]
    offset = 24
    packets = []
    while offset + 16 <= len(data):
        _, _, captured, _ = struct.unpack_from(endian + "IIII", data, offset)
        frame = data[offset + 16:offset + 16 + captured]
        offset += 16 + captured
        if linktype == 1:  # Ethernet
            ethertype = struct.unpack_from("!H", frame, 12)[0]
            ip = frame[14:]
        elif linktype == 113:  # Linux cooked
            ethertype = struct.unpack_from("!H", frame, 14)[0]
            ip = frame[16:]
        else:  # raw IP
            ethertype, ip = 0x0800, frame
        if ethertype != 0x0800 or ip[9] != 17:
            continue
        udp = ip[(ip[0] & 0x0F) * 4:]
        length = struct.unpack_from("!H", udp, 4)[0]
        packets.append(RtpPacket.parse(udp[8:length]))
    return packets


def _pcap(name: str) -> list[RtpPacket]:
    path = SIPP_PCAPS / f"dtmf_2833_{name}.pcap"
    if not path.exists():
        pytest.skip(f"{path} missing (apt-get install sip-tester)")
    return read_pcap_rtp(path)


# -- receiver -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PCAP_DIGITS))
def test_sipp_pcap_digit_detected_exactly_once(name: str) -> None:
    packets = _pcap(name)
    assert len(packets) == 10 and {p.payload_type for p in packets} == {101}
    receiver = DtmfReceiver()
    events = [e for e in (receiver.feed(p) for p in packets) if e is not None]
    assert [e.digit for e in events] == [PCAP_DIGITS[name]]
    assert events[0].timestamp == packets[0].timestamp and events[0].volume == 10 and not events[0].ended


def test_all_sipp_pcaps_in_a_row() -> None:
    receiver = DtmfReceiver()
    digits = []
    for name in ["1", "2", "3", "star", "0", "pound", "9"]:
        digits += [e.digit for p in _pcap(name) if (e := receiver.feed(p)) is not None]
    assert "".join(digits) == "123*0#9"


def test_missing_start_packets_and_end_only() -> None:
    packets = _pcap("5")
    receiver = DtmfReceiver()
    events = [e for p in packets[4:] if (e := receiver.feed(p)) is not None]  # first 4 updates lost
    assert [e.digit for e in events] == ["5"]
    receiver = DtmfReceiver()
    ends = [p for p in packets if p.payload[1] & 0x80]
    assert len(ends) == 3 and len({p.sequence for p in ends}) == 1  # SIPp repeats the seq of the end packet
    events = [e for p in ends if (e := receiver.feed(p)) is not None]
    assert [(e.digit, e.ended) for e in events] == [("5", True)]


def test_same_digit_twice_is_two_presses_and_replay_is_one() -> None:
    packets = _pcap("7")
    receiver = DtmfReceiver()
    first = [e for p in packets if (e := receiver.feed(p)) is not None]
    replay = [e for p in packets if (e := receiver.feed(p)) is not None]  # the same packets again (duplicates)
    assert len(first) == 1 and replay == []
    later = [RtpPacket(p.payload_type, p.sequence + 20, p.timestamp + 4000, p.ssrc, p.payload, p.marker)
             for p in packets]
    again = [e for p in later if (e := receiver.feed(p)) is not None]
    assert [e.digit for e in again] == ["7"]
    other_ssrc = [RtpPacket(p.payload_type, p.sequence, p.timestamp, p.ssrc + 1, p.payload) for p in packets]
    assert len([e for p in other_ssrc if receiver.feed(p) is not None]) == 1


def test_events_and_garbage() -> None:
    receiver = DtmfReceiver()
    for code, digit in [(10, "*"), (11, "#"), (12, "A"), (15, "D")]:
        event = receiver.feed_payload(1, code * 1000, event_payload(code, 160))
        assert event is not None and event.digit == digit
    assert receiver.feed_payload(1, 99999, event_payload(16, 160)) is None  # flash: not a key
    assert receiver.feed_payload(1, 99999, b"\x01\x0a") is None
    assert (receiver.ignored, receiver.invalid) == (1, 1)


def test_long_event_segments_are_one_press() -> None:
    receiver = DtmfReceiver()
    assert receiver.feed_payload(9, 1000, event_payload(3, 65535)) is not None
    assert receiver.feed_payload(9, 1000 + 65535, event_payload(3, 8000, end=True)) is None  # next segment
    assert receiver.feed_payload(9, 200000, event_payload(3, 800)) is not None  # a new press


# -- digit strings ------------------------------------------------------------------------------------------------
def test_parse_digits_plivo_syntax() -> None:
    assert parse_digits("12w3W#") == [
        DtmfStep("1", DEFAULT_TONE_MS), DtmfStep("2", DEFAULT_TONE_MS), DtmfStep(None, 500), DtmfStep("3", 250),
        DtmfStep(None, 1000), DtmfStep("#", 250)]
    assert parse_digits("12@500") == [DtmfStep("1", 500), DtmfStep("2", 500)]
    assert parse_digits("1@100+2") == [DtmfStep("1", 100), DtmfStep("2", 250)]  # '@' applies to its '+' group
    assert parse_digits("9@40") == [DtmfStep("9", 250)]  # <= 50 ms is ignored, as FreeSWITCH does
    assert parse_digits("9@99999") == [DtmfStep("9", 8000)]
    assert parse_digits("ab*") == [DtmfStep("A", 250), DtmfStep("B", 250), DtmfStep("*", 250)]
    for bad in ("12x", "1@", "1@abc", "E"):
        with pytest.raises(ValueError):
            parse_digits(bad)


# -- sender ---------------------------------------------------------------------------------------------------------
def test_player_packet_sequence() -> None:
    player = DtmfPlayer(parse_digits("1@100"), gap_ms=40)
    ts = 5000
    ticks = []
    while not player.done:
        ticks.append(player.tick(ts))
        ts += 160
    events = [t for t in ticks if isinstance(t, EventPacket)]
    assert len(ticks) == 5 + 2 + 2  # 5 updates (last one is the first end), 2 end repeats, 2 gap ticks
    assert ticks[-2:] == [None, None]
    assert len(events) == 7
    assert [e.marker for e in events] == [True] + [False] * 6
    assert {e.timestamp for e in events} == {5000}  # constant: the stream timestamp when the key started
    assert [e.repeat for e in events] == [False] * 5 + [True] * 2
    fields = [struct.unpack("!BBH", e.payload) for e in events]
    assert [f[0] for f in fields] == [1] * 7
    assert [f[2] for f in fields] == [160, 320, 480, 640, 800, 800, 800]  # duration grows 160 per 20 ms
    assert [bool(f[1] & 0x80) for f in fields] == [False] * 4 + [True] * 3  # three end packets
    assert {f[1] & 0x3F for f in fields} == {10}
    assert player.digits_sent == "1"


def test_player_pauses_and_odd_lengths() -> None:
    player = DtmfPlayer(parse_digits("2w+3@90"), gap_ms=0)
    kinds = []
    ts = 0
    while not player.done:
        t = player.tick(ts)
        kinds.append("audio" if t is None else ("end" if t.repeat else "event"))
        ts += 160
    assert kinds == ["event"] * 13 + ["end"] * 2 + ["audio"] * 25 + ["event"] * 5 + ["end"] * 2
    assert player.digits_sent == "23"


def test_player_last_duration_is_exact() -> None:
    player = DtmfPlayer([DtmfStep("4", 90)], gap_ms=0)
    events = [player.tick(0) for _ in range(5)]
    durations = [struct.unpack("!BBH", e.payload)[2] for e in events if isinstance(e, EventPacket)]
    assert durations == [160, 320, 480, 640, 720]  # 90 ms = 720 samples


def test_player_cancel_finishes_the_key_in_flight() -> None:
    player = DtmfPlayer(parse_digits("12@100"), gap_ms=40)
    first = [player.tick(0) for _ in range(2)]  # two updates of '1'
    player.cancel()
    rest = []
    while not player.done:
        rest.append(player.tick(0))
    assert all(isinstance(t, EventPacket) for t in first + rest)
    assert [t.repeat for t in rest] == [False, False, False, True, True]  # 3 more updates, then the end repeats
    assert struct.unpack("!BBH", rest[-1].payload)[1] & 0x80
    assert player.digits_sent == "1"
    idle = DtmfPlayer(parse_digits("1w2@100"), gap_ms=0)
    for _ in range(5 + 2 + 3):  # into the pause
        idle.tick(0)
    idle.cancel()
    assert idle.done and idle.digits_sent == "1"


def test_inband_player_and_tone() -> None:
    player = DtmfPlayer(parse_digits("5@60"), inband=True, gap_ms=20)
    ticks = [player.tick(0) for _ in range(4)]
    assert player.done
    assert [type(t) for t in ticks] == [InbandFrame, InbandFrame, InbandFrame, type(None)]
    assert all(len(t.pcm) == 320 for t in ticks[:3] if isinstance(t, InbandFrame))
    pcm = tone_pcm("5", 100)
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    assert len(samples) == 800 and max(samples) > 15000
    # Goertzel: energy at 770 and 1336 Hz (the '5' pair), little at 697 Hz
    import math

    def power(freq: int) -> float:
        coeff = 2 * math.cos(2 * math.pi * freq / 8000)
        s1 = s2 = 0.0
        for x in samples:
            s1, s2 = x + coeff * s1 - s2, s1
        return s1 * s1 + s2 * s2 - coeff * s1 * s2

    assert power(770) > 50 * power(697) and power(1336) > 50 * power(1209)


# -- the session sends and receives events ------------------------------------------------------------------------
async def test_session_sends_rfc4733_and_pauses_audio() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        probe.setblocking(False)
        port = probe.getsockname()[1]
        alloc = PortAllocator(31000, 31999)
        session = await RtpSession.open(alloc, "127.0.0.1", "127.0.0.1")
        try:
            offer = (f"v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                     f"m=audio {port} RTP/AVP 0 96\r\na=rtpmap:96 telephone-event/8000\r\n")
            session.answer(offer)
            loop = asyncio.get_running_loop()
            packets: list[RtpPacket] = []

            async def collect() -> None:
                while True:
                    packets.append(RtpPacket.parse(await loop.sock_recv(probe, 2048)))

            collector = asyncio.create_task(collect())
            await asyncio.sleep(0.05)
            sent = await session.send_dtmf("1#@60", gap_ms=40)
            assert sent == "1#"
            await asyncio.sleep(0.05)
            collector.cancel()
        finally:
            session.close()
    events = [p for p in packets if p.payload_type == 96]
    assert len(events) == 2 * (3 + 2)
    assert [p.marker for p in events] == [True] + [False] * 4 + [True] + [False] * 4
    assert len({p.timestamp for p in events}) == 2
    assert [p.payload[0] for p in events] == [1] * 5 + [11] * 5
    assert events[3].sequence == events[4].sequence == events[2].sequence  # end repeats keep the seq
    # audio around the events: silence, none while a key is signalled, marker when it resumes; ts keeps running
    first = packets.index(events[0])
    before, after = packets[first - 1], packets[first + 5]
    assert before.payload == g711.SILENCE["PCMU"] and after.payload_type == 0 and after.marker
    assert after.timestamp - before.timestamp == 160 * 6
    assert events[0].timestamp == before.timestamp + 160
    for a, b in zip(packets, packets[1:], strict=False):
        assert b.sequence in (a.sequence, (a.sequence + 1) & 0xFFFF)
    assert session.stats.dtmf_sent == 2


async def test_session_receives_sipp_pcap_digits_once() -> None:
    packets = _pcap("1") + _pcap("pound")
    alloc = PortAllocator(31000, 31999)
    session = await RtpSession.open(alloc, "127.0.0.1", "127.0.0.1")
    digits: list[str] = []
    session.add_dtmf_listener(lambda e: digits.append(e.digit))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        try:
            session.answer(f"v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                           f"m=audio {peer.getsockname()[1]} RTP/AVP 8 101\r\n"
                           "a=rtpmap:101 telephone-event/8000\r\n")
            for p in packets:
                peer.sendto(p.to_bytes(), ("127.0.0.1", session.local_port))
            await asyncio.sleep(0.1)
        finally:
            session.close()
    assert digits == ["1", "#"]
    assert session.stats.dtmf_received == 2
    assert session.stats.sources[packets[0].ssrc].duplicates == 4  # the repeated end packets (2 per digit)
