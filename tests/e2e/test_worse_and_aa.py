"""A worse challenger is rolled back by the primary rule; an A/A test ends inconclusive, never
promoted (issue 6, scenarios 3 and 4)."""

from __future__ import annotations

import pytest

from modelrollout.devstack.sim.world import World, experiment_manifest
from support.models import fast

pytestmark = pytest.mark.e2e

ALL_CHAMPION = {"v6": 100, "v7": 0}
TERMINAL = ["Promoted", "RolledBack", "Failed"]


def given_stack(world: World, champion_rate: float, challenger_rate: float) -> None:
    world.given_models(fast("v6", click_rate=champion_rate), fast("v7", click_rate=challenger_rate))
    world.given_virtual_service()
    world.given_mesh()
    world.given_load(rps=200, duration_s=300)
    world.given_operator()


def test_challenger_worse_on_the_primary_metric_is_rolled_back(world: World) -> None:
    # Given a champion at 30 % click-through and a challenger at 20 %, neither failing requests
    given_stack(world, 0.30, 0.20)
    recorder = world.record_weights()
    # When the experiment is applied
    world.when_experiment_applied(
        experiment_manifest("ranker-v7", mde=0.25, prometheus_url=world.prometheus.url)
    )
    # Then it is rolled back by the primary rule, and the challenger never got past 50 %
    world.then_phase(TERMINAL, timeout=100)
    recorder.stop()
    assert world.phase() == "RolledBack", world.describe()
    world.then_routes(ALL_CHAMPION)
    history = world.status()["history"]
    assert history[-1]["toPhase"] == "RolledBack", history[-3:]
    world.then_last_history_reason("PrimaryWorse")
    world.then_condition("RolledBack", "True", "PrimaryWorse")
    assert all(s["v7"] < 100 for s in recorder.splits()), recorder.splits()
    print(f"\nrolled back: {history[-1]['message']} numbers={history[-1].get('numbers')}")


def test_aa_experiment_is_not_promoted_and_ends_inconclusive(world: World) -> None:
    # Given a champion and a challenger with the same click-through
    given_stack(world, 0.25, 0.25)
    recorder = world.record_weights()
    # When the experiment is applied with a short maxDuration and onInconclusive keepChampion, at
    # alpha 0.001: an A/A ends with a verdict (better or worse) at most at that rate. At the default
    # 0.05 this test failed once in a fresh-clone CI run (2026-12-03: "significantly worse", p 0.039):
    # the test itself, not the product, was wrong a few per cent of the time.
    world.when_experiment_applied(
        experiment_manifest("ranker-v7", mde=0.25, max_duration="60s", on_inconclusive="keepChampion",
                            analysis={"alpha": 0.001}, prometheus_url=world.prometheus.url)
    )
    # Then it is never promoted: at maxDuration it goes back to the champion as inconclusive
    world.then_phase(TERMINAL, timeout=110)
    recorder.stop()
    assert world.phase() == "RolledBack", world.describe()
    world.then_routes(ALL_CHAMPION)
    history = world.status()["history"]
    assert all(h["toPhase"] != "Promoted" for h in history), history
    world.then_last_history_reason("Inconclusive")
    world.then_condition("RolledBack", "True", "Inconclusive")
    print(f"\ninconclusive: {history[-1]['message']}; splits seen: {recorder.splits()}")
