"""How a person sees a ModelExperiment: a rich panel on a terminal, the same content as plain text.

The view reads the object as the API returns it (camelCase dicts), not through the pydantic
models: a status that is partial, from an older operator or written by hand must still show.
Every field may be missing; missing values show as "-".
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from rich import box
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from modelrollout.api.spec import DEFAULT_STEPS
from modelrollout.api.status import Phase

__all__ = [
    "experiment_panel",
    "experiment_text",
    "is_terminal",
    "list_table",
    "list_text",
    "render_plain",
]

MISSING: Final = "-"
#: Width of the plain-text rendering; wide enough that the tables rarely wrap in a log.
TEXT_WIDTH: Final = 120
_PHASE_STYLES: Final = {
    "Pending": "dim",
    "Shadowing": "cyan",
    "Progressing": "blue",
    "Paused": "yellow",
    "Promoted": "green",
    "RolledBack": "red",
    "Failed": "bold red",
}
_DECISION_STYLES: Final = {
    "Better": "green",
    "NonInferior": "green",
    "Worse": "red",
    "Inconclusive": "yellow",
    "Pending": "dim",
}
#: Conditions worth showing when True: each explains why an experiment holds or stopped.
_ALERT_CONDITIONS: Final = ("InvalidSpec", "SampleRatioMismatch", "MetricsUnavailable")


# --- reading the object --------------------------------------------------------------------------


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _status(obj: Mapping[str, Any]) -> dict[str, Any]:
    return _dict(obj.get("status"))


def _spec(obj: Mapping[str, Any]) -> dict[str, Any]:
    return _dict(obj.get("spec"))


def _phase(obj: Mapping[str, Any]) -> str:
    return str(_status(obj).get("phase") or Phase.PENDING.value)


def is_terminal(obj: Mapping[str, Any]) -> bool:
    """Whether the experiment has finished (Promoted, RolledBack or Failed)."""
    try:
        return Phase(_phase(obj)).terminal
    except ValueError:
        return False


def _reference(obj: Mapping[str, Any]) -> str:
    meta = _dict(obj.get("metadata"))
    return f"{meta.get('namespace') or MISSING}/{meta.get('name') or MISSING}"


def _steps(obj: Mapping[str, Any]) -> list[int]:
    steps = _list(_dict(_spec(obj).get("rollout")).get("steps"))
    return [int(s) for s in steps if _number(s) is not None] or list(DEFAULT_STEPS)


def _champion(obj: Mapping[str, Any]) -> str | None:
    name = _dict(_spec(obj).get("champion")).get("name")
    return str(name) if name else None


def _variant_names(obj: Mapping[str, Any]) -> list[str]:
    """Champion first, then challengers in spec order, then any other name the status mentions."""
    names = [n for n in [_champion(obj)] if n]
    names += [str(c.get("name")) for c in _list(_spec(obj).get("challengers")) if _dict(c).get("name")]
    status = _status(obj)
    names += list(_dict(status.get("weights")))
    names += list(_dict(_dict(status.get("analysis")).get("variants")))
    return list(dict.fromkeys(names))


# --- formatting numbers --------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 4) -> str:
    number = _number(value)
    return MISSING if number is None else f"{number:.{digits}g}"


def _fmt_count(value: Any) -> str:
    number = _number(value)
    return MISSING if number is None else f"{round(number):,}"


def _fmt_signed(value: Any, digits: int = 3) -> str:
    number = _number(value)
    return MISSING if number is None else f"{number:+.{digits}g}"


def _fmt_percent(value: Any, signed: bool = False) -> str:
    number = _number(value)
    if number is None:
        return MISSING
    return f"{100 * number:+.1f} %" if signed else f"{100 * number:.1f} %"


def _fmt_p(value: Any) -> str:
    number = _number(value)
    if number is None:
        return MISSING
    return "<0.001" if number < 0.001 else f"{number:.3f}"


def _fmt_weights(weights: Mapping[str, Any]) -> str:
    if not weights:
        return MISSING
    return ", ".join(f"{name} {_fmt(share)}%" for name, share in weights.items())


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _fmt_age(since: datetime | None, now: datetime) -> str:
    """Age as kubectl shows it: 42s, 7m, 3h, 5d."""
    if since is None:
        return MISSING
    seconds = max(0, int((now - since).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _fmt_time(value: Any) -> str:
    parsed = _parse_time(value)
    return MISSING if parsed is None else parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _step_text(obj: Mapping[str, Any]) -> str:
    status, steps = _status(obj), _steps(obj)
    index = status.get("currentStep")
    phase = _phase(obj)
    if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(steps):
        return f"{index + 1} of {len(steps)} ({steps[index]} %)"
    if phase == Phase.SHADOWING.value:
        return f"shadow (0 of {len(steps)})"
    return f"{MISSING} of {len(steps)}"


def _step_short(obj: Mapping[str, Any]) -> str:
    status, steps = _status(obj), _steps(obj)
    index = status.get("currentStep")
    if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(steps):
        return f"{index + 1}/{len(steps)} ({steps[index]}%)"
    return "shadow" if _phase(obj) == Phase.SHADOWING.value else f"{MISSING}/{len(steps)}"


# --- the sections --------------------------------------------------------------------------------


def _text(value: str, style: str = "") -> Text:
    # Text, never markup: names and messages come from users and may contain "[...]".
    return Text(value, style=style)


def _table(plain: bool, title: str | None = None) -> Table:
    # No column may wrap: a wrapped number is misread. Rich shortens with "..." if it must.
    return Table(
        title=title,
        title_justify="left",
        title_style="" if plain else "bold",
        # No box: its column separators cost the width that lets the tables fit 80 columns.
        box=None,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
        header_style="" if plain else "bold underline",
    )


def _header(obj: Mapping[str, Any], now: datetime) -> Table:
    status, spec = _status(obj), _spec(obj)
    meta = _dict(obj.get("metadata"))
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    phase = _phase(obj)
    rows: list[tuple[str, Text]] = [
        ("Experiment", _text(_reference(obj))),
        ("Phase", _text(phase, _PHASE_STYLES.get(phase, ""))),
        ("Step", _text(_step_text(obj))),
        ("Weights", _text(_fmt_weights(_dict(status.get("weights"))))),
    ]
    champion = _champion(obj)
    challengers = [str(_dict(c).get("name")) for c in _list(spec.get("challengers"))]
    if champion or challengers:
        roles = f"champion {champion or MISSING}; challengers {', '.join(challengers) or MISSING}"
        rows.append(("Variants", _text(roles)))
    pause = _dict(status.get("pause"))
    if phase == Phase.PAUSED.value or pause:
        rows.append(
            (
                "Paused",
                _text(
                    f"{pause.get('reason') or 'unknown reason'} since {_fmt_time(pause.get('since'))}, "
                    f"resumes {pause.get('fromPhase') or MISSING}",
                    "yellow",
                ),
            )
        )
    started = _parse_time(status.get("startedAt"))
    created = _parse_time(meta.get("creationTimestamp"))
    if started is not None:
        rows.append(("Started", _text(f"{_fmt_time(started.isoformat())} ({_fmt_age(started, now)} ago)")))
    elif created is not None:
        rows.append(("Created", _text(f"{_fmt_time(created.isoformat())} ({_fmt_age(created, now)} ago)")))
    if status.get("finishedAt"):
        rows.append(("Finished", _text(_fmt_time(status.get("finishedAt")))))
    if spec.get("paused") is True and phase != Phase.PAUSED.value:
        rows.append(("Note", _text("spec.paused is true: the operator pauses at its next tick", "yellow")))
    for label, value in rows:
        grid.add_row(_text(label), value)
    return grid


def _primary_title(obj: Mapping[str, Any]) -> tuple[str, bool]:
    primary = _dict(_dict(_spec(obj).get("metrics")).get("primary"))
    relative = primary.get("mdeType", "relative") != "absolute"
    name = primary.get("name") or "primary metric"
    direction = primary.get("direction") or "increase"
    better = "higher" if direction == "increase" else "lower"
    return f"Primary metric: {name} ({better} is better)", relative


def _planned_n(obj: Mapping[str, Any], result: Mapping[str, Any]) -> Any:
    status = _status(obj)
    if _number(result.get("plannedN")) is not None:
        return result.get("plannedN")
    analysis_planned = _dict(status.get("analysis")).get("plannedN")
    if _number(analysis_planned) is not None:
        return analysis_planned
    primary_name = _dict(_dict(_spec(obj).get("metrics")).get("primary")).get("name")
    return _dict(_dict(status.get("plans")).get(str(primary_name))).get("n")


def _interval(result: Mapping[str, Any], relative: bool) -> str:
    ci = _dict(result.get("ci"))
    low, high = _number(ci.get("low")), _number(ci.get("high"))
    if low is None or high is None:
        return MISSING
    if relative:
        return f"[{100 * low:+.1f}, {100 * high:+.1f}]%"
    return f"[{_fmt_signed(low)}, {_fmt_signed(high)}]"


def _evidence(result: Mapping[str, Any]) -> str:
    """The p-value, e-value (sequential) or P(better) (bayesian), whichever the test gave."""
    parts = []
    if _number(result.get("pValue")) is not None:
        parts.append(f"p {_fmt_p(result.get('pValue'))}")
    if _number(result.get("eValue")) is not None:
        parts.append(f"e {_fmt(result.get('eValue'), 3)}")
    if _number(result.get("probability")) is not None:
        parts.append(f"P(better) {_fmt(result.get('probability'), 3)}")
    return " ".join(parts) or MISSING


_VARIANT_COLUMNS: Final = (
    ("variant", "left"),
    ("n / planned", "right"),
    ("estimate", "right"),
    ("diff", "right"),
    ("lift", "right"),
    ("CI", "left"),
    ("decision", "left"),
)


def _variants_section(obj: Mapping[str, Any], plain: bool) -> list[RenderableType]:
    analysis = _dict(_status(obj).get("analysis"))
    variants = _dict(analysis.get("variants"))
    title, relative = _primary_title(obj)
    if not variants:
        return [_text(f"{title}: no analysis yet", "dim")]
    table = _table(plain, title)
    for column, justify in _VARIANT_COLUMNS:
        table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    champion = _champion(obj)
    details: list[str] = []
    for name in _variant_names(obj):
        if name not in variants:
            continue
        variant = _dict(variants[name])
        result = _dict(variant.get("primary"))
        n = variant.get("n") if _number(variant.get("n")) is not None else result.get("n")
        counts = _text(f"{_fmt_count(n)} / {_fmt_count(_planned_n(obj, result))}")
        if name == champion:
            blank = _text(MISSING)
            table.add_row(
                _text(name), counts, _text(_fmt(result.get("estimate"))), blank, blank, blank,
                _text("champion", "bold"),
            )
            continue
        decision = str(variant.get("decision") or result.get("decision") or MISSING)
        lift = _number(result.get("relativeLift"))
        table.add_row(
            _text(name),
            counts,
            _text(_fmt(result.get("estimate"))),
            _text(_fmt_signed(result.get("difference"))),
            _text(MISSING if lift is None else f"{100 * lift:+.1f}%"),
            _text(_interval(result, relative)),
            _text(decision, _DECISION_STYLES.get(decision, "")),
        )
        # The evidence goes on its own line, with the rule, so the table fits 80 columns.
        rule = f"; {variant['rule']}" if variant.get("rule") else ""
        details.append(f"{name}: {_evidence(result)}{rule}")
    sections: list[RenderableType] = [table]
    notes = [f"CI of the {'lift' if relative else 'difference'}"]
    if analysis.get("updatedAt"):
        notes.append(f"analysis at {_fmt_time(analysis.get('updatedAt'))}")
    sections += [_text(line) for line in details]
    sections.append(_text("; ".join(notes), "dim"))
    return sections


def _guardrails_section(obj: Mapping[str, Any], plain: bool) -> list[RenderableType]:
    variants = _dict(_dict(_status(obj).get("analysis")).get("variants"))
    rows = [
        (name, guardrail, _dict(result))
        for name in _variant_names(obj)
        for guardrail, result in _dict(_dict(variants.get(name)).get("guardrails")).items()
    ]
    if not rows:
        return []
    table = _table(plain, "Guardrails")
    for column in ("variant", "guardrail", "value", "champion", "worse by", "limit", "p", "breached"):
        justify = "left" if column in ("variant", "guardrail", "breached") else "right"
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for name, guardrail, result in rows:
        breached = result.get("breached") is True
        table.add_row(
            _text(name),
            _text(guardrail),
            _text(_fmt(result.get("estimate"))),
            _text(_fmt(result.get("championEstimate"))),
            _text(_fmt_signed(result.get("difference"))),
            _text(_fmt(result.get("limit"))),
            _text(_fmt_p(result.get("pValue"))),
            _text("BREACHED" if breached else "no", "bold red" if breached else "green"),
        )
    return [table]


def _segment_row(name: str, record: Mapping[str, Any]) -> tuple[Text, ...]:
    ci = _dict(record.get("ci"))
    interval = f"[{_fmt_signed(ci.get('low'))}, {_fmt_signed(ci.get('high'))}]" if ci else "-"
    protected = record.get("protected") is True
    harmed = record.get("harmed") is True
    if protected:
        verdict = _text("HARMED" if harmed else "no", "bold red" if harmed else "green")
    else:
        verdict = _text("look" if harmed else "-", "yellow" if harmed else "dim")
    return (
        _text(name),
        _text(str(record.get("metric", ""))),
        _text(f"{record.get('value', '')}{'' if protected else ' (exploratory)'}"),
        _text(_fmt(record.get("estimate"))),
        _text(_fmt(record.get("championEstimate"))),
        _text(_fmt_signed(record.get("difference"))),
        _text(interval),
        _text(_fmt_count(record.get("n"))),
        _text(_fmt_p(record.get("pValue"))),
        verdict,
    )


def _segments_section(obj: Mapping[str, Any], plain: bool) -> list[RenderableType]:
    """Each challenger's segments: protected ones (decided on), then the exploratory view."""
    variants = _dict(_dict(_status(obj).get("analysis")).get("variants"))
    rows = [
        _segment_row(name, _dict(record))
        for name in _variant_names(obj)
        for record in _list(_dict(variants.get(name)).get("segments"))
    ]
    if not rows:
        return []
    title = "Segments (protected: always-valid harm tests; exploratory: shown, never decided on)"
    table = _table(plain, title)
    columns: tuple[str, ...] = ("variant", "metric", "segment", "value", "champion", "difference")
    columns += ("interval", "n", "p", "harmed")
    for column in columns:
        justify = "left" if column in ("variant", "metric", "segment", "harmed") else "right"
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*row)
    return [table]


