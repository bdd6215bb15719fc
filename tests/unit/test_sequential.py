"""Tests of modelrollout.stats.sequential: formulas against numerical integration, duality of
the e-value and the confidence sequence, the high-level tests, and Monte Carlo validity of the
one-sided guardrail."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from modelrollout.errors import InvalidInputError
from modelrollout.stats import sequential as sq
from modelrollout.stats.results import ComparisonResult, Interval, Verdict

pytestmark = pytest.mark.unit

ALPHA = 0.05
LOG_1_OVER_ALPHA = math.log(1 / ALPHA)

# (estimate, variance, tau2, null)
POINTS = [
    (0.0, 1.0, 1.0, 0.0),
    (0.2, 0.3, 1.7, 0.0),
    (-1.0, 0.3, 1.7, 0.0),
    (1.5, 0.3, 1.7, 0.0),
    (0.012, 2.5e-5, 2.1e-4, 0.0),
    (0.03, 2.5e-5, 2.1e-4, 0.01),
    (-0.004, 4e-6, 1e-5, -0.001),
]


def _lr(estimate: float, variance: float, theta: float, null: float) -> float:
    """Likelihood ratio of theta against null for estimate ~ N(theta, variance)."""
    sd = math.sqrt(variance)
    return math.exp(float(stats.norm.logpdf(estimate, theta, sd) - stats.norm.logpdf(estimate, null, sd)))


# --- oracle: the closed forms equal a direct integration of the mixture ------------------------


@pytest.mark.parametrize(("est", "var", "tau2", "null"), POINTS)
def test_two_sided_e_value_matches_quadrature(est: float, var: float, tau2: float, null: float) -> None:
    tau = math.sqrt(tau2)

    def integrand(x: float) -> float:
        return _lr(est, var, null + x * tau, null) * float(stats.norm.pdf(x))

    direct, _ = integrate.quad(integrand, -np.inf, np.inf, epsabs=0, epsrel=1e-11, limit=200)
    got = float(sq.normal_mixture_log_e_value(est, var, tau2, null))
    assert got == pytest.approx(math.log(direct), rel=1e-8, abs=1e-9)


@pytest.mark.parametrize(("est", "var", "tau2", "null"), POINTS)
def test_one_sided_e_value_matches_quadrature(est: float, var: float, tau2: float, null: float) -> None:
    tau = math.sqrt(tau2)

    def integrand(x: float) -> float:  # half-normal mixing over theta - null > 0
        return _lr(est, var, null + x * tau, null) * 2.0 * float(stats.norm.pdf(x))

    direct, _ = integrate.quad(integrand, 0.0, np.inf, epsabs=0, epsrel=1e-11, limit=200)
    got = float(sq.one_sided_normal_mixture_log_e_value(est, var, tau2, null))
    assert got == pytest.approx(math.log(direct), rel=1e-8, abs=1e-9)


def test_one_sided_is_between_two_sided_and_twice_it_for_positive_estimates() -> None:
    est = np.linspace(0.0, 5.0, 51)
    two = sq.normal_mixture_log_e_value(est, 1.0, 3.0)
    one = sq.one_sided_normal_mixture_log_e_value(est, 1.0, 3.0)
    assert np.all(one >= two - 1e-12)
    assert np.all(one <= two + math.log(2) + 1e-12)
    assert np.all(np.diff(one) > 0)  # increasing in the estimate


# --- the confidence sequence inverts the e-value -------------------------------------------------


@pytest.mark.parametrize(("est", "var", "tau2", "null"), POINTS)
@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.2])
def test_radius_inverts_e_value(est: float, var: float, tau2: float, null: float, alpha: float) -> None:
    r = float(sq.normal_mixture_radius(var, tau2, alpha))
    for edge in (est - r, est + r):  # e-value of the null at either end of the CS is 1/alpha
        assert float(sq.normal_mixture_log_e_value(est, var, tau2, edge)) == pytest.approx(
            math.log(1 / alpha), rel=1e-10
        )
    r1 = float(sq.one_sided_normal_mixture_radius(var, tau2, alpha))
    assert float(sq.one_sided_normal_mixture_log_e_value(est, var, tau2, est - r1)) == pytest.approx(
        math.log(1 / alpha), rel=1e-10
    )
    assert r1 < r  # one-sided bound is tighter


def test_core_is_vectorised_and_broadcasts() -> None:
    est = np.array([[0.0, 0.1], [0.2, 0.3]])
    out = sq.normal_mixture_log_e_value(est, np.array([0.01, 0.02]), 0.05)
    assert out.shape == (2, 2)
    assert out[1, 0] == pytest.approx(float(sq.normal_mixture_log_e_value(0.2, 0.01, 0.05)))
    assert sq.normal_mixture_radius(np.array([1.0, 2.0, 3.0]), 1.0, 0.05).shape == (3,)
    assert sq.one_sided_normal_mixture_radius(np.array([1.0, 2.0, 3.0]), 1.0, 0.05).shape == (3,)


# --- tuning ------------------------------------------------------------------------------------


@pytest.mark.parametrize("one_sided", [False, True])
@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1])
def test_optimal_tau2_minimises_radius_at_the_tuning_point(one_sided: bool, alpha: float) -> None:
    v_star = 3.7e-5
    t2 = sq.optimal_tau2(v_star, alpha, one_sided=one_sided)
    radius = sq.one_sided_normal_mixture_radius if one_sided else sq.normal_mixture_radius
    best = float(radius(v_star, t2, alpha))
    for factor in (0.5, 0.8, 0.95, 1.05, 1.25, 2.0):
        assert float(radius(v_star, t2 * factor, alpha)) > best


def test_tuned_two_sided_boundary_is_sqrt_one_plus_k() -> None:
    # at the optimum k - log(1 + k) = 2 log(1/alpha), so r^2 = V (1 + k): z = 3.04 for alpha 0.05
    k = sq.optimal_tau2(1.0, ALPHA)
    assert k - math.log1p(k) == pytest.approx(2 * LOG_1_OVER_ALPHA, rel=1e-12)
    assert k == pytest.approx(8.212, abs=1e-3)
    assert float(sq.normal_mixture_radius(1.0, k, ALPHA)) == pytest.approx(math.sqrt(1 + k), rel=1e-12)


def test_tau2_for_proportions_uses_planned_variance() -> None:
    t2 = sq.tau2_for_proportions(0.15, 9257, ALPHA)
    assert t2 == pytest.approx(sq.optimal_tau2(2 * 0.15 * 0.85 / 9257, ALPHA))
    assert sq.tau2_for_proportions(0.15, 9257, ALPHA, tuning_multiple=2.0) == pytest.approx(t2 / 2)
    assert sq.tau2_for_means(2.0, 100, ALPHA) == pytest.approx(sq.optimal_tau2(8.0 / 100, ALPHA))


# --- high-level two-sided tests ----------------------------------------------------------------


def test_proportions_result_fields() -> None:
    res = sq.sequential_test_proportions(
        1300, 9257, 1450, 9257, alpha=ALPHA, planned_n_per_variant=9257, baseline=0.15
    )
    assert res.method == sq.METHOD
    assert "Johari" in res.reference
    assert "Howard" in res.reference
    assert res.difference == pytest.approx(150 / 9257)
    assert res.e_value is not None
    assert res.p_value == pytest.approx(min(1.0, 1.0 / res.e_value))
    assert res.ci.contains(res.difference)
    assert res.ci.high - res.difference == pytest.approx(res.extra["radius"])
    assert res.extra["tau2"] == pytest.approx(sq.tau2_for_proportions(0.15, 9257, ALPHA))
    assert res.relative_lift == pytest.approx(150 / 1300)
    assert res.relative_lift_ci.contains(res.relative_lift)
    json.dumps(res.to_dict())


@settings(max_examples=150, deadline=None)
@given(
    cn=st.integers(20, 50_000),
    tn=st.integers(20, 50_000),
    pc=st.floats(0.01, 0.99),
    pt=st.floats(0.01, 0.99),
    tau2=st.floats(1e-6, 1e-1),
)
def test_p_value_and_confidence_sequence_agree(cn: int, tn: int, pc: float, pt: float, tau2: float) -> None:
    res = sq.sequential_test_proportions(round(pc * cn), cn, round(pt * tn), tn, alpha=ALPHA, tau2=tau2)
    margin = 1e-9 * max(1.0, abs(res.ci.low), abs(res.ci.high))
    if res.p_value < ALPHA * (1 - 1e-9):
        assert not (res.ci.low - margin <= 0.0 <= res.ci.high + margin)
    elif res.p_value > ALPHA * (1 + 1e-9):
        assert res.ci.low - margin <= 0.0 <= res.ci.high + margin


def test_state_is_carried_across_looks() -> None:
    first = sq.sequential_test_proportions(220, 1000, 300, 1000, tau2=1e-3)
    assert first.significant
    # a later look with less evidence keeps the running max e-value and the intersected CS
    later = sq.sequential_test_proportions(
        440,
        2000,
        470,
        2000,
        tau2=1e-3,
        previous_max_log_e=first.extra["log_e_value_max"],
        previous_ci=first.ci,
    )
    fresh = sq.sequential_test_proportions(440, 2000, 470, 2000, tau2=1e-3)
    assert not fresh.significant
    assert later.significant
    assert later.p_value == pytest.approx(first.p_value)
    assert later.extra["log_e_value"] == pytest.approx(fresh.extra["log_e_value"])
    assert later.ci.low == pytest.approx(max(first.ci.low, fresh.ci.low))
    assert later.ci.high == pytest.approx(min(first.ci.high, fresh.ci.high))
    assert later.decision() is Verdict.ROLLOUT_CHALLENGER


def test_empty_intersection_keeps_todays_interval() -> None:
    res = sq.sequential_test_proportions(100, 1000, 100, 1000, tau2=1e-3, previous_ci=Interval(0.5, 0.6))
    assert res.extra["ci_intersection_empty"] == 1.0
    assert res.ci.contains(0.0)


def test_worse_challenger_keeps_champion() -> None:
    res = sq.sequential_test_proportions(300, 1000, 200, 1000, planned_n_per_variant=1000)
    assert res.decision("increase") is Verdict.KEEP_CHAMPION
    assert res.decision("decrease") is Verdict.ROLLOUT_CHALLENGER


def test_zero_counts_do_not_break_the_variance() -> None:
    res = sq.sequential_test_proportions(0, 10, 0, 10, planned_n_per_variant=1000, baseline=0.1)
    assert res.p_value == 1.0 or res.p_value > ALPHA
    assert math.isnan(res.relative_lift)
    res = sq.sequential_test_proportions(0, 10, 10, 10, planned_n_per_variant=1000, baseline=0.1)
    assert math.isfinite(res.extra["variance"])
    assert res.extra["variance"] > 0


def test_means_matches_the_core() -> None:
    res = sq.sequential_test_means(500, 10.0, 2.0, 480, 10.4, 2.2, alpha=ALPHA, tau2=0.05)
    var = 4.0 / 500 + 2.2**2 / 480
    assert res.extra["variance"] == pytest.approx(var)
    assert res.extra["log_e_value"] == pytest.approx(float(sq.normal_mixture_log_e_value(0.4, var, 0.05)))
    assert res.ci.low == pytest.approx(0.4 - float(sq.normal_mixture_radius(var, 0.05, ALPHA)))
    assert res.relative_lift == pytest.approx(0.04)
    planned = sq.sequential_test_means(
        500, 10.0, 2.0, 480, 10.4, 2.2, planned_n_per_variant=800, planned_sd=2.0
    )
    assert planned.extra["tau2"] == pytest.approx(sq.tau2_for_means(2.0, 800, ALPHA))


def test_huge_evidence_is_capped_not_overflowing() -> None:
    res = sq.sequential_test_proportions(1000, 100_000, 9000, 100_000, tau2=1e-3)
    assert res.p_value == 0.0 or res.p_value < 1e-250
    assert res.e_value is not None
    assert math.isfinite(res.e_value)


# --- guardrail ---------------------------------------------------------------------------------


def test_guardrail_detects_clear_breach_and_not_a_small_change() -> None:
    breach = sq.sequential_noninferiority(
        100, 10_000, 200, 10_000, margin=0.10, relative=True, planned_n_per_variant=10_000
    )
    assert breach.breached
    assert breach.worse_by == pytest.approx(1.0)
    assert breach.contrast_lower_bound > 0
    assert breach.p_value == pytest.approx(1 / breach.e_value)
    ok = sq.sequential_noninferiority(
        100, 10_000, 102, 10_000, margin=0.10, relative=True, planned_n_per_variant=10_000
    )
    assert not ok.breached
    assert ok.contrast_lower_bound < 0
    json.dumps(ok.to_dict())


def test_guardrail_breach_is_sticky_with_state() -> None:
    first = sq.sequential_noninferiority(10, 1000, 40, 1000, margin=0.005, tau2=1e-4)
    assert first.breached
    later = sq.sequential_noninferiority(
        200, 20_000, 210, 20_000, margin=0.005, tau2=1e-4, previous_max_log_e=first.log_e_value_max
    )
    assert later.breached
    assert later.log_e_value < later.log_e_value_max


def test_guardrail_absolute_margin_and_lower_is_worse_are_mirror_images() -> None:
    # higher is worse: treatment 0.12 vs control 0.10 with margin 0.01 ...
    hi = sq.sequential_noninferiority(1000, 10_000, 1200, 10_000, margin=0.01, tau2=1e-4)
    # ... is the same as lower is worse on the complementary "success" counts
    lo = sq.sequential_noninferiority(
        9000, 10_000, 8800, 10_000, margin=0.01, tau2=1e-4, higher_is_worse=False
    )
    assert hi.contrast == pytest.approx(0.01)
    assert lo.contrast == pytest.approx(hi.contrast)
    assert lo.log_e_value == pytest.approx(hi.log_e_value)
    assert lo.worse_by_lower_bound == pytest.approx(hi.worse_by_lower_bound)
    assert hi.worse_by_lower_bound == pytest.approx(hi.contrast_lower_bound + 0.01)


def test_guardrail_on_means() -> None:
    res = sq.sequential_noninferiority_means(
        5000, 100.0, 30.0, 5000, 130.0, 35.0, margin=0.1, relative=True, planned_n_per_variant=5000
    )
    assert res.breached  # 30 % slower against a 10 % margin
    res = sq.sequential_noninferiority_means(
        5000, 100.0, 30.0, 5000, 101.0, 30.0, margin=0.1, relative=True, planned_n_per_variant=5000
    )
    assert not res.breached


@pytest.mark.parametrize(
    ("relative", "control_rate", "margin"),
    [(True, 0.02, 0.10), (False, 0.05, 0.01)],
)
def test_guardrail_false_positive_rate_at_the_margin(
    relative: bool, control_rate: float, margin: float
) -> None:
    """Challenger exactly at the margin, checked at 100 looks: P(ever breached) <= alpha.

    R = 6,000 runs: MC s.e. of a 0.05 rate is sqrt(.05 * .95 / R) = 0.0028; the assertion
    allows alpha + 3 s.e. = 0.058. A mis-signed or two-sided-at-2-alpha construction would
    be caught (the naive one-sided z-test peeking 100 times is far above 0.1).
    """
    runs, looks, every = 6000, 100, 200
    treat_rate = control_rate * (1 + margin) if relative else control_rate + margin
    rng = np.random.default_rng(20240611)
    cs = np.cumsum(rng.binomial(every, control_rate, size=(runs, looks)), axis=1)
    ts = np.cumsum(rng.binomial(every, treat_rate, size=(runs, looks)), axis=1)
    n = every * np.arange(1, looks + 1)[None, :]
    pc, pt, vc, vt = sq.proportions_difference(cs, n, ts, n)
    f = 1 + margin if relative else 1.0
    contrast = pt - f * pc - (0.0 if relative else margin)
    var = vt + f * f * vc
    n_plan = every * looks / 2  # tuned half-way through the horizon
    v_plan = (treat_rate * (1 - treat_rate) + f * f * control_rate * (1 - control_rate)) / n_plan
    tau2 = sq.optimal_tau2(v_plan, ALPHA, one_sided=True)
    log_e = sq.one_sided_normal_mixture_log_e_value(contrast, var, tau2)
    fpr = float((log_e > LOG_1_OVER_ALPHA).any(axis=1).mean())
    print(f"guardrail FPR at the margin (relative={relative}): {fpr:.4f}")
    se = math.sqrt(ALPHA * (1 - ALPHA) / runs)
    assert fpr <= ALPHA + 3 * se
    # and the guardrail catches a clear breach (twice the margin over it) in almost every run
    ts_bad = np.cumsum(
        rng.binomial(
            every, control_rate * 1.5 if relative else control_rate + 3 * margin, size=(runs, looks)
        ),
        axis=1,
    )
    pc, pt, vc, vt = sq.proportions_difference(cs, n, ts_bad, n)
    log_e = sq.one_sided_normal_mixture_log_e_value(
        pt - f * pc - (0.0 if relative else margin), vt + f * f * vc, tau2
    )
    assert float((log_e > LOG_1_OVER_ALPHA).any(axis=1).mean()) > 0.95


# --- guardrails: the scale mixture ----------------------------------------------------------------


def test_guardrail_scales_grid_and_weights() -> None:
    tau2s, weights = sq.guardrail_scales(1e-6, 0.3)
    assert tau2s[0] == pytest.approx(1e-6)
    assert tau2s[-1] == pytest.approx(0.3)
    ratios = tau2s[1:] / tau2s[:-1]
    assert np.all(ratios <= sq.SCALE_STEP * (1 + 1e-9))
    assert len(tau2s) == 1 + math.ceil(math.log10(0.3 / 1e-6))
    assert weights[0] == pytest.approx(sq.PLAN_WEIGHT)
    assert weights.sum() == pytest.approx(1.0)
    assert np.allclose(weights[1:], weights[1])
    # no faster scale: the plan's alone
    assert sq.guardrail_scales(1e-3, None)[0].tolist() == [1e-3]
    assert sq.guardrail_scales(1e-3, 1e-4)[0].tolist() == [1e-3]


@pytest.mark.parametrize(("est", "var", "null"), [(0.0, 1e-3, 0.0), (0.05, 2e-3, 0.0), (0.3, 0.01, 0.02),
                                                 (-0.1, 0.01, 0.0), (0.004, 1e-6, 0.001)])
def test_scale_mixture_matches_quadrature(est: float, var: float, null: float) -> None:
    """sum_j w_j * integral of LR(theta) * half-normal(theta - null; tau_j), by quadrature."""
    tau2s, weights = sq.guardrail_scales(2e-6, 0.05)
    expected = 0.0
    for tau2, w in zip(tau2s, weights, strict=True):
        tau = math.sqrt(tau2)
        value, _ = integrate.quad(
            lambda x, tau=tau: _lr(est, var, null + x, null) * 2 * stats.norm.pdf(x, 0, tau),
            0, 12 * tau, points=[min(max(est - null, 0.0), 12 * tau)], limit=400,
        )
        expected += w * value
    got = float(sq.scale_mixture_one_sided_log_e_value(est, var, tau2s, weights, null)[()])
    assert got == pytest.approx(math.log(expected), rel=1e-6, abs=1e-8)


def test_scale_mixture_of_one_scale_is_the_one_sided_mixture() -> None:
    got = sq.scale_mixture_one_sided_log_e_value([0.0, 0.01, 0.03], 1e-4, [2e-4], [1.0])
    assert np.allclose(got, sq.one_sided_normal_mixture_log_e_value([0.0, 0.01, 0.03], 1e-4, 2e-4))
    assert sq.scale_mixture_one_sided_radius(1e-4, [2e-4], [1.0], ALPHA) == pytest.approx(
        float(sq.one_sided_normal_mixture_radius(1e-4, 2e-4, ALPHA)[()]), rel=1e-9
    )


@pytest.mark.parametrize("var", [1e-6, 1e-4, 0.01, 0.2])
def test_scale_mixture_radius_inverts_the_e_value(var: float) -> None:
    tau2s, weights = sq.guardrail_scales(1e-6, 0.3)
    r = sq.scale_mixture_one_sided_radius(var, tau2s, weights, ALPHA)
    at = float(sq.scale_mixture_one_sided_log_e_value(r, var, tau2s, weights)[()])
    assert at == pytest.approx(LOG_1_OVER_ALPHA, abs=1e-9)


def _guardrail_log_e(
    cs: np.ndarray, cn: np.ndarray, ts: np.ndarray, tn: np.ndarray, tuned: sq.GuardrailResult
) -> np.ndarray:
    """The operator's guardrail (:func:`sq.sequential_noninferiority`) vectorised over counts: the
    contrast with its variance at the null boundary, for a relative margin."""
    sign = 1.0 if tuned.higher_is_worse else -1.0
    f = 1.0 + sign * tuned.margin
    pc, pt = cs / cn, ts / tn
    qc, qt = sq.restricted_rates(cs + 1.0, cn + 2.0, ts + 1.0, tn + 2.0, factor=f)
    variance = qt * (1 - qt) / tn + f * f * qc * (1 - qc) / cn
    tau2s, weights = sq.guardrail_scales(tuned.tau2, tuned.fast_tau2)
    return sq.scale_mixture_one_sided_log_e_value(sign * (pt - f * pc), variance, tau2s, weights)


def _first_breach(
    control_rate: float,
    treat_rate: float,
    margin: float,
    *,
    fast: bool,
    runs: int,
    seed: int,
    ratio: int = 1,
    higher_is_worse: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Looks every 2 challenger samples up to 100, then every 100 up to 20,000; the champion gets
    ``ratio`` x the challenger's traffic. Returns the looks and, per run, the first breached look
    (inf when never)."""
    rng = np.random.default_rng(seed)
    ns = np.unique(np.concatenate([np.arange(2, 101, 2), np.arange(200, 20_001, 100)]))
    inc = np.diff(np.concatenate([[0], ns]))
    cs = np.cumsum(rng.binomial(inc * ratio, control_rate, size=(runs, len(ns))), axis=1)
    ts = np.cumsum(rng.binomial(inc, treat_rate, size=(runs, len(ns))), axis=1)
    tuned = sq.sequential_noninferiority(
        1, 1000, 1, 1000, margin=margin, relative=True, planned_n_per_variant=9257,
        higher_is_worse=higher_is_worse,
        baseline=control_rate, fast_n=sq.FAST_DETECTION_N if fast else None,
    )
    cn, tn = ratio * ns[None, :] * 1.0, ns[None, :] * 1.0
    log_e = _guardrail_log_e(cs.astype(float), cn, ts.astype(float), tn, tuned)
    hit = log_e > LOG_1_OVER_ALPHA
    first = np.where(hit.any(axis=1), ns[hit.argmax(axis=1)], np.inf)
    return ns, first


