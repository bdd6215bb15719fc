"""The metrics provider protocol: what the reconcile layer asks of a metrics backend.

Modelled on the idea of Flagger's metrics-provider interface (a backend that runs a query and
says whether it is reachable), with three differences that the analysis needs:

* one call reads a whole :class:`~modelrollout.metrics.queries.QuerySet`: every metric field of
  every live variant, one query per field, grouped by variant;
* nothing raises: a reading that could not be taken is an explicit
  :class:`~modelrollout.observations.Unknown` with the reason (Prometheus unreachable, a PromQL
  error, no data for a variant, NaN, a negative count), never zeros and never an exception into
  the policy;
* the spec's queries are checked apart from reading them: :meth:`MetricsProvider.check` tells a
  query that does not parse (a :class:`~modelrollout.observations.SpecError`, the spec must be
  fixed) from a backend that cannot be asked right now (an ``Unknown``, try again).

Providers are synchronous (their HTTP client is); each synchronous method has an ``a``-prefixed
coroutine twin that runs it off the event loop, for the kopf handlers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

from modelrollout.metrics.queries import QuerySet
from modelrollout.observations import MetricReading, ShadowCounts, SpecError, Unknown

#: Divergence counters by challenger.
ShadowReadings = dict[str, ShadowCounts | Unknown]


@runtime_checkable
class MetricsProvider(Protocol):
    """A metrics backend that reads a :class:`QuerySet` (see the module docstring)."""

    def observe(self, query_set: QuerySet, at: datetime) -> dict[str, MetricReading]:
        """Every metric of ``query_set`` (by metric name), evaluated at ``at``; never raises."""
        ...

    def observe_shadow(self, query_set: QuerySet, at: datetime) -> ShadowReadings:
        """The divergence counters of each challenger (empty without shadow queries); never raises."""
        ...

    def check(self, query_set: QuerySet) -> list[SpecError] | Unknown:
        """The spec errors of ``query_set`` (queries that do not parse, unusable presets).

        An empty list when all is well; :class:`Unknown` when the backend could not be asked and
        no error was found (check again later). Never raises.
        """
        ...

    def online(self) -> Unknown | None:
        """None when the backend answers a trivial query, else why not."""
        ...

    async def aobserve(self, query_set: QuerySet, at: datetime) -> dict[str, MetricReading]:
        """:meth:`observe`, off the event loop."""
        ...

    async def aobserve_shadow(self, query_set: QuerySet, at: datetime) -> ShadowReadings:
        """:meth:`observe_shadow`, off the event loop."""
        ...

    async def acheck(self, query_set: QuerySet) -> list[SpecError] | Unknown:
        """:meth:`check`, off the event loop."""
        ...

    def close(self) -> None:
        """Release the provider's connections and files."""
        ...
