"""RFC 3261 §17 transactions (with the RFC 6026 Accepted state) as transition tables, and the layer that matches
messages to them.

Everything that affects a transaction's state lives in the four TABLEs below: (state, event) -> (next state,
actions). An event that has no row is ignored (that is how retransmissions and late messages are absorbed). Actions
are small methods on the base class; none of them decides a state.

What does not live here: sockets, clocks, dialogs. Time comes in as `now`; what to send comes out of
`TransactionLayer.datagrams_to_send()` as (bytes, Address); what the transaction user must know comes out as events
(`sip.events`). The asyncio edge (`sip.ua`) calls `handle_timers(now)` at `next_deadline()`.

Also here, because it is timer-driven and matched like a transaction: the UAS core's retransmission of a 2xx to
an INVITE until its ACK arrives (RFC 3261 §13.3.1.4), `AckWait`.

Timers: one heap of (deadline, timer id) for the whole layer, and a dict from the ids of the armed timers to their
owner and name. Stopping a timer deletes its id from the dict; its heap entry stays until it comes due and is then
skipped, but holds no reference, so a stopped 64*T1 timer (B, F, H) never keeps its transaction, request and TU
object alive after the transaction ended.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

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
from .message import Headers, Request, Response

MAGIC_COOKIE = "z9hG4bK"


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """RFC 3261 §17.1.1.1 / Table 4 base values in seconds."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0