def test_the_vectorised_guardrail_is_the_operators() -> None:
    rng = np.random.default_rng(21)
    for higher_is_worse in (True, False):
        tuned = sq.sequential_noninferiority(
            1, 1000, 1, 1000, margin=0.2, relative=True, planned_n_per_variant=9257,
            higher_is_worse=higher_is_worse,
            baseline=0.05,
        )
        for _ in range(10):
            cn, tn = float(rng.integers(10, 5000)), float(rng.integers(10, 500))
            cs, ts = float(rng.binomial(int(cn), 0.05)), float(rng.binomial(int(tn), 0.06))
            one = sq.sequential_noninferiority(
                cs, cn, ts, tn, margin=0.2, relative=True, higher_is_worse=higher_is_worse, tau2=tuned.tau2,
                fast_tau2=tuned.fast_tau2,
            )
            many = _guardrail_log_e(np.array([cs]), np.array([cn]), np.array([ts]), np.array([tn]), tuned)
            assert float(many[0]) == pytest.approx(one.log_e_value, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    ("xc", "nc", "xt", "nt", "ratio"),
    [(250, 5400, 30, 600, 1.1), (0, 100, 3, 10, 1.5), (90, 100, 9, 10, 0.9), (12, 9000, 1, 1000, 1.0)],
)
def test_restricted_rates_match_statsmodels_score_test(
    xc: int, nc: int, xt: int, nt: int, ratio: float
) -> None:
    from statsmodels.stats.proportion import score_test_proportions_2indep

    found = score_test_proportions_2indep(
        xt, nt, xc, nc, value=ratio, compare="ratio", alternative="larger", correction=False,
        return_results=True,
    )
    control, treatment = sq.restricted_rates(xc, nc, xt, nt, factor=ratio)
    assert float(control) == pytest.approx(float(found.prop2_null), rel=1e-9)
    assert float(treatment) == pytest.approx(float(found.prop1_null), rel=1e-9)


