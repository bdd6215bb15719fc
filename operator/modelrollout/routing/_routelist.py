"""What the Istio and Gateway API routers share: a named list of routes inside a custom object.

A VirtualService has ``spec.http[]`` and an HTTPRoute ``spec.rules[]``; both are ordered lists of
items with an optional ``name``. The target selects items by name (the *base* routes). For each
base route ``R`` the router owns

* some fields of ``R`` itself (its destinations and our mirrors; see each module), and
* the items it generated for ``R``'s sticky split, named ``modelrollout-sticky.<R>.<variant>``
  (:func:`sticky_name`). An item belongs to ``R`` when its name is that prefix, ``R``, a dot and a
  dot-free rest. The prefix is reserved: never give a route of your own a name that starts with
  ``modelrollout-sticky.``. Generated items of routes that are not selected (another experiment
  on the same object) are left alone.

Everything else (other items, their order, the other fields of ``R``) is kept as it is.
:func:`build_items` is the pure function that computes the new list; the router class adds the
read, the conditional write with ``resourceVersion``, the retries and the drift record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from kubernetes import client

from modelrollout.routing.base import (
    FIELD_MANAGER,
    ROUTES_ANNOTATION,
    STICKY_PREFIX,
    ApplyResult,
    BeforeWrite,
    CanWrite,
    CurrentRoutes,
    RetryPolicy,
    RouteState,
    TrafficTarget,
    check_can_write,
    label,
    ordered,
    recorded_states,
    updated_record,
    validate_state,
)
from modelrollout.routing.errors import (
    ConflictError,
    ObjectNotFoundError,
    RouteNotFoundError,
    RoutingError,
    TargetError,
    UnsupportedTargetError,
)

log = logging.getLogger(__name__)

Item = dict[str, Any]
Render = Callable[[Item, str, TrafficTarget, RouteState], list[Item]]
MERGE_PATCH = "application/merge-patch+json"


def sticky_name(route: str, variant: str) -> str:
    """The name of the generated route that sends ``variant``'s buckets of ``route`` to it."""
    return f"{STICKY_PREFIX}{route}.{label(variant)}"


def owner(name: Any, routes: Sequence[str]) -> str | None:
    """The selected route that generated the item called ``name``, or None."""
    if not isinstance(name, str) or not name.startswith(STICKY_PREFIX):
        return None
    route, dot, rest = name[len(STICKY_PREFIX):].rpartition(".")
    if dot and rest and route in routes:
        return route
    return None


def _base_index(items: Sequence[Item], route: str, target: TrafficTarget, kind: str, noun: str) -> int:
    found = [i for i, item in enumerate(items) if isinstance(item, dict) and item.get("name") == route]
    if not found:
        names = [item.get("name") for item in items if isinstance(item, dict)
                 and item.get("name") and owner(item.get("name"), target.routes) is None]
        raise RouteNotFoundError(
            f"{kind} {target.namespace}/{target.name} has no {noun} named {route!r}; "
            f"its named {noun}s are {names}", kind=kind, namespace=target.namespace, name=target.name,
            route=route)
    if len(found) > 1:
        raise UnsupportedTargetError(
            f"{kind} {target.namespace}/{target.name} has {len(found)} {noun}s named {route!r}; "
            "names must be unique", kind=kind, namespace=target.namespace, name=target.name, route=route)
    return found[0]


def build_items(items: Sequence[Item], target: TrafficTarget, state: RouteState, render: Render,
                *, kind: str, noun: str) -> list[Item]:
    """The new list: each selected route re-rendered, with its generated routes just before it.

    Items that are neither a selected route nor generated for one are returned unchanged, in
    their order (the very same objects).
    """
    if not target.routes:
        raise UnsupportedTargetError(
            f"no {noun} selected in {kind} {target.namespace}/{target.name}: name at least one",
            kind=kind, namespace=target.namespace, name=target.name)
    bases = {_base_index(items, route, target, kind, noun): route for route in target.routes}
    result: list[Item] = []
    for i, item in enumerate(items):
        if i in bases:
            result.extend(render(item, bases[i], target, state))
        elif not (isinstance(item, dict) and owner(item.get("name"), target.routes)):
            result.append(item)
    return result


