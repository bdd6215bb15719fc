"""Welch's t-test on means from summary statistics (control first, treatment second).

Prometheus gives, per variant, a count, a sum and (when exported) a sum of squares;
:func:`summary_from_sums` turns them into (n, mean, sd) and :func:`welch_ttest_from_sums` runs the
test directly. The test does not assume equal variances: the statistic is
``(m_t - m_c) / sqrt(s_c^2/n_c + s_t^2/n_t)`` referred to a t distribution with the
Welch-Satterthwaite degrees of freedom. The interval of the difference uses the same t quantile;
the interval of the relative lift ``m_t / m_c - 1`` uses the delta method with normal quantiles.

References
----------
.. [1] Welch, B. L. (1947). The generalization of "Student's" problem when several different
   population variances are involved. *Biometrika*, 34(1-2), 28-35.
.. [2] Satterthwaite, F. E. (1946). An approximate distribution of estimates of variance
   components. *Biometrics Bulletin*, 2(6), 110-114.
.. [3] Deng, A., Knoblich, U., Lu, J. (2018). Applying the delta method in metric analytics: a
   practical guide with novel ideas. *Proceedings of KDD 2018*, 233-242 (relative change).
.. [4] Kohavi, R., Tang, D., Xu, Y. (2020). *Trustworthy Online Controlled Experiments*,
   Cambridge University Press, chapter 18 (variance of relative differences).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats

from modelrollout.errors import InvalidInputError
from modelrollout.stats import _validate as v
from modelrollout.stats.results import ComparisonResult, Interval

_REF = (
    "Welch (1947), Biometrika 34:28-35; Satterthwaite (1946), Biometrics Bulletin 2:110-114; "
    "Deng, Knoblich, Lu (2018), KDD (delta method for the relative lift)"
)

# A variance computed as (sum of squares - sum^2 / n) loses about log10(sum_sq / ss) digits to
# cancellation; a negative result no larger than this fraction of the sum of squares is rounding
# and is read as 0.
_ROUNDING = 1e-9


def centered_sum_of_squares(name: str, count: float, total: float, sum_of_squares: float) -> float:
    """``sum (x - mean)^2`` from ``(n, sum x, sum x^2)``, tolerating round-off below zero.

    Parameters
    ----------
    name : str
        Label used in error messages (e.g. ``"control"``).
    count, total, sum_of_squares : float
        The count (> 0), the sum and the sum of squares (>= 0).

    Returns
    -------
    float
        The centered sum of squares, >= 0.

    Raises
    ------
    InvalidInputError
        When the sums are inconsistent (the sum of squares is smaller than ``sum^2 / n`` by more
        than round-off).

    References
    ----------
    .. [1] Chan, T. F., Golub, G. H., LeVeque, R. J. (1983). Algorithms for computing the sample
       variance: analysis and recommendations. *The American Statistician*, 37(3), 242-247.
    """
    n = v.positive(f"{name} count", count)
    s = v.finite(f"{name} sum", total)
    q = v.non_negative(f"{name} sum of squares", sum_of_squares)
    ss = q - s * (s / n)
    if ss < 0:
        if -ss <= _ROUNDING * max(q, 1e-300):
            return 0.0
        raise InvalidInputError(
            f"{name} sums are inconsistent: sum of squares ({sum_of_squares!r}) < sum^2 / count "
            f"({s * s / n!r}); the variance would be negative"
        )
    return ss


@dataclass(frozen=True)
class SummaryStats:
    """Count, mean and sample standard deviation (ddof = 1) of one arm."""

    n: float
    mean: float
    sd: float


def summary_from_sums(
    count: float, total: float, sum_of_squares: float, *, name: str = "arm"
) -> SummaryStats:
    """(n, mean, sd) from the count, the sum and the sum of squares of a metric.

    ``mean = sum / n`` and ``sd = sqrt((sum_sq - sum^2 / n) / (n - 1))``. A variance that is
    negative only by round-off is read as 0.

    Parameters
    ----------
    count : float
        Number of observations, >= 2.
    total : float
        Sum of the observations.
    sum_of_squares : float
        Sum of the squared observations, >= 0.
    name : str
        Label used in error messages.

    Returns
    -------
    SummaryStats

    References
    ----------
    .. [1] Chan, T. F., Golub, G. H., LeVeque, R. J. (1983). *The American Statistician*, 37(3),
       242-247.
    """
    n = v.finite(f"{name} count", count)
    if n < 2:
        raise InvalidInputError(f"{name} count must be >= 2, got {count!r}")
    ss = centered_sum_of_squares(name, n, total, sum_of_squares)
    return SummaryStats(n=n, mean=float(total) / n, sd=math.sqrt(ss / (n - 1.0)))


def _arm(name: str, n: float, mean: float, sd: float) -> SummaryStats:
    nn = v.finite(f"{name} n", n)
    if nn < 2:
        raise InvalidInputError(f"{name} n must be >= 2, got {n!r}")
    return SummaryStats(n=nn, mean=v.finite(f"{name} mean", mean), sd=v.non_negative(f"{name} sd", sd))


def welch_df(var_c: float, n_c: float, var_t: float, n_t: float) -> float:
    """Welch-Satterthwaite degrees of freedom of the difference of two means.

    ``(v_c/n_c + v_t/n_t)^2 / ((v_c/n_c)^2/(n_c - 1) + (v_t/n_t)^2/(n_t - 1))``; NaN when both
    variances are 0.

    Parameters
    ----------
    var_c, var_t : float
        Sample variances (>= 0).
    n_c, n_t : float
        Sample sizes (>= 2).

    Returns
    -------
    float

    References
    ----------
    .. [1] Satterthwaite, F. E. (1946). *Biometrics Bulletin*, 2(6), 110-114.
    .. [2] Welch, B. L. (1947). *Biometrika*, 34(1-2), 28-35.
    """
    a = v.non_negative("control variance", var_c) / n_c
    b = v.non_negative("treatment variance", var_t) / n_t
    den = a * a / (n_c - 1.0) + b * b / (n_t - 1.0)
    if den == 0.0:
        return math.nan
    return (a + b) ** 2 / den


def _relative_lift(
    mc: float, var_mc: float, mt: float, var_mt: float, alpha: float
) -> tuple[float, Interval]:
    """Delta-method lift ``mt / mc - 1`` of two independent means with normal quantiles."""
    if mc == 0.0:
        return math.nan, Interval(math.nan, math.nan)
    lift = mt / mc - 1.0
    se = math.sqrt(var_mt / mc**2 + mt**2 * var_mc / mc**4)
    h = float(stats.norm.ppf(1.0 - alpha / 2.0)) * se
    return lift, Interval(lift - h, lift + h)


def welch_ttest(
    control_n: float,
    control_mean: float,
    control_sd: float,
    treatment_n: float,
    treatment_mean: float,
    treatment_sd: float,
    *,
    alpha: float = 0.05,
) -> ComparisonResult:
    """Two-sided Welch t-test of ``treatment_mean - control_mean`` from summary statistics.

    ``t = (m_t - m_c) / se`` with ``se = sqrt(s_c^2/n_c + s_t^2/n_t)`` and the Welch-Satterthwaite
    df (:func:`welch_df`); the p-value and the interval ``diff +- t_{1-alpha/2, df} se`` match
    ``scipy.stats.ttest_ind_from_stats(equal_var=False)`` and statsmodels'
    ``CompareMeans.tconfint_diff(usevar='unequal')``. The relative lift ``m_t / m_c - 1`` gets a
    delta-method interval ``lift +- z se_lift`` with
    ``se_lift^2 = s_t^2/(n_t m_c^2) + m_t^2 s_c^2/(n_c m_c^4)`` (NaN when ``m_c`` is 0).

    With both standard deviations 0 the test is degenerate: the p-value is 1 when the means are
    equal and 0 otherwise, and the interval is the single point ``diff``.

    Parameters
    ----------
    control_n, treatment_n : float
        Sample sizes, >= 2.
    control_mean, treatment_mean : float
        Sample means.
    control_sd, treatment_sd : float
        Sample standard deviations (ddof = 1), >= 0.
    alpha : float
        Significance level, in (0, 1).

    Returns
    -------
    ComparisonResult
        ``statistic`` is t; ``extra`` holds ``df`` and ``se``.

    References
    ----------
    .. [1] Welch, B. L. (1947). *Biometrika*, 34(1-2), 28-35.
    .. [2] Satterthwaite, F. E. (1946). *Biometrics Bulletin*, 2(6), 110-114.
    .. [3] Deng, A., Knoblich, U., Lu, J. (2018). Applying the delta method in metric analytics.
       *KDD 2018*, 233-242.
    """
    c = _arm("control", control_n, control_mean, control_sd)
    t = _arm("treatment", treatment_n, treatment_mean, treatment_sd)
    a = v.alpha(alpha)
    var_mc = c.sd**2 / c.n
    var_mt = t.sd**2 / t.n
    se = math.sqrt(var_mc + var_mt)
    diff = t.mean - c.mean
    df = welch_df(c.sd**2, c.n, t.sd**2, t.n)
    if se == 0.0:
        stat = 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
        p_value = 1.0 if diff == 0.0 else 0.0
        ci = Interval(diff, diff)
    else:
        stat = diff / se
        p_value = float(2.0 * stats.t.sf(abs(stat), df))
        h = float(stats.t.ppf(1.0 - a / 2.0, df)) * se
        ci = Interval(diff - h, diff + h)
    lift, lift_ci = _relative_lift(c.mean, var_mc, t.mean, var_mt, a)
    return ComparisonResult(
        method="Welch t-test (Welch-Satterthwaite df); t CI for the difference; delta-method CI for the lift",
        reference=_REF,
        control_estimate=c.mean,
        treatment_estimate=t.mean,
        difference=diff,
        ci=ci,
        relative_lift=lift,
        relative_lift_ci=lift_ci,
        p_value=p_value,
        alpha=a,
        statistic=stat,
        extra={"df": df, "se": se},
    )


def welch_ttest_from_sums(
    control_count: float,
    control_sum: float,
    control_sum_of_squares: float,
    treatment_count: float,
    treatment_sum: float,
    treatment_sum_of_squares: float,
    *,
    alpha: float = 0.05,
) -> ComparisonResult:
    """:func:`welch_ttest` from per-arm (count, sum, sum of squares), as Prometheus exports them.

    Parameters
    ----------
    control_count, treatment_count : float
        Number of observations, >= 2.
    control_sum, treatment_sum : float
        Sums of the observations.
    control_sum_of_squares, treatment_sum_of_squares : float
        Sums of the squared observations; must be consistent with the sums (variance >= 0 up to
        round-off).
    alpha : float
        Significance level, in (0, 1).

    Returns
    -------
    ComparisonResult

    References
    ----------
    .. [1] Welch, B. L. (1947). *Biometrika*, 34(1-2), 28-35.
    .. [2] Chan, T. F., Golub, G. H., LeVeque, R. J. (1983). *The American Statistician*, 37(3),
       242-247.
    """
    c = summary_from_sums(control_count, control_sum, control_sum_of_squares, name="control")
    t = summary_from_sums(treatment_count, treatment_sum, treatment_sum_of_squares, name="treatment")
    return welch_ttest(c.n, c.mean, c.sd, t.n, t.mean, t.sd, alpha=alpha)
