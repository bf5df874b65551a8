"""Webhooks against a real local HTTP app: signed requests, retries and fallback, callbacks kept in the outbox and
delivered when the app comes back (also after a restart). No SIP peers needed."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import structlog
from aiohttp import web

from engine.config import load_config
from engine.logs import configure_logging
from engine.outbox import OutboxWorker
from engine.store import Store
from engine.webhooks import WebhookError, Webhooks, WebhookSettings
from tests.helpers.webapp import WebApp

TOKEN = "Zx9-auth-TOKEN-never-logged-41"
XML = "<Response><Speak>hello</Speak></Response>"
FALLBACK_XML = "<Response><Speak>fallback</Speak></Response>"
SESSION = {
    "CallUUID": "3f1c0a6e-0000-4000-8000-00000000c0de",
    "From": "14155550100",
    "To": "14155550199",
    "CallStatus": "ringing",
    "Direction": "inbound",
}
FAST = WebhookSettings(
    request_timeout=0.4,
    connect_timeout=0.3,
    fetch_attempts=3,
    fetch_total=5.0,
    fetch_backoff=0.05,
    callback_attempts=3,
    callback_backoff=0.05,
)


@pytest.fixture
async def app() -> AsyncIterator[WebApp]:
    async with WebApp() as web_app:
        yield web_app


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "var" / "softswitch.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(db_path)
    yield s
    await s.close()


@pytest.fixture
async def webhooks(store: Store) -> AsyncIterator[Webhooks]:
    w = Webhooks(TOKEN, store=store, settings=FAST)
    yield w
    await w.close()


def fast_worker(store: Store, webhooks: Webhooks) -> OutboxWorker:
    return OutboxWorker(store, webhooks, base_delay=0.05, max_delay=0.2, poll_interval=0.05, jitter=0)


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.02)


# --- request format and signatures ------------------------------------------------------------------------


async def test_post_answer_fetch_sends_signed_form_with_session_and_url_params(app: WebApp, webhooks: Webhooks) -> None:
    app.route("/answer", XML)
    url = app.url("/answer?app=sales&CallStatus=from-url")
    result = await webhooks.fetch_xml(url, "POST", {"CallerName": "Jörg Ü"}, session_params=SESSION)

    assert result.body == XML.encode() and result.url == url and result.attempts == 1 and not result.used_fallback
    [req] = app.requests_to("/answer")
    assert req.method == "POST" and req.headers["content-type"] == "application/x-www-form-urlencoded"
    assert req.query == {"app": "sales", "CallStatus": "from-url"}  # the URL keeps its query...
    assert req.form == {**SESSION, "CallerName": "Jörg Ü", "app": "sales", "CallStatus": "from-url"}  # ...merged
    assert req.headers["x-plivo-signature-v3-nonce"]
    assert req.signature_valid(TOKEN)
    assert not req.signature_valid(TOKEN + "-wrong")


async def test_get_sends_params_in_the_query_merged_with_the_url_query_last_value_wins(
    app: WebApp, webhooks: Webhooks
) -> None:
    app.route("/answer", XML)
    await webhooks.fetch_xml(app.url("/answer?x=1&x=2&keep=yes"), "GET", {"Digits": "123"}, session_params=SESSION)
    [req] = app.requests_to("/answer")
    assert req.method == "GET" and req.body == b"" and req.form == {}
    assert req.query == {**SESSION, "Digits": "123", "x": "2", "keep": "yes"}
    assert [k for k, _ in req.query_multi].count("x") == 1
    assert req.signature_valid(TOKEN)
    assert not req.signature_valid("another-token")


async def test_get_with_non_ascii_params_validates_as_url_plus_params(app: WebApp, webhooks: Webhooks) -> None:
    app.route("/answer", XML)
    await webhooks.fetch_xml(app.url("/answer"), "GET", {"CallerName": "Jörg"}, session_params=SESSION)
    [req] = app.requests_to("/answer")
    from plivo.utils.signature_v3 import validate_v3_signature

    assert validate_v3_signature(
        "GET", app.url("/answer"), req.headers["x-plivo-signature-v3-nonce"], TOKEN,
        req.headers["x-plivo-signature-v3"], params=dict(req.query),
    )


async def test_credentials_in_the_url_are_not_part_of_the_signed_url(app: WebApp, webhooks: Webhooks) -> None:
    app.route("/cb", "ok")
    url = f"http://appuser:app-pass-77@127.0.0.1:{app.port}/cb?token=apptoken"
    assert await webhooks.post_callback(url, "POST", {"Event": "x"}, session_params=SESSION)
    [req] = app.requests_to("/cb")
    assert req.headers["authorization"].startswith("Basic ")
    assert req.signature_valid(TOKEN)


async def test_bad_method_or_url_is_refused_before_sending(webhooks: Webhooks) -> None:
    with pytest.raises(ValueError, match="GET or POST"):
        await webhooks.request("http://127.0.0.1:1/x", "PUT", {})
    with pytest.raises(ValueError, match="http"):
        await webhooks.post_callback("ftp://127.0.0.1/x", "POST", {})


# --- answer fetch: retries and fallback -------------------------------------------------------------------


async def test_answer_url_500_three_times_then_fallback_gets_the_same_params(app: WebApp, webhooks: Webhooks) -> None:
    app.route("/answer", XML)
    app.fail("/answer", status=500)
    app.route("/fallback", FALLBACK_XML)
    result = await webhooks.fetch_xml(
        app.url("/answer"), "POST", {"Extra": "1"}, session_params=SESSION, fallback_url=app.url("/fallback")
    )
    assert result.used_fallback and result.url == app.url("/fallback") and result.body == FALLBACK_XML.encode()
    assert result.attempts == 4 and len(result.errors) == 3 and all("HTTP 500" in e for e in result.errors)
    answers = app.requests_to("/answer")
    assert len(answers) == 3
    [fallback] = app.requests_to("/fallback")
    assert fallback.form == answers[0].form == {**SESSION, "Extra": "1"}
    assert fallback.signature_valid(TOKEN)
    assert webhooks.metrics.fallbacks == 1 and webhooks.metrics.failures == 3 and webhooks.metrics.requests == 4


async def test_hanging_answer_url_times_out_then_fallback_within_bounded_time(
    app: WebApp, webhooks: Webhooks
) -> None:
    app.hang("/answer")
    app.route("/fallback", FALLBACK_XML)
    started = time.monotonic()
    result = await webhooks.fetch_xml(
        app.url("/answer"), "GET", {}, session_params=SESSION, fallback_url=app.url("/fallback"),
        fallback_method="GET",
    )
    elapsed = time.monotonic() - started
    assert result.used_fallback and result.body == FALLBACK_XML.encode()
    assert len(app.requests_to("/answer")) == 3 and all("timed out" in e for e in result.errors)
    assert 3 * FAST.request_timeout <= elapsed < 3 * FAST.request_timeout + 1.5
    assert webhooks.metrics.timeouts == 3


async def test_total_budget_bounds_the_attempts(app: WebApp, store: Store) -> None:
    settings = WebhookSettings(request_timeout=0.4, fetch_attempts=3, fetch_total=0.6, fetch_backoff=0.05)
    async with Webhooks(TOKEN, store=store, settings=settings) as webhooks:
        app.hang("/answer")
        started = time.monotonic()
        with pytest.raises(WebhookError) as caught:
            await webhooks.fetch_xml(app.url("/answer"), "POST", {}, session_params=SESSION)
        assert time.monotonic() - started < 1.0
        assert len(app.requests_to("/answer")) == 2
        assert any("gave up after 0.6 s" in e for e in caught.value.errors)


async def test_empty_body_and_rejected_document_are_failures(app: WebApp, webhooks: Webhooks) -> None:
    bodies = iter(["", "<NotPlivo/>", XML])
    app.route("/answer", lambda req: (200, next(bodies)))

    def validate(body: bytes) -> str:
        if not body.startswith(b"<Response>"):
            raise ValueError("root element must be <Response>")
        return "parsed!"

    result = await webhooks.fetch_xml(app.url("/answer"), "POST", {}, session_params=SESSION, validate=validate)
    assert result.parsed == "parsed!" and result.attempts == 3 and not result.used_fallback
    assert "empty body" in result.errors[0] and "root element must be <Response>" in result.errors[1]


async def test_caller_can_reject_a_body_after_the_fact_and_ask_for_the_fallback(
    app: WebApp, webhooks: Webhooks
) -> None:
    app.route("/answer", "<Response><Bogus/></Response>")
    app.route("/fallback", FALLBACK_XML)
    first = await webhooks.fetch_xml(app.url("/answer"), "POST", {}, session_params=SESSION,
                                     fallback_url=app.url("/fallback"))
    assert not first.used_fallback
    second = await webhooks.fetch_fallback(app.url("/fallback"), "POST", {}, session_params=SESSION,
                                           errors=["answer XML invalid: <Bogus> is not a verb"])
    assert second.body == FALLBACK_XML.encode() and second.errors == ["answer XML invalid: <Bogus> is not a verb"]
    assert app.requests_to("/fallback")[0].form == SESSION


async def test_a_4xx_is_not_retried(app: WebApp, webhooks: Webhooks) -> None:
    app.route("/fallback", FALLBACK_XML)  # /answer has no route: 404
    result = await webhooks.fetch_xml(app.url("/answer"), "POST", {}, session_params=SESSION,
                                      fallback_url=app.url("/fallback"))
    assert len(app.requests_to("/answer")) == 1 and result.used_fallback and "HTTP 404" in result.errors[0]


async def test_everything_failing_raises_with_every_cause(app: WebApp, webhooks: Webhooks) -> None:
    app.fail("/answer", 503)
    app.fail("/fallback", 500)
    with pytest.raises(WebhookError) as caught:
        await webhooks.fetch_xml(app.url("/answer"), "POST", {}, session_params=SESSION,
                                 fallback_url=app.url("/fallback"))
    errors = caught.value.errors
    assert len(errors) == 6 and sum("HTTP 503" in e for e in errors) == 3 and sum("HTTP 500" in e for e in errors) == 3
    await app.stop()
    with pytest.raises(WebhookError) as caught:
        await webhooks.fetch_xml(app.url("/answer"), "POST", {}, session_params=SESSION)
    assert len(caught.value.errors) == 3


# --- callbacks and the outbox -----------------------------------------------------------------------------


async def test_delivered_callback_leaves_nothing_in_the_outbox(
    app: WebApp, webhooks: Webhooks, store: Store
) -> None:
    app.route("/hangup", "ok")
    assert await webhooks.post_callback(app.url("/hangup"), "POST", {"CallStatus": "completed"},
                                        session_params=SESSION, kind="hangup")
    [req] = app.requests_to("/hangup")
    assert req.form["CallStatus"] == "completed" and req.form["CallUUID"] == SESSION["CallUUID"]
    assert await store.depth() == 0 and webhooks.metrics.callbacks_delivered == 1


async def test_callback_to_a_down_app_is_stored_then_delivered_once_when_it_is_back(
    app: WebApp, webhooks: Webhooks, store: Store
) -> None:
    app.route("/hangup", "ok")
    await app.stop()
    hangup = {"CallStatus": "completed", "HangupCause": "NORMAL_CLEARING", "HangupCauseCode": "4000"}
    delivered = await webhooks.post_callback(app.url("/hangup"), "POST", hangup, session_params=SESSION,
                                             kind="hangup")
    assert not delivered
    [entry] = await store.due()
    assert entry.params == {**SESSION, **hangup} and entry.kind == "hangup" and entry.attempts == 3
    assert entry.call_uuid == SESSION["CallUUID"] and entry.last_error

    await app.start()
    worker = fast_worker(store, webhooks)
    worker.start()
    try:
        [req] = await app.wait_for("/hangup", timeout=5)
        await wait_until(lambda: _empty(store))
        await asyncio.sleep(0.2)  # no second delivery
    finally:
        await worker.stop()
    assert len(app.requests_to("/hangup")) == 1
    assert req.form == {**SESSION, **hangup}
    assert req.signature_valid(TOKEN)
    assert worker.delivered == 1


async def _empty(store: Store) -> bool:
    return await store.depth() == 0


async def test_outbox_backs_off_while_the_app_keeps_failing(app: WebApp, webhooks: Webhooks, store: Store) -> None:
    app.fail("/cb", 500)
    entry_id = await store.enqueue(call_uuid="c1", kind="callback", url=app.url("/cb"), method="POST",
                                   params={"a": "b"})
    worker = OutboxWorker(store, webhooks, base_delay=0.1, max_delay=0.4, poll_interval=0.05, jitter=0)

    async def three_failures() -> bool:
        entry = await store.get_entry(entry_id)
        return entry is not None and entry.attempts >= 3

    worker.start()
    try:
        await wait_until(three_failures)
    finally:
        await worker.stop()
    entry = await store.get_entry(entry_id)
    assert entry is not None and "HTTP 500" in entry.last_error and entry.gave_up_at is None
    times = [r.time for r in app.requests_to("/cb")]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19  # 0.1 s, then 0.2 s
    assert [d for d in (worker.next_delay(n) for n in range(1, 8))] == [0.1, 0.2, 0.4, 0.4, 0.4, 0.4, 0.4]


async def test_outbox_gives_up_only_when_told_and_keeps_the_row(app: WebApp, webhooks: Webhooks,
                                                                store: Store) -> None:
    app.fail("/cb", 500)
    entry_id = await store.enqueue(call_uuid="c1", kind="callback", url=app.url("/cb"), method="POST",
                                   params={}, now=time.time() - 100)
    worker = OutboxWorker(store, webhooks, base_delay=0.05, max_age=60)
    assert await worker.run_once() == 0
    entry = await store.get_entry(entry_id)
    assert entry is not None and entry.gave_up_at is not None and await store.depth() == 0


async def test_pending_callback_is_delivered_after_a_restart(app: WebApp, db_path: Path) -> None:
    app.route("/hangup", "ok")
    await app.stop()
    store = await Store.open(db_path)
    webhooks = Webhooks(TOKEN, store=store, settings=FAST)
    assert not await webhooks.post_callback(app.url("/hangup"), "POST", {"CallStatus": "completed"},
                                            session_params=SESSION, kind="hangup")
    await webhooks.close()
    await store.close()  # the engine stops with one callback undelivered

    await app.start()
    store = await Store.open(db_path)  # a new process: new store on the same file, new webhooks, new worker
    webhooks = Webhooks(TOKEN, store=store, settings=FAST)
    worker = OutboxWorker(store, webhooks, base_delay=60, poll_interval=60)  # only the start-up pass can send it
    worker.start()
    try:
        [req] = await app.wait_for("/hangup", timeout=5)
        await wait_until(lambda: _empty(store))
    finally:
        await worker.stop()
        await webhooks.close()
        await store.close()
    assert req.form == {**SESSION, "CallStatus": "completed"} and req.signature_valid(TOKEN)
    assert len(app.requests_to("/hangup")) == 1


async def test_callback_cancelled_by_shutdown_is_stored(app: WebApp, store: Store) -> None:
    app.hang("/cb")
    webhooks = Webhooks(TOKEN, store=store, settings=FAST)
    task = webhooks.spawn_callback(app.url("/cb"), "POST", {"Event": "DialHangup"}, session_params=SESSION)
    await app.wait_for("/cb")
    await webhooks.close()
    assert task.cancelled()
    [entry] = await store.due()
    assert entry.params == {**SESSION, "Event": "DialHangup"}


# --- logs and metrics -------------------------------------------------------------------------------------


async def test_auth_token_credentials_and_query_never_reach_the_logs(app: WebApp, webhooks: Webhooks,
                                                                    store: Store) -> None:
    app.route("/answer", XML)
    app.fail("/cb", 500)
    base = f"http://appuser:app-pass-77@127.0.0.1:{app.port}"
    with structlog.testing.capture_logs() as events:
        await webhooks.fetch_xml(base + "/answer?token=app-query-secret", "GET", {"Pin": "4321"},
                                 session_params=SESSION)
        await webhooks.post_callback(base + "/cb?token=app-query-secret", "POST", {"Pin": "4321"},
                                     session_params=SESSION)
        worker = fast_worker(store, webhooks)
        await worker.run_once(everything=True)
        await app.stop()
        with pytest.raises(WebhookError) as caught:
            await webhooks.fetch_xml(base + "/answer", "POST", {}, session_params=SESSION)
    signatures = [r.headers["x-plivo-signature-v3"] for r in app.requests]
    text = repr(events) + repr(caught.value.errors) + repr([e.last_error for e in await store.due()])
    for secret in (TOKEN, "app-pass-77", "app-query-secret", "4321", *signatures):
        assert secret not in text
    requests = [e for e in events if e["event"] == "webhook.request"]
    assert requests and all(e["call_uuid"] == SESSION["CallUUID"] for e in requests)
    assert {"url", "status", "latency_ms", "attempt", "method", "kind"} <= set(requests[0])
    assert requests[0]["url"] == f"http://127.0.0.1:{app.port}/answer"
    assert any(e["event"] == "webhook.failed" for e in events)
    assert any(e["event"] == "webhook.callback_queued" for e in events)


async def test_metrics_count_requests_failures_and_latency(app: WebApp, webhooks: Webhooks) -> None:
    app.route("/answer", XML)
    app.fail("/bad", 500)
    await webhooks.request(app.url("/answer"), "POST", {})
    await webhooks.request(app.url("/bad"), "GET", {})
    m = webhooks.metrics
    assert (m.requests, m.failures, m.by_status) == (2, 1, {200: 1, 500: 1})
    assert m.latency.count == 2 and m.latency.sum > 0 and m.latency.cumulative()[-1][1] == 2


async def test_from_config_signs_with_http_auth_token_and_stores_in_storage_path(app: WebApp, tmp_path: Path) -> None:
    config = load_config(env={
        "SOFTSWITCH_HTTP__AUTH_TOKEN": "token-from-config-99",
        "SOFTSWITCH_STORAGE__PATH": str(tmp_path / "cfg" / "softswitch.db"),
    })
    store = await Store.open(config.storage.path)
    webhooks = Webhooks.from_config(config, store, settings=FAST)
    try:
        app.route("/answer", XML)
        await webhooks.fetch_xml(app.url("/answer"), "POST", {}, session_params=SESSION)
        assert app.requests_to("/answer")[0].signature_valid("token-from-config-99")
        assert "token-from-config-99" not in repr(webhooks)
    finally:
        await webhooks.close()
        await store.close()
    assert (tmp_path / "cfg" / "softswitch.db").exists()


@pytest.fixture
def real_logging() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    configure_logging("debug", json=True)
    yield
    structlog.reset_defaults()
    for handler in [h for h in root.handlers if h.get_name() == "softswitch"]:
        root.removeHandler(handler)
    root.setLevel(level)


async def test_rendered_logs_at_debug_hold_no_secret(
    app: WebApp, store: Store, real_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # The engine's own logging setup, without registering any secret: nothing to redact may be there at all.
    app.route("/answer", XML)
    webhooks = Webhooks(TOKEN, store=store, settings=FAST)
    base = f"http://appuser:app-pass-77@127.0.0.1:{app.port}"
    await webhooks.fetch_xml(base + "/answer?token=app-query-secret", "GET", {}, session_params=SESSION)
    await app.stop()
    await webhooks.post_callback(base + "/cb", "POST", {}, session_params=SESSION)
    await webhooks.close()
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(line["event"] == "webhook.request" for line in lines)
    assert any(line["event"] == "webhook.callback_queued" for line in lines)
    for secret in (TOKEN, "app-pass-77", "app-query-secret"):
        assert secret not in err


# --- reliability fixes (docs/reliability.md) -----------------------------------------------------------------


async def test_a_callback_is_in_the_outbox_held_while_it_is_tried_so_a_kill_cannot_lose_it(
    app: WebApp, webhooks: Webhooks, store: Store
) -> None:
    app.route("/hangup", "ok")
    app.hang("/hangup")  # the first attempt hangs: look at the database meanwhile
    task = asyncio.ensure_future(webhooks.post_callback(app.url("/hangup"), "POST", {"CallStatus": "completed"},
                                                        session_params=SESSION, kind="hangup"))
    await app.wait_for("/hangup", timeout=5)
    [held] = await store.held()
    assert held.kind == "hangup" and held.params["CallStatus"] == "completed"
    assert await store.due() == [] and await store.depth() == 0  # the outbox worker leaves it alone
    app.hang("/hangup", False)
    assert await task  # the hung request is released with 503, the retry is answered
    assert await store.held() == [] and await store.due() == []


async def test_a_response_body_over_the_cap_fails_the_request_without_reading_it_all(
    app: WebApp, store: Store
) -> None:
    app.route("/big", b"<Response>" + b"<Speak>x</Speak>" * 20_000)  # 320 KB
    small = Webhooks(TOKEN, store=store, settings=WebhookSettings(max_response_bytes=100_000, fetch_backoff=0.01))
    try:
        with pytest.raises(WebhookError) as caught:
            await small.request(app.url("/big"), "POST", {})
        assert "larger than 100000 bytes" in str(caught.value)
        with pytest.raises(WebhookError) as caught:
            await small.fetch_xml(app.url("/big"), "POST", {}, session_params=SESSION)
        assert len(caught.value.errors) == 3 and all("larger than" in e for e in caught.value.errors)
        app.route("/ok", "<Response/>")
        assert (await small.request(app.url("/ok"), "POST", {})).content == b"<Response/>"
    finally:
        await small.close()


# --- the wire: headers, encodings, framing, cookies (engine/webhooks.py sends through the transport directly) ------


class RawApp:
    """An aiohttp app with responses WebApp cannot give: gzip, chunked, endless or stalled bodies, cookies."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str], bytes]] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/{name}", self._handle)
        self.runner = web.AppRunner(self.app)
        self.port = 0
        self.release = asyncio.Event()

    async def __aenter__(self) -> RawApp:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        await self.runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.seen.append((name, {k.lower(): v for k, v in request.headers.items()}, await request.read()))
        if name == "gzip":
            return web.Response(body=gzip.compress(XML.encode()), headers={"Content-Encoding": "gzip"})
        if name == "bomb":  # 2 MB of XML-ish text compressed to a few KB
            body = gzip.compress(b"<Response>" + b" " * 2_000_000)
            return web.Response(body=body, headers={"Content-Encoding": "gzip"})
        if name in ("chunked", "endless", "stall"):
            response = web.StreamResponse()
            if name == "stall":
                response.content_length = 1000
            else:
                response.enable_chunked_encoding()
            await response.prepare(request)
            await response.write(XML.encode()[:10])
            if name == "stall":
                await self.release.wait()
                return response
            while name == "endless":
                await response.write(b"<Speak>x</Speak>" * 1000)
            await response.write(XML.encode()[10:])
            await response.write_eof()
            return response
        if name == "cookie":
            response = web.Response(text=XML)
            response.set_cookie("session", "abc123")
            return response
        return web.Response(text=XML)


