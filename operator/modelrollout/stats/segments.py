"""Who is harmed: always-valid harm tests over protected segments, with family-wise or FDR control.

An aggregate lift can hide a segment that the challenger serves worse (a country, a client
version, a customer tier). For every *protected* segment this module runs the guardrail test of
:func:`modelrollout.stats.sequential.sequential_noninferiority` on that segment's counts alone: a
one-sided always-valid test of "the challenger is worse than the champion by more than the
segment's margin" (a mean metric, or a ratio as its delta-method mean, is given as
:class:`MeanSegmentCounts` and gets ``sequential_noninferiority_means``). With K protected
segments, K tests are looked at on every tick, so the chance that *some* segment is named
harmed by noise must be controlled across the segments as well as across the looks.
Two corrections are offered.

Bonferroni (the default)
------------------------
Each segment is tested at ``alpha / K`` and is harmed once the running maximum of its e-process
reaches ``K / alpha`` (its always-valid p-value falls below ``alpha / K``). Why it holds under
continuous monitoring and any dependence between the segments: for each segment whose null is
true, Ville's inequality bounds the probability that its e-process *ever* reaches ``K / alpha`` by
``alpha / K``, whatever the looks and the stopping rule; the union bound over the ``K0 <= K`` true
nulls then gives ``P(some segment is ever falsely named) <= K0 alpha / K <= alpha``. The union bound
needs no assumption on how the segments depend on each other (a shared time-of-day effect, users
moving between segments), so the family-wise error rate is controlled at every stopping time, and a
harm, once found, stays found (the running maximum is carried). Use it by default and for short
lists: it controls the strongest error rate, and for a single harmed segment (the usual case)
e-BH is no faster (see below).

e-BH (false discovery rate, for long lists)
-------------------------------------------
With many protected segments (more than about 10) ``alpha / K`` gets small and several harmed
segments are each found late. e-BH (Wang & Ramdas 2022) controls instead the false discovery rate,
the expected share of wrongly named segments among the named ones: with the e-values sorted
``e_[1] >= ... >= e_[K]``, let ``k* = max{k : k e_[k] / K >= 1 / alpha}`` and name the ``k*``
segments with the largest e-values (none when no such k). Then ``FDR <= alpha K0 / K`` for e-values
with *any* dependence between them, without the BY penalty that the Benjamini-Hochberg procedure
on p-values needs under arbitrary dependence.

It is applied to the e-values **at the current look**, the value of each segment's e-process now
(``log_e_value``), not to the running maxima: the running maximum of an e-process is not an e-value
(its expectation exceeds 1), while the value of an e-process at any stopping time is one (optional
stopping for test supermartingales, which is what makes the e-process anytime-valid). The look at
which the operator acts on a non-empty e-BH set is a stopping time, so the FDR of the set named
then is at most ``alpha`` (e-BH with e-processes at stopping times: Xu, Wang & Ramdas 2021). Two
consequences. (1) Under the global null the FDR is the probability of naming any segment, so
"act at the first look at which e-BH names one" controls the family-wise false-harm rate at
``alpha`` there too. (2) The set named at one look may shrink at the next (the e-values move both
ways): the guarantee is for the set acted on at one stopping time, not for the union of the sets
over the looks, so a caller must act on (or latch) the first non-empty set rather than re-run e-BH
and collect. For one harmed segment e-BH needs ``e >= K / alpha`` at the current look, which the
running maximum of Bonferroni reaches no later: e-BH pays off only when several segments are
harmed together (k of them need ``K / (alpha k)`` each).

The e-processes of the segments must be e-processes in the filtration of all the segments' data
(so that the look is a stopping time for each). With randomised assignment within each segment,
the two arms of a segment see the same conditions at every moment, so under that segment's null
the difference has conditional mean zero given everything observed before, in any segment.
Bonferroni does not even need that: each test's own anytime validity suffices.

Intervals
---------
Each segment's interval of the difference ``challenger - champion`` comes from the test's
one-sided radius at the per-segment level ``alpha / K`` (for both corrections, so that the
intervals hold simultaneously over the segments): each end is an always-valid one-sided bound at
that level, and the end on the side of harm is the one the test decides with: for an absolute
margin it crosses the margin exactly when the e-value at this look crosses ``K / alpha`` (a harm,
once found, stays found through the running maximum even if the bound later moves back). The
two-sided interval as a whole covers with probability at least ``1 - 2 alpha / K``.
All of it inherits the asymptotic validity of the mixture (Waudby-Smith et al. 2023), as every
sequential test of :mod:`modelrollout.stats.sequential` does.

Known limits (measured)
-----------------------
The corrections are exact; the per-segment test is the asymptotic mixture of
``sequential_noninferiority``, and a segment has few requests. ``bench/segments.py`` (8 segments,
steps 10/25/50 %, success rates of 2-15 %) found that test's one real defect: with each arm's
plug-in variance, the small arm at a 10 % step looks least variable exactly when its success rate
happens to be low, so the evidence of harm overshot (a family-wise false-harm rate of 0.144 at
alpha 0.05 on the steps). The test now takes the variance at the null boundary (the score test's,
:func:`modelrollout.stats.sequential.restricted_rates`); the figures are in ``docs/segments.md``.
Rates that move in time while the split changes still bias every cumulative comparison a little
(Simpson's paradox across the steps); comparing within each step and combining, as the stratified
sample ratio test does, would remove it.

Sample ratio per segment
------------------------
:func:`segment_srm` checks, segment by segment, that the trials were split between champion and
challenger as configured, with the Dirichlet-multinomial e-process of Lindon & Malek (2022)
(:func:`modelrollout.stats.srm.srm_sequential`), each segment at ``threshold / K`` (Bonferroni
again, valid under continuous looks for the same reason). A mismatch in one segment while the
whole is balanced points to an assignment bug local to it (a client version, a region's proxy)
that a global check dilutes; it also biases that segment's harm test.

Exploratory segments
--------------------
Besides the protected list, a label may have many values. :func:`fold_exploratory` keeps the
values with the most traffic (at most :data:`MAX_EXPLORATORY`, GrowthBook's cap for dimension
drill-downs) and folds the rest into ``"other"``; :func:`exploratory_segments` tests them like
protected ones (Bonferroni over the values shown, so the intervals hold simultaneously) and marks
every result ``exploratory``: no decision uses it. Which values are shown depends on traffic, and
"other" changes its members when the ranking changes, so its carried state means nothing across
such a change. The segment label must be fixed before treatment (a label the challenger can change,
such as "users who converted", biases every per-segment comparison).

References
----------
.. [1] Dunn, O. J. (1961). Multiple comparisons among means. Journal of the American Statistical
   Association 56(293), 52-64.
.. [2] Ville, J. (1939). Étude critique de la notion de collectif. Gauthier-Villars, Paris.
.. [3] Wang, R., Ramdas, A. (2022). False discovery rate control with e-values. Journal of the
   Royal Statistical Society Series B 84(3), 822-852.
.. [4] Xu, Z., Wang, R., Ramdas, A. (2021). A unified framework for bandit multiple testing.
   Advances in Neural Information Processing Systems 34 (NeurIPS 2021).
.. [5] Howard, S. R., Ramdas, A., McAuliffe, J., Sekhon, J. (2021). Time-uniform, nonparametric,
   nonasymptotic confidence sequences. Annals of Statistics 49(2), 1055-1080.
.. [6] Johari, R., Koomen, P., Pekelis, L., Walsh, D. (2017). Peeking at A/B tests: why it
   matters, and what to do about it. KDD 2017.
.. [7] Waudby-Smith, I., Arbour, D., Sinha, R., Kennedy, E. H., Ramdas, A. (2023). Time-uniform
   central limit theory and asymptotic confidence sequences. arXiv:2103.06476.
.. [8] Lindon, M., Malek, A. (2022). Anytime-valid inference for multinomial count data. NeurIPS
   2022. arXiv:2011.03567.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from modelrollout.errors import InvalidInputError
from modelrollout.stats import _validate, sequential, srm
from modelrollout.stats.results import Interval

__all__ = [
    "CORRECTIONS",
    "MAX_EXPLORATORY",
    "OTHER",
    "Correction",
    "MeanSegmentCounts",
    "SegmentCounts",
    "SegmentFamilyResult",
    "SegmentResult",
    "SegmentSRMResult",
    "e_bh",
    "exploratory_segments",
    "fold_exploratory",
    "segment_harm",
    "segment_srm",
]

Correction = Literal["bonferroni", "e-bh"]
CORRECTIONS: tuple[Correction, ...] = ("bonferroni", "e-bh")

#: The most values an exploratory view shows before folding the rest into :data:`OTHER`.
MAX_EXPLORATORY = 20
#: The name of the folded value of an exploratory view.
OTHER = "other"

_METHODS: dict[str, str] = {
    "bonferroni": "one-sided mixture SPRT per segment; Bonferroni split alpha / K on the running maxima",
    "e-bh": "one-sided mixture SPRT per segment; e-BH on the e-values at this look (false discovery rate)",
}
_REFERENCES: dict[str, str] = {
    "bonferroni": "Dunn (1961); Ville (1939); " + sequential.REFERENCE,
    "e-bh": (
        "Wang & Ramdas (2022) False discovery rate control with e-values, JRSS-B 84(3); "
        "Xu, Wang & Ramdas (2021) A unified framework for bandit multiple testing, NeurIPS; "
        + sequential.REFERENCE
    ),
}
_SRM_METHOD = "Dirichlet-multinomial e-process per segment, Bonferroni split of the threshold"
_SRM_REFERENCE = "Lindon & Malek (2022), Anytime-valid inference for multinomial count data; Dunn (1961)"

BoolArray = NDArray[np.bool_]


@dataclass(frozen=True)
class SegmentCounts:
    """One segment's cumulative counts of a proportion metric, its margin and its carried state.

    Attributes
    ----------
    name : str
        The segment's value of the segment label (non-empty, unique in a family).
    champion_successes, champion_trials, challenger_successes, challenger_trials : float
        Cumulative counts (>= 0, successes <= trials). A segment with no trial yet in an arm is
        reported as not evaluated (it still counts in K).
    margin : float
        Allowed deterioration (>= 0), absolute (rate points) or, with ``relative``, a fraction
        of the champion's rate; default 0 (any harm).
    relative : bool
        Read ``margin`` relative to the champion's rate.
    previous_max_log_e : float, optional
        ``SegmentResult.log_e_value_max`` of the previous look (None at the first).
    tau2, fast_tau2 : float, optional
        The mixture's scales, frozen after the first look (``SegmentResult.tau2`` and
        ``fast_tau2``); without ``tau2`` the mixture is tuned at ``planned_n_per_variant``.
    planned_n_per_variant : float, optional
        Per-variant sample size this segment is planned to reach (tunes the mixture); defaults to
        the family's.
    baseline : float, optional
        The segment's expected champion rate for that tuning (default: the observed one).
    """

    name: str
    champion_successes: float
    champion_trials: float
    challenger_successes: float
    challenger_trials: float
    margin: float = 0.0
    relative: bool = False
    previous_max_log_e: float | None = None
    tau2: float | None = None
    fast_tau2: float | None = None
    planned_n_per_variant: float | None = None
    baseline: float | None = None

    @property
    def traffic(self) -> float:
        """Trials of both arms."""
        return float(self.champion_trials) + float(self.challenger_trials)


@dataclass(frozen=True)
class MeanSegmentCounts:
    """One segment's summary of a mean metric (or a ratio, as its delta-method mean), its margin
    and its carried state: the counterpart of :class:`SegmentCounts` for
    :func:`modelrollout.stats.sequential.sequential_noninferiority_means`.

    Attributes
    ----------
    name : str
        The segment's value of the segment label.
    champion_n, champion_mean, champion_sd, challenger_n, challenger_mean, challenger_sd : float
        Each arm's sample size, mean and standard deviation (``sd**2 / n`` is the variance of the
        mean). A segment with fewer than 2 samples in an arm is reported as not evaluated.
    margin, relative, previous_max_log_e, tau2, fast_tau2, planned_n_per_variant
        As in :class:`SegmentCounts`.
    """

    name: str
    champion_n: float
    champion_mean: float
    champion_sd: float
    challenger_n: float
    challenger_mean: float
    challenger_sd: float
    margin: float = 0.0
    relative: bool = False
    previous_max_log_e: float | None = None
    tau2: float | None = None
    fast_tau2: float | None = None
    planned_n_per_variant: float | None = None

    @property
    def champion_trials(self) -> float:
        return float(self.champion_n)

    @property
    def challenger_trials(self) -> float:
        return float(self.challenger_n)

    @property
    def traffic(self) -> float:
        return self.champion_trials + self.challenger_trials


#: A segment of either kind.
AnySegment = SegmentCounts | MeanSegmentCounts


@dataclass(frozen=True)
class SegmentResult:
    """One segment's harm test at this look.

    ``difference`` is challenger minus champion; ``interval`` its always-valid interval (each end
    a one-sided bound at ``level``). ``worse_by`` is the observed deterioration (absolute, or
    relative to the champion's rate for a relative margin) and ``worse_by_lower_bound`` its
    always-valid lower bound, as in :class:`modelrollout.stats.sequential.GuardrailResult`.
    ``log_e_value`` is the e-process now, ``log_e_value_max`` its running maximum (carry it), and
    ``p_value`` the segment's own always-valid p-value ``min(1, 1 / max e)``. ``harmed`` is the
    family's decision for this segment (see :class:`SegmentFamilyResult`). ``evaluated`` is False
    while an arm has no trial in the segment (then the estimates are NaN and ``harmed`` False).
    """

    name: str
    evaluated: bool
    harmed: bool
    champion_estimate: float
    challenger_estimate: float
    difference: float
    interval: Interval
    worse_by: float
    worse_by_lower_bound: float
    margin: float
    relative: bool
    log_e_value: float
    log_e_value_max: float
    p_value: float
    level: float
    champion_trials: float
    challenger_trials: float
    tau2: float | None
    fast_tau2: float | None
    exploratory: bool = False
    method: str = sequential.GUARDRAIL_METHOD
    reference: str = sequential.REFERENCE

    def to_dict(self) -> dict[str, Any]:
        d = {name: getattr(self, name) for name in self.__dataclass_fields__}
        d["interval"] = self.interval.as_list()
        return d


@dataclass(frozen=True)
class SegmentFamilyResult:
    """The harm tests of a family of segments at one look.

    Attributes
    ----------
    segments : tuple of SegmentResult
        In the order of the input.
    harmed : tuple of str
        The names of the harmed segments, in the order of the input.
    correction : str
        ``"bonferroni"`` (family-wise error rate) or ``"e-bh"`` (false discovery rate).
    alpha : float
        The family's level.
    level_per_segment : float
        Bonferroni: ``alpha / K``. e-BH: ``alpha k* / K`` with ``k* = max(1, number named)``, the
        level at which the named segments' e-values cleared (each needs ``e >= 1 / level``).
        The intervals are at ``alpha / K`` for both.
    exploratory : bool
        True for an exploratory view (:func:`exploratory_segments`): no decision uses it.
    folded : tuple of str
        The values folded into :data:`OTHER` (exploratory views only).
    """

    segments: tuple[SegmentResult, ...]
    harmed: tuple[str, ...]
    correction: str
    alpha: float
    level_per_segment: float
    higher_is_worse: bool
    method: str
    reference: str
    exploratory: bool = False
    folded: tuple[str, ...] = ()

    @property
    def any_harmed(self) -> bool:
        return bool(self.harmed)

    def segment(self, name: str) -> SegmentResult:
        """The result of the segment called ``name``."""
        for s in self.segments:
            if s.name == name:
                return s
        raise InvalidInputError(f"no segment named {name!r}")

    def to_dict(self) -> dict[str, Any]:
        d = {name: getattr(self, name) for name in self.__dataclass_fields__}
        d["segments"] = [s.to_dict() for s in self.segments]
        d["harmed"] = list(self.harmed)
        d["folded"] = list(self.folded)
        d["any_harmed"] = self.any_harmed
        return d


@dataclass(frozen=True)
class SegmentSRMResult:
    """Per-segment sample-ratio checks at one look.

    Attributes
    ----------
    names : tuple of str
        The segments, in the order of the input.
    per_segment : tuple of SequentialSRMResult
        Each segment's check, at ``threshold_per_segment`` (its ``mismatch`` is the decision);
        carry each ``max_log_e_value``.
    mismatched : tuple of str
        The segments whose split is not the configured one.
    threshold : float
        The family's false-alarm probability.
    threshold_per_segment : float
        ``threshold / K``.
    """

    names: tuple[str, ...]
    per_segment: tuple[srm.SequentialSRMResult, ...]
    mismatched: tuple[str, ...]
    threshold: float
    threshold_per_segment: float
    method: str = _SRM_METHOD
    reference: str = _SRM_REFERENCE

    @property
    def any_mismatch(self) -> bool:
        return bool(self.mismatched)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "reference": self.reference,
            "names": list(self.names),
            "per_segment": [s.to_dict() for s in self.per_segment],
            "mismatched": list(self.mismatched),
            "any_mismatch": self.any_mismatch,
            "threshold": self.threshold,
            "threshold_per_segment": self.threshold_per_segment,
        }


# --------------------------------------------------------------------------------------------
# e-BH
# --------------------------------------------------------------------------------------------


def e_bh(log_e_values: ArrayLike, alpha: float = 0.05) -> BoolArray:
    """The e-BH procedure (Wang & Ramdas 2022) on log e-values, over the last axis.

    With the K e-values of a row sorted ``e_[1] >= ... >= e_[K]``, let
    ``k* = max{k : k e_[k] / K >= 1 / alpha}``; reject the hypotheses with the ``k*`` largest
    e-values (none when no k qualifies). The false discovery rate is at most ``alpha K0 / K`` for
    e-values with any dependence. Computed in log space, so e-values too large for a float are
    fine; leading axes are independent families (vectorised for Monte Carlo).

    Parameters
    ----------
    log_e_values : array_like
        Natural logs of the e-values, shape ``(..., K)`` with ``K >= 1``; ``-inf`` (e = 0) is
        allowed, NaN and ``+inf`` are not.
    alpha : float
        Target false discovery rate, in (0, 1).

    Returns
    -------
    numpy.ndarray of bool
        Same shape: which hypotheses are rejected.

    References
    ----------
    .. [1] Wang, R., Ramdas, A. (2022). False discovery rate control with e-values. JRSS-B 84(3),
       822-852.
    """
    a = _validate.alpha(alpha)
    try:
        x = np.asarray(log_e_values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError(f"log_e_values must be numeric, got {log_e_values!r}") from None
    if x.ndim == 0 or x.shape[-1] == 0:
        raise InvalidInputError(
            f"log_e_values needs at least one e-value on its last axis, got shape {x.shape}"
        )
    if np.any(np.isnan(x)) or np.any(x == math.inf):
        raise InvalidInputError("log_e_values must not contain NaN or +inf")
    k_total = x.shape[-1]
    descending = -np.sort(-x, axis=-1)
    ranks = np.arange(1, k_total + 1, dtype=np.float64)
    qualifies: BoolArray = np.asarray(descending + np.log(ranks) - math.log(k_total) >= math.log(1.0 / a))
    any_q: BoolArray = np.asarray(qualifies.any(axis=-1))
    k_star = np.where(any_q, k_total - np.argmax(qualifies[..., ::-1], axis=-1), 1)
    kth = np.take_along_axis(descending, (k_star - 1)[..., None], axis=-1)
    out: BoolArray = (x >= kth) & any_q[..., None]
    return out


# --------------------------------------------------------------------------------------------
# Harm tests
# --------------------------------------------------------------------------------------------


def _label(i: int, name: object) -> str:
    return f"segments[{i}] ({name!r})"


def _checked_counts(i: int, seg: AnySegment) -> tuple[float, float, float, float]:
    label = _label(i, seg.name)
    if not isinstance(seg, SegmentCounts):
        raise InvalidInputError(f"{label}: this needs the counts of a proportion (a SegmentCounts)")
    out: list[float] = []
    for arm in ("champion", "challenger"):
        s = _validate.count(f"{label}.{arm}_successes", getattr(seg, f"{arm}_successes"))
        n = _validate.count(f"{label}.{arm}_trials", getattr(seg, f"{arm}_trials"))
        if s > n:
            raise InvalidInputError(f"{label}.{arm}_successes ({s!r}) must be <= {arm}_trials ({n!r})")
        out += [s, n]
    return out[0], out[1], out[2], out[3]


def _check_family(segments: Sequence[AnySegment]) -> None:
    if isinstance(segments, SegmentCounts | MeanSegmentCounts) or not isinstance(segments, Sequence):
        raise InvalidInputError(
            f"segments must be a sequence of SegmentCounts, got {type(segments).__name__}"
        )
    if len(segments) == 0:
        raise InvalidInputError("segments must contain at least one segment, got none")
    seen: set[str] = set()
    for i, seg in enumerate(segments):
        if not isinstance(seg, SegmentCounts | MeanSegmentCounts):
            raise InvalidInputError(
                f"segments[{i}] must be a SegmentCounts or MeanSegmentCounts, got {type(seg).__name__}"
            )
        if not isinstance(seg.name, str) or not seg.name:
            raise InvalidInputError(f"{_label(i, seg.name)}.name must be a non-empty string")
        if seg.name in seen:
            raise InvalidInputError(f"{_label(i, seg.name)}.name is not unique: {seg.name!r} appears twice")
        seen.add(seg.name)


def _unevaluated(seg: AnySegment, level: float, m: float, label: str) -> SegmentResult:
    previous = seg.previous_max_log_e
    running = 0.0 if previous is None else _validate.finite(f"{label}.previous_max_log_e", previous)
    return SegmentResult(
        name=seg.name,
        evaluated=False,
        harmed=False,
        champion_estimate=math.nan,
        challenger_estimate=math.nan,
        difference=math.nan,
        interval=Interval(-math.inf, math.inf),
        worse_by=math.nan,
        worse_by_lower_bound=-math.inf,
        margin=m,
        relative=bool(seg.relative),
        log_e_value=0.0,  # the e-process starts at 1 and has seen nothing
        log_e_value_max=running,
        p_value=min(1.0, math.exp(-running)),
        level=level,
        champion_trials=float(seg.champion_trials),
        challenger_trials=float(seg.challenger_trials),
        tau2=seg.tau2,
        fast_tau2=seg.fast_tau2,
    )


def _difference_radius(res: sequential.GuardrailResult, vc: float, vt: float, level: float) -> float:
    """The one-sided radius of the difference itself: the test's own for an absolute margin."""
    if not res.relative:
        return res.contrast - res.contrast_lower_bound
    tau2s, weights = sequential.guardrail_scales(res.tau2, res.fast_tau2)
    return sequential.scale_mixture_one_sided_radius(vc + vt, tau2s, weights, level)


def _one_segment(
    i: int,
    seg: AnySegment,
    *,
    level: float,
    higher_is_worse: bool,
    planned_n_per_variant: float | None,
    fast_n: float | None,
) -> SegmentResult:
    if isinstance(seg, MeanSegmentCounts):
        return _one_mean_segment(
            i,
            seg,
            level=level,
            higher_is_worse=higher_is_worse,
            planned_n_per_variant=planned_n_per_variant,
            fast_n=fast_n,
        )
    label = _label(i, seg.name)
    cs, cn, ts, tn = _checked_counts(i, seg)
    m = _validate.non_negative(f"{label}.margin", seg.margin)
    if seg.relative and not higher_is_worse and m >= 1:
        raise InvalidInputError(
            f"{label}.margin: a relative margin for a lower-is-worse metric must be < 1, got {m!r}"
        )
    if cn == 0 or tn == 0:
        return _unevaluated(seg, level, m, label)
    planned = _planned(label, seg, planned_n_per_variant)
    try:
        res = sequential.sequential_noninferiority(
            cs,
            cn,
            ts,
            tn,
            margin=m,
            relative=bool(seg.relative),
            higher_is_worse=higher_is_worse,
            alpha=level,
            tau2=seg.tau2,
            planned_n_per_variant=planned,
            baseline=seg.baseline,
            previous_max_log_e=seg.previous_max_log_e,
            fast_tau2=seg.fast_tau2,
            fast_n=fast_n,
        )
    except InvalidInputError as exc:
        raise InvalidInputError(f"{label}: {exc}") from None
    _, _, vc, vt = (float(v) for v in sequential.proportions_difference(cs, cn, ts, tn))
    return _evaluated(seg.name, res, (vc, vt), level, (cn, tn))


def _evaluated(
    name: str,
    res: sequential.GuardrailResult,
    variances: tuple[float, float],
    level: float,
    trials: tuple[float, float],
) -> SegmentResult:
    """An evaluated segment's result from its test (``variances``, ``trials``: champion's, then the
    challenger's)."""
    radius = _difference_radius(res, variances[0], variances[1], level)
    diff = res.treatment_estimate - res.control_estimate
    return SegmentResult(
        name=name,
        evaluated=True,
        harmed=res.breached,
        champion_estimate=res.control_estimate,
        challenger_estimate=res.treatment_estimate,
        difference=diff,
        interval=Interval(diff - radius, diff + radius),
        worse_by=res.worse_by,
        worse_by_lower_bound=res.worse_by_lower_bound,
        margin=res.margin,
        relative=res.relative,
        log_e_value=res.log_e_value,
        log_e_value_max=res.log_e_value_max,
        p_value=res.p_value,
        level=level,
        champion_trials=trials[0],
        challenger_trials=trials[1],
        tau2=res.tau2,
        fast_tau2=res.fast_tau2,
    )


def _planned(label: str, seg: AnySegment, planned_n_per_variant: float | None) -> float | None:
    if seg.tau2 is not None:
        return None
    planned = planned_n_per_variant if seg.planned_n_per_variant is None else seg.planned_n_per_variant
    if planned is None:
        raise InvalidInputError(
            f"{label}: give tau2 (the frozen mixture) or planned_n_per_variant (on the segment or the family)"
        )
    return planned


def _one_mean_segment(
    i: int,
    seg: MeanSegmentCounts,
    *,
    level: float,
    higher_is_worse: bool,
    planned_n_per_variant: float | None,
    fast_n: float | None,
) -> SegmentResult:
    """A mean segment's harm test: :func:`sequential_noninferiority_means` at ``level``."""
    label = _label(i, seg.name)
    nc = _validate.non_negative(f"{label}.champion_n", seg.champion_n)
    nt = _validate.non_negative(f"{label}.challenger_n", seg.challenger_n)
    m = _validate.non_negative(f"{label}.margin", seg.margin)
    if nc < 2 or nt < 2:
        return _unevaluated(seg, level, m, label)
    try:
        res = sequential.sequential_noninferiority_means(
            nc,
            seg.champion_mean,
            seg.champion_sd,
            nt,
            seg.challenger_mean,
            seg.challenger_sd,
            margin=m,
            relative=bool(seg.relative),
            higher_is_worse=higher_is_worse,
            alpha=level,
            tau2=seg.tau2,
            planned_n_per_variant=_planned(label, seg, planned_n_per_variant),
            previous_max_log_e=seg.previous_max_log_e,
            fast_tau2=seg.fast_tau2,
            fast_n=fast_n,
        )
    except InvalidInputError as exc:
        raise InvalidInputError(f"{label}: {exc}") from None
    vc = float(seg.champion_sd) ** 2 / nc
    vt = float(seg.challenger_sd) ** 2 / nt
    return _evaluated(seg.name, res, (vc, vt), level, (nc, nt))


def _correction(correction: str) -> Correction:
    for c in CORRECTIONS:
        if correction == c:
            return c
    raise InvalidInputError(f"correction must be one of {', '.join(CORRECTIONS)}, got {correction!r}")


def segment_harm(
    segments: Sequence[AnySegment],
    *,
    higher_is_worse: bool,
    alpha: float = 0.05,
    correction: Correction = "bonferroni",
    planned_n_per_variant: float | None = None,
    fast_n: float | None = sequential.FAST_DETECTION_N,
) -> SegmentFamilyResult:
    """Always-valid harm tests over K protected segments, corrected for the family.

    Each segment gets :func:`modelrollout.stats.sequential.sequential_noninferiority` at the
    per-segment level ``alpha / K`` on its own counts. With ``correction="bonferroni"`` a segment
    is harmed when its always-valid p-value (from the running maximum of its e-process) is below
    ``alpha / K``: the family-wise false-harm rate is at most ``alpha`` under continuous looks and
    any dependence. With ``"e-bh"``, the harmed segments are those e-BH names from the e-values at
    this look (false discovery rate at most ``alpha``; see the module docstring for when to prefer
    it and what it asks of the caller).

    Parameters
    ----------
    segments : sequence of SegmentCounts or MeanSegmentCounts
        The K protected segments (unique names), with their carried state: proportions, or means
        (a mean metric, or a ratio as its delta-method mean) tested with
        :func:`modelrollout.stats.sequential.sequential_noninferiority_means`.
    higher_is_worse : bool
        True for error rates, False for success rates.
    alpha : float
        The family's level, in (0, 0.5).
    correction : {"bonferroni", "e-bh"}
        Family-wise error rate (default) or false discovery rate.
    planned_n_per_variant : float, optional
        Tunes the mixture of the segments that carry neither ``tau2`` nor their own planned n.
    fast_n : float, optional
        The fastest scale of each segment's mixture, as in ``sequential_noninferiority``.

    Returns
    -------
    SegmentFamilyResult

    References
    ----------
    .. [1] Dunn (1961); Ville (1939); Wang & Ramdas (2022), JRSS-B 84(3); Xu, Wang & Ramdas
       (2021), NeurIPS; Johari et al. (2017); Howard et al. (2021).
    """
    return _family(
        segments,
        higher_is_worse=higher_is_worse,
        alpha=alpha,
        correction=correction,
        planned_n_per_variant=planned_n_per_variant,
        fast_n=fast_n,
        exploratory=False,
        folded=(),
    )


def _family(
    segments: Sequence[AnySegment],
    *,
    higher_is_worse: bool,
    alpha: float,
    correction: str,
    planned_n_per_variant: float | None,
    fast_n: float | None,
    exploratory: bool,
    folded: tuple[str, ...],
) -> SegmentFamilyResult:
    a = _validate.alpha(alpha, upper=0.5)
    corr = _correction(correction)
    if not isinstance(higher_is_worse, bool):
        raise InvalidInputError(f"higher_is_worse must be True or False, got {higher_is_worse!r}")
    _check_family(segments)
    k = len(segments)
    level = a / k
    results = [
        _one_segment(
            i,
            seg,
            level=level,
            higher_is_worse=higher_is_worse,
            planned_n_per_variant=planned_n_per_variant,
            fast_n=fast_n,
        )
        for i, seg in enumerate(segments)
    ]
    level_per_segment = level
    if corr == "e-bh":
        named = e_bh([r.log_e_value for r in results], a)
        results = [replace(r, harmed=bool(h) and r.evaluated) for r, h in zip(results, named, strict=True)]
        level_per_segment = a * max(1, int(named.sum())) / k
    results = [replace(r, exploratory=exploratory) for r in results]
    return SegmentFamilyResult(
        segments=tuple(results),
        harmed=tuple(r.name for r in results if r.harmed),
        correction=corr,
        alpha=a,
        level_per_segment=level_per_segment,
        higher_is_worse=higher_is_worse,
        method=_METHODS[corr],
        reference=_REFERENCES[corr],
        exploratory=exploratory,
        folded=folded,
    )


# --------------------------------------------------------------------------------------------
# Sample ratio per segment
# --------------------------------------------------------------------------------------------


def segment_srm(
    segments: Sequence[SegmentCounts],
    weights: Sequence[float],
    *,
    previous_max_log_e: Mapping[str, float] | None = None,
    threshold: float = srm.DEFAULT_THRESHOLD,
    prior_scale: float = srm.DEFAULT_PRIOR_SCALE,
) -> SegmentSRMResult:
    """Anytime-valid sample-ratio check of every segment, Bonferroni across the segments.

    Each segment's trials ``(champion_trials, challenger_trials)`` are tested against the
    configured ``weights`` with :func:`modelrollout.stats.srm.srm_sequential` at
    ``threshold / K``; the probability of any false alarm over the family and all looks is at
    most ``threshold`` (union bound over Ville's inequality, any dependence). The counts must be
    those since the weights were set.

    Parameters
    ----------
    segments : sequence of SegmentCounts
        Only the trials are used.
    weights : sequence of float
        ``(champion, challenger)`` configured shares, each > 0, summing to 1.
    previous_max_log_e : mapping of str to float, optional
        Each segment's ``max_log_e_value`` from the previous look, by name.
    threshold : float
        The family's false-alarm probability, in (0, 1); default 0.001.
    prior_scale : float
        Concentration of each segment's Dirichlet prior.

    Returns
    -------
    SegmentSRMResult

    References
    ----------
    .. [1] Lindon, M., Malek, A. (2022). Anytime-valid inference for multinomial count data.
       NeurIPS 2022.
    .. [2] Dunn, O. J. (1961). JASA 56(293).
    """
    thr = _validate.alpha(threshold, "threshold")
    w = _validate.probabilities("weights", weights)
    if len(w) != 2:
        raise InvalidInputError(f"weights must have 2 entries (champion, challenger), got {len(w)}")
    _check_family(segments)
    carried = dict(previous_max_log_e or {})
    names = {s.name for s in segments}
    unknown = sorted(set(carried) - names)
    if unknown:
        raise InvalidInputError(f"previous_max_log_e names segments that are not in segments: {unknown}")
    per = thr / len(segments)
    checks = []
    for i, seg in enumerate(segments):
        _, cn, _, tn = _checked_counts(i, seg)
        try:
            checks.append(
                srm.srm_sequential(
                    [cn, tn],
                    w,
                    previous_max_log_e_value=carried.get(seg.name),
                    prior_scale=prior_scale,
                    threshold=per,
                )
            )
        except InvalidInputError as exc:
            raise InvalidInputError(f"{_label(i, seg.name)}: {exc}") from None
    return SegmentSRMResult(
        names=tuple(s.name for s in segments),
        per_segment=tuple(checks),
        mismatched=tuple(s.name for s, c in zip(segments, checks, strict=True) if c.mismatch),
        threshold=thr,
        threshold_per_segment=per,
    )


# --------------------------------------------------------------------------------------------
# Exploratory view
# --------------------------------------------------------------------------------------------


def fold_exploratory(
    segments: Sequence[SegmentCounts],
    max_values: int = MAX_EXPLORATORY,
    *,
    other: str = OTHER,
    margin: float = 0.0,
    relative: bool = False,
) -> tuple[tuple[SegmentCounts, ...], tuple[str, ...]]:
    """Keep the ``max_values`` values with the most traffic and fold the rest into ``other``.

    Traffic is both arms' trials; ties go to the name in alphabetical order, so the view is
    deterministic. The kept values come first, by decreasing traffic, then ``other`` (when
    something was folded), with summed counts, the given margin and no carried state. A value
    already called ``other`` is folded into it.

    Parameters
    ----------
    segments : sequence of SegmentCounts
        Every value of the label (unique names).
    max_values : int
        How many values to keep (>= 1); default :data:`MAX_EXPLORATORY`.
    other : str
        The name of the folded value.
    margin, relative : float, bool
        The margin of the folded value.

    Returns
    -------
    (tuple of SegmentCounts, tuple of str)
        The values to show, and the names folded into ``other``.
    """
    if isinstance(max_values, bool) or not isinstance(max_values, int) or max_values < 1:
        raise InvalidInputError(f"max_values must be an integer >= 1, got {max_values!r}")
    if not isinstance(other, str) or not other:
        raise InvalidInputError(f"other must be a non-empty string, got {other!r}")
    m = _validate.non_negative("margin", margin)
    _check_family(segments)
    for i, seg in enumerate(segments):
        _checked_counts(i, seg)
    ranked = sorted((s for s in segments if s.name != other), key=lambda s: (-s.traffic, s.name))
    kept = ranked[:max_values]
    rest = ranked[max_values:] + [s for s in segments if s.name == other]
    if not rest:
        return tuple(kept), ()
    folded = SegmentCounts(
        name=other,
        champion_successes=math.fsum(float(s.champion_successes) for s in rest),
        champion_trials=math.fsum(float(s.champion_trials) for s in rest),
        challenger_successes=math.fsum(float(s.challenger_successes) for s in rest),
        challenger_trials=math.fsum(float(s.challenger_trials) for s in rest),
        margin=m,
        relative=bool(relative),
    )
    return (*kept, folded), tuple(s.name for s in rest)


def exploratory_segments(
    segments: Sequence[SegmentCounts],
    *,
    higher_is_worse: bool,
    alpha: float = 0.05,
    max_values: int = MAX_EXPLORATORY,
    planned_n_per_variant: float | None = None,
    fast_n: float | None = sequential.FAST_DETECTION_N,
    other: str = OTHER,
) -> SegmentFamilyResult:
    """An exploratory per-value view of a label: at most ``max_values`` values plus ``other``.

    The values are folded by :func:`fold_exploratory` and tested as in :func:`segment_harm` with
    Bonferroni over the values shown (so the intervals hold simultaneously). The result and every
    segment in it are marked ``exploratory``: no decision uses it, and ``harmed`` there is a
    pointer for a person, not a verdict. The folded value carries no state; drop the carried state
    of any value that moves in or out of the view.

    Returns
    -------
    SegmentFamilyResult
        With ``exploratory=True`` and ``folded`` naming the values in ``other``.

    References
    ----------
    See :func:`segment_harm`; GrowthBook caps its exploratory dimension drill-downs at 20 values.
    """
    shown, folded = fold_exploratory(segments, max_values, other=other)
    return _family(
        shown,
        higher_is_worse=higher_is_worse,
        alpha=alpha,
        correction="bonferroni",
        planned_n_per_variant=planned_n_per_variant,
        fast_n=fast_n,
        exploratory=True,
        folded=folded,
    )
