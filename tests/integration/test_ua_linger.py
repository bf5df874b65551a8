"""What an ended call leaves behind in the user agent (issue #8): a record of atomic values, never the leg.

A scripted peer on a raw UDP socket talks to one `UserAgent`. After a call ends, the leg must be collectable as soon
as the test drops it (weakref dead after gc.collect()) while its dialog still lingers 64*T1 as an untracked record,
and that record must answer what the ended leg answered: 200 to a BYE that crosses ours, the same ACK again to a
retransmitted 2xx (also after our BYE), 481 to a re-INVITE or UPDATE, 500 to an out-of-order CSeq.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator

import pytest
from sipharness import HOST

from sip.leg import Answered, Ended, InboundLeg, Leg
from sip.message import Headers, Request, Response, parse_message
from sip.transaction import make_response
from sip.ua import UserAgent

pytestmark = pytest.mark.integration

SDP = (
    "v=0\r\no=peer 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


class Peer(asyncio.DatagramProtocol):
    """The far end, scripted by the test: sends bytes to the UA, hands over what the UA sends, parsed."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[tuple[bytes, Request | Response]] = asyncio.Queue()
        self.transport: asyncio.BaseTransport | None = None
        self.ua_port = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.inbox.put_nowait((data, parse_message(data)))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, message: Request | Response) -> None:
        assert self.transport is not None
        self.transport.sendto(message.to_bytes(), (HOST, self.ua_port))  # type: ignore[attr-defined]

    async def expect(self, what: str, timeout: float = 5.0) -> tuple[bytes, Request | Response]:
        """The next message that is not a retransmission of a 1xx; `what` is a method or a status ('200')."""
        while True:
            data, message = await asyncio.wait_for(self.inbox.get(), timeout)
            if isinstance(message, Response) and message.status < 200 and not what.startswith("1"):
                continue
            got = message.method if isinstance(message, Request) else str(message.status)
            assert got == what, f"expected {what}, got {data[:200]!r}"
            return data, message

    async def quiet(self, seconds: float = 0.3) -> list[bytes]:
        await asyncio.sleep(seconds)
        out = []
        while not self.inbox.empty():
            out.append(self.inbox.get_nowait()[0])
        return out

    def request(self, method: str, leg_uri: str, local_tag: str, remote_tag: str, call_id: str, cseq: int,
                extra: list[tuple[str, str]] | None = None) -> Request:
        """An in-dialog request from the peer (From: the peer's tag, To: the UA's)."""
        headers = Headers([
            ("Via", f"SIP/2.0/UDP {HOST}:{self.port};branch=z9hG4bK-{method.lower()}-{cseq};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:peer@{HOST}>;tag={local_tag}"),
            ("To", f"<{leg_uri}>;tag={remote_tag}"),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} {method}"),
            ("Contact", f"<sip:peer@{HOST}:{self.port}>"),
            *(extra or []),
        ])
        return Request(method, f"sip:softswitch@{HOST}:{self.ua_port}", headers)


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Peer, local_addr=(HOST, 0))
    yield protocol
    transport.close()


def _dead_after_collect(ref: weakref.ref[Leg]) -> bool:
    gc.collect()
    return ref() is None


def _assert_only_a_record_lingers(ua: UserAgent, dialog_id: tuple[str, str, str]) -> None:
    record = ua._dialogs.get(dialog_id)
    assert isinstance(record, tuple), record  # still answering for the dialog, without the leg
    gc.collect()
    assert not gc.is_tracked(record)  # atomic values only: a full collection never walks it


async def _answered_outbound_call(ua: UserAgent, peer: Peer) -> tuple[Leg, Request, bytes, Response]:
    leg = await ua.invite(f"sip:100@{HOST}:{peer.port}", from_uri=f"sip:caller@{HOST}", sdp=SDP)
    _, invite = await peer.expect("INVITE")
    assert isinstance(invite, Request)
    ok = make_response(invite, 200, to_tag="peertag", body=SDP.encode(), headers=Headers(
        [("Contact", f"<sip:peer@{HOST}:{peer.port}>"), ("Content-Type", "application/sdp")]))
    peer.send(ok)
    ack_wire, _ = await peer.expect("ACK")
    assert isinstance(await leg.next_event(5), Answered)
    return leg, invite, ack_wire, ok


