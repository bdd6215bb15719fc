"""The experiment report: figures, a decision timeline and a plain-English verdict.

``write_report(obj, out_dir, recording=...)`` writes ``report.html`` (self-contained: inline CSS,
figures as data URIs) and the PNGs ``weights.png``, ``primary.png``, ``guardrails.png`` and
``samples.png``; ``explain(obj)`` says in one paragraph how the experiment ended and why.

The data extraction (:mod:`.data`, :mod:`.timeline`) is pure; :mod:`.plots` draws and
:mod:`.html` renders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelrollout.report import data as _data
from modelrollout.report.errors import ReportError
from modelrollout.report.timeline import explain_data, timeline

if TYPE_CHECKING:
    from modelrollout.console.recording import Snapshot

__all__ = ["ReportError", "ReportFiles", "explain", "write_report"]


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`write_report` wrote: the HTML, the PNGs by name, and the timeline in words."""

    html: Path
    pngs: dict[str, Path]
    timeline: list[str]


def explain(obj: Mapping[str, Any]) -> str:
    """One plain-English paragraph on how the experiment ended (or stands) and why, with numbers.

    Raises
    ------
    ReportError
        When ``obj`` is not a readable ModelExperiment.
    """
    return explain_data(_data.parse(obj))


def write_report(
    obj: Mapping[str, Any], out_dir: Path, *, recording: Sequence[Snapshot] | None = None
) -> ReportFiles:
    """Write the report of ``obj`` into ``out_dir`` (created if missing).

    With a ``recording`` the figures have one point per recorded analysis; without one, one point
    per finished step (recomputed from ``status.strata``) and the latest analysis.

    Raises
    ------
    ReportError
        When ``obj`` (or a snapshot) is not a readable ModelExperiment, or ``out_dir`` cannot be
        written.
    """
    try:
        from modelrollout.report import html, plots  # matplotlib only when drawing
    except ModuleNotFoundError as exc:
        if exc.name != "matplotlib" and not (exc.name or "").startswith("matplotlib."):
            raise
        raise ReportError(
            "the report's figures need matplotlib, an extra of the package: "
            "pip install 'modelrollout[report]'"
        ) from exc

    parsed = _data.parse(obj, recording)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        axis = _data.time_axis(parsed)
        spans = _data.spans(parsed, axis)
        colors = plots.variant_colors(parsed.variant_names(), parsed.champion)
        primary = _data.primary_view(parsed, axis)
        pngs = {
            "weights": plots.plot_weights(
                _data.weights_view(parsed, axis), axis, colors, out / "weights.png"
            ),
            "primary": plots.plot_primary(primary, axis, spans, colors, out / "primary.png"),
            "guardrails": plots.plot_guardrails(
                _data.guardrail_panels(parsed, axis), axis, spans, colors, out / "guardrails.png"
            ),
            "samples": plots.plot_samples(
                _data.samples_view(parsed, axis), axis, spans, colors, out / "samples.png"
            ),
        }
        segment_rows = _data.segment_rows(parsed)
        if segment_rows:
            pngs["segments"] = plots.plot_segments(segment_rows, colors, out / "segments.png")
        entries = timeline(parsed)
        page = html.render_html(
            parsed,
            explain_data(parsed),
            entries,
            pngs,
            figure_notes={"primary": f"Points: {primary.source}."},
        )
        html_path = out / "report.html"
        html_path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"cannot write the report into {out}: {exc.strerror or exc}") from exc
    return ReportFiles(html=html_path, pngs=pngs, timeline=[e.text for e in entries])
