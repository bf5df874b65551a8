"""An engine under test with its app, and a test phone, all real on loopback.

`EngineEnv`: a real local HTTP app (tests.helpers.webapp) plays the customer's answer/action/hangup URLs; the
`Engine` runs on free SIP, HTTP and RTP ports with its SQLite store in the test's tmp dir.
`Phone`: a caller built on softswitch's own SIP stack and RTP session — it dials the engine, records what it hears
(decoded PCM), sends RFC 4733 digits and hangs up; tests assert on real packets.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import struct
from pathlib import Path
from typing import Any

from sipharness import HOST, free_port, free_port_block

from engine.config import load_config
from engine.engine import Engine
from engine.webhooks import WebhookSettings
from media.frames import FRAME_BYTES
from media.ports import PortAllocator
from media.session import RtpSession
from sip.auth import Credentials
from sip.leg import Answered, EarlyMedia, Ended, LegEvent, OutboundLeg, Ringing
from sip.transaction import TimerConfig
from sip.ua import UserAgent
from tests.helpers.webapp import WebApp

AUTH_TOKEN = "test-token-8f2d"


def carrier_trunk(port: int, *, auth: bool = True) -> dict[str, str]:
    """Overrides for one default trunk "carrier" at 127.0.0.1:`port` (digest trunkuser/trunkpass when `auth`)."""
    creds = ', username = "trunkuser", password = "trunkpass"' if auth else ""
    return {"SOFTSWITCH_TRUNKS": f'[{{name = "carrier", uri = "sip:{HOST}:{port}", prefixes = [], '
                                 f'default = true{creds}}}]'}


class EngineEnv:
    """`EngineEnv(tmp_path, SOFTSWITCH_X__Y="...{app}/path")`: overrides may name the app's base URL as {app}."""

    def __init__(self, tmp_path: Path, *, t1: float | None = None, **overrides: str) -> None:
        self.tmp_path = tmp_path
        self.t1 = t1
        self.app = WebApp()
        self.overrides = overrides
        self.engine: Engine | None = None
        self.sip_port = 0

    async def __aenter__(self) -> EngineEnv:
        await self.app.start()
        self.app.route("/hangup", "")
        self.sip_port = free_port()
        rtp = free_port_block(40)
        env = {
            "SOFTSWITCH_SIP__LISTEN": f'["udp:{HOST}:{self.sip_port}", "tcp:{HOST}:{self.sip_port}"]',
            "SOFTSWITCH_SIP__RTP_PORT_MIN": str(rtp if rtp % 2 == 0 else rtp + 1),
            "SOFTSWITCH_SIP__RTP_PORT_MAX": str(rtp + 39),
            "SOFTSWITCH_HTTP__LISTEN": f"{HOST}:{free_port()}",
            "SOFTSWITCH_HTTP__AUTH_TOKEN": AUTH_TOKEN,
            "SOFTSWITCH_INBOUND__ANSWER_URL": self.app.url("/answer"),
            "SOFTSWITCH_INBOUND__HANGUP_URL": self.app.url("/hangup"),
            "SOFTSWITCH_STORAGE__PATH": str(self.tmp_path / "softswitch.db"),
            "SOFTSWITCH_STORAGE__RECORDINGS_DIR": str(self.tmp_path / "recordings"),
            "SOFTSWITCH_USERS": "[]",
        }
        env.update({k: v.replace("{app}", self.app.base_url) for k, v in self.overrides.items()})
        config = load_config(None, env=env)
        fast = WebhookSettings(request_timeout=3.0, fetch_backoff=0.05, callback_backoff=0.05, fetch_total=10.0)
        timers = TimerConfig(t1=self.t1) if self.t1 else None
        self.engine = Engine(config, webhook_settings=fast, sip_timers=timers,
                             outbox_options={"base_delay": 0.3, "poll_interval": 0.2, "jitter": 0.0})
        await self.engine.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.engine is not None:
            await self.engine.stop()
        await self.app.stop()

    @property
    def uri(self) -> str:
        return f"sip:100@{HOST}:{self.sip_port}"

    def xml(self, path: str, body: str) -> None:
        self.app.route(path, body if body.startswith("<Response") else f"<Response>{body}</Response>")

    async def hangup_callback(self, timeout: float = 10.0) -> dict[str, str]:
        [req] = await self.app.wait_for("/hangup", count=1, timeout=timeout)
        assert req.signature_valid(AUTH_TOKEN), "hangup callback signature does not validate with the plivo SDK"
        return req.params