@pytest.fixture
async def raw_app() -> AsyncIterator[RawApp]:
    async with RawApp() as raw:
        yield raw


async def test_request_headers_on_the_wire(raw_app: RawApp, webhooks: Webhooks) -> None:
    await webhooks.request(raw_app.url("/post"), "POST", {"Digits": "12"}, session_params=SESSION)
    await webhooks.request(raw_app.url("/get"), "GET", {"Digits": "12"}, session_params=SESSION)
    await webhooks.request(raw_app.url("/empty"), "POST", {})
    (_, post, body), (_, get, get_body), (_, empty, empty_body) = raw_app.seen
    assert post["host"] == f"127.0.0.1:{raw_app.port}" and post["user-agent"] == "softswitch"
    assert post["content-type"] == "application/x-www-form-urlencoded"
    assert post["content-length"] == str(len(body)) and b"Digits=12" in body
    assert "gzip" in post["accept-encoding"] and post["accept"] == "*/*"
    assert post["x-plivo-signature-v3"] and post["x-plivo-signature-v3-nonce"].isdigit()
    assert get_body == b"" and "content-length" not in get and "content-type" not in get
    assert get["host"] == post["host"] and get["x-plivo-signature-v3"]
    assert empty_body == b"" and empty["content-length"] == "0"


