"""The primary metric (and the secondary metrics), challenger by challenger, stratified by step.

Estimate. In every stratum (a step, or a part of one) the difference challenger - champion is
estimated on that stratum's own counts, with its variance; the strata are combined with
inverse-variance weights (:func:`modelrollout.stats.stratified.combine_fixed_effect`), so a change
of weights cannot cause a Simpson's paradox. Per stratum:

* proportions: ``p_t - p_c`` with the Agresti-Caffo variances of
  :func:`modelrollout.stats.sequential.proportions_difference` (one pseudo-success and
  pseudo-failure per arm, which keeps a small stratum with no successes from claiming a zero
  variance);
* means: Welch's unpooled variance (:func:`modelrollout.stats.stratified.stratified_means`);
* ratios: the delta method per arm (:func:`modelrollout.stats.ratio.ratio_estimate`).

For means and ratios a stratum joins only when each arm has :data:`MIN_STRATUM_SAMPLES` samples
in it (a standard deviation from a handful of values is not one).

Tests, by ``analysis.method``:

* ``sequential``: the normal-mixture e-value of the combined estimate and its variance
  (:func:`~modelrollout.stats.sequential.normal_mixture_log_e_value`) with ``tau2`` frozen at the
  plan, its running maximum (always-valid p = 1 / max e), and the confidence sequence
  (:func:`~modelrollout.stats.sequential.normal_mixture_radius`) intersected over ticks;
* ``fixed``: the stratified z-test, taken once, at the first tick where both arms have reached
  the planned n; its p-value, estimate and interval are frozen;
* ``bayesian``: the normal posterior of the stratified difference under a flat prior
  (:func:`modelrollout.stats.bayes.normal_means`, given the combined difference as a treatment arm
  against a zero control that each carry half its variance: that function depends on the arms
  only through the difference and its variance). A Beta-Binomial posterior of pooled counts
  would bring back the Simpson's paradox the strata remove.

Intervals are at level ``1 - alpha / m`` (Bonferroni; ``m`` = challengers x (1 + decisive
secondaries), fixed by the spec so the running intersection stays valid); p-values of the primary
and the decisive secondary metrics are Holm-corrected together at ``alpha`` (challengers that are
out count with p = 1, which keeps the family fixed). Secondary metrics that are not decisive are
reported with uncorrected p-values and decide nothing. With ``bayesian`` the intervals are
equal-tailed credible intervals at ``2 * probabilityThreshold - 1``, so their lower end is the
``1 - probabilityThreshold`` quantile.

Verdicts (the "gain" is the difference signed so that positive is better; its interval is read on
the metric's ``mdeType`` scale, relative meaning divided by the champion's absolute value):

* superiority: **Better** when significant (Holm; bayesian: P(better) >= threshold) with a
  positive gain and, when ``practicalThreshold`` is set, the gain's lower bound at least that;
  **Worse** when significant with a negative gain (bayesian: P(better) <= 1 - threshold);
* nonInferiority: **NonInferior** when the gain's lower bound is above ``-nonInferiorityMargin``
  (**Better** when it is also significantly better); **Worse** when the gain's upper bound is
  below ``-nonInferiorityMargin``;
* a decisive secondary metric is **Worse** as for superiority; the challenger is then dropped (its
  always-valid p-value never recovers, so it could never be promoted);
* ``fixed``, after its one look: **Inconclusive** when neither.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from modelrollout.api.presets import MetricType
from modelrollout.api.spec import Direction, Goal, MdeType, Method, Metric, SecondaryMetric
from modelrollout.api.status import (
    Interval,
    MetricCounters,
    MetricResult,
    ModelExperimentStatus,
    SequentialState,
    VariantDecision,
)
from modelrollout.errors import InvalidInputError
from modelrollout.policy import counts, plans, values
from modelrollout.policy.context import Tick, finite
from modelrollout.stats import bayes, multiple, ratio, sequential, stratified
from modelrollout.stats.results import meets_practical_threshold

#: Samples per arm a stratum needs to join the combination of a mean or ratio metric.
MIN_STRATUM_SAMPLES: Final = 30
_MAX_LOG_E: Final = 700.0

AnyMetric = Metric | SecondaryMetric


@dataclass
class MetricOutcome:
    """One outcome metric of one challenger at this tick."""

    challenger: str
    metric: AnyMetric
    primary: bool
    n_champion: float
    n_challenger: float
    champion_value: float | None
    challenger_value: float | None
    difference: float | None = None
    ci: tuple[float, float] | None = None  # of the difference, in the metric's units
    p_value: float | None = None  # raw (sequential, fixed)
    e_value: float | None = None
    probability: float | None = None  # bayesian
    expected_loss: float | None = None
    tested: bool = False
    method: str = ""
    p_adjusted: float | None = None
    significant: bool = False
    verdict: VariantDecision = VariantDecision.PENDING

    @property
    def decisive(self) -> bool:
        return self.primary or (isinstance(self.metric, SecondaryMetric) and self.metric.decisive)

    @property
    def sign(self) -> float:
        return 1.0 if self.metric.direction is Direction.INCREASE else -1.0

    @property
    def gain(self) -> float | None:
        return None if self.difference is None else self.sign * self.difference

    def scaled(self, x: float) -> float | None:
        """``x`` (in the metric's units) on the metric's mdeType scale."""
        if self.metric.mde_type is MdeType.ABSOLUTE:
            return x
        if self.champion_value is None or self.champion_value == 0:
            return None
        return x / abs(self.champion_value)

    def gain_ci(self) -> tuple[float, float] | None:
        """The gain's interval on the mdeType scale."""
        if self.ci is None:
            return None
        low, high = (self.ci[0], self.ci[1]) if self.sign > 0 else (-self.ci[1], -self.ci[0])
        lo, hi = self.scaled(low), self.scaled(high)
        return None if lo is None or hi is None else (lo, hi)

    def relative_lift(self) -> float | None:
        if self.difference is None or not self.champion_value:
            return None
        return self.difference / abs(self.champion_value)

    def result(self, planned_n: float | None) -> MetricResult:
        """The status record of this metric."""
        ci = None
        if self.ci is not None:
            lo, hi = self.scaled(self.ci[0]), self.scaled(self.ci[1])
            if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
                ci = Interval(low=lo, high=hi)
        return MetricResult(
            n=finite(self.n_challenger),
            estimate=finite(self.challenger_value),
            difference=finite(self.difference),
            relative_lift=finite(self.relative_lift()),
            ci=ci,
            p_value=finite(self.p_adjusted if self.p_adjusted is not None else self.p_value),
            e_value=finite(self.e_value),
            probability=finite(self.probability),
            expected_loss=finite(self.expected_loss),
            planned_n=finite(planned_n),
            method=self.method or None,
            decision=self.verdict,
        )


def _combined(
    ctx: Tick, status: ModelExperimentStatus, name: str, mtype: MetricType, challenger: str
) -> stratified.StratifiedResult | None:
    return combined_difference(status, name, mtype, ctx.champion, challenger, ctx.alpha_ci)


def combined_difference(
    status: ModelExperimentStatus, name: str, mtype: MetricType, champion: str, challenger: str, alpha: float
) -> stratified.StratifiedResult | None:
    """The challenger's difference from the champion on metric ``name``: each stratum's difference,
    combined by inverse variance over the strata (None before any stratum has usable counts).

    Public so the report recomputes exactly what the policy decides on."""
    cs = counts.series(status, name, champion)
    ts = counts.series(status, name, challenger)
    return combine_strata(cs, ts, mtype, alpha)


def combine_strata(
    cs: Sequence[MetricCounters | None],
    ts: Sequence[MetricCounters | None],
    mtype: MetricType,
    alpha: float,
) -> stratified.StratifiedResult | None:
    """The difference of the strata's counts ``ts - cs`` (one pair per stratum), combined by
    inverse variance as :func:`combined_difference` does (the novelty windows use it too)."""
    try:
        if mtype is MetricType.PROPORTION:
            keep = [
                (c, t)
                for c, t in zip(cs, ts, strict=True)
                if c is not None and t is not None and (c.trials or 0) > 0 and (t.trials or 0) > 0
            ]
            if not keep:
                return None
            arr = np.array(
                [[c.successes or 0.0, c.trials or 0.0, t.successes or 0.0, t.trials or 0.0] for c, t in keep]
            )
            pc, pt, vc, vt = sequential.proportions_difference(arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3])
            return stratified.combine_fixed_effect((pt - pc).tolist(), (vc + vt).tolist(), alpha=alpha)
        if mtype is MetricType.MEAN:
            rows = []
            for c, t in zip(cs, ts, strict=True):
                if c is None or t is None or min(c.count or 0, t.count or 0) < MIN_STRATUM_SAMPLES:
                    continue
                sc, st = values.summary(c), values.summary(t)
                rows.append((sc.n, sc.mean, sc.sd, st.n, st.mean, st.sd))
            if not rows:
                return None
            cols = list(zip(*rows, strict=True))
            return stratified.stratified_means(*cols, alpha=alpha)
        est: list[float] = []
        var: list[float] = []
        for c, t in zip(cs, ts, strict=True):
            if c is None or t is None or min(c.units or 0, t.units or 0) < MIN_STRATUM_SAMPLES:
                continue
            rc = ratio.ratio_estimate(values.ratio_sums(c), name="champion")
            rt = ratio.ratio_estimate(values.ratio_sums(t), name="challenger")
            est.append(rt.ratio - rc.ratio)
            var.append(rt.variance + rc.variance)
        if not est:
            return None
        return stratified.combine_fixed_effect(est, var, alpha=alpha)
    except InvalidInputError:
        return None


