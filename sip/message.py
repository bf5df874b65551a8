"""SIP messages: parse bytes into `Request`/`Response` and serialise them back (RFC 3261 §7, §20, §25).

What lives here: the start line, headers (case-insensitive names, compact forms, folded lines, comma-joined
multi-value headers) and the body, kept byte-exact. Header values are kept as text and parsed only when asked
(`sip.uri` parses addresses); only the headers a response or the transaction layer depends on (Via, From, To,
Contact, Call-ID, CSeq, Max-Forwards, Content-Length, Date) are checked, with fast regex screens for their usual
shapes.

What does not live here: sockets, clocks, transactions. `parse_message` raises `SipParseError` for malformed input;
the error carries whatever request could be recovered so the caller can answer 400 with the reason, or drop and
count it when no answer is possible.

How parsing is organised: `parse_message` first tries a fast path that only accepts the common shape (CRLF lines,
UTF-8 header section, a well-formed request/status line, no folded lines, 'Name: value' lines without stray
whitespace, valid header names); anything else falls back to the general path, which handles leading keep-alives,
bare-LF messages, folding, odd whitespace and produces the detailed errors. Both paths end in the same checks
(`_finish`, then `_deep_error`), so they accept and reject exactly the same messages; the fast path only saves work.

The checks come in two groups, always run in this order:
  * framing and mandatory checks, always: size, head/body split, Content-Length, start line (version, status code,
    method, Request-URI framing), header names, duplicated single-value headers, the five mandatory headers
    present, CSeq and Max-Forwards;
  * deep checks: the syntax of Via, From, To, every Contact, and Date. `parse_message(data)` runs them too;
    `parse_message(data, validate=False)` leaves them to `Message.validate()`, which raises exactly what the full
    parse would have raised (same reason and status, the request itself as the recovered request).
Decision (deferral): the UA keeps parsing with every check, so a malformed message never reaches the transaction
layer, dialogs or the TU. Skipping the deep checks for retransmissions would need the transaction key before the
message is accepted: `server_key` plus a lookup measured ~3 us against ~2.5 us of deep checks for a typical INVITE,
and the transaction layer offers no such lookup. `validate=False` is there for a stateless path that forwards
without looking inside, and so the benchmark can show what the deep checks cost.

Serialising: `to_bytes()` of a parsed message that nothing has changed returns the bytes it was parsed from. The
parser keeps them only when they are byte for byte what `_serialise` would write (canonical names, 'Name: value'
lines, Content-Length equal to the body length, canonical start line), so the result never depends on whether the
shortcut was taken; any change through `Headers` methods, or to the body or start-line fields, falls back to
serialising.

Speed (bench/sip_parse.py, ~1 kB INVITE with 17 headers, CPython 3.11 on the 2-core test machine): parse+serialise
~85k msg/s with every check, ~107k msg/s with the deep checks deferred. The header split alone (find the blank line,
decode, split the lines, split each line, index first occurrences: ~165 ns per header line) costs ~4.5 us, nearly
all of the ~5 us that 200k msg/s would allow, before any check or object is made.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import cast

from .quoting import find_unquoted as _find_unquoted
from .quoting import quoted_end as _quoted_end
from .quoting import split_unquoted as _split_unquoted

SIP_VERSION = "SIP/2.0"

# RFC 3261 §7.3.3 plus registered compact forms.
COMPACT_FORMS: dict[str, str] = {
    "i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length", "c": "Content-Type",
    "f": "From", "s": "Subject", "k": "Supported", "t": "To", "v": "Via", "o": "Event", "r": "Refer-To",
    "b": "Referred-By", "x": "Session-Expires", "u": "Allow-Events", "a": "Accept-Contact",
    "j": "Reject-Contact", "d": "Request-Disposition", "y": "Identity", "n": "Identity-Info",
}

_CANONICAL: dict[str, str] = {
    name.lower(): name
    for name in (
        "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Allow-Events",
        "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact", "Content-Disposition",
        "Content-Encoding", "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date", "Error-Info",
        "Event", "Expires", "From", "In-Reply-To", "Max-Forwards", "Min-Expires", "MIME-Version", "Organization",
        "P-Asserted-Identity", "Priority", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck",
        "Reason", "Record-Route", "Refer-To", "Referred-By", "Reply-To", "Require", "Retry-After", "Route", "RSeq",
        "Server", "Session-Expires", "Subject", "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via",
        "Warning", "WWW-Authenticate", "Min-SE", "Privacy", "Remote-Party-ID", "Diversion",
    )
}
for _short, _full in COMPACT_FORMS.items():
    _CANONICAL[_short] = _full

# Headers whose values may be comma-joined lists (RFC 3261 §7.3.1). Auth headers are NOT in this set.
MULTI_VALUE = frozenset(
    {
        "via", "contact", "route", "record-route", "allow", "supported", "require", "proxy-require",
        "unsupported", "accept", "accept-encoding", "accept-language", "allow-events", "in-reply-to",
        "content-encoding", "content-language", "alert-info", "call-info", "error-info", "warning", "reply-to",
        "p-asserted-identity", "diversion",
    }
)

# Headers that may appear once only; a duplicate is a malformed message (RFC 4475 §3.1.2.13 dup headers).
SINGLE_VALUE = frozenset({"call-id", "cseq", "from", "to", "max-forwards", "content-length", "content-type"})

MAX_MESSAGE_SIZE = 65535
MAX_HEADER_LINES = 256

# RFC 3261 §25.1 token characters.
_TOKEN_STR = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
_TOKEN_CHARS = frozenset(_TOKEN_STR)


class SipParseError(ValueError):
    """Malformed SIP input. `request` is the partly parsed request (if any) so a 400 can be built from it."""

    def __init__(self, reason: str, request: Request | None = None, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.request = request
        self.status = status


# canonical_name() results, keyed by the name as given. Pre-filled with every spelling the project itself uses;
# names seen on the wire are added up to a bound so a peer cannot grow it without limit.
_CANON_CACHE: dict[str, str] = dict(_CANONICAL)
_CANON_CACHE.update({name: name for name in _CANONICAL.values()})
_CANON_CACHE.update({short.upper(): full for short, full in COMPACT_FORMS.items()})
_CANON_CACHE_MAX = 4096
_EXTENSION_SPELLING: dict[str, str] = {}


def canonical_name(name: str) -> str:
    """'call-id' / 'i' / 'CALL-ID' -> 'Call-ID'; an extension name keeps the spelling first seen for it."""
    cached = _CANON_CACHE.get(name)
    if cached is not None:
        return cached
    lowered = name.lower()
    canon = _CANONICAL.get(lowered)
    if canon is None:
        # An extension header keeps the spelling it was first seen with (X-PH-Tenant stays X-PH-Tenant on the
        # wire; carriers and apps match such names exactly even though SIP says they need not).
        canon = _EXTENSION_SPELLING.get(lowered)
        if canon is None:
            canon = name
            if len(_EXTENSION_SPELLING) < _CANON_CACHE_MAX:
                _EXTENSION_SPELLING[lowered] = name
    if len(_CANON_CACHE) < _CANON_CACHE_MAX:
        _CANON_CACHE[name] = canon
    return canon


# Canonical spellings of MULTI_VALUE, so Headers can test membership without lower-casing.
_MULTI_CANON = frozenset(canonical_name(n) for n in MULTI_VALUE)
_SINGLE_CANON = frozenset(canonical_name(n) for n in SINGLE_VALUE)


def split_header_values(value: str) -> list[str]:
    """Split a comma-joined header value, respecting quoted strings and <...> URIs (empty elements dropped)."""
    if "," not in value:
        return [value]
    if '"' not in value and "<" not in value:
        return [part for part in (p.strip() for p in value.split(",")) if part]
    return [part for part in (p.strip() for p in _split_unquoted_angle(value)) if part]


# A header as stored: (name, value); the parser's tuples come from `str.split` (typed tuple[str, ...]). Only ever read
# by unpacking or indexing; replaced, never mutated in place. Tuples rather than the lists `str.split` returns: a
# tuple of two strings leaves the garbage collector's lists at its first collection, a list is scanned at every
# full collection for as long as the message lives (a transaction or an ended leg keeps its request 32 s).
_Item = tuple[str, str] | tuple[str, ...]
_Items = list[tuple[str, str]] | list[tuple[str, ...]] | list[_Item]


class Headers:
    """An ordered, case-insensitive multimap of SIP headers; names are stored canonically.

    `_pristine` is True only for headers built by the parser that no method has changed since: a message whose
    headers are pristine can serialise to the bytes it was parsed from (see `Message._wire`).
    """

    __slots__ = ("_items", "_pristine")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[_Item] = [(canonical_name(n), v) for n, v in items]
        self._pristine = False

    @classmethod
    def _trusted(cls, items: _Items) -> Headers:
        h = cls.__new__(cls)
        h._items = items  # type: ignore[assignment]  # list is invariant; both element shapes are read alike
        h._pristine = False
        return h

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((name, value) for name, value in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = canonical_name(name)
        return any(it[0] == key for it in self._items)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of a header (the first element for comma-joined multi-value headers)."""
        key = canonical_name(name)
        for n, v in self._items:
            if n == key:
                if key in _MULTI_CANON and "," in v:
                    parts = split_header_values(v)
                    return parts[0] if parts else ""
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of a header, comma-joined values split for multi-value headers."""
        key = canonical_name(name)
        multi = key in _MULTI_CANON
        out: list[str] = []
        for n, v in self._items:
            if n == key:
                if multi:
                    out.extend(split_header_values(v))
                else:
                    out.append(v)
        return out

    def count(self, name: str) -> int:
        """How many header lines carry `name` (a comma-joined line counts once)."""
        key = canonical_name(name)
        return sum(1 for it in self._items if it[0] == key)

    def set(self, name: str, value: str) -> None:
        """Replace every occurrence of `name` with one value, kept at the first occurrence's position."""
        self._pristine = False
        key = canonical_name(name)
        items = self._items
        for i, it in enumerate(items):
            if it[0] == key:
                items[i] = (key, value)
                self._items = items[: i + 1] + [it for it in items[i + 1:] if it[0] != key]
                return
        items.append((key, value))

    def add(self, name: str, value: str, *, first: bool = False) -> None:
        self._pristine = False
        item = (canonical_name(name), value)
        if first:
            self._items.insert(0, item)
        else:
            self._items.append(item)

    def remove(self, name: str) -> None:
        self._pristine = False
        key = canonical_name(name)
        self._items = [it for it in self._items if it[0] != key]

    def replace_first(self, name: str, value: str) -> None:
        """Replace the first value of `name` (for multi-value headers: the first element of the first line)."""
        self._pristine = False
        key = canonical_name(name)
        for i, (n, v) in enumerate(self._items):
            if n == key:
                parts = split_header_values(v) if key in _MULTI_CANON else [v]
                if parts:
                    parts[0] = value
                else:
                    parts = [value]
                self._items[i] = (key, ", ".join(parts))
                return
        self._items.append((key, value))

    def pop_first(self, name: str) -> str | None:
        """Remove and return the first value of `name` (e.g. the top Via or Route)."""
        self._pristine = False
        key = canonical_name(name)
        for i, (n, v) in enumerate(self._items):
            if n == key:
                parts = split_header_values(v) if key in _MULTI_CANON else [v]
                first = parts.pop(0) if parts else ""
                if parts:
                    self._items[i] = (key, ", ".join(parts))
                else:
                    del self._items[i]
                return first
        return None

    def copy(self) -> Headers:
        return Headers._trusted(list(self._items))

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"


