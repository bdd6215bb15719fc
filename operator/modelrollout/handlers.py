"""kopf handlers: decorators only; each delegates to :mod:`modelrollout.reconcile` in one line.

* a timer drives the analysis tick. kopf's timer interval is fixed per decorator, while each
  experiment has its own ``spec.rollout.interval``; so the timer fires every
  ``MODELROLLOUT_TIMER_SECONDS`` (default 1 s) and the reconciler skips the ticks that are not
  due for that experiment;
* create, resume and update run a tick at once, so a new experiment, a restarted operator, a
  changed spec or a manual-control annotation is acted on without waiting for the timer;
* the delete handler is a finalizer: it restores the champion's routes before the object goes.

The handlers are synchronous: kopf runs them in its thread pool, off the event loop, which is
what the synchronous kubernetes client and routers need. A tick that meets a conflict raises
:class:`kopf.TemporaryError` rather than sleeping.
"""

from __future__ import annotations

import os
from typing import Any

import kopf

from modelrollout import reconcile
from modelrollout.kube import GROUP, PLURAL, VERSION

TIMER_SECONDS = float(os.environ.get("MODELROLLOUT_TIMER_SECONDS", "1"))


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    reconcile.configure_operator(settings)


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def changed(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    reconcile.tick(body, memo, logger, force=True)


@kopf.timer(GROUP, VERSION, PLURAL, interval=TIMER_SECONDS, sharp=False)
def timer(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    reconcile.tick(body, memo, logger, force=False)


@kopf.on.delete(GROUP, VERSION, PLURAL)
def deleted(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    reconcile.finalize(body, logger)
