"""The report's data: pure functions from a ModelExperiment (and its recording) to plot series.

Nothing here draws or writes. Two sources of points over time:

* a **recording** (snapshots of the whole object): one point per analysis the operator wrote
  (``status.analysis.updatedAt``), exactly as it was shown at the time;
* the **live object only**: the status keeps the latest analysis and the per-step counts
  (``status.strata``), so there is one point per finished step, recomputed from the cumulative
  strata with the same statistics the policy uses (per-step differences combined by inverse
  variance; for ``sequential``, the mixture radius at the frozen ``tau2``, intersected step by
  step), then the latest analysis as the operator wrote it.

Weights over time always come from ``status.history`` (every transition carries the weights after
it), merged with the snapshots' weights when there is a recording.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from pydantic import ValidationError

from modelrollout.api.presets import MetricType
from modelrollout.api.spec import Direction, Goal, Guardrail, MdeType, Method, ModelExperimentSpec
from modelrollout.api.status import (
    AnalysisRecord,
    GuardrailResult,
    HistoryEntry,
    Interval,
    MetricResult,
    ModelExperimentStatus,
    Phase,
    VariantAnalysis,
)
from modelrollout.policy import counts, values
from modelrollout.policy.primary import combined_difference
from modelrollout.report.errors import ReportError
from modelrollout.stats import sequential

#: Seconds in each unit of the time axis.
_UNIT_SECONDS: Final = {"s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
#: Share of the run's length shown after a terminal phase.
TERMINAL_TAIL: Final = 0.12
#: Samples per arm a mean or ratio stratum needs to join the combination (as the policy).
MIN_STRATUM_SAMPLES: Final = 30


class SnapshotLike(Protocol):
    """What the report reads of a recording's snapshot (``modelrollout.console.recording.Snapshot``)."""

    @property
    def time(self) -> datetime: ...

    @property
    def object(self) -> dict[str, Any]: ...


# --- the experiment, parsed ----------------------------------------------------------------------


@dataclass(frozen=True)
class ExperimentData:
    """A ModelExperiment's name, spec (None when unreadable), status and recorded statuses."""

    name: str
    namespace: str | None
    spec: ModelExperimentSpec | None
    status: ModelExperimentStatus
    snapshots: tuple[tuple[datetime, ModelExperimentStatus], ...]
    notes: tuple[str, ...] = ()

    @property
    def champion(self) -> str | None:
        if self.spec is not None:
            return self.spec.champion.name
        return None

    def variant_names(self) -> list[str]:
        """The spec's variants, else every name seen in weights or the analysis, in order of sight."""
        if self.spec is not None:
            return list(self.spec.variant_names())
        seen: dict[str, None] = {}
        for status in [*(s for _, s in self.snapshots), self.status]:
            for entry in status.history:
                seen.update(dict.fromkeys(entry.weights))
            seen.update(dict.fromkeys(status.weights))
            if status.analysis is not None:
                seen.update(dict.fromkeys(status.analysis.variants))
        return list(seen)

    def challenger_names(self) -> list[str]:
        champion = self.champion
        if self.spec is not None:
            return [c.name for c in self.spec.challengers]
        return [v for v in self.variant_names() if v != champion and _has_comparison(self.status, v)]


def _has_comparison(status: ModelExperimentStatus, variant: str) -> bool:
    found = status.analysis.variants.get(variant) if status.analysis else None
    return found is not None and found.primary is not None and found.primary.difference is not None


def _status_of(obj: Mapping[str, Any], where: str) -> ModelExperimentStatus:
    raw = obj.get("status") or {}
    if not isinstance(raw, Mapping):
        raise ReportError(f"{where}: status is not a mapping")
    try:
        return ModelExperimentStatus.model_validate(dict(raw))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        path = ".".join(str(p) for p in first["loc"])
        raise ReportError(f"{where}: unreadable status ({path}: {first['msg']})") from None


