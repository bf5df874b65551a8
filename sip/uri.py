"""SIP addresses: URIs (RFC 3261 §19.1), name-addr/addr-spec header values (From, To, Contact, Route) and Via.

Pure value parsing and formatting; no I/O. Parsing is tolerant of what real peers send (unquoted display names,
addr-spec without angle brackets, IPv6 references, LWS around separators) and raises `ValueError` with a clear
message otherwise.

Formatting is canonical rather than byte-faithful: hosts and parameter names come back lower-cased, LWS around
';' and '=' is dropped. User parts, parameter values and URI headers are kept as received (escapes included).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from .quoting import find_unquoted as _find_unquoted
from .quoting import quoted_end as _quoted_end
from .quoting import split_unquoted as _split_unquoted

_SCHEME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-."
_BAD_HOST_CHARS = frozenset(' \t\r\n<>"@;?,/\\[]()')
_IPV6_CHARS = "0123456789abcdefABCDEF:."


def _parse_params(text: str) -> dict[str, str | None]:
    """';a=b;lr;c="x;y"' -> {'a': 'b', 'lr': None, 'c': '"x;y"'} (names lower-cased, order kept)."""
    params: dict[str, str | None] = {}
    if not text:
        return params
    for piece in _split_unquoted(text, ";"):
        piece = piece.strip()
        if not piece:
            continue
        name, eq, value = piece.partition("=")
        params[name.strip().lower()] = value.strip() if eq else None
    return params


def _format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


@dataclass(frozen=True, slots=True)
class SipUri:
    """sip:/sips: URI, or any other scheme kept opaque in `user` (tel:, urn:...)."""

    scheme: str
    host: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str = ""

    @classmethod
    def parse(cls, text: str) -> SipUri:
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        if not colon or not scheme[:1].isalpha() or not scheme.isascii() or scheme.strip(_SCHEME_CHARS):
            raise ValueError(f"not a URI: {text[:80]!r}")
        scheme = scheme.lower()
        if scheme not in ("sip", "sips"):
            if not rest or any(c in rest for c in " \t\r\n<>"):
                raise ValueError(f"bad {scheme}: URI: {text[:80]!r}")
            return cls(scheme=scheme, host="", user=rest)
        # userinfo ends at the last '@' before the URI headers; user parts may themselves hold '?', ';' and ','
        # (RFC 4475 intmeth, semiuri), so when the '?' comes before every '@' it belongs to the user part.
        q = rest.find("?")
        at = rest.rfind("@", 0, q) if q >= 0 else rest.rfind("@")
        if at < 0 and q >= 0:
            at = rest.rfind("@")
        user: str | None = None
        password: str | None = None
        if at >= 0:
            userinfo, rest = rest[:at], rest[at + 1:]
            user, pc, pw = userinfo.partition(":")
            password = pw if pc else None
            if not user:
                raise ValueError(f"empty user part: {text[:80]!r}")
        rest, _, headers = rest.partition("?")
        hostport, _, ptext = rest.partition(";")
        host, port = _split_hostport(hostport)
        return cls(scheme, host, user, password, port, _parse_params(ptext), headers)

    @property
    def transport(self) -> str:
        t = self.params.get("transport")
        return (t or ("tls" if self.scheme == "sips" else "udp")).lower()

    def with_params(self, **params: str | None) -> SipUri:
        merged = dict(self.params)
        merged.update(params)
        return replace(self, params=merged)

    def __str__(self) -> str:
        if self.scheme not in ("sip", "sips"):
            return f"{self.scheme}:{self.user}"
        userinfo = ""
        if self.user is not None:
            userinfo = self.user + (f":{self.password}" if self.password is not None else "") + "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        headers = f"?{self.headers}" if self.headers else ""
        return f"{self.scheme}:{userinfo}{host}{port}{_format_params(self.params)}{headers}"


def _split_hostport(text: str) -> tuple[str, int | None]:
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"bad IPv6 reference: {text[:80]!r}")
        host, rest = text[1:end], text[end + 1:].strip()
        if not host or ":" not in host or host.strip(_IPV6_CHARS):
            raise ValueError(f"bad IPv6 reference: {text[:80]!r}")
        if rest and not rest.startswith(":"):
            raise ValueError(f"junk after IPv6 reference: {text[:80]!r}")
        colon, port_text = bool(rest), rest[1:].strip()
    else:
        host, sep, port_text = text.partition(":")
        host, colon, port_text = host.rstrip(), bool(sep), port_text.strip()
        if not host:
            raise ValueError(f"missing host: {text[:80]!r}")
        if not _BAD_HOST_CHARS.isdisjoint(host):
            raise ValueError(f"bad host: {host[:80]!r}")
    port: int | None = None
    if colon:
        if not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5 or not 0 < int(port_text) < 65536:
            raise ValueError(f"bad port: {port_text[:20]!r}")
        port = int(port_text)
    return host.lower(), port


_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A From/To/Contact/Route value: optional display name, URI, header params (tag, expires, q, ...)."""

    uri: SipUri
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        text = text.strip()
        if text == "*":
            raise ValueError("'*' is not an address")
        if text.startswith('"'):
            end = _quoted_end(text, 0)
            if end < 0:
                raise ValueError(f"unbalanced quotes in {text[:80]!r}")
            display: str | None = _QUOTED_PAIR_RE.sub(r"\1", text[1:end])
            lt = text.find("<", end)
            if lt < 0 or text[end + 1:lt].strip():
                raise ValueError(f"quoted display name without <URI> in {text[:80]!r}")
        else:
            lt = _find_unquoted(text, "<")
            if lt < 0:
                # addr-spec: params after the URI belong to the header (RFC 3261 §20.10).
                uri_text, _, ptext = text.partition(";")
                return cls(SipUri.parse(uri_text), None, _parse_params(ptext))
            display = " ".join(text[:lt].split())
            if '"' in display:
                raise ValueError(f"bad display name in {text[:80]!r}")
        gt = text.find(">", lt)
        if gt < 0:
            raise ValueError(f"unbalanced '<' in {text[:80]!r}")
        tail = text[gt + 1:].strip()
        if tail and not tail.startswith(";"):
            raise ValueError(f"junk after '>' in {text[:80]!r}")
        return cls(SipUri.parse(text[lt + 1:gt]), display or None, _parse_params(tail))

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def with_tag(self, tag: str) -> NameAddr:
        params = dict(self.params)
        params["tag"] = tag
        return replace(self, params=params)

    def __str__(self) -> str:
        display = ""
        if self.display is not None:
            escaped = self.display.replace("\\", "\\\\").replace('"', '\\"')
            display = f'"{escaped}" '
        return f"{display}<{self.uri}>{_format_params(self.params)}"


_VIA_PROTO_RE = re.compile(r"\s*SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9!%*_+`'~.\-]+)\s+", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value: 'SIP/2.0/UDP host:port;branch=z9hG4bK...;rport;received=...'."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Via:
        m = _VIA_PROTO_RE.match(text)
        if m is None:
            raise ValueError(f"bad Via protocol: {text[:60]!r}")
        rest = text[m.end():]
        semi = _find_unquoted(rest, ";")
        sent_by, ptext = (rest[:semi], rest[semi + 1:]) if semi >= 0 else (rest, "")
        if "," in sent_by:
            raise ValueError(f"several via-parms in one Via value: {text[:60]!r}")
        host, port = _split_hostport(sent_by)
        return cls(m.group(1).upper(), host, port, _parse_params(ptext))

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {host}{port}{_format_params(self.params)}"


def uri_of(header_value: str) -> SipUri:
    """The URI inside a From/To/Contact/Route value."""
    return NameAddr.parse(header_value).uri