async def test_outbound_call_ended_by_us_leaves_a_record_that_reacks_and_answers_a_crossing_bye(
        make_ua, peer: Peer) -> None:
    """we call the peer, it answers, we hang up -> the leg is gone from the UA at once; the peer's 200 that
    crosses our BYE is ACKed again with the same bytes, and its own BYE (crossing ours) gets 200, not 481."""
    ua = await make_ua()
    peer.ua_port = ua.port("udp")
    leg, invite, ack_wire, ok = await _answered_outbound_call(ua, peer)
    dialog_id = (invite.call_id, invite.from_tag, "peertag")
    await leg.hangup()
    _, bye = await peer.expect("BYE")
    peer.send(make_response(bye, 200))  # (a BYE still unanswered keeps its transaction's owner: the leg)
    await asyncio.sleep(0.05)
    assert isinstance(await leg.next_event(1), Ended)
    ref = weakref.ref(leg)
    del leg
    assert _dead_after_collect(ref), gc.get_referrers(ref())
    _assert_only_a_record_lingers(ua, dialog_id)

    peer.send(ok)  # a 2xx retransmission (the INVITE transaction is still in Accepted)
    again, _ = await peer.expect("ACK")
    assert again == ack_wire
    crossing = peer.request("BYE", f"sip:caller@{HOST}", "peertag", invite.from_tag, invite.call_id, 1)
    peer.send(crossing)
    _, reply = await peer.expect("200")
    assert reply.cseq == (1, "BYE")
    assert await peer.quiet() == []  # nothing more: no second BYE
    assert dialog_id in ua._dialogs


async def test_outbound_2xx_crossing_our_cancel_is_acked_byed_and_reacked_from_the_record(
        make_ua, peer: Peer) -> None:
    """we hang up before any response (CANCEL waits for a 1xx); the peer answers 200 anyway -> ACK and BYE; a
    retransmission of that 200 gets the same ACK again from the ended dialog's record."""
    ua = await make_ua()
    peer.ua_port = ua.port("udp")
    leg = await ua.invite(f"sip:100@{HOST}:{peer.port}", from_uri=f"sip:caller@{HOST}", sdp=SDP)
    _, invite = await peer.expect("INVITE")
    assert isinstance(invite, Request)
    await leg.hangup()
    assert isinstance(await leg.next_event(1), Ended)
    ok = make_response(invite, 200, to_tag="peertag", headers=Headers([("Contact", f"<sip:peer@{HOST}:{peer.port}>")]))
    peer.send(ok)
    ack_wire, _ = await peer.expect("ACK")
    _, bye = await peer.expect("BYE")
    peer.send(make_response(bye, 200))
    await asyncio.sleep(0.05)
    ref = weakref.ref(leg)
    del leg
    assert _dead_after_collect(ref)
    _assert_only_a_record_lingers(ua, (invite.call_id, invite.from_tag, "peertag"))
    peer.send(ok)
    again, _ = await peer.expect("ACK")
    assert again == ack_wire
    assert await peer.quiet() == []


async def _answered_inbound_call(ua: UserAgent, peer: Peer, legs: asyncio.Queue[InboundLeg]) -> tuple[
        InboundLeg, Request, Response]:
    invite = Request("INVITE", f"sip:100@{HOST}:{peer.ua_port}", Headers([
        ("Via", f"SIP/2.0/UDP {HOST}:{peer.port};branch=z9hG4bK-invite-1;rport"),
        ("Max-Forwards", "70"),
        ("From", f"<sip:peer@{HOST}>;tag=peertag"),
        ("To", f"<sip:100@{HOST}>"),
        ("Call-ID", "linger-inbound@peer"),
        ("CSeq", "1 INVITE"),
        ("Contact", f"<sip:peer@{HOST}:{peer.port}>"),
        ("Content-Type", "application/sdp"),
    ]), SDP.encode())
    peer.send(invite)
    leg = await asyncio.wait_for(legs.get(), 5)
    await leg.answer(SDP)
    _, ok = await peer.expect("200")
    assert isinstance(ok, Response)
    return leg, invite, ok