@pytest.mark.parametrize("shift", [0.01, -0.01, 0.02])
def test_restricted_rates_with_a_shift_maximise_the_likelihood(shift: float) -> None:
    # statsmodels 0.15's score test with compare="diff" returns rates whose likelihood is lower than
    # this fit's (0.045689 against 0.045765 for the first case), so the oracle is a direct maximisation
    from scipy.optimize import minimize_scalar

    xc, nc, xt, nt = 250, 5400, 30, 600

    def minus_log_likelihood(p: float) -> float:
        t = p + shift
        control = xc * math.log(p) + (nc - xc) * math.log1p(-p)
        return -(control + xt * math.log(t) + (nt - xt) * math.log1p(-t))

    low, high = max(0.0, -shift) + 1e-12, min(1.0, 1.0 - shift) - 1e-12
    best = minimize_scalar(
        minus_log_likelihood, bounds=(low, high), method="bounded", options={"xatol": 1e-14}
    )
    control, treatment = sq.restricted_rates(xc, nc, xt, nt, shift=shift)
    assert float(control) == pytest.approx(best.x, rel=1e-7)
    assert float(treatment) == pytest.approx(float(control) + shift, rel=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("rate", [0.02, 0.05])
def test_a_success_rate_guardrail_at_a_ten_percent_step_keeps_its_level(rate: float) -> None:
    """A/A on a success rate (lower is worse, margin 0), the challenger at a 10 % step: P(ever
    breached) <= alpha. 4,000 runs, seed fixed; bound alpha + 3 s.e. = 0.060. Measured: 0.013 and
    0.015. With each arm's plug-in variance, bench/guardrail_detection.py measures 0.070 and 0.076
    (the small arm's variance shrinks with its rate exactly when the rate leans to a breach)."""
    runs = 4000
    _, first = _first_breach(rate, rate, 0.0, fast=True, runs=runs, seed=13, ratio=9, higher_is_worse=False)
    fpr = float(np.isfinite(first).mean())
    print(f"success-rate guardrail A/A FPR at a 10 % step ({rate}): {fpr:.4f}")
    assert fpr <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / runs)


