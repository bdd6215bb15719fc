"""The ``status`` of a ModelExperiment: what users read, and the memory of the control loop.

The status is the loop's only memory: after a restart, the operator resumes from it and neither
repeats nor skips a step. Everything the policy needs across ticks is therefore here, typed:

* the phase, step, weights and their start times;
* the data-quality counters (``consecutiveErrors``, ``dataOutageSince``);
* per-metric checkpoints of the exact counts (``checkpoints``), the counts since counting started
  (``totals``) and per-stratum counts (``strata``) for the stratified analysis and the SRM test;
* the sequential tests' state (``sequential``: running maximum of the log e-process, the frozen
  mixing variance, the running confidence interval; ``srmMaxLogEValue``);
* dropped challengers, and the manual-control annotations already acted on;
* the planned sample sizes (``plans``), frozen once computed, where a pause came from (``pause``),
  and the time of the last tick (``lastTickAt``), so that a tick replayed with the same inputs
  counts nothing twice.

Numbers are finite (no NaN or infinity, which JSON cannot carry): a quantity that is not known is
left out (``None``). ``model_dump(by_alias=True, mode="json")`` followed by ``model_validate``
gives back an equal object, and so does a trip through the apiserver (which drops ``null`` s).

Unlike the spec, these models are mutable: the policy deep-copies the status it is given
(``status.model_copy(deep=True)``) and edits the copy. Assignments are not re-validated.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Final

from pydantic import AfterValidator, AwareDatetime, Field, field_validator

from modelrollout.api._rules import StatusModel, api_config
from modelrollout.api.spec import (
    MAX_CHALLENGERS,
    MAX_GUARDRAILS,
    MAX_NOTIFICATIONS,
    MAX_PROTECTED_SEGMENTS,
    MAX_SECONDARY_METRICS,
    MAX_STEPS,
)
from modelrollout.api.types import DNSLabel

#: Most entries kept in ``status.history``; :meth:`ModelExperimentStatus.record` drops the oldest.
HISTORY_LIMIT: Final = 50
#: Most entries in ``status.strata`` (one per step, plus challengers dropped and sample ratio restarts).
STRATA_LIMIT: Final = 3 * MAX_STEPS
_MAX_VARIANTS: Final = MAX_CHALLENGERS + 1
_MAX_METRICS: Final = 1 + MAX_SECONDARY_METRICS + MAX_GUARDRAILS
#: The most values of one label (segment values, or bucket edges) kept per metric.
BREAKDOWN_LIMIT: Final = 64
#: The most segment records of one challenger in status.analysis.
SEGMENT_RECORDS_LIMIT: Final = 200


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


#: A timezone-aware timestamp, kept in UTC (RFC 3339 in JSON).
Timestamp = Annotated[AwareDatetime, AfterValidator(_utc)]
#: A traffic share in whole percent.
Percent = Annotated[int, Field(ge=0, le=100)]
_Reason = Annotated[
    str, Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
]
_Text = Annotated[str, Field(max_length=32768)]
_Probability = Annotated[float, Field(ge=0, le=1)]


class Phase(StrEnum):
    """Where the experiment stands.

    Pending (accepted, not started), Shadowing (mirrored traffic only), Progressing (stepping real
    traffic), Paused (held by spec.paused, a manual pause, onInconclusive or onDataOutage), Promoted
    (a challenger has all the traffic), RolledBack (the champion has all the traffic again), Failed
    (stopped on an error that needs a human, such as an invalid spec).
    """

    PENDING = "Pending"
    SHADOWING = "Shadowing"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"

    @property
    def terminal(self) -> bool:
        """Whether the experiment is over (Promoted, RolledBack or Failed)."""
        return self in (Phase.PROMOTED, Phase.ROLLED_BACK, Phase.FAILED)


class ConditionType(StrEnum):
    """The condition types the operator sets."""

    READY = "Ready"
    PROGRESSING = "Progressing"
    SUCCEEDED = "Succeeded"
    ROLLED_BACK = "RolledBack"
    INVALID_SPEC = "InvalidSpec"
    SAMPLE_RATIO_MISMATCH = "SampleRatioMismatch"
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    STALLED = "Stalled"


class ConditionStatus(StrEnum):
    """The status of a condition."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(StatusModel):
    """A Kubernetes-style condition (as metav1.Condition)."""

    type: ConditionType = Field(description="The condition's type.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: _Reason = Field(description="Why, in one CamelCase word.")
    message: _Text = Field(default="", description="Why, for humans.")
    last_transition_time: Timestamp = Field(description="When the status last changed.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation of the spec this condition is about."
    )


class Interval(StatusModel):
    """A closed interval [low, high]."""

    low: float = Field(description="Lower end.")
    high: float = Field(description="Upper end.")


class VariantDecision(StrEnum):
    """The verdict on a challenger (or on one of its metrics) so far."""

    PENDING = "Pending"
    BETTER = "Better"
    WORSE = "Worse"
    NON_INFERIOR = "NonInferior"
    INCONCLUSIVE = "Inconclusive"


class MetricResult(StatusModel):
    """One metric of one variant: its value and, for a challenger, the comparison with the champion."""

    n: float | None = Field(default=None, ge=0, description="Samples (trials, observations or units) so far.")
    estimate: float | None = Field(default=None, description="The variant's value of the metric.")
    difference: float | None = Field(
        default=None, description="Challenger minus champion, in the metric's units."
    )
    relative_lift: float | None = Field(default=None, description="difference / champion's value.")
    ci: Interval | None = Field(
        default=None,
        description="Confidence interval (sequence) of the effect, on the metric's mdeType scale.",
    )
    p_value: _Probability | None = Field(
        default=None,
        description="p-value (always-valid for sequential), after any multiple-testing correction.",
    )
    e_value: float | None = Field(default=None, ge=0, description="sequential: the e-value against the null.")
    probability: _Probability | None = Field(
        default=None, description="bayesian: posterior probability that the challenger is better."
    )
    expected_loss: float | None = Field(
        default=None, ge=0, description="bayesian: expected loss of choosing the challenger."
    )
    planned_n: float | None = Field(
        default=None, ge=0, description="Planned samples per variant for this metric."
    )
    method: Annotated[str, Field(max_length=256)] | None = Field(default=None, description="The test used.")
    decision: VariantDecision = Field(
        default=VariantDecision.PENDING, description="The verdict on this metric."
    )


class GuardrailResult(StatusModel):
    """One guardrail of one challenger."""

    estimate: float | None = Field(default=None, description="The challenger's value.")
    champion_estimate: float | None = Field(default=None, description="The champion's value.")
    difference: float | None = Field(
        default=None, description="How much worse the challenger is (positive: worse)."
    )
    limit: float | None = Field(default=None, description="The margin or threshold, in the metric's units.")
    p_value: _Probability | None = Field(default=None, description="Always-valid p-value of a breach.")
    e_value: float | None = Field(default=None, ge=0, description="E-value of a breach.")
    breached: bool = Field(default=False, description="Whether the guardrail is breached.")
    challenger_bounds: Interval | None = Field(
        default=None,
        description="quantile guardrails: the bucket edges between which the challenger's quantile is "
        "known to lie (low < quantile <= high), once both are known.",
    )
    champion_bounds: Interval | None = Field(
        default=None, description="quantile guardrails: the same for the champion's quantile."
    )


class SRMResult(StatusModel):
    """The sample ratio mismatch check over the whole run."""

    p_value: _Probability | None = Field(
        default=None, description="Always-valid p-value of the observed split."
    )
    observed_shares: dict[str, _Probability] = Field(
        default_factory=dict, max_length=_MAX_VARIANTS, description="Observed share of trials per variant."
    )
    expected_shares: dict[str, _Probability] = Field(
        default_factory=dict, max_length=_MAX_VARIANTS, description="Share expected from the weights."
    )
    mismatch: bool = Field(default=False, description="Whether the p-value is below analysis.srmThreshold.")


class SegmentRecord(StatusModel):
    """One segment of one metric for one challenger: its estimate, interval and harm verdict."""

    metric: DNSLabel = Field(description="The metric (the primary metric or a proportion guardrail).")
    value: Annotated[str, Field(max_length=63)] = Field(
        description="The segment label's value (other: the exploratory values beyond the cap, summed)."
    )
    protected: bool = Field(default=False, description="A protected segment (decided on); else exploratory.")
    harmed: bool = Field(
        default=False,
        description="Protected: found harmed (the corrected always-valid test). Exploratory: a pointer "
        "for a person only, never a decision.",
    )
    estimate: float | None = Field(default=None, description="The challenger's value in the segment.")
    champion_estimate: float | None = Field(default=None, description="The champion's value in the segment.")
    difference: float | None = Field(default=None, description="Challenger minus champion.")
    ci: Interval | None = Field(
        default=None, description="Always-valid interval of the difference, simultaneous over the segments."
    )
    worse_by: float | None = Field(
        default=None, description="How much worse the challenger is (relative or absolute, as the margin)."
    )
    margin: float | None = Field(default=None, description="The allowed deterioration.")
    p_value: _Probability | None = Field(default=None, description="The segment's own always-valid p-value.")
    n: float | None = Field(default=None, ge=0, description="The challenger's trials in the segment.")
    champion_n: float | None = Field(default=None, ge=0, description="The champion's trials in the segment.")


class NoveltyResult(StatusModel):
    """The novelty check of one challenger (spec.analysis.novelty): does its lift decay over time?"""

    windows: int = Field(default=0, ge=0, description="Time windows closed so far.")
    early_lift: float | None = Field(
        default=None, description="Relative lift of the earlier half of the windows (on the primary metric)."
    )
    recent_lift: float | None = Field(
        default=None, description="Relative lift of the recent half of the windows."
    )
    p_value: _Probability | None = Field(
        default=None,
        description="Always-valid p-value of 'the lift of recent windows is below earlier ones'.",
    )
    decaying: bool = Field(
        default=False, description="The lift decays (p below novelty.alpha): a promotion is held."
    )


class VariantAnalysis(StatusModel):
    """Everything the analysis knows about one variant (the champion carries only its own values)."""

    n: float = Field(default=0, ge=0, description="Samples of the primary metric so far.")
    primary: MetricResult | None = Field(default=None, description="The primary metric.")
    secondary: dict[str, MetricResult] = Field(
        default_factory=dict, max_length=MAX_SECONDARY_METRICS, description="Secondary metrics by name."
    )
    guardrails: dict[str, GuardrailResult] = Field(
        default_factory=dict, max_length=MAX_GUARDRAILS, description="Guardrails by name."
    )
    segments: list[SegmentRecord] = Field(
        default_factory=list,
        max_length=SEGMENT_RECORDS_LIMIT,
        description="Per-segment results (spec.metrics.segments): protected segments of every tested "
        "metric, then the exploratory view of the primary metric.",
    )
    novelty: NoveltyResult | None = Field(
        default=None, description="The novelty check of the primary metric (spec.analysis.novelty)."
    )
    decision: VariantDecision = Field(
        default=VariantDecision.PENDING, description="The verdict on this variant."
    )
    rule: _Text | None = Field(
        default=None, description="The rule behind the verdict, in words, with its numbers."
    )


class AnalysisRecord(StatusModel):
    """The latest analysis, per variant."""

    updated_at: Timestamp | None = Field(default=None, description="When the analysis last ran.")
    planned_n: int | None = Field(
        default=None, ge=0, description="Planned samples per variant for the primary metric."
    )
    variants: dict[str, VariantAnalysis] = Field(
        default_factory=dict, max_length=_MAX_VARIANTS, description="Per variant, by name."
    )
    srm: SRMResult | None = Field(default=None, description="The sample ratio mismatch check.")


class MetricCounters(StatusModel):
    """The aggregates of one metric for one variant (only those of the metric's type are set)."""

    successes: float | None = Field(default=None, description="proportion: events.")
    trials: float | None = Field(default=None, description="proportion: trials.")
    count: float | None = Field(default=None, description="mean: observations.")
    sum: float | None = Field(default=None, description="mean: sum of values.")
    sum_of_squares: float | None = Field(default=None, description="mean: sum of squared values.")
    units: float | None = Field(default=None, description="ratio: units.")
    numerator: float | None = Field(default=None, description="ratio: sum of numerators.")
    denominator: float | None = Field(default=None, description="ratio: sum of denominators.")
    numerator_squares: float | None = Field(default=None, description="ratio: sum of squared numerators.")
    denominator_squares: float | None = Field(default=None, description="ratio: sum of squared denominators.")
    cross_products: float | None = Field(
        default=None, description="ratio: sum of numerator times denominator."
    )


#: variant name -> metric name -> counters.
CountersByVariant = dict[str, dict[str, MetricCounters]]


class SettleReason(StrEnum):
    """How a stratum's counting start was decided (see :mod:`modelrollout.policy.counts`)."""

    WEIGHTS_SEEN = "WeightsSeen"
    SETTLE_LIMIT = "SettleLimit"
    UNCHANGED = "Unchanged"


class Settle(StatusModel):
    """When and why a stratum began to count, after its weights were applied."""

    reason: SettleReason = Field(
        description="WeightsSeen: the counts showed the new split (a likelihood ratio against the old "
        "split); SettleLimit: they could not tell within the limit (low traffic, or close splits); "
        "Unchanged: the split did not change (a restart of the step's counting)."
    )
    seconds: float = Field(ge=0, description="From the weights' change to the start of counting.")
    limit_seconds: float | None = Field(
        default=None, ge=0, description="The longest settle: a few scrape intervals and ticks."
    )
    log_likelihood_ratio: float | None = Field(
        default=None, description="WeightsSeen: log of the evidence for the new split over the old one."
    )
    scrape_interval_seconds: float | None = Field(
        default=None, ge=0, description="The scrape interval seen in the samples while settling."
    )


class SettleSlice(StatusModel):
    """Samples of the primary metric in one tick's slice of a settling stratum (by sample start)."""

    end: Timestamp = Field(description="The slice holds the increments that start before this time.")
    samples: dict[str, float] = Field(
        default_factory=dict, max_length=_MAX_VARIANTS, description="Samples per variant."
    )
    exposure: dict[str, float] = Field(
        default_factory=dict,
        max_length=_MAX_VARIANTS,
        description="Seconds of counting per variant (the spans of the increments, summed).",
    )


#: Most slices a settling stratum keeps (older ones are merged).
SETTLE_SLICES_LIMIT: Final = 32
#: Most scrape targets a stratum keeps apart per variant (the rest are kept together).
TARGETS_LIMIT: Final = 64
#: The key of a stratum's sampling that stands for all its targets (an ended stratum, or overflow).
ALL_TARGETS: Final = "*"


class TargetSampling(StatusModel):
    """What one scrape target's series of the primary metric's samples counted in a stratum."""

    samples: float = Field(default=0.0, description="Samples counted.")
    seconds: float = Field(
        default=0.0, ge=0, description="Seconds covered: the spans of its increments, summed."
    )
    reset_seconds: float = Field(
        default=0.0,
        ge=0,
        description="The spans of its increments across a counter reset, which count only what came "
        "after the restart: it may have missed some of its traffic over those seconds.",
    )
    reset_samples: float = Field(
        default=0.0, ge=0, description="What those increments counted (after the restarts)."
    )
    lost: float = Field(
        default=0.0,
        ge=0,
        description="'*' of an ended stratum: the most the variant's samples may have missed (resets, "
        "targets that never reported).",
    )
    bounded: bool = Field(
        default=True,
        description="'*' of an ended stratum: False when what its variants may have missed could not "
        "be bounded (no variant was reported by all its targets); the sample ratio test leaves it out.",
    )


class Stratum(StatusModel):
    """A span of the rollout with constant weights: a step, or a part of one (after a challenger was
    dropped, or after the counting of a step restarted on a sample ratio alarm).

    Counts are stratified (each stratum's difference is estimated on its own, then combined) so a
    change of weights cannot bias the comparison. A stratum counts the increments of counter series
    that start at or after ``countedFrom`` and end by ``endedAt``: exact counts, which start only
    once the counts show the new weights in effect (``settle``).
    """

    step: int = Field(ge=0, le=MAX_STEPS - 1, description="Index of the step in spec.rollout.steps.")
    weights: dict[str, Percent] = Field(max_length=_MAX_VARIANTS, description="The weights during this step.")
    previous_weights: dict[str, Percent] = Field(
        default_factory=dict,
        max_length=_MAX_VARIANTS,
        description="The weights before (the settle tells the new split from this one).",
    )
    started_at: Timestamp = Field(description="When the step's weights were applied.")
    ended_at: Timestamp | None = Field(default=None, description="When the step ended (unset while it runs).")
    counted_from: Timestamp | None = Field(
        default=None,
        description="Increments that start at or after this time count (unset while the stratum settles).",
    )
    settle: Settle | None = Field(default=None, description="How the start of counting was decided.")
    settling: list[SettleSlice] = Field(
        default_factory=list,
        max_length=SETTLE_SLICES_LIMIT,
        description="While settling: the primary metric's samples per tick since the weights changed.",
    )
    srm_epoch: int = Field(
        default=0, ge=0, description="The sample ratio test's epoch (it restarts after an alarm)."
    )
    spacing: float = Field(
        default=0.0, ge=0, description="The largest spacing of the primary metric's samples, in seconds."
    )
    resets: dict[str, int] = Field(
        default_factory=dict, max_length=_MAX_VARIANTS, description="Counter resets seen, per variant."
    )
    aligned: bool | None = Field(
        default=None,
        description="Set when the stratum ends: whether every variant's samples came from the same "
        "scrape targets (sampled at the same instants, so a drift of the traffic cannot skew them).",
    )
    sampling: dict[str, dict[str, TargetSampling]] = Field(
        default_factory=dict,
        max_length=_MAX_VARIANTS,
        description="Per variant and scrape target: the primary metric's samples and the seconds they "
        "cover (the sample ratio test expects each variant's share of weight times covered time); "
        "one entry, '*', once the stratum has ended.",
    )
    totals: CountersByVariant = Field(
        default_factory=dict,
        max_length=_MAX_VARIANTS,
        description="The stratum's own counts per variant and metric (final once endedAt is set).",
    )
    segment_trials: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        max_length=MAX_PROTECTED_SEGMENTS,
        description="Protected segments: the primary metric's samples in this stratum, per segment "
        "value and variant (the per-segment sample ratio check).",
    )
    segment_srm: dict[str, SequentialState] = Field(
        default_factory=dict,
        max_length=MAX_PROTECTED_SEGMENTS * MAX_CHALLENGERS,
        description="The per-segment sample ratio checks of this stratum, by challenger/segment.",
    )