def _state(status: ModelExperimentStatus, challenger: str, name: str) -> SequentialState:
    return status.sequential.setdefault(challenger, {}).setdefault(name, SequentialState())


def _sequential(
    ctx: Tick, status: ModelExperimentStatus, out: MetricOutcome, comb: stratified.StratifiedResult
) -> None:
    state = _state(status, out.challenger, out.metric.name)
    if state.tau2 is None:
        state.tau2 = plans.tau2(ctx, status, out.metric.name, out.metric.metric_type)
    if state.tau2 is None:
        out.ci = (comb.ci.low, comb.ci.high)
        out.method = "stratified estimate; the sequential test starts once the plan is known"
        return
    var = comb.se * comb.se
    log_e = float(sequential.normal_mixture_log_e_value(comb.estimate, var, state.tau2)[()])
    radius = float(sequential.normal_mixture_radius(var, state.tau2, ctx.alpha_ci)[()])
    state.max_log_e_value = max(state.max_log_e_value, log_e)
    low, high = comb.estimate - radius, comb.estimate + radius
    if state.ci is not None and max(low, state.ci.low) <= min(high, state.ci.high):
        low, high = max(low, state.ci.low), min(high, state.ci.high)
    if math.isfinite(low) and math.isfinite(high):
        state.ci = Interval(low=low, high=high)
    out.ci = (low, high)
    out.p_value = min(1.0, math.exp(-state.max_log_e_value))
    out.e_value = math.exp(min(state.max_log_e_value, _MAX_LOG_E))
    out.tested = True
    out.method = "stratified mixture SPRT confidence sequence (always valid)"


