"""The softswitch daemon: builds the SIP user agent from the config, runs until SIGTERM/SIGINT, stops cleanly.

This module wires layers together and owns process lifecycle only. Call handling arrives with the engine issue;
until an application runner is attached, inbound INVITEs get 480 from the user agent.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
from collections.abc import Callable

import structlog

from sip.auth import DigestServer
from sip.leg import InboundLeg
from sip.message import Request
from sip.ua import InboundAuth, UserAgent
from sip.uri import NameAddr

from .config import Config

log = structlog.get_logger("engine.daemon")


def inbound_auth_for(config: Config) -> InboundAuth | None:
    """Callers whose From user is one of `[[users]]` must pass digest auth (407) before their INVITE is taken."""
    if not config.users:
        return None
    passwords = {u.username: u.password for u in config.users}

    def required(request: Request) -> bool:
        try:
            user = NameAddr.parse(request.headers.get("From") or "").uri.user
        except ValueError:
            return False
        return user in passwords

    # The nonce key only needs to survive this process; derive it from the secrets so restarts differ by config.
    secret = hashlib.sha256(("softswitch-nonce:" + "|".join(sorted(passwords.values()))).encode()).digest()
    return InboundAuth(DigestServer(config.sip.domain, secret), passwords.get, required)


class Daemon:
    def __init__(self, config: Config, on_invite: Callable[[InboundLeg], None] | None = None) -> None:
        self.config = config
        self.ua = UserAgent(
            public_address=config.sip.public_address,
            on_invite=on_invite,
            inbound_auth=inbound_auth_for(config),
        )
        self._stop = asyncio.Event()

    async def start(self) -> None:
        bound = await self.ua.start(self.config.sip.listen_specs())
        log.info("softswitch_started", sip={t: f"{h}:{p}" for t, (h, p) in bound.items()})

    def request_stop(self, reason: str = "signal") -> None:
        if not self._stop.is_set():
            log.info("softswitch_stopping", reason=reason)
            self._stop.set()

    async def run(self) -> None:
        """Start, wait for SIGTERM/SIGINT (or request_stop), end live legs, close sockets."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        await self.start()
        try:
            await self._stop.wait()
        finally:
            for leg in self.ua.legs:
                await leg.hangup(503, "Service shutting down")
            await asyncio.sleep(0.05)  # let the last BYEs/responses reach the wire
            await self.ua.stop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            log.info("softswitch_stopped")
