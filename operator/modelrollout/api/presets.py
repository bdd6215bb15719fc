"""Names of the built-in metric presets and what each one measures.

A preset stands for a set of PromQL queries over standard metrics, so a user need not write them.
This module only names the presets and states their contract (type, direction, parameters); the
PromQL lives with the metrics provider (``modelrollout.metrics``), which must implement every
name listed here. The names form an enum in the CRD, so an unknown one is rejected at apply time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final


class MetricType(StrEnum):
    """How a metric is aggregated per variant, which decides its queries and its test.

    ``proportion``: events out of trials (``successes``, ``trials``); ``mean``: a per-request value
    (``count``, ``sum``, ``sumOfSquares``); ``ratio``: a ratio of two per-unit sums, compared by the
    delta method (``units``, ``numerator``, ``denominator``, ``numeratorSquares``,
    ``denominatorSquares``, ``crossProducts``); ``quantile``: a quantile (p95, p99) of a
    Prometheus histogram (``buckets``, the cumulative ``_bucket`` series by ``le``), for guardrails
    only.
    """

    PROPORTION = "proportion"
    MEAN = "mean"
    RATIO = "ratio"
    QUANTILE = "quantile"


class Preset(StrEnum):
    """A built-in metric (proportions of requests, or a latency quantile, from standard mesh metrics)."""

    ISTIO_ERROR_RATE = "istio-error-rate"
    ISTIO_REQUEST_SUCCESS_RATE = "istio-request-success-rate"
    ISTIO_LATENCY_OVER = "istio-latency-over"
    GATEWAY_ERROR_RATE = "gateway-error-rate"
    ISTIO_LATENCY_QUANTILE = "istio-latency-quantile"


class DivergencePreset(StrEnum):
    """A built-in divergence metric for the shadow phase."""

    SDK_SHADOW_DIVERGENCE = "sdk-shadow-divergence"


@dataclass(frozen=True)
class PresetInfo:
    """The contract of a preset.

    Attributes
    ----------
    type : MetricType
        The metric type the preset's queries produce.
    higher_is_worse : bool
        Whether a higher value is worse (error rates) or better (success rates).
    needs_threshold_ms : bool
        Whether the preset needs ``thresholdMs`` (latency presets).
    description : str
        What the queries count.
    """

    type: MetricType
    higher_is_worse: bool
    needs_threshold_ms: bool
    description: str


#: Every metric preset and its contract.
PRESETS: Final[Mapping[Preset, PresetInfo]] = MappingProxyType(
    {
        Preset.ISTIO_ERROR_RATE: PresetInfo(
            MetricType.PROPORTION,
            True,
            False,
            "share of requests to the variant's Service answered with a 5xx code "
            "(istio_requests_total by response_code)",
        ),
        Preset.ISTIO_REQUEST_SUCCESS_RATE: PresetInfo(
            MetricType.PROPORTION,
            False,
            False,
            "share of requests to the variant's Service not answered with a 5xx code "
            "(istio_requests_total by response_code)",
        ),
        Preset.ISTIO_LATENCY_OVER: PresetInfo(
            MetricType.PROPORTION,
            True,
            True,
            "share of requests slower than thresholdMs milliseconds "
            "(istio_request_duration_milliseconds_bucket; thresholdMs must be a bucket boundary)",
        ),
        Preset.GATEWAY_ERROR_RATE: PresetInfo(
            MetricType.PROPORTION,
            True,
            False,
            "share of requests to the variant's backend answered with a 5xx code, as counted by the "
            "Gateway's Envoy (envoy_cluster_upstream_rq by response code class)",
        ),
        Preset.ISTIO_LATENCY_QUANTILE: PresetInfo(
            MetricType.QUANTILE,
            True,
            False,
            "a quantile (the guardrail's quantile: 0.95 for p95) of the time to answer the variant's "
            "requests, in milliseconds (istio_request_duration_milliseconds_bucket by le)",
        ),
    }
)

#: What each divergence preset counts.
DIVERGENCE_PRESETS: Final[Mapping[DivergencePreset, str]] = MappingProxyType(
    {
        DivergencePreset.SDK_SHADOW_DIVERGENCE: (
            "the shadow comparison counters of the modelrollout SDK: mirrored requests whose "
            "prediction differed from the champion's, out of those compared"
        ),
    }
)


def effective_type(metric_type: MetricType | None, preset: Preset | None) -> MetricType | None:
    """A metric's type: the one given, else the preset's, else None."""
    if metric_type is not None:
        return metric_type
    return PRESETS[preset].type if preset is not None else None
