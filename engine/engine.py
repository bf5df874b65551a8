"""The engine: wires config, the SIP user agent, media, webhooks and the store, and turns INVITEs into `Call`s.

It owns process-wide services (one HTTP client, one TTS cache, one audio cache, one RTP port allocator, one SQLite
store and its callback outbox) and the table of live calls. A failing call is logged and ended; it never touches
another call. What a call does lives in engine.call / engine.interpreter / engine.verbs.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from media import sdp as sdp_mod
from media.fetch import AudioFetcher
from media.ports import PortAllocator
from media.session import RtpSession
from media.tts import Tts
from sip.events import Address
from sip.leg import InboundLeg
from sip.message import Request
from sip.transaction import ServerTransaction, TimerConfig
from sip.ua import UserAgent

from . import causes, metrics, outbound, rest
from .admission import Admission
from .call import Call, number_of
from .causes import Cause
from .config import Config
from .http_api import HttpServer
from .interpreter import run_call
from .loop_lag import LoopLag
from .outbox import OutboxWorker
from .recovery import recover
from .registrar import Registrar
from .sip_users import caller_is_authenticated_user, inbound_auth_for
from .store import Store
from .webhooks import Webhooks, WebhookSettings

log = structlog.get_logger("engine")

CALLBACK_FLUSH_TIMEOUT = 5.0
"""Seconds `stop()` lets hangup callbacks in flight finish before the rest are cancelled into the outbox."""


class Engine:
    def __init__(self, config: Config, *, webhook_settings: WebhookSettings | None = None,
                 outbox_options: dict[str, float] | None = None, sip_timers: TimerConfig | None = None) -> None:
        self.config = config
        self.webhook_settings = webhook_settings
        self.outbox_options = outbox_options or {}
        self.ua = UserAgent(public_address=config.sip.public_address, on_invite=self.on_invite,
                            inbound_auth=inbound_auth_for(config), timers=sip_timers)
        self.allocator = PortAllocator(config.sip.rtp_port_min, config.sip.rtp_port_max)
        self.tts = Tts()
        self.fetcher = AudioFetcher()
        self.calls: dict[str, Call] = {}
        self.store: Store | None = None
        self.webhooks: Webhooks = None  # type: ignore[assignment]  # set in start()
        self.outbox: OutboxWorker | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # one per call, from admission to its end (see live_calls)
        self.media_host = config.sip.listen_specs()[0][1]
        self.recordings_dir = Path(config.storage.recordings_dir)
        host, port = config.http.listen_address()
        self.http = HttpServer(self, host, port)
        # Extension points the daemon features plug into (REST API, metrics, registrar, admission limits):
        self.http_route_builders: list[Callable[[Any, Engine], None]] = []
        self.registrar = Registrar(self.ua, config)
        self.ua.on_request = self._on_request
        self.ua.allow = f"{self.ua.allow}, REGISTER"
        # Limits and draining (engine.admission): INVITEs get 503 + Retry-After, the REST API asks admission.admit().
        self.loop_lag = LoopLag()  # started with the engine; admission refuses new calls while the loop runs late
        self.admission = Admission(config.limits.max_calls, config.limits.max_cps, live=self.live_calls,
                                   lag=lambda: self.loop_lag.value, max_lag=config.limits.max_loop_lag_ms / 1000)
        self.ua.admit = self._admit_invite
        self.ua.out_of_service = lambda: self.admission.drain_retry_after if self.admission.draining else None
        self.calls_ended: Counter[tuple[str, str]] = Counter()  # (direction, CallStatus) -> calls, for /metrics
        self.http_route_builders.append(metrics.add_routes)
        self.http_route_builders.append(rest.add_routes)  # the Plivo v1 REST API (engine/rest.py)

    def live_calls(self) -> int:
        """Calls that count against max_calls: the call tasks (`_inbound` from the INVITE, outbound.originate from
        the REST request), so calls still being set up — not yet in self.calls — count from their admission on."""
        return max(len(self._tasks), len(self.calls))

    def _admit_invite(self, request: Request) -> int | None:
        """The UA's admission hook: None admits the INVITE, a number rejects it with 503 and that Retry-After."""
        ok, retry_after = self.admission.admit()
        return None if ok else retry_after

    def _on_request(self, request: Request, tx: ServerTransaction, source: Address) -> bool:
        """Out-of-dialog requests other than INVITE/OPTIONS (REGISTER goes to the registrar when there is one)."""
        if request.method == "REGISTER" and self.registrar is not None:
            self.registrar.on_register(request, tx, source)
            return True
        return False

    def registered_contacts(self, user: str) -> list[str]:
        """Contact URIs registered for `user` of `sip.domain` (routing of <User>); empty without a registrar."""
        if self.registrar is None:
            return []
        return list(self.registrar.contacts(user))

    async def start(self) -> dict[str, tuple[str, int]]:
        self.store = await Store.open(self.config.storage.path)
        await recover(self.store)  # calls and callbacks a killed process left (before anything new happens)
        self.webhooks = Webhooks.from_config(self.config, self.store, self.webhook_settings)
        self.outbox = OutboxWorker(self.store, self.webhooks, **self.outbox_options)  # type: ignore[arg-type]
        self.outbox.start()
        self.recordings_dir.mkdir(parents=True, exist_ok=True)
        self.loop_lag.start()
        await self.http.start()
        bound = await self.ua.start(self.config.sip.listen_specs())
        log.info("engine_started", sip={t: f"{h}:{p}" for t, (h, p) in bound.items()})
        return bound

    async def drain(self, timeout: float) -> bool:
        """Stop admitting calls (INVITE 503, REST refused, both with Retry-After) and wait up to `timeout` seconds
        for the live calls to end by themselves. True when none is left."""
        self.admission.start_draining(timeout)
        log.info("drain_started", calls=self.live_calls(), timeout=timeout)
        try:
            await asyncio.wait_for(self._drained(), timeout)
        except TimeoutError:
            log.warning("drain_timeout", calls=self.live_calls(), timeout=timeout)
            return False
        log.info("drain_finished")
        return True

    async def stop(self, drain_timeout: float = 0.0, callback_timeout: float = CALLBACK_FLUSH_TIMEOUT) -> None:
        """Refuse new calls, drain up to `drain_timeout` s, hang up what is left (SYSTEM_SHUTDOWN 5010: BYE when
        answered, 503 before), let hangup callbacks finish for up to `callback_timeout` s (the rest are stored in
        the outbox by webhooks.close), then close everything."""
        if not self.admission.draining:
            self.admission.start_draining(max(drain_timeout, 1.0))
        if drain_timeout and self.live_calls():
            await self.drain(drain_timeout)
        for call in list(self.calls.values()):
            if call.ended:
                continue
            call.end_cause = call.end_cause or causes.CAUSES["internal_error"]
            call.log.info("call_shutdown_hangup", cause=call.end_cause.name)
            try:
                await call.hangup(call.end_cause)
            except Exception:  # one call failing to hang up must not keep the others up
                call.log.exception("call_shutdown_hangup_failed")
            if call._task is not None:
                call._task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        pending = self.webhooks.pending_callbacks() if self.webhooks is not None else 0
        if pending and self.webhooks is not None:
            log.info("callbacks_flushing", pending=pending, timeout=callback_timeout)
            await self.webhooks.flush(callback_timeout)
        self.loop_lag.stop()
        await self.ua.stop()
        await self.http.stop()
        if self.outbox is not None:
            await self.outbox.stop()
        if self.webhooks is not None:
            await self.webhooks.close()
        await self.fetcher.aclose()
        if self.store is not None:
            await self.store.close()

    @property
    def base_url(self) -> str:
        """Where this engine's HTTP server is reached (RecordUrl, REST)."""
        host = self.http.host if self.http.host not in ("0.0.0.0", "::", "") else self.config.sip.public_address
        return f"http://{host}:{self.http.port}"

    async def _drained(self) -> None:
        while self.live_calls():
            await asyncio.sleep(0.1)

    # -- inbound calls ----------------------------------------------------------------------------------------------
    def on_invite(self, leg: InboundLeg) -> None:
        task = asyncio.ensure_future(self._inbound(leg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _inbound(self, leg: InboundLeg) -> None:
        if not caller_is_authenticated_user(leg):  # [[users]]: one user's credentials never vouch for another
            leg.log.info("inbound_auth_identity_mismatch", authenticated_user=leg.authenticated_user)
            await leg.reject(403, "Forbidden - From does not match the credentials")
            return
        to = number_of(leg.headers.get("To")) or number_of(f"<{leg.invite.uri}>")
        app = self.config.inbound.app_for(to)
        if leg.remote_sdp:
            try:
                sdp_mod.check_offer(leg.remote_sdp)
            except sdp_mod.SdpError as exc:
                leg.log.info("sdp_rejected", error=str(exc))
                await leg.reject(488, "Not Acceptable Here")
                return
        try:
            media = await RtpSession.open(self.allocator, self.media_host, self.config.sip.public_address)
        except Exception as exc:  # ports exhausted or bind failure: this call only
            leg.log.error("rtp_open_failed", error=str(exc))
            await leg.reject(503, "No media ports")
            return
        call = Call(self, leg, media, direction="inbound", answer_url=app.answer_url,
                    answer_method=app.answer_method, hangup_url=app.hangup_url, fallback_url=app.fallback_url)
        self.calls[call.uuid] = call
        call.log.info("call_started", direction="inbound", from_=call.params["From"], to=call.params["To"])
        try:
            if self.store is not None:
                await self._record_start(call)
            await run_call(call)
        finally:
            self.calls.pop(call.uuid, None)

    async def _record_start(self, call: Call) -> None:
        """The call's row in the store. (Its own coroutine: locals of _inbound's frame live as long as the call.)"""
        assert self.store is not None
        hangup = (call.hangup_url, call.hangup_method, dict(call.params)) if call.hangup_url else None
        try:
            await self.store.record_call_start(call.uuid, direction="inbound", from_number=call.params["From"],
                                               to_number=call.params["To"], started_at=call.started_at, hangup=hangup)
        except Exception:  # the call still runs (and ends: a dead task would leave its INVITE unanswered)
            call.log.exception("call_record_failed")

    # -- outbound calls ---------------------------------------------------------------------------------------------
    async def originate(self, request: Any) -> str:
        """Place a call for the REST API (engine/outbound.py): `request` is an OutboundRequest or its parameters.
        Returns the request_uuid at once; the call rings and runs in the background."""
        return await outbound.originate(self, request)

    async def record_end(self, call: Call, cause: Cause, duration: int) -> None:
        self.calls_ended[(call.direction, causes.call_status_for(cause, call.answered))] += 1
        if self.store is None:
            return
        try:
            await self.store.finish_call(call.uuid, hangup_cause=cause.name, hangup_code=cause.code,
                                         hangup_source=cause.hangup_source, ended_at=call.ended_at,
                                         answered_at=call.answered_at, duration=duration, bill_duration=duration,
                                         timeline=call.timeline.as_json(), returning=False)
        except Exception:
            call.log.exception("call_record_failed")
