"""RFC 4475 torture messages against sip.message / sip.uri.

The expectation for every message is in the tables below. Invariant for all of them: nothing but `SipParseError`
ever escapes, whatever the transport (datagram, stream, truncated).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sip.message import Request, Response, SipParseError, StreamFramer, parse_message
from sip.uri import NameAddr, SipUri, Via

DATA = Path(__file__).resolve().parent.parent / "data" / "rfc4475"

# §3.1.1 valid messages: must parse and be handled normally.
VALID = ["wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "dblreq", "semiuri", "transports",
         "mpart01", "unreason", "noreason"]

# §3.1.2 invalid messages: SipParseError. `status` is what the caller answers with and `answerable` says whether
# err.request is recovered so it can (a request whose headers are usable). Responses are never answered, so
# err.request is None for them whatever is wrong.
#   name: (status, answerable, fragment of err.reason)
INVALID: dict[str, tuple[int, bool, str]] = {
    "badinv01": (400, True, "Via"),                 # ';;,;,,' in Via, ';;;;' in Contact
    "clerr": (400, True, "Content-Length"),         # Content-Length 9999 > body on a datagram
    "ncl": (400, True, "Content-Length"),           # negative Content-Length
    "scalar02": (400, True, "CSeq"),                # CSeq 2**65, Max-Forwards 300, huge Expires
    "scalarlg": (400, False, "CSeq"),               # response: huge CSeq -> drop
    "quotbal": (400, True, "To"),                   # unterminated quoted display name
    "ltgtruri": (400, True, "Request-URI"),         # Request-URI in <>
    "lwsruri": (400, True, "request line"),         # LWS inside the Request-URI
    "lwsstart": (400, True, "request line"),        # several SP between request-line elements
    "trws": (400, True, "request line"),            # SP after SIP-Version
    "escruri": (400, True, "Request-URI"),          # escaped headers in the Request-URI
    "baddate": (400, True, "Date"),                 # non-GMT time zone in Date
    "regbadct": (400, True, "Contact"),             # addr-spec Contact with '?' headers, no <>
    "badaspec": (400, True, "To"),                  # LWS inside <...>
    "baddn": (400, True, "From"),                   # unquoted display name with ','
    "badvers": (505, True, "version"),              # SIP/7.0
    "mismatch01": (400, True, "CSeq"),              # CSeq method != request method
    "mismatch02": (400, True, "CSeq"),              # NEWMETHOD vs CSeq INVITE
    "bigcode": (400, False, "status code"),         # response: status 4294967301 -> drop
}

# §3.2 transaction layer, §3.3 application layer, §3.4 backward compatibility: well-formed enough to parse; the UA /
# transaction layer decides (416 unknown scheme, 420 bad extension, 415 unknown type, 483 Max-Forwards 0, ...).
PARSES = ["badbranch", "unkscm", "novelsc", "unksm2", "bext01", "invut", "regaut01", "bcast", "zeromf", "cparam01",
          "cparam02", "regescrt", "sdp01", "inv2543"]

# §3.3 messages for which RFC 4475 itself says "respond with 400 Bad Request": missing mandatory headers (insuf),
# duplicated single-value headers (multi01) and several Content-Length values (mcl01). Those are exactly the parser's
# mandatory-header and duplicate checks, so the parser rejects them — with the request recovered for the 400.
APP_LAYER_400: dict[str, str] = {
    "insuf": "missing",
    "multi01": "duplicate",
    "mcl01": "duplicate Content-Length",
}

ALL = sorted(p.stem for p in DATA.glob("*.dat"))


def load(name: str) -> bytes:
    return (DATA / f"{name}.dat").read_bytes()


def test_corpus_is_complete_and_classified() -> None:
    assert len(ALL) == 49
    groups = [*VALID, *INVALID, *PARSES, *APP_LAYER_400]
    assert sorted(groups) == ALL


def check_addresses(msg: Request | Response) -> None:
    """A valid message's addresses must also go through sip.uri."""
    h = msg.headers
    for name in ("From", "To"):
        NameAddr.parse(h.get(name) or "")
    for contact in h.get_all("Contact"):
        if contact != "*":
            NameAddr.parse(contact)
    for via in h.get_all("Via"):
        Via.parse(via)
    if isinstance(msg, Request):
        SipUri.parse(msg.uri)


def assert_stable(msg: Request | Response) -> None:
    """Serialising and parsing again gives the same message."""
    again = parse_message(msg.to_bytes())
    assert type(again) is type(msg)
    without_length = [item for item in msg.headers if item[0] != "Content-Length"]
    assert [item for item in again.headers if item[0] != "Content-Length"] == without_length
    assert again.body == msg.body


