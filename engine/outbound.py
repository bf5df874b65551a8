"""Outbound (REST-originated) calls: from a validated request to a running `Call`.

`parse_request(params)` turns the REST API's parameters into an `OutboundRequest` (raising `RequestError`, which the
API answers with 400). `originate(engine, request)` returns the new call's `request_uuid` at once and places the call
in the background: the A leg goes out through a trunk (`to` a number → engine.routing.route_number) or to a SIP URI
(`to` = `sip:...` → route_user), with an SDP offer from a fresh RTP session and `sip_headers` as `X-PH-` headers.
While it rings, the first 180/183 fires `ring_url` (CallStatus=ringing); `ring_timeout` expiry sends CANCEL. On the
200 the SDP answer is accepted and the ordinary interpreter (engine.interpreter.run_call) runs the answer_url's
document: an outbound call is already answered, so no verb answers it. `send_digits` go out after the answer (or
on early media with `send_on_preanswer`), `time_limit` hangs the call up N seconds after the answer
(ALLOTTED_TIMEOUT).

Every request ends with exactly one hangup callback (to `hangup_url`, defaulting to `answer_url`, spec §2.5) and a
call record row, whether the call was answered, rejected (busy, failed...), not answered, cancelled or never left
the engine (no route, no RTP port). Decision (README, REST reference): the CallUUID is allocated when the request is
accepted, so every callback of the request — ring_url, answer_url, hangup_url, including the hangup of a call that
never connected — carries the same non-empty `CallUUID`, plus `RequestUUID`, `ALegUUID` (= CallUUID) and
`ALegRequestUUID` (= RequestUUID); the call record is stored under that CallUUID with its request_uuid.

What does not live here: HTTP (engine.rest), verbs and XML (engine.interpreter), SIP messages (sip/), media (media/).
The call is registered in `engine.calls` from the INVITE on, so the REST API, /health and shutdown see it while it
rings.
"""

from __future__ import annotations

import asyncio
import time
import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import structlog

from media.session import RtpSession
from sip.leg import Answered, EarlyMedia, Ended, OutboundLeg, Ringing

from . import causes, sip_headers
from .call import Call, valid_text
from .causes import Cause
from .interpreter import run_call
from .routing import RoutingError, Target, route_number, route_user
from .verbs.dial import parse_send_digits, parse_sip_headers

if TYPE_CHECKING:
    from .engine import Engine

log = structlog.get_logger("engine.outbound")

DEFAULT_TIME_LIMIT = 14400  # seconds (Plivo's default: 4 h)
DEFAULT_RING_TIMEOUT = 120  # seconds (Plivo's default)
MAX_DESTINATIONS = 1000  # bulk calls: `to` = "a<b<c" (Plivo's limit)
MAX_CALLER_NAME = 50
METHODS = ("GET", "POST")


class RequestError(ValueError):
    """A create-call request the engine will not place (the REST API answers 400 with this message)."""


@dataclass(frozen=True)
class OutboundRequest:
    """One validated outbound call request (one destination; bulk requests are split by `destinations`)."""

    from_: str
    to: str
    answer_url: str
    answer_method: str = "POST"
    hangup_url: str = ""
    hangup_method: str = "POST"
    fallback_url: str = ""
    fallback_method: str = "POST"
    ring_url: str = ""
    ring_method: str = "POST"
    caller_name: str = ""
    time_limit: int = DEFAULT_TIME_LIMIT
    ring_timeout: int = DEFAULT_RING_TIMEOUT
    sip_headers: tuple[tuple[str, str], ...] = field(default=())
    send_digits: str = ""
    send_on_preanswer: bool = False

    def destinations(self) -> list[str]:
        """`to` split on '<' (Plivo's bulk-call separator)."""
        return [d.strip() for d in self.to.split("<")]


# -- request parsing ----------------------------------------------------------------------------------------------
def _text(params: Mapping[str, Any], key: str) -> str:
    value = params.get(key)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return valid_text(str(value)).strip()  # JSON "\udc80" escapes make lone surrogates
    raise RequestError(f"{key} must be a string")


