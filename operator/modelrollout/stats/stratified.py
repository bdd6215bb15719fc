"""Stratified comparison: one difference per stratum, combined with inverse-variance weights.

The operator changes the traffic weights at every rollout step, and the baseline moves over time
(time of day, campaigns). Pooling all counts then compares a challenger seen mostly in late steps
with a champion seen mostly in early ones, and the pooled difference can even have the wrong sign
(Simpson's paradox). Estimating the difference within each step, where both arms share the same
period, and combining the steps removes that confounding.

The combination is the fixed-effect (inverse-variance) estimator of meta-analysis: with per-stratum
differences ``d_k`` and variances ``v_k``, weights ``w_k = 1 / v_k``,

    ``d = sum_k w_k d_k / sum_k w_k``,   ``SE(d) = 1 / sqrt(sum_k w_k)``,

a z-test of ``d = 0`` and the Wald interval ``d +- z_{1 - alpha/2} SE``. Cochran's Q measures how
much the strata disagree.

Skipping rule (documented once, applied by every function here): a stratum without an estimate
(an arm with no trials, or fewer than 2 observations for means) or with a zero variance (e.g. both
arms at exactly 0 % or 100 %, so the unpooled variance is 0 and the weight would be infinite) is
skipped and listed in ``skipped``; if no stratum is left, :class:`InvalidInputError` is raised.

References
----------
.. [1] Cochran, W. G. (1954). The combination of estimates from different experiments.
   Biometrics 10(1), 101-129.
.. [2] Borenstein, M., Hedges, L. V., Higgins, J. P. T., Rothstein, H. R. (2009). Introduction to
   Meta-Analysis, ch. 11 (fixed-effect model). Wiley.
.. [3] Kohavi, R., Tang, D., Xu, Y. (2020). Trustworthy Online Controlled Experiments, ch. 3
   (Simpson's paradox with ramp-up). Cambridge University Press.
.. [4] Simpson, E. H. (1951). The interpretation of interaction in contingency tables. Journal of
   the Royal Statistical Society Series B 13(2), 238-241.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from scipy import special, stats

from modelrollout.errors import InvalidInputError
from modelrollout.stats import _validate
from modelrollout.stats.results import Interval, Verdict

__all__ = [
    "StratifiedResult",
    "combine_fixed_effect",
    "stratified_means",
    "stratified_proportions",
]

_REFERENCE = "Cochran (1954); Borenstein et al. (2009), Introduction to Meta-Analysis, ch. 11"


@dataclass(frozen=True)
class StratifiedResult:
    """A fixed-effect combination of per-stratum differences (treatment minus control).

    Attributes
    ----------
    estimate : float
        Inverse-variance weighted mean of the per-stratum differences.
    se : float
        Its standard error ``1 / sqrt(sum w_k)``.
    statistic : float
        ``z = estimate / se``.
    p_value : float
        Two-sided p-value of ``z``.
    ci : Interval
        Wald interval at level ``1 - alpha``.
    stratum_estimates, stratum_variances : tuple of float
        Per stratum, in input order (NaN for a skipped stratum).
    weights : tuple of float
        Normalised weights ``w_k / sum w`` (0 for a skipped stratum).
    used, skipped : tuple of int
        Indices of the combined and of the skipped strata.
    heterogeneity_q, heterogeneity_p_value : float
        Cochran's ``Q = sum w_k (d_k - d)^2`` and its chi-square p-value on ``len(used) - 1``
        degrees of freedom (NaN with one stratum).
    pooled_difference : float
        The naive difference of the pooled arms, for comparison (NaN when not applicable).
    """

    method: str
    reference: str
    estimate: float
    se: float
    statistic: float
    p_value: float
    ci: Interval
    alpha: float
    stratum_estimates: tuple[float, ...]
    stratum_variances: tuple[float, ...]
    weights: tuple[float, ...]
    used: tuple[int, ...]
    skipped: tuple[int, ...]
    heterogeneity_q: float
    heterogeneity_p_value: float
    pooled_difference: float = math.nan

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha

    def decision(self, direction: str = "increase") -> Verdict:
        """ROLLOUT_CHALLENGER when significantly better in ``direction``, KEEP_CHAMPION when
        significantly worse, INCONCLUSIVE otherwise (as ComparisonResult.decision)."""
        if direction not in ("increase", "decrease"):
            raise InvalidInputError(f"direction must be 'increase' or 'decrease', got {direction!r}")
        if not self.significant:
            return Verdict.INCONCLUSIVE
        better = self.estimate > 0 if direction == "increase" else self.estimate < 0
        return Verdict.ROLLOUT_CHALLENGER if better else Verdict.KEEP_CHAMPION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci"] = self.ci.as_list()
        d["significant"] = self.significant
        return d


def combine_fixed_effect(
    estimates: Sequence[float],
    variances: Sequence[float],
    *,
    alpha: float = 0.05,
) -> StratifiedResult:
    """Fixed-effect (inverse-variance) combination of independent estimates.

    Parameters
    ----------
    estimates : sequence of float
        Per-stratum estimates of the same quantity (finite).
    variances : sequence of float
        Their variances (>= 0); strata with variance 0 are skipped (see the module docstring).
    alpha : float
        1 - confidence level and test level, in (0, 1).

    Returns
    -------
    StratifiedResult
        Matches the "fixed effect" row of
        ``statsmodels.stats.meta_analysis.combine_effects(estimates, variances)``.

    References
    ----------
    .. [1] Cochran, W. G. (1954). Biometrics 10(1), 101-129.
    .. [2] Borenstein et al. (2009). Introduction to Meta-Analysis, ch. 11.
    """
    if len(estimates) != len(variances):
        raise InvalidInputError(
            f"estimates and variances must have the same length, got {len(estimates)} and {len(variances)}"
        )
    if len(estimates) == 0:
        raise InvalidInputError("estimates must contain at least one stratum, got none")
    a = _validate.alpha(alpha)
    d = [_validate.finite(f"estimates[{k}]", v) for k, v in enumerate(estimates)]
    v = [_validate.non_negative(f"variances[{k}]", x) for k, x in enumerate(variances)]
    strata: list[float | None] = [v_k if v_k > 0 else None for v_k in v]
    return _combine(d, strata, a, "fixed-effect inverse-variance combination", math.nan)


def stratified_proportions(
    control_successes: Sequence[float],
    control_trials: Sequence[float],
    treatment_successes: Sequence[float],
    treatment_trials: Sequence[float],
    *,
    alpha: float = 0.05,
) -> StratifiedResult:
    """Difference of two proportions, stratified (e.g. by rollout step), fixed-effect combined.

    In stratum k, ``d_k = p_t - p_c`` with the unpooled variance
    ``p_t (1 - p_t) / n_t + p_c (1 - p_c) / n_c``. Strata where an arm has no trials or the variance
    is 0 are skipped (module docstring).

    Parameters
    ----------
    control_successes, control_trials, treatment_successes, treatment_trials : sequence of float
        One entry per stratum; counts >= 0 with successes <= trials.
    alpha : float
        In (0, 1); default 0.05.

    Returns
    -------
    StratifiedResult
        With ``pooled_difference`` the naive ``sum s_t / sum n_t - sum s_c / sum n_c``.

    References
    ----------
    .. [1] Cochran, W. G. (1954). Biometrics 10(1), 101-129.
    .. [2] Kohavi, Tang, Xu (2020). Trustworthy Online Controlled Experiments, ch. 3.
    """
    k = _same_length(
        control_successes=control_successes,
        control_trials=control_trials,
        treatment_successes=treatment_successes,
        treatment_trials=treatment_trials,
    )
    a = _validate.alpha(alpha)
    d: list[float] = []
    strata: list[float | None] = []
    totals = [0.0, 0.0, 0.0, 0.0]
    for i in range(k):
        sc, nc = _pair("control", i, control_successes[i], control_trials[i])
        st, nt = _pair("treatment", i, treatment_successes[i], treatment_trials[i])
        totals = [totals[0] + sc, totals[1] + nc, totals[2] + st, totals[3] + nt]
        if nc <= 0 or nt <= 0:
            d.append(math.nan)
            strata.append(None)
            continue
        pc, pt = sc / nc, st / nt
        var = pt * (1 - pt) / nt + pc * (1 - pc) / nc
        d.append(pt - pc)
        strata.append(var if var > 0 else None)
    pooled = totals[2] / totals[3] - totals[0] / totals[1] if totals[1] > 0 and totals[3] > 0 else math.nan
    return _combine(d, strata, a, "stratified difference of proportions, inverse-variance weights", pooled)


def stratified_means(
    control_n: Sequence[float],
    control_mean: Sequence[float],
    control_sd: Sequence[float],
    treatment_n: Sequence[float],
    treatment_mean: Sequence[float],
    treatment_sd: Sequence[float],
    *,
    alpha: float = 0.05,
) -> StratifiedResult:
    """Difference of two means from summary statistics, stratified, fixed-effect combined.

    In stratum k, ``d_k = mean_t - mean_c`` with variance ``sd_t^2 / n_t + sd_c^2 / n_c`` (Welch's
    unpooled variance). Strata where an arm has fewer than 2 observations or the variance is 0 are
    skipped (module docstring).

    Parameters
    ----------
    control_n, treatment_n : sequence of float
        Observations per stratum, >= 0.
    control_mean, treatment_mean : sequence of float
        Sample means (ignored in a skipped stratum, but must be finite).
    control_sd, treatment_sd : sequence of float
        Sample standard deviations, >= 0.
    alpha : float
        In (0, 1); default 0.05.

    Returns
    -------
    StratifiedResult
        With ``pooled_difference`` the difference of the n-weighted pooled means.

    References
    ----------
    .. [1] Cochran, W. G. (1954). Biometrics 10(1), 101-129.
    .. [2] Borenstein et al. (2009). Introduction to Meta-Analysis, ch. 4 and 11.
    """
    k = _same_length(
        control_n=control_n,
        control_mean=control_mean,
        control_sd=control_sd,
        treatment_n=treatment_n,
        treatment_mean=treatment_mean,
        treatment_sd=treatment_sd,
    )
    a = _validate.alpha(alpha)
    d: list[float] = []
    strata: list[float | None] = []
    sums = [0.0, 0.0, 0.0, 0.0]  # n_c, n_c * mean_c, n_t, n_t * mean_t
    for i in range(k):
        nc = _validate.count(f"control_n[{i}]", control_n[i])
        nt = _validate.count(f"treatment_n[{i}]", treatment_n[i])
        mc = _validate.finite(f"control_mean[{i}]", control_mean[i])
        mt = _validate.finite(f"treatment_mean[{i}]", treatment_mean[i])
        sdc = _validate.non_negative(f"control_sd[{i}]", control_sd[i])
        sdt = _validate.non_negative(f"treatment_sd[{i}]", treatment_sd[i])
        sums = [sums[0] + nc, sums[1] + nc * mc, sums[2] + nt, sums[3] + nt * mt]
        if nc < 2 or nt < 2:
            d.append(math.nan)
            strata.append(None)
            continue
        var = sdt**2 / nt + sdc**2 / nc
        d.append(mt - mc)
        strata.append(var if var > 0 else None)
    pooled = sums[3] / sums[2] - sums[1] / sums[0] if sums[0] > 0 and sums[2] > 0 else math.nan
    return _combine(d, strata, a, "stratified difference of means, inverse-variance weights", pooled)


# --- helpers -----------------------------------------------------------------------------------


def _combine(
    d: list[float], variances: list[float | None], alpha: float, method: str, pooled: float
) -> StratifiedResult:
    used = [k for k, v in enumerate(variances) if v is not None]
    skipped = [k for k, v in enumerate(variances) if v is None]
    if not used:
        raise InvalidInputError(
            f"no stratum can be combined: all {len(variances)} have no trials in an arm or a zero variance"
        )
    w = {k: 1.0 / v for k, v in enumerate(variances) if v is not None}
    w_total = sum(w.values())
    estimate = sum(w[k] * d[k] for k in used) / w_total
    se = 1.0 / math.sqrt(w_total)
    z = estimate / se
    p = float(2.0 * special.ndtr(-abs(z)))
    zq = float(special.ndtri(1.0 - alpha / 2.0))
    if len(used) > 1:
        q = sum(w[k] * (d[k] - estimate) ** 2 for k in used)
        q_p = float(stats.chi2.sf(q, len(used) - 1))
    else:
        q, q_p = math.nan, math.nan
    return StratifiedResult(
        method=method,
        reference=_REFERENCE,
        estimate=estimate,
        se=se,
        statistic=z,
        p_value=p,
        ci=Interval(estimate - zq * se, estimate + zq * se),
        alpha=alpha,
        stratum_estimates=tuple(d[k] if k in w else math.nan for k in range(len(d))),
        stratum_variances=tuple(v if v is not None else math.nan for v in variances),
        weights=tuple(w[k] / w_total if k in w else 0.0 for k in range(len(d))),
        used=tuple(used),
        skipped=tuple(skipped),
        heterogeneity_q=q,
        heterogeneity_p_value=q_p,
        pooled_difference=pooled,
    )


def _pair(prefix: str, i: int, successes: float, trials: float) -> tuple[float, float]:
    s = _validate.count(f"{prefix}_successes[{i}]", successes)
    n = _validate.count(f"{prefix}_trials[{i}]", trials)
    if s > n:
        raise InvalidInputError(
            f"{prefix}_successes[{i}] ({successes!r}) must be <= {prefix}_trials[{i}] ({trials!r})"
        )
    return s, n


def _same_length(**columns: Sequence[float]) -> int:
    lengths = {name: len(col) for name, col in columns.items()}
    distinct = set(lengths.values())
    if len(distinct) != 1:
        raise InvalidInputError(f"all per-stratum sequences must have the same length, got {lengths}")
    k = distinct.pop()
    if k == 0:
        raise InvalidInputError("at least one stratum is needed, got none")
    return k
