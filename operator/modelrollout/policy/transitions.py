"""The transitions of the state machine: each edits the status in place, appends one history entry,
queues one Event and returns the :class:`~modelrollout.policy.context.Outcome` that names it.

Phases: Pending -> (Shadowing) -> Progressing -> Promoted | RolledBack; Paused from Pending,
Shadowing or Progressing; Failed. A challenger can also be dropped without a phase change.
"""

from __future__ import annotations

from collections.abc import Mapping

from modelrollout.api.status import (
    AppliedControls,
    DroppedChallenger,
    ModelExperimentStatus,
    PauseReason,
    PauseRecord,
    Phase,
)
from modelrollout.policy import counts, steps
from modelrollout.policy.context import Outcome, Tick, clean_numbers
from modelrollout.policy.decision import Rule


def _outcome(
    ctx: Tick,
    status: ModelExperimentStatus,
    rule: Rule,
    reason: str,
    message: str,
    numbers: Mapping[str, float | None],
    *,
    from_phase: Phase,
    from_step: int | None,
    warning: bool,
) -> Outcome:
    ctx.record(
        status,
        from_phase=from_phase,
        from_step=from_step,
        reason=reason,
        message=message,
        numbers=numbers,
        warning=warning,
    )
    return Outcome(rule, reason, message, clean_numbers(numbers), transition=True)


def _open_stratum(ctx: Tick, status: ModelExperimentStatus, step: int, previous: dict[str, int]) -> None:
    """A new stratum for the status's weights; it settles before it counts (counts.settle)."""
    counts.open_stratum(status, step, status.weights, ctx.now, previous=previous, srm_epoch=status.srm.epoch)


def start(ctx: Tick, status: ModelExperimentStatus) -> Outcome:
    """Pending -> Shadowing (shadow.enabled) or Progressing at step 0."""
    status.started_at = ctx.now
    status.step_started_at = None
    status.strata = []
    status.novelty = None
    live = ctx.live(status)
    if ctx.spec.shadow.enabled:
        status.phase = Phase.SHADOWING
        status.shadow_started_at = ctx.now
        status.current_step = None
        status.weights = steps.champion_only(ctx.variants, ctx.champion)
        message = (
            f"Shadowing: {ctx.spec.shadow.mirror_percent} % of the champion's requests mirrored to "
            f"{', '.join(live)} for at least {ctx.spec.shadow.duration}."
        )
        numbers: dict[str, float | None] = {"mirrorPercent": ctx.spec.shadow.mirror_percent}
    else:
        status.phase = Phase.PROGRESSING
        status.current_step = 0
        status.step_started_at = ctx.now
        before = steps.champion_only(ctx.variants, ctx.champion)
        status.weights = steps.step_weights(ctx.variants, ctx.champion, live, ctx.steps[0])
        _open_stratum(ctx, status, 0, before)
        message = f"Started at step 0: {ctx.steps[0]} % of the traffic to {', '.join(live)}."
        numbers = {"step": 0, "challengerShare": ctx.steps[0]}
    return _outcome(
        ctx,
        status,
        Rule.STARTED,
        "Started",
        message,
        numbers,
        from_phase=Phase.PENDING,
        from_step=None,
        warning=False,
    )


def shadow_passed(
    ctx: Tick,
    status: ModelExperimentStatus,
    readings: Mapping[str, counts.Reading],
    message: str,
    numbers: Mapping[str, float | None],
) -> Outcome:
    """Shadowing -> Progressing at step 0, mirrors off; the readings start again from now.

    The counts since the start (``status.totals``, which the guardrails use) start again at the
    end of the shadow phase (``status.countedSince``), and so do the guardrails' sequential tests:
    the shadow phase tested the mirrored responses, a separate question from real traffic.
    """
    live = ctx.live(status)
    status.counted_since = ctx.now
    guardrail_names = {g.name for g in ctx.spec.metrics.guardrails}
    for states in status.sequential.values():
        for name in guardrail_names & set(states):
            del states[name]
    status.phase = Phase.PROGRESSING
    status.current_step = 0
    status.step_started_at = ctx.now
    status.totals = {}
    before = steps.champion_only(ctx.variants, ctx.champion)
    status.weights = steps.step_weights(ctx.variants, ctx.champion, live, ctx.steps[0])
    _open_stratum(ctx, status, 0, before)
    return _outcome(
        ctx,
        status,
        Rule.SHADOW_PASSED,
        "ShadowPassed",
        message,
        numbers,
        from_phase=Phase.SHADOWING,
        from_step=None,
        warning=False,
    )


def advance(
    ctx: Tick,
    status: ModelExperimentStatus,
    readings: Mapping[str, counts.Reading],
    message: str,
    numbers: Mapping[str, float | None],
) -> Outcome:
    """Progressing at step k -> step k + 1."""
    before = status.current_step if status.current_step is not None else 0
    step = before + 1
    status.current_step = step
    status.step_started_at = ctx.now
    old_weights = dict(status.weights)
    status.weights = steps.step_weights(ctx.variants, ctx.champion, ctx.live(status), ctx.steps[step])
    _open_stratum(ctx, status, step, old_weights)
    return _outcome(
        ctx,
        status,
        Rule.STEP_ADVANCED,
        "StepAdvanced",
        message,
        numbers,
        from_phase=Phase.PROGRESSING,
        from_step=before,
        warning=False,
    )


