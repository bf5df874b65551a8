"""RFC 3261 §17 / RFC 6026 transactions driven by a fake clock (plain floats): every timer and every transition,
over UDP and TCP, plus matching, CANCEL, the UAS 2xx retransmission (AckWait) and response routing."""

from __future__ import annotations

import pytest

from sip.events import (
    AckTimedOut,
    Address,
    InviteCancelled,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TransactionTimedOut,
    TuEvent,
)
from sip.message import Request, Response, parse_message
from sip.transaction import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    ServerTransaction,
    State,
    TimerConfig,
    TransactionLayer,
    make_response,
    response_address,
    server_key,
)

UDP = Address("udp", "127.0.0.1", 5090)
TCP = Address("tcp", "127.0.0.1", 5090)
T1, T2, T4 = 0.5, 4.0, 5.0

A_TIMES = [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]  # Timer A: doubling, not capped
E_TIMES = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]  # Timer E/G: doubling capped at T2


# -- helpers -----------------------------------------------------------------------------------------------------------
def request_bytes(
    method: str,
    *,
    branch: str | None = "z9hG4bK776asdhds",
    call_id: str = "a84b4c76e66710@pc33.example.com",
    cseq: int = 1,
    cseq_method: str | None = None,
    transport: str = "UDP",
    sent_by: str = "127.0.0.1:5090",
    via_params: str = "",
    uri: str = "sip:bob@127.0.0.1:5060",
    from_tag: str = "1928301774",
    to_tag: str = "",
    routes: tuple[str, ...] = (),
    body: bytes = b"",
) -> bytes:
    """Realistic request bytes (RFC 3261 §24.2 style)."""
    via = f"SIP/2.0/{transport} {sent_by}"
    if branch is not None:
        via += f";branch={branch}"
    via += via_params
    to = "Bob <sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: {via}",
        "Max-Forwards: 70",
        *(f"Route: {r}" for r in routes),
        f"To: {to}",
        f"From: Alice <sip:alice@example.com>;tag={from_tag}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
        "Contact: <sip:alice@127.0.0.1:5090>",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def req(method: str, **kw: object) -> Request:
    msg = parse_message(request_bytes(method, **kw))  # type: ignore[arg-type]
    assert isinstance(msg, Request)
    return msg


