"""How late the event loop runs: the overload signal behind admission's ``overload`` refusals.

One asyncio timer every ``interval`` (50 ms) notes how late it fired; ``LoopLag.value`` is a moving average of
those delays (seconds). A loop with spare CPU fires its timers within a millisecond or two; a garbage collection
shows as one late sample that the average mostly absorbs; an engine offered more calls than its CPU can set up
falls behind a little more every second, and so does this average. Above capacity that delay is what breaks calls:
a response later than SIP's T1 (500 ms) makes the peer retransmit, each retransmission is more work, and calls
already admitted start failing. Admission (engine.admission) refuses new calls with 503 while the average is over
``[limits] max_loop_lag_ms`` so the admitted ones stay whole.

What does not live here: the decision to refuse (engine.admission), sending the 503 (sip.ua).
"""

from __future__ import annotations

import asyncio

__all__ = ["LoopLag"]


class LoopLag:
    """``lag = LoopLag(); lag.start()`` on the running loop; ``lag.value`` (seconds), ``lag.peak`` since start."""

    def __init__(self, interval: float = 0.05, smoothing: float = 0.25) -> None:
        self.interval = interval
        self.smoothing = smoothing  # weight of the newest sample in the moving average
        self.value = 0.0
        self.peak = 0.0
        self.samples = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._due = self._loop.time() + self.interval
        self._handle = self._loop.call_at(self._due, self._sample)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _sample(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        late = max(0.0, now - self._due)
        self.value += self.smoothing * (late - self.value)
        self.peak = max(self.peak, late)
        self.samples += 1
        self._due = now + self.interval
        self._handle = self._loop.call_at(self._due, self._sample)