class SequentialState(StatusModel):
    """What a sequential test of one metric (or guardrail) of one variant carries across ticks."""

    max_log_e_value: float = Field(
        default=0.0, description="Running maximum of the log e-process (0: no evidence yet)."
    )
    tau2: float | None = Field(
        default=None,
        gt=0,
        description="Mixing variance of the e-process, frozen when first tuned to the plan.",
    )
    fast_tau2: float | None = Field(
        default=None,
        gt=0,
        description="Guardrails: the largest mixing variance of the scale mixture (tuned for a gross "
        "breach at a few samples), frozen with tau2.",
    )
    ci: Interval | None = Field(default=None, description="Running intersection of the confidence sequence.")
    consecutive_failures: int = Field(
        default=0, ge=0, description="Threshold guardrails: ticks in a row over the threshold."
    )
    previous_counters: MetricCounters | None = Field(
        default=None,
        description="Threshold guardrails: the challenger's cumulative reading at the tick before the "
        "last one; the value judged against the threshold is the change from it to lastCounters.",
    )
    last_counters: MetricCounters | None = Field(
        default=None,
        description="Threshold guardrails: the challenger's cumulative reading at the last tick.",
    )
    p_value: _Probability | None = Field(
        default=None,
        description="method fixed: p-value of the single test at the planned sample size (frozen once "
        "taken).",
    )
    estimate: float | None = Field(
        default=None,
        description="method fixed: the difference (challenger minus champion) at that single test.",
    )
    harmed_at: Timestamp | None = Field(
        default=None,
        description="Protected segments: when the segment was found harmed (a finding, once made, stays).",
    )


