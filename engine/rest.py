"""The REST API in Plivo's v1 shape (spec §5.1), so the public plivo SDK's `RestClient` drives softswitch unchanged.

Routes, all under `/v1/Account/{auth_id}/` (trailing slash optional) and behind HTTP Basic auth with the configured
`http.auth_id` / `http.auth_token` (the auth_id in the path must be that one too):

* `POST Call/` (form or JSON): place a call → 201 `{"api_id", "message": "call fired", "request_uuid"}` (a list of
  request_uuids for a bulk `to` = "a<b<c"). The call is placed in the background (engine/outbound.py).
* `GET Call/?status=live` → `{"api_id", "calls": [CallUUID, ...]}` (filters: call_direction, from_number,
  to_number, limit, offset); `status=queued` → always empty (softswitch has no queue); no status → the call records
  (newest first) as `{"api_id", "meta", "objects"}`.
* `GET Call/{uuid}/`: a live call (by CallUUID, or by the RequestUUID of an outbound call), else its call record;
  with `?status=live` only live calls are found.
* `DELETE Call/{uuid}/` → 204: hang up (CANCEL while an outbound call rings, BYE once answered);
  `DELETE Request/{request_uuid}/` does the same for the call placed for that request.
* `POST Call/{uuid}/` with `legs=aleg`, `aleg_url`, `aleg_method` → 202 `{"api_id", "message": "call transferred"}`:
  the running verb is broken off and the new URL's document runs (engine.call.Call.transfer).

Errors are `{"api_id", "error"}` with 400 (bad parameters), 401 (credentials), 404 (unknown call or path under /v1/),
405 (method), 429 + Retry-After (engine.admission refused the call: max_calls, max_cps, draining), 500.

This module maps HTTP to engine operations: it holds no call logic, never touches SIP or media, and never echoes
the auth token or callback URLs' credentials into responses or logs.
"""

from __future__ import annotations

import base64
import hmac
import json
import time
import uuid as uuidlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from . import causes
from .outbound import RequestError, end_call, find_live, method_param, parse_request, url_param
from .webhooks import log_url

if TYPE_CHECKING:
    from .call import Call
    from .engine import Engine
    from .store import CallRecord

log = structlog.get_logger("engine.rest")

