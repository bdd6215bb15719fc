"""Prediction drift between the challenger and the champion during the shadow phase.

In the shadow phase the challenger answers mirrored traffic and its answers are not served; the
question is whether its predictions look like the champion's. Four measures:

* :func:`ks_two_sample` — two-sample Kolmogorov-Smirnov test on raw prediction samples;
* :func:`ks_binned` — the same test on two Prometheus histograms (cumulative bucket counts with
  the same ``le`` edges), with the asymptotic p-value at the effective sample size;
* :func:`jensen_shannon` — Jensen-Shannon divergence of two histograms, in bits, in [0, 1];
* :func:`disagreement_share` — the share of compared requests on which the two models disagree,
  with a Wilson interval, to compare with ``shadow.maxDivergence``.

Use :func:`counts_from_cumulative` to turn Prometheus' cumulative buckets into per-bin counts.

References
----------
.. [1] Smirnov, N. (1939). On the estimation of the discrepancy between empirical curves of
   distribution for two independent samples. Bulletin of Moscow University 2(2), 3-16.
.. [2] Hodges, J. L. (1958). The significance probability of the Smirnov two-sample test. Arkiv
   för Matematik 3(5), 469-486.
.. [3] Lin, J. (1991). Divergence measures based on the Shannon entropy. IEEE Transactions on
   Information Theory 37(1), 145-151.
.. [4] Wilson, E. B. (1927). Probable inference, the law of succession, and statistical inference.
   Journal of the American Statistical Association 22(158), 209-212.
.. [5] Brown, L. D., Cai, T. T., DasGupta, A. (2001). Interval estimation for a binomial
   proportion. Statistical Science 16(2), 101-133.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import special, stats

from modelrollout.errors import InvalidInputError
from modelrollout.stats import _validate
from modelrollout.stats.results import Interval, Verdict

__all__ = [
    "DisagreementResult",
    "JSDivergenceResult",
    "KSResult",
    "counts_from_cumulative",
    "disagreement_share",
    "jensen_shannon",
    "ks_binned",
    "ks_two_sample",
]

_KS_REFERENCE = "Smirnov (1939); Hodges (1958)"
_JS_REFERENCE = "Lin (1991), Divergence measures based on the Shannon entropy"
_WILSON_REFERENCE = "Wilson (1927); Brown, Cai & DasGupta (2001)"

# scipy.stats.ks_2samp(method="auto") is exact up to this sample size and asymptotic beyond.
_KS_EXACT_MAX_N = 10_000


@dataclass(frozen=True)
class KSResult:
    """A two-sample Kolmogorov-Smirnov test (two-sided).

    Attributes
    ----------
    statistic : float
        ``D = sup_x |F_control(x) - F_treatment(x)|`` (on bucket edges for binned data).
    p_value : float
    n_control, n_treatment : float
        Sample sizes (bucket totals for binned data; they may be fractional).
    effective_n : float
        ``n_control n_treatment / (n_control + n_treatment)``.
    statistic_location : float
        Where D is attained: a sample value, or the bucket's upper edge when edges are given
        (NaN otherwise).
    """

    method: str
    reference: str
    statistic: float
    p_value: float
    n_control: float
    n_treatment: float
    effective_n: float
    statistic_location: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class JSDivergenceResult:
    """Jensen-Shannon divergence of two histograms, base 2.

    Attributes
    ----------
    divergence : float
        JSD in bits, in [0, 1] (0: identical distributions, 1: disjoint supports).
    distance : float
        ``sqrt(divergence)``, the Jensen-Shannon distance (a metric).
    pseudocount : float
        Added to every bin of both histograms before normalising.
    bins : int
    """

    method: str
    reference: str
    divergence: float
    distance: float
    pseudocount: float
    bins: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DisagreementResult:
    """Share of compared predictions on which the challenger and the champion differ.

    Attributes
    ----------
    differing, compared : float
        Counts of differing and of compared predictions.
    share : float
        ``differing / compared``.
    ci : Interval
        Two-sided Wilson score interval at level ``1 - alpha``.
    """

    method: str
    reference: str
    differing: float
    compared: float
    share: float
    ci: Interval
    alpha: float

    def within(self, max_divergence: float) -> bool:
        """True when even the upper bound of the interval is at most ``max_divergence``."""
        return self.ci.high <= _validate.probability("max_divergence", max_divergence)

    def exceeds(self, max_divergence: float) -> bool:
        """True when even the lower bound of the interval is above ``max_divergence``."""
        return self.ci.low > _validate.probability("max_divergence", max_divergence)

    def verdict(self, max_divergence: float) -> Verdict:
        """``ROLLOUT_CHALLENGER`` (may leave shadow) when within the bound, ``KEEP_CHAMPION`` when
        it exceeds it, ``INCONCLUSIVE`` while the interval straddles it."""
        if self.within(max_divergence):
            return Verdict.ROLLOUT_CHALLENGER
        if self.exceeds(max_divergence):
            return Verdict.KEEP_CHAMPION
        return Verdict.INCONCLUSIVE

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci"] = self.ci.as_list()
        return d


def ks_two_sample(control: Sequence[float], treatment: Sequence[float]) -> KSResult:
    """Two-sided two-sample Kolmogorov-Smirnov test on raw samples.

    Delegates to ``scipy.stats.ks_2samp`` with ``method="auto"``: the exact distribution of D when
    both samples have at most 10,000 values, Smirnov's asymptotic distribution otherwise.

    Parameters
    ----------
    control, treatment : sequence of float
        Non-empty samples of finite values (the champion's and the challenger's predictions).

    Returns
    -------
    KSResult

    References
    ----------
    .. [1] Smirnov, N. (1939). Bulletin of Moscow University 2(2), 3-16.
    .. [2] Hodges, J. L. (1958). Arkiv för Matematik 3(5), 469-486.
    """
    x = _sample("control", control)
    y = _sample("treatment", treatment)
    res = stats.ks_2samp(x, y, alternative="two-sided", method="auto")
    exact = max(x.size, y.size) <= _KS_EXACT_MAX_N
    return KSResult(
        method="two-sample Kolmogorov-Smirnov, " + ("exact" if exact else "asymptotic"),
        reference=_KS_REFERENCE,
        statistic=float(res.statistic),
        p_value=float(res.pvalue),
        n_control=float(x.size),
        n_treatment=float(y.size),
        effective_n=x.size * y.size / (x.size + y.size),
        statistic_location=float(res.statistic_location),
    )


def ks_binned(
    control_cumulative: Sequence[float],
    treatment_cumulative: Sequence[float],
    *,
    edges: Sequence[float] | None = None,
) -> KSResult:
    """Two-sample Kolmogorov-Smirnov test on two histograms with the same bucket edges.

    Prometheus histograms are cumulative: ``bucket{le="e_i"}`` counts the observations ``<= e_i``
    and the last bucket (``le="+Inf"``) is the total. The two ECDFs are known exactly at the
    edges, so ``D = max_i |C_i / C_last - T_i / T_last|``. Binning hides differences inside a
    bucket, so this D is at most the D of the raw samples, and the test is conservative (it
    loses power, not validity). The p-value is Smirnov's asymptotic one at the effective sample
    size ``n_e = n m / (n + m)``: ``scipy.stats.kstwo.sf(D, round(n_e))``, the same formula as
    ``scipy.stats.ks_2samp(method="asymp")``. Ties make it conservative too.

    Parameters
    ----------
    control_cumulative, treatment_cumulative : sequence of float
        Cumulative counts per bucket, same length, non-decreasing, last entry (the total) > 0.
        Counts may be fractional (``increase()`` of counters).
    edges : sequence of float, optional
        Upper edges of the buckets (``+inf`` allowed for the last), increasing; only used to report
        where D is attained.

    Returns
    -------
    KSResult

    References
    ----------
    .. [1] Smirnov, N. (1939). Bulletin of Moscow University 2(2), 3-16.
    .. [2] Hodges, J. L. (1958). Arkiv för Matematik 3(5), 469-486.
    """
    c = _cumulative("control_cumulative", control_cumulative)
    t = _cumulative("treatment_cumulative", treatment_cumulative)
    if c.size != t.size:
        raise InvalidInputError(
            f"control_cumulative and treatment_cumulative must have the same buckets, got {c.size} "
            f"and {t.size} entries"
        )
    location = math.nan
    edge_values: NDArray[np.float64] | None = None
    if edges is not None:
        edge_values = _edges(edges, c.size)
    n, m = float(c[-1]), float(t[-1])
    gaps = np.abs(c / n - t / m)
    i = int(np.argmax(gaps))
    d = float(min(1.0, gaps[i]))
    if edge_values is not None:
        location = float(edge_values[i])
    en = n * m / (n + m)
    p = float(np.clip(stats.kstwo.sf(d, max(1, round(en))), 0.0, 1.0))
    return KSResult(
        method="two-sample Kolmogorov-Smirnov on binned data, asymptotic at the effective n",
        reference=_KS_REFERENCE,
        statistic=d,
        p_value=p,
        n_control=n,
        n_treatment=m,
        effective_n=en,
        statistic_location=location,
    )


def jensen_shannon(
    control_counts: Sequence[float],
    treatment_counts: Sequence[float],
    *,
    pseudocount: float = 0.0,
) -> JSDivergenceResult:
    """Jensen-Shannon divergence between two histograms, in bits.

    ``JSD(P, Q) = (KL(P || M) + KL(Q || M)) / 2`` with ``M = (P + Q) / 2`` and base-2 logarithms,
    so it lies in [0, 1]. It equals ``scipy.spatial.distance.jensenshannon(p, q, base=2) ** 2``.

    Empty bins: JSD needs no smoothing to be finite - ``M`` is positive wherever ``P`` or ``Q`` is,
    and ``0 log 0 = 0`` - so the default ``pseudocount`` is 0 and empty bins contribute nothing.
    With few observations the plug-in JSD is biased upwards (bins empty by chance in one
    histogram look like a difference); a ``pseudocount`` > 0 (e.g. 0.5, Jeffreys) is added to every
    bin of both histograms before normalising and shrinks both toward uniform.

    Parameters
    ----------
    control_counts, treatment_counts : sequence of float
        Per-bin (not cumulative) counts, same length >= 1, each >= 0, each total > 0.
    pseudocount : float
        >= 0, added to every bin; default 0.

    Returns
    -------
    JSDivergenceResult

    References
    ----------
    .. [1] Lin, J. (1991). Divergence measures based on the Shannon entropy. IEEE Transactions on
       Information Theory 37(1), 145-151.
    """
    c = _histogram("control_counts", control_counts)
    t = _histogram("treatment_counts", treatment_counts)
    if c.size != t.size:
        raise InvalidInputError(
            f"control_counts and treatment_counts must have the same bins, got {c.size} and {t.size}"
        )
    pc = _validate.non_negative("pseudocount", pseudocount)
    p = (c + pc) / float(np.sum(c + pc))
    q = (t + pc) / float(np.sum(t + pc))
    mix = 0.5 * (p + q)
    nats = 0.5 * float(np.sum(special.rel_entr(p, mix))) + 0.5 * float(np.sum(special.rel_entr(q, mix)))
    div = min(1.0, max(0.0, nats / math.log(2.0)))
    return JSDivergenceResult(
        method="Jensen-Shannon divergence (base 2)",
        reference=_JS_REFERENCE,
        divergence=div,
        distance=math.sqrt(div),
        pseudocount=pc,
        bins=int(c.size),
    )


def disagreement_share(differing: float, compared: float, *, alpha: float = 0.05) -> DisagreementResult:
    """Share of predictions that differ, with a two-sided Wilson score interval.

    With ``p = differing / compared``, ``n = compared`` and ``z = Phi^-1(1 - alpha / 2)``, the
    interval is ``(p + z^2 / 2n +- z sqrt(p (1 - p) / n + z^2 / 4n^2)) / (1 + z^2 / n)``. Unlike the
    Wald interval it stays inside [0, 1] and keeps its coverage near 0, where a good challenger's
    disagreement share lives. It is a fixed-horizon interval: judge it once, at the end of
    ``shadow.duration`` (or use :meth:`DisagreementResult.verdict` against ``maxDivergence``).

    Parameters
    ----------
    differing : float
        Number of compared predictions that differ, ``0 <= differing <= compared``.
    compared : float
        Number of compared predictions, > 0.
    alpha : float
        1 - confidence level, in (0, 1); default 0.05.

    Returns
    -------
    DisagreementResult

    References
    ----------
    .. [1] Wilson, E. B. (1927). JASA 22(158), 209-212.
    .. [2] Brown, L. D., Cai, T. T., DasGupta, A. (2001). Statistical Science 16(2), 101-133.
    """
    k = _validate.count("differing", differing)
    n = _validate.count("compared", compared)
    if n <= 0:
        raise InvalidInputError(f"compared must be > 0, got {compared!r}")
    if k > n:
        raise InvalidInputError(f"differing ({differing!r}) must be <= compared ({compared!r})")
    a = _validate.alpha(alpha)
    p = k / n
    z = float(special.ndtri(1.0 - a / 2.0))
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denom
    return DisagreementResult(
        method="disagreement share with Wilson score interval",
        reference=_WILSON_REFERENCE,
        differing=k,
        compared=n,
        share=p,
        ci=Interval(max(0.0, centre - half), min(1.0, centre + half)),
        alpha=a,
    )


def counts_from_cumulative(cumulative: Sequence[float]) -> list[float]:
    """Per-bucket counts from cumulative (Prometheus ``le``) bucket counts.

    Parameters
    ----------
    cumulative : sequence of float
        Non-decreasing cumulative counts, last entry > 0.

    Returns
    -------
    list of float
        ``[C_0, C_1 - C_0, ..., C_last - C_{last-1}]``.

    References
    ----------
    .. [1] Prometheus documentation, "Histograms and summaries".
    """
    c = _cumulative("cumulative", cumulative)
    return [float(v) for v in np.diff(c, prepend=0.0)]


# --- validation --------------------------------------------------------------------------------


def _sample(name: str, values: Sequence[float]) -> NDArray[np.float64]:
    arr = np.asarray([_validate.finite(f"{name}[{i}]", v) for i, v in enumerate(values)], dtype=np.float64)
    if arr.size == 0:
        raise InvalidInputError(f"{name} must not be empty")
    return arr


def _histogram(name: str, values: Sequence[float]) -> NDArray[np.float64]:
    arr = np.asarray([_validate.count(f"{name}[{i}]", v) for i, v in enumerate(values)], dtype=np.float64)
    if arr.size == 0:
        raise InvalidInputError(f"{name} must not be empty")
    if float(arr.sum()) <= 0:
        raise InvalidInputError(f"{name} must have a positive total, got {values!r}")
    return arr


def _cumulative(name: str, values: Sequence[float]) -> NDArray[np.float64]:
    arr = np.asarray([_validate.count(f"{name}[{i}]", v) for i, v in enumerate(values)], dtype=np.float64)
    if arr.size == 0:
        raise InvalidInputError(f"{name} must not be empty")
    if arr[-1] <= 0:
        raise InvalidInputError(f"{name} must end with a positive total, got {values!r}")
    # Scrapes of a histogram are consistent, but rate()/increase() of each bucket may break
    # monotonicity by rounding; tolerate 1e-9 of the total and fail on more.
    drops = np.flatnonzero(np.diff(arr) < -1e-9 * arr[-1])
    if drops.size:
        i = int(drops[0]) + 1
        raise InvalidInputError(
            f"{name} must be non-decreasing (cumulative buckets), but {name}[{i}] = {arr[i]!r} < "
            f"{name}[{i - 1}] = {arr[i - 1]!r}"
        )
    return np.maximum.accumulate(arr)


def _edges(edges: Sequence[float], size: int) -> NDArray[np.float64]:
    vals: list[float] = []
    for i, e in enumerate(edges):
        try:
            v = float(e)
        except (TypeError, ValueError):
            raise InvalidInputError(f"edges[{i}] must be a number, got {e!r}") from None
        if math.isnan(v):
            raise InvalidInputError(f"edges[{i}] must not be NaN")
        vals.append(v)
    if len(vals) != size:
        raise InvalidInputError(f"edges must have one entry per bucket ({size}), got {len(vals)}")
    arr = np.asarray(vals, dtype=np.float64)
    if np.any(np.diff(arr) <= 0):
        raise InvalidInputError(f"edges must be strictly increasing, got {list(edges)!r}")
    return arr