class QuantileState(StatusModel):
    """A quantile guardrail's memory for one challenger: the running maxima of its edge tests."""

    edges: list[float] = Field(
        default_factory=list, max_length=BREAKDOWN_LIMIT, description="The bucket edges."
    )
    champion_below: list[float | None] = Field(
        default_factory=list,
        max_length=BREAKDOWN_LIMIT,
        description="Per edge: the running maximum of the log evidence that the champion's quantile is "
        "above it (null: none yet).",
    )
    champion_above: list[float | None] = Field(
        default_factory=list, max_length=BREAKDOWN_LIMIT, description="... that it is at or below it."
    )
    challenger_below: list[float | None] = Field(
        default_factory=list, max_length=BREAKDOWN_LIMIT, description="The same for the challenger."
    )
    challenger_above: list[float | None] = Field(
        default_factory=list, max_length=BREAKDOWN_LIMIT, description="The same for the challenger."
    )


class SRMAlarm(StatusModel):
    """A sample ratio mismatch the test found, and what became of it."""

    at: Timestamp = Field(description="When the test found it.")
    step: int = Field(ge=0, le=MAX_STEPS - 1, description="The step it was found in.")
    p_value: _Probability = Field(description="The always-valid p-value that crossed the threshold.")
    observed_shares: dict[str, _Probability] = Field(
        default_factory=dict, max_length=_MAX_VARIANTS, description="The split that was seen."
    )
    expected_shares: dict[str, _Probability] = Field(
        default_factory=dict, max_length=_MAX_VARIANTS, description="The split the weights give."
    )
    confirmed: bool = Field(
        default=False,
        description="True when the counts after the restart found the mismatch again: it holds until "
        "a human acts.",
    )


