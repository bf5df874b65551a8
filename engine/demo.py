"""`softswitch demo`: the seed examples of spec §0.4 run end to end on loopback, with no set-up at all.

One process starts everything on free 127.0.0.1 ports:
- the engine (a real `Engine`: SIP UDP+TCP, HTTP, RTP, its SQLite store in a temporary directory);
- the bundled example app (engine.example_app) as the engine's answer_url, Dial action and hangup callback;
- two simulated trunks built on softswitch's own SIP stack (`sip.ua.UserAgent` as a UAS): "busy-carrier" answers
  every INVITE 486, "carrier" challenges it with 401 (`sip.auth.DigestServer`), checks the digest of the retry, then
  rings, answers with SDP, plays a tone and sends BYE after a moment;
- a simulated caller per example (softswitch's `UserAgent` as a UAC plus an `RtpSession`): it dials the engine,
  records what it hears and, for the voicemail drop, plays a beep.

Every example runs at once (the whole demo takes about 8 s). For each call it prints a timeline - SIP messages as
the caller and the trunks see them on the wire, the engine's own record of the call (documents, verbs, Dial legs),
what the app received (answer fetch, Dial action, hangup callback) and what the caller heard - then the checks of
that example. The exit code is 0 only when every check of every example passed.

What does not live here: the engine itself (engine.engine) and the documents (engine.example_app). The wire taps
wrap the demo peers' transports only; the engine runs unmodified.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import secrets
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import numpy as np

from media.ports import PortAllocator
from media.session import RtpSession
from media.sources import Tone, beep
from sip.auth import DigestServer
from sip.leg import Answered, EarlyMedia, EndCause, Ended, InboundLeg, LegEvent, OutboundLeg
from sip.message import Headers, Request, Response, SipParseError, parse_message
from sip.transaction import ServerTransaction
from sip.ua import UserAgent

from . import example_app
from .config import load_config
from .engine import Engine
from .example_app import SEED1_FIRST, SEED1_SECOND, SEED4_OPEN, SEED7_DIAL, ExampleApp
from .store import CallRecord
from .webhooks import WebhookSettings

__all__ = ["Demo", "run_demo"]

HOST = "127.0.0.1"
AUTH_TOKEN = "demo-" + secrets.token_hex(8)
TRUNK_USER = "demo-trunk"
TRUNK_PASSWORD = "demo-trunk-" + secrets.token_hex(6)
TRUNK_REALM = "carrier.demo"
CALLER = "sip:+15557770000@127.0.0.1"
LOUD = 300.0  # RMS above which a 20 ms frame counts as sound
CALL_TIMEOUT = 20.0


# -- small helpers ---------------------------------------------------------------------------------------------------
def free_port() -> int:
    """A port free on both UDP and TCP on 127.0.0.1 right now."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((HOST, 0))
            port = int(u.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind((HOST, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port on 127.0.0.1")


def rtp_range(size: int = 400, low: int = 20000, high: int = 32000) -> tuple[int, int]:
    """An even-based RTP range of `size` ports in [low, high) (below Linux's ephemeral ports) of which at least 90%
    are free right now; PortAllocator skips whatever gets taken later."""
    for _ in range(50):
        base = low + 2 * secrets.randbelow((high - low - size) // 2)
        free = 0
        for port in range(base, base + size):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                try:
                    probe.bind((HOST, port))
                except OSError:
                    continue
                free += 1
        if free >= 0.9 * size:
            return base, base + size - 1
    raise RuntimeError(f"no RTP range of {size} mostly free ports in {low}-{high} on {HOST}")


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], "<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples * samples))) if samples.size else 0.0


def dominant_hz(pcm: bytes, rate: int = 8000) -> float:
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], "<i2").astype(np.float64)
    if samples.size < 16:
        return 0.0
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.argmax(spectrum) * rate / samples.size)


def sound_runs(heard: list[tuple[float, bytes]], gap: float = 0.5) -> list[tuple[float, float]]:
    """(start, end) wall-clock times of stretches of sound, gaps under `gap` seconds merged."""
    runs: list[tuple[float, float]] = []
    for at, pcm in heard:
        if rms(pcm) > LOUD:
            if runs and at - runs[-1][1] <= gap:
                runs[-1] = (runs[-1][0], at)
            else:
                runs.append((at, at))
    return runs


# -- timelines -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mark:
    """One line of a call's timeline."""

    at: float
    kind: str
    text: str


