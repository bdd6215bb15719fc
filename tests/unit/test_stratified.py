"""Tests of modelrollout.stats.stratified: hand computations, statsmodels combine_effects, Simpson."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.meta_analysis import combine_effects

from modelrollout.errors import InvalidInputError
from modelrollout.stats.results import Verdict
from modelrollout.stats.stratified import combine_fixed_effect, stratified_means, stratified_proportions

pytestmark = pytest.mark.unit


def test_combine_fixed_effect_by_hand() -> None:
    # d = (0.1, 0.2, 0.05), v = (0.01, 0.02, 0.015) -> w = (100, 50, 66.67), sum w = 216.67.
    res = combine_fixed_effect([0.1, 0.2, 0.05], [0.01, 0.02, 0.015])
    w = [100.0, 50.0, 200.0 / 3.0]
    est = (100 * 0.1 + 50 * 0.2 + w[2] * 0.05) / sum(w)
    se = 1 / math.sqrt(sum(w))
    assert res.estimate == pytest.approx(est, rel=1e-14)
    assert res.se == pytest.approx(se, rel=1e-14)
    assert res.statistic == pytest.approx(est / se)
    assert res.p_value == pytest.approx(2 * stats.norm.sf(est / se), rel=1e-12)
    assert res.ci.low == pytest.approx(est - stats.norm.ppf(0.975) * se)
    assert res.weights == pytest.approx([x / sum(w) for x in w])
    q = sum(wk * (dk - est) ** 2 for wk, dk in zip(w, [0.1, 0.2, 0.05], strict=True))
    assert res.heterogeneity_q == pytest.approx(q)
    assert res.heterogeneity_p_value == pytest.approx(stats.chi2.sf(q, 2))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_combine_fixed_effect_matches_statsmodels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 9))
    eff = rng.normal(0.01, 0.02, k)
    var = rng.uniform(1e-5, 1e-3, k)
    res = combine_fixed_effect(list(eff), list(var), alpha=0.1)
    oracle = combine_effects(eff, var, use_t=False, alpha=0.1)
    ci_fe = oracle.conf_int(alpha=0.1, use_t=False)[0]  # (fixed, random, fixed wls, random wls)
    assert res.estimate == pytest.approx(oracle.mean_effect_fe, rel=1e-12)
    assert res.se == pytest.approx(oracle.sd_eff_w_fe, rel=1e-12)
    assert res.ci.low == pytest.approx(ci_fe[0], rel=1e-10)
    assert res.ci.high == pytest.approx(ci_fe[1], rel=1e-10)
    assert res.weights == pytest.approx(list(oracle.weights_rel_fe), rel=1e-12)
    assert res.heterogeneity_q == pytest.approx(oracle.q, rel=1e-10)


def test_stratified_proportions_by_hand_and_against_statsmodels() -> None:
    sc, nc, st, nt = [120, 300], [1000, 2500], [60, 330], [400, 2500]
    res = stratified_proportions(sc, nc, st, nt)
    d = [st[i] / nt[i] - sc[i] / nc[i] for i in range(2)]
    v = [
        (st[i] / nt[i]) * (1 - st[i] / nt[i]) / nt[i] + (sc[i] / nc[i]) * (1 - sc[i] / nc[i]) / nc[i]
        for i in range(2)
    ]
    assert res.stratum_estimates == pytest.approx(d)
    assert res.stratum_variances == pytest.approx(v)
    oracle = combine_effects(np.array(d), np.array(v), use_t=False)
    assert res.estimate == pytest.approx(oracle.mean_effect_fe, rel=1e-12)
    assert res.se == pytest.approx(oracle.sd_eff_w_fe, rel=1e-12)
    assert res.pooled_difference == pytest.approx(390 / 2900 - 420 / 3500)


def test_simpsons_paradox_gets_the_right_sign_when_stratified() -> None:
    # Step 1 (10 % to the challenger) runs while the base rate is 20 %; step 2 (50 %) while it is
    # 5 %. The challenger is +1 point better in both steps, but most of its traffic is in the
    # low-rate step, so the pooled difference is strongly negative.
    control_s, control_n = [1800, 250], [9000, 5000]  # 20 %, 5 %
    treat_s, treat_n = [210, 300], [1000, 5000]  # 21 %, 6 %
    res = stratified_proportions(control_s, control_n, treat_s, treat_n)
    assert res.pooled_difference == pytest.approx(510 / 6000 - 2050 / 14000)
    assert res.pooled_difference < -0.05  # pooled: the challenger looks 6 points worse
    assert res.stratum_estimates == pytest.approx([0.01, 0.01])
    assert res.estimate == pytest.approx(0.01, abs=1e-12)  # same difference in each stratum
    assert res.estimate > 0
    assert res.significant
    assert res.decision() is Verdict.ROLLOUT_CHALLENGER
    assert res.decision("decrease") is Verdict.KEEP_CHAMPION


def test_stratified_means_by_hand_and_pooled() -> None:
    n_c, m_c, s_c = [500, 800], [10.0, 20.0], [2.0, 3.0]
    n_t, m_t, s_t = [100, 900], [10.5, 20.4], [2.5, 3.1]
    res = stratified_means(n_c, m_c, s_c, n_t, m_t, s_t)
    v = [s_t[i] ** 2 / n_t[i] + s_c[i] ** 2 / n_c[i] for i in range(2)]
    d = [0.5, 0.4]
    oracle = combine_effects(np.array(d), np.array(v), use_t=False)
    assert res.estimate == pytest.approx(oracle.mean_effect_fe, rel=1e-12)
    assert res.se == pytest.approx(oracle.sd_eff_w_fe, rel=1e-12)
    pooled_c = (500 * 10 + 800 * 20) / 1300
    pooled_t = (100 * 10.5 + 900 * 20.4) / 1000
    assert res.pooled_difference == pytest.approx(pooled_t - pooled_c)


def test_skipping_rule() -> None:
    # Stratum 0: no challenger trials (empty). Stratum 2: both arms at 0 % (zero variance).
    res = stratified_proportions([10, 100, 0], [100, 1000, 50], [0, 130, 0], [0, 1000, 60])
    assert res.used == (1,)
    assert res.skipped == (0, 2)
    assert res.weights == (0.0, 1.0, 0.0)
    assert math.isnan(res.stratum_estimates[0])
    assert math.isnan(res.stratum_estimates[2])
    assert res.estimate == pytest.approx(0.03)
    assert math.isnan(res.heterogeneity_q)  # one stratum: no heterogeneity test
    # Means: n < 2 in an arm, or both sd 0.
    m = stratified_means(
        [1, 50, 30], [1.0, 2.0, 3.0], [0.0, 1.0, 0.0], [5, 60, 30], [1.0, 2.5, 3.0], [1.0, 1.0, 0.0]
    )
    assert m.used == (1,)
    assert m.skipped == (0, 2)
    # A zero variance in the generic combiner is skipped too.
    assert combine_fixed_effect([1.0, 2.0], [0.0, 0.5]).estimate == pytest.approx(2.0)
    with pytest.raises(InvalidInputError, match="no stratum can be combined"):
        stratified_proportions([0, 5], [10, 5], [0, 3], [0, 3])


def test_invalid_inputs() -> None:
    with pytest.raises(InvalidInputError, match="same length"):
        stratified_proportions([1, 2], [10, 20], [1], [10])
    with pytest.raises(InvalidInputError, match=r"treatment_successes\[1\]"):
        stratified_proportions([1, 2], [10, 20], [1, 30], [10, 20])
    with pytest.raises(InvalidInputError, match=r"control_trials\[0\]"):
        stratified_proportions([1], [-10], [1], [10])
    with pytest.raises(InvalidInputError, match=r"control_sd\[0\]"):
        stratified_means([10], [1.0], [-1.0], [10], [1.0], [1.0])
    with pytest.raises(InvalidInputError, match="at least one stratum"):
        stratified_means([], [], [], [], [], [])
    with pytest.raises(InvalidInputError, match=r"variances\[1\]"):
        combine_fixed_effect([1.0, 2.0], [0.1, math.inf])
    with pytest.raises(InvalidInputError, match="alpha"):
        combine_fixed_effect([1.0], [0.1], alpha=1.0)
    with pytest.raises(InvalidInputError, match="direction"):
        combine_fixed_effect([1.0], [0.1]).decision("up")