class SRMState(StatusModel):
    """The sample ratio test's memory: its epoch, its running maximum, and an alarm being checked."""

    epoch: int = Field(
        default=0,
        ge=0,
        description="The strata of this epoch are tested together; an alarm starts a new one.",
    )
    max_log_e_value: float = Field(
        default=0.0, description="Running maximum of the log e-process in this epoch."
    )
    alarm: SRMAlarm | None = Field(
        default=None,
        description="A mismatch found and not yet cleared: the experiment holds while fresh counts check it.",
    )
    cleared: int = Field(default=0, ge=0, description="Alarms that the counts after them contradicted.")


#: Most window summaries a challenger's novelty test keeps (beyond it, neighbours are merged).
NOVELTY_WINDOWS_LIMIT: Final = 32


class NoveltyWindow(StatusModel):
    """One time window (or several merged) of a challenger's novelty test."""

    start: Timestamp = Field(description="When the window began.")
    end: Timestamp = Field(description="When it closed.")
    difference: float = Field(description="Challenger minus champion on the primary metric in the window.")
    variance: float = Field(gt=0, description="The variance of that difference.")
    champion: float | None = Field(default=None, description="The champion's value in the window.")
    samples: float = Field(default=0.0, ge=0, description="The champion's samples in the window.")


class NoveltyTest(StatusModel):
    """A challenger's novelty test: the running sums of its recursive residuals (see
    :mod:`modelrollout.stats.novelty`), and the windows it has seen."""

    windows: int = Field(default=0, ge=0, description="Windows taken into the test.")
    information: float = Field(default=0.0, ge=0, description="Sum of 1/variance of the windows' gains.")
    weighted: float = Field(default=0.0, description="Sum of gain/variance of the windows.")
    residual_sum: float = Field(default=0.0, description="Sum of the standardised recursive residuals.")
    max_log_e_value: float = Field(
        default=0.0, description="Running maximum of the log e-process (a decay once found stays found)."
    )
    found_at: Timestamp | None = Field(default=None, description="When the decay was found.")
    summaries: list[NoveltyWindow] = Field(
        default_factory=list,
        max_length=NOVELTY_WINDOWS_LIMIT,
        description="The windows, oldest first (neighbours merged in pairs beyond the limit).",
    )


