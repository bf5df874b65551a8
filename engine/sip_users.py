"""SIP users of `[[users]]`: who must pass digest auth (407) before an INVITE from them is taken."""

from __future__ import annotations

import hashlib

from sip.auth import DigestServer
from sip.leg import InboundLeg
from sip.message import Request
from sip.ua import InboundAuth
from sip.uri import NameAddr

from .config import Config


def inbound_auth_for(config: Config) -> InboundAuth | None:
    """Callers whose From user is one of `[[users]]` are challenged; None when no users are configured."""
    if not config.users:
        return None
    passwords = {u.username: u.password for u in config.users}

    def required(request: Request) -> bool:
        try:
            user = NameAddr.parse(request.headers.get("From") or "").uri.user
        except ValueError:
            return False
        return user in passwords

    # The nonce key only needs to live as long as this process; derived from the secrets (never logged).
    secret = hashlib.sha256(("softswitch-nonce:" + "|".join(sorted(passwords.values()))).encode()).digest()
    return InboundAuth(DigestServer(config.sip.domain, secret), passwords.get, required)


def caller_is_authenticated_user(leg: InboundLeg) -> bool:
    """False when the caller passed digest auth as one [[users]] entry while its From names another (bob's valid
    credentials on an INVITE From alice: caller-ID spoofing, refused with 403). Unauthenticated legs: True."""
    user = leg.authenticated_user
    if user is None:
        return True
    try:
        return NameAddr.parse(leg.headers.get("From") or "").uri.user == user
    except ValueError:
        return False
