"""What one tick observes: the contract between the metrics provider and the policy.

The metrics provider (:mod:`modelrollout.metrics`) fills these from Prometheus; the policy
(:mod:`modelrollout.policy`) reads them and never does I/O. A reading that could not be taken (a
failed query, an empty result, a NaN, a timeout) is an explicit :class:`Unknown` carrying the
reason: never zeros, never an exception into the policy. *Unknown is neither a pass nor a
failure*: the policy holds on it, and only a long outage leads to the fail-safe rollback.

Counts are **cumulative since the experiment started** (queries use a window that reaches back to
``status.startedAt``); the policy subtracts the per-step baselines it keeps in the status to get
each step's own counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from modelrollout.api.status import MetricCounters


@dataclass(frozen=True)
class Unknown:
    """A reading that could not be taken; ``reason`` says why, for the status and the Event."""

    reason: str


#: One metric for every variant (variant name -> aggregates), or Unknown for the whole metric.
MetricReading = Mapping[str, MetricCounters] | Unknown


@dataclass(frozen=True)
class ShadowCounts:
    """Shadow comparison counters of one challenger: predictions compared and those that differed."""

    compared: float
    differing: float


@dataclass(frozen=True)
class SpecError:
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
        names): the cumulative aggregates per variant, or :class:`Unknown`.
    shadow
        By challenger: the shadow comparison counters, or :class:`Unknown`; empty when there is no
        shadow phase.
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
    shadow: Mapping[str, ShadowCounts | Unknown] = field(default_factory=dict)
    spec_errors: tuple[SpecError, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    generation: int | None = None
