"""The status conditions, set on every tick with ``observedGeneration``, and the hold Events.

Conventions (``kubectl wait --for=condition=Succeeded`` works; Argo CD and Flux read health):

* **Ready**: True while the experiment works as intended (Pending, Shadowing, Progressing, Paused
  by the spec or by ``onInconclusive``, Promoted); False when something needs attention: an
  invalid spec, unavailable metrics, a sample ratio mismatch, a pause by ``onDataOutage``,
  RolledBack (the challenger did not make it) or Failed.
* **Progressing**: True in Pending, Shadowing and Progressing (the reason says what the
  experiment waits for); False when Paused or finished.
* **Succeeded**: True once Promoted; False once RolledBack or Failed; Unknown while running.
* **RolledBack**: True once RolledBack, else False.
* **InvalidSpec**: True with the field paths and fixes while the spec has errors, else False.
* **Stalled**: True once the experiment cannot reach its goal without a change by a person: an
  invalid spec, or RolledBack or Failed; else False. kstatus (Flux's health checks) reads
  Stalled=True as Failed, so a Kustomization that waits for the experiment fails at once instead
  of timing out (Ready alone only tells kstatus "in progress").
* **SampleRatioMismatch** and **MetricsUnavailable**: True while the hold lasts, as of the last
  tick that looked at the metrics; a finished experiment keeps the values of its last analysis (a
  rollback for an outage stays explained).

Holds emit an Event when they begin (the condition turns True, or its message changes for
InvalidSpec) and when they end, not on every tick.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from modelrollout.api.status import (
    ConditionStatus,
    ConditionType,
    ModelExperimentStatus,
    PauseReason,
    Phase,
)
from modelrollout.policy.context import Outcome, Tick
from modelrollout.policy.decision import EventType

T, F, U = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN


@dataclass
class Flags:
    """The holds found in the tick's last pass (None: not holding for that)."""

    invalid_spec: str | None = None
    metrics_unavailable: str | None = None
    srm: str | None = None
    srm_checked: bool = False
    analysed: bool = False  # the metrics were looked at in this tick


def finish(status: ModelExperimentStatus) -> tuple[str, str]:
    """The reason and message of the transition into the current phase (from the history)."""
    for entry in reversed(status.history):
        if entry.to_phase is status.phase:
            return entry.reason, entry.message
    return status.phase.value, ""


@dataclass
class _Setter:
    """Sets the conditions of one tick and remembers what they were before it."""

    ctx: Tick
    status: ModelExperimentStatus
    flags: Flags
    last: Outcome
    before: dict[ConditionType, tuple[ConditionStatus, str]]
    finish_reason: str
    finish_message: str

    def put(self, type_: ConditionType, value: ConditionStatus, reason: str, message: str) -> None:
        self.status.set_condition(
            type_, value, reason, message, now=self.ctx.now, generation=self.ctx.obs.generation
        )

    def was_true(self, type_: ConditionType) -> bool:
        return self.before.get(type_, (F, ""))[0] is T

    def emit(self, type_: EventType, reason: str, message: str) -> None:
        self.ctx.emit(type_, reason, message)


def refresh(ctx: Tick, status: ModelExperimentStatus, flags: Flags, last: Outcome) -> None:
    """Set every condition from the phase and the holds, emitting Events for holds that begin or end."""
    finish_reason, finish_message = finish(status) if status.phase.terminal else ("", "")
    setter = _Setter(
        ctx,
        status,
        flags,
        last,
        {c.type: (c.status, c.message) for c in status.conditions},
        finish_reason,
        finish_message,
    )
    for condition in _CONDITIONS:
        condition(setter)


def _invalid_spec(c: _Setter) -> None:
    text = c.flags.invalid_spec
    if text is not None:
        c.put(ConditionType.INVALID_SPEC, T, "InvalidSpec", text)
        if c.before.get(ConditionType.INVALID_SPEC) != (T, text):
            c.emit(EventType.WARNING, "InvalidSpec", text)
        return
    c.put(ConditionType.INVALID_SPEC, F, "SpecValid", "")
    if c.was_true(ConditionType.INVALID_SPEC):
        c.emit(EventType.NORMAL, "SpecValid", "The spec errors are fixed; the experiment goes on.")