def _srm_section(obj: Mapping[str, Any]) -> list[RenderableType]:
    srm = _dict(_dict(_status(obj).get("analysis")).get("srm"))
    if not srm:
        return []
    observed, expected = _dict(srm.get("observedShares")), _dict(srm.get("expectedShares"))
    shares = ", ".join(
        f"{name} {_fmt_percent(observed.get(name))} (expected {_fmt_percent(expected.get(name))})"
        for name in dict.fromkeys([*expected, *observed])
    )
    mismatch = srm.get("mismatch") is True
    verdict = "MISMATCH" if mismatch else "ok"
    line = Text()
    line.append("Sample ratio: ", style="bold")
    line.append(f"{verdict}, p {_fmt_p(srm.get('pValue'))}", style="bold red" if mismatch else "green")
    if shares:
        line.append(f"; {shares}")
    return [line]


def _dropped_section(obj: Mapping[str, Any]) -> list[RenderableType]:
    return [
        _text(
            f"Dropped {_dict(d).get('name') or MISSING} at {_fmt_time(_dict(d).get('at'))}: "
            f"{_dict(d).get('reason') or MISSING} {_dict(d).get('message') or ''}".rstrip(),
            "yellow",
        )
        for d in _list(_status(obj).get("droppedChallengers"))
    ]


