"""The operator's configuration: one object, built from the flags and the environment at startup.

Nothing is read at import and nothing global is mutated: ``modelrollout run`` builds an
:class:`OperatorConfig` and hands it to :func:`modelrollout.controller.handlers.register` and to
kopf's memo, where :mod:`~modelrollout.controller.runtime` finds it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from modelrollout.errors import InvalidInputError

#: The environment variable of the timer's period (seconds).
TIMER_ENV = "MODELROLLOUT_TIMER_SECONDS"
#: The default port of ``/metrics`` (``run --metrics-port``; 0 serves none).
DEFAULT_METRICS_PORT = 8081


@dataclass(frozen=True)
class OperatorConfig:
    """How the operator process runs.

    Attributes
    ----------
    timer_seconds
        How soon a tick that could not run is tried again (``MODELROLLOUT_TIMER_SECONDS``): one
        in flight for the same experiment, a watch copy older than this process's last status
        write, a temporary failure without a delay of its own. Due ticks are not polled: the
        scheduler wakes when the next one is due.
    cluster_scan
        Whether kopf lists and watches CRDs and namespaces; off for a Role without those
        cluster-scope rights (``--no-cluster-scan``; the namespaces must then be named).
    max_workers
        The scheduler's tick threads (``run --workers``), and kopf's for its synchronous handlers
        (updates, deletes). One Prometheus address may hold three quarters of the tick threads
        (:mod:`~modelrollout.controller.schedule`).
    max_providers
        Distinct Prometheus configurations (address, timeout, credentials) whose providers are
        kept open; the least recently used is closed past it.
    metrics_port, metrics_address
        Where the operator serves its own metrics (``/metrics``); port 0 serves none.
    schedule_slack_seconds
        A tick that starts later than the experiment's interval, the timer's period and this
        slack after its previous tick counts as behind schedule.
    """

    timer_seconds: float = 1.0
    cluster_scan: bool = True
    max_workers: int = 32
    max_providers: int = 64
    metrics_port: int = DEFAULT_METRICS_PORT
    metrics_address: str = "0.0.0.0"
    schedule_slack_seconds: float = 1.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.timer_seconds) or self.timer_seconds <= 0:
            raise InvalidInputError(
                f"{TIMER_ENV} must be a positive number of seconds, not {self.timer_seconds!r}"
            )
        for name in ("max_workers", "max_providers"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be at least 1, not {getattr(self, name)!r}")
        if not 0 <= self.metrics_port <= 65535:
            raise InvalidInputError(f"--metrics-port must be a port (0 to 65535), not {self.metrics_port!r}")
        if not math.isfinite(self.schedule_slack_seconds) or self.schedule_slack_seconds < 0:
            raise InvalidInputError(
                f"schedule_slack_seconds must be a non-negative number, not {self.schedule_slack_seconds!r}"
            )

    @classmethod
    def from_environment(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        cluster_scan: bool = True,
        metrics_port: int = DEFAULT_METRICS_PORT,
        metrics_address: str = "0.0.0.0",
        max_workers: int = 32,
    ) -> OperatorConfig:
        """The configuration from ``environ`` (default: the process's) and the flags given."""
        env = os.environ if environ is None else environ
        raw = env.get(TIMER_ENV, "1")
        try:
            timer = float(raw)
        except ValueError:
            raise InvalidInputError(f"{TIMER_ENV} must be a number of seconds, not {raw!r}") from None
        return cls(
            timer_seconds=timer,
            cluster_scan=cluster_scan,
            metrics_port=metrics_port,
            metrics_address=metrics_address,
            max_workers=max_workers,
        )