def _fixed(
    ctx: Tick, status: ModelExperimentStatus, out: MetricOutcome, comb: stratified.StratifiedResult | None
) -> None:
    state = _state(status, out.challenger, out.metric.name)
    plan = status.plans.get(out.metric.name) or status.plans.get(ctx.spec.metrics.primary.name)
    ready = plan is not None and min(out.n_champion, out.n_challenger) >= plan.n
    if state.p_value is None and comb is not None and ready:
        state.p_value = comb.p_value
        state.estimate = comb.estimate
        state.ci = Interval(low=comb.ci.low, high=comb.ci.high)
    if state.p_value is not None:
        out.difference = state.estimate
        out.ci = (state.ci.low, state.ci.high) if state.ci is not None else None
        out.p_value = state.p_value
        out.tested = True
        out.method = "stratified z-test at the planned sample size (one look)"
    elif comb is not None:
        out.ci = (comb.ci.low, comb.ci.high)
        out.method = "stratified estimate; the fixed-horizon test waits for the planned sample size"


def _bayesian(ctx: Tick, out: MetricOutcome, comb: stratified.StratifiedResult) -> None:
    threshold = ctx.spec.analysis.probability_threshold
    gain = out.sign * comb.estimate
    res = bayes.normal_means(
        2.0, 0.0, comb.se, 2.0, gain, comb.se, direction="increase", credible_level=2.0 * threshold - 1.0
    )
    low, high = res.ci.low, res.ci.high
    out.ci = (low, high) if out.sign > 0 else (-high, -low)
    out.probability = res.probability_better
    out.expected_loss = res.expected_loss_treatment
    out.tested = True
    out.method = "normal posterior of the stratified difference (flat prior)"


