"""Webhooks: every HTTP request the engine makes to an app (answer_url, fallback_url, action, callbacks, hangup_url).

What lives here: ``Webhooks``, which owns the one shared ``httpx.AsyncClient`` (httpx's API on the
``httpx_aiohttp.AiohttpTransport``, see design.md "HTTP client"), and
- ``request``: one signed request (spec §2.1-2.3): GET sends the parameters in the query string (the URL's own query
  parameters merged in first, later values winning), POST sends them as ``application/x-www-form-urlencoded`` with
  the URL's query parameters merged into the form too and the URL left as it is. Session parameters (CallUUID,
  From, To, CallStatus, Direction...) go on every request; request-specific parameters win over them, and the URL's
  query wins over both (FW's order). Every request carries ``X-Plivo-Signature-V3`` and its nonce, computed over
  exactly the URL requested and the form posted (engine/signature.py), so the plivo SDK's validator accepts it.
- ``fetch_xml``: the answer fetch (spec §2.7): up to 3 attempts with backoff within 60 s; a non-2xx status, an empty
  body, a timeout, a connection error or a body the caller's ``validate`` rejects is a failed attempt (4xx other
  than 408/429 is not retried: the same request gets the same answer); then ``fallback_url`` with the same
  parameters and the same policy; ``WebhookError`` with every reason when all fail. ``fetch_fallback`` is the
  fallback alone, for a caller that found the answer body invalid after ``fetch_xml`` returned it.
- ``post_callback``: a fire-and-report callback retried a few times with backoff. It is written to the outbox
  (engine/store.py) *before* the first attempt, held so the outbox worker leaves it alone, and deleted once
  delivered; one that still fails (or is cancelled by an engine shutdown) is released to engine/outbox.py, which
  retries it, also after a restart. A process killed meanwhile leaves it held, and the next start releases it
  (engine/recovery.py). With no store configured a failed callback is logged as lost (error level): the daemon
  always passes its store.
- ``metrics``: counters and a latency histogram for /metrics.
Cost: a request is an ``httpx.Request`` handed to the client's ``AiohttpTransport`` (httpx's transport API) without
``client.send``'s generic per-request work; the URL-dependent parts (parsing, normalising, log form, credentials,
the signed URL part) are cached per URL; the form's quoting is cached per value. ``python -m bench.webhook_client``
measures CPU per request against raw aiohttp.
What does not: parsing or validating XML (engine/xml.py; the caller passes ``validate``), deciding which URL a call
uses or what the session parameters are (engine/calls), the outbox's retry schedule (engine/outbox.py).

Logging: one structlog event per request (``webhook.request`` / ``webhook.failed``) with the URL (scheme, host and
path only: no user:password, no query), method, status, latency, attempt, kind and call_uuid. Never the auth token,
the signature, the URL's credentials or query, or the parameters' values. Error texts follow the same rule.
Delivery is at least once: a request that timed out may have reached the app and is sent again.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import functools
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote_plus, urlsplit, urlunsplit

import aiohttp
import httpx
import structlog
from httpx_aiohttp import AiohttpTransport

from engine.signature import NONCE_HEADER, SIGNATURE_HEADER, make_nonce, sign_v3

if TYPE_CHECKING:
    from engine.config import Config
    from engine.store import Store

__all__ = [
    "FetchResult",
    "LatencyHistogram",
    "WebhookError",
    "WebhookMetrics",
    "WebhookSettings",
    "Webhooks",
    "build_request",
    "log_url",
    "safe_url",
]

METHODS = ("GET", "POST")
USER_AGENT = "softswitch"
_NOT_RETRIED = frozenset(range(400, 500)) - {408, 429}


class _TooLarge(Exception):
    """A response body over ``WebhookSettings.max_response_bytes``."""


class WebhookError(Exception):
    """A request (or every attempt of a fetch, fallback included) failed. ``errors``: one line per failure."""

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message if not errors else f"{message}: {'; '.join(errors)}")
        self.errors: list[str] = list(errors or [message])


@dataclass(frozen=True)
class WebhookSettings:
    """Timeouts and retry policy. Defaults follow spec §2.7; tests shorten them."""

    request_timeout: float = 8.0
    """Seconds for one request, connect to last byte (hard bound)."""
    connect_timeout: float = 3.0
    fetch_attempts: int = 3
    """Attempts at answer_url (and again at fallback_url)."""
    fetch_total: float = 60.0
    """Seconds for all attempts at one URL; the fallback gets its own budget."""
    fetch_backoff: float = 1.0
    """Delay before the 2nd attempt; doubled for each later one."""
    callback_attempts: int = 3
    callback_backoff: float = 1.0
    """Delay before the 2nd callback attempt; doubled for each later one (1 s + 2 s: ~3 s plus request time)."""
    max_connections: int = 200
    max_keepalive: int = 50
    max_response_bytes: int = 1024 * 1024
    """A response body larger than this fails the request (documents are at most 100 KB): bounded memory."""


class LatencyHistogram:
    """Request latencies in Prometheus-style cumulative buckets (seconds), plus sum and count."""

    BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self) -> None:
        self.counts = [0] * (len(self.BOUNDS) + 1)  # last: above the largest bound (+Inf only)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.BOUNDS, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations <= bound)`` for each bucket, ending with ``(inf, count)``."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip((*self.BOUNDS, math.inf), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


@dataclass
class WebhookMetrics:
    """Counters the metrics endpoint reads. ``failures`` counts requests without a 2xx (errors included)."""

    requests: int = 0
    failures: int = 0
    timeouts: int = 0
    fallbacks: int = 0
    callbacks_delivered: int = 0
    callbacks_queued: int = 0
    callbacks_lost: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)


@dataclass(frozen=True)
class FetchResult:
    """An app document fetched with ``fetch_xml`` / ``fetch_fallback``."""

    body: bytes
    url: str
    """The URL the body came from, as configured (answer_url or fallback_url, before GET parameters were added):
    relative URLs in the document resolve against it."""
    method: str
    status: int
    content_type: str
    attempts: int
    """Requests made in all, fallback included."""
    errors: list[str]
    """Why earlier attempts failed (empty when the first attempt succeeded)."""
    used_fallback: bool = False
    parsed: Any = None
    """What ``validate`` returned for this body (e.g. the parsed document), else None."""


@dataclass(frozen=True, slots=True)
class _Prepared:
    method: str
    url: str
    """What is requested (GET: with the merged query), without user:password: what the app sees as its URL and
    what is signed."""
    form: dict[str, str]
    body: bytes | None
    target: _Target
    """What depends on the configured URL alone (cached): how it is logged, its wire form, its credentials."""
    wire: httpx.URL
    """``url`` parsed (the request is built from it without parsing the URL again)."""


@dataclass(frozen=True, slots=True)
class _Target:
    """What a request to one configured URL needs that depends on that URL alone (see ``_parsed_url``)."""

    query: dict[str, str]
    """Its query parameters (the last of a repeated key)."""
    post_url: str
    """The URL a POST goes to: normalised as httpx sends it, without user:password."""
    wire: httpx.URL
    """``post_url`` parsed."""
    base: tuple[str, str, str]
    """Scheme, netloc and path of ``post_url``: a GET's URL is these plus its merged query."""
    shown: str
    """``log_url`` of the requested URL (the same for every query): what logs and errors show."""
    host: str
    """The Host header."""
    authorization: str | None
    """``Basic ...`` for the user:password in the URL (as ``httpx.BasicAuth`` builds it), else None."""


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


