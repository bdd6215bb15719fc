"""The self-contained ``report.html``: inline CSS, the figures as base64 data URIs, no links out."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Final

from modelrollout.api.spec import MdeType
from modelrollout.api.status import AnalysisRecord, ModelExperimentStatus
from modelrollout.report.data import ExperimentData, interval_level
from modelrollout.report.timeline import (
    TimelineEntry,
    format_number,
    format_numbers,
    format_time,
    format_weights,
    human_duration,
)

_CSS: Final = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222;
       max-width: 1180px; margin: 2em auto; padding: 0 1em; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.subtitle { color: #666; margin-top: 0; }
.phase { display: inline-block; padding: 0.1em 0.6em; border-radius: 0.8em; font-weight: 600;
         background: #eee; }
.phase-Promoted { background: #d8f0d4; color: #1d5e17; }
.phase-RolledBack, .phase-Failed { background: #f8d7d7; color: #8a1c1c; }
.phase-Paused { background: #fff0c2; color: #6b5200; }
.phase-Progressing, .phase-Shadowing { background: #dce8f7; color: #1b4a80; }
.explain { background: #f7f7f7; border-left: 4px solid #888; padding: 0.8em 1em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.decision { border: 1px solid #bbb; border-radius: 6px; padding: 0.6em 1em; background: #fcfcfc; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
ol.timeline { padding-left: 1.4em; }
ol.timeline li { margin-bottom: 0.9em; }
ol.timeline li.deciding { background: #fffbe6; border-left: 4px solid #e0b400; padding: 0.3em 0.6em; }
.reason { font-weight: 600; }
.numbers { font-size: 0.88em; color: #444; }
.muted { color: #777; font-size: 0.88em; }
"""

#: What each figure shows, under it.
CAPTIONS: Final[Mapping[str, str]] = {
    "weights": "Share of the traffic each variant received over time; shaded spans are the steps, "
    "labelled above the plot.",
    "primary": "Each challenger's effect on the primary metric against the champion, with its interval. "
    "A challenger is promoted when the interval lies wholly on the better side of the practical "
    "threshold (or of 0 without one) and the test is significant; it is rolled back when the interval "
    "lies wholly below 0. The MDE is the effect the planned sample size is powered for.",
    "guardrails": "Each guardrail's value for the challengers against the champion's; the dashed red "
    "line is where a breach begins (the champion's value plus the allowed margin, or the threshold). "
    "A breach needs the always-valid one-sided test to reject, not just a point above the line.",
    "samples": "Samples of the primary metric per variant against the planned sample size per variant.",
    "segments": "Each segment's difference (challenger minus champion) with its always-valid interval, "
    "from the latest analysis. Protected segments (circles) are tested for harm, corrected for their "
    "number; red marks a harmed one. Exploratory values (grey squares) are shown, never decided on.",
}
TITLES: Final[Mapping[str, str]] = {
    "weights": "Traffic weights",
    "primary": "Primary metric",
    "guardrails": "Guardrails",
    "samples": "Samples",
    "segments": "Segments",
}


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _numbers_table(numbers: Mapping[str, float]) -> str:
    if not numbers:
        return '<p class="muted">No numbers recorded.</p>'
    rows = "".join(
        f"<tr><td>{escape(k)}</td><td class='num'>{escape(format_number(v))}</td></tr>"
        for k, v in numbers.items()
    )
    return f"<table><tr><th>number</th><th>value</th></tr>{rows}</table>"


def _decision_record(entries: Sequence[TimelineEntry]) -> str:
    decider = next((t for t in entries if t.deciding), None)
    if decider is None:
        return '<p class="muted">No transition recorded yet.</p>'
    entry = decider.entry
    meaning = f" ({escape(decider.meaning)})" if decider.meaning else ""
    return (
        '<div class="decision">'
        f"<p><span class='reason'>{escape(entry.reason)}</span>{meaning} "
        f"at {escape(format_time(entry.time))}: "
        f"{escape(decider.transition)}; weights after: {escape(format_weights(entry.weights))}.</p>"
        f"<p>{escape(entry.message)}</p>"
        f"{_numbers_table(entry.numbers)}</div>"
    )