class Message:
    """Fields and helpers shared by requests and responses."""

    # `_wire` is set by the parser when the bytes it parsed are exactly what `_serialise` would produce (canonical
    # names, "Name: value" lines, a correct Content-Length, ...): (bytes, headers, body, start-line fields...).
    # `to_bytes` returns those bytes while the headers are pristine and the other fields are the same, so
    # forwarding or re-sending an unchanged message costs no serialisation. Any change falls back to `_serialise`.
    __slots__ = ("headers", "body", "_wire")

    headers: Headers
    body: bytes
    _wire: tuple[bytes, Headers, bytes, object, str, str] | None

    def validate(self) -> None:
        """Run the header syntax checks that `parse_message(..., validate=False)` skips (Via, From, To, Contact,
        Date; see the module docstring). Raises `SipParseError` as `parse_message` would have: status 400, the
        request itself as the recovered request (None for a response). Changes nothing; checks the headers as they are
        now (~3 us for a typical INVITE)."""
        items = self.headers._items
        first = dict(reversed(cast("list[tuple[str, str]]", items)))
        extra = None
        if "Contact" in first and len(first) != len(items):
            contacts = [it[1] for it in items if it[0] == "Contact"]
            extra = contacts[1:] or None
        error = _deep_error(first, extra)
        if error is not None:
            raise SipParseError(error, self if isinstance(self, Request) else None)

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        """(number, METHOD) from CSeq; (0, '') when absent or malformed."""
        value = self.headers.get("CSeq")
        if not value:
            return 0, ""
        parts = value.split(None, 1)
        num = parts[0] if parts else ""
        if not (num.isascii() and num.isdigit()) or len(num) > 10:
            return 0, ""
        return int(num), (parts[1].strip() if len(parts) > 1 else "")

    @property
    def top_via(self) -> str:
        return self.headers.get("Via") or ""

    @property
    def branch(self) -> str:
        return param_of(self.top_via, "branch") or ""

    @property
    def from_tag(self) -> str:
        return tag_of(self.headers.get("From") or "")

    @property
    def to_tag(self) -> str:
        return tag_of(self.headers.get("To") or "")

    def _serialise(self, start_line: str) -> bytes:
        # A plain loop of f-strings measured faster than map(": ".join) plus a separate Content-Length search.
        body = self.body
        parts = [start_line]
        has_length = False
        for name, value in self.headers._items:
            if name == "Content-Length":
                has_length = True
                value = str(len(body))
            parts.append(f"{name}: {value}")
        if not has_length:
            parts.append(f"Content-Length: {len(body)}")
        parts.append("\r\n")
        return "\r\n".join(parts).encode("utf-8", "surrogateescape") + body


