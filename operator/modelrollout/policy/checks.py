"""Spec problems the schema does not catch but the policy can, reported like the operator's own
(:class:`~modelrollout.api.observations.SpecProblem`: a field path and the fix).
"""

from __future__ import annotations

from modelrollout.api.observations import SpecProblem
from modelrollout.api.spec import ModelExperimentSpec
from modelrollout.api.status import ModelExperimentStatus, Phase


def spec_errors(spec: ModelExperimentSpec) -> list[SpecProblem]:
    """Problems of ``spec`` alone."""
    errors: list[SpecProblem] = []
    if len(spec.rollout.steps) < 2:
        errors.append(
            SpecProblem(
                "spec.rollout.steps",
                "needs at least one step below 100, where the challengers are compared with the champion "
                "(for example [10, 25, 50, 100])",
            )
        )
    for i, g in enumerate(spec.metrics.guardrails):
        if g.max_relative_increase is not None and not g.higher_is_worse and g.max_relative_increase >= 1:
            errors.append(
                SpecProblem(
                    f"spec.metrics.guardrails[{i}].maxRelativeIncrease",
                    "must be below 1 when higherIsWorse is false (a drop by 100 % or more cannot happen)",
                )
            )
    return errors


def variants_changed(spec: ModelExperimentSpec, status: ModelExperimentStatus) -> str | None:
    """Why a started experiment's memory no longer fits the spec's variants, or None.

    The champion must be the same, and every challenger still in the race must still be in the
    spec, with no new challenger; removing a challenger that was already dropped is fine.
    """
    if status.phase in (Phase.PENDING, *(p for p in Phase if p.terminal)) or not status.weights:
        return None
    dropped = {d.name for d in status.dropped_challengers}
    known = set(status.weights)
    running = {n for n in known if n not in dropped}
    wanted = set(spec.variant_names())
    if spec.champion.name not in known:
        return f"the champion is now {spec.champion.name}, but the experiment runs {sorted(known)}"
    if running - wanted:
        return f"{sorted(running - wanted)} left the spec while still in the race"
    if wanted - known:
        return f"{sorted(wanted - known)} joined the spec after the experiment started"
    return None