@pytest.mark.parametrize("name", VALID)
def test_valid_messages_parse(name: str) -> None:
    msg = parse_message(load(name))
    check_addresses(msg)
    assert_stable(msg)


@pytest.mark.parametrize("name", PARSES)
def test_application_layer_messages_parse(name: str) -> None:
    msg = parse_message(load(name))
    assert_stable(msg)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_messages_are_rejected(name: str) -> None:
    status, answerable, fragment = INVALID[name]
    with pytest.raises(SipParseError) as info:
        parse_message(load(name))
    err = info.value
    assert err.status == status
    assert fragment in err.reason
    if answerable:
        req = err.request
        assert req is not None
        # enough to build the response: Via, From, To, Call-ID, CSeq
        for header in ("Via", "From", "To", "Call-ID", "CSeq"):
            assert req.headers.get(header), header
    else:
        assert err.request is None


@pytest.mark.parametrize("name", sorted([*INVALID, *APP_LAYER_400]))
def test_deferred_checks_reject_alike(name: str) -> None:
    """parse_message(validate=False) then validate() rejects every invalid message as a full parse does."""
    data = load(name)
    with pytest.raises(SipParseError) as full:
        parse_message(data)
    with pytest.raises(SipParseError) as deferred:
        parse_message(data, validate=False).validate()
    a, b = full.value, deferred.value
    assert (a.reason, a.status) == (b.reason, b.status)
    assert (a.request is None) == (b.request is None)
    if a.request is not None and b.request is not None:
        assert (a.request.method, a.request.uri, list(a.request.headers), a.request.body) == (
            b.request.method, b.request.uri, list(b.request.headers), b.request.body)


@pytest.mark.parametrize("name", [*VALID, *PARSES])
def test_serialising_unchanged_message_matches_a_fresh_serialisation(name: str) -> None:
    msg = parse_message(load(name))
    if isinstance(msg, Request):
        fresh = Request(msg.method, msg.uri, msg.headers.copy(), msg.body, msg.version)
    else:
        fresh = Response(msg.status, msg.reason, msg.headers.copy(), msg.body, msg.version)
    assert msg.to_bytes() == fresh.to_bytes()


