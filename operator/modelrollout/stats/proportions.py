"""Fixed-horizon tests for proportions, from aggregate counts (control first, treatment second).

* :func:`ztest_proportions` -- the two-proportion z-test with the pooled standard error, and a
  Wald (unpooled) interval for the difference;
* :func:`chi2_proportions` -- Pearson's chi-square test of the 2x2 table, optionally with Yates'
  continuity correction;
* :func:`relative_lift_ci` -- the interval of ``p_t / p_c - 1`` from the Katz log method;
* :func:`practically_significant` -- whether an interval lies wholly beyond a practical
  threshold (works on any :class:`~modelrollout.stats.results.ComparisonResult`).

Each test is meant to be evaluated once, at the planned sample size (see
:mod:`modelrollout.stats.power`); looking repeatedly inflates the false-positive rate.

References
----------
.. [1] Agresti, A. (2013). *Categorical Data Analysis*, 3rd ed., Wiley, chapter 3 (Wald
   interval for a difference of proportions, relative risk, Pearson chi-square).
.. [2] Yates, F. (1934). Contingency tables involving small numbers and the chi-square test.
   *Supplement to the Journal of the Royal Statistical Society*, 1(2), 217-235.
.. [3] Katz, D., Baptista, J., Azen, S. P., Pike, M. C. (1978). Obtaining confidence intervals
   for the risk ratio in cohort studies. *Biometrics*, 34(3), 469-474.
.. [4] Kohavi, R., Tang, D., Xu, Y. (2020). *Trustworthy Online Controlled Experiments*,
   Cambridge University Press, chapter 17.
"""

from __future__ import annotations

import math
from typing import Literal

from scipy import stats

from modelrollout.errors import InvalidInputError
from modelrollout.stats import _validate as v
from modelrollout.stats.results import ComparisonResult, Interval

_REF_Z = (
    "Agresti (2013), Categorical Data Analysis, 3rd ed., ch. 3; Katz et al. (1978), Biometrics "
    "34:469-474 (log relative-risk CI); Kohavi, Tang, Xu (2020), Trustworthy Online Controlled "
    "Experiments, ch. 17"
)
_REF_CHI2 = (
    "Agresti (2013), Categorical Data Analysis, 3rd ed., ch. 3; Yates (1934), JRSS Suppl. "
    "1:217-235 (continuity correction); Katz et al. (1978), Biometrics 34:469-474"
)


def _z(alpha: float) -> float:
    return float(stats.norm.ppf(1.0 - alpha / 2.0))


def _counts(
    control_successes: float, control_trials: float, treatment_successes: float, treatment_trials: float
) -> tuple[float, float, float, float]:
    x1, n1 = v.successes_trials("control", control_successes, control_trials)
    x2, n2 = v.successes_trials("treatment", treatment_successes, treatment_trials)
    return x1, n1, x2, n2


def _wald_diff_ci(p1: float, n1: float, p2: float, n2: float, alpha: float) -> tuple[Interval, float]:
    se = math.sqrt(p1 * (1.0 - p1) / n1 + p2 * (1.0 - p2) / n2)
    d = p2 - p1
    h = _z(alpha) * se
    return Interval(d - h, d + h), se


def _katz(x1: float, n1: float, x2: float, n2: float, alpha: float) -> tuple[float, Interval]:
    if x1 == 0:
        return math.nan, Interval(-1.0, math.inf)
    lift = (x2 / n2) / (x1 / n1) - 1.0
    if x2 == 0:
        return lift, Interval(-1.0, math.inf)
    log_rr = math.log((x2 / n2) / (x1 / n1))
    se = math.sqrt(1.0 / x2 - 1.0 / n2 + 1.0 / x1 - 1.0 / n1)
    h = _z(alpha) * se
    return lift, Interval(math.exp(log_rr - h) - 1.0, math.exp(log_rr + h) - 1.0)


