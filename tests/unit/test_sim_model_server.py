"""The pure pieces of the simulated model server: configuration, latency, predictions, outcomes."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from modelrollout.devstack.sim import model_server as ms
from modelrollout.devstack.sim.model_server import ModelConfig

pytestmark = pytest.mark.unit


def test_config_defaults_and_updates() -> None:
    config = ModelConfig("v7")
    assert config.error_rate == 0.0
    changed = config.updated({"error_rate": 0.2, "latency_p99_ms": 50, "prediction_seed": "ranker"})
    assert (changed.error_rate, changed.latency_p99_ms, changed.prediction_seed) == (0.2, 50.0, "ranker")
    assert config.error_rate == 0.0  # immutable
    assert changed.to_dict()["variant"] == "v7"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"error_rate": 1.5}, "error_rate must be in"),
        ({"click_rate": -0.1}, "click_rate must be in"),
        ({"latency_p99_ms": 1.0}, "latency_p99_ms"),
        ({"items": 1}, "items must be at least 2"),
        ({"revenue_mean": 0.0}, "revenue_mean"),
        ({"nope": 1}, "unknown field 'nope'"),
        ({"variant": "v8"}, "variant cannot change"),
        ({"error_rate": "high"}, "must be a number"),
        ({"error_rate": True}, "must be a number"),
        ({"items": 2.5}, "must be an integer"),
    ],
)
def test_invalid_updates_are_rejected(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelConfig("v7").updated(changes)


def test_lognormal_latency_has_the_configured_median_and_p99() -> None:
    config = ModelConfig("v7", latency_median_ms=20.0, latency_p99_ms=100.0)
    rng = random.Random(1)
    draws = sorted(ms.latency_ms(config, rng) for _ in range(40_000))
    median = draws[len(draws) // 2]
    p99 = draws[int(0.99 * len(draws))]
    assert abs(median - 20.0) < 0.6
    assert abs(p99 - 100.0) < 6.0


def test_fixed_and_zero_latency() -> None:
    rng = random.Random(1)
    assert ms.latency_ms(ModelConfig("v7", latency_median_ms=7.0, latency_p99_ms=7.0), rng) == 7.0
    assert ms.latency_ms(ModelConfig("v7", latency_median_ms=0.0, latency_p99_ms=0.0), rng) == 0.0


def test_predictions_are_deterministic_per_user_and_variants_agree_except_the_disagreement() -> None:
    champion = ModelConfig("v6", prediction_seed="ranker")
    challenger = ModelConfig("v7", prediction_seed="ranker", disagreement=0.1)
    users = [f"user-{i:06d}" for i in range(20_000)]
    differ = 0
    for user in users:
        a, b = ms.predict(user, champion), ms.predict(user, challenger)
        assert ms.predict(user, challenger) == b
        assert not a.disagrees
        assert (a.item != b.item) == b.disagrees
        assert 0 <= b.item < challenger.items
        assert 0.0 <= b.score < 1.0
        differ += a.item != b.item
    sd = math.sqrt(len(users) * 0.1 * 0.9)
    assert abs(differ - 0.1 * len(users)) < 5 * sd


def test_the_flip_depends_on_the_variant_so_two_challengers_disagree_on_different_users() -> None:
    users = [f"user-{i:06d}" for i in range(5000)]
    v7 = {
        u for u in users if ms.predict(u, ModelConfig("v7", prediction_seed="r", disagreement=0.2)).disagrees
    }
    v8 = {
        u for u in users if ms.predict(u, ModelConfig("v8", prediction_seed="r", disagreement=0.2)).disagrees
    }
    assert 0.02 < len(v7 & v8) / len(users) < 0.06  # about 0.2 * 0.2


def test_outcomes_have_the_configured_rates_and_moments() -> None:
    config = ModelConfig("v7", click_rate=0.15, revenue_mean=2.0, revenue_sd=1.5)
    rng = random.Random(5)
    outcomes = [ms.sample_outcome(config, rng) for _ in range(50_000)]
    clicks = sum(o.click for o in outcomes)
    assert abs(clicks / len(outcomes) - 0.15) < 5 * math.sqrt(0.15 * 0.85 / len(outcomes))
    revenue = [o.revenue for o in outcomes]
    assert min(revenue) > 0.0
    assert abs(statistics.fmean(revenue) - 2.0) < 0.05
    assert abs(statistics.stdev(revenue) - 1.5) < 0.1


def test_lognormal_parameters_round_trip() -> None:
    mu, sigma = ms.lognormal_parameters(2.0, 1.5)
    assert math.isclose(math.exp(mu + sigma**2 / 2), 2.0)
    assert math.isclose(math.sqrt((math.exp(sigma**2) - 1) * math.exp(2 * mu + sigma**2)), 1.5)


@pytest.mark.parametrize(
    ("host", "header", "shadow"),
    [
        ("ranker-shadow", None, True),
        ("ranker-shadow:8080", None, True),
        ("ranker.shop.svc.cluster.local-shadow", None, True),
        ("ranker", None, False),
        ("ranker:8080", None, False),
        (None, None, False),
        ("ranker", "true", True),
        ("ranker", "0", False),
    ],
)
def test_shadow_requests_are_recognised(host: str | None, header: str | None, shadow: bool) -> None:
    assert ms.is_shadow_request(host, header) is shadow


def test_metrics_series_exist_at_zero() -> None:
    text = ms.ModelMetrics("v7").exposition().decode()
    for line in (
        'impressions_total{model="v7"} 0.0',
        'clicks_total{model="v7"} 0.0',
        'revenue_sum{model="v7"} 0.0',
        'revenue_count{model="v7"} 0.0',
        'revenue_sum_squares{model="v7"} 0.0',
        'predictions_total{model="v7",shadow="true"} 0.0',
    ):
        assert line in text


def test_command_line_configuration() -> None:
    args = ms.build_parser().parse_args(
        ["--variant", "v7", "--error-rate", "0.05", "--config-json", '{"click_rate": 0.2, "error_rate": 0.5}']
    )
    config = ms.config_from_args(args)
    assert (config.variant, config.error_rate, config.click_rate) == ("v7", 0.05, 0.2)
