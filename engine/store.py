"""SQLite storage: call records and the callback outbox, in one database file (config ``[storage] path``).

What lives here: the schema (created on open, versioned in table ``schema_version``), ``Store`` with async methods
for call records (``record_call_start`` / ``record_call_update`` / ``add_event`` / ``finish_call`` /
``get_call`` / ``list_calls``) and for the outbox of undelivered callbacks (``enqueue`` / ``due`` /
``mark_done`` / ``mark_failed`` / ``mark_gave_up`` / ``depth``).
What does not: HTTP, retries, backoff policy (engine/webhooks.py and engine/outbox.py), deciding causes
(engine/causes.py), formatting records for the REST API. This module never logs parameters of callbacks.

Decisions:
- Two connections. A call's small writes and point reads (its row, its held hangup callback) run on the event
  loop's own connection: a WAL commit with ``synchronous=NORMAL`` is a write() into the page cache, ~20-60 µs,
  where a hop to a worker thread and back costs ~100 µs of CPU in context switches alone (measured: the store was
  ~8 % of a call's CPU with a hop per statement). What can stall goes to one worker thread with its own
  connection: checkpoints (the loop's connection never checkpoints: ``wal_autocheckpoint = 0``; the worker runs a
  PASSIVE one, which never blocks writers, every ``CHECKPOINT_EVERY`` loop writes and at close), reads of many rows
  (``list_calls``, ``held``, ``due``), and any statement that found the database locked by another process
  (``busy_timeout`` is 0 on the loop's connection, 5 s on the worker's: the loop never waits on a lock). While
  anything is queued for the worker, later work queues behind it, so statements never run out of order. Every
  transaction is one job (``BEGIN IMMEDIATE`` ... ``COMMIT``, or one statement), so a job refused as locked did
  nothing and is simply run again by the worker.
- WAL journal, ``synchronous=NORMAL``: a commit survives a crash of the process (the outbox's promise); on power
  loss the last commits may roll back. ``busy_timeout`` 5 s for another process (sqlite3 CLI) reading the file.
- Upserts everywhere: a call's row exists from its first event (``record_call_start`` or any update), so a crash
  mid-call still leaves a row; later events fill it in.
- Times are Unix epoch seconds (REAL, UTC); ``duration`` and ``bill_duration`` whole seconds (rounded down, as
  FreeSWITCH's billsec); ``legs`` and ``timeline`` JSON arrays; ``from_number`` / ``to_number`` (Plivo's CDR names;
  ``from`` is an SQL keyword).
- Outbox rows are deleted once delivered. A row whose retries were given up (only with a configured maximum age)
  is kept with ``gave_up_at`` set, so nothing disappears silently.
- Callbacks are written ahead (docs/reliability.md, "Restarts"): a row is *held* (``next_attempt_at = HELD``) while
  its callback may not be sent by the outbox worker yet — a live call's hangup callback (created with the call's row
  by ``record_call_start(hangup=...)``, in the same transaction) and a callback that ``Webhooks.post_callback`` is
  trying right now (``hold``). ``due``, ``next_due_at`` and ``depth`` never see held rows; ``release`` hands one to
  the worker. A process killed with held rows leaves them for the next start, which releases every one of them
  (engine/recovery.py), so a SIGKILL loses no callback.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["HELD", "SCHEMA_VERSION", "CallRecord", "OutboxEntry", "Store", "StoreError"]

SCHEMA_VERSION = 1

HELD = 1e300
"""``next_attempt_at`` of a held outbox row: not due until ``release``d (see the module docstring)."""

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS calls (
    call_uuid     TEXT PRIMARY KEY,
    direction     TEXT,
    from_number   TEXT,
    to_number     TEXT,
    started_at    REAL,
    answered_at   REAL,
    ended_at      REAL,
    hangup_cause  TEXT,
    hangup_code   INTEGER,
    hangup_source TEXT,
    duration      INTEGER,
    bill_duration INTEGER,
    legs          TEXT NOT NULL DEFAULT '[]',
    timeline      TEXT NOT NULL DEFAULT '[]',
    request_uuid  TEXT,
    updated_at    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_started_at ON calls (started_at);
CREATE INDEX IF NOT EXISTS calls_request_uuid ON calls (request_uuid);
CREATE TABLE IF NOT EXISTS outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    call_uuid       TEXT,
    kind            TEXT NOT NULL,
    url             TEXT NOT NULL,
    method          TEXT NOT NULL,
    params          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error      TEXT NOT NULL DEFAULT '',
    created_at      REAL NOT NULL,
    gave_up_at      REAL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_attempt_at) WHERE gave_up_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_call ON outbox (call_uuid);
"""