def _texts(params: Mapping[str, object] | None) -> dict[str, str]:
    """``params`` with every value as the text sent (``_text``); str values, the common case, as they are."""
    if not params:
        return {}
    return {k: v if type(v) is str else _text(v) for k, v in params.items()}


@functools.lru_cache(maxsize=8192)
def _quote(text: str) -> str:
    """``quote_plus(text)``, cached: a call's session parameters are encoded again for each of its requests, and
    many values (Direction, CallStatus, the app's numbers...) repeat across calls."""
    return quote_plus(text)


def _form(params: Mapping[str, str]) -> str:
    """``urlencode(params)`` for str keys and values (the same text), with the quoting cached."""
    quote = _quote
    return "&".join([f"{quote(k)}={quote(v)}" for k, v in params.items()])


def safe_url(url: str) -> str:
    """``url`` with any user:password removed (for logs and signatures)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


@functools.lru_cache(maxsize=1024)
def log_url(url: str) -> str:
    """``url`` as logs and error messages show it: scheme, host, port and path only. The query goes too: apps put
    tokens there (``?token=...``), and GET requests carry the call's parameters in it."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<invalid url>"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def build_request(
    url: str,
    method: str,
    params: Mapping[str, object] | None = None,
    session_params: Mapping[str, object] | None = None,
) -> tuple[str, str, dict[str, str], bytes | None]:
    """``(method, url to request, merged parameters, body)`` for a webhook (spec §2.1); ValueError for a method
    other than GET/POST or a URL that is not http(s)."""
    prepared = _prepare(url, method, params, session_params)
    return prepared.method, prepared.url, prepared.form, prepared.body