async def test_gzip_and_chunked_responses_are_read_and_decoded(raw_app: RawApp, webhooks: Webhooks) -> None:
    for path in ("/gzip", "/chunked"):
        result = await webhooks.fetch_xml(raw_app.url(path), "POST", {}, session_params=SESSION)
        assert result.body == XML.encode() and result.attempts == 1
        response = await webhooks.request(raw_app.url(path), "POST", {})
        assert response.content == XML.encode() and "content-encoding" not in response.headers


async def test_the_size_cap_holds_for_compressed_and_endless_bodies(raw_app: RawApp, store: Store) -> None:
    async with Webhooks(TOKEN, store=store, settings=WebhookSettings(max_response_bytes=100_000)) as small:
        for path in ("/bomb", "/endless"):
            started = time.monotonic()
            with pytest.raises(WebhookError, match="larger than 100000 bytes"):
                await small.request(raw_app.url(path), "POST", {})
            assert time.monotonic() - started < 2
        assert (await small.request(raw_app.url("/ok"), "POST", {})).content == XML.encode()  # still usable


async def test_a_body_that_stalls_times_out_within_the_request_timeout(raw_app: RawApp, webhooks: Webhooks) -> None:
    started = time.monotonic()
    with pytest.raises(WebhookError, match="timed out after 0.4 s"):
        await webhooks.request(raw_app.url("/stall"), "POST", {})
    assert FAST.request_timeout <= time.monotonic() - started < FAST.request_timeout + 0.5
    assert webhooks.metrics.timeouts == 1


