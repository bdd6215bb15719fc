"""kopf handlers: decorators only; each delegates to :mod:`~modelrollout.controller.tick` in one line.

* a timer drives the analysis tick. kopf's timer interval is fixed per decorator, while each
  experiment has its own ``spec.rollout.interval``; so the timer fires every
  ``OperatorConfig.timer_seconds`` (``MODELROLLOUT_TIMER_SECONDS``, default 1 s) and the tick skips
  the calls that are not due for that experiment;
* create, resume and update run a tick at once, so a new experiment, a restarted operator, a
  changed spec or a manual-control annotation is acted on without waiting for the timer;
* the delete handler is a finalizer: it restores the champion's routes before the object goes,
  then drops the experiment's series from the operator's metrics;
* the startup handler builds the :class:`~modelrollout.controller.runtime.Runtime` from the
  configuration in kopf's memo (and, with leader election, the guard every write asks) and keeps
  it there.

The handlers are registered by :func:`register` on the registry ``modelrollout run`` gives kopf,
so nothing is read at import. They are synchronous: kopf runs them in its thread pool, off the
event loop, which is what the synchronous kubernetes client and routers need. A tick that meets a
conflict raises :class:`kopf.TemporaryError` rather than sleeping.
"""

from __future__ import annotations

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
    memo[MEMO_RUNTIME] = runtime


def cleanup(memo: kopf.Memo, **_: Any) -> None:
    runtime = memo.get(MEMO_RUNTIME)
    if isinstance(runtime, Runtime):
        runtime.providers.close()


def changed(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    tick.tick(runtime_of(memo), body, memo, logger, force=True)


def timer(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    tick.tick(runtime_of(memo), body, memo, logger, force=False)


def deleted(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    runtime = runtime_of(memo)
    tick.finalize(runtime, body, logger)
    with object_memo(memo).lock:  # after a tick in flight, which would record the figures again
        tick.forget(runtime, body)


def register(registry: kopf.OperatorRegistry, config: OperatorConfig) -> None:
    """Register the handlers on ``registry`` with the timer period of ``config``."""
    resource = (GROUP, VERSION, PLURAL)
    kopf.on.login(registry=registry)(login)
    kopf.on.startup(registry=registry)(startup)
    kopf.on.cleanup(registry=registry)(cleanup)
    kopf.on.create(*resource, registry=registry)(changed)
    kopf.on.resume(*resource, registry=registry)(changed)
    kopf.on.update(*resource, registry=registry)(changed)
    kopf.timer(*resource, interval=config.timer_seconds, sharp=False, registry=registry)(timer)
    kopf.on.delete(*resource, registry=registry)(deleted)
