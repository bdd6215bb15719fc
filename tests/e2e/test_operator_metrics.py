"""The operator's own metrics, scraped by the real Prometheus while an experiment runs (issue 14).

The operator process serves ``/metrics`` on a free loopback port (``run --metrics-port``) and the
session's Prometheus scrapes it every second (job ``modelrollout-operator``). The test reads the
running experiment's figures back from Prometheus, checks them against the status, evaluates every
query of the chart's Grafana dashboard against that Prometheus, and checks that the experiment's
series leave ``/metrics`` once it is deleted.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from modelrollout.devstack.sim.world import OPERATOR_JOB, World, experiment_manifest
from support import monitoring
from support.models import fast

pytestmark = pytest.mark.e2e

NAME = "ranker-v7"
STEPS = (10, 25, 50, 100)


def values(world: World, promql: str) -> dict[str, float]:
    """``promql``'s instant result by the ``variant`` label (or ``""``)."""
    return {r["metric"].get("variant", ""): float(r["value"][1]) for r in world.prometheus.query(promql)}


def gone(world: World) -> bool:
    try:
        world.experiment()
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def test_the_operators_metrics_follow_an_experiment_in_prometheus_and_go_with_it(world: World) -> None:
    # Given a better challenger behind Istio (both with a few errors, so the guardrail has figures),
    # and the operator, whose /metrics the real Prometheus scrapes
    world.given_models(fast("v6", click_rate=0.20, error_rate=0.01),
                       fast("v7", click_rate=0.30, error_rate=0.01))
    world.given_virtual_service()
    world.given_mesh()
    world.given_load(rps=300, duration_s=400)
    world.given_operator()
    world.wait_for_operator_scraped()
    prom = world.prometheus
    one = f'namespace="{world.namespace}", experiment="{NAME}"'
    primary = f'{one}, variant="v7", metric="click-through"'

    # When the experiment is applied
    world.when_experiment_applied(experiment_manifest(NAME, mde=0.25, steps=STEPS, prometheus_url=prom.url))

    # Then Prometheus has the running experiment's figures: its phase, the weights of a step, and
    # the challenger's lift with its interval and p-value
    def in_phase(phase: str) -> bool:
        return bool(prom.query(f'modelrollout_experiment_phase{{{one}, phase="{phase}"}} == 1'))

    world.wait_for("Prometheus to see it Progressing", lambda: in_phase("Progressing"), timeout=90)
    weights = values(world, f"modelrollout_experiment_weight_ratio{{{one}}}")
    assert set(weights) == {"v6", "v7"}, weights
    assert sum(weights.values()) == pytest.approx(1.0)
    assert round(100 * weights["v7"]) in (0, *STEPS), weights
    assert values(world, f'sum(modelrollout_experiments{{phase="Progressing", job="{OPERATOR_JOB}"}})') == {
        "": 1.0}

    def analysed() -> bool:
        return all(prom.query(f"modelrollout_experiment_{f}{{{primary}}}")
                   for f in ("lift", "lift_lower", "lift_upper", "p_value"))

    world.wait_for("the challenger's lift, interval and p-value in Prometheus", analysed, timeout=120)
    lift = values(world, f"modelrollout_experiment_lift{{{primary}}}")["v7"]
    low = values(world, f"modelrollout_experiment_lift_lower{{{primary}}}")["v7"]
    high = values(world, f"modelrollout_experiment_lift_upper{{{primary}}}")["v7"]
    p_value = values(world, f"modelrollout_experiment_p_value{{{primary}}}")["v7"]
    print(f"\nrunning: weights {weights}, lift {lift:+.3f} [{low:+.3f}, {high:+.3f}], p {p_value:.3g}")
    assert low <= high
    assert 0.0 <= p_value <= 1.0
    ticks = values(world, f'sum(modelrollout_tick_duration_seconds_count{{job="{OPERATOR_JOB}"}})')[""]
    assert ticks > 0
    assert values(world, "sum(modelrollout_decisions_total)")[""] > 0

    # Then it is promoted, and Prometheus shows its final figures, equal to the status's
    world.then_phase(["Promoted", "RolledBack", "Failed"], timeout=240)
    assert world.phase() == "Promoted", world.describe()
    world.wait_for("Prometheus to see it Promoted", lambda: in_phase("Promoted"), timeout=30)
    world.wait_for("the promoted weights in Prometheus", lambda: values(
        world, f"modelrollout_experiment_weight_ratio{{{one}}}") == {"v6": 0.0, "v7": 1.0}, timeout=30)
    status = world.status()
    analysis: dict[str, Any] = status["analysis"]
    samples = values(world, f'modelrollout_experiment_samples{{{one}, metric="click-through"}}')
    assert samples == {v: a["primary"]["n"] for v, a in analysis["variants"].items()}, samples
    planned = values(world, f'modelrollout_experiment_planned_samples{{{one}, metric="click-through"}}')
    assert planned == {"": status["plans"]["click-through"]["n"]}
    guardrail = values(world, f'modelrollout_experiment_guardrail_breached{{{one}, metric="error-rate"}}')
    assert guardrail == {"v7": 0.0}
    finished = values(world, f"modelrollout_experiment_finished_timestamp_seconds{{{one}}}")[""]
    assert finished > 0

    # And every query of the Grafana dashboard returns data from the real Prometheus
    empty = []
    for query in monitoring.queries():
        expr = monitoring.fill(query.expr, {"namespace": world.namespace, "experiment": NAME})
        if not prom.query(expr):
            empty.append(f"{query.panel} [{query.ref}]: {expr}")
    assert empty == [], "dashboard queries without data:\n" + "\n".join(empty)

    # When the experiment is deleted
    world.when_experiment_deleted()
    world.wait_for("the experiment to be gone", lambda: gone(world), timeout=60)

    # Then its series leave the operator's /metrics, and the fleet counts it no more
    world.wait_for("its series to leave /metrics",
                   lambda: f'experiment="{NAME}"' not in world.operator_metrics(), timeout=30)
    text = world.operator_metrics()
    assert 'modelrollout_experiments{phase="Promoted"} 0.0' in text
    assert "modelrollout_tick_duration_seconds_count" in text
    # (and Prometheus marks them stale at its next scrape)
    world.wait_for("Prometheus to drop its series",
                   lambda: not prom.query(f"modelrollout_experiment_phase{{{one}}}"), timeout=30)
