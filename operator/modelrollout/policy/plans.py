"""Planned sample sizes, frozen in ``status.plans`` once computed, and the mixture tuning they give.

The plan of the primary metric (and of each decisive secondary metric, with its own MDE) comes
from :mod:`modelrollout.stats.power` with the spec's ``minimumDetectableEffect`` (signed by the
metric's direction), ``analysis.alpha`` and ``analysis.power``, Bonferroni-corrected over the
whole family (challengers x (primary + decisive secondaries)), and the champion's value observed
so far in the steps: its rate, or its mean and standard deviation (a ratio is planned as the mean
of its linearized per-unit values, whose standard deviation the delta method gives). It is
computed once the champion has :data:`MIN_PLAN_SAMPLES` samples and a usable value (a rate
strictly between 0 and 1, a positive standard deviation), then frozen. A plan that cannot exist
(say a relative MDE that pushes a rate beyond 1) is reported as an InvalidSpec problem of the
metric's ``minimumDetectableEffect``.

Each challenger's mixing variance ``tau2`` is frozen (``status.sequential``) when the metric's
plan is known: :func:`~modelrollout.stats.sequential.tau2_for_proportions` or
``tau2_for_means`` at the planned n and at the level of the intervals (alpha / family size).
Secondary metrics that are not decisive have no plan of their own; their mixtures are tuned at
the primary metric's planned n.
"""

from __future__ import annotations

from typing import Final

from modelrollout.api.observations import SpecProblem
from modelrollout.api.presets import MetricType
from modelrollout.api.spec import Direction, MdeType, Metric, SecondaryMetric
from modelrollout.api.status import ModelExperimentStatus, PlannedSample
from modelrollout.errors import InvalidInputError
from modelrollout.policy import counts, values
from modelrollout.policy.context import Tick
from modelrollout.stats import power, sequential

#: Champion samples (in the steps) needed before its value is trusted for the plan.
MIN_PLAN_SAMPLES: Final = 1000


def _field_path(ctx: Tick, metric: Metric | SecondaryMetric) -> str:
    if isinstance(metric, Metric):
        return "spec.metrics.primary.minimumDetectableEffect"
    index = list(ctx.spec.metrics.secondary).index(metric)
    return f"spec.metrics.secondary[{index}].minimumDetectableEffect"


def champion_value(
    ctx: Tick, status: ModelExperimentStatus, name: str, mtype: MetricType
) -> tuple[float, float | None] | None:
    """The champion's (value, per-unit sd) over the steps so far, or None while not usable.

    Proportions have no sd (None) and need a rate strictly between 0 and 1; means and ratios need
    a positive sd. Requires :data:`MIN_PLAN_SAMPLES` samples.
    """
    pooled = counts.pooled(status, name, ctx.champion, mtype)
    if pooled is None or counts.samples(pooled, mtype) < MIN_PLAN_SAMPLES:
        return None
    try:
        if mtype is MetricType.PROPORTION:
            rate = values.value(pooled, mtype)
            if rate is None or not 0.0 < rate < 1.0:
                return None
            return rate, None
        _, mean, sd = values.as_mean(pooled, mtype)
    except InvalidInputError:
        return None
    return (mean, sd) if sd > 0 else None


def ensure(ctx: Tick, status: ModelExperimentStatus) -> list[SpecProblem]:
    """Compute and freeze the plans that can be computed now; return the impossible ones."""
    problems: list[SpecProblem] = []
    metrics: list[Metric | SecondaryMetric] = [ctx.spec.metrics.primary, *ctx.decisive]
    for metric in metrics:
        if metric.name in status.plans or metric.minimum_detectable_effect is None:
            continue
        mtype = metric.metric_type
        observed = champion_value(ctx, status, metric.name, mtype)
        if observed is None:
            continue
        baseline, sd = observed
        mde = metric.minimum_detectable_effect
        signed = mde if metric.direction is Direction.INCREASE else -mde
        relative = metric.mde_type is MdeType.RELATIVE
        analysis = ctx.spec.analysis
        try:
            if sd is None:
                result = power.sample_size_proportions(
                    baseline,
                    signed,
                    relative=relative,
                    alpha=analysis.alpha,
                    power=analysis.power,
                    n_treatments=ctx.family_size,
                )
            else:
                result = power.sample_size_means(
                    baseline,
                    sd,
                    signed,
                    relative=relative,
                    alpha=analysis.alpha,
                    power=analysis.power,
                    n_treatments=ctx.family_size,
                )
        except InvalidInputError as exc:
            problems.append(
                SpecProblem(
                    _field_path(ctx, metric),
                    f"no sample size can be planned for {metric.name} at the champion's observed value "
                    f"{baseline:.4g}: {exc}",
                )
            )
            continue
        status.plans[metric.name] = PlannedSample(
            n=max(1, int(result.sample_size_per_variant)), baseline=baseline, sd=sd, at=ctx.now
        )
    return problems


def tau2(ctx: Tick, status: ModelExperimentStatus, name: str, mtype: MetricType) -> float | None:
    """The mixing variance for ``name`` now: from its own plan, else (secondary metrics without one)
    at the primary's planned n with the champion's value so far; None while neither is known."""
    plan = status.plans.get(name)
    if plan is not None:
        n, baseline, sd = plan.n, plan.baseline, plan.sd
    else:
        primary = status.plans.get(ctx.spec.metrics.primary.name)
        observed = champion_value(ctx, status, name, mtype)
        if primary is None or observed is None:
            return None
        n, (baseline, sd) = primary.n, observed
    try:
        if sd is None:
            return sequential.tau2_for_proportions(baseline, n, ctx.alpha_ci)
        return sequential.tau2_for_means(sd, n, ctx.alpha_ci)
    except InvalidInputError:
        return None