@dataclass(frozen=True)
class Wire:
    """One SIP message as a demo peer saw it on the wire."""

    at: float
    sender: str
    receiver: str
    message: Request | Response | None
    first_line: str
    call_id: str

    @property
    def is_request(self) -> bool:
        return isinstance(self.message, Request)

    def method(self) -> str:
        return self.message.method if isinstance(self.message, Request) else ""

    def status(self) -> int:
        return self.message.status if isinstance(self.message, Response) else 0

    def header(self, name: str) -> str | None:
        return self.message.headers.get(name) if self.message is not None else None

    def summary(self) -> str:
        m = self.message
        if m is None:
            return self.first_line
        notes = []
        if isinstance(m, Request):
            text = f"{m.method} {m.uri}" if m.method == "INVITE" else m.method
            if m.headers.get("Authorization") or m.headers.get("Proxy-Authorization"):
                notes.append("with digest credentials")
        else:
            text = f"{m.status} {m.reason}".strip()
            if m.cseq[1] != "INVITE":
                notes.append(m.cseq[1])
            if m.headers.get("WWW-Authenticate") or m.headers.get("Proxy-Authenticate"):
                notes.append("digest challenge")
        if m.body and "sdp" in (m.headers.get("Content-Type") or "").lower():
            notes.append("SDP")
        return text + (f"  ({', '.join(notes)})" if notes else "")


_CALL_ID = re.compile(rb"^(?:call-id|i)[ \t]*:[ \t]*(\S+)", re.I | re.M)


def tap(ua: UserAgent, me: str, peer: Callable[[Request | Response | None], str],
        sink: Callable[[Wire], None]) -> None:
    """Report every SIP message `ua` sends or receives to `sink` (demo only: wraps its transport set)."""
    transports = ua.transports
    send, deliver = transports.send, transports._on_message

    def parse(data: bytes) -> tuple[Request | Response | None, str, str]:
        first = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
        found = _CALL_ID.search(data)
        call_id = found.group(1).decode("utf-8", "replace") if found else ""
        try:
            return parse_message(data), first, call_id
        except SipParseError:
            return None, first, call_id

    def tapped_send(wire: bytes, dest: Any) -> None:
        message, first, call_id = parse(wire)
        sink(Wire(time.time(), me, peer(message), message, first, call_id))
        send(wire, dest)

    def tapped_deliver(data: bytes, source: Any) -> None:
        if data.strip():  # keep-alive CRLFs are not messages
            message, first, call_id = parse(data)
            sink(Wire(time.time(), peer(message), me, message, first, call_id))
        deliver(data, source)

    transports.send = tapped_send  # type: ignore[method-assign]
    transports._on_message = tapped_deliver


# -- the simulated caller --------------------------------------------------------------------------------------------
class SimCaller:
    """A phone on softswitch's own stack: dials the engine, keeps every frame it hears with its arrival time."""

    def __init__(self, allocator: PortAllocator) -> None:
        self.ua = UserAgent(user_agent="softswitch-demo-caller")
        self.allocator = allocator
        self.media: RtpSession | None = None
        self.leg: OutboundLeg | None = None
        self.heard: list[tuple[float, bytes]] = []
        self.wire: list[Wire] = []
        self.events: list[tuple[float, LegEvent]] = []
        self.answered_at: float | None = None
        self.early_at: float | None = None
        self.ended_at: float | None = None
        self.end_cause: EndCause | None = None
        self.answered = asyncio.Event()
        self.ended = asyncio.Event()
        self.marks: list[Mark] = []
        self._pump: asyncio.Task[None] | None = None

    async def start(self) -> SimCaller:
        await self.ua.start([("udp", HOST, 0)])
        tap(self.ua, "caller", lambda m: "engine", self.wire.append)
        self.media = await RtpSession.open(self.allocator, HOST, HOST)
        self.media.add_sink(self)
        return self

    def write_frame(self, pcm: bytes) -> None:  # AudioSink
        self.heard.append((time.time(), pcm))

    async def dial(self, uri: str) -> None:
        assert self.media is not None
        self.leg = await self.ua.invite(uri, from_uri=CALLER, sdp=self.media.local_sdp_offer(),
                                        display_name="Demo caller")
        self._pump = asyncio.ensure_future(self._events())

    async def _events(self) -> None:
        assert self.leg is not None and self.media is not None
        while True:
            event = await self.leg.events.get()
            now = time.time()
            self.events.append((now, event))
            if isinstance(event, (EarlyMedia, Answered)) and self.media.negotiated is None and event.sdp:
                self.media.accept_answer(event.sdp)
            if isinstance(event, EarlyMedia):
                self.early_at = now
            elif isinstance(event, Answered):
                self.answered_at = now
                self.answered.set()
            elif isinstance(event, Ended):
                self.ended_at, self.end_cause = now, event.cause
                self.ended.set()
                return

    async def play_beep_after_greeting(self) -> float | None:
        """Voicemail stand-in: once the greeting has played and gone quiet, play a 0.5 s 1 kHz beep.
        Returns when the beep ended (wall clock), None if the call ended first."""
        assert self.media is not None
        await asyncio.wait_for(self.answered.wait(), CALL_TIMEOUT)
        deadline = time.time() + 10
        while time.time() < deadline and not self.ended.is_set():
            runs = sound_runs(self.heard)
            if runs and time.time() - runs[-1][1] > 0.3:
                break
            await asyncio.sleep(0.05)
        if self.ended.is_set():
            return None
        self.marks.append(Mark(time.time(), "media", "caller plays a 0.5 s 1 kHz beep (the voicemail's)"))
        await self.media.play(beep(0.5))
        return time.time()

    async def hangup(self) -> None:
        if self.leg is not None and not self.ended.is_set():
            await self.leg.hangup()

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self.media is not None:
            self.media.close()
        await self.ua.stop()