# Columns a caller may set on a call row (call_uuid and updated_at are the store's).
CALL_FIELDS = (
    "direction",
    "from_number",
    "to_number",
    "started_at",
    "answered_at",
    "ended_at",
    "hangup_cause",
    "hangup_code",
    "hangup_source",
    "duration",
    "bill_duration",
    "legs",
    "timeline",
    "request_uuid",
)
_JSON_FIELDS = ("legs", "timeline")


class StoreError(RuntimeError):
    """The database cannot be used: closed, written by a newer softswitch, or not a softswitch database."""


@dataclass(frozen=True)
class CallRecord:
    """One row of ``calls``: a call's timeline summary."""

    call_uuid: str
    direction: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    started_at: float | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    hangup_cause: str | None = None
    hangup_code: int | None = None
    hangup_source: str | None = None
    duration: int | None = None
    bill_duration: int | None = None
    legs: list[Any] = field(default_factory=list)
    timeline: list[Any] = field(default_factory=list)
    request_uuid: str | None = None
    updated_at: float = 0.0


@dataclass(frozen=True)
class OutboxEntry:
    """One callback that could not be delivered yet."""

    id: int
    call_uuid: str | None
    kind: str
    url: str
    method: str
    params: dict[str, str]
    attempts: int
    next_attempt_at: float
    last_error: str
    created_at: float
    gave_up_at: float | None = None


