"""One tick of the control loop: observe → decide → apply routes → write status → emit Events.

Order matters and is the design's promise that a restart neither repeats nor skips a step:

1. **observe**: the spec errors only the cluster can show (missing Services, routes, selectors
   that do not parse; checked once per generation while they pass), then the exact counts of
   every metric of the live variants since each metric's checkpoint (the raw samples of their
   counter series, :mod:`modelrollout.metrics.counting`; the series' anchors are kept in kopf's
   memo, so a tick reads about one tick of samples);
2. **decide**: :func:`modelrollout.policy.decide`, pure;
3. **apply routes** *before* the status records the step: the routes are re-derived from the
   decided status every tick, so an outside write (a GitOps sync, a person) is healed within one
   tick and reported with an Event;
4. **write the status** with the ``resourceVersion`` that was read (409 → :class:`kopf.TemporaryError`
   and a fresh tick; nothing half-written);
5. **emit** the decision's Events, after the status is stored.

If the operator dies between 3 and 4, the next tick starts from the old status: the routes are set
back to it (an Event says so) and the policy takes the step again, recorded once.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
from kubernetes import client, config
from pydantic import ValidationError

from modelrollout.api.spec import ModelExperimentSpec, Notification, Prometheus
from modelrollout.api.status import ConditionStatus, ConditionType, ModelExperimentStatus, Phase
from modelrollout.api.types import parse_duration
from modelrollout.errors import InvalidInputError
from modelrollout.kube import (
    StatusConflictError,
    check_references,
    patch_status,
    target_error_to_spec_error,
    traffic_target,
    with_removed_keys,
)
from modelrollout.metrics.counters import build_counter_set
from modelrollout.metrics.counting import AnchorMemo
from modelrollout.metrics.credentials import Credentials, read_credentials, read_key
from modelrollout.metrics.prometheus import PrometheusProvider
from modelrollout.notifications import ExperimentRef, deliver
from modelrollout.observations import DIVERGENCE, Observations, SpecError, Unknown
from modelrollout.policy import decide, record_achieved
from modelrollout.policy.decision import Decision
from modelrollout.routing import ConflictError, Mirror, Router, RouteState, TargetError, router_for

ANNOTATION_PREFIX = "modelrollout.io/"
FINALIZER = "modelrollout.io/finalizer"
TERMINAL = frozenset({Phase.PROMOTED, Phase.ROLLED_BACK, Phase.FAILED})


@dataclasses.dataclass
class Clients:
    """The kubernetes API clients the operator uses (one set per process)."""

    api: client.ApiClient
    core: client.CoreV1Api
    apps: client.AppsV1Api
    custom: client.CustomObjectsApi

    @classmethod
    def from_environment(cls) -> Clients:
        """In-cluster config when running in a pod, else the kubeconfig (``$KUBECONFIG``)."""
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config()  # type: ignore[no-untyped-call]
        api = client.ApiClient()
        return cls(api, client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api))


_clients: Clients | None = None
_clients_lock = threading.Lock()
_memo_lock = threading.Lock()


def clients() -> Clients:
    global _clients
    with _clients_lock:
        if _clients is None:
            _clients = Clients.from_environment()
        return _clients


#: Whether kopf lists and watches CRDs and namespaces (``modelrollout run --no-cluster-scan`` turns
#: it off, for a Role without those cluster-scope rights; the namespaces must then be named).
CLUSTER_SCAN = True


def configure_operator(settings: kopf.OperatorSettings) -> None:
    """kopf settings: no peering, our finalizer name, Events from INFO up, enough workers."""
    settings.peering.standalone = True
    settings.scanning.disabled = not CLUSTER_SCAN
    settings.persistence.finalizer = FINALIZER
    settings.posting.level = 20  # logging.INFO
    settings.execution.max_workers = MAX_WORKERS
    settings.watching.server_timeout = 300
    clients()


@dataclasses.dataclass
class _ObjectMemo:
    """Per-experiment memory kept in kopf's memo: it only saves work and is rebuilt after a restart."""

    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    last_tick: datetime | None = None
    checked_generation: int | None = None
    anchors: AnchorMemo = dataclasses.field(default_factory=AnchorMemo)
    #: ``status.lastTickAt`` of the last status this process stored: a body whose status is older is
    #: a stale copy from kopf's watch, which lags behind our own writes under load.
    written_tick: datetime | None = None
    stale_bodies: int = 0


def _object_memo(memo: kopf.Memo) -> _ObjectMemo:
    with _memo_lock:
        found = memo.get("modelrollout")
        if not isinstance(found, _ObjectMemo):
            found = _ObjectMemo()
            memo["modelrollout"] = found
        return found


