"""A real softphone: baresip (headless, tone file in, /dev/null out) calls us and is called by us."""

from __future__ import annotations

import asyncio

import pytest
from sipharness import HOST, collect_events, free_port_block, make_sdp

from sip.leg import Answered, Ended, InboundLeg, Ringing

pytestmark = pytest.mark.integration


async def test_we_call_baresip_and_hang_up(make_ua, make_baresip, media_sink) -> None:
    callee = await make_baresip("callee", quit_after=15)
    ua = await make_ua()
    leg = await ua.invite(f"sip:bob@{HOST}:{callee.sip_port}", from_uri=f"sip:alice@{HOST}",
                          sdp=make_sdp(media_sink))
    events = await collect_events(leg, timeout=10, until=Answered)
    assert isinstance(events[-1], Answered), events
    assert any(isinstance(e, Ringing) for e in events)  # baresip rings (180) before auto-answering
    answer = events[-1].sdp or ""
    assert "c=IN IP4 127.0.0.1" in answer and "m=audio " in answer and "PCMA/8000" in answer
    output = await callee.wait_for("Call established", 5)
    assert "answering call" in output and "with 200" in output
    # hold >= 1 s: baresip prints its "Call with ... terminated (duration: ...)" summary only when the call
    # lasted at least one whole second (call.c print_summary returns early on a 0 s duration)
    await asyncio.sleep(1.2)
    await leg.hangup()
    assert leg.end_cause is not None and (leg.end_cause.kind, leg.end_cause.by) == ("bye", "local")
    output = await callee.wait_for("terminated", 5)  # "Call with sip:alice@... terminated (duration: ...)"
    assert f"Call with sip:alice@{HOST} terminated" in output
    await asyncio.sleep(0.2)
    assert ua.stats["rx_response_200"] == 2  # the 200 to our INVITE and the 200 to our BYE
    assert "Connection reset by peer" in output  # baresip's wording for "the peer sent BYE"


async def test_baresip_calls_us_and_hangs_up(make_ua, make_baresip, media_sink) -> None:
    legs: asyncio.Queue[InboundLeg] = asyncio.Queue()
    sdp = make_sdp(media_sink)

    async def answer(leg: InboundLeg) -> None:
        await leg.ring()
        await asyncio.sleep(0.1)
        await leg.answer(sdp)

    tasks = []

    def on_invite(leg: InboundLeg) -> None:
        legs.put_nowait(leg)
        tasks.append(asyncio.ensure_future(answer(leg)))

    ua = await make_ua(on_invite=on_invite)
    # baresip dials at once and quits (hanging up with a BYE) after `quit_after` seconds
    caller = await make_baresip("caller", quit_after=3, commands=[f"/dial sip:bob@{HOST}:{ua.port('udp')}"])
    leg = await asyncio.wait_for(legs.get(), 5)
    await asyncio.gather(*tasks)
    events = await collect_events(leg, timeout=10)
    assert isinstance(events[0], Answered) and "m=audio " in (events[0].sdp or "")
    assert isinstance(events[-1], Ended)
    assert leg.end_cause is not None and (leg.end_cause.kind, leg.end_cause.by) == ("bye", "remote")
    assert leg.acked.is_set()
    assert leg.headers.get("From", "").find("alice@127.0.0.1") != -1
    await caller.wait(5)
    output = caller.output
    assert f"Call established: sip:bob@{HOST}:{ua.port('udp')}" in output
    assert "terminated" in output


async def test_audio_both_ways_with_baresip(make_ua, make_baresip, tmp_path) -> None:
    """Our RtpSession against baresip (which plays tone_8k.wav): audio arrives with continuous sequence numbers and
    real energy, and baresip reports the packets we sent it."""
    from engine_env import Heard, rms

    from media.ports import PortAllocator
    from media.session import RtpSession
    from media.sources import Tone

    callee = await make_baresip("callee", quit_after=15)
    ua = await make_ua()
    base = free_port_block(10)
    base += base % 2
    media = await RtpSession.open(PortAllocator(base, base + 9), HOST, HOST)
    heard = Heard()
    media.add_sink(heard)
    try:
        leg = await ua.invite(f"sip:bob@{HOST}:{callee.sip_port}", from_uri=f"sip:alice@{HOST}",
                              sdp=media.local_sdp_offer())
        events = await collect_events(leg, timeout=10, until=Answered)
        media.accept_answer(events[-1].sdp or "")
        media.play(Tone([1000.0], [(10.0, 0.0)]))
        await asyncio.sleep(3.0)
        await leg.hangup()
        await asyncio.sleep(0.3)
        stats = media.stats
        assert stats.packets_received >= 120  # ~3 s of 20 ms packets
        assert stats.lost == 0  # continuous sequence numbers
        assert sum(1 for f in heard.frames if rms(f) > 300) > 100  # baresip's tone, decoded
        output = await callee.wait_for("terminated", 5)
        assert "incoming rtp for 'audio' established" in output or "Receive" in output
    finally:
        media.close()
