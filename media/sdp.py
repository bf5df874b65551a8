"""SDP (RFC 4566) for G.711 audio calls, and the RFC 3264 offer/answer rules we follow.

* `parse(text)` reads what real peers send (SIPp, baresip, carriers): CRLF or LF line ends, stray whitespace, lines in
  an unexpected order, and unknown lines (kept in `other_lines` / `attributes`, never an error). Only a missing `v=`,
  `o=` or a malformed `m=` / `c=` line raise `SdpError`.
* `build_offer(...)` writes our offer; `build_answer(offer, ...)` answers one (first offered codec that we support,
  the offer's telephone-event payload type, the mirrored direction, port 0 for every stream we do not take) and
  returns the text plus the `NegotiatedMedia` the RTP session needs; `negotiate_answer(our_offer, their_answer)` does
  the same for an answer to our offer.
* Hold (RFC 3264 §8.4, RFC 6337): `a=sendonly` / `a=inactive` in the offer, or the RFC 2543 form `c=0.0.0.0`, are
  treated as the offerer not wanting to receive; we answer `recvonly` / `inactive` and do not send.

`NegotiatedMedia.direction` is always from OUR point of view: "sendrecv", "sendonly" (we send, do not receive),
"recvonly" or "inactive". We only ever take one audio stream (the first usable one). Errors that make a call
impossible (no audio we can use) raise `SdpError` with a message fit for a 488 reason/log line.

This module must not open sockets, choose ports or know about SIP; it only turns text into data and back.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_MIRROR = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}
_SEND = {"sendrecv": True, "sendonly": True, "recvonly": False, "inactive": False}
_RECV = {"sendrecv": True, "sendonly": False, "recvonly": True, "inactive": False}

# RFC 3551 static payload types (the ones a peer may list without an rtpmap).
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1), 3: ("GSM", 8000, 1), 4: ("G723", 8000, 1), 5: ("DVI4", 8000, 1), 6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1), 8: ("PCMA", 8000, 1), 9: ("G722", 8000, 1), 10: ("L16", 44100, 2), 11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1), 13: ("CN", 8000, 1), 14: ("MPA", 90000, 1), 15: ("G728", 8000, 1), 16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1), 18: ("G729", 8000, 1),
}
OUR_CODECS: dict[str, int] = {"PCMU": 0, "PCMA": 8}  # what the RTP session can encode/decode
TELEPHONE_EVENT = "telephone-event"
HOLD_ADDRESSES = ("0.0.0.0", "::")


class SdpError(ValueError):
    """SDP we cannot parse, or an offer/answer with no audio we can use."""


def _combine(ours: str, theirs_mirrored: str) -> str:
    """The direction both sides allow: we send only if both allow it, same for receiving."""
    send = _SEND[ours] and _SEND[theirs_mirrored]
    recv = _RECV[ours] and _RECV[theirs_mirrored]
    return {(True, True): "sendrecv", (True, False): "sendonly", (False, True): "recvonly",
            (False, False): "inactive"}[(send, recv)]


def mirror_direction(direction: str) -> str:
    """The answerer's direction for an offered direction (sendonly <-> recvonly)."""
    return _MIRROR[direction]


@dataclass(frozen=True)
class RtpMap:
    encoding: str
    clock_rate: int
    channels: int = 1

    def __str__(self) -> str:
        return f"{self.encoding}/{self.clock_rate}" + (f"/{self.channels}" if self.channels != 1 else "")


@dataclass
class Origin:
    """o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>"""

    username: str = "-"
    session_id: str = "0"
    session_version: int = 0
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    def __str__(self) -> str:
        return (f"{self.username} {self.session_id} {self.session_version} {self.nettype} {self.addrtype} "
                f"{self.address}")