class Request(Message):
    """A SIP request. `uri` is the Request-URI as text."""

    __slots__ = ("method", "uri", "version")

    def __init__(self, method: str, uri: str, headers: Headers | None = None, body: bytes = b"",
                 version: str = SIP_VERSION) -> None:
        self.method = method
        self.uri = uri
        self.version = version
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self._wire = None

    def to_bytes(self) -> bytes:
        wire = self._wire
        if (wire is not None and wire[1] is self.headers and self.headers._pristine
                and wire[2:] == (self.body, self.method, self.uri, self.version)):
            return wire[0]
        return self._serialise(f"{self.method} {self.uri} {self.version}")

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri} call-id={self.call_id!r}>"


class Response(Message):
    """A SIP response."""

    __slots__ = ("status", "reason", "version")

    def __init__(self, status: int, reason: str = "", headers: Headers | None = None, body: bytes = b"",
                 version: str = SIP_VERSION) -> None:
        self.status = status
        self.reason = reason or REASONS.get(status, "")
        self.version = version
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self._wire = None

    def to_bytes(self) -> bytes:
        wire = self._wire
        if (wire is not None and wire[1] is self.headers and self.headers._pristine
                and wire[2:] == (self.body, self.status, self.reason, self.version)):
            return wire[0]
        return self._serialise(f"{self.version} {self.status} {self.reason}")

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason} cseq={self.cseq!r}>"


