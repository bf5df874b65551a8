"""Dialog state (RFC 3261 §12) and hold/unhold answers, without sockets."""

from __future__ import annotations

from sip.dialog import Dialog, DialogState
from sip.message import Request, Response, parse_message
from sip.sdp_direction import answer_direction, offer_direction

INVITE = (
    b"INVITE sip:bob@10.0.0.2 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa1\r\n"
    b"Record-Route: <sip:p1.example;lr>, <sip:p2.example;lr>\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice" <sip:alice@10.0.0.1>;tag=fa\r\n'
    b"To: <sip:bob@10.0.0.2>\r\n"
    b"Call-ID: c1@10.0.0.1\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"Contact: <sip:alice@10.0.0.1:5060>\r\n"
    b"Content-Length: 0\r\n\r\n"
)

OK = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa1\r\n"
    b"Record-Route: <sip:p1.example;lr>, <sip:p2.example;lr>\r\n"
    b'From: "Alice" <sip:alice@10.0.0.1>;tag=fa\r\n'
    b"To: <sip:bob@10.0.0.2>;tag=tb\r\n"
    b"Call-ID: c1@10.0.0.1\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"Contact: <sip:bob@10.0.0.2:5070>\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def invite() -> Request:
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    return msg


def ok() -> Response:
    msg = parse_message(OK)
    assert isinstance(msg, Response)
    return msg


def test_uac_dialog_reverses_record_route_and_targets_contact() -> None:
    d = Dialog.from_uac(invite(), ok())
    assert d.id == ("c1@10.0.0.1", "fa", "tb")
    assert d.state is DialogState.CONFIRMED
    assert d.route_set == ("<sip:p2.example;lr>", "<sip:p1.example;lr>")
    assert d.remote_target == "sip:bob@10.0.0.2:5070"
    bye = d.request("BYE", via="SIP/2.0/UDP 10.0.0.1:5060")
    assert bye.uri == "sip:bob@10.0.0.2:5070"  # loose routing keeps the target as Request-URI
    assert bye.headers.get_all("Route") == ["<sip:p2.example;lr>", "<sip:p1.example;lr>"]
    assert bye.cseq == (8, "BYE")
    assert bye.from_tag == "fa" and bye.to_tag == "tb"
    assert bye.branch.startswith("z9hG4bK")
    assert d.next_hop() == "sip:p2.example;lr"


def test_uas_dialog_keeps_record_route_order_and_checks_cseq() -> None:
    d = Dialog.from_uas(invite(), "tb")
    assert d.id == ("c1@10.0.0.1", "tb", "fa")
    assert d.route_set == ("<sip:p1.example;lr>", "<sip:p2.example;lr>")
    assert d.remote_target == "sip:alice@10.0.0.1:5060"
    assert d.local_uri == "<sip:bob@10.0.0.2>"
    assert d.remote_uri == '"Alice" <sip:alice@10.0.0.1>'
    bye = d.request("BYE", via="SIP/2.0/UDP 10.0.0.2:5070")
    assert bye.headers.get("From") == "<sip:bob@10.0.0.2>;tag=tb"
    assert bye.headers.get("To") == '"Alice" <sip:alice@10.0.0.1>;tag=fa'
    reinvite = Request("INVITE", "sip:bob@10.0.0.2", invite().headers.copy())
    reinvite.headers.set("CSeq", "8 INVITE")
    reinvite.headers.set("Contact", "<sip:alice@10.9.9.9:5062>")
    assert d.check_request(reinvite) is None
    assert d.remote_target == "sip:alice@10.9.9.9:5062"  # target refresh
    old = Request("INFO", "sip:bob@10.0.0.2", invite().headers.copy())
    old.headers.set("CSeq", "3 INFO")
    assert d.check_request(old) == 500  # lower CSeq: out of order


def test_strict_route_moves_target_to_the_end() -> None:
    resp = ok()
    resp.headers.set("Record-Route", "<sip:strict.example>")
    d = Dialog.from_uac(invite(), resp)
    bye = d.request("BYE", via="SIP/2.0/UDP 10.0.0.1:5060")
    assert bye.uri == "sip:strict.example"
    assert bye.headers.get_all("Route") == ["<sip:bob@10.0.0.2:5070>"]


def test_ack_reuses_the_invite_cseq_number() -> None:
    d = Dialog.from_uac(invite(), ok())
    ack = d.request("ACK", via="SIP/2.0/UDP 10.0.0.1:5060", cseq=7)
    assert ack.cseq == (7, "ACK")
    assert d.local_seq == 7  # ACK does not consume a CSeq number


SDP = (
    "v=0\r\no=ss 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 20000 RTP/AVP 0\r\na=sendrecv\r\n"
)


def test_hold_offers_get_mirrored_answers() -> None:
    cases = {"a=sendonly": ("recvonly", True), "a=inactive": ("inactive", True),
             "a=recvonly": ("sendonly", False), "a=sendrecv": ("sendrecv", False)}
    for attr, (expected, hold) in cases.items():
        offer = SDP.replace("a=sendrecv", attr)
        answer, on_hold = answer_direction(SDP, offer)
        assert f"a={expected}\r\n" in answer and answer.count("a=") == 1
        assert on_hold is hold
        assert "o=ss 1 2 IN IP4" in answer  # version bumped
    assert offer_direction(SDP.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0")) == "sendonly"