def url_param(params: Mapping[str, Any], key: str, *, required: bool = False) -> str:
    """An absolute http(s) URL parameter ('' when absent and not required); `RequestError` otherwise."""
    value = _text(params, key)
    if not value:
        if required:
            raise RequestError(f"{key} parameter is missing")
        return ""
    try:
        parts = urlsplit(value)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and not any(c.isspace() for c in value)
    except ValueError:
        ok = False
    if not ok:
        raise RequestError(f"{key} must be an http(s) URL")
    return value


def method_param(params: Mapping[str, Any], key: str) -> str:
    """GET or POST (POST when absent), any case; `RequestError` otherwise."""
    value = _text(params, key).upper() or "POST"
    if value not in METHODS:
        raise RequestError(f"{key} must be GET or POST")
    return value


def _seconds(params: Mapping[str, Any], key: str, default: int) -> int:
    value = _text(params, key)
    if not value:
        return default
    if not (value.isascii() and value.isdigit()) or int(value) <= 0:
        raise RequestError(f"{key} must be a positive whole number of seconds")
    return int(value)


def _destination_ok(dest: str) -> bool:
    if dest.lower().startswith(("sip:", "sips:")):
        return "@" in dest or len(dest) > 4
    digits = dest[1:] if dest.startswith("+") else dest
    return bool(digits) and all(c.isdigit() or c in "*#" for c in digits)


def parse_request(params: Mapping[str, Any]) -> OutboundRequest:
    """The create-call parameters (form or JSON values) as an `OutboundRequest`; `RequestError` when unusable.
    Parameters softswitch does not implement (machine_detection, hangup_on_ring, parent_call_uuid, callback_url...)
    are ignored."""
    from_ = _text(params, "from")
    if not from_:
        raise RequestError("from parameter is missing")
    if not all(c.isalnum() or c in "+*#._-" for c in from_) or len(from_) > 64:
        raise RequestError("from must be a phone number or a SIP user name")
    to = _text(params, "to")
    if not to:
        raise RequestError("to parameter is missing")
    destinations = [d.strip() for d in to.split("<")]
    if len(destinations) > MAX_DESTINATIONS:
        raise RequestError(f"to: at most {MAX_DESTINATIONS} destinations")
    for dest in destinations:
        if not _destination_ok(dest):
            raise RequestError(f"to: {dest!r} is not a phone number or a sip: URI")
    caller_name = _text(params, "caller_name")
    if len(caller_name) > MAX_CALLER_NAME:
        raise RequestError(f"caller_name must be at most {MAX_CALLER_NAME} characters")
    if any(c in caller_name for c in '"\\\r\n'):
        raise RequestError("caller_name must not contain quotes, backslashes or line breaks")
    headers_text = _text(params, "sip_headers")
    try:
        headers = parse_sip_headers(headers_text) if headers_text else ()
    except ValueError as exc:
        raise RequestError(f"sip_headers: {exc}") from None
    digits = _text(params, "send_digits")
    if digits:
        try:
            parse_send_digits(digits)
        except ValueError as exc:
            raise RequestError(f"send_digits: {exc}") from None
    preanswer = _text(params, "send_on_preanswer").lower()
    if preanswer not in ("", "true", "false"):
        raise RequestError("send_on_preanswer must be true or false")
    return OutboundRequest(
        from_=from_,
        to=to,
        answer_url=url_param(params, "answer_url", required=True),
        answer_method=method_param(params, "answer_method"),
        hangup_url=url_param(params, "hangup_url"),
        hangup_method=method_param(params, "hangup_method"),
        fallback_url=url_param(params, "fallback_url"),
        fallback_method=method_param(params, "fallback_method"),
        ring_url=url_param(params, "ring_url"),
        ring_method=method_param(params, "ring_method"),
        caller_name=caller_name,
        time_limit=_seconds(params, "time_limit", DEFAULT_TIME_LIMIT),
        ring_timeout=_seconds(params, "ring_timeout", DEFAULT_RING_TIMEOUT),
        sip_headers=headers,
        send_digits=digits,
        send_on_preanswer=preanswer == "true",
    )


