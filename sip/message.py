"""SIP messages: parse bytes into `Request`/`Response` and serialise them back (RFC 3261 §7, §20, §25).

What lives here: the start line, headers (case-insensitive names, compact forms, folded lines, comma-joined
multi-value headers) and the body, kept byte-exact. Header values are kept as text and parsed only when asked
(`sip.uri` parses addresses), which keeps a typical INVITE parse+serialise in a few microseconds.

What does not live here: sockets, clocks, transactions. `parse_message` raises `SipParseError` for malformed input;
the error carries whatever request could be recovered so the caller can answer 400 with the reason, or drop and
count it when no answer is possible.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

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


class SipParseError(ValueError):
    """Malformed SIP input. `request` is the partly parsed request (if any) so a 400 can be built from it."""

    def __init__(self, reason: str, request: Request | None = None, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.request = request
        self.status = status


def canonical_name(name: str) -> str:
    """'call-id' / 'i' / 'CALL-ID' -> 'Call-ID'; unknown names get each dash-separated word capitalised."""
    lowered = name.lower()
    known = _CANONICAL.get(lowered)
    if known is not None:
        return known
    return "-".join(part[:1].upper() + part[1:] for part in lowered.split("-"))


def split_header_values(value: str) -> list[str]:
    """Split a comma-joined header value, respecting quoted strings and <...> URIs."""
    if "," not in value:
        return [value]
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
            part = value[start:i].strip()
            if part:
                out.append(part)
            start = i + 1
        i += 1
    last = value[start:].strip()
    if last:
        out.append(last)
    return out


class Headers:
    """An ordered, case-insensitive multimap of SIP headers; names are stored canonically."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(canonical_name(n), v) for n, v in items]

    @classmethod
    def _trusted(cls, items: list[tuple[str, str]]) -> Headers:
        h = cls.__new__(cls)
        h._items = items
        return h

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = canonical_name(name)
        return any(n == key for n, _ in self._items)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of a header (the first element for comma-joined multi-value headers)."""
        key = canonical_name(name)
        for n, v in self._items:
            if n == key:
                if key.lower() in MULTI_VALUE:
                    return split_header_values(v)[0] if v else v
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of a header, comma-joined values split for multi-value headers."""
        key = canonical_name(name)
        multi = key.lower() in MULTI_VALUE
        out: list[str] = []
        for n, v in self._items:
            if n == key:
                if multi:
                    out.extend(split_header_values(v))
                else:
                    out.append(v)
        return out

    def count(self, name: str) -> int:
        key = canonical_name(name)
        return sum(1 for n, _ in self._items if n == key)

    def set(self, name: str, value: str) -> None:
        """Replace every occurrence of `name` with one value, kept at the first occurrence's position."""
        key = canonical_name(name)
        for i, (n, _) in enumerate(self._items):
            if n == key:
                self._items[i] = (key, value)
                self._items = [it for j, it in enumerate(self._items) if j <= i or it[0] != key]
                return
        self._items.append((key, value))

    def add(self, name: str, value: str, *, first: bool = False) -> None:
        item = (canonical_name(name), value)
        if first:
            self._items.insert(0, item)
        else:
            self._items.append(item)

    def remove(self, name: str) -> None:
        key = canonical_name(name)
        self._items = [it for it in self._items if it[0] != key]

    def replace_first(self, name: str, value: str) -> None:
        """Replace the first value of `name` (for multi-value headers: the first element of the first line)."""
        key = canonical_name(name)
        for i, (n, v) in enumerate(self._items):
            if n == key:
                parts = split_header_values(v) if key.lower() in MULTI_VALUE else [v]
                parts[0] = value
                self._items[i] = (key, ", ".join(parts))
                return
        self._items.append((key, value))

    def pop_first(self, name: str) -> str | None:
        """Remove and return the first value of `name` (e.g. the top Via or Route)."""
        key = canonical_name(name)
        for i, (n, v) in enumerate(self._items):
            if n == key:
                parts = split_header_values(v) if key.lower() in MULTI_VALUE else [v]
                first = parts.pop(0)
                if parts:
                    self._items[i] = (key, ", ".join(parts))
                else:
                    del self._items[i]
                return first
        return None

    def copy(self) -> Headers:
        return Headers._trusted(list(self._items))

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class Message:
    """Fields and helpers shared by requests and responses."""

    __slots__ = ("headers", "body")

    headers: Headers
    body: bytes

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        """(number, METHOD) from CSeq; (0, '') when absent or malformed."""
        value = self.headers.get("CSeq")
        if not value:
            return 0, ""
        num, _, method = value.strip().partition(" ")
        try:
            return int(num), method.strip()
        except ValueError:
            return 0, ""

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

    def to_bytes(self) -> bytes:
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

    def to_bytes(self) -> bytes:
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
    gt = value.rfind(">")
    tail = value[gt + 1:] if gt >= 0 else value
    key = name.lower()
    for piece in tail.split(";")[1:]:
        pname, eq, pval = piece.partition("=")
        if pname.strip().lower() == key:
            return pval.strip().strip('"') if eq else ""
    return None


