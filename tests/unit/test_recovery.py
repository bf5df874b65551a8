"""Held outbox rows (write-ahead callbacks) and crash recovery (engine/recovery.py), on a real SQLite file.

A SIGKILL is simulated by closing the store without finishing anything, then opening the file again."""

from __future__ import annotations

import time
from pathlib import Path

from engine.recovery import recover
from engine.store import HELD, Store

SESSION = {"CallUUID": "c1", "From": "15550001111", "To": "100", "Direction": "inbound", "CallStatus": "ringing"}


async def test_a_live_calls_hangup_callback_is_held_with_its_row_and_never_due(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "s.db")
    try:
        await store.record_call_start("c1", direction="inbound", from_number="1", to_number="2", started_at=10.0,
                                      hangup=("http://127.0.0.1:9/hangup", "POST", SESSION))
        [held] = await store.held()
        assert held.call_uuid == "c1" and held.kind == "hangup" and held.next_attempt_at == HELD
        assert await store.due() == [] and await store.due(now=2e300) == []  # never due, even "everything"
        assert await store.depth() == 0 and await store.next_due_at() is None
        # the final callback takes the held row over instead of adding a second one
        same = await store.hold(call_uuid="c1", kind="hangup", url="http://127.0.0.1:9/hangup", method="POST",
                                params={**SESSION, "HangupCause": "NORMAL_CLEARING"})
        assert same == held.id and len(await store.held()) == 1
        other = await store.hold(call_uuid="c1", kind="action", url="http://127.0.0.1:9/a", method="POST", params={})
        assert other != held.id and len(await store.held()) == 2
        await store.release(same, attempts=3, error="HTTP 500")
        [due] = await store.due()
        assert due.id == same and due.attempts == 3 and due.params["HangupCause"] == "NORMAL_CLEARING"
        assert await store.depth() == 1
    finally:
        await store.close()


async def test_recovery_finishes_cut_calls_and_releases_every_held_callback(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await Store.open(path)
    t0 = time.time() - 100
    # answered and up when the process died
    await store.record_call_start("up", direction="inbound", from_number="1", to_number="2", started_at=t0,
                                  hangup=("http://127.0.0.1:9/h", "POST", {**SESSION, "CallUUID": "up"}))
    await store.record_call_update("up", answered_at=t0 + 5)
    # still being set up
    await store.record_call_start("setup", direction="outbound", from_number="1", to_number="2", started_at=t0,
                                  hangup=("http://127.0.0.1:9/h", "GET", {**SESSION, "CallUUID": "setup"}))
    # ended normally, its callback being tried when the process died (held, final params in)
    await store.record_call_start("done", direction="inbound", from_number="1", to_number="2", started_at=t0,
                                  hangup=("http://127.0.0.1:9/h", "POST", {**SESSION, "CallUUID": "done"}))
    await store.finish_call("done", hangup_cause="NORMAL_CLEARING", hangup_code=4010, hangup_source="Plivo",
                            ended_at=t0 + 20, answered_at=t0 + 1, duration=19, bill_duration=19)
    await store.hold(call_uuid="done", kind="hangup", url="http://127.0.0.1:9/h", method="POST",
                     params={**SESSION, "CallUUID": "done", "HangupCause": "NORMAL_CLEARING"})
    await store.close()  # kill -9: nothing else happens

    store = await Store.open(path)
    try:
        result = await recover(store)
        assert (result.calls, result.callbacks) == (2, 3)
        up, setup, done = [await store.get_call(u) for u in ("up", "setup", "done")]
        assert up is not None and up.hangup_cause == "CRASH" and up.hangup_code == 5030 and up.ended_at is not None
        assert up.answered_at == t0 + 5 and up.bill_duration == int(up.ended_at - up.answered_at)
        assert up.timeline[-1]["event"] == "recovered"
        assert setup is not None and setup.hangup_cause == "CRASH" and setup.bill_duration == 0
        assert done is not None and done.hangup_cause == "NORMAL_CLEARING"  # untouched
        assert await store.held() == []
        entries = {e.call_uuid: e for e in await store.due()}
        assert set(entries) == {"up", "setup", "done"}
        assert entries["up"].params["HangupCause"] == "CRASH" and entries["up"].params["CallStatus"] == "completed"
        assert entries["up"].params["HangupCauseName"] == "Engine Crashed"
        assert entries["up"].params["AnswerTime"] and entries["up"].params["EndTime"]
        assert entries["setup"].params["CallStatus"] == "failed" and entries["setup"].method == "GET"
        assert entries["done"].params["HangupCause"] == "NORMAL_CLEARING"  # its own final params kept
        assert (await recover(store)) == type(result)(0, 0)  # idempotent
    finally:
        await store.close()
