"""`Leg`: the engine's whole view of one SIP call leg (design.md). Verbs never touch SIP messages.

An inbound leg is created by the user agent from an INVITE and is driven with `ring()`, `early_media(sdp)`,
`answer(sdp)`, `reject(status)` and `hangup()`. An outbound leg is created by `UserAgent.invite(...)`, answers
401/407 challenges itself when it has credentials, and is ended with `hangup()` (CANCEL before answer, BYE after).
Both report what happens as `LegEvent`s on `events` (an asyncio queue): `Ringing`, `EarlyMedia`, `Answered`,
`Dtmf`, `Info`, `Reoffer`, `Ended` (always last, always exactly once).

What does not live here: parsing, transaction timers, sockets (sip.message, sip.transaction, sip.transport), and
anything about media beyond carrying SDP text.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

import structlog

from . import sdp_direction
from .auth import (
    AuthError,
    Credentials,
    authorization_header_name,
    build_authorization,
    challenge_header_name,
    pick_challenge,
)
from .dialog import Dialog, DialogState, new_branch
from .events import Address
from .message import Headers, Request, Response
from .transaction import ClientTransaction, ServerTransaction, make_response

if TYPE_CHECKING:
    from .ua import UserAgent

_leg_log = structlog.get_logger("sip.leg")


class LegState(Enum):
    CALLING = "calling"  # outbound: INVITE sent, nothing back yet; inbound: INVITE received
    RINGING = "ringing"  # a provisional response was sent/received
    EARLY = "early"  # early media (183 with SDP)
    ANSWERED = "answered"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class EndCause:
    """Why a leg ended, in SIP terms; the engine maps it to Plivo/Q.850 causes (engine/causes.py).

    kind: 'bye' (normal), 'rejected' (final 3xx-6xx, or our reject), 'cancelled', 'timeout' (no final response),
    'auth_failed' (challenge answered, credentials refused), 'auth_timeout' (no final response to the authenticated
    retry), 'ack_timeout' (our 2xx never ACKed), 'transport_error', 'shutdown'.
    by: 'local' or 'remote'.
    """

    kind: str
    status: int = 0
    reason: str = ""
    by: str = "remote"


@dataclass(frozen=True, slots=True)
class Ringing:
    status: int
    sdp: str | None = None


@dataclass(frozen=True, slots=True)
class EarlyMedia:
    sdp: str


@dataclass(frozen=True, slots=True)
class Answered:
    sdp: str | None


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str
    duration_ms: int = 0


@dataclass(frozen=True, slots=True)
class Info:
    content_type: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Reoffer:
    """The peer sent a re-INVITE/UPDATE offer (hold/unhold, codec change); `answer` is what we replied."""

    offer: str
    answer: str
    on_hold: bool


@dataclass(frozen=True, slots=True)
class Ended:
    cause: EndCause


LegEvent = Ringing | EarlyMedia | Answered | Dtmf | Info | Reoffer | Ended

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE"


class Leg:
    """State shared by inbound and outbound legs."""

    direction = ""

    def __init__(self, ua: UserAgent, invite: Request, peer: Address) -> None:
        self.ua = ua
        self.invite = invite
        self.peer = peer
        self.call_id = invite.call_id
        self.state = LegState.CALLING
        self.dialog: Dialog | None = None
        self.local_sdp: str | None = None
        self.remote_sdp: str | None = None
        self.end_cause: EndCause | None = None
        # `events` is made on first use: a leg whose owner takes its events through forward_events() never needs
        # the queue (and its three deques and an Event), which would sit in the collector's heap all call long.
        self._events: asyncio.Queue[LegEvent] | None = None
        self._sink: Callable[[LegEvent], None] | None = None  # forward_events()
        # `ended` and `acked` are asyncio Events made on first use: most callers never wait on them, and two Events
        # (and their waiter deques) per leg would sit in the collector's heap for as long as anyone keeps the leg.
        self._ended_event: asyncio.Event | None = None
        self._acked = False
        self._acked_event: asyncio.Event | None = None
        self._bye_after_ack = False  # hangup() came before the ACK for our 2xx: BYE when it arrives
        # Outbound: the ACK sent for the 2xx and where it went; what a retransmitted 2xx gets again, also from the
        # record the UA keeps once the leg has ended (UserAgent._linger).
        self._ack_wire: bytes | None = None
        self._ack_peer: Address | None = None
        # Answers re-offers (hold/unhold, codec change) when set, e.g. by the media session; returns our SDP or
        # raises ValueError (-> 488). Unset: the direction is mirrored into our last SDP (sip.sdp_direction).
        self.offer_handler: Callable[[str], str] | None = None
        self.log: Any = _leg_log.bind(call_id=self.call_id, direction=self.direction)

    @property
    def ended(self) -> asyncio.Event:
        """Set once the leg has ended (after `Ended` was queued on `events`)."""
        if self._ended_event is None:
            self._ended_event = asyncio.Event()
            if self.state is LegState.ENDED and self.end_cause is not None:
                self._ended_event.set()
        return self._ended_event

    @property
    def acked(self) -> asyncio.Event:
        """Set once the ACK for the 2xx is in (inbound: received; outbound: sent)."""
        if self._acked_event is None:
            self._acked_event = asyncio.Event()
            if self._acked:
                self._acked_event.set()
        return self._acked_event

    def _set_acked(self) -> None:
        self._acked = True
        if self._acked_event is not None:
            self._acked_event.set()

    @property
    def headers(self) -> Headers:
        """Headers of the initial INVITE (custom X- headers, From, To...)."""
        return self.invite.headers

    @property
    def answered(self) -> bool:
        return self.state is LegState.ANSWERED

    @property
    def events(self) -> asyncio.Queue[LegEvent]:
        """What happened to the leg, in order (unless an owner takes them with forward_events)."""
        if self._events is None:
            self._events = asyncio.Queue()
        return self._events

    async def next_event(self, timeout: float | None = None) -> LegEvent:
        return await asyncio.wait_for(self.events.get(), timeout)

    def forward_events(self, sink: Callable[[LegEvent], None] | None) -> None:
        """Hand each event to `sink` as it happens (events already queued first) instead of queueing it on
        `events`; None queues them again. For an owner that already has one queue or state machine for several
        sources: no task per leg moving events from queue to queue. `sink` runs inside the SIP stack's handling of
        the message, so it must not block or raise (put the event on a queue, set a flag, cancel a task)."""
        self._sink = sink
        queued = self._events
        if sink is not None and queued is not None:
            while not queued.empty():
                sink(queued.get_nowait())

    def _emit(self, event: LegEvent) -> None:
        sink = self._sink
        if sink is None:
            self.events.put_nowait(event)
        else:
            sink(event)

    def _end(self, cause: EndCause) -> None:
        if self.state is LegState.ENDED and self.end_cause is not None:
            return
        self.state = LegState.ENDED
        self.end_cause = cause
        # Whoever still holds the ended leg (the UA lets go of it at once, see UserAgent._linger) should not keep the
        # whole call - media session, timeline, webhooks' params - alive through this bound method of the Call.
        self.offer_handler = None
        self.log.info("leg_ended", kind=cause.kind, status=cause.status, reason=cause.reason, by=cause.by)
        self._emit(Ended(cause))
        if self._ended_event is not None:
            self._ended_event.set()
        self.ua._leg_ended(self)

    # -- in-dialog behaviour common to both directions ------------------------------------------------------------
    def _on_request(self, request: Request, tx: ServerTransaction, source: Address) -> None:
        assert self.dialog is not None
        error = self.dialog.check_request(request)
        if error is not None:
            self.ua.respond(tx, request, error, "CSeq out of order")
            return
        method = request.method
        if method == "BYE":
            self.ua.respond(tx, request, 200)
            self.dialog.state = DialogState.TERMINATED
            self._end(EndCause("bye", by="remote"))
        elif method in ("INVITE", "UPDATE"):
            self._on_reoffer(request, tx)
        elif method == "INFO":
            self.ua.respond(tx, request, 200)
            self._on_info(request)
        elif method == "OPTIONS":
            self.ua.respond(tx, request, 200, headers=Headers([("Allow", ALLOW), ("Accept", "application/sdp")]))
        else:
            self.ua.respond(tx, request, 405, headers=Headers([("Allow", ALLOW)]))

    def _on_reoffer(self, request: Request, tx: ServerTransaction) -> None:
        if self.state is LegState.ENDED:
            self.ua.respond(tx, request, 481)
            return
        offer = request.body.decode("utf-8", "replace") if request.body else ""
        if not offer:
            # Offerless re-INVITE: our current SDP is the offer; the answer arrives in the ACK (ignored here).
            answer = self.local_sdp or ""
            on_hold = False
        else:
            answer, on_hold = sdp_direction.answer_direction(self.local_sdp or "", offer)
            if self.offer_handler is not None:
                try:
                    answer = self.offer_handler(offer)
                except ValueError as exc:
                    self.log.info("reoffer_rejected", error=str(exc))
                    self.ua.respond(tx, request, 488)
                    return
            self.remote_sdp = offer
            self.local_sdp = answer or self.local_sdp
        self._reply_with_sdp(tx, request, 200, answer)
        self._emit(Reoffer(offer, answer, on_hold))

    def _reply_with_sdp(self, tx: ServerTransaction, request: Request, status: int, sdp: str | None) -> None:
        headers = Headers([("Contact", self.ua.contact(self.peer.transport)), ("Allow", ALLOW)])
        body = b""
        if sdp:
            headers.add("Content-Type", "application/sdp")
            body = sdp.encode()
        self.ua.respond(tx, request, status, headers=headers, body=body)

    def _on_info(self, request: Request) -> None:
        ctype = (request.headers.get("Content-Type") or "").lower().split(";")[0].strip()
        text = request.body.decode("utf-8", "replace")
        if ctype == "application/dtmf-relay":
            fields = dict(
                (k.strip().lower(), v.strip()) for k, _, v in (line.partition("=") for line in text.splitlines())
            )
            digit = fields.get("signal", "")
            if digit:
                duration = fields.get("duration", "0")
                self._emit(Dtmf(digit, int(duration) if duration.isdigit() else 0))
                return
        elif ctype == "application/dtmf" and text.strip():
            self._emit(Dtmf(text.strip()[:1]))
            return
        self._emit(Info(ctype, request.body))

    def _on_ack(self, request: Request) -> None:
        """ACK to our 2xx (no transaction)."""
        if request.body and self.remote_sdp is None:
            self.remote_sdp = request.body.decode("utf-8", "replace")
        self._set_acked()
        if self._bye_after_ack:
            self._bye_after_ack = False
            self._send_bye()
            if self.state is LegState.ENDED:
                self.ua._leg_ended(self)  # the BYE it waited for is out: the UA may let go of the leg now

    def _on_ack_timeout(self) -> None:
        self.log.warning("ack_timeout")
        already_ended = self.state is LegState.ENDED
        self._bye_after_ack = False
        self._send_bye()
        if already_ended:
            self.ua._leg_ended(self)  # hung up before the ACK: the BYE it waited for is out
        else:
            self._end(EndCause("ack_timeout", 408, "no ACK for 2xx", by="remote"))

    def _send_bye(self) -> ClientTransaction | None:
        if self.dialog is None or self.dialog.state is DialogState.TERMINATED:
            return None
        bye = self.dialog.request(
            "BYE", via=self.ua.via(self.peer.transport), headers=Headers([("User-Agent", self.ua.user_agent)])
        )
        self.dialog.state = DialogState.TERMINATED
        return self.ua.send_in_dialog(bye, self.dialog, self)

    def send_info(self, content_type: str, body: bytes) -> None:
        """An INFO request in the confirmed dialog (e.g. application/dtmf-relay)."""
        if self.dialog is None or self.state is not LegState.ANSWERED:
            raise RuntimeError("INFO needs an answered leg")
        info = self.dialog.request("INFO", via=self.ua.via(self.peer.transport), body=body,
                                   content_type=content_type)
        self.ua.send_in_dialog(info, self.dialog, self)

    def _on_response(self, response: Response, tx: ClientTransaction) -> None:
        """Responses to in-dialog requests (BYE, INFO): nothing to do beyond logging failures."""
        if response.status >= 300:
            self.log.info("in_dialog_request_failed", method=response.cseq[1], status=response.status)

    def _on_timeout(self, tx: ClientTransaction | ServerTransaction) -> None:
        self.log.info("in_dialog_request_timeout", method=tx.key[-1])


class InboundLeg(Leg):
    """A call that reached us: we ring, send early media, answer or reject it."""

    direction = "inbound"

    def __init__(self, ua: UserAgent, invite: Request, tx: ServerTransaction, source: Address, local_tag: str,
                 authenticated_user: str | None = None) -> None:
        super().__init__(ua, invite, source)
        self.tx = tx
        tx.owner = self
        self.local_tag = local_tag
        self.authenticated_user = authenticated_user
        self.remote_sdp = invite.body.decode("utf-8", "replace") if invite.body else None

    def _dialog(self) -> Dialog:
        if self.dialog is None:
            self.dialog = Dialog.from_uas(self.invite, self.local_tag)
            self.ua.register_dialog(self.dialog, self)
        return self.dialog

    def _provisional_or_final(self, status: int, reason: str = "", sdp: str | None = None,
                              headers: Headers | None = None) -> None:
        if self.state in (LegState.ANSWERED, LegState.ENDED):
            raise RuntimeError(f"cannot send {status}: leg is {self.state.value}")
        out = Headers()
        if status < 300:
            self._dialog()
            out.add("Contact", self.ua.contact(self.peer.transport))
            for rr in self.invite.headers.get_all("Record-Route"):
                out.add("Record-Route", rr)
            out.add("Allow", ALLOW)
        if headers is not None:
            for name, value in headers:
                out.add(name, value)
        body = b""
        if sdp:
            out.add("Content-Type", "application/sdp")
            body = sdp.encode()
            self.local_sdp = sdp
        response = make_response(self.invite, status, reason, to_tag=self.local_tag, headers=out, body=body)
        response.headers.add("Server", self.ua.user_agent)
        self.ua.send_response(self.tx, response)

    async def ring(self, sdp: str | None = None) -> None:
        """180 Ringing (183 Session Progress when `sdp` is given: early media)."""
        if sdp:
            await self.early_media(sdp)
            return
        self._provisional_or_final(180)
        if self.state is LegState.CALLING:
            self.state = LegState.RINGING

    async def early_media(self, sdp: str) -> None:
        """183 Session Progress with SDP: the caller hears our media before any answer."""
        self._provisional_or_final(183, sdp=sdp)
        self.state = LegState.EARLY

    async def answer(self, sdp: str | None = None, headers: Headers | None = None) -> None:
        """200 OK (with our SDP answer); retransmitted by the transaction layer until the ACK."""
        self._provisional_or_final(200, sdp=sdp or self.local_sdp, headers=headers)
        assert self.dialog is not None
        self.dialog.confirm()
        self.state = LegState.ANSWERED
        self.log.info("leg_answered")
        self._emit(Answered(self.remote_sdp))

    async def reject(self, status: int = 480, reason: str = "", headers: Headers | None = None) -> None:
        """A final 3xx-6xx to the INVITE; the leg ends."""
        if not 300 <= status <= 699:
            raise ValueError(f"reject needs a 3xx-6xx status, got {status}")
        if self.state is LegState.ENDED:
            return
        self._provisional_or_final(status, reason, headers=headers)
        self._end(EndCause("rejected", status, reason, by="local"))

    async def hangup(self, status: int = 480, reason: str = "") -> None:
        """End the leg however its state requires: reject before answer, BYE after."""
        if self.state is LegState.ENDED:
            return
        if self.state is LegState.ANSWERED:
            if self._acked:
                self._send_bye()
            else:
                # RFC 3261 §15: no BYE before the ACK for our 2xx. It goes out when the ACK arrives, or when the ACK
                # times out (_on_ack_timeout); the leg ends now either way.
                self._bye_after_ack = True
            self._end(EndCause("bye", by="local"))
        else:
            await self.reject(status, reason)

    def _on_cancelled(self) -> None:
        self._end(EndCause("cancelled", 487, "caller cancelled", by="remote"))

    def _on_request(self, request: Request, tx: ServerTransaction, source: Address) -> None:
        early = request.method == "BYE" and self.state in (LegState.CALLING, LegState.RINGING, LegState.EARLY)
        super()._on_request(request, tx, source)
        if early and self.state is LegState.ENDED:
            # RFC 3261 §15.1.2: a BYE in the early dialog ends the call; the pending INVITE is answered 487.
            response = make_response(self.invite, 487, "", to_tag=self.local_tag)
            response.headers.add("Server", self.ua.user_agent)
            self.ua.send_response(self.tx, response)


class OutboundLeg(Leg):
    """A call we place: INVITE with an SDP offer, challenge answered once, CANCEL or BYE to end it."""

    direction = "outbound"

    def __init__(self, ua: UserAgent, invite: Request, peer: Address, credentials: Credentials | None) -> None:
        super().__init__(ua, invite, peer)
        self.credentials = credentials
        self.auth_attempts = 0
        self.tx: ClientTransaction | None = None
        # The INVITE of `tx` (the authenticated retry after a challenge): kept here, as the transaction lets go of
        # its request once it only absorbs retransmissions.
        self._invite_in_flight = invite
        self.local_sdp = invite.body.decode("utf-8", "replace") if invite.body else None
        self._cancel_pending = False
        self._cancelled = False
        self._provisional_seen = False
        self._guard: asyncio.TimerHandle | None = None
        self.local_tag = invite.from_tag

    def start(self) -> None:
        self.tx = self.ua.send_request(self.invite, self.peer, self)
        self.log.info("invite_sent", uri=self.invite.uri, peer=str(self.peer))

    # -- responses to our INVITE -----------------------------------------------------------------------------------
    def _on_response(self, response: Response, tx: ClientTransaction) -> None:
        if response.cseq[1] != "INVITE":
            super()._on_response(response, tx)
            return
        status = response.status
        if status < 200:
            self._on_provisional(response)
        elif status < 300:
            self._on_2xx(response)
        else:
            self._on_failure(response)

    def _on_provisional(self, response: Response) -> None:
        self._provisional_seen = True
        if self._cancel_pending:
            self._send_cancel()
            return
        if self._cancelled or self.state is LegState.ENDED:
            return
        status = response.status
        if status == 100:
            return
        if response.to_tag and self.dialog is None:
            self.dialog = Dialog.from_uac(self.invite_in_flight, response)
        sdp = response.body.decode("utf-8", "replace") if response.body else None
        if self.state is LegState.CALLING:
            self.state = LegState.RINGING
            self._emit(Ringing(status, sdp))
        if sdp and sdp != self.remote_sdp:
            self.remote_sdp = sdp
            self.state = LegState.EARLY
            self._emit(EarlyMedia(sdp))

    @property
    def invite_in_flight(self) -> Request:
        return self._invite_in_flight

    def _on_2xx(self, response: Response) -> None:
        self._cancel_guard()
        invite = self.invite_in_flight
        if self.dialog is not None and response.to_tag == self.dialog.remote_tag and self._ack_wire is not None:
            # A retransmitted 2xx (its first copy was ACKed): ACK again and nothing else, also after our BYE.
            self.ua.layer.resend(self._ack_wire, self._next_hop_address(self.dialog))
            self.ua.flush()
            return
        if self.dialog is not None and self.dialog.state is DialogState.CONFIRMED:
            if response.to_tag != self.dialog.remote_tag:
                self._ack_and_bye_fork(invite, response)
            return
        dialog = Dialog.from_uac(invite, response)
        self.dialog = dialog
        ack_headers = Headers()
        for name in ("Authorization", "Proxy-Authorization"):
            value = invite.headers.get(name)
            if value:
                ack_headers.add(name, value)
        ack = dialog.request("ACK", via=self.ua.via(self.peer.transport), headers=ack_headers,
                             cseq=invite.cseq[0])
        self._ack_peer = self._next_hop_address(dialog)
        self._ack_wire = self.ua.send_stateless(ack, self._ack_peer)
        # After the ACK is known: a leg that already ended (the 2xx crossed our CANCEL) is registered as the record
        # of an ended dialog, which re-sends this ACK to retransmissions of the 2xx.
        self.ua.register_dialog(dialog, self)
        self._set_acked()
        if self._cancelled or self.state is LegState.ENDED:
            # The 2xx crossed our CANCEL (or we gave up): the call must not stay up.
            self._send_bye()
            return
        self.remote_sdp = response.body.decode("utf-8", "replace") if response.body else self.remote_sdp
        self.state = LegState.ANSWERED
        self.log.info("leg_answered", status=response.status)
        self._emit(Answered(self.remote_sdp))

    def _ack_and_bye_fork(self, invite: Request, response: Response) -> None:
        fork = Dialog.from_uac(invite, response)
        ack = fork.request("ACK", via=self.ua.via(self.peer.transport), cseq=invite.cseq[0])
        self.ua.send_stateless(ack, self._next_hop_address(fork))
        bye = fork.request("BYE", via=self.ua.via(self.peer.transport))
        self.ua.send_in_dialog(bye, fork, self)

    def _next_hop_address(self, dialog: Dialog) -> Address:
        return self.ua.address_for(dialog.next_hop(), default=self.peer)

    def _on_failure(self, response: Response) -> None:
        status = response.status
        if self._cancelled or self.state is LegState.ENDED:
            self._cancel_guard()
            return
        if status in (401, 407) and self.credentials is not None:
            if self.auth_attempts == 0:
                self._retry_with_credentials(response)
                return
            self._cancel_guard()
            self._end(EndCause("auth_failed", status, response.reason))
            return
        self._cancel_guard()
        if status == 403 and self.auth_attempts:
            self._end(EndCause("auth_failed", status, response.reason))
            return
        self._end(EndCause("rejected", status, response.reason))

    def _retry_with_credentials(self, response: Response) -> None:
        assert self.credentials is not None
        proxy = response.status == 407
        try:
            challenge = pick_challenge(response.headers.get_all(challenge_header_name(response.status)), proxy=proxy)
        except AuthError as exc:
            self.log.warning("auth_challenge_unusable", status=response.status, error=str(exc))
            self._end(EndCause("auth_failed", response.status, "unusable challenge"))
            return
        if self.credentials.realm is not None and self.credentials.realm != challenge.realm:
            self._end(EndCause("auth_failed", response.status, f"no credentials for realm {challenge.realm}"))
            return
        previous = self.invite_in_flight
        value = build_authorization(challenge, self.credentials, "INVITE", previous.uri, body=previous.body)
        headers = previous.headers.copy()
        via = headers.get("Via") or ""
        headers.replace_first("Via", _with_new_branch(via))
        headers.set("CSeq", f"{previous.cseq[0] + 1} INVITE")
        headers.set(authorization_header_name(response.status), value)
        retry = Request("INVITE", previous.uri, headers, previous.body)
        self.auth_attempts += 1
        self.log.info("auth_retry", status=response.status, realm=challenge.realm, algorithm=challenge.algorithm)
        self._invite_in_flight = retry
        self.tx = self.ua.send_request(retry, self.peer, self)
        # A peer that sends 1xx to the retry and then goes silent would keep the INVITE transaction in Proceeding
        # forever; this guard turns that into auth_timeout after the same 64*T1 Timer B would allow.
        self._guard = self.ua.call_later(64 * self.ua.layer.config.t1, self._auth_guard_fired)

    def _auth_guard_fired(self) -> None:
        self._guard = None
        if self.state in (LegState.ANSWERED, LegState.ENDED):
            return
        if self._provisional_seen:
            self._send_cancel()
        self._cancelled = True
        self._end(EndCause("auth_timeout", 408, "no final response to the authenticated INVITE"))

    def _cancel_guard(self) -> None:
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None

    def _on_timeout(self, tx: ClientTransaction | ServerTransaction) -> None:
        if tx.key[-1] != "INVITE":
            super()._on_timeout(tx)
            return
        self._cancel_guard()
        if self.state is LegState.ENDED:
            return
        kind = "auth_timeout" if self.auth_attempts else "timeout"
        self._end(EndCause(kind, 408, "no response (Timer B)"))

    def _on_stray_2xx(self, response: Response) -> None:
        if self._ack_wire is not None and self.dialog is not None and response.to_tag == self.dialog.remote_tag:
            self.ua.layer.resend(self._ack_wire, self._next_hop_address(self.dialog))
        else:
            self._on_2xx(response)

    # -- ending -----------------------------------------------------------------------------------------------------
    def _send_cancel(self) -> None:
        self._cancel_pending = False
        invite = self.invite_in_flight
        h = invite.headers
        items: list[tuple[str, str]] = [("Via", h.get("Via") or "")]
        items += [("Route", r) for r in h.get_all("Route")]
        items += [
            ("Max-Forwards", "70"),
            ("From", h.get("From") or ""),
            ("To", h.get("To") or ""),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq[0]} CANCEL"),
        ]
        cancel = Request("CANCEL", invite.uri, Headers(items))
        self.ua.send_request(cancel, self.peer, self)

    async def cancel(self, reason: str = "") -> None:
        """Stop ringing: CANCEL now, or as soon as the first provisional arrives (RFC 3261 §9.1)."""
        if self.state in (LegState.ANSWERED, LegState.ENDED):
            return
        self._cancelled = True
        self._cancel_guard()
        if self._provisional_seen:
            self._send_cancel()
        else:
            self._cancel_pending = True
        self._end(EndCause("cancelled", 487, reason or "cancelled by us", by="local"))

    async def hangup(self, status: int = 0, reason: str = "") -> None:
        """CANCEL before answer, BYE after."""
        if self.state is LegState.ENDED:
            return
        if self.state is LegState.ANSWERED:
            self._send_bye()
            self._end(EndCause("bye", by="local"))
        else:
            await self.cancel(reason)


def _with_new_branch(via: str) -> str:
    head, _, params = via.partition(";")
    kept = [p for p in params.split(";") if p and p.strip().split("=")[0].lower() != "branch"]
    return ";".join([head, *kept, f"branch={new_branch()}"])
