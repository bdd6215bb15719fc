"""The tick scheduler: one heap of due times for the process, a bounded pool, a limit per lane.

Real threads and the real clock (the waits are short); each assertion has a generous deadline so
that a busy machine slows the test down rather than failing it.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from modelrollout.controller.schedule import Scheduled, TickScheduler

pytestmark = pytest.mark.unit


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


@pytest.fixture
def started() -> Iterator[Callable[[TickScheduler], TickScheduler]]:
    schedulers: list[TickScheduler] = []

    def start(scheduler: TickScheduler) -> TickScheduler:
        scheduler.start()
        schedulers.append(scheduler)
        return scheduler

    yield start
    for scheduler in schedulers:
        scheduler.stop(wait=False)


def test_a_new_experiment_ticks_at_once_and_then_after_the_delay_its_tick_returns(started) -> None:  # type: ignore[no-untyped-def]
    ticks: list[tuple[str, float]] = []

    def run(entry: Scheduled) -> float:
        ticks.append((entry.payload, time.monotonic()))
        return 0.3

    scheduler = started(TickScheduler(run=run, workers=2))
    t0 = time.monotonic()
    scheduler.offer("a", "body-1", lane="p")
    wait_for(lambda: len(ticks) >= 1)
    assert ticks[0][1] - t0 < 2.0
    scheduler.offer("a", "body-2", lane="p")  # a newer body of a known experiment keeps its time
    wait_for(lambda: len(ticks) >= 3)
    assert [payload for payload, _ in ticks[:3]] == ["body-1", "body-2", "body-2"]
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(ticks)]
    assert all(gap >= 0.29 for gap in gaps)  # never early
    assert len(scheduler) == 1


def test_a_forgotten_experiment_ticks_no_more(started) -> None:  # type: ignore[no-untyped-def]
    ticks: Counter[str] = Counter()

    def run(entry: Scheduled) -> float:
        ticks[entry.key] += 1  # type: ignore[index]
        return 0.05

    scheduler = started(TickScheduler(run=run, workers=2))
    scheduler.offer("a", None, lane="p")
    scheduler.offer("b", None, lane="p")
    wait_for(lambda: ticks["a"] >= 2 and ticks["b"] >= 2)
    scheduler.forget("a")
    time.sleep(0.1)  # a tick in flight may finish
    before = ticks["a"]
    wait_for(lambda: ticks["b"] >= ticks["a"] + 4)
    assert ticks["a"] == before
    assert scheduler.due_in("a") is None


def test_one_experiment_never_ticks_twice_at_once_and_the_pool_bounds_the_rest(started) -> None:  # type: ignore[no-untyped-def]
    lock = threading.Lock()
    running: Counter[object] = Counter()
    peak = {"all": 0, "one": 0}

    def run(entry: Scheduled) -> float:
        with lock:
            running[entry.key] += 1
            peak["all"] = max(peak["all"], sum(running.values()))
            peak["one"] = max(peak["one"], running[entry.key])
        time.sleep(0.02)
        with lock:
            running[entry.key] -= 1
        return 0.0  # due again at once: the scheduler must still wait for the tick to end

    scheduler = started(TickScheduler(run=run, workers=3))
    for i in range(10):
        scheduler.offer(i, None, lane="p")
    time.sleep(0.5)
    assert peak["one"] == 1
    assert 1 <= peak["all"] <= 3


def test_a_slow_prometheus_never_takes_the_workers_of_the_others(started) -> None:  # type: ignore[no-untyped-def]
    """The bulkhead: 20 experiments whose ticks hang on one Prometheus hold at most lane_limit
    workers; the experiments on another Prometheus keep ticking on the rest."""
    release = threading.Event()
    lock = threading.Lock()
    slow_now = {"running": 0, "peak": 0}
    fast_ticks: Counter[object] = Counter()

    def run(entry: Scheduled) -> float:
        if entry.lane == "slow":
            with lock:
                slow_now["running"] += 1
                slow_now["peak"] = max(slow_now["peak"], slow_now["running"])
            release.wait(timeout=30)
            with lock:
                slow_now["running"] -= 1
            return 60.0
        fast_ticks[entry.key] += 1
        return 0.05

    scheduler = started(TickScheduler(run=run, workers=4))
    assert scheduler.lane_limit == 3
    for i in range(20):
        scheduler.offer(("slow", i), None, lane="slow")
    wait_for(lambda: slow_now["running"] == 3)
    for i in range(5):
        scheduler.offer(("fast", i), None, lane="fast")
    wait_for(lambda: len(fast_ticks) == 5 and min(fast_ticks.values()) >= 5)
    assert slow_now["peak"] == 3  # the slow lane's other 17 ticks wait in their own queue
    release.set()
    wait_for(lambda: slow_now["peak"] == 3 and slow_now["running"] == 0)


def test_the_queued_ticks_of_a_lane_run_in_due_order_when_it_frees(started) -> None:  # type: ignore[no-untyped-def]
    gate = threading.Event()
    order: list[object] = []

    def run(entry: Scheduled) -> float:
        if entry.key == "first":
            gate.wait(timeout=30)
        else:
            order.append(entry.key)
        return 60.0

    scheduler = started(TickScheduler(run=run, workers=4, lane_limit=1))
    scheduler.offer("first", None, lane="p")
    wait_for(lambda: scheduler.due_in("first") is None)
    for key in ("b", "c", "d"):
        scheduler.offer(key, None, lane="p")
        time.sleep(0.01)
    time.sleep(0.2)
    assert order == []  # the lane is full
    gate.set()
    wait_for(lambda: len(order) == 3)
    assert order == ["b", "c", "d"]


def test_a_tick_that_raises_is_retried_and_the_scheduler_lives_on(started) -> None:  # type: ignore[no-untyped-def]
    calls: Counter[str] = Counter()

    def run(entry: Scheduled) -> float:
        calls[entry.key] += 1  # type: ignore[index]
        if entry.key == "bad":
            raise RuntimeError("boom")
        return 0.05

    scheduler = started(TickScheduler(run=run, workers=2))
    scheduler.offer("bad", None, lane="p")
    scheduler.offer("good", None, lane="p")
    wait_for(lambda: calls["good"] >= 5)
    assert calls["bad"] >= 1


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="workers"):
        TickScheduler(run=lambda _e: 1.0, workers=0)