@pytest.mark.parametrize("name", sorted(APP_LAYER_400))
def test_application_layer_400s(name: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(load(name))
    assert info.value.status == 400
    assert APP_LAYER_400[name] in info.value.reason
    assert info.value.request is not None and info.value.request.headers.get("Via")


# --------------------------------------------------------------------------------------------------------------
# details of individual messages


def test_wsinv() -> None:
    msg = parse_message(load("wsinv"))
    h = msg.headers
    assert isinstance(msg, Request) and msg.method == "INVITE"
    assert h.get("To") == "sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n"
    assert msg.to_tag == "1918181833n" and msg.from_tag == "98asjd8"
    assert msg.cseq == (9, "INVITE")
    assert h.get("Max-Forwards") == "0068"
    assert h.get("Subject") == ""
    assert h.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert h.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    vias = [Via.parse(v) for v in h.get_all("Via")]
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert NameAddr.parse(h.get("From") or "").display == 'J Rosenberg \\"'
    contact = NameAddr.parse(h.get("Contact") or "")
    assert contact.display == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert len(msg.body) == 150 and msg.body.endswith(b"a=rtpmap:31 LPC\r\n")


def test_intmeth() -> None:
    msg = parse_message(load("intmeth"))
    assert isinstance(msg, Request)
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    assert msg.method == method and msg.cseq == (139122385, method)
    uri = SipUri.parse(msg.uri)
    assert uri.host == "example.com" and uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert msg.branch == "z9hG4bK-.!%66*_+`'~"
    assert msg.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert NameAddr.parse(msg.headers.get("To") or "").display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert msg.from_tag == "_token~1'+`*%!-."
    assert msg.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff\u5927\u505c\u96fb"
    # extension header names keep their spelling; the value comes back with one SP after the colon
    assert msg.to_bytes() == load("intmeth").replace(b"extensionHeader-!.%*+_`'~:", b"extensionHeader-!.%*+_`'~: ")


def test_escapes_are_kept() -> None:
    esc01 = parse_message(load("esc01"))
    assert isinstance(esc01, Request) and esc01.uri == "sip:sips%3Auser%40example.com@example.net"
    assert SipUri.parse(esc01.uri).user == "sips%3Auser%40example.com"
    assert esc01.headers.get("To") == "sip:%75se%72@example.com"
    contact = NameAddr.parse(esc01.headers.get("Contact") or "")
    assert contact.uri.user == "cal%6Cer" and contact.uri.params == {"%6c%72": None, "n%61me": "v%61lue%25%34%31"}
    escnull = parse_message(load("escnull"))
    assert escnull.headers.get_all("Contact") == ["<sip:%00@host5.example.com>", "<sip:%00%00@host5.example.com>"]
    esc02 = parse_message(load("esc02"))
    assert isinstance(esc02, Request) and esc02.method == "RE%47IST%45R" and esc02.cseq[1] == "RE%47IST%45R"
    assert len(esc02.headers.get_all("Contact")) == 2  # 'C%6Fntact' is some other header
    assert esc02.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert esc02.branch == "z9hG4bK209%fzsnel234"


def test_lwsdisp_longreq_semiuri_transports() -> None:
    assert NameAddr.parse(parse_message(load("lwsdisp")).headers.get("From") or "").display == "caller"
    longreq = parse_message(load("longreq"))
    assert len(longreq.headers.get_all("Via")) == 34
    assert longreq.branch == ""  # the top Via has no branch; the long one is the last
    assert longreq.headers.get_all("Via")[-1].endswith("longlonglonglongbranchvalue")
    assert len(longreq.body) == 150
    semiuri = parse_message(load("semiuri"))
    assert isinstance(semiuri, Request) and SipUri.parse(semiuri.uri).user == "user;par=u%40example.net"
    assert len(semiuri.headers.get_all("Accept")) == 6
    transports = parse_message(load("transports"))
    assert [Via.parse(v).transport for v in transports.headers.get_all("Via")] == [
        "UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_dblreq_second_request_is_ignored() -> None:
    msg = parse_message(load("dblreq"))
    assert isinstance(msg, Request) and msg.method == "REGISTER" and msg.body == b""


def test_mpart01_body_is_byte_exact() -> None:
    data = load("mpart01")
    msg = parse_message(data)
    assert msg.body == data[data.index(b"\r\n\r\n") + 4:]
    assert len(msg.body) == 553
    assert msg.to_bytes() == data
    assert StreamFramer().feed(data + data) == [data, data]


def test_unreason_and_noreason() -> None:
    unreason = parse_message(load("unreason"))
    assert isinstance(unreason, Response) and unreason.status == 200
    assert unreason.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    assert unreason.to_bytes() == load("unreason")
    noreason = parse_message(load("noreason"))
    assert isinstance(noreason, Response) and noreason.status == 100


def test_application_layer_details() -> None:
    assert parse_message(load("zeromf")).headers.get("Max-Forwards") == "0"
    assert SipUri.parse(parse_message(load("unkscm")).uri).scheme == "nobodyknowsthisscheme"  # type: ignore[union-attr]
    assert parse_message(load("badbranch")).branch == "z9hG4bK"
    inv2543 = parse_message(load("inv2543"))
    assert inv2543.branch == "" and "Content-Length" not in inv2543.headers
    assert len(inv2543.body) == len(load("inv2543").split(b"\r\n\r\n", 1)[1])
    assert parse_message(load("bext01")).headers.get_all("Require") == [
        "nothingSupportsThis", "nothingSupportsThisEither"]
    regescrt = parse_message(load("regescrt"))
    assert NameAddr.parse(regescrt.headers.get("Contact") or "").uri.headers == "Route=%3Csip:sip.example.com%3E"


def test_baddn_with_its_blank_line_restored() -> None:
    data = load("baddn")
    assert not data.endswith(b"\r\n\r\n")  # quirk of the source copy, see tests/data/rfc4475/README.md
    with pytest.raises(SipParseError) as info:
        parse_message(data + b"\r\n")
    assert "From" in info.value.reason and info.value.request is not None


# --------------------------------------------------------------------------------------------------------------
# nothing but SipParseError, whatever the transport


def outcome(data: bytes, *, stream: bool = False) -> str:
    try:
        parse_message(data, stream=stream)
    except SipParseError:
        return "error"
    return "ok"


@pytest.mark.parametrize("name", ALL)
def test_only_sip_parse_error_over_stream(name: str) -> None:
    data = load(name)
    framer = StreamFramer()
    try:
        frames = framer.feed(data)
    except SipParseError:
        return
    for frame in frames:
        outcome(frame, stream=True)


@pytest.mark.parametrize("name", ALL)
def test_only_sip_parse_error_when_truncated(name: str) -> None:
    data = load(name)
    for cut in range(len(data)):
        outcome(data[:cut])
        outcome(data[cut:])
