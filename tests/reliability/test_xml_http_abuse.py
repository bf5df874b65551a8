"""XML and HTTP abuse from the app's side: every bad answer_url gets a clear error and the fallback, in bounded time
and memory.

One engine (in process), one abusive HTTP server (aiohttp, loopback) and one caller per case, all cases at once: each
called number has its own answer_url on the abusive server and the same fallback_url (a document that answers and
says "fallback"). Per case: the call is answered by the fallback, within the bound (the three attempts' timeouts
plus backoff), an `answer_fallback_used` log line carries an error naming the problem, and the engine's memory does
not grow by more than the response cap (1 MiB per request). A last case has no usable fallback either: the call is
rejected with the documented cause (INVALID_ANSWER_XML 8011) and still gets its hangup callback.
"""

from __future__ import annotations

import asyncio
import resource
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web
from caller import Caller
from engine_env import EngineEnv

BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + "".join(f' <!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">\n'
              for i in range(1, 10))
    + ']>\n<Response><Speak>&lol9;</Speak></Response>'
)
XXE = ('<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
       "<Response><Speak>&xxe;</Speak></Response>")
XXE_PARAM = ('<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY % p SYSTEM "http://127.0.0.1:9/evil.dtd"> %p;]>\n'
             "<Response/>")
DEEP = "<Response>" + "<PreAnswer>" * 3000 + "</PreAnswer>" * 3000 + "</Response>"  # 69 KB, 3001 levels
BIG = "<Response>" + "<Speak>padding padding padding</Speak>" * 300_000 + "</Response>"  # ~10 MB
INVALID_UTF8 = b"<Response><Speak>caf\xe9 \xff\xfe</Speak></Response>"
FALLBACK = "<Response><Speak>fallback</Speak></Response>"


