"""engine.dialing's inbox: a Dial's events in arrival order, and a cancelled wait loses none of them."""

from __future__ import annotations

import asyncio

import pytest

from engine.dialing import _Inbox


async def test_items_come_out_in_order_and_a_waiting_get_wakes_on_put() -> None:
    inbox = _Inbox()
    assert inbox.empty()
    inbox.put_nowait((None, 1))
    waiter = asyncio.ensure_future(inbox.get())
    assert await waiter == (None, 1)
    waiter = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    assert not waiter.done()
    inbox.put_nowait((None, 2))
    inbox.put_nowait((None, 3))
    assert await waiter == (None, 2)
    assert inbox.get_nowait() == (None, 3) and inbox.empty()


async def test_a_get_cancelled_after_the_wake_up_leaves_the_item_for_the_next() -> None:
    inbox = _Inbox()
    waiter = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait((None, "digit"))  # wakes the waiter ...
    waiter.cancel()  # ... which is cancelled before it runs (a timeout firing in the same loop iteration)
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert await asyncio.wait_for(inbox.get(), 1) == (None, "digit")


async def test_a_timeout_around_get_works_as_with_asyncio_queue() -> None:
    inbox = _Inbox()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await inbox.get()
    inbox.put_nowait((None, "late"))
    assert await inbox.get() == (None, "late")
