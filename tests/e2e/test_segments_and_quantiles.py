"""Who is harmed, and how slow: a challenger that is better overall but worse for a protected
segment is rolled back (SegmentHarm), and a challenger whose p95 latency regresses is rolled back
by an Istio latency-quantile guardrail (GuardrailBreach)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from modelrollout.devstack.sim.world import World, experiment_manifest
from support.models import fast, segmented

pytestmark = pytest.mark.e2e

ALL_CHAMPION = {"v6": 100, "v7": 0}
TERMINAL = ["Promoted", "RolledBack", "Failed"]
P95_LATENCY = {"name": "p95-latency", "preset": "istio-latency-quantile", "quantile": 0.95,
               "maxRelativeIncrease": 0.2}


def given_stack(world: World, champion: Any, challenger: Any) -> None:
    world.given_models(champion, challenger)
    world.given_virtual_service()
    world.given_mesh()
    world.given_load(rps=200, duration_s=300)
    world.given_operator()


def test_challenger_better_overall_but_worse_for_mobile_is_rolled_back(world: World) -> None:
    # Given a champion at 20 % click-through for everyone, and a challenger at 28 % for desktop and
    # tablet users (70 % of the users) but 10 % for mobile users (30 %): 22.6 % overall, better
    # than the champion, and half as good for the protected segment
    given_stack(world, fast("v6", click_rate=0.20), segmented("v7", 0.28, mobile=0.10))
    # When the experiment is applied with mobile a protected segment (margin 0, alpha 0.05)
    applied = time.monotonic()
    world.when_experiment_applied(
        experiment_manifest("ranker-v7", mde=0.25, prometheus_url=world.prometheus.url,
                            segments={"label": "segment", "protected": [{"value": "mobile"}]})
    )
    # Then it is rolled back for harming the segment, and the routes are back at the champion
    world.then_phase(TERMINAL, timeout=150)
    elapsed = time.monotonic() - applied
    assert world.phase() == "RolledBack", world.describe()
    world.wait_for("routes back at 100/0", lambda: world.route_weights() == ALL_CHAMPION, timeout=15)
    condition = world.then_condition("RolledBack", "True", "SegmentHarm")
    world.then_last_history_reason("SegmentHarm")
    # And a Warning Event names the harmed segment
    warnings = world.then_event("SegmentHarm", type_="Warning", timeout=15)
    message = str(warnings[-1]["message"])
    assert "mobile" in message, warnings
    # And the status shows the protected segment's record, harmed
    variants = ((world.status().get("analysis") or {}).get("variants") or {})
    records = (variants.get("v7") or {}).get("segments") or []
    mobile = [r for r in records if r.get("value") == "mobile" and r.get("protected")]
    assert mobile, f"no protected mobile record in v7's segments: {records}; {world.describe()}"
    assert any(r.get("harmed") is True for r in mobile), mobile
    print(f"\napplied -> RolledBack (SegmentHarm): {elapsed:.2f} s")
    print(f"condition: {condition.get('message')}")
    print(f"event: {warnings[-1]['reason']}: {message}")
    print(f"mobile record: {mobile}")
    print(f"other records: {[r for r in records if r not in mobile]}")


def test_challenger_whose_p95_latency_regresses_is_rolled_back_by_its_quantile_guardrail(
    world: World,
) -> None:
    # Given a champion answering in 5 ms (25 ms at p99; p95 about 16 ms) and a challenger with
    # the same click-through answering in 60 ms (300 ms at p99; p95 about 190 ms), behind Istio
    # (default duration buckets 0.5, 1, 5, 10, 25, 50, 100, 250, ... ms)
    given_stack(world, fast("v6", click_rate=0.20, latency_median_ms=5.0, latency_p99_ms=25.0),
                fast("v7", click_rate=0.20, latency_median_ms=60.0, latency_p99_ms=300.0))
    # When the experiment is applied with a p95 latency guardrail (at most 20 % higher)
    applied = time.monotonic()
    world.when_experiment_applied(
        experiment_manifest("ranker-v7", mde=0.25, prometheus_url=world.prometheus.url,
                            extra_guardrails=[P95_LATENCY])
    )
    # Then it is rolled back by that guardrail, and the routes are back at the champion
    world.then_phase(TERMINAL, timeout=150)
    elapsed = time.monotonic() - applied
    assert world.phase() == "RolledBack", world.describe()
    world.wait_for("routes back at 100/0", lambda: world.route_weights() == ALL_CHAMPION, timeout=15)
    condition = world.then_condition("RolledBack", "True", "GuardrailBreach")
    assert "p95-latency" in str(condition.get("message")), condition
    world.then_last_history_reason("GuardrailBreach")
    # And a Warning Event names the guardrail
    warnings = world.then_event("GuardrailBreach", type_="Warning", timeout=15)
    message = str(warnings[-1]["message"])
    assert "p95-latency" in message, warnings
    print(f"\napplied -> RolledBack (GuardrailBreach): {elapsed:.2f} s")
    print(f"event: {warnings[-1]['reason']}: {message}")
    history = world.status().get("history") or []
    print(f"history: {[(h.get('toPhase'), h.get('toStep'), h.get('reason')) for h in history]}")
    print(f"numbers: {history[-1].get('numbers') if history else None}")
