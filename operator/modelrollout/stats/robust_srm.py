"""A sample ratio test that bounded measurement error cannot fool: the least favourable e-value.

Counts taken from scraped counters are exact, but they cover slightly different spans for
different variants: each series is counted from its first sample after a stratum began to its
last sample so far, and series are scraped at different offsets, a late target not at all for a
while, and a counter reset loses what a series counted since its last scrape. So the counts ``x``
that the operator has differ from the counts ``y`` that the null hypothesis describes by an error
that is known to be small: ``-E_i <= y_i - x_i <= M_i`` (see :mod:`modelrollout.policy.srm` for the
bounds it uses).

The Dirichlet-multinomial Bayes factor of Lindon & Malek (2022), ``BF(y)`` (here an equal-weight
mixture over several prior scales, :func:`mixture_log_bayes_factor`), is an e-process under
the null hypothesis that each request goes to variant i with probability ``w_i``. The operator
cannot evaluate it on ``y``, which it does not see, but it can evaluate its least favourable value
over every ``y`` the deficit allows::

    E(x) = min { BF(y) : x - E <= y <= x + M }.

Since the true ``y`` is one of them, ``E(x) <= BF(y)`` at every tick, so
``sup_t E_t <= sup_t BF(y_t)`` and Ville's inequality still bounds the false alarm probability by
the threshold, whatever the deficits were, as long as the bounds hold. This is the composite-null
construction of safe testing (an e-value valid for every distribution of the null, here every
admissible contamination; Grünwald, de Heide & Koolen 2024), for Huber's (1964) model of
contaminated observations in its bounded form. It costs power only while ``M`` is large against
the counts: ``M`` grows with a few scrape intervals of traffic and the counts with the whole
stratum, so a true mismatch, whose evidence grows linearly, is still found.

``log BF`` is convex in the counts (the multivariate Beta function is log-convex, being an
integral of functions log-linear in its arguments, and a sum of log-convex functions is
log-convex, so the mixture is too), so the minimum over the box is found by L-BFGS-B with the
exact gradient.

References
----------
.. [1] Lindon, M., Malek, A. (2022). Anytime-valid inference for multinomial count data. NeurIPS 35.
.. [2] Grünwald, P., de Heide, R., Koolen, W. (2024). Safe testing. JRSS-B 86(5), 1091-1128.
.. [3] Huber, P. J. (1964). Robust estimation of a location parameter. Ann. Math. Statist. 35(1).
.. [4] Ville, J. (1939). Étude critique de la notion de collectif.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, special

from modelrollout.errors import InvalidInputError
from modelrollout.stats import _validate

__all__ = ["MIXTURE_SCALES", "mixture_log_bayes_factor", "robust_log_bayes_factor"]


#: The total concentrations of the Dirichlet priors mixed by :func:`robust_log_bayes_factor` by
#: default: prior standard deviations of a share of about 5, 1.6, 0.5 and 0.16 percentage points at a
#: 50/50 split, so that a gross mismatch and one of a fraction of a point are both found fast.
MIXTURE_SCALES: tuple[float, ...] = (1e2, 1e3, 1e4, 1e5)


def _component(
    y: NDArray[np.float64], w: NDArray[np.float64], scale: float, log_w: NDArray[np.float64]
) -> tuple[float, NDArray[np.float64]]:
    a = scale * w
    n = float(y.sum())
    value = (
        special.gammaln(scale)
        - special.gammaln(scale + n)
        + np.sum(special.gammaln(a + y) - special.gammaln(a))
        - float(np.dot(y, log_w))
    )
    grad = special.digamma(a + y) - special.digamma(scale + n) - log_w
    return float(value), np.asarray(grad, dtype=np.float64)


def _objective(
    y: NDArray[np.float64], w: NDArray[np.float64], scales: tuple[float, ...], log_w: NDArray[np.float64]
) -> tuple[float, NDArray[np.float64]]:
    """log of the equal-weight mixture of the Bayes factors of ``scales``, and its gradient."""
    parts = [_component(y, w, s, log_w) for s in scales]
    values = np.array([v for v, _ in parts])
    top = float(values.max())
    weights = np.exp(values - top)
    total = float(weights.sum())
    value = top + math.log(total) - math.log(len(scales))
    grad = sum(wt * g for wt, (_, g) in zip(weights / total, parts, strict=True))
    return value, np.asarray(grad, dtype=np.float64)


def mixture_log_bayes_factor(
    counts: Sequence[float], expected: Sequence[float], scales: tuple[float, ...] = MIXTURE_SCALES
) -> float:
    """log of the equal-weight mixture over prior ``scales`` of the Dirichlet-multinomial Bayes
    factors of Lindon & Malek (2022). A mixture of e-processes is an e-process; the mixture pays
    for the scale it did not know (at most ``log len(scales)``) instead of a prior tuned to one size
    of mismatch."""
    x = np.asarray(counts, dtype=np.float64)
    w = np.asarray(expected, dtype=np.float64)
    return _objective(x, w, scales, np.log(w))[0]


def _slack(name: str, values: Sequence[float] | None, size: int) -> NDArray[np.float64]:
    if values is None:
        return np.zeros(size)
    out = np.asarray(
        [_validate.non_negative(f"{name}[{i}]", v) for i, v in enumerate(values)], dtype=np.float64
    )
    if out.size != size:
        raise InvalidInputError(f"{name} must have one entry per variant ({size}), got {out.size}")
    return out


def robust_log_bayes_factor(
    counts: Sequence[float],
    expected: Sequence[float],
    deficit: Sequence[float] | None = None,
    *,
    excess: Sequence[float] | None = None,
    prior_scales: tuple[float, ...] = MIXTURE_SCALES,
) -> float:
    """``min log BF(y)`` over ``counts - excess <= y <= counts + deficit``, ``y >= 0`` (see the
    module docstring).

    Parameters
    ----------
    counts : sequence of float
        The counts per variant (>= 0).
    expected : sequence of float
        The shares the null hypothesis expects, each > 0, summing to 1.
    deficit, excess : sequence of float, optional
        Per variant, the most it may have missed, and the most it may have counted too many
        (>= 0 each); none gives the plain Bayes factor.
    prior_scales : tuple of float
        Total concentrations of the Dirichlet priors mixed with equal weights
        (:func:`mixture_log_bayes_factor`); one scale gives the plain Bayes factor of
        :func:`~modelrollout.stats.srm.srm_log_bayes_factor`.

    Returns
    -------
    float
        The natural log of the least favourable Bayes factor (<= the plain one).
    """
    x = np.asarray([_validate.count(f"counts[{i}]", v) for i, v in enumerate(counts)], dtype=np.float64)
    w = np.asarray(_validate.probabilities("expected", expected), dtype=np.float64)
    if x.size != w.size:
        raise InvalidInputError(
            f"counts and expected must have one entry per variant, got {x.size} and {w.size}"
        )
    high = x + _slack("deficit", deficit, x.size)
    low = np.maximum(0.0, x - _slack("excess", excess, x.size))
    scales = tuple(_validate.positive("prior_scales", s) for s in prior_scales)
    if not scales:
        raise InvalidInputError("prior_scales must hold at least one scale")
    log_w = np.log(w)
    plain = _objective(x, w, scales, log_w)[0]
    if np.all(high == low):
        return plain
    # Start inside the box, as close to the expected split as it allows.
    start = np.clip(float(x.sum()) * w, low, high)
    found = optimize.minimize(
        _objective,
        start,
        args=(w, scales, log_w),
        jac=True,
        method="L-BFGS-B",
        bounds=list(zip(low.tolist(), high.tolist(), strict=True)),
        options={"ftol": 1e-12, "gtol": 1e-9, "maxiter": 200},
    )
    least = float(found.fun) if np.isfinite(found.fun) else plain
    # The minimum is never above the value at the observed counts themselves.
    return float(min(least, plain))
