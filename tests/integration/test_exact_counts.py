"""Exact counts on the real Prometheus: what the operator counts for a stratum is what the simulated
model servers served in it, to the request, also across a model server restart (a counter reset).

Two simulated model servers (separate processes, scraped every second by the localenv Prometheus)
serve requests the test sends them. The counts come from the provider and the policy's counting
exactly as in the operator: the raw samples of ``impressions_total`` and ``clicks_total``, turned
into increments, added into a stratum that starts after the servers' counters were first scraped.
"""

from __future__ import annotations

import secrets
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from modelrollout.api import ModelExperimentSpec
from modelrollout.api.observations import CounterReading
from modelrollout.api.status import ModelExperimentStatus, Stratum
from modelrollout.devstack.controlplane.prometheus import Prometheus
from modelrollout.devstack.sim.model_server import ModelConfig
from modelrollout.devstack.sim.stack import RunningModel, SimStack, ab_model_specs
from modelrollout.metrics import AnchorMemo, PrometheusProvider, build_counter_set
from modelrollout.policy import counts

pytestmark = pytest.mark.integration

TOK = secrets.token_hex(3)
NS = f"exact-{TOK}"


def _spec(prometheus: Prometheus) -> ModelExperimentSpec:
    selector = 'namespace="{{namespace}}", model="{{variant}}"'
    return ModelExperimentSpec.model_validate({
        "champion": {"name": "v6", "service": "ranker-v6"},
        "challengers": [{"name": "v7", "service": "ranker-v7"}],
        "traffic": {"provider": "istio", "istio": {"virtualService": "ranker", "routes": ["primary"]}},
        "metrics": {
            "prometheus": {"address": prometheus.url, "timeout": "5s"},
            "primary": {"name": "ctr", "type": "proportion", "minimumDetectableEffect": 0.1,
                        "successes": f"clicks_total{{{selector}}}",
                        "trials": f"impressions_total{{{selector}}}"},
        },
    })


def _send(model: RunningModel, n: int) -> None:
    for i in range(n):
        request = urllib.request.Request(f"{model.url}/predict?user_id=user-{i}", method="GET")
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert answer.status == 200


def _served(model: RunningModel) -> dict[str, float]:
    """The server's own counters, from its /metrics (summed over the ``segment`` label)."""
    out = {"clicks": 0.0, "impressions": 0.0}
    for line in model.metrics_text().splitlines():
        for name in out:
            if line.startswith(f"{name}_total{{"):
                out[name] += float(line.rsplit(" ", 1)[1])
    return out


def _scraped_after(prometheus: Prometheus, model: RunningModel, after: float, timeout: float = 30.0) -> None:
    """Wait until Prometheus holds a sample of ``model``'s target taken after ``after``."""
    def landed() -> bool:
        found = prometheus.query(f'timestamp(up{{instance="{model.target}", namespace="{NS}"}})')
        return bool(found) and float(found[0]["value"][1]) > after and float(found[0]["value"][1]) > 0

    prometheus.process.wait_until(landed, timeout, f"a scrape of {model.variant} after {after:.3f}")


@pytest.fixture
def stack(localenv_prometheus: Prometheus, tmp_path: Path) -> Iterator[tuple[SimStack, list[RunningModel]]]:
    with SimStack(tmp_path / "sim") as sim:
        configs = [ModelConfig(v, latency_median_ms=0.5, latency_p99_ms=2.0, click_rate=0.3, seed=3)
                   for v in ("v6", "v7")]
        models = sim.start_models(ab_model_specs(configs[0], configs[1:]))
        sim.register_targets(localenv_prometheus, labels={"namespace": NS})
        try:
            yield sim, models
        finally:
            for job in sim.scrape_targets():
                localenv_prometheus.set_targets(job, [], wait=False)


def _read(provider: PrometheusProvider, spec: ModelExperimentSpec, status: ModelExperimentStatus,
          memo: AnchorMemo, at: datetime) -> Any:
    counter_set = build_counter_set(spec, NS)
    readings = provider.observe(counter_set, at, checkpoints=status.checkpoints,
                                counted_since=status.counted_since or at, memo=memo)
    assert isinstance(readings["ctr"], CounterReading), readings["ctr"]
    return counts.read(spec, status, readings, ("v6", "v7"), stratify=True)


