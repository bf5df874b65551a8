"""Inbound legs: SIPp places calls (and other requests) into our UserAgent; a tiny UAS built on `Leg` answers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from sipharness import HOST, collect_events, header_param, make_sdp, parse_trace

from sip.auth import DigestServer
from sip.leg import Answered, Ended, InboundLeg, LegEvent
from sip.ua import InboundAuth

pytestmark = pytest.mark.integration

Behaviour = Callable[[InboundLeg], Awaitable[None]]


class Callee:
    """on_invite target: runs `behaviour(leg)`, then records the leg's events until it ends."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.legs: list[InboundLeg] = []
        self.events: dict[InboundLeg, list[LegEvent]] = {}
        self.arrived = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def __call__(self, leg: InboundLeg) -> None:
        self.legs.append(leg)
        self.arrived.set()
        self.tasks.append(asyncio.ensure_future(self._run(leg)))

    async def _run(self, leg: InboundLeg) -> None:
        await self.behaviour(leg)
        self.events[leg] = await collect_events(leg, timeout=20)

    async def finished(self, timeout: float = 20) -> InboundLeg:
        """The (single) leg, once its behaviour ran and it ended; re-raises the behaviour's errors."""
        await asyncio.wait_for(self.arrived.wait(), timeout)
        await asyncio.wait_for(asyncio.gather(*self.tasks), timeout)
        assert len(self.legs) == 1, self.legs
        return self.legs[0]


def ring_and_answer(sdp: str, then: Behaviour | None = None, ring_for: float = 0.05) -> Behaviour:
    async def behaviour(leg: InboundLeg) -> None:
        await leg.ring()
        await asyncio.sleep(ring_for)
        await leg.answer(sdp)
        if then is not None:
            await then(leg)

    return behaviour


async def just_ring(leg: InboundLeg) -> None:
    await leg.ring()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_inbound_call_answered_and_caller_hangs_up(make_ua, make_sipp, media_sink, transport: str) -> None:
    callee = Callee(ring_and_answer(make_sdp(media_sink)))
    ua = await make_ua(transports=("udp", "tcp"), on_invite=callee)
    sipp = await make_sipp("uac_call.xml", remote=f"{HOST}:{ua.port(transport)}", transport=transport,
                           extra=["-d", "200"])
    leg = await callee.finished()
    result = await sipp.wait(15)
    assert result.returncode == 0, result.describe()
    events = callee.events[leg]
    assert isinstance(events[0], Answered) and events[0].sdp and "PCMA/8000" in events[0].sdp
    assert isinstance(events[-1], Ended)
    assert leg.end_cause is not None and (leg.end_cause.kind, leg.end_cause.by) == ("bye", "remote")
    assert leg.headers.get("X-PH-Tenant") == "acme"
    assert leg.peer.transport == transport
    assert leg.authenticated_user is None
    trace = parse_trace(result.messages)
    statuses = [m.status for m in trace if m.direction == "received" and m.status]
    assert statuses[:3] == [100, 180, 200] and statuses[-1] == 200
    ok = next(m for m in trace if m.status == 200)
    assert ok.header("Contact") and ok.body and f"m=audio {media_sink} " in ok.body
    assert header_param(ok.header("To") or "", "tag") == leg.local_tag
    assert leg.acked.is_set()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_inbound_call_we_hang_up(make_ua, make_sipp, media_sink, transport: str) -> None:
    async def hang_up(leg: InboundLeg) -> None:
        await asyncio.wait_for(leg.acked.wait(), 5)
        await asyncio.sleep(0.2)
        await leg.hangup()

    callee = Callee(ring_and_answer(make_sdp(media_sink), then=hang_up))
    ua = await make_ua(transports=("udp", "tcp"), on_invite=callee)
    sipp = await make_sipp("uac_wait_bye.xml", remote=f"{HOST}:{ua.port(transport)}", transport=transport)
    leg = await callee.finished()
    result = await sipp.wait(15)
    assert result.returncode == 0, result.describe()
    assert leg.end_cause is not None and (leg.end_cause.kind, leg.end_cause.by) == ("bye", "local")
    trace = parse_trace(result.messages)
    bye = next(m for m in trace if m.direction == "received" and m.method == "BYE")
    # our BYE goes to the caller's Contact, from our To tag to its From tag
    assert bye.first_line.startswith("BYE sip:caller@127.0.0.1:")
    assert header_param(bye.header("From") or "", "tag") == leg.local_tag
    assert header_param(bye.header("To") or "", "tag").endswith("SIPpTag001")
    assert ua.stats["rx_response_200"] == 1  # the caller's 200 for our BYE


