"""Readings of the tick, checked; per-step (stratum) counts from cumulative readings and baselines.

Observations are cumulative since the experiment started. Each stratum (a step, or a part of a
step after a challenger was dropped) keeps the cumulative values at its start as ``baseline``; its
own counts are ``reading - baseline``, kept up to date in ``totals`` while it runs and frozen
when it ends.

* A stratum **settles** before it counts: for :func:`settle_duration` after its weights were set
  its counts are left out, and its baseline is the first reading after that. A change of weights
  reaches the traffic only after the routes propagate (the mesh) and the next scrapes, and
  ``increase()`` over a short window is mostly extrapolation; counted, that transition would bias
  the split (a false sample ratio mismatch, whose always-valid test keeps its running maximum for
  good) and the comparison. The settle window's samples are lost for both arms alike, so the
  comparison stays fair. Because every reading of a run shares the window's start, to the
  millisecond (:func:`modelrollout.metrics.queries.window_since`), the start-edge extrapolation
  error cancels in ``reading - baseline``.
* Counts that must not go down (trials, successes, counts, units, sums of squares, denominators)
  and do, relative to the stratum's baseline or to the last reading, by more than ``1 + 1 %`` of
  the earlier value are a counter reset the query did not absorb: the metric is Unknown for the
  tick (and stays so while the reading is below; a long outage then applies ``onDataOutage``).
  Smaller negative differences (the extrapolation noise of ``increase()``) are clamped to 0.
  Successes above trials are treated the same way.
* After an outage the readings settle too (:func:`resumed`): nothing is counted on the first
  tick with usable metrics again, nor for a settle window after it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from modelrollout.api.presets import MetricType
from modelrollout.api.spec import QUERY_FIELDS, ModelExperimentSpec
from modelrollout.api.status import MetricCounters, ModelExperimentStatus, Stratum
from modelrollout.api.types import parse_duration
from modelrollout.observations import Unknown

#: The shortest settle window of a new stratum (see :func:`settle_duration`).
SETTLE_MIN: Final = timedelta(seconds=5)
#: The counter fields of each metric type (python attribute names).
FIELDS: Final[dict[MetricType, tuple[str, ...]]] = {
    t: tuple(attr for attr, _ in fields) for t, fields in QUERY_FIELDS.items()
}
#: The field that counts a metric's samples (trials, observations or units).
SAMPLE_FIELD: Final[dict[MetricType, str]] = {
    MetricType.PROPORTION: "trials",
    MetricType.MEAN: "count",
    MetricType.RATIO: "units",
}
_NON_NEGATIVE: Final = frozenset(
    {
        "successes",
        "trials",
        "count",
        "sum_of_squares",
        "units",
        "denominator",
        "numerator_squares",
        "denominator_squares",
    }
)


def _tolerance(base: float) -> float:
    return 1.0 + 0.01 * abs(base)


@dataclass(frozen=True)
class Known:
    """A usable reading of one metric: cumulative counters per variant (champion + live)."""

    values: Mapping[str, MetricCounters]


Reading = Known | Unknown


def metric_types(spec: ModelExperimentSpec) -> dict[str, MetricType]:
    """Every metric's type by name: primary, secondary metrics, then guardrails."""
    m = spec.metrics
    out = {m.primary.name: m.primary.metric_type}
    out.update({s.name: s.metric_type for s in m.secondary})
    out.update({g.name: g.metric_type for g in m.guardrails})
    return out


def samples(counters: MetricCounters | None, mtype: MetricType) -> float:
    """The number of samples in ``counters`` (0 when unknown)."""
    if counters is None:
        return 0.0
    value = getattr(counters, SAMPLE_FIELD[mtype])
    return float(value) if value is not None else 0.0


def _check(raw: MetricCounters, mtype: MetricType) -> MetricCounters | str:
    values: dict[str, float] = {}
    for name in FIELDS[mtype]:
        v = getattr(raw, name)
        if v is None:
            return f"{name} is missing"
        v = float(v)
        if not math.isfinite(v):
            return f"{name} is not a finite number"
        if name in _NON_NEGATIVE and v < 0:
            return f"{name} is negative ({v:g})"
        values[name] = v
    if mtype is MetricType.PROPORTION and values["successes"] > values["trials"]:
        if values["successes"] > values["trials"] + _tolerance(values["trials"]):
            return f"successes ({values['successes']:g}) exceed trials ({values['trials']:g})"
        values["successes"] = values["trials"]
    return MetricCounters(**values)


