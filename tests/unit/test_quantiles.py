"""Quantile bounds and the quantile guardrail from histogram buckets (stats/quantiles.py), checked
against exhaustive sums, numerical integration, closed forms and Monte Carlo with fixed seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import integrate, stats

from modelrollout.errors import InvalidInputError
from modelrollout.stats import quantiles as q

pytestmark = pytest.mark.unit

#: Edges 5 % apart from 50 ms to about 1 s (62 edges), as a team would configure around its p95.
FINE = tuple(float(x) for x in np.round(50.0 * 1.05 ** np.arange(62), 1))
#: Istio's default buckets of istio_request_duration_milliseconds (finite ones below 60 s).
ISTIO = (0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0)
SIGMA = 0.5  # log-normal latencies


def bucket_probabilities(edges: tuple[float, ...], p95: float) -> NDArray[np.float64]:
    """Per bucket (each edge's, then +Inf), the probability of a log-normal latency whose p95 is ``p95``."""
    mu = math.log(p95) - SIGMA * stats.norm.ppf(0.95)
    cdf = stats.lognorm.cdf(np.asarray(edges), SIGMA, scale=math.exp(mu))
    return np.diff(np.concatenate([[0.0], cdf, [1.0]]))


@pytest.mark.parametrize("p0", [0.05, 0.5, 0.95, 0.99])
@pytest.mark.parametrize("greater", [True, False])
def test_the_mixture_is_a_martingale_at_p0_and_a_supermartingale_on_the_null_side(
    p0: float, greater: bool
) -> None:
    n = 80
    k = np.arange(n + 1)
    e = np.exp(q.binomial_mixture_log_e(k, np.full(n + 1, n), p0, greater=greater))
    assert float(np.sum(stats.binom.pmf(k, n, p0) * e)) == pytest.approx(1.0, abs=1e-9)
    inside = p0 * 0.8 if greater else 1.0 - (1.0 - p0) * 0.8  # a share strictly inside the null
    assert float(np.sum(stats.binom.pmf(k, n, inside) * e)) < 1.0


def test_one_scale_matches_numerical_integration_of_the_truncated_beta_mixture() -> None:
    p0, r, k, n = 0.9, 100.0, 50, 60
    a, b = r * p0, r * (1.0 - p0)

    def ratio(theta: float) -> float:
        return float((theta / p0) ** k * ((1 - theta) / (1 - p0)) ** (n - k) * stats.beta.pdf(theta, a, b))

    above = integrate.quad(ratio, p0, 1.0)[0] / stats.beta.sf(p0, a, b)
    below = integrate.quad(ratio, 0.0, p0)[0] / stats.beta.cdf(p0, a, b)
    assert q.binomial_mixture_log_e(k, n, p0, greater=True, scales=(r,)) == pytest.approx(
        math.log(above), rel=1e-9
    )
    assert q.binomial_mixture_log_e(k, n, p0, greater=False, scales=(r,)) == pytest.approx(
        math.log(below), rel=1e-9
    )


def test_histogram_quantile_follows_prometheus() -> None:
    # Uniform on (0, 100]: linear interpolation within a bucket is exact
    edges = (10.0, 50.0, 100.0)
    assert q.histogram_quantile(edges, [10, 50, 100, 100], 0.95) == pytest.approx(95.0)
    assert q.histogram_quantile(edges, [10, 50, 100, 100], 0.05) == pytest.approx(5.0)  # first bucket from 0
    assert q.histogram_quantile(edges, [10, 50, 90, 100], 0.95) == 100.0  # in +Inf: the last finite edge
    assert math.isnan(q.histogram_quantile(edges, [0, 0, 0, 0], 0.5))


def test_bounds_bracket_the_quantile_and_tighten_to_the_edges_around_it() -> None:
    probabilities = bucket_probabilities(FINE, 200.0)
    cumulative = np.round(np.cumsum(probabilities) * 2_000_000)
    found = q.quantile_bounds(FINE, list(cumulative), 0.95, level=0.05 / 124)
    below = max(e for e in FINE if e < 200.0)
    above = min(e for e in FINE if e > 200.0)
    assert (found.lower, found.upper) == (below, above)
    assert found.estimate == pytest.approx(200.0, rel=0.01)
    empty = q.quantile_bounds(FINE, [0.0] * (len(FINE) + 1), 0.95, level=0.01)
    assert (empty.lower, empty.upper) == (-math.inf, math.inf)


def _monitor(
    rng: np.random.Generator, challenger_p95: float, looks: int, per_look: int
) -> tuple[bool, bool, int]:
    """One experiment at a 10 % step, looked at every ``per_look`` challenger requests: (our rule
    breached, the naive point estimate ever exceeded the margin, challenger requests at the breach)."""
    champion_p, challenger_p = bucket_probabilities(FINE, 200.0), bucket_probabilities(FINE, challenger_p95)
    cc = np.zeros(len(FINE) + 1)
    ct = np.zeros(len(FINE) + 1)
    previous = None
    naive = False
    for look in range(1, looks + 1):
        cc += rng.multinomial(9 * per_look, champion_p)
        ct += rng.multinomial(per_look, challenger_p)
        previous = q.sequential_quantile_guardrail(
            FINE,
            list(np.cumsum(cc)),
            list(np.cumsum(ct)),
            margin=0.1,
            relative=True,
            alpha=0.05,
            previous=previous,
        )
        naive = naive or previous.worse_by > 0.1
        if previous.breached:
            return True, naive, look * per_look
    return False, naive, looks * per_look


def test_monte_carlo_a_challenger_exactly_at_the_margin_is_not_rolled_back() -> None:
    """30 runs (seed 16), p95 exactly 10 % above the champion's, a look every 100 challenger requests
    up to 4,000: our rule never breaches (its rate is at most alpha = 0.05 by construction, and far
    less in practice: bench/quantiles.py measures it over many more runs), while the point
    estimates cross the margin in many runs: the looks are enough to tempt a naive rule."""
    rng = np.random.default_rng(16)
    runs = [_monitor(rng, 220.0, looks=40, per_look=100) for _ in range(30)]
    assert sum(breached for breached, _, _ in runs) == 0
    assert sum(naive for _, naive, _ in runs) >= 10


def test_monte_carlo_a_thirty_percent_regression_is_caught() -> None:
    """20 runs (seed 17), p95 30 % above the champion's with a 10 % margin: every run breaches, the
    median within 3,000 challenger requests."""
    rng = np.random.default_rng(17)
    runs = [_monitor(rng, 260.0, looks=100, per_look=100) for _ in range(20)]
    assert all(breached for breached, _, _ in runs)
    assert float(np.median([n for _, _, n in runs])) <= 3000


def test_the_resolution_is_the_buckets_istio_defaults_cannot_see_thirty_percent_at_120_ms() -> None:
    # Both p95s (120 and 156 ms) lie in Istio's bucket (100, 250]: even a million requests each
    # only bound both to it, so no regression can be declared; fine edges see it.
    def result(edges: tuple[float, ...]) -> q.QuantileGuardrailResult:
        champion = np.round(np.cumsum(bucket_probabilities(edges, 120.0)) * 1e6)
        challenger = np.round(np.cumsum(bucket_probabilities(edges, 156.0)) * 1e6)
        return q.sequential_quantile_guardrail(
            edges, list(champion), list(challenger), margin=0.1, relative=True
        )

    coarse = result(ISTIO)
    assert (coarse.champion.upper, coarse.challenger.lower) == (250.0, 100.0)
    assert not coarse.breached
    assert result(FINE).breached


def test_an_absolute_margin_is_in_the_histograms_unit() -> None:
    champion = np.round(np.cumsum(bucket_probabilities(FINE, 200.0)) * 1e6)
    challenger = np.round(np.cumsum(bucket_probabilities(FINE, 260.0)) * 1e6)
    tight = q.sequential_quantile_guardrail(FINE, list(champion), list(challenger), margin=20.0)
    loose = q.sequential_quantile_guardrail(FINE, list(champion), list(challenger), margin=80.0)
    assert tight.breached
    assert not loose.breached
    assert tight.worse_by == pytest.approx(60.0, rel=0.05)
    assert tight.worse_by_lower_bound == pytest.approx(tight.challenger.lower - tight.champion.upper)


def test_a_bound_once_found_is_carried() -> None:
    champion = list(np.round(np.cumsum(bucket_probabilities(FINE, 200.0)) * 1e5))
    challenger = list(np.round(np.cumsum(bucket_probabilities(FINE, 300.0)) * 1e4))
    first = q.sequential_quantile_guardrail(FINE, champion, challenger, margin=0.1, relative=True)
    assert first.breached
    # the same counts scaled down (an impossible look, to isolate the carry): still breached
    fewer = [x / 100 for x in challenger]
    assert q.sequential_quantile_guardrail(
        FINE, champion, fewer, margin=0.1, relative=True, previous=first
    ).breached
    assert not q.sequential_quantile_guardrail(FINE, champion, fewer, margin=0.1, relative=True).breached


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: q.sequential_quantile_guardrail((10.0, 5.0), [1, 2, 3], [1, 2, 3]), "increase strictly"),
        (
            lambda: q.sequential_quantile_guardrail((5.0, 10.0), [1, 2], [1, 2, 3]),
            "one cumulative count per edge",
        ),
        (lambda: q.sequential_quantile_guardrail((5.0, 10.0), [3, 2, 4], [1, 2, 3]), "must not decrease"),
        (lambda: q.sequential_quantile_guardrail((5.0, 10.0), [1, 2, 3], [1, 2, 3], margin=-1), "margin"),
        (lambda: q.sequential_quantile_guardrail((5.0, 10.0), [1, 2, 3], [1, 2, 3], quantile=1.0), "q"),
        (lambda: q.sequential_quantile_guardrail((), [1], [1]), "at least one finite bucket edge"),
        (
            lambda: q.quantile_bounds((5.0,), [1, 2], 0.5, level=0.01, previous_below=[0.0, 0.0]),
            "previous_below",
        ),
        (lambda: q.binomial_mixture_log_e(5, 3, 0.5, greater=True), "below"),
    ],
)
def test_bad_input_is_named(call: object, message: str) -> None:
    assert callable(call)
    with pytest.raises(InvalidInputError, match=message):
        call()


def test_the_bench_vectorises_exactly_the_guardrail() -> None:
    """bench/quantiles.py judges many runs at once; its rule must be the function's, look by look."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "quantiles.py"
    spec = importlib.util.spec_from_file_location("bench_quantiles", path)
    assert spec is not None
    assert spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclasses look their module up
    spec.loader.exec_module(bench)
    streams = bench.simulate(250.0, 4, np.random.default_rng(3))
    vectorised = bench.ours(streams)
    for run in range(4):
        cc = np.cumsum(streams.champion[run], axis=0)
        ct = np.cumsum(streams.challenger[run], axis=0)
        previous = None
        at = math.inf
        for look in range(bench.LOOKS):
            previous = q.sequential_quantile_guardrail(
                bench.EDGES,
                list(np.cumsum(cc[look])),
                list(np.cumsum(ct[look])),
                margin=bench.MARGIN,
                relative=True,
                alpha=bench.ALPHA,
                previous=previous,
            )
            if previous.breached:
                at = float(bench.PER_LOOK * (look + 1))
                break
        assert vectorised[run] == at
    assert np.isfinite(vectorised).any()
