"""sip.message: parse/serialise round trips, header forms, bodies, Content-Length rules, TCP framing, Headers API."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sip.message import (
    MAX_MESSAGE_SIZE,
    REASONS,
    Headers,
    Request,
    Response,
    SipParseError,
    StreamFramer,
    _parse_general,
    canonical_name,
    param_of,
    parse_message,
    split_header_values,
    tag_of,
)


def crlf(text: str, body: bytes = b"") -> bytes:
    """A message written with '\\n' line ends -> CRLF bytes; `{cl}` is replaced by the body length."""
    head = text.replace("{cl}", str(len(body))).replace("\n", "\r\n")
    return head.encode() + body


SDP = (
    b"v=0\r\n"
    b"o=user1 53655765 2353687637 IN IP4 192.0.2.2\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.2\r\n"
    b"t=0 0\r\n"
    b"m=audio 6000 RTP/AVP 0\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)

# SIPp uac scenario (sipp -sn uac), as it appears on the wire.
SIPP_INVITE = crlf(
    "INVITE sip:service@192.0.2.1:5060 SIP/2.0\n"
    "Via: SIP/2.0/UDP 192.0.2.2:5061;branch=z9hG4bK-4711-1-0\n"
    "From: sipp <sip:sipp@192.0.2.2:5061>;tag=4711SIPpTag001\n"
    "To: service <sip:service@192.0.2.1:5060>\n"
    "Call-ID: 1-4711@192.0.2.2\n"
    "CSeq: 1 INVITE\n"
    "Contact: sip:sipp@192.0.2.2:5061\n"
    "Max-Forwards: 70\n"
    "Subject: Performance Test\n"
    "Content-Type: application/sdp\n"
    "Content-Length: {cl}\n"
    "\n",
    SDP,
)
SIPP_200 = crlf(
    "SIP/2.0 200 OK\n"
    "Via: SIP/2.0/UDP 192.0.2.2:5061;branch=z9hG4bK-4711-1-0;received=192.0.2.2;rport=5061\n"
    "From: sipp <sip:sipp@192.0.2.2:5061>;tag=4711SIPpTag001\n"
    "To: service <sip:service@192.0.2.1:5060>;tag=as5f2c1e7b\n"
    "Call-ID: 1-4711@192.0.2.2\n"
    "CSeq: 1 INVITE\n"
    "Record-Route: <sip:192.0.2.1;lr>\n"
    "Contact: <sip:service@192.0.2.1:5060>\n"
    "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, SUBSCRIBE, NOTIFY, INFO, PUBLISH, MESSAGE\n"
    "Supported: replaces, timer\n"
    "Content-Type: application/sdp\n"
    "Content-Length: {cl}\n"
    "\n",
    SDP,
)
SIPP_ACK = crlf(
    "ACK sip:service@192.0.2.1:5060 SIP/2.0\n"
    "Via: SIP/2.0/UDP 192.0.2.2:5061;branch=z9hG4bK-4711-1-5\n"
    "Route: <sip:192.0.2.1;lr>\n"
    "From: sipp <sip:sipp@192.0.2.2:5061>;tag=4711SIPpTag001\n"
    "To: service <sip:service@192.0.2.1:5060>;tag=as5f2c1e7b\n"
    "Call-ID: 1-4711@192.0.2.2\n"
    "CSeq: 1 ACK\n"
    "Contact: sip:sipp@192.0.2.2:5061\n"
    "Max-Forwards: 70\n"
    "Subject: Performance Test\n"
    "Content-Length: 0\n"
    "\n"
)
SIPP_BYE = crlf(
    "BYE sip:service@192.0.2.1:5060 SIP/2.0\n"
    "Via: SIP/2.0/UDP 192.0.2.2:5061;branch=z9hG4bK-4711-1-7\n"
    "Route: <sip:192.0.2.1;lr>\n"
    "From: sipp <sip:sipp@192.0.2.2:5061>;tag=4711SIPpTag001\n"
    "To: service <sip:service@192.0.2.1:5060>;tag=as5f2c1e7b\n"
    "Call-ID: 1-4711@192.0.2.2\n"
    "CSeq: 2 BYE\n"
    "Contact: sip:sipp@192.0.2.2:5061\n"
    "Max-Forwards: 70\n"
    "Subject: Performance Test\n"
    "Content-Length: 0\n"
    "\n"
)
# baresip registering over TCP with outbound/GRUU parameters (quoted +sip.instance holding '<', '>' and ':').
BARESIP_REGISTER = crlf(
    "REGISTER sip:example.com SIP/2.0\n"
    "Via: SIP/2.0/TCP 192.0.2.10:43112;branch=z9hG4bK0a1b2c3d4e;rport;alias\n"
    "Contact: <sip:alice-0x55d1@192.0.2.10:43112;transport=tcp>;expires=3600;"
    '+sip.instance="<urn:uuid:4e9a2f7c-5b1d-4c3e-8f6a-0d2b9c7e1a55>";reg-id=1\n'
    "Max-Forwards: 70\n"
    "To: <sip:alice@example.com>\n"
    "From: <sip:alice@example.com>;tag=8c3f1e2d4b\n"
    "Call-ID: 2f1e0d9c8b7a6f5e\n"
    "CSeq: 1 REGISTER\n"
    "User-Agent: baresip v3.10.1 (x86_64/linux)\n"
    "Allow: INVITE,ACK,BYE,CANCEL,OPTIONS,NOTIFY,SUBSCRIBE,INFO,MESSAGE,UPDATE,REFER\n"
    "Supported: outbound,path,gruu\n"
    "Content-Length: 0\n"
    "\n"
)
BARESIP_401 = crlf(
    "SIP/2.0 401 Unauthorized\n"
    "Via: SIP/2.0/TCP 192.0.2.10:43112;branch=z9hG4bK0a1b2c3d4e;rport=43112;alias;received=198.51.100.7\n"
    "To: <sip:alice@example.com>;tag=srv-77\n"
    "From: <sip:alice@example.com>;tag=8c3f1e2d4b\n"
    "Call-ID: 2f1e0d9c8b7a6f5e\n"
    "CSeq: 1 REGISTER\n"
    'WWW-Authenticate: Digest realm="example.com", nonce="5f2a9c", algorithm=MD5, qop="auth"\n'
    "Content-Length: 0\n"
    "\n"
)
BARESIP_REGISTER_AUTH = crlf(
    "REGISTER sip:example.com SIP/2.0\n"
    "Via: SIP/2.0/TCP 192.0.2.10:43112;branch=z9hG4bK99aa88bb;rport;alias\n"
    "Contact: <sip:alice-0x55d1@192.0.2.10:43112;transport=tcp>;expires=3600\n"
    "Max-Forwards: 70\n"
    "To: <sip:alice@example.com>\n"
    "From: <sip:alice@example.com>;tag=8c3f1e2d4b\n"
    "Call-ID: 2f1e0d9c8b7a6f5e\n"
    "CSeq: 2 REGISTER\n"
    'Authorization: Digest username="alice", realm="example.com", nonce="5f2a9c", uri="sip:example.com", '
    'response="6629fae49393a05397450978507c4ef1", algorithm=MD5, cnonce="0a4f113b", qop=auth, nc=00000001\n'
    "Content-Length: 0\n"
    "\n"
)
# A proxied INVITE: two Vias, two Record-Routes, a display name with an escaped quote.
PROXIED_INVITE = crlf(
    "INVITE sip:+15551234567@gw.example.com;user=phone SIP/2.0\n"
    "Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-proxy-1;rport\n"
    "Via: SIP/2.0/UDP 192.0.2.10:5060;received=192.0.2.10;branch=z9hG4bK-ua-1\n"
    "Max-Forwards: 69\n"
    "Record-Route: <sip:192.0.2.20;lr;ftag=a8f3c>\n"
    "Record-Route: <sip:edge.example.com;lr>\n"
    'From: "Alice \\"Al\\" Example" <sip:alice@example.com>;tag=a8f3c\n'
    "To: <sip:+15551234567@gw.example.com;user=phone>\n"
    "Call-ID: 5e2b7c1a@192.0.2.10\n"
    "CSeq: 10 INVITE\n"
    "Contact: <sip:alice@192.0.2.10:5060>\n"
    "Content-Type: application/sdp\n"
    "Content-Length: {cl}\n"
    "\n",
    SDP,
)

ROUND_TRIP = {
    "sipp-invite": SIPP_INVITE,
    "sipp-200": SIPP_200,
    "sipp-ack": SIPP_ACK,
    "sipp-bye": SIPP_BYE,
    "baresip-register": BARESIP_REGISTER,
    "baresip-401": BARESIP_401,
    "baresip-register-auth": BARESIP_REGISTER_AUTH,
    "proxied-invite": PROXIED_INVITE,
}


def message_key(msg: Request | Response) -> tuple[object, ...]:
    start = (msg.method, msg.uri) if isinstance(msg, Request) else (msg.status, msg.reason)
    return type(msg), start, msg.version, list(msg.headers), msg.body


# --------------------------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("data", ROUND_TRIP.values(), ids=ROUND_TRIP.keys())
def test_round_trip_is_byte_exact(data: bytes) -> None:
    msg = parse_message(data)
    assert msg.to_bytes() == data
    again = parse_message(msg.to_bytes())
    assert message_key(again) == message_key(msg)


@pytest.mark.parametrize("data", ROUND_TRIP.values(), ids=ROUND_TRIP.keys())
def test_round_trip_over_stream(data: bytes) -> None:
    msg = parse_message(data, stream=True)
    assert msg.to_bytes() == data


def test_sipp_invite_fields() -> None:
    msg = parse_message(SIPP_INVITE)
    assert isinstance(msg, Request)
    assert (msg.method, msg.uri, msg.version) == ("INVITE", "sip:service@192.0.2.1:5060", "SIP/2.0")
    assert msg.call_id == "1-4711@192.0.2.2"
    assert msg.cseq == (1, "INVITE")
    assert msg.branch == "z9hG4bK-4711-1-0"
    assert msg.from_tag == "4711SIPpTag001"
    assert msg.to_tag == ""
    assert msg.top_via == "SIP/2.0/UDP 192.0.2.2:5061;branch=z9hG4bK-4711-1-0"
    assert msg.body == SDP
    assert msg.headers.get("Subject") == "Performance Test"
    assert "call-id" in msg.headers and "Route" not in msg.headers


def test_response_fields() -> None:
    msg = parse_message(SIPP_200)
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason) == (200, "OK")
    assert msg.to_tag == "as5f2c1e7b"
    assert msg.headers.get_all("Allow")[:3] == ["INVITE", "ACK", "CANCEL"]
    assert len(msg.headers.get_all("Allow")) == 11
    assert param_of(msg.top_via, "received") == "192.0.2.2"
    assert param_of(msg.top_via, "rport") == "5061"


def test_baresip_register_fields() -> None:
    msg = parse_message(BARESIP_REGISTER)
    contact = msg.headers.get("Contact")
    assert contact is not None
    assert param_of(contact, "expires") == "3600"
    assert param_of(contact, "+sip.instance") == "<urn:uuid:4e9a2f7c-5b1d-4c3e-8f6a-0d2b9c7e1a55>"
    assert param_of(contact, "reg-id") == "1"
    assert param_of(contact, "transport") is None  # a URI param, not a header param
    assert param_of(msg.top_via, "rport") == "" and param_of(msg.top_via, "alias") == ""
    assert msg.headers.get_all("Supported") == ["outbound", "path", "gruu"]


def test_auth_headers_are_not_split_on_commas() -> None:
    challenge = parse_message(BARESIP_401).headers
    assert challenge.get("WWW-Authenticate") == 'Digest realm="example.com", nonce="5f2a9c", algorithm=MD5, qop="auth"'
    assert len(challenge.get_all("www-authenticate")) == 1
    auth = parse_message(BARESIP_REGISTER_AUTH).headers.get("Authorization")
    assert auth is not None and auth.startswith('Digest username="alice"') and auth.endswith("nc=00000001")


def test_response_reason_defaults_and_free_text() -> None:
    assert Response(486).reason == "Busy Here"
    assert Response(299).reason == ""
    assert REASONS[513] == "Message Too Large"
    msg = parse_message(crlf(
        "SIP/2.0 180 Ringing, really ringing\n"
        "Via: SIP/2.0/UDP h;branch=z9hG4bK1\nFrom: <sip:a@b>;tag=1\nTo: <sip:c@d>\nCall-ID: x\nCSeq: 1 INVITE\n"
        "Content-Length: 0\n\n"
    ))
    assert isinstance(msg, Response) and msg.reason == "Ringing, really ringing"
    empty = parse_message(crlf(
        "SIP/2.0 100 \nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nFrom: <sip:a@b>;tag=1\nTo: <sip:c@d>\nCall-ID: x\n"
        "CSeq: 1 INVITE\nContent-Length: 0\n\n"
    ))
    # an empty reason phrase is legal (RFC 4475 noreason); Response fills in the standard one
    assert isinstance(empty, Response) and (empty.status, empty.reason) == (100, "Trying")


def test_built_request_serialises_with_content_length() -> None:
    req = Request("OPTIONS", "sip:bob@example.com", Headers([
        ("v", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1"), ("f", "<sip:a@example.com>;tag=1"),
        ("t", "<sip:bob@example.com>"), ("i", "abc"), ("CSEQ", "1 OPTIONS"), ("max-forwards", "70"),
    ]))
    data = req.to_bytes()
    assert data == crlf(
        "OPTIONS sip:bob@example.com SIP/2.0\n"
        "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\nFrom: <sip:a@example.com>;tag=1\nTo: <sip:bob@example.com>\n"
        "Call-ID: abc\nCSeq: 1 OPTIONS\nMax-Forwards: 70\nContent-Length: 0\n\n"
    )
    again = parse_message(data)
    assert isinstance(again, Request) and again.method == "OPTIONS"
    assert list(again.headers) == [*req.headers, ("Content-Length", "0")]


# --------------------------------------------------------------------------------------------------------------
# header name forms


COMPACT = crlf(
    "INVITE sip:bob@example.com SIP/2.0\n"
    "v: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKc1\n"
    "f: <sip:alice@example.com>;tag=f1\n"
    "t: <sip:bob@example.com>\n"
    "i: compact-1@192.0.2.1\n"
    "CSeq: 1 INVITE\n"
    "m: <sip:alice@192.0.2.1>\n"
    "k: timer, 100rel\n"
    "s: compact forms\n"
    "e: gzip\n"
    "o: presence\n"
    "r: <sip:carol@example.com>\n"
    "b: <sip:alice@example.com>\n"
    "x: 1800;refresher=uac\n"
    "u: talk, hold\n"
    "c: application/sdp\n"
    "l: {cl}\n"
    "\n",
    SDP,
)


def test_compact_forms_expand_to_canonical_names() -> None:
    msg = parse_message(COMPACT)
    names = [name for name, _ in msg.headers]
    assert names == [
        "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Supported", "Subject", "Content-Encoding", "Event",
        "Refer-To", "Referred-By", "Session-Expires", "Allow-Events", "Content-Type", "Content-Length",
    ]
    h = msg.headers
    assert h.get("i") == h.get("Call-ID") == "compact-1@192.0.2.1"
    assert h.get("m") == "<sip:alice@192.0.2.1>"
    assert h.get_all("k") == ["timer", "100rel"]
    assert h.get("X") == "1800;refresher=uac"
    assert msg.body == SDP
    out = msg.to_bytes()
    assert b"\r\nCall-ID: compact-1@192.0.2.1\r\n" in out and b"\r\nContent-Length: %d\r\n" % len(SDP) in out
    assert b"\r\ni:" not in out and b"\r\nl:" not in out


def test_header_names_are_case_insensitive() -> None:
    data = crlf(
        "OPTIONS sip:bob@example.com SIP/2.0\n"
        "VIA: SIP/2.0/UDP h;branch=z9hG4bK1\nfRoM: <sip:a@b>;tag=1\nTO: <sip:c@d>\ncall-id: CI\ncseq: 1 OPTIONS\n"
        "MAX-FORWARDS: 70\nI-Am-Custom: yes\nx-lower-case: 1\ncontent-LENGTH: 0\n\n"
    )
    h = parse_message(data).headers
    assert [n for n, _ in h] == [
        "Via", "From", "To", "Call-ID", "CSeq", "Max-Forwards", "I-Am-Custom", "x-lower-case", "Content-Length",
    ]
    for name in ("call-id", "CALL-ID", "Call-Id", "i", "I"):
        assert h.get(name) == "CI"
    assert h.get("x-LOWER-case") == "1"


def test_extension_header_names_keep_their_spelling_on_the_wire() -> None:
    data = crlf(
        "OPTIONS sip:bob@example.com SIP/2.0\n"
        "Via: SIP/2.0/UDP h;branch=z9hG4bK1\nFrom: <sip:a@b>;tag=1\nTo: <sip:c@d>\nCall-ID: CI\nCSeq: 1 OPTIONS\n"
        "X-PH-Tenant: acme\nX-CustomerId: 42\nContent-Length: 0\n\n"
    )
    msg = parse_message(data)
    out = msg.to_bytes()
    assert b"\r\nX-PH-Tenant: acme\r\n" in out and b"\r\nX-CustomerId: 42\r\n" in out
    assert msg.headers.get("x-ph-tenant") == "acme"


def test_canonical_name() -> None:
    assert canonical_name("call-id") == "Call-ID"
    assert canonical_name("CSEQ") == "CSeq"
    assert canonical_name("www-authenticate") == "WWW-Authenticate"
    assert canonical_name("l") == "Content-Length"
    assert canonical_name("X-Spelling-Test-7f3a") == "X-Spelling-Test-7f3a"
    assert canonical_name("x-SPELLING-test-7F3A") == "X-Spelling-Test-7f3a"  # first spelling seen wins
    assert canonical_name("X-Account-ID") == "X-Account-ID"


def test_whitespace_around_colon_and_values() -> None:
    data = crlf(
        "OPTIONS sip:bob@example.com SIP/2.0\n"
        "Via  :   SIP/2.0/UDP h;branch=z9hG4bK1   \nFrom:<sip:a@b>;tag=1\nTo:\t<sip:c@d>\nCall-ID: x\n"
        "CSeq:  1   OPTIONS\nContent-Length:0\n\n"
    )
    msg = parse_message(data)
    assert msg.headers.get("Via") == "SIP/2.0/UDP h;branch=z9hG4bK1"
    assert msg.headers.get("From") == "<sip:a@b>;tag=1"
    assert msg.headers.get("To") == "<sip:c@d>"
    assert msg.cseq == (1, "OPTIONS")


# --------------------------------------------------------------------------------------------------------------
# multi-valued headers


MULTI = crlf(
    "INVITE sip:bob@example.com SIP/2.0\n"
    "Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bKp1, SIP/2.0/UDP p2.example.com;branch=z9hG4bKp2\n"
    "Via: SIP/2.0/UDP ua.example.com;branch=z9hG4bKua\n"
    "Route: <sip:r1.example.com;lr>, <sip:r2.example.com;lr>\n"
    "Route: <sip:r3.example.com;lr>\n"
    "Record-Route: <sip:rr1.example.com;lr>,<sip:rr2.example.com;lr>\n"
    'Contact: "Doe, John" <sip:john@example.com>;q=0.7, <sip:jd@example.net;x=a,b>;q=0.2,\n'
    ' "Quote \\" , here" <sip:q@example.org>\n'
    "From: <sip:alice@example.com>;tag=1\n"
    "To: <sip:bob@example.com>\n"
    "Call-ID: multi-1\n"
    "CSeq: 1 INVITE\n"
    "Max-Forwards: 70\n"
    "Content-Length: 0\n"
    "\n"
)


def test_multi_value_headers_split_and_ordered() -> None:
    h = parse_message(MULTI).headers
    assert h.get_all("Via") == [
        "SIP/2.0/UDP p1.example.com;branch=z9hG4bKp1",
        "SIP/2.0/UDP p2.example.com;branch=z9hG4bKp2",
        "SIP/2.0/UDP ua.example.com;branch=z9hG4bKua",
    ]
    assert h.get("Via") == "SIP/2.0/UDP p1.example.com;branch=z9hG4bKp1"
    assert h.count("Via") == 2
    assert h.get_all("Route") == ["<sip:r1.example.com;lr>", "<sip:r2.example.com;lr>", "<sip:r3.example.com;lr>"]
    assert h.get_all("Record-Route") == ["<sip:rr1.example.com;lr>", "<sip:rr2.example.com;lr>"]
    assert h.get_all("Contact") == [
        '"Doe, John" <sip:john@example.com>;q=0.7',
        "<sip:jd@example.net;x=a,b>;q=0.2",
        '"Quote \\" , here" <sip:q@example.org>',
    ]


def test_multi_value_round_trip_keeps_lines() -> None:
    msg = parse_message(MULTI)
    again = parse_message(msg.to_bytes())
    assert list(again.headers) == list(msg.headers)
    assert msg.to_bytes().count(b"\r\nVia: ") == 2


def test_split_header_values() -> None:
    assert split_header_values("a") == ["a"]
    assert split_header_values("a, b ,c") == ["a", "b", "c"]
    assert split_header_values("a,,b, ,") == ["a", "b"]
    assert split_header_values('"x, y" <sip:a@b>, <sip:c@d;p=1,2>') == ['"x, y" <sip:a@b>', "<sip:c@d;p=1,2>"]
    assert split_header_values('"a\\"," <sip:a@b>, c') == ['"a\\"," <sip:a@b>', "c"]


# --------------------------------------------------------------------------------------------------------------
# folded lines


def test_folded_header_lines_are_unfolded() -> None:
    data = crlf(
        "OPTIONS sip:bob@example.com SIP/2.0\n"
        "Via: SIP/2.0/UDP h;branch=z9hG4bK1\n"
        "Subject: a long\n"
        "   subject line\n"
        "\tthat keeps going\n"
        "From:\n <sip:a@b>;tag=1\n"
        "To: <sip:c@d>\n"
        "Call-ID: fold\n"
        "CSeq: 1\n  OPTIONS\n"
        "Content-Length: 0\n\n"
    )
    msg = parse_message(data)
    assert msg.headers.get("Subject") == "a long subject line that keeps going"
    assert msg.headers.get("From") == "<sip:a@b>;tag=1"
    assert msg.cseq == (1, "OPTIONS")
    out = msg.to_bytes()
    assert b"Subject: a long subject line that keeps going\r\n" in out
    assert parse_message(out).headers.get("Subject") == "a long subject line that keeps going"


def test_continuation_before_any_header_is_an_error() -> None:
    with pytest.raises(SipParseError):
        parse_message(crlf("OPTIONS sip:a@b SIP/2.0\n continued: x\nVia: SIP/2.0/UDP h\n\n"))


# --------------------------------------------------------------------------------------------------------------
# bodies and Content-Length


def make_request(body: bytes, content_length: str | None = "{cl}", extra: str = "") -> bytes:
    cl_line = f"Content-Length: {content_length}\n" if content_length is not None else ""
    return crlf(
        "MESSAGE sip:bob@example.com SIP/2.0\n"
        "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKbody\n"
        "From: <sip:alice@example.com>;tag=b1\n"
        "To: <sip:bob@example.com>\n"
        "Call-ID: body-1\n"
        "CSeq: 5 MESSAGE\n"
        "Max-Forwards: 70\n"
        "Content-Type: application/octet-stream\n" + extra + cl_line + "\n",
        body,
    )


BINARY_BODY = bytes(range(256)) + b"\r\n\r\n--boundary\r\n\x00\x00\r\n" + bytes(range(255, -1, -1))


@pytest.mark.parametrize("body", [b"", b"x", b"\r\n", b"\r\n\r\n", BINARY_BODY, b"\xff\xfe" * 1000],
                         ids=["empty", "one", "crlf", "blank-line", "binary", "non-utf8"])
def test_body_is_byte_exact(body: bytes) -> None:
    data = make_request(body)
    msg = parse_message(data)
    assert msg.body == body
    assert msg.to_bytes() == data
    assert parse_message(data, stream=True).body == body


def test_udp_body_longer_than_content_length_is_truncated() -> None:
    data = make_request(b"hello world", content_length="5")
    msg = parse_message(data)
    assert msg.body == b"hello"
    assert msg.to_bytes() == make_request(b"hello")


def test_udp_body_shorter_than_content_length_is_an_answerable_error() -> None:
    data = make_request(b"short", content_length="50")
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    err = info.value
    assert err.status == 400 and "Content-Length" in err.reason
    assert err.request is not None
    assert err.request.method == "MESSAGE" and err.request.call_id == "body-1" and err.request.cseq == (5, "MESSAGE")
    assert err.request.branch == "z9hG4bKbody"


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "", "0x10", "²", "1 2"])
def test_bad_content_length_is_an_answerable_error(value: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(make_request(b"", content_length=value))
    assert info.value.status == 400 and info.value.request is not None


def test_huge_content_length_is_an_error_not_a_crash() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(make_request(b"abc", content_length="9" * 5000))
    assert info.value.request is not None


def test_missing_content_length_on_udp_takes_the_rest() -> None:
    msg = parse_message(make_request(b"rest of datagram", content_length=None))
    assert msg.body == b"rest of datagram"
    assert b"\r\nContent-Length: 16\r\n\r\nrest of datagram" in msg.to_bytes()


def test_missing_content_length_on_stream_is_an_error() -> None:
    with pytest.raises(SipParseError):
        parse_message(make_request(b"", content_length=None), stream=True)


def test_serialise_fixes_content_length() -> None:
    msg = parse_message(make_request(b"abc"))
    msg.body = b"a longer body"
    out = msg.to_bytes()
    assert b"\r\nContent-Length: 13\r\n\r\na longer body" in out
    assert out.count(b"Content-Length") == 1
    msg.headers.set("Content-Length", "999")
    assert msg.to_bytes() == out
    msg.headers.remove("Content-Length")
    assert msg.to_bytes().endswith(b"\r\nContent-Length: 13\r\n\r\na longer body")
    msg.headers.add("Content-Length", "1")
    msg.headers.add("l", "2")
    assert msg.to_bytes().count(b"Content-Length: 13\r\n") == 2


def test_serialise_formats_non_str_values() -> None:
    req = Request("OPTIONS", "sip:a@b", Headers([("Expires", 60)]))  # type: ignore[list-item]
    assert b"\r\nExpires: 60\r\n" in req.to_bytes()


def test_duplicate_content_length_is_an_error() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(make_request(b"abc", extra="Content-Length: 3\n"))
    assert info.value.request is not None


# --------------------------------------------------------------------------------------------------------------
# other malformed input


def options(*lines: str, start: str = "OPTIONS sip:bob@example.com SIP/2.0") -> bytes:
    base = {
        "Via": "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKo",
        "From": "<sip:alice@example.com>;tag=o1",
        "To": "<sip:bob@example.com>",
        "Call-ID": "opt-1",
        "CSeq": "1 OPTIONS",
        "Max-Forwards": "70",
    }
    extra: list[str] = []
    for line in lines:
        name, _, value = line.partition(":")
        if name.startswith("-"):
            base.pop(name[1:])
        elif name in base:
            base[name] = value.strip()
        else:
            extra.append(line)
    head = [start] + [f"{k}: {v}" for k, v in base.items()] + extra + ["Content-Length: 0", "", ""]
    return "\r\n".join(head).encode()


def test_options_helper_is_valid() -> None:
    assert isinstance(parse_message(options()), Request)


@pytest.mark.parametrize(
    ("lines", "fragment"),
    [
        (("-Via",), "missing Via"),
        (("-From",), "missing From"),
        (("-To",), "missing To"),
        (("-Call-ID",), "missing Call-ID"),
        (("-CSeq",), "missing CSeq"),
        (("Call-ID:",), "missing Call-ID"),
        (("CSeq: 1 INVITE",), "does not match"),
        (("CSeq: x OPTIONS",), "bad CSeq"),
        (("CSeq: 4294967296 OPTIONS",), "bad CSeq"),
        (("CSeq: 1",), "bad CSeq"),
        (("Max-Forwards: 256",), "Max-Forwards"),
        (("Max-Forwards: -1",), "Max-Forwards"),
        (("Via: SIP/3.0/UDP h",), "bad Via"),
        (("Via: SIP/2.0/UDP",), "bad Via"),
        (("Via: SIP/2.0/UDP h;;branch=1",), "bad Via"),
        (("Via: SIP/2.0/UDP h;branch=1,,",), "bad Via"),
        (("Via: SIP/2.0/UDP h;branch=1, junk",), "bad Via"),
        (("Contact: <sip:a@b>;q=1, junk",), "Contact"),
        (("From: Bell, Alexander <sip:a@b>;tag=1",), "From"),
        (("To: <sip:bob@example.com",), "To"),
        (('From: "unterminated <sip:a@b>;tag=1',), "From"),
        (("From: < sip:a@b >;tag=1",), "From"),
        (("Contact: sip:a@b?x=1",), "Contact"),
        (("Contact: <sip:a@b>,,<sip:c@d>",), "Contact"),
        (("Date: Sat, 13 Nov 2010 23:29:00 PST",), "Date"),
        (("Call-ID: dup",), None),
        (("To: <sip:dup@example.com>",), None),
        (("X-Bad Name: 1",), "header name"),
        (("NoColonHere",), "colon"),
    ],
)
def test_malformed_requests_are_answerable(lines: tuple[str, ...], fragment: str | None) -> None:
    data = options(*lines)
    if fragment is None:  # duplicate of a single-value header
        name = lines[0].partition(":")[0]
        data = data.replace(b"Content-Length: 0", lines[0].encode() + b"\r\nContent-Length: 0")
        fragment = f"duplicate {name}"
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    err = info.value
    assert fragment in err.reason
    assert err.status == 400
    assert err.request is not None and err.request.method == "OPTIONS"

    # With the deep checks deferred, the Via/From/To/Contact/Date errors come from validate() instead, the same;
    # every other error still comes from the parser.
    if fragment in ("bad Via", "From", "To", "Contact", "Date"):
        msg = parse_message(data, validate=False)
        with pytest.raises(SipParseError) as later:
            msg.validate()
        assert (later.value.reason, later.value.status, later.value.request) == (err.reason, 400, msg)
    else:
        with pytest.raises(SipParseError) as early:
            parse_message(data, validate=False)
        assert (early.value.reason, early.value.status) == (err.reason, err.status)


def test_sloppy_but_harmless_addresses_are_accepted() -> None:
    msg = parse_message(options(
        "From: <sip:alice@example.com>;tag=o1;", "To: Bob  Smith<sip:bob@example.com>",
        'Contact: "x, y" <sip:a@b>;q=0.5, <sip:c@d>;p="a,b", Jörg <sip:j@e>',
        "Via: SIP / 2.0 / UDP h : 5060 ; branch = z9hG4bK1 ,SIP/2.0/TCP i;rport",
    ))
    assert msg.from_tag == "o1"
    assert len(msg.headers.get_all("Contact")) == 3
    assert msg.branch == "z9hG4bK1"


def test_good_date_is_accepted() -> None:
    assert parse_message(options("Date: Sat, 13 Nov 2010 23:29:00 GMT")).headers.get("Date")


def test_contact_star_is_accepted() -> None:
    data = options("Contact: *", "Expires: 0", start="REGISTER sip:example.com SIP/2.0").replace(
        b"1 OPTIONS", b"1 REGISTER")
    assert parse_message(data).headers.get("Contact") == "*"


@pytest.mark.parametrize(
    ("start", "status", "answerable"),
    [
        ("OPTIONS sip:bob@example.com SIP/3.0", 505, True),
        ("OPTIONS sip:bob@example.com HTTP/1.1", 400, True),
        ("OPTIONS  sip:bob@example.com SIP/2.0", 400, True),
        ("OPTIONS sip:bob@example.com SIP/2.0 ", 400, True),
        ("OPTIONS <sip:bob@example.com> SIP/2.0", 400, True),
        ("OPTIONS sip:bob@example.com?Subject=x SIP/2.0", 400, True),
        ("OPTIONS bob SIP/2.0", 400, True),
        ("OPTIONS SIP/2.0", 400, False),
        ("OPT@IONS sip:bob@example.com SIP/2.0", 400, False),
        ("", 400, False),
    ],
)
def test_bad_request_lines(start: str, status: int, answerable: bool) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(options(start=start))
    assert info.value.status == status
    assert (info.value.request is not None) == answerable


@pytest.mark.parametrize("start", ["SIP/2.0 2000 OK", "SIP/2.0 099 Low", "SIP/2.0 700 High", "SIP/1.0 200 OK",
                                   "SIP/2.0 20x OK", "SIP/2.0"])
def test_bad_status_lines_are_not_answerable(start: str) -> None:
    data = options(start=start)
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert info.value.request is None


def test_leading_keepalives_and_bare_lf_are_tolerated() -> None:
    base = options()
    assert message_key(parse_message(b"\r\n\r\n" + base)) == message_key(parse_message(base))
    assert message_key(parse_message(base.replace(b"\r\n", b"\n"))) == message_key(parse_message(base))


def test_bare_cr_or_lf_inside_a_crlf_header_section_is_rejected() -> None:
    for bad in (b"X-Inject: a\nVia: SIP/2.0/UDP evil", b"X-Inject: a\rb"):
        data = options().replace(b"Content-Length: 0", bad + b"\r\nContent-Length: 0")
        with pytest.raises(SipParseError) as info:
            parse_message(data)
        assert info.value.request is not None


def test_missing_blank_line_is_an_answerable_error() -> None:
    data = options()[:-2]  # drop the final CRLF
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert "blank line" in info.value.reason and info.value.request is not None


def test_non_utf8_header_round_trips_and_nul_is_rejected() -> None:
    data = options().replace(b"<sip:alice@example.com>", b'"J\xf6rg" <sip:alice@example.com>')
    msg = parse_message(data)
    assert msg.to_bytes() == data
    with pytest.raises(SipParseError):
        parse_message(data.replace(b"J\xf6rg", b"J\xf6\x00rg"))


def test_utf8_display_name_and_reason() -> None:
    data = options().replace(b"<sip:alice@example.com>", '"Jörg Müller" <sip:alice@example.com>'.encode())
    msg = parse_message(data)
    assert msg.headers.get("From", "").startswith('"Jörg Müller"')  # type: ignore[union-attr]
    assert msg.to_bytes() == data


@pytest.mark.parametrize("data", [b"", b"\r\n", b"\r\n\r\n", b"   ", b"\x00\x01\x02", b"INVITE", b"\r\n\r\nfoo"])
def test_garbage_is_rejected(data: bytes) -> None:
    with pytest.raises(SipParseError):
        parse_message(data)


def test_too_large_message() -> None:
    body = b"x" * MAX_MESSAGE_SIZE
    with pytest.raises(SipParseError) as info:
        parse_message(make_request(body))
    assert info.value.status == 513


def test_too_many_header_lines() -> None:
    data = options(*[f"X-H{i}: {i}" for i in range(300)])
    with pytest.raises(SipParseError):
        parse_message(data)


def test_fast_and_general_paths_agree_on_examples() -> None:
    for data in [*ROUND_TRIP.values(), COMPACT, MULTI, make_request(BINARY_BODY)]:
        assert message_key(_parse_general(data, False, False)) == message_key(parse_message(data))


def test_validate_passes_a_valid_message_and_checks_every_contact() -> None:
    for data in ROUND_TRIP.values():
        parse_message(data, validate=False).validate()
    msg = parse_message(options("Contact: <sip:a@b>", "Contact: <sip:c@d>"), validate=False)
    msg.validate()
    msg.headers.add("Contact", "<sip:e@f>;;")
    msg.validate()  # empty params after an address are tolerated
    msg.headers.add("Contact", "sip:e@f?x=1")
    with pytest.raises(SipParseError, match="Contact") as info:
        msg.validate()
    assert info.value.request is msg


def test_validate_on_a_response_recovers_no_request() -> None:
    msg = parse_message(SIPP_200.replace(b"To: service <sip:", b"To: service < sip:"), validate=False)
    with pytest.raises(SipParseError, match="To") as info:
        msg.validate()
    assert info.value.request is None and info.value.status == 400


# --------------------------------------------------------------------------------------------------------------
# param_of / tag_of


def test_param_of_and_tag_of() -> None:
    assert tag_of("<sip:a@b;tag=uri-param>;tag=hdr") == "hdr"
    assert tag_of("<sip:a@b;tag=uri-param>") == ""
    assert tag_of("sip:a@b;tag=addr-spec") == "addr-spec"
    assert tag_of('"x>y;tag=no" <sip:a@b>;tag=yes') == "yes"
    assert param_of('<sip:a@b>;+sip.instance="<urn:x;y>";q=0.5', "q") == "0.5"
    assert param_of('<sip:a@b>;+sip.instance="<urn:x;y>"', "+sip.instance") == "<urn:x;y>"
    assert param_of("SIP/2.0/UDP h;rport;Branch=z9hG4bK1", "branch") == "z9hG4bK1"
    assert param_of("SIP/2.0/UDP h;rport", "rport") == ""
    assert param_of("SIP/2.0/UDP h", "rport") is None


def test_cseq_property_tolerates_junk() -> None:
    assert Request("X", "sip:a", Headers([("CSeq", "x")])).cseq == (0, "")
    assert Request("X", "sip:a", Headers([("CSeq", "9" * 5000 + " X")])).cseq == (0, "")
    assert Request("X", "sip:a", Headers([("CSeq", "7\tBYE")])).cseq == (7, "BYE")
    assert Request("X", "sip:a").cseq == (0, "")


# --------------------------------------------------------------------------------------------------------------
# StreamFramer (TCP)


STREAM = [SIPP_INVITE, SIPP_ACK, BARESIP_REGISTER, SIPP_200]


def test_framer_several_messages_in_one_chunk() -> None:
    framer = StreamFramer()
    assert framer.feed(b"".join(STREAM)) == STREAM


def test_framer_byte_by_byte() -> None:
    framer = StreamFramer()
    out: list[bytes] = []
    for byte in b"".join(STREAM):
        out += framer.feed(bytes([byte]))
    assert out == STREAM


def test_framer_every_split_point() -> None:
    data = SIPP_INVITE + SIPP_BYE
    for cut in range(len(data) + 1):
        framer = StreamFramer()
        out = framer.feed(data[:cut]) + framer.feed(data[cut:])
        assert out == [SIPP_INVITE, SIPP_BYE], cut
        assert [parse_message(m, stream=True).to_bytes() for m in out] == out


def test_framer_arbitrary_chunking() -> None:
    data = b"".join(STREAM)
    for size in (1, 2, 3, 7, 64, 100, 1000):
        framer = StreamFramer()
        out: list[bytes] = []
        for i in range(0, len(data), size):
            out += framer.feed(data[i:i + size])
        assert out == STREAM, size


def test_framer_skips_keepalives() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == []
    assert framer.feed(b"\r\n" + SIPP_ACK + b"\r\n\r\n\r\n" + SIPP_BYE[:10]) == [SIPP_ACK]
    assert framer.feed(SIPP_BYE[10:] + b"\r\n") == [SIPP_BYE]
    assert framer.feed(b"\r\n\r\n") == []


def test_framer_body_containing_blank_lines() -> None:
    msg = make_request(BINARY_BODY)
    framer = StreamFramer()
    assert framer.feed(msg[:100]) == []
    assert framer.feed(msg[100:] + msg) == [msg, msg]
    assert parse_message(msg, stream=True).body == BINARY_BODY


def test_framer_compact_and_folded_content_length() -> None:
    body = b"hello"
    compact = make_request(body).replace(b"Content-Length: 5", b"l:5")
    folded = make_request(body).replace(b"Content-Length: 5", b"Content-Length:\r\n 5")
    assert StreamFramer().feed(compact + compact) == [compact, compact]
    assert StreamFramer().feed(folded) == [folded]
    assert parse_message(folded, stream=True).body == body


@pytest.mark.parametrize("value", [None, "abc", "-5", "", "1e3"])
def test_framer_missing_or_bad_content_length(value: str | None) -> None:
    data = make_request(b"", content_length=value)
    with pytest.raises(SipParseError):
        StreamFramer().feed(data)


def test_framer_too_large() -> None:
    with pytest.raises(SipParseError) as info:
        StreamFramer().feed(make_request(b"", content_length="9" * 40))
    assert info.value.status == 513
    with pytest.raises(SipParseError) as info:
        StreamFramer(max_message=1000).feed(b"INVITE sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * 200)
    assert info.value.status == 513
    with pytest.raises(SipParseError):
        StreamFramer(max_message=500).feed(make_request(b"x" * 600))


def test_framer_waits_for_the_body() -> None:
    data = make_request(b"0123456789")
    framer = StreamFramer()
    assert framer.feed(data[:-1]) == []
    assert framer.feed(data[-1:]) == [data]


# --------------------------------------------------------------------------------------------------------------
# Headers API


def make_headers() -> Headers:
    return Headers([
        ("Via", "SIP/2.0/UDP a;branch=1, SIP/2.0/UDP b;branch=2"),
        ("to", "<sip:bob@b>"),
        ("Via", "SIP/2.0/UDP c;branch=3"),
        ("Route", "<sip:r1;lr>"),
        ("X-Custom", "1"),
        ("x-custom", "2"),
    ])


def test_headers_get_and_get_all() -> None:
    h = make_headers()
    assert h.get("Via") == "SIP/2.0/UDP a;branch=1"
    assert h.get("To") == "<sip:bob@b>"
    assert h.get("X-Custom") == "1"
    assert h.get("Missing") is None and h.get("Missing", "dflt") == "dflt"
    assert h.get_all("v") == ["SIP/2.0/UDP a;branch=1", "SIP/2.0/UDP b;branch=2", "SIP/2.0/UDP c;branch=3"]
    assert h.get_all("x-custom") == ["1", "2"]
    assert h.get_all("Missing") == []
    assert len(h) == 6 and [n for n, _ in h][:2] == ["Via", "To"]
    assert "TO" in h and "Contact" not in h and 3 not in h


def test_headers_count() -> None:
    h = make_headers()
    assert h.count("Via") == 2 and h.count("x-custom") == 2 and h.count("Contact") == 0


def test_headers_set() -> None:
    h = make_headers()
    h.set("x-custom", "only")
    assert h.get_all("X-Custom") == ["only"]
    assert [n for n, _ in h] == ["Via", "To", "Via", "Route", "X-Custom"]
    h.set("via", "SIP/2.0/TCP z")
    assert h.get_all("Via") == ["SIP/2.0/TCP z"] and [n for n, _ in h][0] == "Via"
    h.set("Contact", "<sip:new@c>")
    assert list(h)[-1] == ("Contact", "<sip:new@c>")


def test_headers_add() -> None:
    h = make_headers()
    h.add("Via", "SIP/2.0/UDP top;branch=0", first=True)
    h.add("record-route", "<sip:rr;lr>")
    assert list(h)[0] == ("Via", "SIP/2.0/UDP top;branch=0")
    assert list(h)[-1] == ("Record-Route", "<sip:rr;lr>")
    assert h.get("Via") == "SIP/2.0/UDP top;branch=0"


def test_headers_remove() -> None:
    h = make_headers()
    h.remove("VIA")
    assert h.get("Via") is None and len(h) == 4
    h.remove("Not-There")
    assert len(h) == 4


def test_headers_pop_first() -> None:
    h = make_headers()
    assert h.pop_first("Via") == "SIP/2.0/UDP a;branch=1"
    assert h.get_all("Via") == ["SIP/2.0/UDP b;branch=2", "SIP/2.0/UDP c;branch=3"]
    assert h.count("Via") == 2
    assert h.pop_first("Via") == "SIP/2.0/UDP b;branch=2"
    assert h.count("Via") == 1
    assert h.pop_first("Route") == "<sip:r1;lr>" and "Route" not in h
    assert h.pop_first("Route") is None
    assert h.pop_first("X-Custom") == "1" and h.get_all("X-Custom") == ["2"]


def test_headers_replace_first() -> None:
    h = make_headers()
    h.replace_first("Via", "SIP/2.0/UDP new;branch=9")
    assert h.get_all("Via") == ["SIP/2.0/UDP new;branch=9", "SIP/2.0/UDP b;branch=2", "SIP/2.0/UDP c;branch=3"]
    h.replace_first("Contact", "<sip:c@c>")
    assert h.get("Contact") == "<sip:c@c>"


def test_headers_degenerate_multi_values_do_not_crash() -> None:
    h = Headers([("Contact", ","), ("Route", " , ")])
    assert h.get("Contact") == ""
    assert h.get_all("Contact") == []
    assert h.pop_first("Route") == "" and "Route" not in h
    h.replace_first("Contact", "<sip:a@b>")
    assert h.get("Contact") == "<sip:a@b>"


def test_headers_copy_is_independent() -> None:
    h = make_headers()
    c = h.copy()
    c.add("Subject", "x")
    c.set("To", "<sip:other@b>")
    assert "Subject" not in h and h.get("To") == "<sip:bob@b>"
    assert repr(h).startswith("Headers([")


# --------------------------------------------------------------------------------------------------------------
# serialising a parsed message that was not changed: the parsed bytes


def fresh_bytes(msg: Request | Response) -> bytes:
    """What serialising `msg` writes, bypassing the parsed bytes it may keep."""
    if isinstance(msg, Request):
        return Request(msg.method, msg.uri, msg.headers.copy(), msg.body, msg.version).to_bytes()
    return Response(msg.status, msg.reason, msg.headers.copy(), msg.body, msg.version).to_bytes()


@pytest.mark.parametrize("data", ROUND_TRIP.values(), ids=ROUND_TRIP.keys())
def test_unchanged_message_serialises_to_the_parsed_bytes(data: bytes) -> None:
    parse_message(data)  # extension names are learnt on first sight
    msg = parse_message(data)
    assert msg._wire is not None
    assert msg.to_bytes() is data
    assert fresh_bytes(msg) == data


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.headers.set("Max-Forwards", "10"),
        lambda m: m.headers.add("X-New", "1"),
        lambda m: m.headers.add("Via", "SIP/2.0/UDP p;branch=z9hG4bKp", first=True),
        lambda m: m.headers.remove("Subject"),
        lambda m: m.headers.replace_first("Via", "SIP/2.0/UDP p;branch=z9hG4bKp"),
        lambda m: m.headers.pop_first("Via"),
        lambda m: setattr(m, "headers", Headers([*m.headers][1:])),
        lambda m: setattr(m, "body", b"v=0\r\n"),
        lambda m: setattr(m, "uri", "sip:other@example.com"),
        lambda m: setattr(m, "method", "OPTIONS"),
        lambda m: setattr(m, "version", "SIP/3.0"),
    ],
)
def test_any_change_to_a_parsed_request_is_serialised(change: Callable[[Request], None]) -> None:
    msg = parse_message(SIPP_INVITE)
    assert isinstance(msg, Request) and msg.to_bytes() == SIPP_INVITE
    change(msg)
    assert msg.to_bytes() == fresh_bytes(msg) != SIPP_INVITE


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.headers.add("Server", "x"),
        lambda m: setattr(m, "status", 180),
        lambda m: setattr(m, "reason", "Fine"),
        lambda m: setattr(m, "body", b""),
    ],
)
def test_any_change_to_a_parsed_response_is_serialised(change: Callable[[Response], None]) -> None:
    msg = parse_message(SIPP_200)
    assert isinstance(msg, Response) and msg.to_bytes() == SIPP_200
    change(msg)
    assert msg.to_bytes() == fresh_bytes(msg) != SIPP_200


@pytest.mark.parametrize(
    "data",
    [
        COMPACT,
        SIPP_INVITE.replace(b"Call-ID:", b"call-id:"),                        # spelling normalised
        SIPP_INVITE.replace(b"CSeq: 1 INVITE", b"CSeq:   1 INVITE  "),          # whitespace normalised
        SIPP_INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards:70"),
        SIPP_INVITE.replace(b"Content-Length: ", b"Content-Length: 00"),       # value rewritten
        SIPP_INVITE + b"trailing junk",                                        # body cut to Content-Length
        SIPP_BYE.replace(b"Content-Length: 0\r\n", b""),                      # Content-Length added
        SIPP_200.replace(b"SIP/2.0 200 OK", b"SIP/2.0 200"),                     # reason filled in
        b"\r\n" + SIPP_INVITE,                                                  # keep-alive dropped
    ],
)
def test_message_not_in_canonical_form_is_serialised_afresh(data: bytes) -> None:
    msg = parse_message(data)
    assert msg._wire is None
    assert msg.to_bytes() == fresh_bytes(msg) != data


def test_headers_mutation_reflected_in_serialisation() -> None:
    msg = parse_message(SIPP_INVITE)
    msg.headers.add("Via", "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKnew", first=True)
    msg.headers.set("Max-Forwards", "69")
    out = parse_message(msg.to_bytes())
    assert out.branch == "z9hG4bKnew"
    assert out.headers.get("Max-Forwards") == "69"
    assert out.headers.count("Via") == 2