def relative_lift_ci(
    control_successes: float,
    control_trials: float,
    treatment_successes: float,
    treatment_trials: float,
    *,
    alpha: float = 0.05,
) -> tuple[float, Interval]:
    """Relative lift ``p_t / p_c - 1`` and its two-sided (1 - alpha) interval (Katz log method).

    The delta method on log(p_t / p_c) gives
    ``Var(log RR) ~ 1/x_t - 1/n_t + 1/x_c - 1/n_c``; the normal interval on the log scale is
    exponentiated and shifted by -1. It is asymmetric, always above -1, and is what statsmodels
    calls ``confint_proportions_2indep(compare='ratio', method='log')``.

    When the control has no success the lift is undefined (NaN) and the interval is (-1, inf);
    when only the treatment has none the lift is -1 and the interval is (-1, inf).

    Parameters
    ----------
    control_successes, control_trials, treatment_successes, treatment_trials : float
        Counts, ``0 <= successes <= trials`` and ``trials > 0``.
    alpha : float
        1 - confidence level, in (0, 1).

    Returns
    -------
    (float, Interval)
        The point estimate and the interval of the relative lift.

    References
    ----------
    .. [1] Katz, D., Baptista, J., Azen, S. P., Pike, M. C. (1978). Obtaining confidence
       intervals for the risk ratio in cohort studies. *Biometrics*, 34(3), 469-474.
    .. [2] Agresti, A. (2013). *Categorical Data Analysis*, 3rd ed., chapter 3.
    """
    x1, n1, x2, n2 = _counts(control_successes, control_trials, treatment_successes, treatment_trials)
    a = v.alpha(alpha)
    return _katz(x1, n1, x2, n2, a)


def ztest_proportions(
    control_successes: float,
    control_trials: float,
    treatment_successes: float,
    treatment_trials: float,
    *,
    alpha: float = 0.05,
) -> ComparisonResult:
    """Two-sided two-proportion z-test with the pooled standard error.

    ``z = (p_t - p_c) / sqrt(p (1 - p) (1/n_c + 1/n_t))`` with the pooled ``p = (x_c + x_t) /
    (n_c + n_t)``; the p-value is ``2 (1 - Phi(|z|))``. The interval of the difference uses the
    unpooled (Wald) standard error ``sqrt(p_c q_c / n_c + p_t q_t / n_t)``, the relative lift
    interval the Katz log method. When both arms are all failures or all successes, z is 0 and the
    p-value is 1.

    Parameters
    ----------
    control_successes, control_trials, treatment_successes, treatment_trials : float
        Counts, ``0 <= successes <= trials`` and ``trials > 0``.
    alpha : float
        Significance level, in (0, 1); also sets the interval's level 1 - alpha.

    Returns
    -------
    ComparisonResult
        ``statistic`` is z; ``extra`` holds ``se_pooled``, ``se_unpooled`` and ``pooled_p``.

    References
    ----------
    .. [1] Agresti, A. (2013). *Categorical Data Analysis*, 3rd ed., chapter 3.
    .. [2] Katz, D., Baptista, J., Azen, S. P., Pike, M. C. (1978). *Biometrics*, 34(3), 469-474.
    .. [3] Kohavi, R., Tang, D., Xu, Y. (2020). *Trustworthy Online Controlled Experiments*,
       chapter 17.
    """
    x1, n1, x2, n2 = _counts(control_successes, control_trials, treatment_successes, treatment_trials)
    a = v.alpha(alpha)
    p1, p2 = x1 / n1, x2 / n2
    pooled = (x1 + x2) / (n1 + n2)
    se0 = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    if se0 == 0.0:
        z, p_value = 0.0, 1.0
    else:
        z = (p2 - p1) / se0
        p_value = float(2.0 * stats.norm.sf(abs(z)))
    ci, se1 = _wald_diff_ci(p1, n1, p2, n2, a)
    lift, lift_ci = _katz(x1, n1, x2, n2, a)
    return ComparisonResult(
        method="two-proportion z-test (pooled SE); Wald CI for the difference; Katz log CI for the lift",
        reference=_REF_Z,
        control_estimate=p1,
        treatment_estimate=p2,
        difference=p2 - p1,
        ci=ci,
        relative_lift=lift,
        relative_lift_ci=lift_ci,
        p_value=p_value,
        alpha=a,
        statistic=z,
        extra={"se_pooled": se0, "se_unpooled": se1, "pooled_p": pooled},
    )


