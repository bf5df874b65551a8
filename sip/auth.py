"""SIP HTTP Digest authentication, both sides (RFC 3261 §22, RFC 7616, RFC 8760).

Client side (we are the UAC answering a 401/407 from a carrier or PBX): `Challenge.parse` / `pick_challenge`
read WWW-Authenticate / Proxy-Authenticate values, `build_authorization` computes the Authorization /
Proxy-Authorization value. Server side (our registrar, inbound-call auth): `DigestServer` issues stateless
HMAC-signed nonces and `verify` checks a request's credentials, with nonce-count replay protection, and
returns a `Verdict` whose `reason` says what to answer (e.g. `stale` -> re-challenge with stale=TRUE).

What this module must not do: I/O of any kind (sockets, files, logging) or read the clock. Time comes in as
`now: float` (seconds; use one clock consistently, e.g. `time.time()`). It must never put a password into an
exception message, a repr or a return value. It is not thread-safe: one `DigestServer` per event loop.

Supported algorithms: MD5, MD5-sess, SHA-256, SHA-256-sess; qop auth and auth-int, and the qop-less RFC 2069
form for old peers. Not supported: SHA-512-256, userhash, username* (RFC 7616 §3.4.4).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = [
    "AuthError",
    "Challenge",
    "Credentials",
    "DigestResponse",
    "DigestServer",
    "Verdict",
    "authorization_header_name",
    "build_authorization",
    "challenge_header_name",
    "expected_response",
    "pick_challenge",
]


class AuthError(ValueError):
    """A challenge or credentials header is malformed or cannot be used (message never holds a password)."""


# ----------------------------------------------------------------------------------------------------------
# Algorithms and hashing

_ALGORITHMS: dict[str, str] = {
    "md5": "MD5",
    "md5-sess": "MD5-sess",
    "sha-256": "SHA-256",
    "sha-256-sess": "SHA-256-sess",
}
_HASHLIB_NAMES: dict[str, str] = {"MD5": "md5", "SHA-256": "sha256"}
_STRENGTH: dict[str, int] = {"MD5": 1, "SHA-256": 2}  # RFC 8760: prefer SHA-256 over MD5
_HEX_LENGTH: dict[str, int] = {"MD5": 32, "SHA-256": 64}
_QOPS = ("auth", "auth-int")

_HEX_RE = re.compile(r"[0-9a-f]+")
_NC_RE = re.compile(r"[0-9a-fA-F]{8}")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _canonical_algorithm(name: str) -> str:
    """'sha-256' -> 'SHA-256'; AuthError for anything we cannot compute."""
    canonical = _ALGORITHMS.get(name.strip().lower())
    if canonical is None:
        supported = ", ".join(_ALGORITHMS.values())
        raise AuthError(f"unsupported digest algorithm {name!r} (supported: {supported})")
    return canonical


def _base_algorithm(algorithm: str) -> str:
    return algorithm.removesuffix("-sess")


def _is_sess(algorithm: str) -> bool:
    return algorithm.endswith("-sess")


def _strength(algorithm: str) -> int:
    return _STRENGTH[_base_algorithm(algorithm)]


def _hash_hex(algorithm: str, data: bytes) -> str:
    return hashlib.new(_HASHLIB_NAMES[_base_algorithm(algorithm)], data).hexdigest()


def _hash_fields(algorithm: str, *fields: str) -> str:
    """H(f1:f2:...) over UTF-8; the error for unencodable text is raised outside the `except` on purpose,
    so no exception context (whose `.object` would hold the password) is chained to it."""
    try:
        data: bytes | None = ":".join(fields).encode("utf-8")
    except UnicodeEncodeError:
        data = None
    if data is None:
        raise AuthError("digest input contains text that cannot be encoded as UTF-8")
    return _hash_hex(algorithm, data)


def _split_qop(value: str | Iterable[str]) -> tuple[str, ...]:
    """'auth, auth-int' (or an iterable of tokens) -> ('auth', 'auth-int'), lower-cased, empties dropped."""
    items = value.split(",") if isinstance(value, str) else value
    return tuple(dict.fromkeys(token.strip().lower() for token in items if token.strip()))


def _choose_qop(offered: tuple[str, ...]) -> str | None:
    """The qop we answer with: 'auth' when offered, 'auth-int' only when it is the only usable one,
    None (RFC 2069 form) when the challenge offered none."""
    if not offered:
        return None
    for qop in _QOPS:
        if qop in offered:
            return qop
    raise AuthError(f"challenge offers no supported qop (offered: {', '.join(offered)})")


# ----------------------------------------------------------------------------------------------------------
# Header grammar: `Digest` 1*SP #auth-param, auth-param = token "=" ( token / quoted-string )

_WS = " \t\r\n"


# Scanners for the loops below (character by character they cost ~24 us per typical Authorization header; with these
# and `_PARAM_FAST_RE` ~6 us): each matches exactly the characters the loop it replaces accepted.
_SKIP_RE = {_WS: re.compile(r"[ \t\r\n]*"), _WS + ",": re.compile(r"[ \t\r\n,]*")}
_TOKEN_SCAN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-zA-Z]*")
_BARE_SCAN_RE = re.compile(r"[^ \t\r\n,]*")


def _skip(text: str, pos: int, chars: str) -> int:
    scan = _SKIP_RE.get(chars)
    if scan is not None:
        return scan.match(text, pos).end()  # type: ignore[union-attr]  # '*' always matches
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _read_token(text: str, pos: int) -> tuple[str, int]:
    end = _TOKEN_SCAN_RE.match(text, pos).end()  # type: ignore[union-attr]  # '*' always matches
    return text[pos:end], end


def _read_quoted(text: str, pos: int, key: str) -> tuple[str, int]:
    """`text[pos]` is the opening quote; returns the unescaped content and the index after the closing one."""
    end = text.find('"', pos + 1)
    if end >= 0 and text.find("\\", pos + 1, end) < 0:  # no escapes: the content is the slice
        return text[pos + 1:end], end + 1
    out: list[str] = []
    i = pos + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        elif ch == '"':
            return "".join(out), i + 1
        else:
            out.append(ch)
            i += 1
    raise AuthError(f"unterminated quoted string in parameter {key!r}")


def _read_bare(text: str, pos: int, key: str) -> tuple[str, int]:
    """An unquoted value runs to the next comma or whitespace (tolerates '/', '=' etc. some peers send)."""
    end = _BARE_SCAN_RE.match(text, pos).end()  # type: ignore[union-attr]  # '*' always matches
    if text.find('"', pos, end) >= 0:
        raise AuthError(f"stray quote in unquoted value of parameter {key!r}")
    if end == pos:
        raise AuthError(f"parameter {key!r} has an empty value")
    return text[pos:end], end


# One well-formed 'name = "quoted without escapes"' or 'name = bare' element and the separators before it: the usual
# shape of every element, parsed by `_parse_params` in one step; anything else goes through the loop.
_PARAM_FAST_RE = re.compile(
    r"[ \t\r\n,]*([!#$%&'*+\-.^_`|~0-9a-zA-Z]+)[ \t\r\n]*=[ \t\r\n]*"
    r"(?:\"([^\"\\]*)\"|([^ \t\r\n,\"]+))[ \t\r\n]*(?=,|\Z)"
)


def _parse_params(text: str) -> dict[str, str]:
    """'a="x, y", b=tok' -> {'a': 'x, y', 'b': 'tok'}; names lower-cased, empty list elements ignored."""
    params: dict[str, str] = {}
    pos = 0
    match = _PARAM_FAST_RE.match
    while (m := match(text, pos)) is not None:
        key, quoted, bare = m.groups()
        name = key.lower()
        if name in params:
            break
        params[name] = bare if quoted is None else quoted
        pos = m.end()
    else:
        if _skip(text, pos, _WS + ",") >= len(text):
            return params
    params = {}
    pos = 0
    while True:
        pos = _skip(text, pos, _WS + ",")
        if pos >= len(text):
            return params
        key, pos = _read_token(text, pos)
        if not key:
            raise AuthError(f"expected a parameter name, found {text[pos]!r}")
        pos = _skip(text, pos, _WS)
        if pos >= len(text) or text[pos] != "=":
            raise AuthError(f"parameter {key!r} has no '=value'")
        pos = _skip(text, pos + 1, _WS)
        reader = _read_quoted if pos < len(text) and text[pos] == '"' else _read_bare
        value, pos = reader(text, pos, key)
        name = key.lower()
        if name in params:
            raise AuthError(f"duplicate parameter {key!r}")
        params[name] = value
        pos = _skip(text, pos, _WS)
        if pos < len(text) and text[pos] != ",":
            raise AuthError(f"expected ',' after parameter {key!r}")


def _parse_digest(header_value: str) -> dict[str, str]:
    """Check the scheme is Digest (any case) and return its parameters."""
    text = header_value.strip(_WS)
    scheme, pos = _read_token(text, 0)
    if not scheme:
        raise AuthError("missing authentication scheme")
    if scheme.lower() != "digest":
        raise AuthError(f"unsupported authentication scheme {scheme!r} (expected Digest)")
    if pos < len(text) and text[pos] not in _WS:
        raise AuthError("expected whitespace after the Digest scheme")
    return _parse_params(text[pos:])


def _require(params: dict[str, str], name: str, *, allow_empty: bool = False) -> str:
    value = params.get(name)
    if value is None:
        raise AuthError(f"missing {name!r} parameter")
    if not value and not allow_empty:
        raise AuthError(f"empty {name!r} parameter")
    return value


def _quote(value: str, name: str) -> str:
    """Serialise as quoted-string; refuses control characters (CR/LF would be header injection)."""
    if _CONTROL_RE.search(value):
        raise AuthError(f"{name} contains a control character")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


# ----------------------------------------------------------------------------------------------------------
# Client side


def challenge_header_name(status: int) -> str:
    """401 -> 'WWW-Authenticate', 407 -> 'Proxy-Authenticate'."""
    if status == 401:
        return "WWW-Authenticate"
    if status == 407:
        return "Proxy-Authenticate"
    raise ValueError(f"status {status} carries no authentication challenge (expected 401 or 407)")


def authorization_header_name(status: int) -> str:
    """Header answering a challenge of this status: 401 -> 'Authorization', 407 -> 'Proxy-Authorization'."""
    if status == 401:
        return "Authorization"
    if status == 407:
        return "Proxy-Authorization"
    raise ValueError(f"status {status} carries no authentication challenge (expected 401 or 407)")


@dataclass(frozen=True, slots=True)
class Credentials:
    """What we authenticate with. `realm=None` answers a challenge from any realm."""

    username: str
    password: str = field(repr=False)
    realm: str | None = None


@dataclass(frozen=True, slots=True)
class Challenge:
    """One Digest challenge (a WWW-Authenticate or Proxy-Authenticate value)."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    proxy: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "algorithm", _canonical_algorithm(self.algorithm))
        object.__setattr__(self, "qop", _split_qop(self.qop))

    @classmethod
    def parse(cls, header_value: str, *, proxy: bool = False) -> Challenge:
        """Parse 'Digest realm="x", nonce="y", qop="auth,auth-int", algorithm=MD5'; AuthError if unusable."""
        params = _parse_digest(header_value)
        return cls(
            realm=_require(params, "realm", allow_empty=True),
            nonce=_require(params, "nonce"),
            algorithm=params.get("algorithm", "MD5"),
            qop=_split_qop(params.get("qop", "")),
            opaque=params.get("opaque"),
            stale=params.get("stale", "").strip().lower() == "true",
            proxy=proxy,
        )

    def to_header(self) -> str:
        """Serialise as a header value (realm/nonce/opaque/qop quoted, algorithm/stale bare)."""
        parts = [f"realm={_quote(self.realm, 'realm')}", f"nonce={_quote(self.nonce, 'nonce')}"]
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque, 'opaque')}")
        parts.append(f"algorithm={self.algorithm}")
        if self.qop:
            parts.append(f"qop={_quote(','.join(self.qop), 'qop')}")
        if self.stale:
            parts.append("stale=TRUE")
        return "Digest " + ", ".join(parts)