# -- the simulated trunks --------------------------------------------------------------------------------------------
class SimTrunk:
    """A carrier stand-in: a softswitch `UserAgent` answering INVITEs from the engine.

    `reject`: answer every INVITE with that status (e.g. 486). Otherwise challenge with 401 when `credentials` are
    set (the retry's digest is verified; wrong credentials get 403), ring, answer with SDP, play a tone and hang up
    after `hold` seconds.
    """

    def __init__(self, name: str, allocator: PortAllocator, *, reject: int | None = None,
                 credentials: tuple[str, str] | None = None, hold: float = 1.5) -> None:
        self.name = name
        self.allocator = allocator
        self.reject = reject
        self.credentials = credentials
        self.hold = hold
        self.ua = UserAgent(user_agent=f"softswitch-demo-{name}", on_invite=self._on_invite,
                            on_request=self._on_request)
        self.digest = DigestServer(TRUNK_REALM, secrets.token_bytes(32))
        self.wire: list[Wire] = []
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> SimTrunk:
        bound = await self.ua.start([("udp", HOST, 0)])
        self.port = bound["udp"][1]
        tap(self.ua, self.name, lambda m: "engine", self.wire.append)
        return self

    @property
    def uri(self) -> str:
        return f"sip:{HOST}:{self.port}"

    def _password_for(self, username: str) -> str | None:
        if self.credentials is not None and username == self.credentials[0]:
            return self.credentials[1]
        return None

    def _on_request(self, request: Request, tx: ServerTransaction, source: Any) -> bool:
        """Out-of-dialog requests before the UA's own handling: the digest challenge of INVITEs."""
        if request.method != "INVITE" or self.credentials is None or self.reject is not None:
            return False
        verdict = self.digest.verify(request.headers.get("Authorization"), "INVITE", request.uri,
                                     self._password_for, self.ua.now())
        if verdict.ok:
            return False  # on to _on_invite
        if verdict.reason in ("missing", "stale"):
            challenges = self.digest.challenges(self.ua.now(), stale=verdict.stale)
            self.ua.respond(tx, request, 401, headers=Headers([("WWW-Authenticate", c.to_header())
                                                               for c in challenges]))
        else:
            self.ua.respond(tx, request, 403, "Forbidden (bad credentials)")
        return True

    def _on_invite(self, leg: InboundLeg) -> None:
        task = asyncio.ensure_future(self._serve(leg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, leg: InboundLeg) -> None:
        if self.reject is not None:
            await leg.reject(self.reject)
            return
        media = await RtpSession.open(self.allocator, HOST, HOST)
        try:
            await leg.ring()
            await asyncio.sleep(0.4)
            if leg.ended.is_set():
                return
            await leg.answer(media.answer(leg.remote_sdp or ""))
            media.play(Tone([700.0], [(0.4, 0.2)], repeat=True))  # the callee "talking"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(leg.ended.wait(), self.hold)
            await leg.hangup()
        finally:
            media.close()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)
        await self.ua.stop()


# -- examples --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    ok: bool
    text: str