class NoveltyBase(StatusModel):
    """A stratum's counts of the primary metric when the current novelty window began."""

    stratum: int = Field(ge=0, le=STRATA_LIMIT - 1, description="Index of the stratum in status.strata.")
    totals: dict[str, MetricCounters] = Field(
        default_factory=dict, max_length=_MAX_VARIANTS, description="Per variant."
    )


class NoveltyState(StatusModel):
    """The novelty check's memory (spec.analysis.novelty.enabled): the open window and the tests."""

    window_start: Timestamp = Field(description="When the open window began.")
    tau2: float | None = Field(
        default=None, gt=0, description="Mixing scale of the e-process, frozen when first tuned."
    )
    base: list[NoveltyBase] = Field(
        default_factory=list,
        max_length=STRATA_LIMIT,
        description="The counts of the strata still counting when the open window began.",
    )
    challengers: dict[str, NoveltyTest] = Field(
        default_factory=dict, max_length=MAX_CHALLENGERS, description="The test of each challenger."
    )


class PauseReason(StrEnum):
    """Why an experiment is paused: spec.paused, onDataOutage pause, or onInconclusive pause."""

    SPEC = "SpecPaused"
    DATA_OUTAGE = "DataOutage"
    INCONCLUSIVE = "Inconclusive"


