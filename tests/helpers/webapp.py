"""A real local HTTP app for engine tests: serves XML per path, records every request, can fail, hang or go down.

What lives here: ``WebApp``, an aiohttp server on a free 127.0.0.1 port that plays the customer's app in tests
(answer_url, fallback_url, action and callback URLs), and ``Recorded``, one request as the app saw it.
What does not: anything the engine itself uses. It binds only to loopback and stops when the test ends.

    async with WebApp() as app:
        app.route("/answer", "<Response><Speak>hi</Speak></Response>")
        app.route("/dyn", lambda req: (200, f"<Response><Speak>{req.params['From']}</Speak></Response>"))
        app.fail("/answer", status=500, times=3)   # the next 3 requests get 500, then the route again
        app.hang("/slow")                          # never answers (until the app stops)
        await app.stop(); await app.start()        # down, then up again on the same port
        url = app.url("/answer")
        [req] = await app.wait_for("/hangup", count=1)
        assert req.params["CallUUID"] == "..." and req.signature_valid("auth-token")

Responses: a static ``str``/``bytes`` body (status 200), or a callable ``(Recorded) -> (status, body)`` (may be
async). Paths without a route answer 404. Responses are ``text/xml`` unless the route says otherwise.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["Recorded", "Responder", "WebApp"]


@dataclass(frozen=True)
class Recorded:
    """One request the app received."""

    path: str
    method: str
    url: str
    """The full URL as the app sees it (``http://host:port`` + raw path and query): what an app passes to the plivo
    SDK's signature validator."""
    headers: dict[str, str]
    """Header names lower-cased."""
    query: dict[str, str]
    form: dict[str, str]
    body: bytes
    time: float
    """``time.monotonic()`` when the request arrived."""
    query_multi: list[tuple[str, str]] = field(default_factory=list)
    form_multi: list[tuple[str, str]] = field(default_factory=list)

    @property
    def params(self) -> dict[str, str]:
        """The parameters the engine sent: the form for POST, the query for GET."""
        return self.form if self.method == "POST" else self.query

    def signature_valid(self, auth_token: str, url: str | None = None) -> bool:
        """Whether ``X-Plivo-Signature-V3`` validates with the public plivo SDK (the reference validator)."""
        from plivo.utils.signature_v3 import validate_v3_signature  # type: ignore[import-untyped]

        return bool(
            validate_v3_signature(
                self.method,
                url or self.url,
                self.headers.get("x-plivo-signature-v3-nonce", ""),
                auth_token,
                self.headers.get("x-plivo-signature-v3", ""),
                params=dict(self.form) if self.method == "POST" else {},
            )
        )


Responder = str | bytes | Callable[[Recorded], "tuple[int, str | bytes] | Awaitable[tuple[int, str | bytes]]"]


@dataclass
class _Route:
    responder: Responder
    content_type: str = "text/xml"
    fail_status: int | None = None
    fail_times: int | None = None
    """How many more requests get ``fail_status`` (None: all of them)."""
    hang: bool = False


class WebApp:
    """A local app server. ``await app.start()`` (or ``async with``); ``await app.stop()`` takes it down, and a
    later ``start()`` brings it back on the same port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.requests: list[Recorded] = []
        self._routes: dict[str, _Route] = {}
        self._runner: web.AppRunner | None = None
        self._release = asyncio.Event()
        self._arrived = asyncio.Condition()

    # --- lifecycle ----------------------------------------------------------------------------------------

    async def start(self) -> WebApp:
        if self._runner is not None:
            return self
        self._release = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        """Take the app down (connections refused until ``start()``); hanging requests are released first."""
        runner, self._runner = self._runner, None
        self._release.set()
        if runner is not None:
            await runner.cleanup()

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def __aenter__(self) -> WebApp:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- configuration ------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def route(self, path: str, responder: Responder, *, content_type: str = "text/xml") -> None:
        """Serve ``path``: a static body (200) or a callable ``(Recorded) -> (status, body)``."""
        self._routes[path] = _Route(responder, content_type)

    def fail(self, path: str, status: int = 500, times: int | None = None) -> None:
        """The next ``times`` requests to ``path`` (all, if None) get ``status`` with an empty body."""
        route = self._routes.setdefault(path, _Route(""))
        route.fail_status, route.fail_times = status, times

    def hang(self, path: str, hang: bool = True) -> None:
        """Requests to ``path`` never get an answer (until ``hang(path, False)`` or ``stop()``)."""
        route = self._routes.setdefault(path, _Route(""))
        route.hang = hang
        if not hang:
            self._release.set()
            self._release = asyncio.Event()

    # --- inspection ---------------------------------------------------------------------------------------

    def requests_to(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    async def wait_for(self, path: str, count: int = 1, timeout: float = 5.0) -> list[Recorded]:
        """The first ``count`` requests to ``path``, waiting up to ``timeout`` s for them (TimeoutError)."""
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests_to(path)) >= count)
        return self.requests_to(path)[:count]

    # --- serving ------------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        form_multi: list[tuple[str, str]] = []
        if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
            form_multi = [(k, str(v)) for k, v in (await request.post()).items()]
        query_multi = [(k, v) for k, v in request.query.items()]
        recorded = Recorded(
            path=request.path,
            method=request.method,
            url=f"{request.scheme}://{request.host}{request.raw_path}",
            headers={k.lower(): v for k, v in request.headers.items()},
            query=dict(query_multi),
            form=dict(form_multi),
            body=body,
            time=time.monotonic(),
            query_multi=query_multi,
            form_multi=form_multi,
        )
        self.requests.append(recorded)
        async with self._arrived:
            self._arrived.notify_all()

        route = self._routes.get(request.path)
        if route is None:
            return web.Response(status=404, text="no such path")
        if route.hang:
            await self._release.wait()
            return web.Response(status=503, text="released")
        if route.fail_status is not None and (route.fail_times is None or route.fail_times > 0):
            if route.fail_times is not None:
                route.fail_times -= 1
            return web.Response(status=route.fail_status)
        status, payload = await self._respond(route.responder, recorded)
        data = payload.encode() if isinstance(payload, str) else payload
        return web.Response(status=status, body=data, content_type=route.content_type)

    @staticmethod
    async def _respond(responder: Responder, recorded: Recorded) -> tuple[int, str | bytes]:
        if isinstance(responder, str | bytes):
            return 200, responder
        result: Any = responder(recorded)
        if inspect.isawaitable(result):
            result = await result
        status, payload = result
        return int(status), payload