def _now() -> datetime:
    return datetime.now(UTC)


def tick(body: kopf.Body, memo: kopf.Memo, logger: Any, *, force: bool) -> None:
    """Run one tick for the experiment in ``body`` if it is due (or ``force``)."""
    state = _object_memo(memo)
    if not state.lock.acquire(blocking=force):
        return  # a tick is already running for this experiment; the timer will come back
    try:
        now = _now()
        try:
            spec = ModelExperimentSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            report_unparsable_spec(body, exc, now)
            return
        interval = parse_duration(spec.rollout.interval)
        if not force and state.last_tick is not None and now - state.last_tick < interval - timedelta(
            milliseconds=100
        ):
            return
        if is_stale(body, state):
            state.stale_bodies += 1
            return  # the watch has not caught up with the status we wrote: act on it next time
        state.last_tick = now
        run_tick(body, spec, state, now, logger)
    finally:
        state.lock.release()


def _last_tick_of(body: Mapping[str, Any]) -> datetime | None:
    raw = (body.get("status") or {}).get("lastTickAt")
    if not isinstance(raw, str):
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None


def is_stale(body: Mapping[str, Any], state: _ObjectMemo) -> bool:
    """Whether ``body`` holds an older status than the last one this process stored.

    kopf hands each timer call the object as its watch last saw it. Under load the watch lags
    behind the operator's own status writes, and a tick on such a stale copy would decide from an
    old step and apply its routes *before* its status write fails on the ``resourceVersion``
    (routes are applied first, so that a restart never skips a step): the traffic went back to the
    previous step's split for a tick. The measurement bench saw it on 1,603 ticks of one run; it
    put old-weight traffic into new steps, which the sample ratio test rightly found. Such a tick
    is skipped instead; the next one, on the current object, acts.
    """
    if state.written_tick is None:
        return False
    seen = _last_tick_of(body)
    return seen is None or seen < state.written_tick


def validation_messages(exc: ValidationError) -> str:
    """Each error of ``exc`` as ``spec.<field path>: <message>``, joined by ``; ``.

    A rule of the CRD's CEL checked by the models reports on the object that holds it, with the
    field in its message (``.steps: ...``); that field joins the path.
    """
    parts: list[str] = []
    for error in exc.errors():
        path = "spec" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(path + message if message.startswith(".") else f"{path}: {message}")
    return "; ".join(parts)


def unparsable_spec_status(
    old: Mapping[str, Any], message: str, generation: int | None, now: datetime
) -> ModelExperimentStatus | None:
    """The status of an experiment whose spec the models reject, or None when it already says so.

    InvalidSpec, Ready=False and Stalled carry the errors, with ``observedGeneration``, so that
    ``kubectl get``, Argo CD and Flux show why nothing happens; phase, steps and history are kept.
    """
    try:
        status = ModelExperimentStatus.model_validate(dict(old))
    except ValidationError:
        status = ModelExperimentStatus()
    current = status.condition(ConditionType.INVALID_SPEC)
    if (
        current is not None
        and current.status is ConditionStatus.TRUE
        and current.message == message
        and status.observed_generation == generation
    ):
        return None
    status.observed_generation = generation
    for type_, value in (
        (ConditionType.INVALID_SPEC, ConditionStatus.TRUE),
        (ConditionType.READY, ConditionStatus.FALSE),
        (ConditionType.STALLED, ConditionStatus.TRUE),
    ):
        status.set_condition(type_, value, "InvalidSpec", message, now=now, generation=generation)
    return status


def report_unparsable_spec(body: kopf.Body, exc: ValidationError, now: datetime) -> None:
    """A spec that passed the CRD's schema but not the models (an older CRD than the operator):
    the status and one Warning Event say which fields and why; no tick runs, so traffic stays."""
    metadata = body.get("metadata") or {}
    old = dict(body.get("status") or {})
    message = validation_messages(exc)
    status = unparsable_spec_status(old, message, metadata.get("generation"), now)
    if status is None:
        return  # already reported for this generation
    new = status.model_dump(by_alias=True, mode="json", exclude_none=True)
    try:
        patch_status(clients().custom, metadata["namespace"], metadata["name"], with_removed_keys(new, old),
                     metadata.get("resourceVersion"))
    except StatusConflictError as exc409:
        raise kopf.TemporaryError(str(exc409), delay=1) from exc409
    kopf.warn(body, reason="InvalidSpec", message=f"the spec does not validate: {message}")


def _annotations(body: Mapping[str, Any]) -> dict[str, str]:
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    return {k: str(v) for k, v in annotations.items() if k.startswith(ANNOTATION_PREFIX)}