CHECKPOINT_EVERY = 1000  # loop-connection writes between two PASSIVE checkpoints in the worker thread


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED (or one of their extended codes): another connection holds the lock we need."""
    return exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _connect_loop_side(path: Path) -> sqlite3.Connection:
    """The event loop's connection to a database `_connect` has set up: never waits on a lock, never checkpoints."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 0")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    return conn


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif row["version"] > SCHEMA_VERSION:
                raise StoreError(
                    f"{path}: schema version {row['version']} is newer than this softswitch ({SCHEMA_VERSION})"
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")  # the schema, and what a crash left in the WAL
    except sqlite3.DatabaseError as e:
        conn.close()
        raise StoreError(f"{path}: cannot open the database: {e}") from None
    except BaseException:
        conn.close()
        raise
    return conn


def _call_record(row: sqlite3.Row) -> CallRecord:
    values = dict(row)
    for name in _JSON_FIELDS:
        values[name] = json.loads(values[name] or "[]")
    return CallRecord(**values)


def _outbox_entry(row: sqlite3.Row) -> OutboxEntry:
    values = dict(row)
    values["params"] = json.loads(values["params"])
    return OutboxEntry(**values)


def _column_value(name: str, value: Any) -> Any:
    if name in _JSON_FIELDS:
        return json.dumps(list(value), separators=(",", ":"), default=str)
    return value


def _upsert_call(call_uuid: str, fields: Mapping[str, Any]) -> Callable[[sqlite3.Connection], None]:
    unknown = set(fields) - set(CALL_FIELDS)
    if unknown:
        raise ValueError(f"unknown call record fields: {', '.join(sorted(unknown))}")
    names = list(fields)
    values = [_column_value(n, fields[n]) for n in names]

    def upsert(conn: sqlite3.Connection) -> None:
        columns = ", ".join(["call_uuid", *names, "updated_at"])
        marks = ", ".join("?" for _ in range(len(names) + 2))
        updates = ", ".join(f"{n} = excluded.{n}" for n in [*names, "updated_at"])
        conn.execute(
            f"INSERT INTO calls ({columns}) VALUES ({marks}) ON CONFLICT (call_uuid) DO UPDATE SET {updates}",
            [call_uuid, *values, time.time()],
        )

    return upsert


def _insert_entry(conn: sqlite3.Connection, call_uuid: str | None, kind: str, url: str, method: str,
                  params: Mapping[str, str], attempts: int, due_at: float, last_error: str, created: float) -> int:
    cursor = conn.execute(
        "INSERT INTO outbox (call_uuid, kind, url, method, params, attempts, next_attempt_at, last_error, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (call_uuid, kind, url, method.upper(), json.dumps(dict(params), separators=(",", ":")), attempts, due_at,
         last_error, created),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


class Store:
    """The softswitch database. ``store = await Store.open(path)``; ``await store.close()`` at shutdown."""

    def __init__(self, path: Path, conn: sqlite3.Connection, loop_conn: sqlite3.Connection,
                 executor: ThreadPoolExecutor) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = conn  # the worker thread's
        self._loop_conn: sqlite3.Connection | None = loop_conn  # the event loop's
        self._executor = executor
        self._queued = 0  # jobs queued for or running in the worker: while > 0, new jobs queue behind them
        self._writes = 0  # loop-side jobs since the last checkpoint
        self._checkpoint: asyncio.Future[Any] | None = None
        self.locked_retries = 0  # loop-side jobs that found the database locked and were run by the worker

    @classmethod
    async def open(cls, path: str | Path) -> Store:
        """Open (creating parent folders, the file and the schema as needed) the database at ``path``."""
        db_path = Path(path)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="softswitch-store")
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(executor, _connect, db_path)
            try:
                loop_conn = await loop.run_in_executor(executor, _connect_loop_side, db_path)
            except BaseException:
                conn.close()
                raise
        except sqlite3.DatabaseError as e:
            executor.shutdown(wait=False)
            raise StoreError(f"{db_path}: cannot open the database: {e}") from None
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(db_path, conn, loop_conn, executor)

    async def close(self) -> None:
        """Finish pending work, checkpoint, and close the database. Idempotent."""
        conn, self._conn = self._conn, None
        loop_conn, self._loop_conn = self._loop_conn, None
        if conn is None:
            return
        if loop_conn is not None:
            loop_conn.close()

        def close_worker_side() -> None:
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass  # another process reading: the next open checkpoints
            conn.close()

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, close_worker_side)
        self._executor.shutdown(wait=True)

    @property
    def closed(self) -> bool:
        return self._conn is None

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """One job (one transaction or one statement) on the loop's connection, or in the worker thread when
        the worker has work queued (order) or the database is locked by another process."""
        loop_conn = self._loop_conn
        if loop_conn is not None and not self._queued:
            try:
                result = fn(loop_conn)
            except sqlite3.OperationalError as exc:
                if not _is_locked(exc):
                    raise
                self.locked_retries += 1  # it did nothing (one statement, or a refused BEGIN): the worker waits
            else:
                self._writes += 1
                if self._writes >= CHECKPOINT_EVERY and self._checkpoint is None:
                    self._start_checkpoint()
                return result
        return await self._in_worker(fn)

    async def _in_worker(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._conn
        if conn is None:
            raise StoreError(f"{self.path}: the store is closed")
        self._queued += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, conn)
        finally:
            self._queued -= 1

    def _start_checkpoint(self) -> None:
        """A PASSIVE checkpoint in the worker (copies WAL pages into the database without blocking writers); not
        counted in ``_queued``: it changes no rows, so the loop's jobs need not wait for it."""
        conn = self._conn
        if conn is None:
            return
        self._writes = 0

        def checkpoint(c: sqlite3.Connection) -> None:
            try:
                c.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                pass  # busy: the next one catches up

        future = asyncio.get_running_loop().run_in_executor(self._executor, checkpoint, conn)
        self._checkpoint = future
        future.add_done_callback(self._checkpoint_done)

    def _checkpoint_done(self, future: asyncio.Future[Any]) -> None:
        self._checkpoint = None

    # --- call records -------------------------------------------------------------------------------------

    async def record_call_start(
        self,
        call_uuid: str,
        *,
        direction: str,
        from_number: str,
        to_number: str,
        started_at: float | None = None,
        request_uuid: str | None = None,
        legs: Sequence[Any] | None = None,
        timeline: Sequence[Any] | None = None,
        hangup: tuple[str, str, Mapping[str, str]] | None = None,
    ) -> None:
        """Create (or complete) the row of a call at its first event. ``hangup = (url, method, params)``: the call's
        hangup callback, held in the outbox from now on (written in the same transaction as the row), so a crash
        before the call ends still leaves it to be sent (``hold`` later puts the final parameters in)."""
        fields: dict[str, Any] = {
            "direction": direction,
            "from_number": from_number,
            "to_number": to_number,
            "started_at": time.time() if started_at is None else started_at,
        }
        if request_uuid is not None:
            fields["request_uuid"] = request_uuid
        if legs is not None:
            fields["legs"] = legs
        if timeline is not None:
            fields["timeline"] = timeline
        if hangup is None:
            await self.record_call_update(call_uuid, **fields)
            return
        upsert = _upsert_call(call_uuid, fields)
        url, method, params = hangup

        def both(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                upsert(conn)
                _insert_entry(conn, call_uuid, "hangup", url, method, params, 0, HELD, "", time.time())
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        await self._run(both)

    async def record_call_update(self, call_uuid: str, **fields: Any) -> None:
        """Set some columns of a call's row (names from ``CALL_FIELDS``), creating the row if it is missing."""
        await self._run(_upsert_call(call_uuid, fields))

    async def add_event(self, call_uuid: str, event: str, at: float | None = None, **details: Any) -> None:
        """Append ``{"at", "event", **details}`` to a call's timeline (creating the row if it is missing)."""
        item = json.dumps({"at": time.time() if at is None else at, "event": event, **details}, default=str)

        def append(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO calls (call_uuid, timeline, updated_at) VALUES (?, json_array(json(?)), ?) "
                "ON CONFLICT (call_uuid) DO UPDATE SET "
                "timeline = json_insert(calls.timeline, '$[#]', json(?)), updated_at = excluded.updated_at",
                (call_uuid, item, time.time(), item),
            )

        await self._run(append)

    async def finish_call(
        self,
        call_uuid: str,
        *,
        hangup_cause: str,
        hangup_code: int,
        hangup_source: str,
        ended_at: float | None = None,
        answered_at: float | None = None,
        duration: int | None = None,
        bill_duration: int | None = None,
        legs: Sequence[Any] | None = None,
        timeline: Sequence[Any] | None = None,
        returning: bool = True,
    ) -> CallRecord | None:
        """Record how a call ended (with its ``legs`` and ``timeline`` when given: one write for all of it).
        ``duration`` (from started_at) and ``bill_duration`` (from answered_at, 0 if never answered) are computed
        when not given. Returns the final row (None with ``returning=False``: the engine, which has it all, saves
        reading it back and decoding its JSON)."""
        end = time.time() if ended_at is None else ended_at

        def finish(conn: sqlite3.Connection) -> CallRecord | None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT started_at, answered_at FROM calls WHERE call_uuid = ?", (call_uuid,)
                ).fetchone()
                started = row["started_at"] if row is not None and row["started_at"] is not None else end
                answered = answered_at if answered_at is not None else (row["answered_at"] if row else None)
                fields: dict[str, Any] = {
                    "started_at": started,
                    "answered_at": answered,
                    "ended_at": end,
                    "hangup_cause": hangup_cause,
                    "hangup_code": hangup_code,
                    "hangup_source": hangup_source,
                    "duration": duration if duration is not None else max(0, int(end - started)),
                    "bill_duration": (
                        bill_duration
                        if bill_duration is not None
                        else (max(0, int(end - answered)) if answered is not None else 0)
                    ),
                }
                if legs is not None:
                    fields["legs"] = legs
                if timeline is not None:
                    fields["timeline"] = timeline
                names = list(fields)
                columns = ", ".join(["call_uuid", *names, "updated_at"])
                marks = ", ".join("?" for _ in range(len(names) + 2))
                updates = ", ".join(f"{n} = excluded.{n}" for n in [*names, "updated_at"])
                conn.execute(
                    f"INSERT INTO calls ({columns}) VALUES ({marks}) "
                    f"ON CONFLICT (call_uuid) DO UPDATE SET {updates}",
                    [call_uuid, *(_column_value(n, fields[n]) for n in names), time.time()],
                )
                final = (conn.execute("SELECT * FROM calls WHERE call_uuid = ?", (call_uuid,)).fetchone()
                         if returning else None)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return None if final is None else _call_record(final)

        return await self._run(finish)

    async def get_call(self, call_uuid: str) -> CallRecord | None:
        def get(conn: sqlite3.Connection) -> CallRecord | None:
            row = conn.execute("SELECT * FROM calls WHERE call_uuid = ?", (call_uuid,)).fetchone()
            return None if row is None else _call_record(row)

        return await self._run(get)

    async def list_calls(
        self, *, limit: int = 100, offset: int = 0, direction: str | None = None, ended: bool | None = None
    ) -> list[CallRecord]:
        """Calls, newest first. ``ended``: True only finished calls, False only calls still without an end."""
        where: list[str] = []
        args: list[Any] = []
        if direction is not None:
            where.append("direction = ?")
            args.append(direction)
        if ended is not None:
            where.append("ended_at IS NOT NULL" if ended else "ended_at IS NULL")
        clause = f"WHERE {' AND '.join(where)}" if where else ""

        def select(conn: sqlite3.Connection) -> list[CallRecord]:
            rows = conn.execute(
                f"SELECT * FROM calls {clause} ORDER BY coalesce(started_at, updated_at) DESC, call_uuid "
                "LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
            return [_call_record(r) for r in rows]

        return await self._in_worker(select)

    # --- outbox -------------------------------------------------------------------------------------------

    async def enqueue(
        self,
        *,
        call_uuid: str | None,
        kind: str,
        url: str,
        method: str,
        params: Mapping[str, str],
        attempts: int = 0,
        last_error: str = "",
        next_attempt_at: float | None = None,
        now: float | None = None,
    ) -> int:
        """Keep a callback for later delivery; returns its id. Due at once unless ``next_attempt_at`` is given."""
        created = time.time() if now is None else now
        due_at = created if next_attempt_at is None else next_attempt_at
        params = dict(params)
        return await self._run(
            lambda conn: _insert_entry(conn, call_uuid, kind, url, method, params, attempts, due_at, last_error,
                                       created)
        )

    async def hold(self, *, call_uuid: str | None, kind: str, url: str, method: str, params: Mapping[str, str]) -> int:
        """Write a callback ahead of its first attempt, held (not due) until ``release`` or ``mark_done``; returns its
        id. A hangup callback takes over the call's held row from ``record_call_start`` (its final parameters
        replace the ones stored at the start) instead of adding a second one."""
        params = dict(params)
        payload = json.dumps(params, separators=(",", ":"))

        def hold(conn: sqlite3.Connection) -> int:
            if kind == "hangup" and call_uuid is not None:
                row = conn.execute(
                    "SELECT id FROM outbox WHERE call_uuid = ? AND kind = 'hangup' AND next_attempt_at >= ? "
                    "AND gave_up_at IS NULL ORDER BY id LIMIT 1",
                    (call_uuid, HELD),
                ).fetchone()
                if row is not None:
                    conn.execute("UPDATE outbox SET url = ?, method = ?, params = ? WHERE id = ?",
                                 (url, method.upper(), payload, row["id"]))
                    return int(row["id"])
            return _insert_entry(conn, call_uuid, kind, url, method, params, 0, HELD, "", time.time())

        return await self._run(hold)

    async def release(self, entry_id: int, *, attempts: int, error: str, next_at: float | None = None,
                      params: Mapping[str, str] | None = None) -> None:
        """Hand a held row to the outbox worker: ``attempts`` made so far, the last error, due at ``next_at``
        (now when None); ``params`` replace the stored ones when given."""
        due_at = time.time() if next_at is None else next_at
        payload = None if params is None else json.dumps(dict(params), separators=(",", ":"))
        await self._run(
            lambda conn: conn.execute(
                "UPDATE outbox SET attempts = ?, last_error = ?, next_attempt_at = ?, params = coalesce(?, params) "
                "WHERE id = ?",
                (attempts, error, due_at, payload, entry_id),
            )
        )

    async def held(self) -> list[OutboxEntry]:
        """Every held row (what a previous process left held: engine/recovery.py releases them at start)."""

        def select(conn: sqlite3.Connection) -> list[OutboxEntry]:
            rows = conn.execute(
                "SELECT * FROM outbox WHERE gave_up_at IS NULL AND next_attempt_at >= ? ORDER BY id", (HELD,)
            ).fetchall()
            return [_outbox_entry(r) for r in rows]

        return await self._in_worker(select)

    async def due(self, now: float | None = None, limit: int = 100) -> list[OutboxEntry]:
        """Pending entries whose next attempt is at or before ``now`` (all pending ones when ``now`` is None),
        oldest due first. Held rows are never due."""
        when = float("inf") if now is None else now

        def select(conn: sqlite3.Connection) -> list[OutboxEntry]:
            rows = conn.execute(
                "SELECT * FROM outbox WHERE gave_up_at IS NULL AND next_attempt_at <= ? AND next_attempt_at < ? "
                "ORDER BY next_attempt_at, id LIMIT ?",
                (when, HELD, limit),
            ).fetchall()
            return [_outbox_entry(r) for r in rows]

        return await self._in_worker(select)

    async def next_due_at(self) -> float | None:
        """When the earliest pending entry is due; None when nothing is pending."""

        def select(conn: sqlite3.Connection) -> float | None:
            row = conn.execute(
                "SELECT min(next_attempt_at) AS t FROM outbox WHERE gave_up_at IS NULL AND next_attempt_at < ?",
                (HELD,),
            ).fetchone()
            return None if row is None else row["t"]

        return await self._run(select)

    async def get_entry(self, entry_id: int) -> OutboxEntry | None:
        def select(conn: sqlite3.Connection) -> OutboxEntry | None:
            row = conn.execute("SELECT * FROM outbox WHERE id = ?", (entry_id,)).fetchone()
            return None if row is None else _outbox_entry(row)

        return await self._run(select)

    async def mark_done(self, entry_id: int) -> None:
        """The entry was delivered: delete it."""
        await self._run(lambda conn: conn.execute("DELETE FROM outbox WHERE id = ?", (entry_id,)))

    async def mark_failed(self, entry_id: int, error: str, next_at: float) -> None:
        """One more failed attempt: count it, keep the error, schedule the next one."""
        await self._run(
            lambda conn: conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? WHERE id = ?",
                (error, next_at, entry_id),
            )
        )

    async def mark_gave_up(self, entry_id: int, error: str, now: float | None = None) -> None:
        """Stop retrying the entry; the row stays (with ``gave_up_at``) for inspection."""
        at = time.time() if now is None else now
        await self._run(
            lambda conn: conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, gave_up_at = ? WHERE id = ?",
                (error, at, entry_id),
            )
        )

    async def depth(self) -> int:
        """How many callbacks are waiting for a retry (given-up and held ones not counted)."""

        def count(conn: sqlite3.Connection) -> int:
            return int(conn.execute(
                "SELECT count(*) FROM outbox WHERE gave_up_at IS NULL AND next_attempt_at < ?", (HELD,)
            ).fetchone()[0])

        return await self._in_worker(count)
