"""Novelty effects: an always-valid test of whether a challenger's lift decays over time.

Users often react to a new model more (or less) than they will once it is familiar, so an early
lift can fade. The operator cuts the live analysis into consecutive time windows, estimates the
challenger's gain (its difference from the champion, signed so that positive is better) in each
window on that window's own counts, and asks after every window: is the gain of the *recent*
window lower than the gain of the windows *before* it?

Recursive residuals
-------------------
Window ``k`` gives an estimate ``g_k`` of its gain with variance ``v_k`` (independent windows:
each holds its own users' outcomes). Under the null of a constant gain ``g_k ~ N(g, v_k)`` with
an unknown ``g``. The earlier windows' inverse-variance mean ``m_{k-1}`` has variance
``V_{k-1} = 1 / sum_{i<k} 1/v_i``, and the standardised *recursive residual*::

    r_k = (m_{k-1} - g_k) / sqrt(v_k + V_{k-1}),    k = 2, 3, ...

is N(0, 1), independently of ``r_2 .. r_{k-1}`` (Brown, Durbin & Evans 1975: the recursive
residuals of a linear model with known variances are i.i.d.; here the model is a constant fitted
by weighted least squares). ``r_k`` is positive when the recent window's gain is below the
earlier ones'. The unknown ``g`` is gone: no nuisance parameter is left to estimate.

The e-process
-------------
After ``n`` residuals, ``S_n = r_2 + ... + r_{n+1}``. For a drift ``theta >= 0`` per residual,
``exp(theta S_n - n theta^2 / 2)`` is a martingale when the gain is constant and a
supermartingale when it grows (the residuals then have a negative mean). Mixing ``theta`` over a
half-normal with scale ``tau2`` gives, in closed form (Robbins 1970; the one-sided normal mixture
of Howard et al. 2021, as in :func:`modelrollout.stats.sequential.one_sided_normal_mixture_log_e_value`
applied to the mean ``S_n / n`` with variance ``1 / n``)::

    E_n = 2 / sqrt(1 + n tau2) * exp(tau2 S_n^2 / (2 (1 + n tau2))) * Phi(tau2^(1/2) S_n / sqrt(1 + n tau2))

By Ville's inequality ``P(sup_n E_n >= 1/alpha) <= alpha`` under the composite null "the recent
gain is not below the early gain" (no decay): the test may be looked at after every window, for
as long as the experiment runs. ``p = min(1, 1 / max_n E_n)`` is an always-valid p-value
(Johari et al. 2017). ``tau2`` is tuned with :func:`decay_tau2` so that the boundary is
tightest at the number of windows the experiment is planned to see (``minDuration / window``).

The variances ``v_k`` are plug-in estimates from each window's counts, so the guarantee is
asymptotic in the samples per window, like the operator's other tests on counts (Waudby-Smith et
al. 2023); a window therefore closes only once every arm has :data:`MIN_WINDOW_SAMPLES` samples.

What it does not see: a lift that varies with a cycle shorter than the window (hour of the day in
hourly windows) makes the gains unequal without a trend; use windows of a whole cycle (a day).

References
----------
Brown, R. L., Durbin, J., Evans, J. M. (1975). Techniques for testing the constancy of regression
relationships over time. JRSS B 37(2), 149-192 (recursive residuals).
Howard, S. R., Ramdas, A., McAuliffe, J., Sekhon, J. (2021). Time-uniform, nonparametric,
nonasymptotic confidence sequences. Annals of Statistics 49(2), 1055-1080.
Johari, R., Koomen, P., Pekelis, L., Walsh, D. (2017). Peeking at A/B tests. KDD 2017.
Robbins, H. (1970). Statistical methods related to the law of the iterated logarithm. Annals of
Mathematical Statistics 41(5), 1397-1409.
Waudby-Smith, I., Arbour, D., Sinha, R., Kennedy, E. H., Ramdas, A. (2023). Time-uniform central
limit theory and asymptotic confidence sequences. arXiv:2103.06476.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from modelrollout.errors import InvalidInputError
from modelrollout.stats import _validate
from modelrollout.stats.sequential import one_sided_normal_mixture_log_e_value, optimal_tau2

FloatArray = NDArray[np.float64]

METHOD: Final = "recursive residuals of the windows' gains, one-sided normal-mixture e-process"
REFERENCE: Final = (
    "Brown, Durbin, Evans (1975) recursive residuals, JRSS B 37(2); Howard, Ramdas, McAuliffe, "
    "Sekhon (2021) Time-uniform, nonparametric, nonasymptotic confidence sequences, Ann. Statist. "
    "49(2); Johari, Koomen, Pekelis, Walsh (2017) Peeking at A/B tests, KDD"
)
#: Samples per arm a window needs before it closes (else it runs on).
MIN_WINDOW_SAMPLES: Final = 100
#: The fewest windows the test is tuned to (a plan of fewer would make the mixture too wide).
MIN_PLANNED_WINDOWS: Final = 2


def decay_tau2(planned_windows: float, alpha: float) -> float:
    """The half-normal mixing scale, tuned to be tightest after ``planned_windows`` windows.

    ``planned_windows - 1`` residuals (the first window only sets the reference): the mean of
    ``n`` standardised residuals has variance ``1 / n``, and :func:`optimal_tau2` (one-sided) gives
    the scale that minimises the boundary there.
    """
    w = _validate.finite("planned_windows", planned_windows)
    looks = max(float(MIN_PLANNED_WINDOWS), w) - 1.0
    return optimal_tau2(1.0 / looks, _validate.alpha(alpha, upper=0.5), one_sided=True)


def decay_log_e_value(residual_sum: ArrayLike, looks: ArrayLike, tau2: float) -> FloatArray:
    """``log E_n`` of the module docstring, elementwise (0 where ``looks`` is 0)."""
    s = np.asarray(residual_sum, dtype=np.float64)
    n = np.asarray(looks, dtype=np.float64)
    t2 = _validate.positive("tau2", tau2)
    if not np.all(np.isfinite(s)):
        raise InvalidInputError("residual_sum must be finite")
    if np.any(n < 0):
        raise InvalidInputError("looks must be >= 0")
    safe = np.maximum(n, 1.0)
    log_e = one_sided_normal_mixture_log_e_value(s / safe, 1.0 / safe, t2)
    out: FloatArray = np.where(n > 0, log_e, 0.0)
    return out


def recursive_residuals(gains: ArrayLike, variances: ArrayLike) -> FloatArray:
    """Standardised recursive residuals ``r_k`` along the last axis (positive: a lower recent gain).

    Parameters
    ----------
    gains, variances
        Per window (last axis), the gain estimate and its variance (> 0). Arrays of the same
        shape; leading axes are independent series (Monte Carlo runs).

    Returns
    -------
    numpy.ndarray
        One fewer along the last axis: ``r_2 .. r_K``.
    """
    g = np.asarray(gains, dtype=np.float64)
    v = np.asarray(variances, dtype=np.float64)
    if g.shape != v.shape or g.ndim == 0:
        raise InvalidInputError("gains and variances must be arrays of the same shape")
    if not (np.all(np.isfinite(g)) and np.all(np.isfinite(v)) and np.all(v > 0)):
        raise InvalidInputError("gains must be finite and variances finite and > 0")
    info = np.cumsum(1.0 / v, axis=-1)
    mean = np.cumsum(g / v, axis=-1) / info
    out: FloatArray = (mean[..., :-1] - g[..., 1:]) / np.sqrt(v[..., 1:] + 1.0 / info[..., :-1])
    return out


def decay_log_e_path(gains: ArrayLike, variances: ArrayLike, tau2: float) -> FloatArray:
    """``log E_n`` after each window (the first window gives 0), along the last axis."""
    r = recursive_residuals(gains, variances)
    s = np.cumsum(r, axis=-1)
    n = np.arange(1, r.shape[-1] + 1, dtype=np.float64)
    log_e = decay_log_e_value(s, np.broadcast_to(n, s.shape), tau2)
    zero = np.zeros((*log_e.shape[:-1], 1))
    out: FloatArray = np.concatenate([zero, log_e], axis=-1)
    return out


@dataclass(frozen=True)
class DecayState:
    """The test's memory after some windows: enough to take the next one in O(1).

    Attributes
    ----------
    windows
        Windows taken so far.
    information
        ``sum 1/v_k``: the information of the windows so far.
    weighted
        ``sum g_k / v_k``; ``weighted / information`` is their inverse-variance mean gain.
    residual_sum
        ``S_n``, the sum of the standardised recursive residuals.
    max_log_e_value
        Running maximum of ``log E_n`` (0 before the second window).
    """

    windows: int = 0
    information: float = 0.0
    weighted: float = 0.0
    residual_sum: float = 0.0
    max_log_e_value: float = 0.0

    @property
    def looks(self) -> int:
        """Residuals so far (every window after the first)."""
        return max(0, self.windows - 1)

    @property
    def mean_gain(self) -> float | None:
        """The inverse-variance mean gain of the windows so far."""
        return self.weighted / self.information if self.information > 0 else None

    @property
    def p_value(self) -> float:
        """Always-valid p-value: ``min(1, 1 / max E)``."""
        return min(1.0, math.exp(-self.max_log_e_value))

    def decayed(self, alpha: float) -> bool:
        """Whether the e-process has reached ``1 / alpha``: the gain decays, at level ``alpha``."""
        return self.max_log_e_value >= math.log(1.0 / _validate.alpha(alpha, upper=0.5))


def update(state: DecayState, gain: float, variance: float, tau2: float) -> tuple[DecayState, float | None]:
    """Take one more window into the test.

    Parameters
    ----------
    state
        The memory after the previous windows.
    gain, variance
        The new window's gain estimate (positive: challenger better) and its variance (> 0).
    tau2
        The mixing scale (:func:`decay_tau2`), the same for every window of an experiment.

    Returns
    -------
    tuple
        The new state, and the new window's standardised residual (None for the first window).
    """
    g = _validate.finite("gain", gain)
    v = _validate.positive("variance", variance)
    residual: float | None = None
    new = replace(
        state,
        windows=state.windows + 1,
        information=state.information + 1.0 / v,
        weighted=state.weighted + g / v,
    )
    if state.windows > 0 and state.information > 0:
        prior_mean = state.weighted / state.information
        residual = (prior_mean - g) / math.sqrt(v + 1.0 / state.information)
        total = state.residual_sum + residual
        log_e = float(decay_log_e_value(total, new.looks, tau2)[()])
        new = replace(new, residual_sum=total, max_log_e_value=max(state.max_log_e_value, log_e))
    return new, residual