@pytest.mark.slow
@pytest.mark.parametrize(("control_rate", "margin"), [(0.02, 0.1), (0.002, 0.5), (0.3, 0.1)])
def test_scale_mixture_false_breach_rate_at_the_margin(control_rate: float, margin: float) -> None:
    """Challenger exactly at the margin, looked at from its 2nd sample on (150 looks, the first
    50 at 2..100 samples where the normal approximation is roughest): P(ever breached) <= alpha.

    R = 4,000 runs, seed fixed: MC s.e. of a 0.05 rate is 0.0034; the bound allows alpha + 3 s.e.
    = 0.060. Measured: 0.013, 0.005, 0.019 (0.015, 0.017, 0.032 with plug-in variances).
    Weights that did not sum to one (say, each scale at
    full weight) would be caught: that is a union of 5-7 tests, about 0.08-0.12 here.
    """
    runs = 4000
    _, first = _first_breach(control_rate, control_rate * (1 + margin), margin, fast=True, runs=runs, seed=11)
    fpr = float(np.isfinite(first).mean())
    print(f"scale-mixture guardrail FPR at the margin ({control_rate}, {margin}): {fpr:.4f}")
    assert fpr <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / runs)


@pytest.mark.slow
def test_scale_mixture_catches_a_gross_breach_within_tens_of_requests() -> None:
    """Error rate 0.1 % -> 30 % at a 10 % step (champion 9x the challenger's traffic), relative margin
    0.5, tuned at a planned n of 9,257: the plan's mixture alone needs a median of 300 challenger
    requests; the scale mixture 10. 2,000 runs, seed fixed; asserted: median <= 20 against >= 200,
    and every run caught."""
    _, fast = _first_breach(0.001, 0.30, 0.5, fast=True, runs=2000, seed=12, ratio=9)
    _, plan_only = _first_breach(0.001, 0.30, 0.5, fast=False, runs=2000, seed=12, ratio=9)
    print(f"median requests to breach: scale mixture {np.median(fast)}, plan only {np.median(plan_only)}")
    assert np.isfinite(fast).all()
    assert float(np.median(fast)) <= 20
    assert float(np.median(plan_only)) >= 200


