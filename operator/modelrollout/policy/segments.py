"""Who is harmed: the protected segments' harm tests and the exploratory view, every tick.

The per-segment sample ratio check
----------------------------------
An assignment bug may touch one segment only (a client version that drops the bucket header). The
overall sample ratio test would hardly see it, and testing each segment's split against the
weights would repeat everything the overall test must allow for (scrape offsets, counter resets,
late targets), which affect every segment of a variant alike. So each protected segment is
compared with the rest of the traffic instead, in the running stratum: under a correct assignment
the challenger's share of the segment's samples is its share of the other samples, whatever was
lost or shifted at the level of a variant. :func:`sample_ratio` tests that equality of two
proportions with the always-valid two-sided test of
:func:`modelrollout.stats.sequential.sequential_test_proportions` at ``analysis.srmThreshold / K``
(Bonferroni over the K protected segments), carried in ``stratum.segmentSrm``; a new stratum (a
new step) starts a new check. A mismatch holds the rollout (``SegmentSampleRatioMismatch``).

With ``spec.metrics.segments`` the counts of the primary metric and of every margin
guardrail are also kept per value of the segment label (``status.breakdowns``; the series the
operator reads already carry the label, so no query changes). For each live challenger and each of
those metrics, :func:`modelrollout.stats.segments.segment_harm` tests every protected segment for
harm, one-sided and always valid, corrected for the number of protected segments (Bonferroni by
default, e-BH on request). The tests carry their running maxima and mixture scales in
``status.segmentState``, so the family-wise (or false-discovery) guarantee holds over every look.

A segment found harmed stays harmed (``harmedAt``): for Bonferroni that is what the running maximum
already gives; for e-BH the set named at one look may shrink at the next, and the guarantee is for
the set acted on at the first look that names one, so that set is latched.

Each metric is its own family: with a primary metric and two guardrails, three families are
tested, each at ``analysis.alpha``, as the guardrails themselves are (a spurious rollback is the
safe error). The exploratory view (the primary metric only) shows the other values with intervals
and never decides anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from modelrollout.api.presets import MetricType
from modelrollout.api.spec import Direction, MdeType, ModelExperimentSpec, Segments
from modelrollout.api.status import (
    Interval,
    MetricCounters,
    ModelExperimentStatus,
    SegmentRecord,
    SequentialState,
    Stratum,
)
from modelrollout.errors import InvalidInputError
from modelrollout.policy import counts, values
from modelrollout.policy.context import Tick, finite, fmt, pct
from modelrollout.stats import segments as seg
from modelrollout.stats import sequential

#: Per-variant sample size the segment mixtures are tuned at when no plan is known yet.
FALLBACK_TUNING_N = 1000


@dataclass
class SegmentCheck:
    """One metric's segments for one challenger at this tick."""

    challenger: str
    metric: str
    harmed: tuple[str, ...] = ()
    records: list[SegmentRecord] = field(default_factory=list)
    summary: str = ""
    numbers: dict[str, float | None] = field(default_factory=dict)


def higher_is_worse(spec: ModelExperimentSpec, metric: str) -> bool:
    """Which way is worse for ``metric`` (the primary metric's direction, or the guardrail's)."""
    m = spec.metrics
    if metric == m.primary.name:
        return m.primary.direction is Direction.DECREASE
    return next(g.higher_is_worse for g in m.guardrails if g.name == metric)


def _state(status: ModelExperimentStatus, challenger: str, metric: str, value: str) -> SequentialState:
    by_metric = status.segment_state.setdefault(challenger, {}).setdefault(metric, {})
    return by_metric.setdefault(value, SequentialState())


def _counts(
    name: str, by_variant: dict[str, MetricCounters], champion: str, challenger: str
) -> seg.SegmentCounts:
    zero = MetricCounters(successes=0.0, trials=0.0)
    c, t = by_variant.get(champion, zero), by_variant.get(challenger, zero)
    return seg.SegmentCounts(
        name=name,
        champion_successes=float(c.successes or 0.0),
        champion_trials=float(c.trials or 0.0),
        challenger_successes=float(t.successes or 0.0),
        challenger_trials=float(t.trials or 0.0),
    )


def _metric_type(spec: ModelExperimentSpec, metric: str) -> MetricType:
    return counts.metric_types(spec)[metric]


def _mean_segment(
    name: str, by_variant: dict[str, MetricCounters], champion: str, challenger: str, mtype: MetricType
) -> seg.MeanSegmentCounts:
    """A mean or ratio segment as (n, mean, sd) per arm (ratios by the delta method); an arm with
    too few samples to have a variance is handed on with n = 0 (not evaluated)."""
    arms: list[float] = []
    for v in (champion, challenger):
        found = by_variant.get(v)
        try:
            n, mean, sd = values.as_mean(found, mtype) if found is not None else (0.0, 0.0, 0.0)
        except (InvalidInputError, ValueError, ZeroDivisionError):
            n, mean, sd = 0.0, 0.0, 0.0
        if not (math.isfinite(n) and math.isfinite(mean) and math.isfinite(sd)):
            n, mean, sd = 0.0, 0.0, 0.0
        arms += [n, mean, sd]
    return seg.MeanSegmentCounts(
        name,
        champion_n=arms[0],
        champion_mean=arms[1],
        champion_sd=arms[2],
        challenger_n=arms[3],
        challenger_mean=arms[4],
        challenger_sd=arms[5],
    )


