"""The registrar (RFC 3261 §10.3): SIP users of `[[users]]` REGISTER their contacts here, `<Dial><User>` rings them.

What it does, per REGISTER (the engine hands every out-of-dialog REGISTER to `Registrar.on_register`):
  1. Digest authentication with 401 + WWW-Authenticate (realm = `[sip] domain`). One challenge header per
     algorithm, in the order of `algorithms` (default MD5 first, then SHA-256: SIPp 3.6.1 and many older phones
     answer only the first challenge and only MD5; RFC 8760 clients, ours included, pick SHA-256 from the list
     anyway). Wrong password, unknown/forged nonce, replayed nonce count -> 401 again with a fresh nonce; an
     expired nonce with otherwise correct credentials -> 401 with stale=TRUE; malformed credentials, or a digest
     uri that is not the Request-URI -> 400; credentials naming a user who is not in `[[users]]` -> 403.
  2. Authorization: the To user is the address-of-record and must be the authenticated user (403 otherwise);
     the To host must be `[sip] domain` (404 otherwise; the port is ignored).
  3. Bindings: each Contact is one binding with its own expiry (the Contact's ;expires, else the Expires header,
     else `default_expires`; malformed values count as absent; above `max_expires` it is shortened; 0 removes the
     binding; 0 < expires < `min_expires` -> 423 Interval Too Brief with Min-Expires, nothing changed).
     `Contact: *` with `Expires: 0` (and no other Contact) removes every binding of the user. No Contact: a query.
     Call-ID/CSeq ordering (§10.3 step 7): a binding last updated under the same Call-ID changes only when the
     CSeq is higher; otherwise the whole request is refused with 400 "CSeq out of order" and nothing changes.
     Contacts must be sip:/sips: URIs (400), must not point at this server's own SIP address (403: ringing them
     would loop), and at most `max_contacts` bindings per user are kept (403 beyond that).
  4. 200 OK lists every current binding as `Contact: <uri>;expires=<seconds left>` (plus ;q= when given).
`contacts(user)` returns the live contact URIs (highest q first, then oldest registration first).

Decisions and limits: expiry is measured on `ua.now()` (the event loop's monotonic clock) and checked lazily
(on `contacts()` and on each REGISTER), so no timer is needed. Bindings live in memory only: a restart loses every
registration (clients re-register at their next refresh; until then `<User>` gets USER_NOT_REGISTERED). The
contact URI is used as sent: no NAT handling (no received/rport rewriting, Path or RFC 5626 outbound).
Unknown users: a REGISTER without credentials gets the same 401 whoever it names; credentials that answer one of
our nonces but name a user who is not in `[[users]]` get 403 (the client stops instead of re-prompting), while a
known user with a wrong password gets 401 again. So a client holding a nonce can tell whether a username exists;
accepted (passwords, not usernames, are the secret here).

What it must not do: log, answer or raise with a password or an Authorization value (only the user, the reason and
the contact URIs are logged); touch sockets (it answers through `ua.respond`); place calls (engine/dialing does).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any, Protocol

import structlog

from sip.auth import AuthError, DigestResponse, DigestServer
from sip.events import Address
from sip.message import Headers, Request
from sip.transaction import ServerTransaction
from sip.uri import NameAddr, SipUri

from .config import Config

log = structlog.get_logger("engine.registrar")

DEFAULT_EXPIRES = 3600
MIN_EXPIRES = 60
MAX_EXPIRES = 7200
MAX_CONTACTS = 10
ALGORITHMS = ("MD5", "SHA-256")
_MAX_CONTACT_LENGTH = 512


class RegistrarUA(Protocol):
    """What the registrar needs from the user agent (sip.ua.UserAgent has it; unit tests pass a fake)."""

    def now(self) -> float: ...

    def respond(self, tx: ServerTransaction, request: Request, status: int, reason: str = "", *,
                headers: Headers | None = None, body: bytes = b"", to_tag: str | None = None) -> None: ...


@dataclass(slots=True)
class Binding:
    """One registered contact of a user. Times are `ua.now()` seconds."""

    uri: str
    expires_at: float
    call_id: str
    cseq: int
    q: str | None
    registered_at: float

    def remaining(self, now: float) -> int:
        """Whole seconds left (rounded up, so a live binding never shows expires=0; float noise ignored)."""
        return max(1, math.ceil(round(self.expires_at - now, 6)))


class OutOfOrder(Exception):
    """A REGISTER under a binding's Call-ID whose CSeq is not higher than the one that last changed it."""


