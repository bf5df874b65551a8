"""sip.uri: SipUri / NameAddr / Via parsing and formatting."""

from __future__ import annotations

import pytest

from sip.uri import NameAddr, SipUri, Via, uri_of

# --------------------------------------------------------------------------------------------------------------
# SipUri


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice@example.com",
        "sips:alice@example.com:5061",
        "sip:example.com",
        "sip:192.0.2.1:5060",
        "sip:alice@192.0.2.1:5060;transport=tcp",
        "sip:alice@example.com;lr",
        "sip:alice@example.com;maddr=239.255.255.1;ttl=15;lr",
        "sip:alice:secret@example.com",
        "sip:+15551234567@gw.example.com;user=phone",
        "sip:[::1]",
        "sip:alice@[2001:db8::10]:5070;transport=udp",
        "sip:alice@example.com?subject=project%20x&priority=urgent",
        "sip:alice@example.com;lr?Replaces=abc%40host%3Bto-tag%3D1",
        "sip:%61lice@example.com",
        "sip:user;par=u%40example.net@example.com",
    ],
)
def test_sip_uri_round_trip(text: str) -> None:
    uri = SipUri.parse(text)
    assert str(uri) == text
    assert SipUri.parse(str(uri)) == uri


def test_sip_uri_fields() -> None:
    uri = SipUri.parse("sips:alice:pw@[2001:DB8::1]:5061;transport=TLS;lr;maddr=10.0.0.1?h=v")
    assert uri.scheme == "sips"
    assert uri.user == "alice" and uri.password == "pw"
    assert uri.host == "2001:db8::1" and uri.port == 5061
    assert uri.params == {"transport": "TLS", "lr": None, "maddr": "10.0.0.1"}
    assert uri.headers == "h=v"
    assert uri.transport == "tls"
    assert "pw" not in repr(uri)


def test_sip_uri_defaults() -> None:
    uri = SipUri.parse("  SIP:Bob@Example.COM  ")
    assert (uri.scheme, uri.user, uri.host, uri.port, uri.params, uri.headers) == (
        "sip", "Bob", "example.com", None, {}, "")
    assert uri.password is None
    assert uri.transport == "udp"
    assert SipUri.parse("sips:b@example.com").transport == "tls"
    assert SipUri.parse("sip:b@example.com;transport=TCP").transport == "tcp"


def test_empty_password_is_kept() -> None:
    uri = SipUri.parse("sip:alice:@example.com")
    assert uri.password == "" and str(uri) == "sip:alice:@example.com"


def test_user_part_with_reserved_characters() -> None:
    # RFC 4475 intmeth: the user part holds '?', ',', ';' and ':' (password).
    text = "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com"
    uri = SipUri.parse(text)
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert uri.host == "example.com" and uri.headers == ""
    assert str(uri) == text


def test_with_params() -> None:
    uri = SipUri.parse("sip:a@b;transport=udp")
    assert str(uri.with_params(lr=None, transport="tcp")) == "sip:a@b;transport=tcp;lr"
    assert uri.params == {"transport": "udp"}  # frozen, original untouched


@pytest.mark.parametrize(
    ("text", "user"),
    [
        ("tel:+1-201-555-0123", "+1-201-555-0123"),
        ("tel:7042;phone-context=example.com", "7042;phone-context=example.com"),
        ("urn:service:sos", "service:sos"),
        ("nobodyKnowsThisScheme:totallyopaquecontent", "totallyopaquecontent"),
        ("soap.beep://192.0.2.103:3002", "//192.0.2.103:3002"),
    ],
)
def test_other_schemes_are_opaque(text: str, user: str) -> None:
    uri = SipUri.parse(text)
    assert uri.host == "" and uri.user == user and uri.port is None and uri.params == {}
    assert str(uri) == text[: text.index(":")].lower() + text[text.index(":"):]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "alice@example.com",
        ":alice@example.com",
        "1sip:alice@example.com",
        "si p:alice@example.com",
        "sip:",
        "sip:alice@",
        "sip:@example.com",
        "sip:alice@example.com:",
        "sip:alice@example.com:0",
        "sip:alice@example.com:65536",
        "sip:alice@example.com:50x",
        "sip:alice@example.com:" + "9" * 5000,
        "sip:alice@[::1",
        "sip:alice@[]",
        "sip:alice@[::1]x",
        "sip:alice@[zz::1]",
        "sip:alice@exa mple.com",
        "sip:alice@<example.com>",
        "tel:",
        "tel:+1 555",
    ],
)
def test_bad_uris_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        SipUri.parse(text)