def test_stratum_counts_equal_the_requests_served_across_a_restart(
    localenv_prometheus: Prometheus, stack: tuple[SimStack, list[RunningModel]]
) -> None:
    prometheus = localenv_prometheus
    sim, (v6, v7) = stack
    spec = _spec(prometheus)
    # Given a stratum that starts while the servers have counted some requests already; it counts
    # from the first scrape of each server after its start (the scrapes bound it)
    _send(v6, 7)
    start = datetime.now(UTC)
    for model in (v6, v7):
        _scraped_after(prometheus, model, start.timestamp())
    before = {m.variant: _served(m) for m in (v6, v7)}
    status = ModelExperimentStatus(
        started_at=start, counted_since=start,
        strata=[Stratum(step=0, weights={"v6": 50, "v7": 50}, started_at=start, counted_from=start)],
    )
    memo = AnchorMemo()
    provider = PrometheusProvider(prometheus.url)
    _read(provider, spec, status, memo, datetime.now(UTC))
    # When requests are served, v7's server restarts (its counters start again from zero) after a
    # scrape saw what it had counted, and more requests are served
    _send(v6, 120)
    _send(v7, 80)
    _read(provider, spec, status, memo, datetime.now(UTC))  # a tick in the middle
    mid = {m.variant: _served(m) for m in (v6, v7)}
    now = time.time()
    _scraped_after(prometheus, v7, now)
    v7 = sim.restart_model(v7)
    _send(v7, 45)
    _send(v6, 30)
    after = {m.variant: _served(m) for m in (v6, v7)}
    now = time.time()
    for model in (v6, v7):
        _scraped_after(prometheus, model, now)
    # Then, once the last scrape has landed, the stratum holds exactly what the servers served
    readings = _read(provider, spec, status, memo, datetime.now(UTC))
    served = {
        "v6": {k: after["v6"][k] - before["v6"][k] for k in ("clicks", "impressions")},
        "v7": {k: mid["v7"][k] - before["v7"][k] + after["v7"][k] for k in ("clicks", "impressions")},
    }
    assert served["v6"]["impressions"] == 150
    assert served["v7"]["impressions"] == 125
    for variant in ("v6", "v7"):
        got = status.strata[0].totals[variant]["ctr"]
        want = (served[variant]["impressions"], served[variant]["clicks"])
        assert (got.trials, got.successes) == want, variant
        known = readings["ctr"]
        assert isinstance(known, counts.Known)
        assert known.values[variant] == got


def test_without_anchors_in_memory_the_counts_continue_from_the_checkpoint(
    localenv_prometheus: Prometheus, stack: tuple[SimStack, list[RunningModel]]
) -> None:
    """An operator restart loses the anchors in memory: the next tick finds them at the checkpoint."""
    prometheus = localenv_prometheus
    _, (v6, v7) = stack
    spec = _spec(prometheus)
    start = datetime.now(UTC)
    for model in (v6, v7):
        _scraped_after(prometheus, model, start.timestamp())
    status = ModelExperimentStatus(
        started_at=start, counted_since=start,
        strata=[Stratum(step=0, weights={"v6": 50, "v7": 50}, started_at=start, counted_from=start)],
    )
    provider = PrometheusProvider(prometheus.url)
    _send(v6, 40)
    now = time.time()
    _scraped_after(prometheus, v6, now)
    _read(provider, spec, status, AnchorMemo(), datetime.now(UTC))
    time.sleep(1.5)  # the checkpoint is before the next requests' first scrape
    _send(v6, 25)
    _send(v7, 10)
    now = time.time()
    for model in (v6, v7):
        _scraped_after(prometheus, model, now)
    _read(provider, spec, status, AnchorMemo(), datetime.now(UTC) + timedelta(milliseconds=1))
    assert status.strata[0].totals["v6"]["ctr"].trials == 65
    assert status.strata[0].totals["v7"]["ctr"].trials == 10