def _conditions_section(obj: Mapping[str, Any]) -> list[RenderableType]:
    lines: list[RenderableType] = []
    for condition in _list(_status(obj).get("conditions")):
        condition = _dict(condition)
        if condition.get("type") in _ALERT_CONDITIONS and condition.get("status") == "True":
            lines.append(
                _text(
                    f"{condition['type']}: {condition.get('reason') or MISSING} "
                    f"{condition.get('message') or ''}".rstrip(),
                    "red",
                )
            )
    return lines


def _last_transition_section(obj: Mapping[str, Any]) -> list[RenderableType]:
    history = _list(_status(obj).get("history"))
    if not history:
        return []
    last = _dict(history[-1])

    def step(value: Any) -> str:
        return str(value + 1) if isinstance(value, int) and not isinstance(value, bool) else MISSING

    line = Text()
    line.append("Last transition: ", style="bold")
    phases = f"{last.get('fromPhase') or MISSING} -> {last.get('toPhase') or MISSING}"
    steps = f"step {step(last.get('fromStep'))} -> {step(last.get('toStep'))}"
    line.append(f"{_fmt_time(last.get('time'))}  {phases}  ({steps})")
    line.append(f"  {last.get('reason') or MISSING}", style="bold")
    parts: list[RenderableType] = [line]
    if last.get("message"):
        parts.append(_text(f"  {last['message']}"))
    numbers = _dict(last.get("numbers"))
    if numbers:
        parts.append(_text("  " + ", ".join(f"{k} {_fmt(v)}" for k, v in numbers.items()), "dim"))
    return parts


