"""The operator's Kubernetes plumbing: spec → routing target, reference checks, status writes.

Everything here is synchronous (the kubernetes client is); kopf runs the handlers that call it in
its thread pool, off the event loop.

* :func:`traffic_target` maps a spec onto the routers' plain :class:`~modelrollout.routing.TrafficTarget`.
* :func:`check_references` finds what only the operator can see is wrong with a spec: a Service,
  Deployment, VirtualService, HTTPRoute or route that is not there. Each problem becomes a
  :class:`~modelrollout.api.observations.SpecProblem` with the field path and the fix, so the policy sets
  ``InvalidSpec`` and moves no traffic.
* :func:`patch_status` writes the status with optimistic concurrency: the merge patch carries the
  ``resourceVersion`` that was read, so a concurrent writer makes it fail with 409 instead of being
  overwritten.
* :class:`Cluster` is what a tick asks of the cluster besides its router and its metrics, and
  :class:`KubeCluster` answers it with the API clients (a unit test gives a fake). Its writes (the
  status, Events) ask the leader election guard first (``can_write``, see
  :mod:`~modelrollout.controller.leader`) and raise :class:`~modelrollout.errors.FencedError` instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelrollout.api.experiment import GROUP, PLURAL, VERSION
from modelrollout.api.observations import SpecProblem, Unknown
from modelrollout.api.spec import KeySelector, ModelExperimentSpec, Provider
from modelrollout.errors import ModelRolloutError
from modelrollout.metrics.credentials import read_key
from modelrollout.routing import CanWrite, RouteNotFoundError, Router, TargetError, TrafficTarget, Variant
from modelrollout.routing.base import check_can_write
from modelrollout.routing.errors import ObjectNotFoundError

#: kopf's finalizer on every experiment: the champion's routes are restored before it goes.
FINALIZER = "modelrollout.io/finalizer"


class StatusConflictError(ModelRolloutError):
    """The experiment changed since it was read (409): the tick is retried with a fresh read."""


def _variants(spec: ModelExperimentSpec) -> tuple[Variant, ...]:
    out = []
    for v in (spec.champion, *spec.challengers):
        destination = v.service or v.deployment or v.name
        out.append(Variant(name=v.name, destination=destination, deployment=v.deployment))
    return tuple(out)


def _variant_paths(spec: ModelExperimentSpec) -> dict[str, str]:
    paths = {spec.champion.name: "spec.champion"}
    paths.update({c.name: f"spec.challengers[{i}]" for i, c in enumerate(spec.challengers)})
    return paths


def traffic_target(
    spec: ModelExperimentSpec, namespace: str, custom: client.CustomObjectsApi | None = None
) -> TrafficTarget:
    """The routers' view of ``spec``.

    HTTPRoute rules given by index are resolved to their names by reading the HTTPRoute (the
    Gateway API router selects rules by name), hence the optional ``custom`` client.

    Raises
    ------
    TargetError
        The HTTPRoute or a rule index does not exist, or the rule has no name.
    """
    traffic = spec.traffic
    header = traffic.stickiness.bucket_header if traffic.stickiness else None
    common: dict[str, Any] = {
        "namespace": namespace,
        "variants": _variants(spec),
        "champion": spec.champion.name,
        "bucket_header": header,
    }
    if traffic.provider is Provider.ISTIO:
        assert traffic.istio is not None  # the CRD's CEL rules guarantee the block
        return TrafficTarget(name=traffic.istio.virtual_service, routes=traffic.istio.routes, **common)
    if traffic.provider is Provider.GATEWAY_API:
        gw = traffic.gateway_api
        assert gw is not None
        if gw.rule_names is not None:
            rules: tuple[str, ...] = tuple(gw.rule_names)
        else:
            rules = _rule_names_from_indexes(custom, namespace, gw.http_route, gw.rule_indexes or ())
        return TrafficTarget(name=gw.http_route, routes=rules, **common)
    assert traffic.service is not None
    return TrafficTarget(
        name=traffic.service.service, replicas=traffic.service.replicas, **{**common, "bucket_header": None}
    )


def _rule_names_from_indexes(
    custom: client.CustomObjectsApi | None, namespace: str, name: str, indexes: tuple[int, ...]
) -> tuple[str, ...]:
    if custom is None:
        raise TargetError(
            "ruleIndexes need the HTTPRoute to be read", kind="HTTPRoute", namespace=namespace, name=name
        )
    try:
        route: Any = custom.get_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", namespace, "httproutes", name
        )
    except ApiException as exc:
        if exc.status == 404:
            raise ObjectNotFoundError(
                f"HTTPRoute {namespace}/{name} not found", kind="HTTPRoute", namespace=namespace, name=name
            ) from None
        raise
    rules = route.get("spec", {}).get("rules", [])
    names = []
    for i in indexes:
        if i >= len(rules):
            raise RouteNotFoundError(
                f"HTTPRoute {name} has {len(rules)} rules; there is no rule index {i}",
                kind="HTTPRoute",
                namespace=namespace,
                name=name,
                route=str(i),
            )
        rule_name = rules[i].get("name")
        if not rule_name:
            raise RouteNotFoundError(
                f"rule {i} of HTTPRoute {name} has no name; give it one (rules[{i}].name) so the operator "
                "can select it",
                kind="HTTPRoute",
                namespace=namespace,
                name=name,
                route=str(i),
            )
        names.append(rule_name)
    return tuple(names)


def _routes_path(spec: ModelExperimentSpec) -> str:
    if spec.traffic.provider is Provider.ISTIO:
        return "spec.traffic.istio.routes"
    gw = spec.traffic.gateway_api
    return "spec.traffic.gatewayAPI." + ("ruleNames" if gw and gw.rule_names is not None else "ruleIndexes")


def _object_path(spec: ModelExperimentSpec) -> str:
    return {
        Provider.ISTIO: "spec.traffic.istio.virtualService",
        Provider.GATEWAY_API: "spec.traffic.gatewayAPI.httpRoute",
        Provider.SERVICE: "spec.traffic.service.service",
    }[spec.traffic.provider]


def target_error_to_spec_error(spec: ModelExperimentSpec, exc: TargetError) -> SpecProblem:
    """Where in the spec a routing error points, with the router's message as the fix."""
    if exc.variant:
        base = _variant_paths(spec).get(exc.variant, "spec")
        field = "deployment" if spec.traffic.provider is Provider.SERVICE else "service"
        return SpecProblem(f"{base}.{field}", str(exc))
    if exc.route:
        return SpecProblem(_routes_path(spec), str(exc))
    return SpecProblem(_object_path(spec), str(exc))