#: The workers that run ticks (kopf's thread pool for sync handlers), and so the most queries one
#: Prometheus can get from this operator at once.
MAX_WORKERS = 32
#: Distinct Prometheus configurations (address, timeout, credentials) whose providers are kept.
MAX_PROVIDERS = 64
_providers: OrderedDict[tuple[Any, ...], PrometheusProvider] = OrderedDict()
_providers_lock = threading.Lock()


def shared_provider(prometheus: Prometheus, credentials: Credentials) -> PrometheusProvider:
    """The provider of this Prometheus configuration, shared by every experiment that uses it.

    One per experiment kept one open connection per experiment: Prometheus serves 512 at once by
    default (``--web.max-connections``), so past about 500 experiments every tick of the others
    waited for its timeout and read as an outage (``bench/operator_scale.py``). Shared, the
    connections to one Prometheus are bounded by the workers. The least recently used
    configuration is closed past :data:`MAX_PROVIDERS` (rotated credentials leave old ones).
    """
    key = (prometheus.address, prometheus.timeout, credentials.bearer_token, credentials.ca_pem)
    with _providers_lock:
        found = _providers.get(key)
        if found is not None:
            _providers.move_to_end(key)
            return found
        provider = PrometheusProvider.from_spec(prometheus, credentials, pool_size=MAX_WORKERS)
        _providers[key] = provider
        while len(_providers) > MAX_PROVIDERS:
            _, oldest = _providers.popitem(last=False)
            oldest.close()
        return provider


def _provider(spec: ModelExperimentSpec, namespace: str) -> PrometheusProvider | list[
    SpecError
] | Unknown:
    prometheus = spec.metrics.prometheus
    credentials = read_credentials(clients().core, namespace, prometheus)
    if not isinstance(credentials, Credentials):
        return credentials
    return shared_provider(prometheus, credentials)


def observe(
    body: Mapping[str, Any],
    spec: ModelExperimentSpec,
    status: ModelExperimentStatus,
    state: _ObjectMemo,
    router: Router,
    now: datetime,
) -> Observations:
    """Everything the policy needs to know about this tick; never raises for missing data."""
    metadata = body.get("metadata") or {}
    namespace = metadata["namespace"]
    generation = metadata.get("generation")
    errors: list[SpecError] = []
    if state.checked_generation != generation:
        c = clients()
        errors += check_references(spec, namespace, core=c.core, apps=c.apps, custom=c.custom, router=router)
    provider = _provider(spec, namespace)
    metrics: dict[str, Any] = {}
    if isinstance(provider, list):
        errors += provider
    elif isinstance(provider, Unknown):
        metrics = dict.fromkeys(_metric_names(spec), provider)
    elif status.phase not in TERMINAL:
        dropped = {d.name for d in status.dropped_challengers}
        live = [spec.champion.name] + [c.name for c in spec.challengers if c.name not in dropped]
        shadowing = status.phase in (Phase.PENDING, Phase.SHADOWING) or (
            status.phase is Phase.PAUSED and status.pause is not None
            and status.pause.from_phase is Phase.SHADOWING
        )
        try:
            counter_set = build_counter_set(
                spec, namespace, variants=live, shadow=None if shadowing else False
            )
        except InvalidInputError as exc:
            errors.append(SpecError("spec.metrics", str(exc)))
            counter_set = None
        if counter_set is not None:
            if state.checked_generation != generation:
                checked = provider.check(counter_set)
                if isinstance(checked, list):
                    errors += checked
            metrics = dict(
                provider.observe(
                    counter_set,
                    now,
                    checkpoints=status.checkpoints,
                    counted_since=status.counted_since or status.started_at or now,
                    memo=state.anchors,
                )
            )
    if not errors:
        state.checked_generation = generation
    return Observations(
        at=now,
        metrics=metrics,
        spec_errors=tuple(errors),
        annotations=_annotations(body),
        generation=generation,
    )


def _metric_names(spec: ModelExperimentSpec) -> list[str]:
    m = spec.metrics
    return [m.primary.name, *(x.name for x in m.secondary), *(g.name for g in m.guardrails), DIVERGENCE]


def _route_state(decision: Decision) -> RouteState:
    mirrors = tuple(Mirror(variant=v, percent=float(p)) for v, p in decision.routes.mirrors.items() if p > 0)
    return RouteState(weights=dict(decision.routes.weights), mirrors=mirrors)