@dataclass
class Outcome:
    """Everything observed about one example's call."""

    example: Example
    caller: SimCaller
    call_uuid: str = ""
    requests: list[example_app.Request] = field(default_factory=list)  # what the app got for this call
    trunk_wire: list[Wire] = field(default_factory=list)
    record: CallRecord | None = None
    beep_end: float | None = None
    started: float = 0.0
    error: str = ""

    # what the checks read
    def hangup(self) -> dict[str, str]:
        found = [r.params for r in self.requests if r.path == "/hangup"]
        return found[0] if found else {}

    def dial_statuses(self) -> list[str]:
        return [r.params.get("DialStatus", "") for r in self.requests if r.path.startswith("/dial-status")]

    def events(self) -> list[dict[str, Any]]:
        return list(self.record.timeline) if self.record is not None else []

    def event_time(self, name: str) -> float | None:
        if self.record is None or self.record.started_at is None:
            return None
        for e in self.record.timeline:
            if e.get("event") == name:
                return float(self.record.started_at) + float(e["t"])
        return None

    def trunk_statuses(self, trunk: str, number: str) -> list[str]:
        """What `trunk` did with INVITEs to `number`: its final responses' status codes, with 'auth' where a retry
        carried digest credentials."""
        ids = {w.call_id for w in self.trunk_wire
               if w.method() == "INVITE" and number in w.first_line and w.receiver == trunk}
        out = []
        for w in self.trunk_wire:
            if w.call_id not in ids:
                continue
            if w.sender == trunk and w.status() >= 200 and w.message is not None and w.message.cseq[1] == "INVITE":
                out.append(str(w.status()))
            if w.receiver == trunk and w.method() == "INVITE" and w.header("Authorization"):
                out.append("auth")
        return list(dict.fromkeys(out))


def _hangup_cause(o: Outcome, cause: str, code: str | None = None) -> Check:
    h = o.hangup()
    got = f"{h.get('HangupCause', '—')} ({h.get('HangupCauseCode', '—')})" if h else "no hangup callback"
    ok = h.get("HangupCause") == cause and (code is None or h.get("HangupCauseCode") == code)
    want = f"{cause} ({code})" if code else cause
    return Check(ok, f"hangup callback HangupCause={want}: got {got}")


def _answered(o: Outcome) -> Check:
    return Check(o.caller.answered_at is not None, "the caller was answered (200 OK)")


def _ended_by_engine(o: Outcome) -> Check:
    c = o.caller.end_cause
    ok = c is not None and c.kind == "bye" and c.by == "remote"
    return Check(ok, f"the engine ended the call with BYE (caller saw: {c.kind + ' by ' + c.by if c else 'no end'})")


def _heard(o: Outcome, seconds: float, after: float | None = None, before: float | None = None,
           what: str = "sound") -> Check:
    frames = [pcm for at, pcm in o.caller.heard
              if (after is None or at >= after) and (before is None or at <= before) and rms(pcm) > LOUD]
    got = len(frames) * 0.02
    return Check(got >= seconds, f"the caller heard {what} (≥ {seconds:.1f} s): {got:.2f} s")


def _signed(o: Outcome) -> Check:
    bad = [r.path for r in o.requests if r.signature_ok is False]
    return Check(bool(o.requests) and not bad,
                 f"every webhook request carried a valid X-Plivo-Signature-V3 ({len(o.requests)} requests)"
                 + (f"; bad: {bad}" if bad else ""))


def checks_seed1(o: Outcome) -> list[Check]:
    statuses = o.dial_statuses()
    busy = o.trunk_statuses("busy-carrier", SEED1_FIRST)
    good = o.trunk_statuses("carrier", SEED1_SECOND)
    return [
        Check(statuses == ["busy", "completed"], f"Dial action callbacks DialStatus busy, then completed: {statuses}"),
        Check(busy == ["486"], f"busy-carrier answered {SEED1_FIRST} with 486: {busy}"),
        Check(good == ["401", "auth", "200"],
              f"carrier challenged {SEED1_SECOND} with 401, accepted the digest, answered 200: {good}"),
        _answered(o),
        _hangup_cause(o, "NORMAL_CLEARING", "4010"),
    ]


def checks_seed2(o: Outcome) -> list[Check]:
    return [_answered(o), _heard(o, 0.5, what="speech"), _ended_by_engine(o),
            _hangup_cause(o, "NORMAL_CLEARING", "4000")]


def checks_seed3(o: Outcome, schedule: int) -> list[Check]:
    scheduled, ended = o.event_time("hangup_scheduled"), o.event_time("ended")
    after = (ended - scheduled) if scheduled and ended else None
    ok_time = after is not None and schedule - 0.2 <= after <= schedule + 0.8
    tonal = []
    if scheduled is not None:
        frames = [pcm for at, pcm in o.caller.heard if at >= scheduled + 1.0 and rms(pcm) > LOUD]
        for i in range(0, len(frames) - 9, 10):
            tonal.append(dominant_hz(b"".join(frames[i:i + 10])))
    notes = [f for f in tonal if min(abs(f - 440), abs(f - 660)) <= 20]
    shown = ", ".join(f"{f:.0f}" for f in tonal[:6])
    return [
        _answered(o),
        Check(ok_time, f"the scheduled hangup came {schedule} s after <Hangup schedule>: "
                       + (f"{after:.2f} s" if after is not None else "not seen")),
        Check(len(tonal) >= 2 and len(notes) >= 0.8 * len(tonal),
              f"the endless <Play> reached the caller (440/660 Hz music): peaks {shown or 'none'} Hz"),
        _ended_by_engine(o),
        _hangup_cause(o, "NORMAL_CLEARING"),
    ]


