"""Crash recovery, run once at start before the engine takes calls: what a killed process left in SQLite is finished.

A process killed with SIGKILL (or by a power loss) leaves two things behind, both in the store:
- call rows without an end (calls that were up, or being set up, when it died). Each is finished with the cause
  ``CRASH`` (5030, "Engine Crashed", source "Plivo"); its ``ended_at`` is the last time the dead process wrote to the
  row (``updated_at``: the start, the answer...) — the last moment the call is known to have been handled, so
  ``duration`` and ``bill_duration`` are never overstated. An answered call stays answered (``CallStatus``
  completed), an unanswered one is ``failed``. A ``recovered`` event is appended to its timeline.
- held outbox rows (engine/store.py): the hangup callback every call holds from its start, and callbacks that were
  being delivered. A held hangup callback that never got its final parameters (its call had not ended, or had just
  ended) gets them from the call's row: HangupCause, HangupCauseName, HangupCauseCode, HangupSource, CallStatus,
  Duration, BillDuration, StartTime, AnswerTime, EndTime. Then every held row is released, due at once, and the
  outbox worker delivers it (at least once: a callback that was in flight may reach the app twice).

What does not live here: delivering (engine/outbox.py), SQL (engine/store.py), causes (engine/causes.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import structlog

from . import causes
from .store import CallRecord, Store

log = structlog.get_logger("engine.recovery")

__all__ = ["Recovered", "recover"]


@dataclass(frozen=True)
class Recovered:
    calls: int
    """Call rows that had no end, finished with CRASH."""
    callbacks: int
    """Held callbacks released to the outbox (hangup callbacks among them)."""


def _iso(ts: float | None) -> str:
    return "" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def _cause_of(row: CallRecord) -> causes.Cause:
    """The table row the call record names (name and code), with the record's source."""
    cause = next((c for c in causes.CAUSES.values() if c.name == row.hangup_cause and c.code == row.hangup_code),
                 None)
    if cause is None:
        try:
            cause = causes.by_code(int(row.hangup_code or 0))
        except KeyError:
            cause = causes.CAUSES["crash"]
    return cause.with_source(row.hangup_source) if row.hangup_source in causes.HANGUP_SOURCES else cause


def hangup_params(row: CallRecord) -> dict[str, str]:
    """The hangup-callback fields of a finished call row."""
    cause = _cause_of(row)
    answered = row.answered_at is not None
    return {
        **cause.hangup_params(),
        "CallStatus": causes.call_status_for(cause, answered),
        "Duration": str(row.bill_duration or 0),
        "BillDuration": str(row.bill_duration or 0),
        "StartTime": _iso(row.started_at),
        "AnswerTime": _iso(row.answered_at),
        "EndTime": _iso(row.ended_at),
    }


async def recover(store: Store) -> Recovered:
    """Finish the calls and release the callbacks a dead process left (see the module docstring)."""
    crash = causes.CAUSES["crash"]
    finished = 0
    while True:
        rows = await store.list_calls(limit=500, ended=False)
        if not rows:
            break
        for row in rows:
            end = row.updated_at or row.started_at or time.time()
            answered = row.answered_at
            bill = max(0, int(end - answered)) if answered is not None else 0
            await store.add_event(row.call_uuid, "recovered", cause=crash.name, code=crash.code)
            await store.finish_call(row.call_uuid, hangup_cause=crash.name, hangup_code=crash.code,
                                    hangup_source=crash.hangup_source, ended_at=end, duration=bill,
                                    bill_duration=bill)
            log.warning("call_recovered_after_crash", call_uuid=row.call_uuid, direction=row.direction,
                        answered=answered is not None, cause=crash.name)
            finished += 1
    released = 0
    for entry in await store.held():
        params: dict[str, Any] | None = None
        if entry.kind == "hangup" and "HangupCause" not in entry.params and entry.call_uuid:
            row = await store.get_call(entry.call_uuid)
            if row is not None and row.ended_at is not None:
                params = {**entry.params, **hangup_params(row)}
        await store.release(entry.id, attempts=entry.attempts, error=entry.last_error or "engine restarted",
                            params=params)
        released += 1
    if finished or released:
        log.warning("recovery_done", calls=finished, callbacks=released)
    return Recovered(finished, released)
