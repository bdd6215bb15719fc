"""Tests of modelrollout.stats.bayes: closed forms, Miller's sum, Monte Carlo draws."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, special, stats

from modelrollout.errors import InvalidInputError
from modelrollout.stats.bayes import BayesResult, beta_binomial, decide, normal_means
from modelrollout.stats.results import Interval, Verdict

pytestmark = pytest.mark.unit


def miller_prob_b_beats_a(a_a: int, b_a: int, a_b: int, b_b: int) -> float:
    """Evan Miller's (2015) closed form of P(p_B > p_A) for integer a_B, written out:
    sum_{i=0}^{a_B - 1} B(a_A + i, b_A + b_B) / ((b_B + i) B(1 + i, b_B) B(a_A, b_A))."""
    total = 0.0
    for i in range(a_b):
        log_term = (
            special.betaln(a_a + i, b_a + b_b)
            - math.log(b_b + i)
            - special.betaln(1 + i, b_b)
            - special.betaln(a_a, b_a)
        )
        total += math.exp(log_term)
    return total


# --- Beta-Binomial ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sc", "nc", "st", "nt"),
    [(3, 10, 5, 10), (15, 100, 21, 100), (150, 1000, 171, 1000), (40, 300, 30, 310), (0, 20, 0, 5)],
)
def test_probability_better_matches_miller_closed_form(sc: int, nc: int, st: int, nt: int) -> None:
    res = beta_binomial(sc, nc, st, nt)  # prior Beta(1, 1)
    oracle = miller_prob_b_beats_a(1 + sc, 1 + nc - sc, 1 + st, 1 + nt - st)
    assert res.probability_better == pytest.approx(oracle, abs=1e-9)
    assert res.posterior == {
        "control_alpha": 1 + sc,
        "control_beta": 1 + nc - sc,
        "treatment_alpha": 1 + st,
        "treatment_beta": 1 + nt - st,
    }


def test_uniform_posteriors_have_known_values() -> None:
    # Two Beta(1, 1) (no data): P = 1/2, E[max(X - Y, 0)] = E|X - Y| / 2 = 1/6 for uniforms,
    # and X - Y has the triangular density on [-1, 1] whose 2.5 % quantile is sqrt(0.05) - 1.
    res = beta_binomial(0, 0, 0, 0)
    assert res.probability_better == pytest.approx(0.5, abs=1e-12)
    assert res.expected_loss_treatment == pytest.approx(1 / 6, abs=1e-10)
    assert res.expected_loss_control == pytest.approx(1 / 6, abs=1e-10)
    assert res.ci.low == pytest.approx(math.sqrt(0.05) - 1, abs=1e-8)
    assert res.ci.high == pytest.approx(1 - math.sqrt(0.05), abs=1e-8)
    # X / Y for independent uniforms: P(X/Y <= r) = r/2 for r <= 1, so the 2.5 % quantile is 0.05.
    assert res.relative_lift_ci.low == pytest.approx(0.05 - 1, abs=1e-8)
    # and 1 - 1/(2r) for r >= 1: the 97.5 % quantile is r = 20.
    assert res.relative_lift_ci.high == pytest.approx(20 - 1, rel=1e-7)


@pytest.mark.parametrize(
    ("sc", "nc", "st", "nt", "prior"),
    [
        (1500, 10_000, 1600, 10_000, (1.0, 1.0)),
        (15_000, 100_000, 15_200, 100_000, (1.0, 1.0)),
        (12, 80, 20, 85, (0.5, 0.5)),
        (3.5, 40.25, 1.0, 38.0, (2.0, 8.0)),  # float counts, as Prometheus rates give
    ],
)
def test_against_monte_carlo_draws(
    sc: float, nc: float, st: float, nt: float, prior: tuple[float, float]
) -> None:
    # 400,000 posterior draws per arm (seed 11). Tolerances: 5 MC standard errors for P and the
    # losses; quantiles within 5 MC standard errors of a quantile (sqrt(q(1-q)/N) / density,
    # density estimated from the draws).
    res = beta_binomial(sc, nc, st, nt, prior_alpha=prior[0], prior_beta=prior[1])
    rng = np.random.default_rng(11)
    n = 400_000
    post = res.posterior
    pc = rng.beta(post["control_alpha"], post["control_beta"], n)
    pt = rng.beta(post["treatment_alpha"], post["treatment_beta"], n)
    better = (pt > pc).astype(float)
    assert res.probability_better == pytest.approx(better.mean(), abs=5 * better.std() / math.sqrt(n) + 1e-6)
    for got, draws in (
        (res.expected_loss_treatment, np.maximum(pc - pt, 0)),
        (res.expected_loss_control, np.maximum(pt - pc, 0)),
    ):
        assert got == pytest.approx(draws.mean(), abs=5 * draws.std() / math.sqrt(n) + 1e-12)
    for interval, draws in ((res.ci, pt - pc), (res.relative_lift_ci, pt / pc - 1)):
        for q, value in ((0.025, interval.low), (0.975, interval.high)):
            est = float(np.quantile(draws, q))
            h = float(np.quantile(draws, q + 0.005) - np.quantile(draws, q - 0.005))
            density = 0.01 / h
            se = math.sqrt(q * (1 - q) / n) / density
            assert value == pytest.approx(est, abs=5 * se)


def test_loss_identity_and_estimates() -> None:
    # E[max(t - c, 0)] - E[max(c - t, 0)] = E[t] - E[c].
    res = beta_binomial(120, 1000, 140, 1000)
    assert res.expected_loss_control - res.expected_loss_treatment == pytest.approx(res.difference, abs=1e-10)
    assert res.control_estimate == pytest.approx(121 / 1002)
    assert res.treatment_estimate == pytest.approx(141 / 1002)
    assert res.relative_lift == pytest.approx(141 / 121 - 1)
    assert res.ci.contains(res.difference)
    assert res.relative_lift_ci.contains(res.relative_lift)


def test_direction_decrease_swaps_the_roles() -> None:
    up = beta_binomial(50, 1000, 30, 1000)
    down = beta_binomial(50, 1000, 30, 1000, direction="decrease")  # an error rate: lower is better
    assert down.probability_better == pytest.approx(1 - up.probability_better, abs=1e-9)
    assert down.expected_loss_treatment == pytest.approx(up.expected_loss_control, abs=1e-12)
    assert down.expected_loss_control == pytest.approx(up.expected_loss_treatment, abs=1e-12)
    assert down.probability_better > 0.98
    assert down.decision() is Verdict.ROLLOUT_CHALLENGER
    assert up.decision() is Verdict.KEEP_CHAMPION


def test_credible_level_changes_the_interval() -> None:
    wide = beta_binomial(100, 1000, 120, 1000, credible_level=0.99)
    narrow = beta_binomial(100, 1000, 120, 1000, credible_level=0.8)
    assert wide.ci.low < narrow.ci.low < narrow.ci.high < wide.ci.high
    assert wide.credible_level == 0.99


# --- normal model --------------------------------------------------------------------------------


def test_normal_model_closed_forms() -> None:
    res = normal_means(1000, 10.0, 3.0, 1100, 10.3, 3.2)
    se = math.sqrt(3.0**2 / 1000 + 3.2**2 / 1100)
    d = stats.norm(0.3, se)
    assert res.difference == pytest.approx(0.3)
    assert res.probability_better == pytest.approx(d.sf(0), rel=1e-12)
    # E[max(c - t, 0)] = integral of max(-x, 0) over the posterior of the difference, by quad.
    loss_t, _ = integrate.quad(lambda x: -x * d.pdf(x), -np.inf, 0, epsabs=1e-14)
    loss_c, _ = integrate.quad(lambda x: x * d.pdf(x), 0, np.inf, epsabs=1e-14)
    assert res.expected_loss_treatment == pytest.approx(loss_t, rel=1e-8)
    assert res.expected_loss_control == pytest.approx(loss_c, rel=1e-8)
    assert res.ci.low == pytest.approx(d.ppf(0.025), rel=1e-12)
    assert res.ci.high == pytest.approx(d.ppf(0.975), rel=1e-12)
    assert res.posterior["control_se"] == pytest.approx(3 / math.sqrt(1000))


def test_normal_relative_lift_ci_against_monte_carlo() -> None:
    # 400,000 draws (seed 3); quantiles within 5 MC standard errors (as above).
    res = normal_means(500, 2.0, 1.5, 520, 2.1, 1.6)
    rng = np.random.default_rng(3)
    n = 400_000
    mu_c = rng.normal(2.0, 1.5 / math.sqrt(500), n)
    mu_t = rng.normal(2.1, 1.6 / math.sqrt(520), n)
    lift = mu_t / mu_c - 1
    for q, value in ((0.025, res.relative_lift_ci.low), (0.975, res.relative_lift_ci.high)):
        est = float(np.quantile(lift, q))
        h = float(np.quantile(lift, q + 0.005) - np.quantile(lift, q - 0.005))
        se = math.sqrt(q * (1 - q) / n) * h / 0.01
        assert value == pytest.approx(est, abs=5 * se)


def test_normal_relative_lift_is_unbounded_when_control_mean_is_near_zero() -> None:
    res = normal_means(100, 0.05, 1.0, 100, 0.2, 1.0)
    assert res.relative_lift_ci == Interval(-math.inf, math.inf)
    assert math.isfinite(res.probability_better)


def test_normal_relative_lift_with_a_treatment_mean_near_zero() -> None:
    # The treatment posterior straddles 0: the ratio interval is solved on the ratio itself.
    res = normal_means(10_000, 5.0, 1.0, 100, 0.05, 1.0)
    rng = np.random.default_rng(8)
    lift = rng.normal(0.05, 0.1, 200_000) / rng.normal(5.0, 0.01, 200_000) - 1
    assert res.relative_lift_ci.low == pytest.approx(np.quantile(lift, 0.025), abs=2e-3)
    assert res.relative_lift_ci.high == pytest.approx(np.quantile(lift, 0.975), abs=2e-3)


# --- decision --------------------------------------------------------------------------------------


def _with(p_better: float, loss: float) -> BayesResult:
    base = beta_binomial(10, 100, 10, 100)
    return BayesResult(**{**base.__dict__, "probability_better": p_better, "expected_loss_treatment": loss})


def test_decide_rules() -> None:
    assert decide(_with(0.96, 0.001)) is Verdict.ROLLOUT_CHALLENGER
    assert decide(_with(0.96, 0.001), loss_tolerance=0.0005) is Verdict.INCONCLUSIVE
    assert decide(_with(0.95, 0.0)) is Verdict.ROLLOUT_CHALLENGER  # boundary: >= threshold
    assert decide(_with(0.05, 0.0)) is Verdict.KEEP_CHAMPION  # boundary: <= 1 - threshold
    assert decide(_with(0.5, 0.0)) is Verdict.INCONCLUSIVE
    assert decide(_with(0.97, 0.0), threshold=0.99) is Verdict.INCONCLUSIVE
    assert _with(0.02, 0.1).decision() is Verdict.KEEP_CHAMPION


def test_end_to_end_decision_on_real_counts() -> None:
    clear = beta_binomial(1500, 10_000, 1700, 10_000)
    assert clear.probability_better > 0.999
    assert clear.decision(loss_tolerance=1e-4) is Verdict.ROLLOUT_CHALLENGER
    assert beta_binomial(1500, 10_000, 1510, 10_000).decision() is Verdict.INCONCLUSIVE


# --- validation ------------------------------------------------------------------------------------


def test_invalid_inputs() -> None:
    with pytest.raises(InvalidInputError, match="control_successes"):
        beta_binomial(11, 10, 1, 10)
    with pytest.raises(InvalidInputError, match="treatment_trials"):
        beta_binomial(1, 10, 1, -10)
    with pytest.raises(InvalidInputError, match="prior_alpha"):
        beta_binomial(1, 10, 1, 10, prior_alpha=0)
    with pytest.raises(InvalidInputError, match="direction"):
        beta_binomial(1, 10, 1, 10, direction="up")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="credible_level"):
        beta_binomial(1, 10, 1, 10, credible_level=1.0)
    with pytest.raises(InvalidInputError, match="control_n"):
        normal_means(1, 1.0, 1.0, 10, 1.0, 1.0)
    with pytest.raises(InvalidInputError, match="treatment_sd"):
        normal_means(10, 1.0, 1.0, 10, 1.0, 0.0)
    with pytest.raises(InvalidInputError, match="threshold"):
        decide(_with(0.9, 0.0), threshold=0.4)
    with pytest.raises(InvalidInputError, match="loss_tolerance"):
        decide(_with(0.9, 0.0), loss_tolerance=-1)