def _facts(data: ExperimentData) -> str:
    status = data.status
    rows: list[tuple[str, str]] = [("phase", status.phase.value)]
    if status.current_step is not None:
        share = ""
        if data.spec is not None and status.current_step < len(data.spec.rollout.steps):
            share = f" ({data.spec.rollout.steps[status.current_step]} % to the challengers)"
        rows.append(("step", f"{status.current_step}{share}"))
    rows.append(("weights", format_weights(status.weights)))
    if data.spec is not None:
        spec = data.spec
        rows.append(("champion", spec.champion.name))
        rows.append(("challengers", ", ".join(c.name for c in spec.challengers)))
        primary = spec.metrics.primary
        rows.append(
            (
                "primary metric",
                f"{primary.name} ({primary.metric_type.value}, {primary.direction.value} is better, MDE "
                f"{format_number(primary.minimum_detectable_effect)} {primary.mde_type.value})",
            )
        )
        analysis = spec.analysis
        rows.append(
            (
                "analysis",
                f"{analysis.method.value}, alpha {format_number(analysis.alpha)}, power "
                f"{format_number(analysis.power)}, goal {analysis.goal.value}",
            )
        )
    if status.analysis is not None and status.analysis.planned_n is not None:
        rows.append(("planned n per variant", format_number(status.analysis.planned_n)))
    if status.started_at is not None:
        rows.append(("started", format_time(status.started_at)))
    if status.finished_at is not None:
        rows.append(("finished", format_time(status.finished_at)))
        if status.started_at is not None:
            rows.append(("duration", human_duration(status.finished_at - status.started_at)))
    for dropped in status.dropped_challengers:
        rows.append((f"dropped {dropped.name}", f"{dropped.reason} at {format_time(dropped.at)}"))
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _signed_percent(value: float) -> str:
    return f"{100 * value:+.3g} %"


def _cell(value: float | None, *, percent: bool = False) -> str:
    if value is None:
        return "<td class='num'>–</td>"
    shown = _signed_percent(value) if percent else format_number(value)
    return f"<td class='num'>{escape(shown)}</td>"


def _analysis_tables(data: ExperimentData) -> str:
    record: AnalysisRecord | None = data.status.analysis
    if record is None or not record.variants:
        return '<p class="muted">No analysis yet.</p>'
    absolute = data.spec is not None and data.spec.metrics.primary.mde_type is MdeType.ABSOLUTE
    level = f"{100 * interval_level(data.spec):.4g} % " if data.spec is not None else ""
    head = (
        "<tr><th>variant</th><th>n</th><th>estimate</th><th>difference</th><th>lift</th>"
        f"<th>{level}interval of the {'difference' if absolute else 'lift'}</th><th>p-value</th>"
        "<th>e-value</th><th>decision</th></tr>"
    )
    rows = []
    guard_rows = []
    for name, variant in record.variants.items():
        p = variant.primary
        ci = "–"
        if p is not None and p.ci is not None:
            shown = format_number if absolute else _signed_percent
            ci = f"[{shown(p.ci.low)}, {shown(p.ci.high)}]"
        rows.append(
            f"<tr><td>{escape(name)}</td>{_cell(variant.n)}"
            f"{_cell(p.estimate if p else None)}{_cell(p.difference if p else None)}"
            f"{_cell(p.relative_lift if p else None, percent=True)}<td class='num'>{escape(ci)}</td>"
            f"{_cell(p.p_value if p else None)}{_cell(p.e_value if p else None)}"
            f"<td>{escape(variant.decision.value)}</td></tr>"
        )
        for g_name, g in variant.guardrails.items():
            guard_rows.append(
                f"<tr><td>{escape(name)}</td><td>{escape(g_name)}</td>{_cell(g.estimate)}"
                f"{_cell(g.champion_estimate)}{_cell(g.difference)}{_cell(g.limit)}{_cell(g.p_value)}"
                f"<td>{'breached' if g.breached else 'ok'}</td></tr>"
            )
    out = f"<table>{head}{''.join(rows)}</table>"
    if guard_rows:
        out += (
            "<table><tr><th>challenger</th><th>guardrail</th><th>value</th><th>champion</th>"
            "<th>worse by</th><th>limit</th><th>p-value</th><th>state</th></tr>"
            + "".join(guard_rows)
            + "</table>"
        )
    srm = record.srm
    if srm is not None and srm.p_value is not None:
        shares = ", ".join(
            f"{v} {100 * s:.1f} % (expected {100 * srm.expected_shares.get(v, 0.0):.1f} %)"
            for v, s in srm.observed_shares.items()
        )
        out += (
            f"<p>Sample ratio check: p = {escape(format_number(srm.p_value))}"
            f"{' — MISMATCH' if srm.mismatch else ''}; observed {escape(shares)}.</p>"
        )
    if record.updated_at is not None:
        out += f'<p class="muted">Analysis of {escape(format_time(record.updated_at))}.</p>'
    return out


