"""Bayesian comparison of a challenger (treatment) with the champion (control).

Two conjugate models over aggregate data:

* :func:`beta_binomial` for proportions: each arm's rate has a ``Beta(a, b)`` prior (default
  ``Beta(1, 1)``, uniform) and the posterior ``Beta(a + s, b + n - s)`` after ``s`` successes in
  ``n`` trials.
* :func:`normal_means` for means: a flat prior on each arm's mean and a normal likelihood with the
  sample variance plugged in, so the posterior of each mean is ``N(mean, sd^2 / n)`` and the
  difference is normal (the large-sample normal approximation of the exact Student-t posterior).

Both report the posterior probability that the challenger is better, the expected loss of each
choice (Stucchio 2015), and equal-tailed credible intervals of the difference and the relative
lift. Everything is deterministic: probabilities, losses and quantiles come from one-dimensional
numerical integration with ``scipy.integrate.quad`` and root finding with
``scipy.optimize.brentq`` (no Monte Carlo), so the same counts always give the same answer.

:func:`decide` turns a result into a :class:`~modelrollout.stats.results.Verdict`.

References
----------
.. [1] Gelman, A., Carlin, J. B., Stern, H. S., Dunson, D. B., Vehtari, A., Rubin, D. B. (2013).
   Bayesian Data Analysis, 3rd ed. CRC Press. Sections 2.4 (beta-binomial) and 3.2 (normal).
.. [2] Miller, E. (2015). Formulas for Bayesian A/B testing.
   https://www.evanmiller.org/bayesian-ab-testing.html
.. [3] Stucchio, C. (2015). Bayesian A/B testing at VWO. VWO technical whitepaper.
.. [4] Kohavi, R., Tang, D., Xu, Y. (2020). Trustworthy Online Controlled Experiments. Cambridge
   University Press.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from scipy import integrate, optimize, special

from modelrollout.errors import InvalidInputError
from modelrollout.stats import _validate
from modelrollout.stats.results import Interval, Verdict

__all__ = [
    "DEFAULT_PRIOR_ALPHA",
    "DEFAULT_PRIOR_BETA",
    "BayesResult",
    "beta_binomial",
    "decide",
    "normal_means",
]

Direction = Literal["increase", "decrease"]

DEFAULT_PRIOR_ALPHA = 1.0
"""Default prior ``Beta(1, 1)``: uniform on [0, 1], worth two pseudo-observations."""
DEFAULT_PRIOR_BETA = 1.0

# Posterior mass left out of the integration range on each side.
_TAIL = 1e-15
_QUAD = {"epsabs": 1e-13, "epsrel": 1e-10, "limit": 500}
# The normal posterior is integrated over mean +- _Z_RANGE standard deviations.
_Z_RANGE = 9.0

_BB_METHOD = "Beta-Binomial posterior comparison"
_BB_REFERENCE = (
    "Gelman et al. (2013), Bayesian Data Analysis, sec. 2.4; Miller (2015), Formulas for Bayesian "
    "A/B testing; Stucchio (2015), Bayesian A/B testing at VWO"
)
_NORMAL_METHOD = "normal posterior of the difference of means (flat prior)"
_NORMAL_REFERENCE = "Gelman et al. (2013), Bayesian Data Analysis, sec. 3.2; Stucchio (2015)"


@dataclass(frozen=True)
class BayesResult:
    """Posterior comparison of the challenger (treatment) with the champion (control).

    Attributes
    ----------
    control_estimate, treatment_estimate : float
        Posterior means of each arm's metric.
    difference : float
        Posterior mean of treatment minus control.
    ci : Interval
        Equal-tailed credible interval of the difference at ``credible_level``.
    relative_lift : float
        ``treatment_estimate / control_estimate - 1`` (NaN when the control estimate is 0).
    relative_lift_ci : Interval
        Equal-tailed credible interval of ``treatment / control - 1`` (the posterior quantiles of
        the ratio); ``(-inf, inf)`` when the control posterior is not clearly positive.
    probability_better : float
        Posterior probability that the challenger is better in ``direction``.
    expected_loss_treatment : float
        Expected loss of choosing the challenger: ``E[max(control - treatment, 0)]`` when higher is
        better, ``E[max(treatment - control, 0)]`` when lower is better; on the metric's scale.
    expected_loss_control : float
        Expected loss of keeping the champion (the opposite).
    credible_level : float
        Coverage of the credible intervals.
    direction : {"increase", "decrease"}
        Which way is better for this metric.
    posterior : dict
        Posterior parameters (Beta shape parameters or normal means and standard errors).
    """

    method: str
    reference: str
    control_estimate: float
    treatment_estimate: float
    difference: float
    ci: Interval
    relative_lift: float
    relative_lift_ci: Interval
    probability_better: float
    expected_loss_treatment: float
    expected_loss_control: float
    credible_level: float
    direction: str
    posterior: dict[str, float] = field(default_factory=dict)

    def decision(self, threshold: float = 0.95, loss_tolerance: float = math.inf) -> Verdict:
        """Shortcut for :func:`decide`."""
        return decide(self, threshold=threshold, loss_tolerance=loss_tolerance)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci"] = self.ci.as_list()
        d["relative_lift_ci"] = self.relative_lift_ci.as_list()
        return d


def decide(result: BayesResult, *, threshold: float = 0.95, loss_tolerance: float = math.inf) -> Verdict:
    """The decision rule for the ``bayesian`` analysis.

    * ``ROLLOUT_CHALLENGER`` when ``probability_better >= threshold`` and
      ``expected_loss_treatment <= loss_tolerance`` (the challenger is probably better, and if it
      is not, little is lost);
    * ``KEEP_CHAMPION`` when ``probability_better <= 1 - threshold``;
    * ``INCONCLUSIVE`` otherwise.

    Parameters
    ----------
    result : BayesResult
    threshold : float
        In (0.5, 1); default 0.95.
    loss_tolerance : float
        Largest acceptable expected loss of choosing the challenger, on the metric's scale (an
        absolute difference of rates or means), >= 0. Default ``inf``: no loss constraint; the
        policy should set it, e.g. to a fraction of the minimum detectable effect.

    References
    ----------
    .. [1] Stucchio, C. (2015). Bayesian A/B testing at VWO (the "threshold of caring" on the
       expected loss).
    """
    thr = _validate.finite("threshold", threshold)
    if not 0.5 < thr < 1.0:
        raise InvalidInputError(f"threshold must be in (0.5, 1), got {threshold!r}")
    try:
        tol = float(loss_tolerance)
    except (TypeError, ValueError):
        raise InvalidInputError(f"loss_tolerance must be a number, got {loss_tolerance!r}") from None
    if math.isnan(tol) or tol < 0:
        raise InvalidInputError(f"loss_tolerance must be >= 0, got {loss_tolerance!r}")
    if result.probability_better >= thr and result.expected_loss_treatment <= tol:
        return Verdict.ROLLOUT_CHALLENGER
    if result.probability_better <= 1.0 - thr:
        return Verdict.KEEP_CHAMPION
    return Verdict.INCONCLUSIVE


def beta_binomial(
    control_successes: float,
    control_trials: float,
    treatment_successes: float,
    treatment_trials: float,
    *,
    prior_alpha: float = DEFAULT_PRIOR_ALPHA,
    prior_beta: float = DEFAULT_PRIOR_BETA,
    direction: Direction = "increase",
    credible_level: float = 0.95,
) -> BayesResult:
    """Beta-Binomial comparison of two proportions.

    Each arm's rate has the prior ``Beta(prior_alpha, prior_beta)`` (default ``Beta(1, 1)``) and the
    posterior ``Beta(prior_alpha + s, prior_beta + n - s)``; the arms are independent.

    * ``P(p_t > p_c) = integral f_c(x) (1 - F_t(x)) dx`` (``F`` the regularised incomplete beta
      function), integrated numerically over the central ``1 - 2e-15`` of the control posterior.
      It equals Miller's (2015) closed-form sum when the parameters are integers, and works for
      any real parameters (Prometheus counts are floats).
    * ``E[max(p_c - p_t, 0)] = integral f_c(x) (x F_t(x; a_t, b_t) - m_t F_t(x; a_t + 1, b_t)) dx``,
      with ``m_t`` the treatment posterior mean, using ``E[p 1(p <= x)] = m F(x; a + 1, b)`` for a
      beta variable; the other loss by exchanging the arms.
    * Credible intervals of ``p_t - p_c`` and ``p_t / p_c - 1`` invert their posterior CDFs,
      ``P(p_t <= p_c + d)`` and ``P(p_t <= r p_c)`` (each a one-dimensional integral), with
      ``brentq``: numerical quantiles, no sampling, so they are reproducible.

    Parameters
    ----------
    control_successes, control_trials, treatment_successes, treatment_trials : float
        Counts, ``0 <= successes <= trials``; zero trials leave that arm at its prior.
    prior_alpha, prior_beta : float
        Shape parameters of the common prior, > 0.
    direction : {"increase", "decrease"}
        ``"increase"`` when a higher rate is better (conversion), ``"decrease"`` when lower is
        better (an error rate).
    credible_level : float
        In (0, 1); default 0.95.

    Returns
    -------
    BayesResult

    References
    ----------
    .. [1] Gelman et al. (2013). Bayesian Data Analysis, 3rd ed., sec. 2.4.
    .. [2] Miller, E. (2015). Formulas for Bayesian A/B testing.
    .. [3] Stucchio, C. (2015). Bayesian A/B testing at VWO.
    """
    sc, nc = _counts("control", control_successes, control_trials)
    st, nt = _counts("treatment", treatment_successes, treatment_trials)
    a0 = _validate.positive("prior_alpha", prior_alpha)
    b0 = _validate.positive("prior_beta", prior_beta)
    dirn = _direction(direction)
    level = _validate.probability("credible_level", credible_level, open_interval=True)

    control = _BetaPosterior(a0 + sc, b0 + nc - sc)
    treatment = _BetaPosterior(a0 + st, b0 + nt - st)

    # P(p_t > p_c); P(p_t < p_c) is its complement (ties have probability 0).
    p_t_greater = _clip01(_integrate(lambda x: control.pdf(x) * treatment.sf(x), control, treatment.mean))
    p_t_less = _clip01(_integrate(lambda x: control.pdf(x) * treatment.cdf(x), control, treatment.mean))
    # E[max(p_c - p_t, 0)] and E[max(p_t - p_c, 0)], each integrated over the arm that is not inside.
    c_minus_t = max(
        0.0, _integrate(lambda x: control.pdf(x) * treatment.partial_below(x), control, treatment.mean)
    )
    t_minus_c = max(
        0.0, _integrate(lambda y: treatment.pdf(y) * control.partial_below(y), treatment, control.mean)
    )

    tail = (1.0 - level) / 2.0

    def diff_cdf(d: float) -> float:
        return _integrate(lambda x: control.pdf(x) * treatment.cdf(x + d), control, treatment.mean - d)

    d_lo = treatment.lo - control.hi
    d_hi = treatment.hi - control.lo
    ci = Interval(_quantile(diff_cdf, tail, d_lo, d_hi), _quantile(diff_cdf, 1 - tail, d_lo, d_hi))

    def log_ratio_cdf(u: float) -> float:
        r = math.exp(u)
        return _integrate(lambda x: control.pdf(x) * treatment.cdf(r * x), control, treatment.mean / r)

    u_lo = math.log(treatment.lo) - math.log(control.hi)
    u_hi = math.log(treatment.hi) - math.log(control.lo)
    ratio_ci = Interval(
        math.exp(_quantile(log_ratio_cdf, tail, u_lo, u_hi)) - 1.0,
        math.exp(_quantile(log_ratio_cdf, 1 - tail, u_lo, u_hi)) - 1.0,
    )

    better, loss_t, loss_c = (
        (p_t_greater, c_minus_t, t_minus_c) if dirn == "increase" else (p_t_less, t_minus_c, c_minus_t)
    )
    return BayesResult(
        method=_BB_METHOD,
        reference=_BB_REFERENCE,
        control_estimate=control.mean,
        treatment_estimate=treatment.mean,
        difference=treatment.mean - control.mean,
        ci=ci,
        relative_lift=treatment.mean / control.mean - 1.0,
        relative_lift_ci=ratio_ci,
        probability_better=better,
        expected_loss_treatment=loss_t,
        expected_loss_control=loss_c,
        credible_level=level,
        direction=dirn,
        posterior={
            "control_alpha": control.a,
            "control_beta": control.b,
            "treatment_alpha": treatment.a,
            "treatment_beta": treatment.b,
        },
    )


def normal_means(
    control_n: float,
    control_mean: float,
    control_sd: float,
    treatment_n: float,
    treatment_mean: float,
    treatment_sd: float,
    *,
    direction: Direction = "increase",
    credible_level: float = 0.95,
) -> BayesResult:
    """Posterior comparison of two means from summary statistics (flat prior).

    With a flat prior on each mean and the sample standard deviation plugged in, the posterior of
    each mean is ``N(mean_i, sd_i^2 / n_i)`` and of the difference ``D = mu_t - mu_c`` is
    ``N(delta, s^2)``, ``delta = mean_t - mean_c``, ``s^2 = sd_t^2 / n_t + sd_c^2 / n_c``. (The
    exact posterior under the reference prior is a Student t per arm; at the sample sizes of an
    online experiment the normal is indistinguishable.) Then, in closed form,

    * ``P(D > 0) = Phi(delta / s)``;
    * for ``X ~ N(m, s^2)``: ``E[max(X, 0)] = m Phi(m / s) + s phi(m / s)``, so the loss of
      choosing the challenger (higher is better) is ``E[max(-D, 0)]`` and of keeping the champion
      ``E[max(D, 0)]``;
    * the credible interval of D is ``delta +- z s``.

    The interval of the relative lift ``mu_t / mu_c - 1`` inverts ``P(mu_t <= r mu_c)`` (a
    one-dimensional integral over the control posterior) numerically; it is only defined when the
    control posterior is clearly positive (``mean_c > 9 se_c``), else it is ``(-inf, inf)``.

    Parameters
    ----------
    control_n, treatment_n : float
        Sample sizes, >= 2.
    control_mean, treatment_mean : float
        Sample means.
    control_sd, treatment_sd : float
        Sample standard deviations, > 0.
    direction : {"increase", "decrease"}
        Which way is better.
    credible_level : float
        In (0, 1); default 0.95.

    Returns
    -------
    BayesResult

    References
    ----------
    .. [1] Gelman et al. (2013). Bayesian Data Analysis, 3rd ed., sec. 3.2-3.3.
    .. [2] Stucchio, C. (2015). Bayesian A/B testing at VWO.
    """
    nc = _sample_size("control_n", control_n)
    nt = _sample_size("treatment_n", treatment_n)
    mc = _validate.finite("control_mean", control_mean)
    mt = _validate.finite("treatment_mean", treatment_mean)
    sdc = _validate.positive("control_sd", control_sd)
    sdt = _validate.positive("treatment_sd", treatment_sd)
    dirn = _direction(direction)
    level = _validate.probability("credible_level", credible_level, open_interval=True)

    se_c = sdc / math.sqrt(nc)
    se_t = sdt / math.sqrt(nt)
    delta = mt - mc
    s = math.hypot(se_c, se_t)
    z = delta / s
    p_t_greater = float(special.ndtr(z))
    p_t_less = float(special.ndtr(-z))
    t_minus_c = _normal_positive_part(delta, s)  # E[max(D, 0)]
    c_minus_t = _normal_positive_part(-delta, s)  # E[max(-D, 0)]
    tail = (1.0 - level) / 2.0
    zq = float(special.ndtri(1.0 - tail))
    ci = Interval(delta - zq * s, delta + zq * s)

    if mc - _Z_RANGE * se_c > 0:

        def log_ratio_cdf(u: float) -> float:
            r = math.exp(u)
            # P(mu_t <= r mu_c) with mu_c = mc + se_c * w, w standard normal.
            return _integrate_z(lambda w: float(special.ndtr((r * (mc + se_c * w) - mt) / se_t)))

        lo_t, hi_t = mt - _Z_RANGE * se_t, mt + _Z_RANGE * se_t
        lo_c, hi_c = mc - _Z_RANGE * se_c, mc + _Z_RANGE * se_c
        if lo_t > 0:
            u_lo, u_hi = math.log(lo_t / hi_c), math.log(hi_t / lo_c)
            ratio_ci = Interval(
                math.exp(_quantile(log_ratio_cdf, tail, u_lo, u_hi)) - 1.0,
                math.exp(_quantile(log_ratio_cdf, 1 - tail, u_lo, u_hi)) - 1.0,
            )
        else:
            # The ratio may be <= 0: solve on the ratio itself.
            def ratio_cdf(r: float) -> float:
                return _integrate_z(lambda w: float(special.ndtr((r * (mc + se_c * w) - mt) / se_t)))

            r_lo, r_hi = min(lo_t / lo_c, lo_t / hi_c), max(hi_t / lo_c, hi_t / hi_c)
            ratio_ci = Interval(
                _quantile(ratio_cdf, tail, r_lo, r_hi) - 1.0, _quantile(ratio_cdf, 1 - tail, r_lo, r_hi) - 1.0
            )
    else:
        ratio_ci = Interval(-math.inf, math.inf)

    better, loss_t, loss_c = (
        (p_t_greater, c_minus_t, t_minus_c) if dirn == "increase" else (p_t_less, t_minus_c, c_minus_t)
    )
    return BayesResult(
        method=_NORMAL_METHOD,
        reference=_NORMAL_REFERENCE,
        control_estimate=mc,
        treatment_estimate=mt,
        difference=delta,
        ci=ci,
        relative_lift=mt / mc - 1.0 if mc != 0 else math.nan,
        relative_lift_ci=ratio_ci,
        probability_better=better,
        expected_loss_treatment=loss_t,
        expected_loss_control=loss_c,
        credible_level=level,
        direction=dirn,
        posterior={
            "control_mean": mc,
            "control_se": se_c,
            "treatment_mean": mt,
            "treatment_se": se_t,
        },
    )


# --- helpers -----------------------------------------------------------------------------------


class _BetaPosterior:
    """A Beta(a, b) distribution through scipy.special (fast on scalars)."""

    def __init__(self, a: float, b: float) -> None:
        self.a = a
        self.b = b
        self.mean = a / (a + b)
        self._log_norm = float(special.betaln(a, b))
        # The central 1 - 2 * _TAIL of the mass; kept strictly inside (0, 1).
        self.lo = max(float(special.betaincinv(a, b, _TAIL)), 1e-300)
        self.hi = min(float(special.betainccinv(a, b, _TAIL)), 1.0 - 1e-16)

    def pdf(self, x: float) -> float:
        if x <= 0.0 or x >= 1.0:
            return 0.0
        return math.exp((self.a - 1.0) * math.log(x) + (self.b - 1.0) * math.log1p(-x) - self._log_norm)

    def cdf(self, x: float) -> float:
        if x <= 0.0:
            return 0.0
        if x >= 1.0:
            return 1.0
        return float(special.betainc(self.a, self.b, x))

    def sf(self, x: float) -> float:
        if x <= 0.0:
            return 1.0
        if x >= 1.0:
            return 0.0
        return float(special.betaincc(self.a, self.b, x))

    def partial_below(self, x: float) -> float:
        """E[max(x - p, 0)] = x F(x; a, b) - mean F(x; a + 1, b)."""
        if x <= 0.0:
            return 0.0
        if x >= 1.0:
            return x - self.mean
        return max(0.0, x * self.cdf(x) - self.mean * float(special.betainc(self.a + 1.0, self.b, x)))


def _integrate(f: Callable[[float], float], outer: _BetaPosterior, step: float) -> float:
    """Integrate ``f`` over the central range of ``outer``, with a break where ``f`` steps."""
    points = [step] if outer.lo < step < outer.hi else None
    val, _ = integrate.quad(f, outer.lo, outer.hi, points=points, **_QUAD)
    return float(val)


def _integrate_z(f: Callable[[float], float]) -> float:
    """E[f(W)] for a standard normal W, over [-_Z_RANGE, _Z_RANGE]."""
    val, _ = integrate.quad(
        lambda w: f(w) * math.exp(-0.5 * w * w) / math.sqrt(2.0 * math.pi),
        -_Z_RANGE,
        _Z_RANGE,
        **_QUAD,
    )
    return float(val)


def _quantile(cdf: Callable[[float], float], q: float, lo: float, hi: float) -> float:
    """Solve ``cdf(x) = q`` on a bracket whose ends hold (nearly) all the mass."""
    f_lo, f_hi = cdf(lo) - q, cdf(hi) - q
    if f_lo >= 0:
        return lo
    if f_hi <= 0:
        return hi
    return float(optimize.brentq(lambda x: cdf(x) - q, lo, hi, xtol=1e-14, rtol=1e-12, maxiter=200))


def _normal_positive_part(mean: float, sd: float) -> float:
    """E[max(X, 0)] for X ~ N(mean, sd^2)."""
    z = mean / sd
    return float(mean * special.ndtr(z) + sd * math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi))


def _counts(prefix: str, successes: float, trials: float) -> tuple[float, float]:
    s = _validate.count(f"{prefix}_successes", successes)
    n = _validate.count(f"{prefix}_trials", trials)
    if s > n:
        raise InvalidInputError(f"{prefix}_successes ({successes!r}) must be <= {prefix}_trials ({trials!r})")
    return s, n


def _sample_size(name: str, value: float) -> float:
    v = _validate.finite(name, value)
    if v < 2:
        raise InvalidInputError(f"{name} must be >= 2, got {value!r}")
    return v


def _direction(direction: str) -> Direction:
    if direction == "increase":
        return "increase"
    if direction == "decrease":
        return "decrease"
    raise InvalidInputError(f"direction must be 'increase' or 'decrease', got {direction!r}")


def _clip01(x: float) -> float:
    return min(1.0, max(0.0, x))