def pick_challenge(header_values: list[str], *, proxy: bool) -> Challenge:
    """The strongest usable challenge (SHA-256 over MD5, RFC 8760 §2.4; the server's order breaks ties).

    Values we cannot parse or answer (other schemes, unknown algorithms, no supported qop) are skipped.
    """
    best: Challenge | None = None
    for value in header_values:
        try:
            challenge = Challenge.parse(value, proxy=proxy)
            _choose_qop(challenge.qop)
        except AuthError:
            continue
        if best is None or _strength(challenge.algorithm) > _strength(best.algorithm):
            best = challenge
    if best is None:
        raise AuthError(f"none of the {len(header_values)} challenge header(s) is a usable Digest challenge")
    return best


def build_authorization(
    challenge: Challenge,
    credentials: Credentials,
    method: str,
    uri: str,
    *,
    body: bytes = b"",
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """The Authorization / Proxy-Authorization value answering `challenge` for a `method` request to `uri`.

    `nc` is how many times this nonce has been used by us, including this request (starts at 1).
    `body` matters only for qop=auth-int. `cnonce` defaults to a fresh random one.
    """
    if credentials.realm is not None and credentials.realm != challenge.realm:
        raise AuthError(
            f"credentials are for realm {credentials.realm!r}, the challenge is for realm {challenge.realm!r}"
        )
    if not 1 <= nc <= 0xFFFFFFFF:
        raise ValueError(f"nonce count must be in 1..0xffffffff, got {nc}")
    qop = _choose_qop(challenge.qop)
    needs_cnonce = qop is not None or _is_sess(challenge.algorithm)
    if needs_cnonce and cnonce is None:
        cnonce = secrets.token_hex(8)
    if needs_cnonce and not cnonce:
        raise ValueError("cnonce must not be empty")
    used_cnonce = cnonce if needs_cnonce else None
    nc_text = f"{nc:08x}" if qop is not None else None
    response = expected_response(
        challenge.algorithm, credentials.username, challenge.realm, credentials.password, method, uri,
        challenge.nonce, qop, nc_text, used_cnonce, body,
    )
    return DigestResponse(
        username=credentials.username, realm=challenge.realm, nonce=challenge.nonce, uri=uri,
        response=response, algorithm=challenge.algorithm, qop=qop, nc=nc_text, cnonce=used_cnonce,
        opaque=challenge.opaque,
    ).to_header()


# ----------------------------------------------------------------------------------------------------------
# The response computation (shared by both sides)


def expected_response(
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The request-digest, lower hex (RFC 7616 §3.4.1, RFC 2617 §3.2.2.1; RFC 2069 form if qop is None)."""
    alg = _canonical_algorithm(algorithm)
    ha1 = _hash_fields(alg, username, realm, password)
    if _is_sess(alg):
        if not cnonce:
            raise AuthError(f"algorithm {alg} needs a cnonce")
        ha1 = _hash_fields(alg, ha1, nonce, cnonce)
    if qop is None:
        return _hash_fields(alg, ha1, nonce, _hash_fields(alg, method, uri))
    if qop == "auth":
        ha2 = _hash_fields(alg, method, uri)
    elif qop == "auth-int":
        ha2 = _hash_fields(alg, method, uri, _hash_hex(alg, body))
    else:
        raise AuthError(f"unsupported qop {qop!r}")
    if not nc or not cnonce:
        raise AuthError(f"qop={qop} needs both nc and cnonce")
    return _hash_fields(alg, ha1, nonce, nc, cnonce, qop, ha2)


# ----------------------------------------------------------------------------------------------------------
# Server side


@dataclass(frozen=True, slots=True)
class DigestResponse:
    """A parsed Authorization / Proxy-Authorization value."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "algorithm", _canonical_algorithm(self.algorithm))

    @classmethod
    def parse(cls, header_value: str) -> DigestResponse:
        """Parse and validate; AuthError on anything malformed or missing."""
        params = _parse_digest(header_value)
        algorithm = _canonical_algorithm(params.get("algorithm", "MD5"))
        qop = params.get("qop")
        qop = qop.strip().lower() if qop is not None else None
        nc, cnonce = params.get("nc"), params.get("cnonce")
        _check_qop_fields(qop, nc, cnonce)
        if _is_sess(algorithm) and not cnonce:
            raise AuthError(f"algorithm {algorithm} needs a cnonce")
        return cls(
            username=_require(params, "username"),
            realm=_require(params, "realm", allow_empty=True),
            nonce=_require(params, "nonce"),
            uri=_require(params, "uri"),
            response=_check_response_hex(_require(params, "response"), algorithm),
            algorithm=algorithm,
            qop=qop,
            nc=nc,
            cnonce=cnonce,
            opaque=params.get("opaque"),
        )

    def to_header(self) -> str:
        """Serialise as a header value, in the field order most SIP stacks use."""
        parts = [
            f"username={_quote(self.username, 'username')}",
            f"realm={_quote(self.realm, 'realm')}",
            f"nonce={_quote(self.nonce, 'nonce')}",
            f"uri={_quote(self.uri, 'uri')}",
            f"response={_quote(self.response, 'response')}",
            f"algorithm={self.algorithm}",
        ]
        if self.cnonce is not None:
            parts.append(f"cnonce={_quote(self.cnonce, 'cnonce')}")
        if self.qop is not None:
            parts.append(f"qop={self.qop}")
        if self.nc is not None:
            parts.append(f"nc={self.nc}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque, 'opaque')}")
        return "Digest " + ", ".join(parts)


def _check_qop_fields(qop: str | None, nc: str | None, cnonce: str | None) -> None:
    if qop is None:
        return
    if qop not in _QOPS:
        raise AuthError(f"unsupported qop {qop!r}")
    if nc is None or not _NC_RE.fullmatch(nc) or int(nc, 16) == 0:
        raise AuthError("qop needs an nc of 8 hex digits, at least 00000001")
    if not cnonce:
        raise AuthError("qop needs a cnonce")


def _check_response_hex(response: str, algorithm: str) -> str:
    value = response.strip().lower()
    length = _HEX_LENGTH[_base_algorithm(algorithm)]
    if len(value) != length or not _HEX_RE.fullmatch(value):
        raise AuthError(f"response must be {length} hex digits for {algorithm}")
    return value


@dataclass(frozen=True, slots=True)
class Verdict:
    """Outcome of `DigestServer.verify`. `username` is set only when `ok` (never trust it otherwise).

    reason: "" when ok, else one of "missing", "malformed", "unknown_user", "wrong_realm", "bad_nonce",
    "stale", "replay", "bad_response", "uri_mismatch". On "stale" re-challenge with
    `challenges(now, stale=True)`: the client retries without asking its user for a password.
    """

    ok: bool
    username: str | None = None
    reason: str = ""

    @property
    def stale(self) -> bool:
        return self.reason == "stale"


# Nonce = urlsafe-b64( issue time (big-endian float64) | 12 random bytes | HMAC-SHA256(secret, ...)[:16] ).
# 36 bytes encode to exactly 48 characters with no padding, so every accepted string decodes one way only.
_NONCE_TAG = b"softswitch sip digest nonce v1\x00"
_NONCE_TIME = struct.Struct(">d")
_NONCE_RANDOM_BYTES = 12
_NONCE_MAC_BYTES = 16
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{48}")
_SINGLE_USE = 1 << 32  # recorded "nc" of a nonce spent by a qop-less (RFC 2069) request: nothing may follow


class DigestServer:
    """Issues nonces and verifies Authorization headers (server side: our registrar, inbound-call auth).

    Nonces are stateless (HMAC-signed issue time), so any instance sharing `secret` and `realm` accepts them.
    Replay state (highest nc per nonce and user) is per instance, kept for at most `max_tracked_nonces`
    nonces (LRU). When a still-valid entry is evicted, every untracked nonce issued up to then is answered
    "stale" (the client retries with a fresh nonce, no password prompt), so eviction never opens a replay.
    State is in memory: after a restart, requests reusing nonces issued before it are not caught as replays
    within `nonce_ttl`.
    """

    __slots__ = ("_algorithms", "_evicted_up_to", "_max_tracked", "_nonce_ttl", "_qop", "_realm", "_secret",
                 "_used")

    def __init__(
        self,
        realm: str,
        secret: bytes,
        *,
        nonce_ttl: float = 300.0,
        algorithms: tuple[str, ...] = ("SHA-256", "MD5"),
        qop: str = "auth",
        max_tracked_nonces: int = 10000,
    ) -> None:
        if not isinstance(secret, bytes) or not secret:
            raise ValueError("secret must be non-empty bytes (32 random bytes recommended)")
        if not (math.isfinite(nonce_ttl) and nonce_ttl > 0):
            raise ValueError(f"nonce_ttl must be a positive number of seconds, got {nonce_ttl!r}")
        if max_tracked_nonces < 1:
            raise ValueError(f"max_tracked_nonces must be at least 1, got {max_tracked_nonces}")
        canonical = tuple(dict.fromkeys(_canonical_algorithm(a) for a in algorithms))
        if not canonical:
            raise ValueError("at least one algorithm is needed")
        qops = _split_qop(qop)
        unknown = [q for q in qops if q not in _QOPS]
        if unknown:
            raise ValueError(f"unsupported qop {', '.join(unknown)} (supported: auth, auth-int; '' for none)")
        _quote(realm, "realm")  # refuse a realm we could not put in a header
        self._realm = realm
        self._secret = secret
        self._nonce_ttl = float(nonce_ttl)
        self._algorithms = tuple(sorted(canonical, key=_strength, reverse=True))  # stable: keeps given order
        self._qop = qops
        self._max_tracked = max_tracked_nonces
        self._used: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()
        self._evicted_up_to = -math.inf

    @property
    def realm(self) -> str:
        return self._realm

    @property
    def algorithms(self) -> tuple[str, ...]:
        """Accepted algorithms, strongest first."""
        return self._algorithms

    def __repr__(self) -> str:
        return f"DigestServer(realm={self._realm!r}, algorithms={self._algorithms!r}, qop={self._qop!r})"

    # -- issuing ---------------------------------------------------------------------------------------------

    def challenges(self, now: float, *, stale: bool = False, proxy: bool = False) -> list[Challenge]:
        """One challenge per algorithm, strongest first (RFC 8760 §2.4), all with the same fresh nonce.

        Send each as its own WWW-Authenticate (401) or, with `proxy=True`, Proxy-Authenticate (407) header.
        """
        nonce = self._new_nonce(now)
        return [
            Challenge(self._realm, nonce, algorithm, self._qop, stale=stale, proxy=proxy)
            for algorithm in self._algorithms
        ]

    def _mac(self, payload: bytes) -> bytes:
        message = _NONCE_TAG + self._realm.encode("utf-8", "surrogatepass") + b"\x00" + payload
        return hmac.new(self._secret, message, hashlib.sha256).digest()[:_NONCE_MAC_BYTES]

    def _new_nonce(self, now: float) -> str:
        if not math.isfinite(now):
            raise ValueError(f"now must be a finite number, got {now!r}")
        payload = _NONCE_TIME.pack(now) + secrets.token_bytes(_NONCE_RANDOM_BYTES)
        return base64.urlsafe_b64encode(payload + self._mac(payload)).decode("ascii")

    def _nonce_issued_at(self, nonce: str) -> float | None:
        """Issue time of a nonce we minted, None if it is not one of ours (forged, truncated, other realm)."""
        if not _NONCE_RE.fullmatch(nonce):
            return None
        raw = base64.urlsafe_b64decode(nonce)
        payload, mac = raw[:-_NONCE_MAC_BYTES], raw[-_NONCE_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        issued: float = _NONCE_TIME.unpack(payload[: _NONCE_TIME.size])[0]
        return issued

    def _expired(self, issued: float, now: float) -> bool:
        return now - issued > self._nonce_ttl

    def _too_new(self, issued: float, now: float) -> bool:
        """Issued 'in the future' beyond the TTL: the clock went back (e.g. monotonic time, restart)."""
        return issued - now > self._nonce_ttl

    # -- verifying -------------------------------------------------------------------------------------------

    def verify(
        self,
        header_value: str | None,
        method: str,
        request_uri: str,
        password_for: Callable[[str], str | None],
        now: float,
        *,
        body: bytes = b"",
    ) -> Verdict:
        """Check an Authorization / Proxy-Authorization value for a `method` request to `request_uri`.

        `password_for(username)` returns the password or None for an unknown user. `body` is needed only
        when qop=auth-int is offered. Order: structure, realm, uri, nonce signature, user, response, nonce
        age ("stale" only for otherwise correct credentials, RFC 7616 §3.3), then replay (only a correct
        request advances the nonce count, so forged requests cannot burn a client's nonce).
        """
        if not math.isfinite(now):
            raise ValueError(f"now must be a finite number, got {now!r}")
        if header_value is None or not header_value.strip():
            return Verdict(False, reason="missing")
        try:
            response = DigestResponse.parse(header_value)
        except AuthError:
            return Verdict(False, reason="malformed")
        early = self._check_request(response, request_uri)
        if early:
            return Verdict(False, reason=early)
        issued = self._nonce_issued_at(response.nonce)
        if issued is None:
            return Verdict(False, reason="bad_nonce")
        password = password_for(response.username)
        if password is None:
            return Verdict(False, reason="unknown_user")
        if not self._response_matches(response, password, method, body):
            return Verdict(False, reason="bad_response")
        if self._expired(issued, now) or self._too_new(issued, now):
            return Verdict(False, reason="stale")
        late = self._consume(response, issued)
        if late:
            return Verdict(False, reason=late)
        return Verdict(True, username=response.username)

    def _check_request(self, response: DigestResponse, request_uri: str) -> str:
        """Cheap checks that need no secret and no user lookup; '' when all pass."""
        if response.realm != self._realm:
            return "wrong_realm"
        if response.algorithm not in self._algorithms:
            return "malformed"  # an algorithm we never offered
        if response.qop is not None and response.qop not in self._qop:
            return "malformed"  # a qop we never offered
        if response.uri != request_uri:
            return "uri_mismatch"
        return ""

    @staticmethod
    def _response_matches(response: DigestResponse, password: str, method: str, body: bytes) -> bool:
        try:
            expected = expected_response(
                response.algorithm, response.username, response.realm, password, method, response.uri,
                response.nonce, response.qop, response.nc, response.cnonce, body,
            )
        except AuthError:
            return False
        return hmac.compare_digest(expected.encode("ascii"), response.response.encode("ascii"))

    def _consume(self, response: DigestResponse, issued: float) -> str:
        """Record this use of the nonce; '' if fresh, "replay" if seen, "stale" if we cannot tell any more."""
        key = (response.nonce, response.username)
        seen = self._used.get(key)
        if seen is None and issued <= self._evicted_up_to:
            return "stale"
        count = _SINGLE_USE if response.qop is None or response.nc is None else int(response.nc, 16)
        if seen is not None and (count == _SINGLE_USE or count <= seen[0]):
            return "replay"
        self._used[key] = (count, issued)
        self._used.move_to_end(key)
        self._evict()
        return ""

    def _evict(self) -> None:
        """Drop least recently used records beyond the bound. Every nonce issued up to an evicted one's issue
        time is then refused as "stale" unless still tracked (it may have been used before); for an already
        expired record this changes nothing, as those nonces are expired too."""
        while len(self._used) > self._max_tracked:
            _, (_, issued) = self._used.popitem(last=False)
            self._evicted_up_to = max(self._evicted_up_to, issued)
