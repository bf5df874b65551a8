"""The webhook app of `python -m bench`, run in its own process: `python -m bench.app --port P --number N`.

POST/GET /answer returns the seed Dial flow (a `<Number>` through the trunk, with the trunk's digest credentials
on the Dial); /hangup takes the hangup callback; both only count. GET /stats gives the counts as JSON (answers,
hangups, hangups by HangupCause); POST /reset zeroes them. Nothing is validated or stored: this app must cost as
little CPU as possible, because it shares the machine with the engine under test.
"""

from __future__ import annotations

import argparse
import gc
import json
from collections import Counter

from aiohttp import web

TRUNK_USER = "trunkuser"
TRUNK_PASSWORD = "trunkpass"


def dial_xml(number: str) -> bytes:
    return (
        f'<Response><Dial sipAuthUsername="{TRUNK_USER}" sipAuthPassword="{TRUNK_PASSWORD}">'
        f"<Number>{number}</Number></Dial></Response>"
    ).encode()


def make_app(number: str) -> web.Application:
    body = dial_xml(number)
    counts: Counter[str] = Counter()

    async def answer(request: web.Request) -> web.Response:
        counts["answer"] += 1
        return web.Response(body=body, content_type="application/xml")

    async def hangup(request: web.Request) -> web.Response:
        form = await request.post()
        counts["hangup"] += 1
        counts["cause:" + str(form.get("HangupCause", ""))] += 1
        return web.Response(text="OK")

    async def stats(request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(dict(counts)), content_type="application/json")

    async def reset(request: web.Request) -> web.Response:
        counts.clear()
        return web.Response(text="OK")

    app = web.Application()
    app.router.add_route("*", "/answer", answer)
    app.router.add_route("*", "/hangup", hangup)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    return app


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--number", default="15551234567", help="the <Number> dialled")
    args = ap.parse_args(argv)
    app = make_app(args.number)
    gc.freeze()
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None, backlog=1024)


if __name__ == "__main__":
    main()