def parse(obj: Mapping[str, Any], recording: Sequence[SnapshotLike] | None = None) -> ExperimentData:
    """Parse a whole ModelExperiment (as the API returns it) and its recording.

    Raises
    ------
    ReportError
        When ``obj`` is not a ModelExperiment or its status cannot be read.
    """
    if not isinstance(obj, Mapping) or not isinstance(obj.get("spec", {}), Mapping):
        raise ReportError("not a ModelExperiment object (expected a mapping with spec and status)")
    kind = obj.get("kind")
    if kind is not None and kind != "ModelExperiment":
        raise ReportError(f"not a ModelExperiment but a {kind}")
    metadata = obj.get("metadata") or {}
    name = str(metadata.get("name") or "experiment")
    namespace = metadata.get("namespace")
    notes: list[str] = []
    spec: ModelExperimentSpec | None = None
    try:
        spec = ModelExperimentSpec.model_validate(obj.get("spec") or {})
    except ValidationError:
        # A report of an old or hand-edited object still shows what its status holds.
        notes.append("The spec could not be read; thresholds and metric types are left out.")
    status = _status_of(obj, name)
    snapshots = tuple(
        (_utc(s.time), _status_of(s.object, f"snapshot at {s.time.isoformat()}")) for s in recording or ()
    )
    return ExperimentData(
        name=name,
        namespace=str(namespace) if namespace else None,
        spec=spec,
        status=status,
        snapshots=tuple(sorted(snapshots, key=lambda pair: pair[0])),
        notes=tuple(notes),
    )


def _utc(time: datetime) -> datetime:
    return time.replace(tzinfo=UTC) if time.tzinfo is None else time.astimezone(UTC)


# --- time ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeAxis:
    """Times as numbers since the start, in a unit that suits the run's length."""

    origin: datetime
    end: datetime
    unit: str  # "s", "min", "h" or "d"

    def __call__(self, time: datetime) -> float:
        return (time - self.origin).total_seconds() / _UNIT_SECONDS[self.unit]

    @property
    def label(self) -> str:
        word = {"s": "seconds", "min": "minutes", "h": "hours", "d": "days"}[self.unit]
        return f"time since start ({word})"

    @property
    def span(self) -> float:
        return self(self.end)


def history(data: ExperimentData) -> list[HistoryEntry]:
    """Every transition known: the object's history merged with the snapshots' (which may hold
    entries since dropped by the bounded history), oldest first, without duplicates."""
    found: dict[tuple[datetime, str, str, int | None], HistoryEntry] = {}
    for status in [*(s for _, s in data.snapshots), data.status]:
        for entry in status.history:
            found[(entry.time, entry.reason, entry.to_phase.value, entry.to_step)] = entry
    return sorted(found.values(), key=lambda e: e.time)


def time_axis(data: ExperimentData) -> TimeAxis:
    """The axis from the first transition (else the start, else the first snapshot) to the end."""
    status = data.status
    entries = history(data)
    starts = [entries[0].time] if entries else []
    starts += [t for t in (status.started_at,) if t is not None]
    starts += [t for t, _ in data.snapshots[:1]]
    # Snapshots before the first transition hold nothing to plot (Pending): time 0 is the start.
    origin = starts[0] if starts else datetime.now(UTC)
    ends = [origin]
    ends += [e.time for e in entries[-1:]]
    ends += [t for t, _ in data.snapshots[-1:]]
    ends += [
        t
        for t in (
            status.finished_at,
            status.last_tick_at,
            status.analysis.updated_at if status.analysis else None,
        )
        if t is not None
    ]
    end = max(ends)
    if status.phase.terminal and status.finished_at is not None:
        # Room after the verdict, so the final weights and the verdict's span are visible.
        end = max(end, status.finished_at + TERMINAL_TAIL * (status.finished_at - origin))
    seconds = (end - origin).total_seconds()
    unit = "s" if seconds <= 180 else "min" if seconds <= 3 * 3600 else "h" if seconds <= 72 * 3600 else "d"
    return TimeAxis(origin=origin, end=end, unit=unit)


# --- plot series ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """A named line: x in the time axis' unit, y in the plot's unit."""

    label: str
    x: tuple[float, ...]
    y: tuple[float, ...]


@dataclass(frozen=True)
class Span:
    """A stretch of the run with one phase and step (between two transitions)."""

    start: float
    end: float
    label: str
    phase: Phase
    step: int | None


