"""`Caller`: many calls from one user agent on softswitch's own SIP stack (RFC 3261 timers and retransmissions),
each call's outcome recorded: answered or not, how it ended, setup time. Media is not under test here: the SDP
offer points at one UDP socket that swallows whatever RTP the engine sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from sip.leg import Answered, EndCause, Ended, OutboundLeg, Ringing
from sip.transaction import TimerConfig
from sip.ua import UserAgent

HOST = "127.0.0.1"


def sdp_offer(host: str, port: int) -> str:
    return (
        "v=0\r\n"
        f"o=caller 1 1 IN IP4 {host}\r\n"
        "s=-\r\n"
        f"c=IN IP4 {host}\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 8 101\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-15\r\n"
        "a=sendrecv\r\n"
    )


@dataclass
class CallOutcome:
    n: int
    to: str
    started: float = 0.0
    provisional: bool = False
    answered_after: float | None = None
    ended_after: float | None = None
    end: EndCause | None = None
    call_id: str = ""

    @property
    def answered(self) -> bool:
        return self.answered_after is not None

    @property
    def ended_by_bye(self) -> bool:
        return self.end is not None and self.end.kind == "bye"

    def describe(self) -> str:
        end = f"{self.end.kind}/{self.end.status}/{self.end.by}" if self.end else "not ended"
        return f"call {self.n} to {self.to}: answered={self.answered} end={end}"


@dataclass
class Caller:
    """`async with Caller() as c: outcome = await c.call(uri, to="100", hangup_after=None)`."""

    bind_host: str = HOST
    public_address: str = HOST
    timers: TimerConfig | None = None
    ua: UserAgent = field(init=False)
    outcomes: list[CallOutcome] = field(default_factory=list)
    legs: list[OutboundLeg] = field(default_factory=list)

    async def __aenter__(self) -> Caller:
        self.ua = UserAgent(public_address=self.public_address, timers=self.timers)
        await self.ua.start([("udp", self.bind_host, 0)])
        self._media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._media.bind((self.bind_host, 0))
        self._media.setblocking(False)
        asyncio.get_running_loop().add_reader(self._media.fileno(), self._swallow)
        return self

    def _swallow(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self._media.recv(4096)

    async def __aexit__(self, *exc: object) -> None:
        for leg in self.legs:
            if not leg.ended.is_set():
                with contextlib.suppress(Exception):
                    await leg.hangup()
        await asyncio.sleep(0)
        asyncio.get_running_loop().remove_reader(self._media.fileno())
        self._media.close()
        await self.ua.stop()

    @property
    def port(self) -> int:
        return self.ua.port("udp")

    async def call(self, uri: str, *, to: str = "100", from_user: str = "+15557770000",
                   hangup_after: float | None = None, timeout: float = 60.0, on_answer: Any = None,
                   headers: list[tuple[str, str]] | None = None) -> CallOutcome:
        """Place one call to `uri` (To user `to`), wait until it ends (or `timeout`); `hangup_after` s after the answer
        the caller hangs up itself (None: wait for the engine's BYE)."""
        outcome = CallOutcome(len(self.outcomes), to, started=time.monotonic())
        self.outcomes.append(outcome)
        media_port = self._media.getsockname()[1]
        host = uri.split("@", 1)[1].split(":")[0] if "@" in uri else HOST
        leg = await self.ua.invite(uri, from_uri=f"sip:{from_user}@{self.public_address}", to_uri=f"sip:{to}@{host}",
                                   sdp=sdp_offer(self.bind_host, media_port), headers=headers)
        outcome.call_id = leg.call_id
        self.legs.append(leg)
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    event = await asyncio.wait_for(leg.events.get(), left)
                except TimeoutError:
                    break
                if isinstance(event, Ringing):
                    outcome.provisional = True
                elif isinstance(event, Answered):
                    outcome.answered_after = time.monotonic() - outcome.started
                    if on_answer is not None:
                        on_answer(outcome)
                    if hangup_after is not None:
                        await asyncio.sleep(hangup_after)
                        if not leg.ended.is_set():
                            await leg.hangup()
                elif isinstance(event, Ended):
                    outcome.end = event.cause
                    outcome.ended_after = time.monotonic() - outcome.started
                    break
        except asyncio.CancelledError:
            raise
        return outcome