def _sections(obj: Mapping[str, Any], plain: bool, now: datetime) -> list[RenderableType]:
    sections: list[RenderableType] = [_header(obj, now), _text("")]
    sections += _variants_section(obj, plain)
    for extra in (
        _guardrails_section(obj, plain),
        _segments_section(obj, plain),
        _srm_section(obj),
        _dropped_section(obj) + _conditions_section(obj),
        _last_transition_section(obj),
    ):
        if extra:
            sections += [_text(""), *extra]
    return sections


# --- public --------------------------------------------------------------------------------------


def render_plain(renderable: RenderableType, width: int = TEXT_WIDTH) -> str:
    """``renderable`` as plain text: no colours, no ANSI escapes, trailing spaces trimmed."""
    console = Console(
        file=io.StringIO(),
        width=width,
        color_system=None,
        force_terminal=False,
        no_color=True,
        highlight=False,
        emoji=False,
    )
    with console.capture() as capture:
        console.print(renderable)
    return "\n".join(line.rstrip() for line in capture.get().splitlines()) + "\n"


def experiment_panel(obj: Mapping[str, Any], now: datetime | None = None) -> RenderableType:
    """The experiment as a rich panel, coloured by phase."""
    now = now or datetime.now(UTC)
    phase = _phase(obj)
    return Panel(
        Group(*_sections(obj, plain=False, now=now)),
        title=Text(f"modelexperiment {_reference(obj)}", style="bold"),
        title_align="left",
        border_style=_PHASE_STYLES.get(phase, ""),
        expand=False,
    )


