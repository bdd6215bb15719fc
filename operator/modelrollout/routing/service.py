"""Service router: the replica ratio of the Deployments behind one Service, without a mesh.

The champion's and the challengers' pods all carry the labels of one Service's selector, so
kube-proxy spreads connections over every ready pod, and a variant's share of the traffic is its
share of the pods (the way Argo Rollouts shifts a canary without a mesh). This router sets each
variant's ``spec.replicas`` so that the ratio approximates the weights, and reports the weights it
achieves: that ratio, not the requested weights, is what the operator must record.

**What it owns.** ``spec.replicas`` of each variant's Deployment (``Variant.deployment``) and the
annotation ``modelrollout.io/replicas`` on it (the count it last wrote, to tell an outside change
from a step). Nothing else: not the pod template, not the Service. Do not let a
HorizontalPodAutoscaler scale these Deployments during an experiment: it would fight the router,
and every tick would report drift.

**Replica budget.** The total is ``target.replicas`` when set; otherwise the total last written
(the sum of the annotations, when every Deployment has one); otherwise the sum of the replicas
found. It is shared by the largest-remainder method (:func:`split_replicas`), and every variant
with a positive weight gets at least one replica (taken from the most over-served variant), so a
10 % challenger on 4 replicas gets 1 of 4 and the achieved weight is 25 %. Deployments that grow
are written before those that shrink, so capacity never dips below the budget.

**Checks.** The Service must exist and have a selector, and each Deployment's pod template must
carry the selector's labels (else its pods would not receive the Service's traffic). Mirrors and
the sticky split are impossible here: asking for them raises ``InvalidInputError``.

Writes are JSON merge patches of ``spec.replicas`` and the annotation that carry the
``resourceVersion`` read, retried on 409 Conflict after a fresh read.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from modelrollout.errors import InvalidInputError
from modelrollout.routing.base import (
    FIELD_MANAGER,
    REPLICAS_ANNOTATION,
    ApplyResult,
    BeforeWrite,
    CanWrite,
    CurrentRoutes,
    RetryPolicy,
    RouteState,
    TrafficTarget,
    check_can_write,
    largest_remainder,
    ordered,
    validate_state,
)
from modelrollout.routing.errors import ConflictError, ObjectNotFoundError, UnsupportedTargetError

log = logging.getLogger(__name__)
MERGE_PATCH = "application/merge-patch+json"


def split_replicas(weights: Mapping[str, int], total: int) -> dict[str, int]:
    """Replicas per variant for integer percent ``weights`` out of ``total`` (largest remainder).

    Every variant with a positive weight gets at least one replica; the replica is taken from the
    variant with the largest excess over its exact quota (ties: more replicas, then earlier).
    """
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise InvalidInputError(f"the replica budget must be a positive integer, not {total!r}")
    state = RouteState(weights)
    live = state.live()
    if len(live) > total:
        raise InvalidInputError(f"a budget of {total} replica(s) cannot give each of the {len(live)} "
                                f"variants with traffic ({', '.join(live)}) a replica; raise the budget")
    counts = largest_remainder(dict(state.weights), total)
    names = list(counts)
    for name in live:
        if counts[name] > 0:
            continue
        donors = [n for n in names if counts[n] > 1]
        donor = max(donors, key=lambda n: (counts[n] * 100 - state.weights[n] * total, counts[n],
                                           -names.index(n)))
        counts[donor] -= 1
        counts[name] += 1
    return counts


def achieved_weights(replicas: Mapping[str, int]) -> RouteState | None:
    """The traffic split a replica ratio gives, in integer percents (None with no replicas)."""
    if sum(replicas.values()) <= 0:
        return None
    return RouteState(largest_remainder(dict(replicas), 100))


@dataclass(frozen=True)
class _Deployment:
    variant: str
    name: str
    replicas: int
    recorded: int | None
    resource_version: str


class ServiceRouter:
    """Sets the replicas of the champion and challenger Deployments behind one Service."""

    provider = "service"
    supports_mirror = False
    supports_stickiness = False

    def __init__(self, api: client.ApiClient | client.AppsV1Api, core: client.CoreV1Api | None = None, *,
                 retry: RetryPolicy | None = None, before_write: BeforeWrite | None = None,
                 field_manager: str = FIELD_MANAGER, can_write: CanWrite | None = None) -> None:
        self.apps = api if isinstance(api, client.AppsV1Api) else client.AppsV1Api(api)
        self.core = core or client.CoreV1Api(self.apps.api_client)
        self.retry = retry or RetryPolicy()
        self.before_write = before_write
        self.can_write = can_write
        self.field_manager = field_manager

    # -- reading -----------------------------------------------------------------------------------
    def _check_target(self, target: TrafficTarget) -> None:
        if target.bucket_header is not None:
            raise InvalidInputError("the service router cannot make a sticky split: kube-proxy does not "
                                    "route on headers; use istio or gatewayAPI, or drop the bucket header")
        missing = [v.name for v in target.variants if v.deployment is None]
        if missing:
            raise InvalidInputError(f"the service router needs the Deployment of every variant; missing for "
                                    f"{missing}")

    def _selector(self, target: TrafficTarget) -> dict[str, str]:
        try:
            service = self.core.read_namespaced_service(target.name, target.namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                raise ObjectNotFoundError(f"Service {target.namespace}/{target.name} does not exist",
                                          kind="Service", namespace=target.namespace,
                                          name=target.name) from None
            raise
        selector = dict(service.spec.selector or {}) if service.spec else {}
        if not selector:
            raise UnsupportedTargetError(f"Service {target.namespace}/{target.name} has no selector, so the "
                                         "replica ratio of its Deployments does not decide its traffic",
                                         kind="Service", namespace=target.namespace, name=target.name)
        return selector

    def _read(self, target: TrafficTarget, variant: str, selector: Mapping[str, str] | None) -> _Deployment:
        name = target.variant(variant).deployment
        assert name is not None
        try:
            dep = self.apps.read_namespaced_deployment(name, target.namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                raise ObjectNotFoundError(f"Deployment {target.namespace}/{name} of variant {variant!r} "
                                          "does not exist", kind="Deployment", namespace=target.namespace,
                                          name=name, variant=variant) from None
            raise
        if selector is not None:
            labels = (dep.spec.template.metadata.labels or {}) if dep.spec.template.metadata else {}
            wrong = {k: v for k, v in selector.items() if labels.get(k) != v}
            if wrong:
                raise UnsupportedTargetError(
                    f"Deployment {target.namespace}/{name} of variant {variant!r}: its pods lack the labels "
                    f"{wrong} of Service {target.name}'s selector, so they get none of its traffic",
                    kind="Deployment", namespace=target.namespace, name=name, variant=variant)
        metadata = dep.metadata or client.V1ObjectMeta()
        raw = (metadata.annotations or {}).get(REPLICAS_ANNOTATION)
        recorded = int(raw) if raw is not None and raw.isdigit() else None
        replicas = dep.spec.replicas if dep.spec.replicas is not None else 1
        return _Deployment(variant, name, replicas, recorded, str(metadata.resource_version or ""))

    def _read_all(self, target: TrafficTarget) -> dict[str, _Deployment]:
        self._check_target(target)
        selector = self._selector(target)
        return {v.name: self._read(target, v.name, selector) for v in target.variants}

    def budget(self, target: TrafficTarget, deployments: Mapping[str, _Deployment]) -> int:
        """The total replica count to share (see the module docstring)."""
        if target.replicas is not None:
            return target.replicas
        recorded = [d.recorded for d in deployments.values()]
        if all(r is not None for r in recorded) and sum(r or 0 for r in recorded) > 0:
            return sum(r or 0 for r in recorded)
        total = sum(d.replicas for d in deployments.values())
        if total < 1:
            raise UnsupportedTargetError(
                f"the Deployments behind Service {target.namespace}/{target.name} have no replicas to share; "
                "scale the champion up or set a replica budget", kind="Service", namespace=target.namespace,
                name=target.name)
        return total

    @staticmethod
    def _drift(target: TrafficTarget, deployments: Mapping[str, _Deployment],
               planned: Mapping[str, int] | None = None) -> tuple[str, ...]:
        messages = []
        for d in deployments.values():
            if d.recorded is None or d.replicas == d.recorded:
                continue
            if planned is not None and d.replicas == planned[d.variant]:
                continue
            messages.append(f"Deployment {target.namespace}/{d.name} (variant {d.variant!r}): found "
                            f"{d.replicas} replicas; modelrollout last set {d.recorded}")
        return tuple(messages)

    def current(self, target: TrafficTarget, desired: RouteState | None = None) -> CurrentRoutes:
        """The split the replica ratio gives now; ``in_sync`` compares the replicas with ``desired``."""
        deployments = self._read_all(target)
        replicas = {n: deployments[n].replicas for n in target.names}
        state = achieved_weights(replicas)
        want = desired if desired is not None else state
        in_sync = False
        if want is not None:
            validate_state(target, want)
            planned = split_replicas(ordered(target, want).weights, self.budget(target, deployments))
            in_sync = planned == replicas
        return CurrentRoutes(state=state and ordered(target, state), in_sync=in_sync,
                             drift=self._drift(target, deployments))

    # -- writing -----------------------------------------------------------------------------------
    def _write(self, target: TrafficTarget, first: _Deployment, replicas: int) -> tuple[bool, int]:
        """Set one Deployment's replicas; (written, attempts)."""
        dep = first
        for attempt in range(1, self.retry.max_attempts + 1):
            if attempt > 1:
                dep = self._read(target, dep.variant, None)
            if dep.replicas == replicas:
                return False, attempt
            patch: dict[str, Any] = {
                "metadata": {"resourceVersion": dep.resource_version,
                             "annotations": {REPLICAS_ANNOTATION: str(replicas)}},
                "spec": {"replicas": replicas},
            }
            if self.before_write is not None:
                self.before_write(attempt)
            check_can_write(self.can_write, f"Deployment {target.namespace}/{dep.name}")
            try:
                self.apps.patch_namespaced_deployment(dep.name, target.namespace, patch,
                                                      field_manager=self.field_manager,
                                                      _content_type=MERGE_PATCH)
            except client.ApiException as exc:
                if exc.status == 409:
                    log.info("Deployment %s/%s changed while scaling it (attempt %d)",
                             target.namespace, dep.name, attempt)
                    if attempt < self.retry.max_attempts:
                        self.retry.pause(attempt)
                    continue
                if exc.status == 404:
                    raise ObjectNotFoundError(f"Deployment {target.namespace}/{dep.name} does not exist",
                                              kind="Deployment", namespace=target.namespace, name=dep.name,
                                              variant=dep.variant) from None
                raise
            return True, attempt
        raise ConflictError(f"Deployment {target.namespace}/{dep.name} changed during each of "
                            f"{self.retry.max_attempts} attempts to scale it (409 Conflict)")

    def apply(self, target: TrafficTarget, desired: RouteState) -> ApplyResult:
        """Scale the Deployments to approximate ``desired``; the result has the achieved weights."""
        validate_state(target, desired)
        if desired.mirrors:
            raise InvalidInputError("the service router cannot mirror traffic: kube-proxy has no mirroring; "
                                    "use istio or gatewayAPI for a shadow phase")
        desired = ordered(target, desired)
        deployments = self._read_all(target)
        current = {n: deployments[n].replicas for n in target.names}
        planned = split_replicas(desired.weights, self.budget(target, deployments))
        drift = self._drift(target, deployments, planned)
        # Grow first, then shrink, so that capacity never dips below the budget.
        order: Sequence[str] = sorted(target.names,
                                      key=lambda n: (planned[n] <= current[n], target.names.index(n)))
        changed, attempts = False, 1
        for name in order:
            if planned[name] == current[name]:
                continue
            written, tries = self._write(target, deployments[name], planned[name])
            changed |= written
            attempts = max(attempts, tries)
        for message in drift if changed else ():
            log.warning("healed drift: %s", message)
        previous = achieved_weights(current)
        achieved = achieved_weights(planned)
        assert achieved is not None
        return ApplyResult(changed=changed, achieved=ordered(target, achieved),
                           previous=previous and ordered(target, previous),
                           drift=drift if changed else (), attempts=attempts)

    def restore_champion(self, target: TrafficTarget) -> ApplyResult:
        """All replicas of the budget to the champion, none to the challengers."""
        return self.apply(target, RouteState.champion_only(target))


__all__ = ["ServiceRouter", "achieved_weights", "split_replicas"]
