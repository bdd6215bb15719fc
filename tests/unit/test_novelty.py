"""Tests of modelrollout.stats.novelty: the recursive residuals against statsmodels, the e-value
against a direct integration of its mixture, the O(1) update against the vectorised path, and a
Monte Carlo of the type-I error with a look after every window."""

from __future__ import annotations

import math

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import integrate, stats
from statsmodels.stats.diagnostic import recursive_olsresiduals

from modelrollout.errors import InvalidInputError
from modelrollout.stats import novelty as nv
from modelrollout.stats.sequential import optimal_tau2

pytestmark = pytest.mark.unit


def test_recursive_residuals_match_statsmodels_weighted_least_squares() -> None:
    """The residual of window k is the statsmodels recursive residual of the constant model fitted
    by weighted least squares (rows scaled by 1/sqrt(v), so the errors have variance 1):
    statsmodels' ``rresid_scaled``, the prediction error over sqrt(1 + x' (X'X)^-1 x)."""
    rng = np.random.default_rng(11)
    v = rng.uniform(0.2, 3.0, 12)
    g = rng.normal(0.4, np.sqrt(v)) - 0.1 * np.arange(12)
    fit = sm.OLS(g / np.sqrt(v), (1.0 / np.sqrt(v))[:, None]).fit()
    scaled = recursive_olsresiduals(fit, skip=1)[4]
    oracle = -np.asarray(scaled)[1:]  # positive: a lower recent gain
    assert nv.recursive_residuals(g, v) == pytest.approx(oracle, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("s", "n", "tau2"), [(0.0, 1, 1.0), (2.5, 4, 0.6), (-1.5, 3, 0.6), (6.0, 20, 0.2)])
def test_e_value_is_the_half_normal_mixture_of_the_likelihood_ratios(s: float, n: int, tau2: float) -> None:
    tau = math.sqrt(tau2)

    def integrand(theta: float) -> float:
        return 2.0 * float(stats.norm.pdf(theta, scale=tau)) * math.exp(theta * s - n * theta * theta / 2.0)

    direct, _ = integrate.quad(integrand, 0.0, np.inf, epsabs=0, epsrel=1e-11, limit=200)
    assert float(nv.decay_log_e_value(s, n, tau2)) == pytest.approx(math.log(direct), rel=1e-8, abs=1e-10)


def test_no_residual_no_evidence() -> None:
    assert float(nv.decay_log_e_value(0.0, 0, 1.0)) == 0.0
    state, residual = nv.update(nv.DecayState(), 0.3, 0.01, 1.0)
    assert residual is None
    assert state.max_log_e_value == 0.0
    assert state.p_value == 1.0
    assert state.mean_gain == pytest.approx(0.3)


def test_the_update_takes_the_same_path_as_the_vectorised_test() -> None:
    rng = np.random.default_rng(3)
    v = rng.uniform(0.5, 2.0, 15)
    g = rng.normal(1.0, np.sqrt(v)) - 0.4 * np.arange(15)
    tau2 = nv.decay_tau2(8, 0.05)
    path = nv.decay_log_e_path(g, v, tau2)
    state = nv.DecayState()
    for k, (gain, var) in enumerate(zip(g, v, strict=True)):
        state, _ = nv.update(state, float(gain), float(var), tau2)
        assert state.max_log_e_value == pytest.approx(float(np.max(path[: k + 1])), rel=1e-12)
    assert state.windows == 15
    assert state.looks == 14
    assert state.decayed(0.05)
    assert state.p_value < 0.05


def test_tau2_is_tuned_to_the_planned_windows() -> None:
    assert nv.decay_tau2(8, 0.05) == pytest.approx(optimal_tau2(1.0 / 7, 0.05, one_sided=True))
    assert nv.decay_tau2(1, 0.05) == nv.decay_tau2(2, 0.05)  # at least one residual


def test_bad_input_is_refused() -> None:
    with pytest.raises(InvalidInputError):
        nv.recursive_residuals([1.0, 2.0], [1.0, 0.0])
    with pytest.raises(InvalidInputError):
        nv.recursive_residuals([1.0, 2.0], [1.0])
    with pytest.raises(InvalidInputError):
        nv.update(nv.DecayState(), math.nan, 1.0, 1.0)
    with pytest.raises(InvalidInputError):
        nv.decay_log_e_value(1.0, -1, 1.0)


# --- Monte Carlo: the chance that a lift that does not decay is ever called decaying ---------------

RUNS = 4000
ALPHA = 0.05
#: Four Monte Carlo standard errors of a rate at alpha over RUNS runs (0.014).
TOLERANCE = 4 * math.sqrt(ALPHA * (1 - ALPHA) / RUNS)


@pytest.mark.parametrize(("planned", "windows"), [(7, 7), (7, 60), (24, 24)])
def test_type_one_error_with_a_look_after_every_window(planned: int, windows: int) -> None:
    """Binomial counts per window (not Gaussian), traffic that varies by window, a constant 10 %
    lift, and a look after every window, up to far past the plan: the e-process must cross
    1/alpha in at most alpha of the runs (plus 4 Monte Carlo s.e.)."""
    rng = np.random.default_rng(2026)
    n = rng.integers(2_000, 20_000, size=(RUNS, windows))
    pc, pt = 0.1, 0.11
    sc, st = rng.binomial(n, pc), rng.binomial(n, pt)
    rc, rt = (sc + 1) / (n + 2), (st + 1) / (n + 2)  # Agresti-Caffo, as the operator's windows
    gains = rt - rc
    variances = rc * (1 - rc) / (n + 2) + rt * (1 - rt) / (n + 2)
    log_e = nv.decay_log_e_path(gains, variances, nv.decay_tau2(planned, ALPHA))
    rate = float((log_e.max(axis=1) >= math.log(1 / ALPHA)).mean())
    assert rate <= ALPHA + TOLERANCE


def test_a_decaying_gain_is_found() -> None:
    """The other side: a gain that halves every window from 4 standard errors is found in most runs."""
    rng = np.random.default_rng(7)
    windows = 8
    v = np.full((2000, windows), 1.0)
    g = rng.normal(4.0 * 0.5 ** np.arange(windows), 1.0, size=v.shape)
    log_e = nv.decay_log_e_path(g, v, nv.decay_tau2(windows, ALPHA))
    assert float((log_e.max(axis=1) >= math.log(1 / ALPHA)).mean()) > 0.8