def experiment_text(obj: Mapping[str, Any], now: datetime | None = None) -> str:
    """The same content as :func:`experiment_panel`, as plain text."""
    now = now or datetime.now(UTC)
    return render_plain(Group(*_sections(obj, plain=True, now=now)))


def _list_rows(objs: Iterable[Mapping[str, Any]], now: datetime) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for obj in objs:
        meta = _dict(obj.get("metadata"))
        rows.append(
            (
                str(meta.get("name") or MISSING),
                str(meta.get("namespace") or MISSING),
                _phase(obj),
                _step_short(obj),
                _fmt_weights(_dict(_status(obj).get("weights"))),
                _fmt_age(_parse_time(meta.get("creationTimestamp")), now),
            )
        )
    return rows


_LIST_COLUMNS: Final[Sequence[str]] = ("NAME", "NAMESPACE", "PHASE", "STEP", "WEIGHTS", "AGE")


def list_table(objs: Iterable[Mapping[str, Any]], now: datetime | None = None) -> Table:
    """The experiments as a rich table, one row each."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for column in _LIST_COLUMNS:
        table.add_column(column)
    for row in _list_rows(objs, now or datetime.now(UTC)):
        name, namespace, phase, *rest = row
        table.add_row(
            _text(name), _text(namespace), _text(phase, _PHASE_STYLES.get(phase, "")), *map(_text, rest)
        )
    return table


def list_text(objs: Iterable[Mapping[str, Any]], now: datetime | None = None) -> str:
    """The experiments as plain aligned columns, as kubectl prints them."""
    rows = [tuple(_LIST_COLUMNS), *_list_rows(objs, now or datetime.now(UTC))]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_LIST_COLUMNS))]
    return "".join(
        "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n"
        for row in rows
    )