REASONS: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued", 183: "Session Progress",
    200: "OK", 202: "Accepted", 300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 407: "Proxy Authentication Required",
    408: "Request Timeout", 410: "Gone", 413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension", 421: "Extension Required",
    423: "Interval Too Brief", 480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here", 491: "Request Pending",
    493: "Undecipherable", 500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


def param_of(value: str, name: str) -> str | None:
    """The value of `;name=value` in a header value (outside <...>); '' for a flag param, None when absent."""
    lt = _find_unquoted(value, "<")
    if lt >= 0:
        gt = value.find(">", lt)
        tail = value[gt + 1:] if gt >= 0 else ""
    else:
        tail = value
    key = name.lower()
    for piece in _split_unquoted(tail, ";")[1:]:
        pname, eq, pval = piece.partition("=")
        if pname.strip().lower() == key:
            return pval.strip().strip('"') if eq else ""
    return None


def tag_of(value: str) -> str:
    return param_of(value, "tag") or ""


# --------------------------------------------------------------------------------------------------------------
# Parsing


class _NotFast(Exception):
    """Internal: the fast path met something unusual; the general path takes over."""


# Header names that are their own canonical spelling and valid tokens: a parsed header section whose names are all in
# here needs no per-header renaming (checked with one set comparison). Grows with extension names seen on the wire.
_SELF_NAMES: set[str] = set(_CANONICAL.values())


class _WireNames(dict[str, str]):
    """Header name as received -> canonical name, for valid token names only (else `_NotFast`)."""

    __slots__ = ()

    def __missing__(self, raw: str) -> str:
        name = raw.rstrip(" \t")
        if not name or name.strip(_TOKEN_STR):
            raise _NotFast
        canon = canonical_name(name)
        if len(self) < _CANON_CACHE_MAX:
            self[raw] = canon
            if canon == raw:
                _SELF_NAMES.add(raw)
        return canon


_WIRE_NAMES = _WireNames(_CANON_CACHE)

_KNOWN_METHODS = frozenset(
    {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH", "INFO",
     "REFER", "MESSAGE", "UPDATE"}
)
# Names whose repetition the parser looks at: single-value headers (a duplicate is an error) and Contact (every
# Contact line is checked, not only the first).
_WATCHED = _SINGLE_CANON | {"Contact"}
_MANDATORY = ("Via", "From", "To", "Call-ID", "CSeq")


def _is_token(text: str) -> bool:
    return bool(text) and not text.strip(_TOKEN_STR)


def _fail(reason: str, method: str | None, uri: str, items: _Items, body: bytes,
          status: int = 400) -> SipParseError:
    req = Request(method, uri, Headers._trusted(items), body) if method else None
    return SipParseError(reason, req, status)


def parse_message(data: bytes, *, stream: bool = False, validate: bool = True) -> Request | Response:
    """Parse one complete SIP message.

    `stream=True` (TCP) means the framing already cut the body to Content-Length. On a datagram a body longer than
    Content-Length is truncated (RFC 3261 §18.3) and a shorter one is an error.

    `validate=False` skips the Via/From/To/Contact/Date syntax checks (framing, the start line, header names,
    duplicates and the mandatory headers are always checked); `Message.validate()` runs them later. See the module
    docstring for who may skip them.
    """
    if len(data) > MAX_MESSAGE_SIZE:
        raise SipParseError("message too large", status=513)
    head_end = data.find(b"\r\n\r\n")
    if head_end > 0:
        try:
            return _parse_fast(data, head_end, stream, validate)
        except _NotFast:
            pass
    return _parse_general(data, stream, False, validate)


# A space before CRLF or two in a row: a value that would need stripping (or odd spacing the general path judges).
_ODD_SPACE_RE = re.compile(r" (?:\r\n| )")