def chi2_proportions(
    control_successes: float,
    control_trials: float,
    treatment_successes: float,
    treatment_trials: float,
    *,
    correction: bool = True,
    alpha: float = 0.05,
) -> ComparisonResult:
    """Pearson's chi-square test of independence on the 2x2 table (arm x outcome).

    ``X^2 = sum (|O - E| - c)^2 / E`` over the four cells, with expected counts from the margins
    and ``c = min(0.5, |O - E|)`` under Yates' correction (``c = 0`` without it); the p-value is
    the chi-square(1) upper tail. Without correction ``X^2`` equals the square of the pooled z of
    :func:`ztest_proportions`. The interval of the difference is the Wald interval and the lift
    interval the Katz log interval (the chi-square test itself has no interval, so with the
    correction they may disagree with the p-value near the boundary). When an outcome column is
    empty (no successes or no failures at all) the statistic is 0 and the p-value 1.

    Parameters
    ----------
    control_successes, control_trials, treatment_successes, treatment_trials : float
        Counts, ``0 <= successes <= trials`` and ``trials > 0``.
    correction : bool
        Apply Yates' continuity correction (the default, like ``scipy.stats.chi2_contingency``).
    alpha : float
        Significance level, in (0, 1).

    Returns
    -------
    ComparisonResult
        ``statistic`` is X^2; ``extra`` holds ``dof`` (1) and ``yates`` (1.0 or 0.0).

    References
    ----------
    .. [1] Agresti, A. (2013). *Categorical Data Analysis*, 3rd ed., chapter 3.
    .. [2] Yates, F. (1934). Contingency tables involving small numbers and the chi-square test.
       *Supplement to the Journal of the Royal Statistical Society*, 1(2), 217-235.
    """
    x1, n1, x2, n2 = _counts(control_successes, control_trials, treatment_successes, treatment_trials)
    a = v.alpha(alpha)
    if not isinstance(correction, bool):
        raise InvalidInputError(f"correction must be a bool, got {correction!r}")
    observed = ((x1, n1 - x1), (x2, n2 - x2))
    n = n1 + n2
    col = (x1 + x2, n - x1 - x2)
    if col[0] == 0 or col[1] == 0:
        chi2, p_value = 0.0, 1.0
    else:
        chi2 = 0.0
        for row, n_row in zip(observed, (n1, n2), strict=True):
            for o, n_col in zip(row, col, strict=True):
                e = n_row * n_col / n
                dev = abs(o - e)
                if correction:
                    dev -= min(0.5, dev)
                chi2 += dev * dev / e
        p_value = float(stats.chi2.sf(chi2, 1))
    p1, p2 = x1 / n1, x2 / n2
    ci, se1 = _wald_diff_ci(p1, n1, p2, n2, a)
    lift, lift_ci = _katz(x1, n1, x2, n2, a)
    name = "Pearson chi-square 2x2" + (" with Yates' correction" if correction else "")
    return ComparisonResult(
        method=f"{name}; Wald CI for the difference; Katz log CI for the lift",
        reference=_REF_CHI2,
        control_estimate=p1,
        treatment_estimate=p2,
        difference=p2 - p1,
        ci=ci,
        relative_lift=lift,
        relative_lift_ci=lift_ci,
        p_value=p_value,
        alpha=a,
        statistic=chi2,
        extra={"dof": 1.0, "yates": 1.0 if correction else 0.0, "se_unpooled": se1},
    )


def practically_significant(
    result: ComparisonResult,
    threshold: float,
    *,
    relative: bool = False,
    direction: Literal["increase", "decrease"] = "increase",
) -> bool:
    """Whether the whole interval lies beyond a practical threshold in the wanted direction.

    For ``direction="increase"`` this is ``ci.low > threshold``; for ``"decrease"`` it is
    ``ci.high < -threshold``. ``relative`` selects the relative-lift interval instead of the
    difference interval. A threshold of 0 reduces to "the interval excludes 0 on the good side".
    This is the "practical significance" boundary of Kohavi et al. (2020): a change is worth
    launching only when the effect is surely larger than what matters to the business.

    Parameters
    ----------
    result : ComparisonResult
        Any comparison (proportions, means, ratio).
    threshold : float
        The smallest effect that matters, >= 0, on the difference scale or (``relative``) as a
        relative lift.
    relative : bool
        Use ``result.relative_lift_ci`` rather than ``result.ci``.
    direction : {"increase", "decrease"}
        Which way is better.

    Returns
    -------
    bool

    References
    ----------
    .. [1] Kohavi, R., Tang, D., Xu, Y. (2020). *Trustworthy Online Controlled Experiments*,
       Cambridge University Press, chapter 2 (statistical versus practical significance).
    """
    t = v.non_negative("threshold", threshold)
    if direction not in ("increase", "decrease"):
        raise InvalidInputError(f"direction must be 'increase' or 'decrease', got {direction!r}")
    ci = result.relative_lift_ci if relative else result.ci
    if math.isnan(ci.low) or math.isnan(ci.high):
        return False
    if direction == "increase":
        return ci.low > t
    return ci.high < -t