# --------------------------------------------------------------------------------------------------------------
# NameAddr


@pytest.mark.parametrize(
    "text",
    [
        "<sip:alice@example.com>",
        "<sip:alice@example.com>;tag=1928301774",
        '"Alice" <sip:alice@example.com>;tag=1',
        '"Alice \\"Al\\" Smith" <sip:alice@example.com>',
        '"Back\\\\slash" <sip:b@example.com>',
        '"Doe, John" <sip:john@example.com;transport=tcp>;q=0.7;expires=3600',
        '<sip:alice@192.0.2.10:5060;transport=tcp>;+sip.instance="<urn:uuid:4e9a;x>";reg-id=1',
        "<sip:alice@[2001:db8::1]:5060>",
        "<tel:+15551234567>;tag=t",
        "<sip:r1.example.com;lr>",
    ],
)
def test_name_addr_round_trip(text: str) -> None:
    addr = NameAddr.parse(text)
    assert str(addr) == text
    assert NameAddr.parse(str(addr)) == addr


def test_quoted_display_name_escapes() -> None:
    addr = NameAddr.parse('"J Rosenberg \\\\\\""       <sip:jdrosen@example.com> ; tag = 98asjd8')
    assert addr.display == 'J Rosenberg \\"'
    assert addr.tag == "98asjd8"
    assert str(addr) == '"J Rosenberg \\\\\\"" <sip:jdrosen@example.com>;tag=98asjd8'
    assert NameAddr.parse('"a<b>,c;d" <sip:x@y>').display == "a<b>,c;d"
    assert NameAddr.parse('"" <sip:x@y>').display is None
    assert NameAddr.parse('"Jörg" <sip:x@y>').display == "Jörg"


def test_unquoted_display_names() -> None:
    assert NameAddr.parse("Alice <sip:alice@example.com>").display == "Alice"
    assert NameAddr.parse("caller<sip:caller@example.com>;tag=323").display == "caller"
    assert NameAddr.parse("A.  Bell   <sip:a.g.bell@example.com>;tag=x").display == "A. Bell"
    addr = NameAddr.parse("sipp <sip:sipp@192.0.2.2:5061>;tag=4711SIPpTag001")
    assert (addr.display, addr.tag, addr.uri.port) == ("sipp", "4711SIPpTag001", 5061)
    assert str(addr) == '"sipp" <sip:sipp@192.0.2.2:5061>;tag=4711SIPpTag001'


def test_addr_spec_params_belong_to_the_header() -> None:
    addr = NameAddr.parse("sip:a@b;tag=1")
    assert addr.params == {"tag": "1"} and addr.tag == "1"
    assert addr.uri.params == {}
    assert str(addr) == "<sip:a@b>;tag=1"
    inside = NameAddr.parse("<sip:a@b;tag=1>")
    assert inside.tag is None and inside.uri.params == {"tag": "1"}


def test_addr_spec_forms() -> None:
    addr = NameAddr.parse("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n")
    assert addr.uri.user == "vivekg" and addr.tag == "1918181833n"
    tel = NameAddr.parse("tel:+15551234567;tag=abc")
    assert tel.uri.scheme == "tel" and tel.uri.user == "+15551234567" and tel.tag == "abc"
    assert NameAddr.parse("isbn:2983792873").uri.scheme == "isbn"


