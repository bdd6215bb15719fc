"""One tick's analysis: the readings, the guardrails, the divergence, SRM and the outcome metrics.

:func:`assess` computes everything the rules need and updates the statistical memory (strata
totals, plans, e-process maxima, confidence sequences, threshold counters, outage counters); it
takes no decision. :func:`write_record` turns it into ``status.analysis``.

What a tick needs (else the metric is *unknown*, and the tick holds): every guardrail; while
progressing, the primary metric and the decisive secondary metrics; while shadowing, the
divergence of each live challenger when ``shadow.divergence`` is set (a challenger that only gets
mirrored traffic may have no outcome series at all, so the outcome metrics are not needed then).
Secondary metrics that are not decisive are analysed when known and never hold anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from modelrollout.api.observations import DIVERGENCE, SpecProblem, Unknown
from modelrollout.api.status import (
    AnalysisRecord,
    DroppedChallenger,
    MetricResult,
    ModelExperimentStatus,
    Phase,
    VariantAnalysis,
    VariantDecision,
)
from modelrollout.policy import counts, guardrails, novelty, plans, primary, segments, shadow, srm
from modelrollout.policy.context import Tick, finite, fmt, pct
from modelrollout.policy.guardrails import GuardrailCheck
from modelrollout.policy.novelty import NoveltyCheck
from modelrollout.policy.primary import AnyMetric, MetricOutcome
from modelrollout.policy.segments import SegmentCheck, SegmentSRM
from modelrollout.policy.shadow import DivergenceCheck
from modelrollout.policy.srm import SRMCheck


def stage(status: ModelExperimentStatus) -> Phase:
    """The phase whose rules apply: a paused experiment is analysed as the phase it came from."""
    if status.phase is Phase.PAUSED and status.pause is not None:
        return status.pause.from_phase
    return status.phase


@dataclass
class Assessment:
    """Everything one tick found out."""

    stage: Phase
    started: bool = True  # False while no time has passed since the experiment started
    readings: dict[str, counts.Reading] = field(default_factory=dict)
    unknown: dict[str, str] = field(default_factory=dict)
    guardrails: list[GuardrailCheck] = field(default_factory=list)
    segments: list[SegmentCheck] = field(default_factory=list)
    segment_srm: list[SegmentSRM] = field(default_factory=list)
    divergence: list[DivergenceCheck] = field(default_factory=list)
    srm: SRMCheck | None = None
    outcomes: list[MetricOutcome] = field(default_factory=list)
    plan_problems: list[SpecProblem] = field(default_factory=list)
    novelty: dict[str, NoveltyCheck] = field(default_factory=dict)

    def decaying(self, challenger: str) -> NoveltyCheck | None:
        """The challenger's novelty check when it found a decaying lift (else None)."""
        check = self.novelty.get(challenger)
        return check if check is not None and check.decaying else None

    def primary_of(self, challenger: str) -> MetricOutcome | None:
        return next((o for o in self.outcomes if o.challenger == challenger and o.primary), None)

    def decisive_worse(self, challenger: str) -> list[MetricOutcome]:
        return [
            o
            for o in self.outcomes
            if o.challenger == challenger
            and o.decisive
            and not o.primary
            and o.verdict is VariantDecision.WORSE
        ]

    def breaches(self) -> dict[str, list[GuardrailCheck]]:
        out: dict[str, list[GuardrailCheck]] = {}
        for check in self.guardrails:
            if check.breached:
                out.setdefault(check.challenger, []).append(check)
        return out

    def harmed(self) -> dict[str, list[SegmentCheck]]:
        """Per challenger, the metrics on which a protected segment is found harmed."""
        out: dict[str, list[SegmentCheck]] = {}
        for check in self.segments:
            if check.harmed:
                out.setdefault(check.challenger, []).append(check)
        return out

    def warnings(self, challenger: str | None = None) -> list[GuardrailCheck]:
        return [
            c for c in self.guardrails if c.warning and (challenger is None or c.challenger == challenger)
        ]

    def unknown_text(self) -> str:
        return "; ".join(f"{name}: {why}" for name, why in self.unknown.items())