def _parse_fast(data: bytes, head_end: int, stream: bool, validate: bool) -> Request | Response:
    """The common case only; raises `_NotFast` (never SipParseError before `_finish`) for anything else.

    Per header line the work is one `str.split` (the [name, value] it returns is stored as a tuple) and one dict
    membership test; whole-section scans (memchr for CR, LF and TAB, one regex for stray spaces, one set comparison
    for "every name is valid and already canonical") replace per-line checks.
    """
    try:
        head = data[:head_end].decode()
    except UnicodeDecodeError:
        raise _NotFast from None
    # TAB or extra spaces around values (which would need stripping) and bare CR/LF: left to the general path.
    if "\t" in head or head[-1] == " " or _ODD_SPACE_RE.search(head):
        raise _NotFast
    lines = head.split("\r\n")
    if len(lines) > MAX_HEADER_LINES + 1:
        raise _NotFast
    flat = "".join(lines)
    if "\r" in flat or "\n" in flat:
        raise _NotFast
    start = lines[0]
    del lines[0]
    method: str | None
    if start[:8] == "SIP/2.0 ":
        code = start[8:11]
        if not (code.isdigit() and code.isascii() and "1" <= code[0] <= "6") or start[11:12] not in ("", " "):
            raise _NotFast
        method = None
        uri = ""
        status = int(code)
        reason = start[12:]
    else:
        parts = start.split(" ")
        if len(parts) != 3:
            raise _NotFast
        method, uri, version = parts
        if (version != SIP_VERSION or (method not in _KNOWN_METHODS and not _is_token(method))
                or (_SIP_RURI_FAST_RE.fullmatch(uri) is None and _request_uri_error(uri))):
            raise _NotFast
        status = 0
        reason = ""

    items = [tuple(line.split(": ", 1)) for line in lines]
    try:
        first, dup, extra = _index(items)
    except ValueError:  # a line without ': ' (a one-element tuple)
        raise _NotFast from None
    canonical = first.keys() <= _SELF_NAMES
    if not canonical:  # compact forms, other spellings, extension names not seen before, invalid names (give up)
        names = _WIRE_NAMES
        renamed: list[tuple[str, ...]] = [(names[item[0]], item[1]) for item in items]
        canonical = [item[0] for item in renamed] == [item[0] for item in items]
        items = renamed
        first, dup, extra = _index(items)
    body = data[head_end + 4:]
    msg = _finish(method, uri, status, reason, items, first, dup, body, stream)
    if validate:
        error = _deep_error(first, extra)
        if error is not None:
            raise _fail(error, method, uri, items, msg.body)
    if canonical and msg.body is body and type(data) is bytes and first.get("Content-Length") == str(len(body)):
        # The bytes are exactly what `_serialise` would write (names canonical, 'Name: value' lines, values
        # stripped, Content-Length right, start line in canonical form): keep them for `to_bytes`.
        msg.headers._pristine = True
        if method is not None:
            msg._wire = (data, msg.headers, body, method, uri, SIP_VERSION)
        elif reason and isinstance(msg, Response) and msg.reason is reason:
            msg._wire = (data, msg.headers, body, status, reason, SIP_VERSION)
    return msg


def _index(items: list[tuple[str, ...]]) -> tuple[dict[str, str], str | None, list[str] | None]:
    """First value of each name, the first duplicated single-value name, the values of Contact lines after the
    first. Raises ValueError on an item that is not a pair."""
    first: dict[str, str] = {}
    dup = None
    extra = None
    for name, value in items:
        if name in first:
            if name in _WATCHED:
                if name == "Contact":
                    if extra is None:
                        extra = [value]
                    else:
                        extra.append(value)
                elif dup is None:
                    dup = name
        else:
            first[name] = value
    return first, dup, extra


def _parse_general(data: bytes, stream: bool, recovering: bool, validate: bool = True) -> Request | Response:
    """Every shape the parser accepts, with precise errors."""
    if data[:1] in (b"\r", b"\n"):  # CRLF keep-alives before the start line
        data = data.lstrip(b"\r\n")
    if not data.strip():
        raise SipParseError("empty message")
    crlf_end = data.find(b"\r\n\r\n")
    lf_end = data.find(b"\n\n")
    if crlf_end >= 0 and (lf_end < 0 or crlf_end < lf_end):
        head_bytes, body, crlf = data[:crlf_end], data[crlf_end + 4:], True
    elif lf_end >= 0:  # bare-LF messages (RFC 4475 copies, hand-typed tests)
        head_bytes, body, crlf = data[:lf_end], data[lf_end + 2:], False
    else:
        if recovering:
            raise SipParseError("no blank line after headers")
        # Parse what is there to recover the request (so a 400 can be sent), then report the missing blank line.
        if data.endswith(b"\r\n"):
            data += b"\r\n"
        elif data.endswith(b"\n"):
            data += b"\n"
        else:
            data += b"\r\n\r\n"
        # (with every check whatever `validate` says: the message is rejected either way, for the same reason)
        msg = _parse_general(data, stream, True)
        raise SipParseError("no blank line after headers", msg if isinstance(msg, Request) else None)
    try:
        head = head_bytes.decode("utf-8")
    except UnicodeDecodeError:
        head = head_bytes.decode("utf-8", "surrogateescape")
        if "\x00" in head:
            raise SipParseError("binary data in header section") from None
    lines = head.split("\r\n") if crlf else head.replace("\r\n", "\n").split("\n")
    start = lines[0]

    method: str | None = None
    uri = ""
    status = 0
    reason = ""
    start_error: tuple[str, int] | None = None
    if "\r" in start or "\n" in start:
        raise SipParseError("bare CR or LF in the start line")
    if start.startswith("SIP/"):
        version, _, rest = start.partition(" ")
        code, _, reason = rest.partition(" ")
        if version != SIP_VERSION:
            raise SipParseError(f"unsupported version {version[:20]!r}")
        if len(code) != 3 or not (code.isdigit() and code.isascii()) or not ("1" <= code[0] <= "6"):
            raise SipParseError(f"bad status code {code[:20]!r}")
        status = int(code)
    else:
        parts = start.split(" ")
        if len(parts) == 3 and all(parts):
            method, uri, version = parts
        else:
            # Extra or odd whitespace (RFC 4475 lwsstart, trws, lwsruri): malformed, but the request can still be
            # recovered to answer 400.
            words = start.split()
            if len(words) < 3:
                raise SipParseError("malformed request line")
            method, uri, version = words[0], " ".join(words[1:-1]), words[-1]
            start_error = ("malformed request line (whitespace)", 400)
        if not _is_token(method):
            raise SipParseError(f"bad method token {method[:40]!r}")
        if version != SIP_VERSION:
            if re.fullmatch(r"SIP/[0-9]+\.[0-9]+", version, re.ASCII | re.IGNORECASE):
                start_error = (f"unsupported version {version!r}", 505)
            else:
                start_error = (f"bad SIP version {version[:20]!r}", 400)
        if start_error is None:
            uri_error = _request_uri_error(uri)
            if uri_error:
                start_error = (f"{uri_error} {uri[:80]!r}", 400)

    items = _header_items(lines[1:], method, uri, body)
    if start_error is not None:
        raise _fail(start_error[0], method, uri, items, body, status=start_error[1])
    first: dict[str, str] = {}
    dup = None
    extra: list[str] = []
    for cname, value in items:
        if cname in first:
            if cname in _SINGLE_CANON:
                dup = dup or cname
            elif cname == "Contact":
                extra.append(value)
        else:
            first[cname] = value
    msg = _finish(method, uri, status, reason, items, first, dup, body, stream)
    if validate:
        error = _deep_error(first, extra)
        if error is not None:
            raise _fail(error, method, uri, items, msg.body)
    return msg


