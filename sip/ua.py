"""The user agent: the asyncio edge that ties transports, the sans-IO transaction layer and legs together.

It parses what arrives (answering malformed requests with 400 and the reason, dropping and counting the rest),
applies the UA-core checks of RFC 3261 §8.2 (Max-Forwards 483, URI scheme 416, Require 420, Content-Type 415,
481 for unknown dialogs), answers OPTIONS, challenges callers that must authenticate (407), turns INVITEs into
`InboundLeg`s and places `OutboundLeg`s. It owns the one timer that drives the transaction layer. When a leg ends,
the UA lets go of it: only a record of atomic values stays in the dialog table for 64*T1, answering late in-dialog
requests and 2xx retransmissions as the ended leg would have (`EndedDialog`).

What does not live here: protocol state machines (sip.transaction, sip.dialog), message syntax (sip.message),
sockets (sip.transport), call logic (engine/).
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import socket
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import structlog

from .auth import Credentials, DigestServer
from .dialog import Dialog, new_branch, new_call_id, new_tag
from .events import (
    AckTimedOut,
    Address,
    InviteCancelled,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TransactionTimedOut,
    TuEvent,
)
from .leg import ALLOW, InboundLeg, Leg, LegState, OutboundLeg
from .message import Headers, Request, Response, SipParseError, parse_message
from .transaction import (
    ClientTransaction,
    ServerTransaction,
    TimerConfig,
    TransactionLayer,
    make_response,
    response_address,
)
from .transport import TransportSet
from .uri import NameAddr, SipUri

log = structlog.get_logger("sip.ua")

KNOWN_UNSUPPORTED = frozenset({"SUBSCRIBE", "NOTIFY", "MESSAGE", "REFER", "PUBLISH", "PRACK", "REGISTER"})
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset()
# Methods counted by name in ``stats``; any other (a peer may send any token) is counted as OTHER, so a flood of
# invented methods cannot grow the counters (and the /metrics labels made from them) without bound.
COUNTED_METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE"}) | KNOWN_UNSUPPORTED


@dataclass(slots=True)
class InboundAuth:
    """Digest authentication of callers (RFC 3261 §22.3 with 407, as a proxy-style softswitch does).

    `required(request)` says whether this INVITE must authenticate (e.g. From user is a configured SIP user);
    `password_for(username)` returns the password or None.
    """

    server: DigestServer
    password_for: Callable[[str], str | None]
    required: Callable[[Request], bool]


RequestHook = Callable[[Request, ServerTransaction, Address], bool]

DialogId = tuple[str, str, str]
# What an ended leg leaves in the dialog table for 64*T1 instead of itself (see _linger): the last remote CSeq
# seen (None: none yet), the ACK sent for the 2xx (outbound legs; None for inbound) and where it went as (transport,
# host, port). A plain tuple of atomic values, so the collector untracks it: at 100 calls/s the 3200 ended dialogs
# of the last 32 s cost a full collection nothing, where their legs (event queue, logger, dialog, INVITE...) were
# ~20 tracked objects each.
EndedDialog = tuple[int | None, bytes | None, tuple[str, str, int] | None]


class UserAgent:
    def __init__(self, *, public_address: str = "127.0.0.1", timers: TimerConfig | None = None,
                 user_agent: str = "softswitch/0.1", on_invite: Callable[[InboundLeg], None] | None = None,
                 inbound_auth: InboundAuth | None = None, on_request: RequestHook | None = None) -> None:
        self.public_address = public_address
        self.user_agent = user_agent
        self.on_invite = on_invite
        self.on_request = on_request
        self.inbound_auth = inbound_auth
        # Admission control: consulted for each new INVITE before the 100 Trying; a number means "503 Service
        # Unavailable with Retry-After: that many seconds", None means go ahead.
        self.admit: Callable[[Request], int | None] | None = None
        # None while in service; a Retry-After (seconds) while the node takes no new calls (draining): OPTIONS then
        # gets 503, so a load balancer probing with OPTIONS (Kamailio's dispatcher) stops sending calls here.
        self.out_of_service: Callable[[], int | None] | None = None
        # What OPTIONS and 405 advertise outside dialogs: ALLOW plus the methods ``on_request`` serves (REGISTER when
        # the engine's registrar is on).
        self.allow = ALLOW
        self.layer = TransactionLayer(timers)
        self.transports = TransportSet(self._on_bytes)
        self.stats: Counter[str] = Counter()
        self._dialogs: dict[DialogId, Leg | EndedDialog] = {}
        self._outbound: dict[tuple[str, str], OutboundLeg] = {}
        self._legs: set[Leg] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._addresses: dict[str, tuple[str, int]] = {}
        # Ended dialogs whose records stay in _dialogs 64*T1 (see _linger): (forget at, dialog id), oldest first.
        # One queue driven by the UA's timer rather than a loop timer (TimerHandle, context, closure) per dialog.
        self._lingering: deque[tuple[float, DialogId]] = deque()
        # (Call-ID, our From tag) of outbound calls whose dialog lingers -> that dialog's id: tells a late fork's 2xx
        # (ACKed and BYEd) from a stray one (counted)
        self._ended_calls: dict[tuple[str, str], DialogId] = {}

    # -- lifecycle --------------------------------------------------------------------------------------------------
    async def start(self, listen: list[tuple[str, str, int]]) -> dict[str, tuple[str, int]]:
        """Open listeners, e.g. [("udp", "127.0.0.1", 5080), ("tcp", "127.0.0.1", 5080)]; returns bound addresses."""
        self._loop = asyncio.get_running_loop()
        for transport, host, port in listen:
            bound = await self.transports.listen(transport, host, port)
            self._addresses.setdefault(transport, bound)
            log.info("sip_listening", transport=transport, host=bound[0], port=bound[1])
        return dict(self._addresses)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        await self.transports.close()

    @property
    def legs(self) -> set[Leg]:
        return set(self._legs)

    def now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        assert self._loop is not None

        def run() -> None:
            callback()
            self.flush()

        return self._loop.call_later(delay, run)

    # -- addresses we put in messages ---------------------------------------------------------------------------------
    def port(self, transport: str) -> int:
        bound = self._addresses.get(transport) or next(iter(self._addresses.values()))
        return bound[1]

    def via(self, transport: str) -> str:
        """Top Via without branch (the branch is added per request)."""
        t = transport if transport in self._addresses else next(iter(self._addresses))
        return f"SIP/2.0/{t.upper()} {self.public_address}:{self.port(t)};rport"

    def contact(self, transport: str, user: str = "softswitch") -> str:
        t = transport if transport in self._addresses else next(iter(self._addresses))
        suffix = ";transport=tcp" if t == "tcp" else ""
        return f"<sip:{user}@{self.public_address}:{self.port(t)}{suffix}>"

    def address_for(self, uri: str, default: Address | None = None) -> Address:
        """Where a request to `uri` physically goes: host (maddr), port (5060), transport param; IP literals only,
        names through the system resolver (cached by the OS)."""
        try:
            parsed = SipUri.parse(uri)
        except ValueError:
            if default is not None:
                return default
            raise
        host = parsed.params.get("maddr") or parsed.host
        transport = parsed.transport if parsed.transport in ("udp", "tcp") else "udp"
        if not _is_ip_literal(host):
            host = socket.gethostbyname(host)
        return Address(transport, host, parsed.port or 5060)

    # -- sending ------------------------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Put everything the transaction layer wants sent on the wire and re-arm its timer."""
        for wire, peer in self.layer.datagrams_to_send():
            self.transports.send(wire, peer)
        self._rearm()

    def _rearm(self) -> None:
        """Arm the one timer for the earliest of the transaction layer's deadlines and the oldest lingering dialog."""
        deadline = self.layer.next_deadline()
        if self._lingering:
            at = self._lingering[0][0]
            if deadline is None or at < deadline:
                deadline = at
        if deadline is not None and (self._timer_at is None or deadline < self._timer_at):
            if self._timer is not None:
                self._timer.cancel()
            assert self._loop is not None
            self._timer_at = deadline
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        now = self.now()
        self._dispatch(self.layer.handle_timers(now))
        lingering = self._lingering
        while lingering and lingering[0][0] <= now:
            key = lingering.popleft()[1]
            if type(self._dialogs.get(key)) is tuple:
                del self._dialogs[key]
            if self._ended_calls.get((key[0], key[1])) == key:
                del self._ended_calls[(key[0], key[1])]
        self.flush()

    def send_request(self, request: Request, peer: Address, owner: object) -> ClientTransaction:
        tx = self.layer.send_request(request, peer, self.now())
        tx.owner = owner
        self.stats[f"tx_request_{request.method}"] += 1
        self.flush()
        return tx

    def send_stateless(self, message: Request | Response, peer: Address) -> bytes:
        wire = self.layer.send_stateless(message, peer)
        self.flush()
        return wire

    def send_response(self, tx: ServerTransaction, response: Response) -> None:
        self.layer.send_response(tx, response, self.now())
        self.stats[f"tx_response_{response.status}"] += 1
        self.flush()

    def respond(self, tx: ServerTransaction, request: Request, status: int, reason: str = "", *,
                headers: Headers | None = None, body: bytes = b"", to_tag: str | None = None) -> None:
        if to_tag is None and not request.to_tag and status > 100:
            to_tag = new_tag()
        response = make_response(request, status, reason, to_tag=to_tag, headers=headers, body=body)
        response.headers.add("Server", self.user_agent)
        self.send_response(tx, response)

    def send_in_dialog(self, request: Request, dialog: Dialog, owner: Leg) -> ClientTransaction:
        peer = self.address_for(dialog.next_hop(), default=owner.peer)
        return self.send_request(request, peer, owner)

    # -- dialogs and legs -----------------------------------------------------------------------------------------
    def register_dialog(self, dialog: Dialog, leg: Leg) -> None:
        self._dialogs[dialog.id] = leg
        if leg.state is LegState.ENDED:  # a 2xx that crossed the leg's CANCEL, ACKed (then BYE): only the record
            self._linger(leg)

    def _leg_ended(self, leg: Leg) -> None:
        """`leg` ended, or (ended before the ACK to its 2xx) has sent the BYE it held back: let go of it."""
        self._legs.discard(leg)
        if isinstance(leg, OutboundLeg):
            self._outbound.pop((leg.call_id, leg.local_tag), None)
        if not leg._bye_after_ack:  # else the leg stays in _dialogs until the ACK or its timeout (Leg._on_ack)
            self._linger(leg)

    def _linger(self, leg: Leg) -> None:
        """Replace the leg in the dialog table by the record of its ended dialog, kept 64*T1: a BYE that crosses
        ours still gets its 200 (not 481), a retransmitted 2xx its ACK again (_on_ended_dialog_request, _on_stray).
        Nothing in the UA references the leg afterwards (its transactions let go of it when they only absorb
        retransmissions), so it goes as soon as the engine drops it."""
        dialog = leg.dialog
        if dialog is None:
            return
        key = dialog.id
        if self._dialogs.get(key) is not leg:
            return
        peer = leg._ack_peer
        hop = (peer.transport, peer.host, peer.port) if peer is not None else None
        self._dialogs[key] = (dialog.remote_seq, leg._ack_wire, hop)
        if isinstance(leg, OutboundLeg):  # a 2xx of another fork of its INVITE may still come (_on_stray)
            self._ended_calls[(key[0], key[1])] = key
        if self._loop is not None:
            self._lingering.append((self.now() + 64 * self.layer.config.t1, key))
            self._rearm()

    async def invite(self, target: str, *, from_uri: str, to_uri: str | None = None, sdp: str | None = None,
                     headers: list[tuple[str, str]] | None = None, credentials: Credentials | None = None,
                     proxy: str | None = None, display_name: str | None = None) -> OutboundLeg:
        """Place a call to `target` (a SIP URI). `proxy` (a SIP URI) is where the INVITE physically goes when it is
        not the target's host (an outbound trunk). Returns at once; watch `leg.events`."""
        loop = asyncio.get_running_loop()
        hop_uri = proxy or target
        parsed_hop = SipUri.parse(hop_uri)
        host = parsed_hop.params.get("maddr") or parsed_hop.host
        if not _is_ip_literal(host):
            infos = await loop.getaddrinfo(host, None, family=socket.AF_INET)
            host = str(infos[0][4][0])
        transport = parsed_hop.transport if parsed_hop.transport in ("udp", "tcp") else "udp"
        peer = Address(transport, host, parsed_hop.port or 5060)
        tag = new_tag()
        display = f'"{display_name}" ' if display_name else ""
        items: list[tuple[str, str]] = [
            ("Via", f"{self.via(transport)};branch={new_branch()}"),
            ("Max-Forwards", "70"),
            ("From", f"{display}<{from_uri}>;tag={tag}"),
            ("To", f"<{to_uri or target}>"),
            ("Call-ID", new_call_id(self.public_address)),
            ("CSeq", f"{secrets.randbelow(10000) + 1} INVITE"),
            ("Contact", self.contact(transport)),
            ("Allow", ALLOW),
            ("User-Agent", self.user_agent),
        ]
        for name, value in headers or []:
            items.append((name, value))
        body = b""
        if sdp:
            items.append(("Content-Type", "application/sdp"))
            body = sdp.encode()
        invite = Request("INVITE", target, Headers(items), body)
        leg = OutboundLeg(self, invite, peer, credentials)
        self._legs.add(leg)
        self._outbound[(leg.call_id, tag)] = leg
        leg.start()
        return leg

    # -- receiving ----------------------------------------------------------------------------------------------------
    def _on_bytes(self, data: bytes, source: Address) -> None:
        try:
            message = parse_message(data, stream=source.reliable)
        except SipParseError as exc:
            self._malformed(exc, source)
            return
        if isinstance(message, Request):
            method = message.method
            self.stats[f"rx_request_{method if method in COUNTED_METHODS else 'OTHER'}"] += 1
            if source.transport == "udp":
                _stamp_received(message, source)
        else:
            self.stats[f"rx_response_{message.status}"] += 1
        self._dispatch(self.layer.receive(message, source, self.now()))
        self.flush()

    def _malformed(self, exc: SipParseError, source: Address) -> None:
        request = exc.request
        h = request.headers if request is not None else None
        answerable = (
            request is not None and h is not None and request.method != "ACK"
            and all(h.get(n) for n in ("Via", "From", "To", "Call-ID", "CSeq"))
        )
        if not answerable or request is None:
            self.stats["malformed_dropped"] += 1
            log.info("sip_malformed_dropped", source=str(source), reason=exc.reason)
            return
        self.stats["malformed_answered"] += 1
        log.info("sip_malformed_answered", source=str(source), reason=exc.reason, status=exc.status)
        reason = "Bad Request - " + exc.reason.replace("\r", " ").replace("\n", " ")[:100]
        if exc.status != 400:
            reason = ""
        response = make_response(request, exc.status, reason, to_tag=None if request.to_tag else new_tag())
        response.headers.add("Server", self.user_agent)
        self.send_stateless(response, response_address(request, source))

    def _dispatch(self, events: list[TuEvent]) -> None:
        for event in events:
            try:
                self._handle_event(event)
            except Exception:  # one call's failure never touches another
                self.stats["tu_errors"] += 1
                log.exception("sip_event_error", event=type(event).__name__)

    def _handle_event(self, event: TuEvent) -> None:
        if isinstance(event, RequestReceived):
            if event.tx is None:
                self._on_ack(event.request)
            else:
                self._on_request(event.request, event.tx, event.source)
        elif isinstance(event, ResponseReceived):
            owner = event.owner
            if owner is not None:
                owner._on_response(event.response, event.tx)
            elif event.response.cseq[1] == "INVITE":  # a 2xx retransmission in Accepted: found by its dialog
                self._on_stray(event.response, event.tx.peer)
        elif isinstance(event, StrayResponse):
            self._on_stray(event.response, event.source)
        elif isinstance(event, TransactionTimedOut):
            owner = event.tx.owner
            if owner is not None:
                owner._on_timeout(event.tx)
        elif isinstance(event, InviteCancelled):
            owner = event.owner
            if isinstance(owner, InboundLeg):
                owner._on_cancelled()
        elif isinstance(event, AckTimedOut):
            entry = self._dialogs.get((event.call_id, event.response.to_tag, event.response.from_tag))
            if isinstance(entry, Leg):
                entry._on_ack_timeout()
            elif entry is not None:  # the call ended meanwhile with a BYE either way: nothing left to send
                log.warning("ack_timeout", call_id=event.call_id)

    def _on_ack(self, ack: Request) -> None:
        entry = self._dialogs.get((ack.call_id, ack.to_tag, ack.from_tag))
        if isinstance(entry, Leg):
            entry._on_ack(ack)
        elif entry is None:
            self.stats["ack_unmatched"] += 1
        # else the ACK to the 2xx of a dialog that has ended since: nothing to do

    def _on_stray(self, response: Response, source: Address) -> None:
        if response.cseq[1] == "INVITE" and 200 <= response.status < 300:
            leg = self._outbound.get((response.call_id, response.from_tag))
            if leg is not None:
                leg._on_stray_2xx(response)
                return
            entry = self._dialogs.get((response.call_id, response.from_tag, response.to_tag))
            if isinstance(entry, OutboundLeg):
                entry._on_stray_2xx(response)
                return
            if isinstance(entry, tuple) and entry[1] is not None and entry[2] is not None:
                # A 2xx retransmitted after the call ended (also after our BYE): the same ACK again, nothing more.
                self.layer.resend(entry[1], Address(*entry[2]))
                return
            if entry is None and (response.call_id, response.from_tag) in self._ended_calls:
                try:
                    self._ack_and_bye_late_fork(response, source)
                    return
                except ValueError:  # its To or Contact cannot be parsed: nothing to build an ACK from
                    pass
        self.stats["stray_responses"] += 1

    def _ack_and_bye_late_fork(self, response: Response, source: Address) -> None:
        """A 2xx from another branch of one of our INVITEs (a forking proxy) after its call ended: ACK it, then BYE
        it (RFC 3261 §13.2.2.4), built from the response alone since the leg is gone."""
        h = response.headers
        to = h.get("To") or ""
        invite = Request("INVITE", str(NameAddr.parse(to).uri), Headers([
            ("From", h.get("From") or ""), ("To", to), ("Call-ID", response.call_id),
            ("CSeq", f"{response.cseq[0]} INVITE"),
        ]))
        fork = Dialog.from_uac(invite, response)
        hop = self.address_for(fork.next_hop(), default=source)
        self.send_stateless(fork.request("ACK", via=self.via(hop.transport), cseq=response.cseq[0]), hop)
        self.send_request(fork.request("BYE", via=self.via(hop.transport)), hop, None)
        log.info("late_fork_ended", call_id=response.call_id, to_tag=response.to_tag)

    def _on_request(self, request: Request, tx: ServerTransaction, source: Address) -> None:
        method = request.method
        mf = request.headers.get("Max-Forwards")
        if mf is not None and mf.strip() == "0":
            self.respond(tx, request, 483)
            return
        scheme = request.uri.partition(":")[0].lower()
        if scheme not in ("sip", "sips", "tel"):
            self.respond(tx, request, 416)
            return
        if method != "CANCEL":
            required = [
                t.strip() for v in request.headers.get_all("Require") for t in v.split(",") if t.strip()
            ]
            unsupported = [t for t in required if t.lower() not in SUPPORTED_EXTENSIONS]
            if unsupported:
                self.respond(tx, request, 420, headers=Headers([("Unsupported", ", ".join(unsupported))]))
                return
        if request.to_tag:
            key = (request.call_id, request.to_tag, request.from_tag)
            entry = self._dialogs.get(key)
            if entry is None:
                self.respond(tx, request, 481)
            elif isinstance(entry, tuple):
                self._on_ended_dialog_request(key, entry, request, tx)
            else:
                entry._on_request(request, tx, source)
            return
        if self.on_request is not None and self.on_request(request, tx, source):
            return
        if method == "INVITE":
            self._on_invite(request, tx, source)
        elif method == "OPTIONS":
            retry_after = self.out_of_service() if self.out_of_service is not None else None
            if retry_after is not None:
                self.respond(tx, request, 503, headers=Headers([("Retry-After", str(retry_after))]))
                return
            self.respond(tx, request, 200, headers=Headers(
                [("Allow", self.allow), ("Accept", "application/sdp"), ("Accept-Language", "en")]
            ))
        elif method in ("BYE", "INFO", "UPDATE"):
            self.respond(tx, request, 481)
        elif method in KNOWN_UNSUPPORTED:
            self.respond(tx, request, 405, headers=Headers([("Allow", self.allow)]))
        else:
            self.respond(tx, request, 501)

    def _on_ended_dialog_request(self, key: DialogId, record: EndedDialog, request: Request,
                                 tx: ServerTransaction) -> None:
        """What an ended leg answered (Leg._on_request once ended), from its dialog's record: 500 to an out-of-order
        CSeq; 200 to a BYE (one that crossed ours), an INFO or an OPTIONS; 481 to a re-INVITE or UPDATE; 405 to
        any other method."""
        remote_seq, ack_wire, hop = record
        num = request.cseq[0]
        if remote_seq is not None and num <= remote_seq:
            self.respond(tx, request, 500, "CSeq out of order")
            return
        self._dialogs[key] = (num, ack_wire, hop)
        method = request.method
        if method in ("BYE", "INFO"):
            self.respond(tx, request, 200)
        elif method in ("INVITE", "UPDATE"):
            self.respond(tx, request, 481)
        elif method == "OPTIONS":
            self.respond(tx, request, 200, headers=Headers([("Allow", ALLOW), ("Accept", "application/sdp")]))
        else:
            self.respond(tx, request, 405, headers=Headers([("Allow", ALLOW)]))

    def _on_invite(self, request: Request, tx: ServerTransaction, source: Address) -> None:
        if request.body:
            ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype != "application/sdp":
                self.respond(tx, request, 415, headers=Headers([("Accept", "application/sdp")]))
                return
        try:
            NameAddr.parse(request.headers.get("From") or "")
            NameAddr.parse(request.headers.get("To") or "")
            contact = request.headers.get("Contact")
            if contact:  # the dialog's remote target (Dialog.from_uas): refused here, not when we first answer
                NameAddr.parse(contact)
        except ValueError as exc:
            self.respond(tx, request, 400, f"Bad Request - {exc}"[:120])
            return
        authenticated: str | None = None
        auth = self.inbound_auth
        if auth is not None and auth.required(request):
            verdict = auth.server.verify(request.headers.get("Proxy-Authorization"), "INVITE", request.uri,
                                         auth.password_for, self.now())
            if not verdict.ok:
                log.info("inbound_auth_challenge", call_id=request.call_id, reason=verdict.reason)
                self.stats[f"auth_{verdict.reason}"] += 1
                challenges = auth.server.challenges(self.now(), stale=verdict.stale)
                headers = Headers([("Proxy-Authenticate", c.to_header()) for c in challenges])
                self.respond(tx, request, 407, headers=headers)
                return
            authenticated = verdict.username
        if self.admit is not None:
            retry_after = self.admit(request)
            if retry_after is not None:
                self.respond(tx, request, 503, headers=Headers([("Retry-After", str(max(0, int(retry_after))))]))
                return
        self.respond(tx, request, 100, to_tag="")
        if self.on_invite is None:
            self.respond(tx, request, 480, "No application")
            return
        leg = InboundLeg(self, request, tx, response_address(request, source), new_tag(), authenticated)
        self._legs.add(leg)
        leg.log.info("invite_received", uri=request.uri, source=str(source), authenticated_user=authenticated)
        self.on_invite(leg)


@lru_cache(maxsize=1024)
def _is_ip_literal(host: str) -> bool:
    """True for an IPv4/IPv6 literal (cached: Via, Contact and route hosts repeat from call to call)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _stamp_received(request: Request, source: Address) -> None:
    """RFC 3261 §18.2.1 / RFC 3581: note the real source in the top Via (received, rport value)."""
    via = request.top_via
    params = via.partition(";")[2]
    names = [p.strip().partition("=")[0].lower() for p in params.split(";") if p.strip()]
    if "rport" not in names:
        sent_by_host = via.partition(" ")[2].partition(";")[0].strip().rpartition(":")[0] or via
        if source.host in sent_by_host:
            return
        request.headers.replace_first("Via", f"{via};received={source.host}")
        return
    pieces = []
    for p in params.split(";"):
        name = p.strip().partition("=")[0].lower()
        if name == "rport":
            pieces.append(f"rport={source.port}")
        elif name != "received" and p.strip():
            pieces.append(p.strip())
    pieces.append(f"received={source.host}")
    request.headers.replace_first("Via", via.partition(";")[0] + ";" + ";".join(pieces))
