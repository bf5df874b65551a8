"""SIP fuzz cases: valid requests of every method we handle, mutated at byte and header level by a seeded RNG, and
the oracle that says what the engine must do with each one.

`expected(data, stream)`: "4xx" when the bytes are a malformed request that can be answered (the parser recovered
the request line and Via, From, To, Call-ID, CSeq, and it is not an ACK: sip.ua answers it with the parser's 4xx),
"drop" when it cannot be answered (counted and dropped), "valid" when it parses (the engine answers as the UA core
says: any response, or none for an ACK).
"""

from __future__ import annotations

import random
import re
import uuid

from sip.events import Address
from sip.message import SipParseError, parse_message
from sip.transaction import response_address

SDP = (
    "v=0\r\no=fuzz 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 9 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
)
METHODS = ("INVITE", "OPTIONS", "REGISTER", "BYE", "CANCEL", "ACK", "INFO", "MESSAGE", "FOO")
GARBAGE_VALUES = (
    "", " ", "<", ">", "<sip:>", "sip:", ";tag=", "\x00", "\xff\xfe", "é", "a" * 300, "1" * 40, "-1", "4294967296",
    "INVITE", "1 INVITE 2", "SIP/2.0/UDP", "SIP/2.0/UDP ;branch=", "<sip:a@[::1>", "\"unterminated <sip:a@b>",
    "sip:a@b;lr;lr;lr", "z9hG4bK", "%%%", "\\", "a" * 5000,
)


def request(method: str, port: int, local_port: int, transport: str = "UDP") -> tuple[bytes, str]:
    call_id = f"{uuid.uuid4().hex}@fuzz"
    body = SDP if method == "INVITE" else ""
    lines = [
        f"{method} sip:100@127.0.0.1:{port} SIP/2.0",
        f"Via: SIP/2.0/{transport} 127.0.0.1:{local_port};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport",
        "Max-Forwards: 70",
        f"From: \"fuzz\" <sip:+15550001111@127.0.0.1>;tag={uuid.uuid4().hex[:8]}",
        f"To: <sip:100@127.0.0.1:{port}>" + (";tag=abc" if method in ("BYE", "INFO") else ""),
        f"Call-ID: {call_id}",
        f"CSeq: 1 {'INVITE' if method in ('ACK', 'CANCEL') else method}",
        f"Contact: <sip:fuzz@127.0.0.1:{local_port}>",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode(), call_id


def mutate(data: bytes, rng: random.Random) -> bytes:
    """1-4 mutations: byte flips, cuts, duplications, random insertions, header removal/duplication/garbage values,
    wrong Content-Length, bare LF, oversize lines, a Via port out of range without rport."""
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    out = bytearray()
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(12)
        if op == 0 and len(lines) > 1:  # drop a header
            del lines[rng.randrange(1, len(lines))]
        elif op == 1 and len(lines) > 1:  # duplicate a header
            i = rng.randrange(1, len(lines))
            lines.insert(i, lines[i])
        elif op == 2 and len(lines) > 1:  # a header's value becomes garbage
            i = rng.randrange(1, len(lines))
            name = lines[i].split(b":", 1)[0]
            lines[i] = name + b": " + rng.choice(GARBAGE_VALUES).encode("utf-8", "surrogatepass")
        elif op == 3:  # garbage in the request line
            parts = lines[0].split(b" ")
            parts[rng.randrange(len(parts))] = rng.choice(GARBAGE_VALUES).encode()
            lines[0] = b" ".join(parts)
        elif op == 4:  # wrong Content-Length
            lines = [ln for ln in lines if not ln.lower().startswith(b"content-length")]
            lines.append(b"Content-Length: " + str(rng.choice((-1, 0, 1, 5, 10**6, 2**40))).encode())
        elif op == 5:  # invalid UTF-8 somewhere in a header
            i = rng.randrange(len(lines))
            lines[i] += bytes([rng.choice((0x80, 0xC0, 0xFF, 0xFE, 0xED))])
        elif op == 6:  # a header line folded or with a bare LF
            i = rng.randrange(len(lines))
            lines[i] = lines[i] + rng.choice((b"\n", b"\r\n ", b"\r\n\t", b"\r"))
        elif op == 7:  # an unknown or compact header with odd content
            lines.insert(rng.randrange(1, len(lines) + 1),
                         rng.choice((b"v", b"X-Fuzz", b"Require", b"Proxy-Require", b"Expires", b"Max-Forwards"))
                         + b": " + rng.choice(GARBAGE_VALUES).encode())
        elif op == 11:  # the top Via names a port out of range (or 0) and drops rport: responses go there
            lines = [re.sub(rb"^(Via: SIP/2.0/\w+ [^:;]+):\d+([^\r]*?);rport", lambda m: m.group(1) + b":" + str(
                rng.choice((0, 65536, 70000, 99999, 4294967296))).encode() + m.group(2), ln) for ln in lines]
        elif op == 8:  # an oversize line
            lines.insert(rng.randrange(1, len(lines) + 1), b"X-Long: " + b"x" * rng.choice((1000, 8000, 70000)))
        else:  # byte-level: flip, cut, splice
            raw = bytearray(b"\r\n".join(lines))
            if raw:
                pos = rng.randrange(len(raw))
                if op == 9:
                    raw[pos] = rng.randrange(256)
                else:
                    del raw[pos: pos + rng.randrange(1, 30)]
            lines = bytes(raw).split(b"\r\n")
    out += b"\r\n".join(lines) + sep + body
    return bytes(out)


def error_answer(status: int) -> bool:
    """What a malformed request that can be answered must get: a 4xx, or the two 5xx RFC 3261 reserves for what
    the message itself says (505 Version Not Supported, 513 Message Too Large; RFC 4475 §3.3.9/3.1.2.x)."""
    return 400 <= status < 500 or status in (505, 513)


def expected(data: bytes, stream: bool = False, local_port: int = 0) -> tuple[str, int, str]:
    """(verdict, status, key): "4xx" (with the status sip.ua answers and "Call-ID\ntop Via" of the recovered request,
    which the answer copies), "4xx-elsewhere"
    (answerable, but RFC 3261 §18.2.2 sends the answer to another port than `local_port`, the sender's: the mutated
    top Via lost its rport and names another port, or none, which means 5060), "drop", or "valid" (0, the Call-ID)."""
    try:
        message = parse_message(data, stream=stream)
    except SipParseError as exc:
        req = exc.request
        h = req.headers if req is not None else None
        if req is not None and h is not None and req.method != "ACK" and all(
            h.get(n) for n in ("Via", "From", "To", "Call-ID", "CSeq")
        ):
            key = f"{h.get('Call-ID') or ''}\n{req.top_via}"  # what the answer copies: Call-ID and the top Via
            if not stream and local_port:
                where = response_address(req, Address("udp", "127.0.0.1", local_port))
                if where.port != local_port:
                    return "4xx-elsewhere", exc.status, key
            return "4xx", exc.status, key
        return "drop", 0, ""
    return "valid", 0, getattr(message, "call_id", "") or ""
