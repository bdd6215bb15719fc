"""Tests of modelrollout.stats.proportions against scipy and statsmodels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import chi2_contingency
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from modelrollout.errors import InvalidInputError
from modelrollout.stats.proportions import (
    chi2_proportions,
    practically_significant,
    relative_lift_ci,
    ztest_proportions,
)
from modelrollout.stats.results import ComparisonResult, Interval, Verdict

pytestmark = pytest.mark.unit

SEED = (180, 1800, 210, 1800)

# control successes, control trials, treatment successes, treatment trials
TABLES = [
    SEED,
    (50, 1000, 75, 1000),
    (9, 40, 3, 35),
    (1234, 20000, 1301, 19876),
    (500, 600, 480, 610),
    (1, 10, 7, 12),
]
rng = np.random.default_rng(20240611)
for _ in range(6):
    n1, n2 = (int(x) for x in rng.integers(20, 5000, size=2))
    TABLES.append((int(rng.integers(1, n1)), n1, int(rng.integers(1, n2)), n2))


# --- seed ---------------------------------------------------------------------------------------


def test_seed_180_vs_210_of_1800_is_not_significant() -> None:
    z = ztest_proportions(*SEED)
    chi = chi2_proportions(*SEED, correction=True)
    assert z.p_value == pytest.approx(0.108, abs=5e-4)
    assert chi.p_value == pytest.approx(0.120, abs=5e-4)
    assert not z.significant
    assert not chi.significant
    assert z.decision() == Verdict.INCONCLUSIVE
    assert z.control_estimate == pytest.approx(0.10)
    assert z.treatment_estimate == pytest.approx(210 / 1800)
    assert z.ci.contains(0.0)
    assert z.relative_lift == pytest.approx(1 / 6)
    assert z.method.startswith("two-proportion z-test (pooled")
    assert "Agresti" in z.reference


# --- oracles --------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", TABLES)
def test_ztest_matches_statsmodels(table: tuple[int, int, int, int]) -> None:
    x1, n1, x2, n2 = table
    res = ztest_proportions(x1, n1, x2, n2, alpha=0.05)
    z, p = proportions_ztest([x2, x1], [n2, n1], value=0, alternative="two-sided")
    assert res.statistic == pytest.approx(z, rel=1e-10)
    assert res.p_value == pytest.approx(p, rel=1e-9)
    # statsmodels' difference is sample 1 - sample 2, so the treatment goes first
    low, high = confint_proportions_2indep(x2, n2, x1, n1, method="wald", compare="diff", alpha=0.05)
    assert res.ci.low == pytest.approx(low, rel=1e-10)
    assert res.ci.high == pytest.approx(high, rel=1e-10)


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("correction", [True, False])
def test_chi2_matches_scipy(table: tuple[int, int, int, int], correction: bool) -> None:
    x1, n1, x2, n2 = table
    res = chi2_proportions(x1, n1, x2, n2, correction=correction)
    oracle = chi2_contingency([[x1, n1 - x1], [x2, n2 - x2]], correction=correction)
    assert res.statistic == pytest.approx(oracle.statistic, rel=1e-10)
    assert res.p_value == pytest.approx(oracle.pvalue, rel=1e-9)
    assert ("Yates" in res.method) is correction


@pytest.mark.parametrize("table", TABLES)
def test_relative_lift_ci_matches_statsmodels_log_ratio(table: tuple[int, int, int, int]) -> None:
    x1, n1, x2, n2 = table
    lift, ci = relative_lift_ci(x1, n1, x2, n2, alpha=0.10)
    low, high = confint_proportions_2indep(x2, n2, x1, n1, method="log", compare="ratio", alpha=0.10)
    assert lift == pytest.approx((x2 / n2) / (x1 / n1) - 1)
    assert ci.low == pytest.approx(low - 1, rel=1e-10, abs=1e-12)
    assert ci.high == pytest.approx(high - 1, rel=1e-10, abs=1e-12)
    assert ztest_proportions(x1, n1, x2, n2, alpha=0.10).relative_lift_ci == ci


def test_uncorrected_chi2_is_z_squared() -> None:
    for table in TABLES:
        z = ztest_proportions(*table)
        chi = chi2_proportions(*table, correction=False)
        assert chi.statistic == pytest.approx(z.statistic**2, rel=1e-10)
        assert chi.p_value == pytest.approx(z.p_value, rel=1e-9)


def test_significant_difference_is_detected() -> None:
    res = ztest_proportions(1000, 10000, 1150, 10000)
    assert res.p_value < 0.001
    assert res.decision("increase") == Verdict.ROLLOUT_CHALLENGER
    assert res.decision("decrease") == Verdict.KEEP_CHAMPION
    assert res.ci.low > 0


# --- edge cases -------------------------------------------------------------------------------


def test_no_successes_anywhere_gives_p_one() -> None:
    res = ztest_proportions(0, 100, 0, 120)
    chi = chi2_proportions(0, 100, 0, 120)
    assert res.p_value == 1.0
    assert chi.p_value == 1.0
    assert res.ci == Interval(0.0, 0.0)
    assert math.isnan(res.relative_lift)
    assert res.relative_lift_ci == Interval(-1.0, math.inf)


def test_zero_treatment_successes_lift_is_minus_one_with_open_interval() -> None:
    lift, ci = relative_lift_ci(10, 100, 0, 100)
    assert lift == -1.0
    assert ci == Interval(-1.0, math.inf)


# --- practical significance -------------------------------------------------------------------


def _result(ci: tuple[float, float], lift_ci: tuple[float, float]) -> ComparisonResult:
    return ComparisonResult(
        method="test",
        reference="test",
        control_estimate=0.1,
        treatment_estimate=0.12,
        difference=0.02,
        ci=Interval(*ci),
        relative_lift=0.2,
        relative_lift_ci=Interval(*lift_ci),
        p_value=0.001,
        alpha=0.05,
    )


def test_practical_significance_absolute_and_relative() -> None:
    res = _result((0.012, 0.028), (0.08, 0.33))
    assert practically_significant(res, 0.01)
    assert not practically_significant(res, 0.015)
    assert practically_significant(res, 0.05, relative=True)
    assert not practically_significant(res, 0.10, relative=True)
    assert not practically_significant(res, 0.0, direction="decrease")
    worse = _result((-0.03, -0.011), (-0.3, -0.1))
    assert practically_significant(worse, 0.01, direction="decrease")
    assert not practically_significant(worse, 0.02, direction="decrease")


def test_practical_significance_on_a_real_result() -> None:
    res = ztest_proportions(1000, 10000, 1200, 10000)  # lift 20 %, CI about [11 %, 30 %]
    assert practically_significant(res, 0.05, relative=True)
    assert not practically_significant(res, 0.15, relative=True)
    assert not practically_significant(ztest_proportions(*SEED), 0.0)


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((11, 10, 5, 10), {}, "control successes \\(11\\) must be <= trials"),
        ((1, 10, -1, 10), {}, "treatment successes must be >= 0"),
        ((1, 0, 1, 10), {}, "control trials must be > 0"),
        ((1, 10, 1, math.inf), {}, "treatment trials must be finite"),
        ((1, 10, 1, 10), {"alpha": 1.0}, "alpha"),
        ((1, 10, 1, 10), {"alpha": -0.1}, "alpha"),
    ],
)
@pytest.mark.parametrize("fn", [ztest_proportions, chi2_proportions, relative_lift_ci])
def test_rejects_bad_input(
    fn: object, args: tuple[float, ...], kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        fn(*args, **kwargs)  # type: ignore[operator]


def test_practical_significance_rejects_bad_input() -> None:
    res = ztest_proportions(*SEED)
    with pytest.raises(InvalidInputError, match="threshold must be >= 0"):
        practically_significant(res, -0.01)
    with pytest.raises(InvalidInputError, match="direction"):
        practically_significant(res, 0.01, direction="up")  # type: ignore[arg-type]
