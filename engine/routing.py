"""Where a `<Dial>` child goes: `<Number>` → a trunk by longest prefix (else the default trunk), `<User>` → its SIP
URI, or the registered contacts of a user of `sip.domain` (a URI of our domain naming another port is dialed as is).

Pure decisions over the config (and the registrar's view of contacts); no SIP is sent here. A destination that
cannot be routed raises `RoutingError` carrying the key of its cause in engine.causes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sip.auth import Credentials
from sip.uri import SipUri

from .config import Config, TrunkConfig


class RoutingError(Exception):
    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause


@dataclass(frozen=True)
class Target:
    """One B-leg destination: the Request-URI, where the INVITE physically goes, and trunk credentials."""

    uri: str
    proxy: str | None
    credentials: Credentials | None
    trunk: str | None
    label: str

    def __repr__(self) -> str:  # credentials stay out of logs
        return f"Target({self.label!r} via {self.trunk or 'direct'})"


ContactLookup = Callable[[str], Sequence[str]]


def pick_trunk(number: str, trunks: Sequence[TrunkConfig]) -> TrunkConfig | None:
    """The trunk whose prefix is the longest match for `number` ('+' ignored on both sides), else the default."""
    digits = number.lstrip("+")
    best: TrunkConfig | None = None
    best_len = -1
    for trunk in trunks:
        for prefix in trunk.prefixes:
            p = prefix.lstrip("+")
            if digits.startswith(p) and len(p) > best_len:
                best, best_len = trunk, len(p)
    if best is not None:
        return best
    return next((t for t in trunks if t.default), None)


def route_number(number: str, config: Config, *, whatsapp: bool = False) -> Target:
    trunks = [t for t in config.trunks if t.whatsapp] if whatsapp else list(config.trunks)
    trunk = pick_trunk(number, trunks)
    if trunk is None:
        if whatsapp:
            raise RoutingError(
                "destination_barred",
                f"Dial type=whatsapp cannot reach the PSTN number {number}: no trunk has whatsapp = true",
            )
        raise RoutingError("invalid_destination", f"no trunk routes {number} and there is no default trunk")
    trunk_uri = SipUri.parse(trunk.uri)
    host = f"[{trunk_uri.host}]" if ":" in trunk_uri.host else trunk_uri.host
    port = f":{trunk_uri.port}" if trunk_uri.port else ""
    params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in trunk_uri.params.items() if k == "transport")
    uri = f"{trunk_uri.scheme}:{number.lstrip('+')}@{host}{port}{params}"
    credentials = Credentials(trunk.username, trunk.password) if trunk.username and trunk.password else None
    return Target(uri=uri, proxy=trunk.uri, credentials=credentials, trunk=trunk.name, label=number)


def route_user(uri: str, config: Config, contacts: ContactLookup | None = None) -> list[Target]:
    parsed = SipUri.parse(uri)
    our_ports = {port for _, _, port in config.sip.listen_specs()}
    ours = parsed.host == config.sip.domain.lower() and (parsed.port is None or parsed.port in our_ports)
    if ours and parsed.user:
        registered = list(contacts(parsed.user)) if contacts is not None else []
        if not registered:
            raise RoutingError("user_not_registered", f"{parsed.user}@{parsed.host} has no registered contact")
        return [Target(uri=c, proxy=None, credentials=None, trunk=None, label=uri) for c in registered]
    return [Target(uri=uri, proxy=None, credentials=None, trunk=None, label=uri)]
