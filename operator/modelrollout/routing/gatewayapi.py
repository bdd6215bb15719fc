"""Gateway API router: weights, mirrors and the sticky split on an ``HTTPRoute``.

It edits ``gateway.networking.k8s.io/v1`` HTTPRoutes (the storage version of the v1.6.1 standard
CRD). Rules are selected by ``spec.rules[].name`` (a field since Gateway API v1.2; give the rule a
name to let modelrollout weight it).

**What it owns.** For each selected rule:

* ``backendRefs[]``: one entry per variant with a positive weight, in the target's order. An entry
  that already points at the variant's Service is kept with every other field (``port``,
  ``filters``, ``namespace``); only ``weight`` is set. A new entry is written in full
  (``group: ""``, ``kind: Service``, ``name``, ``port``, ``weight``) so that the API server's
  defaults do not make it look changed. Its port is the variant's, or else that of the champion's
  entry in the rule. Zero-weight variants are left out. An entry for another backend is an error.
* ``filters[]`` entries of type ``RequestMirror`` whose ``backendRef`` is a variant's Service.
  Mirrors of your own are kept. Ours are appended after your filters, one per mirrored variant,
  with ``percent`` (or ``fraction`` over 10000 when the percent is not an integer).
* The generated sticky rules ``modelrollout-sticky.<rule>.<variant>``, placed just before the rule.

Every other field, rule and their order are left untouched.

**Sticky split.** The split is written as header matches, as for Istio: a rule per variant, a copy
of the selected rule (minus our mirrors) whose every ``matches[]`` entry gets the extra header
match ``{name: <h>, type: RegularExpression, value: <regex>}``, sending everything to that variant.
The Gateway API does not pick the first rule in list order: it picks the most specific match, and
"largest number of header matches" ranks above list order, so a generated rule (the selected
rule's match plus one header) always wins over the selected rule for requests that carry the
header, and requests without it fall through to the weighted rule. ``RegularExpression`` header
matching has implementation-specific support (Envoy-based gateways, Istio, Envoy Gateway and others
implement it with RE2); a gateway that does not support it reports the route as not accepted. Exact
matches would need one match per bucket, more than the 64 matches a rule may have. The generated
rules count against the CRD's limits (16 rules, 128 matches in all); going over raises
:class:`~modelrollout.routing.errors.UnsupportedTargetError`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from modelrollout.routing._routelist import Item, RouteListRouter, build_items, sticky_name
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

KIND = "HTTPRoute"
MAX_RULES = 16
MAX_MATCHES_PER_RULE = 64
MAX_MATCHES = 128
MAX_NAME = 253
DEFAULT_MATCH: dict[str, Any] = {"path": {"type": "PathPrefix", "value": "/"}}


def _error(message: str, target: TrafficTarget, rule: str | None,
           variant: str | None = None) -> UnsupportedTargetError:
    where = f" rule {rule!r}" if rule else ""
    return UnsupportedTargetError(f"HTTPRoute {target.namespace}/{target.name}{where}: {message}", kind=KIND,
                                  namespace=target.namespace, name=target.name, route=rule, variant=variant)


def variant_of(ref: Any, target: TrafficTarget) -> Variant | None:
    """The variant whose Service a ``backendRef`` points at, or None."""
    if not isinstance(ref, dict):
        return None
    if ref.get("group", "") != "" or ref.get("kind", "Service") != "Service":
        return None
    if ref.get("namespace") not in (None, target.namespace):
        return None
    for v in target.variants:
        if ref.get("name") == v.destination and (v.port is None or ref.get("port") == v.port):
            return v
    return None


def _refs(base: Item, rule: str, target: TrafficTarget) -> dict[str, Item]:
    if any(isinstance(f, dict) and f.get("type") == "RequestRedirect" for f in base.get("filters") or []):
        raise _error("redirects (RequestRedirect filter); traffic can only be split on backendRefs",
                     target, rule)
    refs = base.get("backendRefs") or []
    by_variant: dict[str, Item] = {}
    for ref in refs:
        v = variant_of(ref, target)
        if v is None:
            what = {k: ref.get(k) for k in ("group", "kind", "namespace", "name", "port")
                    if isinstance(ref, dict) and k in ref}
            raise _error(f"has the backendRef {what}, which is not a variant's Service "
                         f"{[v.destination for v in target.variants]}; remove it or add it as a variant",
                         target, rule)
        if v.name in by_variant:
            raise _error(f"lists the Service of variant {v.name!r} twice", target, rule, v.name)
        by_variant[v.name] = ref
    return by_variant


def _port(v: Variant, existing: dict[str, Item], target: TrafficTarget, rule: str) -> int:
    if v.port is not None:
        return v.port
    for name in (v.name, target.champion, *target.names):
        port = (existing.get(name) or {}).get("port")
        if isinstance(port, int):
            return port
    raise _error(f"needs a port for the Service of variant {v.name!r}: set the variant's port", target, rule,
                 v.name)


def backend_ref(v: Variant, port: int) -> dict[str, Any]:
    """A full ``backendRef`` to variant ``v``'s Service (the fields the API server would default)."""
    return {"group": "", "kind": "Service", "name": v.destination, "port": port}