def _bookkeep_outage(ctx: Tick, status: ModelExperimentStatus, unknown: dict[str, str]) -> None:
    """Count ticks without usable metrics. Nothing needs to settle when they come back: the counts
    are the counters' increments, so the first reading after an outage spans it exactly."""
    if unknown:
        if ctx.count_once("errors"):
            status.consecutive_errors += 1
        if status.data_outage_since is None:
            status.data_outage_since = ctx.now
    else:
        status.consecutive_errors = 0
        status.data_outage_since = None


def assess(ctx: Tick, status: ModelExperimentStatus) -> Assessment:
    """Analyse the tick for a Shadowing, Progressing or Paused experiment (updates the memory)."""
    phase = stage(status)
    a = Assessment(stage=phase)
    if status.started_at is None or ctx.now <= status.started_at:
        a.started = False
        return a
    live = ctx.live(status)
    spec = ctx.spec
    progressing = phase is Phase.PROGRESSING
    shadowing = phase is Phase.SHADOWING and spec.shadow.divergence is not None
    a.readings = counts.read(
        spec, status, ctx.obs.metrics, (ctx.champion, *live), stratify=progressing, divergence=shadowing
    )
    needed = [g.name for g in spec.metrics.guardrails]
    if progressing:
        needed += [spec.metrics.primary.name, *(m.name for m in ctx.decisive)]
    a.unknown = {name: reading.reason for name in needed if isinstance(reading := a.readings[name], Unknown)}
    if progressing:
        a.plan_problems = plans.ensure(ctx, status)
    plan = status.plans.get(spec.metrics.primary.name)
    a.guardrails = guardrails.evaluate(ctx, status, a.readings, plan.n if plan is not None else None)
    if phase is Phase.SHADOWING:
        a.divergence = shadow.evaluate(ctx, live, a.readings.get(DIVERGENCE))
        for d in a.divergence:
            if d.unknown is not None:
                a.unknown[f"divergence of {d.challenger}"] = d.unknown
    _bookkeep_outage(ctx, status, a.unknown)
    if progressing:
        a.segments = segments.evaluate(ctx, status, plan.n if plan is not None else None)
        a.segment_srm = segments.sample_ratio(ctx, status)
        if isinstance(a.readings[spec.metrics.primary.name], counts.Known):
            a.srm = srm.evaluate(ctx, status)
        _outcomes(ctx, status, a, live)
    return a


def _outcomes(ctx: Tick, status: ModelExperimentStatus, a: Assessment, live: tuple[str, ...]) -> None:
    """The outcome metrics of every live challenger, corrected, and the novelty check."""
    spec = ctx.spec
    metrics: list[tuple[AnyMetric, bool]] = [(spec.metrics.primary, True)]
    metrics += [(m, False) for m in spec.metrics.secondary]
    for name in live:
        for metric, is_primary in metrics:
            if isinstance(a.readings[metric.name], counts.Known):
                a.outcomes.append(primary.analyze(ctx, status, metric, name, primary=is_primary))
    primary.correct(ctx, status, a.outcomes)
    if isinstance(a.readings[spec.metrics.primary.name], counts.Known):
        a.novelty = novelty.evaluate(ctx, status, live)


def verdict_text(ctx: Tick, o: MetricOutcome | None, planned_n: int | None) -> str:
    if o is None:
        return "primary metric unknown at this tick"
    lift = o.relative_lift()
    gain_ci = o.gain_ci()
    scale = "relative" if o.metric.mde_type.value == "relative" else "absolute"
    parts = [f"{o.metric.name} {fmt(o.challenger_value)} vs {fmt(o.champion_value)}"]
    if lift is not None:
        parts.append(f"lift {pct(lift)}")
    if gain_ci is not None:
        parts.append(f"gain CI ({scale}) [{fmt(gain_ci[0])}, {fmt(gain_ci[1])}]")
    if o.p_adjusted is not None or o.p_value is not None:
        parts.append(f"p {fmt(o.p_adjusted if o.p_adjusted is not None else o.p_value)}")
    if o.e_value is not None:
        parts.append(f"e {fmt(o.e_value)}")
    if o.probability is not None:
        parts.append(f"P(better) {fmt(o.probability)}")
    n = o.n_challenger
    shown = f"{round(n):,}" if n is not None and math.isfinite(n) else "n/a"  # increase() is not whole
    parts.append(f"n {shown} of {f'{planned_n:,}' if planned_n is not None else 'an unplanned'}")
    return f"{o.verdict.value}: " + ", ".join(parts)