def run_tick(
    body: kopf.Body, spec: ModelExperimentSpec, state: _ObjectMemo, now: datetime, logger: Any
) -> Decision:
    """Observe, decide, apply the routes, write the status, emit the Events."""
    metadata = body.get("metadata") or {}
    namespace, name = metadata["namespace"], metadata["name"]
    old_status_json = dict(body.get("status") or {})
    status = ModelExperimentStatus.model_validate(old_status_json)
    c = clients()
    router = router_for(spec.traffic.provider.value, c.api)
    observations = observe(body, spec, status, state, router, now)
    decision = decide(spec, status, observations, now)

    if not observations.spec_errors:
        try:
            target = traffic_target(spec, namespace, c.custom)
            applied = router.apply(target, _route_state(decision))
        except ConflictError as exc:
            raise kopf.TemporaryError(f"routes kept changing under the operator: {exc}", delay=1) from exc
        except TargetError as exc:
            # The routed object changed since it was checked: re-check next tick, write nothing now.
            state.checked_generation = None
            error = target_error_to_spec_error(spec, exc)
            kopf.warn(body, reason="InvalidSpec", message=f"{error.path}: {error.message}")
            raise kopf.TemporaryError(str(exc), delay=1) from exc
        for drift in applied.drift:
            kopf.warn(body, reason="RouteDriftHealed", message=drift)
        achieved = dict(applied.achieved.weights)
        asked = record_achieved(decision.status, achieved, now)
        if asked is not None:
            kopf.info(
                body,
                reason="WeightsRounded",
                message=f"The traffic provider routes {achieved} for the step's {asked} (for example a "
                "replica ratio); the status and the sample ratio test use the achieved split.",
            )

    new_status = decision.status.model_dump(by_alias=True, mode="json", exclude_none=True)
    try:
        patch_status(
            c.custom, namespace, name, with_removed_keys(new_status, old_status_json),
            metadata.get("resourceVersion"),
        )
    except StatusConflictError as exc:
        raise kopf.TemporaryError(str(exc), delay=1) from exc
    state.written_tick = decision.status.last_tick_at
    for event in decision.events:
        kopf.event(body, type=event.type.value, reason=event.reason, message=event.message)
    if spec.notifications:
        notify(body, spec, status, decision.status)
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


def _sink_url(namespace: str, sink: Notification) -> tuple[str | None, str | None]:
    """A sink's URL, or why there is none (its Secret or key is missing or unreadable)."""
    if sink.url is not None:
        return str(sink.url), None
    ref = sink.url_secret_ref
    if ref is None:  # the schema requires one of the two
        return None, "neither url nor urlSecretRef is set"
    raw = read_key(clients().core, "Secret", namespace, ref, f"spec.notifications[{sink.name}].urlSecretRef")
    if isinstance(raw, SpecError):
        return None, f"{raw.path}: {raw.message}"
    if isinstance(raw, Unknown):
        return None, raw.reason
    url = raw.decode(errors="replace").strip()
    if not url.startswith(("http://", "https://")):
        return None, f"the key {ref.key} of Secret {namespace}/{ref.name} does not hold an http(s) URL"
    return url, None


def notify(
    body: kopf.Body, spec: ModelExperimentSpec, old: ModelExperimentStatus, new: ModelExperimentStatus
) -> None:
    """Tell the notification sinks the phase changes they have not had, after the status is stored
    (see :mod:`modelrollout.notifications`), and store what they have been told."""
    metadata = body.get("metadata") or {}
    namespace, name = metadata["namespace"], metadata["name"]
    ref = ExperimentRef(namespace, name, str(metadata.get("uid") or ""))
    outcome = deliver(spec, old, new, ref, lambda sink: _sink_url(namespace, sink))
    if outcome.changed:
        marks = {
            k: v.model_dump(by_alias=True, mode="json", exclude_none=True) for k, v in outcome.states.items()
        }
        for mark in marks.values():
            mark.setdefault("lastError", None)  # a merge patch removes a cleared error
        try:
            patch_status(clients().custom, namespace, name, {"notifications": marks}, None)
        except Exception as exc:  # the marks stay behind: the next tick sends again (at least once)
            kopf.warn(body, reason="NotificationFailed", message=f"could not store what was sent: {exc}")
    for reason, message in outcome.warnings:
        kopf.warn(body, reason=reason, message=message)


def finalize(body: kopf.Body, logger: Any) -> None:
    """Restore the champion's routes before the experiment is deleted."""
    metadata = body.get("metadata") or {}
    try:
        spec = ModelExperimentSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        logger.warning("spec does not validate; nothing to restore")
        return
    c = clients()
    router = router_for(spec.traffic.provider.value, c.api)
    try:
        target = traffic_target(spec, metadata["namespace"], c.custom)
        result = router.restore_champion(target)
    except TargetError as exc:
        logger.warning(f"routes not restored, their object is gone: {exc}")
        return
    except ConflictError as exc:
        raise kopf.TemporaryError(f"routes kept changing: {exc}", delay=1) from exc
    logger.info(f"champion routes restored (changed: {result.changed})")
