"""Admission control: whether a new call may start now (``[limits] max_calls`` / ``max_cps``, and draining).

What lives here: ``Admission``, asked once per new call (an inbound INVITE through the UA's ``admit`` hook, an
outbound call through the REST API) and answering ``admit() -> (ok, retry_after_s)``:

* **draining** (set at SIGTERM): every new call is refused; ``retry_after`` is what ``start_draining`` was given
  (the drain timeout: the longest this node stays up refusing calls).
* **max_calls**: refused while ``live()`` (the engine's live calls, those still being set up included) is at or
  above the limit; ``retry_after`` is ``busy_retry_after`` (5 s by default: calls end at their own pace).
* **max_cps**: a sliding one-second window of admission times; refused when ``max_cps`` calls were admitted in
  the last second, ``retry_after`` rounded up to whole seconds (so 1). A sliding window, not a token bucket: no
  one-second span ever sees more than ``max_cps`` admissions (a full bucket allows up to twice that at its edge).
* **overload**: refused while the event loop runs late (engine.loop_lag's moving average over ``max_lag``, the
  ``[limits] max_loop_lag_ms``), until it is back under half of that (no flapping at the edge); ``retry_after`` 1.
  This is what keeps admitted calls whole when more calls come than the CPU can set up, whatever ``max_cps`` says:
  the engine's real capacity depends on the machine, the app and what the calls do.

Only admitted calls use the CPS budget; a refusal costs nothing. Refusals are counted by reason (``rejected``, for
``/metrics``) and logged at most once a second per reason with how many were refused since (no log storm at
overload). What does not live here: sending the 503 / 429 (sip.ua and the REST API do), the live-call table
(engine.engine).
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import NamedTuple

import structlog

__all__ = ["REASONS", "Admission", "Decision"]

REASONS = ("draining", "max_calls", "max_cps", "overload")
"""Every reason a call can be refused for (the ``reason`` label of ``softswitch_admission_rejected_total``)."""

log = structlog.get_logger("engine.admission")


class Decision(NamedTuple):
    ok: bool
    retry_after: int
    """Whole seconds for ``Retry-After`` (0 when admitted)."""
    reason: str
    """"" when admitted, else one of ``REASONS``."""


ADMITTED = Decision(True, 0, "")


class Admission:
    """``Admission(max_calls, max_cps, live=lambda: len(calls))``; ``ok, retry_after = admission.admit()``."""

    def __init__(self, max_calls: int, max_cps: int, *, live: Callable[[], int] = lambda: 0,
                 busy_retry_after: int = 5, clock: Callable[[], float] = time.monotonic,
                 lag: Callable[[], float] = lambda: 0.0, max_lag: float = 0.0) -> None:
        if max_calls < 1 or max_cps < 1:
            raise ValueError("max_calls and max_cps must be at least 1")
        if max_lag < 0:
            raise ValueError("max_lag must not be negative")
        self.max_calls = max_calls
        self.max_cps = max_cps
        self.live = live
        self.lag = lag  # seconds the event loop runs late (engine.loop_lag.LoopLag.value)
        self.max_lag = max_lag  # 0: never refuse for overload
        self.overloaded = False
        self.busy_retry_after = max(1, busy_retry_after)
        self.clock = clock
        self.draining = False
        self.drain_retry_after = 1
        self.admitted = 0
        self.rejected: Counter[str] = Counter()
        self._window: deque[float] = deque()
        self._last_log: dict[str, float] = {}
        self._unlogged: Counter[str] = Counter()

    def start_draining(self, retry_after: float = 1) -> None:
        """Refuse every new call from now on, with ``Retry-After: retry_after`` (rounded up, at least 1 s)."""
        self.drain_retry_after = max(1, math.ceil(retry_after))
        if not self.draining:
            self.draining = True
            log.info("admission_draining", retry_after=self.drain_retry_after)

    def admit(self, calls: int = 1) -> tuple[bool, int]:
        """``(True, 0)`` and the calls counted against max_cps, or ``(False, retry_after_seconds)``."""
        decision = self.decide(calls)
        return decision.ok, decision.retry_after

    def decide(self, calls: int = 1) -> Decision:
        """Like ``admit`` with the reason of a refusal (``draining``, ``max_calls``, ``max_cps``). ``calls`` > 1
        (a REST request to several destinations) is all or nothing: admitted only if every one of them fits."""
        if self.draining:
            return self._reject("draining", self.drain_retry_after)
        if self.live() + calls > self.max_calls:
            return self._reject("max_calls", self.busy_retry_after)
        if self.check_overload():
            return self._reject("overload", 1)
        now = self.clock()
        window = self._window
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) + calls > self.max_cps:
            # the oldest admissions that must leave the window before `calls` more fit (1 s for more than max_cps)
            leaving = len(window) + calls - self.max_cps
            until = window[leaving - 1] + 1.0 if leaving <= len(window) else now + 1.0
            return self._reject("max_cps", max(1, math.ceil(until - now)))
        window.extend([now] * calls)
        self.admitted += calls
        return ADMITTED

    def check_overload(self) -> bool:
        """Whether new calls are refused for overload now: from the moment the loop's lag is over ``max_lag``
        until it is back under half of it."""
        if not self.max_lag:
            return False
        lag = self.lag()
        if self.overloaded and lag < self.max_lag / 2:
            self.overloaded = False
            log.warning("admission_overload_ended", loop_lag_ms=round(1000 * lag, 1), refused=self.rejected["overload"])
        elif not self.overloaded and lag > self.max_lag:
            self.overloaded = True
            log.warning("admission_overload", loop_lag_ms=round(1000 * lag, 1),
                        max_loop_lag_ms=round(1000 * self.max_lag), live_calls=self.live())
        return self.overloaded

    def _reject(self, reason: str, retry_after: int) -> Decision:
        self.rejected[reason] += 1
        self._unlogged[reason] += 1
        now = self.clock()
        if now - self._last_log.get(reason, -math.inf) >= 1.0:
            self._last_log[reason] = now
            emit = log.info if reason == "draining" else log.warning
            emit("admission_rejected", reason=reason, retry_after=retry_after, count=self._unlogged[reason],
                 live_calls=self.live(), max_calls=self.max_calls, max_cps=self.max_cps)
            self._unlogged[reason] = 0
        return Decision(False, retry_after, reason)
