"""Power, sample size, minimum detectable effect and expected duration of a fixed-horizon test.

Two metric families are planned here:

* **proportions** (conversion, click-through): the normal approximation of the two-sided
  two-proportion z-test, with the pooled variance under H0 and the unpooled variance under H1;
* **means** (revenue per request, latency): the two-sample t-test, whose power is computed exactly
  from the noncentral t distribution and solved for n with Brent's method, so the numbers agree
  with statsmodels' ``TTestIndPower``.

Allocation may be unequal: ``ratio`` is the size of each treatment arm divided by the size of the
control arm (or give ``treatment_fraction``, the share of the experiment's traffic sent to each
treatment). With ``n_treatments`` challengers each one is compared with the control at an
adjusted level; ``total_sample_size`` is the control plus every treatment arm.

Multiple challengers
--------------------
``correction="bonferroni"`` (the default) plans every comparison at alpha / k. ``"holm"`` is
accepted and gives the *same* plan: Holm's step-down procedure tests the smallest p-value at
alpha / k, and a plan must guarantee the power of a given challenger whatever the other
challengers do, so the worst case (that challenger's p-value being the first one tested, or every
other null being true) is exactly Bonferroni's level. Holm can only be more powerful at analysis
time, never less, so planning with alpha / k is conservative and correct. ``"none"`` plans at the
raw alpha.

References
----------
.. [1] Fleiss, J. L., Levin, B., Paik, M. C. (2003). *Statistical Methods for Rates and
   Proportions*, 3rd ed., Wiley, chapter 4 (sample size for comparing two proportions, with
   unequal allocation).
.. [2] Chow, S.-C., Shao, J., Wang, H. (2008). *Sample Size Calculations in Clinical Research*,
   2nd ed., Chapman & Hall/CRC, chapters 3 (means) and 4 (proportions).
.. [3] Cohen, J. (1988). *Statistical Power Analysis for the Behavioral Sciences*, 2nd ed.,
   Lawrence Erlbaum, chapter 2 (power of the t-test through the noncentral t distribution).
.. [4] Holm, S. (1979). A simple sequentially rejective multiple test procedure. *Scandinavian
   Journal of Statistics*, 6(2), 65-70.
.. [5] Kohavi, R., Tang, D., Xu, Y. (2020). *Trustworthy Online Controlled Experiments*,
   Cambridge University Press, chapter 17 (sample size and duration).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from scipy import optimize, stats

from modelrollout.errors import InvalidInputError
from modelrollout.stats import _validate as v

Correction = Literal["bonferroni", "holm", "none"]

_REF_PROPORTIONS = (
    "Fleiss, Levin, Paik (2003), Statistical Methods for Rates and Proportions, 3rd ed., ch. 4; "
    "Kohavi, Tang, Xu (2020), Trustworthy Online Controlled Experiments, ch. 17"
)
_REF_MEANS = (
    "Cohen (1988), Statistical Power Analysis for the Behavioral Sciences, 2nd ed., ch. 2 "
    "(noncentral t); Chow, Shao, Wang (2008), Sample Size Calculations in Clinical Research, ch. 3"
)
_MAX_N = 1e12  # beyond this a plan is meaningless; the search stops and reports it


@dataclass(frozen=True)
class SampleSizeResult:
    """A sample-size plan (or, for the ``mde_*`` functions, the effect reachable at a given n).

    Attributes
    ----------
    sample_size_per_variant : int
        Units needed in the control arm (equal to every arm when ``ratio`` is 1).
    sample_size_treatment : int
        Units needed in each treatment arm.
    total_sample_size : int
        Control plus all ``n_treatments`` treatment arms.
    alpha, alpha_adjusted : float
        The requested two-sided level and the level each comparison is planned at.
    power : float
        The target power of each comparison.
    baseline : float
        Control proportion, or control mean for means.
    mde_absolute, mde_relative : float
        The effect as a difference (treatment minus control) and relative to the baseline;
        ``mde_relative`` is NaN when the baseline of a mean is 0.
    sd : float
        Standard deviation per unit (means only; NaN for proportions).
    ratio : float
        Treatment arm size / control arm size.
    expected_days : float | None
        Days to reach the plan at the given traffic, when traffic was given.
    """

    metric: Literal["proportion", "mean"]
    sample_size_per_variant: int
    sample_size_treatment: int
    total_sample_size: int
    n_treatments: int
    alpha: float
    alpha_adjusted: float
    correction: Correction
    power: float
    baseline: float
    mde_absolute: float
    mde_relative: float
    ratio: float
    method: str
    reference: str
    sd: float = math.nan
    expected_days: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict; NaN values become ``None``."""
        d = asdict(self)
        return {k: (None if isinstance(x, float) and math.isnan(x) else x) for k, x in d.items()}