def checks_seed4_closed(o: Outcome) -> list[Check]:
    dialed = [e for e in o.events() if e.get("event") == "dial_b_leg"]
    return [_answered(o), _heard(o, 1.0, what="the closed message"),
            Check(not dialed, "closed: nothing was dialed"), _ended_by_engine(o),
            _hangup_cause(o, "NORMAL_CLEARING", "4000")]


def checks_seed4_open(o: Outcome) -> list[Check]:
    trunk = o.trunk_statuses("carrier", SEED4_OPEN)
    return [_answered(o), _heard(o, 0.5, before=o.event_time("dial_b_leg"), what="the open message"),
            Check(trunk[-1:] == ["200"], f"open: the Dial reached the carrier and was answered: {trunk}"),
            Check(o.event_time("dial_answered") is not None, "the engine bridged the caller to the carrier"),
            _hangup_cause(o, "NORMAL_CLEARING")]


def checks_seed5(o: Outcome) -> list[Check]:
    c = o.caller.end_cause
    h = o.hangup()
    return [
        Check(c is not None and c.kind == "rejected" and c.status == 603,
              f"the caller got a SIP rejection 603: {c.status if c else 'none'}"),
        Check(o.caller.answered_at is None, "never answered"),
        _hangup_cause(o, "CALL_REJECTED"),
        Check(h.get("CallStatus") not in ("in-progress", "completed", None) or h.get("BillDuration") == "0",
              f"not billed: CallStatus={h.get('CallStatus')} BillDuration={h.get('BillDuration')}"),
    ]


def checks_seed6(o: Outcome) -> list[Check]:
    runs = sound_runs(o.caller.heard)
    gap = runs[1][0] - runs[0][1] if len(runs) >= 2 else None
    return [
        _answered(o),
        Check(len(runs) == 2, f"two messages heard: {len(runs)} stretches of sound"),
        Check(gap is not None and 4.5 <= gap <= 6.0,
              "the <Wait length=5> gap between them: " + (f"{gap:.2f} s" if gap is not None else "not seen")),
        _hangup_cause(o, "NORMAL_CLEARING", "4010"),
    ]


def checks_seed6_voicemail(o: Outcome) -> list[Check]:
    beep_seen = [e for e in o.events() if e.get("event") == "wait_beep"]
    later = [r for r in sound_runs(o.caller.heard) if o.beep_end is not None and r[0] > o.beep_end]
    delay = later[0][0] - o.beep_end if later and o.beep_end is not None else None
    return [
        _answered(o),
        Check(bool(beep_seen), "the engine detected the beep: "
              + (f"{beep_seen[0].get('frequency')} Hz" if beep_seen else "no wait_beep event")),
        Check(delay is not None and delay < 1.5,
              "the message started right after the beep, not after 5 s: "
              + (f"{delay:.2f} s after it" if delay is not None else "not heard")),
        _hangup_cause(o, "NORMAL_CLEARING", "4000"),
    ]


def checks_seed7(o: Outcome) -> list[Check]:
    c = o.caller
    early = any(isinstance(e, EarlyMedia) for _, e in c.events)
    trunk = o.trunk_statuses("carrier", SEED7_DIAL)
    return [
        Check(early and c.early_at is not None and (c.answered_at is None or c.early_at < c.answered_at),
              "183 Session Progress with SDP before any answer"),
        _heard(o, 1.0, before=c.answered_at or time.time(), what="the PreAnswer speech as early media"),
        Check(trunk == ["401", "auth", "200"], f"the Dial reached the carrier (401, digest, 200): {trunk}"),
        _answered(o),
        _not_billed_early(o),
        _hangup_cause(o, "NORMAL_CLEARING"),
    ]


def _not_billed_early(o: Outcome) -> Check:
    c, h = o.caller, o.hangup()
    if c.answered_at is None or c.ended_at is None or "BillDuration" not in h:
        return Check(False, "billing: no answer, end or BillDuration to compare")
    billable = c.ended_at - c.answered_at
    early = c.answered_at - (c.early_at or c.answered_at)
    ok = int(h["BillDuration"]) <= math.ceil(billable + 0.05)
    return Check(ok, f"the early-media phase was not billed: BillDuration={h['BillDuration']} s "
                     f"for {billable:.1f} s answered after {early:.1f} s of early media")


