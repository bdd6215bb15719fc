"""kopf handlers: decorators only; each delegates to :mod:`~modelrollout.controller.tick` in one line.

* the analysis ticks come from one :class:`~modelrollout.controller.schedule.TickScheduler` for
  the process, not from a kopf timer per experiment (a timer's period is fixed per decorator, so
  it had to fire every second for every experiment and skip the calls that were not due: at 1,000
  experiments most of the operator's CPU, and ticks late by half a minute). An event handler, which
  kopf calls for every watch event, hands the scheduler each experiment's newest body, its memo,
  its logger and the contextvars that kopf's Event posting needs, and tells it when the object is
  gone. A new experiment (or every experiment, after a restart) is due at once, so there is no
  create or resume handler: it would only tick a second time, on an older copy that the first
  tick's status write had made stale (a 409, retried);
* an update (a changed spec, a manual-control annotation) runs a tick at once, not waiting for
  the experiment's interval;
* the delete handler is a finalizer: it restores the champion's routes before the object goes,
  then drops the experiment's series from the operator's metrics;
* the startup handler builds the :class:`~modelrollout.controller.runtime.Runtime` from the
  configuration in kopf's memo (and, with leader election, the guard every write asks) and keeps
  it there.

The handlers are registered by :func:`register` on the registry ``modelrollout run`` gives kopf,
so nothing is read at import. Those that tick are synchronous: kopf runs them in its thread pool,
off the event loop, which is what the synchronous kubernetes client and routers need (the event
handler only hands over, and is a coroutine). A tick that meets a
conflict raises :class:`kopf.TemporaryError` rather than sleeping.
"""

from __future__ import annotations

import contextvars
import logging
from dataclasses import dataclass
from typing import Any

import kopf

from modelrollout.api.experiment import GROUP, PLURAL, VERSION
from modelrollout.controller import tick
from modelrollout.controller.config import OperatorConfig
from modelrollout.controller.runtime import (
    MEMO_CAN_WRITE,
    MEMO_CONFIG,
    MEMO_METRICS,
    MEMO_RUNTIME,
    Runtime,
    runtime_of,
)
from modelrollout.controller.schedule import Scheduled, TickScheduler
from modelrollout.controller.state import object_memo
from modelrollout.controller.telemetry import OperatorMetrics


def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's own login through the kubernetes client (in-cluster, else the kubeconfig): a registry
    of our own does not get the ones kopf puts on its default registry."""
    return kopf.login_via_client(**kwargs)


def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = memo.get(MEMO_CONFIG)
    telemetry = memo.get(MEMO_METRICS)
    can_write = memo.get(MEMO_CAN_WRITE)
    runtime = Runtime.start(
        config if isinstance(config, OperatorConfig) else OperatorConfig(),
        telemetry if isinstance(telemetry, OperatorMetrics) else None,
        can_write if callable(can_write) else None,
    )
    runtime.configure(settings)
    runtime.scheduler = TickScheduler(
        run=lambda entry: _scheduled(runtime, entry), workers=runtime.config.max_workers
    )
    runtime.scheduler.start()
    memo[MEMO_RUNTIME] = runtime


def cleanup(memo: kopf.Memo, **_: Any) -> None:
    runtime = memo.get(MEMO_RUNTIME)
    if isinstance(runtime, Runtime):
        if runtime.scheduler is not None:
            runtime.scheduler.stop()
        runtime.providers.close()


@dataclass(frozen=True)
class _Watched:
    """What the scheduler keeps of an experiment for its next tick: kopf's newest view of it."""

    body: kopf.Body
    memo: kopf.Memo
    logger: Any
    #: kopf's per-object contextvars (its Event queue and settings), which the tick's thread needs.
    context: contextvars.Context


def _scheduled(runtime: Runtime, entry: Scheduled) -> float:
    watched: _Watched = entry.payload
    # A copy per tick: one Context cannot be entered by two threads at once.
    context = watched.context.copy()
    return context.run(tick.scheduled_tick, runtime, watched.body, watched.memo, watched.logger)


def _lane(body: kopf.Body) -> str:
    """The scheduler's lane of the experiment: its Prometheus address (see the scheduler's bulkheads)."""
    metrics = (body.get("spec") or {}).get("metrics") or {}
    return str((metrics.get("prometheus") or {}).get("address") or "")


async def watched(type: str | None, body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    """Every watch event of an experiment: the scheduler learns its newest state, or that it is gone."""
    scheduler = runtime_of(memo).scheduler
    if scheduler is None:
        return
    metadata = body.get("metadata") or {}
    key = (metadata.get("namespace"), metadata.get("name"))
    if type == "DELETED":
        scheduler.forget(key)
        return
    scheduler.offer(key, _Watched(body, memo, logger, contextvars.copy_context()), _lane(body))


def changed(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    tick.tick(runtime_of(memo), body, memo, logger, force=True)


def deleted(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    runtime = runtime_of(memo)
    tick.finalize(runtime, body, logger)
    with object_memo(memo).lock:  # after a tick in flight, which would record the figures again
        tick.forget(runtime, body)


class _QuietWatch(logging.Filter):
    """Drops kopf's "Handler 'watched' succeeded." line, which it would log at every watch event
    (each status write comes back as one): noise, and a few per cent of the CPU at scale."""

    message = "Handler 'watched' succeeded."

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != self.message


_QUIET_WATCH = _QuietWatch()


def register(registry: kopf.OperatorRegistry, config: OperatorConfig) -> None:
    """Register the handlers on ``registry`` (``config`` is kept for the signature's stability)."""
    resource = (GROUP, VERSION, PLURAL)
    kopf.on.login(registry=registry)(login)
    kopf.on.startup(registry=registry)(startup)
    kopf.on.cleanup(registry=registry)(cleanup)
    kopf.on.update(*resource, registry=registry)(changed)
    kopf.on.event(*resource, registry=registry)(watched)
    logging.getLogger("kopf.objects").addFilter(_QUIET_WATCH)  # a set: once, however often registered
    kopf.on.delete(*resource, registry=registry)(deleted)
