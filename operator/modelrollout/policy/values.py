"""Counters turned into the inputs of :mod:`modelrollout.stats` (no statistics of their own)."""

from __future__ import annotations

import math

from modelrollout.api.presets import MetricType
from modelrollout.api.status import MetricCounters
from modelrollout.errors import InvalidInputError
from modelrollout.stats import means, ratio


def _f(counters: MetricCounters, name: str) -> float:
    v = getattr(counters, name)
    return float(v) if v is not None else 0.0


def value(counters: MetricCounters | None, mtype: MetricType) -> float | None:
    """The metric's value: successes / trials, sum / count, or numerator / denominator."""
    if counters is None:
        return None
    if mtype is MetricType.PROPORTION:
        num, den = _f(counters, "successes"), _f(counters, "trials")
    elif mtype is MetricType.MEAN:
        num, den = _f(counters, "sum"), _f(counters, "count")
    else:
        num, den = _f(counters, "numerator"), _f(counters, "denominator")
    if den <= 0:
        return None
    out = num / den
    return out if math.isfinite(out) else None


def summary(counters: MetricCounters) -> means.SummaryStats:
    """(n, mean, sd) of a mean metric; raises InvalidInputError below 2 observations."""
    return means.summary_from_sums(_f(counters, "count"), _f(counters, "sum"), _f(counters, "sum_of_squares"))


def ratio_sums(counters: MetricCounters) -> ratio.RatioSums:
    """The six aggregates of a ratio metric."""
    return ratio.RatioSums(
        n=_f(counters, "units"),
        sum_num=_f(counters, "numerator"),
        sum_den=_f(counters, "denominator"),
        sum_num_sq=_f(counters, "numerator_squares"),
        sum_den_sq=_f(counters, "denominator_squares"),
        sum_num_den=_f(counters, "cross_products"),
    )


def as_mean(counters: MetricCounters, mtype: MetricType) -> tuple[float, float, float]:
    """``(n, value, sd)`` such that ``sd**2 / n`` is the variance of the value's estimate.

    For a mean: the sample's n, mean and sd. For a ratio: the units, the ratio, and the per-unit
    standard deviation of the linearized values, ``sqrt(n * Var(R))`` with the delta-method
    variance of :func:`modelrollout.stats.ratio.ratio_estimate` (Deng, Knoblich, Lu 2018), so a
    ratio can be handed to the tests of means with exactly its estimate and variance.
    """
    if mtype is MetricType.MEAN:
        s = summary(counters)
        return s.n, s.mean, s.sd
    if mtype is MetricType.RATIO:
        est = ratio.ratio_estimate(ratio_sums(counters))
        return est.n, est.ratio, math.sqrt(est.variance * est.n)
    raise InvalidInputError(f"as_mean needs a mean or ratio metric, got {mtype}")
