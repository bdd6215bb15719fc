"""When each experiment ticks: one scheduler for the process instead of one kopf timer per object.

kopf's timers have one period per decorator, while each experiment has its own
``spec.rollout.interval``; so the operator used to fire a timer for every experiment every second
and skip the calls that were not due. At 1,000 experiments that was 1,000 handler calls a second,
each a hop into kopf's thread pool: most of the operator's CPU, and ticks up to half a minute late
because the real ones queued behind the idle ones (``bench/operator_scale.py``).

:class:`TickScheduler` keeps one due time per experiment in a heap and wakes only when the earliest
is due. kopf's watch feeds it (``offer``: the newest body, memo, logger and context of each object;
``forget`` when the object is gone), and its dispatcher thread hands due ticks to a bounded pool of
worker threads. After a tick, the tick function says how long until the experiment is due again
(its interval from the tick's start, or a short retry after a skipped or failed tick).

**Bulkheads.** Ticks are grouped in *lanes*, one per Prometheus address. A lane may hold at most
``lane_limit`` of the workers (by default three quarters), so a Prometheus that answers slowly (each
of its ticks waits up to the query timeout) never takes the workers that the experiments reading
another Prometheus need for their guardrail checks; a lane at its limit keeps its due ticks in a
queue of its own, in due order, without blocking the others. The limit holds also while one lane is
all there is: the first experiments of another lane then find their workers free.

The scheduler runs a tick of one experiment at a time; the synchronous kubernetes client and routers
are why the ticks are threads and not coroutines. Everything here is plain threading, tested
without kopf (``tests/unit/test_controller_schedule.py``).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

_log = logging.getLogger(__name__)


@dataclass
class Scheduled:
    """One experiment as the scheduler knows it: what its next tick needs, and where it stands."""

    key: Hashable
    #: The newest object kopf's watch has seen, and the memo, logger and contextvars that go with it.
    payload: Any
    lane: str
    due: float = 0.0
    running: bool = False
    #: Bumped at every (re)scheduling: a heap item of an older sequence number is ignored.
    seq: int = 0
    gone: bool = False


#: The tick function: runs one tick of the experiment and returns the seconds until it is due again.
TickFunction = Callable[[Scheduled], float]


@dataclass
class TickScheduler:
    """A heap of due times, a dispatcher thread, a worker pool, and a limit per lane (see module)."""

    run: TickFunction
    workers: int = 32
    #: The most workers one lane may hold; ``None``: three quarters of ``workers`` (at least 1).
    lane_limit: int | None = None
    clock: Callable[[], float] = time.monotonic
    _entries: dict[Hashable, Scheduled] = field(default_factory=dict)
    _heap: list[tuple[float, int, Hashable]] = field(default_factory=list)
    _blocked: dict[str, deque[Scheduled]] = field(default_factory=dict)
    _in_lane: dict[str, int] = field(default_factory=dict)
    _in_flight: int = 0
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _stopped: bool = False
    _thread: threading.Thread | None = None
    #: The due ticks handed to the workers (a plain queue: a Future per tick was a few per cent of
    #: the operator's CPU at 1,000 experiments); ``None`` tells a worker to stop.
    _work: queue.SimpleQueue[tuple[Scheduled, str] | None] = field(default_factory=queue.SimpleQueue)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, not {self.workers}")
        if self.lane_limit is None:
            self.lane_limit = max(1, self.workers - self.workers // 4)

    # --- fed by kopf ---------------------------------------------------------------------------
    def offer(self, key: Hashable, payload: Any, lane: str) -> None:
        """The newest state of ``key``: a new experiment is due at once; a known one keeps its time."""
        with self._cond:
            entry = self._entries.get(key)
            if entry is not None:
                entry.payload = payload
                if not entry.running:
                    entry.lane = lane
                return
            entry = Scheduled(key=key, payload=payload, lane=lane)
            self._entries[key] = entry
            self._push(entry, self.clock())

    def forget(self, key: Hashable) -> None:
        """``key`` is gone: no more ticks (one in flight finishes)."""
        with self._cond:
            entry = self._entries.pop(key, None)
            if entry is not None:
                entry.gone = True

    def __len__(self) -> int:
        with self._cond:
            return len(self._entries)

    def due_in(self, key: Hashable) -> float | None:
        """Seconds until ``key`` is due (negative: overdue), ``None`` when unknown or running."""
        with self._cond:
            entry = self._entries.get(key)
            if entry is None or entry.running:
                return None
            return entry.due - self.clock()

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        for i in range(self.workers):
            worker = threading.Thread(target=self._work_forever, name=f"tick_{i}", daemon=True)
            worker.start()
            self._workers.append(worker)
        self._thread = threading.Thread(target=self._dispatch_forever, name="tick-scheduler", daemon=True)
        self._thread.start()

    def stop(self, wait: bool = True) -> None:
        """Stop dispatching; with ``wait``, let the ticks in flight finish."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for _ in self._workers:
            self._work.put(None)
        if wait:
            for worker in self._workers:
                worker.join()

    def _work_forever(self) -> None:
        while (item := self._work.get()) is not None:
            self._run_one(*item)

    # --- internals (all under self._cond) ------------------------------------------------------
    def _lane_full(self, lane: str) -> bool:
        return self._in_lane.get(lane, 0) >= (self.lane_limit or 1)

    def _push(self, entry: Scheduled, due: float) -> None:
        entry.due = due
        entry.seq = next(self._seq)
        heapq.heappush(self._heap, (due, entry.seq, entry.key))
        self._cond.notify()

    def _dispatch_forever(self) -> None:
        with self._cond:
            while not self._stopped:
                self._dispatch_due()
                self._cond.wait(timeout=self._wait_seconds())

    def _wait_seconds(self) -> float | None:
        """Until the earliest due tick, or until a worker is free if every worker is busy."""
        if self._in_flight >= self.workers or not self._heap:
            return None
        return max(0.0, self._heap[0][0] - self.clock())

    def _dispatch_due(self) -> None:
        now = self.clock()
        while self._in_flight < self.workers and self._heap and self._heap[0][0] <= now:
            _, seq, key = heapq.heappop(self._heap)
            entry = self._entries.get(key)
            if entry is None or entry.seq != seq or entry.running:
                continue
            if self._lane_full(entry.lane):
                self._blocked.setdefault(entry.lane, deque()).append(entry)
                continue
            self._submit(entry)

    def _submit(self, entry: Scheduled) -> None:
        entry.running = True
        self._in_flight += 1
        self._in_lane[entry.lane] = self._in_lane.get(entry.lane, 0) + 1
        self._work.put((entry, entry.lane))

    def _run_one(self, entry: Scheduled, lane: str) -> None:
        delay = 1.0
        try:
            delay = self.run(entry)
        except Exception:  # the tick function handles its own; this keeps the scheduler alive
            _log.exception("tick of %s failed", entry.key)
        with self._cond:
            self._in_flight -= 1
            self._in_lane[lane] -= 1
            entry.running = False
            if not entry.gone:
                self._push(entry, self.clock() + max(0.0, delay))
            self._release_blocked(lane)
            self._cond.notify()

    def _release_blocked(self, lane: str) -> None:
        """Give a freed lane slot to the earliest of its queued due ticks (if a worker is free)."""
        queue = self._blocked.get(lane)
        while queue and self._in_flight < self.workers and not self._lane_full(lane):
            entry = queue.popleft()
            if entry.gone or entry.running or self._entries.get(entry.key) is not entry:
                continue
            self._submit(entry)
        if queue is not None and not queue:
            del self._blocked[lane]
