"""Tests of modelrollout.stats.srm: oracles, brute-force marginal likelihoods, Monte Carlo."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import integrate, stats

from modelrollout.errors import InvalidInputError
from modelrollout.stats.srm import (
    DEFAULT_PRIOR_SCALE,
    srm_chi_square,
    srm_log_bayes_factor,
    srm_sequential,
    srm_sequential_stratified,
)

pytestmark = pytest.mark.unit


# --- chi-square: oracle scipy.stats.chisquare ---------------------------------------------------


@pytest.mark.parametrize(
    ("observed", "expected"),
    [
        ([5010, 4990], [0.5, 0.5]),
        ([821, 1179], [0.4, 0.6]),
        ([9000, 500, 530], [0.9, 0.05, 0.05]),
        ([0, 10], [0.5, 0.5]),
        ([1234.5, 98.25, 77.0, 3.0], [0.85, 0.07, 0.05, 0.03]),
    ],
)
def test_chi_square_matches_scipy(observed: list[float], expected: list[float]) -> None:
    res = srm_chi_square(observed, expected)
    total = sum(observed)
    oracle = stats.chisquare(observed, f_exp=[total * w for w in expected])
    assert res.statistic == pytest.approx(float(oracle.statistic), rel=1e-12)
    assert res.p_value == pytest.approx(float(oracle.pvalue), rel=1e-9, abs=1e-300)
    assert res.dof == len(observed) - 1
    assert res.observed_shares == pytest.approx([o / total for o in observed])
    assert res.expected_shares == pytest.approx(expected)


def test_chi_square_mismatch_flag_uses_threshold() -> None:
    res = srm_chi_square([5150, 4850], [0.5, 0.5])  # X^2 = 9, p ~ 0.0027
    assert 0.001 < res.p_value < 0.01
    assert not res.mismatch
    assert srm_chi_square([5150, 4850], [0.5, 0.5], threshold=0.01).mismatch
    assert res.to_dict()["mismatch"] is False
    assert "Pearson" in res.reference


# --- the Dirichlet-multinomial Bayes factor: brute force ----------------------------------------


def test_log_bf_two_variants_matches_numerical_integration() -> None:
    # BF * prod w_i^x_i is the marginal likelihood of the sequence under the Beta prior:
    # integral of theta^x1 (1 - theta)^x2 Beta(theta; a1, a2) dtheta.
    w = [0.3, 0.7]
    scale = 4.0
    a1, a2 = scale * w[0], scale * w[1]
    for x1, x2 in [(0, 0), (3, 2), (1, 9), (7, 0)]:
        integral, _ = integrate.quad(
            lambda t, x1=x1, x2=x2: t**x1 * (1 - t) ** x2 * stats.beta.pdf(t, a1, a2),
            0,
            1,
            epsabs=1e-14,
            epsrel=1e-12,
        )
        expected_log_bf = math.log(integral) - (x1 * math.log(w[0]) + x2 * math.log(w[1]))
        got = float(srm_log_bayes_factor([x1, x2], w, prior_scale=scale))
        assert got == pytest.approx(expected_log_bf, rel=1e-8, abs=1e-10)


def test_log_bf_three_variants_matches_integral_over_simplex() -> None:
    w = np.array([0.5, 0.3, 0.2])
    scale = 6.0
    a = scale * w
    x = np.array([2.0, 1.0, 3.0])
    dirichlet = stats.dirichlet(a)

    def integrand(t2: float, t1: float) -> float:
        t = np.array([t1, t2, 1.0 - t1 - t2])
        if t[2] <= 0:
            return 0.0
        return float(np.prod(t**x) * dirichlet.pdf(t))

    marginal, _ = integrate.dblquad(integrand, 0, 1, 0, lambda t1: 1 - t1, epsabs=1e-13)
    expected_log_bf = math.log(marginal) - float(np.sum(x * np.log(w)))
    got = float(srm_log_bayes_factor(x, [0.5, 0.3, 0.2], prior_scale=scale))
    assert got == pytest.approx(expected_log_bf, rel=1e-6)


def test_bf_has_expectation_one_under_null_by_exhaustive_summation() -> None:
    # Summing BF over every count vector of n trials, weighted by its multinomial probability
    # under the null, gives exactly 1 (E[BF_n] = BF_0 = 1): the e-value property.
    w = [0.6, 0.25, 0.15]
    n = 7
    total = 0.0
    for x1 in range(n + 1):
        for x2 in range(n + 1 - x1):
            x = [x1, x2, n - x1 - x2]
            pmf = stats.multinomial.pmf(x, n, w)
            total += pmf * math.exp(float(srm_log_bayes_factor(x, w, prior_scale=3.0)))
    assert total == pytest.approx(1.0, abs=1e-12)


def test_bf_is_a_martingale_one_trial_at_a_time() -> None:
    # E[BF(x + e_I) | x] = sum_i w_i BF(x + e_i) = BF(x) under the null.
    w = [0.1, 0.2, 0.7]
    for x in itertools.product([0, 3, 40], repeat=3):
        now = math.exp(float(srm_log_bayes_factor(list(x), w)))
        nxt = sum(
            w[i] * math.exp(float(srm_log_bayes_factor([x[j] + (j == i) for j in range(3)], w)))
            for i in range(3)
        )
        assert nxt == pytest.approx(now, rel=1e-10)


def test_log_bf_is_vectorised_and_stable_for_large_counts() -> None:
    w = [0.5, 0.5]
    grid = np.array([[[0, 0], [10, 10]], [[5e8, 5e8], [5.1e8, 4.9e8]]])
    out = srm_log_bayes_factor(grid, w)
    assert out.shape == (2, 2)
    assert out[0, 0] == 0.0
    assert np.all(np.isfinite(out))
    assert out[1, 0] < 0  # a perfect split is evidence for the null
    assert out[1, 1] > 1e5  # a 51/49 split on 1e9 trials is overwhelming evidence of SRM


# --- srm_sequential ----------------------------------------------------------------------------


def test_sequential_agrees_with_core_and_carries_running_max() -> None:
    w = [0.5, 0.5]
    first = srm_sequential([620, 380], w)
    assert first.log_e_value == pytest.approx(float(srm_log_bayes_factor([620, 380], w)))
    assert first.max_log_e_value == first.log_e_value
    assert first.p_value == pytest.approx(math.exp(-first.log_e_value))
    assert first.mismatch  # 62/38 on 1000 trials
    # The split recovers later, the current BF falls, but the always-valid p keeps the maximum.
    later = srm_sequential([5120, 4880], w, previous_max_log_e_value=first.max_log_e_value)
    assert later.log_e_value < first.log_e_value
    assert later.max_log_e_value == first.max_log_e_value
    assert later.p_value == first.p_value
    assert later.prior_scale == DEFAULT_PRIOR_SCALE


def test_sequential_with_no_trials_is_neutral() -> None:
    res = srm_sequential([0, 0, 0], [0.2, 0.3, 0.5])
    assert res.log_e_value == 0.0
    assert res.p_value == 1.0
    assert not res.mismatch
    assert all(math.isnan(s) for s in res.observed_shares)


def test_sequential_p_is_capped_at_one_and_negative_previous_is_ignored() -> None:
    res = srm_sequential([500, 500], [0.5, 0.5], previous_max_log_e_value=-3.0)
    assert res.log_e_value < 0
    assert res.max_log_e_value == 0.0
    assert res.p_value == 1.0


# --- stratified by period ------------------------------------------------------------------------


def test_stratified_is_product_of_period_bayes_factors() -> None:
    observed = [[905, 95], [2260, 740], [2490, 2510]]
    expected = [[0.9, 0.1], [0.75, 0.25], [0.5, 0.5]]
    res = srm_sequential_stratified(observed, expected)
    parts = [float(srm_log_bayes_factor(o, e)) for o, e in zip(observed, expected, strict=True)]
    assert res.log_e_value == pytest.approx(sum(parts))
    assert [s.log_e_value for s in res.per_stratum] == pytest.approx(parts)
    assert res.p_value == pytest.approx(min(1.0, math.exp(-sum(parts))))
    # pooled shares: expected share of variant 0 = sum_k n_k w_k0 / sum_k n_k
    assert res.expected_shares[0] == pytest.approx((1000 * 0.9 + 3000 * 0.75 + 5000 * 0.5) / 9000)
    assert res.observed_shares[0] == pytest.approx((905 + 2260 + 2490) / 9000)
    assert not res.mismatch
    assert res.to_dict()["per_stratum"][0]["observed"] == (905.0, 95.0)


def test_stratified_detects_a_mismatch_in_one_period_and_keeps_it() -> None:
    observed = [[900, 100], [2100, 900]]  # second period: 70/30 instead of 75/25
    expected = [[0.9, 0.1], [0.75, 0.25]]
    res = srm_sequential_stratified(observed, expected)
    assert res.mismatch
    nxt = srm_sequential_stratified(
        [*observed, [10, 10]], [*expected, [0.5, 0.5]], previous_max_log_e_value=res.max_log_e_value
    )
    assert nxt.max_log_e_value >= res.max_log_e_value
    assert nxt.mismatch


# --- validation ---------------------------------------------------------------------------------


def test_invalid_inputs_raise_naming_the_value() -> None:
    with pytest.raises(InvalidInputError, match=r"observed\[1\]"):
        srm_chi_square([10, -1], [0.5, 0.5])
    with pytest.raises(InvalidInputError, match="sum to 1"):
        srm_chi_square([10, 10], [0.5, 0.6])
    with pytest.raises(InvalidInputError, match="same length"):
        srm_sequential([10, 10, 10], [0.5, 0.5])
    with pytest.raises(InvalidInputError, match="at least one trial"):
        srm_chi_square([0, 0], [0.5, 0.5])
    with pytest.raises(InvalidInputError, match="threshold"):
        srm_sequential([1, 1], [0.5, 0.5], threshold=1.5)
    with pytest.raises(InvalidInputError, match="prior_scale"):
        srm_sequential([1, 1], [0.5, 0.5], prior_scale=0)
    with pytest.raises(InvalidInputError, match="previous_max_log_e_value"):
        srm_sequential([1, 1], [0.5, 0.5], previous_max_log_e_value=math.nan)
    with pytest.raises(InvalidInputError, match="same 2 variants"):
        srm_sequential_stratified([[1, 1], [1, 1, 1]], [[0.5, 0.5], [0.2, 0.3, 0.5]])
    with pytest.raises(InvalidInputError, match="one entry per period"):
        srm_sequential_stratified([[1, 1]], [[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(InvalidInputError, match="last axis"):
        srm_log_bayes_factor(np.zeros((4, 3)), [0.5, 0.5])
    with pytest.raises(InvalidInputError, match=">= 0"):
        srm_log_bayes_factor([[1, 2], [3, -4]], [0.5, 0.5])


# --- Monte Carlo: false alarms under continuous monitoring and power ----------------------------

_TICKS = 200


def _monitor_false_alarm_rate(
    rng: np.random.Generator, weights: list[float], runs: int, per_tick: int, alpha: float
) -> float:
    # Cumulative counts at each of 200 ticks, checked at every tick: an alarm whenever the running
    # max of the BF reaches 1/alpha (i.e. the always-valid p <= alpha).
    increments = rng.multinomial(per_tick, weights, size=(runs, _TICKS))
    log_bf = srm_log_bayes_factor(np.cumsum(increments, axis=1), weights)
    return float(np.mean(np.any(log_bf >= math.log(1 / alpha), axis=1)))


def test_mc_false_alarm_rate_under_continuous_monitoring() -> None:
    # 2000 runs x 200 looks each. Ville's inequality bounds the alarm rate by alpha = 0.05; the MC
    # standard error at 0.05 is sqrt(0.05 * 0.95 / 2000) = 0.0049, so allow alpha + 3 SE = 0.0646.
    # (For comparison, a chi-square test at 0.05 repeated 200 times alarms in roughly 40 % of runs.)
    rng = np.random.default_rng(20240611)
    alpha, runs = 0.05, 2000
    tol = 3 * math.sqrt(alpha * (1 - alpha) / runs)
    rate_even = _monitor_false_alarm_rate(rng, [0.5, 0.5], runs, 50, alpha)
    rate_uneven = _monitor_false_alarm_rate(rng, [0.8, 0.1, 0.1], runs, 50, alpha)
    assert rate_even <= alpha + tol
    assert rate_uneven <= alpha + tol


def test_mc_repeated_chi_square_would_inflate_false_alarms() -> None:
    # The reason for the sequential test: the fixed-horizon p-value checked at every tick.
    rng = np.random.default_rng(7)
    runs = 400
    inc = rng.binomial(50, 0.5, size=(runs, _TICKS))
    a = np.cumsum(inc, axis=1)
    n = 50 * np.arange(1, _TICKS + 1)
    chi2 = (2 * a - n) ** 2 / n  # X^2 for a 50/50 split
    rate = float(np.mean(np.any(stats.chi2.sf(chi2, 1) < 0.05, axis=1)))
    assert rate > 0.2


def test_mc_stratified_false_alarm_rate_with_changing_weights() -> None:
    # Three rollout steps (10/90, 25/75, 50/50), 70 ticks each, the product e-process checked at
    # every tick. Same bound and tolerance as above (2000 runs, alpha 0.05, +3 SE).
    rng = np.random.default_rng(99)
    alpha, runs, per_tick, ticks = 0.05, 2000, 50, 70
    tol = 3 * math.sqrt(alpha * (1 - alpha) / runs)
    carried = np.zeros(runs)
    alarm = np.zeros(runs, dtype=bool)
    for w in ([0.1, 0.9], [0.25, 0.75], [0.5, 0.5]):
        cum = np.cumsum(rng.multinomial(per_tick, w, size=(runs, ticks)), axis=1)
        log_bf = srm_log_bayes_factor(cum, w)
        alarm |= np.any(carried[:, None] + log_bf >= math.log(1 / alpha), axis=1)
        carried += log_bf[:, -1]
    assert float(alarm.mean()) <= alpha + tol
    # The same run through the public function agrees with the vectorised sum for one replicate.
    one = srm_sequential_stratified([[5, 45], [12, 38]], [[0.1, 0.9], [0.25, 0.75]])
    assert one.log_e_value == pytest.approx(
        float(srm_log_bayes_factor([5, 45], [0.1, 0.9]) + srm_log_bayes_factor([12, 38], [0.25, 0.75]))
    )


def test_mc_detects_a_52_48_split_when_50_50_was_set() -> None:
    # 200 runs, 500 trials per tick, threshold p < 0.001. Observed with this seed: median
    # detection ~11k trials, 90th percentile ~19k. Assert the median is under 20k trials and that
    # at least 95 % of runs are detected by 40k trials (a fixed chi-square with 90 % power at
    # 0.001 needs ~13k).
    rng = np.random.default_rng(5248)
    runs, per_tick = 200, 500
    inc = rng.binomial(per_tick, 0.52, size=(runs, _TICKS))
    cum = np.stack([np.cumsum(inc, axis=1), np.cumsum(per_tick - inc, axis=1)], axis=-1)
    hit = srm_log_bayes_factor(cum, [0.5, 0.5]) >= math.log(1000)
    first_n = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, _TICKS + 1) * per_tick
    assert float(np.median(first_n)) < 20_000
    assert float(np.mean(first_n <= 40_000)) >= 0.95
    # And the public function flags it on one such run at 40k trials.
    assert srm_sequential([20_800, 19_200], [0.5, 0.5]).mismatch