def read(
    spec: ModelExperimentSpec, metrics: Mapping[str, object], variants: tuple[str, ...]
) -> dict[str, Reading]:
    """Check the tick's readings of every metric for ``variants``; anything unusable is Unknown."""
    out: dict[str, Reading] = {}
    for name, mtype in metric_types(spec).items():
        raw = metrics.get(name)
        if raw is None:
            out[name] = Unknown("no reading")
            continue
        if isinstance(raw, Unknown):
            out[name] = raw
            continue
        if not isinstance(raw, Mapping):
            out[name] = Unknown("malformed reading")
            continue
        values: dict[str, MetricCounters] = {}
        problem: str | None = None
        for variant in variants:
            counters = raw.get(variant)
            if not isinstance(counters, MetricCounters):
                problem = f"no value for {variant}"
                break
            checked = _check(counters, mtype)
            if isinstance(checked, str):
                problem = f"{variant}: {checked}"
                break
            values[variant] = checked
        out[name] = Unknown(problem) if problem is not None else Known(values)
    return out


def plus(a: MetricCounters, b: MetricCounters, mtype: MetricType) -> MetricCounters:
    """Field-wise sum of two counters of ``mtype``."""
    return MetricCounters(
        **{f: float(getattr(a, f) or 0.0) + float(getattr(b, f) or 0.0) for f in FIELDS[mtype]}
    )


def minus(reading: MetricCounters, base: MetricCounters, mtype: MetricType) -> MetricCounters | str:
    """``reading - base``, or why that difference is inconsistent (see the module docstring)."""
    values: dict[str, float] = {}
    for f in FIELDS[mtype]:
        r, b = float(getattr(reading, f) or 0.0), float(getattr(base, f) or 0.0)
        d = r - b
        if f in _NON_NEGATIVE and d < 0:
            if d < -_tolerance(b):
                return f"{f} went down from {b:g} to {r:g} (a counter reset?)"
            d = 0.0
        values[f] = d
    if mtype is MetricType.PROPORTION and values["successes"] > values["trials"]:
        if values["successes"] > values["trials"] + _tolerance(values["trials"]):
            return "successes exceed trials within the step"
        values["successes"] = values["trials"]
    return MetricCounters(**values)


def zero(mtype: MetricType) -> MetricCounters:
    """Counters of ``mtype`` at zero."""
    return MetricCounters(**dict.fromkeys(FIELDS[mtype], 0.0))


def settle_duration(spec: ModelExperimentSpec) -> timedelta:
    """How long a new stratum's counts are left out: one tick, and at least 5 s (route propagation
    plus a scrape)."""
    return max(parse_duration(spec.rollout.interval), SETTLE_MIN)


def settled(spec: ModelExperimentSpec, stratum: Stratum, now: datetime) -> bool:
    """Whether ``stratum`` has run long enough for its counts to be used."""
    return now - stratum.started_at >= settle_duration(spec)


def samples_by_metric(
    spec: ModelExperimentSpec, readings: Mapping[str, Reading]
) -> dict[str, dict[str, float]]:
    """The samples of every known reading, by metric and variant."""
    types = metric_types(spec)
    return {
        name: {v: samples(c, types[name]) for v, c in r.values.items()}
        for name, r in readings.items()
        if isinstance(r, Known)
    }


