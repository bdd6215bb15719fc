"""Guardrails: checked on every tick, for every live challenger, on the counts since the start.

* **Margin guardrails** (``maxRelativeIncrease`` / ``maxAbsoluteIncrease``): the always-valid
  one-sided test of :func:`modelrollout.stats.sequential.sequential_noninferiority` (proportions)
  or ``sequential_noninferiority_means`` (means; ratios are handed to it as their estimate and
  delta-method variance, see :func:`modelrollout.policy.values.as_mean`), on the cumulative
  counts, carrying the running maximum of the e-process in ``status.sequential``. A breach is
  ``p < analysis.alpha``. Guardrails are not corrected for multiplicity: each is a safety check,
  and a spurious rollback is the safe error. The mixture's ``tau2`` is frozen at the first
  evaluation, tuned at the primary metric's planned n when it is known by then, else at
  :data:`FALLBACK_TUNING_N` per variant (the shadow phase, or a champion whose baseline is not yet
  usable); either way it never looks at the challenger-champion difference. The mixture is a
  mixture over scales (:func:`modelrollout.stats.sequential.guardrail_scales`): half its weight
  at that tuning, half on faster scales down to a few samples per variant, so a gross breach
  (an error rate jumping from 0.1 % to 30 %) is caught within tens of the challenger's requests
  instead of the hundreds a mixture tuned to the plan needs; the fastest scale is frozen with
  ``tau2``.
* **Threshold guardrails** (``threshold`` + ``failureLimit``, Flagger style): the challenger's
  value over the last tick's increment (the change of its cumulative counters since the previous
  tick, like Flagger's query over the last interval) is compared with the threshold; each tick
  over it adds a failure, a tick within it resets the count, and a tick without new samples leaves
  it as it is. ``failureLimit`` failures in a row is a breach.

A breach drops the challenger in the same tick. A *warning* (a margin guardrail whose point
estimate is beyond its margin, or a threshold guardrail currently failing) is a harm signal: the
steps do not advance, the shadow does not pass, and the challenger is not promoted while it lasts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from modelrollout.api.observations import ALL_BUCKET
from modelrollout.api.presets import MetricType
from modelrollout.api.spec import Guardrail
from modelrollout.api.status import (
    GuardrailResult,
    Interval,
    MetricCounters,
    ModelExperimentStatus,
    QuantileState,
    SequentialState,
)
from modelrollout.errors import InvalidInputError
from modelrollout.policy import counts, values
from modelrollout.policy.context import Tick, finite, fmt
from modelrollout.stats import quantiles, sequential

#: Per-variant sample size the guardrail mixtures are tuned at when no plan is known yet.
FALLBACK_TUNING_N: Final = 1000


@dataclass
class GuardrailCheck:
    """One guardrail of one challenger at this tick."""

    challenger: str
    name: str
    result: GuardrailResult
    evaluated: bool
    seen: bool = False
    breached: bool = False
    warning: bool = False
    summary: str = ""
    numbers: dict[str, float | None] = field(default_factory=dict)


def _state(status: ModelExperimentStatus, challenger: str, name: str) -> SequentialState:
    return status.sequential.setdefault(challenger, {}).setdefault(name, SequentialState())


def _margin(
    ctx: Tick,
    g: Guardrail,
    state: SequentialState,
    champion: MetricCounters,
    challenger: MetricCounters,
    plan_n: int | None,
) -> sequential.GuardrailResult:
    relative = g.max_relative_increase is not None
    margin = float((g.max_relative_increase if relative else g.max_absolute_increase) or 0.0)
    tau2 = state.tau2
    planned = None if tau2 is not None else float(plan_n or FALLBACK_TUNING_N)
    # Frozen with tau2: the fastest scale is tuned once, like the plan's.
    fast_tau2 = state.fast_tau2 if tau2 is not None else None
    mtype = g.metric_type
    if mtype is MetricType.PROPORTION:
        return sequential.sequential_noninferiority(
            float(champion.successes or 0.0),
            float(champion.trials or 0.0),
            float(challenger.successes or 0.0),
            float(challenger.trials or 0.0),
            margin=margin,
            relative=relative,
            higher_is_worse=g.higher_is_worse,
            alpha=ctx.alpha,
            tau2=tau2,
            planned_n_per_variant=planned,
            previous_max_log_e=state.max_log_e_value,
            fast_tau2=fast_tau2,
        )
    nc, mc, sc = values.as_mean(champion, mtype)
    nt, mt, st = values.as_mean(challenger, mtype)
    return sequential.sequential_noninferiority_means(
        nc,
        mc,
        sc,
        nt,
        mt,
        st,
        margin=margin,
        relative=relative,
        higher_is_worse=g.higher_is_worse,
        alpha=ctx.alpha,
        tau2=tau2,
        planned_n_per_variant=planned,
        previous_max_log_e=state.max_log_e_value,
        fast_tau2=fast_tau2,
    )


def _check_margin(
    ctx: Tick,
    status: ModelExperimentStatus,
    g: Guardrail,
    name: str,
    champion: MetricCounters,
    challenger: MetricCounters,
    plan_n: int | None,
) -> GuardrailCheck:
    state = _state(status, name, g.name)
    try:
        res = _margin(ctx, g, state, champion, challenger, plan_n)
    except InvalidInputError as exc:
        return GuardrailCheck(
            name, g.name, GuardrailResult(), evaluated=False, summary=f"not evaluated yet ({exc})"
        )
    if state.tau2 is None:
        state.tau2 = res.tau2
        state.fast_tau2 = res.fast_tau2
    state.max_log_e_value = max(state.max_log_e_value, res.log_e_value_max)
    c, t = res.control_estimate, res.treatment_estimate
    limit = res.margin * abs(c) if res.relative else res.margin
    sign = 1.0 if g.higher_is_worse else -1.0
    result = GuardrailResult(
        estimate=finite(t),
        champion_estimate=finite(c),
        difference=finite(sign * (t - c)),
        limit=finite(limit),
        p_value=finite(res.p_value),
        e_value=finite(res.e_value),
        breached=res.breached,
    )
    kind = "relative" if res.relative else "absolute"
    # A relative change from a champion at 0 has no finite value: say what it means instead.
    worse = f"worse by {fmt(res.worse_by)}" if math.isfinite(res.worse_by) else "the champion is at 0"
    summary = (
        f"{name} {g.name} {fmt(t)} vs champion {fmt(c)} ({worse}, {kind} margin "
        f"{fmt(res.margin)}; always-valid p {fmt(res.p_value)}, e {fmt(res.e_value)})"
    )
    numbers: dict[str, float | None] = {
        "estimate": t,
        "championEstimate": c,
        "worseBy": res.worse_by,
        "margin": res.margin,
        "pValue": res.p_value,
        "eValue": res.e_value,
    }
    return GuardrailCheck(
        name,
        g.name,
        result,
        evaluated=True,
        seen=True,
        breached=res.breached,
        warning=res.contrast > 0,
        summary=summary,
        numbers=numbers,
    )


def _check_threshold(
    ctx: Tick, status: ModelExperimentStatus, g: Guardrail, name: str, challenger: MetricCounters
) -> GuardrailCheck:
    state = _state(status, name, g.name)
    mtype = g.metric_type
    if ctx.count_once(f"window/{name}/{g.name}"):
        state.previous_counters = state.last_counters
        state.last_counters = challenger
    last = state.last_counters or challenger
    base = state.previous_counters or counts.zero(mtype)
    window = counts.minus(last, base, mtype)
    val = values.value(window, mtype) if not isinstance(window, str) else None
    threshold = float(g.threshold or 0.0)
    limit = int(g.failure_limit or 1)
    sign = 1.0 if g.higher_is_worse else -1.0
    seen = counts.samples(last, mtype) > 0
    if val is None:
        return GuardrailCheck(
            name,
            g.name,
            GuardrailResult(limit=threshold, breached=state.consecutive_failures >= limit),
            evaluated=False,
            seen=seen,
            breached=state.consecutive_failures >= limit,
            warning=state.consecutive_failures > 0,
            summary=f"{name} {g.name}: no new samples since the last tick",
        )
    failing = sign * (val - threshold) > 0
    if ctx.count_once(f"failures/{name}/{g.name}"):
        state.consecutive_failures = state.consecutive_failures + 1 if failing else 0
    breached = state.consecutive_failures >= limit
    side = "above" if g.higher_is_worse else "below"
    summary = (
        f"{name} {g.name} {fmt(val)} over the last tick ({'' if failing else 'not '}{side} threshold "
        f"{fmt(threshold)}; {state.consecutive_failures} of {limit} failures in a row)"
    )
    return GuardrailCheck(
        name,
        g.name,
        GuardrailResult(
            estimate=finite(val),
            difference=finite(sign * (val - threshold)),
            limit=threshold,
            breached=breached,
        ),
        evaluated=True,
        seen=True,
        breached=breached,
        warning=state.consecutive_failures > 0,
        summary=summary,
        numbers={
            "estimate": val,
            "threshold": threshold,
            "consecutiveFailures": state.consecutive_failures,
            "failureLimit": limit,
        },
    )


def histogram(
    by_edge: Mapping[str, Mapping[str, MetricCounters]], variants: Sequence[str]
) -> tuple[list[float], dict[str, list[float]]] | None:
    """The finite bucket edges that every one of ``variants`` has, and each variant's cumulative
    counts at them followed by its total (the ``+Inf`` bucket); None without a total."""
    totals = by_edge.get(ALL_BUCKET, {})
    if any(v not in totals for v in variants):
        return None
    keyed: dict[float, str] = {}
    for value, by_variant in by_edge.items():
        edge = _edge_of(value)
        if edge is not None and all(v in by_variant for v in variants):
            keyed[edge] = value
    edges = sorted(keyed)
    cumulative = {
        v: [float(by_edge[keyed[e]][v].trials or 0.0) for e in edges] + [float(totals[v].trials or 0.0)]
        for v in variants
    }
    return edges, cumulative


def _edge_of(value: str) -> float | None:
    """A finite bucket edge from its ``le`` value (None: ``+Inf``, or not a number)."""
    try:
        edge = float(value)
    except ValueError:
        return None
    return edge if math.isfinite(edge) else None


def _from_store(values: Sequence[float | None]) -> list[float]:
    return [-math.inf if x is None else float(x) for x in values]


def _to_store(values: Sequence[float]) -> list[float | None]:
    return [float(x) if math.isfinite(x) else None for x in values]


def _quantile_state(
    status: ModelExperimentStatus, challenger: str, name: str, edges: list[float]
) -> QuantileState:
    by_name = status.quantiles.setdefault(challenger, {})
    state = by_name.get(name)
    if state is None or state.edges != edges:  # new layout: the old maxima are of other edges
        state = QuantileState(edges=edges)
        by_name[name] = state
    return state


def _check_quantile(ctx: Tick, status: ModelExperimentStatus, g: Guardrail, name: str) -> GuardrailCheck:
    found = histogram(counts.breakdown(status, g.name), (ctx.champion, name))
    if found is None or not found[0] or min(found[1][ctx.champion][-1], found[1][name][-1]) <= 0:
        return GuardrailCheck(name, g.name, GuardrailResult(), evaluated=False, summary="no requests yet")
    edges, cumulative = found
    state = _quantile_state(status, name, g.name, edges)
    relative = g.max_relative_increase is not None
    margin = float((g.max_relative_increase if relative else g.max_absolute_increase) or 0.0)
    carried = None
    if state.champion_below:
        carried = quantiles.QuantileCarried(
            _from_store(state.champion_below),
            _from_store(state.champion_above),
            _from_store(state.challenger_below),
            _from_store(state.challenger_above),
        )
    res = quantiles.sequential_quantile_guardrail(
        edges,
        cumulative[ctx.champion],
        cumulative[name],
        quantile=float(g.quantile or 0.95),
        margin=margin,
        relative=relative,
        alpha=ctx.alpha,
        carried=carried,
    )
    state.champion_below = _to_store(res.champion.log_e_below)
    state.champion_above = _to_store(res.champion.log_e_above)
    state.challenger_below = _to_store(res.challenger.log_e_below)
    state.challenger_above = _to_store(res.challenger.log_e_above)
    return _quantile_check(name, g, res, margin)


def _bounds(b: quantiles.QuantileBounds) -> Interval | None:
    if not (math.isfinite(b.lower) and math.isfinite(b.upper)):
        return None
    return Interval(low=b.lower, high=b.upper)


def _edges(b: quantiles.QuantileBounds) -> str:
    """The always-valid bracket of a quantile, ``(low, high]``; an end not known yet is ``inf``."""
    low = fmt(b.lower) if math.isfinite(b.lower) else "-inf"
    high = fmt(b.upper) if math.isfinite(b.upper) else "inf"
    return f"({low}, {high}]"


def _worse(lower_bound: float) -> str:
    return fmt(lower_bound) if math.isfinite(lower_bound) else "nothing yet"


def _quantile_check(
    name: str, g: Guardrail, res: quantiles.QuantileGuardrailResult, margin: float
) -> GuardrailCheck:
    c, t = res.champion, res.challenger
    limit = margin * c.estimate if res.relative and math.isfinite(c.estimate) else margin
    kind = "relative" if res.relative else "absolute"
    p = f"p{round(res.quantile * 100, 1):g}"
    summary = (
        f"{name} {g.name} {p} {fmt(t.estimate)} (in {_edges(t)}) vs champion {fmt(c.estimate)} "
        f"(in {_edges(c)}); worse by at least {_worse(res.worse_by_lower_bound)}, {kind} margin {fmt(margin)}"
    )
    return GuardrailCheck(
        name,
        g.name,
        GuardrailResult(
            estimate=finite(t.estimate),
            champion_estimate=finite(c.estimate),
            difference=finite(t.estimate - c.estimate),
            limit=finite(limit),
            breached=res.breached,
            challenger_bounds=_bounds(t),
            champion_bounds=_bounds(c),
        ),
        evaluated=True,
        seen=True,
        breached=res.breached,
        warning=math.isfinite(res.worse_by) and res.worse_by > margin,
        summary=summary,
        numbers={
            "estimate": t.estimate,
            "championEstimate": c.estimate,
            "worseBy": res.worse_by,
            "worseByLowerBound": res.worse_by_lower_bound,
            "margin": margin,
            "challengerLower": t.lower,
            "championUpper": c.upper,
        },
    )


def evaluate(
    ctx: Tick, status: ModelExperimentStatus, readings: dict[str, counts.Reading], plan_n: int | None
) -> list[GuardrailCheck]:
    """Every guardrail with a usable reading, for every live challenger (updates the state)."""
    out: list[GuardrailCheck] = []
    for g in ctx.spec.metrics.guardrails:
        reading = readings.get(g.name)
        if not isinstance(reading, counts.Known):
            continue
        champion = reading.values[ctx.champion]
        for name in ctx.live(status):
            challenger = reading.values[name]
            if g.metric_type is MetricType.QUANTILE:
                out.append(_check_quantile(ctx, status, g, name))
            elif g.threshold is not None:
                out.append(_check_threshold(ctx, status, g, name, challenger))
            else:
                out.append(_check_margin(ctx, status, g, name, champion, challenger, plan_n))
    return out