@dataclass
class MediaDescription:
    media: str  # "audio", "video", ...
    port: int
    proto: str  # "RTP/AVP", ...
    formats: list[str]  # as written on the m= line (payload type numbers for RTP)
    port_count: int | None = None  # m=audio 49170/2 ...
    connection: str | None = None  # media-level c= address
    connection_addrtype: str = "IP4"
    rtpmap: dict[int, RtpMap] = field(default_factory=dict)
    fmtp: dict[int, str] = field(default_factory=dict)
    ptime: int | None = None
    maxptime: int | None = None
    direction: str | None = None  # explicit media-level a=sendrecv/... (None: not given)
    attributes: list[str] = field(default_factory=list)  # every other a= line, without "a="
    other_lines: list[str] = field(default_factory=list)  # i=, b=, k= ... as written ("b=AS:64")

    @property
    def payload_types(self) -> list[int]:
        """The numeric formats of an RTP m= line (non-numeric ones are skipped)."""
        return [int(f) for f in self.formats if f.isdigit()]

    def codec(self, payload_type: int) -> RtpMap | None:
        """The rtpmap of a payload type, falling back to the RFC 3551 static table."""
        if payload_type in self.rtpmap:
            return self.rtpmap[payload_type]
        static = STATIC_PAYLOAD_TYPES.get(payload_type)
        return RtpMap(*static) if static else None

    def telephone_event(self) -> int | None:
        """The payload type of telephone-event/8000 listed on this m= line, if any."""
        for pt in self.payload_types:
            rm = self.rtpmap.get(pt)
            if rm and rm.encoding.lower() == TELEPHONE_EVENT and rm.clock_rate == 8000:
                return pt
        return None

    def to_lines(self) -> list[str]:
        port = f"{self.port}/{self.port_count}" if self.port_count else str(self.port)
        lines = [f"m={self.media} {port} {self.proto} {' '.join(self.formats)}"]
        lines += [ln for ln in self.other_lines if ln[:2] in ("i=", "k=")]
        if self.connection is not None:
            lines.append(f"c=IN {self.connection_addrtype} {self.connection}")
        lines += [ln for ln in self.other_lines if ln[:2] not in ("i=", "k=")]
        for pt in self.payload_types:
            if pt in self.rtpmap:
                lines.append(f"a=rtpmap:{pt} {self.rtpmap[pt]}")
            if pt in self.fmtp:
                lines.append(f"a=fmtp:{pt} {self.fmtp[pt]}")
        if self.ptime is not None:
            lines.append(f"a=ptime:{self.ptime}")
        if self.maxptime is not None:
            lines.append(f"a=maxptime:{self.maxptime}")
        lines += [f"a={a}" for a in self.attributes]
        if self.direction is not None:
            lines.append(f"a={self.direction}")
        return lines


@dataclass
class SessionDescription:
    origin: Origin
    session_name: str = "-"
    connection: str | None = None  # session-level c= address
    connection_addrtype: str = "IP4"
    timing: str = "0 0"
    direction: str | None = None  # session-level a=sendrecv/...
    media: list[MediaDescription] = field(default_factory=list)
    attributes: list[str] = field(default_factory=list)  # other session-level a= lines, without "a="
    other_lines: list[str] = field(default_factory=list)  # other session-level lines as written
    version: int = 0

    def connection_for(self, m: MediaDescription) -> str | None:
        """The address media for `m` goes to (media-level c= wins over session-level)."""
        return m.connection if m.connection is not None else self.connection

    def direction_for(self, m: MediaDescription) -> str:
        """The direction the writer of this SDP declared for `m` (media > session > sendrecv); an RFC 2543 hold
        (c=0.0.0.0 with no direction) counts as sendonly."""
        direction = m.direction or self.direction or "sendrecv"
        if direction == "sendrecv" and self.connection_for(m) in HOLD_ADDRESSES:
            return "sendonly"
        return direction

    def audio(self) -> MediaDescription | None:
        """The first audio stream with a non-zero port."""
        for m in self.media:
            if m.media == "audio" and m.port != 0:
                return m
        return None

    def to_text(self) -> str:
        lines = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name or '-'}"]
        lines += [ln for ln in self.other_lines if ln[:2] in ("i=", "u=", "e=", "p=")]
        if self.connection is not None:
            lines.append(f"c=IN {self.connection_addrtype} {self.connection}")
        lines += [ln for ln in self.other_lines if ln[:2] == "b="]
        lines.append(f"t={self.timing}")
        lines += [ln for ln in self.other_lines if ln[:2] not in ("i=", "u=", "e=", "p=", "b=")]
        lines += [f"a={a}" for a in self.attributes]
        if self.direction is not None:
            lines.append(f"a={self.direction}")
        for m in self.media:
            lines += m.to_lines()
        return "\r\n".join(lines) + "\r\n"

    def __str__(self) -> str:
        return self.to_text()


@dataclass(frozen=True)
class NegotiatedMedia:
    """What the RTP session needs after an offer/answer: where to send, in which format, and which way."""

    codec: str  # "PCMU" | "PCMA"
    payload_type: int
    remote_address: str
    remote_port: int
    direction: str = "sendrecv"  # ours: do we send / receive
    dtmf_payload_type: int | None = None  # telephone-event PT to send with (None: peer has no RFC 4733)
    ptime: int = 20  # the packetisation the peer asked for (a=ptime), ms; we always send 20 ms

    @property
    def sending(self) -> bool:
        """Whether we may send RTP at all (direction, and a real address and port)."""
        return _SEND[self.direction] and self.remote_port != 0 and self.remote_address not in HOLD_ADDRESSES

    @property
    def receiving(self) -> bool:
        return _RECV[self.direction]

    @property
    def on_hold(self) -> bool:
        """The peer does not want our media (it put the call on hold, or it is inactive)."""
        return not self.sending