def check_references(
    spec: ModelExperimentSpec,
    namespace: str,
    *,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    custom: client.CustomObjectsApi,
    router: Router,
) -> list[SpecProblem]:
    """Errors in ``spec`` that only a look at the cluster can find, each with its field path.

    Checks that each variant's Service (istio, gatewayAPI) or Deployment (service) exists, and that
    the routed object and its named routes exist and route to the variants (the router's
    ``current`` raises :class:`TargetError` otherwise).
    """
    errors: list[SpecProblem] = []
    paths = _variant_paths(spec)
    for v in (spec.champion, *spec.challengers):
        try:
            if spec.traffic.provider is Provider.SERVICE:
                if v.deployment:
                    apps.read_namespaced_deployment(v.deployment, namespace)
            elif v.service:
                core.read_namespaced_service(v.service, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            kind, field, name = (
                ("Deployment", "deployment", v.deployment)
                if spec.traffic.provider is Provider.SERVICE
                else ("Service", "service", v.service)
            )
            errors.append(
                SpecProblem(
                    f"{paths[v.name]}.{field}",
                    f"{kind} {namespace}/{name} does not exist: create it, or name the {kind} that serves "
                    f"variant {v.name}",
                )
            )
    try:
        target = traffic_target(spec, namespace, custom)
        router.current(target)
    except TargetError as exc:
        errors.append(target_error_to_spec_error(spec, exc))
    return errors


def patch_status(
    custom: client.CustomObjectsApi,
    namespace: str,
    name: str,
    status: Mapping[str, Any],
    resource_version: str | None,
) -> None:
    """Replace the experiment's status (a merge patch of ``status``), guarded by ``resource_version``.

    Keys that the new status no longer has are sent as ``null`` so the merge patch removes them.
    The object the apiserver sends back is not parsed (a tenth of a tick's CPU at scale): the
    watch brings it anyway.

    Raises
    ------
    StatusConflictError
        The object changed since ``resource_version`` was read.
    """
    body: dict[str, Any] = {"status": dict(status)}
    if resource_version:
        body["metadata"] = {"resourceVersion": resource_version}
    try:
        response: Any = custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, body, _preload_content=False
        )
    except ApiException as exc:
        if exc.status == 409:
            raise StatusConflictError(f"{namespace}/{name} changed since it was read") from None
        raise
    _release(response)


