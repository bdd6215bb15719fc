"""The least favourable SRM e-value (stats.robust_srm): exact against a brute-force oracle, never above
the plain Bayes factor, and valid by Monte Carlo when counts are contaminated within the bounds."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelrollout.errors import InvalidInputError
from modelrollout.stats.robust_srm import MIXTURE_SCALES, mixture_log_bayes_factor, robust_log_bayes_factor
from modelrollout.stats.srm import srm_log_bayes_factor

pytestmark = pytest.mark.unit


def test_without_slack_it_is_the_plain_bayes_factor() -> None:
    counts, shares = [530.0, 470.0], [0.5, 0.5]
    plain = float(srm_log_bayes_factor(counts, shares))
    one = (100.0,)
    assert robust_log_bayes_factor(counts, shares, prior_scales=one) == pytest.approx(plain, abs=1e-9)
    assert robust_log_bayes_factor(counts, shares, [0.0, 0.0], excess=[0.0, 0.0], prior_scales=one) == (
        pytest.approx(plain, abs=1e-9))
    assert robust_log_bayes_factor(counts, shares) == pytest.approx(mixture_log_bayes_factor(counts, shares))


def test_the_mixture_is_the_mean_of_its_components() -> None:
    counts, shares = [50_400.0, 49_600.0], [0.5, 0.5]
    bfs = [math.exp(float(srm_log_bayes_factor(counts, shares, prior_scale=s))) for s in MIXTURE_SCALES]
    assert mixture_log_bayes_factor(counts, shares) == pytest.approx(math.log(sum(bfs) / len(bfs)), rel=1e-9)


@pytest.mark.parametrize(
    ("counts", "shares", "deficit", "excess"),
    [
        ([600.0, 400.0], [0.5, 0.5], [30.0, 0.0], [0.0, 30.0]),
        ([9100.0, 900.0], [0.9, 0.1], [50.0, 50.0], [50.0, 50.0]),
        ([120.0, 10.0], [0.75, 0.25], [5.0, 20.0], [0.0, 0.0]),
        ([300.0, 280.0, 420.0], [0.3, 0.3, 0.4], [25.0, 10.0, 0.0], [0.0, 10.0, 30.0]),
    ],
)
def test_it_is_the_minimum_over_the_box_found_by_brute_force(
    counts: list[float], shares: list[float], deficit: list[float], excess: list[float]
) -> None:
    grids = [np.linspace(max(0.0, x - e), x + d, 61) for x, d, e in zip(counts, deficit, excess, strict=True)]
    brute = min(mixture_log_bayes_factor(list(y), shares) for y in itertools.product(*grids))
    found = robust_log_bayes_factor(counts, shares, deficit, excess=excess)
    assert found <= brute + 1e-9  # the optimiser is at least as low as any grid point
    assert found >= brute - 0.05  # and close to the grid's minimum (the grid is coarse)


@settings(max_examples=60, deadline=None)
@given(
    x=st.lists(st.floats(0, 5000), min_size=2, max_size=4),
    slack=st.floats(0, 200),
    data=st.data(),
)
def test_it_is_never_above_the_plain_bayes_factor(x: list[float], slack: float, data: st.DataObject) -> None:
    raw = data.draw(st.lists(st.floats(0.05, 1.0), min_size=len(x), max_size=len(x)))
    shares = [r / sum(raw) for r in raw]
    plain = mixture_log_bayes_factor(x, shares)
    robust = robust_log_bayes_factor(x, shares, [slack] * len(x), excess=[slack] * len(x))
    assert robust <= plain + 1e-9


def test_bad_slack_is_rejected() -> None:
    with pytest.raises(InvalidInputError, match="deficit"):
        robust_log_bayes_factor([10.0, 10.0], [0.5, 0.5], [-1.0, 0.0])
    with pytest.raises(InvalidInputError, match="one entry per variant"):
        robust_log_bayes_factor([10.0, 10.0], [0.5, 0.5], [1.0])


@pytest.mark.slow
def test_false_alarms_stay_below_alpha_when_counts_are_contaminated_within_the_bounds() -> None:
    """Monte Carlo, seed 1: an A/A split 90/10, looked at every 200 requests up to 6,000, whose
    challenger's count is always short by the most the slack allows (a bias of 40 requests, which a
    plain test reads as a mismatch). alpha = 0.05; 500 runs; bound alpha + 3 standard errors."""
    rng = np.random.default_rng(1)
    alpha, runs, looks, slack = 0.05, 500, 30, 40.0
    robust_alarms = plain_alarms = 0
    for _ in range(runs):
        y = np.zeros(2)
        robust_max = plain_max = 0.0
        for _ in range(looks):
            y += rng.multinomial(200, [0.9, 0.1])
            x = [y[0], max(0.0, y[1] - slack)]  # the worst admissible measurement error
            robust_max = max(robust_max, robust_log_bayes_factor(x, [0.9, 0.1], [0.0, slack]))
            plain_max = max(plain_max, mixture_log_bayes_factor(x, [0.9, 0.1]))
        robust_alarms += robust_max >= -math.log(alpha)
        plain_alarms += plain_max >= -math.log(alpha)
    bound = alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)
    assert robust_alarms / runs <= bound
    assert plain_alarms / runs > 0.5  # the control: the same counts fool the plain test


@pytest.mark.slow
def test_a_mismatch_larger_than_the_slack_is_still_found() -> None:
    """Seed 2: the challenger loses 10 % of its requests (90/10 split), slack 40 requests: found in
    every one of 200 runs by 100,000 requests, at the threshold 0.001."""
    rng = np.random.default_rng(2)
    found = 0
    for _ in range(200):
        y = np.zeros(2)
        for _ in range(100):
            y += rng.multinomial(1000, [0.9 / 0.99, 0.09 / 0.99])
            log_e = robust_log_bayes_factor(list(y), [0.9, 0.1], [40.0, 40.0], excess=[40.0, 40.0])
            if log_e >= math.log(1000):
                found += 1
                break
    assert found == 200
