"""The operator's own metrics, served on ``/metrics`` (``modelrollout run --metrics-port``).

Every series is named ``modelrollout_*`` and comes from one custom :class:`Collector` that renders,
on each scrape, what :class:`OperatorMetrics` holds in memory:

* the fleet: experiments by phase, decisions by rule, rollbacks by reason, the tick duration,
  ticks that started behind schedule, and failed Prometheus queries by reason. The counters of a
  closed set of label values (the policy's :class:`~modelrollout.policy.decision.Rule`, the words of
  :data:`~modelrollout.metrics.prometheus.QUERY_ERROR_REASONS`) exist from the start at 0, so that
  ``increase()`` sees their first increment;
* each experiment's latest figures, kept in a table that every tick replaces from the status it
  has just written (:meth:`OperatorMetrics.record`): phase, step, weights, samples and planned
  samples, each challenger's lift with its always-valid interval and p-value, the guardrails, and
  the holds with the time each began. A finished experiment keeps its final figures; its series
  go when it is deleted (:meth:`OperatorMetrics.forget`, from the delete handler), at the next
  scrape.

Labels are bounded: besides ``namespace`` and ``experiment``, a series has at most ``variant`` and
``metric`` (names from the spec, bounded by the API's limits) or one closed enum (``phase``,
``rule``, ``reason``), never free text. The table keeps at most ``max_experiments`` experiments
(the least recently updated beyond that is dropped; far above what one operator serves).

The ``process_*`` and ``python_*`` series of prometheus-client's standard collectors are served
too. Nothing global is touched: the collectors live in the instance's own registry.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from modelrollout import __version__
from modelrollout.api.spec import MdeType, ModelExperimentSpec
from modelrollout.api.status import (
    ConditionStatus,
    ConditionType,
    MetricResult,
    ModelExperimentStatus,
    Phase,
)
from modelrollout.errors import InvalidInputError
from modelrollout.metrics.prometheus import QUERY_ERROR_REASONS
from modelrollout.policy.decision import Rule

PREFIX: Final = "modelrollout"
#: Why a due tick did not run at once (``modelrollout_ticks_deferred_total{reason}``).
DEFER_REASONS = ("stale", "busy")
#: Why an experiment is held (the ``reason`` of its hold series): paused, or a hold condition.
HOLD_REASONS: Final = (
    "Paused",
    ConditionType.INVALID_SPEC.value,
    ConditionType.SAMPLE_RATIO_MISMATCH.value,
    ConditionType.METRICS_UNAVAILABLE.value,
)
_HOLD_CONDITIONS: Final = tuple(ConditionType(r) for r in HOLD_REASONS[1:])
#: The tick duration histogram's upper bounds, in seconds.
TICK_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: The rules that can end in RolledBack: their rollback counters exist from the start.
ROLLBACK_RULES: Final = (
    Rule.MANUAL_ABORT,
    Rule.DATA_OUTAGE_ROLLBACK,
    Rule.GUARDRAIL_BREACH,
    Rule.SEGMENT_HARM,
    Rule.PRIMARY_WORSE,
    Rule.DECISIVE_METRIC_WORSE,
    Rule.SHADOW_FAILED,
    Rule.INCONCLUSIVE,
)
#: The most experiments whose figures are kept.
DEFAULT_MAX_EXPERIMENTS: Final = 10_000


@dataclass(frozen=True)
class Family:
    """One gauge family of an experiment's figures: its name (without the prefix), its help, and
    the labels that follow ``namespace`` and ``experiment``."""

    name: str
    documentation: str
    labels: tuple[str, ...] = ()


#: Every per-experiment gauge, in the order they are served.
FAMILIES: Final = (
    Family("experiment_phase", "1 for the experiment's phase, 0 for the other phases.", ("phase",)),
    Family("experiment_step", "Index (from 0) of the current step in spec.rollout.steps."),
    Family("experiment_weight_ratio", "Share of the traffic routed to the variant (0 to 1).", ("variant",)),
    Family(
        "experiment_samples",
        "Samples (trials, observations or units) of the metric counted for the variant so far.",
        ("variant", "metric"),
    ),
    Family(
        "experiment_planned_samples",
        "Planned samples per variant of an outcome metric (frozen once computed).",
        ("metric",),
    ),
    Family(
        "experiment_lift",
        "A challenger's effect on the metric against the champion, on the metric's mdeType scale "
        "(relative: 0.05 is +5 %; absolute: in the metric's units).",
        ("variant", "metric"),
    ),
    Family(
        "experiment_lift_lower",
        "Lower end of the effect's always-valid confidence interval (same scale as the lift).",
        ("variant", "metric"),
    ),
    Family(
        "experiment_lift_upper",
        "Upper end of the effect's always-valid confidence interval (same scale as the lift).",
        ("variant", "metric"),
    ),
    Family(
        "experiment_p_value",
        "A challenger's p-value on the metric (always-valid for the sequential method, corrected "
        "for multiple testing).",
        ("variant", "metric"),
    ),
    Family(
        "experiment_guardrail_difference",
        "How much worse a challenger is than the champion on the guardrail (positive: worse), in "
        "the guardrail's units.",
        ("variant", "metric"),
    ),
    Family(
        "experiment_guardrail_limit",
        "The guardrail's margin or threshold, in the units of its difference.",
        ("variant", "metric"),
    ),
    Family(
        "experiment_guardrail_p_value",
        "Always-valid p-value of a breach of the guardrail.",
        ("variant", "metric"),
    ),
    Family(
        "experiment_guardrail_breached",
        "1 when the guardrail is breached for the challenger.",
        ("variant", "metric"),
    ),
    Family(
        "experiment_hold_started_timestamp_seconds",
        "While the experiment is held (Paused, or InvalidSpec, SampleRatioMismatch or "
        "MetricsUnavailable true): when that hold began, in seconds since the epoch.",
        ("reason",),
    ),
    Family(
        "experiment_started_timestamp_seconds", "When the experiment started, in seconds since the epoch."
    ),
    Family(
        "experiment_finished_timestamp_seconds",
        "When the experiment reached Promoted, RolledBack or Failed, in seconds since the epoch.",
    ),
)

#: One experiment's figures: family name -> [(label values after namespace and experiment, value)].
Figures = dict[str, list[tuple[tuple[str, ...], float]]]


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _metric_scales(spec: ModelExperimentSpec) -> dict[str, MdeType]:
    """The outcome metrics by name, with the scale of their intervals."""
    scales = {spec.metrics.primary.name: spec.metrics.primary.mde_type}
    scales.update({m.name: m.mde_type for m in spec.metrics.secondary})
    return scales


def _outcome(out: Figures, variant: str, metric: str, result: MetricResult, scale: MdeType | None) -> None:
    labels = (variant, metric)
    if result.n is not None:
        out["experiment_samples"].append((labels, result.n))
    lift = result.difference if scale is MdeType.ABSOLUTE else result.relative_lift
    if lift is not None:
        out["experiment_lift"].append((labels, lift))
    if result.ci is not None:
        out["experiment_lift_lower"].append((labels, result.ci.low))
        out["experiment_lift_upper"].append((labels, result.ci.high))
    if result.p_value is not None:
        out["experiment_p_value"].append((labels, result.p_value))


def _holds(status: ModelExperimentStatus) -> Iterator[tuple[str, float]]:
    if status.phase.terminal:
        return
    if status.phase is Phase.PAUSED and status.pause is not None:
        yield "Paused", status.pause.since.timestamp()
    for type_ in _HOLD_CONDITIONS:
        condition = status.condition(type_)
        if condition is not None and condition.status is ConditionStatus.TRUE:
            yield type_.value, condition.last_transition_time.timestamp()


def figures_of(spec: ModelExperimentSpec, status: ModelExperimentStatus) -> Figures:
    """The figures of one experiment, from its spec and the status a tick wrote."""
    out: Figures = {f.name: [] for f in FAMILIES}
    out["experiment_phase"] = [((p.value,), 1.0 if status.phase is p else 0.0) for p in Phase]
    if status.current_step is not None:
        out["experiment_step"].append(((), float(status.current_step)))
    out["experiment_weight_ratio"] = [((v,), w / 100) for v, w in status.weights.items()]
    scales = _metric_scales(spec)
    primary = spec.metrics.primary.name
    variants = status.analysis.variants if status.analysis is not None else {}
    for variant, analysis in variants.items():
        if analysis.primary is not None:
            _outcome(out, variant, primary, analysis.primary, scales.get(primary))
        else:
            out["experiment_samples"].append(((variant, primary), analysis.n))
        for name, result in analysis.secondary.items():
            _outcome(out, variant, name, result, scales.get(name))
        for name, guardrail in analysis.guardrails.items():
            labels = (variant, name)
            if guardrail.difference is not None:
                out["experiment_guardrail_difference"].append((labels, guardrail.difference))
            if guardrail.limit is not None:
                out["experiment_guardrail_limit"].append((labels, guardrail.limit))
            if guardrail.p_value is not None:
                out["experiment_guardrail_p_value"].append((labels, guardrail.p_value))
            out["experiment_guardrail_breached"].append((labels, 1.0 if guardrail.breached else 0.0))
    out["experiment_planned_samples"] = [((name,), float(plan.n)) for name, plan in status.plans.items()]
    out["experiment_hold_started_timestamp_seconds"] = [((r,), at) for r, at in _holds(status)]
    for family, at in (
        ("experiment_started_timestamp_seconds", _ts(status.started_at)),
        ("experiment_finished_timestamp_seconds", _ts(status.finished_at)),
    ):
        if at is not None:
            out[family].append(((), at))
    return out


class _Histogram:
    """A histogram without labels (cumulative buckets and a sum), for one collector's output."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        index = next((i for i, b in enumerate(self.bounds) if value <= b), len(self.bounds))
        self.counts[index] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip((*map(repr, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, float(running)))
        return out


class OperatorMetrics(Collector):
    """The operator's metrics (see the module docstring): thread-safe, served by :meth:`serve`.

    Ticks run in kopf's worker threads and scrapes in the HTTP server's: every update and every
    scrape takes one lock, and a scrape copies what it renders.
    """

    def __init__(
        self, *, max_experiments: int = DEFAULT_MAX_EXPERIMENTS, standard_collectors: bool = True
    ) -> None:
        if max_experiments < 1:
            raise InvalidInputError(f"max_experiments must be at least 1, not {max_experiments!r}")
        self.max_experiments = max_experiments
        self._lock = threading.Lock()
        self._experiments: OrderedDict[tuple[str, str], Figures] = OrderedDict()
        self._decisions: dict[str, float] = {r.value: 0.0 for r in Rule}
        self._rollbacks: dict[str, float] = {r.value: 0.0 for r in ROLLBACK_RULES}
        self._query_errors: dict[str, float] = dict.fromkeys(QUERY_ERROR_REASONS, 0.0)
        self._behind = 0.0
        self._deferred: dict[str, float] = {}
        self._ticks = _Histogram(TICK_BUCKETS)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.registry = CollectorRegistry()
        self.registry.register(self)
        if standard_collectors:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)

    # --- what the operator tells -------------------------------------------------------------------
    def record(
        self,
        namespace: str,
        name: str,
        spec: ModelExperimentSpec,
        status: ModelExperimentStatus,
        *,
        rule: Rule,
        previous_phase: Phase | None,
    ) -> None:
        """One tick's outcome: count its decision (and its rollback, if it rolled back), and keep
        the experiment's figures from the status it wrote."""
        figures = figures_of(spec, status)
        with self._lock:
            self._decisions[rule.value] = self._decisions.get(rule.value, 0.0) + 1
            if status.phase is Phase.ROLLED_BACK and previous_phase is not Phase.ROLLED_BACK:
                self._rollbacks[rule.value] = self._rollbacks.get(rule.value, 0.0) + 1
            key = (namespace, name)
            self._experiments[key] = figures
            self._experiments.move_to_end(key)
            while len(self._experiments) > self.max_experiments:
                self._experiments.popitem(last=False)

    def forget(self, namespace: str, name: str) -> None:
        """Drop the experiment's figures (it is deleted): its series are gone from the next scrape."""
        with self._lock:
            self._experiments.pop((namespace, name), None)

    def observe_tick(self, seconds: float, *, behind_schedule: bool = False) -> None:
        """A tick that took ``seconds``; ``behind_schedule``: it started later than its interval
        and the slack after the previous one."""
        with self._lock:
            self._ticks.observe(max(0.0, seconds))
            if behind_schedule:
                self._behind += 1

    def tick_deferred(self, reason: str) -> None:
        """A due tick that did not run at once, for ``reason`` (``stale``: the watch's copy was
        older than the status this process wrote, so the object was read again; ``busy``: a tick
        of the same experiment was in flight)."""
        with self._lock:
            word = reason if reason in DEFER_REASONS else "busy"
            self._deferred[word] = self._deferred.get(word, 0.0) + 1

    def query_error(self, reason: str) -> None:
        """A Prometheus request that failed, for ``reason`` (a word of ``QUERY_ERROR_REASONS``)."""
        word = reason if reason in self._query_errors else "other"
        with self._lock:
            self._query_errors[word] += 1

    def experiments(self) -> list[tuple[str, str]]:
        """The (namespace, name) of every experiment whose figures are kept."""
        with self._lock:
            return list(self._experiments)

    # --- the collector -----------------------------------------------------------------------------
    def collect(self) -> Iterable[Metric]:
        with self._lock:
            # (a table entry is replaced whole, never edited: a shallow copy is a snapshot)
            experiments = list(self._experiments.items())
            decisions = dict(self._decisions)
            rollbacks = dict(self._rollbacks)
            errors = dict(self._query_errors)
            behind = self._behind
            deferred = dict(self._deferred)
            buckets, tick_sum = self._ticks.buckets(), self._ticks.total
        yield from _fleet(experiments, decisions, rollbacks, errors)
        ticks = CounterMetricFamily(
            f"{PREFIX}_ticks_behind_schedule",
            "Ticks that started later than the experiment's interval plus the slack after its previous tick.",
            value=behind,
        )
        yield ticks
        deferred_family = CounterMetricFamily(
            f"{PREFIX}_ticks_deferred",
            "Due ticks that did not run at once, by reason (stale: the watch lagged behind this "
            "process's own status write and the object was read again; busy: a tick was in flight).",
            labels=["reason"],
        )
        for reason in DEFER_REASONS:
            deferred_family.add_metric([reason], deferred.get(reason, 0.0))
        yield deferred_family
        yield HistogramMetricFamily(
            f"{PREFIX}_tick_duration_seconds",
            "Duration of one experiment's tick: observe, decide, apply the routes, write the status.",
            buckets=buckets,
            sum_value=tick_sum,
        )
        yield from _per_experiment(experiments)

    # --- serving -----------------------------------------------------------------------------------
    def serve(self, port: int, address: str = "0.0.0.0") -> int:
        """Serve ``/metrics`` on ``address:port`` in a daemon thread (port 0: any free port);
        returns the port. Raises :class:`InvalidInputError` when the address cannot be bound."""
        try:
            server, thread = start_http_server(port, addr=address, registry=self.registry)
        except OSError as exc:
            raise InvalidInputError(
                f"--metrics-port {port}: cannot serve /metrics on {address}:{port} ({exc.strerror or exc})"
            ) from None
        self._server, self._thread = server, thread
        return int(server.server_port)

    def close(self) -> None:
        """Stop serving (if :meth:`serve` was called)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def _fleet(
    experiments: Sequence[tuple[tuple[str, str], Figures]],
    decisions: Mapping[str, float],
    rollbacks: Mapping[str, float],
    errors: Mapping[str, float],
) -> Iterator[Metric]:
    by_phase = GaugeMetricFamily(
        f"{PREFIX}_experiments", "Experiments this operator serves, by phase.", labels=["phase"]
    )
    counts = dict.fromkeys((p.value for p in Phase), 0)
    for _, figures in experiments:
        for (phase,), value in figures["experiment_phase"]:
            counts[phase] += int(value)
    for phase, count in counts.items():
        by_phase.add_metric([phase], count)
    yield by_phase
    for name, documentation, label, values in (
        ("decisions", "Ticks decided, by the rule that fired (the policy's Rule).", "rule", decisions),
        ("rollbacks", "Experiments rolled back, by the rule that rolled them back.", "reason", rollbacks),
        (
            "prometheus_query_errors",
            "Prometheus requests that got no usable answer, by reason.",
            "reason",
            errors,
        ),
    ):
        family = CounterMetricFamily(f"{PREFIX}_{name}", documentation, labels=[label])
        for word, total in sorted(values.items()):
            family.add_metric([word], total)
        yield family
    info = GaugeMetricFamily(f"{PREFIX}_build_info", "The operator's version (always 1).", labels=["version"])
    info.add_metric([__version__], 1)
    yield info


def _per_experiment(experiments: Sequence[tuple[tuple[str, str], Figures]]) -> Iterator[Metric]:
    for family in FAMILIES:
        names = ["namespace", "experiment", *family.labels]
        gauge = GaugeMetricFamily(f"{PREFIX}_{family.name}", family.documentation, labels=names)
        for (namespace, name), figures in experiments:
            for values, value in figures[family.name]:
                gauge.add_metric([namespace, name, *values], value)
        yield gauge


def scrape_text(metrics: OperatorMetrics) -> str:
    """What ``/metrics`` serves now, as text (for tests and debugging)."""
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry).decode()


def samples(metrics: OperatorMetrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples named ``name`` that the registry serves now: sorted label pairs -> value."""
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


__all__ = [
    "FAMILIES",
    "HOLD_REASONS",
    "ROLLBACK_RULES",
    "TICK_BUCKETS",
    "Figures",
    "OperatorMetrics",
    "figures_of",
    "samples",
    "scrape_text",
]
