"""Tests of modelrollout.routing.gatewayapi: the pure ``spec.rules`` builder, reading, errors, 409s."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes import client

from modelrollout.routing import (
    GatewayAPIRouter,
    Mirror,
    RetryPolicy,
    RouteNotFoundError,
    RouteState,
    TrafficTarget,
    UnsupportedTargetError,
    Variant,
)
from modelrollout.routing.base import STICKY_PREFIX
from modelrollout.routing.buckets import assign_buckets
from modelrollout.routing.gatewayapi import build_rules, read_rule
from modelrollout.routing.istio import owner

pytestmark = pytest.mark.unit

HEADER = "x-modelrollout-bucket"


def target(n: int = 1, *, rules: tuple[str, ...] = ("primary",), header: str | None = None) -> TrafficTarget:
    variants = tuple(Variant(f"v{i}", f"ranker-v{i}") for i in range(n + 1))
    return TrafficTarget("shop", "ranker", variants, "v0", rules, header)


def ref(name: str, weight: int = 1, **extra: Any) -> dict[str, Any]:
    return {"group": "", "kind": "Service", "name": name, "port": 8080, "weight": weight, **extra}


def rule(name: str = "primary", **extra: Any) -> dict[str, Any]:
    return {"name": name, "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [ref("ranker-v0", 100)], **extra}


def backends(r: dict[str, Any]) -> list[tuple[str, int]]:
    return [(b["name"], b["weight"]) for b in r["backendRefs"]]


def pick(rules: list[dict[str, Any]], path: str, headers: dict[str, str]) -> dict[str, Any]:
    """The rule a conformant gateway picks: longest path prefix, then most header matches, then order."""
    best: tuple[int, int, int] | None = None
    chosen: dict[str, Any] | None = None
    for index, r in enumerate(rules):
        for m in r.get("matches") or [{"path": {"type": "PathPrefix", "value": "/"}}]:
            prefix = (m.get("path") or {}).get("value", "/")
            if not path.startswith(prefix):
                continue
            ok = True
            for h in m.get("headers") or []:
                value = headers.get(h["name"])
                if value is None:
                    ok = False
                elif h.get("type", "Exact") == "RegularExpression":
                    ok &= re.fullmatch(h["value"], value) is not None
                else:
                    ok &= value == h["value"]
            key = (len(prefix), len(m.get("headers") or []), -index)
            if ok and (best is None or key > best):
                best, chosen = key, r
    assert chosen is not None, (path, headers)
    return chosen


def test_weights_mirrors_and_kept_fields() -> None:
    t = target(2)
    timeouts = {"request": "10s"}
    header_filter = {"type": "RequestHeaderModifier",
                     "requestHeaderModifier": {"set": [{"name": "a", "value": "b"}]}}
    original = rule(timeouts=timeouts, filters=[header_filter])
    original["backendRefs"] = [ref("ranker-v0", 100, filters=[header_filter])]
    other = {"name": "docs", "matches": [{"path": {"type": "PathPrefix", "value": "/docs"}}],
             "backendRefs": [ref("docs")]}
    rules = [other, original]
    out = build_rules(rules, t, RouteState({"v0": 90, "v1": 10, "v2": 0}, (Mirror("v2", 12.5),)))
    assert out[0] is other
    assert backends(out[1]) == [("ranker-v0", 90), ("ranker-v1", 10)]
    assert out[1]["backendRefs"][0]["filters"] == [header_filter]
    assert out[1]["timeouts"] == timeouts
    assert out[1]["filters"] == [header_filter, {
        "type": "RequestMirror",
        "requestMirror": {"backendRef": {"group": "", "kind": "Service", "name": "ranker-v2", "port": 8080},
                          "fraction": {"numerator": 1250, "denominator": 10000}}}]
    assert read_rule(out[1], "primary", t) == RouteState({"v0": 90, "v1": 10, "v2": 0}, (Mirror("v2", 12.5),))
    back = build_rules(out, t, RouteState({"v0": 100, "v1": 0, "v2": 0}))
    assert back == rules
    whole = build_rules(rules, t, RouteState({"v0": 100, "v1": 0, "v2": 0}, (Mirror("v1"),)))
    assert whole[1]["filters"][-1]["requestMirror"]["percent"] == 100


def test_a_mirror_of_your_own_is_kept() -> None:
    t = target()
    audit = {"type": "RequestMirror",
             "requestMirror": {"backendRef": {"name": "audit", "port": 80}, "percent": 1}}
    rules = [rule(filters=[audit])]
    on = build_rules(rules, t, RouteState({"v0": 100, "v1": 0}, (Mirror("v1", 30),)))
    assert on[0]["filters"][0] == audit
    assert len(on[0]["filters"]) == 2
    assert read_rule(on[0], "primary", t) == RouteState({"v0": 100, "v1": 0}, (Mirror("v1", 30),))
    assert build_rules(on, t, RouteState({"v0": 100, "v1": 0})) == rules


def test_sticky_rules_win_by_header_count() -> None:
    t = target(header=HEADER)
    out = build_rules([rule()], t, RouteState({"v0": 75, "v1": 25}))
    assert [r["name"] for r in out] == [f"{STICKY_PREFIX}primary.v1", f"{STICKY_PREFIX}primary.v0", "primary"]
    assert out[0]["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}, "headers": [
        {"name": HEADER, "type": "RegularExpression", "value": "^([0-9]|1[0-9]|2[0-4])$"}]}]
    assert out[0]["backendRefs"] == [ref("ranker-v1", 1)]
    # Even listed after the weighted rule, the generated rules win: precedence is not list order.
    reordered = [out[2], out[0], out[1]]
    for rules in (out, reordered):
        for b in range(100):
            chosen = pick(rules, "/predict", {HEADER: str(b)})
            assert chosen["backendRefs"][0]["name"] == ("ranker-v1" if b < 25 else "ranker-v0")
        assert pick(rules, "/predict", {})["name"] == "primary"


def test_rules_without_matches_get_the_default_match() -> None:
    t = target(header=HEADER)
    bare = {"name": "primary", "backendRefs": [ref("ranker-v0")]}
    out = build_rules([bare], t, RouteState({"v0": 50, "v1": 50}))
    assert out[0]["matches"][0]["path"] == {"type": "PathPrefix", "value": "/"}


def test_errors() -> None:
    t = target()
    state = RouteState({"v0": 90, "v1": 10})
    with pytest.raises(RouteNotFoundError, match="no rule named 'primary'"):
        build_rules([rule("other")], t, state)
    foreign = rule()
    foreign["backendRefs"].append(ref("legacy"))
    with pytest.raises(UnsupportedTargetError, match="not a variant's Service"):
        build_rules([foreign], t, state)
    redirect = rule(filters=[{"type": "RequestRedirect", "requestRedirect": {"statusCode": 301}}])
    with pytest.raises(UnsupportedTargetError, match="RequestRedirect"):
        build_rules([redirect], t, state)
    no_port = {"name": "primary", "backendRefs": [{"name": "ranker-v0"}]}
    with pytest.raises(UnsupportedTargetError, match="needs a port"):
        build_rules([no_port], t, state)
    sticky = target(header=HEADER)
    already = rule()
    already["matches"][0]["headers"] = [{"name": "X-Modelrollout-Bucket", "value": "1"}]
    with pytest.raises(UnsupportedTargetError, match="bucket header"):
        build_rules([already], sticky, state)
    many = target(3, rules=tuple(f"r{i}" for i in range(4)), header=HEADER)
    rules = [rule(f"r{i}") for i in range(4)]
    with pytest.raises(UnsupportedTargetError, match="16"):
        build_rules(rules, many, RouteState({"v0": 40, "v1": 20, "v2": 20, "v3": 20}))
    wide = rule()
    wide["matches"] = [{"path": {"type": "PathPrefix", "value": f"/p{i}"}} for i in range(40)]
    with pytest.raises(UnsupportedTargetError, match="128"):
        build_rules([wide], target(3, header=HEADER), RouteState({"v0": 40, "v1": 20, "v2": 20, "v3": 20}))


Scenario = tuple[TrafficTarget, list[dict[str, Any]], RouteState, RouteState]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(1, 3))
    t = target(n, header=draw(st.sampled_from([None, HEADER])))

    def state() -> RouteState:
        cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=n, max_size=n)))
        parts = [b - a for a, b in zip([0, *cuts], [*cuts, 100], strict=True)]
        mirrored = draw(st.lists(st.sampled_from([v.name for v in t.challengers]), unique=True, max_size=2))
        return RouteState(dict(zip(t.names, parts, strict=True)), tuple(Mirror(m, 50) for m in mirrored))

    users = [{"name": u, "matches": [{"path": {"type": "PathPrefix", "value": f"/{u}"}}],
              "backendRefs": [ref(f"{u}-svc")]}
             for u in draw(st.lists(st.sampled_from(["docs", "admin", "health"]), unique=True, max_size=3))]
    rules = list(draw(st.permutations([*users, rule()])))
    earlier = state()
    if draw(st.booleans()):
        rules = build_rules(rules, t, earlier)
    return t, rules, earlier, state()


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_build_rules_properties(scenario: Scenario) -> None:
    t, rules, earlier, state = scenario
    snapshot = json.dumps(rules, sort_keys=True)
    out = build_rules(rules, t, state)
    assert json.dumps(rules, sort_keys=True) == snapshot

    def users(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in items if r["name"] != "primary" and not owner(r["name"], t.routes)]
    assert users(out) == users(rules)
    base = next(r for r in out if r["name"] == "primary")
    assert sum(w for _, w in backends(base)) == 100
    assert read_rule(base, "primary", t) == state
    live = [n for n in t.names if state.weights[n] > 0]
    buckets = assign_buckets(t.names, t.champion, state.weights)
    if t.bucket_header and len(live) > 1:
        for b in range(100):
            chosen = pick(out, "/predict", {HEADER: str(b)})
            assert [x["name"] for x in chosen["backendRefs"]] in ([f"ranker-{n}"] for n in t.names
                                                                    if b in buckets[n])
    else:
        assert not [r for r in out if owner(r["name"], t.routes)]
    assert pick(out, "/predict", {}) is base
    assert build_rules(out, t, state) == out
    assert build_rules(build_rules(rules, t, earlier), t, state) == out


class FakeCustomObjects(client.CustomObjectsApi):
    def __init__(self, obj: dict[str, Any], conflicts: int) -> None:
        self.obj, self.conflicts, self.patches = obj, conflicts, 0

    def get_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return copy.deepcopy(self.obj)

    def patch_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        body = args[5]
        self.patches += 1
        if self.conflicts:
            self.conflicts -= 1
            raise client.ApiException(status=409, reason="Conflict")
        self.obj["spec"]["rules"] = body["spec"]["rules"]
        return copy.deepcopy(self.obj)


def test_a_conflict_is_retried() -> None:
    api = FakeCustomObjects({"metadata": {"resourceVersion": "3"}, "spec": {"rules": [rule()]}}, conflicts=1)
    router = GatewayAPIRouter(api, retry=RetryPolicy(sleep=lambda _s: None))
    result = router.apply(target(), RouteState({"v0": 50, "v1": 50}))
    assert result.changed
    assert result.attempts == 2
    assert api.patches == 2
    assert backends(api.obj["spec"]["rules"][0]) == [("ranker-v0", 50), ("ranker-v1", 50)]