async def test_inbound_cancel_while_ringing(make_ua, make_sipp) -> None:
    callee = Callee(just_ring)
    ua = await make_ua(on_invite=callee)
    sipp = await make_sipp("uac_cancel.xml", remote=f"{HOST}:{ua.port('udp')}")
    leg = await callee.finished()
    assert leg.end_cause is not None and (leg.end_cause.kind, leg.end_cause.by) == ("cancelled", "remote")
    assert [type(e) for e in callee.events[leg]] == [Ended]
    result = await sipp.wait(10)
    assert result.returncode == 0, result.describe()
    trace = parse_trace(result.messages)
    assert [m.status for m in trace if m.direction == "received"] == [100, 180, 200, 487]
    assert [m.method for m in trace if m.direction == "sent"] == ["INVITE", "CANCEL", "ACK"]
    # the 487 closes the INVITE transaction (CSeq INVITE), the 200 the CANCEL one
    final = [m for m in trace if m.status in (200, 487)]
    assert [m.header("CSeq") for m in final] == ["1 CANCEL", "1 INVITE"]


def _auth_uri(ua) -> list[str]:
    """SIPp signs digest-uri "sip:" + this; make it the Request-URI of uac_auth_client.xml."""
    return ["-auth_uri", f"service@{HOST}:{ua.port('udp')}"]


def _inbound_auth() -> InboundAuth:
    # MD5 only: DigestServer offers SHA-256 first (RFC 8760 §2.4, strongest first), and SIPp 3.6.1 answers only
    # the first Proxy-Authenticate and knows only MD5/AKA ("createAuthHeader: authentication must use MD5 or
    # AKAv1-MD5"). test_inbound_digest_auth_default_server_offers_sha256_first pins that behaviour down.
    server = DigestServer("softswitch.test", b"secret", algorithms=("MD5",))
    return InboundAuth(server, password_for={"alice": "alice-secret-1"}.get, required=lambda request: True)


async def test_inbound_digest_auth_accepts_the_right_password(make_ua, make_sipp, media_sink) -> None:
    async def hang_up(leg: InboundLeg) -> None:
        await asyncio.wait_for(leg.acked.wait(), 5)
        await leg.hangup()

    callee = Callee(ring_and_answer(make_sdp(media_sink), then=hang_up))
    ua = await make_ua(on_invite=callee, inbound_auth=_inbound_auth())
    sipp = await make_sipp("uac_auth_client.xml", remote=f"{HOST}:{ua.port('udp')}",
                           extra=[*_auth_uri(ua), "-au", "alice", "-ap", "alice-secret-1"])
    leg = await callee.finished()
    result = await sipp.wait(15)
    assert result.returncode == 0, result.describe()
    assert leg.authenticated_user == "alice"
    assert any(isinstance(e, Answered) for e in callee.events[leg])
    assert leg.end_cause is not None and (leg.end_cause.kind, leg.end_cause.by) == ("bye", "local")
    assert ua.stats["auth_missing"] == 1  # the first INVITE, challenged
    assert ua.stats["tx_response_407"] == 1
    trace = parse_trace(result.messages)
    challenge = next(m for m in trace if m.status == 407)
    assert any('realm="softswitch.test"' in v for v in challenge.headers("Proxy-Authenticate"))
    retry = [m for m in trace if m.direction == "sent" and m.method == "INVITE"][1]
    assert 'username="alice"' in (retry.header("Proxy-Authorization") or "")