@dataclass(frozen=True)
class WeightsView:
    """Traffic weights per variant over time (step functions, in %), and the run's spans."""

    variants: tuple[Series, ...]
    spans: tuple[Span, ...]


def _span_label(entry: HistoryEntry, champion: str | None) -> str:
    if entry.to_phase is Phase.PROGRESSING and entry.to_step is not None:
        share = sum(w for v, w in entry.weights.items() if v != champion) if champion else None
        return f"step {entry.to_step}" + (f" · {share} %" if share is not None else "")
    if entry.to_phase is Phase.SHADOWING:
        return "shadow"
    return entry.to_phase.value


def spans(data: ExperimentData, axis: TimeAxis) -> tuple[Span, ...]:
    """One span per transition, from it to the next one (the last to the end of the axis)."""
    entries = history(data)
    out = []
    for i, entry in enumerate(entries):
        end = entries[i + 1].time if i + 1 < len(entries) else axis.end
        out.append(
            Span(
                axis(entry.time),
                axis(max(end, entry.time)),
                _span_label(entry, data.champion),
                entry.to_phase,
                entry.to_step,
            )
        )
    return tuple(out)


def weights_view(data: ExperimentData, axis: TimeAxis) -> WeightsView:
    """Weights per variant as steps: each transition's weights, and each snapshot's."""
    changes: list[tuple[datetime, Mapping[str, int]]] = [
        (e.time, e.weights) for e in history(data) if e.weights
    ]
    changes += [(t, s.weights) for t, s in data.snapshots if s.weights]
    changes.sort(key=lambda pair: pair[0])
    series = []
    for variant in data.variant_names():
        xs: list[float] = []
        ys: list[float] = []
        for time, weights in changes:
            xs.append(axis(time))
            ys.append(float(weights.get(variant, 0)))
        if xs:
            xs.append(axis.span)
            ys.append(ys[-1])
            series.append(Series(variant, tuple(xs), tuple(ys)))
    return WeightsView(tuple(series), spans(data, axis))


def analysis_points(data: ExperimentData) -> tuple[list[tuple[datetime, AnalysisRecord]], str]:
    """The analyses to plot over time, and a sentence saying where they come from."""
    points: dict[datetime, AnalysisRecord] = {}
    if data.snapshots:
        for time, status in data.snapshots:
            if status.analysis is not None and status.analysis.variants:
                points[status.analysis.updated_at or time] = status.analysis
        source = "one point per analysis in the recording"
    else:
        for time, record in step_end_analyses(data):
            points[time] = record
        source = (
            "one point per finished step, recomputed from the per-step counts (status.strata), "
            "then the operator's latest analysis"
        )
    latest = data.status.analysis
    if latest is not None and latest.variants:
        at = latest.updated_at or data.status.last_tick_at
        if at is not None:
            points[at] = latest
    return sorted(points.items(), key=lambda pair: pair[0]), source


# --- the primary metric --------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """A horizontal reference line of the primary plot, in the plot's unit."""

    value: float
    label: str
    kind: str  # "zero", "practical", "mde" or "margin"


@dataclass(frozen=True)
class PrimaryBand:
    """One challenger's effect over time, with its interval (NaN where unknown)."""

    challenger: str
    x: tuple[float, ...]
    estimate: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    decision: str
    dropped_at: float | None = None
    dropped_reason: str | None = None


@dataclass(frozen=True)
class PrimaryView:
    """Each challenger's primary effect vs the champion over time, and the decision boundaries."""

    metric: str
    ylabel: str
    band_label: str
    bands: tuple[PrimaryBand, ...]
    references: tuple[Reference, ...]
    source: str


def dropped_at(data: ExperimentData, challenger: str) -> tuple[datetime, str] | None:
    """When and why ``challenger`` was taken out while others went on (None: it was not)."""
    for dropped in data.status.dropped_challengers:
        if dropped.name == challenger and dropped.reason != "NotSelected":
            return dropped.at, dropped.reason
    return None


