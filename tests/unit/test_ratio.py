"""Tests of modelrollout.stats.ratio: direct numpy oracles on raw units and Monte Carlo coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from modelrollout.errors import InvalidInputError
from modelrollout.stats.ratio import RatioSums, ratio_estimate, ratio_test

pytestmark = pytest.mark.unit


def _units(rng: np.random.Generator, n: int, ctr: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-user sessions X >= 1 and clicks Y, with a per-user click rate (clustered data)."""
    sessions = 1 + rng.poisson(3.0, size=n)
    rate = rng.beta(0.5, 0.5 * (1 - ctr) / ctr, size=n)  # mean ctr, varies a lot between users
    clicks = rng.binomial(sessions, rate)
    return clicks.astype(float), sessions.astype(float)


# --- oracle: delta-method variance computed directly from raw per-unit arrays -----------------


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_variance_matches_textbook_delta_formula_on_raw_units(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y, x = _units(rng, 700, 0.1)
    est = ratio_estimate(RatioSums.from_units(y, x))
    # Deng, Knoblich, Lu (2018):
    # Var(Ybar/Xbar) ~ (1/n) (s_yy/mu_x^2 - 2 mu_y s_xy/mu_x^3 + mu_y^2 s_xx/mu_x^4)
    n = y.size
    cov = np.cov(np.vstack([y, x]), ddof=1)
    mu_y, mu_x = y.mean(), x.mean()
    textbook = (cov[0, 0] / mu_x**2 - 2 * mu_y * cov[0, 1] / mu_x**3 + mu_y**2 * cov[1, 1] / mu_x**4) / n
    # and the same through the linearized (influence) values (y - R x) / mu_x
    linear = np.var((y - (y.sum() / x.sum()) * x) / mu_x, ddof=1) / n
    assert est.ratio == pytest.approx(y.sum() / x.sum(), rel=1e-12)
    assert est.variance == pytest.approx(textbook, rel=1e-9)
    assert est.variance == pytest.approx(linear, rel=1e-9)
    assert est.n == n


def test_test_statistics_from_raw_units() -> None:
    rng = np.random.default_rng(21)
    yc, xc = _units(rng, 900, 0.10)
    yt, xt = _units(rng, 950, 0.12)
    res = ratio_test(RatioSums.from_units(yc, xc), RatioSums.from_units(yt, xt), alpha=0.05)

    def delta_var(y: np.ndarray, x: np.ndarray) -> float:
        r = y.sum() / x.sum()
        return float(np.var(y - r * x, ddof=1) / (y.size * x.mean() ** 2))

    rc, rt = yc.sum() / xc.sum(), yt.sum() / xt.sum()
    vc, vt = delta_var(yc, xc), delta_var(yt, xt)
    se = math.sqrt(vc + vt)
    z = norm.ppf(0.975)
    assert res.difference == pytest.approx(rt - rc, rel=1e-12)
    assert res.statistic == pytest.approx((rt - rc) / se, rel=1e-9)
    assert res.p_value == pytest.approx(2 * norm.sf(abs(rt - rc) / se), rel=1e-8)
    assert res.ci.low == pytest.approx(rt - rc - z * se, rel=1e-9)
    se_lift = math.sqrt(vt / rc**2 + rt**2 * vc / rc**4)
    assert res.relative_lift == pytest.approx(rt / rc - 1, rel=1e-12)
    assert res.relative_lift_ci.high == pytest.approx(rt / rc - 1 + z * se_lift, rel=1e-9)
    assert "delta" in res.method
    assert "Deng" in res.reference


# --- Monte Carlo: coverage of the intervals ------------------------------------------------------


def test_ci_coverage_is_nominal_over_2000_datasets() -> None:
    # 2,000 datasets of 400 users per arm, clustered clicks; true CTRs 0.10 and 0.12.
    # The true ratio is E[Y]/E[X] = E[rate] = ctr because rate and sessions are independent.
    # Binomial MC standard error of a 95 % coverage over 2,000 runs: sqrt(.95 * .05 / 2000) = 0.0049;
    # the tolerance 0.015 is about 3 SE (plus a little finite-n bias of the delta method).
    rng = np.random.default_rng(20180819)
    runs, n, ctr_c, ctr_t = 2000, 400, 0.10, 0.12
    true_diff, true_lift = ctr_t - ctr_c, ctr_t / ctr_c - 1
    hits_diff = hits_lift = naive_hits = 0
    z = norm.ppf(0.975)
    for _ in range(runs):
        yc, xc = _units(rng, n, ctr_c)
        yt, xt = _units(rng, n, ctr_t)
        res = ratio_test(RatioSums.from_units(yc, xc), RatioSums.from_units(yt, xt))
        hits_diff += res.ci.contains(true_diff)
        hits_lift += res.relative_lift_ci.contains(true_lift)
        # the naive interval treats every session as an independent Bernoulli trial
        pc, pt = yc.sum() / xc.sum(), yt.sum() / xt.sum()
        naive_se = math.sqrt(pc * (1 - pc) / xc.sum() + pt * (1 - pt) / xt.sum())
        naive_hits += abs(pt - pc - true_diff) <= z * naive_se
    assert abs(hits_diff / runs - 0.95) < 0.015
    assert abs(hits_lift / runs - 0.95) < 0.015
    # users differ in click rate, so sessions are correlated and the naive interval is too short
    # (about 0.87 with this seed; 0.92 is more than 6 MC standard errors away from either side)
    assert naive_hits / runs < 0.92


def test_false_positive_rate_under_the_null() -> None:
    # A/A: both arms at 0.1. Rejection rate over 2,000 datasets should be 0.05 +- 3 SE,
    # SE = sqrt(.05 * .95 / 2000) = 0.0049 -> tolerance 0.015.
    rng = np.random.default_rng(7)
    runs = 2000
    rejections = 0
    for _ in range(runs):
        res = ratio_test(
            RatioSums.from_units(*_units(rng, 300, 0.1)), RatioSums.from_units(*_units(rng, 300, 0.1))
        )
        rejections += res.significant
    assert abs(rejections / runs - 0.05) < 0.015


# --- edge cases and validation --------------------------------------------------------------------


def test_constant_units_give_a_degenerate_but_defined_test() -> None:
    same = RatioSums.from_units([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])  # every unit at ratio 0.5
    res = ratio_test(same, same)
    assert res.p_value == 1.0
    assert res.ci.low == res.ci.high == 0.0
    other = RatioSums.from_units([2.0, 4.0], [2.0, 4.0])  # ratio 1
    assert ratio_test(same, other).p_value == 0.0


def test_zero_control_ratio_has_undefined_lift() -> None:
    c = RatioSums.from_units([0.0, 0.0, 0.0], [1.0, 2.0, 3.0])
    t = RatioSums.from_units([1.0, 0.0, 2.0], [1.0, 2.0, 3.0])
    res = ratio_test(c, t)
    assert math.isnan(res.relative_lift)
    assert res.difference == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("sums", "message"),
    [
        (RatioSums(1, 1.0, 1.0, 1.0, 1.0, 1.0), "control n must be >= 2"),
        (RatioSums(10, 5.0, 0.0, 5.0, 0.0, 0.0), "control sum_den must be > 0"),
        (RatioSums(10, 5.0, 20.0, -1.0, 50.0, 10.0), "control sum_num_sq must be >= 0"),
        (RatioSums(10, 5.0, 20.0, 1.0, 50.0, 10.0), "control numerator sums are inconsistent"),
        (RatioSums(10, 5.0, 20.0, 5.0, 50.0, 100.0), "correlation beyond"),
        (RatioSums(10, math.nan, 20.0, 5.0, 50.0, 10.0), "control sum_num must be finite"),
    ],
)
def test_rejects_bad_sums(sums: RatioSums, message: str) -> None:
    ok = RatioSums.from_units([1.0, 2.0, 0.0], [2.0, 3.0, 1.0])
    with pytest.raises(InvalidInputError, match=message):
        ratio_test(sums, ok)


def test_rejects_bad_alpha_and_shapes() -> None:
    ok = RatioSums.from_units([1.0, 2.0, 0.0], [2.0, 3.0, 1.0])
    with pytest.raises(InvalidInputError, match="alpha"):
        ratio_test(ok, ok, alpha=1.0)
    with pytest.raises(InvalidInputError, match="equal length"):
        RatioSums.from_units([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(InvalidInputError, match="treatment must be a RatioSums"):
        ratio_test(ok, (3, 3.0, 6.0, 5.0, 14.0, 8.0))  # type: ignore[arg-type]
