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


def refresh(ctx: Tick, status: ModelExperimentStatus, flags: Flags, last: Outcome) -> None:
    """Set every condition from the phase and the holds, emitting Events for holds that begin or end."""
    gen = ctx.obs.generation
    before = {c.type: (c.status, c.message) for c in status.conditions}

    def put(type_: ConditionType, value: ConditionStatus, reason: str, message: str) -> None:
        status.set_condition(type_, value, reason, message, now=ctx.now, generation=gen)

    phase = status.phase
    terminal = phase.terminal
    finish_reason, finish_message = finish(status) if terminal else ("", "")

    # InvalidSpec
    if flags.invalid_spec is not None:
        put(ConditionType.INVALID_SPEC, T, "InvalidSpec", flags.invalid_spec)
        if before.get(ConditionType.INVALID_SPEC) != (T, flags.invalid_spec):
            ctx.emit(EventType.WARNING, "InvalidSpec", flags.invalid_spec)
    else:
        put(ConditionType.INVALID_SPEC, F, "SpecValid", "")
        if before.get(ConditionType.INVALID_SPEC, (F, ""))[0] is T:
            ctx.emit(EventType.NORMAL, "SpecValid", "The spec errors are fixed; the experiment goes on.")

    # MetricsUnavailable
    if flags.analysed:
        if flags.metrics_unavailable is not None:
            put(ConditionType.METRICS_UNAVAILABLE, T, "MetricsUnavailable", flags.metrics_unavailable)
            if before.get(ConditionType.METRICS_UNAVAILABLE, (F, ""))[0] is not T:
                ctx.emit(EventType.WARNING, "MetricsUnavailable", flags.metrics_unavailable)
        else:
            put(ConditionType.METRICS_UNAVAILABLE, F, "MetricsAvailable", "")
            if before.get(ConditionType.METRICS_UNAVAILABLE, (F, ""))[0] is T:
                ctx.emit(EventType.NORMAL, "MetricsAvailable", "The metrics are usable again.")
    elif status.condition(ConditionType.METRICS_UNAVAILABLE) is None:
        put(ConditionType.METRICS_UNAVAILABLE, F, "NotMeasured", "")

    # SampleRatioMismatch
    if flags.srm is not None:
        put(ConditionType.SAMPLE_RATIO_MISMATCH, T, "SampleRatioMismatch", flags.srm)
        if before.get(ConditionType.SAMPLE_RATIO_MISMATCH, (F, ""))[0] is not T:
            ctx.emit(EventType.WARNING, "SampleRatioMismatch", flags.srm)
    elif flags.srm_checked:
        put(ConditionType.SAMPLE_RATIO_MISMATCH, F, "SplitAsConfigured", "")
    elif status.condition(ConditionType.SAMPLE_RATIO_MISMATCH) is None:
        put(ConditionType.SAMPLE_RATIO_MISMATCH, F, "NotChecked", "")

    # Ready
    srm_true = (c := status.condition(ConditionType.SAMPLE_RATIO_MISMATCH)) is not None and c.status is T
    outage_pause = (
        phase is Phase.PAUSED and status.pause is not None and status.pause.reason is PauseReason.DATA_OUTAGE
    )
    if flags.invalid_spec is not None:
        put(ConditionType.READY, F, "InvalidSpec", flags.invalid_spec)
    elif terminal and phase is not Phase.PROMOTED:
        put(ConditionType.READY, F, finish_reason, finish_message)
    elif not terminal and flags.metrics_unavailable is not None:
        put(ConditionType.READY, F, "MetricsUnavailable", flags.metrics_unavailable)
    elif outage_pause:
        put(ConditionType.READY, F, "DataOutage", last.message)
    elif not terminal and srm_true:
        put(ConditionType.READY, F, "SampleRatioMismatch", flags.srm or "a sample ratio mismatch was found")
    else:
        put(ConditionType.READY, T, phase.value, finish_message if terminal else last.message)

    # Progressing
    if phase in (Phase.PENDING, Phase.SHADOWING, Phase.PROGRESSING):
        put(ConditionType.PROGRESSING, T, last.reason, last.message)
    elif phase is Phase.PAUSED:
        reason = status.pause.reason.value if status.pause is not None else "Paused"
        put(ConditionType.PROGRESSING, F, reason, last.message)
    else:
        put(ConditionType.PROGRESSING, F, finish_reason, finish_message)

    # Succeeded and RolledBack
    if phase is Phase.PROMOTED:
        put(ConditionType.SUCCEEDED, T, finish_reason, finish_message)
    elif phase in (Phase.ROLLED_BACK, Phase.FAILED):
        put(ConditionType.SUCCEEDED, F, finish_reason, finish_message)
    else:
        put(ConditionType.SUCCEEDED, U, "InProgress", "")
    if phase is Phase.ROLLED_BACK:
        put(ConditionType.ROLLED_BACK, T, finish_reason, finish_message)
    else:
        put(ConditionType.ROLLED_BACK, F, "NotRolledBack", "")

    # Stalled (kstatus: Failed)
    if flags.invalid_spec is not None:
        put(ConditionType.STALLED, T, "InvalidSpec", flags.invalid_spec)
    elif phase in (Phase.ROLLED_BACK, Phase.FAILED):
        put(ConditionType.STALLED, T, finish_reason, finish_message)
    else:
        put(ConditionType.STALLED, F, "NotStalled", "")