async def test_cookies_an_app_sets_are_sent_back_as_httpx_clients_do(raw_app: RawApp, webhooks: Webhooks) -> None:
    await webhooks.request(raw_app.url("/cookie"), "POST", {})
    await webhooks.request(raw_app.url("/next"), "POST", {})
    assert "cookie" not in raw_app.seen[0][1] and raw_app.seen[1][1]["cookie"] == "session=abc123"


async def test_a_client_given_by_the_caller_is_used_with_its_own_settings(app: WebApp, store: Store) -> None:
    app.route("/answer", XML)
    client = httpx.AsyncClient(headers={"User-Agent": "custom-agent"})
    async with Webhooks(TOKEN, store=store, settings=FAST, client=client) as custom:
        result = await custom.fetch_xml(app.url("/answer"), "POST", {}, session_params=SESSION)
        assert result.body == XML.encode()
        url = f"http://appuser:app-pass-77@127.0.0.1:{app.port}/answer?token=t"
        assert (await custom.request(url, "GET", {}, session_params=SESSION)).status_code == 200
    first, second = app.requests_to("/answer")
    assert first.headers["user-agent"] == "custom-agent" and first.signature_valid(TOKEN)
    assert second.headers["authorization"].startswith("Basic ") and second.signature_valid(TOKEN)
    assert client.is_closed
