"""SIP addresses: URIs (RFC 3261 §19.1), name-addr/addr-spec header values (From, To, Contact, Route) and Via.

Pure value parsing and formatting; no I/O. Parsing is tolerant of what real peers send (unquoted display names,
addr-spec without angle brackets, IPv6 references) and raises `ValueError` with a clear message otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


def _parse_params(text: str) -> dict[str, str | None]:
    """';a=b;lr;c="x"' -> {'a': 'b', 'lr': None, 'c': '"x"'} (names lower-cased, order kept)."""
    params: dict[str, str | None] = {}
    for piece in text.split(";"):
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
        if not colon or not scheme:
            raise ValueError(f"not a URI: {text!r}")
        scheme = scheme.lower()
        if scheme not in ("sip", "sips"):
            return cls(scheme=scheme, host="", user=rest)
        rest, _, headers = rest.partition("?")
        user: str | None = None
        password: str | None = None
        if "@" in rest:
            userinfo, _, rest = rest.rpartition("@")
            user, pc, pw = userinfo.partition(":")
            password = pw if pc else None
        hostport, _, ptext = rest.partition(";")
        host, port = _split_hostport(hostport)
        if not host:
            raise ValueError(f"URI without host: {text!r}")
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
            raise ValueError(f"bad IPv6 reference: {text!r}")
        host, rest = text[1:end], text[end + 1:]
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = text.partition(":")
    port: int | None = None
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"bad port: {port_text!r}")
        port = int(port_text)
    return host.lower(), port


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
        lt = _find_unquoted(text, "<")
        if lt >= 0:
            gt = text.find(">", lt)
            if gt < 0:
                raise ValueError(f"unbalanced '<' in {text!r}")
            display = text[:lt].strip()
            if display.startswith('"') and display.endswith('"') and len(display) >= 2:
                display = display[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            uri = SipUri.parse(text[lt + 1:gt])
            return cls(uri, display or None, _parse_params(text[gt + 1:]))
        # addr-spec: params after the URI belong to the header (RFC 3261 §20.10).
        uri_text, _, ptext = text.partition(";")
        return cls(SipUri.parse(uri_text), None, _parse_params(ptext))

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


def _find_unquoted(text: str, ch: str) -> int:
    quoted = False
    i = 0
    while i < len(text):
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == ch:
            return i
        i += 1
    return -1


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value: 'SIP/2.0/UDP host:port;branch=z9hG4bK...;rport;received=...'."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Via:
        proto, _, rest = text.strip().partition(" ")
        parts = [p.strip() for p in proto.split("/")]
        if len(parts) != 3 or parts[0].upper() != "SIP" or parts[1] != "2.0" or not parts[2]:
            raise ValueError(f"bad Via protocol: {proto!r}")
        rest = rest.strip()
        sent_by, _, ptext = rest.partition(";")
        host, port = _split_hostport(sent_by)
        if not host:
            raise ValueError(f"Via without sent-by host: {text!r}")
        return cls(parts[2].upper(), host, port, _parse_params(ptext))

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