def family_size(spec: ModelExperimentSpec) -> int:
    """Hypotheses corrected together (as the policy): challengers x (primary + decisive secondaries)."""
    return len(spec.challengers) * (1 + sum(1 for m in spec.metrics.secondary if m.decisive))


def interval_level(spec: ModelExperimentSpec) -> float:
    """The level of the primary metric's intervals (Bonferroni over the family; bayesian: credible)."""
    if spec.analysis.method is Method.BAYESIAN:
        return 2.0 * spec.analysis.probability_threshold - 1.0
    return 1.0 - spec.analysis.alpha / family_size(spec)


def effect_scale(spec: ModelExperimentSpec | None) -> tuple[float, str]:
    """Factor from the mdeType scale to the plot's unit, and the y-axis label."""
    if spec is None or spec.metrics.primary.mde_type is MdeType.RELATIVE:
        return 100.0, "lift vs the champion (%)"
    if spec.metrics.primary.metric_type is MetricType.PROPORTION:
        return 100.0, "difference vs the champion (percentage points)"
    return 1.0, f"difference vs the champion ({spec.metrics.primary.name} units)"


def effect_on_scale(result: MetricResult, spec: ModelExperimentSpec | None) -> float | None:
    """The effect on the metric's mdeType scale (the scale of ``ci``): lift or difference."""
    if spec is not None and spec.metrics.primary.mde_type is MdeType.ABSOLUTE:
        return result.difference
    return result.relative_lift


def primary_view(data: ExperimentData, axis: TimeAxis) -> PrimaryView:
    """Every challenger's primary effect per analysis point, and the lines that decide."""
    spec = data.spec
    points, source = analysis_points(data)
    bands = tuple(_primary_band(data, axis, points, challenger) for challenger in data.challenger_names())
    metric = spec.metrics.primary.name if spec is not None else "primary metric"
    ylabel = effect_scale(spec)[1]
    if spec is None:
        no_difference = (Reference(0.0, "no difference", "zero"),)
        return PrimaryView(metric, ylabel, "interval", bands, no_difference, source)
    references, band_label = _primary_references(spec)
    return PrimaryView(metric, ylabel, band_label, bands, references, source)


def _primary_band(
    data: ExperimentData, axis: TimeAxis, points: Sequence[tuple[datetime, AnalysisRecord]], challenger: str
) -> PrimaryBand:
    """One challenger's effect and interval over time, frozen where it was dropped."""
    spec = data.spec
    factor = effect_scale(spec)[0]
    xs: list[float] = []
    est: list[float] = []
    low: list[float] = []
    high: list[float] = []
    decision = "Pending"
    dropped = dropped_at(data, challenger)
    for time, record in points:
        if dropped is not None and time > dropped[0]:
            break  # a dropped challenger's analysis is frozen, not measured
        variant = record.variants.get(challenger)
        result = variant.primary if variant is not None else None
        if result is None:
            continue
        effect = effect_on_scale(result, spec)
        if effect is None and result.ci is None:
            continue
        xs.append(axis(time))
        est.append(factor * effect if effect is not None else math.nan)
        low.append(factor * result.ci.low if result.ci is not None else math.nan)
        high.append(factor * result.ci.high if result.ci is not None else math.nan)
        decision = variant.decision.value if variant is not None else decision
    return PrimaryBand(
        challenger,
        tuple(xs),
        tuple(est),
        tuple(low),
        tuple(high),
        decision,
        dropped_at=axis(dropped[0]) if dropped else None,
        dropped_reason=dropped[1] if dropped else None,
    )