def _protected_family(
    ctx: Tick,
    status: ModelExperimentStatus,
    segments: Segments,
    metric: str,
    challenger: str,
    plan_n: int | None,
) -> seg.SegmentFamilyResult:
    by_value = counts.breakdown(status, metric)
    mtype = _metric_type(ctx.spec, metric)
    family: list[seg.AnySegment] = []
    for p in segments.protected:
        state = _state(status, challenger, metric, p.value)
        cells = by_value.get(p.value, {})
        base: seg.AnySegment = (
            _counts(p.value, cells, ctx.champion, challenger)
            if mtype is MetricType.PROPORTION
            else _mean_segment(p.value, cells, ctx.champion, challenger, mtype)
        )
        family.append(
            replace(
                base,
                margin=float(p.margin),
                relative=p.margin_type is MdeType.RELATIVE,
                previous_max_log_e=state.max_log_e_value,
                tau2=state.tau2,
                fast_tau2=state.fast_tau2 if state.tau2 is not None else None,
            )
        )
    return seg.segment_harm(
        family,
        higher_is_worse=higher_is_worse(ctx.spec, metric),
        alpha=ctx.alpha,
        correction=segments.correction.value,
        planned_n_per_variant=float(plan_n or FALLBACK_TUNING_N),
    )


def _remember(
    ctx: Tick, status: ModelExperimentStatus, metric: str, challenger: str, r: seg.SegmentResult
) -> bool:
    """Carry one protected segment's test; True when it is (or was already) found harmed."""
    state = _state(status, challenger, metric, r.name)
    if r.evaluated and state.tau2 is None and r.tau2 is not None:
        state.tau2, state.fast_tau2 = r.tau2, r.fast_tau2
    state.max_log_e_value = max(state.max_log_e_value, r.log_e_value_max)
    if r.harmed and state.harmed_at is None:
        state.harmed_at = ctx.now
    return state.harmed_at is not None


def _record(metric: str, r: seg.SegmentResult, *, protected: bool, harmed: bool) -> SegmentRecord:
    evaluated = r.evaluated
    return SegmentRecord(
        metric=metric,
        value=r.name,
        protected=protected,
        harmed=harmed,
        estimate=finite(r.challenger_estimate) if evaluated else None,
        champion_estimate=finite(r.champion_estimate) if evaluated else None,
        difference=finite(r.difference) if evaluated else None,
        ci=Interval(low=r.interval.low, high=r.interval.high)
        if evaluated and math.isfinite(r.interval.low) and math.isfinite(r.interval.high)
        else None,
        worse_by=finite(r.worse_by) if evaluated else None,
        margin=r.margin,
        p_value=finite(r.p_value),
        n=r.challenger_trials,
        champion_n=r.champion_trials,
    )


def _exploratory(
    ctx: Tick,
    status: ModelExperimentStatus,
    segments: Segments,
    metric: str,
    challenger: str,
    plan_n: int | None,
) -> list[SegmentRecord]:
    if segments.exploratory_values == 0 or _metric_type(ctx.spec, metric) is not MetricType.PROPORTION:
        return []
    protected = {p.value for p in segments.protected}
    values = [
        _counts(value, by_variant, ctx.champion, challenger)
        for value, by_variant in sorted(counts.breakdown(status, metric).items())
        if value not in protected
    ]
    values = [v for v in values if v.traffic > 0]
    if not values:
        return []
    view = seg.exploratory_segments(
        values,
        higher_is_worse=higher_is_worse(ctx.spec, metric),
        alpha=ctx.alpha,
        max_values=segments.exploratory_values,
        planned_n_per_variant=float(plan_n or FALLBACK_TUNING_N),
    )
    return [_record(metric, r, protected=False, harmed=r.harmed) for r in view.segments]


def _describe(r: seg.SegmentResult, metric: str) -> str:
    kind = "relative" if r.relative else "absolute"
    return (
        f"segment {r.name} on {metric}: {fmt(r.challenger_estimate)} vs champion {fmt(r.champion_estimate)} "
        f"(worse by {fmt(r.worse_by)}, {kind} margin {fmt(r.margin)}; always-valid p {fmt(r.p_value)}, "
        f"n {r.challenger_trials:,.0f} vs {r.champion_trials:,.0f})"
    )


