"""Multiple-testing corrections controlling the family-wise error rate.

Used when more than one challenger is compared with the champion, or when several secondary
metrics are decisive: the chance that at least one of m true null hypotheses is rejected must stay
at most ``alpha``. Both procedures below are valid under any dependence between the tests.

* :func:`bonferroni`: adjusted p = min(1, m p).
* :func:`holm`: Holm's step-down procedure, uniformly more powerful than Bonferroni.

References
----------
.. [1] Dunn, O. J. (1961). Multiple comparisons among means. Journal of the American Statistical
   Association 56(293), 52-64.
.. [2] Holm, S. (1979). A simple sequentially rejective multiple test procedure. Scandinavian
   Journal of Statistics 6(2), 65-70.
.. [3] Wright, S. P. (1992). Adjusted p-values for simultaneous inference. Biometrics 48(4),
   1005-1013.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from modelrollout.errors import InvalidInputError
from modelrollout.stats import _validate

__all__ = ["MultipleTestingResult", "adjust", "bonferroni", "holm"]


@dataclass(frozen=True)
class MultipleTestingResult:
    """Adjusted p-values and rejections, in the order of the input.

    Attributes
    ----------
    p_values : tuple of float
        The raw p-values.
    adjusted_p_values : tuple of float
        Adjusted p-values (in [0, 1]); hypothesis i is rejected at family-wise level ``alpha``
        exactly when ``reject[i]``.
    reject : tuple of bool
        Which hypotheses are rejected at family-wise level ``alpha``.
    alpha : float
        The family-wise error rate.
    """

    method: str
    reference: str
    p_values: tuple[float, ...]
    adjusted_p_values: tuple[float, ...]
    reject: tuple[bool, ...]
    alpha: float

    @property
    def any_rejected(self) -> bool:
        return any(self.reject)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def bonferroni(p_values: Sequence[float], alpha: float = 0.05) -> MultipleTestingResult:
    """Bonferroni correction: reject ``H_i`` when ``p_i <= alpha / m``.

    Parameters
    ----------
    p_values : sequence of float
        m >= 1 p-values in [0, 1].
    alpha : float
        Family-wise error rate, in (0, 1).

    Returns
    -------
    MultipleTestingResult
        Adjusted p-values ``min(1, m p_i)``.

    References
    ----------
    .. [1] Dunn, O. J. (1961). Multiple comparisons among means. JASA 56(293), 52-64.
    """
    p, a = _inputs(p_values, alpha)
    m = p.size
    adjusted = np.minimum(1.0, m * p)
    reject = p <= a / m
    return _result("Bonferroni", "Dunn (1961)", p, adjusted, reject, a)


def holm(p_values: Sequence[float], alpha: float = 0.05) -> MultipleTestingResult:
    """Holm's step-down correction.

    Sort the p-values ascending, ``p_(1) <= ... <= p_(m)``. Going up from the smallest, reject
    ``H_(j)`` while ``p_(j) <= alpha / (m - j + 1)``; stop at the first failure and keep every
    larger one. The adjusted p-value is ``max_{i <= j} min(1, (m - i + 1) p_(i))`` (Wright 1992),
    so that ``reject[i]`` equals ``adjusted[i] <= alpha``. Ties get the same adjusted p-value
    whatever their order.

    Parameters
    ----------
    p_values : sequence of float
        m >= 1 p-values in [0, 1].
    alpha : float
        Family-wise error rate, in (0, 1).

    Returns
    -------
    MultipleTestingResult

    References
    ----------
    .. [1] Holm, S. (1979). A simple sequentially rejective multiple test procedure. Scandinavian
       Journal of Statistics 6(2), 65-70.
    .. [2] Wright, S. P. (1992). Adjusted p-values for simultaneous inference. Biometrics 48(4).
    """
    p, a = _inputs(p_values, alpha)
    m = p.size
    order = np.argsort(p, kind="stable")
    sorted_p = p[order]
    multipliers = np.arange(m, 0, -1, dtype=np.float64)  # m, m-1, ..., 1
    adjusted_sorted = np.minimum(1.0, np.maximum.accumulate(multipliers * sorted_p))
    passes = sorted_p <= a / multipliers
    failed = np.flatnonzero(~passes)
    reject_sorted = np.ones(m, dtype=bool)
    if failed.size:
        reject_sorted[failed[0] :] = False
    adjusted = np.empty(m)
    adjusted[order] = adjusted_sorted
    reject = np.empty(m, dtype=bool)
    reject[order] = reject_sorted
    return _result("Holm step-down", "Holm (1979)", p, adjusted, reject, a)


def adjust(
    p_values: Sequence[float],
    method: Literal["holm", "bonferroni"] = "holm",
    alpha: float = 0.05,
) -> MultipleTestingResult:
    """Dispatch to :func:`holm` (the default) or :func:`bonferroni` by name.

    References
    ----------
    .. [1] Holm, S. (1979). Scandinavian Journal of Statistics 6(2), 65-70.
    """
    if method == "holm":
        return holm(p_values, alpha)
    if method == "bonferroni":
        return bonferroni(p_values, alpha)
    raise InvalidInputError(f"method must be 'holm' or 'bonferroni', got {method!r}")


def _inputs(p_values: Sequence[float], alpha: float) -> tuple[np.ndarray[Any, np.dtype[np.float64]], float]:
    a = _validate.alpha(alpha)
    ps = [_validate.probability(f"p_values[{i}]", v) for i, v in enumerate(p_values)]
    if not ps:
        raise InvalidInputError("p_values must contain at least one p-value, got none")
    return np.asarray(ps, dtype=np.float64), a


def _result(
    method: str,
    reference: str,
    p: np.ndarray[Any, np.dtype[np.float64]],
    adjusted: np.ndarray[Any, np.dtype[np.float64]],
    reject: np.ndarray[Any, np.dtype[np.bool_]],
    alpha: float,
) -> MultipleTestingResult:
    return MultipleTestingResult(
        method=method,
        reference=reference,
        p_values=tuple(float(v) for v in p),
        adjusted_p_values=tuple(float(v) for v in adjusted),
        reject=tuple(bool(v) for v in reject),
        alpha=alpha,
    )