def _gzip_bomb() -> bytes:
    """~200 KB of gzip that inflates to 200 MB (compressed chunk by chunk: never 200 MB here)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b" " * 1_000_000
    out = [packer.compress(b"<Response>")]
    out += [packer.compress(chunk) for _ in range(200)]
    out.append(packer.flush())
    return b"".join(out)


GZIP_BOMB = _gzip_bomb()

# number -> (path, what the error must say, bound in seconds)
CASES: dict[str, tuple[str, str, float]] = {
    "2001": ("/billion", "DOCTYPE", 3),
    "2002": ("/xxe", "DOCTYPE", 3),
    "2003": ("/xxe-param", "DOCTYPE", 3),
    "2004": ("/deep", "nested deeper", 3),
    "2005": ("/big", "larger than", 5),
    "2006": ("/endless", "larger than", 5),
    "2007": ("/utf8", "not valid UTF-8", 3),
    "2008": ("/trickle", "timed out", 14),
    "2009": ("/hang", "timed out", 14),
    "2010": ("/redirect", "HTTP 302", 3),
    "2011": ("/gzip-bomb", "larger than", 5),
}


class Abuser:
    """The abusive app server. Streams are produced lazily (one chunk object reused): what it sends costs it nothing."""

    def __init__(self) -> None:
        self.sent: dict[str, int] = {}
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        static = {"/billion": BILLION_LAUGHS, "/xxe": XXE, "/xxe-param": XXE_PARAM, "/deep": DEEP, "/big": BIG}
        for path, text in static.items():
            app.router.add_route("*", path, self.static(text.encode()))
        app.router.add_route("*", "/utf8", self.static(INVALID_UTF8))
        app.router.add_route("*", "/gzip-bomb", self.static(GZIP_BOMB, {"Content-Encoding": "gzip"}))
        app.router.add_route("*", "/endless", self.endless)
        app.router.add_route("*", "/trickle", self.trickle)
        app.router.add_route("*", "/hang", self.hang)
        app.router.add_route("*", "/redirect", self.redirect)
        self.runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @staticmethod
    def static(body: bytes, headers: dict[str, str] | None = None) -> Any:
        async def handler(request: web.Request) -> web.Response:
            return web.Response(body=body, content_type="text/xml", headers=headers)

        return handler

    async def redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(location=str(request.url))  # to itself, for ever

    async def endless(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/xml"})
        await response.prepare(request)
        chunk = b"<Response>" + b"<Speak>x</Speak>" * 4096
        try:
            while True:
                await response.write(chunk)
                self.sent["/endless"] = self.sent.get("/endless", 0) + len(chunk)
        except (ConnectionError, RuntimeError):
            pass
        return response

    async def trickle(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/xml"})
        await response.prepare(request)
        try:
            for byte in b"<Response><Speak>slow</Speak></Response>" * 100:
                await response.write(bytes([byte]))
                await asyncio.sleep(0.2)
        except (ConnectionError, RuntimeError):
            pass
        return response

    async def hang(self, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(3600)
        return web.Response()


@pytest.fixture
async def abuser() -> AsyncIterator[Abuser]:
    server = Abuser()
    await server.start()
    yield server
    await server.stop()


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def test_every_abusive_answer_url_gets_a_clear_error_and_the_fallback(
    tmp_path: Path, abuser: Abuser, figures: dict[str, Any]
) -> None:
    numbers = {f"SOFTSWITCH_INBOUND__NUMBERS__{n}__ANSWER_URL": abuser.url(path) for n, (path, _, _) in CASES.items()}
    numbers |= {f"SOFTSWITCH_INBOUND__NUMBERS__{n}__FALLBACK_URL": "{app}/fallback" for n in CASES}
    numbers |= {f"SOFTSWITCH_INBOUND__NUMBERS__{n}__HANGUP_URL": "{app}/hangup" for n in CASES}
    numbers |= {"SOFTSWITCH_INBOUND__NUMBERS__2099__ANSWER_URL": abuser.url("/billion"),
                "SOFTSWITCH_INBOUND__NUMBERS__2099__FALLBACK_URL": abuser.url("/deep"),
                "SOFTSWITCH_INBOUND__NUMBERS__2099__HANGUP_URL": "{app}/hangup"}
    rss_before = rss_mib()
    peak = [rss_before]
    with structlog.testing.capture_logs() as logs:
        async with EngineEnv(tmp_path, **numbers) as env, Caller() as caller:
            env.xml("/fallback", FALLBACK)

            async def sample() -> None:
                while True:
                    peak[0] = max(peak[0], rss_mib())
                    await asyncio.sleep(0.05)

            sampler = asyncio.ensure_future(sample())
            started = time.monotonic()
            outcomes = await asyncio.gather(*(caller.call(env.uri, to=n, timeout=40) for n in [*CASES, "2099"]))
            sampler.cancel()
            await env.app.wait_for("/hangup", count=len(CASES) + 1, timeout=15)
            hangups = {r.params["To"]: r.params for r in env.app.requests_to("/hangup")}
            elapsed = time.monotonic() - started
    peak_growth = peak[0] - rss_before
    usage = resource.getrusage(resource.RUSAGE_SELF)
    results: dict[str, str] = {}
    for (number, (path, phrase, bound)), outcome in zip(CASES.items(), outcomes, strict=False):
        uuid = hangups[number]["CallUUID"]
        said = [e for e in logs if e.get("call_uuid") == uuid and e["event"] == "answer_fallback_used"]
        errors = " | ".join(str(x) for e in said for x in e["errors"])
        results[path] = f"{'fallback' if outcome.answered else 'NOT ANSWERED'} in {outcome.answered_after or 0:.1f}s"
        assert outcome.answered, f"{path}: {outcome.describe()}"
        assert outcome.answered_after is not None and outcome.answered_after < bound, (path, outcome.answered_after)
        assert phrase in errors, f"{path}: the error does not say {phrase!r}: {errors}"
        assert len(said[0]["errors"]) in (1, 3), said  # 4xx-free: unusable bodies are tried again, 3 times
    rejected = outcomes[-1]
    assert not rejected.answered and rejected.end is not None and rejected.end.status == 500
    assert hangups["2099"]["HangupCause"] == "INVALID_ANSWER_XML" and hangups["2099"]["HangupCauseCode"] == "8011"
    figures.update({"cases": len(CASES) + 1, "fallback_answered": sum(o.answered for o in outcomes[:-1]),
                    "rejected_with_8011": 1, "seconds": round(elapsed, 1),
                    "rss_growth_peak_mib": round(peak_growth, 1), "maxrss_mib": round(usage.ru_maxrss / 1024, 1),
                    "endless_bytes_offered": abuser.sent.get("/endless", 0), "per_case": results})
    assert peak_growth < 60, f"memory grew by {peak_growth:.0f} MiB while reading abusive documents"