class PauseRecord(StatusModel):
    """Where a paused experiment came from, and why it is paused (to resume the right phase)."""

    from_phase: Phase = Field(description="The phase the experiment resumes when the pause ends.")
    reason: PauseReason = Field(
        description="SpecPaused (ends when spec.paused is false), DataOutage (ends when the metrics are "
        "usable again) or Inconclusive (ends if analysis.maxDuration is raised past the current time, "
        "unless fixedLook)."
    )
    since: Timestamp = Field(description="When the pause began.")
    fixed_look: bool = Field(
        default=False,
        description="An Inconclusive pause after the one look of the fixed-horizon test: raising "
        "maxDuration does not end it (another look would void the test's error rate); the promote "
        "or abort annotation does.",
    )


class PlannedSample(StatusModel):
    """The planned sample size per variant of one outcome metric, frozen when first computed."""

    n: int = Field(ge=1, description="Planned samples per variant.")
    baseline: float = Field(description="The champion's value of the metric the plan was computed from.")
    sd: float | None = Field(
        default=None, ge=0, description="mean and ratio metrics: the per-unit standard deviation used."
    )
    at: Timestamp = Field(description="When the plan was computed.")


class DroppedChallenger(StatusModel):
    """A challenger taken out of the experiment while others go on."""

    name: DNSLabel = Field(description="The challenger's name.")
    at: Timestamp = Field(description="When it was dropped.")
    reason: _Reason = Field(description="Why, in one CamelCase word (GuardrailBreached, Worse).")
    message: _Text = Field(default="", description="Why, for humans.")