def _is_our_mirror(f: Any, target: TrafficTarget) -> bool:
    return (isinstance(f, dict) and f.get("type") == "RequestMirror"
            and variant_of((f.get("requestMirror") or {}).get("backendRef"), target) is not None)


def mirror_filter(v: Variant, port: int, percent: float) -> dict[str, Any]:
    """A ``RequestMirror`` filter sending ``percent`` of the requests to variant ``v``."""
    spec: dict[str, Any] = {"backendRef": backend_ref(v, port)}
    if float(percent).is_integer():
        spec["percent"] = int(percent)
    else:
        spec["fraction"] = {"numerator": round(percent * 100), "denominator": 10000}
    return {"type": "RequestMirror", "requestMirror": spec}


def without_our_mirrors(rule: Item, target: TrafficTarget) -> Item:
    """A shallow copy of ``rule`` without the RequestMirror filters this router owns."""
    result = dict(rule)
    filters = result.get("filters")
    if isinstance(filters, list):
        kept = [f for f in filters if not _is_our_mirror(f, target)]
        if len(kept) != len(filters):
            if kept:
                result["filters"] = kept
            else:
                del result["filters"]
    return result


def _sticky_matches(base: Item, header: str, regex: str, target: TrafficTarget, rule: str) -> list[Item]:
    result = []
    for match in base.get("matches") or [DEFAULT_MATCH]:
        headers = list(match.get("headers") or [])
        if any(str(h.get("name", "")).lower() == header for h in headers):
            raise _error(f"already matches on the bucket header {header!r}; a sticky split adds that match "
                         "itself", target, rule)
        headers.append({"name": header, "type": "RegularExpression", "value": regex})
        result.append({**copy.deepcopy(match), "headers": headers})
    return result


def render_rule(base: Item, rule: str, target: TrafficTarget, state: RouteState) -> list[Item]:
    """The generated sticky rules (if any) and the new selected rule for ``state`` (pure)."""
    existing = _refs(base, rule, target)
    refs = []
    for v in target.variants:
        weight = state.weights[v.name]
        if weight > 0:
            ref = dict(existing.get(v.name) or backend_ref(v, _port(v, existing, target, rule)))
            ref["weight"] = weight
            refs.append(ref)
    new_base = without_our_mirrors(base, target)
    new_base["backendRefs"] = refs
    if state.mirrors:
        mirrored = [target.variant(m.variant) for m in state.mirrors]
        ours = [mirror_filter(v, _port(v, existing, target, rule), m.percent)
                for v, m in zip(mirrored, state.mirrors, strict=True)]
        new_base["filters"] = list(new_base.get("filters") or []) + ours
    generated: list[Item] = []
    if target.bucket_header and len(state.live()) > 1:
        buckets = assign_buckets(target.names, target.champion, state.weights)
        plain = without_our_mirrors(new_base, target)
        for v in [*target.challengers, target.variant(target.champion)]:
            if not buckets[v.name]:
                continue
            ref = next(r for r in refs if variant_of(r, target) == v)
            name = sticky_name(rule, v.name)
            if len(name) > MAX_NAME:
                raise _error(f"the generated rule name {name!r} is longer than {MAX_NAME} characters; "
                             "use a shorter rule name", target, rule)
            regex = buckets_regex(buckets[v.name])
            sticky: Item = {"name": name,
                            "matches": _sticky_matches(base, target.bucket_header, regex, target, rule)}
            sticky.update({k: copy.deepcopy(val) for k, val in plain.items()
                           if k not in ("name", "matches", "backendRefs")})
            sticky["backendRefs"] = [{**copy.deepcopy(ref), "weight": 1}]
            generated.append(sticky)
    return [*generated, new_base]