# --------------------------------------------------------------------------------------------
# input helpers


def _n_treatments(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InvalidInputError(f"n_treatments must be an integer >= 1, got {value!r}")
    return int(value)


def _correction(value: str) -> Correction:
    if value == "bonferroni":
        return "bonferroni"
    if value == "holm":
        return "holm"
    if value == "none":
        return "none"
    raise InvalidInputError(f"correction must be 'bonferroni', 'holm' or 'none', got {value!r}")


def adjusted_alpha(alpha: float, n_treatments: int = 1, correction: str = "bonferroni") -> float:
    """The per-comparison level used to plan ``n_treatments`` comparisons with the control.

    Bonferroni and Holm both give ``alpha / n_treatments`` for planning (Holm's worst case is its
    first step, see the module docstring); ``"none"`` returns ``alpha``.

    Parameters
    ----------
    alpha : float
        Family-wise two-sided level, in (0, 1).
    n_treatments : int
        Number of challengers, each compared with the control.
    correction : {"bonferroni", "holm", "none"}
        Multiple-comparison correction.

    Returns
    -------
    float
        The adjusted level.

    References
    ----------
    .. [1] Holm, S. (1979). A simple sequentially rejective multiple test procedure.
       *Scandinavian Journal of Statistics*, 6(2), 65-70.
    """
    a = v.alpha(alpha)
    k = _n_treatments(n_treatments)
    c = _correction(correction)
    return a if c == "none" else a / k


def _allocation_ratio(ratio: float | None, treatment_fraction: float | None, n_treatments: int) -> float:
    """Treatment/control size ratio from either ``ratio`` or ``treatment_fraction``."""
    if ratio is not None and treatment_fraction is not None:
        raise InvalidInputError(
            f"give ratio ({ratio!r}) or treatment_fraction ({treatment_fraction!r}), not both"
        )
    if treatment_fraction is not None:
        f = v.probability("treatment_fraction", treatment_fraction, open_interval=True)
        control_share = 1.0 - n_treatments * f
        if control_share <= 0:
            raise InvalidInputError(
                f"treatment_fraction ({treatment_fraction!r}) x n_treatments ({n_treatments}) "
                "must leave a positive share for the control"
            )
        return f / control_share
    if ratio is None:
        return 1.0
    return v.positive("ratio", ratio)


def _proportion_effect(baseline: float, mde: float, relative: bool) -> tuple[float, float]:
    """Validated (p_control, p_treatment)."""
    p1 = v.probability("baseline", baseline, open_interval=True)
    m = v.finite("mde", mde)
    if m == 0:
        raise InvalidInputError("mde must be non-zero, got 0")
    p2 = p1 * (1.0 + m) if relative else p1 + m
    if not 0.0 < p2 < 1.0:
        raise InvalidInputError(
            f"baseline + mde must be in (0, 1), got {p2!r} (baseline {baseline!r}, "
            f"{'relative' if relative else 'absolute'} mde {mde!r})"
        )
    return p1, p2


def _mean_effect(baseline: float, sd: float, mde: float, relative: bool) -> tuple[float, float, float]:
    """Validated (baseline, sd, absolute difference)."""
    b = v.finite("baseline", baseline)
    s = v.positive("sd", sd)
    m = v.finite("mde", mde)
    if m == 0:
        raise InvalidInputError("mde must be non-zero, got 0")
    if relative:
        if b == 0:
            raise InvalidInputError("a relative mde needs a non-zero baseline mean, got baseline 0")
        return b, s, m * b
    return b, s, m


def _n_control(n_control: float) -> float:
    n = v.finite("n_control", n_control)
    if n < 2:
        raise InvalidInputError(f"n_control must be >= 2, got {n_control!r}")
    return n


def _ceil(x: float) -> int:
    # guard against 9257.000000000002 style round-off turning into one extra unit
    return math.ceil(x - 1e-9)


def _result(
    *,
    metric: Literal["proportion", "mean"],
    n1: float,
    r: float,
    k: int,
    alpha: float,
    alpha_adj: float,
    correction: Correction,
    power: float,
    baseline: float,
    delta: float,
    sd: float,
    method: str,
    reference: str,
    daily_traffic: float | None,
    traffic_fraction: float,
) -> SampleSizeResult:
    n_c = _ceil(n1)
    n_t = _ceil(n1 * r)
    res = SampleSizeResult(
        metric=metric,
        sample_size_per_variant=n_c,
        sample_size_treatment=n_t,
        total_sample_size=n_c + k * n_t,
        n_treatments=k,
        alpha=alpha,
        alpha_adjusted=alpha_adj,
        correction=correction,
        power=power,
        baseline=baseline,
        mde_absolute=delta,
        mde_relative=delta / baseline if baseline != 0 else math.nan,
        ratio=r,
        method=method,
        reference=reference,
        sd=sd,
    )
    if daily_traffic is None:
        return res
    days = expected_days(res, daily_traffic, traffic_fraction)
    return replace(res, expected_days=days)


# --------------------------------------------------------------------------------------------
# proportions


def _prop_sds(p1: float, p2: float, r: float) -> tuple[float, float]:
    """(sd under H0 with the pooled p, sd under H1), both per sqrt(control unit)."""
    pbar = (p1 + r * p2) / (1.0 + r)
    s0 = math.sqrt(pbar * (1.0 - pbar) * (1.0 + 1.0 / r))
    s1 = math.sqrt(p1 * (1.0 - p1) + p2 * (1.0 - p2) / r)
    return s0, s1


def _prop_power(p1: float, p2: float, n1: float, r: float, alpha: float) -> float:
    s0, s1 = _prop_sds(p1, p2, r)
    z = float(stats.norm.ppf(1.0 - alpha / 2.0))
    return float(stats.norm.cdf((abs(p2 - p1) * math.sqrt(n1) - z * s0) / s1))


def power_proportions(
    baseline: float,
    mde: float,
    n_control: float,
    *,
    relative: bool = True,
    alpha: float = 0.05,
    ratio: float = 1.0,
) -> float:
    """Power of the two-sided two-proportion z-test at ``n_control`` control units.

    Uses the normal approximation with the pooled variance under H0 and the unpooled variance
    under H1, keeping only the dominant rejection tail, so it is the exact inverse of
    :func:`sample_size_proportions`.

    Parameters
    ----------
    baseline : float
        Control proportion, in (0, 1).
    mde : float
        Effect, relative (``p_t / p_c - 1``) when ``relative`` else absolute (``p_t - p_c``).
    n_control : float
        Control arm size (>= 2); each treatment arm has ``ratio * n_control``.
    relative : bool
        Whether ``mde`` is relative to the baseline.
    alpha : float
        Two-sided level of this comparison (already adjusted for multiplicity).
    ratio : float
        Treatment arm size / control arm size.

    Returns
    -------
    float
        The power, in (0, 1).

    References
    ----------
    .. [1] Fleiss, Levin, Paik (2003), *Statistical Methods for Rates and Proportions*, 3rd ed.,
       chapter 4.
    """
    p1, p2 = _proportion_effect(baseline, mde, relative)
    a = v.alpha(alpha)
    r = v.positive("ratio", ratio)
    n1 = _n_control(n_control)
    return _prop_power(p1, p2, n1, r, a)


def sample_size_proportions(
    baseline: float,
    mde: float,
    *,
    relative: bool = True,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: float | None = None,
    treatment_fraction: float | None = None,
    n_treatments: int = 1,
    correction: str = "bonferroni",
    daily_traffic: float | None = None,
    traffic_fraction: float = 1.0,
) -> SampleSizeResult:
    """Units per arm for a two-sided two-proportion z-test to detect ``mde`` with ``power``.

    With control proportion p1, treatment proportion p2, delta = p2 - p1, allocation
    r = n_treatment / n_control and pooled p_bar = (p1 + r p2) / (1 + r), the control arm needs

        n1 = (z_{1-a/2} sqrt(p_bar q_bar (1 + 1/r)) + z_{1-b} sqrt(p1 q1 + p2 q2 / r))^2 / delta^2

    and each treatment arm ``r * n1``; both are rounded up.

    Parameters
    ----------
    baseline : float
        Control proportion, in (0, 1).
    mde : float
        Minimum detectable effect, non-zero; relative (``p_t / p_c - 1``) when ``relative``, else
        absolute (``p_t - p_c``). ``baseline`` moved by ``mde`` must stay in (0, 1).
    relative : bool
        Whether ``mde`` is relative to the baseline (the default, as in the spec).
    alpha : float
        Family-wise two-sided level, in (0, 1).
    power : float
        Target power of each comparison, in (0, 1).
    ratio : float, optional
        Size of each treatment arm / size of the control arm (default 1).
    treatment_fraction : float, optional
        Alternative to ``ratio``: the share of the experiment's traffic given to each treatment.
    n_treatments : int
        Number of challengers; alpha is adjusted by ``correction``.
    correction : {"bonferroni", "holm", "none"}
        Multiplicity adjustment; Holm plans like Bonferroni (module docstring).
    daily_traffic : float, optional
        Requests (units) per day reaching the service; fills ``expected_days``.
    traffic_fraction : float
        Share of ``daily_traffic`` that enters the experiment.

    Returns
    -------
    SampleSizeResult

    References
    ----------
    .. [1] Fleiss, Levin, Paik (2003), *Statistical Methods for Rates and Proportions*, 3rd ed.,
       chapter 4 (unequal allocation).
    .. [2] Chow, Shao, Wang (2008), *Sample Size Calculations in Clinical Research*, 2nd ed.,
       chapter 4.
    .. [3] Kohavi, Tang, Xu (2020), *Trustworthy Online Controlled Experiments*, chapter 17.
    """
    p1, p2 = _proportion_effect(baseline, mde, relative)
    pw = v.power(power)
    k = _n_treatments(n_treatments)
    corr = _correction(correction)
    a_adj = adjusted_alpha(alpha, k, corr)
    r = _allocation_ratio(ratio, treatment_fraction, k)
    s0, s1 = _prop_sds(p1, p2, r)
    z_a = float(stats.norm.ppf(1.0 - a_adj / 2.0))
    z_b = float(stats.norm.ppf(pw))
    n1 = (z_a * s0 + z_b * s1) ** 2 / (p2 - p1) ** 2
    return _result(
        metric="proportion",
        n1=n1,
        r=r,
        k=k,
        alpha=float(alpha),
        alpha_adj=a_adj,
        correction=corr,
        power=pw,
        baseline=p1,
        delta=p2 - p1,
        sd=math.nan,
        method="two-proportion z-test, normal approximation (pooled H0, unpooled H1), two-sided",
        reference=_REF_PROPORTIONS,
        daily_traffic=daily_traffic,
        traffic_fraction=traffic_fraction,
    )


def mde_proportions(
    baseline: float,
    n_control: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: float | None = None,
    treatment_fraction: float | None = None,
    n_treatments: int = 1,
    correction: str = "bonferroni",
    direction: Literal["increase", "decrease"] = "increase",
    daily_traffic: float | None = None,
    traffic_fraction: float = 1.0,
) -> SampleSizeResult:
    """The smallest effect detectable with ``power`` at ``n_control`` control units.

    The inverse of :func:`sample_size_proportions`: solves ``power_proportions(delta) = power``
    for the absolute difference ``delta`` with Brent's method. The result carries both
    ``mde_absolute`` and ``mde_relative`` (negative for ``direction="decrease"``; the two
    directions differ slightly because the variance depends on p).

    Parameters
    ----------
    baseline : float
        Control proportion, in (0, 1).
    n_control : float
        Control arm size (>= 2); treatment arms are ``ratio * n_control``.
    alpha, power, ratio, treatment_fraction, n_treatments, correction, daily_traffic, traffic_fraction
        As in :func:`sample_size_proportions`.
    direction : {"increase", "decrease"}
        Whether the challenger is expected to raise or lower the proportion.

    Returns
    -------
    SampleSizeResult
        With the given arm sizes and the reachable effect.

    Raises
    ------
    InvalidInputError
        When no effect within (0, 1) reaches the power at this n.

    References
    ----------
    .. [1] Fleiss, Levin, Paik (2003), *Statistical Methods for Rates and Proportions*, 3rd ed.,
       chapter 4.
    .. [2] Brent, R. P. (1973). *Algorithms for Minimization without Derivatives*, Prentice-Hall,
       chapter 4 (root finding).
    """
    p1 = v.probability("baseline", baseline, open_interval=True)
    n1 = _n_control(n_control)
    pw = v.power(power)
    k = _n_treatments(n_treatments)
    corr = _correction(correction)
    a_adj = adjusted_alpha(alpha, k, corr)
    r = _allocation_ratio(ratio, treatment_fraction, k)
    if direction not in ("increase", "decrease"):
        raise InvalidInputError(f"direction must be 'increase' or 'decrease', got {direction!r}")
    sign = 1.0 if direction == "increase" else -1.0
    room = (1.0 - p1) if sign > 0 else p1  # |delta| must keep p2 inside (0, 1)
    lo, hi = room * 1e-12, room * (1.0 - 1e-12)

    def gap(d: float) -> float:
        return _prop_power(p1, p1 + sign * d, n1, r, a_adj) - pw

    if gap(hi) < 0:
        raise InvalidInputError(
            f"no effect reaches power {power!r} at n_control={n_control!r} "
            f"(baseline {baseline!r}, {direction}); increase n"
        )
    d = lo if gap(lo) >= 0 else _brentq(gap, lo, hi)
    return _result(
        metric="proportion",
        n1=n1,
        r=r,
        k=k,
        alpha=float(alpha),
        alpha_adj=a_adj,
        correction=corr,
        power=pw,
        baseline=p1,
        delta=sign * d,
        sd=math.nan,
        method="minimum detectable effect, two-proportion z-test normal approximation, two-sided",
        reference=_REF_PROPORTIONS,
        daily_traffic=daily_traffic,
        traffic_fraction=traffic_fraction,
    )


# --------------------------------------------------------------------------------------------
# means


def _nct_normal_approx_cdf(x: float, df: float, nc: float) -> float:
    """P(T <= x) for T ~ nct(df, nc) by the normal approximation of Abramowitz & Stegun 26.7.10.

    Only a last resort for :func:`_nct_tails`, used if scipy ever returns a non-finite tail.
    """
    z = (x * (1.0 - 1.0 / (4.0 * df)) - nc) / math.sqrt(1.0 + x * x / (2.0 * df))
    return float(stats.norm.cdf(z))


def _clamp(x: float, lo: float, hi: float, fallback: float) -> float:
    """``x`` clamped to [lo, hi]; ``fallback`` (also clamped) when ``x`` is not finite."""
    value = x if math.isfinite(x) else fallback
    return min(max(value, lo), hi)


def _nct_tails(crit: float, df: float, nc: float) -> tuple[float, float]:
    """(P(T > crit), P(T < -crit)) for T ~ nct(df, nc) with crit >= 0 and nc >= 0; never NaN.

    Why not ``nct.cdf(-crit, df, nc)``: from scipy 1.15 the noncentral t comes from Boost, whose
    cdf returns NaN far in the lower tail (``nct.cdf(-1.96, 798, 10)``), and a NaN power stops
    Brent's method in :func:`sample_size_means` and :func:`mde_means`. The lower tail is taken by
    reflection instead, P(T < -crit) = P(-T > crit) with -T ~ nct(df, -nc), which scipy 1.17
    evaluates finitely (checked at 200,000 random points, df 1 to 3e12, nc up to 1e8) and to about
    1e-15 absolute. ``test_power`` checks both tails against an independent quadrature, so a scipy
    that changes this fails a named test instead of planning with NaN.

    Each tail is then clamped to exact bounds, which can only move it towards the truth:

    * T grows with nc path by path, so P(T < -crit) <= P(T0 < -crit) = P(T0 > crit) <= P(T > crit)
      for the central T0 ~ t(df);
    * T < -crit <= 0 needs Z + nc < 0 (T = (Z + nc) / S with S > 0), so P(T < -crit) <= Phi(-nc).

    Were a tail still non-finite, the normal approximation of Abramowitz & Stegun (1964),
    *Handbook of Mathematical Functions*, 26.7.10, stands in, inside the same bounds, so the error
    of the lower tail stays below min(alpha / 2, Phi(-nc)), tiny where the lower tail is hard.
    """
    central = float(stats.t.sf(crit, df))
    upper = _clamp(
        float(stats.nct.sf(crit, df, nc)),
        central,
        1.0,
        1.0 - _nct_normal_approx_cdf(crit, df, nc),
    )
    lower = _clamp(
        float(stats.nct.sf(crit, df, -nc)),
        0.0,
        min(central, float(stats.norm.sf(nc))),
        _nct_normal_approx_cdf(-crit, df, nc),
    )
    return upper, lower


def _t_power(d: float, n1: float, r: float, alpha: float) -> float:
    """Power of the two-sided two-sample t-test (pooled df) at standardized effect ``d``."""
    n2 = r * n1
    df = n1 + n2 - 2.0
    nc = abs(d) * math.sqrt(n1 * n2 / (n1 + n2))
    crit = float(stats.t.ppf(1.0 - alpha / 2.0, df))
    upper, lower = _nct_tails(crit, df, nc)
    return upper + lower


def _brentq(f: Callable[[float], float], lo: float, hi: float) -> float:
    root = optimize.brentq(f, lo, hi, xtol=1e-12, rtol=1e-12, maxiter=500)
    return float(root)


def power_means(
    baseline: float,
    sd: float,
    mde: float,
    n_control: float,
    *,
    relative: bool = True,
    alpha: float = 0.05,
    ratio: float = 1.0,
) -> float:
    """Exact power of the two-sided two-sample t-test, from the noncentral t distribution.

    With effect size d = delta / sd, n2 = ratio * n1 and df = n1 + n2 - 2, the power is
    ``P(T > t_crit) + P(T < -t_crit)`` for T ~ nct(df, d sqrt(n1 n2 / (n1 + n2))).

    Parameters
    ----------
    baseline : float
        Control mean (needed only for a relative ``mde``).
    sd : float
        Standard deviation per unit, > 0 (assumed equal in both arms for planning).
    mde : float
        Effect, relative to ``baseline`` when ``relative``, else absolute; non-zero.
    n_control : float
        Control arm size (>= 2).
    relative : bool
        Whether ``mde`` is relative.
    alpha : float
        Two-sided level of this comparison.
    ratio : float
        Treatment arm size / control arm size.

    Returns
    -------
    float
        The power.

    References
    ----------
    .. [1] Cohen, J. (1988). *Statistical Power Analysis for the Behavioral Sciences*, 2nd ed.,
       chapter 2.
    """
    _, s, delta = _mean_effect(baseline, sd, mde, relative)
    a = v.alpha(alpha)
    r = v.positive("ratio", ratio)
    n1 = _n_control(n_control)
    if n1 * (1.0 + r) <= 3.0:
        raise InvalidInputError(f"n_control * (1 + ratio) must exceed 3, got {n1 * (1.0 + r)!r}")
    return _t_power(delta / s, n1, r, a)


def sample_size_means(
    baseline: float,
    sd: float,
    mde: float,
    *,
    relative: bool = True,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: float | None = None,
    treatment_fraction: float | None = None,
    n_treatments: int = 1,
    correction: str = "bonferroni",
    daily_traffic: float | None = None,
    traffic_fraction: float = 1.0,
) -> SampleSizeResult:
    """Units per arm for a two-sided two-sample t-test to detect ``mde`` with ``power``.

    Solves the exact noncentral-t power (:func:`power_means`) for the control size n1 with
    Brent's method, then rounds up n1 and ``ratio * n1``; this reproduces statsmodels'
    ``TTestIndPower().solve_power(effect_size=mde/sd, alpha, power, ratio)``. When even the
    smallest design (df = 1) has the power, that design is returned.

    Parameters
    ----------
    baseline : float
        Control mean (needed for a relative ``mde``; reported otherwise).
    sd : float
        Standard deviation per unit, > 0.
    mde : float
        Minimum detectable effect, non-zero; relative to ``baseline`` when ``relative``.
    relative : bool
        Whether ``mde`` is relative to the baseline.
    alpha, power, ratio, treatment_fraction, n_treatments, correction, daily_traffic, traffic_fraction
        As in :func:`sample_size_proportions`.

    Returns
    -------
    SampleSizeResult

    References
    ----------
    .. [1] Cohen, J. (1988). *Statistical Power Analysis for the Behavioral Sciences*, 2nd ed.,
       chapter 2.
    .. [2] Chow, Shao, Wang (2008), *Sample Size Calculations in Clinical Research*, 2nd ed.,
       chapter 3.
    """
    b, s, delta = _mean_effect(baseline, sd, mde, relative)
    pw = v.power(power)
    k = _n_treatments(n_treatments)
    corr = _correction(correction)
    a_adj = adjusted_alpha(alpha, k, corr)
    r = _allocation_ratio(ratio, treatment_fraction, k)
    d = delta / s

    def gap(n1: float) -> float:
        return _t_power(d, n1, r, a_adj) - pw

    lo = 3.0 / (1.0 + r)  # df = 1
    if gap(lo) >= 0:
        n1 = lo
    else:
        hi = max(2.0 * lo, 16.0)
        while gap(hi) < 0:
            hi *= 4.0
            if hi > _MAX_N:
                raise InvalidInputError(
                    f"mde {mde!r} is too small relative to sd {sd!r}: the plan exceeds {_MAX_N:g} units"
                )
        n1 = _brentq(gap, lo, hi)
    return _result(
        metric="mean",
        n1=n1,
        r=r,
        k=k,
        alpha=float(alpha),
        alpha_adj=a_adj,
        correction=corr,
        power=pw,
        baseline=b,
        delta=delta,
        sd=s,
        method="two-sample t-test, exact power from the noncentral t, two-sided",
        reference=_REF_MEANS,
        daily_traffic=daily_traffic,
        traffic_fraction=traffic_fraction,
    )


def mde_means(
    baseline: float,
    sd: float,
    n_control: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: float | None = None,
    treatment_fraction: float | None = None,
    n_treatments: int = 1,
    correction: str = "bonferroni",
    direction: Literal["increase", "decrease"] = "increase",
    daily_traffic: float | None = None,
    traffic_fraction: float = 1.0,
) -> SampleSizeResult:
    """The smallest mean difference detectable with ``power`` at ``n_control`` control units.

    Solves the noncentral-t power of :func:`power_means` for the standardized effect with
    Brent's method; ``mde_absolute = d * sd`` (signed by ``direction``) and ``mde_relative`` is
    that divided by ``baseline`` (NaN when the baseline is 0).

    Parameters
    ----------
    baseline : float
        Control mean.
    sd : float
        Standard deviation per unit, > 0.
    n_control : float
        Control arm size; ``n_control * (1 + ratio)`` must exceed 3.
    alpha, power, ratio, treatment_fraction, n_treatments, correction, daily_traffic, traffic_fraction
        As in :func:`sample_size_proportions`.
    direction : {"increase", "decrease"}
        Sign of the reported effect.

    Returns
    -------
    SampleSizeResult

    References
    ----------
    .. [1] Cohen, J. (1988). *Statistical Power Analysis for the Behavioral Sciences*, 2nd ed.,
       chapter 2.
    .. [2] Brent, R. P. (1973). *Algorithms for Minimization without Derivatives*, chapter 4.
    """
    b = v.finite("baseline", baseline)
    s = v.positive("sd", sd)
    n1 = _n_control(n_control)
    pw = v.power(power)
    k = _n_treatments(n_treatments)
    corr = _correction(correction)
    a_adj = adjusted_alpha(alpha, k, corr)
    r = _allocation_ratio(ratio, treatment_fraction, k)
    if direction not in ("increase", "decrease"):
        raise InvalidInputError(f"direction must be 'increase' or 'decrease', got {direction!r}")
    if n1 * (1.0 + r) <= 3.0:
        raise InvalidInputError(f"n_control * (1 + ratio) must exceed 3, got {n1 * (1.0 + r)!r}")

    def gap(d: float) -> float:
        return _t_power(d, n1, r, a_adj) - pw

    lo, hi = 1e-12, 1.0
    while gap(hi) < 0:
        hi *= 4.0
        if hi > 1e6:
            raise InvalidInputError(f"no effect reaches power {power!r} at n_control={n_control!r}")
    d = _brentq(gap, lo, hi)
    sign = 1.0 if direction == "increase" else -1.0
    return _result(
        metric="mean",
        n1=n1,
        r=r,
        k=k,
        alpha=float(alpha),
        alpha_adj=a_adj,
        correction=corr,
        power=pw,
        baseline=b,
        delta=sign * d * s,
        sd=s,
        method="minimum detectable effect, two-sample t-test, noncentral t, two-sided",
        reference=_REF_MEANS,
        daily_traffic=daily_traffic,
        traffic_fraction=traffic_fraction,
    )


# --------------------------------------------------------------------------------------------
# duration


def expected_days(
    result: SampleSizeResult,
    daily_traffic: float,
    traffic_fraction: float = 1.0,
    split: Sequence[float] | None = None,
) -> float:
    """Expected days until every arm reaches its planned size.

    Each day ``daily_traffic * traffic_fraction`` units enter the experiment and arm i receives
    the share ``split[i]`` of them (control first, then each treatment). By default the split is
    the plan's own allocation, 1 : ratio : ... : ratio, in which case the answer is
    ``total_sample_size / (daily_traffic * traffic_fraction)`` up to rounding. The slowest arm
    decides: ``max_i n_i / (daily_traffic * traffic_fraction * split[i])``.

    Parameters
    ----------
    result : SampleSizeResult
        The plan.
    daily_traffic : float
        Units (requests, users) per day reaching the service, > 0.
    traffic_fraction : float
        Share of the traffic that enters the experiment, in (0, 1].
    split : sequence of float, optional
        Per-arm shares of the experiment's traffic, ``1 + n_treatments`` entries summing to 1.

    Returns
    -------
    float
        Days (not rounded).

    References
    ----------
    .. [1] Kohavi, Tang, Xu (2020), *Trustworthy Online Controlled Experiments*, chapter 17
       (experiment duration from traffic and allocation).
    """
    rate = v.positive("daily_traffic", daily_traffic)
    f = v.probability("traffic_fraction", traffic_fraction)
    if f <= 0:
        raise InvalidInputError(f"traffic_fraction must be in (0, 1], got {traffic_fraction!r}")
    k = result.n_treatments
    if split is None:
        total_weight = 1.0 + k * result.ratio
        shares = [1.0 / total_weight] + [result.ratio / total_weight] * k
    else:
        shares = v.probabilities("split", split)
        if len(shares) != 1 + k:
            raise InvalidInputError(
                f"split needs {1 + k} entries (control + {k} treatments), got {len(shares)}"
            )
    needs = [float(result.sample_size_per_variant)] + [float(result.sample_size_treatment)] * k
    return max(n / (rate * f * s) for n, s in zip(needs, shares, strict=True))