def _ack_for(invite: Request, ok: Response, port: int) -> Request:
    return Request("ACK", invite.uri, Headers([
        ("Via", f"SIP/2.0/UDP {HOST}:{port};branch=z9hG4bK-ack-1;rport"),
        ("Max-Forwards", "70"),
        ("From", invite.headers.get("From") or ""),
        ("To", ok.headers.get("To") or ""),
        ("Call-ID", invite.call_id),
        ("CSeq", "1 ACK"),
    ]))


async def test_inbound_call_ended_by_us_answers_late_requests_from_the_record(make_ua, peer: Peer) -> None:
    """the peer calls, we answer and hang up -> the leg is gone from the UA; the dialog's record answers as the
    ended leg did: BYE 200, INFO 200, OPTIONS 200, re-INVITE 481, UPDATE 481, other methods 405, old CSeq 500."""
    legs: asyncio.Queue[InboundLeg] = asyncio.Queue()
    ua = await make_ua(on_invite=legs.put_nowait)
    peer.ua_port = ua.port("udp")
    leg, invite, ok = await _answered_inbound_call(ua, peer, legs)
    peer.send(_ack_for(invite, ok, peer.port))
    await asyncio.wait_for(leg.acked.wait(), 5)
    await leg.hangup()
    _, bye = await peer.expect("BYE")
    peer.send(make_response(bye, 200))
    await asyncio.sleep(0.05)
    local_tag = ok.to_tag
    ref = weakref.ref(leg)
    del leg
    assert _dead_after_collect(ref)
    _assert_only_a_record_lingers(ua, (invite.call_id, local_tag, "peertag"))

    expected = [("BYE", 2, 200), ("INFO", 3, 200), ("OPTIONS", 4, 200), ("INVITE", 5, 481), ("UPDATE", 6, 481),
                ("MESSAGE", 7, 405), ("BYE", 7, 500)]
    for method, cseq, status in expected:
        peer.send(peer.request(method, f"sip:100@{HOST}", "peertag", local_tag, invite.call_id, cseq))
        _, reply = await peer.expect(str(status))
        assert reply.cseq == (cseq, method)
        if status == 481 and method == "INVITE":  # a non-2xx final to an INVITE wants its ACK
            assert isinstance(reply, Response)
            ack = peer.request("ACK", f"sip:100@{HOST}", "peertag", local_tag, invite.call_id, cseq)
            ack.headers.replace_first("Via", f"SIP/2.0/UDP {HOST}:{peer.port};branch=z9hG4bK-invite-{cseq};rport")
            peer.send(ack)
    assert await peer.quiet() == []


async def test_inbound_hangup_before_the_ack_keeps_the_leg_until_its_bye_is_out(make_ua, peer: Peer) -> None:
    """we answer and hang up before the caller's ACK -> no BYE yet (RFC 3261 §15); the ACK arrives -> BYE goes
    out, and only then does the UA let go of the leg."""
    legs: asyncio.Queue[InboundLeg] = asyncio.Queue()
    ua = await make_ua(on_invite=legs.put_nowait)
    peer.ua_port = ua.port("udp")
    leg, invite, ok = await _answered_inbound_call(ua, peer, legs)
    await leg.hangup()
    assert isinstance(await leg.next_event(1), Answered)
    assert isinstance(await leg.next_event(1), Ended)
    ref = weakref.ref(leg)
    del leg
    assert not _dead_after_collect(ref)  # the UA still needs it: the BYE waits for the ACK
    peer.send(_ack_for(invite, ok, peer.port))
    _, bye = await peer.expect("BYE")
    peer.send(make_response(bye, 200))
    await asyncio.sleep(0.05)
    assert _dead_after_collect(ref)
    _assert_only_a_record_lingers(ua, (invite.call_id, ok.to_tag, "peertag"))


