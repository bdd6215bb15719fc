"""Route drift is healed within a tick, and deleting a running experiment restores the champion."""

from __future__ import annotations

import time

import pytest
from kubernetes.client.exceptions import ApiException

from modelrollout.devstack.sim.world import GROUP, ISTIO, PLURAL, VERSION, World, experiment_manifest
from support.models import fast

pytestmark = pytest.mark.e2e


def running_experiment(world: World) -> None:
    """A better challenger behind Istio, held long at each step so the test can act mid-step."""
    world.given_models(fast("v6", click_rate=0.20), fast("v7", click_rate=0.30))
    world.given_virtual_service()
    world.given_mesh()
    world.given_load(rps=200, duration_s=300)
    world.given_operator()
    world.when_experiment_applied(experiment_manifest(
        "ranker-v7", min_step_duration="60s", mde=0.25, prometheus_url=world.prometheus.url))
    world.wait_for("the challenger at 10 %", lambda: world.route_weights() == {"v6": 90, "v7": 10}, 60)


def overwrite_routes(world: World, weights: dict[str, int]) -> None:
    """What a GitOps sync of the original manifest would do to the VirtualService."""
    route = [{"destination": {"host": f"ranker-{v}"}, "weight": w} for v, w in weights.items()]
    group, version, plural = ISTIO
    world.custom.patch_namespaced_custom_object(
        group, version, world.namespace, plural, "ranker",
        {"spec": {"http": [{"name": "primary", "route": route}]}})


def test_route_drift_is_healed_within_a_tick(world: World) -> None:
    # Given an experiment at its first step (10 % to the challenger)
    running_experiment(world)
    # When a GitOps sync overwrites the VirtualService with 100/0
    overwrite_routes(world, {"v6": 100, "v7": 0})
    overwritten_at = time.monotonic()
    # Then the operator puts the step's weights back within about one tick
    world.wait_for("the drift healed", lambda: world.route_weights() == {"v6": 90, "v7": 10}, 10, period=0.05)
    healed_s = time.monotonic() - overwritten_at
    print(f"drift healed in {healed_s:.2f}s")
    assert healed_s < 10
    # and says so in a Warning Event
    world.then_event("RouteDriftHealed", type_="Warning", timeout=10)
    assert world.phase() == "Progressing", world.describe()


def test_deleting_a_running_experiment_restores_the_champion(world: World) -> None:
    # Given an experiment at its first step (10 % to the challenger)
    running_experiment(world)
    # When it is deleted
    world.when_experiment_deleted()

    # Then the object is gone (the finalizer ran and was removed)
    def gone() -> bool:
        try:
            world.custom.get_namespaced_custom_object(GROUP, VERSION, world.namespace, PLURAL, "ranker-v7")
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    took = world.wait_for("the experiment gone", gone, 30)
    print(f"deleted in {took:.2f}s")
    # and the champion has all the traffic again
    world.then_routes({"v6": 100, "v7": 0})