@dataclass(frozen=True)
class Example:
    key: str
    title: str
    number: str
    checks: Callable[[Outcome], list[Check]]
    dials: tuple[str, ...] = ()
    answer_path: str = ""
    """A per-number answer_url path on the example app; empty: the app's /answer picks by number."""
    voicemail: bool = False


def examples(schedule: int) -> list[Example]:
    return [
        Example("1", "sequential Dial: first trunk busy, second answers after a 401", "1001", checks_seed1,
                dials=(SEED1_FIRST, SEED1_SECOND)),
        Example("2", "Speak, then Hangup", "1002", checks_seed2),
        Example("3", f"Speak, Hangup schedule={schedule}, endless Play cut by the scheduled hangup", "1003",
                lambda o: checks_seed3(o, schedule)),
        Example("4-closed", "business hours, closed (Saturday 12:00): Speak + Hangup", "1040", checks_seed4_closed,
                answer_path="/seed/4?at=2024-01-06T12:00"),
        Example("4-open", "business hours, open (Monday 10:00): Speak + Dial", "1041", checks_seed4_open,
                dials=(SEED4_OPEN,), answer_path="/seed/4?at=2024-01-08T10:00"),
        Example("5", "blocked caller: Hangup reason=rejected", "1005", checks_seed5),
        Example("6", "Wait length=5 between two Speaks", "1006", checks_seed6),
        Example("6-voicemail", "voicemail drop: Wait length=5 beep=true, then Speak", "1016", checks_seed6_voicemail,
                voicemail=True),
        Example("7", "PreAnswer Speak as early media, then Dial to the carrier", "1007", checks_seed7,
                dials=(SEED7_DIAL,)),
    ]


# -- the demo --------------------------------------------------------------------------------------------------------
class Demo:
    """Everything of one demo run; `await Demo(...).run()` returns the outcomes in example order."""

    def __init__(self, *, only: list[str] | None = None, schedule: int = 3) -> None:
        """`only`: example keys to run ("4" means both 4-closed and 4-open); `schedule`: seed 3's Hangup delay."""
        self.schedule = schedule
        self.examples = [e for e in examples(schedule) if not only or e.key in only or e.key.split("-")[0] in only]
        self.app = ExampleApp(HOST, 0, AUTH_TOKEN, hangup_schedule=schedule)
        self.peer_ports = PortAllocator(*rtp_range())
        self.busy = SimTrunk("busy-carrier", self.peer_ports, reject=486)
        self.carrier = SimTrunk("carrier", self.peer_ports, credentials=(TRUNK_USER, TRUNK_PASSWORD))
        self.engine: Engine | None = None
        self.sip_port = 0

    def config_env(self, storage: Path) -> dict[str, str]:
        self.sip_port = free_port()
        low, high = rtp_range()
        env = {
            "SOFTSWITCH_SIP__LISTEN": f'["udp:{HOST}:{self.sip_port}", "tcp:{HOST}:{self.sip_port}"]',
            "SOFTSWITCH_SIP__RTP_PORT_MIN": str(low),
            "SOFTSWITCH_SIP__RTP_PORT_MAX": str(high),
            "SOFTSWITCH_HTTP__LISTEN": f"{HOST}:{free_port()}",
            "SOFTSWITCH_HTTP__AUTH_TOKEN": AUTH_TOKEN,
            "SOFTSWITCH_INBOUND__ANSWER_URL": self.app.url("/answer"),
            "SOFTSWITCH_INBOUND__HANGUP_URL": self.app.url("/hangup"),
            "SOFTSWITCH_STORAGE__PATH": str(storage / "softswitch.db"),
            "SOFTSWITCH_STORAGE__RECORDINGS_DIR": str(storage / "recordings"),
            "SOFTSWITCH_USERS": "[]",
            "SOFTSWITCH_TRUNKS": (
                f'[{{name = "busy-carrier", uri = "{self.busy.uri}", prefixes = ["1555"]}}, '
                f'{{name = "carrier", uri = "{self.carrier.uri}", default = true, '
                f'username = "{TRUNK_USER}", password = "{TRUNK_PASSWORD}"}}]'
            ),
        }
        for ex in self.examples:
            if ex.answer_path:
                prefix = f"SOFTSWITCH_INBOUND__NUMBERS__{ex.number}__"
                env[prefix + "ANSWER_URL"] = self.app.url(ex.answer_path)
                env[prefix + "HANGUP_URL"] = self.app.url("/hangup")
        return env

    async def run(self) -> list[Outcome]:
        with tempfile.TemporaryDirectory(prefix="softswitch-demo-") as tmp:
            storage = Path(tmp)
            await self.app.start()
            await self.busy.start()
            await self.carrier.start()
            try:
                config = load_config(None, env=self.config_env(storage))
                fast = WebhookSettings(request_timeout=3.0, fetch_backoff=0.1, callback_backoff=0.1, fetch_total=10.0)
                self.engine = Engine(config, webhook_settings=fast,
                                     outbox_options={"base_delay": 0.3, "poll_interval": 0.2, "jitter": 0.0})
                await self.engine.start()
                try:
                    return list(await asyncio.gather(*(self.run_example(ex) for ex in self.examples)))
                finally:
                    await self.engine.stop()
            finally:
                await self.carrier.close()
                await self.busy.close()
                await self.app.stop()

    async def run_example(self, example: Example) -> Outcome:
        caller = await SimCaller(self.peer_ports).start()
        outcome = Outcome(example, caller, started=time.time())
        try:
            await caller.dial(f"sip:{example.number}@{HOST}:{self.sip_port}")
            beeper = asyncio.ensure_future(caller.play_beep_after_greeting()) if example.voicemail else None
            try:
                await asyncio.wait_for(caller.ended.wait(), CALL_TIMEOUT)
            except TimeoutError:
                outcome.error = f"the call did not end within {CALL_TIMEOUT:.0f} s (the caller hung up)"
                await caller.hangup()
            if beeper is not None:
                outcome.beep_end = await beeper if beeper.done() else None
                beeper.cancel()
            await self.collect(outcome)
        except Exception as exc:  # one example's failure is reported, never hides the others
            outcome.error = f"{type(exc).__name__}: {exc}"
        finally:
            await caller.close()
        return outcome

    async def collect(self, outcome: Outcome) -> None:
        """The app's requests, the trunks' messages and the engine's call record of this example's call."""
        number = outcome.example.number

        def answered(reqs: list[example_app.Request]) -> bool:
            return any(r.params.get("To") == number and r.params.get("CallUUID") for r in reqs)

        await self.app.wait_for(answered, 5)
        uuids = [r.params["CallUUID"] for r in self.app.requests
                 if r.params.get("To") == number and r.params.get("CallUUID")]
        if not uuids:
            outcome.error = outcome.error or "the app never received this call's answer_url request"
            return
        outcome.call_uuid = uuid = uuids[0]
        await self.app.wait_for(lambda reqs: any(r.path == "/hangup" and r.params.get("CallUUID") == uuid
                                                 for r in reqs), 10)
        outcome.requests = self.app.requests_for(uuid)
        assert self.engine is not None and self.engine.store is not None
        deadline = time.time() + 5
        while time.time() < deadline:
            record = await self.engine.store.get_call(uuid)
            if record is not None and record.ended_at is not None:
                outcome.record = record
                break
            await asyncio.sleep(0.1)
        ids = {w.call_id for t in (self.busy, self.carrier) for w in t.wire
               if w.method() == "INVITE" and any(n in w.first_line for n in outcome.example.dials)}
        outcome.trunk_wire = [w for t in (self.busy, self.carrier) for w in t.wire if w.call_id in ids]


