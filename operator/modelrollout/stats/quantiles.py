"""Always-valid bounds and a guardrail on a quantile (p95, p99) from histogram bucket counts.

A Prometheus histogram counts, for each bucket edge ``e_j`` (its ``le`` label), the requests that
took at most ``e_j``: exact counts of the indicator ``X <= e_j``. So at each edge the share
``F(e_j)`` (the distribution function there) is a binomial proportion, and the quantile
``Q(q) = inf {x : F(x) >= q}`` is bracketed by the edges whose share is known to be above or
below ``q``:

* ``Q(q) <= e_j`` exactly when ``F(e_j) >= q``: the **upper bound** is the smallest edge at which
  the data reject ``F(e_j) < q``;
* ``Q(q) > e_j`` exactly when ``F(e_j) < q``: the **lower bound** is the largest edge at which the
  data reject ``F(e_j) >= q``.

Each rejection is a one-sided test of a binomial proportion against ``q`` that stays valid under
continuous monitoring: the likelihood ratio of the Bernoulli counts mixed over a Beta prior
truncated to the alternative side (:func:`binomial_mixture_log_e`). Under any share on the null
side its expectation is at most 1 at every count, so it is a non-negative supermartingale, and by
Ville's inequality it ever exceeds ``1 / a`` with probability at most ``a``. This is the
construction of Howard & Ramdas (2022) for sequential quantile estimation, read at the bucket edges
(they test ``F(x) = q`` at arbitrary ``x``; a histogram gives only its edges). A mixture over
several prior concentrations (:data:`MIXTURE_SCALES`) finds a gross and a slight shift alike and
pays at most ``log len(scales)`` for it.

The guardrail
-------------
The challenger is **harmed** at quantile ``q`` when its quantile exceeds the champion's by more
than a margin: ``Q_t(q) > (1 + m) Q_c(q)`` (relative) or ``Q_t(q) > Q_c(q) + m`` (absolute, in the
histogram's unit, milliseconds for Istio). The rule declares harm when the challenger's lower
bound exceeds the champion's upper bound with the margin::

    lower_t > (1 + m) upper_c    (or lower_t > upper_c + m).

Every edge's test of both variants runs at level ``alpha / (2 K)`` for ``K`` finite edges, so with
probability at least ``1 - alpha`` every bound of both variants holds at every look at once
(a union bound, valid whatever the dependence between the edges and the variants). If the
challenger is within the margin, a declared harm needs one of the bounds to fail: the probability
of ever declaring a false harm, however often the counts are looked at, is at most ``alpha``. No
distribution is assumed: the counts are the exact counts of the histogram, and nothing is
interpolated.

The resolution limit
--------------------
Bounds move in whole buckets. At best the champion's upper bound is the first edge above its
quantile and the challenger's lower bound the last edge below its own, so a regression is seen
only when an edge below the challenger's quantile lies beyond ``(1 + m)`` times the edge above
the champion's: with edges spaced by a ratio ``rho`` that takes a ratio of quantiles of about
``(1 + m) rho`` to ``(1 + m) rho^2``, and more while the bounds are still wide. Istio's default
buckets (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500 ms, ...) step by 2 to 2.5 times: with
them a p95 of 120 ms is only known to lie in (100, 250] and a regression of 30 % cannot be seen.
Finer edges around the quantiles that matter (the pod annotation
``sidecar.istio.io/statsHistogramBuckets``, e.g. ``{"istiocustom": [.., 100, 110, 120, ..]}``)
buy resolution; each edge costs ``log K`` of evidence in the union bound, a small price (20 or 200
edges cost 3.7 or 6.0 nats at ``alpha = 0.05``).

Point estimates (:func:`histogram_quantile`) interpolate linearly within a bucket as Prometheus'
``histogram_quantile`` does: they are shown, never decided on.

References
----------
.. [1] Howard, S. R., Ramdas, A. (2022). Sequential estimation of quantiles with applications to
   A/B-testing and best-arm identification. Bernoulli 28(3), 1704-1728. arXiv:1906.09712.
.. [2] Robbins, H. (1970). Statistical methods related to the law of the iterated logarithm.
   Annals of Mathematical Statistics 41(5), 1397-1409.
.. [3] Ville, J. (1939). Étude critique de la notion de collectif. Gauthier-Villars, Paris.
.. [4] Prometheus documentation, "Histograms and summaries" (``histogram_quantile`` and the
   ``le`` buckets).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

from modelrollout.errors import InvalidInputError
from modelrollout.stats import _validate

__all__ = [
    "MIXTURE_SCALES",
    "QuantileBounds",
    "QuantileCarried",
    "QuantileGuardrailResult",
    "binomial_mixture_log_e",
    "histogram_quantile",
    "quantile_bounds",
    "sequential_quantile_guardrail",
]

METHOD = "bucket-edge quantile confidence sequences (one-sided beta-binomial mixtures, union over edges)"
REFERENCE = (
    "Howard, Ramdas (2022) Sequential estimation of quantiles with applications to A/B-testing and "
    "best-arm identification, Bernoulli 28(3); Robbins (1970); Ville (1939)"
)
#: Total concentrations of the Beta priors mixed with equal weights: prior standard deviations of a
#: share of about 7, 2.2, 0.7, 0.2 and 0.07 points at ``q = 0.95``.
MIXTURE_SCALES: tuple[float, ...] = (1e1, 1e2, 1e3, 1e4, 1e5)

FloatArray = NDArray[np.float64]


def _log_tail(a: FloatArray, b: FloatArray, p0: float, greater: bool) -> FloatArray:
    """log of the Beta(a, b) mass above ``p0`` (``greater``) or below it."""
    with np.errstate(divide="ignore"):
        tail = special.betaincc(a, b, p0) if greater else special.betainc(a, b, p0)
        return np.asarray(np.log(tail), dtype=np.float64)


def binomial_mixture_log_e(
    below: ArrayLike,
    trials: ArrayLike,
    p0: float,
    *,
    greater: bool,
    scales: tuple[float, ...] = MIXTURE_SCALES,
) -> FloatArray:
    """log e-value against ``H0: p <= p0`` (``greater``) or ``H0: p >= p0``, from ``below`` successes
    in ``trials`` Bernoulli trials of share ``p``, valid under continuous monitoring.

    The likelihood ratio of ``theta`` against ``p0`` mixed over a ``Beta(r p0, r (1 - p0))`` prior
    truncated to ``theta >= p0`` (or ``<= p0``), equally over the concentrations ``r`` in
    ``scales``. For ``theta >= p0 >= p`` one trial's ratio has expectation
    ``1 + (p - p0) (theta / p0 - (1 - theta) / (1 - p0)) <= 1``, so the mixture is a
    non-negative supermartingale under every share of the null (a martingale at ``p0``). In
    closed form, with ``k`` successes in ``n`` trials::

        B(k + a, n - k + b) T(k + a, n - k + b) / (B(a, b) T(a, b)) / (p0^k (1 - p0)^(n - k))

    where ``T`` is the Beta mass on the alternative side of ``p0`` (the regularised incomplete
    beta function). Vectorised over ``below`` and ``trials``.
    """
    p = _validate.probability("p0", p0, open_interval=True)
    k = np.asarray(below, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    if np.any(~np.isfinite(k)) or np.any(~np.isfinite(n)) or np.any(k < 0) or np.any(k > n):
        raise InvalidInputError("below must be finite counts with 0 <= below <= trials")
    if not scales or any(not (s > 0 and math.isfinite(s)) for s in scales):
        raise InvalidInputError(f"scales must be positive and finite, got {scales!r}")
    base = -k * math.log(p) - (n - k) * math.log1p(-p)
    parts = []
    for r in scales:
        a, b = np.full_like(k, r * p), np.full_like(k, r * (1.0 - p))
        parts.append(
            special.betaln(k + a, n - k + b)
            - special.betaln(a, b)
            + _log_tail(k + a, n - k + b, p, greater)
            - _log_tail(a, b, p, greater)
            + base
        )
    stacked = np.stack(parts)
    out = special.logsumexp(stacked, axis=0) - math.log(len(scales))
    return np.asarray(out, dtype=np.float64)


def _histogram(edges: Sequence[float], cumulative: Sequence[float]) -> tuple[FloatArray, FloatArray, float]:
    """Validated edges (finite, increasing) and cumulative counts (one per edge, then the total)."""
    e = np.asarray([_validate.finite(f"edges[{i}]", x) for i, x in enumerate(edges)], dtype=np.float64)
    if e.size == 0:
        raise InvalidInputError("a histogram needs at least one finite bucket edge")
    if np.any(np.diff(e) <= 0):
        raise InvalidInputError(f"bucket edges must increase strictly, got {list(edges)!r}")
    c = np.asarray([_validate.count(f"counts[{i}]", x) for i, x in enumerate(cumulative)], dtype=np.float64)
    if c.size != e.size + 1:
        raise InvalidInputError(
            f"counts must hold one cumulative count per edge and then the total (le=+Inf): "
            f"{e.size + 1} values, got {c.size}"
        )
    if np.any(np.diff(c) < 0):
        raise InvalidInputError(
            "bucket counts must not decrease with the edge (le buckets are cumulative), "
            f"got {list(cumulative)!r}"
        )
    return e, c[:-1], float(c[-1])


def histogram_quantile(edges: Sequence[float], cumulative: Sequence[float], q: float) -> float:
    """The ``q`` quantile interpolated linearly within its bucket, as Prometheus'
    ``histogram_quantile`` does (the first bucket starts at 0 when its edge is positive; a quantile
    in the ``+Inf`` bucket is the last finite edge). NaN without counts. For display only."""
    e, c, total = _histogram(edges, cumulative)
    quantile = _validate.probability("q", q, open_interval=True)
    if total <= 0:
        return math.nan
    rank = quantile * total
    j = int(np.searchsorted(c, rank, side="left"))
    if j >= e.size:
        return float(e[-1])
    low_edge = float(e[j - 1]) if j > 0 else min(0.0, float(e[0]))
    low_count = float(c[j - 1]) if j > 0 else 0.0
    width = float(c[j]) - low_count
    if width <= 0:
        return float(e[j])
    return low_edge + (float(e[j]) - low_edge) * (rank - low_count) / width


@dataclass(frozen=True)
class QuantileBounds:
    """Always-valid bounds of one variant's ``quantile`` at the bucket edges.

    ``lower``: the largest edge the quantile is known to exceed (-inf: none yet); ``upper``: the
    smallest edge it is known not to exceed (+inf: none yet). ``log_e_below[j]`` is the running
    maximum of the evidence that ``F(e_j) < q`` (the quantile is above edge j),
    ``log_e_above[j]`` that ``F(e_j) >= q``; pass them back as ``previous`` at the next look.
    """

    quantile: float
    estimate: float
    lower: float
    upper: float
    samples: float
    level: float
    log_e_below: tuple[float, ...]
    log_e_above: tuple[float, ...]


def _carried(name: str, previous: Sequence[float] | None, size: int) -> FloatArray:
    if previous is None:
        return np.full(size, -np.inf)
    out = np.asarray(previous, dtype=np.float64)
    if out.size != size:
        raise InvalidInputError(f"{name} must hold one value per bucket edge ({size}), got {out.size}")
    if np.any(np.isnan(out)) or np.any(out == np.inf):
        raise InvalidInputError(f"{name} must be finite or -inf (a carried running maximum)")
    return out


def quantile_bounds(
    edges: Sequence[float],
    cumulative: Sequence[float],
    q: float,
    *,
    level: float,
    previous_below: Sequence[float] | None = None,
    previous_above: Sequence[float] | None = None,
) -> QuantileBounds:
    """Bounds of the ``q`` quantile from cumulative bucket counts, each edge's test at ``level``
    (the caller splits its alpha over the edges; see the module docstring).

    ``cumulative`` holds the count at or below each finite edge, in order, then the total (the
    ``le="+Inf"`` bucket). ``previous_below`` / ``previous_above``: the running maxima of the last
    look (:class:`QuantileBounds`), so that a bound once found stays (Ville's inequality bounds
    the probability that any false bound is ever found).
    """
    e, c, total = _histogram(edges, cumulative)
    quantile = _validate.probability("q", q, open_interval=True)
    a = _validate.alpha(level, name="level")
    totals = np.full_like(c, total)
    below = np.maximum(
        _carried("previous_below", previous_below, e.size),
        binomial_mixture_log_e(c, totals, quantile, greater=False),
    )
    above = np.maximum(
        _carried("previous_above", previous_above, e.size),
        binomial_mixture_log_e(c, totals, quantile, greater=True),
    )
    threshold = -math.log(a)
    known_above = np.flatnonzero(below >= threshold)  # Q(q) > e_j
    known_within = np.flatnonzero(above >= threshold)  # Q(q) <= e_j
    return QuantileBounds(
        quantile=quantile,
        estimate=histogram_quantile(edges, cumulative, quantile),
        lower=float(e[known_above[-1]]) if known_above.size else -math.inf,
        upper=float(e[known_within[0]]) if known_within.size else math.inf,
        samples=total,
        level=a,
        log_e_below=tuple(float(x) for x in below),
        log_e_above=tuple(float(x) for x in above),
    )


@dataclass(frozen=True)
class QuantileGuardrailResult:
    """Outcome of the quantile guardrail at one look (see the module docstring).

    ``worse_by`` is the challenger's estimated quantile over the champion's minus 1 (relative) or
    their difference (absolute), from the interpolated estimates; ``worse_by_lower_bound`` the
    same from the challenger's lower and the champion's upper bound, which is what is decided on:
    ``breached`` when it exceeds the margin.
    """

    breached: bool
    quantile: float
    margin: float
    relative: bool
    alpha: float
    worse_by: float
    worse_by_lower_bound: float
    champion: QuantileBounds
    challenger: QuantileBounds
    method: str = METHOD
    reference: str = REFERENCE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class QuantileCarried:
    """The running maxima a quantile guardrail carries between looks (one value per edge)."""

    champion_below: Sequence[float]
    champion_above: Sequence[float]
    challenger_below: Sequence[float]
    challenger_above: Sequence[float]

    @classmethod
    def of(cls, result: QuantileGuardrailResult) -> QuantileCarried:
        return cls(
            result.champion.log_e_below,
            result.champion.log_e_above,
            result.challenger.log_e_below,
            result.challenger.log_e_above,
        )


def _worse_by(challenger: float, champion: float, relative: bool) -> float:
    if relative:
        if champion <= 0 or not math.isfinite(champion) or math.isnan(challenger):
            return math.nan if math.isnan(challenger) or math.isnan(champion) else -math.inf
        return challenger / champion - 1.0
    return challenger - champion


def sequential_quantile_guardrail(
    edges: Sequence[float],
    champion: Sequence[float],
    challenger: Sequence[float],
    *,
    quantile: float = 0.95,
    margin: float = 0.0,
    relative: bool = False,
    alpha: float = 0.05,
    previous: QuantileGuardrailResult | None = None,
    carried: QuantileCarried | None = None,
) -> QuantileGuardrailResult:
    """Is the challenger's ``quantile`` above the champion's by more than ``margin``?

    Parameters
    ----------
    edges : sequence of float
        The finite bucket edges (``le``), increasing, shared by both variants.
    champion, challenger : sequence of float
        Cumulative counts per edge, then the total (``le="+Inf"``), since the experiment began.
    quantile : float
        0.95 for p95, 0.99 for p99.
    margin : float
        The allowed excess (>= 0): a fraction of the champion's quantile with ``relative``, else
        in the histogram's unit.
    alpha : float
        The probability of ever declaring a false breach, under continuous looks (< 0.5).
    previous : QuantileGuardrailResult, optional
        The result of the last look: its running maxima carry over.
    carried : QuantileCarried, optional
        The same running maxima as stored between looks (instead of ``previous``).

    Returns
    -------
    QuantileGuardrailResult
    """
    a = _validate.alpha(alpha, upper=0.5)
    m = _validate.non_negative("margin", margin)
    level = a / (2.0 * len(edges)) if len(edges) else a
    if carried is None and previous is not None:
        carried = QuantileCarried.of(previous)
    c = quantile_bounds(
        edges,
        champion,
        quantile,
        level=level,
        previous_below=carried.champion_below if carried else None,
        previous_above=carried.champion_above if carried else None,
    )
    t = quantile_bounds(
        edges,
        challenger,
        quantile,
        level=level,
        previous_below=carried.challenger_below if carried else None,
        previous_above=carried.challenger_above if carried else None,
    )
    lower = _worse_by(t.lower, c.upper, relative) if math.isfinite(t.lower) else -math.inf
    return QuantileGuardrailResult(
        breached=bool(lower > m),
        quantile=c.quantile,
        margin=m,
        relative=relative,
        alpha=a,
        worse_by=_worse_by(t.estimate, c.estimate, relative),
        worse_by_lower_bound=lower,
        champion=c,
        challenger=t,
    )
