"""The report's figures, drawn with matplotlib's Agg backend from the views of :mod:`.data`.

Every figure shares the time axis (since the first transition) and marks the run's steps as
shaded spans labelled above the plot; legends sit outside the axes so they never hide data. A
figure without data says so in its middle instead of being blank.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, PercentFormatter
from matplotlib.transforms import blended_transform_factory

from modelrollout.api.status import Phase
from modelrollout.report.data import (
    GuardrailPanel,
    PrimaryView,
    SamplesView,
    SegmentRow,
    Series,
    Span,
    TimeAxis,
    WeightsView,
)

CHAMPION_COLOR: Final = "#555555"
CHALLENGER_COLORS: Final = ("#1f77b4", "#ff7f0e", "#9467bd", "#17becf", "#8c564b")
BREACH_COLOR: Final = "#d62728"
PROMOTE_COLOR: Final = "#2ca02c"
WIDTH_IN: Final = 10.0
DPI: Final = 110
#: Up to this many points a primary series is drawn with error bars instead of a band.
_FEW_POINTS: Final = 8
_SPAN_SHADES: Final = ("#f1f1f1", "#ffffff")
_VERDICT_COLORS: Final = {Phase.PROMOTED: "#2ca02c", Phase.ROLLED_BACK: "#d62728", Phase.FAILED: "#d62728"}
#: Legend labels are wrapped at this many characters (the legend sits right of the axes).
_LEGEND_WIDTH: Final = 34
_PHASE_SHADES: Final = {
    Phase.PROMOTED: "#e3f4e1",
    Phase.ROLLED_BACK: "#fbe3e3",
    Phase.FAILED: "#fbe3e3",
    Phase.PAUSED: "#fff4d6",
    Phase.SHADOWING: "#e8eef8",
}


def variant_colors(names: Sequence[str], champion: str | None) -> dict[str, str]:
    """A fixed colour per variant: grey for the champion, then the challenger palette in order."""
    colors: dict[str, str] = {}
    i = 0
    for name in names:
        if name == champion:
            colors[name] = CHAMPION_COLOR
        else:
            colors[name] = CHALLENGER_COLORS[i % len(CHALLENGER_COLORS)]
            i += 1
    return colors


def _thousands(value: float, _pos: int) -> str:
    return f"{value:,.0f}"


def _decorate_time(
    ax: Axes, spans: Sequence[Span], axis: TimeAxis, *, label_spans: bool = True, bottom: bool = True
) -> None:
    """Shade the steps, label them above the axes where there is room, set the time axis."""
    right = max(axis.span, max((s.end for s in spans), default=0.0))
    left = 0.0
    right = right if right > left else left + 1.0  # nothing has happened yet: an empty unit axis
    width = right - left
    ax.set_xlim(left, right)
    top = blended_transform_factory(ax.transData, ax.transAxes)
    for i, span in enumerate(spans):
        # Shaded by step, so a span that restarts the same step (a challenger dropped) keeps its shade.
        shade = _PHASE_SHADES.get(span.phase, _SPAN_SHADES[(span.step or 0) % 2])
        ax.axvspan(span.start, span.end, color=shade, zorder=0, linewidth=0)
        verdict = _VERDICT_COLORS.get(span.phase)
        if verdict is not None:
            ax.axvline(span.start, color=verdict, linewidth=1.4, zorder=1)
        elif i > 0:
            ax.axvline(span.start, color="#999999", linewidth=0.8, linestyle=":", zorder=1)
        # ~0.9 % of the axes per character at 8 pt on a 10-inch figure: skip labels that would collide.
        if label_spans and (span.end - span.start) / width >= 0.009 * len(span.label) + 0.01:
            ax.text(
                (span.start + span.end) / 2,
                1.01,
                span.label,
                transform=top,
                ha="center",
                va="bottom",
                fontsize=8,
                color="#333333",
            )
    if bottom:
        ax.set_xlabel(axis.label)
    ax.grid(True, color="#dddddd", linewidth=0.6, zorder=1)
    ax.set_axisbelow(True)


def _no_data(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", fontsize=11, color="#777777")
    ax.set_xticks([])
    ax.set_yticks([])


def _figure(rows: int, row_height: float) -> tuple[Figure, list[Axes]]:
    fig, axes = plt.subplots(
        rows, 1, figsize=(WIDTH_IN, 0.6 + row_height * rows), layout="constrained", squeeze=False, sharex=True
    )
    return fig, [a for (a,) in axes]


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, facecolor="white")
    plt.close(fig)
    return path


def _legend(ax: Axes) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        wrapped = [textwrap.fill(label, _LEGEND_WIDTH) for label in labels]
        ax.legend(
            handles,
            wrapped,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize=8,
            frameon=False,
            borderaxespad=0,
            labelspacing=0.7,
        )


# --- the four figures ----------------------------------------------------------------------------


def plot_weights(view: WeightsView, axis: TimeAxis, colors: dict[str, str], path: Path) -> Path:
    """Stacked traffic weights per variant over time (%), the steps shaded."""
    fig, (ax,) = _figure(1, 3.6)
    ax.set_title("Traffic weights per variant", pad=16)
    if not view.variants:
        _no_data(ax, "No weights recorded yet (the experiment has not started).")
        return _save(fig, path)
    _decorate_time(ax, view.spans, axis)
    x = view.variants[0].x
    bottom = [0.0] * len(x)
    for series in view.variants:
        if series.x != x:  # every variant is sampled at the same changes; guard anyway
            continue
        upper = [b + y for b, y in zip(bottom, series.y, strict=True)]
        ax.fill_between(
            x,
            bottom,
            upper,
            step="post",
            color=colors.get(series.label, CHAMPION_COLOR),
            alpha=0.75,
            linewidth=0,
            label=f"{series.label} (now {series.y[-1]:.0f} %)",
            zorder=2,
        )
        bottom = upper
    ax.set_ylim(0, 100)
    ax.set_yticks([0, 10, 25, 50, 75, 90, 100])
    ax.yaxis.set_major_formatter(PercentFormatter(100, decimals=0))
    ax.set_ylabel("share of traffic (%)")
    _legend(ax)
    return _save(fig, path)


def _padded(values: Sequence[float], pad: float = 0.08) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    low, high = min(finite), max(finite)
    room = (high - low) * pad or max(abs(high), 1.0) * pad
    return low - room, high + room


def plot_primary(
    view: PrimaryView, axis: TimeAxis, spans: Sequence[Span], colors: dict[str, str], path: Path
) -> Path:
    """Each challenger's effect vs the champion with its interval band, and the decision lines."""
    bands = view.bands or ()
    fig, axes = _figure(max(1, len(bands)), 3.4)
    if not any(b.x for b in bands):
        axes[0].set_title(f"Primary metric ({view.metric}) vs the champion", pad=16)
        _no_data(axes[0], "No comparison with the champion yet.")
        for ax in axes[1:]:
            ax.set_visible(False)
        return _save(fig, path)
    for i, (ax, band) in enumerate(zip(axes, bands, strict=True)):
        _decorate_time(ax, spans, axis, label_spans=i == 0, bottom=i == len(bands) - 1)
        ax.set_title(
            f"{band.challenger} vs the champion on {view.metric} (verdict: {band.decision})",
            pad=16 if i == 0 else 6,
            fontsize=11,
        )
        color = colors.get(band.challenger, CHALLENGER_COLORS[0])
        if not band.x:
            _no_data(ax, "No comparison yet.")
            continue
        if len(band.x) <= _FEW_POINTS:
            # A handful of points (one per step): error bars read better than a band.
            below = [e - lo for e, lo in zip(band.estimate, band.low, strict=True)]
            above = [hi - e for e, hi in zip(band.estimate, band.high, strict=True)]
            ax.errorbar(
                band.x,
                band.estimate,
                yerr=[below, above],
                color=color,
                marker="o",
                markersize=5,
                capsize=4,
                linewidth=1.4,
                label=f"estimate and {view.band_label}",
                zorder=3,
            )
        else:
            ax.fill_between(
                band.x, band.low, band.high, color=color, alpha=0.22, linewidth=0, label=view.band_label
            )
            ax.plot(
                band.x, band.estimate, color=color, marker="o", markersize=3, linewidth=1.6, label="estimate"
            )
        styles = {
            "zero": ("#000000", "-", 0.9),
            "practical": (PROMOTE_COLOR, "--", 1.3),
            "margin": (PROMOTE_COLOR, "--", 1.3),
            "mde": ("#777777", ":", 1.3),
        }
        for ref in view.references:
            line_color, style, width = styles.get(ref.kind, ("#777777", ":", 1.0))
            ax.axhline(
                ref.value, color=line_color, linestyle=style, linewidth=width, label=ref.label, zorder=2
            )
        if band.dropped_at is not None:
            ax.axvline(
                band.dropped_at,
                color=BREACH_COLOR,
                linewidth=1.4,
                linestyle="-.",
                label=f"{band.challenger} dropped ({band.dropped_reason})",
            )
        # Early intervals can be very wide; keep the estimates, the lines and the later band in view.
        tail = max(1, len(band.low) // 4)
        shown = [*band.estimate, *band.low[tail:], *band.high[tail:], *(r.value for r in view.references)]
        ax.set_ylim(*_padded(shown))
        ax.set_ylabel(view.ylabel)
        _legend(ax)
    for ax in axes[len(bands) :]:
        ax.set_visible(False)
    fig.supxlabel(f"Points: {view.source}.", fontsize=7, color="#666666")
    return _save(fig, path)


def plot_guardrails(
    panels: Sequence[GuardrailPanel],
    axis: TimeAxis,
    spans: Sequence[Span],
    colors: dict[str, str],
    path: Path,
) -> Path:
    """Each guardrail's challenger values against the champion and the breach limit."""
    fig, axes = _figure(max(1, len(panels)), 3.0)
    if not panels:
        axes[0].set_title("Guardrails", pad=16)
        _no_data(axes[0], "No guardrails in this experiment.")
        return _save(fig, path)
    for i, (ax, panel) in enumerate(zip(axes, panels, strict=True)):
        ax.set_title(f"Guardrail {panel.name}", pad=16 if i == 0 else 6, fontsize=11)
        _decorate_time(ax, spans, axis, label_spans=i == 0, bottom=i == len(panels) - 1)
        if not panel.challengers and panel.champion is None:
            _no_data(ax, "Not evaluated yet.")
            continue
        shown: list[float] = []
        if panel.boundary is not None:
            ax.plot(
                panel.boundary.x,
                panel.boundary.y,
                color=BREACH_COLOR,
                linestyle="--",
                linewidth=1.3,
                label=panel.boundary.label,
                drawstyle="steps-post" if panel.kind == "threshold" else "default",
            )
            shown += panel.boundary.y
        if panel.champion is not None:
            ax.plot(
                panel.champion.x,
                panel.champion.y,
                color=CHAMPION_COLOR,
                linewidth=1.6,
                label=f"{panel.champion.label} (champion)",
            )
            shown += panel.champion.y
        for series in panel.challengers:
            _plot_variant(ax, series, colors, series.label)
            shown += series.y
        for challenger, x, y in panel.breaches:
            ax.plot(
                [x],
                [y],
                marker="X",
                markersize=11,
                color=BREACH_COLOR,
                linestyle="none",
                label=f"{challenger} breached",
                zorder=4,
            )
        if shown:
            low, high = _padded([*shown, 0.0] if min(shown) >= 0 else shown)
            # a rate or a latency share is never negative: no padding below 0
            ax.set_ylim(0.0 if min(shown) >= 0 else low, high)
        ax.set_ylabel(panel.ylabel)
        _legend(ax)
    return _save(fig, path)


def _plot_variant(ax: Axes, series: Series, colors: dict[str, str], label: str) -> None:
    """One variant's line, in its colour, with a dot per point."""
    ax.plot(
        series.x,
        series.y,
        color=colors.get(series.label, CHALLENGER_COLORS[0]),
        marker="o",
        markersize=3,
        linewidth=1.6,
        label=label,
    )


def plot_samples(
    view: SamplesView, axis: TimeAxis, spans: Sequence[Span], colors: dict[str, str], path: Path
) -> Path:
    """Samples of the primary metric per variant over time, against the planned n."""
    fig, (ax,) = _figure(1, 3.6)
    ax.set_title(f"Samples of {view.metric} per variant", pad=16)
    if not any(s.x for s in view.variants):
        _no_data(ax, "No samples counted yet.")
        return _save(fig, path)
    _decorate_time(ax, spans, axis)
    for series in view.variants:
        _plot_variant(ax, series, colors, f"{series.label} (n = {series.y[-1]:,.0f})")
    if view.planned is not None:
        ax.plot(
            view.planned.x,
            view.planned.y,
            color="#000000",
            linestyle="--",
            linewidth=1.2,
            drawstyle="steps-post",
            label=f"planned n per variant ({view.planned.y[-1]:,.0f})",
        )
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.set_ylabel("samples (n)")
    _legend(ax)
    return _save(fig, path)


def plot_segments(rows: Sequence[SegmentRow], colors: dict[str, str], path: Path) -> Path:
    """A forest plot: each segment's difference (challenger minus champion) with its always-valid
    interval; protected segments first (harmed ones in red), exploratory ones in grey."""
    height = max(2.4, 0.42 * len(rows) + 1.4)
    fig, axes = _figure(1, height)
    ax = axes[0]
    ax.set_title("Segments: challenger minus champion", pad=10, fontsize=11)
    if not rows:
        _no_data(ax, "No segments in this experiment.")
        return _save(fig, path)
    ys = list(range(len(rows)))[::-1]
    for y, row in zip(ys, rows, strict=True):
        color = BREACH_COLOR if row.harmed and row.protected else colors.get(row.challenger, "#333333")
        if not row.protected:
            color = "#999999"
        if row.low is not None and row.high is not None:
            ax.plot([row.low, row.high], [y, y], color=color, linewidth=2.0)
        ax.plot([row.difference], [y], marker="o" if row.protected else "s", color=color, linestyle="none")
    ax.axvline(0.0, color="#555555", linewidth=1.0, linestyle="--")
    ax.set_yticks(ys)
    ax.set_yticklabels([r.label for r in rows], fontsize=8)
    ax.set_xlabel("difference (protected: always-valid interval at alpha/K; red: harmed)")
    return _save(fig, path)
