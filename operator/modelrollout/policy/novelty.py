"""The novelty check (``spec.analysis.novelty``): the challenger's lift per time window, and the
always-valid test that it decays (:mod:`modelrollout.stats.novelty`).

Windows
-------
The live analysis, from the start of the first step (``status.strata[0].startedAt``), is cut into
consecutive windows of ``novelty.window``. A window closes at the first tick at or after its end
at which the champion and every live challenger have
:data:`~modelrollout.stats.novelty.MIN_WINDOW_SAMPLES` samples of the primary metric in it;
until then it runs on. Its counts are what the strata counted while it was open: for each
stratum, its totals at the close minus its totals when the window began. So a window's lift is
stratified by step exactly as the primary metric's is (:func:`~modelrollout.policy.primary.combine_strata`),
and a step change inside a window cannot bias it. A window is cut by the tick that counted an
increment, not by the increment's own time: a late scrape counts in the window open when it
arrives, which moves a few samples by a tick and biases nothing.

Memory (``status.novelty``, bounded)
-------------------------------------
* ``windowStart`` and ``base``: when the open window began, and the totals then of the strata that
  may still count (the running one, and those that ended less than a window before); a stratum
  that ended earlier than that no longer changes and is left out. At most one entry per stratum.
* ``tau2``: the e-process's mixing scale, tuned once to ``minDuration / window`` windows (the
  number the experiment sees before a promotion can happen) and frozen.
* per challenger, :class:`~modelrollout.api.status.NoveltyTest`: the O(1) sums of the test
  (:class:`~modelrollout.stats.novelty.DecayState`), when a decay was found (it stays found: the
  e-process's running maximum never falls), and at most
  :data:`~modelrollout.api.status.NOVELTY_WINDOWS_LIMIT` window summaries for the status and the
  messages (neighbours merged in pairs beyond that; the test itself never needs them).

The early and recent lifts shown are those of the first and the second half of the summaries. A
decay found emits a Warning Event ``NoveltyEffect`` once; :mod:`~modelrollout.policy.decide`
holds the promotion of that challenger.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from modelrollout.api.presets import MetricType
from modelrollout.api.spec import Direction
from modelrollout.api.status import (
    NOVELTY_WINDOWS_LIMIT,
    MetricCounters,
    ModelExperimentStatus,
    NoveltyBase,
    NoveltyResult,
    NoveltyState,
    NoveltyTest,
    NoveltyWindow,
)
from modelrollout.policy import counts, primary, values
from modelrollout.policy.context import Tick, finite, fmt, pct
from modelrollout.policy.decision import EventType
from modelrollout.stats import novelty as decay

Numbers = dict[str, float | None]


@dataclass(frozen=True)
class NoveltyCheck:
    """One challenger's novelty check at this tick."""

    challenger: str
    windows: int
    early_lift: float | None
    recent_lift: float | None
    p_value: float | None
    decaying: bool
    alpha: float
    window: str
    numbers: Numbers = field(default_factory=dict)

    @property
    def summary(self) -> str:
        return (
            f"{self.challenger}: lift {pct(self.early_lift)} in the early windows, "
            f"{pct(self.recent_lift)} in the recent ones ({self.windows} windows of {self.window}), "
            f"decay p {fmt(self.p_value)}" + (f" < {fmt(self.alpha)}" if self.decaying else "")
        )

    def result(self) -> NoveltyResult:
        return NoveltyResult(
            windows=self.windows,
            early_lift=finite(self.early_lift),
            recent_lift=finite(self.recent_lift),
            p_value=finite(self.p_value),
            decaying=self.decaying,
        )


def live_start(status: ModelExperimentStatus) -> datetime | None:
    """When live traffic first reached the challengers (the first stratum's start), or None."""
    return status.strata[0].started_at if status.strata else None


def evaluate(ctx: Tick, status: ModelExperimentStatus, live: Sequence[str]) -> dict[str, NoveltyCheck]:
    """Close the open window when it is due, update the tests, and report every live challenger's
    check (nothing when the check is off or no step has started). Updates ``status.novelty``."""
    spec = ctx.spec.analysis.novelty
    if not spec.enabled or not status.strata:
        return {}
    state = status.novelty
    if state is None:
        state = NoveltyState(window_start=status.strata[0].started_at)
        status.novelty = state
    if state.tau2 is None:
        state.tau2 = decay.decay_tau2(ctx.min_duration / ctx.novelty_window, spec.alpha)
    if ctx.now >= state.window_start + ctx.novelty_window:
        _close(ctx, status, state, live)
    return {c: _check(ctx, state, c) for c in live}


def _snapshot(status: ModelExperimentStatus, name: str, ctx: Tick) -> list[NoveltyBase]:
    """The totals of the strata that may still count, at the start of the next window."""
    out = []
    since = ctx.now - ctx.novelty_window
    for index, stratum in enumerate(status.strata):
        if stratum.ended_at is not None and stratum.ended_at < since:
            continue
        totals = {v: m[name] for v, m in stratum.totals.items() if name in m}
        out.append(NoveltyBase(stratum=index, totals=totals))
    return out


