"""Istio router: weights, mirrors and the sticky split on a ``VirtualService``.

It edits ``networking.istio.io/v1`` VirtualServices (the storage version of the upstream CRD,
which also serves ``v1beta1`` and ``v1alpha3``; all three are the same schema).

**What it owns.** For each route selected by name (``spec.http[].name`` in ``target.routes``):

* ``route[]``: one entry per variant with a positive weight, in the target's order. An entry that
  already sends to that variant is kept with every other field it has (``headers``, the spelling of
  ``host``); only ``weight`` is set. Zero-weight variants are left out, so restoring the champion
  gives the plain ``route: [{destination: champion, weight: 100}]``. An entry whose destination is
  not a variant is an error (:class:`~modelrollout.routing.errors.UnsupportedTargetError`).
* The mirror fields ``mirror``, ``mirrorPercentage`` (and the deprecated ``mirrorPercent`` and
  ``mirror_percent``) when ``mirror`` is absent or points at a variant, and the ``mirrors[]``
  entries that point at a variant. A mirror of your own (to a host that is not a variant) is kept;
  one mirror of ours is written as ``mirror`` + ``mirrorPercentage``, several (or one next to
  mirrors of your own in ``mirrors[]``) as ``mirrors[]`` entries.
* The generated sticky routes ``modelrollout-sticky.<route>.<variant>``, placed just before the
  route (Istio takes the first route that matches).

Every other field of the route (``match``, ``timeout``, ``retries``, ``rewrite``, ``headers``,
``corsPolicy``, ``fault``, ...), every other route and their order are left untouched.

**Sticky split.** With ``target.bucket_header`` and more than one variant with traffic, each variant
gets a copy of the route (same fields, minus our mirrors) whose ``match`` is the route's match with
the header condition ``headers.<h>.regex`` added, sending 100 % to that variant; challengers first,
then the champion with the remaining buckets (:mod:`~modelrollout.routing.buckets` has the layout).
Requests without the header fall through to the route itself, split by per-request weights. A route
that already matches on the bucket header cannot be split this way (an error says so). With a
single variant at 100 % no sticky route is written.

Hosts are compared after expanding short names in the VirtualService's namespace
(``ranker-v7`` = ``ranker-v7.<ns>`` = ``ranker-v7.<ns>.svc.cluster.local``), subsets exactly, and
ports when the variant names one.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from modelrollout.routing._routelist import Item, RouteListRouter, build_items, owner, sticky_name
from modelrollout.routing.base import (
    Mirror,
    RouteState,
    TrafficTarget,
    Variant,
    largest_remainder,
    ordered,
    validate_state,
)
from modelrollout.routing.buckets import assign_buckets, buckets_regex, matched_buckets
from modelrollout.routing.errors import UnsupportedTargetError

KIND = "VirtualService"
SINGLE_MIRROR_FIELDS = ("mirror", "mirrorPercentage", "mirrorPercent", "mirror_percent")
NOT_FORWARDING = ("delegate", "redirect", "directResponse")


def canonical_host(host: str, namespace: str) -> str:
    """``host`` as a fully qualified service name, for comparisons only."""
    parts = host.split(".")
    if len(parts) == 1:
        return f"{host}.{namespace}.svc.cluster.local"
    if len(parts) == 2:
        return f"{host}.svc.cluster.local"
    if len(parts) == 3 and parts[2] == "svc":
        return f"{host}.cluster.local"
    return host


def destination(v: Variant) -> dict[str, Any]:
    """The Istio ``Destination`` of variant ``v``."""
    dest: dict[str, Any] = {"host": v.destination}
    if v.subset is not None:
        dest["subset"] = v.subset
    if v.port is not None:
        dest["port"] = {"number": v.port}
    return dest


def variant_of(dest: Any, target: TrafficTarget) -> Variant | None:
    """The variant a ``Destination`` points at, or None."""
    if not isinstance(dest, dict) or not isinstance(dest.get("host"), str):
        return None
    host = canonical_host(dest["host"], target.namespace)
    port = (dest.get("port") or {}).get("number") if isinstance(dest.get("port"), dict) else None
    for v in target.variants:
        if canonical_host(v.destination, target.namespace) != host or dest.get("subset") != v.subset:
            continue
        if v.port is not None and port != v.port:
            continue
        return v
    return None


def _error(message: str, target: TrafficTarget, route: str,
           variant: str | None = None) -> UnsupportedTargetError:
    where = f"VirtualService {target.namespace}/{target.name} route {route!r}"
    return UnsupportedTargetError(f"{where}: {message}", kind=KIND, namespace=target.namespace,
                                  name=target.name, route=route, variant=variant)


def _entries(base: Item, route: str, target: TrafficTarget) -> dict[str, Item]:
    """The current ``route[]`` entries of a base route, by variant; checks that it forwards."""
    for key in NOT_FORWARDING:
        if key in base:
            raise _error(f"uses {key!r}; traffic can only be split on a route with 'route' destinations",
                         target, route)
    entries = base.get("route")
    if not isinstance(entries, list) or not entries:
        raise _error("has no 'route' destinations to weight", target, route)
    by_variant: dict[str, Item] = {}
    for entry in entries:
        dest = entry.get("destination") if isinstance(entry, dict) else None
        v = variant_of(dest, target)
        if v is None:
            host = dest.get("host") if isinstance(dest, dict) else dest
            known = [destination(v) for v in target.variants]
            raise _error(f"sends traffic to {host!r}, which is not a variant of the experiment {known}; "
                         "remove that destination or add it as a variant", target, route)
        if v.name in by_variant:
            raise _error(f"lists the destination of variant {v.name!r} twice", target, route, v.name)
        by_variant[v.name] = entry
    return by_variant


def _is_ours(mirror: Any, target: TrafficTarget) -> bool:
    return variant_of(mirror, target) is not None


def without_our_mirrors(route: Item, target: TrafficTarget) -> Item:
    """A shallow copy of ``route`` without the mirror fields this router owns."""
    result = dict(route)
    if "mirror" not in result or _is_ours(result.get("mirror"), target):
        for key in SINGLE_MIRROR_FIELDS:
            result.pop(key, None)
    mirrors = result.get("mirrors")
    if isinstance(mirrors, list):
        kept = [m for m in mirrors if not (isinstance(m, dict) and _is_ours(m.get("destination"), target))]
        if len(kept) != len(mirrors):
            if kept:
                result["mirrors"] = kept
            else:
                del result["mirrors"]
    return result


def _with_mirrors(route: Item, route_name: str, target: TrafficTarget, mirrors: Sequence[Mirror]) -> Item:
    result = without_our_mirrors(route, target)
    if not mirrors:
        return result
    foreign = "mirror" in result or bool(result.get("mirrors"))
    if len(mirrors) == 1 and not foreign:
        result["mirror"] = destination(target.variant(mirrors[0].variant))
        result["mirrorPercentage"] = {"value": mirrors[0].percent}
        return result
    if "mirror" in result:
        raise _error(f"already mirrors to {result['mirror'].get('host')!r} with 'mirror'; move that mirror "
                     "to 'mirrors' so that modelrollout can add its own next to it", target, route_name)
    ours = [{"destination": destination(target.variant(m.variant)), "percentage": {"value": m.percent}}
            for m in mirrors]
    result["mirrors"] = list(result.get("mirrors") or []) + ours
    return result


def _sticky_match(base: Item, header: str, regex: str, target: TrafficTarget, route: str) -> list[Item]:
    matches = base.get("match")
    condition = {"regex": regex}
    if not matches:
        return [{"headers": {header: condition}}]
    result = []
    for match in matches:
        headers = dict(match.get("headers") or {})
        if header in headers:
            raise _error(f"already matches on the bucket header {header!r}; a sticky split adds that "
                         "match itself", target, route)
        headers[header] = condition
        result.append({**match, "headers": headers})
    return result


def render_route(base: Item, route: str, target: TrafficTarget, state: RouteState) -> list[Item]:
    """The generated sticky routes (if any) and the new base route for ``state`` (pure)."""
    existing = _entries(base, route, target)
    entries = []
    for v in target.variants:
        weight = state.weights[v.name]
        if weight > 0:
            entry = dict(existing.get(v.name) or {"destination": destination(v)})
            entry["weight"] = weight
            entries.append(entry)
    new_base = dict(base)
    new_base["route"] = entries
    new_base = _with_mirrors(new_base, route, target, state.mirrors)
    generated: list[Item] = []
    if target.bucket_header and len(state.live()) > 1:
        buckets = assign_buckets(target.names, target.champion, state.weights)
        plain = without_our_mirrors(new_base, target)
        for v in [*target.challengers, target.variant(target.champion)]:
            if not buckets[v.name]:
                continue
            entry = next(e for e in entries if variant_of(e["destination"], target) == v)
            sticky: Item = {"name": sticky_name(route, v.name),
                            "match": _sticky_match(base, target.bucket_header, buckets_regex(buckets[v.name]),
                                                   target, route)}
            sticky.update({k: copy.deepcopy(val) for k, val in plain.items()
                           if k not in ("name", "match", "route")})
            sticky["route"] = [{**copy.deepcopy(entry), "weight": 100}]
            generated.append(sticky)
    return [*generated, new_base]


def build_http(http: Sequence[Item], target: TrafficTarget, state: RouteState) -> list[Item]:
    """The new ``spec.http`` of a VirtualService for ``state`` (pure; see the module docstring)."""
    validate_state(target, state)
    return build_items(http, target, ordered(target, state), render_route, kind=KIND, noun="route")


def _percent(value: Any) -> float | None:
    if isinstance(value, dict):
        value = value.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def read_route(base: Item, route: str, target: TrafficTarget) -> RouteState | None:
    """The per-request split and the mirrors of a base route (None when all weights are zero)."""
    existing = _entries(base, route, target)
    raw: dict[str, int | float] = {}
    for v in target.variants:
        entry = existing.get(v.name)
        weight = entry.get("weight") if entry is not None else 0
        if entry is not None and weight is None:
            weight = 100 if len(existing) == 1 else 0
        raw[v.name] = weight if isinstance(weight, int | float) and weight > 0 else 0
    if sum(raw.values()) <= 0:
        return None
    mirrors: list[Mirror] = []
    mirror = base.get("mirror")
    mirrored = variant_of(mirror, target) if mirror is not None else None
    if mirrored is not None:
        given = [p for p in (_percent(base.get(k)) for k in SINGLE_MIRROR_FIELDS[1:]) if p is not None]
        percent = given[0] if given else 100.0
        if 0 < percent <= 100 and mirrored.name != target.champion:
            mirrors.append(Mirror(mirrored.name, percent))
    for m in base.get("mirrors") or []:
        w = variant_of(m.get("destination"), target) if isinstance(m, dict) else None
        if w is None or w.name == target.champion or any(x.variant == w.name for x in mirrors):
            continue
        value = _percent(m.get("percentage"))
        share = 100.0 if value is None else value
        if 0 < share <= 100:
            mirrors.append(Mirror(w.name, share))
    return ordered(target, RouteState(largest_remainder(raw, 100), tuple(mirrors)))


def routing_fingerprint(items: Sequence[Item], target: TrafficTarget) -> Any:
    """What the owned routing of a route slice is: destinations, mirrors, sticky buckets."""
    *generated, base = items
    ours = {k: base.get(k) for k in ("route", *SINGLE_MIRROR_FIELDS, "mirrors")}
    sticky = []
    header = target.bucket_header or ""
    for item in generated:
        regexes = [((m.get("headers") or {}).get(header) or {}).get("regex", "")
                   for m in item.get("match") or []]
        sticky.append((item.get("name"), item.get("route"), tuple(matched_buckets(r) for r in regexes)))
    return ours, sticky


class IstioRouter(RouteListRouter):
    """Weights, mirrors and sticky routes on the named routes of a VirtualService."""

    provider = "istio"
    group = "networking.istio.io"
    version = "v1"
    plural = "virtualservices"
    kind = KIND
    list_field = "http"
    noun = "route"

    def render(self, base: Item, route: str, target: TrafficTarget, state: RouteState) -> list[Item]:
        return render_route(base, route, target, state)

    def read(self, base: Item, route: str, target: TrafficTarget) -> RouteState | None:
        return read_route(base, route, target)

    def fingerprint(self, items: Sequence[Item], target: TrafficTarget) -> Any:
        return routing_fingerprint(items, target)


__all__ = ["IstioRouter", "build_http", "canonical_host", "owner", "read_route", "render_route"]