def tag_of(value: str) -> str:
    return param_of(value, "tag") or ""


def _fail(reason: str, method: str | None, uri: str, items: list[tuple[str, str]], body: bytes,
          status: int = 400) -> SipParseError:
    req = Request(method, uri, Headers._trusted(items), body) if method else None
    return SipParseError(reason, req, status)


_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")


def parse_message(data: bytes, *, stream: bool = False) -> Request | Response:
    """Parse one complete SIP message.

    `stream=True` (TCP) means the framing already cut the body to Content-Length. On a datagram a body longer than
    Content-Length is truncated (RFC 3261 §18.3) and a shorter one is an error.
    """
    if len(data) > MAX_MESSAGE_SIZE:
        raise SipParseError("message too large", status=513)
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        # Tolerate bare-LF messages (RFC 4475 copies, hand-typed tests).
        lf_end = data.find(b"\n\n")
        if lf_end < 0:
            raise SipParseError("no blank line after headers")
        head_bytes, body = data[:lf_end], data[lf_end + 2:]
    else:
        head_bytes, body = data[:head_end], data[head_end + 4:]
    try:
        head = head_bytes.decode("utf-8")
    except UnicodeDecodeError:
        head = head_bytes.decode("utf-8", "surrogateescape")
        if "\x00" in head:
            raise SipParseError("binary data in header section") from None
    lines = head.split("\r\n") if "\r\n" in head else head.split("\n")
    start = lines[0].lstrip()
    if not start and len(lines) > 1:  # leading CRLF keep-alives before the start line
        while lines and not lines[0].strip():
            lines.pop(0)
        if not lines:
            raise SipParseError("empty message")
        start = lines[0]

    method: str | None = None
    uri = ""
    status = 0
    reason = ""
    if start.startswith("SIP/"):
        version, _, rest = start.partition(" ")
        code, _, reason = rest.partition(" ")
        if version != SIP_VERSION:
            raise SipParseError(f"unsupported version {version!r}")
        if len(code) != 3 or not code.isdigit() or not ("1" <= code[0] <= "6"):
            raise SipParseError(f"bad status code {code!r}")
        status = int(code)
    else:
        parts = start.split(" ")
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise SipParseError("malformed request line")
        method, uri, version = parts
        if not all(c in _TOKEN_CHARS for c in method):
            raise SipParseError(f"bad method token {method!r}")
        if ":" not in uri or "<" in uri or ">" in uri:
            raise _fail(f"bad Request-URI {uri!r}", None, uri, [], body)
        if version != SIP_VERSION:
            items_v = _parse_header_lines(lines[1:], method, uri, body)
            raise _fail(f"unsupported version {version!r}", method, uri, items_v, body, status=505)

    items = _parse_header_lines(lines[1:], method, uri, body)

    # Content-Length framing and duplicate single-value headers.
    content_length: str | None = None
    seen: set[str] = set()
    for name, value in items:
        if name in ("Call-ID", "CSeq", "From", "To", "Max-Forwards", "Content-Length", "Content-Type"):
            if name in seen:
                raise _fail(f"duplicate {name} header", method, uri, items, b"")
            seen.add(name)
            if name == "Content-Length":
                content_length = value
    if content_length is not None:
        cl = content_length.strip()
        if not cl.isdigit():
            raise _fail(f"bad Content-Length {content_length!r}", method, uri, items, b"")
        length = int(cl)
        if length > len(body):
            raise _fail(f"Content-Length {length} larger than body ({len(body)} bytes)", method, uri, items, b"")
        if not stream:
            body = body[:length]
    elif stream:
        raise _fail("missing Content-Length on a stream transport", method, uri, items, body)

    headers = Headers._trusted(items)
    if method is None:
        resp = Response(status, reason, headers, body)
        _check_mandatory(resp, None, uri, items, body)
        return resp
    req = Request(method, uri, headers, body)
    _check_mandatory(req, method, uri, items, body)
    return req