def resumed(
    spec: ModelExperimentSpec, status: ModelExperimentStatus, readings: Mapping[str, Reading], now: datetime
) -> bool:
    """Whether the readings can be counted: no outage on the last tick, a settle window since
    usable metrics came back, and every reading grown since then.

    After a stretch without usable metrics (Prometheus down or restarting, a scrape target gone),
    the first readings mix fresh and stale series: each target is scraped again at its own
    offset, and until then ``increase()`` ends at its last sample before the gap, with no
    extrapolation over the gap. One variant's counts then miss the traffic of the outage while
    another's have it; counted, that is a sample ratio mismatch of the outage's size, latched for
    good by the always-valid test (seen on the real stack, p ~ 1e-19 to 1e-53). Waiting one settle
    window (:func:`settle_duration`) lets every target be scraped again; the cumulative readings
    then hold the outage's traffic for every variant, and nothing is lost. A target that comes back
    later (service discovery reloads after a restart) still answers with its old series, so the
    window is not enough on its own: each reading must also have grown past its value when the
    metrics came back (``status.resumedFrom``), which a series not scraped again cannot do.
    """
    if status.data_outage_since is not None and status.data_outage_since < now:
        return False  # (an outage that began at ``now`` is this very tick's, seen again in a replay)
    if status.data_resumed_at is None:
        return True
    if now - status.data_resumed_at < settle_duration(spec):
        return False
    now_samples = samples_by_metric(spec, readings)
    for name, before in status.resumed_from.items():
        if name not in now_samples:
            return False
        for variant, value in before.items():
            current = now_samples[name].get(variant)
            # (a variant no longer read, a dropped challenger, has nothing left to wait for)
            if current is not None and current <= value:
                return False
    return True


def baseline_of(
    status: ModelExperimentStatus, stratum: Stratum, variant: str, metric: str, mtype: MetricType
) -> MetricCounters | None:
    """The stratum's baseline of ``metric`` for ``variant``, or None before it settled."""
    return stratum.baseline.get(variant, {}).get(metric)


def update_totals(
    spec: ModelExperimentSpec, status: ModelExperimentStatus, readings: dict[str, Reading], now: datetime
) -> None:
    """Refresh the running stratum's totals from the known readings, in place.

    Nothing is counted while the stratum settles, nor while the readings settle after an outage
    (:func:`resumed`). A reading inconsistent with the stratum's baseline turns into Unknown in
    ``readings``.
    """
    if not status.strata:
        return
    stratum = status.strata[-1]
    if not settled(spec, stratum, now) or not resumed(spec, status, readings, now):
        return
    types = metric_types(spec)
    for name, reading in list(readings.items()):
        if not isinstance(reading, Known):
            continue
        mtype = types[name]
        fresh: dict[str, MetricCounters] = {}
        for variant, counters in reading.values.items():
            base = baseline_of(status, stratum, variant, name, mtype)
            if base is None:
                # No baseline yet: this reading is it (for every variant of the metric at once).
                stratum.baseline.setdefault(variant, {})[name] = counters
                base = counters
            diff = minus(counters, base, mtype)
            before = stratum.totals.get(variant, {}).get(name)
            if not isinstance(diff, str) and before is not None:
                # The cumulative reading must not fall below the last one either.
                back = minus(diff, before, mtype)
                if isinstance(back, str):
                    diff = back
            if isinstance(diff, str):
                readings[name] = Unknown(f"{variant}: {diff}")
                fresh = {}
                break
            fresh[variant] = diff
        for variant, counters in fresh.items():
            stratum.totals.setdefault(variant, {})[name] = counters


def series(status: ModelExperimentStatus, metric: str, variant: str) -> list[MetricCounters | None]:
    """The totals of ``metric`` for ``variant`` in every stratum, oldest first (None: unknown)."""
    return [s.totals.get(variant, {}).get(metric) for s in status.strata]


def run_samples(status: ModelExperimentStatus, metric: str, variant: str, mtype: MetricType) -> float:
    """Samples of ``variant`` over every stratum of the run."""
    return sum(samples(c, mtype) for c in series(status, metric, variant))


def step_samples(
    status: ModelExperimentStatus, metric: str, variant: str, mtype: MetricType, step: int
) -> float:
    """Samples of ``variant`` in the strata of step ``step``."""
    return sum(samples(s.totals.get(variant, {}).get(metric), mtype) for s in status.strata if s.step == step)


def pooled(
    status: ModelExperimentStatus, metric: str, variant: str, mtype: MetricType
) -> MetricCounters | None:
    """The sum of ``variant``'s totals over every stratum (None when there are none)."""
    out: MetricCounters | None = None
    for counters in series(status, metric, variant):
        if counters is not None:
            out = counters if out is None else plus(out, counters, mtype)
    return out
