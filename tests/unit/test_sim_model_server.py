"""The pure pieces of the simulated model server: configuration, latency, predictions, outcomes."""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import statistics
from collections import Counter

import pytest
from aiohttp.test_utils import make_mocked_request

from modelrollout.devstack.sim import model_server as ms
from modelrollout.devstack.sim.common import SEGMENTS, segment_of
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
        ({"segment_click_rates": {"watch": 0.1}}, "unknown segment 'watch'"),
        ({"segment_click_rates": {"mobile": 1.5}}, r"segment_click_rates\['mobile'\] must be in"),
        ({"segment_click_rates": {"mobile": "low"}}, "must be a number"),
        ({"segment_click_rates": [0.1]}, "must be an object"),
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
    for segment in ("desktop", "mobile", "tablet"):
        for name in ("impressions_total", "clicks_total", "revenue_sum", "revenue_count",
                     "revenue_sum_squares"):
            assert f'{name}{{model="v7",segment="{segment}"}} 0.0' in text
    assert 'predictions_total{model="v7",shadow="true"} 0.0' in text


# ---- segments ---------------------------------------------------------------------------------
def test_segment_of_is_stable_and_splits_the_users_60_30_10() -> None:
    users = [f"user-{i:06d}" for i in range(10_000)]
    segments = [segment_of(u) for u in users]
    assert segments == [segment_of(u) for u in users]  # the same on every call
    assert set(segments) == set(SEGMENTS) == {"desktop", "mobile", "tablet"}
    counts = Counter(segments)
    for segment, share in (("desktop", 0.6), ("mobile", 0.3), ("tablet", 0.1)):
        sd = math.sqrt(len(users) * share * (1 - share))
        assert abs(counts[segment] - share * len(users)) < 4 * sd, counts
    assert segment_of("user-000123") == segment_of("user-000123")


def test_segment_click_rates_override_the_click_rate_of_their_segment() -> None:
    config = ModelConfig("v7", click_rate=0.24, segment_click_rates={"mobile": 0.10})
    assert config.click_rate_of("mobile") == 0.10
    assert config.click_rate_of("desktop") == config.click_rate_of("tablet") == 0.24
    assert config.click_rate_of(None) == 0.24
    n = 40_000
    for segment, rate in (("mobile", 0.10), ("desktop", 0.24), (None, 0.24)):
        rng = random.Random(3)
        clicks = sum(ms.sample_outcome(config, rng, segment).click for _ in range(n))
        assert abs(clicks / n - rate) < 5 * math.sqrt(rate * (1 - rate) / n), (segment, clicks / n)


def test_segment_click_rates_change_at_run_time_as_a_whole_map() -> None:
    config = ModelConfig("v7", segment_click_rates={"mobile": 0.1})
    changed = config.updated({"segment_click_rates": {"tablet": 0.3, "desktop": 1}})
    assert changed.segment_click_rates == {"tablet": 0.3, "desktop": 1.0}
    assert config.segment_click_rates == {"mobile": 0.1}
    assert changed.to_dict()["segment_click_rates"] == {"tablet": 0.3, "desktop": 1.0}
    assert ModelConfig("v7").segment_click_rates == {}
    assert ModelConfig("v7") == ModelConfig("v7", segment_click_rates={})


def _served_counts(text: str, name: str) -> dict[str, float]:
    found = {}
    for segment, value in re.findall(rf'^{name}{{model="v7",segment="(\w+)"}} (\S+)$', text, re.MULTILINE):
        found[segment] = float(value)
    return found


def test_the_server_labels_outcomes_by_segment_and_applies_the_segment_rates() -> None:
    # mobile users always click, the others never: each click is then a mobile impression
    server = ms.ModelServer(ModelConfig("v7", latency_median_ms=0.0, latency_p99_ms=0.0, click_rate=0.0,
                                        segment_click_rates={"mobile": 1.0}, seed=1))
    users = [f"user-{i:06d}" for i in range(300)]

    async def serve_all() -> list[dict[str, object]]:
        bodies = []
        for user in users:
            answer = await server.handle_predict(make_mocked_request("GET", "/predict",
                                                                     headers={"x-user-id": user}))
            assert answer.status == 200
            assert isinstance(answer.body, bytes)
            bodies.append(json.loads(answer.body))
        return bodies

    bodies = asyncio.run(serve_all())
    expected = Counter(segment_of(u) for u in users)
    text = server.metrics.exposition().decode()
    impressions = _served_counts(text, "impressions_total")
    clicks = _served_counts(text, "clicks_total")
    assert impressions == {s: float(expected[s]) for s in SEGMENTS}
    assert clicks == {"desktop": 0.0, "mobile": float(expected["mobile"]), "tablet": 0.0}
    for user, body in zip(users, bodies, strict=True):
        outcome = body["outcome"]
        assert isinstance(outcome, dict)
        assert outcome["click"] is (segment_of(user) == "mobile")


def test_command_line_configuration() -> None:
    args = ms.build_parser().parse_args(
        ["--variant", "v7", "--error-rate", "0.05", "--config-json", '{"click_rate": 0.2, "error_rate": 0.5}']
    )
    config = ms.config_from_args(args)
    assert (config.variant, config.error_rate, config.click_rate) == ("v7", 0.05, 0.2)
    assert config.segment_click_rates == {}


def test_command_line_segment_click_rates_repeat_and_overlay_the_json() -> None:
    args = ms.build_parser().parse_args(
        ["--variant", "v7", "--segment-click-rate", "mobile=0.1", "--segment-click-rate", "tablet=0.3",
         "--config-json", '{"segment_click_rates": {"desktop": 0.2, "mobile": 0.5}}']
    )
    config = ms.config_from_args(args)
    assert config.segment_click_rates == {"desktop": 0.2, "mobile": 0.1, "tablet": 0.3}
    with pytest.raises(SystemExit):
        ms.build_parser().parse_args(["--variant", "v7", "--segment-click-rate", "mobile"])
    bad = ms.build_parser().parse_args(["--variant", "v7", "--segment-click-rate", "watch=0.1"])
    with pytest.raises(ValueError, match="unknown segment 'watch'"):
        ms.config_from_args(bad)