def _timeline(entries: Sequence[TimelineEntry]) -> str:
    if not entries:
        return '<p class="muted">No transitions recorded yet.</p>'
    items = []
    for t in entries:
        e = t.entry
        numbers = f"<div class='numbers'>{escape(format_numbers(e.numbers))}</div>" if e.numbers else ""
        meaning = f": {escape(t.meaning)}" if t.meaning else ""
        items.append(
            f"<li class='{'deciding' if t.deciding else ''}'>"
            f"<b>{escape(format_time(e.time))}</b> (+{escape(human_duration(t.offset))}) — "
            f"{escape(t.transition)}; weights after: {escape(format_weights(e.weights))}.<br>"
            f"<span class='reason'>{escape(e.reason)}</span>{meaning}.<br>"
            f"{escape(e.message)}{numbers}</li>"
        )
    return f"<ol class='timeline'>{''.join(items)}</ol>"


def _conditions(status: ModelExperimentStatus) -> str:
    if not status.conditions:
        return '<p class="muted">None.</p>'
    rows = "".join(
        f"<tr><td>{escape(c.type.value)}</td><td>{escape(c.status.value)}</td><td>{escape(c.reason)}</td>"
        f"<td>{escape(c.message)}</td></tr>"
        for c in status.conditions
    )
    return f"<table><tr><th>type</th><th>status</th><th>reason</th><th>message</th></tr>{rows}</table>"


def render_html(
    data: ExperimentData,
    explanation: str,
    timeline: Sequence[TimelineEntry],
    pngs: Mapping[str, Path],
    *,
    figure_notes: Mapping[str, str] | None = None,
    generated_at: datetime | None = None,
) -> str:
    """The whole report as one HTML document (figures embedded; ``figure_notes`` under them)."""
    title = f"{data.namespace}/{data.name}" if data.namespace else data.name
    phase = data.status.phase.value
    figures = "".join(
        f"<h2>{escape(TITLES.get(key, key))}</h2><figure><img alt='{escape(TITLES.get(key, key))}' "
        f"src='{_data_uri(path)}'><figcaption>{escape(CAPTIONS.get(key, ''))} "
        f"{escape((figure_notes or {}).get(key, ''))}</figcaption></figure>"
        for key, path in pngs.items()
    )
    notes = "".join(f"<p class='muted'>{escape(n)}</p>" for n in data.notes)
    when = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>Experiment report: {escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>Experiment report: {escape(title)}</h1>"
        f"<p class='subtitle'><span class='phase phase-{escape(phase)}'>{escape(phase)}</span></p>"
        f"<p class='explain'>{escape(explanation)}</p>"
        f"<h2>Summary</h2>{_facts(data)}"
        f"<h2>Decision record</h2>{_decision_record(timeline)}"
        f"{figures}"
        f"<h2>Latest analysis</h2>{_analysis_tables(data)}"
        f"<h2>Decision timeline</h2>{_timeline(timeline)}"
        f"<h2>Conditions</h2>{_conditions(data.status)}"
        f"{notes}<p class='muted'>Generated by modelrollout report at {escape(when)}.</p>"
        "</body></html>\n"
    )