# -- origination --------------------------------------------------------------------------------------------------
async def originate(engine: Engine, request: OutboundRequest | Mapping[str, Any]) -> str:
    """Place one call (its `to` must be a single destination) in the background; returns its request_uuid."""
    req = request if isinstance(request, OutboundRequest) else parse_request(request)
    if "<" in req.to:
        raise RequestError("originate places one call: split bulk destinations first")
    request_uuid = str(uuidlib.uuid4())
    call_uuid = str(uuidlib.uuid4())
    task = asyncio.ensure_future(_place(engine, req, request_uuid, call_uuid))
    engine._tasks.add(task)
    task.add_done_callback(engine._tasks.discard)
    return request_uuid


def _route(engine: Engine, to: str) -> Target:
    if to.lower().startswith(("sip:", "sips:")):
        return route_user(to, engine.config, engine.registered_contacts)[0]
    return route_number(to, engine.config)


async def end_call(call: Call, cause: Cause) -> None:
    """Hang `call` up now with `cause` (CANCEL while it rings, BYE once answered) and stop whatever runs it."""
    await call.hangup(cause)
    task = call._task
    if task is not None and task is not asyncio.current_task():
        task.cancel()


class _Origination:
    """One request from INVITE to the end of the call (or to the failure that stopped it earlier)."""

    def __init__(self, engine: Engine, req: OutboundRequest, request_uuid: str, call_uuid: str) -> None:
        self.engine = engine
        self.req = req
        self.request_uuid = request_uuid
        self.call_uuid = call_uuid
        self.started_at = time.time()
        self.log: Any = log.bind(call_uuid=call_uuid, request_uuid=request_uuid)
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def hangup_url(self) -> str:
        return self.req.hangup_url or self.req.answer_url  # spec §2.5: defaults to answer_url

    @property
    def extra_params(self) -> dict[str, str]:
        return {"RequestUUID": self.request_uuid, "ALegUUID": self.call_uuid, "ALegRequestUUID": self.request_uuid}

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- before the INVITE ------------------------------------------------------------------------------------------
    async def run(self) -> None:
        engine, req = self.engine, self.req
        self.log.info("outbound_requested", from_=req.from_, to=req.to)
        await self._record_start()
        try:
            target = _route(engine, req.to)
        except RoutingError as exc:
            self.log.warning("outbound_route_failed", cause=exc.cause, error=str(exc))
            await self._failed_before_invite(causes.CAUSES[exc.cause])
            return
        try:
            media = await RtpSession.open(engine.allocator, engine.media_host, engine.config.sip.public_address)
        except Exception as exc:  # ports exhausted or bind failure: this call only
            self.log.error("rtp_open_failed", error=str(exc))
            await self._failed_before_invite(causes.CAUSES["internal_error"])
            return
        headers = sip_headers.render(req.sip_headers)
        try:
            leg = await engine.ua.invite(
                target.uri, from_uri=f"sip:{req.from_}@{engine.config.sip.public_address}",
                sdp=media.local_sdp_offer(), headers=headers, credentials=target.credentials, proxy=target.proxy,
                display_name=req.caller_name or None,
            )
        except Exception as exc:  # the trunk's host does not resolve, no transport...
            media.close()
            self.log.warning("outbound_invite_failed", error=str(exc))
            await self._failed_before_invite(causes.CAUSES["network_error"])
            return
        call = Call(engine, leg, media, direction="outbound", answer_url=req.answer_url,
                    answer_method=req.answer_method, hangup_url=self.hangup_url, hangup_method=req.hangup_method,
                    fallback_url=req.fallback_url, fallback_method=req.fallback_method,
                    extra_params=self.extra_params, call_uuid=self.call_uuid)
        call.started_at = self.started_at
        call.params["CallStatus"] = "ringing"
        call.timeline.add("invite", destination=req.to, trunk=target.trunk)
        call.log.info("call_started", direction="outbound", from_=call.params["From"], to=call.params["To"],
                      trunk=target.trunk, request_uuid=self.request_uuid)
        engine.calls[call.uuid] = call
        try:
            if await self._ring(call, leg, media):
                await self._connected(call, media)
        finally:
            try:
                await call.finish()  # a no-op when run_call finished it already
            finally:
                engine.calls.pop(call.uuid, None)
                for task in list(self._tasks):
                    task.cancel()

    async def _record_start(self) -> None:
        store = self.engine.store
        if store is None:
            return
        try:
            await store.record_call_start(self.call_uuid, direction="outbound", from_number=self.req.from_.lstrip("+"),
                                          to_number=_number(self.req.to), started_at=self.started_at,
                                          request_uuid=self.request_uuid,
                                          hangup=(self.hangup_url, self.req.hangup_method, self._base_params()))
        except Exception:
            self.log.exception("call_record_failed")

    def _base_params(self) -> dict[str, str]:
        """The parameters of this request's hangup callback known before the call exists."""
        return {
            "CallUUID": self.call_uuid,
            "From": self.req.from_.lstrip("+"),
            "To": _number(self.req.to),
            "Direction": "outbound",
            "CallerName": self.req.caller_name,
            **self.extra_params,
        }

    async def _failed_before_invite(self, cause: Cause) -> None:
        """The request never became a SIP call: a call record and the hangup callback all the same."""
        ended = time.time()
        status = causes.call_status_for(cause, False)
        self.log.info("call_ended", cause=cause.name, code=cause.code, source=cause.hangup_source, duration=0)
        ended_counter = getattr(self.engine, "calls_ended", None)  # /metrics (engine.record_end counts the others)
        if ended_counter is not None:
            ended_counter[("outbound", status)] += 1
        store = self.engine.store
        if store is not None:
            try:
                await store.record_call_update(self.call_uuid, timeline=[
                    {"t": 0.0, "event": "failed", "cause": cause.name, "code": cause.code}])
                await store.finish_call(self.call_uuid, hangup_cause=cause.name, hangup_code=cause.code,
                                        hangup_source=cause.hangup_source, ended_at=ended, duration=0,
                                        bill_duration=0)
            except Exception:
                self.log.exception("call_record_failed")
        params = {
            **self._base_params(),
            **cause.hangup_params(),
            "CallStatus": status,
            "Duration": "0",
            "BillDuration": "0",
            "StartTime": _iso(self.started_at),
            "AnswerTime": "",
            "EndTime": _iso(ended),
        }
        self.engine.webhooks.spawn_callback(self.hangup_url, self.req.hangup_method, params,
                                            call_uuid=self.call_uuid, kind="hangup")

    # -- ringing ----------------------------------------------------------------------------------------------------
    async def _ring(self, call: Call, leg: OutboundLeg, media: RtpSession) -> bool:
        """Until the far end answers (True) or the attempt ends (False, the call's end cause set)."""
        req = self.req
        call._task = asyncio.current_task()  # DELETE /Call/{uuid}/ and shutdown cancel this while it rings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + req.ring_timeout
        rang = False
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    call.log.info("outbound_ring_timeout", seconds=req.ring_timeout)
                    call.timeline.add("ring_timeout", seconds=req.ring_timeout)
                    await call.hangup(causes.CAUSES["ring_timeout"])
                    return False
                try:
                    event = await asyncio.wait_for(leg.events.get(), remaining)
                except TimeoutError:
                    continue
                if isinstance(event, (Ringing, EarlyMedia)):
                    if not rang:
                        rang = True
                        call.timeline.add("ringing", status=getattr(event, "status", 183))
                        if req.ring_url:
                            call.callback(req.ring_url, req.ring_method, {"CallStatus": "ringing"}, kind="ring")
                    if isinstance(event, EarlyMedia):
                        self._accept(call, media, event.sdp)
                        call.early_media = True
                        if req.send_on_preanswer and req.send_digits:
                            self._spawn(self._send_digits(call, media))
                elif isinstance(event, Answered):
                    self._accept(call, media, event.sdp)
                    await self._answered(call)
                    return True
                elif isinstance(event, Ended):
                    if call.end_cause is None:
                        # The far end said no (busy, rejected...) or the network gave up: the callee's side.
                        call.end_cause = causes.from_leg_end(event.cause, False, leg="b")
                        call.timeline.add("not_connected", kind=event.cause.kind, status=event.cause.status)
                    return False
        except asyncio.CancelledError:
            transferring = call.answered and call.transfer_to is not None
            if not call.ended and not transferring:
                raise
            task = asyncio.current_task()
            if task is not None:
                # Hung up through the API (or shutdown) while ringing: finish normally. Or transferred just as the
                # 200 came: run_call takes the transfer up.
                task.uncancel()
            return transferring and not call.ended
        finally:
            call._task = None

    def _accept(self, call: Call, media: RtpSession, sdp: str | None) -> None:
        if not sdp or media.negotiated is not None:
            return
        try:
            media.accept_answer(sdp)
        except Exception as exc:  # an SDP we cannot use: signalling goes on, media will not flow
            call.log.warning("sdp_answer_unusable", error=str(exc))

    async def _answered(self, call: Call) -> None:
        call.answered_at = time.time()
        call.params["CallStatus"] = "in-progress"
        call.timeline.add("answered")
        call.log.info("call_answered")
        store = self.engine.store
        if store is not None:
            try:
                await store.record_call_update(call.uuid, answered_at=call.answered_at)
            except Exception:
                call.log.exception("call_record_failed")

    # -- answered ---------------------------------------------------------------------------------------------------
    async def _connected(self, call: Call, media: RtpSession) -> None:
        req = self.req
        loop = asyncio.get_running_loop()
        limit = loop.call_later(req.time_limit, lambda: self._spawn(self._time_up(call)))
        if req.send_digits and not req.send_on_preanswer:
            self._spawn(self._send_digits(call, media))
        try:
            await run_call(call)
        finally:
            limit.cancel()

    async def _time_up(self, call: Call) -> None:
        if call.ended:
            return
        call.log.info("time_limit_reached", seconds=self.req.time_limit)
        call.timeline.add("time_limit", seconds=self.req.time_limit)
        await end_call(call, causes.CAUSES["allotted_timeout"])

    async def _send_digits(self, call: Call, media: RtpSession) -> None:
        try:
            await media.send_dtmf(self.req.send_digits)
            call.timeline.add("send_digits", digits=self.req.send_digits)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            call.log.warning("send_digits_failed", error=str(exc))


async def _place(engine: Engine, req: OutboundRequest, request_uuid: str, call_uuid: str) -> None:
    origination = _Origination(engine, req, request_uuid, call_uuid)
    try:
        await origination.run()
    except asyncio.CancelledError:
        raise
    except Exception:
        origination.log.exception("outbound_crashed")


def find_live(engine: Engine, uuid: str) -> Call | None:
    """The live call with this CallUUID, or the outbound call placed for this RequestUUID."""
    call = engine.calls.get(uuid)
    if call is not None:
        return call
    return next((c for c in engine.calls.values() if c.params.get("RequestUUID") == uuid), None)


def _number(to: str) -> str:
    """`To` as callbacks show it: '+' stripped, the user part of a SIP URI."""
    if to.lower().startswith(("sip:", "sips:")):
        rest = to.split(":", 1)[1]
        return rest.split("@", 1)[0] if "@" in rest else rest
    return to.lstrip("+")


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


__all__ = [
    "OutboundRequest", "RequestError", "end_call", "find_live", "method_param", "originate", "parse_request",
    "url_param",
]
