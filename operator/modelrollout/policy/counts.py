"""Exact counts per stratum and since the start, from the increments of counter series.

A tick's reading of a metric (:class:`~modelrollout.api.observations.CounterReading`) holds, per
variant and field, the increments that each counter series counted between two of its samples,
with the samples' times (:mod:`modelrollout.metrics.counting`). This module adds them up:

* **Once.** A reading continues from a checkpoint (``reading.since``); it is counted only when
  that is the metric's checkpoint in the status (``status.checkpoints``), which then moves to
  ``reading.until``. A reading replayed in the same tick, or read before a status write that
  failed, counts nothing twice.
* **Since the start** (``status.totals``): every increment that starts at or after
  ``status.countedSince``. The guardrails and the shadow divergence use these.
* **Per stratum** (``stratum.totals``): an increment counts in the stratum whose span holds it
  whole: it starts at or after ``stratum.countedFrom`` and ends by ``stratum.endedAt``. An
  increment across a change of weights belongs to neither side. The counts are counted, not
  extrapolated: a stratum's trials are the requests its series counted, to the request.

Settle: a stratum starts counting when the counts show its weights
-----------------------------------------------------------------------
New weights reach the traffic only after the routes propagate (the mesh pushes them to every
proxy), and the first samples after a change still hold traffic at the old weights. Counted,
that would bias the split, which the sample ratio test would take for a mismatch. So a new
stratum first **settles**: each tick's increments of the primary metric's samples (trials, count
or units) that start after the change are kept as a slice (:class:`~modelrollout.api.status.SettleSlice`),
with each variant's exposure (the seconds its series covered). Each slice is weighed by the
likelihood ratio of the new split against the old one, with each variant's expected share
proportional to its weight times its exposure, so series scraped at different offsets compare
fairly. The stratum counts from the first tick at which the latest slices all lean to the new
split and together give it a likelihood ratio of at least :data:`SETTLE_EVIDENCE` (a Bayes factor
of 100, "decisive" on Jeffreys' scale): the weights are then in effect, whatever the mesh took to
propagate them. Data cannot always tell (very low traffic, two close splits): after
:func:`settle_limit`, a few scrape intervals and ticks as measured, counting starts unless the
latest slices clearly still show the old split; after twice the limit it starts anyway (routes
that never take effect then show as a sample ratio mismatch). The decision, its evidence and the
time it took are recorded in ``stratum.settle``. A restart of a step's counting with unchanged
weights does not settle.

The settle costs each stratum the traffic between the change and the decision, for every
variant alike; a stratum's samples are fewer but not biased.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from modelrollout.api.observations import (
    DIVERGENCE,
    OTHER_VALUE,
    CounterReading,
    Increment,
    Unknown,
    VariantCounts,
)
from modelrollout.api.presets import MetricType
from modelrollout.api.spec import QUERY_FIELDS, ModelExperimentSpec
from modelrollout.api.status import (
    ALL_TARGETS,
    BREAKDOWN_LIMIT,
    SETTLE_SLICES_LIMIT,
    TARGETS_LIMIT,
    MetricCounters,
    ModelExperimentStatus,
    Settle,
    SettleReason,
    SettleSlice,
    Stratum,
    TargetSampling,
)
from modelrollout.api.types import parse_duration

#: The counter fields of each metric type (python attribute names).
FIELDS: Final[dict[MetricType, tuple[str, ...]]] = {
    t: tuple(attr for attr, _ in fields) for t, fields in QUERY_FIELDS.items()
} | {MetricType.QUANTILE: ("trials",)}  # a histogram's buckets each count requests (at or below le)
#: The field that counts a metric's samples (trials, observations or units).
SAMPLE_FIELD: Final[dict[MetricType, str]] = {
    MetricType.PROPORTION: "trials",
    MetricType.MEAN: "count",
    MetricType.RATIO: "units",
    MetricType.QUANTILE: "trials",
}
#: The likelihood ratio of the new split over the old one that ends a settle (a Bayes factor of 100).
SETTLE_EVIDENCE: Final = math.log(100.0)
#: Scrape intervals, and ticks, in :func:`settle_limit`.
SETTLE_LIMIT_SCRAPES: Final = 5
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
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _tolerance(base: float) -> float:
    return 1.0 + 0.01 * abs(base)


def seconds(at: datetime) -> float:
    """``at`` in seconds since the epoch, to the millisecond (as samples' timestamps are)."""
    return ((at - _EPOCH) // timedelta(milliseconds=1)) / 1000.0


@dataclass(frozen=True)
class Known:
    """A usable reading of one metric: the counts per variant since ``status.countedSince``."""

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


def plus(a: MetricCounters, b: MetricCounters, mtype: MetricType) -> MetricCounters:
    """Field-wise sum of two counters of ``mtype``."""
    return MetricCounters(
        **{f: float(getattr(a, f) or 0.0) + float(getattr(b, f) or 0.0) for f in FIELDS[mtype]}
    )


def minus(reading: MetricCounters, base: MetricCounters, mtype: MetricType) -> MetricCounters | str:
    """``reading - base`` of two running totals, or why that difference is inconsistent (a count
    that went down by more than rounding)."""
    values: dict[str, float] = {}
    for f in FIELDS[mtype]:
        r, b = float(getattr(reading, f) or 0.0), float(getattr(base, f) or 0.0)
        d = r - b
        if f in _NON_NEGATIVE and d < 0:
            if d < -_tolerance(b):
                return f"{f} went down from {b:g} to {r:g}"
            d = 0.0
        values[f] = d
    if mtype is MetricType.PROPORTION and values["successes"] > values["trials"]:
        values["successes"] = values["trials"]
    return MetricCounters(**values)


def zero(mtype: MetricType) -> MetricCounters:
    """Counters of ``mtype`` at zero."""
    return MetricCounters(**dict.fromkeys(FIELDS[mtype], 0.0))


def _add(
    into: dict[str, dict[str, MetricCounters]],
    variant: str,
    name: str,
    mtype: MetricType,
    sums: Mapping[str, float],
) -> None:
    """Add ``sums`` (by attribute) to ``into[variant][name]``, keeping counts non-negative and
    successes within trials (a subtracted part can dip below zero for a moment)."""
    before = into.get(variant, {}).get(name) or zero(mtype)
    values = {f: float(getattr(before, f) or 0.0) + sums.get(f, 0.0) for f in FIELDS[mtype]}
    for f in _NON_NEGATIVE & set(values):
        values[f] = max(0.0, values[f])
    if mtype is MetricType.PROPORTION:
        values["successes"] = min(values["successes"], values["trials"])
    into.setdefault(variant, {})[name] = MetricCounters(**values)


def _sums(fields: Mapping[str, Sequence[Increment]], keep: object) -> dict[str, float]:
    """Per field, the sum of the increments for which ``keep(increment)`` holds."""
    assert callable(keep)
    return {f: math.fsum(i.value for i in incs if keep(i)) for f, incs in fields.items()}


def _holds(stratum: Stratum) -> object:
    start = seconds(stratum.counted_from) if stratum.counted_from is not None else math.inf
    end = seconds(stratum.ended_at) if stratum.ended_at is not None else math.inf
    return lambda i: i.start >= start and i.end <= end


# --- the settle -------------------------------------------------------------------------------


def settle_limit(spec: ModelExperimentSpec, stratum: Stratum) -> timedelta:
    """The longest a stratum settles before it counts anyway: :data:`SETTLE_LIMIT_SCRAPES` times
    the scrape interval seen in the samples or the tick interval, whichever is longer."""
    interval = parse_duration(spec.rollout.interval).total_seconds()
    return timedelta(seconds=SETTLE_LIMIT_SCRAPES * max(interval, stratum.spacing))


def coverage(sampling: Mapping[str, TargetSampling]) -> tuple[float, float]:
    """(samples, covered seconds) of one variant from its targets' sampling.

    A variant's count is the sum over its scrape targets, each covering its own seconds (targets
    are scraped at different offsets; a late one covers less until its next sample). Under a
    steady traffic the expected count is the variant's rate times ``sum_t s_t T_t``, with ``s_t``
    each target's share of the variant's traffic, estimated from its rate ``r_t`` (``x_t / T_t``): the
    covered seconds are ``sum_t r_t T_t / sum_t r_t``, the spans weighed by the targets' rates.

    A target's rate is taken from its clean increments: an increment across a counter reset
    counted only what came after the restart, so it would understate the target's share and
    weigh the spans of the other targets too much (what the reset lost is bounded apart, by
    :func:`stratum_losses`). With every span alike the covered seconds are that span, whatever the
    rates.
    """
    samples = sum(t.samples for t in sampling.values())
    rates = [(_rate(t), t.seconds) for t in sampling.values() if t.seconds > 0 and t.samples > 0]
    total_rate = sum(r for r, _ in rates)
    if samples > 0 and total_rate > 0:
        return samples, sum(r * span for r, span in rates) / total_rate
    spans = [t.seconds for t in sampling.values() if t.seconds > 0]
    return samples, (sum(spans) / len(spans) if spans else 0.0)


def _rate(t: TargetSampling) -> float:
    """A target's rate of samples: over its clean increments when it has any, else over all."""
    clean = _clean(t)
    if clean.seconds > 0 and clean.samples > 0:
        return clean.samples / clean.seconds
    return t.samples / t.seconds


def _upper(mean: float) -> float:
    """A Poisson upper bound (three standard deviations) of a count with expectation ``mean``."""
    return mean + 3.0 * math.sqrt(max(mean, 0.0)) + 3.0


def _clean(t: TargetSampling) -> TargetSampling:
    """A target's sampling without its increments across resets."""
    return TargetSampling(samples=t.samples - t.reset_samples, seconds=t.seconds - t.reset_seconds)


def traffic_rate_bound(stratum: Stratum, variants: Sequence[str]) -> float:
    """An upper bound of the whole traffic's rate in ``stratum`` under the null hypothesis that each
    of ``variants`` gets its weight's share: from each variant all of whose targets have reported
    clean increments (no reset), its count bounded above (three standard deviations) over its
    covered seconds and its share; the smallest of these (each holds, so the minimum does).
    ``inf`` when no variant is completely reported."""
    total = float(sum(stratum.weights.get(v, 0) for v in variants))
    best = math.inf
    for v in variants:
        share = stratum.weights.get(v, 0) / total if total > 0 else 0.0
        targets = [_clean(t) for t in stratum.sampling.get(v, {}).values()]
        if share <= 0 or not targets or any(t.seconds <= 0 for t in targets):
            continue
        samples, covered = coverage({str(i): t for i, t in enumerate(targets)})
        if covered > 0:
            best = min(best, _upper(samples) / (covered * share))
    return best


def _target_lost(t: TargetSampling, variant_rate: float, counting_seconds: float) -> float:
    clean = _clean(t)
    if clean.seconds > 0:
        if t.reset_seconds <= 0:
            return 0.0
        rate = min(_upper(clean.samples) / clean.seconds, variant_rate)
        return max(0.0, _upper(rate * t.reset_seconds) - t.reset_samples)
    # Not one clean increment: its share of the variant is not known, so up to all of it.
    span = t.seconds if t.seconds > 0 else counting_seconds
    return max(0.0, _upper(variant_rate * span) - t.samples)


def stratum_losses(stratum: Stratum, variants: Sequence[str], now: datetime) -> dict[str, float] | None:
    """Per variant, the most its samples may have missed in ``stratum`` (None: it cannot be bounded).

    * An increment across a counter reset counts only what came after the restart. The target's
      traffic over its span is at most its rate (from its clean increments, and at most the
      variant's) times the span, bounded above like a Poisson count; what was lost is at most that
      minus what was counted.
    * A target seen in the stratum without a clean increment yet may carry any share of its
      variant: up to the variant's traffic over the seconds it should have covered.

    The variant's rate is its share of :func:`traffic_rate_bound`. An ended stratum keeps its
    bounds in ``'*'`` (see :func:`end_stratum`).
    """
    ended = {v: stratum.sampling.get(v, {}).get(ALL_TARGETS) for v in variants}
    if stratum.ended_at is not None and all(e is not None and len(stratum.sampling[v]) == 1
                                            for v, e in ended.items()):
        if not all(e is not None and e.bounded for e in ended.values()):
            return None
        return {v: e.lost for v, e in ended.items() if e is not None}
    counting = (now - stratum.counted_from).total_seconds() if stratum.counted_from is not None else 0.0
    rate = traffic_rate_bound(stratum, variants)
    total = float(sum(stratum.weights.get(v, 0) for v in variants))
    out: dict[str, float] = {}
    for v in variants:
        share = stratum.weights.get(v, 0) / total if total > 0 else 0.0
        lost = sum(_target_lost(t, rate * share, counting) for t in stratum.sampling.get(v, {}).values())
        if not math.isfinite(lost):
            return None
        out[v] = lost
    return out


def _exposure(increments: Sequence[Increment], since: float) -> tuple[float, float]:
    """(samples, covered seconds) of one variant's sample-field increments that start at or after
    ``since`` (see :func:`coverage`); counter resets are left out (a slice needs no bound)."""
    per: dict[str, TargetSampling] = {}
    for i in increments:
        if i.start >= since and not i.reset:
            got = per.setdefault(i.target, TargetSampling())
            got.samples += i.value
            got.seconds += i.end - i.start
    return coverage(per)


def slice_log_lr(
    piece: SettleSlice, new: Mapping[str, int], old: Mapping[str, int]
) -> float:
    """log of the likelihood ratio of the new split against the old one in ``piece``: the
    variants' samples as a multinomial with shares proportional to weight times exposure."""
    names = [v for v, e in piece.exposure.items() if e > 0 and v in new]
    n = sum(piece.samples.get(v, 0.0) for v in names)
    if n <= 0 or len(names) < 2:
        return 0.0

    def shares(w: Mapping[str, int]) -> dict[str, float]:
        raw = {v: w.get(v, 0) * piece.exposure[v] for v in names}
        total = sum(raw.values())
        return {v: r / total for v, r in raw.items()} if total > 0 else {}

    p_new, p_old = shares(new), shares(old)
    if not p_new:
        return 0.0
    if not p_old:
        return math.inf
    out = 0.0
    for v in names:
        x = piece.samples.get(v, 0.0)
        if x <= 0:
            continue
        if p_new[v] <= 0:
            return -math.inf
        if p_old[v] <= 0:
            return math.inf
        out += x * (math.log(p_new[v]) - math.log(p_old[v]))
    return out


def _recent_evidence(stratum: Stratum) -> tuple[float, float]:
    """(evidence of the latest slices that all lean to the new split, evidence of the latest half of
    the slices): the log likelihood ratios, new over old, summed."""
    lrs = [slice_log_lr(s, stratum.weights, stratum.previous_weights) for s in stratum.settling]
    leaning = 0.0
    for lr in reversed(lrs):
        if lr < 0:
            break
        leaning += lr
    half = lrs[len(lrs) // 2 :]
    return leaning, sum(half)


def _add_slice(
    stratum: Stratum, reading: CounterReading, field: str, variants: Sequence[str], now: datetime
) -> None:
    since = seconds(stratum.started_at)
    piece = SettleSlice(end=now)
    for v in variants:
        x, e = _exposure(reading.variants[v].fields.get(field, ()), since)
        piece.samples[v] = x
        piece.exposure[v] = e
    slices = [*stratum.settling, piece]
    if len(slices) > SETTLE_SLICES_LIMIT:
        a, b = slices[0], slices[1]
        merged = SettleSlice(
            end=b.end,
            samples={v: a.samples.get(v, 0.0) + b.samples.get(v, 0.0) for v in variants},
            exposure={v: a.exposure.get(v, 0.0) + b.exposure.get(v, 0.0) for v in variants},
        )
        slices = [merged, *slices[2:]]
    stratum.settling = slices


def settle(spec: ModelExperimentSpec, stratum: Stratum, now: datetime) -> None:
    """Start the stratum's counting at ``now`` when the slices show its weights (see the module
    docstring); record why."""
    if stratum.counted_from is not None:
        return
    limit = settle_limit(spec, stratum)
    waited = now - stratum.started_at
    leaning, recent = _recent_evidence(stratum)
    reason: SettleReason | None = None
    if leaning >= SETTLE_EVIDENCE:
        reason = SettleReason.WEIGHTS_SEEN
    elif (waited >= limit and recent > -SETTLE_EVIDENCE) or waited >= 2 * limit:
        reason = SettleReason.SETTLE_LIMIT
    if reason is None:
        return
    stratum.counted_from = now
    stratum.settle = Settle(
        reason=reason,
        seconds=waited.total_seconds(),
        limit_seconds=limit.total_seconds(),
        log_likelihood_ratio=leaning if math.isfinite(leaning) else None,
        scrape_interval_seconds=stratum.spacing or None,
    )
    stratum.settling = []


def aligned(stratum: Stratum, variants: Sequence[str]) -> bool:
    """Whether every one of ``variants`` was sampled from the same scrape targets in ``stratum``
    (series of one target are scraped at the same instants, so their counts cover the same time)."""
    if stratum.aligned is not None:
        return stratum.aligned
    sets = [frozenset(stratum.sampling.get(v, {})) for v in variants]
    return bool(sets) and all(sets[0] and s == sets[0] for s in sets)


def _end(stratum: Stratum, now: datetime) -> None:
    """End ``stratum`` at ``now``; its sampling becomes one entry per variant (see :func:`coverage`)."""
    stratum.ended_at = now
    stratum.settling = []
    stratum.aligned = aligned(stratum, [v for v in stratum.sampling if stratum.weights.get(v, 0) > 0])
    variants = [v for v in stratum.sampling if stratum.weights.get(v, 0) > 0]
    losses = stratum_losses(stratum, variants, now)
    for variant, targets in stratum.sampling.items():
        samples, seconds = coverage(targets)
        lost = (losses or {}).get(variant, 0.0)
        stratum.sampling[variant] = {
            ALL_TARGETS: TargetSampling(
                samples=samples, seconds=seconds, lost=lost, bounded=losses is not None
            )
        }


def end_stratum(status: ModelExperimentStatus, now: datetime) -> None:
    """End the running stratum, if any (a promotion or a rollback)."""
    if status.strata and status.strata[-1].ended_at is None:
        _end(status.strata[-1], now)


def open_stratum(
    status: ModelExperimentStatus,
    step: int,
    weights: Mapping[str, int],
    now: datetime,
    *,
    previous: Mapping[str, int],
    srm_epoch: int,
) -> Stratum:
    """End the running stratum at ``now`` and begin one with ``weights`` (after ``previous``); it
    settles unless the weights are unchanged (then it counts from ``now`` at once)."""
    if status.strata and status.strata[-1].ended_at is None:
        _end(status.strata[-1], now)
    stratum = Stratum(
        step=step, weights=dict(weights), previous_weights=dict(previous), started_at=now, srm_epoch=srm_epoch
    )
    if dict(previous) == dict(weights):
        stratum.counted_from = now
        stratum.settle = Settle(reason=SettleReason.UNCHANGED, seconds=0.0)
    status.strata.append(stratum)
    return stratum


# --- a tick's readings ------------------------------------------------------------------------


def _check(reading: object, variants: Sequence[str]) -> CounterReading | Unknown:
    if reading is None:
        return Unknown("no reading")
    if isinstance(reading, Unknown):
        return reading
    if not isinstance(reading, CounterReading):
        return Unknown("malformed reading")
    for v in variants:
        if not isinstance(reading.variants.get(v), VariantCounts):
            return Unknown(f"no value for {v}")
    return reading


def _count(
    spec: ModelExperimentSpec,
    status: ModelExperimentStatus,
    name: str,
    mtype: MetricType,
    reading: CounterReading,
    variants: Sequence[str],
    *,
    stratify: bool,
) -> None:
    """Add a reading's increments to the totals since the start and, when ``stratify``, to the
    strata (see the module docstring)."""
    start = seconds(status.counted_since or status.started_at or reading.until)
    since_start = _holds_from(start)
    counting = [s for s in status.strata if s.counted_from is not None] if stratify else []
    for v in variants:
        fields = reading.variants[v].fields
        _add(status.totals, v, name, mtype, _sums(fields, since_start))
        for stratum in counting:
            _add(stratum.totals, v, name, mtype, _sums(fields, _holds(stratum)))
    if stratify and name == spec.metrics.primary.name and status.strata:
        _sampling(spec, status.strata[-1], reading, SAMPLE_FIELD[mtype], variants, reading.until)
        _segment_samples(spec, counting, reading, SAMPLE_FIELD[mtype], variants)


def _segment_samples(
    spec: ModelExperimentSpec,
    counting: Sequence[Stratum],
    reading: CounterReading,
    field: str,
    variants: Sequence[str],
) -> None:
    """Each protected segment's samples of the primary metric, per stratum (its sample ratio check)."""
    segments = spec.metrics.segments
    if segments is None or not reading.breakdown:
        return
    for p in segments.protected:
        by_variant = reading.breakdown.get(p.value)
        if by_variant is None:
            continue
        for stratum in counting:
            holds = _holds(stratum)
            assert callable(holds)
            into = stratum.segment_trials.setdefault(p.value, {})
            for v in variants:
                found = by_variant.get(v)
                if found is not None:
                    added = math.fsum(i.value for i in found.fields.get(field, ()) if holds(i))
                    into[v] = into.get(v, 0.0) + added


def _holds_from(start: float) -> object:
    return lambda i: i.start >= start


def _lower(mean: float) -> float:
    """A Poisson lower bound (five standard deviations) of a count with expectation ``mean``."""
    return mean - 5.0 * math.sqrt(max(mean, 0.0)) - 5.0


def looks_reset(target: TargetSampling, increment: Increment) -> bool:
    """Whether ``increment`` is far below its target's own rate in the stratum: a counter that
    restarted and counted past its last sample before the next scrape (a second restart soon after
    a first, a crash loop) shows no drop, but what it counted before the restart is gone all the
    same. Such an increment is taken as one across a reset (its loss is bounded, not ignored)."""
    clean = _clean(target)
    span = increment.end - increment.start
    if clean.seconds < 2 * span or clean.samples <= 0:
        return False
    return increment.value < _lower(clean.samples / clean.seconds * span)


def _cover(stratum: Stratum, variant: str, increments: Sequence[Increment]) -> None:
    """Add the running stratum's share of ``increments`` (of the primary metric's samples) to its
    sampling, per scrape target. A target is registered as soon as an increment of it reaches into
    the stratum (so one that has not reported a whole increment yet is known to be missing); an
    increment across a reset (or one that looks like it, :func:`looks_reset`) counts what came
    after the restart, and its span is remembered."""
    holds = _holds(stratum)
    assert callable(holds)
    start = seconds(stratum.counted_from) if stratum.counted_from is not None else math.inf
    targets = stratum.sampling.setdefault(variant, {})
    for i in sorted(increments, key=lambda x: x.end):
        if i.end <= start:
            continue
        key = i.target if i.target in targets or len(targets) < TARGETS_LIMIT else ALL_TARGETS
        got = targets.setdefault(key, TargetSampling())
        if not holds(i):
            continue
        reset = i.reset or looks_reset(got, i)
        got.samples += i.value
        got.seconds += i.end - i.start
        if reset:
            got.reset_seconds += i.end - i.start
            got.reset_samples += i.value
            if not i.reset:
                stratum.resets[variant] = stratum.resets.get(variant, 0) + 1


def _sampling(
    spec: ModelExperimentSpec, stratum: Stratum, reading: CounterReading, field: str, variants: Sequence[str],
    now: datetime,
) -> None:
    """The running stratum's record of how the primary metric was sampled, and its settle."""
    if stratum.ended_at is not None:
        return
    for v in variants:
        counts_v = reading.variants[v]
        stratum.spacing = max(stratum.spacing, counts_v.spacing)
        if stratum.counted_from is not None:
            _cover(stratum, v, counts_v.fields.get(field, ()))
            if counts_v.resets:
                stratum.resets[v] = stratum.resets.get(v, 0) + counts_v.resets
    if stratum.counted_from is None:
        _add_slice(stratum, reading, field, variants, now)
        settle(spec, stratum, now)


def _inconsistent(
    status: ModelExperimentStatus,
    name: str,
    mtype: MetricType,
    reading: CounterReading,
    variants: Sequence[str],
) -> str | None:
    """Why a proportion's counts since the start would have more successes than trials (a metric
    whose two selectors count different things), or None. Such a reading is not counted: the
    metric stays Unknown, which holds and in the end applies ``onDataOutage``."""
    if mtype is not MetricType.PROPORTION:
        return None
    start = seconds(status.counted_since or status.started_at or reading.until)
    for v in variants:
        sums = _sums(reading.variants[v].fields, _holds_from(start))
        before = status.totals.get(v, {}).get(name) or zero(mtype)
        successes = float(before.successes or 0.0) + sums.get("successes", 0.0)
        trials = float(before.trials or 0.0) + sums.get("trials", 0.0)
        if successes > trials + _tolerance(trials) + 9.0:
            return (
                f"{v}: more successes ({successes:g}) than trials ({trials:g}); the two selectors must count "
                "the same units (successes are a subset of trials)"
            )
    return None


def read(
    spec: ModelExperimentSpec,
    status: ModelExperimentStatus,
    metrics: Mapping[str, object],
    variants: tuple[str, ...],
    *,
    stratify: bool,
    divergence: bool = False,
) -> dict[str, Reading]:
    """Count the tick's readings once (see the module docstring) and return every metric's counts
    since the start, by name; a metric without a usable reading is Unknown.

    ``stratify``: the experiment is progressing, so the strata count too (and settle).
    ``divergence``: also read the shadow divergence (as ``shadow:divergence``, for the challengers).
    """
    types = metric_types(spec)
    wanted: list[tuple[str, MetricType, tuple[str, ...]]] = [(n, t, variants) for n, t in types.items()]
    if divergence:
        wanted.append((DIVERGENCE, MetricType.PROPORTION, variants[1:]))
    out: dict[str, Reading] = {}
    for name, mtype, names in wanted:
        reading = _check(metrics.get(name), names)
        if isinstance(reading, Unknown):
            out[name] = reading
            continue
        if reading.since == status.checkpoints.get(name):
            problem = _inconsistent(status, name, mtype, reading, names)
            if problem is not None:
                out[name] = Unknown(problem)
                continue
            _count(spec, status, name, mtype, reading, names, stratify=stratify and name != DIVERGENCE)
            _count_breakdown(spec, status, name, mtype, reading, names)
            status.checkpoints[name] = reading.until
        out[name] = Known(
            {v: status.totals.get(v, {}).get(name) or zero(mtype) for v in names}
        )
    return out


def _kept_value(
    spec: ModelExperimentSpec, name: str, mtype: MetricType, value: str, known: Mapping[str, object]
) -> str | None:
    """Under which value a split value of ``name`` is kept in ``status.breakdowns`` (None: not kept).

    Bucket edges are all kept. Segment values: the protected ones always; on the primary metric the
    others too (the exploratory view, which shows the largest), up to :data:`BREAKDOWN_LIMIT`
    values, after which they are summed as ``other``; on a guardrail only the protected ones.
    """
    if value in known:
        return value
    if mtype is MetricType.QUANTILE:
        return value if len(known) < BREAKDOWN_LIMIT else None
    segments = spec.metrics.segments
    if segments is None or name not in spec.metrics.segmented():
        return None
    if value in {p.value for p in segments.protected}:
        return value
    if name != spec.metrics.primary.name or segments.exploratory_values == 0:
        return None
    return value if len(known) < BREAKDOWN_LIMIT - 1 else OTHER_VALUE


def _count_breakdown(
    spec: ModelExperimentSpec,
    status: ModelExperimentStatus,
    name: str,
    mtype: MetricType,
    reading: CounterReading,
    variants: Sequence[str],
) -> None:
    """Add a reading's increments by split value (segments, bucket edges) to ``status.breakdowns``."""
    if not reading.breakdown:
        return
    start = seconds(status.counted_since or status.started_at or reading.until)
    since_start = _holds_from(start)
    into = status.breakdowns.get(name, {})
    for value in sorted(reading.breakdown):
        kept = _kept_value(spec, name, mtype, value, into)
        if kept is None:
            continue
        by_variant = reading.breakdown[value]
        counters = into.setdefault(kept, {})
        for v in variants:
            found = by_variant.get(v)
            if found is None:
                continue
            nested = {v: {name: counters[v]}} if v in counters else {}
            _add(nested, v, name, mtype, _sums(found.fields, since_start))
            counters[v] = nested[v][name]
    if into:
        status.breakdowns[name] = into


def breakdown(status: ModelExperimentStatus, name: str) -> dict[str, dict[str, MetricCounters]]:
    """``name``'s counts since the start by split value, then variant (see ``status.breakdowns``)."""
    return {value: dict(by_variant) for value, by_variant in status.breakdowns.get(name, {}).items()}


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