class AppliedControls(StatusModel):
    """The values of the manual-control annotations already acted on, so none is applied twice."""

    promote: Annotated[str, Field(max_length=256)] | None = Field(
        default=None, description="Value of modelrollout.io/promote last acted on."
    )
    abort: Annotated[str, Field(max_length=256)] | None = Field(
        default=None, description="Value of modelrollout.io/abort last acted on."
    )
    retry: Annotated[str, Field(max_length=256)] | None = Field(
        default=None, description="Value of modelrollout.io/retry last acted on."
    )


class HistoryEntry(StatusModel):
    """A transition, with the reason and the numbers behind it."""

    time: Timestamp = Field(description="When it happened.")
    from_phase: Phase | None = Field(default=None, description="Phase before.")
    to_phase: Phase = Field(description="Phase after.")
    from_step: int | None = Field(default=None, ge=0, description="Step before.")
    to_step: int | None = Field(default=None, ge=0, description="Step after.")
    weights: dict[str, Percent] = Field(
        default_factory=dict, max_length=_MAX_VARIANTS, description="Weights after."
    )
    reason: _Reason = Field(description="Why, in one CamelCase word.")
    message: _Text = Field(default="", description="Why, for humans.")
    numbers: dict[str, float] = Field(
        default_factory=dict, max_length=64, description="The numbers behind the decision, by name."
    )


class NotificationState(StatusModel):
    """What a notification sink has been told (written by the operator's notifier, not the policy)."""

    delivered_through: Timestamp | None = Field(
        default=None,
        description="Time of the last phase change (history entry) delivered or given up on; later "
        "ones are still to send.",
    )
    failures: int = Field(default=0, ge=0, description="Failed attempts at the next phase change to send.")
    last_error: _Text | None = Field(default=None, description="Why the last attempt failed.")


