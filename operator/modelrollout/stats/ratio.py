"""Ratio metrics (sum of numerator / sum of denominator) by the delta method.

A ratio metric such as clicks per session or revenue per request is ``R = sum Y / sum X`` over
the randomization units (users) of an arm. Units are independent, but the requests within a unit
are not, so the naive binomial or t variance of the per-request metric is wrong. The delta
method linearizes ``R = mean(Y) / mean(X)`` around the means and gives, with n units,

    Var(R) ~ (s_YY - 2 R s_XY + R^2 s_XX) / (n mean(X)^2)

where ``s`` are the sample (co)variances (ddof = 1) of the per-unit numerators and denominators.
Everything is computed from six aggregates per arm (:class:`RatioSums`), which Prometheus
recording rules can provide. The two arms are independent, so the difference ``R_t - R_c`` has
variance ``V_t + V_c`` and the relative lift ``R_t / R_c - 1`` (a second delta method) has
variance ``V_t / R_c^2 + R_t^2 V_c / R_c^4``.

References
----------
.. [1] Deng, A., Knoblich, U., Lu, J. (2018). Applying the delta method in metric analytics: a
   practical guide with novel ideas. *Proceedings of KDD 2018*, 233-242.
.. [2] Kohavi, R., Tang, D., Xu, Y. (2020). *Trustworthy Online Controlled Experiments*,
   Cambridge University Press, chapter 18.
.. [3] Casella, G., Berger, R. L. (2002). *Statistical Inference*, 2nd ed., Duxbury,
   section 5.5.4 (the delta method).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

from modelrollout.errors import InvalidInputError
from modelrollout.stats import _validate as v
from modelrollout.stats.means import centered_sum_of_squares
from modelrollout.stats.results import ComparisonResult, Interval

_REF = (
    "Deng, Knoblich, Lu (2018), Applying the delta method in metric analytics, KDD; "
    "Kohavi, Tang, Xu (2020), Trustworthy Online Controlled Experiments, ch. 18"
)
_ROUNDING = 1e-9


@dataclass(frozen=True)
class RatioSums:
    """The six per-arm aggregates of a ratio metric over its n randomization units.

    Attributes
    ----------
    n : float
        Number of units (>= 2).
    sum_num, sum_den : float
        Sum over units of the numerator Y and of the denominator X (``sum_den > 0``).
    sum_num_sq, sum_den_sq : float
        Sum over units of Y^2 and of X^2.
    sum_num_den : float
        Sum over units of Y * X.
    """

    n: float
    sum_num: float
    sum_den: float
    sum_num_sq: float
    sum_den_sq: float
    sum_num_den: float

    @classmethod
    def from_units(cls, numerators: npt.ArrayLike, denominators: npt.ArrayLike) -> RatioSums:
        """Aggregate per-unit numerators and denominators (two 1-d arrays of equal length).

        Parameters
        ----------
        numerators, denominators : array_like
            Per-unit Y and X.

        Returns
        -------
        RatioSums

        References
        ----------
        .. [1] Deng, Knoblich, Lu (2018), *KDD 2018*, 233-242.
        """
        y = np.asarray(numerators, dtype=float)
        x = np.asarray(denominators, dtype=float)
        if y.ndim != 1 or x.ndim != 1 or y.shape != x.shape:
            raise InvalidInputError(
                f"numerators and denominators must be 1-d of equal length, got shapes {y.shape} and {x.shape}"
            )
        return cls(
            n=float(y.size),
            sum_num=float(y.sum()),
            sum_den=float(x.sum()),
            sum_num_sq=float((y * y).sum()),
            sum_den_sq=float((x * x).sum()),
            sum_num_den=float((x * y).sum()),
        )


@dataclass(frozen=True)
class RatioEstimate:
    """A ratio ``sum Y / sum X`` with its delta-method variance."""

    ratio: float
    variance: float
    n: float

    @property
    def se(self) -> float:
        return math.sqrt(self.variance)


def ratio_estimate(sums: RatioSums, *, name: str = "arm") -> RatioEstimate:
    """The ratio of one arm and the delta-method variance of its estimate.

    ``R = sum Y / sum X`` and ``Var(R) = (s_YY - 2 R s_XY + R^2 s_XX) / (n mean(X)^2)`` with
    sample (co)variances (ddof = 1). The numerator of the variance equals the sum of squared
    linearized residuals ``sum (Y - R X)^2 / (n - 1)``, which is what is computed; a value
    negative only by round-off is read as 0.

    Parameters
    ----------
    sums : RatioSums
        The arm's aggregates.
    name : str
        Label for error messages (``"control"``, ``"treatment"``).

    Returns
    -------
    RatioEstimate

    Raises
    ------
    InvalidInputError
        On n < 2, a non-positive denominator sum, negative sums of squares, or sums that imply a
        negative variance or a correlation beyond +-1.

    References
    ----------
    .. [1] Deng, A., Knoblich, U., Lu, J. (2018). Applying the delta method in metric analytics.
       *KDD 2018*, 233-242.
    """
    if not isinstance(sums, RatioSums):
        raise InvalidInputError(f"{name} must be a RatioSums, got {type(sums).__name__}")
    n = v.finite(f"{name} n", sums.n)
    if n < 2:
        raise InvalidInputError(f"{name} n must be >= 2, got {sums.n!r}")
    sy = v.finite(f"{name} sum_num", sums.sum_num)
    sx = v.positive(f"{name} sum_den", sums.sum_den)
    qy = v.non_negative(f"{name} sum_num_sq", sums.sum_num_sq)
    qx = v.non_negative(f"{name} sum_den_sq", sums.sum_den_sq)
    qxy = v.finite(f"{name} sum_num_den", sums.sum_num_den)
    ss_y = centered_sum_of_squares(f"{name} numerator", n, sy, qy)
    ss_x = centered_sum_of_squares(f"{name} denominator", n, sx, qx)
    ss_xy = qxy - sx * (sy / n)
    bound = math.sqrt(ss_x * ss_y)
    if abs(ss_xy) > bound * (1.0 + 1e-9) + _ROUNDING * max(abs(qxy), 1e-300):
        raise InvalidInputError(
            f"{name} sums are inconsistent: sum_num_den ({sums.sum_num_den!r}) implies a "
            "numerator-denominator correlation beyond +-1"
        )
    r = sy / sx
    # sum (Y - R X)^2 = sum Y^2 - 2 R sum XY + R^2 sum X^2 (its mean is 0 by construction)
    ss_lin = qy - 2.0 * r * qxy + r * r * qx
    if ss_lin < 0:
        if -ss_lin > _ROUNDING * max(qy + r * r * qx, 1e-300):
            raise InvalidInputError(f"{name} sums are inconsistent: the delta-method variance is negative")
        ss_lin = 0.0
    mean_x = sx / n
    var = ss_lin / (n - 1.0) / (n * mean_x * mean_x)
    return RatioEstimate(ratio=r, variance=var, n=n)


def ratio_test(control: RatioSums, treatment: RatioSums, *, alpha: float = 0.05) -> ComparisonResult:
    """Two-sided z-test and intervals for the difference and relative lift of a ratio metric.

    ``z = (R_t - R_c) / sqrt(V_t + V_c)`` with the delta-method variances of
    :func:`ratio_estimate`; the interval of the difference is ``diff +- z_{1-alpha/2} se``. The
    relative lift ``R_t / R_c - 1`` has the delta-method standard error
    ``sqrt(V_t / R_c^2 + R_t^2 V_c / R_c^4)`` (NaN when ``R_c`` is 0). With both variances 0 the
    p-value is 1 for equal ratios and 0 otherwise.

    Parameters
    ----------
    control, treatment : RatioSums
        Per-arm aggregates over randomization units.
    alpha : float
        Significance level, in (0, 1).

    Returns
    -------
    ComparisonResult
        ``statistic`` is z; ``extra`` holds ``se``, ``var_control`` and ``var_treatment``.

    References
    ----------
    .. [1] Deng, A., Knoblich, U., Lu, J. (2018). Applying the delta method in metric analytics: a
       practical guide with novel ideas. *KDD 2018*, 233-242.
    .. [2] Kohavi, R., Tang, D., Xu, Y. (2020). *Trustworthy Online Controlled Experiments*,
       chapter 18.
    """
    c = ratio_estimate(control, name="control")
    t = ratio_estimate(treatment, name="treatment")
    a = v.alpha(alpha)
    z_q = float(stats.norm.ppf(1.0 - a / 2.0))
    diff = t.ratio - c.ratio
    se = math.sqrt(c.variance + t.variance)
    if se == 0.0:
        z = 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
        p_value = 1.0 if diff == 0.0 else 0.0
    else:
        z = diff / se
        p_value = float(2.0 * stats.norm.sf(abs(z)))
    ci = Interval(diff - z_q * se, diff + z_q * se)
    if c.ratio == 0.0:
        lift, lift_ci = math.nan, Interval(math.nan, math.nan)
    else:
        lift = t.ratio / c.ratio - 1.0
        se_lift = math.sqrt(t.variance / c.ratio**2 + t.ratio**2 * c.variance / c.ratio**4)
        lift_ci = Interval(lift - z_q * se_lift, lift + z_q * se_lift)
    return ComparisonResult(
        method="ratio metric, delta-method z-test; Wald CI for the difference and the relative lift",
        reference=_REF,
        control_estimate=c.ratio,
        treatment_estimate=t.ratio,
        difference=diff,
        ci=ci,
        relative_lift=lift,
        relative_lift_ci=lift_ci,
        p_value=p_value,
        alpha=a,
        statistic=z,
        extra={"se": se, "var_control": c.variance, "var_treatment": t.variance},
    )