def write_record(ctx: Tick, status: ModelExperimentStatus, a: Assessment) -> None:
    """Write ``status.analysis`` from the assessment (challengers no longer live keep their entry)."""
    previous = status.analysis.variants if status.analysis is not None else {}
    plan = status.plans.get(ctx.spec.metrics.primary.name)
    planned_n = plan.n if plan is not None else None
    variants: dict[str, VariantAnalysis] = {ctx.champion: _champion_record(a)}
    dropped = {d.name: d for d in status.dropped_challengers}
    for name in ctx.challengers:
        if name in dropped:
            variants[name] = _dropped_record(previous.get(name), dropped[name])
        else:
            variants[name] = _challenger_record(ctx, status, a, name, planned_n)
    status.analysis = AnalysisRecord(
        updated_at=ctx.now,
        planned_n=planned_n,
        variants=variants,
        srm=a.srm.result if a.srm is not None else (status.analysis.srm if status.analysis else None),
    )


def _champion_record(a: Assessment) -> VariantAnalysis:
    """The champion's counts and estimates, as its comparison with the first challenger saw them."""
    champion = VariantAnalysis(rule="champion")
    first = next((o for o in a.outcomes if o.primary), None)
    if first is None:
        return champion
    champion.n = first.n_champion
    champion.primary = MetricResult(n=first.n_champion, estimate=finite(first.champion_value))
    for o in a.outcomes:
        if o.challenger == first.challenger and not o.primary:
            champion.secondary[o.metric.name] = MetricResult(
                n=o.n_champion, estimate=finite(o.champion_value)
            )
    return champion


def _dropped_record(previous: VariantAnalysis | None, dropped: DroppedChallenger) -> VariantAnalysis:
    """A challenger out of the race keeps its last entry, with why it left."""
    entry = (previous or VariantAnalysis()).model_copy(deep=True)
    entry.rule = f"out of the race since {dropped.at.isoformat()}: {dropped.reason}"
    if dropped.reason not in ("NotSelected",):
        entry.decision = VariantDecision.WORSE
    return entry


def _segment_notes(a: Assessment, name: str, entry: VariantAnalysis) -> list[str]:
    """Record ``name``'s segments in ``entry``; the notes of its harmed ones."""
    notes = []
    for check in a.segments:
        if check.challenger == name:
            entry.segments.extend(check.records)
            if check.harmed:
                notes.append("harmed " + check.summary)
    return notes


def _challenger_record(
    ctx: Tick, status: ModelExperimentStatus, a: Assessment, name: str, planned_n: int | None
) -> VariantAnalysis:
    """A live challenger's results, verdict and the notes that explain it."""
    entry = VariantAnalysis()
    found = a.primary_of(name)
    notes: list[str] = []
    if found is not None:
        entry.n = found.n_challenger
        entry.primary = found.result(planned_n)
        entry.decision = found.verdict
    for s in a.outcomes:
        if s.challenger == name and not s.primary:
            sp = status.plans.get(s.metric.name)
            entry.secondary[s.metric.name] = s.result(sp.n if sp is not None else planned_n)
            if s.decisive and s.verdict is VariantDecision.WORSE:
                entry.decision = VariantDecision.WORSE
                notes.append(f"decisive {s.metric.name} significantly worse")
    for check in a.guardrails:
        if check.challenger == name:
            entry.guardrails[check.name] = check.result
            if check.breached or check.warning:
                notes.append(check.summary)
    novel = a.novelty.get(name)
    if novel is not None:
        entry.novelty = novel.result()
        if novel.decaying:
            notes.append("novelty effect: " + novel.summary)
    notes.extend(_segment_notes(a, name, entry))
    notes.extend(div.summary for div in a.divergence if div.challenger == name and div.summary)
    if a.stage is Phase.PROGRESSING:
        notes.insert(0, verdict_text(ctx, found, planned_n))
    elif not notes:
        notes.append("shadowing: mirrored traffic only")
    entry.rule = "; ".join(notes)
    return entry
