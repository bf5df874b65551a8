"""Property tests: whatever bytes arrive, parse_message / StreamFramer return messages or raise SipParseError.

Also checked on every input: the fast and the general parse paths agree; parsing with the deep checks deferred and
then `validate()` accepts and rejects exactly as a full parse does (same reason, status and recovered request); a
parsed message serialises to bytes that parse back to the same message, and the parsed bytes it may hand back as
they are (`Message._wire`) are exactly what a fresh serialisation writes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip.message import MAX_MESSAGE_SIZE, Request, Response, SipParseError, StreamFramer, _parse_general, parse_message
from sip.uri import NameAddr, SipUri, Via

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
)
HEAD_LINES = [
    b"INVITE sip:bob@example.com SIP/2.0",
    b"Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-proxy-1;rport",
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;received=192.0.2.10;branch=z9hG4bK-ua-1",
    b"Max-Forwards: 69",
    b"Record-Route: <sip:192.0.2.20;lr>",
    b'From: "Alice" <sip:alice@example.com>;tag=a8f3c',
    b"To: <sip:bob@example.com>",
    b"Call-ID: fuzz-1@192.0.2.10",
    b"CSeq: 1 INVITE",
    b'Contact: <sip:alice@192.0.2.10:5060>;+sip.instance="<urn:uuid:1>"',
    b"Allow: INVITE, ACK, BYE, CANCEL",
    b"Content-Type: application/sdp",
    b"Content-Length: " + str(len(SDP)).encode(),
]
INVITE = b"\r\n".join(HEAD_LINES) + b"\r\n\r\n" + SDP


def key(msg: Request | Response) -> tuple[object, ...]:
    start = (msg.method, msg.uri) if isinstance(msg, Request) else (msg.status, msg.reason)
    return type(msg), start, list(msg.headers), msg.body


def error_key(err: SipParseError) -> tuple[object, ...]:
    req = err.request
    return err.reason, err.status, None if req is None else key(req)


def deferred(data: bytes, stream: bool) -> Request | Response:
    """parse_message with the deep checks deferred, then validate(): must equal a full parse."""
    msg = parse_message(data, stream=stream, validate=False)
    msg.validate()
    return msg


def fresh_bytes(msg: Request | Response) -> bytes:
    """What serialising `msg` writes, bypassing the parsed bytes it may keep."""
    if isinstance(msg, Request):
        return Request(msg.method, msg.uri, msg.headers.copy(), msg.body, msg.version).to_bytes()
    return Response(msg.status, msg.reason, msg.headers.copy(), msg.body, msg.version).to_bytes()


def check(data: bytes, *, stream: bool = False) -> Request | Response | None:
    """parse_message may only return a message or raise SipParseError; both paths must agree."""
    try:
        msg = parse_message(data, stream=stream)
    except SipParseError as err:
        assert isinstance(err.status, int) and err.reason
        assert err.request is None or isinstance(err.request, Request)
        if len(data) <= MAX_MESSAGE_SIZE:
            with pytest.raises(SipParseError) as general:
                _parse_general(data, stream, False)
            assert error_key(general.value) == error_key(err)
        with pytest.raises(SipParseError) as later:
            deferred(data, stream)
        assert error_key(later.value) == error_key(err)
        return None
    assert isinstance(msg, (Request, Response))
    assert key(_parse_general(data, stream, False)) == key(msg)
    assert key(deferred(data, stream)) == key(msg)
    assert msg.to_bytes() == fresh_bytes(msg)
    if msg._wire is not None:
        assert msg.to_bytes() is data
    # serialising gives bytes that parse back to the same message (Content-Length aside: it may be added)
    again = parse_message(msg.to_bytes(), stream=stream)
    strip = [item for item in msg.headers if item[0] != "Content-Length"]
    assert [item for item in again.headers if item[0] != "Content-Length"] == strip
    assert again.body == msg.body
    return msg


def test_base_message_is_valid() -> None:
    msg = check(INVITE)
    assert msg is not None and msg.body == SDP


def test_truncation_at_every_position() -> None:
    for cut in range(len(INVITE) + 1):
        check(INVITE[:cut])
        check(INVITE[cut:])
        check(INVITE[:cut], stream=True)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(INVITE) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_byte_flips(flips: list[tuple[int, int]]) -> None:
    data = bytearray(INVITE)
    for pos, value in flips:
        data[pos] = value
    check(bytes(data))
    check(bytes(data), stream=True)


INTERESTING = st.sampled_from(
    [b"\r\n", b"\n", b"\r", b"\r\n\r\n", b"\r\n ", b"\r\n\t", b":", b";", b",", b"<", b">", b'"', b"\\", b" ",
     b"\x00", b"\xff", b"\xc3", b"%", b"?", b"@", b"[", b"]", b"=", b"SIP/2.0", b"\xe2\x80\xa8", b"\xc2\x85"]
)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(INVITE)), st.one_of(INTERESTING, st.binary(min_size=1, max_size=8))),
                min_size=1, max_size=6))
def test_inserted_garbage(inserts: list[tuple[int, bytes]]) -> None:
    data = INVITE
    for pos, chunk in inserts:
        data = data[:pos] + chunk + data[pos:]
    check(data)


@FUZZ
@given(st.lists(st.sampled_from(range(1, len(HEAD_LINES))), max_size=len(HEAD_LINES) * 2), st.booleans())
def test_header_deletion_duplication_and_order(order: list[int], folded: bool) -> None:
    lines = [HEAD_LINES[0]] + [HEAD_LINES[i] for i in order]
    if folded:
        lines = [line.replace(b": ", b":\r\n  ", 1) for line in lines]
    check(b"\r\n".join(lines) + b"\r\n\r\n" + SDP)


@FUZZ
@given(st.one_of(st.integers(-10, 10**30).map(lambda n: str(n).encode()),
                 st.text(max_size=12).map(lambda t: t.encode("utf-8", "surrogatepass")),
                 st.binary(max_size=12)),
       st.binary(max_size=400))
def test_random_content_length(value: bytes, body: bytes) -> None:
    head = b"\r\n".join(HEAD_LINES[:-1]) + b"\r\nContent-Length: " + value + b"\r\n\r\n"
    msg = check(head + body)
    if msg is not None:
        assert msg.body == body[: int(value)]
    check(head + body, stream=True)


@FUZZ
@given(st.binary(max_size=2000))
def test_random_binary(data: bytes) -> None:
    check(data)
    check(INVITE[:200] + data)


@FUZZ
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_random_header_text(text: str) -> None:
    line = text.encode("utf-8", "surrogatepass")
    data = b"\r\n".join(HEAD_LINES[:-1]) + b"\r\n" + line + b"\r\nContent-Length: 0\r\n\r\n"
    check(data)


@FUZZ
@given(st.lists(st.sampled_from(["invite", "ack", "keepalive", "garbage", "flip"]), min_size=1, max_size=6),
       st.lists(st.integers(1, 300), min_size=1, max_size=40), st.binary(min_size=1, max_size=20),
       st.integers(0, len(INVITE) - 1))
def test_stream_framer(parts: list[str], chunks: list[int], garbage: bytes, flip_at: int) -> None:
    flipped = bytearray(INVITE)
    flipped[flip_at] ^= 0x41
    pieces = {"invite": INVITE, "ack": INVITE.replace(b"INVITE", b"ACK   ", 1), "keepalive": b"\r\n\r\n",
              "garbage": garbage, "flip": bytes(flipped)}
    stream = b"".join(pieces[p] for p in parts)
    framer = StreamFramer()
    out: list[bytes] = []
    pos = 0
    i = 0
    try:
        while pos < len(stream):
            size = chunks[i % len(chunks)]
            out += framer.feed(stream[pos:pos + size])
            pos += size
            i += 1
    except SipParseError:
        return  # the connection would be closed
    for frame in out:
        check(frame, stream=True)
    if all(p in ("invite", "keepalive") for p in parts):
        assert out == [INVITE] * parts.count("invite")


CORPUS = sorted((Path(__file__).resolve().parent.parent / "data" / "rfc4475").glob("*.dat"))
SEEDS = [p.read_bytes() for p in CORPUS]


@FUZZ
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.floats(0, 1), st.one_of(INTERESTING, st.binary(max_size=4))),
                                        min_size=1, max_size=5), st.booleans())
def test_rfc4475_mutations(seed: bytes, edits: list[tuple[float, bytes]], replace: bool) -> None:
    """Mutations of the torture messages reach the general path (folding, odd whitespace, bare LF...)."""
    data = seed
    for where, chunk in edits:
        pos = int(where * len(data))
        data = data[:pos] + chunk + data[pos + (len(chunk) if replace else 0):]
    check(data)
    check(data.replace(b"\r\n", b"\n"))


@FUZZ
@given(st.one_of(st.text(max_size=80), st.sampled_from([
    "sip:a@b", '"A" <sip:a@b>;tag=1', "SIP/2.0/UDP h:5060;branch=z9hG4bK1", "sip:[::1]:5060", "tel:+1"]).flatmap(
        lambda base: st.integers(0, len(base)).flatmap(
            lambda pos: st.text(max_size=4).map(lambda junk: base[:pos] + junk + base[pos:])))))
def test_uri_parsers_raise_only_value_error(text: str) -> None:
    for parse in (SipUri.parse, NameAddr.parse, Via.parse):
        try:
            value = parse(text)
        except ValueError:
            continue
        assert isinstance(str(value), str)
