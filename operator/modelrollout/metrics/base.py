"""The metrics provider protocol: what the reconcile layer asks of a metrics backend.

Modelled on the idea of Flagger's metrics-provider interface (a backend that runs a query and
says whether it is reachable), with three differences that the analysis needs:

* one call counts a whole :class:`~modelrollout.metrics.counters.CounterSet`: every field of every
  metric of every live variant, **exactly**, as the increments of counter series since each
  metric's checkpoint (:mod:`modelrollout.metrics.counting`);
* nothing raises: a reading that could not be taken is an explicit
  :class:`~modelrollout.api.observations.Unknown` with the reason (Prometheus unreachable, a PromQL
  error, no data for a variant), never zeros and never an exception into the policy;
* the spec's selectors are checked apart from reading them: :meth:`MetricsProvider.check` tells a
  selector that does not parse (a :class:`~modelrollout.api.observations.SpecProblem`, the spec must be
  fixed) from a backend that cannot be asked right now (an ``Unknown``, try again).

Providers are synchronous (their HTTP client is): kopf runs the tick's synchronous handlers in its
thread pool, off the event loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol, runtime_checkable

from modelrollout.api.observations import MetricReading, SpecProblem, Unknown
from modelrollout.metrics.counters import CounterSet
from modelrollout.metrics.counting import AnchorMemo


@runtime_checkable
class MetricsProvider(Protocol):
    """A metrics backend that counts a :class:`CounterSet` (see the module docstring)."""

    def observe(
        self,
        counter_set: CounterSet,
        at: datetime,
        *,
        checkpoints: Mapping[str, datetime | None],
        counted_since: datetime,
        memo: AnchorMemo,
    ) -> dict[str, MetricReading]:
        """Every metric of ``counter_set`` (by name), counted up to ``at``; never raises."""
        ...

    def check(self, counter_set: CounterSet) -> list[SpecProblem] | Unknown:
        """The spec errors of ``counter_set`` (selectors that do not parse, unusable presets).

        An empty list when all is well; :class:`Unknown` when the backend could not be asked and
        no error was found (check again later). Never raises.
        """
        ...

    def online(self) -> Unknown | None:
        """None when the backend answers a trivial query, else why not."""
        ...

    def close(self) -> None:
        """Release the provider's connections and files."""
        ...