async def test_inbound_digest_auth_refuses_a_wrong_password(make_ua, make_sipp) -> None:
    callee = Callee(just_ring)
    ua = await make_ua(on_invite=callee, inbound_auth=_inbound_auth())
    sipp = await make_sipp("uac_auth_client.xml", remote=f"{HOST}:{ua.port('udp')}",
                           extra=[*_auth_uri(ua), "-au", "alice", "-ap", "not-alices-password"])
    result = await sipp.wait(15)
    assert (result.returncode, result.timed_out) == (1, False), result.describe()
    assert not callee.legs  # the application never saw the call
    trace = parse_trace(result.messages)
    received = [m.status for m in trace
                if m.direction == "received" and m.status and "INVITE" in (m.header("CSeq") or "")]
    assert received == [407, 407], received  # challenged, then refused with a fresh challenge
    # (SIPp then aborts the failed call with a BYE outside any dialog, which we answer 481)
    assert [m.method for m in trace if m.direction == "sent"][:4] == ["INVITE", "ACK", "INVITE", "ACK"]
    assert ua.stats["auth_missing"] == 1 and ua.stats["auth_bad_response"] == 1
    assert ua.stats["tx_response_407"] == 2 and not ua.legs
    assert "not-alices-password" not in result.messages


async def test_inbound_digest_auth_default_server_offers_sha256_first(make_ua, make_sipp) -> None:
    """With the default DigestServer both challenges go out, SHA-256 first; SIPp 3.6.1 cannot answer that one
    (it reads only the first challenge), so it gives up and the application never sees the call."""
    callee = Callee(just_ring)
    server = DigestServer("softswitch.test", b"secret")
    auth = InboundAuth(server, password_for={"alice": "alice-secret-1"}.get, required=lambda request: True)
    ua = await make_ua(on_invite=callee, inbound_auth=auth)
    sipp = await make_sipp("uac_auth_client.xml", remote=f"{HOST}:{ua.port('udp')}",
                           extra=[*_auth_uri(ua), "-au", "alice", "-ap", "alice-secret-1"])
    result = await sipp.wait(15)
    assert result.returncode != 0 and not result.timed_out, result.describe()  # SIPp: fatal error (255)
    challenge = next(m for m in parse_trace(result.messages) if m.status == 407)
    algorithms = [v.split("algorithm=")[1].split(",")[0] for v in challenge.headers("Proxy-Authenticate")]
    assert algorithms == ["SHA-256", "MD5"]
    assert "must use MD5" in result.errors
    assert not callee.legs


async def test_inbound_hangup_right_after_answer_waits_for_the_ack(make_ua, make_sipp, media_sink) -> None:
    """RFC 3261 §15: the callee MUST NOT send BYE before the ACK for its 2xx arrived (or the 2xx transaction
    ended). The caller here takes 700 ms to ACK; our hangup() comes right after answer()."""

    async def hang_up_at_once(leg: InboundLeg) -> None:
        await leg.hangup()

    callee = Callee(ring_and_answer(make_sdp(media_sink), then=hang_up_at_once))
    ua = await make_ua(on_invite=callee)
    sipp = await make_sipp("uac_wait_bye.xml", remote=f"{HOST}:{ua.port('udp')}", extra=["-d", "700"])
    leg = await callee.finished()
    result = await sipp.wait(15)
    assert result.returncode == 0, result.describe()
    assert leg.end_cause is not None and (leg.end_cause.kind, leg.end_cause.by) == ("bye", "local")
    assert leg.acked.is_set()
    trace = parse_trace(result.messages)
    order = [m.method or m.status for m in trace]
    assert order.index("ACK") < order.index("BYE"), order


async def test_inbound_bye_in_early_dialog_gets_487_for_the_invite(make_ua, make_sipp) -> None:
    """RFC 3261 §15.1.2: a caller may end an early dialog with BYE; the UAS answers the BYE 200 and the still
    pending INVITE 487 (otherwise that INVITE transaction never completes)."""
    callee = Callee(just_ring)
    ua = await make_ua(on_invite=callee)
    sipp = await make_sipp("uac_bye_early.xml", remote=f"{HOST}:{ua.port('udp')}")
    leg = await callee.finished()
    result = await sipp.wait(10)
    assert result.returncode == 0, result.describe()
    assert leg.end_cause is not None and (leg.end_cause.kind, leg.end_cause.by) == ("bye", "remote")
    trace = parse_trace(result.messages)
    finals = [(m.status, m.header("CSeq")) for m in trace if m.direction == "received" and (m.status or 0) >= 200]
    assert finals == [(200, "2 BYE"), (487, "1 INVITE")]
    await asyncio.sleep(0.1)
    assert ua.stats["rx_request_ACK"] == 1 and ua.stats["ack_unmatched"] == 0  # the 487's ACK was absorbed
