"""One tick of the control loop: observe → decide → apply routes → write status → emit Events.

Order matters and is the design's promise that a restart neither repeats nor skips a step:

1. **observe** (:mod:`~modelrollout.controller.observe`): the spec errors only the cluster can
   show, then the exact counts of every metric since its checkpoint;
2. **decide**: :func:`modelrollout.policy.decide`, pure;
3. **apply routes** *before* the status records the step: the routes are re-derived from the
   decided status every tick, so an outside write (a GitOps sync, a person) is healed within one
   tick and reported with an Event;
4. **write the status** with the ``resourceVersion`` that was read (409 → :class:`kopf.TemporaryError`
   and a fresh tick; nothing half-written);
5. **emit** the decision's Events, after the status is stored, then tell the notification sinks;
6. **record** the decision and the figures of the status in the operator's own metrics
   (:mod:`~modelrollout.controller.telemetry`).

If the operator dies between 3 and 4, the next tick starts from the old status: the routes are set
back to it (an Event says so) and the policy takes the step again, recorded once.

With leader election every write of 3, 4 and 5 (routes, status, Events, notifications) first asks the
guard ``can_write`` (:mod:`~modelrollout.controller.leader`): a tick that was in flight when its
process lost the Lease raises :class:`~modelrollout.errors.FencedError` at its next write instead.

:func:`run_tick` takes its router, its metrics provider and its :class:`Cluster` as arguments,
typed against their protocols, so its ordering is unit-tested with fakes; :func:`tick` is the
handlers' entry, which gets them from the :class:`~modelrollout.controller.runtime.Runtime`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from modelrollout.api.experiment import GROUP, PLURAL, VERSION
from modelrollout.api.spec import ModelExperimentSpec
from modelrollout.api.status import ModelExperimentStatus
from modelrollout.api.types import parse_duration
from modelrollout.controller.invalid_spec import report_unparsable_spec
from modelrollout.controller.kube import (
    Cluster,
    StatusConflictError,
    target_error_to_spec_error,
    with_removed_keys,
)
from modelrollout.controller.notify import notify
from modelrollout.controller.observe import ProviderOrReason, observe
from modelrollout.controller.runtime import Runtime
from modelrollout.controller.state import ObjectMemo, is_stale, object_memo
from modelrollout.controller.telemetry import OperatorMetrics
from modelrollout.policy import decide, record_achieved
from modelrollout.policy.decision import Decision
from modelrollout.routing import CanWrite, ConflictError, Mirror, Router, RouteState, TargetError


def _now() -> datetime:
    return datetime.now(UTC)


#: Seconds until a tick whose spec does not parse is tried again (an edit of the spec ticks at once).
INVALID_SPEC_RETRY_SECONDS = 30.0


def tick(runtime: Runtime, body: kopf.Body, memo: kopf.Memo, logger: Any, *, force: bool) -> float:
    """Run one tick for the experiment in ``body`` if it is due (or ``force``).

    Returns the seconds until the experiment is due again: its interval from this tick's start,
    what is left of it when the tick was not due, or the retry period (``timer_seconds``) when the
    tick could not run (one in flight, or a body older than the status this process wrote). A tick
    that fails leaves the experiment due, so that the retry acts.
    """
    state = object_memo(memo)
    retry = runtime.config.timer_seconds
    if not state.lock.acquire(blocking=force):
        runtime.telemetry.tick_deferred("busy")
        return retry  # a tick is already running for this experiment
    try:
        now = _now()
        try:
            spec = _spec_of(body, state)
        except ValidationError as exc:
            report_unparsable_spec(body, exc, now, runtime.cluster)
            return INVALID_SPEC_RETRY_SECONDS
        interval = parse_duration(spec.rollout.interval)
        if not force and not _due(state, spec, now):
            return _seconds_until_due(state, interval, now)
        if is_stale(body, state):
            state.stale_bodies += 1
            runtime.telemetry.tick_deferred("stale")
            fresh = _read_again(runtime, body)
            if fresh is None or is_stale(fresh, state):
                return retry  # the apiserver's copy is not newer either: act on it next time
            body = fresh
        behind = _behind_schedule(runtime, state, spec, now)
        previous, state.last_tick = state.last_tick, now
        namespace = (body.get("metadata") or {})["namespace"]
        started = time.monotonic()
        try:
            run_tick(
                body,
                spec,
                state,
                now,
                logger,
                router=runtime.router(spec),
                provider=runtime.provider(spec, namespace),
                cluster=runtime.cluster,
                telemetry=runtime.telemetry,
                can_write=runtime.can_write,
            )
        except BaseException:
            state.last_tick = previous  # nothing was stored: the retry must find the tick due
            raise
        finally:
            runtime.telemetry.observe_tick(time.monotonic() - started, behind_schedule=behind)
        return _seconds_until_due(state, interval, _now())
    finally:
        state.lock.release()


def _spec_of(body: Mapping[str, Any], state: ObjectMemo) -> ModelExperimentSpec:
    """The parsed spec, kept for its ``metadata.generation`` (the apiserver bumps it at every
    change of the spec; the models are frozen): parsing it checks every rule, a twentieth of a
    tick's CPU (``bench/operator_scale.py``)."""
    generation = (body.get("metadata") or {}).get("generation")
    if generation is not None and generation == state.spec_generation and state.spec is not None:
        cached: ModelExperimentSpec = state.spec
        return cached
    spec = ModelExperimentSpec.model_validate(body.get("spec") or {})
    state.spec_generation, state.spec = generation, spec
    return spec


