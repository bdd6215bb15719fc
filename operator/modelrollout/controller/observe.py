"""What one tick observes: the spec errors only the cluster can show, and the exact counts.

The reference checks (missing Services, routes, selectors that do not parse) run once per
generation while they pass. The counts are those of every metric of the live variants since each
metric's checkpoint (the raw samples of their counter series, :mod:`modelrollout.metrics.counting`;
the series' anchors are kept in kopf's memo, so a tick reads about one tick of samples). Nothing
here raises for missing data: a metric that cannot be read is :class:`Unknown` with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from modelrollout.api.observations import DIVERGENCE, MetricReading, Observations, SpecProblem, Unknown
from modelrollout.api.spec import ModelExperimentSpec
from modelrollout.api.status import ModelExperimentStatus, Phase
from modelrollout.controller.kube import Cluster
from modelrollout.controller.state import ObjectMemo
from modelrollout.errors import InvalidInputError
from modelrollout.metrics import MetricsProvider
from modelrollout.metrics.counters import CounterSet, build_counter_set
from modelrollout.routing import Router

ANNOTATION_PREFIX = "modelrollout.io/"
TERMINAL = frozenset({Phase.PROMOTED, Phase.ROLLED_BACK, Phase.FAILED})

#: A tick's metrics provider, or why it has none (its credentials): spec errors, or Unknown.
ProviderOrReason = MetricsProvider | list[SpecProblem] | Unknown


def observe(
    body: Mapping[str, Any],
    spec: ModelExperimentSpec,
    status: ModelExperimentStatus,
    state: ObjectMemo,
    *,
    router: Router,
    provider: ProviderOrReason,
    cluster: Cluster,
    now: datetime,
) -> Observations:
    """Everything the policy needs to know about this tick; never raises for missing data."""
    metadata = body.get("metadata") or {}
    namespace = metadata["namespace"]
    generation = metadata.get("generation")
    check = state.checked_generation != generation
    errors: list[SpecProblem] = []
    if check:
        errors += cluster.check_references(spec, namespace, router)
    metrics: dict[str, MetricReading] = {}
    if isinstance(provider, list):
        errors += provider
    elif isinstance(provider, Unknown):
        metrics = dict.fromkeys(metric_names(spec), provider)
    elif status.phase not in TERMINAL:
        counter_set = _counter_set(spec, status, namespace, errors, state=state, generation=generation)
        if counter_set is not None:
            metrics = _count(provider, counter_set, status, state, now, errors, check=check)
    if not errors:
        state.checked_generation = generation
    return Observations(
        at=now,
        metrics=metrics,
        spec_errors=tuple(errors),
        annotations=control_annotations(body),
        generation=generation,
    )


def _counter_set(
    spec: ModelExperimentSpec,
    status: ModelExperimentStatus,
    namespace: str,
    errors: list[SpecProblem],
    *,
    state: ObjectMemo | None = None,
    generation: int | None = None,
) -> CounterSet | None:
    """The counters of the live variants (mirrored traffic too while shadowing).

    Kept in ``state`` for the spec's generation: the set is frozen and a function of the spec, the
    namespace, the live variants and the shadow flag alone, and building it (its models check their
    rules) was a twentieth of a tick's CPU."""
    dropped = {d.name for d in status.dropped_challengers}
    live = [spec.champion.name] + [c.name for c in spec.challengers if c.name not in dropped]
    shadowing = status.phase in (Phase.PENDING, Phase.SHADOWING) or (
        status.phase is Phase.PAUSED
        and status.pause is not None
        and status.pause.from_phase is Phase.SHADOWING
    )
    key = (generation, namespace, tuple(live), shadowing)
    if state is not None and generation is not None and state.counter_set_key == key:
        cached: CounterSet = state.counter_set
        return cached
    try:
        built = build_counter_set(spec, namespace, variants=live, shadow=None if shadowing else False)
    except InvalidInputError as exc:
        errors.append(SpecProblem("spec.metrics", str(exc)))
        return None
    if state is not None:
        state.counter_set_key, state.counter_set = key, built
    return built


def _count(
    provider: MetricsProvider,
    counter_set: CounterSet,
    status: ModelExperimentStatus,
    state: ObjectMemo,
    now: datetime,
    errors: list[SpecProblem],
    *,
    check: bool,
) -> dict[str, MetricReading]:
    if check:
        checked = provider.check(counter_set)
        if isinstance(checked, list):
            errors += checked
    return dict(
        provider.observe(
            counter_set,
            now,
            checkpoints=status.checkpoints,
            counted_since=status.counted_since or status.started_at or now,
            memo=state.anchors,
        )
    )


def metric_names(spec: ModelExperimentSpec) -> list[str]:
    m = spec.metrics
    return [m.primary.name, *(x.name for x in m.secondary), *(g.name for g in m.guardrails), DIVERGENCE]


def control_annotations(body: Mapping[str, Any]) -> dict[str, str]:
    """The experiment's ``modelrollout.io/`` annotations (the manual controls)."""
    found = (body.get("metadata") or {}).get("annotations") or {}
    return {k: str(v) for k, v in found.items() if k.startswith(ANNOTATION_PREFIX)}
