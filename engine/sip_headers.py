"""`sipHeaders` on the B-leg INVITE (client rule §0.3): `X-PH-<key>` (or `X-<key>` in raw mode, when the A leg
authenticated with SIP digest), reserved prefixes PH-, Plivo, FS-, SipAuth, ZT-, Twilio and the exact key
ClientRegion dropped silently (case-insensitive), per-User headers winning over the Dial's on a clash.
"""

from __future__ import annotations

from collections.abc import Iterable

RESERVED_PREFIXES = ("ph-", "plivo", "fs-", "sipauth", "zt-", "twilio")
RESERVED_KEYS = frozenset({"clientregion"})


def is_reserved(key: str) -> bool:
    lowered = key.lower()
    return lowered in RESERVED_KEYS or lowered.startswith(RESERVED_PREFIXES)


def render(dial_headers: Iterable[tuple[str, str]], user_headers: Iterable[tuple[str, str]] = (), *,
           raw: bool = False) -> list[tuple[str, str]]:
    """The (name, value) headers for one B leg, in document order, reserved keys removed."""
    merged: dict[str, tuple[str, str]] = {}
    for key, value in [*dial_headers, *user_headers]:
        if is_reserved(key):
            continue
        merged[key.lower()] = (key, value)  # a later (per-User) key replaces the Dial's, keeping one header
    prefix = "X-" if raw else "X-PH-"
    return [(f"{prefix}{key}", value) for key, value in merged.values()]
