"""Micro-benchmark for the webhook HTTP client (not a test): CPU per request of engine/webhooks.py next to the
libraries under it, all against the same local app.

Run: .venv/bin/python -m bench.webhook_client [-n REQUESTS] [-r ROUNDS] [-c CONCURRENCY] [--profile VARIANT]
                                             [--compare GIT-REV]

The app is a minimal keep-alive HTTP/1.1 server on 127.0.0.1 in a separate process (plain asyncio, so its own CPU
stays out of the figures): every request gets a ~200-byte XML document with a Content-Length. In this process,
``time.process_time()`` (every thread of the process: the store's SQLite thread too) is measured over ``-n``
requests kept ``-c`` in flight, for:

  (a) aiohttp    raw ``aiohttp.ClientSession`` POST of an answer_url-sized form, body read;
  (b) httpx      ``httpx.AsyncClient(transport=httpx_aiohttp.AiohttpTransport())`` POST of the same form;
  (b2) transport the same request as an ``httpx.Request`` handed to that transport directly, body read with
                 ``aread`` (what httpx's API costs on this transport without the client: the floor for (c));
  (c) request    ``Webhooks.request``: ~20 session params merged, signed (V3 + nonce), sent, body read (capped);
  (d) fetch_xml  ``Webhooks.fetch_xml`` with a ``validate`` function (the answer fetch);
  (e) callback   ``Webhooks.post_callback`` of a hangup callback with a real ``engine.store.Store`` on a temporary
                 SQLite file (outbox row held before the attempt, deleted once delivered).

``--compare REV`` adds (c)-(e) for engine/webhooks.py and engine/signature.py as they are at git revision REV
(e.g. HEAD), in the same run: before/after figures that share the machine's noise.

Logging is configured as the daemon does (structlog JSON at info, the auth token registered as a secret) and
rendered into /dev/null, so the per-request log line is part of the figures. Variants are interleaved over
``-r`` rounds and the best round of each is kept (the machine is shared and noisy); ratios are to (a) of the same
run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

if __package__ in (None, ""):  # run as a file: the repository instead of bench/ (whose profile.py shadows the stdlib's)
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import aiohttp  # noqa: E402
import httpx  # noqa: E402
from httpx_aiohttp import AiohttpTransport  # noqa: E402

from engine.logs import add_secret, configure_logging  # noqa: E402
from engine.store import Store  # noqa: E402
from engine.webhooks import Webhooks  # noqa: E402

TOKEN = "bench-auth-token-0123456789"
XML = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Response>\n  <Speak voice="WOMAN" language="en-US">'
    b"Thank you for calling. Please hold the line.</Speak>\n  <Hangup/>\n</Response>\n"
)
SESSION = {
    "CallUUID": "3f1c0a6e-5b2d-4c1e-9a7f-00000000c0de",
    "RequestUUID": "3f1c0a6e-5b2d-4c1e-9a7f-00000000c0de",
    "ALegUUID": "3f1c0a6e-5b2d-4c1e-9a7f-00000000c0de",
    "ALegRequestUUID": "3f1c0a6e-5b2d-4c1e-9a7f-00000000c0de",
    "From": "14155550100",
    "To": "14155550199",
    "CallerName": "Alice Example",
    "Direction": "inbound",
    "CallStatus": "in-progress",
    "Event": "StartApp",
    "SessionStart": "2026-05-09 07:35:25.123456",
    "STIRAttestation": "Not Applicable",
    "STIRVerification": "Not Verified",
    "SIP-H-To": "<sip:14155550199@127.0.0.1>",
    "BillRate": "0.00000",
    "ParentAuthID": "MAXXXXXXXXXXXXXXXXXX",
    "AuthID": "MAXXXXXXXXXXXXXXXXXX",
    "X-PH-Tenant": "acme",
    "X-PH-Campaign": "spring-2026",
    "ForwardedFrom": "",
}
HANGUP = {
    "HangupCause": "NORMAL_CLEARING",
    "HangupCauseName": "Normal Hangup",
    "HangupCauseCode": "4000",
    "HangupSource": "Caller",
    "CallStatus": "completed",
    "Duration": "12",
    "BillDuration": "12",
    "StartTime": "2026-05-09 07:35:25",
    "AnswerTime": "2026-05-09 07:35:26",
    "EndTime": "2026-05-09 07:35:38",
}
FORM = urlencode(SESSION).encode()
FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "softswitch"}


# --- the app, in its own process ------------------------------------------------------------------------------


class _AppProtocol(asyncio.Protocol):
    RESPONSE = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: %d\r\n\r\n" % len(XML)
    ) + XML

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                length = int(head[at + 17 :].split(b"\r\n", 1)[0])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.transport.write(self.RESPONSE)


def _serve(sock: socket.socket) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_AppProtocol, sock=sock)
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


# --- the variants ---------------------------------------------------------------------------------------------

Job = Callable[[], Awaitable[Any]]


async def _run(job: Job, requests: int, concurrency: int) -> float:
    """CPU seconds per request for ``requests`` calls of ``job``, ``concurrency`` in flight."""
    left = requests

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await job()

    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - started) / requests


def _old_webhooks(rev: str, into: Path) -> types.ModuleType:
    """engine/webhooks.py (with its engine/signature.py) as they are at git revision ``rev``, imported under
    other names."""
    root = Path(__file__).resolve().parent.parent

    def show(path: str) -> str:
        return subprocess.run(["git", "show", f"{rev}:{path}"], cwd=root, check=True, capture_output=True,
                              text=True).stdout

    (into / "_bench_old_signature.py").write_text(show("engine/signature.py"))
    (into / "_bench_old_webhooks.py").write_text(
        show("engine/webhooks.py").replace("from engine.signature import", "from _bench_old_signature import")
    )
    sys.path.insert(0, str(into))
    return importlib.import_module("_bench_old_webhooks")


async def _variants(
    url: str, store: Store, old: types.ModuleType | None
) -> tuple[dict[str, Job], Callable[[], Awaitable[None]]]:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200))
    client = httpx.AsyncClient(transport=AiohttpTransport(), headers={"User-Agent": "softswitch"})
    webhooks = Webhooks(TOKEN, store=store)
    before = old.Webhooks(TOKEN, store=store) if old is not None else None
    # a hangup callback goes to the app's hangup_url; the CallUUID is fresh per call (the store looks it up)
    counter = iter(range(10**9))

    def valid(body: bytes) -> bytes:
        if not body.lstrip().startswith(b"<?xml") and b"<Response" not in body:
            raise ValueError("not a Response document")
        return body

    async def raw() -> None:
        async with session.post(url, data=FORM, headers=FORM_HEADERS) as response:
            await response.read()

    async def via_httpx() -> None:
        response = await client.post(url, content=FORM, headers=FORM_HEADERS)
        response.content  # noqa: B018 - read already: the attribute is what callers use

    transport = AiohttpTransport()
    wire = httpx.URL(url)
    host = wire.netloc
    timeouts = httpx.Timeout(8.0, connect=3.0).as_dict()

    async def via_transport() -> None:
        request = httpx.Request(
            "POST", wire, headers=[(b"Host", host), (b"Content-Length", str(len(FORM)).encode()),
                                   *client.headers.raw, (b"Content-Type", b"application/x-www-form-urlencoded")],
            stream=httpx.ByteStream(FORM), extensions={"timeout": timeouts},
        )
        request.read()
        response = await transport.handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()

    def ours(w: Any) -> tuple[Job, Job, Job]:
        async def request() -> None:
            response = await w.request(url, "POST", {}, session_params=SESSION, kind="answer")
            response.content  # noqa: B018

        async def fetch() -> None:
            await w.fetch_xml(url, "POST", {}, session_params=SESSION, validate=valid)

        async def callback() -> None:
            uuid = f"3f1c0a6e-5b2d-4c1e-9a7f-{next(counter):012d}"
            ok = await w.post_callback(
                url, "POST", HANGUP, session_params={**SESSION, "CallUUID": uuid}, call_uuid=uuid, kind="hangup"
            )
            assert ok

        return request, fetch, callback

    async def close() -> None:
        await session.close()
        await client.aclose()
        await transport.aclose()
        await webhooks.close()
        if before is not None:
            await before.close()

    request, fetch, callback = ours(webhooks)
    jobs: dict[str, Job] = {
        "(a) aiohttp": raw,
        "(b) httpx+aiohttp": via_httpx,
        "(b2) httpx transport": via_transport,
        "(c) Webhooks.request": request,
        "(d) Webhooks.fetch_xml": fetch,
        "(e) Webhooks.post_callback": callback,
    }
    if before is not None:
        request, fetch, callback = ours(before)
        jobs |= {"(c) before: request": request, "(d) before: fetch_xml": fetch, "(e) before: post_callback": callback}
    return jobs, close


async def _bench(
    url: str, requests: int, rounds: int, concurrency: int, profile: str | None, compare: str | None
) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as tmp:
        old = _old_webhooks(compare, Path(tmp)) if compare else None
        store = await Store.open(Path(tmp) / "softswitch.db")
        jobs, close = await _variants(url, store, old)
        try:
            for job in jobs.values():  # warm up: connections, caches, lazy imports
                await _run(job, max(200, concurrency * 5), concurrency)
            if profile is not None:
                import cProfile  # here, not at the top: see the sys.path note there
                import pstats

                [name] = [n for n in jobs if profile in n] or [sys.exit(f"no variant matches {profile!r}")]
                profiler = cProfile.Profile()
                profiler.enable()
                cpu = await _run(jobs[name], requests, concurrency)
                profiler.disable()
                print(f"{name}: {cpu * 1e6:.0f} µs/request (under the profiler)", file=sys.__stdout__)
                stats = pstats.Stats(profiler, stream=sys.__stdout__)
                stats.sort_stats("tottime").print_stats(30)
                stats.sort_stats("cumulative").print_stats(45)
                return
            best = {name: float("inf") for name in jobs}
            for number in range(1, rounds + 1):
                for name, job in jobs.items():
                    best[name] = min(best[name], await _run(job, requests, concurrency))
                print(f"round {number}/{rounds} done", file=sys.__stderr__, flush=True)
            base = best["(a) aiohttp"]
            print(f"{'variant':30} {'CPU µs/request':>15} {'x aiohttp':>10}", file=sys.__stdout__)
            for name, cpu in sorted(best.items(), key=lambda item: item[0].replace("before: ", "")):
                print(f"{name:30} {cpu * 1e6:15.0f} {cpu / base:10.2f}", file=sys.__stdout__)
            print(f"({requests} requests x {rounds} rounds per variant, {concurrency} in flight, best round)",
                  file=sys.__stdout__)
        finally:
            await close()
            await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--requests", type=int, default=2000, help="requests per variant and round")
    parser.add_argument("-r", "--rounds", type=int, default=5)
    parser.add_argument("-c", "--concurrency", type=int, default=20)
    parser.add_argument("--profile", metavar="VARIANT", help="cProfile one variant (e.g. request, fetch, callback)")
    parser.add_argument("--compare", metavar="GIT-REV", help="also run (c)-(e) with the client as of this revision")
    args = parser.parse_args()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/answer"
    app = multiprocessing.get_context("spawn").Process(target=_serve, args=(sock,), daemon=True)
    app.start()
    sock.close()

    configure_logging("info", json=True)  # as the daemon runs; rendered into /dev/null below
    add_secret(TOKEN)
    devnull = open(os.devnull, "w")  # noqa: SIM115 - open for the whole run
    sys.stderr = devnull
    try:
        asyncio.run(_bench(url, args.requests, args.rounds, args.concurrency, args.profile, args.compare))
    finally:
        sys.stderr = sys.__stderr__
        devnull.close()
        app.terminate()
        app.join(5)


if __name__ == "__main__":
    main()