# -- printing --------------------------------------------------------------------------------------------------------
def timeline(o: Outcome) -> list[Mark]:
    marks = [Mark(w.at, "SIP", f"{w.sender} → {w.receiver}  {w.summary()}") for w in o.caller.wire + o.trunk_wire]
    marks += o.caller.marks
    for r in o.requests:
        shown = ["To", "CallStatus"] if r.path not in ("/hangup",) and not r.path.startswith("/dial-status") else []
        if r.path == "/hangup":
            text = (f"hangup {r.params.get('HangupCause')} ({r.params.get('HangupCauseCode')})  "
                    f"CallStatus={r.params.get('CallStatus')} Duration={r.params.get('Duration')}")
            marks.append(Mark(r.at, "callback", text))
        elif r.path.startswith("/dial-status"):
            marks.append(Mark(r.at, "callback", f"dial action {r.path}  DialStatus={r.params.get('DialStatus')} "
                                                f"DialHangupCause={r.params.get('DialHangupCause')}"))
        else:
            args = " ".join(f"{k}={r.params.get(k)}" for k in shown)
            marks.append(Mark(r.at, "fetch", f"{r.method} {r.path}  {args}  → {r.status}"))
    if o.record is not None and o.record.started_at is not None:
        for e in o.record.timeline:
            marks.append(_engine_mark(float(o.record.started_at) + float(e.get("t", 0)), e))
    for start, end in sound_runs(o.caller.heard):
        when = "" if o.caller.answered_at is None or start >= o.caller.answered_at else " (early media)"
        marks.append(Mark(start, "media", f"caller hears sound for {end - start + 0.02:.2f} s{when}"))
    return sorted(marks, key=lambda m: m.at)


