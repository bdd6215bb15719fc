"""What :func:`modelrollout.policy.decide` returns: the new status, the routes, and why.

A :class:`Decision` names the :class:`Rule` that fired and carries the numbers behind it; the
reconcile layer writes :attr:`Decision.status`, applies :attr:`Decision.routes` and emits
:attr:`Decision.events`. The routes are a function of the status alone
(:func:`modelrollout.policy.steps.routes_for`), so re-deriving them on every tick heals drift.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from modelrollout.api.status import ModelExperimentStatus, Phase


class Rule(StrEnum):
    """The rule of the decision procedure that fired in a tick (its value is CamelCase)."""

    INVALID_SPEC = "InvalidSpec"
    VARIANTS_CHANGED = "VariantsChanged"
    MANUAL_ABORT = "ManualAbort"
    MANUAL_PROMOTE = "ManualPromote"
    MANUAL_RETRY = "ManualRetry"
    PAUSED = "Paused"
    RESUMED = "Resumed"
    STARTED = "Started"
    FINISHED = "Finished"
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    DATA_OUTAGE_ROLLBACK = "DataOutageRollback"
    DATA_OUTAGE_PAUSE = "DataOutagePause"
    GUARDRAIL_BREACH = "GuardrailBreach"
    SEGMENT_HARM = "SegmentHarm"
    SAMPLE_RATIO_MISMATCH = "SampleRatioMismatch"
    PRIMARY_WORSE = "PrimaryWorse"
    DECISIVE_METRIC_WORSE = "DecisiveMetricWorse"
    PRIMARY_BETTER = "PrimaryBetter"
    STEP_ADVANCED = "StepAdvanced"
    HOLD = "Hold"
    SHADOW_PASSED = "ShadowPassed"
    SHADOW_FAILED = "ShadowFailed"
    INCONCLUSIVE = "Inconclusive"


class EventType(StrEnum):
    """The type of a Kubernetes Event."""

    NORMAL = "Normal"
    WARNING = "Warning"


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event for the reconcile layer to emit on the experiment."""

    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class Routes:
    """The desired route state: integer weights per variant (summing to 100) and the mirrors.

    Every variant of the spec has a weight (dropped challengers and, outside the steps, all
    challengers at 0). ``mirrors`` maps a challenger to the percent of the champion's requests
    mirrored to it (shadow phase only).
    """

    weights: Mapping[str, int]
    mirrors: Mapping[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        """A short human-readable form: ``v6=75% v7=25%`` (plus ``mirror v7 100%``)."""
        text = " ".join(f"{n}={w}%" for n, w in self.weights.items())
        if self.mirrors:
            text += ", " + ", ".join(f"mirror {n} {p}%" for n, p in self.mirrors.items())
        return text


@dataclass(frozen=True)
class Decision:
    """The outcome of one tick.

    Attributes
    ----------
    status
        The new status: a deep copy of the input, edited. Write it as it is.
    routes
        The desired route state, derived from ``status``.
    rule
        The rule that fired: the first transition of the tick, else the reason of the hold.
    reason
        CamelCase reason (more specific than ``rule`` where useful, e.g. ``WaitingForSamples``).
    message
        One sentence for humans, with the numbers.
    numbers
        The numbers behind the decision, by name (finite floats).
    events
        One Event per transition and per hold that began in this tick.
    """

    status: ModelExperimentStatus
    routes: Routes
    rule: Rule
    reason: str
    message: str
    numbers: Mapping[str, float]
    events: tuple[Event, ...] = ()

    @property
    def phase(self) -> Phase:
        """The phase after the tick."""
        return self.status.phase

    @property
    def step(self) -> int | None:
        """The step index after the tick."""
        return self.status.current_step
