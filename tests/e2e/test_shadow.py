"""A shadow phase before real traffic moves: mirrored requests, the divergence gate, then progression."""

from __future__ import annotations

from typing import Any

import pytest

from modelrollout.devstack.sim.world import ISTIO, World, experiment_manifest
from support.models import fast

pytestmark = pytest.mark.e2e

SHADOW = {"enabled": True, "mirrorPercent": 100, "duration": "10s", "maxDivergence": 0.05,
          "divergence": {"preset": "sdk-shadow-divergence"}}


def primary_route(world: World) -> dict[str, Any]:
    group, version, plural = ISTIO
    vs: Any = world.custom.get_namespaced_custom_object(group, version, world.namespace, plural, "ranker")
    return dict(next(r for r in vs["spec"]["http"] if r.get("name") == "primary"))


def mirrored_hosts(world: World) -> set[str]:
    route = primary_route(world)
    hosts = {m["destination"]["host"] for m in route.get("mirrors", [])}
    if "mirror" in route:
        hosts.add(route["mirror"]["host"])
    return {h.split(".")[0] for h in hosts}


def shadow_world(world: World, disagreement: float) -> None:
    world.given_models(fast("v6", click_rate=0.20), fast("v7", click_rate=0.30, disagreement=disagreement))
    world.given_virtual_service()
    world.given_mesh()
    world.given_load(rps=200, duration_s=400)
    world.given_operator()


def test_agreeing_challenger_is_shadowed_then_promoted(world: World) -> None:
    # Given a challenger that agrees with the champion on 99 % of the predictions
    shadow_world(world, disagreement=0.01)
    recorder = world.record_weights()
    # When the experiment with a shadow phase is applied
    world.when_experiment_applied(experiment_manifest(
        "ranker-v7", shadow=SHADOW, mde=0.25, prometheus_url=world.prometheus.url))
    # Then it shadows first: the challenger is mirrored, and gets no real traffic
    world.then_phase("Shadowing", timeout=30)
    world.wait_for("the mirror on", lambda: mirrored_hosts(world) == {"ranker-v7"}, 10)
    world.then_routes({"v6": 100, "v7": 0})
    # then it progresses, with the mirror off from step 0
    world.then_phase(["Progressing", "Promoted", "RolledBack", "Failed"], timeout=90)
    assert world.phase() == "Progressing", world.describe()
    world.wait_for("the mirror off", lambda: not mirrored_hosts(world), 5)
    # and it is promoted
    world.then_phase(["Promoted", "RolledBack", "Failed"], timeout=120)
    assert world.phase() == "Promoted", world.describe()
    recorder.stop()
    world.then_routes({"v6": 0, "v7": 100})
    assert not mirrored_hosts(world)
    shares = [s["v7"] for s in recorder.splits() if sum(s.values()) == 100]
    assert shares == sorted(shares), f"weights went backwards: {recorder.splits()}"


def test_diverging_challenger_fails_the_shadow_gate(world: World) -> None:
    # Given a challenger that disagrees with the champion on 30 % of the predictions
    shadow_world(world, disagreement=0.3)
    recorder = world.record_weights()
    # When the experiment with a shadow phase (at most 5 % divergence) is applied
    world.when_experiment_applied(experiment_manifest(
        "ranker-v7", shadow=SHADOW, mde=0.25, prometheus_url=world.prometheus.url))
    world.then_phase("Shadowing", timeout=30)
    # Then it is rolled back from the shadow phase
    world.then_phase(["Progressing", "Promoted", "RolledBack", "Failed"], timeout=90)
    assert world.phase() == "RolledBack", world.describe()
    recorder.stop()
    # because of the divergence gate
    reasons = [h.get("reason") for h in world.status().get("history", [])]
    print(f"history reasons: {reasons}; events: {[e['reason'] for e in world.events()]}")
    assert "ShadowFailed" in reasons, world.describe()
    # and no real traffic ever moved to the challenger; the mirror is off
    assert all(s["v7"] == 0 for s in recorder.splits()), recorder.splits()
    world.then_routes({"v6": 100, "v7": 0})
    assert not mirrored_hosts(world)
