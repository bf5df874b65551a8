"""Tests for sip.auth: RFC test vectors, header parsing, client/server round trips, nonce and replay rules."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
from collections.abc import Callable

import pytest

from sip.auth import (
    AuthError,
    Challenge,
    Credentials,
    DigestResponse,
    DigestServer,
    Verdict,
    authorization_header_name,
    build_authorization,
    challenge_header_name,
    expected_response,
    pick_challenge,
)

SECRET = b"0123456789abcdef0123456789abcdef"
REALM = "sip.example.com"
URI = "sip:bob@sip.example.com"
PASSWORD = "s3cr3t-Pa55w0rd"
USERS = {"alice": PASSWORD, "bob": "other-password"}
T0 = 1_700_000_000.0

# RFC 7616 §3.9.1
RFC7616_REALM = "http-auth@example.org"
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_MD5 = "8ca523f5e9506fed4657c9700eebdbec"
RFC7616_SHA256 = "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


def password_for(username: str) -> str | None:
    return USERS.get(username)


def make_server(**kwargs: object) -> DigestServer:
    return DigestServer(REALM, SECRET, **kwargs)  # type: ignore[arg-type]


def answer(
    server: DigestServer,
    now: float = T0,
    *,
    algorithm: str = "SHA-256",
    user: str = "alice",
    password: str = PASSWORD,
    method: str = "REGISTER",
    uri: str = URI,
    nc: int = 1,
    proxy: bool = False,
) -> tuple[Challenge, str]:
    """Ask `server` for a challenge and answer it as a client would."""
    headers = [c.to_header() for c in server.challenges(now, proxy=proxy)]
    chosen = next(c for c in (Challenge.parse(h, proxy=proxy) for h in headers) if c.algorithm == algorithm)
    return chosen, build_authorization(chosen, Credentials(user, password), method, uri, nc=nc)


def field_of(header: str, name: str) -> str:
    return getattr(DigestResponse.parse(header), name)  # type: ignore[no-any-return]


# --- RFC test vectors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("algorithm", "expected"), [("MD5", RFC7616_MD5), ("SHA-256", RFC7616_SHA256)])
def test_rfc7616_expected_response(algorithm: str, expected: str) -> None:
    got = expected_response(
        algorithm, "Mufasa", RFC7616_REALM, "Circle of Life", "GET", "/dir/index.html", RFC7616_NONCE,
        qop="auth", nc="00000001", cnonce=RFC7616_CNONCE,
    )
    assert got == expected


@pytest.mark.parametrize(("algorithm", "expected"), [("MD5", RFC7616_MD5), ("SHA-256", RFC7616_SHA256)])
def test_rfc7616_build_authorization(algorithm: str, expected: str) -> None:
    challenge = Challenge.parse(
        f'Digest realm="{RFC7616_REALM}", qop="auth, auth-int", algorithm={algorithm}, '
        f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"'
    )
    header = build_authorization(
        challenge, Credentials("Mufasa", "Circle of Life"), "GET", "/dir/index.html", cnonce=RFC7616_CNONCE
    )
    parsed = DigestResponse.parse(header)
    assert parsed == DigestResponse(
        username="Mufasa", realm=RFC7616_REALM, nonce=RFC7616_NONCE, uri="/dir/index.html", response=expected,
        algorithm=algorithm, qop="auth", nc="00000001", cnonce=RFC7616_CNONCE, opaque=RFC7616_OPAQUE,
    )
    assert f"algorithm={algorithm}," in header
    assert "qop=auth," in header and "nc=00000001" in header


def test_rfc7616_authorization_header_as_printed_parses() -> None:
    header = (
        'Digest username="Mufasa",\r\n realm="http-auth@example.org",\r\n uri="/dir/index.html",\r\n'
        f" algorithm=SHA-256,\r\n nonce=\"{RFC7616_NONCE}\",\r\n nc=00000001,\r\n"
        f' cnonce="{RFC7616_CNONCE}",\r\n qop=auth,\r\n response="{RFC7616_SHA256}",\r\n'
        f' opaque="{RFC7616_OPAQUE}"'
    )
    parsed = DigestResponse.parse(header)
    recomputed = expected_response(
        parsed.algorithm, parsed.username, parsed.realm, "Circle of Life", "GET", parsed.uri, parsed.nonce,
        parsed.qop, parsed.nc, parsed.cnonce,
    )
    assert recomputed == parsed.response == RFC7616_SHA256


def test_rfc2617_vector() -> None:
    got = expected_response(
        "MD5", "Mufasa", "testrealm@host.com", "Circle Of Life", "GET", "/dir/index.html",
        "dcd98b7102dd2f0e8b11d0f600bfb0c093", qop="auth", nc="00000001", cnonce="0a4f113b",
    )
    assert got == "6629fae49393a05397450978507c4ef1"


def test_rfc2617_vector_through_build_authorization() -> None:
    challenge = Challenge.parse(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    header = build_authorization(
        challenge, Credentials("Mufasa", "Circle Of Life"), "GET", "/dir/index.html", cnonce="0a4f113b"
    )
    assert field_of(header, "response") == "6629fae49393a05397450978507c4ef1"
    assert field_of(header, "opaque") == "5ccc069c403ebaf9f0171e9517f40e41"


def test_rfc2069_form_without_qop() -> None:
    # RFC 2069: response = H(H(A1):nonce:H(A2)); no cnonce, no nc.
    ha1 = "939e7578ed9e3c518a452acee763bce9"  # MD5("Mufasa:testrealm@host.com:Circle Of Life")
    ha2 = "39aff3a2bab6126f332b942af96d3366"  # MD5("GET:/dir/index.html")
    assert hashlib.md5(b"Mufasa:testrealm@host.com:Circle Of Life").hexdigest() == ha1
    assert hashlib.md5(b"GET:/dir/index.html").hexdigest() == ha2
    nonce = "dcd98b7102dd2f0e8b11d0f600bfb0c093"
    want = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
    challenge = Challenge.parse(f'Digest realm="testrealm@host.com", nonce="{nonce}"')
    header = build_authorization(challenge, Credentials("Mufasa", "Circle Of Life"), "GET", "/dir/index.html")
    parsed = DigestResponse.parse(header)
    assert parsed.response == want
    assert parsed.qop is None and parsed.nc is None and parsed.cnonce is None
    assert "cnonce" not in header and "nc=" not in header and "qop" not in header


def test_sess_variants_fold_cnonce_into_ha1() -> None:
    args = ("Mufasa", RFC7616_REALM, "Circle of Life", "GET", "/dir/index.html", RFC7616_NONCE)
    plain_ha1 = hashlib.sha256(b"Mufasa:http-auth@example.org:Circle of Life").hexdigest()
    sess_ha1 = hashlib.sha256(f"{plain_ha1}:{RFC7616_NONCE}:{RFC7616_CNONCE}".encode()).hexdigest()
    ha2 = hashlib.sha256(b"GET:/dir/index.html").hexdigest()
    final = f"{sess_ha1}:{RFC7616_NONCE}:00000001:{RFC7616_CNONCE}:auth:{ha2}"
    want = hashlib.sha256(final.encode()).hexdigest()
    assert expected_response("SHA-256-sess", *args, "auth", "00000001", RFC7616_CNONCE) == want
    assert expected_response("sha-256-SESS", *args, "auth", "00000001", RFC7616_CNONCE) == want
    with pytest.raises(AuthError):
        expected_response("MD5-sess", *args, "auth", "00000001", None)


def test_auth_int_hashes_the_body() -> None:
    body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n"
    ha1 = hashlib.md5(b"u:r:p").hexdigest()
    ha2 = hashlib.md5(b"INVITE:sip:x@y:" + hashlib.md5(body).hexdigest().encode()).hexdigest()
    want = hashlib.md5(f"{ha1}:n:00000002:c:auth-int:{ha2}".encode()).hexdigest()
    got = expected_response("MD5", "u", "r", "p", "INVITE", "sip:x@y", "n", "auth-int", "00000002", "c", body)
    assert got == want


def test_expected_response_rejects_bad_inputs() -> None:
    with pytest.raises(AuthError, match="unsupported digest algorithm"):
        expected_response("SHA-512-256", "u", "r", "p", "GET", "/", "n")
    with pytest.raises(AuthError, match="unsupported qop"):
        expected_response("MD5", "u", "r", "p", "GET", "/", "n", qop="auth-conf", nc="00000001", cnonce="c")
    with pytest.raises(AuthError, match="nc and cnonce"):
        expected_response("MD5", "u", "r", "p", "GET", "/", "n", qop="auth")


# --- header names -----------------------------------------------------------------------------------------


def test_header_names() -> None:
    assert challenge_header_name(401) == "WWW-Authenticate"
    assert challenge_header_name(407) == "Proxy-Authenticate"
    assert authorization_header_name(401) == "Authorization"
    assert authorization_header_name(407) == "Proxy-Authorization"
    for bad in (200, 403, 400):
        with pytest.raises(ValueError):
            challenge_header_name(bad)
        with pytest.raises(ValueError):
            authorization_header_name(bad)


# --- Challenge parsing and serialising --------------------------------------------------------------------


def test_challenge_parse_basic() -> None:
    c = Challenge.parse('Digest realm="x", nonce="y", qop="auth,auth-int", algorithm=MD5', proxy=True)
    assert c == Challenge(realm="x", nonce="y", algorithm="MD5", qop=("auth", "auth-int"), proxy=True)
    assert c.opaque is None and not c.stale


def test_challenge_parse_tolerance() -> None:
    c = Challenge.parse(
        '  digest   realm = "a, \\"quoted\\" realm" ,nonce=abc/def==,,  opaque="o,p" ,'
        " algorithm=sha-256-SESS ,qop = auth , stale=true, domain=\"sip:a sip:b\", futureparam=1 "
    )
    assert c.realm == 'a, "quoted" realm'
    assert c.nonce == "abc/def=="
    assert c.opaque == "o,p"
    assert c.algorithm == "SHA-256-sess"
    assert c.qop == ("auth",)
    assert c.stale is True


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [("md5", "MD5"), ("Md5-Sess", "MD5-sess"), ("sha-256", "SHA-256"), ('"SHA-256"', "SHA-256")],
)
def test_challenge_algorithm_case(raw: str, canonical: str) -> None:
    assert Challenge.parse(f'Digest realm="r", nonce="n", algorithm={raw}').algorithm == canonical


def test_challenge_defaults_and_folded_header() -> None:
    c = Challenge.parse('DIGEST realm="r",\r\n\tnonce="n"')
    assert (c.algorithm, c.qop, c.stale, c.proxy) == ("MD5", (), False, False)


def test_challenge_stale_false_values() -> None:
    assert Challenge.parse('Digest realm="r", nonce="n", stale=FALSE').stale is False
    assert Challenge.parse('Digest realm="r", nonce="n", stale="TRUE"').stale is True


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ('Basic realm="x"', "scheme"),
        ("", "scheme"),
        ('Digestrealm="x", nonce="y"', "scheme"),
        ('Digest nonce="y"', "realm"),
        ('Digest realm="x"', "nonce"),
        ('Digest realm="x", nonce=""', "nonce"),
        ('Digest realm="x", nonce="y", algorithm=SHA-512-256', "algorithm"),
        ('Digest realm="x", nonce="y", algorithm=SHA-1', "algorithm"),
        ('Digest realm="x, nonce="y"', "unterminated|expected"),
        ('Digest realm="x" nonce="y"', "expected ','"),
        ('Digest realm="x", realm="z", nonce="y"', "duplicate"),
        ('Digest realm, nonce="y"', "value"),
        ('Digest realm=, nonce="y"', "empty"),
        ('Digest realm="x", nonce=a"b', "quote"),
        ('Digest =x, nonce="y"', "parameter name"),
    ],
)
def test_challenge_parse_errors(header: str, message: str) -> None:
    with pytest.raises(AuthError, match=message):
        Challenge.parse(header)


def test_auth_error_is_value_error() -> None:
    with pytest.raises(ValueError):
        Challenge.parse("Basic realm=x")


def test_challenge_to_header_round_trip() -> None:
    c = Challenge(
        realm='we "quote" \\ things', nonce="n0nce", algorithm="sha-256", qop=("auth", "auth-int"),
        opaque="op", stale=True, proxy=True,
    )
    header = c.to_header()
    assert header == (
        'Digest realm="we \\"quote\\" \\\\ things", nonce="n0nce", opaque="op", algorithm=SHA-256, '
        'qop="auth,auth-int", stale=TRUE'
    )
    assert Challenge.parse(header, proxy=True) == c


def test_challenge_to_header_minimal() -> None:
    assert Challenge("r", "n").to_header() == 'Digest realm="r", nonce="n", algorithm=MD5'


def test_challenge_constructor_canonicalises_and_validates() -> None:
    assert Challenge("r", "n", algorithm="md5-sess", qop=("AUTH",)).algorithm == "MD5-sess"
    assert Challenge("r", "n", qop=("AUTH",)).qop == ("auth",)
    with pytest.raises(AuthError):
        Challenge("r", "n", algorithm="SHA-1")


def test_challenge_refuses_header_injection() -> None:
    with pytest.raises(AuthError, match="control character"):
        Challenge("r\r\nVia: evil", "n").to_header()


# --- pick_challenge ---------------------------------------------------------------------------------------


def test_pick_challenge_prefers_sha256() -> None:
    headers = [
        'Digest realm="r", nonce="n1", algorithm=MD5, qop="auth"',
        'Digest realm="r", nonce="n2", algorithm=SHA-256, qop="auth"',
    ]
    chosen = pick_challenge(headers, proxy=True)
    assert chosen.algorithm == "SHA-256" and chosen.nonce == "n2" and chosen.proxy is True
    assert pick_challenge(list(reversed(headers)), proxy=False).algorithm == "SHA-256"


def test_pick_challenge_skips_unusable() -> None:
    headers = [
        'Basic realm="r"',
        'Digest realm="r", nonce="n0", algorithm=SHA-512-256, qop="auth"',
        "garbage",
        'Digest realm="r", nonce="n1", algorithm=SHA-256, qop="auth-conf"',
        'Digest realm="r", nonce="n2", algorithm=MD5, qop="auth"',
    ]
    chosen = pick_challenge(headers, proxy=False)
    assert (chosen.nonce, chosen.algorithm, chosen.proxy) == ("n2", "MD5", False)


def test_pick_challenge_keeps_server_order_on_ties() -> None:
    headers = [
        'Digest realm="r", nonce="a", algorithm=SHA-256-sess, qop="auth"',
        'Digest realm="r", nonce="b", algorithm=SHA-256, qop="auth"',
    ]
    assert pick_challenge(headers, proxy=False).nonce == "a"


def test_pick_challenge_none_usable() -> None:
    with pytest.raises(AuthError, match="usable"):
        pick_challenge(['Basic realm="r"', 'Digest realm="r"'], proxy=False)
    with pytest.raises(AuthError):
        pick_challenge([], proxy=True)


# --- build_authorization ----------------------------------------------------------------------------------


def test_build_authorization_qop_choice() -> None:
    creds = Credentials("u", "p")
    both = Challenge("r", "n", qop=("auth-int", "auth"))
    assert field_of(build_authorization(both, creds, "INVITE", "sip:x", cnonce="c"), "qop") == "auth"
    only_int = Challenge("r", "n", qop=("auth-int",))
    body = b"some sdp"
    header = build_authorization(only_int, creds, "INVITE", "sip:x", body=body, cnonce="c", nc=3)
    parsed = DigestResponse.parse(header)
    assert (parsed.qop, parsed.nc) == ("auth-int", "00000003")
    assert parsed.response == expected_response("MD5", "u", "r", "p", "INVITE", "sip:x", "n", "auth-int",
                                                 "00000003", "c", body)
    with pytest.raises(AuthError, match="qop"):
        build_authorization(Challenge("r", "n", qop=("auth-conf",)), creds, "INVITE", "sip:x")


def test_build_authorization_field_order_and_quoting() -> None:
    header = build_authorization(
        Challenge("r", "n", qop=("auth",), opaque="o"), Credentials('we"ird\\user', "p"), "REGISTER",
        "sip:r;transport=tcp", cnonce="c0ffee",
    )
    names = re.findall(r"(?:^Digest |, )([a-z]+)=", header)
    assert names == [
        "username", "realm", "nonce", "uri", "response", "algorithm", "cnonce", "qop", "nc", "opaque",
    ]
    assert header.startswith(
        'Digest username="we\\"ird\\\\user", realm="r", nonce="n", uri="sip:r;transport=tcp"'
    )
    assert DigestResponse.parse(header).username == 'we"ird\\user'


def test_build_authorization_random_cnonce() -> None:
    challenge = Challenge("r", "n", qop=("auth",))
    first = field_of(build_authorization(challenge, Credentials("u", "p"), "REGISTER", "sip:r"), "cnonce")
    second = field_of(build_authorization(challenge, Credentials("u", "p"), "REGISTER", "sip:r"), "cnonce")
    assert re.fullmatch(r"[0-9a-f]{16}", first) and first != second


def test_build_authorization_sess_without_qop_sends_cnonce() -> None:
    header = build_authorization(Challenge("r", "n", algorithm="MD5-sess"), Credentials("u", "p"), "GET", "/",
                                 cnonce="cc")
    parsed = DigestResponse.parse(header)
    assert parsed.cnonce == "cc" and parsed.qop is None and parsed.nc is None
    assert parsed.response == expected_response("MD5-sess", "u", "r", "p", "GET", "/", "n", cnonce="cc")


def test_build_authorization_realm_bound_credentials() -> None:
    challenge = Challenge("carrier.example", "n", qop=("auth",))
    build_authorization(challenge, Credentials("u", "p", realm="carrier.example"), "INVITE", "sip:x")
    with pytest.raises(AuthError, match="realm") as info:
        build_authorization(challenge, Credentials("u", PASSWORD, realm="other.example"), "INVITE", "sip:x")
    assert PASSWORD not in str(info.value)


def test_build_authorization_bad_arguments() -> None:
    challenge = Challenge("r", "n", qop=("auth",))
    for nc in (0, -1, 2**32):
        with pytest.raises(ValueError, match="nonce count"):
            build_authorization(challenge, Credentials("u", "p"), "GET", "/", nc=nc)
    with pytest.raises(ValueError, match="cnonce"):
        build_authorization(challenge, Credentials("u", "p"), "GET", "/", cnonce="")
    with pytest.raises(AuthError, match="control character"):
        build_authorization(challenge, Credentials("u\r\nX-Evil: 1", "p"), "GET", "/")


# --- DigestResponse parsing -------------------------------------------------------------------------------


def _valid_response(**overrides: str | None) -> str:
    fields: dict[str, str | None] = {
        "username": '"alice"', "realm": f'"{REALM}"', "nonce": '"abc"', "uri": f'"{URI}"',
        "response": '"' + "a" * 32 + '"', "algorithm": "MD5", "cnonce": '"c"', "qop": "auth",
        "nc": "00000001",
    }
    fields.update(overrides)
    return "Digest " + ", ".join(f"{k}={v}" for k, v in fields.items() if v is not None)


def test_digest_response_parse_tolerance() -> None:
    parsed = DigestResponse.parse(
        'digest  username = alice ,realm="sip.example.com",nonce=abc, uri="sip:bob@sip.example.com",'
        ' response="' + "A" * 64 + '", algorithm=sha-256, qop="AUTH", nc=0000000A, cnonce="x,y", opaque=""'
    )
    assert parsed.username == "alice"
    assert parsed.algorithm == "SHA-256"
    assert parsed.qop == "auth"
    assert parsed.nc == "0000000A"
    assert parsed.cnonce == "x,y"
    assert parsed.opaque == ""
    assert parsed.response == "a" * 64


@pytest.mark.parametrize(
    "overrides",
    [
        {"username": None},
        {"realm": None},
        {"nonce": None},
        {"uri": None},
        {"response": None},
        {"username": '""'},
        {"response": '"xyz"'},
        {"response": '"' + "a" * 64 + '"'},  # SHA-256 length with MD5
        {"response": '"' + "g" * 32 + '"'},
        {"algorithm": "SHA-512-256"},
        {"qop": "auth-conf"},
        {"nc": None},
        {"nc": "1"},
        {"nc": "00000000"},
        {"nc": "0000000g"},
        {"cnonce": None},
        {"cnonce": '""'},
        {"qop": None, "algorithm": "MD5-sess", "cnonce": None},
    ],
)
def test_digest_response_parse_errors(overrides: dict[str, str | None]) -> None:
    with pytest.raises(AuthError):
        DigestResponse.parse(_valid_response(**overrides))


def test_digest_response_parse_not_digest() -> None:
    with pytest.raises(AuthError, match="scheme"):
        DigestResponse.parse("Basic YWxpY2U6cGFzcw==")


def test_valid_response_helper_parses() -> None:
    assert DigestResponse.parse(_valid_response()).nc == "00000001"


# --- DigestServer: challenges -----------------------------------------------------------------------------


def test_server_challenges_strongest_first_shared_nonce() -> None:
    server = DigestServer(REALM, SECRET, algorithms=("md5", "SHA-256"))
    challenges = server.challenges(T0)
    assert [c.algorithm for c in challenges] == ["SHA-256", "MD5"]
    assert len({c.nonce for c in challenges}) == 1
    assert all(c.realm == REALM and c.qop == ("auth",) and not c.stale and not c.proxy for c in challenges)
    assert server.challenges(T0)[0].nonce != challenges[0].nonce  # fresh random per call
    assert re.fullmatch(r"[A-Za-z0-9_-]{48}", challenges[0].nonce)


def test_server_challenge_headers() -> None:
    server = make_server()
    sha, md5 = (c.to_header() for c in server.challenges(T0, stale=True, proxy=True))
    assert sha.startswith(f'Digest realm="{REALM}", nonce="') and "algorithm=SHA-256" in sha
    assert 'qop="auth"' in sha and sha.endswith("stale=TRUE")
    assert "algorithm=MD5" in md5
    assert all(c.proxy for c in server.challenges(T0, proxy=True))


def test_server_constructor_validation() -> None:
    with pytest.raises(ValueError):
        DigestServer(REALM, b"")
    with pytest.raises(ValueError):
        DigestServer(REALM, SECRET, nonce_ttl=0)
    with pytest.raises(ValueError):
        DigestServer(REALM, SECRET, algorithms=())
    with pytest.raises(ValueError):
        DigestServer(REALM, SECRET, algorithms=("SHA-1",))
    with pytest.raises(ValueError):
        DigestServer(REALM, SECRET, qop="auth-conf")
    with pytest.raises(ValueError):
        DigestServer(REALM, SECRET, max_tracked_nonces=0)
    with pytest.raises(ValueError):
        DigestServer("bad\r\nrealm", SECRET)
    with pytest.raises(ValueError):
        make_server().challenges(float("nan"))
    with pytest.raises(ValueError):
        make_server().verify(None, "REGISTER", URI, password_for, float("nan"))


def test_server_repr_hides_secret() -> None:
    text = repr(make_server())
    assert REALM in text and SECRET.decode() not in text


# --- DigestServer: verify round trips ---------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
@pytest.mark.parametrize("status", [401, 407])
def test_round_trip(algorithm: str, status: int) -> None:
    server = make_server()
    proxy = status == 407
    assert challenge_header_name(status) == ("Proxy-Authenticate" if proxy else "WWW-Authenticate")
    assert authorization_header_name(status) == ("Proxy-Authorization" if proxy else "Authorization")
    sent = [c.to_header() for c in server.challenges(T0, proxy=proxy)]
    challenge = next(c for c in (Challenge.parse(v, proxy=proxy) for v in sent) if c.algorithm == algorithm)
    assert challenge.proxy is proxy
    header = build_authorization(challenge, Credentials("alice", PASSWORD), "INVITE", URI)
    assert field_of(header, "algorithm") == algorithm
    verdict = server.verify(header, "INVITE", URI, password_for, T0 + 1)
    assert verdict == Verdict(ok=True, username="alice", reason="")
    assert not verdict.stale


def test_round_trip_picks_sha256_from_server_challenges() -> None:
    server = make_server()
    chosen = pick_challenge([c.to_header() for c in reversed(server.challenges(T0))], proxy=False)
    assert chosen.algorithm == "SHA-256"
    header = build_authorization(chosen, Credentials("alice", PASSWORD, realm=REALM), "REGISTER", URI)
    assert server.verify(header, "REGISTER", URI, password_for, T0).ok


def test_round_trip_opaque_echoed() -> None:
    server = make_server()
    issued = server.challenges(T0)[0]
    with_opaque = dataclasses.replace(issued, opaque="state-123")
    header = build_authorization(Challenge.parse(with_opaque.to_header()), Credentials("alice", PASSWORD),
                                 "REGISTER", URI)
    assert field_of(header, "opaque") == "state-123"
    assert server.verify(header, "REGISTER", URI, password_for, T0).ok


@pytest.mark.parametrize("algorithm", ["SHA-256-sess", "MD5-sess"])
def test_round_trip_sess(algorithm: str) -> None:
    server = make_server(algorithms=(algorithm,))
    _, header = answer(server, algorithm=algorithm)
    assert server.verify(header, "REGISTER", URI, password_for, T0).ok


def test_round_trip_auth_int() -> None:
    server = make_server(qop="auth-int")
    challenge = server.challenges(T0)[0]
    assert challenge.qop == ("auth-int",)
    body = b"v=0\r\n"
    header = build_authorization(challenge, Credentials("alice", PASSWORD), "INVITE", URI, body=body)
    assert field_of(header, "qop") == "auth-int"
    assert server.verify(header, "INVITE", URI, password_for, T0, body=body).ok
    tampered = build_authorization(challenge, Credentials("alice", PASSWORD), "INVITE", URI, body=body, nc=2)
    assert server.verify(tampered, "INVITE", URI, password_for, T0, body=b"v=1\r\n").reason == "bad_response"


def test_qop_not_offered_is_malformed() -> None:
    server = make_server()  # offers auth only
    challenge = dataclasses.replace(server.challenges(T0)[0], qop=("auth-int",))
    header = build_authorization(challenge, Credentials("alice", PASSWORD), "INVITE", URI)
    assert server.verify(header, "INVITE", URI, password_for, T0).reason == "malformed"


def test_algorithm_not_offered_is_malformed() -> None:
    server = make_server(algorithms=("SHA-256",))
    challenge = dataclasses.replace(server.challenges(T0)[0], algorithm="MD5")
    header = build_authorization(challenge, Credentials("alice", PASSWORD), "INVITE", URI)
    assert server.verify(header, "INVITE", URI, password_for, T0).reason == "malformed"


def test_wrong_password() -> None:
    server = make_server()
    _, header = answer(server, password="guess")
    verdict = server.verify(header, "REGISTER", URI, password_for, T0)
    assert verdict == Verdict(ok=False, username=None, reason="bad_response")


def test_wrong_method_is_bad_response() -> None:
    server = make_server()
    _, header = answer(server, method="REGISTER")
    assert server.verify(header, "INVITE", URI, password_for, T0).reason == "bad_response"


def test_other_users_password_is_bad_response() -> None:
    server = make_server()
    _, header = answer(server, user="bob", password=PASSWORD)
    assert server.verify(header, "REGISTER", URI, password_for, T0).reason == "bad_response"


def test_unknown_user() -> None:
    server = make_server()
    _, header = answer(server, user="mallory")
    verdict = server.verify(header, "REGISTER", URI, password_for, T0)
    assert verdict == Verdict(ok=False, reason="unknown_user")


def test_missing_header() -> None:
    server = make_server()
    assert server.verify(None, "REGISTER", URI, password_for, T0).reason == "missing"
    assert server.verify("   ", "REGISTER", URI, password_for, T0).reason == "missing"


@pytest.mark.parametrize(
    "header",
    [
        "Basic YWxpY2U6cGFzcw==", "Digest", 'Digest username="alice"', 'Digest username="alice, realm=x',
        "junk", 'Digest username="alice", username="bob"',
    ],
)
def test_malformed_header(header: str) -> None:
    verdict = make_server().verify(header, "REGISTER", URI, password_for, T0)
    assert verdict == Verdict(ok=False, reason="malformed")


def test_wrong_realm() -> None:
    server = make_server()
    challenge = dataclasses.replace(server.challenges(T0)[0], realm="elsewhere.example")
    header = build_authorization(challenge, Credentials("alice", PASSWORD), "REGISTER", URI)
    assert server.verify(header, "REGISTER", URI, password_for, T0).reason == "wrong_realm"


def test_uri_mismatch() -> None:
    server = make_server()
    _, header = answer(server, uri="sip:other@sip.example.com")
    assert server.verify(header, "REGISTER", URI, password_for, T0).reason == "uri_mismatch"


def test_forged_nonce() -> None:
    server = make_server()
    forged = Challenge(REALM, base64.urlsafe_b64encode(bytes(36)).decode(), "SHA-256", ("auth",))
    header = build_authorization(forged, Credentials("alice", PASSWORD), "REGISTER", URI)
    assert server.verify(header, "REGISTER", URI, password_for, T0).reason == "bad_nonce"
    nonsense = dataclasses.replace(forged, nonce="not-even-base64!")
    header = build_authorization(nonsense, Credentials("alice", PASSWORD), "REGISTER", URI)
    assert server.verify(header, "REGISTER", URI, password_for, T0).reason == "bad_nonce"


def test_nonce_with_tampered_time_is_bad_nonce() -> None:
    server = make_server()
    genuine = server.challenges(T0)[0]
    raw = bytearray(base64.urlsafe_b64decode(genuine.nonce))
    raw[0] ^= 0x01  # move the issue time
    tampered = dataclasses.replace(genuine, nonce=base64.urlsafe_b64encode(bytes(raw)).decode())
    header = build_authorization(tampered, Credentials("alice", PASSWORD), "REGISTER", URI)
    assert server.verify(header, "REGISTER", URI, password_for, T0).reason == "bad_nonce"


_RESPELLINGS: dict[str, Callable[[str], str]] = {
    "junk-inside": lambda n: n[:10] + "!" + n[10:],
    "padding": lambda n: n + "=",
    "trailing-tab": lambda n: n + "\t",
    "leading-space": lambda n: " " + n,
    "extra-quantum": lambda n: n + "AAAA",
    "truncated": lambda n: n[:-1],
    "standard-alphabet": lambda n: n.replace("-", "+").replace("_", "/") if "-" in n or "_" in n else n + "+",
}


@pytest.mark.parametrize("respell", list(_RESPELLINGS.values()), ids=list(_RESPELLINGS))
def test_nonce_respelled_is_bad_nonce(respell: Callable[[str], str]) -> None:
    # Lenient base64 decoders drop junk; a decodable-but-different spelling must not count as the same nonce
    # (replay tracking is keyed on the string).
    server = make_server()
    genuine = server.challenges(T0)[0]
    respelled = dataclasses.replace(genuine, nonce=respell(genuine.nonce))
    assert respelled.nonce != genuine.nonce
    header = build_authorization(respelled, Credentials("alice", PASSWORD), "REGISTER", URI)
    assert server.verify(header, "REGISTER", URI, password_for, T0).reason == "bad_nonce"


def test_nonce_from_other_secret_or_realm_is_bad_nonce() -> None:
    ours = make_server()
    other_secret = DigestServer(REALM, b"another secret entirely, 32 byte")
    other_realm = DigestServer("other.example", SECRET)
    for foreign in (other_secret, other_realm):
        challenge = dataclasses.replace(foreign.challenges(T0)[0], realm=REALM)
        header = build_authorization(challenge, Credentials("alice", PASSWORD), "REGISTER", URI)
        assert ours.verify(header, "REGISTER", URI, password_for, T0).reason == "bad_nonce"


def test_nonce_accepted_by_sibling_instance() -> None:
    issuer, verifier = make_server(), make_server()
    _, header = answer(issuer)
    assert verifier.verify(header, "REGISTER", URI, password_for, T0 + 10).ok


def test_expired_nonce_is_stale() -> None:
    server = make_server(nonce_ttl=60.0)
    _, header = answer(server, T0)
    assert server.verify(header, "REGISTER", URI, password_for, T0 + 60).ok  # still inside the TTL
    _, header = answer(server, T0, nc=1)
    verdict = server.verify(header, "REGISTER", URI, password_for, T0 + 60.5)
    assert verdict == Verdict(ok=False, reason="stale")
    assert verdict.stale
    # The server then re-challenges with stale=TRUE; the client retries without prompting.
    retry_headers = [c.to_header() for c in server.challenges(T0 + 60.5, stale=True)]
    assert all(h.endswith(", stale=TRUE") for h in retry_headers)
    retry = pick_challenge(retry_headers, proxy=False)
    assert retry.stale is True
    header = build_authorization(retry, Credentials("alice", PASSWORD), "REGISTER", URI)
    assert server.verify(header, "REGISTER", URI, password_for, T0 + 61).ok


def test_stale_only_for_correct_credentials() -> None:
    server = make_server(nonce_ttl=60.0)
    _, header = answer(server, T0, password="wrong")
    assert server.verify(header, "REGISTER", URI, password_for, T0 + 600).reason == "bad_response"
    _, header = answer(server, T0, user="mallory")
    assert server.verify(header, "REGISTER", URI, password_for, T0 + 600).reason == "unknown_user"


def test_nonce_from_the_far_future_is_stale() -> None:
    server = make_server(nonce_ttl=60.0)
    _, header = answer(server, T0 + 1000)  # e.g. monotonic clock restarted
    assert server.verify(header, "REGISTER", URI, password_for, T0).reason == "stale"


def test_replayed_nc_rejected_increasing_nc_accepted() -> None:
    server = make_server()
    challenge, first = answer(server)
    assert server.verify(first, "REGISTER", URI, password_for, T0).ok
    assert server.verify(first, "REGISTER", URI, password_for, T0 + 1).reason == "replay"
    creds = Credentials("alice", PASSWORD)
    for nc in (2, 3, 7):
        header = build_authorization(challenge, creds, "REGISTER", URI, nc=nc)
        assert server.verify(header, "REGISTER", URI, password_for, T0 + nc).ok
    older = build_authorization(challenge, creds, "REGISTER", URI, nc=5)
    assert server.verify(older, "REGISTER", URI, password_for, T0 + 8).reason == "replay"
    newer = build_authorization(challenge, creds, "REGISTER", URI, nc=8)
    assert server.verify(newer, "REGISTER", URI, password_for, T0 + 9).ok


def test_failed_attempt_does_not_advance_nc() -> None:
    server = make_server()
    challenge, _ = answer(server)
    bogus = build_authorization(challenge, Credentials("alice", "wrong"), "REGISTER", URI, nc=0xFFFFFFFF)
    assert server.verify(bogus, "REGISTER", URI, password_for, T0).reason == "bad_response"
    good = build_authorization(challenge, Credentials("alice", PASSWORD), "REGISTER", URI, nc=1)
    assert server.verify(good, "REGISTER", URI, password_for, T0).ok


def test_nc_tracked_per_user() -> None:
    server = make_server()
    challenge = server.challenges(T0)[0]
    alice = build_authorization(challenge, Credentials("alice", PASSWORD), "REGISTER", URI, nc=5)
    bob = build_authorization(challenge, Credentials("bob", USERS["bob"]), "REGISTER", URI, nc=1)
    assert server.verify(alice, "REGISTER", URI, password_for, T0).ok
    assert server.verify(bob, "REGISTER", URI, password_for, T0).ok


def test_qopless_request_uses_nonce_once() -> None:
    server = make_server(qop="")
    challenge = server.challenges(T0)[0]
    assert challenge.qop == () and "qop" not in challenge.to_header()
    header = build_authorization(challenge, Credentials("alice", PASSWORD), "REGISTER", URI)
    assert DigestResponse.parse(header).qop is None
    assert server.verify(header, "REGISTER", URI, password_for, T0).ok
    assert server.verify(header, "REGISTER", URI, password_for, T0 + 1).reason == "replay"


def test_qopless_then_qop_with_same_nonce_is_replay() -> None:
    server = make_server()
    challenge = server.challenges(T0)[0]
    creds = Credentials("alice", PASSWORD)
    legacy = build_authorization(dataclasses.replace(challenge, qop=()), creds, "REGISTER", URI)
    assert server.verify(legacy, "REGISTER", URI, password_for, T0).ok
    modern = build_authorization(challenge, creds, "REGISTER", URI, nc=9)
    assert server.verify(modern, "REGISTER", URI, password_for, T0).reason == "replay"


def test_qop_then_qopless_with_same_nonce_is_replay() -> None:
    server = make_server()
    challenge, modern = answer(server)
    assert server.verify(modern, "REGISTER", URI, password_for, T0).ok
    legacy = build_authorization(dataclasses.replace(challenge, qop=()), Credentials("alice", PASSWORD),
                                 "REGISTER", URI)
    assert server.verify(legacy, "REGISTER", URI, password_for, T0).reason == "replay"


def test_eviction_never_reopens_replay() -> None:
    server = make_server(max_tracked_nonces=2)
    answered = [answer(server, T0 + i) for i in range(3)]
    for i, (_, header) in enumerate(answered):
        assert server.verify(header, "REGISTER", URI, password_for, T0 + i).ok
    # The first nonce's record was evicted while still valid: replaying it must not succeed.
    assert server.verify(answered[0][1], "REGISTER", URI, password_for, T0 + 3).reason == "stale"
    # Nonces still tracked keep their replay protection, and fresh nonces work.
    assert server.verify(answered[2][1], "REGISTER", URI, password_for, T0 + 3).reason == "replay"
    _, fresh = answer(server, T0 + 4)
    assert server.verify(fresh, "REGISTER", URI, password_for, T0 + 4).ok


def test_eviction_of_expired_entries_keeps_fresh_nonces_usable() -> None:
    server = make_server(max_tracked_nonces=1, nonce_ttl=10.0)
    _, old = answer(server, T0)
    assert server.verify(old, "REGISTER", URI, password_for, T0).ok
    _, unused = answer(server, T0 + 11)  # issued before the next request, used after it
    _, newer = answer(server, T0 + 12)
    assert server.verify(newer, "REGISTER", URI, password_for, T0 + 12).ok  # evicts the expired entry
    assert server.verify(unused, "REGISTER", URI, password_for, T0 + 13).ok


def test_tracking_is_bounded() -> None:
    server = make_server(max_tracked_nonces=5)
    for i in range(50):
        _, header = answer(server, T0 + i)
        assert server.verify(header, "REGISTER", URI, password_for, T0 + i).ok
    assert len(server._used) == 5


# --- secrecy --------------------------------------------------------------------------------------------


def test_password_not_in_credentials_repr() -> None:
    creds = Credentials("alice", PASSWORD, realm=REALM)
    assert PASSWORD not in repr(creds)
    assert PASSWORD not in str(creds)
    assert "alice" in repr(creds) and REALM in repr(creds)
    assert creds.password == PASSWORD


def test_password_never_in_verdicts_or_errors() -> None:
    server = make_server()
    texts: list[str] = []
    _, good = answer(server)
    _, wrong = answer(server, password=PASSWORD + "x")
    for header in (good, good, wrong, None, "Digest junk", 'Basic realm="x"'):
        verdict = server.verify(header, "REGISTER", URI, password_for, T0)
        texts.append(repr(verdict))
        texts.append(str(verdict))
    texts.append(repr(server))
    texts.append(good)
    bad_calls: list[Callable[[], object]] = [
        lambda: build_authorization(Challenge("r", "n"), Credentials("u", PASSWORD, realm="x"), "GET", "/"),
        lambda: build_authorization(
            Challenge("r", "n", qop=("bogus",)), Credentials("u", PASSWORD), "GET", "/"
        ),
        lambda: build_authorization(Challenge("r", "n"), Credentials("u\n", PASSWORD), "GET", "/"),
        lambda: expected_response("MD5-sess", "u", "r", PASSWORD, "GET", "/", "n"),
        lambda: expected_response("MD5", "u", "r", PASSWORD + "\ud800", "GET", "/", "n"),
        lambda: expected_response("nope", "u", "r", PASSWORD, "GET", "/", "n"),
    ]
    for call in bad_calls:
        with pytest.raises(ValueError) as info:
            call()
        texts.append(str(info.value))
        texts.append(repr(info.value))
        assert info.value.__context__ is None or PASSWORD not in repr(info.value.__context__)
    assert all(PASSWORD not in text for text in texts)


def test_unencodable_password_is_bad_response_not_crash() -> None:
    server = make_server()
    _, header = answer(server)
    verdict = server.verify(header, "REGISTER", URI, lambda _user: "bad\ud800", T0)
    assert verdict.reason == "bad_response"


def test_verdict_stale_property() -> None:
    assert Verdict(False, reason="stale").stale
    assert not Verdict(True, username="alice").stale
    assert not Verdict(False, reason="replay").stale


def test_param_parser_fast_path_agrees_with_the_general_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """`_parse_params` takes one regex step per usual element and falls back to the character loop for anything
    else: both must give the same parameters and the same errors."""
    import random
    import re

    from sip import auth

    def parse(text: str) -> object:
        try:
            return auth._parse_params(text)
        except AuthError as exc:
            return str(exc)

    cases = [
        'username="u", realm="r", nonce="n", uri="sip:a@b", response="0123", qop=auth, nc=00000001',
        'a="x\\"y", b=tok/1, c = "q"', "a=1,,b=2,", "a=1, a=2", 'a="x" b=2', 'a=x"y', "a=", "=x",
        'a="unterminated', 'a = "" , b="é"', 'a=1\r\n, b="2"\t', ",a=1", "a=1 ,", 'a="1"x', "", " , ",
    ]
    rng = random.Random(7)
    alphabet = 'ab=", \\\t/x1'
    cases += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14))) for _ in range(5000)]
    fast = [parse(text) for text in cases]
    monkeypatch.setattr(auth, "_PARAM_FAST_RE", re.compile(r"(?!)"))  # never matches: the loop alone
    assert fast == [parse(text) for text in cases]