class State(Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


S = State
Row = tuple[State, tuple[str, ...]]
Action = Callable[[Any, float, "Request | Response | None"], None]


class Transaction:
    """State, timers and the action vocabulary shared by all four transaction kinds."""

    __slots__ = ("layer", "key", "_request", "peer", "state", "timers", "intervals", "retransmissions",
                 "last_response", "_wire", "owner")

    TABLE: ClassVar[dict[tuple[State, str], Row]] = {}
    INITIAL: ClassVar[State]
    # TABLE with the action names resolved to the methods once per class (no getattr per event).
    _ROWS: ClassVar[dict[tuple[State, str], tuple[State, tuple[Action, ...]]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._ROWS = {
            key: (state, tuple(getattr(cls, "_" + name) for name in actions))
            for key, (state, actions) in cls.TABLE.items()
        }

    def __init__(self, layer: TransactionLayer, key: tuple[str, ...], request: Request, peer: Address) -> None:
        self.layer = layer
        self.key = key
        self._request: Request | None = request
        self.peer = peer
        self.state = self.INITIAL
        self.timers: dict[str, int] = {}  # armed timer name -> its id in the layer
        self.intervals: dict[str, float] = {}
        self.retransmissions = 0
        self.last_response: Response | None = None
        self._wire: bytes = b""
        self.owner: Any = None  # the TU object this transaction belongs to (a Leg, say); the layer never reads it

    @property
    def request(self) -> Request:
        """The request that created the transaction; gone once the transaction only absorbs retransmissions
        (`_release`)."""
        if self._request is None:
            raise RuntimeError(f"{self!r} no longer keeps its request")
        return self._request

    @property
    def reliable(self) -> bool:
        return self.peer.reliable

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    def fire(self, event: str, now: float, message: Request | Response | None = None) -> bool:
        """Apply one event; return False when the table has no row for it (the event is absorbed)."""
        row = self._ROWS.get((self.state, event))
        if row is None:
            return False
        self.state, actions = row
        for action in actions:
            action(self, now, message)
        if self.state is State.TERMINATED:
            timers = self.timers
            if timers:
                self.layer._cancel_timers(timers.values())
                timers.clear()
            self.layer._forget(self)
        return True

    # -- timer plumbing --------------------------------------------------------------------------------------------
    def _arm(self, name: str, now: float, interval: float) -> None:
        self.intervals[name] = interval
        old = self.timers.get(name)
        if old is not None:
            self.layer._cancel_timers((old,))
        self.timers[name] = self.layer._schedule(now + interval, self, name)

    def _stop(self, name: str) -> None:
        timer = self.timers.pop(name, None)
        if timer is not None:
            self.layer._cancel_timers((timer,))

    # -- actions shared by several tables ---------------------------------------------------------------------------
    def _send(self, now: float, message: Request | Response | None) -> None:
        assert message is not None
        self._wire = message.to_bytes()
        if isinstance(message, Response):
            self.last_response = message
        self.layer._emit(self._wire, self.peer)

    def _resend(self, now: float, message: Request | Response | None) -> None:
        if self._wire:
            self.retransmissions += 1
            self.layer.retransmissions += 1
            self.layer._emit(self._wire, self.peer)

    def _deliver(self, now: float, message: Request | Response | None) -> None:
        assert isinstance(message, Response)
        self.layer._event(ResponseReceived(message, self, self.owner))  # type: ignore[arg-type]

    def _timeout(self, now: float, message: Request | Response | None) -> None:
        self.layer._event(TransactionTimedOut(self))  # type: ignore[arg-type]

    def _release(self, now: float, message: Request | Response | None) -> None:
        """Keep only what absorbing retransmissions needs (key, peer, the bytes last sent): a transaction lingers
        up to 64*T1 after its final response, and would otherwise keep the request, the response and the TU object
        (a leg, its dialog and everything they reference) alive and in the collector's heap that long. Runs after
        `deliver` in a row: the event carries the owner it was delivered to."""
        self._request = None
        self.last_response = None
        self.owner = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key[-1]} {self.key[0]} {self.state.value}>"


class ClientTransaction(Transaction):
    """Sends a request and matches its responses. Events: '1xx', '2xx', 'final' (300-699), timer names."""

    __slots__ = ()

    def start(self, now: float) -> None:
        raise NotImplementedError

    def classify(self, status: int) -> str:
        if status < 200:
            return "1xx"
        return "2xx" if status < 300 else "final"


class ClientInviteTransaction(ClientTransaction):
    __slots__ = ()

    INITIAL = S.CALLING
    TABLE = {
        (S.CALLING, "timer_A"): (S.CALLING, ("resend", "double_A")),
        (S.CALLING, "timer_B"): (S.TERMINATED, ("timeout",)),
        (S.CALLING, "1xx"): (S.PROCEEDING, ("stop_AB", "deliver")),
        (S.CALLING, "2xx"): (S.ACCEPTED, ("stop_AB", "deliver", "start_M", "release")),
        (S.CALLING, "final"): (S.COMPLETED, ("stop_AB", "send_ack", "deliver", "start_D", "release")),
        (S.PROCEEDING, "1xx"): (S.PROCEEDING, ("deliver",)),
        (S.PROCEEDING, "2xx"): (S.ACCEPTED, ("deliver", "start_M", "release")),
        (S.PROCEEDING, "final"): (S.COMPLETED, ("send_ack", "deliver", "start_D", "release")),
        # The TU ACKs every 2xx retransmission; released, the transaction delivers it without an owner and the TU
        # finds the dialog (or the record an ended dialog leaves) from the response's Call-ID and tags.
        (S.ACCEPTED, "2xx"): (S.ACCEPTED, ("deliver",)),
        (S.ACCEPTED, "timer_M"): (S.TERMINATED, ()),
        (S.COMPLETED, "final"): (S.COMPLETED, ("resend",)),  # retransmitted final: ACK again, not delivered
        (S.COMPLETED, "timer_D"): (S.TERMINATED, ()),
    }

    def start(self, now: float) -> None:
        self._send(now, self.request)
        if not self.reliable:
            self._arm("timer_A", now, self.layer.config.t1)
        self._arm("timer_B", now, 64 * self.layer.config.t1)

    def _double_A(self, now: float, message: Request | Response | None) -> None:
        self._arm("timer_A", now, 2 * self.intervals["timer_A"])

    def _stop_AB(self, now: float, message: Request | Response | None) -> None:
        self._stop("timer_A")
        self._stop("timer_B")

    def _start_M(self, now: float, message: Request | Response | None) -> None:
        self._arm("timer_M", now, 64 * self.layer.config.t1)

    def _start_D(self, now: float, message: Request | Response | None) -> None:
        self._arm("timer_D", now, 0.0 if self.reliable else max(32.0, 64 * self.layer.config.t1))

    def _send_ack(self, now: float, message: Request | Response | None) -> None:
        assert isinstance(message, Response)
        self._wire = build_non2xx_ack(self.request, message).to_bytes()  # what a retransmitted final gets
        self.layer._emit(self._wire, self.peer)


class ClientNonInviteTransaction(ClientTransaction):
    __slots__ = ()

    INITIAL = S.TRYING
    TABLE = {
        (S.TRYING, "timer_E"): (S.TRYING, ("resend", "double_E")),
        (S.TRYING, "timer_F"): (S.TERMINATED, ("timeout",)),
        (S.TRYING, "1xx"): (S.PROCEEDING, ("deliver",)),
        (S.TRYING, "2xx"): (S.COMPLETED, ("stop_EF", "deliver", "start_K", "release")),
        (S.TRYING, "final"): (S.COMPLETED, ("stop_EF", "deliver", "start_K", "release")),
        (S.PROCEEDING, "timer_E"): (S.PROCEEDING, ("resend", "rearm_E_T2")),
        (S.PROCEEDING, "timer_F"): (S.TERMINATED, ("timeout",)),
        (S.PROCEEDING, "1xx"): (S.PROCEEDING, ("deliver",)),
        (S.PROCEEDING, "2xx"): (S.COMPLETED, ("stop_EF", "deliver", "start_K", "release")),
        (S.PROCEEDING, "final"): (S.COMPLETED, ("stop_EF", "deliver", "start_K", "release")),
        (S.COMPLETED, "timer_K"): (S.TERMINATED, ()),
    }

    def start(self, now: float) -> None:
        self._send(now, self.request)
        if not self.reliable:
            self._arm("timer_E", now, self.layer.config.t1)
        self._arm("timer_F", now, 64 * self.layer.config.t1)

    def _double_E(self, now: float, message: Request | Response | None) -> None:
        self._arm("timer_E", now, min(2 * self.intervals["timer_E"], self.layer.config.t2))

    def _rearm_E_T2(self, now: float, message: Request | Response | None) -> None:
        self._arm("timer_E", now, self.layer.config.t2)

    def _stop_EF(self, now: float, message: Request | Response | None) -> None:
        self._stop("timer_E")
        self._stop("timer_F")

    def _start_K(self, now: float, message: Request | Response | None) -> None:
        self._arm("timer_K", now, 0.0 if self.reliable else self.layer.config.t4)


class ServerTransaction(Transaction):
    """Absorbs request retransmissions and sends the TU's responses. Events: 'request', 'ack', 'send_1xx',
    'send_2xx', 'send_final', timer names."""

    __slots__ = ()

    def respond(self, response: Response, now: float) -> None:
        status = response.status
        event = "send_1xx" if status < 200 else ("send_2xx" if status < 300 else "send_final")
        if not self.fire(event, now, response):
            raise RuntimeError(f"{self!r} cannot send {status} in state {self.state.value}")


class ServerInviteTransaction(ServerTransaction):
    __slots__ = ()

    INITIAL = S.PROCEEDING
    TABLE = {
        (S.PROCEEDING, "request"): (S.PROCEEDING, ("resend",)),
        (S.PROCEEDING, "send_1xx"): (S.PROCEEDING, ("send",)),
        (S.PROCEEDING, "send_2xx"): (S.ACCEPTED, ("send", "start_L", "await_ack", "release")),
        # Released: Timer H (no ACK to our 3xx-6xx) then times out with no owner to tell, as nothing is left to do.
        (S.PROCEEDING, "send_final"): (S.COMPLETED, ("send", "start_GH", "release")),
        (S.ACCEPTED, "request"): (S.ACCEPTED, ()),  # AckWait retransmits the 2xx; the INVITE copy is absorbed
        (S.ACCEPTED, "timer_L"): (S.TERMINATED, ()),
        (S.COMPLETED, "request"): (S.COMPLETED, ("resend",)),
        (S.COMPLETED, "timer_G"): (S.COMPLETED, ("resend", "double_G")),
        (S.COMPLETED, "timer_H"): (S.TERMINATED, ("timeout",)),
        (S.COMPLETED, "ack"): (S.CONFIRMED, ("stop_GH", "start_I")),
        (S.CONFIRMED, "timer_I"): (S.TERMINATED, ()),
    }

    def _start_L(self, now: float, message: Request | Response | None) -> None:
        self._arm("timer_L", now, 64 * self.layer.config.t1)

    def _await_ack(self, now: float, message: Request | Response | None) -> None:
        assert isinstance(message, Response)
        self.layer._await_ack(self, message, now)

    def _start_GH(self, now: float, message: Request | Response | None) -> None:
        if not self.reliable:
            self._arm("timer_G", now, self.layer.config.t1)
        self._arm("timer_H", now, 64 * self.layer.config.t1)

    def _double_G(self, now: float, message: Request | Response | None) -> None:
        self._arm("timer_G", now, min(2 * self.intervals["timer_G"], self.layer.config.t2))

    def _stop_GH(self, now: float, message: Request | Response | None) -> None:
        self._stop("timer_G")
        self._stop("timer_H")

    def _start_I(self, now: float, message: Request | Response | None) -> None:
        self._arm("timer_I", now, 0.0 if self.reliable else self.layer.config.t4)


class ServerNonInviteTransaction(ServerTransaction):
    __slots__ = ()

    INITIAL = S.TRYING
    TABLE = {
        (S.TRYING, "send_1xx"): (S.PROCEEDING, ("send",)),
        (S.TRYING, "send_2xx"): (S.COMPLETED, ("send", "start_J", "release")),
        (S.TRYING, "send_final"): (S.COMPLETED, ("send", "start_J", "release")),
        (S.PROCEEDING, "request"): (S.PROCEEDING, ("resend",)),
        (S.PROCEEDING, "send_1xx"): (S.PROCEEDING, ("send",)),
        (S.PROCEEDING, "send_2xx"): (S.COMPLETED, ("send", "start_J", "release")),
        (S.PROCEEDING, "send_final"): (S.COMPLETED, ("send", "start_J", "release")),
        (S.COMPLETED, "request"): (S.COMPLETED, ("resend",)),
        (S.COMPLETED, "timer_J"): (S.TERMINATED, ()),
    }

    def _start_J(self, now: float, message: Request | Response | None) -> None:
        self._arm("timer_J", now, 0.0 if self.reliable else 64 * self.layer.config.t1)


class AckWait:
    """The UAS core's 2xx retransmission: T1, 2*T1, ... capped at T2, until the ACK or 64*T1 (RFC 3261 §13.3.1.4).

    Retransmits on every transport: the 2xx is end-to-end and a hop behind a proxy may be UDP.
    """

    __slots__ = ("key", "response", "peer", "wire", "interval", "next_at", "give_up_at", "timer")

    def __init__(self, key: tuple[str, int], response: Response, peer: Address) -> None:
        self.key = key
        self.response = response
        self.peer = peer
        self.wire = response.to_bytes()
        self.interval = 0.0
        self.next_at = 0.0
        self.give_up_at = 0.0
        self.timer = -1  # id of the armed retransmission timer


class TransactionLayer:
    """Matches messages to transactions, runs their timers and collects what to send and what to tell the TU."""

    def __init__(self, config: TimerConfig | None = None) -> None:
        self.config = config or TimerConfig()
        self._client: dict[tuple[str, ...], ClientTransaction] = {}
        self._server: dict[tuple[str, ...], ServerTransaction] = {}
        self._acks: dict[tuple[str, int], AckWait] = {}
        self._heap: list[tuple[float, int]] = []  # (deadline, timer id); ids not in _armed were stopped
        self._armed: dict[int, tuple[Transaction | AckWait, str]] = {}
        self._seq = itertools.count()
        self._out: list[tuple[bytes, Address]] = []
        self._events: list[TuEvent] = []
        self.retransmissions = 0
        self.absorbed = 0

    # -- what the edge asks ------------------------------------------------------------------------------------------
    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out

    def events(self) -> list[TuEvent]:
        out, self._events = self._events, []
        return out

    def next_deadline(self) -> float | None:
        heap = self._heap
        armed = self._armed
        while heap:
            deadline, timer = heap[0]
            if timer in armed:
                return deadline
            heapq.heappop(heap)
        return None

    def handle_timers(self, now: float) -> list[TuEvent]:
        heap = self._heap
        armed = self._armed
        while heap and heap[0][0] <= now:
            _, timer = heapq.heappop(heap)
            entry = armed.pop(timer, None)
            if entry is None:
                continue
            owner, name = entry
            if isinstance(owner, AckWait):
                self._ack_timer(owner, now)
            else:
                del owner.timers[name]
                owner.fire(name, now)
        return self.events()

    @property
    def active(self) -> int:
        """Live transactions and 2xx retransmissions (a leak shows up here)."""
        return len(self._client) + len(self._server) + len(self._acks)

    # -- sending -------------------------------------------------------------------------------------------------
    def send_request(self, request: Request, peer: Address, now: float) -> ClientTransaction:
        """Start a client transaction. The request's top Via must carry a fresh RFC 3261 branch."""
        branch = request.branch
        if not branch.startswith(MAGIC_COOKIE):
            raise ValueError("a client request needs a top Via with a z9hG4bK branch")
        method = request.method
        if method == "ACK":
            raise ValueError("ACK for a 2xx is sent with send_stateless(); ACK for non-2xx by the transaction")
        cls = ClientInviteTransaction if method == "INVITE" else ClientNonInviteTransaction
        tx = cls(self, (branch, method), request, peer)
        self._client[tx.key] = tx
        tx.start(now)
        return tx

    def send_response(self, tx: ServerTransaction, response: Response, now: float) -> None:
        tx.respond(response, now)

    def send_stateless(self, message: Request | Response, peer: Address) -> bytes:
        """Send outside any transaction (ACK for 2xx, stateless 4xx to garbage); returns the bytes sent."""
        wire = message.to_bytes()
        self._emit(wire, peer)
        return wire

    def resend(self, wire: bytes, peer: Address) -> None:
        self.retransmissions += 1
        self._emit(wire, peer)

    # -- receiving -----------------------------------------------------------------------------------------------
    def receive(self, message: Request | Response, source: Address, now: float) -> list[TuEvent]:
        if isinstance(message, Response):
            self._receive_response(message, source, now)
        else:
            self._receive_request(message, source, now)
        return self.events()

    def _receive_response(self, response: Response, source: Address, now: float) -> None:
        tx = self._client.get((response.branch, response.cseq[1]))
        if tx is None:
            self._events.append(StrayResponse(response, source))
            return
        if not tx.fire(tx.classify(response.status), now, response):
            self.absorbed += 1

    def _receive_request(self, request: Request, source: Address, now: float) -> None:
        method = request.method
        if method == "ACK":
            invite_tx = self._server.get(server_key(request, "INVITE"))
            if invite_tx is not None and invite_tx.state is not State.ACCEPTED:
                if not invite_tx.fire("ack", now, request):
                    self.absorbed += 1
                return
            wait = self._acks.pop((request.call_id, request.cseq[0]), None)
            if wait is not None:
                self._armed.pop(wait.timer, None)
            elif invite_tx is not None:
                self.absorbed += 1  # a duplicate ACK to a 2xx already acknowledged
                return
            self._events.append(RequestReceived(request, source, None))
            return
        key = server_key(request, method)
        tx = self._server.get(key)
        if tx is not None:
            if not tx.fire("request", now, request):
                self.absorbed += 1
            return
        cls = ServerInviteTransaction if method == "INVITE" else ServerNonInviteTransaction
        tx = cls(self, key, request, response_address(request, source))
        self._server[key] = tx
        if method == "CANCEL":
            self._cancel(tx, request, now)
            return
        self._events.append(RequestReceived(request, source, tx))

    def _cancel(self, cancel_tx: ServerTransaction, cancel: Request, now: float) -> None:
        """RFC 3261 §9.2: 200 to the CANCEL and 487 to a pending INVITE; 481 when no INVITE matches."""
        invite_tx = self._server.get(server_key(cancel, "INVITE"))
        if invite_tx is None:
            cancel_tx.respond(make_response(cancel, 481), now)
            return
        cancel_tx.respond(make_response(cancel, 200), now)
        if invite_tx.state is State.PROCEEDING:
            owner = invite_tx.owner  # the 487 releases it
            to_tag = invite_tx.last_response.to_tag if invite_tx.last_response is not None else ""
            # a final response needs a To tag (§8.2.6.2) even when only an untagged 100, or nothing, went out
            invite_tx.respond(make_response(invite_tx.request, 487, to_tag=to_tag or secrets.token_hex(6)), now)
            self._events.append(InviteCancelled(invite_tx, cancel, owner))

    # -- internals used by transactions ---------------------------------------------------------------------------
    def _emit(self, wire: bytes, peer: Address) -> None:
        self._out.append((wire, peer))

    def _event(self, event: TuEvent) -> None:
        self._events.append(event)

    def _schedule(self, deadline: float, owner: Transaction | AckWait, name: str) -> int:
        """Arm a timer; returns its id (for `_cancel_timers`)."""
        timer = next(self._seq)
        heapq.heappush(self._heap, (deadline, timer))
        self._armed[timer] = (owner, name)
        return timer

    def _cancel_timers(self, timers: Iterable[int]) -> None:
        armed = self._armed
        for timer in timers:
            armed.pop(timer, None)

    def _forget(self, tx: Transaction) -> None:
        if isinstance(tx, ClientTransaction):
            if self._client.get(tx.key) is tx:
                del self._client[tx.key]
        elif self._server.get(tx.key) is tx:
            del self._server[tx.key]

    def _await_ack(self, tx: ServerInviteTransaction, response: Response, now: float) -> None:
        wait = AckWait((response.call_id, response.cseq[0]), response, tx.peer)
        wait.interval = self.config.t1
        wait.next_at = now + wait.interval
        wait.give_up_at = now + 64 * self.config.t1
        old = self._acks.get(wait.key)
        if old is not None:
            self._armed.pop(old.timer, None)
        self._acks[wait.key] = wait
        wait.timer = self._schedule(wait.next_at, wait, "2xx")

    def _ack_timer(self, wait: AckWait, now: float) -> None:
        if now >= wait.give_up_at:
            del self._acks[wait.key]
            self._events.append(AckTimedOut(wait.key[0], wait.key[1], wait.response))
            return
        self.resend(wait.wire, wait.peer)
        wait.interval = min(2 * wait.interval, self.config.t2)
        wait.next_at = min(now + wait.interval, wait.give_up_at)
        wait.timer = self._schedule(wait.next_at, wait, "2xx")


def server_key(request: Request, method: str) -> tuple[str, ...]:
    """RFC 3261 §17.2.3 matching key; the RFC 2543 fallback when the branch lacks the magic cookie."""
    via = request.top_via
    branch = request.branch
    if branch.startswith(MAGIC_COOKIE):
        sent_by = via.partition(" ")[2].partition(";")[0].strip().lower()
        return (branch, sent_by, method)
    # RFC 2543: Request-URI, tags, Call-ID, CSeq number and top Via identify the transaction. The To tag is left
    # out of INVITE keys: the ACK carries the tag of our response, which an initial INVITE did not have.
    to_tag = "" if method == "INVITE" else request.to_tag
    return ("2543", request.uri, to_tag, request.from_tag, request.call_id, str(request.cseq[0]), via, method)


def response_address(request: Request, source: Address) -> Address:
    """Where responses to `request` go (RFC 3261 §18.2.2, RFC 3581): the connection for streams; the source
    address and port when the top Via has rport; else the source address with the Via sent-by port."""
    if source.reliable:
        return source
    via = request.top_via
    params = via.partition(";")[2].lower()
    if any(p.strip().partition("=")[0] == "rport" for p in params.split(";")):
        return source
    sent_by = via.partition(" ")[2].partition(";")[0].strip()
    host_part, _, port_text = sent_by.rpartition(":")
    port = int(port_text) if port_text.isdigit() and not sent_by.endswith("]") else 5060
    return Address(source.transport, source.host, port)


def make_response(request: Request, status: int, reason: str = "", *, to_tag: str | None = None,
                  headers: Headers | None = None, body: bytes = b"") -> Response:
    """A response copying Via, From, To (adding `to_tag` when To has none), Call-ID and CSeq (RFC 3261 §8.2.6)."""
    h = request.headers
    items: list[tuple[str, str]] = [("Via", v) for v in h.get_all("Via")]
    items.append(("From", h.get("From") or ""))
    to = h.get("To") or ""
    if to_tag and "tag=" not in to.lower():
        to = f"{to};tag={to_tag}"
    items.append(("To", to))
    items.append(("Call-ID", request.call_id))
    items.append(("CSeq", h.get("CSeq") or ""))
    out = Headers._trusted(items)
    if headers is not None:
        for name, value in headers:
            out.add(name, value)
    return Response(status, reason, out, body)


def build_non2xx_ack(invite: Request, response: Response) -> Request:
    """ACK for a 3xx-6xx, part of the INVITE transaction (RFC 3261 §17.1.1.3): same branch, To from the response."""
    h = invite.headers
    items: list[tuple[str, str]] = [("Via", h.get("Via") or "")]
    for route in h.get_all("Route"):
        items.append(("Route", route))
    items += [
        ("Max-Forwards", "70"),
        ("From", h.get("From") or ""),
        ("To", response.headers.get("To") or ""),
        ("Call-ID", invite.call_id),
        ("CSeq", f"{invite.cseq[0]} ACK"),
    ]
    return Request("ACK", invite.uri, Headers._trusted(items))
