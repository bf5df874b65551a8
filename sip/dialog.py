"""SIP dialogs (RFC 3261 §12): identity, CSeq spaces, route set and remote target; building in-dialog requests.

A `Dialog` is plain state plus the rules that change it: created from a UAC's 1xx/2xx or a UAS's INVITE, confirmed
by a 2xx, refreshed by target-refresh requests (re-INVITE, UPDATE), checked against out-of-order CSeqs.

What does not live here: sending, timers, SDP. The user agent (`sip.ua`) owns dialogs and decides what to send.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from enum import Enum

from .message import Headers, Request, Response
from .transaction import MAGIC_COOKIE
from .uri import NameAddr, SipUri


class DialogState(Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


def new_tag() -> str:
    return secrets.token_hex(6)


def new_branch() -> str:
    return MAGIC_COOKIE + secrets.token_hex(10)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(12)}@{host}"


@dataclass(slots=True)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str  # From (UAC) / To (UAS) value without the tag
    remote_uri: str
    local_seq: int
    remote_seq: int | None
    remote_target: str
    route_set: tuple[str, ...] = ()  # a tuple of strings: untracked by the garbage collector
    state: DialogState = DialogState.EARLY
    secure: bool = False

    @property
    def id(self) -> tuple[str, str, str]:
        """(Call-ID, local tag, remote tag): how incoming in-dialog requests find us."""
        return (self.call_id, self.local_tag, self.remote_tag)

    # -- creation -------------------------------------------------------------------------------------------------
    @classmethod
    def from_uac(cls, request: Request, response: Response) -> Dialog:
        """UAC side, from a 1xx (with a To tag) or 2xx to our INVITE (RFC 3261 §12.1.2)."""
        h = response.headers
        contact = h.get("Contact")
        target = str(NameAddr.parse(contact).uri) if contact else request.uri
        routes = tuple(reversed(h.get_all("Record-Route")))
        state = DialogState.CONFIRMED if 200 <= response.status < 300 else DialogState.EARLY
        return cls(
            call_id=request.call_id,
            local_tag=request.from_tag,
            remote_tag=response.to_tag,
            local_uri=_without_tag(request.headers.get("From") or ""),
            remote_uri=_without_tag(h.get("To") or ""),
            local_seq=request.cseq[0],
            remote_seq=None,
            remote_target=target,
            route_set=routes,
            state=state,
            secure=request.uri.lower().startswith("sips:"),
        )

    @classmethod
    def from_uas(cls, request: Request, local_tag: str) -> Dialog:
        """UAS side, from the INVITE we answer (RFC 3261 §12.1.1)."""
        h = request.headers
        contact = h.get("Contact")
        target = str(NameAddr.parse(contact).uri) if contact else _uri_text(h.get("From") or "")
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=request.from_tag,
            local_uri=_without_tag(h.get("To") or ""),
            remote_uri=_without_tag(h.get("From") or ""),
            local_seq=0,
            remote_seq=request.cseq[0],
            remote_target=target,
            route_set=tuple(h.get_all("Record-Route")),
            secure=request.uri.lower().startswith("sips:"),
        )

    # -- rules for what arrives -----------------------------------------------------------------------------------
    def check_request(self, request: Request) -> int | None:
        """Apply an in-dialog request's CSeq and target refresh; return an error status to answer, else None.

        A CSeq lower than the last one seen is answered 500 (RFC 3261 §12.2.2). ACK and CANCEL reuse the
        INVITE's number and are not checked.
        """
        if request.method in ("ACK", "CANCEL"):
            return None
        num = request.cseq[0]
        if self.remote_seq is not None and num <= self.remote_seq:
            return 500
        self.remote_seq = num
        if request.method in ("INVITE", "UPDATE"):
            contact = request.headers.get("Contact")
            if contact:
                self.remote_target = str(NameAddr.parse(contact).uri)
        return None

    def confirm(self, response: Response | None = None) -> None:
        """A 2xx confirms the dialog; a 2xx to a re-INVITE may refresh the remote target."""
        self.state = DialogState.CONFIRMED
        if response is not None:
            contact = response.headers.get("Contact")
            if contact:
                self.remote_target = str(NameAddr.parse(contact).uri)

    # -- building what we send ------------------------------------------------------------------------------------
    def next_hop(self) -> str:
        """The URI the next request is physically sent to: the first route, else the remote target."""
        if self.route_set:
            return str(NameAddr.parse(self.route_set[0]).uri)
        return self.remote_target

    def request(self, method: str, *, via: str, contact: str | None = None, headers: Headers | None = None,
                body: bytes = b"", content_type: str | None = None, cseq: int | None = None) -> Request:
        """An in-dialog request with the dialog's tags, routes and the next CSeq (RFC 3261 §12.2.1.1).

        `via` is the top Via without its branch; a fresh branch is added. `cseq` forces the number (ACK).
        """
        if cseq is None:
            self.local_seq += 1
            cseq = self.local_seq
        uri = self.remote_target
        routes = list(self.route_set)
        if routes and not _is_loose(routes[0]):
            # Strict routing: the first route becomes the Request-URI and the target goes last.
            uri = str(NameAddr.parse(routes[0]).uri)
            routes = routes[1:] + [f"<{self.remote_target}>"]
        items: list[tuple[str, str]] = [("Via", f"{via};branch={new_branch()}"), ("Max-Forwards", "70")]
        items += [("Route", r) for r in routes]
        items += [
            ("From", f"{self.local_uri};tag={self.local_tag}"),
            ("To", f"{self.remote_uri};tag={self.remote_tag}"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
        if contact is not None:
            items.append(("Contact", contact))
        out = Headers._trusted(items)
        if headers is not None:
            for name, value in headers:
                out.add(name, value)
        if content_type is not None and body:
            out.add("Content-Type", content_type)
        return Request(method, uri, out, body)


def _is_loose(route: str) -> bool:
    try:
        return "lr" in NameAddr.parse(route).uri.params
    except ValueError:
        return True


def _without_tag(value: str) -> str:
    """A From/To value with its ;tag= parameter removed, everything else kept as received."""
    gt = value.rfind(">")
    head, tail = (value[: gt + 1], value[gt + 1:]) if gt >= 0 else ("", value)
    if gt < 0:
        uri_part, _, params = value.partition(";")
        head, tail = uri_part, (";" + params if params else "")
    kept = [p for p in tail.split(";") if p.strip() and p.strip().split("=")[0].strip().lower() != "tag"]
    return head + "".join(f";{p.strip()}" for p in kept)


def _uri_text(value: str) -> str:
    try:
        return str(NameAddr.parse(value).uri)
    except ValueError:
        return value


def uri_host_port(uri: str) -> tuple[str, int | None, str]:
    """(host, port, transport) a request to `uri` is sent to (maddr honoured)."""
    parsed = SipUri.parse(uri)
    host = parsed.params.get("maddr") or parsed.host
    return host, parsed.port, parsed.transport
