"""engine.loop_lag: the moving average of how late the event loop fires a timer."""

from __future__ import annotations

import asyncio
import time

from engine.loop_lag import LoopLag


async def test_an_idle_loop_shows_little_lag_and_a_blocked_one_shows_it() -> None:
    lag = LoopLag(interval=0.01, smoothing=0.5)
    lag.start()
    try:
        await asyncio.sleep(0.15)
        assert lag.samples >= 5
        idle = lag.value
        assert idle < 0.02
        for _ in range(6):  # the loop blocked 60 ms at a time with no pause between, as a CPU-starved engine is
            time.sleep(0.06)
            await asyncio.sleep(0)  # the (overdue) timer runs, then the loop is blocked again
        assert lag.value > 0.03 and lag.peak >= 0.045
        await asyncio.sleep(0.2)  # and it comes back down once the loop keeps up
        assert lag.value < 0.02
    finally:
        lag.stop()
    samples = lag.samples
    await asyncio.sleep(0.05)
    assert lag.samples == samples  # stopped: no timer left behind