def test_guardrail_result_freezes_the_fast_scale() -> None:
    first = sq.sequential_noninferiority(1, 500, 9, 30, margin=0.5, relative=True, planned_n_per_variant=9257)
    assert first.breached
    assert first.fast_tau2 is not None
    assert first.fast_tau2 > 1000 * first.tau2
    again = sq.sequential_noninferiority(
        1, 500, 9, 30, margin=0.5, relative=True, tau2=first.tau2, fast_tau2=first.fast_tau2
    )
    assert again.log_e_value == pytest.approx(first.log_e_value)
    plan_only = sq.sequential_noninferiority(
        1, 500, 9, 30, margin=0.5, relative=True, planned_n_per_variant=9257, fast_n=None
    )
    assert plan_only.fast_tau2 is None
    assert not plan_only.breached


# --- input validation --------------------------------------------------------------------------


_CARRYING_STATE = {
    "sequential_test_proportions": lambda prev: sq.sequential_test_proportions(
        50, 1000, 60, 1000, tau2=1e-4, previous_max_log_e=prev
    ),
    "sequential_test_means": lambda prev: sq.sequential_test_means(
        100, 5.0, 2.0, 100, 5.5, 2.0, tau2=0.1, previous_max_log_e=prev
    ),
    "sequential_noninferiority": lambda prev: sq.sequential_noninferiority(
        50, 1000, 60, 1000, margin=0.01, tau2=1e-4, previous_max_log_e=prev
    ),
    "sequential_noninferiority_means": lambda prev: sq.sequential_noninferiority_means(
        100, 5.0, 2.0, 100, 5.5, 2.0, margin=0.1, tau2=0.1, previous_max_log_e=prev
    ),
}