def _close(ctx: Tick, status: ModelExperimentStatus, state: NoveltyState, live: Sequence[str]) -> None:
    metric = ctx.spec.metrics.primary
    name, mtype = metric.name, metric.metric_type
    variants = (ctx.champion, *live)
    cells = _cells(status, state, name, mtype, variants)
    seen = [sum(counts.samples(cell.get(v), mtype) for cell in cells) for v in variants]
    if min(seen) < decay.MIN_WINDOW_SAMPLES:
        return  # too few samples yet: the window runs on
    sign = 1.0 if metric.direction is Direction.INCREASE else -1.0
    champion = [cell.get(ctx.champion) for cell in cells]
    pooled = _pooled(champion, mtype)
    assert state.tau2 is not None
    for c in live:
        comb = primary.combine_strata(champion, [cell.get(c) for cell in cells], mtype, ctx.alpha)
        if comb is None or not (comb.se > 0 and math.isfinite(comb.estimate)):
            continue
        test = state.challengers.setdefault(c, NoveltyTest())
        was = decay.DecayState(
            test.windows, test.information, test.weighted, test.residual_sum, test.max_log_e_value
        )
        new, _ = decay.update(was, sign * comb.estimate, comb.se * comb.se, state.tau2)
        test.windows, test.information, test.weighted = new.windows, new.information, new.weighted
        test.residual_sum, test.max_log_e_value = new.residual_sum, new.max_log_e_value
        window = NoveltyWindow(
            start=state.window_start,
            end=ctx.now,
            difference=comb.estimate,
            variance=comb.se * comb.se,
            champion=finite(values.value(pooled, mtype)),
            samples=counts.samples(pooled, mtype),
        )
        test.summaries = _bounded([*test.summaries, window])
        if test.found_at is None and new.decayed(ctx.spec.analysis.novelty.alpha):
            test.found_at = ctx.now
            found = _check(ctx, state, c)
            ctx.emit(
                EventType.WARNING,
                "NoveltyEffect",
                f"Novelty effect: {found.summary}; a promotion of {c} is held.",
            )
    state.window_start = ctx.now
    state.base = _snapshot(status, name, ctx)


def _cells(
    status: ModelExperimentStatus, state: NoveltyState, name: str, mtype: MetricType, variants: Sequence[str]
) -> list[dict[str, MetricCounters]]:
    base = {b.stratum: b.totals for b in state.base}
    cells: list[dict[str, MetricCounters]] = []
    for index, stratum in enumerate(status.strata):
        before = base.get(index)
        if before is None and stratum.started_at < state.window_start:
            continue  # it ended before the window began: it no longer counts
        cell: dict[str, MetricCounters] = {}
        for v in variants:
            now = stratum.totals.get(v, {}).get(name)
            if now is None:
                continue
            start = (before or {}).get(v)
            if start is None:
                cell[v] = now
                continue
            diff = counts.minus(now, start, mtype)
            if isinstance(diff, MetricCounters):
                cell[v] = diff
        cells.append(cell)
    return cells


def _pooled(series: Sequence[MetricCounters | None], mtype: MetricType) -> MetricCounters | None:
    out: MetricCounters | None = None
    for c in series:
        if c is not None:
            out = c if out is None else counts.plus(out, c, mtype)
    return out


def _merge(a: NoveltyWindow, b: NoveltyWindow) -> NoveltyWindow:
    info = 1.0 / a.variance + 1.0 / b.variance
    samples = a.samples + b.samples
    champion = None
    if a.champion is not None and b.champion is not None and samples > 0:
        champion = (a.champion * a.samples + b.champion * b.samples) / samples
    return NoveltyWindow(
        start=a.start,
        end=b.end,
        difference=(a.difference / a.variance + b.difference / b.variance) / info,
        variance=1.0 / info,
        champion=champion,
        samples=samples,
    )


def _bounded(windows: list[NoveltyWindow]) -> list[NoveltyWindow]:
    """At most :data:`NOVELTY_WINDOWS_LIMIT` summaries: beyond it, neighbours merge in pairs."""
    if len(windows) <= NOVELTY_WINDOWS_LIMIT:
        return windows
    merged = [_merge(windows[i], windows[i + 1]) for i in range(0, len(windows) - 1, 2)]
    if len(windows) % 2:
        merged.append(windows[-1])
    return merged


def _lift(windows: Sequence[NoveltyWindow]) -> float | None:
    """The relative lift of ``windows`` together (inverse-variance difference over the champion)."""
    if not windows:
        return None
    combined = windows[0]
    for w in windows[1:]:
        combined = _merge(combined, w)
    if not combined.champion:
        return None
    return combined.difference / abs(combined.champion)


def _check(ctx: Tick, state: NoveltyState, challenger: str) -> NoveltyCheck:
    spec = ctx.spec.analysis.novelty
    test = state.challengers.get(challenger) or NoveltyTest()
    half = len(test.summaries) // 2
    early = _lift(test.summaries[:half]) if half else None
    recent = _lift(test.summaries[half:]) if half else None
    p_value = min(1.0, math.exp(-test.max_log_e_value)) if test.windows > 1 else None
    decaying = test.found_at is not None
    prefix = f"{challenger}.novelty"
    numbers: Numbers = {
        f"{prefix}.earlyLift": early,
        f"{prefix}.recentLift": recent,
        f"{prefix}.pValue": p_value,
        f"{prefix}.alpha": spec.alpha,
        f"{prefix}.windows": test.windows,
    }
    return NoveltyCheck(
        challenger=challenger,
        windows=test.windows,
        early_lift=early,
        recent_lift=recent,
        p_value=p_value,
        decaying=decaying,
        alpha=spec.alpha,
        window=spec.window,
        numbers=numbers,
    )
