"""A challenger whose error rate rises mid-step is rolled back by its guardrail (issue 6, scenario 2)."""

from __future__ import annotations

import time

import pytest

from modelrollout.devstack.sim.world import World, experiment_manifest
from support.models import fast

pytestmark = pytest.mark.e2e

ALL_CHAMPION = {"v6": 100, "v7": 0}
#: Past counts.settle_duration (5 s) of the step's stratum, plus a scrape.
SETTLED_S = 7.0


def test_challenger_with_rising_errors_is_rolled_back_by_its_guardrail(world: World) -> None:
    # Given a champion and a challenger with the same click-through, behind Istio, with the
    # istio-error-rate guardrail, and the challenger at its first or second step
    world.given_models(fast("v6", click_rate=0.20), fast("v7", click_rate=0.20))
    world.given_virtual_service()
    world.given_mesh()
    world.given_load(rps=200, duration_s=300)
    world.given_operator()
    # (a long minStepDuration keeps it in step 1, and the breach comes once the step's counts are
    # used, past the 5 s settling of a new stratum: it measures one scrape plus one tick)
    world.when_experiment_applied(
        experiment_manifest("ranker-v7", mde=0.25, min_step_duration="60s",
                            prometheus_url=world.prometheus.url)
    )
    world.wait_for("the challenger at step 1", lambda: world.route_weights() == {"v6": 90, "v7": 10},
                   timeout=60, period=0.1)
    time.sleep(SETTLED_S)
    at_breach = world.route_weights()
    assert at_breach == {"v6": 90, "v7": 10}, world.describe()
    # When the challenger starts failing half of its requests
    world.when_model_configured("v7", error_rate=0.5)
    breach = time.monotonic()
    # Then the routes go back to the champion within about one scrape and one tick
    world.wait_for("routes back at 100/0", lambda: world.route_weights() == ALL_CHAMPION,
                   timeout=60, period=0.1)
    elapsed = time.monotonic() - breach
    print(f"\nbreach -> routes at 100/0: {elapsed:.2f} s (challenger was at {at_breach})")
    assert elapsed < 20, f"breach -> rollback took {elapsed:.2f} s; {world.describe()}"
    # And the experiment is rolled back, with a Warning Event about the guardrail
    world.then_phase(["RolledBack", "Promoted", "Failed"], timeout=30)
    assert world.phase() == "RolledBack", world.describe()
    world.then_condition("RolledBack", "True", "GuardrailBreach")
    world.then_last_history_reason("GuardrailBreach")
    # (then_event waits: kopf posts Events in the background, shortly after the status is written)
    warnings = world.then_event("GuardrailBreach", type_="Warning", timeout=15)
    assert "error-rate" in str(warnings[-1]["message"]), warnings
    print(f"breach -> rollback measured {elapsed:.2f} s; event: {warnings[-1]['reason']}: "
          f"{warnings[-1]['message']}")