class ModelExperimentStatus(StatusModel):
    """The observed state of a ModelExperiment, written by the operator only."""

    # Fields the apiserver or kopf may add to the status are ignored, not errors.
    model_config = api_config(frozen=False, extra="ignore")

    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation the operator last acted on."
    )
    phase: Phase = Field(
        default=Phase.PENDING,
        description="Pending (accepted, not started), Shadowing (mirrored traffic only), Progressing "
        "(stepping real traffic), Paused, Promoted (a challenger has all the traffic), RolledBack (the "
        "champion has all the traffic again) or Failed (needs a human, e.g. an invalid spec).",
    )
    current_step: int | None = Field(
        default=None,
        ge=0,
        le=MAX_STEPS - 1,
        description="Index (from 0) of the current step in spec.rollout.steps; unset before the first step.",
    )
    weights: dict[str, Percent] = Field(
        default_factory=dict,
        max_length=_MAX_VARIANTS,
        description="Traffic share per variant, in %, as applied to the routes (sums to 100).",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=len(ConditionType),
        description="Ready, Progressing, Succeeded, RolledBack, InvalidSpec, SampleRatioMismatch, "
        "MetricsUnavailable and Stalled.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    analysis: AnalysisRecord | None = Field(default=None, description="The latest analysis, per variant.")
    history: list[HistoryEntry] = Field(
        default_factory=list,
        max_length=HISTORY_LIMIT,
        description=f"The last {HISTORY_LIMIT} transitions, oldest first.",
    )
    # --- the loop's memory -----------------------------------------------------------------------
    started_at: Timestamp | None = Field(
        default=None, description="When the experiment started (shadow or first step)."
    )
    shadow_started_at: Timestamp | None = Field(default=None, description="When the shadow phase started.")
    counted_since: Timestamp | None = Field(
        default=None,
        description="Start of the counts in totals (startedAt until the shadow phase passes, then the "
        "end of the shadow phase).",
    )
    step_started_at: Timestamp | None = Field(
        default=None, description="When the current step's weights were applied."
    )
    finished_at: Timestamp | None = Field(default=None, description="When a terminal phase was reached.")
    consecutive_errors: int = Field(default=0, ge=0, description="Ticks in a row without usable metrics.")
    data_outage_since: Timestamp | None = Field(
        default=None, description="Start of the current stretch without usable metrics."
    )
    checkpoints: dict[str, Timestamp] = Field(
        default_factory=dict,
        max_length=_MAX_METRICS + 1,
        description="Per metric: the time up to which its counter increments have been counted.",
    )
    totals: CountersByVariant = Field(
        default_factory=dict,
        max_length=_MAX_VARIANTS,
        description="Counts per variant and metric since countedSince (the guardrails and the shadow "
        "divergence use them).",
    )
    strata: list[Stratum] = Field(
        default_factory=list,
        max_length=STRATA_LIMIT,
        description="Per-step weights and counts, oldest first.",
    )
    sequential: dict[str, dict[str, SequentialState]] = Field(
        default_factory=dict,
        max_length=_MAX_VARIANTS,
        description="Sequential test state per challenger, then per metric or guardrail name.",
    )
    breakdowns: dict[str, dict[str, dict[str, MetricCounters]]] = Field(
        default_factory=dict,
        max_length=_MAX_METRICS,
        description="Counts since countedSince split by a label, per metric, then label value, then "
        "variant: the segments (spec.metrics.segments) and the bucket edges (le) of quantile guardrails.",
    )
    segment_state: dict[str, dict[str, dict[str, SequentialState]]] = Field(
        default_factory=dict,
        max_length=_MAX_VARIANTS,
        description="The protected segments' harm tests per challenger, metric and segment value.",
    )
    quantiles: dict[str, dict[str, QuantileState]] = Field(
        default_factory=dict,
        max_length=_MAX_VARIANTS,
        description="Quantile guardrails' memory per challenger and guardrail.",
    )
    srm: SRMState = Field(default_factory=SRMState, description="The sample ratio test's memory.")
    novelty: NoveltyState | None = Field(
        default=None, description="The novelty check's memory (spec.analysis.novelty.enabled)."
    )
    dropped_challengers: list[DroppedChallenger] = Field(
        default_factory=list, max_length=MAX_CHALLENGERS, description="Challengers taken out, in order."
    )
    applied_controls: AppliedControls | None = Field(
        default=None, description="Manual-control annotation values already acted on."
    )
    pause: PauseRecord | None = Field(
        default=None, description="While phase is Paused: where it came from and why."
    )
    plans: dict[str, PlannedSample] = Field(
        default_factory=dict,
        max_length=1 + MAX_SECONDARY_METRICS,
        description="Planned samples per variant of the primary and decisive secondary metrics, by "
        "metric name; frozen once computed from the champion's observed value.",
    )
    last_tick_at: Timestamp | None = Field(
        default=None,
        description="Time of the last tick the analysis counted; a tick at the same time is a replay "
        "and counts nothing twice (errors, threshold failures).",
    )
    notifications: dict[str, NotificationState] = Field(
        default_factory=dict,
        max_length=MAX_NOTIFICATIONS,
        description="Per notification sink (spec.notifications[].name): what it has been told.",
    )
    initial_replicas: int | None = Field(
        default=None,
        ge=0,
        description="traffic.provider service: the champion's replicas when the experiment started.",
    )

    @field_validator("weights")
    @classmethod
    def _weights_sum_to_100(cls, weights: dict[str, int]) -> dict[str, int]:
        if weights and sum(weights.values()) != 100:
            raise ValueError(f"weights must sum to 100, got {sum(weights.values())}")
        return weights

    # --- helpers for the policy --------------------------------------------------------------------
    def condition(self, type_: ConditionType) -> Condition | None:
        """The condition of type ``type_``, if set."""
        return next((c for c in self.conditions if c.type is type_), None)

    def set_condition(
        self,
        type_: ConditionType,
        status: ConditionStatus,
        reason: str,
        message: str,
        *,
        now: datetime,
        generation: int | None = None,
    ) -> Condition:
        """Set a condition in place; ``lastTransitionTime`` changes only when the status does.

        Returns
        -------
        Condition
            The condition as stored.
        """
        previous = self.condition(type_)
        changed_at = (
            now if previous is None or previous.status is not status else previous.last_transition_time
        )
        new = Condition(
            type=type_,
            status=status,
            reason=reason,
            message=message,
            last_transition_time=changed_at,
            observed_generation=generation,
        )
        self.conditions = [c for c in self.conditions if c.type is not type_] + [new]
        self.conditions.sort(key=lambda c: list(ConditionType).index(c.type))
        return new

    def record(self, entry: HistoryEntry) -> None:
        """Append ``entry`` to the history, dropping the oldest entries beyond :data:`HISTORY_LIMIT`."""
        self.history = [*self.history, entry][-HISTORY_LIMIT:]