def check_limits(rules: Sequence[Item], target: TrafficTarget) -> None:
    """Raise when ``rules`` break the HTTPRoute CRD's limits on rules and matches."""
    if len(rules) > MAX_RULES:
        raise _error(f"a sticky split needs {len(rules)} rules, and an HTTPRoute may have {MAX_RULES}; "
                     "select fewer rules or use fewer challengers", target, None)
    counts = [len(r.get("matches") or [DEFAULT_MATCH]) for r in rules]
    if max(counts, default=0) > MAX_MATCHES_PER_RULE or sum(counts) > MAX_MATCHES:
        raise _error(f"a sticky split needs {sum(counts)} matches (at most {max(counts)} in a rule); an "
                     f"HTTPRoute may have {MAX_MATCHES} ({MAX_MATCHES_PER_RULE} in a rule)", target, None)


def build_rules(rules: Sequence[Item], target: TrafficTarget, state: RouteState) -> list[Item]:
    """The new ``spec.rules`` of an HTTPRoute for ``state`` (pure; see the module docstring)."""
    validate_state(target, state)
    result = build_items(rules, target, ordered(target, state), render_rule, kind=KIND, noun="rule")
    check_limits(result, target)
    return result


def _mirror_percent(spec: dict[str, Any]) -> float:
    if isinstance(spec.get("percent"), int):
        return float(spec["percent"])
    fraction = spec.get("fraction")
    if isinstance(fraction, dict) and isinstance(fraction.get("numerator"), int):
        denominator = fraction.get("denominator", 100)
        if isinstance(denominator, int) and denominator > 0:
            return 100.0 * int(fraction["numerator"]) / denominator
    return 100.0


def read_rule(base: Item, rule: str, target: TrafficTarget) -> RouteState | None:
    """The per-request split and the mirrors of a selected rule (None when all weights are zero)."""
    existing = _refs(base, rule, target)
    raw: dict[str, int | float] = {}
    for v in target.variants:
        ref = existing.get(v.name)
        weight = ref.get("weight", 1) if ref is not None else 0
        raw[v.name] = weight if isinstance(weight, int) and weight > 0 else 0
    if sum(raw.values()) <= 0:
        return None
    mirrors: list[Mirror] = []
    for f in base.get("filters") or []:
        if not _is_our_mirror(f, target):
            continue
        mirrored = variant_of(f["requestMirror"]["backendRef"], target)
        percent = _mirror_percent(f["requestMirror"])
        if mirrored is not None and mirrored.name != target.champion and 0 < percent <= 100 \
                and not any(m.variant == mirrored.name for m in mirrors):
            mirrors.append(Mirror(mirrored.name, percent))
    return ordered(target, RouteState(largest_remainder(raw, 100), tuple(mirrors)))


def routing_fingerprint(items: Sequence[Item], target: TrafficTarget) -> Any:
    """What the owned routing of a rule slice is: backends, our mirrors, sticky buckets."""
    *generated, base = items
    ours = (base.get("backendRefs"), [f for f in base.get("filters") or [] if _is_our_mirror(f, target)])
    sticky = []
    header = target.bucket_header or ""
    for item in generated:
        regexes = [next((h.get("value", "") for h in m.get("headers") or [] if h.get("name") == header), "")
                   for m in item.get("matches") or []]
        sticky.append((item.get("name"), item.get("backendRefs"), tuple(matched_buckets(r) for r in regexes)))
    return ours, sticky


class GatewayAPIRouter(RouteListRouter):
    """Weights, RequestMirror filters and sticky rules on the named rules of an HTTPRoute."""

    provider = "gatewayAPI"
    group = "gateway.networking.k8s.io"
    version = "v1"
    plural = "httproutes"
    kind = KIND
    list_field = "rules"
    noun = "rule"

    def render(self, base: Item, route: str, target: TrafficTarget, state: RouteState) -> list[Item]:
        return render_rule(base, route, target, state)

    def read(self, base: Item, route: str, target: TrafficTarget) -> RouteState | None:
        return read_rule(base, route, target)

    def fingerprint(self, items: Sequence[Item], target: TrafficTarget) -> Any:
        return routing_fingerprint(items, target)

    def check_limits(self, items: Sequence[Item], target: TrafficTarget) -> None:
        check_limits(items, target)


__all__ = ["GatewayAPIRouter", "build_rules", "read_rule", "render_rule"]