def route_slice(items: Sequence[Item], route: str, target: TrafficTarget, kind: str, noun: str) -> list[Item]:
    """The items of ``route`` as they are now: its generated routes (in list order), then itself."""
    base = items[_base_index(items, route, target, kind, noun)]
    generated = [item for item in items if isinstance(item, dict) and owner(item.get("name"), [route])]
    return [*generated, base]


def _resource_version(obj: object) -> str | None:
    if isinstance(obj, dict):
        version = (obj.get("metadata") or {}).get("resourceVersion")
        return str(version) if version is not None else None
    return None


class RouteListRouter:
    """Read-compute-write of a named list of routes in a namespaced custom object.

    Subclasses set the API coordinates and implement :meth:`render` (the owned fields of one base
    route plus its generated routes, pure), :meth:`read` (the split one base route sends, pure) and
    :meth:`fingerprint` (what counts as a change of the owned routing, for drift).
    """

    provider = ""
    group = ""
    version = ""
    plural = ""
    kind = ""
    list_field = ""
    noun = "route"
    supports_mirror = True
    supports_stickiness = True

    def __init__(self, api: client.ApiClient | client.CustomObjectsApi, *, retry: RetryPolicy | None = None,
                 before_write: BeforeWrite | None = None, field_manager: str = FIELD_MANAGER,
                 can_write: CanWrite | None = None) -> None:
        self.api = api if isinstance(api, client.CustomObjectsApi) else client.CustomObjectsApi(api)
        self.retry = retry or RetryPolicy()
        self.before_write = before_write
        self.can_write = can_write
        self.field_manager = field_manager

    # -- to implement ------------------------------------------------------------------------------
    def render(self, base: Item, route: str, target: TrafficTarget, state: RouteState) -> list[Item]:
        raise NotImplementedError

    def read(self, base: Item, route: str, target: TrafficTarget) -> RouteState | None:
        raise NotImplementedError

    def fingerprint(self, items: Sequence[Item], target: TrafficTarget) -> Any:
        raise NotImplementedError

    def check_limits(self, items: Sequence[Item], target: TrafficTarget) -> None:
        """Raise when the new list breaks a limit of the object's schema (default: none)."""

    # -- pure --------------------------------------------------------------------------------------
    def build(self, items: Sequence[Item], target: TrafficTarget, state: RouteState) -> list[Item]:
        """The new route list for ``state`` (pure)."""
        validate_state(target, state)
        result = build_items(items, target, ordered(target, state), self.render,
                             kind=self.kind, noun=self.noun)
        self.check_limits(result, target)
        return result

    def read_state(self, items: Sequence[Item], target: TrafficTarget) -> RouteState | None:
        """The split the first selected route sends (pure)."""
        if not target.routes:
            raise UnsupportedTargetError(
                f"no {self.noun} selected in {self.kind} {target.namespace}/{target.name}",
                kind=self.kind, namespace=target.namespace, name=target.name)
        route = target.routes[0]
        base = items[_base_index(items, route, target, self.kind, self.noun)]
        return self.read(base, route, target)

    def drift(self, items: Sequence[Item], annotations: dict[str, str] | None,
              target: TrafficTarget) -> tuple[str, ...]:
        """Outside changes of the owned routing since the last write recorded in the annotation."""
        messages = []
        for route, recorded in recorded_states(annotations, target.routes).items():
            now = route_slice(items, route, target, self.kind, self.noun)
            base = now[-1]
            try:
                validate_state(target, recorded)
                recorded = ordered(target, recorded)
                expected = self.render(base, route, target, recorded)
            except (RoutingError, ValueError):
                continue  # the record no longer fits the target (the spec changed): not drift
            if self.fingerprint(now, target) == self.fingerprint(expected, target):
                continue
            found = self.read(base, route, target)
            if found is not None and found == recorded:
                what = "same split, but its generated sticky routes or the form of its destinations differ"
            else:
                what = f"found {found.describe() if found else 'no readable split'}"
            messages.append(f"{self.kind} {target.namespace}/{target.name} {self.noun} {route!r}: "
                            f"{what}; modelrollout last set {recorded.describe()}")
        return tuple(messages)

    # -- I/O ---------------------------------------------------------------------------------------
    def _get(self, target: TrafficTarget) -> dict[str, Any]:
        try:
            obj = self.api.get_namespaced_custom_object(
                self.group, self.version, target.namespace, self.plural, target.name)
        except client.ApiException as exc:
            if exc.status == 404:
                raise self._not_found(target) from None
            raise
        if not isinstance(obj, dict):
            raise UnsupportedTargetError(
                f"{self.kind} {target.namespace}/{target.name}: unexpected reply {obj!r}",
                kind=self.kind, namespace=target.namespace, name=target.name)
        return obj

    def _not_found(self, target: TrafficTarget) -> TargetError:
        return ObjectNotFoundError(
            f"{self.kind} {target.namespace}/{target.name} ({self.group}/{self.version}) does not exist",
            kind=self.kind, namespace=target.namespace, name=target.name)

    def _items(self, obj: dict[str, Any], target: TrafficTarget) -> list[Item]:
        items = (obj.get("spec") or {}).get(self.list_field) or []
        if not isinstance(items, list):
            raise UnsupportedTargetError(
                f"{self.kind} {target.namespace}/{target.name}: spec.{self.list_field} is not a list",
                kind=self.kind, namespace=target.namespace, name=target.name)
        return items

    def current(self, target: TrafficTarget, desired: RouteState | None = None) -> CurrentRoutes:
        """What the object routes now; ``in_sync`` compares with ``desired`` (or the state read)."""
        obj = self._get(target)
        items = self._items(obj, target)
        state = self.read_state(items, target)
        want = desired if desired is not None else state
        in_sync = want is not None and self.build(items, target, want) == items
        annotations = (obj.get("metadata") or {}).get("annotations")
        return CurrentRoutes(state=state, in_sync=in_sync, drift=self.drift(items, annotations, target),
                             resource_version=(obj.get("metadata") or {}).get("resourceVersion"))

    def apply(self, target: TrafficTarget, desired: RouteState) -> ApplyResult:
        """Write ``desired`` (with the resourceVersion read; re-read and retry on 409)."""
        validate_state(target, desired)
        desired = ordered(target, desired)
        for attempt in range(1, self.retry.max_attempts + 1):
            obj = self._get(target)
            metadata = obj.get("metadata") or {}
            items = self._items(obj, target)
            new_items = self.build(items, target, desired)
            previous = self.read_state(items, target)
            if new_items == items:
                return ApplyResult(changed=False, achieved=desired, previous=previous, attempts=attempt,
                                   resource_version=metadata.get("resourceVersion"))
            annotations = metadata.get("annotations")
            drift = self.drift(items, annotations, target)
            patch = {
                "metadata": {
                    "resourceVersion": metadata.get("resourceVersion"),
                    "annotations": {ROUTES_ANNOTATION: updated_record(annotations, target.routes, desired)},
                },
                "spec": {self.list_field: new_items},
            }
            if self.before_write is not None:
                self.before_write(attempt)
            check_can_write(self.can_write, f"{self.kind} {target.namespace}/{target.name}")
            try:
                written = self.api.patch_namespaced_custom_object(
                    self.group, self.version, target.namespace, self.plural, target.name, patch,
                    field_manager=self.field_manager, _content_type=MERGE_PATCH)
            except client.ApiException as exc:
                if exc.status == 409:
                    log.info("%s %s/%s changed while writing (attempt %d): %s", self.kind,
                             target.namespace, target.name, attempt, exc.reason)
                    if attempt < self.retry.max_attempts:
                        self.retry.pause(attempt)
                    continue
                if exc.status == 404:
                    raise self._not_found(target) from None
                raise
            for message in drift:
                log.warning("healed drift: %s", message)
            return ApplyResult(changed=True, achieved=desired, previous=previous, drift=drift,
                               attempts=attempt,
                               resource_version=_resource_version(written))
        raise ConflictError(f"{self.kind} {target.namespace}/{target.name} changed during each of "
                            f"{self.retry.max_attempts} attempts to write it (409 Conflict)")

    def restore_champion(self, target: TrafficTarget) -> ApplyResult:
        """All traffic to the champion; mirrors and generated sticky routes removed."""
        return self.apply(target, RouteState.champion_only(target))
