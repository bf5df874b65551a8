"""Events the sans-IO SIP core hands up to the transaction user, and the addresses it sends to.

Plain dataclasses, no behaviour: the transaction layer (`sip.transaction`) produces them, the asyncio user agent
(`sip.ua`) consumes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .message import Request, Response

if TYPE_CHECKING:
    from .transaction import ClientTransaction, ServerTransaction


@dataclass(frozen=True, slots=True)
class Address:
    """Where a message goes or came from: transport ('udp' or 'tcp'), host (an IP literal) and port."""

    transport: str
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        """True for stream transports: no retransmission timers (RFC 3261 §17)."""
        return self.transport != "udp"

    def __str__(self) -> str:
        return f"{self.transport}:{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request for the TU. `tx` is None for an ACK to a 2xx (those have no transaction)."""

    request: Request
    source: Address
    tx: ServerTransaction | None


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response matched to a client transaction (retransmissions of finals are absorbed before this)."""

    response: Response
    tx: ClientTransaction
    owner: Any = None
    """The transaction's owner when the response arrived: a transaction that only absorbs retransmissions from then
    on has already let go of it (`Transaction._release`). None for a 2xx retransmission in Accepted: the TU finds
    the dialog from the response itself."""


@dataclass(frozen=True, slots=True)
class StrayResponse:
    """A response that matches no transaction; for an INVITE 2xx it is a retransmission the TU must ACK again."""

    response: Response
    source: Address


@dataclass(frozen=True, slots=True)
class TransactionTimedOut:
    """Timer B/F (client: no final response) or H (server: no ACK to our non-2xx final) fired."""

    tx: ClientTransaction | ServerTransaction


@dataclass(frozen=True, slots=True)
class InviteCancelled:
    """A CANCEL matched a pending INVITE: 200 went to the CANCEL and 487 to the INVITE already."""

    invite_tx: ServerTransaction
    cancel: Request
    owner: Any = None
    """The INVITE transaction's owner (its 487 released it, see `ResponseReceived.owner`)."""


@dataclass(frozen=True, slots=True)
class AckTimedOut:
    """Our 2xx to an INVITE was retransmitted for 64*T1 without an ACK (RFC 3261 §13.3.1.4): the TU sends BYE."""

    call_id: str
    cseq: int
    response: Response


TuEvent = RequestReceived | ResponseReceived | StrayResponse | TransactionTimedOut | InviteCancelled | AckTimedOut