async def test_a_late_2xx_from_another_fork_is_acked_and_byed_after_the_call_ended(make_ua, peer: Peer) -> None:
    """a forking proxy delivers a second branch's 200 after our call ended: the UA ACKs it and sends it a BYE
    (RFC 3261 §13.2.2.4) from the response alone; a 2xx for a call we never placed stays a counted stray."""
    ua = await make_ua()
    peer.ua_port = ua.port("udp")
    leg, invite, _, _ = await _answered_outbound_call(ua, peer)
    await leg.hangup()
    _, bye = await peer.expect("BYE")
    peer.send(make_response(bye, 200))
    assert isinstance(await leg.next_event(1), Ended)

    fork = make_response(invite, 200, to_tag="forktag", body=SDP.encode(), headers=Headers(
        [("Contact", f"<sip:fork@{HOST}:{peer.port}>"), ("Content-Type", "application/sdp")]))
    peer.send(fork)
    _, ack = await peer.expect("ACK")
    _, fork_bye = await peer.expect("BYE")
    for request in (ack, fork_bye):
        assert isinstance(request, Request)
        assert request.uri == f"sip:fork@{HOST}:{peer.port}" and request.to_tag == "forktag"
        assert request.call_id == invite.call_id and request.from_tag == invite.from_tag
    assert ack.cseq == (invite.cseq[0], "ACK") and fork_bye.cseq[0] > invite.cseq[0]
    peer.send(make_response(fork_bye, 200))
    assert await peer.quiet() == []

    strays = ua.stats["stray_responses"]
    unknown = make_response(invite, 200, to_tag="other", headers=Headers([("Contact", f"<sip:x@{HOST}>")]))
    unknown.headers.set("Call-ID", "never-placed@peer")
    peer.send(unknown)
    assert await peer.quiet() == [] and ua.stats["stray_responses"] == strays + 1


async def test_forwarded_leg_events_reach_the_owner_in_order_and_no_queue_is_made(make_ua, peer: Peer) -> None:
    """Leg.forward_events: what an owner with its own inbox uses (a Dial's B legs, a call's A leg). Events already
    queued are handed over first; a leg forwarded before its first event never makes its queue (fewer objects for
    the collector per live call); None puts events back on the queue."""
    ua = await make_ua()
    peer.ua_port = ua.port("udp")
    leg = await ua.invite(f"sip:100@{HOST}:{peer.port}", from_uri=f"sip:caller@{HOST}", sdp=SDP)
    got: list[object] = []
    leg.forward_events(got.append)
    _, invite = await peer.expect("INVITE")
    assert isinstance(invite, Request)
    peer.send(make_response(invite, 180, to_tag="peertag"))
    ok = make_response(invite, 200, to_tag="peertag", body=SDP.encode(), headers=Headers(
        [("Contact", f"<sip:peer@{HOST}:{peer.port}>"), ("Content-Type", "application/sdp")]))
    peer.send(ok)
    await peer.expect("ACK")
    for _ in range(100):
        if any(isinstance(e, Answered) for e in got):
            break
        await asyncio.sleep(0.01)
    assert [type(e).__name__ for e in got] == ["Ringing", "Answered"]
    assert leg._events is None  # never needed
    leg.forward_events(None)
    await leg.hangup()
    _, bye = await peer.expect("BYE")
    assert isinstance(bye, Request)
    peer.send(make_response(bye, 200))
    assert isinstance(await leg.next_event(5), Ended)  # back on the queue once forwarding stops
    assert len(got) == 2


async def test_events_queued_before_forwarding_are_handed_over_first(make_ua, peer: Peer) -> None:
    ua = await make_ua()
    peer.ua_port = ua.port("udp")
    leg, _, _, _ = await _answered_outbound_call(ua, peer)  # took Answered from the queue
    await leg.hangup()
    _, bye = await peer.expect("BYE")
    assert isinstance(bye, Request)
    peer.send(make_response(bye, 200))
    await asyncio.wait_for(leg.ended.wait(), 5)
    got: list[object] = []
    leg.forward_events(got.append)  # Ended was queued before: it comes first, at once
    assert [type(e).__name__ for e in got] == ["Ended"]
    assert leg.events.empty()
