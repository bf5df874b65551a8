"""The SQLite store: call rows exist from the first event, update, survive a reopen; the outbox keeps callbacks."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine import store as store_module
from engine.store import HELD, SCHEMA_VERSION, Store, StoreError


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "var" / "nested" / "softswitch.db"  # parent folders do not exist yet


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(db_path)
    yield s
    await s.close()


async def test_open_creates_folders_schema_version_and_wal(store: Store, db_path: Path) -> None:
    assert db_path.exists()
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"calls", "outbox", "schema_version"} <= tables
    finally:
        conn.close()


async def test_inbound_call_row_from_first_event_to_finish(store: Store) -> None:
    await store.record_call_start(
        "call-1", direction="inbound", from_number="14155550100", to_number="14155550199", started_at=1000.0
    )
    row = await store.get_call("call-1")
    assert row is not None and row.ended_at is None and row.from_number == "14155550100"

    await store.add_event("call-1", "answer_url.fetched", at=1000.2, url="http://127.0.0.1:8000/answer")
    await store.record_call_update("call-1", answered_at=1001.0, legs=[{"leg": "a", "call_id": "x@y"}])
    await store.add_event("call-1", "answered", at=1001.0)
    final = await store.finish_call(
        "call-1", hangup_cause="NORMAL_CLEARING", hangup_code=4010, hangup_source="Plivo", ended_at=1013.7
    )
    assert (final.duration, final.bill_duration) == (13, 12)
    assert (final.hangup_cause, final.hangup_code, final.hangup_source) == ("NORMAL_CLEARING", 4010, "Plivo")
    assert [e["event"] for e in final.timeline] == ["answer_url.fetched", "answered"]
    assert final.timeline[0]["url"] == "http://127.0.0.1:8000/answer"
    assert final.legs == [{"leg": "a", "call_id": "x@y"}]


async def test_finish_call_writes_the_timeline_with_the_end(store: Store) -> None:
    await store.record_call_start("call-t", direction="inbound", from_number="1", to_number="2", started_at=10.0)
    timeline = [{"t": 0.0, "event": "started"}, {"t": 1.5, "event": "answered"}]
    final = await store.finish_call("call-t", hangup_cause="NORMAL_CLEARING", hangup_code=4000,
                                    hangup_source="Caller", ended_at=12.0, timeline=timeline)
    assert final.timeline == timeline and final.duration == 2
    assert (await store.get_call("call-t")).timeline == timeline  # type: ignore[union-attr]


async def test_unanswered_call_has_a_row_with_zero_bill_duration(store: Store) -> None:
    await store.record_call_start(
        "call-2", direction="outbound", from_number="1", to_number="2", started_at=50.0, request_uuid="req-2"
    )
    final = await store.finish_call(
        "call-2", hangup_cause="USER_BUSY", hangup_code=3010, hangup_source="Call recipient", ended_at=53.0
    )
    assert (final.answered_at, final.duration, final.bill_duration, final.request_uuid) == (None, 3, 0, "req-2")


async def test_an_update_before_the_start_still_makes_a_row(store: Store) -> None:
    await store.add_event("early", "invite.received", at=1.0)
    await store.record_call_update("early", direction="inbound")
    row = await store.get_call("early")
    assert row is not None and row.direction == "inbound" and row.timeline[0]["event"] == "invite.received"
    with pytest.raises(ValueError, match="unknown call record fields"):
        await store.record_call_update("early", colour="red")


async def test_rows_survive_reopen(db_path: Path) -> None:
    first = await Store.open(db_path)
    await first.record_call_start("call-3", direction="inbound", from_number="a", to_number="b", started_at=1.0)
    await first.close()
    second = await Store.open(db_path)
    try:
        row = await second.get_call("call-3")
        assert row is not None and row.to_number == "b"
        await second.finish_call("call-3", hangup_cause="NORMAL_CLEARING", hangup_code=4000,
                                 hangup_source="Caller", ended_at=2.0)
    finally:
        await second.close()
    third = await Store.open(db_path)
    try:
        row = await third.get_call("call-3")
        assert row is not None and row.hangup_code == 4000
    finally:
        await third.close()


async def test_list_calls_newest_first_and_filters(store: Store) -> None:
    for n, direction in enumerate(["inbound", "outbound", "inbound"]):
        await store.record_call_start(f"c{n}", direction=direction, from_number="1", to_number="2",
                                      started_at=float(n))
    await store.finish_call("c0", hangup_cause="NORMAL_CLEARING", hangup_code=4000, hangup_source="Caller",
                            ended_at=10.0)
    assert [r.call_uuid for r in await store.list_calls()] == ["c2", "c1", "c0"]
    assert [r.call_uuid for r in await store.list_calls(direction="inbound")] == ["c2", "c0"]
    assert [r.call_uuid for r in await store.list_calls(ended=False)] == ["c2", "c1"]
    assert [r.call_uuid for r in await store.list_calls(limit=1, offset=1)] == ["c1"]
    assert await store.get_call("nope") is None


async def test_outbox_enqueue_due_fail_done(store: Store) -> None:
    params = {"CallUUID": "call-1", "CallStatus": "completed", "HangupCause": "NORMAL_CLEARING"}
    first = await store.enqueue(call_uuid="call-1", kind="hangup", url="http://127.0.0.1:9/h", method="post",
                                params=params, attempts=3, last_error="refused", now=100.0)
    second = await store.enqueue(call_uuid="call-2", kind="callback", url="http://127.0.0.1:9/c", method="GET",
                                 params={}, now=100.0, next_attempt_at=200.0)
    assert await store.depth() == 2
    assert await store.next_due_at() == 100.0
    [due] = await store.due(150.0)
    assert (due.id, due.params, due.method, due.attempts, due.last_error) == (first, params, "POST", 3, "refused")
    assert [e.id for e in await store.due()] == [first, second]  # everything pending, due or not

    await store.mark_failed(first, "HTTP 500", next_at=300.0)
    assert [e.id for e in await store.due(250.0)] == [second]
    entry = await store.get_entry(first)
    assert entry is not None and (entry.attempts, entry.last_error, entry.next_attempt_at) == (4, "HTTP 500", 300.0)

    await store.mark_done(second)
    await store.mark_gave_up(first, "too old", now=400.0)
    assert await store.depth() == 0
    kept = await store.get_entry(first)
    assert kept is not None and kept.gave_up_at == 400.0  # given up, never silently dropped
    assert await store.due() == [] and await store.next_due_at() is None


async def test_outbox_survives_reopen(db_path: Path) -> None:
    first = await Store.open(db_path)
    await first.enqueue(call_uuid="c", kind="hangup", url="http://x/h", method="POST", params={"a": "b"})
    await first.close()
    second = await Store.open(db_path)
    try:
        [entry] = await second.due()
        assert entry.params == {"a": "b"}
    finally:
        await second.close()


async def test_a_newer_schema_is_refused(db_path: Path) -> None:
    await (await Store.open(db_path)).close()
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        await Store.open(db_path)


async def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open"):
        await Store.open(path)


async def test_closed_store_refuses_work(db_path: Path) -> None:
    store = await Store.open(db_path)
    await store.close()
    await store.close()  # idempotent
    assert store.closed
    with pytest.raises(StoreError, match="closed"):
        await store.depth()


async def test_a_hangup_callback_finds_its_held_row_by_index_not_by_scanning_live_calls(store: Store) -> None:
    # every live call holds a row; finding one call's row must not scan them all (2,000 live calls: 1.6x slower)
    with sqlite3.connect(store.path) as conn:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM outbox WHERE call_uuid = ? AND kind = 'hangup' AND next_attempt_at >= ? "
            "AND gave_up_at IS NULL ORDER BY id LIMIT 1", ("call-x", HELD),
        ).fetchall()
    assert "USING INDEX outbox_call" in " ".join(str(row[3]) for row in plan)


async def test_another_process_holding_the_lock_never_blocks_the_loop_and_order_is_kept(
        store: Store, db_path: Path) -> None:
    """A call's writes run on the loop's connection with busy_timeout 0; when another process (the sqlite3 CLI,
    a backup) holds the write lock, they wait in the worker thread instead, in order, and the loop keeps running."""
    await store.record_call_start("c-lock", direction="inbound", from_number="1", to_number="2", started_at=1.0)
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the write lock, as a long transaction elsewhere would hold it
    try:
        first = asyncio.ensure_future(store.record_call_update("c-lock", answered_at=2.0))
        second = asyncio.ensure_future(store.record_call_update("c-lock", answered_at=3.0))
        ticks = 0
        for _ in range(20):  # the loop is free while both wait
            await asyncio.sleep(0.005)
            ticks += 1
        assert ticks == 20 and not first.done() and not second.done()
    finally:
        other.execute("COMMIT")
        other.close()
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert store.locked_retries == 1  # the first was refused; the second queued behind it without trying
    record = await store.get_call("c-lock")
    assert record is not None and record.answered_at == 3.0  # applied in the order they were made


async def test_loop_side_writes_reach_the_database_file_through_checkpoints(
        db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop's connection never checkpoints; the worker does every CHECKPOINT_EVERY writes and at close."""
    monkeypatch.setattr(store_module, "CHECKPOINT_EVERY", 10)
    store = await Store.open(db_path)

    def rows_in_main_file() -> int:  # immutable=1 reads the database file alone, ignoring the WAL
        conn = sqlite3.connect(f"file:{db_path}?immutable=1", uri=True)
        try:
            return int(conn.execute("SELECT count(*) FROM calls").fetchone()[0])
        finally:
            conn.close()

    try:
        for i in range(9):
            await store.record_call_update(f"c-{i}", answered_at=float(i))
        assert rows_in_main_file() == 0  # all in the WAL so far
        await store.record_call_update("c-9", answered_at=9.0)  # the 10th write starts a checkpoint
        for _ in range(200):
            if store._checkpoint is None:
                break
            await asyncio.sleep(0.01)
        assert rows_in_main_file() == 10
        await store.record_call_update("c-10", answered_at=10.0)
    finally:
        await store.close()
    assert rows_in_main_file() == 11
    wal = db_path.with_name(db_path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0  # truncated at close


async def test_finish_call_without_returning_writes_the_same_row(store: Store) -> None:
    await store.record_call_start("c-nr", direction="inbound", from_number="1", to_number="2", started_at=100.0)
    assert await store.finish_call("c-nr", hangup_cause="NORMAL_CLEARING", hangup_code=4000, hangup_source="Caller",
                                   ended_at=130.0, answered_at=110.0, timeline=[{"t": 0, "event": "x"}],
                                   returning=False) is None
    record = await store.get_call("c-nr")
    assert record is not None
    assert (record.hangup_cause, record.duration, record.bill_duration) == ("NORMAL_CLEARING", 30, 20)
    assert record.timeline == [{"t": 0, "event": "x"}]