def _header_items(lines: list[str], method: str | None, uri: str, body: bytes) -> list[tuple[str, str]]:
    if len(lines) > MAX_HEADER_LINES:
        raise _fail("too many header lines", None, uri, [], body)
    items: list[tuple[str, str]] = []
    for line in lines:
        if not line:
            continue
        if "\r" in line or "\n" in line:
            raise _fail("bare CR or LF in a header line", method, uri, items, body)
        if line[0] in " \t":  # folded continuation (RFC 3261 §7.3.1)
            if not items:
                raise _fail("continuation line before any header", None, uri, items, body)
            more = line.strip(" \t")
            if more:
                n, v = items[-1]
                items[-1] = (n, f"{v} {more}" if v else more)
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise _fail(f"header line without colon: {line[:40]!r}", method, uri, items, body)
        name = name.rstrip(" \t")
        cname = _WIRE_NAMES.get(name)  # only ever holds valid names (unlike _CANON_CACHE)
        if cname is None:
            if not _is_token(name):
                raise _fail(f"bad header name {name[:40]!r}", method, uri, items, body)
            cname = canonical_name(name)
        items.append((cname, value.strip(" \t")))
    return items


# The usual sip:/sips: Request-URI; a match implies `_request_uri_error` finds nothing.
_SIP_RURI_FAST_RE = re.compile(r"sips?+:(?:[^\s@<>\"?]++@)?+[A-Za-z0-9\-._]++[^\s@<>\"?]*+")
_SCHEME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-."


def _request_uri_error(uri: str) -> str | None:
    """Why `uri` cannot be a Request-URI, or None. Only the framing is checked; the UA judges the scheme."""
    if _SIP_RURI_FAST_RE.fullmatch(uri):
        return None
    scheme, colon, rest = uri.partition(":")
    if not colon or not rest or not scheme[:1].isalpha() or not scheme.isascii() or scheme.strip(_SCHEME_CHARS):
        return "bad Request-URI"
    if "<" in rest or ">" in rest or '"' in rest:
        return "bad Request-URI"
    if scheme.lower() in ("sip", "sips"):
        hostpart = rest[rest.rfind("@") + 1:]
        if not hostpart or hostpart[0] in ";?:":
            return "Request-URI without host"
        if "?" in hostpart:  # RFC 3261 §19.1.1: headers are not allowed in a Request-URI (RFC 4475 escruri)
            return "headers in Request-URI"
    return None


def _finish(method: str | None, uri: str, status: int, reason: str, items: _Items,
            first: dict[str, str], dup: str | None, body: bytes, stream: bool) -> Request | Response:
    """Framing and mandatory header checks shared by both parse paths; builds the message."""
    if dup is not None:
        raise _fail(f"duplicate {dup} header", method, uri, items, b"")
    cl = first.get("Content-Length")
    if cl is not None:
        if not (cl.isdigit() and cl.isascii()):
            raise _fail(f"bad Content-Length {cl[:20]!r}", method, uri, items, b"")
        length = int(cl) if len(cl) < 12 else MAX_MESSAGE_SIZE + 1
        if length != len(body):
            if length > len(body):
                raise _fail(f"Content-Length {length} larger than body ({len(body)} bytes)", method, uri, items,
                            b"")
            if not stream:
                body = body[:length]
    elif stream:
        raise _fail("missing Content-Length on a stream transport", method, uri, items, body)

    error = _header_error(method, first)
    if error is not None:
        raise _fail(error, method, uri, items, body)
    if method is None:
        return Response(status, reason, Headers._trusted(items), body)
    return Request(method, uri, Headers._trusted(items), body)


