"""A/B/n: two challengers; the worse one is dropped and the better one goes on to promotion."""

from __future__ import annotations

import pytest

from modelrollout.devstack.sim.world import World, experiment_manifest
from support.models import fast

pytestmark = pytest.mark.e2e


def test_loser_is_dropped_and_winner_promoted(world: World) -> None:
    # Given a champion at 20 % click-through, v7 at 30 % and v8 at 10 %, behind Istio
    world.given_models(fast("v6", click_rate=0.20), fast("v7", click_rate=0.30), fast("v8", click_rate=0.10))
    world.given_virtual_service()
    world.given_mesh()
    world.given_load(rps=200, duration_s=400)
    world.given_operator()
    recorder = world.record_weights()
    # When an A/B/n experiment with both challengers is applied
    world.when_experiment_applied(experiment_manifest(
        "ranker-abn", challengers=("v7", "v8"), mde=0.25, prometheus_url=world.prometheus.url))
    # Then v8 is dropped: its weight goes to 0 and it is listed in status.droppedChallengers
    world.wait_for("v8 dropped", lambda: any(
        d["name"] == "v8" for d in world.status().get("droppedChallengers", [])), 120)
    world.wait_for("v8 at 0 %", lambda: (world.route_weights() or {}).get("v8") == 0, 10)
    # and v7 goes on to promotion
    world.then_phase(["Promoted", "RolledBack", "Failed"], timeout=150)
    assert world.phase() == "Promoted", world.describe()
    recorder.stop()
    world.then_routes({"v6": 0, "v7": 100, "v8": 0})
    dropped = world.status()["droppedChallengers"]
    assert [d["name"] for d in dropped] == ["v8"], dropped
    print(f"dropped: {dropped}; splits: {recorder.splits()}")
    v8 = [s["v8"] for s in recorder.splits() if sum(s.values()) == 100]
    assert any(x > 0 for x in v8), f"v8 never had traffic: {recorder.splits()}"
    first_positive = next(i for i, x in enumerate(v8) if x > 0)
    dropped_at = next(i for i in range(first_positive, len(v8)) if v8[i] == 0)
    assert all(x == 0 for x in v8[dropped_at:]), f"v8 came back after its drop: {recorder.splits()}"