# -- parsing ------------------------------------------------------------------------------------------------------
def _int(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise SdpError(f"bad {what}: {value!r}") from None


def _connection(value: str) -> tuple[str, str]:
    parts = value.split()
    if len(parts) < 3 or parts[0] != "IN":
        raise SdpError(f"bad c= line: {value!r}")
    address = parts[2].split("/", 1)[0]  # drop a multicast TTL / count
    return parts[1], address


def parse(text: str | bytes) -> SessionDescription:
    """Parse an SDP body; tolerant of line ends, whitespace, unknown and out-of-order lines."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    origin: Origin | None = None
    sd = SessionDescription(origin=Origin())
    seen_version = False
    current: MediaDescription | None = None
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            (current.other_lines if current else sd.other_lines).append(line)  # junk, but keep it
            continue
        kind, value = line[0], line[2:].strip()
        if kind == "v":
            sd.version = _int(value, "v= line")
            seen_version = True
        elif kind == "o":
            parts = value.split()
            if len(parts) != 6:
                raise SdpError(f"bad o= line: {value!r}")
            origin = Origin(parts[0], parts[1], _int(parts[2], "o= session version") if parts[2].isdigit() else 0,
                            parts[3], parts[4], parts[5])
        elif kind == "s" and current is None:
            sd.session_name = value
        elif kind == "t" and current is None:
            sd.timing = value
        elif kind == "c":
            addrtype, address = _connection(value)
            if current is None:
                sd.connection, sd.connection_addrtype = address, addrtype
            else:
                current.connection, current.connection_addrtype = address, addrtype
        elif kind == "m":
            parts = value.split()
            if len(parts) < 3:
                raise SdpError(f"bad m= line: {value!r}")
            port_text, _, count = parts[1].partition("/")
            current = MediaDescription(media=parts[0], port=_int(port_text, "m= port"), proto=parts[2],
                                       formats=parts[3:], port_count=_int(count, "m= port count") if count else None)
            sd.media.append(current)
        elif kind == "a":
            _attribute(sd, current, value)
        else:
            (current.other_lines if current else sd.other_lines).append(line)
    if not seen_version:
        raise SdpError("not SDP: no v= line")
    if origin is None:
        raise SdpError("SDP has no o= line")
    sd.origin = origin
    return sd


def _attribute(sd: SessionDescription, m: MediaDescription | None, value: str) -> None:
    name, _, rest = value.partition(":")
    name = name.strip()
    if name in DIRECTIONS and not rest:
        if m is None:
            sd.direction = name
        else:
            m.direction = name
        return
    if m is None:
        sd.attributes.append(value)
        return
    if name == "rtpmap":
        pt_text, _, spec = rest.strip().partition(" ")
        bits = spec.strip().split("/")
        if pt_text.isdigit() and len(bits) >= 2 and bits[1].isdigit():
            channels = int(bits[2]) if len(bits) > 2 and bits[2].isdigit() else 1
            m.rtpmap[int(pt_text)] = RtpMap(bits[0], int(bits[1]), channels)
            return
    elif name == "fmtp":
        pt_text, _, params = rest.strip().partition(" ")
        if pt_text.isdigit():
            m.fmtp[int(pt_text)] = params.strip()
            return
    elif name in ("ptime", "maxptime"):
        try:
            setattr(m, name, int(float(rest.strip())))  # some peers write a=ptime:20.0
            return
        except ValueError:
            pass
    m.attributes.append(value)


# -- building -----------------------------------------------------------------------------------------------------
def _addrtype(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def new_session_id() -> str:
    """A fresh numeric o= session id (RFC 4566 suggests an NTP timestamp; any unique number works)."""
    return str(random.randrange(10**9, 2**62))


def build_offer(address: str, port: int, codecs: tuple[str, ...] = ("PCMU", "PCMA"), dtmf_pt: int | None = 101,
                ptime: int = 20, direction: str = "sendrecv", session_id: str | None = None,
                session_version: int = 1, username: str = "softswitch") -> str:
    """Our offer: one audio stream with `codecs` in preference order plus telephone-event (unless dtmf_pt is None)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    unknown = [c for c in codecs if c not in OUR_CODECS]
    if unknown or not codecs:
        raise ValueError(f"codecs must be a non-empty subset of {tuple(OUR_CODECS)}, got {codecs}")
    m = MediaDescription("audio", port, "RTP/AVP", [str(OUR_CODECS[c]) for c in codecs])
    for c in codecs:
        m.rtpmap[OUR_CODECS[c]] = RtpMap(c, 8000)
    if dtmf_pt is not None:
        if not 96 <= dtmf_pt <= 127:
            raise ValueError(f"telephone-event needs a dynamic payload type 96-127, got {dtmf_pt}")
        m.formats.append(str(dtmf_pt))
        m.rtpmap[dtmf_pt] = RtpMap(TELEPHONE_EVENT, 8000)
        m.fmtp[dtmf_pt] = "0-15"
    m.ptime = ptime
    m.direction = direction
    sd = SessionDescription(
        origin=Origin(username, session_id or new_session_id(), session_version, "IN", _addrtype(address), address),
        session_name="softswitch", connection=address, connection_addrtype=_addrtype(address), media=[m],
    )
    text = sd.to_text()
    _remember(text, sd)  # what parse(text) gives (tests/unit/test_sdp.py checks): the answer to it needs it
    return text


# Parsed SDP by text, for this module's own use: a call's offer is parsed for the 488 check, again to answer it (183
# and 200), and our own offer once more when its answer comes. The objects in it are shared and must not be changed
# (build_answer / negotiate_answer only read them; with_direction copies first); `parse()` always returns a new one.
_PARSED: dict[str, SessionDescription] = {}
# Each entry is ~12 objects the garbage collector walks on every full collection; calls being set up at one time
# (a few per 10 ms at hundreds of calls per second) need far fewer than this.
_PARSED_MAX = 64


def _remember(text: str, sd: SessionDescription) -> None:
    if len(_PARSED) >= _PARSED_MAX:
        del _PARSED[next(iter(_PARSED))]  # the oldest (dicts keep insertion order)
    _PARSED[text] = sd


def _as_sdp(sdp: str | bytes | SessionDescription) -> SessionDescription:
    if isinstance(sdp, SessionDescription):
        return sdp
    text = sdp.decode("utf-8", "replace") if isinstance(sdp, bytes) else sdp
    sd = _PARSED.get(text)
    if sd is None:
        sd = parse(text)
        _remember(text, sd)
    return sd


def _rejected(m: MediaDescription) -> MediaDescription:
    """An answer line refusing an offered stream (RFC 3264 §6: port 0, formats kept)."""
    return MediaDescription(m.media, 0, m.proto, list(m.formats) or ["0"])


def _describe(m: MediaDescription) -> str:
    names = []
    for pt in m.payload_types:
        rm = m.codec(pt)
        names.append(f"{rm.encoding}/{rm.clock_rate}" if rm else str(pt))
    return ", ".join(names) or "nothing"


def _pick_codec(m: MediaDescription, supported: tuple[str, ...]) -> tuple[str, int] | None:
    """The first format of `m` (in the writer's order) that is G.711 we support at 8 kHz mono."""
    wanted = {c.upper() for c in supported}
    for pt in m.payload_types:
        rm = m.codec(pt)
        if rm and rm.encoding.upper() in wanted and rm.clock_rate == 8000 and rm.channels == 1:
            return rm.encoding.upper(), pt
    return None


def build_answer(offer: str | bytes | SessionDescription, address: str, port: int,
                 supported: tuple[str, ...] = ("PCMU", "PCMA"), dtmf: bool = True, ptime: int = 20,
                 direction: str = "sendrecv", session_id: str | None = None, session_version: int = 1,
                 username: str = "softswitch") -> tuple[str, NegotiatedMedia]:
    """Answer `offer` (RFC 3264 §6): take the first audio stream that has a codec in `supported` (choosing the
    offer's first such codec), keep its telephone-event payload type, mirror its direction (intersected with the
    `direction` we want), and refuse every other stream with port 0. Raises SdpError if no audio is usable."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    sd = _as_sdp(offer)
    answer_media, negotiated = _answer_streams(sd, port, supported, dtmf, ptime, direction)
    answer = SessionDescription(
        origin=Origin(username, session_id or new_session_id(), session_version, "IN", _addrtype(address), address),
        session_name="softswitch", connection=address, connection_addrtype=_addrtype(address), media=answer_media,
        timing=sd.timing or "0 0",
    )
    return answer.to_text(), negotiated


def check_offer(offer: str | bytes | SessionDescription, supported: tuple[str, ...] = ("PCMU", "PCMA")) -> None:
    """Raise SdpError (with the reason build_answer would give) when `offer` has no audio we can answer; the
    check before a call is accepted (-> 488), without writing an answer."""
    _answer_streams(_as_sdp(offer), 9, supported, True, 20, "sendrecv")


def _answer_streams(sd: SessionDescription, port: int, supported: tuple[str, ...], dtmf: bool, ptime: int,
                    direction: str) -> tuple[list[MediaDescription], NegotiatedMedia]:
    answer_media: list[MediaDescription] = []
    negotiated: NegotiatedMedia | None = None
    reasons: list[str] = []
    for m in sd.media:
        if negotiated is not None or m.media != "audio" or m.port == 0:
            answer_media.append(_rejected(m))
            if m.media != "audio":
                reasons.append(f"{m.media} not supported")
            continue
        if m.proto.upper() not in ("RTP/AVP", "RTP/AVPF"):
            answer_media.append(_rejected(m))
            reasons.append(f"transport {m.proto} not supported (only RTP/AVP)")
            continue
        picked = _pick_codec(m, supported)
        if picked is None:
            answer_media.append(_rejected(m))
            reasons.append(f"no common codec: offered {_describe(m)}, we support {'/'.join(supported)}")
            continue
        codec, pt = picked
        remote = sd.connection_for(m)
        if remote is None:
            raise SdpError("offer has no c= line for its audio stream")
        offered_direction = sd.direction_for(m)
        ours = _combine(direction, mirror_direction(offered_direction))
        dtmf_pt = m.telephone_event() if dtmf else None
        a = MediaDescription("audio", port, "RTP/AVP", [str(pt)])
        a.rtpmap[pt] = RtpMap(codec, 8000)
        if dtmf_pt is not None:
            a.formats.append(str(dtmf_pt))
            a.rtpmap[dtmf_pt] = RtpMap(TELEPHONE_EVENT, 8000)
            a.fmtp[dtmf_pt] = m.fmtp.get(dtmf_pt, "0-15")
        a.ptime = ptime
        a.direction = ours
        answer_media.append(a)
        negotiated = NegotiatedMedia(codec=codec, payload_type=pt, remote_address=remote, remote_port=m.port,
                                     direction=ours, dtmf_payload_type=dtmf_pt, ptime=m.ptime or 20)
    if negotiated is None:
        detail = "; ".join(reasons) if reasons else "the offer has no audio stream"
        raise SdpError(f"no usable audio in the offer: {detail}")
    return answer_media, negotiated


def negotiate_answer(offer_we_sent: str | bytes | SessionDescription,
                     answer_received: str | bytes | SessionDescription) -> NegotiatedMedia:
    """What to do after the peer answered our offer: its codec choice (the first format of its answer that we
    offered and support), its telephone-event PT, its address/port and the resulting direction for us."""
    offer = _as_sdp(offer_we_sent)
    answer = _as_sdp(answer_received)
    if len(answer.media) != len(offer.media):
        raise SdpError(f"answer has {len(answer.media)} media lines for an offer of {len(offer.media)}")
    for index, m in enumerate(answer.media):
        ours = offer.media[index]
        if m.media != "audio" or m.port == 0 or ours.port == 0:
            continue
        offered = {c for c in (ours.codec(pt) for pt in ours.payload_types) if c}
        candidates = tuple(c.encoding.upper() for c in offered if c.encoding.upper() in OUR_CODECS)
        picked = _pick_codec(m, candidates)
        if picked is None:
            raise SdpError(f"answer accepted no codec we offered: it lists {_describe(m)}")
        codec, pt = picked
        remote = answer.connection_for(m)
        if remote is None:
            raise SdpError("answer has no c= line for its audio stream")
        their_direction = answer.direction_for(m)
        direction = _combine(ours.direction or offer.direction or "sendrecv", mirror_direction(their_direction))
        dtmf_pt = m.telephone_event() if ours.telephone_event() is not None else None
        return NegotiatedMedia(codec=codec, payload_type=pt, remote_address=remote, remote_port=m.port,
                               direction=direction, dtmf_payload_type=dtmf_pt, ptime=m.ptime or 20)
    raise SdpError("answer accepted no audio stream (every audio port is 0)")


def with_direction(sdp: str | bytes | SessionDescription, direction: str, bump_version: bool = True) -> str:
    """The same SDP with every stream's direction set (hold / resume re-offers); bumps the o= version."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    sd = _as_sdp(sdp)
    sd = replace(sd, origin=replace(sd.origin), media=[replace(m) for m in sd.media], direction=None)
    for m in sd.media:
        if m.port != 0:
            m.direction = direction
    if bump_version:
        sd.origin.session_version += 1
    return sd.to_text()
