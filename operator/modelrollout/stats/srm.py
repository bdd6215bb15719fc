"""Sample ratio mismatch (SRM): is the observed split of trials the split that was configured?

An experiment whose variants did not receive the traffic shares that were set cannot be trusted:
something (a redirect, a crash loop, a bot filter, a cache) removed trials unevenly, and the
comparison of the remaining trials is biased. Fabijan et al. (2019) report SRM in a few percent of
real experiments. Three checks are offered:

* :func:`srm_chi_square` — Pearson's chi-square goodness-of-fit test for one look at the counts
  (the classic fixed-horizon check).
* :func:`srm_sequential` — the Dirichlet-multinomial Bayes factor of Lindon & Malek (2022), an
  e-process under the null hypothesis, so that it may be evaluated at every operator tick without
  inflating the false-alarm rate. It is a function of the cumulative counts only, which is what
  Prometheus gives.
* :func:`srm_sequential_stratified` — the same test when the configured weights change over time
  (each rollout step is a period with its own weights): one e-process per period, multiplied.

All p-values compare with a threshold (default 0.001, the project default for SRM); a result's
``mismatch`` is ``p_value < threshold``.

References
----------
.. [1] Pearson, K. (1900). On the criterion that a given system of deviations from the probable in
   the case of a correlated system of variables is such that it can be reasonably supposed to have
   arisen from random sampling. Philosophical Magazine 50(302), 157-175.
.. [2] Lindon, M., Malek, A. (2022). Anytime-valid inference for multinomial count data. Advances
   in Neural Information Processing Systems 35 (NeurIPS 2022). arXiv:2011.03567.
.. [3] Ville, J. (1939). Étude critique de la notion de collectif. Gauthier-Villars, Paris.
.. [4] Ramdas, A., Grünwald, P., Vovk, V., Shafer, G. (2023). Game-theoretic statistics and safe
   anytime-valid inference. Statistical Science 38(4), 576-601.
.. [5] Grünwald, P., de Heide, R., Koolen, W. (2024). Safe testing. Journal of the Royal
   Statistical Society Series B 86(5), 1091-1128.
.. [6] Fabijan, A., Gupchup, J., Gupta, S., Omhover, J., Qin, W., Vermeer, L., Dmitriev, P.
   (2019). Diagnosing sample ratio mismatch in online controlled experiments. KDD 2019.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special, stats

from modelrollout.errors import InvalidInputError
from modelrollout.stats import _validate

__all__ = [
    "DEFAULT_PRIOR_SCALE",
    "DEFAULT_THRESHOLD",
    "SRMResult",
    "SequentialSRMResult",
    "StratifiedSRMResult",
    "srm_chi_square",
    "srm_log_bayes_factor",
    "srm_sequential",
    "srm_sequential_stratified",
]

DEFAULT_THRESHOLD = 0.001
"""Default p-value threshold below which a sample ratio mismatch is declared."""

DEFAULT_PRIOR_SCALE = 100.0
"""Default total concentration of the Dirichlet prior, ``sum(alpha)``.