def test_contact_params() -> None:
    addr = NameAddr.parse('<sip:a@b>;Expires=60;q=0.5;+sip.instance="<urn:uuid:1>"')
    assert addr.params == {"expires": "60", "q": "0.5", "+sip.instance": '"<urn:uuid:1>"'}


def test_with_tag() -> None:
    addr = NameAddr.parse('"Bob" <sip:bob@example.com>')
    tagged = addr.with_tag("xyz")
    assert str(tagged) == '"Bob" <sip:bob@example.com>;tag=xyz'
    assert addr.tag is None and tagged.tag == "xyz"


def test_uri_of() -> None:
    assert str(uri_of('"A" <sip:a@example.com;transport=tcp>;tag=1')) == "sip:a@example.com;transport=tcp"
    assert uri_of("sip:a@example.com;tag=1").host == "example.com"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "*",
        "<sip:a@b",
        '"unterminated <sip:a@b>',
        '"display" sip:a@b',
        '"display" x <sip:a@b>',
        'bad "quote" <sip:a@b>',
        "<sip:a@b> junk",
        "<>",
        "<sip:>",
        "not a uri",
    ],
)
def test_bad_name_addrs_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        NameAddr.parse(text)


# --------------------------------------------------------------------------------------------------------------
# Via


@pytest.mark.parametrize(
    "text",
    [
        "SIP/2.0/UDP 192.0.2.1",
        "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds",
        "SIP/2.0/TCP client.example.com:5060;branch=z9hG4bK74b43;rport",
        "SIP/2.0/UDP 192.0.2.2:5061;branch=z9hG4bK-1;received=198.51.100.7;rport=40000",
        "SIP/2.0/TLS [2001:db8::1]:5061;branch=z9hG4bKx;maddr=224.2.0.1;ttl=16",
        "SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK56sdasks",
        "SIP/2.0/UDP h;branch=z9hG4bK1;received=2001:db8::9",
    ],
)
def test_via_round_trip(text: str) -> None:
    via = Via.parse(text)
    assert str(via) == text
    assert Via.parse(str(via)) == via


def test_via_fields() -> None:
    via = Via.parse("SIP/2.0/udp Client.Example.com:5070;branch=z9hG4bK1;rport;received=192.0.2.9")
    assert (via.transport, via.host, via.port) == ("UDP", "client.example.com", 5070)
    assert via.branch == "z9hG4bK1"
    assert via.params["rport"] is None and "rport" in via.params
    assert via.params["received"] == "192.0.2.9"
    assert Via.parse("SIP/2.0/UDP h").branch is None


def test_via_with_lws() -> None:
    # RFC 4475 wsinv: LWS around '/' and ';', '=' and in sent-by
    via = Via.parse("SIP  /   2.0 /UDP 192.0.2.2;branch=390skdjuw")
    assert (via.transport, via.host, via.branch) == ("UDP", "192.0.2.2", "390skdjuw")
    via = Via.parse("SIP  / 2.0  / TCP     spindle.example.com   ; branch  =   z9hG4bK9ikj8  ")
    assert (via.transport, via.host, via.branch) == ("TCP", "spindle.example.com", "z9hG4bK9ikj8")
    via = Via.parse("sip/2.0/tcp\th : 5060 ;rport")
    assert (via.transport, via.host, via.port, via.params) == ("TCP", "h", 5060, {"rport": None})


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SIP/2.0/UDP",
        "SIP/2.0/UDP ",
        "SIP/2.0 192.0.2.1",
        "SIP/3.0/UDP 192.0.2.1",
        "HTTP/2.0/UDP 192.0.2.1",
        "SIP/2.0/UDP192.0.2.1",
        "SIP/2.0/UDP 192.0.2.1:99999",
        "SIP/2.0/UDP 192.0.2.1:port",
        "SIP/2.0/UDP ;branch=z9hG4bK1",
        "SIP/2.0/UDP a, SIP/2.0/UDP b",
        "SIP/2.0/UDP [::1",
    ],
)
def test_bad_vias_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        Via.parse(text)
