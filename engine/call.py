"""`Call`: one call's state and the operations verbs use — answer, early media, play, collect digits, call back,
hang up — over its SIP `Leg` and its RTP session.

A Call owns: the A leg, the media session, the session params every webhook carries, the DTMF queue, the timeline
written to the call record, and the end of the call (cause, hangup callback). It never parses XML and never runs
verbs itself (engine.interpreter does); verbs never touch SIP messages or sockets (they call these methods).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import structlog

from media.frames import AudioSource
from media.session import RtpSession
from media.sources import PcmSource
from sip.leg import Dtmf, Ended, InboundLeg, Leg, OutboundLeg, Reoffer
from sip.uri import NameAddr

from . import causes
from .causes import Cause
from .recordings import Recording

if TYPE_CHECKING:
    from .engine import Engine

_call_log = structlog.get_logger("engine.call")


@dataclass(slots=True)
class Timeline:
    """What happened to a call, for the call record: (seconds since start, event, details)."""

    started: float = field(default_factory=time.time)
    # details as a tuple of (name, value) pairs, not a dict: a tuple of strings and numbers is one the garbage
    # collector stops tracking, and a live call's timeline is walked by every full collection
    events: list[tuple[float, str, tuple[tuple[str, Any], ...]]] = field(default_factory=list)

    def add(self, event: str, **details: Any) -> None:
        self.events.append((round(time.time() - self.started, 3), event, tuple(details.items())))

    def as_json(self) -> list[dict[str, Any]]:
        return [{"t": t, "event": e, **dict(d)} for t, e, d in self.events]


def valid_text(value: str) -> str:
    """`value` as valid Unicode: SIP text may carry bytes that are not UTF-8 (the parser keeps them as surrogate
    escapes); apps and the store get U+FFFD for each instead (a lone surrogate cannot be url-encoded or stored)."""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def number_of(header_value: str | None) -> str:
    """The user part of a From/To value, '+' stripped (spec §2.4)."""
    if not header_value:
        return ""
    try:
        user = NameAddr.parse(header_value).uri.user or ""
    except ValueError:
        return ""
    return user.lstrip("+")


class CallEnded(Exception):
    """Raised inside verbs when the call is gone (the interpreter task is cancelled instead where possible)."""


class Call:
    def __init__(self, engine: Engine, leg: Leg, media: RtpSession | None, *, direction: str,
                 answer_url: str, answer_method: str, hangup_url: str = "", hangup_method: str = "POST",
                 fallback_url: str = "", fallback_method: str = "POST", extra_params: dict[str, str] | None = None,
                 call_uuid: str | None = None) -> None:
        self.engine = engine
        self.leg = leg
        self.media = media
        self.direction = direction
        self.uuid = call_uuid or str(uuidlib.uuid4())
        self.answer_url = answer_url
        self.answer_method = answer_method
        self.hangup_url = hangup_url
        self.hangup_method = hangup_method
        self.fallback_url = fallback_url
        self.fallback_method = fallback_method
        self.document_url = answer_url
        self.timeline = Timeline()
        self.started_at = time.time()
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.end_cause: Cause | None = None
        self._digits: asyncio.Queue[str] | None = None  # made on first use (most calls never read digits)
        # Set while something takes the caller's digits as they come instead of from `digits` (a bridged Dial).
        self.digit_sink: Callable[[str], None] | None = None
        self.early_media = False
        self.session_recordings: tuple[tuple[Any, Recording], ...] = ()
        self.pending_dial_recording: Any = None
        self.verb_index = 0  # position of the running verb in its document
        self.first_document = True  # the running document is the answer_url's (not a redirect's)
        self.transfer_to: tuple[str, str] | None = None  # (url, method) of a REST transfer not yet taken up
        self.log: Any = _call_log.bind(call_uuid=self.uuid)
        leg.log = leg.log.bind(call_uuid=self.uuid)
        self.params: dict[str, str] = self._session_params(extra_params or {})
        self._ended = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._scheduled_hangup: asyncio.TimerHandle | None = None
        if media is not None:
            media.call_uuid = self.uuid
            media.add_dtmf_listener(self._on_dtmf)
            leg.offer_handler = self._answer_reoffer

    # -- identity and params --------------------------------------------------------------------------------------
    def _session_params(self, extra: dict[str, str]) -> dict[str, str]:
        h = self.leg.headers
        params = {
            "CallUUID": self.uuid,
            "From": number_of(h.get("From")),
            "To": number_of(h.get("To")),
            "CallStatus": "ringing" if self.direction == "inbound" else "in-progress",
            "Direction": self.direction,
        }
        try:
            display = NameAddr.parse(h.get("From") or "").display
        except ValueError:
            display = None
        params["CallerName"] = display or ""
        diversion = h.get("Diversion")
        if diversion:
            params["ForwardedFrom"] = number_of(diversion)
        if self.direction == "inbound":
            for name, value in h:
                if name.lower().startswith("x-ph-"):
                    params[name] = value  # inbound X-PH-* headers reach webhooks as params (client rule)
        params.update(extra)
        return {valid_text(k): valid_text(v) for k, v in params.items()}

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    @property
    def authenticated(self) -> bool:
        """The caller passed SIP digest auth (raw sipHeaders mode, client rule §0.3)."""
        return getattr(self.leg, "authenticated_user", None) is not None

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def resolve(self, url: str) -> str:
        """A URL from the current document, made absolute against the URL it came from (RFC 3986)."""
        return urljoin(self.document_url, url) if self.document_url else url

    # -- SIP: answer, early media, hang up -------------------------------------------------------------------------
    def _answer_reoffer(self, offer: str) -> str:
        assert self.media is not None
        return self.media.answer(offer)

    def _local_sdp(self) -> str | None:
        if self.media is None:
            return None
        if self.leg.remote_sdp and self.media.negotiated is None:
            return self.media.answer(self.leg.remote_sdp)
        if self.media.negotiated is None:
            return self.media.local_sdp_offer()
        return self.leg.local_sdp

    async def answer(self) -> None:
        """Answer an inbound call (200 with our SDP) unless it is answered already."""
        if self.answered or not isinstance(self.leg, InboundLeg):
            return
        if self.ended:
            raise CallEnded()
        await self.leg.answer(self._local_sdp())
        self.answered_at = time.time()
        self.params["CallStatus"] = "in-progress"
        self.timeline.add("answered")
        self.log.info("call_answered")
        store = self.engine.store
        if store is not None:  # a crash later still leaves the record saying it was answered (engine/recovery.py)
            try:
                await store.record_call_update(self.uuid, answered_at=self.answered_at)
            except Exception:
                self.log.exception("call_record_failed")

    async def pre_answer(self) -> None:
        """183 Session Progress with SDP: media flows, the call stays unanswered (not billed)."""
        if self.answered or self.early_media or not isinstance(self.leg, InboundLeg):
            return
        sdp = self._local_sdp()
        if sdp is None:
            raise RuntimeError("early media needs an SDP offer from the caller")
        await self.leg.early_media(sdp)
        self.early_media = True
        self.timeline.add("early_media")

    async def ring(self) -> None:
        if isinstance(self.leg, InboundLeg) and not self.answered and not self.ended:
            await self.leg.ring()

    async def hangup(self, cause: Cause) -> None:
        """End the call now with `cause`: BYE when answered, a SIP rejection (cause.sip_status) before."""
        if self.end_cause is None:
            self.end_cause = cause
        if isinstance(self.leg, InboundLeg):
            await self.leg.hangup(cause.sip_status or causes.DEFAULT_REJECT_STATUS, cause.label)
        elif isinstance(self.leg, OutboundLeg):
            await self.leg.hangup()
        self._ended.set()

    def schedule_hangup(self, seconds: float, cause: Cause) -> None:
        """`<Hangup schedule=N>`: hang up N seconds from now, cancelling whatever verb runs then."""
        if self._scheduled_hangup is not None:
            self._scheduled_hangup.cancel()
        loop = asyncio.get_running_loop()
        self._scheduled_hangup = loop.call_later(seconds, lambda: loop.create_task(self._scheduled(cause)))
        self.timeline.add("hangup_scheduled", seconds=seconds)

    async def _scheduled(self, cause: Cause) -> None:
        self.log.info("scheduled_hangup_fired")
        await self.hangup(cause)
        if self._task is not None:
            self._task.cancel()

    # -- REST control -----------------------------------------------------------------------------------------------
    def transfer(self, url: str, method: str = "POST") -> None:
        """Live redirect (REST `POST /Call/{uuid}/`, spec §5.2 TransferCall): the running verb is broken off and the
        interpreter goes on with the document at `url`. An outbound call still ringing runs it (instead of its
        answer_url) once answered."""
        if self.ended:
            raise CallEnded()
        self.timeline.add("transfer", method=method)
        if self.direction == "outbound" and not self.answered:
            self.answer_url, self.answer_method, self.document_url = url, method, url
            return
        self.transfer_to = (url, method)
        if self._task is not None:
            self._task.cancel()  # engine.interpreter.run_call turns this cancellation into the transfer

    def take_transfer(self) -> tuple[str, str] | None:
        """The pending transfer (url, method), cleared."""
        transfer, self.transfer_to = self.transfer_to, None
        return transfer

    # -- media ----------------------------------------------------------------------------------------------------
    async def play(self, source: AudioSource) -> str:
        """Play `source` to the caller until it finishes; cancelled (hangup, barge-in) -> playback stopped."""
        if self.media is None:
            return "failed"
        playback = self.media.play(source)
        try:
            return str(await playback)
        finally:
            if not playback.done():
                self.media.stop_playing()

    async def play_pcm(self, pcm: bytes, loop: int = 1) -> str:
        return await self.play(PcmSource(pcm, loop=loop))

    def _on_dtmf(self, event: Any) -> None:  # the media session's DTMF listener
        self._on_digit(event.digit)

    def _on_digit(self, digit: str) -> None:
        sink = self.digit_sink
        if sink is None:
            self.digits.put_nowait(digit)
        else:
            sink(digit)
        self.timeline.add("dtmf", digit=digit)

    def new_recording(self, file_format: str, channels: int) -> Recording:
        return Recording(self.engine.recordings_dir, self.engine.base_url, file_format, channels)

    def start_session_recording(self, verb: Any, *, on_dial_answer: bool = False) -> None:
        """`<Record recordSession="true">`: record the rest of the call in the background (stereo: the caller
        left, what the caller hears right); the file and its callbacks are delivered when the call ends.
        `startOnDialAnswer` recordings are started by the next Dial when its B leg answers."""
        if self.media is None:
            self.log.error("record_without_media")
            return
        if on_dial_answer:
            self.pending_dial_recording = verb
            return
        channels = 2 if verb.attrs["recordChannelType"] == "stereo" else 1
        recording = self.new_recording(verb.attrs["fileFormat"], channels)
        self.media.add_sink(recording.recorder.sink_a)
        self.media.add_send_sink(recording.recorder.sink_b)
        self.session_recordings += ((verb, recording),)
        self.timeline.add("record_session", recording_id=recording.id)

    def start_dial_recording(self, b_media: RtpSession) -> None:
        """`<Record startOnDialAnswer="true">`: the bridged call from B's answer (A left, B right in stereo)."""
        verb, self.pending_dial_recording = self.pending_dial_recording, None
        if verb is None or self.media is None:
            return
        channels = 2 if verb.attrs["recordChannelType"] == "stereo" else 1
        recording = self.new_recording(verb.attrs["fileFormat"], channels)
        self.media.add_sink(recording.recorder.sink_a)
        b_media.add_sink(recording.recorder.sink_b)
        self.session_recordings += ((verb, recording),)
        self.timeline.add("record_dial", recording_id=recording.id)

    def _finish_session_recordings(self) -> None:
        for verb, recording in self.session_recordings:
            params = recording.finish()
            a = verb.attrs
            if a["callbackUrl"]:
                self.callback(a["callbackUrl"], a["callbackMethod"], params, kind="recording")
            if a["action"]:
                self.callback(a["action"], a["method"], params, kind="action")
        self.session_recordings = ()

    @property
    def digits(self) -> asyncio.Queue[str]:
        """The caller's DTMF digits not taken yet (GetDigits, Record's finishOnKey, Dial's hangupOnStar...)."""
        if self._digits is None:
            self._digits = asyncio.Queue()
        return self._digits

    def flush_digits(self) -> None:
        queued = self._digits
        while queued is not None and not queued.empty():
            queued.get_nowait()

    # -- HTTP ---------------------------------------------------------------------------------------------------
    def callback(self, url: str, method: str, params: dict[str, str] | None = None, kind: str = "callback") -> None:
        """Fire-and-forget callback with the session params; retried and kept in the outbox if it fails."""
        self.engine.webhooks.spawn_callback(self.resolve(url), method, params or {}, session_params=self.params,
                                            call_uuid=self.uuid, kind=kind)

    # -- lifecycle ----------------------------------------------------------------------------------------------------
    def watch_leg(self) -> None:
        """Take the leg's events as they happen (Leg.forward_events) until `unwatch_leg`: digits to the queue; the
        remote hanging up ends the call (cancels the verbs)."""
        self.leg.forward_events(self._on_leg_event)

    def unwatch_leg(self) -> None:
        self.leg.forward_events(None)

    def _on_leg_event(self, event: Any) -> None:
        if isinstance(event, Dtmf):
            self._on_digit(event.digit)
        elif isinstance(event, Reoffer):
            self.timeline.add("reoffer", on_hold=event.on_hold)
        elif isinstance(event, Ended):
            self.leg.forward_events(None)  # the last event taken (later ones stay queued, unread)
            if self.end_cause is None:
                # The far end is the caller on an inbound call, the call recipient on an outbound (API) one.
                party = "a" if self.direction == "inbound" else "b"
                self.end_cause = causes.from_leg_end(event.cause, self.answered, leg=party)
                self.timeline.add("remote_hangup", kind=event.cause.kind, status=event.cause.status)
            self._ended.set()
            if self._task is not None:
                self._task.cancel()

    async def finish(self) -> None:
        """Everything that happens once, whatever ended the call: media closed, record written, hangup callback."""
        if self.ended_at is not None:
            return
        self.ended_at = time.time()
        if self._scheduled_hangup is not None:
            self._scheduled_hangup.cancel()
        if self.end_cause is None:
            self.end_cause = causes.CAUSES["end_of_xml"]
        if self.leg.state.value != "ended":
            with contextlib.suppress(Exception):
                await self.hangup(self.end_cause)
        self._ended.set()
        if self.media is not None:
            self.media.close()
        self._finish_session_recordings()
        cause = self.end_cause
        duration = int(math.ceil(self.ended_at - self.answered_at)) if self.answered_at else 0
        status = causes.call_status_for(cause, self.answered)
        self.params["CallStatus"] = status
        self.timeline.add("ended", cause=cause.name, code=cause.code)
        self.log.info("call_ended", cause=cause.name, code=cause.code, source=cause.hangup_source, duration=duration)
        hangup_params = {
            **cause.hangup_params(),
            "CallStatus": status,
            "Duration": str(duration),
            "BillDuration": str(duration),
            "StartTime": _iso(self.started_at),
            "AnswerTime": _iso(self.answered_at) if self.answered_at else "",
            "EndTime": _iso(self.ended_at),
        }
        await self.engine.record_end(self, cause, duration)
        if self.hangup_url:
            self.engine.webhooks.spawn_callback(self.hangup_url, self.hangup_method, hangup_params,
                                                session_params=self.params, call_uuid=self.uuid, kind="hangup")


def _iso(ts: float | None) -> str:
    if ts is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))