class TooManyContacts(Exception):
    """The user would have more than `max_contacts` bindings."""


class BindingTable:
    """Bindings per user with time passed in; every change is all-or-nothing. No I/O, no clock."""

    def __init__(self, max_contacts: int = MAX_CONTACTS) -> None:
        self.max_contacts = max_contacts
        self._by_user: dict[str, list[Binding]] = {}

    def has(self, user: str) -> bool:
        """Whether `user` has bindings stored (some may have expired since)."""
        return user in self._by_user

    def current(self, user: str, now: float) -> list[Binding]:
        """The user's live bindings, highest q first, then oldest first; expired ones are dropped."""
        bindings = self._by_user.get(user)
        if not bindings:
            return []
        live = [b for b in bindings if b.expires_at > now]
        if len(live) != len(bindings):
            self._store(user, live)
        return sorted(live, key=lambda b: (-_q_value(b.q), b.registered_at))

    def update(self, user: str, call_id: str, cseq: int, contacts: Iterable[tuple[str, int, str | None]],
               now: float) -> None:
        """Apply (uri, expires seconds, q) for each contact; expires 0 removes. Raises OutOfOrder or
        TooManyContacts, in which case nothing changed."""
        table = {b.uri: b for b in self.current(user, now)}
        for uri, expires, q in contacts:
            existing = table.get(uri)
            if existing is not None and existing.call_id == call_id and cseq <= existing.cseq:
                raise OutOfOrder(uri)
            if expires == 0:
                table.pop(uri, None)
                continue
            registered_at = existing.registered_at if existing is not None else now
            table[uri] = Binding(uri, now + expires, call_id, cseq, q, registered_at)
        if len(table) > self.max_contacts:
            raise TooManyContacts(user)
        self._store(user, list(table.values()))

    def remove_all(self, user: str, call_id: str, cseq: int, now: float) -> None:
        """`Contact: *`: remove every binding; OutOfOrder (nothing removed) if one was set later in this Call-ID."""
        for b in self.current(user, now):
            if b.call_id == call_id and cseq <= b.cseq:
                raise OutOfOrder(b.uri)
        self._store(user, [])

    def _store(self, user: str, bindings: list[Binding]) -> None:
        if bindings:
            self._by_user[user] = bindings
        else:
            self._by_user.pop(user, None)


def _q_value(q: str | None) -> float:
    try:
        return float(q) if q is not None else 1.0
    except ValueError:
        return 1.0


