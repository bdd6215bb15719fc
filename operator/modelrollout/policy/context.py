"""The inputs of one tick, with what is derived from the spec once, and the tick's outputs so far."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from modelrollout.api.observations import Observations
from modelrollout.api.spec import ModelExperimentSpec, SecondaryMetric
from modelrollout.api.status import HistoryEntry, ModelExperimentStatus, Phase
from modelrollout.api.types import parse_duration
from modelrollout.policy.decision import Event, EventType, Rule

#: Most numbers kept with one history entry (the status schema's bound).
MAX_NUMBERS = 64


@functools.lru_cache(maxsize=256)
def duration(text: str) -> timedelta:
    """``parse_duration`` with a cache (specs repeat the same few strings)."""
    return parse_duration(text)


def finite(value: float | None) -> float | None:
    """``value`` when it is a finite number, else None (the status carries no NaN or infinity)."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def clean_numbers(numbers: Mapping[str, float | None]) -> dict[str, float]:
    """The finite entries of ``numbers``, at most :data:`MAX_NUMBERS` of them."""
    out: dict[str, float] = {}
    for key, value in numbers.items():
        v = finite(value)
        if v is not None and len(out) < MAX_NUMBERS:
            out[key] = v
    return out


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for a message: ``0.0123``, ``1.2e+04``; ``n/a`` when unknown."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}g}"


def pct(value: float | None, digits: int = 3) -> str:
    """A share as a percentage for a message: ``12.5 %``."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{100.0 * value:.{digits}g} %"


def span(delta: timedelta) -> str:
    """A duration for a message: ``4m30s``, ``2h``."""
    seconds = max(0, int(delta.total_seconds()))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    if seconds or not parts:
        parts.append(f"{seconds}s")
    return "".join(parts)


@dataclass
class Outcome:
    """What one pass of the rules concluded: a transition (the status changed phase, step or
    weights) or a hold, with the rule, a CamelCase reason, a sentence and its numbers."""

    rule: Rule
    reason: str
    message: str
    numbers: dict[str, float] = field(default_factory=dict)
    transition: bool = False


@dataclass
class Tick:
    """One tick: the spec, the observations and the clock, and the events emitted so far."""

    spec: ModelExperimentSpec
    obs: Observations
    now: datetime
    new_tick: bool
    events: list[Event] = field(default_factory=list)
    _counted: set[str] = field(default_factory=set)

    # --- derived from the spec -----------------------------------------------------------------
    @functools.cached_property
    def champion(self) -> str:
        return self.spec.champion.name

    @functools.cached_property
    def challengers(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.spec.challengers)

    @functools.cached_property
    def variants(self) -> tuple[str, ...]:
        return (self.champion, *self.challengers)

    @functools.cached_property
    def steps(self) -> tuple[int, ...]:
        return tuple(self.spec.rollout.steps)

    @functools.cached_property
    def last_step(self) -> int:
        """Index of the last step below 100: where a challenger must be seen before promotion."""
        return max(0, len(self.steps) - 2)

    @functools.cached_property
    def decisive(self) -> tuple[SecondaryMetric, ...]:
        return tuple(m for m in self.spec.metrics.secondary if m.decisive)

    @functools.cached_property
    def family_size(self) -> int:
        """Hypotheses corrected together: every challenger times (primary + decisive secondaries)."""
        return len(self.challengers) * (1 + len(self.decisive))

    @functools.cached_property
    def alpha(self) -> float:
        return self.spec.analysis.alpha

    @functools.cached_property
    def alpha_ci(self) -> float:
        """Level of each interval: alpha / family size (Bonferroni), fixed for the whole run."""
        return self.alpha / self.family_size

    @functools.cached_property
    def min_step_duration(self) -> timedelta:
        return duration(self.spec.rollout.min_step_duration)

    @functools.cached_property
    def max_duration(self) -> timedelta:
        return duration(self.spec.analysis.max_duration)

    @functools.cached_property
    def min_duration(self) -> timedelta:
        """analysis.minDuration (zero when unset)."""
        text = self.spec.analysis.min_duration
        return duration(text) if text is not None else timedelta(0)

    @functools.cached_property
    def novelty_window(self) -> timedelta:
        return duration(self.spec.analysis.novelty.window)

    @functools.cached_property
    def max_data_outage(self) -> timedelta:
        return duration(self.spec.analysis.max_data_outage)

    @functools.cached_property
    def shadow_duration(self) -> timedelta:
        return duration(self.spec.shadow.duration)

    # --- tick bookkeeping ------------------------------------------------------------------------
    def count_once(self, key: str) -> bool:
        """True the first time ``key`` is counted in a new tick; False on a replay or a repeat.

        Counters that grow by one per tick (consecutive errors, threshold failures) use this, so a
        tick replayed with the same ``now`` (or re-evaluated after a transition) counts once.
        """
        if not self.new_tick or key in self._counted:
            return False
        self._counted.add(key)
        return True

    def emit(self, type_: EventType, reason: str, message: str) -> None:
        """Queue an Event."""
        self.events.append(Event(type_, reason, message))

    def record(
        self,
        status: ModelExperimentStatus,
        *,
        from_phase: Phase | None,
        from_step: int | None,
        reason: str,
        message: str,
        numbers: Mapping[str, float | None],
        warning: bool = False,
    ) -> None:
        """Append a transition to the history and queue its Event."""
        status.record(
            HistoryEntry(
                time=self.now,
                from_phase=from_phase,
                to_phase=status.phase,
                from_step=from_step,
                to_step=status.current_step,
                weights=dict(status.weights),
                reason=reason,
                message=message,
                numbers=clean_numbers(numbers),
            )
        )
        self.emit(EventType.WARNING if warning else EventType.NORMAL, reason, message)

    def live(self, status: ModelExperimentStatus) -> tuple[str, ...]:
        """The challengers still in the race, in spec order."""
        dropped = {d.name for d in status.dropped_challengers}
        return tuple(c for c in self.challengers if c not in dropped)


def joined(items: Iterable[str]) -> str:
    """``a, b and c``."""
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
