"""Tests of modelrollout.stats.means against scipy, statsmodels and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm, ttest_ind_from_stats
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW, ttest_ind

from modelrollout.errors import InvalidInputError
from modelrollout.stats.means import (
    summary_from_sums,
    welch_df,
    welch_ttest,
    welch_ttest_from_sums,
)
from modelrollout.stats.results import Verdict

pytestmark = pytest.mark.unit

# (n_c, mean_c, sd_c, n_t, mean_t, sd_t)
STATS = [
    (100, 10.0, 2.0, 100, 10.5, 2.0),
    (30, 5.0, 1.0, 80, 5.6, 3.5),
    (2, 0.0, 1.0, 2, 1.0, 0.5),
    (5000, 120.3, 40.1, 4870, 118.9, 55.2),
    (12, -3.0, 0.2, 9, -2.8, 0.9),
    (50, 1.0, 0.0, 60, 1.3, 0.4),
]


@pytest.mark.parametrize("row", STATS)
def test_welch_matches_scipy_ttest_ind_from_stats(row: tuple[float, ...]) -> None:
    n1, m1, s1, n2, m2, s2 = row
    res = welch_ttest(n1, m1, s1, n2, m2, s2)
    oracle = ttest_ind_from_stats(m2, s2, n2, m1, s1, n1, equal_var=False)
    assert res.statistic == pytest.approx(oracle.statistic, rel=1e-10)
    assert res.p_value == pytest.approx(oracle.pvalue, rel=1e-9)
    assert res.difference == pytest.approx(m2 - m1)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_welch_ci_and_df_match_statsmodels_on_raw_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    control = rng.normal(10.0, 2.0, size=int(rng.integers(5, 200)))
    treatment = rng.lognormal(2.3, 0.5, size=int(rng.integers(5, 200)))
    res = welch_ttest_from_sums(
        control.size,
        control.sum(),
        (control**2).sum(),
        treatment.size,
        treatment.sum(),
        (treatment**2).sum(),
        alpha=0.1,
    )
    # statsmodels: difference is d1 - d2, so the treatment goes first
    cm = CompareMeans(DescrStatsW(treatment), DescrStatsW(control))
    low, high = cm.tconfint_diff(alpha=0.1, usevar="unequal")
    assert res.ci.low == pytest.approx(low, rel=1e-8)
    assert res.ci.high == pytest.approx(high, rel=1e-8)
    t, p, df = ttest_ind(treatment, control, usevar="unequal")
    assert res.statistic == pytest.approx(t, rel=1e-8)
    assert res.p_value == pytest.approx(p, rel=1e-7)
    assert res.extra["df"] == pytest.approx(df, rel=1e-8)


def test_welch_df_closed_form() -> None:
    # v1/n1 = 0.04, v2/n2 = 0.1225; df = 0.1625^2 / (0.04^2/29 + 0.1225^2/79)
    expected = 0.1625**2 / (0.04**2 / 29 + 0.1225**2 / 79)
    assert welch_df(1.2, 30, 9.8, 80) == pytest.approx(expected)
    # one arm without variance: the other's n - 1
    assert welch_df(0.0, 30, 4.0, 80) == pytest.approx(79.0)
    assert math.isnan(welch_df(0.0, 30, 0.0, 80))


def test_relative_lift_delta_method_closed_form() -> None:
    n1, m1, s1, n2, m2, s2 = 400, 20.0, 6.0, 500, 21.0, 7.0
    res = welch_ttest(n1, m1, s1, n2, m2, s2, alpha=0.05)
    # Var(m2/m1) ~ (m2/m1)^2 (CV_2^2 + CV_1^2), with CV_i = se_i / m_i
    ratio = m2 / m1
    se = ratio * math.sqrt((s2 / math.sqrt(n2) / m2) ** 2 + (s1 / math.sqrt(n1) / m1) ** 2)
    z = norm.ppf(0.975)
    assert res.relative_lift == pytest.approx(0.05)
    assert res.relative_lift_ci.low == pytest.approx(ratio - 1 - z * se, rel=1e-10)
    assert res.relative_lift_ci.high == pytest.approx(ratio - 1 + z * se, rel=1e-10)


def test_relative_lift_is_nan_for_zero_control_mean() -> None:
    res = welch_ttest(10, 0.0, 1.0, 10, 1.0, 1.0)
    assert math.isnan(res.relative_lift)
    assert math.isnan(res.relative_lift_ci.low)


def test_clear_improvement_rolls_out() -> None:
    res = welch_ttest(1000, 10.0, 2.0, 1000, 10.5, 2.0)
    assert res.p_value < 1e-6
    assert res.decision("increase") == Verdict.ROLLOUT_CHALLENGER
    assert res.decision("decrease") == Verdict.KEEP_CHAMPION
    assert "Welch" in res.method
    assert "Welch (1947)" in res.reference


# --- from sums -------------------------------------------------------------------------------


def test_summary_from_sums_matches_numpy() -> None:
    x = np.random.default_rng(7).gamma(2.0, 3.0, size=321)
    s = summary_from_sums(x.size, x.sum(), (x**2).sum())
    assert s.n == 321
    assert s.mean == pytest.approx(x.mean(), rel=1e-12)
    assert s.sd == pytest.approx(x.std(ddof=1), rel=1e-9)


def test_tiny_negative_variance_from_rounding_is_zero() -> None:
    # 3 observations of 0.1: sum 0.3, sum of squares 0.03; floating point gives a variance a hair
    # below zero, which must be read as 0
    n, total = 3, 0.1 + 0.1 + 0.1
    sum_sq = total * total / n * (1 - 1e-13)
    s = summary_from_sums(n, total, sum_sq)
    assert s.sd == 0.0
    assert s.mean == pytest.approx(0.1)


def test_constant_arms_are_degenerate_but_defined() -> None:
    same = welch_ttest(10, 1.0, 0.0, 10, 1.0, 0.0)
    assert same.p_value == 1.0
    differ = welch_ttest(10, 1.0, 0.0, 10, 2.0, 0.0)
    assert differ.p_value == 0.0
    assert differ.statistic == math.inf
    assert differ.ci.low == differ.ci.high == 1.0


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((1, 1.0, 1.0, 10, 1.0, 1.0), "control n must be >= 2"),
        ((10, 1.0, -1.0, 10, 1.0, 1.0), "control sd must be >= 0"),
        ((10, 1.0, 1.0, 10, math.nan, 1.0), "treatment mean must be finite"),
        ((10, 1.0, 1.0, 10, 1.0, math.inf), "treatment sd must be finite"),
    ],
)
def test_welch_rejects_bad_input(args: tuple[float, ...], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        welch_ttest(*args)


def test_welch_rejects_bad_alpha() -> None:
    with pytest.raises(InvalidInputError, match="alpha"):
        welch_ttest(10, 1.0, 1.0, 10, 1.0, 1.0, alpha=0.0)


def test_from_sums_rejects_inconsistent_sums() -> None:
    # sum 10 over 4 observations needs a sum of squares >= 25
    with pytest.raises(InvalidInputError, match="control sums are inconsistent"):
        welch_ttest_from_sums(4, 10.0, 20.0, 4, 10.0, 30.0)
    with pytest.raises(InvalidInputError, match="treatment count must be >= 2"):
        welch_ttest_from_sums(4, 10.0, 30.0, 1, 10.0, 100.0)
    with pytest.raises(InvalidInputError, match="sum of squares must be >= 0"):
        summary_from_sums(4, 0.0, -1.0)
