"""RTP against SIPp on loopback: real packets both ways, with a minimal SIP part from sip.ua.

* inbound: SIPp's uac_call.xml calls our UserAgent; we answer its SDP with an RtpSession. SIPp plays g711a.pcap
  (30 ms PCMA) and, at +3 s, dtmf_2833_1.pcap (which stops the audio pcap: SIPp plays one pcap at a time per
  call). We must receive every packet sent (0 lost), decode real audio, and report the digit "1" exactly once.
* outbound: we call SIPp (media_uas_echo.xml, run with -rtp_echo) with our offer, accept its answer and play a
  tone; SIPp echoes our packets back, and at least 90% of what we sent must return, intact.
"""

from __future__ import annotations

import asyncio
import math
import struct

import pytest
from sipharness import HOST, collect_events, free_port_block

from media import g711
from media.ports import PortAllocator
from media.session import RtpSession
from sip.leg import Answered, Ended, InboundLeg

pytestmark = pytest.mark.integration

SIPP_AUDIO_SSRC = 0xDEE0EE8F  # from /usr/share/sip-tester/g711a.pcap
SIPP_AUDIO_PACKETS = 236


class Sink:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def write_frame(self, pcm: bytes) -> None:
        self.frames.append(pcm)


class Tone:
    def __init__(self, frames: int, freq: float = 1000.0, amplitude: int = 10000) -> None:
        self.left = frames
        self.n = 0
        self.freq = freq
        self.amplitude = amplitude

    def read_frame(self) -> bytes | None:
        if self.left <= 0:
            return None
        self.left -= 1
        start, self.n = self.n, self.n + 160
        return struct.pack("<160h", *(int(self.amplitude * math.sin(2 * math.pi * self.freq * (start + i) / 8000))
                                      for i in range(160)))


def rms(frames: list[bytes]) -> float:
    samples = [s for f in frames for s in struct.unpack(f"<{len(f) // 2}h", f)]
    return math.sqrt(sum(s * s for s in samples) / len(samples)) if samples else 0.0


@pytest.fixture
def allocator() -> PortAllocator:
    base = free_port_block(8)
    return PortAllocator(base, base + 7)


async def test_inbound_call_audio_and_rfc2833_from_sipp(make_ua, make_sipp, allocator) -> None:
    digits: list[str] = []
    sink = Sink()
    sessions: list[RtpSession] = []
    call_seconds: list[float] = []
    done: asyncio.Future[list] = asyncio.get_running_loop().create_future()

    async def handle(leg: InboundLeg) -> None:
        session = await RtpSession.open(allocator, HOST, HOST)
        sessions.append(session)
        try:
            session.add_sink(sink)
            session.add_dtmf_listener(lambda event: digits.append(event.digit))
            assert leg.remote_sdp is not None
            await leg.answer(session.answer(leg.remote_sdp))
            started = asyncio.get_running_loop().time()
            events = await collect_events(leg, timeout=20)
            call_seconds.append(asyncio.get_running_loop().time() - started)
            done.set_result(events)
        except BaseException as exc:
            if not done.done():
                done.set_exception(exc)
            raise
        finally:
            session.close()

    tasks: set[asyncio.Task] = set()

    def on_invite(leg: InboundLeg) -> None:
        task = asyncio.get_running_loop().create_task(handle(leg))
        tasks.add(task)

    ua = await make_ua(on_invite=on_invite)
    sipp = await make_sipp("uac_call.xml", remote=f"{HOST}:{ua.port('udp')}", extra=["-d", "1500"])
    events = await asyncio.wait_for(done, 25)
    result = await sipp.wait(10)
    assert result.returncode == 0, result.describe()
    assert isinstance(events[-1], Ended)

    session = sessions[0]
    negotiated = session.negotiated
    assert negotiated is not None and (negotiated.codec, negotiated.dtmf_payload_type) == ("PCMA", 101)
    assert negotiated.remote_port == sipp.media_port
    audio = session.stats.sources.get(SIPP_AUDIO_SSRC)
    assert audio is not None, session.stats
    # SIPp stops the audio pcap when the DTMF pcap starts at +3 s: ~100 of its 236 packets go out, all must arrive
    assert 90 <= audio.received <= SIPP_AUDIO_PACKETS
    assert audio.expected == audio.received and audio.lost == 0 and audio.reordered == 0 and audio.duplicates == 0
    assert session.stats.lost == 0 and session.stats.invalid == 0
    assert digits == ["1"]
    # 30 ms payloads re-chunked into 20 ms frames (3 frames per 2 packets)
    assert session.stats.frames_delivered >= audio.received * 240 // 160
    assert all(len(f) == 320 for f in sink.frames)
    assert rms(sink.frames) > 300, "decoded audio should be speech, not silence"
    print(f"SIPp audio: {audio.received} packets, 0 lost, RMS {rms(sink.frames):.0f}; digits {digits}")
    # we kept the stream flowing (silence) for the whole call: one packet per 20 ms
    assert session.stats.packets_sent >= 0.9 * call_seconds[0] / 0.020
    assert session.stats.max_lateness < 0.1


async def test_outbound_call_rtp_echoed_by_sipp(make_ua, make_sipp, allocator) -> None:
    sipp = await make_sipp("media_uas_echo.xml", extra=["-rtp_echo"])
    ua = await make_ua()
    session = await RtpSession.open(allocator, HOST, HOST, codecs=("PCMU", "PCMA"))
    try:
        sink = Sink()
        session.add_sink(sink)
        leg = await ua.invite(f"sip:echo@{sipp.uri_host}", from_uri=f"sip:+15550001111@{HOST}",
                              sdp=session.local_sdp_offer())
        events = await collect_events(leg, timeout=10, until=Answered)
        answered = events[-1]
        assert isinstance(answered, Answered) and answered.sdp, events
        negotiated = session.accept_answer(answered.sdp)
        assert (negotiated.codec, negotiated.remote_port) == ("PCMU", sipp.media_port)
        playback = session.play(Tone(100))  # 2 s of 1 kHz
        assert await playback == "finished"
        sent_digits = await session.send_dtmf("5@100")
        assert sent_digits == "5"
        await asyncio.sleep(0.3)  # let the last echoes come back
        sent = session.stats.packets_sent
        await leg.hangup()
        await collect_events(leg, timeout=10)
    finally:
        session.close()
    result = await sipp.wait(10)
    assert result.returncode == 0, result.describe()

    echoed = session.stats.sources.get(session.ssrc)
    assert echoed is not None, session.stats.sources
    print(f"sent {sent}, echoed back {echoed.received} (lost {echoed.lost}), max lateness "
          f"{session.stats.max_lateness * 1000:.2f} ms")
    assert echoed.received >= 0.9 * sent, (echoed.received, sent)
    assert echoed.lost <= 0.1 * sent
    assert session.remote_address == (HOST, sipp.media_port)  # latched on SIPp's echo port: no move
    # our own tone came back: 100 loud frames (1 kHz at 10000 peak -> RMS ~7000) among the echoed silence
    loud = [f for f in sink.frames if rms([f]) > 5000]
    assert 90 <= len(loud) <= 101
    silence = g711.decode(g711.SILENCE["PCMU"], "PCMU")
    assert sum(1 for f in sink.frames if f == silence) > 10
    assert session.stats.dtmf_received == 1  # our RFC 4733 key echoed back is detected once
