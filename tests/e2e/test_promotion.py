"""A better challenger is promoted through every step, on the real stack (issue 6, scenario 1)."""

from __future__ import annotations

import pytest

from modelrollout.devstack.sim.world import World, experiment_manifest
from support.models import fast

pytestmark = pytest.mark.e2e


def test_better_challenger_is_promoted_through_every_step(world: World) -> None:
    # Given a champion at 20 % click-through and a challenger at 30 %, behind Istio
    world.given_models(fast("v6", click_rate=0.20), fast("v7", click_rate=0.30))
    world.given_virtual_service()
    world.given_mesh()
    world.given_load(rps=300, duration_s=400)
    world.given_operator()
    recorder = world.record_weights()
    # When the experiment is applied
    world.when_experiment_applied(
        experiment_manifest("ranker-v7", mde=0.25, prometheus_url=world.prometheus.url)
    )
    # Then it is promoted, and the VirtualService showed every step on the way
    world.then_phase(["Promoted", "RolledBack", "Failed"], timeout=240)
    assert world.phase() == "Promoted", world.describe()
    recorder.stop()
    world.then_routes({"v6": 0, "v7": 100})
    world.then_every_step_seen()  # 10, 25, 50, 100 of the manifest, never going back
    world.then_condition("Succeeded", "True")