def _one(
    ctx: Tick,
    status: ModelExperimentStatus,
    segments: Segments,
    metric: str,
    challenger: str,
    plan_n: int | None,
) -> SegmentCheck:
    check = SegmentCheck(challenger, metric)
    try:
        family = (
            _protected_family(ctx, status, segments, metric, challenger, plan_n)
            if segments.protected
            else None
        )
        exploratory = (
            _exploratory(ctx, status, segments, metric, challenger, plan_n)
            if metric == ctx.spec.metrics.primary.name
            else []
        )
    except InvalidInputError as exc:
        check.summary = f"segments of {metric} not evaluated yet ({exc})"
        return check
    harmed: list[str] = []
    texts: list[str] = []
    for r in family.segments if family is not None else ():
        is_harmed = _remember(ctx, status, metric, challenger, r)
        check.records.append(_record(metric, r, protected=True, harmed=is_harmed))
        if is_harmed:
            harmed.append(r.name)
            texts.append(_describe(r, metric))
            prefix = f"{challenger}.{metric}.{r.name}"
            check.numbers.update(
                {
                    f"{prefix}.estimate": r.challenger_estimate,
                    f"{prefix}.championEstimate": r.champion_estimate,
                    f"{prefix}.worseBy": r.worse_by,
                    f"{prefix}.pValue": r.p_value,
                    f"{prefix}.n": r.challenger_trials,
                }
            )
    check.records.extend(exploratory)
    check.harmed = tuple(harmed)
    check.summary = "; ".join(texts)
    return check


@dataclass
class SegmentSRM:
    """One protected segment's sample ratio check for one challenger in the running stratum."""

    challenger: str
    value: str
    p_value: float
    mismatch: bool
    segment_share: float
    rest_share: float
    summary: str


#: The per-variant sample size the sample ratio mixtures are tuned at.
SRM_TUNING_N = 10_000


def _srm_one(
    ctx: Tick, stratum: Stratum, challenger: str, value: str, level: float
) -> SegmentSRM | None:
    primary = ctx.spec.metrics.primary.name
    seg = stratum.segment_trials.get(value, {})
    seg_c, seg_t = seg.get(ctx.champion, 0.0), seg.get(challenger, 0.0)
    field = counts.SAMPLE_FIELD[ctx.spec.metrics.primary.metric_type]
    tot_c, tot_t = (
        float(getattr(stratum.totals.get(v, {}).get(primary) or MetricCounters(), field) or 0.0)
        for v in (ctx.champion, challenger)
    )
    rest_c, rest_t = max(0.0, tot_c - seg_c), max(0.0, tot_t - seg_t)
    if min(seg_c + seg_t, rest_c + rest_t) <= 0:
        return None
    w_c, w_t = stratum.weights.get(ctx.champion, 0), stratum.weights.get(challenger, 0)
    if w_c <= 0 or w_t <= 0:
        return None
    state = stratum.segment_srm.setdefault(f"{challenger}/{value}", SequentialState())
    res = sequential.sequential_test_proportions(
        rest_t,
        rest_c + rest_t,
        seg_t,
        seg_c + seg_t,
        alpha=level,
        tau2=state.tau2,
        planned_n_per_variant=None if state.tau2 is not None else SRM_TUNING_N,
        baseline=w_t / (w_c + w_t),
        previous_max_log_e=state.max_log_e_value,
    )
    if state.tau2 is None:
        state.tau2 = float(res.extra["tau2"])
    state.max_log_e_value = max(state.max_log_e_value, float(res.extra["log_e_value_max"]))
    p = float(res.p_value)
    share_seg, share_rest = seg_t / (seg_c + seg_t), rest_t / (rest_c + rest_t)
    summary = (
        f"segment {value}: {challenger} has {pct(share_seg)} of its samples against {pct(share_rest)} "
        f"of the rest (always-valid p {fmt(p)}, threshold {fmt(level)})"
    )
    return SegmentSRM(challenger, value, p, p < level, share_seg, share_rest, summary)


def sample_ratio(ctx: Tick, status: ModelExperimentStatus) -> list[SegmentSRM]:
    """Each protected segment's split against the rest's, in the running stratum (see above)."""
    segments = ctx.spec.metrics.segments
    if segments is None or not segments.protected or not status.strata:
        return []
    stratum = status.strata[-1]
    if stratum.counted_from is None or stratum.ended_at is not None:
        return []
    level = ctx.spec.analysis.srm_threshold / len(segments.protected)
    found = (
        _srm_one(ctx, stratum, challenger, p.value, level)
        for challenger in ctx.live(status)
        for p in segments.protected
    )
    return [f for f in found if f is not None]


def evaluate(ctx: Tick, status: ModelExperimentStatus, plan_n: int | None) -> list[SegmentCheck]:
    """Every segmented metric's segments, for every live challenger (updates the carried state)."""
    segments = ctx.spec.metrics.segments
    if segments is None:
        return []
    return [
        _one(ctx, status, segments, metric, challenger, plan_n)
        for metric in ctx.spec.metrics.segmented()
        for challenger in ctx.live(status)
        if metric in status.breakdowns
    ]