def analyze(
    ctx: Tick, status: ModelExperimentStatus, metric: AnyMetric, challenger: str, *, primary: bool
) -> MetricOutcome:
    """Estimate and test ``metric`` for ``challenger`` (updates the sequential state)."""
    mtype = metric.metric_type
    pc = counts.pooled(status, metric.name, ctx.champion, mtype)
    pt = counts.pooled(status, metric.name, challenger, mtype)
    out = MetricOutcome(
        challenger=challenger,
        metric=metric,
        primary=primary,
        n_champion=counts.samples(pc, mtype),
        n_challenger=counts.samples(pt, mtype),
        champion_value=values.value(pc, mtype),
        challenger_value=values.value(pt, mtype),
    )
    comb = _combined(ctx, status, metric.name, mtype, challenger)
    if comb is not None:
        out.difference = comb.estimate
    method = ctx.spec.analysis.method
    if method is Method.FIXED:
        _fixed(ctx, status, out, comb)
    elif comb is None:
        return out
    elif method is Method.BAYESIAN:
        _bayesian(ctx, out, comb)
    else:
        _sequential(ctx, status, out, comb)
    return out


def correct(ctx: Tick, status: ModelExperimentStatus, outcomes: list[MetricOutcome]) -> None:
    """Holm across the decisive family, then the verdicts (in place)."""
    method = ctx.spec.analysis.method
    family = [o for o in outcomes if o.decisive]
    if method is not Method.BAYESIAN:
        live = set(ctx.live(status))
        slots: dict[tuple[str, str], float] = {}
        for c in ctx.challengers:
            for m in (ctx.spec.metrics.primary, *ctx.decisive):
                slots[(c, m.name)] = 1.0
        for o in family:
            if o.tested and o.p_value is not None and o.challenger in live:
                slots[(o.challenger, o.metric.name)] = o.p_value
        holm = multiple.holm(list(slots.values()), ctx.alpha)
        index = {key: i for i, key in enumerate(slots)}
        for o in family:
            i = index[(o.challenger, o.metric.name)]
            if o.tested:
                o.p_adjusted = float(holm.adjusted_p_values[i])
                o.significant = bool(holm.reject[i])
        for o in outcomes:
            if not o.decisive and o.tested and o.p_value is not None:
                o.significant = o.p_value <= ctx.alpha
    for o in outcomes:
        o.verdict = _verdict(ctx, o)


def _verdict(ctx: Tick, o: MetricOutcome) -> VariantDecision:
    if not o.tested or o.gain is None:
        return VariantDecision.PENDING
    analysis = ctx.spec.analysis
    if analysis.method is Method.BAYESIAN and o.probability is not None:
        threshold = analysis.probability_threshold
        better = o.probability >= threshold
        worse = o.probability <= 1.0 - threshold
    else:
        better = o.significant and o.gain > 0
        worse = o.significant and o.gain < 0
    gain_ci = o.gain_ci()
    if o.primary and analysis.goal is Goal.NON_INFERIORITY:
        margin = float(analysis.non_inferiority_margin or 0.0)
        if gain_ci is not None and gain_ci[1] < -margin:
            return VariantDecision.WORSE
        if gain_ci is not None and gain_ci[0] > -margin:
            return VariantDecision.BETTER if better else VariantDecision.NON_INFERIOR
    else:
        if worse:
            return VariantDecision.WORSE
        practical = analysis.practical_threshold if o.primary else None
        if better and meets_practical_threshold(gain_ci[0] if gain_ci is not None else None, practical):
            return VariantDecision.BETTER
    if analysis.method is Method.FIXED:
        return VariantDecision.INCONCLUSIVE
    return VariantDecision.PENDING


def non_inferior(ctx: Tick, o: MetricOutcome) -> bool:
    """Whether ``o`` shows the challenger within ``nonInferiorityMargin`` (for promoteIfNonInferior)."""
    margin = ctx.spec.analysis.non_inferiority_margin
    gain_ci = o.gain_ci()
    return margin is not None and o.tested and gain_ci is not None and gain_ci[0] > -margin
