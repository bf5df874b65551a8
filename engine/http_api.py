"""The engine's HTTP server (aiohttp): recordings at their RecordUrl and `/health`.

The Plivo-shaped REST API and `/metrics` join here with the daemon/operations issue. This module maps HTTP
requests to engine calls; it holds no call logic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .recordings import RECORDINGS_PATH, recording_file

if TYPE_CHECKING:
    from .engine import Engine


def build_app(engine: Engine) -> web.Application:
    app = web.Application()

    async def health(request: web.Request) -> web.Response:
        """200 {"status": "ok", ...}; 503 {"status": "draining", ...} from SIGTERM on (load balancers stop sending).
        outbox_depth: callbacks waiting for a retry (null when the store cannot say)."""
        draining = engine.admission.draining
        depth: int | None = None
        if engine.store is not None and not engine.store.closed:
            try:
                depth = await engine.store.depth()
            except Exception:  # health must answer even when the database is busy or closing
                depth = None
        body = {"status": "draining" if draining else "ok", "calls": len(engine.calls), "draining": draining,
                "outbox_depth": depth}
        return web.json_response(body, status=503 if draining else 200)

    async def recording(request: web.Request) -> web.StreamResponse:
        path = recording_file(engine.recordings_dir, request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound(text="no such recording")
        content_type = "audio/mpeg" if path.suffix == ".mp3" else "audio/wav"
        return web.FileResponse(path, headers={"Content-Type": content_type})

    app.router.add_get("/health", health)
    app.router.add_get(RECORDINGS_PATH + "{name}", recording)
    for add_routes in engine.http_route_builders:  # the REST API, /metrics ... (each module adds its own)
        add_routes(app, engine)
    return app


class HttpServer:
    def __init__(self, engine: Engine, host: str, port: int) -> None:
        self.engine = engine
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        self._runner = web.AppRunner(build_app(self.engine), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        if self.port == 0 and server is not None and server.sockets:  # type: ignore[union-attr]
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