class _Reject(Exception):
    """Answer the REGISTER with this status (and headers) and stop."""

    def __init__(self, status: int, reason: str = "", headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(reason or str(status))
        self.status = status
        self.reason = reason
        self.headers = headers or []


class Registrar:
    """REGISTER handling and contact lookup for the users of `[[users]]` in `[sip] domain` (module docstring)."""

    def __init__(self, ua: RegistrarUA, config: Config, *, algorithms: tuple[str, ...] = ALGORITHMS,
                 default_expires: int = DEFAULT_EXPIRES, min_expires: int = MIN_EXPIRES,
                 max_expires: int = MAX_EXPIRES, max_contacts: int = MAX_CONTACTS,
                 nonce_ttl: float = 300.0) -> None:
        if not algorithms:
            raise ValueError("at least one digest algorithm is needed")
        self.ua = ua
        self.domain = config.sip.domain.lower()
        self.default_expires = default_expires
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.algorithms = tuple(a.strip() for a in algorithms)  # the order challenges are sent in
        self.bindings = BindingTable(max_contacts)
        self._passwords = {u.username: u.password for u in config.users}
        # A fresh nonce key per process: nonces from before a restart are refused (clients get a new challenge).
        self.digest = DigestServer(config.sip.domain, secrets.token_bytes(32), nonce_ttl=nonce_ttl,
                                   algorithms=self.algorithms)
        self._own = _own_addresses(config)

    # -- lookups ------------------------------------------------------------------------------------------------------
    def contacts(self, user: str) -> list[str]:
        """Live contact URIs of `user` (empty when not registered)."""
        if not self.bindings.has(user):
            return []
        return [b.uri for b in self.bindings.current(user, self.ua.now())]

    # -- REGISTER -----------------------------------------------------------------------------------------------------
    def on_register(self, request: Request, tx: ServerTransaction, source: Address) -> None:
        """Answer one REGISTER (never raises: an unexpected error is logged and answered 500)."""
        bound = log.bind(call_id=request.call_id, source=str(source))
        try:
            headers = self._process(request, bound)
        except _Reject as reject:
            self.ua.respond(tx, request, reject.status, reject.reason, headers=Headers(reject.headers))
            return
        except Exception:
            bound.exception("register_error")
            self.ua.respond(tx, request, 500)
            return
        self.ua.respond(tx, request, 200, headers=Headers(headers))

    def _process(self, request: Request, bound: Any) -> list[tuple[str, str]]:
        """Authenticate, authorize, apply the Contacts; the 200's headers, or `_Reject`."""
        now = self.ua.now()
        try:
            aor = NameAddr.parse(request.headers.get("To") or "").uri
        except ValueError:
            raise _Reject(400, "Bad Request - unreadable To") from None
        user = self._authenticate(request, aor, now, bound)
        if aor.user != user:
            bound.info("register_rejected", user=user, to_user=aor.user, status=403, reason="to_not_authenticated")
            raise _Reject(403, "Forbidden - To is not the authenticated user")
        if aor.host != self.domain:
            bound.info("register_rejected", user=user, status=404, reason="foreign_domain", to_host=aor.host)
            raise _Reject(404, "Not Found - not a user of this domain")
        cseq = request.cseq[0]
        values = request.headers.get_all("Contact")
        try:
            if any(v.strip() == "*" for v in values):
                self._remove_all(request, user, values, cseq, now)
                bound.info("unregistered_all", user=user)
            elif values:
                changes = self._changes(request, values)
                self.bindings.update(user, request.call_id, cseq, changes, now)
                bound.info("registered", user=user, contacts={uri: expires for uri, expires, _ in changes})
        except OutOfOrder:
            bound.info("register_rejected", user=user, status=400, reason="cseq_out_of_order", cseq=cseq)
            raise _Reject(400, "Bad Request - CSeq out of order") from None
        except TooManyContacts:
            bound.info("register_rejected", user=user, status=403, reason="too_many_contacts")
            raise _Reject(403, f"Forbidden - more than {self.bindings.max_contacts} contacts") from None
        headers = [("Contact", self._contact_value(b, now)) for b in self.bindings.current(user, now)]
        headers.append(("Date", formatdate(usegmt=True)))
        return headers

    def _authenticate(self, request: Request, aor: SipUri, now: float, bound: Any) -> str:
        """The authenticated username, or `_Reject` (401 challenge, 400, 403)."""
        value = _credentials_for(request.headers.get_all("Authorization"), self.digest.realm)
        verdict = self.digest.verify(value, "REGISTER", request.uri, self._passwords.get, now)
        if verdict.ok and verdict.username is not None:
            return verdict.username
        reason = verdict.reason
        if reason in ("malformed", "uri_mismatch"):
            bound.info("register_rejected", to_user=aor.user, status=400, reason=reason)
            what = "digest uri is not the Request-URI" if reason == "uri_mismatch" else "malformed Authorization"
            raise _Reject(400, f"Bad Request - {what}")
        if reason == "unknown_user":
            bound.info("register_rejected", to_user=aor.user, status=403, reason=reason)
            raise _Reject(403, "Forbidden")
        if reason != "missing":
            bound.info("register_auth_failed", to_user=aor.user, reason=reason)
        challenges = self.digest.challenges(now, stale=verdict.stale)
        order = {a.lower(): i for i, a in enumerate(self.algorithms)}
        challenges.sort(key=lambda c: order.get(c.algorithm.lower(), len(order)))
        raise _Reject(401, "", [("WWW-Authenticate", c.to_header()) for c in challenges])

    def _remove_all(self, request: Request, user: str, values: list[str], cseq: int, now: float) -> None:
        if len(values) != 1:
            raise _Reject(400, "Bad Request - Contact: * with other contacts")
        if _int_or_none(request.headers.get("Expires")) != 0:
            raise _Reject(400, "Bad Request - Contact: * needs Expires: 0")
        self.bindings.remove_all(user, request.call_id, cseq, now)

    def _changes(self, request: Request, values: list[str]) -> list[tuple[str, int, str | None]]:
        """(uri, expires, q) per Contact, validated; 400/403/423 rejections before anything changes."""
        header_expires = _int_or_none(request.headers.get("Expires"))
        changes: list[tuple[str, int, str | None]] = []
        too_brief = False
        for value in values:
            if len(value) > _MAX_CONTACT_LENGTH:
                raise _Reject(400, "Bad Request - Contact too long")
            try:
                contact = NameAddr.parse(value)
            except ValueError:
                raise _Reject(400, "Bad Request - unreadable Contact") from None
            uri = contact.uri
            if uri.scheme not in ("sip", "sips"):
                raise _Reject(400, "Bad Request - Contact must be a sip: or sips: URI")
            if (uri.host, uri.port or 5060) in self._own:
                raise _Reject(403, "Forbidden - Contact is this server")
            expires = _int_or_none(contact.params.get("expires"))
            if expires is None:
                expires = header_expires
            if expires is None:
                expires = self.default_expires
            expires = min(expires, self.max_expires)
            if 0 < expires < self.min_expires:
                too_brief = True
            q = contact.params.get("q")
            changes.append((str(uri), expires, q if q and _is_q(q) else None))
        if too_brief:
            raise _Reject(423, "", [("Min-Expires", str(self.min_expires))])
        return changes

    @staticmethod
    def _contact_value(binding: Binding, now: float) -> str:
        q = f";q={binding.q}" if binding.q is not None else ""
        return f"<{binding.uri}>;expires={binding.remaining(now)}{q}"


def _credentials_for(values: list[str], realm: str) -> str | None:
    """The Authorization value for our realm (a client may send one per realm); else the first one."""
    for value in values:
        try:
            if DigestResponse.parse(value).realm == realm:
                return value
        except AuthError:
            continue
    return values[0] if values else None


def _int_or_none(text: str | None) -> int | None:
    """A delta-seconds value; None when absent or malformed (RFC 3261 §20.19: treated as not given)."""
    if text is None:
        return None
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        return None
    return min(int(text), 2**32 - 1)


def _is_q(text: str) -> bool:
    """qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )."""
    whole, _, frac = text.partition(".")
    if len(frac) > 3 or not (frac == "" or (frac.isascii() and frac.isdigit())):
        return False
    return whole == "0" or (whole == "1" and frac.strip("0") == "")


def _own_addresses(config: Config) -> set[tuple[str, int]]:
    """(host, port) pairs that reach this engine's SIP listeners: a contact naming one would loop."""
    own: set[tuple[str, int]] = set()
    for _, host, port in config.sip.listen_specs():
        own.add((host.lower(), port))
        own.add((config.sip.public_address.lower(), port))
    return own
