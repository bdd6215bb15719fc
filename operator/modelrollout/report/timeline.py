"""The decision timeline and the plain-English explanation: pure functions, words and numbers.

Every number is shown with :func:`format_number`, in the HTML and in the returned timeline, so a
reader (or a test) finds the history entry's numbers exactly as formatted here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from modelrollout.api.spec import MdeType
from modelrollout.api.status import HistoryEntry, Phase, VariantAnalysis
from modelrollout.report.data import ExperimentData, effect_on_scale, history, interval_level

#: What each history reason means, in words (the entry's message carries the numbers).
REASON_MEANING: Final[Mapping[str, str]] = {
    "Started": "the experiment started and the first step's traffic went to the challengers",
    "ShadowPassed": "the shadow phase ended within bounds, so real traffic started to move",
    "ShadowFailed": "the challenger diverged from the champion too much in shadow",
    "StepAdvanced": "the step had lasted its minimum duration and collected its share of the planned "
    "sample, with no guardrail, sample-ratio or harm signal active, so traffic moved to the next step",
    "PrimaryBetter": "the challenger was significantly better on the primary metric: its always-valid "
    "interval cleared the promotion boundary, so it got all the traffic",
    "PrimaryWorse": "the challenger was significantly worse on the primary metric, so it was taken out",
    "DecisiveMetricWorse": "the challenger was significantly worse on a decisive secondary metric",
    "GuardrailBreach": "a guardrail was breached: the challenger was worse than the champion by more "
    "than the allowed margin, with confidence 1 - alpha, so traffic went back to the champion in the "
    "same tick",
    "SampleRatioMismatch": "the observed traffic split did not match the weights, so the comparison "
    "could not be trusted",
    "DataOutageRollback": "the metrics stayed unavailable past the configured limit; missing data never "
    "promotes, so the champion took the traffic back",
    "DataOutagePause": "the metrics stayed unavailable past the configured limit, so the experiment paused",
    "Inconclusive": "maxDuration was reached without a verdict, so onInconclusive applied",
    "Paused": "spec.paused was set, so weights and phase were held",
    "Resumed": "the pause ended and the experiment went on where it was",
    "Retried": "a person asked for a retry (modelrollout.io/retry): the experiment starts afresh",
    "ManualAbort": "a person aborted the experiment (modelrollout.io/abort)",
    "ManualPromote": "a person promoted the challenger by hand (modelrollout.io/promote)",
    "VariantsChanged": "the spec's variants changed under a running experiment, which needs a human",
    "InvalidSpec": "the spec refers to something the cluster does not have",
}


def format_number(value: float) -> str:
    """A number as the report shows it: ``7,155`` (whole), ``0.3113``, ``1.19e-40``, ``n/a``."""
    if not math.isfinite(value):
        return "n/a"
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 1e6 or abs(value) < 1e-3:
        return f"{value:.3g}"
    return f"{value:.4g}"


def human_duration(delta: timedelta) -> str:
    """A duration in words: ``45 s``, ``6.0 minutes``, ``2.5 hours``, ``3.2 days``."""
    seconds = delta.total_seconds()
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} minutes"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 86400:.1f} days"


def format_time(time: datetime) -> str:
    """``2026-03-01 12:02:30 UTC``."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC")


def format_weights(weights: Mapping[str, int]) -> str:
    """``v1 75 %, v2 25 %``."""
    return ", ".join(f"{v} {w} %" for v, w in weights.items()) or "none"


def format_numbers(numbers: Mapping[str, float]) -> str:
    """``samples = 1,785; plannedN = 7,155``."""
    return "; ".join(f"{k} = {format_number(v)}" for k, v in numbers.items())


@dataclass(frozen=True)
class TimelineEntry:
    """A history transition, explained."""

    entry: HistoryEntry
    offset: timedelta  # since the first transition
    transition: str  # "Progressing step 0 → Progressing step 1"
    meaning: str  # REASON_MEANING, or "" for a reason it does not know
    deciding: bool  # the entry that decided how the experiment stands now

    @property
    def text(self) -> str:
        """The whole entry as one paragraph of words and numbers."""
        e = self.entry
        parts = [
            f"{format_time(e.time)} (+{human_duration(self.offset)}): {self.transition}.",
            f"Weights after: {format_weights(e.weights)}.",
            f"{e.reason}" + (f": {self.meaning}." if self.meaning else "."),
        ]
        if e.message:
            parts.append(e.message if e.message.endswith(".") else e.message + ".")
        if e.numbers:
            parts.append(f"Numbers: {format_numbers(e.numbers)}.")
        return " ".join(parts)


def _where(phase: Phase | None, step: int | None) -> str:
    if phase is None:
        return "new"
    return f"{phase.value} step {step}" if step is not None and phase is Phase.PROGRESSING else phase.value


