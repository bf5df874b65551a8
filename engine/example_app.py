"""The bundled example app: a small aiohttp web app serving the client's seed examples (spec §0.4) as Plivo XML.

It plays the customer's side of softswitch — the answer_url, the Dial action URL, the hangup callback — so the engine
can be tried without writing an app first (`softswitch demo` runs it in-process; docker-compose runs it as the
`webhook` service; the engine's embedded default answer_url is http://127.0.0.1:8000/answer, its default address).

    python -m engine.example_app [--host 127.0.0.1] [--port 8000] [--auth-token TOKEN] [--timezone Europe/Paris]

Routes (GET or POST; parameters may come in the query string or the form):

| path | document |
|---|---|
| `/answer` | picks a seed by the called number (`To`): see `NUMBERS`; any other number gets a short welcome |
| `/seed/1` | sequential fallback: two `<Dial timeout="15" action="/dial-status/">`, then `<Speak>` |
| `/seed/2` | `<Speak>` then `<Hangup/>` |
| `/seed/3` | `<Speak>`, `<Hangup schedule="N"/>` (60 by default), `<Play loop="0">/audio/music.wav</Play>` |
| `/seed/4` | business hours (Mon-Fri 09:00-17:00 in `--timezone`): closed → Speak + Hangup, open → Speak + Dial; an |
|           | `at=2024-01-08T10:00` parameter fixes "now" (how the demo shows both branches) |
| `/seed/5` | blocked caller: `<Hangup reason="rejected"/>` (the caller gets 603, never answered) |
| `/seed/6` | `<Wait length="5"/>` between two Speaks |
| `/seed/6-voicemail` | a greeting, `<Wait length="5" beep="true"/>`, the message (voicemail drop) |
| `/seed/7` | `<PreAnswer><Speak/></PreAnswer><Dial><Number/></Dial>`: early media, then the call is bridged |
| `/dial-status/` | the Dial action URL: records the callback, answers an empty body (the engine goes on, seed 1) |
| `/hangup` | the hangup callback: recorded |
| `/audio/music.wav` | a 1 s two-note WAV (440 Hz / 660 Hz, 16 kHz mono) for `<Play>` |
| `/events` | every request the app received, as JSON (what `softswitch demo` and curious humans read) |

With `--auth-token` (the engine's `http.auth_token`) every request's `X-Plivo-Signature-V3` is checked and the result
kept with the request (`signature_ok`); the app answers either way, it is an example, not a gatekeeper.

What does not live here: anything the engine itself uses. The engine never imports this module.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import io
import math
import struct
import sys
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

from .signature import NONCE_HEADER, SIGNATURE_HEADER, sign_v3

__all__ = ["NUMBERS", "ExampleApp", "Request", "business_open", "main", "music_wav"]

# Called numbers (`To`) that /answer maps to a seed example; the numbers the seeds dial out to are below.
NUMBERS: dict[str, str] = {
    "1001": "1",
    "1002": "2",
    "1003": "3",
    "1004": "4",
    "1005": "5",
    "1006": "6",
    "1016": "6-voicemail",
    "1007": "7",
}
# Numbers the seeds dial. The demo's busy trunk takes the 1555 prefix; everything else goes to the default trunk.
SEED1_FIRST = "15551230001"
SEED1_SECOND = "16661230001"
SEED4_OPEN = "16661230004"
SEED7_DIAL = "16661230007"

OPEN_DAYS = range(0, 5)  # Monday..Friday
OPEN_HOURS = (9, 17)  # 09:00 <= now < 17:00


@dataclass(frozen=True)
class Request:
    """One request the app received."""

    at: float
    """``time.time()`` when it arrived."""
    method: str
    path: str
    params: dict[str, str]
    """Query and form merged (the form wins)."""
    signature_ok: bool | None = None
    """None when the app has no auth token to check with."""
    status: int = 200
    document: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"at": self.at, "method": self.method, "path": self.path, "params": self.params,
                "signature_ok": self.signature_ok, "status": self.status}


def business_open(now: datetime) -> bool:
    """Mon-Fri, 09:00 to 17:00."""
    return now.weekday() in OPEN_DAYS and OPEN_HOURS[0] <= now.hour < OPEN_HOURS[1]


def music_wav(seconds: float = 1.0, rate: int = 16000) -> bytes:
    """Two notes, 440 Hz then 660 Hz, with soft edges: a short loop that is clearly not silence and not speech."""
    n = int(seconds * rate)
    half = n // 2
    ramp = int(0.01 * rate)
    samples = []
    for i in range(n):
        freq = 440.0 if i < half else 660.0
        j = i if i < half else i - half
        edge = min(1.0, j / ramp, (half - j) / ramp) if ramp else 1.0
        samples.append(int(0.35 * 32767 * edge * math.sin(2 * math.pi * freq * i / rate)))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(struct.pack(f"<{n}h", *samples))
    return buf.getvalue()


def _doc(*elements: str) -> str:
    return '<?xml version="1.0" encoding="UTF-8"?>\n<Response>\n' + "".join(f"  {e}\n" for e in elements) + \
        "</Response>\n"


def _speak(text: str) -> str:
    return f"<Speak>{escape(text)}</Speak>"


@dataclass
class ExampleApp:
    """The app. ``await app.start()`` binds ``host:port`` (0 picks a free port); ``app.requests`` is the log."""

    host: str = "127.0.0.1"
    port: int = 8000
    auth_token: str | None = None
    timezone: str = "UTC"
    hangup_schedule: int = 60
    """Seed 3's `<Hangup schedule>` in seconds (the spec's 60; the demo uses a few seconds)."""
    clock: Callable[[], float] = time.time
    requests: list[Request] = field(default_factory=list)
    _runner: web.AppRunner | None = field(default=None, repr=False)
    _arrived: asyncio.Condition | None = field(default=None, repr=False)
    _music: bytes = field(default=b"", repr=False)
    zone: ZoneInfo = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.zone = ZoneInfo(self.timezone)

    # -- lifecycle --------------------------------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("GET", "/events", self._events)
        app.router.add_route("GET", "/audio/music.wav", self._audio)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def start(self) -> ExampleApp:
        self._arrived = asyncio.Condition()
        self._music = music_wav()
        runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    # -- the log ------------------------------------------------------------------------------------------------
    def requests_for(self, call_uuid: str) -> list[Request]:
        return [r for r in self.requests if r.params.get("CallUUID") == call_uuid]

    async def wait_for(self, predicate: Callable[[list[Request]], bool], timeout: float) -> bool:
        """Wait until ``predicate(requests)`` holds (True), or ``timeout`` seconds (False)."""
        assert self._arrived is not None, "start() first"
        try:
            async with asyncio.timeout(timeout), self._arrived:
                await self._arrived.wait_for(lambda: predicate(self.requests))
        except TimeoutError:
            return False
        return True

    # -- documents ----------------------------------------------------------------------------------------------
    def document(self, seed: str, params: dict[str, str]) -> tuple[int, str]:
        """(status, XML) of a seed example; 404 for an unknown one."""
        if seed == "1":
            return 200, _doc(
                f'<Dial timeout="15" action="/dial-status/"><Number>{SEED1_FIRST}</Number></Dial>',
                f'<Dial timeout="15" action="/dial-status/"><Number>{SEED1_SECOND}</Number></Dial>',
                _speak("Thank you. Goodbye."),
            )
        if seed == "2":
            return 200, _doc(_speak("Thank you for calling softswitch."), "<Hangup/>")
        if seed == "3":
            n = self.hangup_schedule
            return 200, _doc(_speak(f"This call will end in {n} seconds."), f'<Hangup schedule="{n}"/>',
                             '<Play loop="0">/audio/music.wav</Play>')
        if seed == "4":
            now = self._now(params.get("at", ""))
            if now is None:
                return 400, f"bad 'at' parameter {params.get('at')!r}: use ISO 8601, e.g. 2024-01-08T10:00"
            if not business_open(now):
                return 200, _doc(_speak("We are closed. Our hours are nine to five, Monday to Friday."), "<Hangup/>")
            return 200, _doc(_speak("We are open. Connecting you."), f"<Dial><Number>{SEED4_OPEN}</Number></Dial>")
        if seed == "5":
            return 200, _doc('<Hangup reason="rejected"/>')
        if seed == "6":
            return 200, _doc(_speak("First message."), '<Wait length="5"/>', _speak("Second message."))
        if seed == "6-voicemail":
            return 200, _doc(_speak("Hello."), '<Wait length="5" beep="true"/>',
                             _speak("This is your appointment reminder."), "<Hangup/>")
        if seed == "7":
            return 200, _doc(f"<PreAnswer>{_speak('Please hold while we connect your call.')}</PreAnswer>",
                             f"<Dial><Number>{SEED7_DIAL}</Number></Dial>")
        return 404, f"no seed example {seed!r}"

    def _now(self, at: str) -> datetime | None:
        if not at:
            return datetime.fromtimestamp(self.clock(), self.zone)
        try:
            parsed = datetime.fromisoformat(at)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=self.zone)

    # -- serving ------------------------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.Response:
        form: dict[str, str] = {}
        if request.method == "POST":
            with contextlib.suppress(Exception):
                form = {k: str(v) for k, v in (await request.post()).items()}
        params = {**request.query, **form}
        signature_ok = self._check_signature(request, form) if self.auth_token else None
        path = request.path
        status, body = 200, ""
        if path == "/answer":
            seed = NUMBERS.get(params.get("To", "").lstrip("+"))
            if seed is None:
                body = _doc(_speak("Welcome to softswitch. Dial 1001 to 1007 to hear the seed examples."),
                            "<Hangup/>")
            else:
                status, body = self.document(seed, params)
        elif path.startswith("/seed/"):
            status, body = self.document(path.removeprefix("/seed/").strip("/"), params)
        elif path in ("/dial-status/", "/dial-status", "/hangup"):
            body = ""  # recorded; nothing to say (the engine goes on with the next element)
        else:
            status, body = 404, "no such path"
        self.requests.append(Request(self.clock(), request.method, path, params, signature_ok, status,
                                     body if status == 200 else ""))
        if self._arrived is not None:
            async with self._arrived:
                self._arrived.notify_all()
        content_type = "text/xml" if status == 200 else "text/plain"
        return web.Response(status=status, text=body, content_type=content_type)

    def _check_signature(self, request: web.Request, form: dict[str, str]) -> bool:
        """X-Plivo-Signature-V3 over the URL as requested and the posted form (what the plivo SDK checks)."""
        assert self.auth_token is not None
        nonce = request.headers.get(NONCE_HEADER, "")
        given = request.headers.get(SIGNATURE_HEADER, "")
        url = f"{request.scheme}://{request.host}{request.raw_path}"
        expected = sign_v3(url, nonce, self.auth_token, form, request.method)
        return any(hmac.compare_digest(expected, s.strip()) for s in given.split(",") if s.strip())

    async def _audio(self, request: web.Request) -> web.Response:
        return web.Response(body=self._music, content_type="audio/wav")

    async def _events(self, request: web.Request) -> web.Response:
        return web.json_response([r.as_json() for r in self.requests])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.example_app",
                                     description="softswitch's example app: the seed examples as Plivo XML.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--auth-token", default=None, help="the engine's http.auth_token: check signatures")
    parser.add_argument("--timezone", default="UTC", help="business hours of seed 4 are in this zone")
    parser.add_argument("--hangup-schedule", type=int, default=60, help="seed 3's <Hangup schedule> (s)")
    args = parser.parse_args(argv)
    try:
        app = ExampleApp(args.host, args.port, args.auth_token, args.timezone, args.hangup_schedule)
    except ZoneInfoNotFoundError:
        print(f"example_app: unknown time zone {args.timezone!r}", file=sys.stderr)
        return 2

    async def run() -> None:
        await app.start()
        print(f"example app on {app.base_url} (answer_url {app.url('/answer')})", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await app.stop()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"example_app: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
