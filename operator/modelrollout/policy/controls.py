"""The manual controls: the abort, promote and retry annotations, and ``spec.paused``.

Each annotation carries an arbitrary value (a timestamp, say). A value equal to the one recorded in
``status.appliedControls`` was already acted on and is ignored, so each is applied exactly once,
across restarts. All new values are settled in one tick (so a replayed tick changes nothing):

* **abort** wins over everything, even an invalid spec or an outage: the champion gets all the
  traffic, phase RolledBack. A new promote or retry seen in the same tick is ignored (recorded as
  applied, with a Warning Event). In a finished phase, abort is ignored.
* **promote** (a human override, recorded as ``ManualPromote``) gives all the traffic to one
  challenger: the one the annotation's value names, if it names a live challenger; else the only
  live challenger; else the live challenger with the best estimate of the primary metric in the
  last analysis; else the first live challenger in spec order. It waits while the spec is
  invalid (traffic never moves on invalid input). In a finished phase it is ignored.
* **retry** starts a finished experiment (Promoted, RolledBack, Failed) over from Pending with
  fresh memory; the history and the applied controls stay. In a running experiment it is
  ignored (there is nothing to retry). It waits while the spec is invalid.
* **spec.paused** freezes weights, mirrors and phase (Paused, remembering the phase it came
  from); no analysis transition happens, though the analysis record, its statistics and the
  outage counters keep being updated. Unpausing resumes that phase, with the step clock as it
  was (the time paused counts towards ``minStepDuration`` and ``maxDuration``).
"""

from __future__ import annotations

from modelrollout.api.experiment import ANNOTATION_ABORT, ANNOTATION_PROMOTE, ANNOTATION_RETRY
from modelrollout.api.spec import Direction
from modelrollout.api.status import AppliedControls, ModelExperimentStatus, PauseReason, Phase
from modelrollout.policy import transitions
from modelrollout.policy.context import Outcome, Tick
from modelrollout.policy.decision import EventType, Rule

_KEYS = {"abort": ANNOTATION_ABORT, "promote": ANNOTATION_PROMOTE, "retry": ANNOTATION_RETRY}


def _new(ctx: Tick, status: ModelExperimentStatus, control: str) -> str | None:
    value = ctx.obs.annotations.get(_KEYS[control])
    if value is None:
        return None
    applied = status.applied_controls or AppliedControls()
    return None if getattr(applied, control) == value else value


def _mark(status: ModelExperimentStatus, control: str, value: str) -> AppliedControls:
    applied = (status.applied_controls or AppliedControls()).model_copy(update={control: value})
    status.applied_controls = applied
    return applied


def _ignore(ctx: Tick, status: ModelExperimentStatus, control: str, value: str, why: str) -> None:
    _mark(status, control, value)
    ctx.emit(
        EventType.WARNING,
        f"{control.capitalize()}Ignored",
        f"The {_KEYS[control]} annotation ({value!r}) was ignored: {why}.",
    )


def abort(ctx: Tick, status: ModelExperimentStatus) -> Outcome | None:
    """Act on a new abort annotation (first of all the rules)."""
    value = _new(ctx, status, "abort")
    if value is None:
        return None
    if status.phase.terminal:
        _ignore(ctx, status, "abort", value, f"the experiment is already {status.phase.value}")
        return None
    _mark(status, "abort", value)
    for other in ("promote", "retry"):
        other_value = _new(ctx, status, other)
        if other_value is not None:
            _ignore(ctx, status, other, other_value, "an abort came in the same tick and wins")
    return transitions.rollback(
        ctx,
        status,
        Rule.MANUAL_ABORT,
        "ManualAbort",
        f"Aborted by {ANNOTATION_ABORT}={value!r}: all traffic back to the champion {ctx.champion}.",
        {},
    )


def _best_estimate(ctx: Tick, status: ModelExperimentStatus, live: tuple[str, ...]) -> str | None:
    record = status.analysis
    if record is None:
        return None
    sign = 1.0 if ctx.spec.metrics.primary.direction is Direction.INCREASE else -1.0
    scored = []
    for name in live:
        variant = record.variants.get(name)
        diff = variant.primary.difference if variant is not None and variant.primary is not None else None
        if diff is not None:
            scored.append((sign * diff, name))
    return max(scored)[1] if scored else None


def promote(ctx: Tick, status: ModelExperimentStatus) -> Outcome | None:
    """Act on a new promote annotation (after the InvalidSpec gate)."""
    value = _new(ctx, status, "promote")
    if value is None:
        return None
    if status.phase.terminal:
        _ignore(ctx, status, "promote", value, f"the experiment is already {status.phase.value}")
        return None
    live = ctx.live(status)
    if not live:
        _ignore(ctx, status, "promote", value, "no challenger is left")
        return None
    if value in live:
        winner, how = value, "named by the annotation"
    elif len(live) == 1:
        winner, how = live[0], "the only live challenger"
    else:
        best = _best_estimate(ctx, status, live)
        winner, how = (best, "best estimate so far") if best is not None else (live[0], "first in the spec")
    _mark(status, "promote", value)
    return transitions.promote(
        ctx,
        status,
        winner,
        Rule.MANUAL_PROMOTE,
        "ManualPromote",
        f"Promoted {winner} ({how}) by {ANNOTATION_PROMOTE}={value!r}: a human override of the analysis.",
        {},
    )


def retry(ctx: Tick, status: ModelExperimentStatus) -> Outcome | None:
    """Act on a new retry annotation (after the InvalidSpec gate)."""
    value = _new(ctx, status, "retry")
    if value is None:
        return None
    if not status.phase.terminal:
        _ignore(ctx, status, "retry", value, f"the experiment is {status.phase.value}, not finished")
        return None
    applied = _mark(status, "retry", value)
    return transitions.restart(
        ctx,
        status,
        applied,
        f"Retry requested by {ANNOTATION_RETRY}={value!r}: starting over from Pending "
        f"(the experiment was {status.phase.value}).",
    )


def spec_pause(ctx: Tick, status: ModelExperimentStatus) -> Outcome | None:
    """``spec.paused``: pause a running experiment, or resume one paused by the spec."""
    if status.phase.terminal:
        return None
    if ctx.spec.paused:
        if status.phase is Phase.PAUSED:
            return None
        return transitions.pause(
            ctx,
            status,
            PauseReason.SPEC,
            Rule.PAUSED,
            f"Paused by spec.paused: weights frozen at {status.weights or {ctx.champion: 100}}.",
            {},
        )
    if status.phase is Phase.PAUSED and status.pause is not None and status.pause.reason is PauseReason.SPEC:
        return transitions.resume(
            ctx, status, f"Resumed by spec.paused=false: back to {status.pause.from_phase.value}."
        )
    if status.phase is Phase.PAUSED and status.pause is None:  # a status written by hand
        return transitions.resume(ctx, status, "Resumed: the pause had no recorded origin.")
    return None
