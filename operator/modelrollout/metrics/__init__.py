"""Reading the experiment's metrics: the provider protocol, the query builder and Prometheus.

* :mod:`~modelrollout.metrics.queries` (pure): the spec's metrics, presets and shadow divergence
  as a :class:`QuerySet`, one PromQL query per metric field for all live variants;
* :mod:`~modelrollout.metrics.results` (pure): Prometheus answers to readings, or
  :class:`~modelrollout.observations.Unknown` with the reason;
* :mod:`~modelrollout.metrics.base`: the :class:`MetricsProvider` protocol;
* :mod:`~modelrollout.metrics.prometheus`: :class:`PrometheusProvider`;
* :mod:`~modelrollout.metrics.credentials`: the bearer token and CA bundle from Secrets and
  ConfigMaps.

A tick, from the reconcile layer::

    creds = read_credentials(core_v1, namespace, spec.metrics.prometheus)   # or a list of SpecError
    provider = PrometheusProvider.from_spec(spec.metrics.prometheus, creds)  # keep it across ticks
    query_set = build_query_set(spec, namespace, window_since(started_at, now), variants=live)
    errors = await provider.acheck(query_set)          # once per generation: [] | [SpecError] | Unknown
    metrics = await provider.aobserve(query_set, now)  # {metric name: {variant: MetricCounters} | Unknown}
    shadow = await provider.aobserve_shadow(query_set, now)  # {challenger: ShadowCounts | Unknown}
"""

from modelrollout.metrics.base import MetricsProvider, ShadowReadings
from modelrollout.metrics.credentials import Credentials, aread_credentials, read_credentials
from modelrollout.metrics.prometheus import PrometheusProvider
from modelrollout.metrics.queries import (
    ISTIO_DURATION_BUCKETS_MS,
    VARIANT_LABEL,
    FieldQuery,
    MetricQuery,
    QuerySet,
    ShadowQuery,
    build_query_set,
    evaluation_time,
    render_window,
    timestamp_ms,
    window_since,
)

__all__ = [
    "ISTIO_DURATION_BUCKETS_MS",
    "VARIANT_LABEL",
    "Credentials",
    "FieldQuery",
    "MetricQuery",
    "MetricsProvider",
    "PrometheusProvider",
    "QuerySet",
    "ShadowQuery",
    "ShadowReadings",
    "aread_credentials",
    "build_query_set",
    "evaluation_time",
    "read_credentials",
    "render_window",
    "timestamp_ms",
    "window_since",
]