def _primary_references(spec: ModelExperimentSpec) -> tuple[tuple[Reference, ...], str]:
    """The lines that decide (zero, the margin or the practical threshold, the MDE) and the band's name."""
    factor = effect_scale(spec)[0]
    primary = spec.metrics.primary
    sign = 1.0 if primary.direction is Direction.INCREASE else -1.0
    analysis = spec.analysis
    unit = "%" if factor == 100.0 and primary.mde_type is MdeType.RELATIVE else ""
    unit = unit or (" pp" if factor == 100.0 else "")
    better, worse = ("above", "below") if sign > 0 else ("below", "above")
    if analysis.goal is Goal.NON_INFERIORITY:
        zero = "0: no difference"
    elif analysis.practical_threshold:
        zero = f"0: rolled back when the interval is wholly {worse}"
    else:
        zero = f"0: promoted when the interval is wholly {better}, rolled back when {worse}"
    references = [Reference(0.0, zero, "zero")]
    if analysis.goal is Goal.NON_INFERIORITY and analysis.non_inferiority_margin is not None:
        value = -sign * factor * analysis.non_inferiority_margin
        references.append(
            Reference(
                value,
                f"non-inferiority margin ({value:+.3g}{unit}): promoted when the interval is wholly "
                f"{better}, rolled back when wholly {worse}",
                "margin",
            )
        )
    elif analysis.practical_threshold:
        value = sign * factor * analysis.practical_threshold
        references.append(
            Reference(
                value,
                f"practical threshold ({value:+.3g}{unit}): promoted when the interval is wholly {better}",
                "practical",
            )
        )
    value = sign * factor * primary.minimum_detectable_effect
    references.append(Reference(value, f"MDE the plan is powered for ({value:+.3g}{unit})", "mde"))
    kind = {
        Method.SEQUENTIAL: "confidence sequence",
        Method.FIXED: "confidence interval",
        Method.BAYESIAN: "credible interval",
    }[analysis.method]
    return tuple(references), f"{100 * interval_level(spec):.4g} % {kind}"


# --- guardrails ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GuardrailPanel:
    """One guardrail over time: each challenger's value, the champion's, and where a breach begins."""

    name: str
    ylabel: str
    champion: Series | None
    boundary: Series | None
    challengers: tuple[Series, ...]
    breaches: tuple[tuple[str, float, float], ...]  # (challenger, x, y) of the first breach
    kind: str  # "margin" or "threshold"


def _guardrail_spec(spec: ModelExperimentSpec | None, name: str) -> Guardrail | None:
    if spec is None:
        return None
    return next((g for g in spec.metrics.guardrails if g.name == name), None)


def _guardrail_names(data: ExperimentData, points: Iterable[tuple[datetime, AnalysisRecord]]) -> list[str]:
    names: dict[str, None] = {}
    if data.spec is not None:
        names.update(dict.fromkeys(g.name for g in data.spec.metrics.guardrails))
    for _, record in points:
        for variant in record.variants.values():
            names.update(dict.fromkeys(variant.guardrails))
    return list(names)


def guardrail_panels(data: ExperimentData, axis: TimeAxis) -> tuple[GuardrailPanel, ...]:
    """One panel per guardrail (spec order), from the same analysis points as the primary plot."""
    points, _ = analysis_points(data)
    return tuple(_guardrail_panel(data, axis, points, name) for name in _guardrail_names(data, points))


@dataclass
class _PanelPoints:
    """The points of one guardrail's panel, gathered over the analysis points."""

    factor: float
    threshold: bool
    higher_is_worse: bool
    champion: dict[float, float] = field(default_factory=dict)
    boundary: dict[float, float] = field(default_factory=dict)
    lines: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    breaches: list[tuple[str, float, float]] = field(default_factory=list)

    def add(self, challenger: str, x: float, result: GuardrailResult) -> None:
        factor = self.factor
        if result.estimate is not None:
            xs, ys = self.lines.setdefault(challenger, ([], []))
            xs.append(x)
            ys.append(factor * result.estimate)
            if result.breached and not any(b[0] == challenger for b in self.breaches):
                self.breaches.append((challenger, x, factor * result.estimate))
        if result.champion_estimate is not None:
            self.champion[x] = factor * result.champion_estimate
        if result.limit is None:
            return
        if self.threshold:
            self.boundary[x] = factor * result.limit
        elif result.champion_estimate is not None:
            edge = result.limit if self.higher_is_worse else -result.limit
            self.boundary[x] = factor * (result.champion_estimate + edge)


