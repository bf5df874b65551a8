"""The outbox worker: delivers callbacks that engine/webhooks.py could not, retrying until they get a 2xx.

What lives here: ``OutboxWorker``, one asyncio task that reads due entries from the store's outbox, sends each
through ``Webhooks.request`` (so it is signed afresh and logged like any request), deletes it on a 2xx, and otherwise
reschedules it with exponential backoff (``base_delay`` doubling per failed attempt, capped at ``max_delay``, with
±10 % jitter so a backlog does not retry in lockstep). On start it first offers every pending entry, due or not:
what was left by the previous run (a restart) goes out at once.
What does not: first-attempt delivery and its short retries (Webhooks.post_callback), the database (engine/store.py).
Entries are never deleted undelivered. With ``max_age`` set, an entry older than that is marked given up (kept in the
table, logged at error level); by default retries go on for ever at the capped interval.
Delivery is at least once: an app may see a callback again if its 2xx was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from typing import Any

import structlog

from engine.store import OutboxEntry, Store
from engine.webhooks import WebhookError, Webhooks, log_url

__all__ = ["OutboxWorker"]


class OutboxWorker:
    """Retries stored callbacks. ``worker.start()`` once the loop runs; ``await worker.stop()`` at shutdown
    (before ``webhooks.close()`` and ``store.close()``)."""

    def __init__(
        self,
        store: Store,
        webhooks: Webhooks,
        *,
        base_delay: float = 5.0,
        max_delay: float = 300.0,
        poll_interval: float = 1.0,
        batch: int = 100,
        concurrency: int = 10,
        max_age: float | None = None,
        jitter: float = 0.1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.webhooks = webhooks
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.poll_interval = poll_interval
        self.batch = batch
        self.max_age = max_age
        self.jitter = jitter
        self.clock = clock
        self.delivered = 0
        self.failed_attempts = 0
        self._limit = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._log: Any = structlog.get_logger("engine.outbox")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the worker task (idempotent)."""
        if not self.running:
            self._task = asyncio.create_task(self._run(), name="outbox-worker")

    async def stop(self) -> None:
        """Stop the worker; a delivery in flight is abandoned and stays in the outbox."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def wake(self) -> None:
        """Look at the outbox now instead of at the next poll (e.g. right after an enqueue)."""
        self._wake.set()

    def next_delay(self, attempts: int) -> float:
        """Seconds before the next try of an entry that has failed ``attempts`` times."""
        exponent = max(0, attempts - 1)
        delay = self.max_delay if exponent > 60 else min(self.max_delay, self.base_delay * 2**exponent)
        if self.jitter:
            delay *= 1 + random.uniform(-self.jitter, self.jitter)
        return min(delay, self.max_delay)

    async def run_once(self, *, everything: bool = False) -> int:
        """Send one batch of due entries (``everything``: every pending entry, due or not); returns how many were
        delivered."""
        entries = await self.store.due(None if everything else self.clock(), self.batch)
        results = await asyncio.gather(*(self._deliver(e) for e in entries))
        return sum(results)

    async def _run(self) -> None:
        everything = True  # the first pass after start offers every pending entry (what a restart left)
        while True:
            try:
                if everything:
                    self._log.info("outbox.started", pending=await self.store.depth())
                await self._drain(everything=everything)
                everything = False
                await self._drain(everything=False)
                await self._sleep()
            except asyncio.CancelledError:
                raise
            except Exception:  # a store error must not end retries for good: log, wait, try again
                self._log.exception("outbox.error")
                await asyncio.sleep(self.poll_interval)

    async def _drain(self, *, everything: bool) -> None:
        """Batches until nothing more is due (``everything``: one pass over all pending entries)."""
        seen: set[int] = set()
        while True:
            entries = await self.store.due(None if everything else self.clock(), self.batch)
            fresh = [e for e in entries if e.id not in seen]
            if not fresh:
                return
            seen.update(e.id for e in fresh)
            await asyncio.gather(*(self._deliver(e) for e in fresh))

    async def _sleep(self) -> None:
        delay = self.poll_interval
        next_at = await self.store.next_due_at()
        if next_at is not None:
            delay = min(delay, max(0.0, next_at - self.clock()))
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=delay)

    async def _deliver(self, entry: OutboxEntry) -> bool:
        log = self._log.bind(call_uuid=entry.call_uuid, outbox_id=entry.id, kind=entry.kind, url=log_url(entry.url))
        async with self._limit:
            try:
                response = await self.webhooks.request(
                    entry.url,
                    entry.method,
                    entry.params,
                    call_uuid=entry.call_uuid,
                    kind=f"outbox:{entry.kind}",
                    attempt=entry.attempts + 1,
                )
            except WebhookError as e:
                error = str(e)
            except ValueError as e:  # a URL or method that can never be sent: keep the row, stop retrying
                await self.store.mark_gave_up(entry.id, str(e), self.clock())
                log.error("outbox.gave_up", error=str(e), attempts=entry.attempts + 1)
                return False
            else:
                if response.is_success:
                    await self.store.mark_done(entry.id)
                    self.delivered += 1
                    self.webhooks.metrics.callbacks_delivered += 1
                    log.info("outbox.delivered", attempts=entry.attempts + 1, status=response.status_code)
                    return True
                error = f"{log_url(entry.url)}: HTTP {response.status_code}"
        self.failed_attempts += 1
        now = self.clock()
        if self.max_age is not None and now - entry.created_at >= self.max_age:
            await self.store.mark_gave_up(entry.id, error, now)
            log.error("outbox.gave_up", error=error, attempts=entry.attempts + 1, age=round(now - entry.created_at))
            return False
        delay = self.next_delay(entry.attempts + 1)
        await self.store.mark_failed(entry.id, error, now + delay)
        log.info("outbox.retry_later", error=error, attempts=entry.attempts + 1, delay=round(delay, 3))
        return False