def invite(**kw: object) -> Request:
    return req("INVITE", body=b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n", **kw)


def resp(request: Request, status: int, *, to_tag: str | None = "8321234356") -> Response:
    """A response as the far end would send it, through the wire and the parser."""
    msg = parse_message(make_response(request, status, to_tag=to_tag).to_bytes())
    assert isinstance(msg, Response)
    return msg


def parse_sent(wire: bytes) -> Request | Response:
    return parse_message(wire)


def advance(layer: TransactionLayer, until: float) -> list[tuple[float, list[TuEvent], list[tuple[bytes, Address]]]]:
    """Run every timer due up to `until`, each exactly at its deadline; a log of (time, events, datagrams)."""
    log: list[tuple[float, list[TuEvent], list[tuple[bytes, Address]]]] = []
    while (deadline := layer.next_deadline()) is not None and deadline <= until:
        events = layer.handle_timers(deadline)
        log.append((deadline, events, layer.datagrams_to_send()))
    return log


def sends(log: list[tuple[float, list[TuEvent], list[tuple[bytes, Address]]]]) -> list[float]:
    return [t for t, _, out in log for _ in out]


def assert_idle(layer: TransactionLayer) -> None:
    assert layer.active == 0
    assert layer.next_deadline() is None


@pytest.fixture
def layer() -> TransactionLayer:
    return TransactionLayer(TimerConfig())


def start_server_invite(layer: TransactionLayer, source: Address = UDP, **kw: object) -> ServerInviteTransaction:
    transport = "TCP" if source.reliable else "UDP"
    events = layer.receive(invite(transport=transport, **kw), source, 0.0)
    assert len(events) == 1 and isinstance(events[0], RequestReceived)
    tx = events[0].tx
    assert isinstance(tx, ServerInviteTransaction)
    assert layer.datagrams_to_send() == []
    return tx


# -- client INVITE -----------------------------------------------------------------------------------------------------
def test_client_invite_udp_timer_a_then_timer_b(layer: TransactionLayer) -> None:
    request = invite()
    tx = layer.send_request(request, UDP, 0.0)
    assert isinstance(tx, ClientInviteTransaction) and tx.state is State.CALLING
    first = layer.datagrams_to_send()
    assert first == [(request.to_bytes(), UDP)]
    assert layer.next_deadline() == 0.5

    log = advance(layer, 31.9)
    assert sends(log) == A_TIMES
    assert all(out == first for _, _, out in log)
    assert all(events == [] for _, events, _ in log)
    assert tx.retransmissions == 6 and layer.retransmissions == 6

    assert layer.next_deadline() == 32.0
    events = layer.handle_timers(32.0)
    assert len(events) == 1 and isinstance(events[0], TransactionTimedOut) and events[0].tx is tx
    assert tx.terminated and layer.datagrams_to_send() == []
    assert_idle(layer)


def test_client_invite_tcp_no_retransmissions_timer_b_fires(layer: TransactionLayer) -> None:
    tx = layer.send_request(invite(transport="TCP"), TCP, 0.0)
    assert len(layer.datagrams_to_send()) == 1
    assert layer.next_deadline() == 32.0
    assert layer.handle_timers(31.99) == [] and layer.datagrams_to_send() == []
    events = layer.handle_timers(32.0)
    assert [type(e) for e in events] == [TransactionTimedOut]
    assert tx.terminated and layer.retransmissions == 0
    assert_idle(layer)


def test_client_invite_1xx_stops_a_and_b_and_is_delivered(layer: TransactionLayer) -> None:
    request = invite()
    tx = layer.send_request(request, UDP, 0.0)
    layer.datagrams_to_send()
    advance(layer, 0.5)  # one retransmission
    trying = resp(request, 100, to_tag=None)
    events = layer.receive(trying, UDP, 0.7)
    assert len(events) == 1 and isinstance(events[0], ResponseReceived)
    assert events[0].response is trying and events[0].tx is tx
    assert tx.state is State.PROCEEDING
    assert layer.next_deadline() is None  # A and B stopped
    assert advance(layer, 100.0) == []

    ringing = resp(request, 180)
    events = layer.receive(ringing, UDP, 1.0)
    assert [e.response.status for e in events if isinstance(e, ResponseReceived)] == [180]
    events = layer.receive(resp(request, 183), UDP, 1.1)
    assert [e.response.status for e in events if isinstance(e, ResponseReceived)] == [183]
    assert layer.datagrams_to_send() == []
    assert tx.state is State.PROCEEDING and layer.active == 1
    assert tx.retransmissions == 1


@pytest.mark.parametrize("provisional", [True, False])
def test_client_invite_2xx_accepted_retransmissions_delivered_timer_m(layer: TransactionLayer,
                                                                       provisional: bool) -> None:
    request = invite()
    tx = layer.send_request(request, UDP, 0.0)
    layer.datagrams_to_send()
    if provisional:
        layer.receive(resp(request, 180), UDP, 0.2)
    ok = resp(request, 200)
    events = layer.receive(ok, UDP, 1.0)
    assert len(events) == 1 and isinstance(events[0], ResponseReceived) and events[0].response is ok
    assert tx.state is State.ACCEPTED
    assert layer.datagrams_to_send() == []  # the TU ACKs a 2xx, not the transaction

    again = resp(request, 200)
    events = layer.receive(again, UDP, 2.0)
    assert len(events) == 1 and isinstance(events[0], ResponseReceived) and events[0].response is again
    assert layer.receive(resp(request, 180), UDP, 2.5) == []  # late 1xx absorbed
    assert layer.receive(resp(request, 486), UDP, 2.6) == []  # non-2xx in Accepted absorbed
    assert layer.datagrams_to_send() == []

    assert layer.next_deadline() == 33.0  # Timer M = 64*T1 from the first 2xx
    assert layer.handle_timers(33.0) == []
    assert tx.terminated and layer.retransmissions == 0
    assert_idle(layer)
    # after Timer M a 2xx retransmission is stray: the TU still re-ACKs it
    events = layer.receive(resp(request, 200), UDP, 40.0)
    assert [type(e) for e in events] == [StrayResponse]


def test_client_invite_non2xx_acked_by_transaction_retransmission_absorbed(layer: TransactionLayer) -> None:
    route = "<sip:proxy.example.com;lr>"
    request = invite(routes=(route,))
    tx = layer.send_request(request, UDP, 0.0)
    layer.datagrams_to_send()
    busy = resp(request, 486, to_tag="busytag")
    events = layer.receive(busy, UDP, 0.3)
    assert len(events) == 1 and isinstance(events[0], ResponseReceived) and events[0].response is busy
    assert tx.state is State.COMPLETED

    out = layer.datagrams_to_send()
    assert len(out) == 1 and out[0][1] == UDP
    ack = parse_sent(out[0][0])
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert ack.uri == request.uri
    assert ack.headers.get_all("Via") == [request.top_via]
    assert ack.branch == request.branch
    assert ack.to_tag == "busytag"
    assert ack.headers.get("To") == busy.headers.get("To")
    assert ack.headers.get("From") == request.headers.get("From")
    assert ack.call_id == request.call_id
    assert ack.cseq == (1, "ACK")
    assert ack.headers.get_all("Route") == [route]
    assert ack.body == b""

    # retransmitted 486: ACK again, not delivered again
    assert layer.receive(resp(request, 486, to_tag="busytag"), UDP, 1.0) == []
    assert layer.datagrams_to_send() == out
    assert layer.retransmissions == 1 and tx.retransmissions == 1
    assert layer.receive(resp(request, 180), UDP, 1.1) == []  # 1xx in Completed absorbed
    assert layer.receive(resp(request, 200), UDP, 1.2) == []  # 2xx in Completed absorbed
    assert layer.datagrams_to_send() == []

    assert layer.next_deadline() == pytest.approx(32.3)  # Timer D 32 s, Timer A stopped
    log = advance(layer, 100.0)
    assert sends(log) == [] and [e for _, events, _ in log for e in events] == []
    assert tx.terminated
    assert_idle(layer)


def test_client_invite_tcp_timer_d_zero(layer: TransactionLayer) -> None:
    request = invite(transport="TCP")
    tx = layer.send_request(request, TCP, 0.0)
    layer.datagrams_to_send()
    events = layer.receive(resp(request, 603), TCP, 2.0)
    assert [type(e) for e in events] == [ResponseReceived]
    assert len(layer.datagrams_to_send()) == 1  # the ACK
    assert tx.state is State.COMPLETED
    assert layer.next_deadline() == 2.0  # Timer D = 0
    assert layer.handle_timers(2.0) == []
    assert tx.terminated
    assert_idle(layer)


def test_send_request_rejects_non_rfc3261_branch_and_ack(layer: TransactionLayer) -> None:
    with pytest.raises(ValueError):
        layer.send_request(invite(branch="1234"), UDP, 0.0)
    with pytest.raises(ValueError):
        layer.send_request(req("ACK"), UDP, 0.0)
    assert layer.active == 0 and layer.datagrams_to_send() == []


# -- client non-INVITE -------------------------------------------------------------------------------------------------
def test_client_non_invite_timer_e_capped_at_t2_then_timer_f(layer: TransactionLayer) -> None:
    request = req("OPTIONS")
    tx = layer.send_request(request, UDP, 0.0)
    assert isinstance(tx, ClientNonInviteTransaction) and tx.state is State.TRYING
    first = layer.datagrams_to_send()
    log = advance(layer, 31.9)
    assert sends(log) == E_TIMES
    intervals = [b - a for a, b in zip([0.0, *E_TIMES], E_TIMES, strict=False)]
    assert intervals == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert all(out == first for _, _, out in log)
    assert tx.retransmissions == 10 and layer.retransmissions == 10
    events = layer.handle_timers(32.0)
    assert len(events) == 1 and isinstance(events[0], TransactionTimedOut) and events[0].tx is tx
    assert_idle(layer)


def test_client_non_invite_proceeding_retransmits_at_t2(layer: TransactionLayer) -> None:
    request = req("BYE", to_tag="8321234356")
    tx = layer.send_request(request, UDP, 0.0)
    layer.datagrams_to_send()
    events = layer.receive(resp(request, 100, to_tag=None), UDP, 0.2)
    assert [type(e) for e in events] == [ResponseReceived]
    assert tx.state is State.PROCEEDING
    log = advance(layer, 31.9)
    # the pending E fires at 0.5, then every T2
    assert sends(log) == [0.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5]
    events = layer.receive(resp(request, 100, to_tag=None), UDP, 30.0)  # further 1xx delivered
    assert [type(e) for e in events] == [ResponseReceived]
    events = layer.handle_timers(32.0)
    assert [type(e) for e in events] == [TransactionTimedOut]
    assert_idle(layer)


def test_client_non_invite_tcp_no_e_timer_f(layer: TransactionLayer) -> None:
    tx = layer.send_request(req("OPTIONS", transport="TCP"), TCP, 0.0)
    layer.datagrams_to_send()
    assert layer.next_deadline() == 32.0
    events = layer.handle_timers(32.0)
    assert [type(e) for e in events] == [TransactionTimedOut]
    assert tx.terminated and layer.retransmissions == 0
    assert_idle(layer)


@pytest.mark.parametrize("status", [200, 481])
def test_client_non_invite_final_completed_timer_k_udp(layer: TransactionLayer, status: int) -> None:
    request = req("BYE", to_tag="8321234356")
    tx = layer.send_request(request, UDP, 0.0)
    layer.datagrams_to_send()
    advance(layer, 1.5)  # two retransmissions
    final = resp(request, status)
    events = layer.receive(final, UDP, 2.0)
    assert len(events) == 1 and isinstance(events[0], ResponseReceived) and events[0].response is final
    assert tx.state is State.COMPLETED
    absorbed = layer.absorbed
    assert layer.receive(resp(request, status), UDP, 3.0) == []  # retransmitted final absorbed
    assert layer.receive(resp(request, 100, to_tag=None), UDP, 3.1) == []
    assert layer.absorbed == absorbed + 2
    assert layer.datagrams_to_send() == []
    assert layer.next_deadline() == 7.0  # Timer K = T4
    assert layer.handle_timers(7.0) == []
    assert tx.terminated and layer.retransmissions == 2
    assert_idle(layer)


def test_client_non_invite_tcp_timer_k_zero(layer: TransactionLayer) -> None:
    request = req("OPTIONS", transport="TCP")
    tx = layer.send_request(request, TCP, 0.0)
    layer.receive(resp(request, 200), TCP, 1.0)
    assert tx.state is State.COMPLETED
    assert layer.next_deadline() == 1.0
    layer.handle_timers(1.0)
    assert tx.terminated
    assert_idle(layer)


# -- server INVITE -----------------------------------------------------------------------------------------------------
def test_server_invite_retransmission_before_response_absorbed(layer: TransactionLayer) -> None:
    tx = start_server_invite(layer)
    assert tx.state is State.PROCEEDING and tx.peer == UDP
    assert layer.receive(invite(), UDP, 0.3) == []
    assert layer.datagrams_to_send() == []
    assert layer.retransmissions == 0 and layer.active == 1


def test_server_invite_retransmission_after_1xx_resends_it(layer: TransactionLayer) -> None:
    tx = start_server_invite(layer)
    ringing = make_response(tx.request, 180, to_tag="uastag")
    layer.send_response(tx, ringing, 0.1)
    out = layer.datagrams_to_send()
    assert out == [(ringing.to_bytes(), UDP)]
    assert layer.receive(invite(), UDP, 0.5) == []
    assert layer.datagrams_to_send() == out
    assert layer.retransmissions == 1 and tx.retransmissions == 1
    assert tx.state is State.PROCEEDING
    assert layer.next_deadline() is None  # no timer in Proceeding


def test_server_invite_non2xx_timer_g_until_timer_h(layer: TransactionLayer) -> None:
    tx = start_server_invite(layer)
    busy = make_response(tx.request, 486, to_tag="uastag")
    layer.send_response(tx, busy, 0.0)
    out = layer.datagrams_to_send()
    assert out == [(busy.to_bytes(), UDP)]
    assert tx.state is State.COMPLETED
    log = advance(layer, 31.9)
    assert sends(log) == E_TIMES  # 0.5, 1, 2, 4, 4, ... capped at T2
    assert all(o == out for _, _, o in log)
    assert tx.retransmissions == 10 and layer.retransmissions == 10
    events = layer.handle_timers(32.0)
    assert len(events) == 1 and isinstance(events[0], TransactionTimedOut) and events[0].tx is tx
    assert tx.terminated
    assert_idle(layer)


def test_server_invite_ack_confirms_timer_i(layer: TransactionLayer) -> None:
    tx = start_server_invite(layer)
    busy = make_response(tx.request, 486, to_tag="uastag")
    layer.send_response(tx, busy, 0.0)
    layer.datagrams_to_send()
    advance(layer, 1.5)  # G at 0.5 and 1.5
    assert layer.datagrams_to_send() == []
    assert layer.receive(invite(), UDP, 2.0) == []  # INVITE retransmission in Completed: final again
    assert layer.datagrams_to_send() == [(busy.to_bytes(), UDP)]
    assert layer.retransmissions == 3

    ack = req("ACK", to_tag="uastag")
    assert layer.receive(ack, UDP, 2.5) == []  # the ACK for a non-2xx is the transaction's
    assert tx.state is State.CONFIRMED
    absorbed = layer.absorbed
    assert layer.receive(req("ACK", to_tag="uastag"), UDP, 3.0) == []  # ACK retransmission absorbed
    assert layer.receive(invite(), UDP, 3.1) == []  # INVITE retransmission absorbed too
    assert layer.absorbed == absorbed + 2
    assert layer.datagrams_to_send() == []
    assert layer.next_deadline() == 7.5  # Timer I = T4; G and H stopped
    log = advance(layer, 100.0)
    assert sends(log) == [] and [e for _, events, _ in log for e in events] == []
    assert tx.terminated and layer.retransmissions == 3
    assert_idle(layer)


def test_server_invite_tcp_no_timer_g_ack_timer_i_zero(layer: TransactionLayer) -> None:
    tx = start_server_invite(layer, TCP)
    assert tx.peer == TCP
    layer.send_response(tx, make_response(tx.request, 404, to_tag="uastag"), 0.0)
    layer.datagrams_to_send()
    assert layer.next_deadline() == 32.0  # only H
    assert layer.handle_timers(10.0) == [] and layer.datagrams_to_send() == []
    assert layer.receive(req("ACK", to_tag="uastag", transport="TCP"), TCP, 10.0) == []
    assert tx.state is State.CONFIRMED
    assert layer.next_deadline() == 10.0  # Timer I = 0
    layer.handle_timers(10.0)
    assert tx.terminated and layer.retransmissions == 0
    assert_idle(layer)


def test_server_invite_tcp_timer_h(layer: TransactionLayer) -> None:
    tx = start_server_invite(layer, TCP)
    not_found = make_response(tx.request, 404, to_tag="uastag")
    layer.send_response(tx, not_found, 0.0)
    events = layer.handle_timers(32.0)
    assert [type(e) for e in events] == [TransactionTimedOut]
    assert layer.datagrams_to_send() == [(not_found.to_bytes(), TCP)]
    assert_idle(layer)


def test_server_invite_cannot_respond_after_final(layer: TransactionLayer) -> None:
    tx = start_server_invite(layer)
    layer.send_response(tx, make_response(tx.request, 486, to_tag="t"), 0.0)
    with pytest.raises(RuntimeError):
        layer.send_response(tx, make_response(tx.request, 180, to_tag="t"), 0.1)


# -- server INVITE 2xx: Accepted + AckWait -----------------------------------------------------------------------------
def test_server_2xx_retransmitted_until_ack(layer: TransactionLayer) -> None:
    tx = start_server_invite(layer)
    layer.send_response(tx, make_response(tx.request, 180, to_tag="uastag"), 0.0)
    ok = make_response(tx.request, 200, to_tag="uastag")
    layer.send_response(tx, ok, 0.0)
    assert tx.state is State.ACCEPTED
    out = layer.datagrams_to_send()
    assert out[-1] == (ok.to_bytes(), UDP)
    assert layer.active == 2  # the transaction and the AckWait

    log = advance(layer, 12.0)
    assert sends(log) == [0.5, 1.5, 3.5, 7.5, 11.5]  # T1, 2T1, 4T1, capped at T2
    assert all(o == [(ok.to_bytes(), UDP)] for _, _, o in log)
    assert layer.retransmissions == 5

    assert layer.receive(invite(), UDP, 12.0) == []  # INVITE retransmission in Accepted absorbed
    assert layer.datagrams_to_send() == []

    ack = req("ACK", branch="z9hG4bKackbranch2", to_tag="uastag")
    events = layer.receive(ack, UDP, 12.5)
    assert len(events) == 1 and isinstance(events[0], RequestReceived)
    assert events[0].request is ack and events[0].tx is None and events[0].source == UDP
    assert tx.state is State.ACCEPTED and layer.active == 1

    log = advance(layer, 31.9)
    assert sends(log) == []  # retransmissions stopped
    assert layer.next_deadline() == 32.0  # Timer L
    assert layer.handle_timers(32.0) == []
    assert tx.terminated and layer.retransmissions == 5
    assert_idle(layer)


def test_server_2xx_without_ack_times_out(layer: TransactionLayer) -> None:
    tx = start_server_invite(layer)
    invite = tx.request
    ok = make_response(invite, 200, to_tag="uastag")
    layer.send_response(tx, ok, 0.0)
    layer.datagrams_to_send()
    log = advance(layer, 31.9)
    assert sends(log) == E_TIMES
    assert [e for _, events, _ in log for e in events] == []
    events = layer.handle_timers(32.0)
    assert len(events) == 1 and isinstance(events[0], AckTimedOut)
    assert events[0].call_id == invite.call_id and events[0].cseq == 1 and events[0].response is ok
    assert layer.datagrams_to_send() == []
    assert tx.terminated and layer.retransmissions == 10
    assert_idle(layer)
    # a late ACK has no transaction and no AckWait: it goes to the TU
    events = layer.receive(req("ACK", branch="z9hG4bKlate", to_tag="uastag"), UDP, 40.0)
    assert [type(e) for e in events] == [RequestReceived]


def test_server_2xx_over_tcp_is_still_retransmitted(layer: TransactionLayer) -> None:
    """The 2xx is end-to-end: AckWait runs on every transport (documented design)."""
    tx = start_server_invite(layer, TCP)
    layer.send_response(tx, make_response(tx.request, 200, to_tag="uastag"), 0.0)
    layer.datagrams_to_send()
    log = advance(layer, 2.0)
    assert sends(log) == [0.5, 1.5] and all(o[0][1] == TCP for _, _, o in log)
    layer.receive(req("ACK", branch="z9hG4bKack", to_tag="uastag", transport="TCP"), TCP, 2.0)
    advance(layer, 100.0)
    assert_idle(layer)


def test_server_2xx_ack_matched_by_call_id_and_cseq_number(layer: TransactionLayer) -> None:
    tx = start_server_invite(layer)
    layer.send_response(tx, make_response(tx.request, 200, to_tag="uastag"), 0.0)
    layer.datagrams_to_send()
    # an ACK for another CSeq does not stop the retransmissions (it is still handed to the TU)
    events = layer.receive(req("ACK", branch="z9hG4bKx", cseq=2, to_tag="uastag"), UDP, 0.1)
    assert [type(e) for e in events] == [RequestReceived]
    assert sends(advance(layer, 0.5)) == [0.5]
    layer.receive(req("ACK", branch="z9hG4bKy", cseq=1, to_tag="uastag"), UDP, 0.6)
    assert sends(advance(layer, 100.0)) == []
    assert_idle(layer)


# -- server non-INVITE -------------------------------------------------------------------------------------------------
def test_server_non_invite_trying_absorbs_then_final_resent_timer_j(layer: TransactionLayer) -> None:
    events = layer.receive(req("OPTIONS"), UDP, 0.0)
    assert len(events) == 1 and isinstance(events[0], RequestReceived)
    tx = events[0].tx
    assert isinstance(tx, ServerNonInviteTransaction) and tx.state is State.TRYING
    absorbed = layer.absorbed
    assert layer.receive(req("OPTIONS"), UDP, 0.5) == []  # retransmission in Trying: nothing to send
    assert layer.absorbed == absorbed + 1
    assert layer.datagrams_to_send() == []

    ok = make_response(tx.request, 200, to_tag="uastag")
    layer.send_response(tx, ok, 1.0)
    assert tx.state is State.COMPLETED
    out = layer.datagrams_to_send()
    assert out == [(ok.to_bytes(), UDP)]
    assert layer.receive(req("OPTIONS"), UDP, 2.0) == []
    assert layer.datagrams_to_send() == out
    assert layer.retransmissions == 1
    assert layer.next_deadline() == 33.0  # Timer J = 64*T1
    assert layer.handle_timers(33.0) == []
    assert tx.terminated
    assert_idle(layer)
    # after J a retransmission is a new request for the TU
    assert [type(e) for e in layer.receive(req("OPTIONS"), UDP, 40.0)] == [RequestReceived]


def test_server_non_invite_proceeding_resends_1xx(layer: TransactionLayer) -> None:
    events = layer.receive(req("BYE", to_tag="x"), UDP, 0.0)
    tx = events[0].tx  # type: ignore[union-attr]
    assert isinstance(tx, ServerTransaction)
    trying = make_response(tx.request, 100)
    layer.send_response(tx, trying, 0.1)
    assert tx.state is State.PROCEEDING
    assert layer.datagrams_to_send() == [(trying.to_bytes(), UDP)]
    assert layer.receive(req("BYE", to_tag="x"), UDP, 0.5) == []
    assert layer.datagrams_to_send() == [(trying.to_bytes(), UDP)]
    layer.send_response(tx, make_response(tx.request, 200), 0.6)
    assert tx.state is State.COMPLETED
    assert layer.retransmissions == 1


def test_server_non_invite_tcp_timer_j_zero(layer: TransactionLayer) -> None:
    events = layer.receive(req("OPTIONS", transport="TCP"), TCP, 0.0)
    tx = events[0].tx  # type: ignore[union-attr]
    assert isinstance(tx, ServerTransaction)
    layer.send_response(tx, make_response(tx.request, 200, to_tag="t"), 1.0)
    assert layer.next_deadline() == 1.0
    layer.handle_timers(1.0)
    assert tx.terminated
    assert_idle(layer)


# -- letting go of the TU once only retransmissions are left (issue #8) ------------------------------------------------
@pytest.mark.parametrize("status", [200, 486])
def test_client_invite_final_delivered_with_its_owner_then_released(layer: TransactionLayer, status: int) -> None:
    """the first 2xx (or final) reaches the owner through the event; the transaction then keeps neither the owner
    (a leg) nor the request, and a 2xx retransmission in Accepted comes without an owner (the TU finds the dialog)."""
    request = invite()
    tx = layer.send_request(request, UDP, 0.0)
    owner = object()
    tx.owner = owner
    first = resp(request, status)
    events = layer.receive(first, UDP, 1.0)
    assert len(events) == 1 and isinstance(events[0], ResponseReceived)
    assert events[0].response is first and events[0].owner is owner
    assert tx.owner is None and tx._request is None and tx.last_response is None
    if status == 200:
        events = layer.receive(resp(request, 200), UDP, 2.0)
        assert len(events) == 1 and isinstance(events[0], ResponseReceived) and events[0].owner is None
    else:
        layer.datagrams_to_send()
        assert layer.receive(resp(request, 486), UDP, 2.0) == []  # absorbed: ACKed again from the kept bytes
        assert len(layer.datagrams_to_send()) == 1


def test_client_non_invite_final_delivered_with_its_owner_then_released(layer: TransactionLayer) -> None:
    bye = req("BYE", to_tag="uastag")
    tx = layer.send_request(bye, UDP, 0.0)
    owner = object()
    tx.owner = owner
    events = layer.receive(resp(bye, 200), UDP, 0.1)
    assert len(events) == 1 and isinstance(events[0], ResponseReceived) and events[0].owner is owner
    assert tx.owner is None and tx._request is None


def test_server_invite_final_releases_owner_and_cancel_still_reaches_it(layer: TransactionLayer) -> None:
    """a 3xx-6xx releases the INVITE transaction's owner; the 487 a CANCEL causes does too, and InviteCancelled
    carries the owner it had."""
    tx = start_server_invite(layer)
    owner = object()
    tx.owner = owner
    events = layer.receive(req("CANCEL"), UDP, 1.0)
    assert len(events) == 1 and isinstance(events[0], InviteCancelled) and events[0].owner is owner
    assert tx.state is State.COMPLETED and tx.owner is None and tx._request is None and tx.last_response is None
    events = layer.handle_timers(33.0)  # Timer H: no ACK to the 487; nobody left to tell but the event is kept
    assert [type(e) for e in events] == [TransactionTimedOut]


# -- CANCEL ------------------------------------------------------------------------------------------------------------
def _responses(out: list[tuple[bytes, Address]]) -> list[Response]:
    msgs = [parse_sent(wire) for wire, _ in out]
    assert all(isinstance(m, Response) for m in msgs)
    return msgs  # type: ignore[return-value]


@pytest.mark.parametrize("provisional", [None, 100, 180])
def test_cancel_pending_invite_gets_200_and_487(layer: TransactionLayer, provisional: int | None) -> None:
    tx = start_server_invite(layer)
    if provisional is not None:
        layer.send_response(tx, make_response(tx.request, provisional,
                                              to_tag="uastag" if provisional > 100 else None), 0.0)
        layer.datagrams_to_send()
    cancel = req("CANCEL")
    events = layer.receive(cancel, UDP, 1.0)
    assert len(events) == 1 and isinstance(events[0], InviteCancelled)
    assert events[0].invite_tx is tx and events[0].cancel is cancel

    out = layer.datagrams_to_send()
    assert [peer for _, peer in out] == [UDP, UDP]
    ok, terminated = _responses(out)
    assert ok.status == 200 and ok.cseq == (1, "CANCEL") and ok.branch == cancel.branch
    assert terminated.status == 487 and terminated.cseq == (1, "INVITE")
    assert terminated.to_tag  # RFC 3261 §8.2.6.2: a final response carries a To tag
    if provisional == 180:
        assert terminated.to_tag == "uastag"  # the same tag as the early dialog
    assert tx.state is State.COMPLETED

    # the CANCEL retransmission gets the 200 again; no second InviteCancelled
    assert layer.receive(req("CANCEL"), UDP, 1.2) == []
    assert _responses(layer.datagrams_to_send())[0].status == 200

    # the ACK for the 487 belongs to the INVITE transaction
    ack = req("ACK", to_tag=terminated.to_tag)
    assert layer.receive(ack, UDP, 1.4) == []  # before Timer G (1.0 + T1)
    assert tx.state is State.CONFIRMED
    log = advance(layer, 100.0)
    assert [e for _, events, _ in log for e in events] == []
    assert sends(log) == []
    assert_idle(layer)


def test_cancel_without_invite_gets_481(layer: TransactionLayer) -> None:
    cancel = req("CANCEL")
    assert layer.receive(cancel, UDP, 0.0) == []
    (answer,) = _responses(layer.datagrams_to_send())
    assert answer.status == 481 and answer.cseq == (1, "CANCEL")
    assert layer.next_deadline() == 32.0  # Timer J for the CANCEL transaction
    advance(layer, 100.0)
    assert_idle(layer)


@pytest.mark.parametrize("status", [200, 486])
def test_cancel_after_final_gets_200_only(layer: TransactionLayer, status: int) -> None:
    tx = start_server_invite(layer)
    layer.send_response(tx, make_response(tx.request, status, to_tag="uastag"), 0.0)
    layer.datagrams_to_send()
    events = layer.receive(req("CANCEL"), UDP, 0.1)
    assert events == []
    (answer,) = _responses(layer.datagrams_to_send())
    assert answer.status == 200 and answer.cseq == (1, "CANCEL")
    assert tx.state is (State.ACCEPTED if status == 200 else State.COMPLETED)


# -- matching ----------------------------------------------------------------------------------------------------------
def test_response_with_unknown_branch_is_stray(layer: TransactionLayer) -> None:
    request = invite()
    layer.send_request(request, UDP, 0.0)
    other = invite(branch="z9hG4bKsomethingelse")
    response = resp(other, 200)
    events = layer.receive(response, UDP, 0.1)
    assert len(events) == 1 and isinstance(events[0], StrayResponse)
    assert events[0].response is response and events[0].source == UDP


def test_same_branch_different_cseq_method_are_different_transactions(layer: TransactionLayer) -> None:
    request = invite()
    invite_tx = layer.send_request(request, UDP, 0.0)
    layer.receive(resp(request, 180), UDP, 0.1)
    cancel = req("CANCEL")  # same branch as the INVITE (RFC 3261 §9.1)
    cancel_tx = layer.send_request(cancel, UDP, 1.0)
    assert cancel_tx is not invite_tx and layer.active == 2

    events = layer.receive(resp(cancel, 200), UDP, 1.1)
    assert len(events) == 1 and isinstance(events[0], ResponseReceived) and events[0].tx is cancel_tx
    assert cancel_tx.state is State.COMPLETED and invite_tx.state is State.PROCEEDING

    events = layer.receive(resp(request, 487), UDP, 1.2)
    assert len(events) == 1 and isinstance(events[0], ResponseReceived) and events[0].tx is invite_tx
    assert invite_tx.state is State.COMPLETED
    ack = parse_sent(layer.datagrams_to_send()[-1][0])
    assert isinstance(ack, Request) and ack.method == "ACK"
    advance(layer, 100.0)
    assert_idle(layer)


def test_server_key_includes_sent_by_and_method(layer: TransactionLayer) -> None:
    a = invite()
    assert server_key(a, "INVITE") == ("z9hG4bK776asdhds", "127.0.0.1:5090", "INVITE")
    events = layer.receive(a, UDP, 0.0)
    events += layer.receive(invite(sent_by="10.0.0.2:5090"), UDP, 0.0)  # same branch, other sent-by
    events += layer.receive(req("OPTIONS"), UDP, 0.0)  # same branch, other method
    assert [type(e) for e in events] == [RequestReceived] * 3
    assert layer.active == 3


def test_rfc2543_requests_matched_by_fallback_key(layer: TransactionLayer) -> None:
    old = invite(branch=None)
    key = server_key(old, "INVITE")
    assert key[0] == "2543"
    tx = start_server_invite(layer, branch=None)
    assert tx.key == key
    assert layer.receive(invite(branch=None), UDP, 0.5) == []  # retransmission absorbed
    assert layer.datagrams_to_send() == [] and layer.active == 1

    # a non-magic branch is also RFC 2543
    assert server_key(invite(branch="abc123"), "INVITE")[0] == "2543"

    # CANCEL and ACK find the INVITE by the same fallback key
    events = layer.receive(req("CANCEL", branch=None), UDP, 1.0)
    assert [type(e) for e in events] == [InviteCancelled]
    terminated = _responses(layer.datagrams_to_send())[1]
    assert terminated.status == 487
    assert layer.receive(req("ACK", branch=None, to_tag=terminated.to_tag), UDP, 1.1) == []
    assert tx.state is State.CONFIRMED


def test_rfc2543_reinvite_ack_matches_invite_transaction(layer: TransactionLayer) -> None:
    """A re-INVITE carries the dialog's To tag; its ACK (same tag) must still find the INVITE transaction."""
    tx = start_server_invite(layer, branch=None, to_tag="dlgtag", cseq=2)
    layer.send_response(tx, make_response(tx.request, 488), 0.0)
    layer.datagrams_to_send()
    events = layer.receive(req("ACK", branch=None, to_tag="dlgtag", cseq=2), UDP, 0.2)
    assert events == []
    assert tx.state is State.CONFIRMED
    advance(layer, 100.0)
    assert_idle(layer)


def test_rfc2543_2xx_ack_with_same_via_goes_to_tu(layer: TransactionLayer) -> None:
    tx = start_server_invite(layer, branch=None)
    layer.send_response(tx, make_response(tx.request, 200, to_tag="uastag"), 0.0)
    layer.datagrams_to_send()
    ack = req("ACK", branch=None, to_tag="uastag")
    events = layer.receive(ack, UDP, 0.2)
    assert len(events) == 1 and isinstance(events[0], RequestReceived) and events[0].tx is None
    assert layer.receive(req("ACK", branch=None, to_tag="uastag"), UDP, 0.3) == []  # duplicate absorbed
    assert sends(advance(layer, 100.0)) == []
    assert_idle(layer)


# -- response routing --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("transport", "sent_by", "params", "source", "expected"),
    [
        ("UDP", "10.0.0.1:5070", "", Address("udp", "192.0.2.1", 40000), Address("udp", "192.0.2.1", 5070)),
        ("UDP", "10.0.0.1", "", Address("udp", "192.0.2.1", 40000), Address("udp", "192.0.2.1", 5060)),
        ("UDP", "10.0.0.1:5070", ";rport", Address("udp", "192.0.2.1", 40000), Address("udp", "192.0.2.1", 40000)),
        ("UDP", "10.0.0.1:5070", ";rport=40000;received=192.0.2.1", Address("udp", "192.0.2.1", 40000),
         Address("udp", "192.0.2.1", 40000)),
        ("UDP", "[2001:db8::1]:5080", "", Address("udp", "2001:db8::9", 1), Address("udp", "2001:db8::9", 5080)),
        ("UDP", "[2001:db8::1]", "", Address("udp", "2001:db8::9", 1), Address("udp", "2001:db8::9", 5060)),
        ("TCP", "10.0.0.1:5070", "", Address("tcp", "192.0.2.1", 40000), Address("tcp", "192.0.2.1", 40000)),
    ],
)
def test_response_address(transport: str, sent_by: str, params: str, source: Address, expected: Address) -> None:
    request = req("OPTIONS", transport=transport, sent_by=sent_by, via_params=params)
    assert response_address(request, source) == expected