class Heard:
    """An AudioSink keeping every frame the phone received."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def write_frame(self, pcm: bytes) -> None:
        self.frames.append(pcm)

    def loud_frames(self, threshold: float = 300.0) -> int:
        return sum(1 for f in self.frames if rms(f) > threshold)


def rms(pcm: bytes) -> float:
    n = len(pcm) // 2
    if not n:
        return 0.0
    samples = struct.unpack(f"<{n}h", pcm[: n * 2])
    return math.sqrt(sum(s * s for s in samples) / n)


class Phone:
    """A caller on softswitch's own stack: `await phone.dial(uri)`, watch `events`, `heard`, `hangup()`."""

    def __init__(self) -> None:
        self.ua = UserAgent()
        self.allocator = PortAllocator(*_even_range())
        self.media: RtpSession | None = None
        self.leg: OutboundLeg | None = None
        self.heard = Heard()
        self.events: list[LegEvent] = []
        self._pump: asyncio.Task[None] | None = None
        self.answered = asyncio.Event()
        self.early = asyncio.Event()
        self.ended = asyncio.Event()

    async def __aenter__(self) -> Phone:
        await self.ua.start([("udp", HOST, 0)])
        self.media = await RtpSession.open(self.allocator, HOST, HOST)
        self.media.add_sink(self.heard)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.leg is not None and not self.ended.is_set():
            await self.leg.hangup()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self.media is not None:
            self.media.close()
        await self.ua.stop()

    async def dial(self, uri: str, headers: list[tuple[str, str]] | None = None,
                   from_uri: str = "sip:+15557770000@127.0.0.1", credentials: Credentials | None = None) -> OutboundLeg:
        assert self.media is not None
        offer = self.media.local_sdp_offer()
        self.leg = await self.ua.invite(uri, from_uri=from_uri, sdp=offer, headers=headers, credentials=credentials)
        self._pump = asyncio.ensure_future(self._events())
        return self.leg

    async def _events(self) -> None:
        assert self.leg is not None and self.media is not None
        while True:
            event = await self.leg.events.get()
            self.events.append(event)
            if isinstance(event, (EarlyMedia, Answered)) and self.media.negotiated is None:
                sdp = event.sdp if isinstance(event, EarlyMedia) else event.sdp
                if sdp:
                    self.media.accept_answer(sdp)
            if isinstance(event, EarlyMedia):
                self.early.set()
            elif isinstance(event, Answered):
                self.answered.set()
            elif isinstance(event, Ended):
                self.ended.set()
                return

    @property
    def end_cause(self) -> Any:
        ended = [e for e in self.events if isinstance(e, Ended)]
        return ended[0].cause if ended else None

    def statuses(self) -> list[int]:
        return [e.status for e in self.events if isinstance(e, Ringing)]

    async def send_digits(self, digits: str) -> None:
        assert self.media is not None
        await self.media.send_dtmf(digits)

    async def hangup(self) -> None:
        assert self.leg is not None
        await self.leg.hangup()

    def heard_seconds(self) -> float:
        return len(self.heard.frames) * FRAME_BYTES / 2 / 8000


_next_range = [0]


def _even_range() -> tuple[int, int]:
    base = free_port_block(20)
    base += base % 2
    return base, base + 19


class FarEnd:
    """A B-leg endpoint on softswitch's own stack (a trunk or a SIP user): answers after `ring_for` seconds with
    a real RTP session (or rejects with `reject`), records what it hears, can press keys and hang up."""

    def __init__(self, *, ring_for: float = 0.2, reject: int | None = None, answer: bool = True,
                 codecs: tuple[str, ...] = ("PCMU", "PCMA")) -> None:
        self.ua = UserAgent(on_invite=self._on_invite)
        self.allocator = PortAllocator(*_even_range())
        self.ring_for = ring_for
        self.reject = reject
        self.answer = answer
        self.codecs = codecs
        self.legs: list[Any] = []
        self.media: RtpSession | None = None
        self.heard = Heard()
        self.answered = asyncio.Event()
        self.ended = asyncio.Event()
        self.end_cause: Any = None
        self.invites: list[Any] = []
        self.digits: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> FarEnd:
        await self.ua.start([("udp", HOST, 0)])
        return self

    async def __aexit__(self, *exc: object) -> None:
        for leg in self.legs:
            if not leg.ended.is_set():
                await leg.hangup()
        for task in self._tasks:
            task.cancel()
        if self.media is not None:
            self.media.close()
        await self.ua.stop()

    @property
    def port(self) -> int:
        return self.ua.port("udp")

    def _on_invite(self, leg: Any) -> None:
        self.legs.append(leg)
        self.invites.append(leg.invite)
        task = asyncio.ensure_future(self._handle(leg))
        self._tasks.add(task)

    async def _handle(self, leg: Any) -> None:
        await leg.ring()
        await asyncio.sleep(self.ring_for)
        if self.reject is not None:
            await leg.reject(self.reject)
        elif self.answer and not leg.ended.is_set():
            self.media = await RtpSession.open(self.allocator, HOST, HOST, codecs=self.codecs)
            self.media.add_sink(self.heard)
            self.media.add_dtmf_listener(lambda e: self.digits.append(e.digit))
            await leg.answer(self.media.answer(leg.remote_sdp))
            self.answered.set()
        while True:
            event = await leg.events.get()
            if isinstance(event, Ended):
                self.end_cause = event.cause
                self.ended.set()
                return

    async def press(self, digits: str) -> None:
        assert self.media is not None
        await self.media.send_dtmf(digits)

    async def hangup(self) -> None:
        await self.legs[-1].hangup()
