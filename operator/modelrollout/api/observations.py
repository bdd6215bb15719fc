"""What one tick observes: the contract between the metrics provider and the policy.

The metrics provider (:mod:`modelrollout.metrics`) fills these from Prometheus; the policy
(:mod:`modelrollout.policy`) reads them and never does I/O. A reading that could not be taken (a
failed query, an empty result, a NaN, a timeout) is an explicit :class:`Unknown` carrying the
reason: never zeros, never an exception into the policy. *Unknown is neither a pass nor a
failure*: the policy holds on it, and only a long outage leads to the fail-safe rollback.

Counts are **exact increments** of counter series (:mod:`modelrollout.metrics.counting`): each
:class:`Increment` is what one series counted between two of its samples, with the samples'
times, so the policy can put it in the stratum (a step, or part of one) whose span holds it. A
:class:`CounterReading` carries the increments observed since the checkpoint it continues from
(``since``, which the policy keeps per metric in ``status.checkpoints``), so a reading is counted
once: a replayed or stale reading does not match the checkpoint and adds nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

#: The name under which the shadow divergence is read: a proportion of the predictions that differ
#: (``successes``) out of those compared (``trials``), per challenger. Not a valid metric name, so
#: it cannot clash with one.
DIVERGENCE: Final = "shadow:divergence"


@dataclass(frozen=True)
class Unknown:
    """A reading that could not be taken; ``reason`` says why, for the status and the Event."""

    reason: str


@dataclass(frozen=True)
class Increment:
    """What one counter series counted between two consecutive samples (reset-corrected).

    ``start`` and ``end`` are the samples' times in seconds since the epoch; ``start`` is the time
    of the sample before (the anchor), or a lower bound of it for a series first seen after a gap.
    ``value`` is the increase, negative for a part that a field subtracts (the latency preset).
    ``target`` names the scrape target the series comes from (its ``job`` and ``instance``), the
    same at every tick: series of one target are sampled at the same instants. ``reset``: the
    sample is below the one before (a counter reset), so ``value`` is the count since the restart
    and what the series counted between its last sample and the restart is lost.
    """

    start: float
    end: float
    value: float
    target: str = ""
    reset: bool = False


@dataclass(frozen=True)
class VariantCounts:
    """The increments of one metric for one variant, by field, with what the sampling looked like.

    Attributes
    ----------
    fields
        By :class:`~modelrollout.api.status.MetricCounters` attribute: the increments observed.
    lag
        Seconds from the stalest series' last sample of the sample field (trials, count, units)
        to the reading's time: the counts may miss that much traffic at the end.
    spacing
        The largest spacing of consecutive samples seen in this reading (the scrape interval,
        longer when a scrape was missed).
    resets
        Counter resets seen in this reading (a series that went down).

    A stale target (one Prometheus has not scraped again) shows as ``lag``: its increments arrive
    with its next sample, which spans the gap exactly.
    """

    fields: Mapping[str, tuple[Increment, ...]]
    lag: float = 0.0
    spacing: float = 0.0
    resets: int = 0


#: Where the values of a split label beyond the kept ones are summed.
OTHER_VALUE: Final = "other"
#: The ``le`` of a histogram's bucket that counts every request (its total).
ALL_BUCKET: Final = "+Inf"


@dataclass(frozen=True)
class CounterReading:
    """One metric's increments for every variant since the checkpoint ``since``, up to ``until``.

    ``since`` is None when counting starts (the anchors are the last samples before
    ``status.countedSince``); ``until`` is the reading's time, the next checkpoint. ``breakdown``:
    for a metric split by a label (a segment label, or ``le`` of a histogram), the same increments
    by the label's value, then variant.
    """

    since: datetime | None
    until: datetime
    variants: Mapping[str, VariantCounts]
    breakdown: Mapping[str, Mapping[str, VariantCounts]] = field(default_factory=dict)


#: One metric for every variant, or Unknown for the whole metric.
MetricReading = CounterReading | Unknown


@dataclass(frozen=True)
class SpecProblem:
    """An error in the spec that only the operator can see (a missing Service, PromQL that does not
    parse); ``path`` is the field path (``spec.challengers[0].service``), ``message`` says the fix."""

    path: str
    message: str


@dataclass(frozen=True)
class Observations:
    """Everything one tick observed, taken at ``at``.

    Attributes
    ----------
    at
        When the readings were taken (timezone-aware).
    metrics
        By metric name (the primary, secondary metrics and guardrails share one namespace of
        names; the shadow divergence is ``shadow:divergence``, a proportion of differing out of
        compared predictions): the increments per variant, or :class:`Unknown`.
    spec_errors
        Errors in the spec found by the operator (existence of referenced objects, PromQL syntax);
        the policy moves no traffic while there is any.
    annotations
        The experiment's ``modelrollout.io/*`` annotations (manual controls), by full key.
    generation
        ``metadata.generation`` of the object observed.
    """

    at: datetime
    metrics: Mapping[str, MetricReading] = field(default_factory=dict)
    spec_errors: tuple[SpecProblem, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    generation: int | None = None