ACCOUNT = "/v1/Account/{auth_id}"
MAX_PAGE = 20  # Plivo's page limit for call lists

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ERROR_TEXT = {
    400: "invalid request",
    401: "authentication failed",
    404: "not found",
    405: "method not allowed",
    429: "too many requests",
    500: "internal error",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


def _api_id() -> str:
    return str(uuidlib.uuid4())


def error_response(status: int, message: str, retry_after: int | None = None) -> web.Response:
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="softswitch"'
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return web.json_response({"api_id": _api_id(), "error": message}, status=status, headers=headers)


def add_routes(app: web.Application, engine: Engine) -> None:
    """Registered through `engine.http_route_builders` (engine/engine.py)."""
    api = RestApi(engine)

    @web.middleware
    async def plivo_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Errors under /v1/ in Plivo's JSON shape (unknown paths and methods included); other paths untouched."""
        if not request.path.startswith("/v1/"):
            return await handler(request)
        try:
            return await handler(request)
        except ApiError as exc:
            return error_response(exc.status, exc.message, exc.retry_after)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response(exc.status, _ERROR_TEXT.get(exc.status, exc.reason))
        except Exception:
            log.exception("rest_internal_error", method=request.method, path=request.path)
            return error_response(500, _ERROR_TEXT[500])

    app.middlewares.append(plivo_errors)
    for slash in ("/", ""):
        app.router.add_route("*", f"{ACCOUNT}/Call{slash}", api.calls)
        app.router.add_route("*", f"{ACCOUNT}/Call/{{call_id}}{slash}", api.call)
        app.router.add_route("*", f"{ACCOUNT}/Request/{{request_id}}{slash}", api.request)


class RestApi:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- entry points (one per path; methods dispatched here so a wrong one is a Plivo-shaped 405) ------------------
    async def calls(self, request: web.Request) -> web.StreamResponse:
        return await self._dispatch(request, {"GET": self._list, "POST": self._create})

    async def call(self, request: web.Request) -> web.StreamResponse:
        return await self._dispatch(request, {"GET": self._get, "POST": self._transfer, "DELETE": self._hangup})

    async def request(self, request: web.Request) -> web.StreamResponse:
        return await self._dispatch(request, {"DELETE": self._cancel_request})

    async def _dispatch(self, request: web.Request, table: Mapping[str, Handler]) -> web.StreamResponse:
        if not self._authorized(request):
            raise ApiError(401, _ERROR_TEXT[401])
        handler = table.get(request.method)
        if handler is None:
            raise ApiError(405, f"method {request.method} is not allowed on this resource")
        return await handler(request)

    def _authorized(self, request: web.Request) -> bool:
        http = self.engine.config.http
        creds = _basic_credentials(request.headers.get("Authorization", ""))
        if creds is None:
            return False
        login_ok = hmac.compare_digest(creds[0].encode(), http.auth_id.encode())
        token_ok = hmac.compare_digest(creds[1].encode(), http.auth_token.encode())
        return login_ok and token_ok and request.match_info.get("auth_id") == http.auth_id

    # -- create ---------------------------------------------------------------------------------------------------
    async def _create(self, request: web.Request) -> web.StreamResponse:
        params = await _params(request)
        try:
            req = parse_request(params)
        except RequestError as exc:
            raise ApiError(400, str(exc)) from None
        destinations = req.destinations()
        self._admit(len(destinations))
        uuids = [await self.engine.originate(replace(req, to=dest)) for dest in destinations]
        log.info("rest_call_created", request_uuids=uuids, to=req.to, answer_url=log_url(req.answer_url))
        body = {"api_id": _api_id(), "message": "call fired", "request_uuid": uuids[0] if len(uuids) == 1 else uuids}
        return web.json_response(body, status=201)

    def _admit(self, calls: int) -> None:
        """engine.admission (max_calls, max_cps, draining): 429 with Retry-After when a call may not start now."""
        admission = getattr(self.engine, "admission", None)
        if admission is None:
            return
        if calls > min(admission.max_calls, admission.max_cps):
            raise ApiError(400, f"{calls} destinations: more than [limits] allows at once "
                                f"(max_calls {admission.max_calls}, max_cps {admission.max_cps})")
        ok, retry_after = admission.admit(calls)  # all or nothing: no half-placed request
        if not ok:
            raise ApiError(429, "too many calls: try again later", retry_after=retry_after)

    # -- read -----------------------------------------------------------------------------------------------------
    async def _list(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        status = q.get("status", "")
        limit = _int(q, "limit", MAX_PAGE, 1, MAX_PAGE)
        offset = _int(q, "offset", 0, 0, None)
        direction = q.get("call_direction") or None
        if direction not in (None, "inbound", "outbound"):
            raise ApiError(400, "call_direction must be inbound or outbound")
        if status == "live":
            live = [c for c in self.engine.calls.values() if not c.ended and _matches(c, q, direction)]
            live.sort(key=lambda c: c.started_at)
            return web.json_response({"api_id": _api_id(), "calls": [c.uuid for c in live[offset:offset + limit]]})
        if status == "queued":
            return web.json_response({"api_id": _api_id(), "calls": []})
        if status:
            raise ApiError(400, "status must be live or queued")
        store = self.engine.store
        records = [] if store is None else await store.list_calls(limit=limit, offset=offset, direction=direction,
                                                                   ended=True)
        auth_id = request.match_info["auth_id"]
        base = f"/v1/Account/{auth_id}/Call/"
        meta = {
            "limit": limit,
            "offset": offset,
            "next": f"{base}?limit={limit}&offset={offset + limit}" if len(records) == limit else None,
            "previous": f"{base}?limit={limit}&offset={max(offset - limit, 0)}" if offset else None,
            "total_count": None,
        }
        objects = [_record_json(r, auth_id) for r in records]
        return web.json_response({"api_id": _api_id(), "meta": meta, "objects": objects})

    async def _get(self, request: web.Request) -> web.StreamResponse:
        uuid = request.match_info["call_id"]
        call = find_live(self.engine, uuid)
        if call is not None and not call.ended:
            return web.json_response({"api_id": _api_id(), **_live_json(call)})
        if request.query.get("status") == "live":
            raise ApiError(404, "call not found (not live)")
        store = self.engine.store
        record = None if store is None else await store.get_call(uuid)
        if record is None:
            raise ApiError(404, "call not found")
        return web.json_response({"api_id": _api_id(), **_record_json(record, request.match_info["auth_id"])})

    # -- control --------------------------------------------------------------------------------------------------
    async def _hangup(self, request: web.Request) -> web.StreamResponse:
        call = self._live(request.match_info["call_id"])
        await self._end(call)
        return web.Response(status=204)

    async def _cancel_request(self, request: web.Request) -> web.StreamResponse:
        request_uuid = request.match_info["request_id"]
        call = next((c for c in self.engine.calls.values() if c.params.get("RequestUUID") == request_uuid), None)
        if call is None or call.ended:
            raise ApiError(404, "request not found (not live)")
        await self._end(call)
        return web.Response(status=204)

    async def _end(self, call: Call) -> None:
        # Before the answer: Plivo's "Canceled (Hangup API before answer)" 1000; after: a normal hangup by the API.
        cause = causes.CAUSES["api_cancel"] if not call.answered else causes.CAUSES["normal_hangup"]
        call.log.info("rest_hangup", answered=call.answered)
        call.timeline.add("api_hangup")
        await end_call(call, cause.with_source("API Request"))

    async def _transfer(self, request: web.Request) -> web.StreamResponse:
        params = await _params(request)
        legs = str(params.get("legs") or "").strip().lower()
        if legs not in ("aleg", "bleg", "both"):
            raise ApiError(400, "legs must be aleg, bleg or both")
        if legs != "aleg":
            raise ApiError(400, "only legs=aleg can be transferred (a Dial's B leg follows its A leg)")
        try:
            url = url_param(params, "aleg_url", required=True)
            method = method_param(params, "aleg_method")
        except RequestError as exc:
            raise ApiError(400, str(exc)) from None
        call = self._live(request.match_info["call_id"])
        call.transfer(url, method)
        call.log.info("rest_transfer", url=log_url(url), method=method)
        return web.json_response({"api_id": _api_id(), "message": "call transferred"}, status=202)

    def _live(self, uuid: str) -> Call:
        call = find_live(self.engine, uuid)
        if call is None or call.ended:
            raise ApiError(404, "call not found (not live)")
        return call


# -- helpers --------------------------------------------------------------------------------------------------------
def _basic_credentials(header: str) -> tuple[str, str] | None:
    """(login, password) of an `Authorization: Basic ...` header; None when it is absent or malformed."""
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        login, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return (login, password) if sep else None


async def _params(request: web.Request) -> dict[str, Any]:
    """Query-string parameters, then the body's (JSON object or form) over them."""
    params: dict[str, Any] = dict(request.query)
    if not request.body_exists:
        return params
    ctype = request.content_type
    if ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        return params
    raw = await request.read()
    if not raw.strip():
        return params
    if ctype not in ("application/json", "application/octet-stream", "text/plain", ""):
        raise ApiError(400, "send the parameters as JSON or as a form")
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the JSON body must be an object")
    params.update(body)
    return params


def _int(q: Mapping[str, str], key: str, default: int, low: int, high: int | None) -> int:
    text = q.get(key, "")
    if not text:
        return default
    if not (text.isascii() and text.isdigit()) or int(text) < low or (high is not None and int(text) > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise ApiError(400, f"{key} must be a whole number {bound}")
    return int(text)


def _matches(call: Call, q: Mapping[str, str], direction: str | None) -> bool:
    p = call.params
    if direction and call.direction != direction:
        return False
    if q.get("from_number") and p.get("From") != q["from_number"].lstrip("+"):
        return False
    return not (q.get("to_number") and p.get("To") != q["to_number"].lstrip("+"))


def _iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def _live_json(call: Call) -> dict[str, Any]:
    p = call.params
    return {
        "call_uuid": call.uuid,
        "request_uuid": p.get("RequestUUID") or None,
        "direction": call.direction,
        "from": p.get("From", ""),
        "to": p.get("To", ""),
        "caller_name": p.get("CallerName", ""),
        "call_status": p.get("CallStatus", ""),
        "session_start": _iso(call.started_at),
        "answer_time": _iso(call.answered_at),
    }


def _record_json(record: CallRecord, auth_id: str) -> dict[str, Any]:
    cause = None
    if record.hangup_code is not None:
        try:
            cause = causes.by_code(int(record.hangup_code))
        except KeyError:
            cause = None
    answered = record.answered_at is not None
    if record.ended_at is None:
        status = "in-progress" if answered else "ringing"
    else:
        status = causes.call_status_for(cause or causes.CAUSES["unknown"], answered)
    return {
        "call_uuid": record.call_uuid,
        "request_uuid": record.request_uuid,
        "call_direction": record.direction,
        "from_number": record.from_number,
        "to_number": record.to_number,
        "call_status": status,
        "initiation_time": _iso(record.started_at),
        "answer_time": _iso(record.answered_at),
        "end_time": _iso(record.ended_at),
        "call_duration": record.duration,
        "bill_duration": record.bill_duration,
        "billed_duration": record.bill_duration,
        "hangup_cause": record.hangup_cause,
        "hangup_cause_name": cause.label if cause is not None else None,
        "hangup_cause_code": record.hangup_code,
        "hangup_source": record.hangup_source,
        "parent_call_uuid": None,
        "resource_uri": f"/v1/Account/{auth_id}/Call/{record.call_uuid}/",
    }