def _prepare(
    url: str,
    method: str,
    params: Mapping[str, object] | None,
    session_params: Mapping[str, object] | None,
) -> _Prepared:
    verb = _method(method)
    target = _parsed_url(url)
    merged = _texts(session_params)
    if params:
        merged.update(_texts(params))
    if target.query:
        merged.update(target.query)  # the URL's own parameters win, the last of a repeated key winning
    if verb == "GET":
        # Sign what goes on the wire: httpx normalises the URL (default port, percent-encoding) before sending.
        scheme, netloc, path = target.base
        wire = httpx.URL(urlunsplit((scheme, netloc, path, _form(merged), "")))
        return _Prepared(verb, str(wire), merged, None, target, wire)
    return _Prepared(verb, target.post_url, merged, _form(merged).encode("ascii"), target, target.wire)


def _method(method: str) -> str:
    verb = method.upper()
    if verb not in METHODS:
        raise ValueError(f"webhook method must be GET or POST, not {method!r}")
    return verb


@functools.lru_cache(maxsize=1024)
def _parsed_url(url: str) -> _Target:
    """What a request to ``url`` needs that depends on the URL alone (apps use a few URLs for many calls).
    ValueError for a URL that is not http(s)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"webhook URL must be http(s)://host/...: {log_url(url)!r}")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    wire = httpx.URL(urlunsplit((parts.scheme, parts.netloc, parts.path or "/", parts.query, "")))
    authorization = None
    if wire.username or wire.password:
        userpass = b":".join((wire.username.encode("utf-8"), wire.password.encode("utf-8")))
        authorization = f"Basic {base64.b64encode(userpass).decode()}"
    post_url = safe_url(str(wire))
    bare = httpx.URL(post_url)
    base = urlsplit(post_url)
    return _Target(
        query=query,
        post_url=post_url,
        wire=bare,
        base=(base.scheme, base.netloc, base.path),
        shown=log_url(post_url),
        host=bare.netloc.decode("ascii"),
        authorization=authorization,
    )


def _describe(exc: BaseException, limit: float) -> tuple[bool, str]:
    """``(was it a timeout, one line saying why)`` for a failed request. The aiohttp transport maps every connection
    error to ``httpx.ConnectTimeout``, so the original aiohttp error (``__cause__``) decides."""
    root = exc.__cause__ if isinstance(exc, httpx.HTTPError) and exc.__cause__ is not None else exc
    if isinstance(root, TimeoutError | aiohttp.ServerTimeoutError | httpx.TimeoutException):
        return True, f"timed out after {limit:g} s"
    text = _scrub(str(root))
    return False, f"{type(root).__name__}: {text}" if text else type(root).__name__


_URL_CREDENTIALS = re.compile(r"//[^/@\s'\"]*@")
_URL_QUERY = re.compile(r"(https?://[^\s'\"?#]*)[?#][^\s'\"]*")


def _scrub(text: str) -> str:
    """An error text without URL credentials or queries (some aiohttp errors quote the full URL)."""
    return _URL_QUERY.sub(r"\1", _URL_CREDENTIALS.sub("//", text))


class Webhooks:
    """The engine's HTTP client for apps. One per process; ``await webhooks.close()`` before closing the store."""

    def __init__(
        self,
        auth_token: str,
        *,
        store: Store | None = None,
        settings: WebhookSettings | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._auth_token = auth_token
        self.store = store
        self.settings = settings or WebhookSettings()
        self.metrics = WebhookMetrics()
        self._transport: AiohttpTransport | None = None
        """The client's transport when this object made the client: requests go to it directly (see ``_send``)."""
        if client is None:
            self._transport = AiohttpTransport(
                limits=httpx.Limits(
                    max_connections=self.settings.max_connections,
                    max_keepalive_connections=self.settings.max_keepalive,
                )
            )
            client = httpx.AsyncClient(transport=self._transport, headers={"User-Agent": USER_AGENT},
                                       follow_redirects=False)
        self._client = client
        self._headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in client.headers.raw]
        """The client's default headers (Accept, Accept-Encoding, Connection, User-Agent), for the direct path."""
        self._timeouts: dict[float, dict[str, float | None]] = {}
        self._tasks: set[asyncio.Task[bool]] = set()
        self._log: Any = structlog.get_logger("engine.webhooks")

    def __repr__(self) -> str:  # never show the token
        return f"<Webhooks store={self.store is not None} settings={self.settings}>"

    @classmethod
    def from_config(
        cls, config: Config, store: Store | None, settings: WebhookSettings | None = None
    ) -> Webhooks:
        """Webhooks signing with ``[http] auth_token``, keeping undelivered callbacks in ``store``."""
        return cls(config.http.auth_token, store=store, settings=settings)

    async def flush(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the callbacks being sent now."""
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    def pending_callbacks(self) -> int:
        """Callbacks being sent or retried right now (each also held in the outbox)."""
        return sum(1 for t in self._tasks if not t.done())

    async def close(self) -> None:
        """Cancel callbacks still being retried (each is stored in the outbox first), then close the client."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._client.aclose()

    async def __aenter__(self) -> Webhooks:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- one request --------------------------------------------------------------------------------------

    async def request(
        self,
        url: str,
        method: str = "POST",
        params: Mapping[str, object] | None = None,
        *,
        session_params: Mapping[str, object] | None = None,
        call_uuid: str | None = None,
        kind: str = "request",
        attempt: int = 1,
        timeout: float | None = None,
    ) -> httpx.Response:
        """Send one signed request and return its response (body read), whatever its status. Raises
        ``WebhookError`` on a timeout or a connection failure; ValueError on a bad method or URL."""
        prepared = _prepare(url, method, params, session_params)
        target = prepared.target
        limit = self.settings.request_timeout if timeout is None else max(0.001, timeout)
        nonce = make_nonce()
        headers = [
            (SIGNATURE_HEADER, sign_v3(prepared.url, nonce, self._auth_token, prepared.form, prepared.method)),
            (NONCE_HEADER, nonce),
        ]
        if prepared.body is not None:
            headers.append(("Content-Type", "application/x-www-form-urlencoded"))
        if target.authorization is not None:
            headers.append(("Authorization", target.authorization))
        context = {  # bound only when a line is written: a bind per request costs more than the request's logging
            "call_uuid": call_uuid or prepared.form.get("CallUUID"),
            "url": target.shown,
            "method": prepared.method,
            "kind": kind,
            "attempt": attempt,
        }
        self.metrics.requests += 1
        started = time.monotonic()
        try:
            async with asyncio.timeout(limit):
                response = await self._send(prepared, headers, limit)
        except _TooLarge as e:
            latency = time.monotonic() - started
            self._failed(latency)
            self._log.warning("webhook.failed", **context, error=str(e), latency_ms=round(latency * 1000, 1))
            raise WebhookError(f"{target.shown}: {e}") from None
        except (TimeoutError, httpx.HTTPError, aiohttp.ClientError, OSError) as e:
            latency = time.monotonic() - started
            timed_out, reason = _describe(e, limit)
            self._failed(latency, timeout=timed_out)
            self._log.warning("webhook.failed", **context, error=reason, latency_ms=round(latency * 1000, 1))
            raise WebhookError(f"{target.shown}: {reason}") from None
        latency = time.monotonic() - started
        metrics = self.metrics
        metrics.latency.observe(latency)
        status = response.status_code
        metrics.by_status[status] = metrics.by_status.get(status, 0) + 1
        if not 200 <= status < 300:  # response.is_success
            metrics.failures += 1
        self._log.info(
            "webhook.request",
            **context,
            status=status,
            latency_ms=round(latency * 1000, 1),
            bytes=len(response.content),
        )
        return response

    def _timeout(self, limit: float) -> dict[str, float | None]:
        """The request's ``timeout`` extension (as ``httpx.Timeout.as_dict()``), one per distinct connect limit.
        ``asyncio.timeout(limit)`` around the whole request is the hard bound (connect to last byte), so only the
        connect timeout is left to the transport (aiohttp's ``sock_connect``, armed for a new connection only):
        read and pool timeouts of ``limit`` could never fire first, and aiohttp re-arms its read timer on every
        chunk received."""
        connect = min(limit, self.settings.connect_timeout)
        timeout = self._timeouts.get(connect)
        if timeout is None:
            if len(self._timeouts) >= 64:  # fetch attempts near the end of their budget have odd limits
                self._timeouts.clear()
            timeout = httpx.Timeout(None, connect=connect).as_dict()
            self._timeouts[connect] = timeout
        return timeout

    async def _send(self, prepared: _Prepared, headers: list[tuple[str, str]], limit: float) -> httpx.Response:
        """The request, its body read up to ``settings.max_response_bytes`` (``_TooLarge`` beyond: a huge or endless
        body must not fill memory; documents are at most 100 KB anyway).

        With the client this object made, the ``httpx.Request`` is built here and handed to the client's transport
        (httpx's transport API), which is what ``client.send`` does for it, minus per-request work it does not
        need: re-parsing the URL and merging headers (``build_request``), the auth and redirect flows (the URL's
        credentials are the ``Authorization`` header here; redirects are not followed) and the cookie jar's
        urllib round trip (the client's cookies are still sent, and a ``Set-Cookie`` still stored). A caller's own
        client goes through ``client.send`` (its hooks, mounts and auth apply)."""
        cap = self.settings.max_response_bytes
        body = prepared.body
        extensions = {"timeout": self._timeout(limit)}
        transport = self._transport
        if transport is None:
            request = self._client.build_request(
                prepared.method, prepared.wire, content=body, headers=headers, extensions=extensions
            )
            response = await self._client.send(request, stream=True)
        else:
            sized = [("Host", prepared.target.host)]
            if body or prepared.method == "POST":  # as httpx.Request(content=...) sets it
                sized.append(("Content-Length", str(len(body or b""))))
            request = httpx.Request(
                prepared.method,
                prepared.wire,
                headers=[*sized, *self._headers, *headers],
                stream=httpx.ByteStream(body or b""),
                extensions=extensions,
            )
            request.read()
            cookies = self._client.cookies
            if cookies:
                cookies.set_cookie_header(request)
            response = await transport.handle_async_request(request)
        try:
            declared: str | None = None
            encoded = cookie = False
            for name, value in response.headers.multi_items():
                if name == "content-length":
                    declared = value if declared is None else ""  # repeated: not trusted, the body is counted
                elif name == "content-encoding":
                    encoded = True
                elif name == "set-cookie":
                    cookie = True
            if cookie and transport is not None:
                self._client.cookies.extract_cookies(response)
            if declared is not None and declared.isdigit():
                if int(declared) > cap:
                    raise _TooLarge(f"response body larger than {cap} bytes (Content-Length {declared})")
                if not encoded:  # the transport reads exactly the declared length: read it, no copy
                    await response.aread()
                    return response
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > cap:
                    raise _TooLarge(f"response body larger than {cap} bytes")
                chunks.append(chunk)
        finally:
            await response.aclose()
        skip = {"content-encoding", "content-length", "transfer-encoding"}  # the body below is decoded already
        return httpx.Response(
            response.status_code,
            headers=[(k, v) for k, v in response.headers.multi_items() if k.lower() not in skip],
            content=b"".join(chunks),
            request=request,
        )

    def _failed(self, latency: float, *, timeout: bool = False) -> None:
        self.metrics.failures += 1
        self.metrics.timeouts += int(timeout)
        self.metrics.latency.observe(latency)

    # --- the answer fetch ---------------------------------------------------------------------------------

    async def fetch_xml(
        self,
        url: str,
        method: str = "POST",
        params: Mapping[str, object] | None = None,
        *,
        session_params: Mapping[str, object] | None = None,
        fallback_url: str | None = None,
        fallback_method: str = "POST",
        call_uuid: str | None = None,
        validate: Callable[[bytes], Any] | None = None,
        kind: str = "answer",
        retry_unusable: bool = True,
    ) -> FetchResult:
        """Fetch an app document: ``url`` with retries, then ``fallback_url`` (if any) with the same parameters.
        ``validate(body)`` may raise to reject a body (counts as a failed attempt); what it returns is
        ``FetchResult.parsed``. Raises ``WebhookError`` listing every failure when nothing usable came back.
        ``retry_unusable=False``: a 2xx with an empty or invalid body fails at once (an action URL that answers
        "nothing to do"); only network errors and retryable statuses are tried again."""
        errors: list[str] = []
        attempts = [0]
        try:
            return await self._fetch_url(
                url, method, params, session_params, call_uuid, validate, kind, errors, attempts, False,
                retry_unusable,
            )
        except WebhookError:
            if not fallback_url:
                raise WebhookError(f"{kind} fetch failed", errors) from None
        return await self._fallback(
            fallback_url, fallback_method, params, session_params, call_uuid, validate, errors, attempts
        )

    async def fetch_fallback(
        self,
        fallback_url: str,
        fallback_method: str = "POST",
        params: Mapping[str, object] | None = None,
        *,
        session_params: Mapping[str, object] | None = None,
        call_uuid: str | None = None,
        validate: Callable[[bytes], Any] | None = None,
        errors: list[str] | None = None,
    ) -> FetchResult:
        """Fetch ``fallback_url`` alone (same policy as ``fetch_xml``): for a caller that rejected the body
        ``fetch_xml`` returned. ``errors``: earlier failures to carry into the result / the WebhookError."""
        return await self._fallback(
            fallback_url, fallback_method, params, session_params, call_uuid, validate, list(errors or []), [0]
        )

    async def _fallback(
        self,
        url: str,
        method: str,
        params: Mapping[str, object] | None,
        session_params: Mapping[str, object] | None,
        call_uuid: str | None,
        validate: Callable[[bytes], Any] | None,
        errors: list[str],
        attempts: list[int],
    ) -> FetchResult:
        self.metrics.fallbacks += 1
        self._log.warning("webhook.fallback", call_uuid=call_uuid, url=log_url(url), errors=len(errors))
        try:
            return await self._fetch_url(
                url, method, params, session_params, call_uuid, validate, "fallback", errors, attempts, True
            )
        except WebhookError:
            raise WebhookError("answer and fallback fetch failed", errors) from None

    async def _fetch_url(
        self,
        url: str,
        method: str,
        params: Mapping[str, object] | None,
        session_params: Mapping[str, object] | None,
        call_uuid: str | None,
        validate: Callable[[bytes], Any] | None,
        kind: str,
        errors: list[str],
        attempts: list[int],
        used_fallback: bool,
        retry_unusable: bool = True,
    ) -> FetchResult:
        s = self.settings
        deadline = time.monotonic() + s.fetch_total
        shown = log_url(url)
        for attempt in range(1, s.fetch_attempts + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                errors.append(f"{shown}: gave up after {s.fetch_total:g} s")
                break
            attempts[0] += 1
            retry = True
            try:
                response = await self.request(
                    url,
                    method,
                    params,
                    session_params=session_params,
                    call_uuid=call_uuid,
                    kind=kind,
                    attempt=attempt,
                    timeout=min(s.request_timeout, remaining),
                )
            except WebhookError as e:
                errors.append(f"attempt {attempt}: {e}")
            else:
                body = response.content
                if not response.is_success:
                    errors.append(f"attempt {attempt}: {shown}: HTTP {response.status_code}")
                    retry = response.status_code not in _NOT_RETRIED
                elif not body.strip():
                    errors.append(f"attempt {attempt}: {shown}: empty body")
                    retry = retry_unusable
                else:
                    try:
                        parsed = validate(body) if validate is not None else None
                    except Exception as e:  # the caller's verdict on the body, whatever its type
                        errors.append(f"attempt {attempt}: {shown}: invalid document: {e}")
                        retry = retry_unusable
                    else:
                        return FetchResult(
                            body=body,
                            url=url,
                            method=method.upper(),
                            status=response.status_code,
                            content_type=response.headers.get("content-type", ""),
                            attempts=attempts[0],
                            errors=list(errors),
                            used_fallback=used_fallback,
                            parsed=parsed,
                        )
            if not retry or attempt == s.fetch_attempts:
                break
            delay = min(s.fetch_backoff * 2 ** (attempt - 1), deadline - time.monotonic())
            if delay > 0:
                await asyncio.sleep(delay)
        raise WebhookError(f"{kind} fetch failed", errors)

    # --- callbacks ----------------------------------------------------------------------------------------

    async def post_callback(
        self,
        url: str,
        method: str = "POST",
        params: Mapping[str, object] | None = None,
        *,
        session_params: Mapping[str, object] | None = None,
        call_uuid: str | None = None,
        kind: str = "callback",
    ) -> bool:
        """Deliver a callback: True once the app answered 2xx. After the last failed attempt (or when cancelled)
        the callback is stored in the outbox and False is returned (CancelledError is re-raised)."""
        s = self.settings
        merged = _texts(session_params)
        if params:
            merged.update(_texts(params))
        _method(method)  # a bad URL or method is the caller's bug: raise now, store nothing
        _parsed_url(url)
        uuid = call_uuid or merged.get("CallUUID")
        error = ""
        attempt = 0
        entry_id: int | None = None
        try:
            entry_id = await self._hold(url, method, merged, uuid, kind)
            for attempt in range(1, s.callback_attempts + 1):
                try:
                    response = await self.request(url, method, merged, call_uuid=uuid, kind=kind, attempt=attempt)
                except WebhookError as e:
                    error = str(e)
                else:
                    if response.is_success:
                        self.metrics.callbacks_delivered += 1
                        await self._delivered(entry_id, uuid, kind)
                        return True
                    error = f"{log_url(url)}: HTTP {response.status_code}"
                if attempt < s.callback_attempts:
                    await asyncio.sleep(s.callback_backoff * 2 ** (attempt - 1))
        except asyncio.CancelledError:
            await asyncio.shield(self._keep(entry_id, url, method, merged, uuid, kind, attempt, error or "cancelled"))
            raise
        await self._keep(entry_id, url, method, merged, uuid, kind, attempt, error)
        return False

    def spawn_callback(
        self,
        url: str,
        method: str = "POST",
        params: Mapping[str, object] | None = None,
        *,
        session_params: Mapping[str, object] | None = None,
        call_uuid: str | None = None,
        kind: str = "callback",
    ) -> asyncio.Task[bool]:
        """``post_callback`` in the background (hangup_url, Dial callbackUrl...): the task is kept until done, and
        ``close()`` cancels it, which stores the callback in the outbox."""
        task = asyncio.create_task(
            self.post_callback(url, method, params, session_params=session_params, call_uuid=call_uuid, kind=kind),
            name=f"callback:{kind}:{call_uuid or ''}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _hold(
        self, url: str, method: str, params: dict[str, str], call_uuid: str | None, kind: str
    ) -> int | None:
        """The callback written ahead to the outbox, held; None without a store (or when the store fails: the
        callback is still tried, and stored afterwards if it fails)."""
        if self.store is None or self.store.closed:
            return None
        try:
            return await self.store.hold(call_uuid=call_uuid, kind=kind, url=url, method=method, params=params)
        except Exception as e:
            self._log.warning("webhook.hold_failed", call_uuid=call_uuid, kind=kind, error=f"{type(e).__name__}: {e}")
            return None

    async def _delivered(self, entry_id: int | None, call_uuid: str | None, kind: str) -> None:
        if entry_id is None or self.store is None:
            return
        try:
            await self.store.mark_done(entry_id)
        except Exception as e:  # it stays held: the next start sends it again (at least once)
            self._log.warning("webhook.done_failed", call_uuid=call_uuid, kind=kind, error=f"{type(e).__name__}: {e}")

    async def _keep(
        self, entry_id: int | None, url: str, method: str, params: dict[str, str], call_uuid: str | None, kind: str,
        tries: int, error: str
    ) -> None:
        log = self._log.bind(call_uuid=call_uuid, url=log_url(url), kind=kind)
        if entry_id is not None and self.store is not None and self.store.closed:
            self.metrics.callbacks_queued += 1  # its held row is in the file: the next start releases it
            log.warning("webhook.callback_left_held", outbox_id=entry_id, error=error, attempts=tries)
            return
        if self.store is None or self.store.closed:
            self.metrics.callbacks_lost += 1
            log.error("webhook.callback_lost", reason="no outbox", error=error, attempts=tries)
            return
        try:
            if entry_id is not None:
                await self.store.release(entry_id, attempts=tries, error=error)
            else:
                entry_id = await self.store.enqueue(
                    call_uuid=call_uuid, kind=kind, url=url, method=method, params=params, attempts=tries,
                    last_error=error,
                )
        except Exception as e:  # the store failed (closed under us, disk full): say so loudly, never silently
            self.metrics.callbacks_lost += 1
            log.error("webhook.callback_lost", reason=f"outbox: {type(e).__name__}: {e}", error=error, attempts=tries)
            return
        self.metrics.callbacks_queued += 1
        log.warning("webhook.callback_queued", outbox_id=entry_id, error=error, attempts=tries)