def _header_error(method: str | None, first: dict[str, str]) -> str | None:
    """Why the mandatory headers (presence, CSeq, Max-Forwards) make the message malformed, or None."""
    get = first.get
    if not all(map(get, _MANDATORY)):
        for name in _MANDATORY:
            if not get(name):
                return f"missing {name} header"
    value = first["CSeq"]
    parts = value.split()
    if len(parts) != 2:
        return f"bad CSeq {value[:60]!r}"
    num, cmethod = parts
    if not (num.isdigit() and num.isascii()) or len(num) > 10 or int(num) >= 2**31:
        return f"bad CSeq {value[:60]!r}"
    if method is not None:
        if cmethod != method:
            return f"CSeq method {cmethod[:40]!r} does not match request method {method!r}"
        mf = get("Max-Forwards")
        if mf is not None and (not (mf.isdigit() and mf.isascii()) or len(mf) > 10 or int(mf) > 255):
            return f"bad Max-Forwards {mf[:20]!r}"
    elif cmethod not in _KNOWN_METHODS and not _is_token(cmethod):
        return f"bad CSeq {value[:60]!r}"
    return None


def _deep_error(first: dict[str, str], extra: list[str] | None) -> str | None:
    """Why Via, From, To, Contact or Date make the message malformed, or None: the checks `validate=False` defers.
    `extra` holds the values of the Contact lines after the first."""
    get = first.get
    value = get("Via")
    if value is not None and not _VIA_FAST_RE.fullmatch(value) and _via_error(value):
        return f"bad Via {value[:60]!r}"
    addr_ok = _ADDR_FAST_RE.fullmatch
    value = get("From")
    if value is not None and not addr_ok(value) and _addr_error(value):
        return "malformed From header"
    value = get("To")
    if value is not None and not addr_ok(value) and _addr_error(value):
        return "malformed To header"
    value = get("Contact")
    if value is not None:
        if not addr_ok(value) and _contact_error(value):
            return "malformed Contact header"
        if extra:
            for value in extra:
                if _contact_error(value):
                    return "malformed Contact header"
    value = get("Date")
    if value is not None and not _DATE_RE.fullmatch(value):  # RFC 3261 §20.17, RFC 4475 baddate
        return f"bad Date {value[:40]!r}"
    return None


_DATE_RE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),[ \t]+[0-9]{1,2}[ \t]+(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    r"[ \t]+[0-9]{4}[ \t]+[0-9]{2}:[0-9]{2}:[0-9]{2}[ \t]+GMT"
)
_TOKEN_RE_TEXT = r"[A-Za-z0-9\-.!%*_+`'~]++"
# Fast screens: a match implies the detailed check (`_params_error`, `_via_error`, `_addr_error`) passes, a miss just
# means the detailed check decides. Possessive quantifiers keep them linear on hostile input.
# ';name[=value]...' where a value runs to the next ';' outside a quoted string; no unquoted ',' so that a match
# never hides a second comma-joined value:
_PARAMS_RE = re.compile(
    r"(?:[ \t]*+;[ \t]*+" + _TOKEN_RE_TEXT + r"[ \t]*+(?:=(?:[^;,\"\\]++|\"(?:[^\"\\]++|\\.)*+\")*+)?+)*+"
)
# the usual shape of one via-parm:
_VIA_FAST_RE = re.compile(r"SIP/2\.0/[A-Za-z0-9]++ [A-Za-z0-9\-._]++(?::[0-9]{1,5})?+" + _PARAMS_RE.pattern)
# name-addr with a quoted or token display name, or none:
_ADDR_FAST_RE = re.compile(
    r"(?:\"(?:[^\"\\]++|\\.)*+\"[ \t]*+|[A-Za-z0-9\-.!%*_+`'~ \t]*+)<[^\s<>\":]*+:[^\s<>\"]*+>" + _PARAMS_RE.pattern
)
_VIA_PROTO_RE = re.compile(r"SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*", re.IGNORECASE)
_PORT_RE = re.compile(r"[0-9]{1,5}")
_BAD_HOST_CHARS = frozenset(' \t<>"@;?,/\\[]')


def _via_error(value: str) -> bool:
    """True when a Via line (one or more comma-joined via-parms) is malformed (RFC 4475 badinv01, wsinv)."""
    for element in _split_unquoted(value, ","):
        element = element.strip()
        if element[:8] == "SIP/2.0/":
            rest = element[8:]
        else:
            m = _VIA_PROTO_RE.match(element)
            if m is None:
                return True
            rest = element[m.end():]
        semi = _find_unquoted(rest, ";")
        if semi >= 0:
            if _params_error(rest[semi:]):
                return True
            rest = rest[:semi]
        words = rest.split(None, 1)
        if len(words) != 2 or not _is_token(words[0]) or _hostport_error(words[1]):
            return True
    return False


def _hostport_error(text: str) -> bool:
    text = text.strip()
    if text[:1] == "[":
        end = text.find("]")
        if end < 3 or text[1:end].strip("0123456789abcdefABCDEF:."):
            return True
        port = text[end + 1:].strip()
        if port:
            return port[0] != ":" or not _PORT_RE.fullmatch(port[1:].strip())
        return False
    host, colon, port = text.partition(":")
    host = host.rstrip()
    if not host or not _BAD_HOST_CHARS.isdisjoint(host):
        return True
    return bool(colon) and not _PORT_RE.fullmatch(port.strip())