def _guardrail_panel(
    data: ExperimentData, axis: TimeAxis, points: Sequence[tuple[datetime, AnalysisRecord]], name: str
) -> GuardrailPanel:
    g = _guardrail_spec(data.spec, name)
    threshold = g is not None and g.threshold is not None
    percent = g is None or g.metric_type is MetricType.PROPORTION
    found = _PanelPoints(100.0 if percent else 1.0, threshold, True if g is None else g.higher_is_worse)
    for time, record in points:
        for challenger in data.challenger_names():
            dropped = dropped_at(data, challenger)
            if dropped is not None and time > dropped[0]:
                continue
            variant = record.variants.get(challenger)
            result: GuardrailResult | None = variant.guardrails.get(name) if variant else None
            if result is not None:
                found.add(challenger, axis(time), result)
    boundary = found.boundary
    if threshold and g is not None and g.threshold is not None and not boundary:
        boundary = {0.0: found.factor * g.threshold, axis.span: found.factor * g.threshold}
    return GuardrailPanel(
        name=name,
        ylabel=f"{name} (%)" if percent else name,
        champion=_series(data.champion or "champion", found.champion),
        boundary=_series(_boundary_label(g, percent), boundary),
        challengers=tuple(Series(c, tuple(xs), tuple(ys)) for c, (xs, ys) in found.lines.items()),
        breaches=tuple(found.breaches),
        kind="threshold" if threshold else "margin",
    )


def _series(label: str, points: Mapping[float, float]) -> Series | None:
    if not points:
        return None
    xs = sorted(points)
    return Series(label, tuple(xs), tuple(points[x] for x in xs))


def _boundary_label(g: Guardrail | None, percent: bool) -> str:
    if g is None:
        return "breach limit"
    worse = "above" if g.higher_is_worse else "below"
    sign = "+" if g.higher_is_worse else "−"
    if g.threshold is not None:
        shown = f"{100 * g.threshold:.3g} %" if percent else f"{g.threshold:.3g}"
        return f"threshold {shown} (breach after {g.failure_limit} ticks in a row {worse} it)"
    if g.max_relative_increase is not None:
        return f"limit: champion {sign}{100 * g.max_relative_increase:.3g} % of its value"
    amount = g.max_absolute_increase or 0.0
    shown = f"{100 * amount:.3g} pp" if percent else f"{amount:.3g}"
    return f"limit: champion {sign}{shown}"


# --- samples -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplesView:
    """Samples of the primary metric per variant over time, and the planned n per variant."""

    metric: str
    variants: tuple[Series, ...]
    planned: Series | None