The prior is ``Dirichlet(scale * expected)``: centred on the configured weights, with a prior
standard deviation of each share of ``sqrt(w (1 - w) / (scale + 1))``, i.e. about 0.05 for a 50/50
split at scale 100. That puts the prior mass on mismatches of a few percentage points, the size of
real SRMs, while larger mismatches are still detected quickly (the evidence grows exponentially in
n whatever the scale). A smaller scale favours gross mismatches, a larger one tiny mismatches.
"""

_CHI2_METHOD = "Pearson chi-square goodness of fit"
_CHI2_REFERENCE = "Pearson (1900)"
_SEQ_METHOD = "Dirichlet-multinomial sequential test (Bayes factor e-process)"
_SEQ_REFERENCE = "Lindon & Malek (2022), Anytime-valid inference for multinomial count data"
_STRAT_METHOD = "product of per-period Dirichlet-multinomial e-processes"
_STRAT_REFERENCE = _SEQ_REFERENCE + "; Grünwald, de Heide & Koolen (2024), Safe testing"


@dataclass(frozen=True)
class SRMResult:
    """A fixed-horizon SRM check (Pearson's chi-square).

    Attributes
    ----------
    p_value : float
        Upper tail of the chi-square distribution with ``len(observed) - 1`` degrees of freedom.
    statistic : float
        Pearson's X^2 = sum((observed - expected_count)^2 / expected_count).
    dof : int
        Degrees of freedom.
    observed : tuple of float
        The observed trial counts per variant.
    expected_shares, observed_shares : tuple of float
        Configured weights and observed shares of the total.
    threshold : float
        ``mismatch`` is ``p_value < threshold``.
    """

    method: str
    reference: str
    p_value: float
    statistic: float
    dof: int
    observed: tuple[float, ...]
    expected_shares: tuple[float, ...]
    observed_shares: tuple[float, ...]
    threshold: float

    @property
    def mismatch(self) -> bool:
        return self.p_value < self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {**_as_dict(self), "mismatch": self.mismatch}


@dataclass(frozen=True)
class SequentialSRMResult:
    """An anytime-valid SRM check at one tick.

    Attributes
    ----------
    log_e_value : float
        Natural log of the current Bayes factor (the e-process at this tick).
    max_log_e_value : float
        Running maximum of the log e-process over all ticks so far (this one included); pass it
        back as ``previous_max_log_e_value`` at the next tick.
    p_value : float
        Always-valid p-value ``min(1, 1 / exp(max_log_e_value))``.
    observed, expected_shares, observed_shares : tuple of float
        Counts and shares (observed shares are NaN when no trial has been seen).
    prior_scale : float
        Total concentration of the Dirichlet prior.
    threshold : float
        ``mismatch`` is ``p_value < threshold``.
    """

    method: str
    reference: str
    log_e_value: float
    max_log_e_value: float
    p_value: float
    observed: tuple[float, ...]
    expected_shares: tuple[float, ...]
    observed_shares: tuple[float, ...]
    prior_scale: float
    threshold: float

    @property
    def mismatch(self) -> bool:
        return self.p_value < self.threshold

    @property
    def e_value(self) -> float:
        """The current Bayes factor (``inf`` when it overflows a float)."""
        return _safe_exp(self.log_e_value)

    def to_dict(self) -> dict[str, Any]:
        return {**_as_dict(self), "mismatch": self.mismatch}


@dataclass(frozen=True)
class StratifiedSRMResult:
    """An anytime-valid SRM check over consecutive periods with their own weights.

    Attributes
    ----------
    log_e_value : float
        Sum over periods of each period's log Bayes factor (log of the product e-process).
    max_log_e_value : float
        Running maximum of ``log_e_value`` over ticks (this one included).
    p_value : float
        Always-valid p-value ``min(1, exp(-max_log_e_value))``.
    per_stratum : tuple of SequentialSRMResult
        Each period's own test (its ``max_log_e_value`` is its current value: the running max of
        a single period is not tracked).
    expected_shares, observed_shares : tuple of float
        Pooled over periods: the expected share of variant i is ``sum_k n_k w_ki / sum_k n_k``.
    """

    method: str
    reference: str
    log_e_value: float
    max_log_e_value: float
    p_value: float
    per_stratum: tuple[SequentialSRMResult, ...]
    expected_shares: tuple[float, ...]
    observed_shares: tuple[float, ...]
    prior_scale: float
    threshold: float

    @property
    def mismatch(self) -> bool:
        return self.p_value < self.threshold

    @property
    def e_value(self) -> float:
        return _safe_exp(self.log_e_value)

    def to_dict(self) -> dict[str, Any]:
        d = _as_dict(self)
        d["per_stratum"] = [s.to_dict() for s in self.per_stratum]
        d["mismatch"] = self.mismatch
        return d


def srm_chi_square(
    observed: Sequence[float],
    expected: Sequence[float],
    *,
    threshold: float = DEFAULT_THRESHOLD,
) -> SRMResult:
    """Pearson's chi-square goodness-of-fit test of trial counts against configured weights.

    Valid for one look. Repeating it every tick inflates the false-alarm rate; use
    :func:`srm_sequential` for continuous monitoring.

    Parameters
    ----------
    observed : sequence of float
        Trial counts per variant (>= 0, total > 0).
    expected : sequence of float
        Configured weights per variant, each > 0, summing to 1.
    threshold : float
        Mismatch threshold on the p-value, in (0, 1); default 0.001.

    Returns
    -------
    SRMResult
        Matches ``scipy.stats.chisquare(observed, total * expected)``.

    References
    ----------
    .. [1] Pearson, K. (1900). Philosophical Magazine 50(302), 157-175.
    .. [2] Fabijan et al. (2019). Diagnosing sample ratio mismatch in online controlled
       experiments. KDD 2019.
    """
    counts, weights = _counts_and_weights(observed, expected)
    thr = _validate.alpha(threshold, "threshold")
    total = float(counts.sum())
    if total <= 0:
        raise InvalidInputError(f"observed must contain at least one trial, got total {total!r}")
    expected_counts = total * weights
    stat = float(np.sum((counts - expected_counts) ** 2 / expected_counts))
    dof = counts.size - 1
    p = float(stats.chi2.sf(stat, dof))
    return SRMResult(
        method=_CHI2_METHOD,
        reference=_CHI2_REFERENCE,
        p_value=p,
        statistic=stat,
        dof=dof,
        observed=_tuple(counts),
        expected_shares=_tuple(weights),
        observed_shares=_tuple(counts / total),
        threshold=thr,
    )


def srm_log_bayes_factor(
    counts: ArrayLike,
    expected: Sequence[float],
    *,
    prior_scale: float = DEFAULT_PRIOR_SCALE,
) -> NDArray[np.float64]:
    """Log Bayes factor of a Dirichlet-multinomial alternative against the configured weights.

    With configured weights ``w`` (the null hypothesis: each trial goes to variant i with
    probability ``w_i``, independently) and prior ``theta ~ Dirichlet(a)``, ``a = prior_scale * w``,
    the Bayes factor of the sequence of assignments with cumulative counts ``x`` (total ``n``) is

    .. math::

        BF(x) = \\frac{B(a + x)}{B(a)\\,\\prod_i w_i^{x_i}}, \\qquad
        B(a) = \\frac{\\prod_i \\Gamma(a_i)}{\\Gamma(\\sum_i a_i)} .

    The multinomial coefficient cancels, so BF depends on the order of the trials only through
    ``x``. Under the null hypothesis ``BF`` is a non-negative martingale with ``BF(0) = 1`` in the
    filtration of single assignments (Lindon & Malek 2022): the e-process. It is
    computed in log space with ``scipy.special.gammaln``, so very large counts do not overflow.

    Parameters
    ----------
    counts : array_like
        Cumulative counts, shape ``(..., k)``; every entry >= 0 and finite.
    expected : sequence of float
        The k configured weights, each > 0, summing to 1.
    prior_scale : float
        Total concentration ``sum(a)`` of the prior, > 0 (default :data:`DEFAULT_PRIOR_SCALE`).

    Returns
    -------
    numpy.ndarray
        The natural log of BF, shape ``counts.shape[:-1]`` (a 0-d array for one vector).

    References
    ----------
    .. [1] Lindon, M., Malek, A. (2022). Anytime-valid inference for multinomial count data.
       NeurIPS 2022. arXiv:2011.03567.
    """
    weights = np.asarray(_validate.probabilities("expected", expected), dtype=np.float64)
    scale = _validate.positive("prior_scale", prior_scale)
    try:
        x = np.asarray(counts, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError(f"counts must be numeric, got {counts!r}") from None
    if x.ndim == 0 or x.shape[-1] != weights.size:
        raise InvalidInputError(
            f"counts must have {weights.size} entries on its last axis (one per expected weight), "
            f"got shape {x.shape}"
        )
    if not np.all(np.isfinite(x)):
        raise InvalidInputError(f"counts must be finite, got {counts!r}")
    if np.any(x < 0):
        raise InvalidInputError(f"counts must be >= 0, got {counts!r}")
    return _log_bf(x, weights, scale)


def srm_sequential(
    observed: Sequence[float],
    expected: Sequence[float],
    *,
    previous_max_log_e_value: float | None = None,
    prior_scale: float = DEFAULT_PRIOR_SCALE,
    threshold: float = DEFAULT_THRESHOLD,
) -> SequentialSRMResult:
    """Anytime-valid SRM test on cumulative counts (Lindon & Malek 2022).

    Call it at every tick with the cumulative counts since the weights were set, passing back the
    previous result's ``max_log_e_value``. By Ville's inequality, under the null hypothesis
    ``P(sup_t BF_t >= 1/threshold) <= threshold``, so the always-valid p-value
    ``min(1, 1 / max_t BF_t)`` may be compared with the threshold at every tick, and the test may be
    stopped at any time, with a false-alarm probability of at most ``threshold`` over the whole
    run. Looking only at ticks (a sub-sequence of the trials) keeps that guarantee.

    Parameters
    ----------
    observed : sequence of float
        Cumulative trial counts per variant (>= 0; all zero gives BF = 1 and p = 1).
    expected : sequence of float
        Configured weights, each > 0, summing to 1.
    previous_max_log_e_value : float, optional
        The running max of the log e-process carried from the last tick (``None`` at the start).
    prior_scale : float
        Total concentration of the Dirichlet prior (default :data:`DEFAULT_PRIOR_SCALE`).
    threshold : float
        Mismatch threshold on the always-valid p-value, in (0, 1); default 0.001.

    Returns
    -------
    SequentialSRMResult

    References
    ----------
    .. [1] Lindon, M., Malek, A. (2022). Anytime-valid inference for multinomial count data.
       NeurIPS 2022. arXiv:2011.03567.
    .. [2] Ville, J. (1939). Étude critique de la notion de collectif.
    """
    counts, weights = _counts_and_weights(observed, expected)
    scale = _validate.positive("prior_scale", prior_scale)
    thr = _validate.alpha(threshold, "threshold")
    previous = _previous_max(previous_max_log_e_value)
    log_e = float(_log_bf(counts, weights, scale))
    return _sequential_result(counts, weights, scale, thr, log_e, max(previous, log_e))


def srm_sequential_stratified(
    observed: Sequence[Sequence[float]],
    expected: Sequence[Sequence[float]],
    *,
    previous_max_log_e_value: float | None = None,
    prior_scale: float = DEFAULT_PRIOR_SCALE,
    threshold: float = DEFAULT_THRESHOLD,
) -> StratifiedSRMResult:
    """Anytime-valid SRM test over consecutive periods whose configured weights differ.

    The operator changes the weights at every rollout step, so the null hypothesis is "in period
    k each trial goes to variant i with probability ``w_ki``". Each period gets its own
    Dirichlet-multinomial Bayes factor :math:`BF_k` on the counts of that period alone (prior
    centred on that period's weights), and the evidence is their product
    :math:`E_t = \\prod_{k<K} BF_k(\\text{end of } k) \\cdot BF_K(t)` during period K.

    Why the product is still valid: within period k, :math:`BF_k` is a non-negative martingale
    under the null that starts at 1, whatever happened before; so, conditionally on the past,
    continuing with a fresh e-process multiplies the expected evidence by exactly 1. Hence
    :math:`E_t` is a non-negative martingale with :math:`E_0 = 1` (a test martingale) across period
    boundaries, as long as a boundary is decided from past data only (a stopping time) - which is
    how the operator advances steps. Ville's inequality then bounds
    ``P(sup_t E_t >= 1/threshold) <= threshold`` over the whole run (optional continuation of
    e-values: Grünwald, de Heide & Koolen 2024; Ramdas et al. 2023).

    Parameters
    ----------
    observed : sequence of sequences of float
        ``observed[k][i]``: trials of variant i during period k (counts of that period only, not
        cumulative across periods). Past periods are frozen; the last one is growing.
    expected : sequence of sequences of float
        ``expected[k]``: the weights configured in period k, each > 0, summing to 1. A variant
        with weight 0 in a period must be dropped from that period by the caller (it can carry no
        trial under the null hypothesis); all periods must list the same variants.
    previous_max_log_e_value : float, optional
        The running max of the log product e-process from the last tick.
    prior_scale : float
        Total concentration of each period's Dirichlet prior.
    threshold : float
        Mismatch threshold on the always-valid p-value, in (0, 1); default 0.001.

    Returns
    -------
    StratifiedSRMResult

    References
    ----------
    .. [1] Lindon, M., Malek, A. (2022). Anytime-valid inference for multinomial count data.
       NeurIPS 2022.
    .. [2] Grünwald, P., de Heide, R., Koolen, W. (2024). Safe testing. JRSS-B 86(5).
    .. [3] Ramdas, A., Grünwald, P., Vovk, V., Shafer, G. (2023). Game-theoretic statistics and
       safe anytime-valid inference. Statistical Science 38(4).
    """
    if len(observed) == 0:
        raise InvalidInputError("observed must contain at least one period, got none")
    if len(observed) != len(expected):
        raise InvalidInputError(
            f"observed and expected must have one entry per period, got {len(observed)} and {len(expected)}"
        )
    scale = _validate.positive("prior_scale", prior_scale)
    thr = _validate.alpha(threshold, "threshold")
    previous = _previous_max(previous_max_log_e_value)
    validated = [
        _counts_and_weights(obs_k, exp_k, f"observed[{k}]", f"expected[{k}]")
        for k, (obs_k, exp_k) in enumerate(zip(observed, expected, strict=True))
    ]
    width = validated[0][0].size
    for k, (counts, _) in enumerate(validated):
        if counts.size != width:
            raise InvalidInputError(
                f"every period must list the same {width} variants, period {k} has {counts.size}"
            )
    strata: list[SequentialSRMResult] = []
    pooled_counts = np.zeros(width)
    pooled_expected = np.zeros(width)
    for counts, weights in validated:
        log_e = float(_log_bf(counts, weights, scale))
        strata.append(_sequential_result(counts, weights, scale, thr, log_e, log_e))
        pooled_counts += counts
        pooled_expected += counts.sum() * weights
    total = float(pooled_counts.sum())
    log_e_total = float(sum(s.log_e_value for s in strata))
    running = max(previous, log_e_total)
    if total > 0:
        observed_shares = _tuple(pooled_counts / total)
        expected_shares = _tuple(pooled_expected / total)
    else:
        observed_shares = tuple(math.nan for _ in range(pooled_counts.size))
        expected_shares = tuple(math.nan for _ in range(pooled_counts.size))
    return StratifiedSRMResult(
        method=_STRAT_METHOD,
        reference=_STRAT_REFERENCE,
        log_e_value=log_e_total,
        max_log_e_value=running,
        p_value=_p_from_log_e(running),
        per_stratum=tuple(strata),
        expected_shares=expected_shares,
        observed_shares=observed_shares,
        prior_scale=scale,
        threshold=thr,
    )


# --- helpers -----------------------------------------------------------------------------------


def _log_bf(x: NDArray[np.float64], weights: NDArray[np.float64], scale: float) -> NDArray[np.float64]:
    a = scale * weights
    n = x.sum(axis=-1)
    log_marginal_alt = (
        special.gammaln(scale)
        - special.gammaln(scale + n)
        + np.sum(special.gammaln(a + x) - special.gammaln(a), axis=-1)
    )
    log_null = np.sum(x * np.log(weights), axis=-1)
    return np.asarray(log_marginal_alt - log_null, dtype=np.float64)


def _counts_and_weights(
    observed: Sequence[float],
    expected: Sequence[float],
    obs_name: str = "observed",
    exp_name: str = "expected",
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    counts = [_validate.count(f"{obs_name}[{i}]", v) for i, v in enumerate(observed)]
    weights = _validate.probabilities(exp_name, expected)
    if len(counts) != len(weights):
        raise InvalidInputError(
            f"{obs_name} and {exp_name} must have the same length, got {len(counts)} and {len(weights)}"
        )
    return np.asarray(counts, dtype=np.float64), np.asarray(weights, dtype=np.float64)


def _previous_max(value: float | None) -> float:
    if value is None:
        return 0.0  # the e-process starts at BF = 1
    v = _validate.finite("previous_max_log_e_value", value)
    # The running max includes the start BF_0 = 1, so it can never be negative.
    return max(v, 0.0)


def _sequential_result(
    counts: NDArray[np.float64],
    weights: NDArray[np.float64],
    scale: float,
    threshold: float,
    log_e: float,
    running: float,
) -> SequentialSRMResult:
    total = float(counts.sum())
    shares = _tuple(counts / total) if total > 0 else tuple(math.nan for _ in range(counts.size))
    return SequentialSRMResult(
        method=_SEQ_METHOD,
        reference=_SEQ_REFERENCE,
        log_e_value=log_e,
        max_log_e_value=running,
        p_value=_p_from_log_e(running),
        observed=_tuple(counts),
        expected_shares=_tuple(weights),
        observed_shares=shares,
        prior_scale=scale,
        threshold=threshold,
    )


def _p_from_log_e(max_log_e: float) -> float:
    return min(1.0, math.exp(-max_log_e))


def _safe_exp(x: float) -> float:
    return math.inf if x > 709.0 else math.exp(x)


def _tuple(a: NDArray[np.float64]) -> tuple[float, ...]:
    return tuple(float(v) for v in a)


def _as_dict(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}