def _params_error(tail: str, empty_ok: bool = False) -> bool:
    """True when the params after an address or sent-by (';a=b;c') are malformed: non-token names, or empty ones
    (';;', trailing ';') unless `empty_ok` - tolerated after addresses, where sloppy peers leave them."""
    if _PARAMS_RE.fullmatch(tail):
        return False
    tail = tail.strip(" \t")
    if not tail:
        return False
    if tail[0] != ";":
        return True
    for param in _split_unquoted(tail[1:], ";"):
        if not _is_token(param.partition("=")[0].strip(" \t")) and not (empty_ok and not param.strip(" \t")):
            return True
    return False


_DISPLAY_DELIMS = frozenset('()<>@,;:\\"/[]?={}\x7f') | frozenset(chr(c) for c in range(32) if c != 9)


def _addr_error(value: str) -> bool:
    """True when a From/To/Contact value is not a valid name-addr / addr-spec with params (RFC 3261 §20.10)."""
    if _ADDR_FAST_RE.fullmatch(value):
        return False
    lt = 0
    c = value[:1]
    if c != "<":
        if c == '"':
            end = _quoted_end(value, 0)
            if end < 0:  # RFC 4475 quotbal
                return True
            lt = value.find("<", end)
            if lt < 0 or value[end + 1:lt].strip():
                return True
        else:
            lt = value.find("<")
            if lt < 0:
                # addr-spec: the URI ends at the first ';' and holds no ',', '?', quotes or LWS (RFC 4475 regbadct)
                uri, semi, tail = value.partition(";")
                uri = uri.rstrip()
                if ":" not in uri or any(ch in uri for ch in ' \t,?"<>'):
                    return True
                return bool(semi) and _params_error(";" + tail, True)
            # unquoted display name: tokens and LWS (RFC 4475 baddn); non-ASCII tolerated, real peers send it
            if not _DISPLAY_DELIMS.isdisjoint(value[:lt]):
                return True
    gt = value.find(">", lt)
    if gt < lt + 2 or value[lt + 1] in " \t" or value[gt - 1] in " \t":  # RFC 4475 badaspec
        return True
    if value.find(":", lt, gt) < 0 or value.find("<", lt + 1, gt) >= 0:
        return True
    return gt + 1 < len(value) and _params_error(value[gt + 1:], True)


def _contact_error(value: str) -> bool:
    if "," not in value:
        return value != "*" and _addr_error(value)
    parts = split_header_values(value)
    if not parts or len(parts) != len(_split_unquoted_angle(value)):  # empty elements (',,')
        return True
    return any(_addr_error(p) for p in parts)


def _split_unquoted_angle(value: str) -> list[str]:
    """Comma split respecting quotes and <...>, keeping empty elements (so ',,' can be detected)."""
    out: list[str] = []
    depth = 0
    quoted = False
    start = 0
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            out.append(value[start:i])
            start = i + 1
        i += 1
    out.append(value[start:])
    return out


# --------------------------------------------------------------------------------------------------------------
# Stream framing


class StreamFramer:
    """Cuts a TCP byte stream into SIP messages using Content-Length (RFC 3261 §18.3)."""

    def __init__(self, max_message: int = MAX_MESSAGE_SIZE) -> None:
        self._buf = bytearray()
        self._max = max_message

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete messages now available (CRLF keep-alives are skipped).

        Raises SipParseError when the stream cannot be framed (no Content-Length, bad value, too large):
        the connection must then be closed.
        """
        buf = self._buf
        buf += data
        out: list[bytes] = []
        while True:
            # Skip keep-alive CRLFs (RFC 5626 §3.5.1) between messages.
            if buf and buf[0] in (13, 10):
                skip = len(buf) - len(buf.lstrip(b"\r\n"))
                del buf[:skip]
            if not buf:
                break
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self._max:
                    raise SipParseError("header section too large", status=513)
                break
            if end > self._max:
                raise SipParseError("header section too large", status=513)
            length = _content_length_of(bytes(buf[:end]), self._max)
            total = end + 4 + length
            if total > self._max:
                raise SipParseError("message too large", status=513)
            if len(buf) < total:
                break
            out.append(bytes(buf[:total]))
            del buf[:total]
        return out


_FOLD_RE = re.compile(rb"\r\n[ \t]+")


def _content_length_of(head: bytes, limit: int = MAX_MESSAGE_SIZE) -> int:
    if b"\r\n " in head or b"\r\n\t" in head:
        head = _FOLD_RE.sub(b" ", head)
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip(b" \t").lower() in (b"content-length", b"l"):
            v = value.strip(b" \t")
            if not v.isdigit():
                raise SipParseError(f"bad Content-Length {v[:20]!r}")
            if len(v) > 10 or int(v) > limit:
                raise SipParseError("message too large", status=513)
            return int(v)
    raise SipParseError("missing Content-Length on a stream transport")