def _read_again(runtime: Runtime, body: kopf.Body) -> kopf.Body | None:
    """The experiment as the apiserver has it now (``None`` when it is gone).

    The scheduler comes back to an experiment one interval after its last tick; a watch copy still
    older than that tick's status write means kopf's watch lags by an interval or more (a busy
    process: the event loop gets the GIL in turns with the tick threads). Waiting for it could
    hold the experiment for minutes (``bench/operator_scale.py``); one GET does not."""
    metadata = body.get("metadata") or {}
    try:
        raw: Any = runtime.clients.custom.get_namespaced_custom_object(
            GROUP, VERSION, metadata["namespace"], PLURAL, metadata["name"]
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return kopf.Body(raw)


def _seconds_until_due(state: ObjectMemo, interval: timedelta, now: datetime) -> float:
    if state.last_tick is None:
        return 0.0
    return max(0.0, (state.last_tick + interval - now).total_seconds())


def scheduled_tick(runtime: Runtime, body: kopf.Body, memo: kopf.Memo, logger: Any) -> float:
    """A tick the scheduler asked for (:mod:`~modelrollout.controller.schedule`): its failures are
    logged here, as kopf logs a handler's, and retried after the error's delay."""
    retry = runtime.config.timer_seconds
    if (body.get("metadata") or {}).get("deletionTimestamp"):
        return retry  # kopf's delete handler restores the routes; no more ticks
    try:
        return tick(runtime, body, memo, logger, force=False)
    except kopf.TemporaryError as exc:
        logger.warning(f"Tick failed temporarily: {exc}")
        return float(exc.delay) if exc.delay is not None else retry
    except Exception as exc:
        logger.exception(f"Tick failed: {exc}")
        return max(retry, 10.0)


def _behind_schedule(runtime: Runtime, state: ObjectMemo, spec: ModelExperimentSpec, now: datetime) -> bool:
    """Whether this tick starts later than the interval, the timer's period and the slack after
    the previous tick of this process (the timer only fires every ``timer_seconds``)."""
    if state.last_tick is None:
        return False
    config = runtime.config
    slack = timedelta(seconds=config.timer_seconds + config.schedule_slack_seconds)
    return now - state.last_tick > parse_duration(spec.rollout.interval) + slack


def _due(state: ObjectMemo, spec: ModelExperimentSpec, now: datetime) -> bool:
    """Whether the experiment's ``rollout.interval`` has passed since its last tick here."""
    interval = parse_duration(spec.rollout.interval)
    return state.last_tick is None or now - state.last_tick >= interval - timedelta(milliseconds=100)


def run_tick(
    body: Mapping[str, Any],
    spec: ModelExperimentSpec,
    state: ObjectMemo,
    now: datetime,
    logger: Any,
    *,
    router: Router,
    provider: ProviderOrReason,
    cluster: Cluster,
    telemetry: OperatorMetrics | None = None,
    can_write: CanWrite | None = None,
) -> Decision:
    """Observe, decide, apply the routes, write the status, emit the Events, record the figures
    (see the module).

    ``can_write`` fences the notifications (the router and the cluster fence their own writes)."""
    metadata = body.get("metadata") or {}
    namespace, name = metadata["namespace"], metadata["name"]
    old_status_json = dict(body.get("status") or {})
    status = ModelExperimentStatus.model_validate(old_status_json)
    observations = observe(
        body, spec, status, state, router=router, provider=provider, cluster=cluster, now=now
    )
    decision = decide(spec, status, observations, now)
    if not observations.spec_errors:
        _apply_routes(body, spec, decision, state, now, router=router, cluster=cluster)
    new_status = decision.status.model_dump(by_alias=True, mode="json", exclude_none=True)
    try:
        cluster.patch_status(
            namespace, name, with_removed_keys(new_status, old_status_json), metadata.get("resourceVersion")
        )
    except StatusConflictError as exc:
        raise kopf.TemporaryError(str(exc), delay=1) from exc
    state.written_tick = decision.status.last_tick_at
    for event in decision.events:
        cluster.emit(body, event.type.value, event.reason, event.message)
    if spec.notifications:
        notify(body, spec, status, decision.status, cluster, can_write=can_write)
    if telemetry is not None and not metadata.get("deletionTimestamp"):
        previous = status.phase if old_status_json.get("phase") else None
        telemetry.record(namespace, name, spec, decision.status, rule=decision.rule, previous_phase=previous)
    logger.info(
        "tick",
        extra={
            "rule": decision.rule.value,
            "reason": decision.reason,
            "phase": decision.phase.value,
            "step": decision.step,
            "weights": dict(decision.routes.weights),
        },
    )
    return decision


def _apply_routes(
    body: Mapping[str, Any],
    spec: ModelExperimentSpec,
    decision: Decision,
    state: ObjectMemo,
    now: datetime,
    *,
    router: Router,
    cluster: Cluster,
) -> None:
    """Make the routes say what the decided status says; record the split they achieve."""
    namespace = (body.get("metadata") or {})["namespace"]
    try:
        target = cluster.traffic_target(spec, namespace)
        applied = router.apply(target, _route_state(decision))
    except ConflictError as exc:
        raise kopf.TemporaryError(f"routes kept changing under the operator: {exc}", delay=1) from exc
    except TargetError as exc:
        # The routed object changed since it was checked: re-check next tick, write nothing now.
        state.checked_generation = None
        error = target_error_to_spec_error(spec, exc)
        cluster.emit(body, "Warning", "InvalidSpec", f"{error.path}: {error.message}")
        raise kopf.TemporaryError(str(exc), delay=1) from exc
    for drift in applied.drift:
        cluster.emit(body, "Warning", "RouteDriftHealed", drift)
    achieved = dict(applied.achieved.weights)
    asked = record_achieved(decision.status, achieved, now)
    if asked is not None:
        cluster.emit(
            body,
            "Normal",
            "WeightsRounded",
            f"The traffic provider routes {achieved} for the step's {asked} (for example a replica ratio); "
            "the status and the sample ratio test use the achieved split.",
        )


def _route_state(decision: Decision) -> RouteState:
    mirrors = tuple(Mirror(variant=v, percent=float(p)) for v, p in decision.routes.mirrors.items() if p > 0)
    return RouteState(weights=dict(decision.routes.weights), mirrors=mirrors)


def forget(runtime: Runtime, body: Mapping[str, Any]) -> None:
    """Drop the experiment's series from the operator's metrics (it is being deleted)."""
    metadata = body.get("metadata") or {}
    runtime.telemetry.forget(metadata["namespace"], metadata["name"])


def finalize(runtime: Runtime, body: kopf.Body, logger: Any) -> None:
    """Restore the champion's routes before the experiment is deleted."""
    metadata = body.get("metadata") or {}
    try:
        spec = ModelExperimentSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        logger.warning("spec does not validate; nothing to restore")
        return
    router = runtime.router(spec)
    try:
        target = runtime.cluster.traffic_target(spec, metadata["namespace"])
        result = router.restore_champion(target)
    except TargetError as exc:
        logger.warning(f"routes not restored, their object is gone: {exc}")
        return
    except ConflictError as exc:
        raise kopf.TemporaryError(f"routes kept changing: {exc}", delay=1) from exc
    logger.info(f"champion routes restored (changed: {result.changed})")