def test_server_responses_go_to_response_address(layer: TransactionLayer) -> None:
    source = Address("udp", "192.0.2.1", 40000)
    events = layer.receive(req("OPTIONS", sent_by="10.0.0.1"), source, 0.0)
    tx = events[0].tx  # type: ignore[union-attr]
    assert isinstance(tx, ServerTransaction)
    layer.send_response(tx, make_response(tx.request, 200, to_tag="t"), 0.0)
    assert layer.datagrams_to_send()[0][1] == Address("udp", "192.0.2.1", 5060)


# -- whole-layer bookkeeping -------------------------------------------------------------------------------------------
def test_send_stateless_is_not_a_transaction(layer: TransactionLayer) -> None:
    ack = req("ACK", branch="z9hG4bKack2xx", to_tag="t")
    wire = layer.send_stateless(ack, UDP)
    assert layer.datagrams_to_send() == [(wire, UDP)]
    assert layer.active == 0 and layer.retransmissions == 0
    assert layer.next_deadline() is None


def test_many_transactions_all_terminate_without_leaks(layer: TransactionLayer) -> None:
    """A mixed load on both transports: everything ends, nothing is left in the tables or the timer heap."""
    for i, peer in enumerate([UDP, TCP] * 3):
        transport = "TCP" if peer.reliable else "UDP"
        # client INVITE answered 486, client INVITE answered 200, client OPTIONS timing out
        busy = invite(branch=f"z9hG4bKc486{i}", call_id=f"c{i}", transport=transport)
        layer.send_request(busy, peer, 0.0)
        layer.receive(resp(busy, 486), peer, 0.1)
        ok = invite(branch=f"z9hG4bKc200{i}", call_id=f"d{i}", transport=transport)
        layer.send_request(ok, peer, 0.0)
        layer.receive(resp(ok, 200), peer, 0.2)
        layer.send_request(req("OPTIONS", branch=f"z9hG4bKopt{i}", call_id=f"o{i}", transport=transport), peer, 0.0)
        # server INVITE answered 200 and ACKed, server INVITE answered 404 never ACKed, server BYE answered
        events = layer.receive(invite(branch=f"z9hG4bKs200{i}", call_id=f"s{i}", transport=transport), peer, 0.0)
        stx = events[0].tx  # type: ignore[union-attr]
        assert isinstance(stx, ServerTransaction)
        layer.send_response(stx, make_response(stx.request, 200, to_tag="u"), 0.0)
        layer.receive(req("ACK", branch=f"z9hG4bKsack{i}", call_id=f"s{i}", to_tag="u", transport=transport),
                      peer, 0.3)
        events = layer.receive(invite(branch=f"z9hG4bKs404{i}", call_id=f"t{i}", transport=transport), peer, 0.0)
        ntx = events[0].tx  # type: ignore[union-attr]
        assert isinstance(ntx, ServerTransaction)
        layer.send_response(ntx, make_response(ntx.request, 404, to_tag="u"), 0.0)
        events = layer.receive(req("BYE", branch=f"z9hG4bKbye{i}", call_id=f"b{i}", transport=transport), peer, 0.0)
        btx = events[0].tx  # type: ignore[union-attr]
        assert isinstance(btx, ServerTransaction)
        layer.send_response(btx, make_response(btx.request, 200), 0.0)
    assert layer.active == 6 * 6 + 0  # AckWaits already stopped by the ACKs
    log = advance(layer, 1000.0)
    timeouts = [e for _, events, _ in log for e in events]
    assert sum(isinstance(e, TransactionTimedOut) for e in timeouts) == 6 + 6  # OPTIONS (F) + 404 (H)
    assert len(timeouts) == 12
    assert_idle(layer)
    assert layer._heap == []


