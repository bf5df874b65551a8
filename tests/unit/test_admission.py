"""engine.admission: max_calls, a sliding one-second CPS window, draining, Retry-After values, refusal counts."""

from __future__ import annotations

import pytest

from engine.admission import Admission


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_max_calls_counts_live_calls_and_says_when_to_retry() -> None:
    live = [0]
    adm = Admission(2, 100, live=lambda: live[0], busy_retry_after=5)
    assert adm.admit() == (True, 0)
    live[0] = 2
    assert adm.admit() == (False, 5)
    assert adm.decide().reason == "max_calls"
    live[0] = 1
    assert adm.admit() == (True, 0)
    assert adm.rejected["max_calls"] == 2 and adm.admitted == 2


def test_cps_is_a_sliding_one_second_window() -> None:
    clock = Clock()
    adm = Admission(100, 2, clock=clock)
    results = [adm.admit() for _ in range(5)]
    assert results == [(True, 0), (True, 0), (False, 1), (False, 1), (False, 1)]
    assert adm.rejected["max_cps"] == 3
    clock.now += 0.5
    assert adm.admit() == (False, 1)  # both admissions are still inside the last second
    clock.now += 0.5  # exactly one second after them: they left the window
    assert adm.admit() == (True, 0)
    assert adm.admit() == (True, 0)
    assert adm.admit() == (False, 1)


def test_no_second_ever_sees_more_than_max_cps() -> None:
    clock = Clock()
    adm = Admission(10_000, 10, clock=clock)
    admitted: list[float] = []
    for _ in range(1000):  # an INVITE every 10 ms for 10 s
        if adm.admit()[0]:
            admitted.append(clock.now)
        clock.now += 0.01
    for i, t in enumerate(admitted):
        in_window = [u for u in admitted[i:] if u < t + 1.0 - 1e-9]
        assert len(in_window) <= 10
    assert 95 <= len(admitted) <= 101


def test_refusals_do_not_use_the_cps_budget() -> None:
    clock = Clock()
    live = [5]
    adm = Admission(5, 1, live=lambda: live[0], clock=clock)
    for _ in range(10):
        assert adm.admit()[0] is False
    live[0] = 0
    assert adm.admit() == (True, 0)


def test_draining_refuses_everything_with_the_drain_retry_after() -> None:
    adm = Admission(10, 10)
    adm.start_draining(2.5)
    assert adm.draining
    decision = adm.decide()
    assert (decision.ok, decision.retry_after, decision.reason) == (False, 3, "draining")
    adm.start_draining(0)
    assert adm.admit() == (False, 1)  # Retry-After is never 0
    assert adm.rejected["draining"] == 2 and adm.admitted == 0


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Admission(0, 1)


def test_several_calls_are_admitted_all_or_nothing() -> None:
    clock = Clock()
    live = [0]
    adm = Admission(5, 4, live=lambda: live[0], clock=clock)
    assert adm.admit(3) == (True, 0)
    assert adm.admitted == 3
    assert adm.decide(2).reason == "max_cps"  # 3 + 2 > 4 in this second: none of the 2 is counted
    assert adm.admitted == 3 and adm.admit(1) == (True, 0)
    clock.now += 1.0
    live[0] = 4
    assert adm.decide(2).reason == "max_calls"  # 4 live + 2 > 5
    live[0] = 3
    assert adm.admit(2) == (True, 0) and adm.admitted == 6


def test_overload_refuses_while_the_loop_runs_late_and_recovers_under_half_the_limit() -> None:
    lag = [0.0]
    adm = Admission(100, 100, lag=lambda: lag[0], max_lag=0.2)
    assert adm.admit() == (True, 0)
    lag[0] = 0.15  # late, but under the limit
    assert adm.admit() == (True, 0) and not adm.overloaded
    lag[0] = 0.25
    assert adm.admit() == (False, 1) and adm.overloaded
    assert adm.decide().reason == "overload"
    lag[0] = 0.15  # under the limit but not yet under half of it: still refusing (no flapping at the edge)
    assert adm.admit() == (False, 1)
    lag[0] = 0.09
    assert adm.admit() == (True, 0) and not adm.overloaded
    assert adm.rejected["overload"] == 3 and adm.admitted == 3


def test_overload_is_off_with_max_lag_zero_and_draining_comes_first() -> None:
    adm = Admission(100, 100, lag=lambda: 10.0, max_lag=0.0)
    assert adm.admit() == (True, 0)
    adm = Admission(100, 100, lag=lambda: 10.0, max_lag=0.1)
    adm.start_draining(7)
    assert adm.decide().reason == "draining"
    with pytest.raises(ValueError):
        Admission(1, 1, max_lag=-1)