def samples_view(data: ExperimentData, axis: TimeAxis) -> SamplesView:
    """n per variant at every analysis point, and the planned n as it was known then."""
    points, _ = analysis_points(data)
    lines: dict[str, tuple[list[float], list[float]]] = {}
    planned: dict[float, float] = {}
    for time, record in points:
        x = axis(time)
        for variant, found in record.variants.items():
            xs, ys = lines.setdefault(variant, ([], []))
            xs.append(x)
            ys.append(found.n)
        if record.planned_n is not None:
            planned[x] = float(record.planned_n)
    if planned:
        planned[axis.span] = planned[max(planned)]
    order = data.variant_names()
    ordered = sorted(lines.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
    metric = data.spec.metrics.primary.name if data.spec is not None else "primary metric"
    return SamplesView(
        metric,
        tuple(Series(v, tuple(xs), tuple(ys)) for v, (xs, ys) in ordered),
        _series("planned n per variant", planned),
    )


# --- per-step analyses recomputed from the strata ------------------------------------------------


def step_end_analyses(data: ExperimentData) -> list[tuple[datetime, AnalysisRecord]]:
    """An analysis at the end of every finished step, from the cumulative strata up to it.

    The numbers are those the policy would have computed from the same counts, except that the
    always-valid p-values (which need every tick's e-value) are left out.
    """
    spec, status = data.spec, data.status
    if spec is None:
        return []
    out = []
    running_ci: dict[str, Interval] = {}
    planned = status.analysis.planned_n if status.analysis is not None else None
    for k, stratum in enumerate(status.strata):
        if stratum.ended_at is None:
            continue
        upto = status.model_copy(update={"strata": status.strata[: k + 1]})
        record = AnalysisRecord(updated_at=stratum.ended_at, planned_n=planned)
        for variant in spec.variant_names():
            record.variants[variant] = _variant_at(spec, upto, variant, running_ci)
        out.append((stratum.ended_at, record))
    return out


def _variant_at(
    spec: ModelExperimentSpec, status: ModelExperimentStatus, variant: str, running_ci: dict[str, Interval]
) -> VariantAnalysis:
    primary = spec.metrics.primary
    mtype = primary.metric_type
    champion = spec.champion.name
    mine = counts.pooled(status, primary.name, variant, mtype)
    result = MetricResult(n=counts.samples(mine, mtype), estimate=values.value(mine, mtype))
    if variant != champion:
        _compare(spec, status, variant, result, running_ci)
    out = VariantAnalysis(n=result.n or 0.0, primary=result)
    if variant == champion:
        return out
    for g in spec.metrics.guardrails:
        gc = values.value(counts.pooled(status, g.name, champion, g.metric_type), g.metric_type)
        gt = values.value(counts.pooled(status, g.name, variant, g.metric_type), g.metric_type)
        if g.threshold is not None:
            # The value judged is the last tick's, which the strata cannot give: the threshold only.
            out.guardrails[g.name] = GuardrailResult(limit=g.threshold)
            continue
        limit = None
        if g.max_relative_increase is not None and gc is not None:
            limit = g.max_relative_increase * abs(gc)
        elif g.max_absolute_increase is not None:
            limit = g.max_absolute_increase
        out.guardrails[g.name] = GuardrailResult(estimate=gt, champion_estimate=gc, limit=limit)
    return out


def _compare(
    spec: ModelExperimentSpec,
    status: ModelExperimentStatus,
    challenger: str,
    result: MetricResult,
    running_ci: dict[str, Interval],
) -> None:
    primary = spec.metrics.primary
    mtype = primary.metric_type
    champion = spec.champion.name
    alpha_ci = spec.analysis.alpha / family_size(spec)
    comb = combined_difference(status, primary.name, mtype, champion, challenger, alpha_ci)
    base = values.value(counts.pooled(status, primary.name, champion, mtype), mtype)
    if comb is None:
        return
    low, high = comb.ci.low, comb.ci.high
    state = status.sequential.get(challenger, {}).get(primary.name)
    if spec.analysis.method is Method.SEQUENTIAL and state is not None and state.tau2 is not None:
        radius = float(sequential.normal_mixture_radius(comb.se * comb.se, state.tau2, alpha_ci)[()])
        low, high = comb.estimate - radius, comb.estimate + radius
        before = running_ci.get(challenger)
        if before is not None and max(low, before.low) <= min(high, before.high):
            low, high = max(low, before.low), min(high, before.high)
        running_ci[challenger] = Interval(low=low, high=high)
    result.difference = comb.estimate
    if base:
        result.relative_lift = comb.estimate / abs(base)
    scale = 1.0 if primary.mde_type is MdeType.ABSOLUTE else (abs(base) if base else math.nan)
    if math.isfinite(low / scale) and math.isfinite(high / scale):
        result.ci = Interval(low=low / scale, high=high / scale)


@dataclass(frozen=True)
class SegmentRow:
    """One row of the segments' forest plot: a challenger's difference in one segment of one metric."""

    label: str
    challenger: str
    difference: float
    low: float | None
    high: float | None
    protected: bool
    harmed: bool


def segment_rows(data: ExperimentData) -> list[SegmentRow]:
    """Every challenger's per-segment differences from the latest analysis, protected ones first."""
    analysis = data.status.analysis
    if analysis is None:
        return []
    rows: list[SegmentRow] = []
    for name, entry in analysis.variants.items():
        for r in entry.segments:
            if r.difference is None:
                continue
            kind = "" if r.protected else " (exploratory)"
            rows.append(
                SegmentRow(
                    label=f"{name} {r.metric}: {r.value}{kind}",
                    challenger=name,
                    difference=r.difference,
                    low=r.ci.low if r.ci is not None else None,
                    high=r.ci.high if r.ci is not None else None,
                    protected=r.protected,
                    harmed=r.harmed,
                )
            )
    return sorted(rows, key=lambda r: (not r.protected, r.label))