@pytest.mark.parametrize("name", sorted(_CARRYING_STATE))
@pytest.mark.parametrize("carried", [math.inf, -math.inf, math.nan])
def test_a_non_finite_carried_log_e_max_is_rejected_like_the_srm_test_does(
    name: str, carried: float
) -> None:
    # +inf used to be accepted and latched an always-valid p-value of 0 with no evidence;
    # srm_sequential already rejected non-finite carried values.
    with pytest.raises(InvalidInputError, match="previous_max_log_e must be finite"):
        _CARRYING_STATE[name](carried)


def _log_e_max(result: ComparisonResult | sq.GuardrailResult) -> float:
    if isinstance(result, ComparisonResult):
        return result.extra["log_e_value_max"]
    return result.log_e_value_max


@pytest.mark.parametrize("name", sorted(_CARRYING_STATE))
def test_a_finite_carried_log_e_max_is_still_the_running_max(name: str) -> None:
    log_e = _log_e_max(_CARRYING_STATE[name](None))
    assert math.isfinite(log_e)
    assert _log_e_max(_CARRYING_STATE[name](log_e + 5.0)) == log_e + 5.0
    assert _log_e_max(_CARRYING_STATE[name](log_e - 5.0)) == log_e


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: sq.normal_mixture_log_e_value(0.0, 0.0, 1.0), "variance"),
        (lambda: sq.normal_mixture_log_e_value(0.0, 1.0, -1.0), "tau2"),
        (lambda: sq.normal_mixture_log_e_value(math.nan, 1.0, 1.0), "estimate"),
        (lambda: sq.normal_mixture_log_e_value(0.0, [1.0, math.nan], 1.0), "variance"),
        (lambda: sq.normal_mixture_radius(1.0, 1.0, 1.5), "alpha"),
        (lambda: sq.one_sided_normal_mixture_radius(1.0, 1.0, 0.6), "alpha"),
        (lambda: sq.optimal_tau2(0.0, 0.05), "variance_at_tuning_point"),
        (lambda: sq.tau2_for_proportions(1.0, 100, 0.05), "baseline"),
        (lambda: sq.sequential_test_proportions(5, 10, 5, 10), "tau2 or planned_n"),
        (
            lambda: sq.sequential_test_proportions(5, 10, 5, 10, tau2=1.0, planned_n_per_variant=10),
            "not both",
        ),
        (lambda: sq.sequential_test_proportions(11, 10, 5, 10, tau2=1.0), "control successes"),
        (lambda: sq.sequential_test_proportions(5, 0, 5, 10, tau2=1.0), "control trials"),
        (lambda: sq.sequential_test_proportions(5, 10, 5, 10, tau2=1.0, alpha=0.0), "alpha"),
        (lambda: sq.sequential_test_proportions(5, 10, 5, 10, planned_n_per_variant=-3), "planned_n"),
        (
            lambda: sq.sequential_test_proportions(5, 10, 5, 10, tau2=1.0, previous_max_log_e=math.nan),
            "previous_max_log_e",
        ),
        (lambda: sq.sequential_test_means(1, 0.0, 1.0, 10, 0.0, 1.0, tau2=1.0), "control_n"),
        (lambda: sq.sequential_test_means(10, 0.0, 0.0, 10, 0.0, 0.0, tau2=1.0), "degenerate"),
        (lambda: sq.sequential_test_means(10, 0.0, -1.0, 10, 0.0, 1.0, tau2=1.0), "control_sd"),
        (lambda: sq.sequential_noninferiority(5, 10, 5, 10, margin=-0.1, tau2=1.0), "margin"),
        (lambda: sq.sequential_noninferiority(5, 10, 5, 10, margin=0.1, tau2=1.0, alpha=0.5), "alpha"),
        (
            lambda: sq.sequential_noninferiority(
                5, 10, 5, 10, margin=1.0, relative=True, higher_is_worse=False, tau2=1.0
            ),
            "relative margin",
        ),
        (
            lambda: sq.sequential_noninferiority_means(
                10, 0.0, 1.0, 10, 1.0, 1.0, margin=0.1, relative=True, tau2=1.0
            ),
            "control mean",
        ),
    ],
)
def test_invalid_input(call: object, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        call()  # type: ignore[operator]


def test_analyze_and_the_operator_share_one_practical_threshold_rule() -> None:
    from modelrollout.stats.results import meets_practical_threshold

    assert meets_practical_threshold(0.02, None)
    assert meets_practical_threshold(None, None)
    assert meets_practical_threshold(0.05, 0.05)
    assert not meets_practical_threshold(0.049, 0.05)
    assert not meets_practical_threshold(None, 0.05)
    assert meets_practical_threshold(0.0, 0.0)


def test_the_scalar_restricted_rates_are_the_vectorised_ones_bit_for_bit() -> None:
    """The guardrails' plain-float bisection (40x faster on one pair of arms) takes the same steps
    as the vectorised one: equal to the last bit over random counts and margins, empty and
    all-success arms included."""
    from modelrollout.stats.sequential import _restricted_rates_scalar

    rng = np.random.default_rng(7)
    for _ in range(3000):
        cn, tn = float(rng.integers(0, 5000)), float(rng.integers(0, 5000))
        cs = 0.0 if rng.random() < 0.1 else float(rng.integers(0, cn + 1))
        ts = tn if rng.random() < 0.1 else float(rng.integers(0, tn + 1))
        if rng.random() < 0.5:
            factor, shift = 1.0 + float(rng.choice([-1, 1])) * rng.uniform(0, 0.9), 0.0
        else:
            factor, shift = 1.0, float(rng.choice([-1, 1])) * rng.uniform(0, 0.5)
        counts = (cs + 1, cn + 2, ts + 1, tn + 2)
        vectorised = tuple(float(x) for x in sq.restricted_rates(*counts, factor=factor, shift=shift))
        assert _restricted_rates_scalar(*counts, factor, shift) == vectorised