def _parse_header_lines(lines: list[str], method: str | None, uri: str, body: bytes) -> list[tuple[str, str]]:
    if len(lines) > MAX_HEADER_LINES:
        raise _fail("too many header lines", None, uri, [], body)
    items: list[tuple[str, str]] = []
    canon = _CANONICAL
    for line in lines:
        if not line:
            continue
        if line[0] in " \t":  # folded continuation (RFC 3261 §7.3.1)
            if not items:
                raise _fail("continuation line before any header", None, uri, items, body)
            n, v = items[-1]
            items[-1] = (n, f"{v} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise _fail(f"header line without colon: {line[:40]!r}", method, uri, items, body)
        name = name.rstrip()
        key = name.lower()
        cname = canon.get(key)
        if cname is None:
            if not name or not all(c in _TOKEN_CHARS for c in name):
                raise _fail(f"bad header name {name[:40]!r}", method, uri, items, body)
            cname = canonical_name(name)
        items.append((cname, value.strip()))
    return items


def _check_mandatory(msg: Message, method: str | None, uri: str, items: list[tuple[str, str]], body: bytes) -> None:
    h = msg.headers
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if h.get(name) is None:
            raise _fail(f"missing {name} header", method, uri, items, body)
    cseq = h.get("CSeq") or ""
    num, _, cmethod = cseq.strip().partition(" ")
    cmethod = cmethod.strip()
    if not num.isdigit() or len(num) > 10 or int(num) >= 2**31 or not cmethod or " " in cmethod:
        raise _fail(f"bad CSeq {cseq!r}", method, uri, items, body)
    if method is not None:
        if cmethod != method:
            raise _fail(f"CSeq method {cmethod!r} does not match request method {method!r}", method, uri, items, body)
        mf = h.get("Max-Forwards")
        if mf is not None and (not mf.strip().isdigit() or int(mf) > 255):
            raise _fail(f"bad Max-Forwards {mf!r}", method, uri, items, body)
    via = h.get("Via") or ""
    if not via.upper().startswith("SIP/2.0/"):
        raise _fail(f"bad Via {via[:60]!r}", method, uri, items, body)
    for name in ("From", "To"):
        value = h.get(name) or ""
        if value.count('"') % 2 or value.count("<") != value.count(">"):
            raise _fail(f"malformed {name} header", method, uri, items, body)


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
        self._buf += data
        out: list[bytes] = []
        buf = self._buf
        while True:
            # Skip keep-alive CRLFs (RFC 5626 §3.5.1) between messages.
            i = 0
            while i < len(buf) and buf[i] in (13, 10):
                i += 1
            if i:
                del buf[:i]
            if not buf:
                break
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self._max:
                    raise SipParseError("header section too large", status=513)
                break
            head = bytes(buf[:end])
            length = _content_length_of(head)
            total = end + 4 + length
            if total > self._max:
                raise SipParseError("message too large", status=513)
            if len(buf) < total:
                break
            out.append(bytes(buf[:total]))
            del buf[:total]
        return out


def _content_length_of(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() in (b"content-length", b"l"):
            v = value.strip()
            if not v.isdigit():
                raise SipParseError(f"bad Content-Length {v[:20]!r}")
            return int(v)
    raise SipParseError("missing Content-Length on a stream transport")