# -- what a lingering transaction keeps -----------------------------------------------------------------------
def test_completed_server_transactions_keep_only_the_bytes_they_resend(layer: TransactionLayer) -> None:
    """A BYE answered 200 and an INVITE answered 2xx linger 64*T1 to absorb retransmissions: they drop the
    request, the response and the TU object, and a retransmitted request still gets the very same bytes."""
    events = layer.receive(req("BYE", branch="z9hG4bKbye1", to_tag="t1"), UDP, 0.0)
    bye_tx = events[0].tx  # type: ignore[union-attr]
    assert isinstance(bye_tx, ServerNonInviteTransaction)
    bye_tx.owner = object()
    ok = make_response(bye_tx.request, 200)
    layer.send_response(bye_tx, ok, 0.0)
    sent = layer.datagrams_to_send()
    assert bye_tx.last_response is None and bye_tx.owner is None
    with pytest.raises(RuntimeError, match="no longer keeps its request"):
        bye_tx.request  # noqa: B018
    assert layer.receive(req("BYE", branch="z9hG4bKbye1", to_tag="t1"), UDP, 10.0) == []
    assert layer.datagrams_to_send() == sent == [(ok.to_bytes(), UDP)]
    assert "BYE" in repr(bye_tx)

    inv_tx = start_server_invite(layer)
    inv_tx.owner = object()
    layer.send_response(inv_tx, make_response(inv_tx.request, 200, to_tag="u"), 0.0)
    layer.datagrams_to_send()
    assert inv_tx.state is State.ACCEPTED and inv_tx.owner is None and inv_tx.last_response is None
    assert layer.receive(invite(), UDP, 1.0) == []  # the INVITE copy is absorbed; AckWait retransmits the 2xx
    with pytest.raises(RuntimeError, match="cannot send"):
        layer.send_response(inv_tx, make_response(invite(), 200, to_tag="u"), 1.0)


def test_stopped_timers_hold_no_reference_to_their_transaction(layer: TransactionLayer) -> None:
    """Timer B (64*T1) is stopped by the response; its heap entry stays until due but holds no reference: only armed
    timers know their transaction, so a stopped timer never keeps a transaction (request, owner) alive."""
    request = invite()
    tx = layer.send_request(request, UDP, 0.0)
    layer.datagrams_to_send()
    layer.receive(resp(request, 486), UDP, 0.1)
    assert len(layer._heap) == 3  # A and B (stopped, not yet due) and D
    assert all(type(x) in (float, int) for entry in layer._heap for x in entry)
    assert [(owner, name) for owner, name in layer._armed.values()] == [(tx, "timer_D")]
    advance(layer, 40.0)
    assert tx.terminated and layer._heap == [] and layer._armed == {}
