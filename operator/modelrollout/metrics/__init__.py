"""Reading the experiment's metrics: exact counts of counter series, from Prometheus.

* :mod:`~modelrollout.metrics.counters` (pure): the spec's metrics, presets and shadow divergence
  as a :class:`CounterSet`, the counter selectors of every field for all live variants;
* :mod:`~modelrollout.metrics.counting` (pure but for the fetch callables it is given): raw samples
  to exact, reset-corrected increments per series, with their anchors;
* :mod:`~modelrollout.metrics.base`: the :class:`MetricsProvider` protocol;
* :mod:`~modelrollout.metrics.prometheus`: :class:`PrometheusProvider`;
* :mod:`~modelrollout.metrics.credentials`: the bearer token and CA bundle from Secrets and
  ConfigMaps.

A tick, from the reconcile layer::

    creds = read_credentials(core_v1, namespace, spec.metrics.prometheus)   # or a list of SpecProblem
    provider = PrometheusProvider.from_spec(spec.metrics.prometheus, creds)  # keep it across ticks
    counter_set = build_counter_set(spec, namespace, variants=live)
    errors = provider.check(counter_set)        # once per generation: [] | [SpecProblem] | Unknown
    memo = AnchorMemo()                          # per experiment, kept across ticks
    readings = provider.observe(counter_set, now, checkpoints=status.checkpoints,
                                counted_since=status.counted_since, memo=memo)
    # {metric name: CounterReading (increments per variant and field) | Unknown}
"""

from modelrollout.api.observations import DIVERGENCE
from modelrollout.metrics.base import MetricsProvider
from modelrollout.metrics.counters import (
    ISTIO_DURATION_BUCKETS_MS,
    CounterField,
    CounterMetric,
    CounterQuery,
    CounterSet,
    build_counter_set,
)
from modelrollout.metrics.counting import AnchorMemo, count_set
from modelrollout.metrics.credentials import Credentials, read_credentials
from modelrollout.metrics.prometheus import PrometheusProvider

__all__ = [
    "DIVERGENCE",
    "ISTIO_DURATION_BUCKETS_MS",
    "AnchorMemo",
    "CounterField",
    "CounterMetric",
    "CounterQuery",
    "CounterSet",
    "Credentials",
    "MetricsProvider",
    "PrometheusProvider",
    "build_counter_set",
    "count_set",
    "read_credentials",
]