def deciding_entry(data: ExperimentData) -> HistoryEntry | None:
    """The transition that put the experiment where it is: the last one into its current phase."""
    entries = history(data)
    phase = data.status.phase
    into = [e for e in entries if e.to_phase is phase and e.from_phase is not phase]
    if phase.terminal and into:
        return into[-1]
    return entries[-1] if entries else None


def timeline(data: ExperimentData) -> list[TimelineEntry]:
    """Every known transition, oldest first, with its meaning."""
    entries = history(data)
    decider = deciding_entry(data)
    if not entries:
        return []
    origin = entries[0].time
    return [
        TimelineEntry(
            entry=e,
            offset=e.time - origin,
            transition=f"{_where(e.from_phase, e.from_step)} → {_where(e.to_phase, e.to_step)}",
            meaning=REASON_MEANING.get(e.reason, ""),
            deciding=e is decider,
        )
        for e in entries
    ]


# --- explain -------------------------------------------------------------------------------------


def _percent(value: float) -> str:
    return f"{100 * value:+.3g} %"


def _effect_words(data: ExperimentData, challenger: str, variant: VariantAnalysis) -> str | None:
    result = variant.primary
    if result is None or (result.relative_lift is None and result.difference is None):
        return None
    spec = data.spec
    absolute = spec is not None and spec.metrics.primary.mde_type is MdeType.ABSOLUTE
    metric = spec.metrics.primary.name if spec is not None else "the primary metric"
    words = f"{challenger}'s {metric}"
    if result.estimate is not None:
        words += f" was {format_number(result.estimate)}"
    if result.relative_lift is not None:
        words += f", a lift of {_percent(result.relative_lift)} over the champion"
    if absolute and result.difference is not None:
        words += f" (difference {result.difference:+.3g})"
    effect = effect_on_scale(result, spec)
    if result.ci is not None and effect is not None:
        level = f"{100 * interval_level(spec):.4g} % " if spec is not None else ""
        shown = (
            (f"{result.ci.low:+.3g}", f"{result.ci.high:+.3g}")
            if absolute
            else (_percent(result.ci.low), _percent(result.ci.high))
        )
        words += f" ({level}interval {shown[0]} to {shown[1]})"
    if result.p_value is not None:
        words += f", p = {format_number(result.p_value)}"
    planned = result.planned_n
    if result.n is not None:
        # increase() extrapolates, so n is not whole; a count is shown as one
        words += f", on n = {format_number(round(result.n)) if math.isfinite(result.n) else 'n/a'}"
        if planned:
            words += f" of a planned {format_number(planned)} per variant ({100 * result.n / planned:.0f} %)"
    return words + f"; verdict {variant.decision.value}"


def _breaches(variant: VariantAnalysis) -> list[str]:
    out = []
    for name, g in variant.guardrails.items():
        if not g.breached or g.estimate is None:
            continue
        text = f"Guardrail {name} was breached: {format_number(g.estimate)} against "
        if g.champion_estimate is not None:
            text += f"the champion's {format_number(g.champion_estimate)}"
            if g.limit is not None:
                text += f", at most {format_number(g.limit)} worse allowed"
        elif g.limit is not None:
            text += f"the threshold {format_number(g.limit)}"
        if g.p_value is not None:
            text += f" (always-valid p = {format_number(g.p_value)})"
        out.append(text)
    return out


def explain_data(data: ExperimentData) -> str:
    """One paragraph: how the experiment ended (or stands) and why, with the numbers."""
    status = data.status
    phase = status.phase
    sentences = []
    start = status.started_at
    entries = history(data)
    if entries:
        start = min(entries[0].time, start) if start else entries[0].time
    end = status.finished_at or status.last_tick_at
    took = f" after {human_duration(end - start)}" if start is not None and end is not None else ""
    if phase.terminal:
        sentences.append(f"Experiment {data.name} ended {phase.value}{took}.")
    else:
        where = f" at step {status.current_step}" if status.current_step is not None else ""
        sentences.append(f"Experiment {data.name} is {phase.value}{where}{took} so far.")
    decider = deciding_entry(data)
    if decider is not None:
        sentences.append(
            f"The deciding rule was {decider.reason} at {format_time(decider.time)}: "
            + (decider.message.rstrip(".") + "." if decider.message else "(no message).")
        )
    analysis = status.analysis
    if analysis is not None:
        for challenger in data.challenger_names():
            variant = analysis.variants.get(challenger)
            if variant is None:
                continue
            words = _effect_words(data, challenger, variant)
            if words:
                sentences.append(f"Challenger {words}.")
            for breach in _breaches(variant):
                sentences.append(f"{breach}.")
    for dropped in status.dropped_challengers:
        if dropped.reason not in ("NotSelected",):
            sentences.append(f"Challenger {dropped.name} was dropped ({dropped.reason}).")
    if status.weights:
        sentences.append(f"Traffic now: {format_weights(status.weights)}.")
    return " ".join(sentences)
