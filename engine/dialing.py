"""One `<Dial>` from ringing to hangup: B legs rung in parallel, ring music for A, confirm keys, the bridge, time
limits, hangupOnStar, digit matches, B-leg callbacks, and the DialStatus/DialHangupCause that ends it.

The Dial verb (engine/verbs/dial.py) builds a `DialPlan` from its element and awaits `Dialing(call, plan).run()`;
the result carries the action-URL parameters. Every B leg is cleaned up in `finally` (CANCEL while ringing, BYE when
bridged) whatever ends the Dial — the caller hanging up cancels the verb's task and lands there too.

What does not live here: routing decisions (engine.routing), header rules (engine.sip_headers), SIP (sip/), media
(media/), the action request itself (the interpreter follows the verb's Redirect outcome).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid as uuidlib
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from media.bridge import Bridge, FrameRelay
from media.session import RtpSession
from media.sources import ringback_us
from sip.auth import Credentials
from sip.leg import Answered, EarlyMedia, EndCause, Ended, OutboundLeg, Ringing

from . import causes, sip_headers
from .causes import Cause
from .routing import RoutingError, Target, route_number, route_user

if TYPE_CHECKING:
    from .call import Call

log = structlog.get_logger("engine.dial")

MAX_RING_SECONDS = 300  # safety net when <Dial> has no timeout and the far end never answers nor gives up


@dataclass
class DialTarget:
    """One Number/User child: where it goes and what is sent on its leg."""

    kind: str  # "number" | "user"
    destination: str
    send_digits: str | None = None
    send_on_preanswer: bool = False
    sip_headers: tuple[tuple[str, str], ...] = ()
    caller_id: str | None = None
    caller_name: str | None = None


@dataclass
class DialPlan:
    targets: list[DialTarget]
    timeout: int | None = None
    time_limit: int = 14400
    hangup_on_star: bool = False
    caller_id: str | None = None
    caller_name: str | None = None
    dial_music: str = ""
    confirm_sound: str | None = None
    confirm_key: str | None = None
    confirm_timeout: int = 120
    callback_url: str | None = None
    callback_method: str = "POST"
    digits_match: tuple[str, ...] = ()
    digits_match_b: tuple[str, ...] = ()
    sip_headers: tuple[tuple[str, str], ...] = ()
    whatsapp: bool = False
    credentials: Credentials | None = field(default=None, repr=False)


@dataclass(eq=False)
class BLeg:
    target: Target | None
    plan_target: DialTarget
    uuid: str = field(default_factory=lambda: str(uuidlib.uuid4()))
    leg: OutboundLeg | None = None
    media: RtpSession | None = None
    rang: bool = False
    answered_at: float | None = None
    ended_at: float | None = None
    cause: Cause | None = None
    lost_race: bool = False
    inbox: _Inbox | None = field(default=None, repr=False)  # the Dial's: where this leg's events go

    @property
    def label(self) -> str:
        return self.plan_target.destination

    def forward(self, event: Any) -> None:
        """This leg's SIP and DTMF events, into the Dial's inbox (a bound method, not a closure per leg: a live
        call's objects are what each full garbage collection walks)."""
        assert self.inbox is not None
        self.inbox.put_nowait((self, event))

    def forward_digit(self, event: Any) -> None:
        self.forward(_Digit(event.digit))


class _Inbox:
    """A Dial's events in arrival order: asyncio.Queue's put_nowait/get/get_nowait/empty, with one deque instead
    of three (a bridged call keeps its Dial's inbox for as long as it lasts)."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[tuple[BLeg | None, Any]] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: tuple[BLeg | None, Any]) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def get_nowait(self) -> tuple[BLeg | None, Any]:
        return self._items.popleft()

    async def get(self) -> tuple[BLeg | None, Any]:
        while not self._items:  # an item is taken only here, after the wake-up: a cancelled get loses nothing
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()


@dataclass(frozen=True)
class _Confirmed:
    """Inbox item: the confirmSound/confirmKey exchange on a B leg is over (its task, to read the result from)."""

    task: asyncio.Task[bool]


@dataclass(frozen=True)
class _Digit:
    """Inbox item: a digit while bridged, from A (`b` None) or from B."""

    digit: str


@dataclass
class DialResult:
    cause: Cause
    rang: bool
    b_leg_uuid: str = ""
    answered: bool = False

    def params(self, a_leg_uuid: str) -> dict[str, str]:
        return {
            **self.cause.dial_params(),
            "DialStatus": "completed" if self.answered else self.cause.dial_status,
            "DialRingStatus": "true" if self.rang else "false",
            "DialALegUUID": a_leg_uuid,
            "DialBLegUUID": self.b_leg_uuid,
        }


# Which failure of several parallel legs explains the Dial best (first found wins).
_FAILURE_PRIORITY = ("busy", "no-answer", "timeout", "failed")


class Dialing:
    def __init__(self, call: Call, plan: DialPlan) -> None:
        self.call = call
        self.plan = plan
        self.legs: list[BLeg] = []
        self.winner: BLeg | None = None
        self.bridge: Bridge | None = None
        # Everything the Dial waits for, in the order it happens: B legs' SIP events (Leg.forward_events), the end
        # of a confirm exchange, digits while bridged. One queue and one await per item: no task per leg or per wait.
        self.events = _Inbox()
        self._tasks: set[asyncio.Task[Any]] | None = None  # made on first use
        self._music: asyncio.Task[Any] | None = None
        self._real_relay: FrameRelay | None = None
        self.log = call.log.bind(dial=True)

    # -- entry ------------------------------------------------------------------------------------------------------
    async def run(self) -> DialResult:
        try:
            await self._originate()
            if not any(b.leg is not None for b in self.legs):
                return self._failure_result()
            self._start_music()
            winner = await self._ring()
            if winner is None:
                return self._failure_result()
            return await self._bridged(winner)
        finally:
            await self._cleanup()

    # -- ringing ------------------------------------------------------------------------------------------------------
    async def _originate(self) -> None:
        call, plan = self.call, self.plan
        engine = call.engine
        contacts = engine.registered_contacts
        for pt in plan.targets:
            try:
                if pt.kind == "number":
                    targets = [route_number(pt.destination, engine.config, whatsapp=plan.whatsapp)]
                else:
                    targets = route_user(pt.destination, engine.config, contacts)
            except RoutingError as exc:
                self.log.warning("dial_route_failed", destination=pt.destination, cause=exc.cause, error=str(exc))
                call.timeline.add("dial_route_failed", destination=pt.destination, cause=exc.cause)
                self.legs.append(BLeg(None, pt, cause=causes.CAUSES[exc.cause]))
                continue
            for target in targets:
                await self._invite(pt, target)

    async def _invite(self, pt: DialTarget, target: Target) -> None:
        call, plan = self.call, self.plan
        engine = call.engine
        b = BLeg(target, pt)
        self.legs.append(b)
        try:
            b.media = await RtpSession.open(engine.allocator, engine.media_host, engine.config.sip.public_address)
        except Exception as exc:
            self.log.error("dial_rtp_open_failed", error=str(exc))
            b.cause = causes.CAUSES["internal_error"]
            return
        b.media.call_uuid = call.uuid
        caller_id = _choose(pt.caller_id, plan.caller_id, call.params.get("From", ""))
        caller_name = _choose(pt.caller_name, plan.caller_name, call.params.get("CallerName", ""))
        headers = sip_headers.render(plan.sip_headers, pt.sip_headers, raw=call.authenticated)
        credentials = plan.credentials or target.credentials
        from_uri = f"sip:{caller_id or 'anonymous'}@{engine.config.sip.public_address}"
        b.leg = await engine.ua.invite(
            target.uri, from_uri=from_uri, sdp=b.media.local_sdp_offer(), headers=headers,
            credentials=credentials, proxy=target.proxy, display_name=caller_name or None,
        )
        b.leg.log = b.leg.log.bind(call_uuid=call.uuid, b_leg_uuid=b.uuid)
        self.log.info("dial_b_leg", b_leg_uuid=b.uuid, destination=pt.destination, trunk=target.trunk,
                      authenticated=credentials is not None)
        call.timeline.add("dial_b_leg", b_leg_uuid=b.uuid, destination=pt.destination, trunk=target.trunk)
        b.inbox = self.events
        b.leg.forward_events(b.forward)

    async def _ring(self) -> BLeg | None:
        deadline = time.monotonic() + (self.plan.timeout or MAX_RING_SECONDS)
        pending = {b for b in self.legs if b.leg is not None and b.cause is None}
        confirming: dict[BLeg, asyncio.Task[bool]] = {}
        events = self.events
        while pending:
            if events.empty():
                remaining = deadline - time.monotonic()
                try:
                    if remaining <= 0:
                        raise TimeoutError
                    async with asyncio.timeout(remaining):
                        item = await events.get()
                except TimeoutError:
                    self.log.info("dial_ring_timeout", timeout=self.plan.timeout)
                    for b in pending:
                        b.cause = causes.CAUSES["ring_timeout"]
                    self.call.timeline.add("dial_ring_timeout")
                    return None
            else:
                item = events.get_nowait()
            b_or_none, event = item
            if b_or_none is None:
                continue  # only A's digits come without a leg, and only while bridged
            b = b_or_none
            if isinstance(event, _Confirmed):
                if confirming.get(b) is not event.task:
                    continue  # the leg ended while confirming (its task was cancelled): already counted
                del confirming[b]
                if event.task.result():
                    return b
                await self._drop(b, causes.CAUSES["call_rejected"].with_source("Call recipient"))
                pending.discard(b)
                continue
            winner = await self._ringing_event(b, event, pending, confirming)
            if winner is not None:
                return winner
        return None

    async def _ringing_event(self, b: BLeg, event: Any, pending: set[BLeg],
                             confirming: dict[BLeg, asyncio.Task[bool]]) -> BLeg | None:
        if isinstance(event, (Ringing, EarlyMedia)):
            if not b.rang:
                b.rang = True
                self.call.timeline.add("dial_ringing", b_leg_uuid=b.uuid)
            if isinstance(event, EarlyMedia):
                await self._early_media(b, event.sdp)
            return None
        if isinstance(event, Answered):
            b.answered_at = time.time()
            if b.media is not None and event.sdp and b.media.negotiated is None:
                b.media.accept_answer(event.sdp)
            if self.plan.confirm_sound:
                task = asyncio.ensure_future(self._confirm(b))
                confirming[b] = task
                task.add_done_callback(lambda t: self.events.put_nowait((b, _Confirmed(t))))
                return None
            return b
        if isinstance(event, Ended):
            pending.discard(b)
            b.ended_at = time.time()
            if b.cause is None:
                b.cause = causes.from_leg_end(event.cause, b.answered_at is not None)
            self.log.info("dial_b_leg_ended", b_leg_uuid=b.uuid, cause=b.cause.name, code=b.cause.code)
            self.call.timeline.add("dial_b_failed", b_leg_uuid=b.uuid, cause=b.cause.name, code=b.cause.code)
            task = confirming.pop(b, None)
            if task is not None:
                task.cancel()
        return None

    async def _early_media(self, b: BLeg, sdp: str) -> None:
        if b.media is not None and b.media.negotiated is None:
            b.media.accept_answer(sdp)
        if b.plan_target.send_on_preanswer and b.plan_target.send_digits and b.media is not None:
            self._spawn(b.media.send_dtmf(b.plan_target.send_digits))
        if self.plan.dial_music == "real" and self._real_relay is None and b.media is not None:
            # The caller hears B's early media (ringback, announcements) as it comes.
            await self.call.pre_answer()
            relay = FrameRelay()
            b.media.add_sink(relay)
            if self.call.media is not None:
                self.call.media.play(relay)
            self._real_relay = relay

    async def _confirm(self, b: BLeg) -> bool:
        """confirmSound to the answered B leg; True only if B presses confirmKey in time (or no key is needed)."""
        assert b.media is not None and self.plan.confirm_sound
        digits: asyncio.Queue[str] = asyncio.Queue()
        b.media.add_dtmf_listener(lambda e: digits.put_nowait(e.digit))
        verbs = await self._fetch_play_verbs(self.plan.confirm_sound)
        prompt = asyncio.ensure_future(self._play_verbs_on(b.media, verbs, loop=False))
        if not self.plan.confirm_key:
            await prompt
            return True
        try:
            async with asyncio.timeout(self.plan.confirm_timeout):
                while True:
                    if await digits.get() == self.plan.confirm_key:
                        return True
        except TimeoutError:
            return False
        finally:
            prompt.cancel()

    # -- ring music for A ---------------------------------------------------------------------------------------
    def _start_music(self) -> None:
        music = self.plan.dial_music
        if music in ("none", "real") or self.call.media is None:
            return
        self._music = asyncio.ensure_future(self._play_music(music))

    async def _play_music(self, music: str) -> None:
        await self.call.pre_answer()  # an unanswered caller hears it as early media (183)
        if music == "":
            await self.call.play(ringback_us())
            return
        verbs = await self._fetch_play_verbs(music)
        if not verbs:
            await self.call.play(ringback_us())
            return
        while True:
            for verb in verbs:
                await verb.run(self.call)

    async def _fetch_play_verbs(self, url: str) -> list[Any]:
        """dialMusic / confirmSound: an XML document of Play/Speak/Wait (fetched with POST); the rest is ignored."""
        from .xml import parse_document  # local: engine.xml imports the verbs, which import this module

        call = self.call
        try:
            result = await call.engine.webhooks.fetch_xml(
                call.resolve(url), "POST", {}, session_params=call.params, call_uuid=call.uuid, kind="dial_music",
                validate=parse_document, retry_unusable=False,
            )
        except Exception as exc:
            self.log.warning("dial_music_unusable", url=url, error=str(exc))
            return []
        doc = result.parsed
        return [v for v in doc.verbs if v.TAG in ("Play", "Speak", "Wait")]

    async def _play_verbs_on(self, media: RtpSession, verbs: list[Any], loop: bool) -> None:
        """Play Speak/Play prompts on a B leg's session (confirmSound)."""
        engine = self.call.engine
        while True:
            for verb in verbs:
                if verb.TAG == "Speak":
                    pcm = await engine.tts.render(verb.text, verb.attrs["voice"], verb.attrs["language"])
                elif verb.TAG == "Play":
                    pcm = await engine.fetcher.fetch(self.call.resolve(verb.text))
                else:
                    await asyncio.sleep(verb.attrs["length"])
                    continue
                from media.sources import PcmSource

                await media.play(PcmSource(pcm))
            if not loop:
                return

    def _stop_music(self) -> None:
        if self._music is not None:
            self._music.cancel()
            self._music = None
        if self._real_relay is not None:
            self._real_relay.stop()
            self._real_relay = None

    # -- bridged ------------------------------------------------------------------------------------------------------
    async def _bridged(self, winner: BLeg) -> DialResult:
        call = self.call
        self.winner = winner
        for b in self.legs:
            if b is not winner and b.leg is not None and b.cause is None:
                b.lost_race = True
                await self._drop(b, causes.CAUSES["lose_race"])
        self._stop_music()
        if call.direction == "inbound" and not call.answered:
            await call.answer()
        assert winner.media is not None and winner.leg is not None
        if call.media is not None:
            self.bridge = Bridge(call.media, winner.media)
            self.bridge.start()
        self.log.info("dial_bridged", b_leg_uuid=winner.uuid, destination=winner.label)
        call.timeline.add("dial_answered", b_leg_uuid=winner.uuid)
        self._b_callback("answer", winner)
        if winner.plan_target.send_digits and not winner.plan_target.send_on_preanswer:
            self._spawn(winner.media.send_dtmf(winner.plan_target.send_digits))
        if call.pending_dial_recording is not None:
            call.start_dial_recording(winner.media)
        ended_by = await self._wait_bridged(winner)
        if winner.cause is None:
            winner.cause = ended_by
        self._b_callback("hangup", winner)
        return DialResult(winner.cause, True, winner.uuid, answered=True)

    async def _wait_bridged(self, b: BLeg) -> Cause:
        """Until B hangs up, timeLimit expires, or A presses * (hangupOnStar); A hanging up cancels this task."""
        plan = self.plan
        assert b.leg is not None
        limit = asyncio.get_running_loop().time() + plan.time_limit
        a_digits = ""
        b_typed = ""
        events = self.events
        if plan.digits_match_b and b.media is not None:
            b.media.add_dtmf_listener(b.forward_digit)
        self.call.flush_digits()
        self.call.digit_sink = self._a_digit
        try:
            async with asyncio.timeout_at(limit):
                while True:
                    who, event = await events.get()
                    if who is b and isinstance(event, Ended):
                        b.ended_at = time.time()
                        return causes.from_leg_end(event.cause, True)
                    if not isinstance(event, _Digit):
                        continue  # a lost leg's last events, a confirm that finished late
                    if who is None:
                        if plan.hangup_on_star and event.digit == "*":
                            break
                        a_digits += event.digit
                        self._match(plan.digits_match, a_digits, "DialDigitsMatch", b)
                    elif who is b:
                        b_typed += event.digit
                        self._match(plan.digits_match_b, b_typed, "DialDigitsMatchBLeg", b)
        except TimeoutError:
            self.log.info("dial_time_limit", seconds=plan.time_limit)
            await self._drop(b, causes.CAUSES["allotted_timeout"])
            return causes.CAUSES["allotted_timeout"]
        finally:
            self.call.digit_sink = None
        self.log.info("dial_hangup_on_star")
        await self._drop(b, causes.CAUSES["normal_hangup"].with_source("Caller"))
        return causes.CAUSES["normal_hangup"].with_source("Caller")

    def _a_digit(self, digit: str) -> None:  # the caller's digits while bridged (Call.digit_sink)
        self.events.put_nowait((None, _Digit(digit)))

    def _match(self, patterns: tuple[str, ...], typed: str, param: str, b: BLeg) -> None:
        for pattern in patterns:
            if typed.endswith(pattern):
                self._b_callback("digits", b, {param: pattern})

    # -- callbacks and cleanup ----------------------------------------------------------------------------------------
    def _b_callback(self, action: str, b: BLeg, extra: dict[str, str] | None = None) -> None:
        if not self.plan.callback_url:
            return
        call = self.call
        params = {
            "DialAction": action,
            "DialALegUUID": call.uuid,
            "DialBLegUUID": b.uuid,
            "DialBLegTo": b.label,
            "DialBLegFrom": call.params.get("From", ""),
        }
        if action in ("answer", "hangup"):
            params["DialBLegStatus"] = action
        if action == "hangup" and b.cause is not None:
            duration = int((b.ended_at or time.time()) - (b.answered_at or time.time()))
            params.update({
                "DialBLegHangupCause": b.cause.name,
                "DialBLegHangupCauseCode": str(b.cause.code),
                "DialBLegDuration": str(max(duration, 0)),
                "DialBLegBillDuration": str(max(duration, 0)),
            })
        params.update(extra or {})
        call.callback(self.plan.callback_url, self.plan.callback_method, params, kind=f"dial_{action}")

    async def _drop(self, b: BLeg, cause: Cause) -> None:
        """End one B leg now (CANCEL while ringing, BYE when answered) with `cause` noted."""
        if b.cause is None:
            b.cause = cause
        b.ended_at = b.ended_at or time.time()
        if b.leg is not None:
            with contextlib.suppress(Exception):
                await b.leg.hangup()

    def _failure_result(self) -> DialResult:
        failed = [b for b in self.legs if b.cause is not None]
        rang = any(b.rang for b in self.legs)
        if not failed:
            return DialResult(causes.CAUSES["unknown"], rang)
        for status in _FAILURE_PRIORITY:
            for b in failed:
                if b.cause is not None and b.cause.dial_status == status:
                    return DialResult(b.cause, rang)
        cause = failed[0].cause
        assert cause is not None
        return DialResult(cause, rang)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _cleanup(self) -> None:
        self._stop_music()
        if self.bridge is not None:
            self.bridge.stop()
        for b in self.legs:
            if b.leg is not None and b.leg.state.value != "ended":
                await self._drop(b, causes.CAUSES["originator_cancel"].with_source("Caller"))
            if b.leg is not None:
                b.leg.forward_events(None)  # the Dial is over: nothing reads its inbox any more
            if b.media is not None:
                b.media.close()
        for task in list(self._tasks or ()):
            task.cancel()


def _choose(*values: str | None) -> str:
    """The first value that is set; 'none' means explicitly empty (spec §4.1 callerId/callerName)."""
    for value in values:
        if value is None:
            continue
        return "" if value == "none" else value
    return ""


__all__ = ["DialPlan", "DialResult", "DialTarget", "Dialing", "EndCause"]
