"""Weights at each step, and the routes as a function of the status.

Weight arithmetic (integers, summing to 100 exactly): at step ``k`` the live challengers share
``steps[k]`` percent. Each gets ``steps[k] // L`` (``L`` live challengers) and the first
``steps[k] % L`` of them, in spec order, one more; the champion gets ``100 - steps[k]``; dropped
challengers get 0. So the challengers' total is always one of the configured steps (or 0 outside
the steps, or 100 at promotion, where the winner gets everything).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from modelrollout.api.spec import ModelExperimentSpec
from modelrollout.api.status import ModelExperimentStatus, Phase
from modelrollout.policy.decision import Routes


def step_weights(variants: Sequence[str], champion: str, live: Sequence[str], share: int) -> dict[str, int]:
    """Weights of every variant when the live challengers share ``share`` percent."""
    weights = dict.fromkeys(variants, 0)
    if not live:
        weights[champion] = 100
        return weights
    base, extra = divmod(share, len(live))
    for i, name in enumerate(live):
        weights[name] = base + (1 if i < extra else 0)
    weights[champion] = 100 - share
    return weights


def champion_only(variants: Sequence[str], champion: str) -> dict[str, int]:
    """100 % to the champion."""
    return step_weights(variants, champion, (), 0)


def winner_only(variants: Sequence[str], winner: str) -> dict[str, int]:
    """100 % to the winner (promotion)."""
    weights = dict.fromkeys(variants, 0)
    weights[winner] = 100
    return weights


def step_target(planned_n: int, step: int, n_steps: int) -> int:
    """Samples per variant the run must have collected to leave step ``step``.

    ``ceil(plannedN * (step + 1) / (n_steps - 1))``: the steps below 100 split the planned n
    evenly, so the last one ends at the planned n.
    """
    below_100 = max(1, n_steps - 1)
    return math.ceil(planned_n * (step + 1) / below_100)


def _shadowing(status: ModelExperimentStatus) -> bool:
    if status.phase is Phase.SHADOWING:
        return True
    return (
        status.phase is Phase.PAUSED
        and status.pause is not None
        and status.pause.from_phase is Phase.SHADOWING
    )


def routes_for(spec: ModelExperimentSpec, status: ModelExperimentStatus) -> Routes:
    """The desired routes, a function of the status (re-derived every tick, so drift heals).

    * Pending (nothing applied yet), RolledBack and Failed: 100 % to the champion.
    * Otherwise the status's weights, restricted to the spec's variants (an absent variant gets
      0); if they do not sum to 100 (the status was written for other variants), the champion.
    * Mirrors: while shadowing (or paused from shadowing), each live challenger gets
      ``shadow.mirrorPercent`` of the champion's requests.
    """
    variants = spec.variant_names()
    champion = spec.champion.name
    if status.phase in (Phase.PENDING, Phase.ROLLED_BACK, Phase.FAILED) or not status.weights:
        weights = champion_only(variants, champion)
    else:
        weights = {n: int(status.weights.get(n, 0)) for n in variants}
        if sum(weights.values()) != 100:
            weights = champion_only(variants, champion)
    mirrors: dict[str, int] = {}
    if _shadowing(status) and status.phase is not Phase.PENDING:
        dropped = {d.name for d in status.dropped_challengers}
        mirrors = {c.name: spec.shadow.mirror_percent for c in spec.challengers if c.name not in dropped}
    return Routes(weights=weights, mirrors=mirrors)


def record_achieved(
    status: ModelExperimentStatus, achieved: dict[str, int], now: datetime
) -> dict[str, int] | None:
    """Record the weights the traffic provider achieved, when they differ from the ones asked for.

    A provider that cannot route every split (the Service router's replica ratio: 25 % of 10
    replicas is 2 of them, 20 %) routes another split than the status's. The sample ratio test and
    the step's stratum must expect the split the traffic really has, else the SRM test flags the
    rounding as a mismatch and holds for good. So the status's weights, the stratum opened at
    ``now`` and the history entry of ``now`` take the achieved weights; the routes, a function of
    the status, then ask for them from the next tick on, which the provider routes exactly.

    Only a step that began at ``now`` is rewritten: a split that differs later is drift, which the
    routes heal. Returns the weights that were replaced, or None when nothing changed.
    """
    if sum(achieved.values()) != 100 or set(achieved) != set(status.weights):
        return None
    if achieved == status.weights or not status.strata or status.strata[-1].started_at != now:
        return None
    asked = dict(status.weights)
    status.weights = dict(achieved)
    status.strata[-1].weights = dict(achieved)
    if status.history and status.history[-1].time == now:
        status.history[-1].weights = dict(achieved)
    return asked