def _engine_mark(at: float, e: dict[str, Any]) -> Mark:
    """One event of the engine's call record, in words."""
    name = str(e.get("event", "?"))
    d = {k: v for k, v in e.items() if k not in ("t", "event")}
    if name == "verb":
        return Mark(at, "verb", f"{d.get('verb')} (line {d.get('line')}{', early media' if d.get('early') else ''})")
    words = {
        "document": lambda: f"document fetched and validated: {d.get('verbs')} element"
                            f"{'' if d.get('verbs') == 1 else 's'}",
        "answered": lambda: "answers the call (200 OK)",
        "early_media": lambda: "early media (183 Session Progress with SDP), not answered",
        "hangup_scheduled": lambda: f"hangup scheduled in {d.get('seconds')} s; execution goes on",
        "dial_b_leg": lambda: f"Dial B leg {str(d.get('b_leg_uuid', ''))[:8]} → {d.get('destination')} "
                              f"via trunk {d.get('trunk')}",
        "dial_ringing": lambda: f"B leg {str(d.get('b_leg_uuid', ''))[:8]} ringing",
        "dial_b_failed": lambda: f"B leg {str(d.get('b_leg_uuid', ''))[:8]} failed: {d.get('cause')} "
                                 f"({d.get('code')})",
        "dial_answered": lambda: f"B leg {str(d.get('b_leg_uuid', ''))[:8]} answered: caller and callee bridged",
        "dial_finished": lambda: f"Dial finished: DialStatus={d.get('status')} ({d.get('cause')})",
        "redirect_failed": lambda: f"no usable document from {urlsplit(str(d.get('url', ''))).path}"
                                   + (" (a Dial action: go on with the next element)"
                                      if "/dial-status" in str(d.get("url", "")) else ""),
        "wait_beep": lambda: f"beep detected ({d.get('frequency')} Hz): the Wait ends",
        "ended": lambda: f"call ended {d.get('cause')} ({d.get('code')})",
    }
    if name in words:
        return Mark(at, "engine", words[name]())
    return Mark(at, "engine", " ".join([name, *(f"{k}={v}" for k, v in d.items())]))


def evaluate(o: Outcome) -> list[Check]:
    """The example's checks on its outcome (an error while running fails it outright)."""
    if o.error:
        return [Check(False, o.error)]
    checks = o.example.checks(o)
    if o.requests:
        checks.append(_signed(o))
    return checks


def report(outcomes: list[Outcome], out: TextIO) -> list[bool]:
    """Print every call's timeline and checks; whether each example behaved as expected."""
    results = []
    for o in outcomes:
        ex = o.example
        checks = evaluate(o)
        ok = bool(checks) and all(c.ok for c in checks)
        results.append(ok)
        head = f"── seed {ex.key}: {ex.title}  (caller dials {ex.number}"
        head += f", call {o.call_uuid[:8]})" if o.call_uuid else ")"
        print(head + " " + "─" * max(3, 118 - len(head)), file=out)
        marks = timeline(o)
        t0 = min([m.at for m in marks] or [o.started])
        for mark in marks:
            print(f"  {mark.at - t0:+7.3f}s  {mark.kind:<8} {mark.text}", file=out)
        for check in checks:
            print(f"  {'PASS' if check.ok else 'FAIL'}  {check.text}", file=out)
        print(f"  => seed {ex.key}: {'as expected' if ok else 'NOT as expected'}\n", file=out)
    print(f"demo: {sum(results)} of {len(results)} examples behaved as expected", file=out)
    return results


async def _main(only: list[str] | None, out: TextIO, json_out: bool) -> int:
    demo = Demo(only=only)
    if not demo.examples:
        print(f"demo: no example matches {only}; choose from "
              f"{', '.join(e.key for e in examples(3))}", file=sys.stderr)
        return 2
    if shutil.which("espeak-ng") is None:
        print("demo: espeak-ng is not installed: <Speak> cannot be heard (apt-get install espeak-ng)",
              file=sys.stderr)
    started = time.monotonic()
    outcomes = await demo.run()
    results = report(outcomes, out)
    print(f"demo: finished in {time.monotonic() - started:.1f} s", file=out)
    if json_out:
        print(json.dumps([{"seed": o.example.key, "call_uuid": o.call_uuid, "ok": ok}
                          for o, ok in zip(outcomes, results, strict=True)]), file=out)
    return 0 if results and all(results) else 1


def run_demo(only: list[str] | None = None, *, json_out: bool = False,
             out: TextIO | None = None) -> int:
    """Run the demo; the exit code (0: every example as expected, 1: some did not, 2: nothing to run)."""
    stream = out or sys.stdout
    return asyncio.run(_main(only, stream, json_out))