def drop(
    ctx: Tick,
    status: ModelExperimentStatus,
    readings: Mapping[str, counts.Reading],
    losers: Mapping[str, str],
    rule: Rule,
    reason: str,
    message: str,
    numbers: Mapping[str, float | None],
) -> Outcome:
    """Take ``losers`` (challenger -> message) out; roll back when no challenger is left.

    While progressing, the live challengers share the current step's percentage (a new stratum
    begins, since the weights change); while shadowing, the dropped challenger's mirror stops.
    """
    for name, why in losers.items():
        status.dropped_challengers.append(
            DroppedChallenger(name=name, at=ctx.now, reason=reason, message=why)
        )
    live = ctx.live(status)
    if not live:
        return rollback(ctx, status, rule, reason, message, numbers)
    from_phase, from_step = status.phase, status.current_step
    if status.phase is Phase.PROGRESSING and status.current_step is not None:
        share = ctx.steps[min(status.current_step, len(ctx.steps) - 1)]
        before = dict(status.weights)
        status.weights = steps.step_weights(ctx.variants, ctx.champion, live, share)
        _open_stratum(ctx, status, status.current_step, before)
    return _outcome(
        ctx,
        status,
        rule,
        reason,
        message,
        numbers,
        from_phase=from_phase,
        from_step=from_step,
        warning=True,
    )


def promote(
    ctx: Tick,
    status: ModelExperimentStatus,
    winner: str,
    rule: Rule,
    reason: str,
    message: str,
    numbers: Mapping[str, float | None],
) -> Outcome:
    """All traffic to ``winner``; every other challenger is dropped; phase Promoted."""
    from_phase, from_step = status.phase, status.current_step
    for name in ctx.live(status):
        if name != winner:
            status.dropped_challengers.append(
                DroppedChallenger(
                    name=name, at=ctx.now, reason="NotSelected", message=f"{winner} was promoted"
                )
            )
    status.phase = Phase.PROMOTED
    status.pause = None
    status.weights = steps.winner_only(ctx.variants, winner)
    status.finished_at = ctx.now
    counts.end_stratum(status, ctx.now)
    return _outcome(
        ctx,
        status,
        rule,
        reason,
        message,
        numbers,
        from_phase=from_phase,
        from_step=from_step,
        warning=False,
    )


def rollback(
    ctx: Tick,
    status: ModelExperimentStatus,
    rule: Rule,
    reason: str,
    message: str,
    numbers: Mapping[str, float | None],
) -> Outcome:
    """All traffic back to the champion; phase RolledBack."""
    from_phase, from_step = status.phase, status.current_step
    status.phase = Phase.ROLLED_BACK
    status.pause = None
    status.weights = steps.champion_only(ctx.variants, ctx.champion)
    status.finished_at = ctx.now
    counts.end_stratum(status, ctx.now)
    return _outcome(
        ctx,
        status,
        rule,
        reason,
        message,
        numbers,
        from_phase=from_phase,
        from_step=from_step,
        warning=True,
    )


def fail(ctx: Tick, status: ModelExperimentStatus, reason: str, message: str) -> Outcome:
    """Phase Failed: traffic to the spec's champion; a human must retry."""
    from_phase, from_step = status.phase, status.current_step
    status.phase = Phase.FAILED
    status.pause = None
    status.weights = steps.champion_only(ctx.variants, ctx.champion)
    status.finished_at = ctx.now
    return _outcome(
        ctx,
        status,
        Rule.VARIANTS_CHANGED,
        reason,
        message,
        {},
        from_phase=from_phase,
        from_step=from_step,
        warning=True,
    )


def pause(
    ctx: Tick,
    status: ModelExperimentStatus,
    why: PauseReason,
    rule: Rule,
    message: str,
    numbers: Mapping[str, float | None],
    *,
    fixed_look: bool = False,
) -> Outcome:
    """Phase Paused, weights (and mirrors) frozen, remembering the phase to resume."""
    from_phase, from_step = status.phase, status.current_step
    status.pause = PauseRecord(from_phase=from_phase, reason=why, since=ctx.now, fixed_look=fixed_look)
    status.phase = Phase.PAUSED
    return _outcome(
        ctx,
        status,
        rule,
        "Paused" if why is PauseReason.SPEC else rule.value,
        message,
        numbers,
        from_phase=from_phase,
        from_step=from_step,
        warning=why is not PauseReason.SPEC,
    )


def resume(ctx: Tick, status: ModelExperimentStatus, message: str) -> Outcome:
    """Paused -> the phase it came from. A resumed step keeps its clock."""
    record = status.pause
    to = record.from_phase if record is not None else Phase.PENDING
    status.phase = to
    status.pause = None
    return _outcome(
        ctx,
        status,
        Rule.RESUMED,
        "Resumed",
        message,
        {},
        from_phase=Phase.PAUSED,
        from_step=status.current_step,
        warning=False,
    )


def restart(ctx: Tick, status: ModelExperimentStatus, applied: AppliedControls, message: str) -> Outcome:
    """A retry: back to Pending with fresh memory (history, conditions and applied controls stay)."""
    from_phase, from_step = status.phase, status.current_step
    fresh = ModelExperimentStatus(
        observed_generation=status.observed_generation,
        conditions=status.conditions,
        history=status.history,
        applied_controls=applied,
        last_tick_at=status.last_tick_at,
    )
    for name in ModelExperimentStatus.model_fields:
        setattr(status, name, getattr(fresh, name))
    return _outcome(
        ctx,
        status,
        Rule.MANUAL_RETRY,
        "Retried",
        message,
        {},
        from_phase=from_phase,
        from_step=from_step,
        warning=False,
    )