def _metrics_unavailable(c: _Setter) -> None:
    kind = ConditionType.METRICS_UNAVAILABLE
    if not c.flags.analysed:
        if c.status.condition(kind) is None:
            c.put(kind, F, "NotMeasured", "")
        return
    text = c.flags.metrics_unavailable
    if text is not None:
        c.put(kind, T, "MetricsUnavailable", text)
        if not c.was_true(kind):
            c.emit(EventType.WARNING, "MetricsUnavailable", text)
        return
    c.put(kind, F, "MetricsAvailable", "")
    if c.was_true(kind):
        c.emit(EventType.NORMAL, "MetricsAvailable", "The metrics are usable again.")


def _sample_ratio_mismatch(c: _Setter) -> None:
    kind = ConditionType.SAMPLE_RATIO_MISMATCH
    if c.flags.srm is not None:
        c.put(kind, T, "SampleRatioMismatch", c.flags.srm)
        if not c.was_true(kind):
            c.emit(EventType.WARNING, "SampleRatioMismatch", c.flags.srm)
    elif c.flags.srm_checked:
        c.put(kind, F, "SplitAsConfigured", "")
    elif c.status.condition(kind) is None:
        c.put(kind, F, "NotChecked", "")


def _ready(c: _Setter) -> None:
    status, flags = c.status, c.flags
    phase, terminal = status.phase, status.phase.terminal
    srm = status.condition(ConditionType.SAMPLE_RATIO_MISMATCH)
    outage_pause = (
        phase is Phase.PAUSED and status.pause is not None and status.pause.reason is PauseReason.DATA_OUTAGE
    )
    if flags.invalid_spec is not None:
        c.put(ConditionType.READY, F, "InvalidSpec", flags.invalid_spec)
    elif terminal and phase is not Phase.PROMOTED:
        c.put(ConditionType.READY, F, c.finish_reason, c.finish_message)
    elif not terminal and flags.metrics_unavailable is not None:
        c.put(ConditionType.READY, F, "MetricsUnavailable", flags.metrics_unavailable)
    elif outage_pause:
        c.put(ConditionType.READY, F, "DataOutage", c.last.message)
    elif not terminal and srm is not None and srm.status is T:
        c.put(ConditionType.READY, F, "SampleRatioMismatch", flags.srm or "a sample ratio mismatch was found")
    else:
        c.put(ConditionType.READY, T, phase.value, c.finish_message if terminal else c.last.message)


def _progressing(c: _Setter) -> None:
    phase = c.status.phase
    if phase in (Phase.PENDING, Phase.SHADOWING, Phase.PROGRESSING):
        c.put(ConditionType.PROGRESSING, T, c.last.reason, c.last.message)
    elif phase is Phase.PAUSED:
        reason = c.status.pause.reason.value if c.status.pause is not None else "Paused"
        c.put(ConditionType.PROGRESSING, F, reason, c.last.message)
    else:
        c.put(ConditionType.PROGRESSING, F, c.finish_reason, c.finish_message)


def _succeeded(c: _Setter) -> None:
    phase = c.status.phase
    if phase is Phase.PROMOTED:
        c.put(ConditionType.SUCCEEDED, T, c.finish_reason, c.finish_message)
    elif phase in (Phase.ROLLED_BACK, Phase.FAILED):
        c.put(ConditionType.SUCCEEDED, F, c.finish_reason, c.finish_message)
    else:
        c.put(ConditionType.SUCCEEDED, U, "InProgress", "")


def _rolled_back(c: _Setter) -> None:
    if c.status.phase is Phase.ROLLED_BACK:
        c.put(ConditionType.ROLLED_BACK, T, c.finish_reason, c.finish_message)
    else:
        c.put(ConditionType.ROLLED_BACK, F, "NotRolledBack", "")


def _stalled(c: _Setter) -> None:
    """kstatus reads Stalled=True as Failed."""
    if c.flags.invalid_spec is not None:
        c.put(ConditionType.STALLED, T, "InvalidSpec", c.flags.invalid_spec)
    elif c.status.phase in (Phase.ROLLED_BACK, Phase.FAILED):
        c.put(ConditionType.STALLED, T, c.finish_reason, c.finish_message)
    else:
        c.put(ConditionType.STALLED, F, "NotStalled", "")


#: The conditions, set in this order (Ready reads the SampleRatioMismatch just set).
_CONDITIONS: tuple[Callable[[_Setter], None], ...] = (
    _invalid_spec,
    _metrics_unavailable,
    _sample_ratio_mismatch,
    _ready,
    _progressing,
    _succeeded,
    _rolled_back,
    _stalled,
)