def _release(response: Any) -> None:
    """Read and return a raw urllib3 response's connection to the pool."""
    for method in ("drain_conn", "release_conn"):
        call = getattr(response, method, None)
        if callable(call):
            call()


def with_removed_keys(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> dict[str, Any]:
    """``new`` plus ``None`` for every key of ``old`` that ``new`` dropped, at every depth of nested
    objects (a JSON merge patch deletes a key only when it says ``null``, and merges objects key by
    key: without this, a field cleared inside the status, such as ``srm.alarm`` or a guardrail's
    state in ``sequential``, would stay on the object). Lists are replaced whole, as merge patches do.
    """
    out = dict(new)
    for key, before in (old or {}).items():
        if key not in out:
            out[key] = None
        elif isinstance(before, Mapping) and isinstance(out[key], Mapping):
            out[key] = with_removed_keys(out[key], before)
    return out


class Cluster(Protocol):
    """What a tick reads from and writes to the cluster, besides its router and its metrics."""

    def check_references(
        self, spec: ModelExperimentSpec, namespace: str, router: Router
    ) -> list[SpecProblem]:
        """See :func:`check_references`."""
        ...

    def traffic_target(self, spec: ModelExperimentSpec, namespace: str) -> TrafficTarget:
        """See :func:`traffic_target` (raises :class:`TargetError`)."""
        ...

    def patch_status(
        self, namespace: str, name: str, status: Mapping[str, Any], resource_version: str | None
    ) -> None:
        """See :func:`patch_status` (raises :class:`StatusConflictError` on 409)."""
        ...

    def read_key(
        self, kind: str, namespace: str, ref: KeySelector, path: str
    ) -> bytes | SpecProblem | Unknown:
        """The bytes under a key of a Secret or ConfigMap, or what went wrong."""
        ...

    def emit(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """A Kubernetes Event on the experiment (``Normal`` or ``Warning``)."""
        ...


class KubeCluster:
    """:class:`Cluster` on the kubernetes client, with kopf posting the Events."""

    def __init__(
        self,
        *,
        core: client.CoreV1Api,
        apps: client.AppsV1Api,
        custom: client.CustomObjectsApi,
        can_write: CanWrite | None = None,
    ) -> None:
        self.core, self.apps, self.custom = core, apps, custom
        self.can_write = can_write

    def check_references(
        self, spec: ModelExperimentSpec, namespace: str, router: Router
    ) -> list[SpecProblem]:
        return check_references(
            spec, namespace, core=self.core, apps=self.apps, custom=self.custom, router=router
        )

    def traffic_target(self, spec: ModelExperimentSpec, namespace: str) -> TrafficTarget:
        return traffic_target(spec, namespace, self.custom)

    def patch_status(
        self, namespace: str, name: str, status: Mapping[str, Any], resource_version: str | None
    ) -> None:
        check_can_write(self.can_write, f"the status of {namespace}/{name}")
        patch_status(self.custom, namespace, name, status, resource_version)

    def read_key(
        self, kind: str, namespace: str, ref: KeySelector, path: str
    ) -> bytes | SpecProblem | Unknown:
        return read_key(self.core, kind, namespace, ref, path)

    def emit(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        metadata = body.get("metadata") or {}
        where = f"{metadata.get('namespace')}/{metadata.get('name')}"
        check_can_write(self.can_write, f"Event {reason} on {where}")
        obj: Any = body  # a kopf.Body; kopf reads its metadata for the Event's reference
        kopf.event(obj, type=type_, reason=reason, message=message)
