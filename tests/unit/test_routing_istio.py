"""Tests of modelrollout.routing.istio: the pure ``spec.http`` builder, reading, errors, 409 retries."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes import client

from modelrollout.errors import FencedError, InvalidInputError
from modelrollout.routing import (
    ConflictError,
    IstioRouter,
    Mirror,
    ObjectNotFoundError,
    RetryPolicy,
    RouteNotFoundError,
    RouteState,
    TrafficTarget,
    UnsupportedTargetError,
    Variant,
)
from modelrollout.routing.base import ROUTES_ANNOTATION, STICKY_PREFIX
from modelrollout.routing.buckets import assign_buckets
from modelrollout.routing.istio import build_http, canonical_host, owner, read_route

pytestmark = pytest.mark.unit

HEADER = "x-modelrollout-bucket"
USER_FIELDS: dict[str, Any] = {"timeout": "2s", "retries": {"attempts": 3, "perTryTimeout": "1s"},
               "headers": {"request": {"set": {"x-a": "1"}}}, "rewrite": {"uri": "/v1"},
               "corsPolicy": {"allowOrigins": [{"exact": "https://shop"}]}}


def target(n: int = 1, *, routes: tuple[str, ...] = ("primary",), header: str | None = None,
           **kw: Any) -> TrafficTarget:
    variants = tuple(Variant(f"v{i}", f"ranker-v{i}") for i in range(n + 1))
    return TrafficTarget("shop", "ranker", variants, "v0", routes, header, **kw)


def base_route(name: str = "primary", **extra: Any) -> dict[str, Any]:
    return {"name": name, "match": [{"uri": {"prefix": "/"}}], **extra,
            "route": [{"destination": {"host": "ranker-v0"}, "weight": 100}]}


def destinations(route: dict[str, Any]) -> list[tuple[str, int]]:
    return [(e["destination"]["host"], e.get("weight", 100)) for e in route["route"]]


def first_match(http: list[dict[str, Any]], path: str, headers: dict[str, str]) -> dict[str, Any]:
    """The route Istio would pick: the first whose match (uri prefix, header regex/exact) holds."""
    for route in http:
        for match in route.get("match") or [{}]:
            prefix = (match.get("uri") or {}).get("prefix")
            if prefix is not None and not path.startswith(prefix):
                continue
            ok = True
            for name, condition in (match.get("headers") or {}).items():
                value = headers.get(name)
                if value is None:
                    ok = False
                elif "regex" in condition:
                    ok &= re.fullmatch(condition["regex"], value) is not None
                elif "exact" in condition:
                    ok &= value == condition["exact"]
            if ok:
                return route
    raise AssertionError(f"no route matches {path} {headers}")


# --- examples ----------------------------------------------------------------------------------------


def test_weights_are_set_and_other_fields_and_routes_kept() -> None:
    user = {"name": "admin", "match": [{"uri": {"prefix": "/admin"}}],
            "route": [{"destination": {"host": "adm"}}]}
    http = [user, base_route(**USER_FIELDS), {"name": "fallback", "route": [{"destination": {"host": "x"}}]}]
    before = copy.deepcopy(http)
    out = build_http(http, target(), RouteState({"v0": 75, "v1": 25}))
    assert http == before  # pure: the input is not modified
    assert out[0] is http[0]
    assert out[2] is http[2]
    assert destinations(out[1]) == [("ranker-v0", 75), ("ranker-v1", 25)]
    assert {k: out[1][k] for k in USER_FIELDS} == USER_FIELDS
    assert out[1]["match"] == http[1]["match"]
    assert list(out[1]) == list(http[1])  # key order kept
    assert read_route(out[1], "primary", target()) == RouteState({"v0": 75, "v1": 25})


def test_the_documented_sticky_split() -> None:
    t = target(header=HEADER)
    out = build_http([base_route(timeout="2s")], t, RouteState({"v0": 75, "v1": 25}))
    assert [r["name"] for r in out] == [f"{STICKY_PREFIX}primary.v1", f"{STICKY_PREFIX}primary.v0", "primary"]
    v1, v0, base = out
    assert v1["match"] == [{"uri": {"prefix": "/"},
                            "headers": {HEADER: {"regex": "^([0-9]|1[0-9]|2[0-4])$"}}}]
    assert v1["route"] == [{"destination": {"host": "ranker-v1"}, "weight": 100}]
    assert v1["timeout"] == "2s"
    assert v0["match"][0]["headers"][HEADER]["regex"] == "^(2[5-9]|[3-9][0-9])$"
    assert destinations(base) == [("ranker-v0", 75), ("ranker-v1", 25)]
    for b in range(100):
        chosen = first_match(out, "/predict", {HEADER: str(b)})
        assert chosen["route"][0]["destination"]["host"] == ("ranker-v1" if b < 25 else "ranker-v0")
    assert first_match(out, "/predict", {}) is base
    assert first_match(out, "/predict", {HEADER: "abc"}) is base


def test_no_sticky_routes_when_one_variant_has_everything() -> None:
    t = target(header=HEADER)
    split = build_http([base_route()], t, RouteState({"v0": 50, "v1": 50}))
    assert len(split) == 3
    for weights in ({"v0": 100, "v1": 0}, {"v0": 0, "v1": 100}):
        out = build_http(split, t, RouteState(weights))
        assert [r["name"] for r in out] == ["primary"]
        winner = "ranker-v0" if weights["v0"] else "ranker-v1"
        assert destinations(out[0]) == [(winner, 100)]


def test_restore_gives_back_the_plain_route() -> None:
    t = target(2, header=HEADER)
    original = [base_route(**USER_FIELDS)]
    during = build_http(original, t, RouteState({"v0": 50, "v1": 25, "v2": 25}, (Mirror("v1", 10),)))
    restored = build_http(during, t, RouteState({"v0": 100, "v1": 0, "v2": 0}))
    assert restored == original


def test_mirrors() -> None:
    t = target(2)
    one = build_http([base_route()], t, RouteState({"v0": 100, "v1": 0, "v2": 0}, (Mirror("v1", 100),)))
    assert one[0]["mirror"] == {"host": "ranker-v1"}
    assert one[0]["mirrorPercentage"] == {"value": 100.0}
    assert read_route(one[0], "primary", t) == RouteState({"v0": 100, "v1": 0, "v2": 0}, (Mirror("v1"),))
    two = build_http(one, t, RouteState({"v0": 100, "v1": 0, "v2": 0}, (Mirror("v1", 50), Mirror("v2", 5))))
    assert "mirror" not in two[0]
    assert "mirrorPercentage" not in two[0]
    assert two[0]["mirrors"] == [
        {"destination": {"host": "ranker-v1"}, "percentage": {"value": 50.0}},
        {"destination": {"host": "ranker-v2"}, "percentage": {"value": 5.0}},
    ]
    off = build_http(two, t, RouteState({"v0": 100, "v1": 0, "v2": 0}))
    assert off == [base_route()]


def test_a_mirror_of_your_own_is_kept() -> None:
    t = target()
    audit = {"destination": {"host": "audit-log"}, "percentage": {"value": 1.0}}
    http = [base_route(mirrors=[audit])]
    on = build_http(http, t, RouteState({"v0": 100, "v1": 0}, (Mirror("v1", 20),)))
    assert on[0]["mirrors"] == [audit, {"destination": {"host": "ranker-v1"}, "percentage": {"value": 20.0}}]
    assert "mirror" not in on[0]
    assert build_http(on, t, RouteState({"v0": 100, "v1": 0})) == http
    single = [base_route(mirror={"host": "audit-log"}, mirrorPercentage={"value": 1.0})]
    assert build_http(single, t, RouteState({"v0": 90, "v1": 10}))[0]["mirror"] == {"host": "audit-log"}
    with pytest.raises(UnsupportedTargetError, match="already mirrors to 'audit-log'"):
        build_http(single, t, RouteState({"v0": 100, "v1": 0}, (Mirror("v1"),)))


def test_reading_legacy_mirror_fields_and_missing_weights() -> None:
    t = target()
    route = base_route(mirror={"host": "ranker-v1.shop.svc.cluster.local"}, mirrorPercent=30)
    route["route"] = [{"destination": {"host": "ranker-v0"}}]
    assert read_route(route, "primary", t) == RouteState({"v0": 100, "v1": 0}, (Mirror("v1", 30),))
    route["route"] = [{"destination": {"host": "ranker-v0"}, "weight": 2},
                      {"destination": {"host": "ranker-v1"}, "weight": 1}]
    assert read_route(route, "primary", t) == RouteState({"v0": 67, "v1": 33}, (Mirror("v1", 30),))
    route["route"] = [{"destination": {"host": "ranker-v0"}, "weight": 0}]
    assert read_route(route, "primary", t) is None
    # The legacy field goes when modelrollout owns the mirror.
    out = build_http([route], t, RouteState({"v0": 100, "v1": 0}, (Mirror("v1", 40),)))
    assert "mirrorPercent" not in out[0]
    assert out[0]["mirrorPercentage"] == {"value": 40.0}


def test_hosts_subsets_and_ports() -> None:
    assert canonical_host("a", "ns") == canonical_host("a.ns", "x") == "a.ns.svc.cluster.local"
    assert canonical_host("a.ns.svc", "x") == "a.ns.svc.cluster.local"
    assert canonical_host("example.org.uk", "x") == "example.org.uk"
    t = TrafficTarget("shop", "ranker", (Variant("v6", "ranker", subset="v6", port=8080),
                                         Variant("v7", "ranker", subset="v7", port=8080)), "v6", ("primary",))
    fqdn = "ranker.shop.svc.cluster.local"
    entry = {"destination": {"host": fqdn, "subset": "v6", "port": {"number": 8080}}, "weight": 100,
             "headers": {"response": {"set": {"x-v": "6"}}}}
    route: dict[str, Any] = {"name": "primary", "route": [entry]}
    out = build_http([route], t, RouteState({"v6": 90, "v7": 10}))
    assert out[0]["route"] == [
        {"destination": {"host": "ranker.shop.svc.cluster.local", "subset": "v6", "port": {"number": 8080}},
         "weight": 90, "headers": {"response": {"set": {"x-v": "6"}}}},
        {"destination": {"host": "ranker", "subset": "v7", "port": {"number": 8080}}, "weight": 10},
    ]
    wrong_port = copy.deepcopy(route)
    wrong_port["route"][0]["destination"]["port"] = {"number": 9090}
    with pytest.raises(UnsupportedTargetError, match="not a variant"):
        build_http([wrong_port], t, RouteState({"v6": 90, "v7": 10}))


def test_errors_name_the_route() -> None:
    t = target()
    state = RouteState({"v0": 90, "v1": 10})
    with pytest.raises(RouteNotFoundError, match="no route named 'primary'") as missing:
        build_http([base_route("other")], t, state)
    assert missing.value.route == "primary"
    assert missing.value.kind == "VirtualService"
    foreign = base_route()
    foreign["route"].append({"destination": {"host": "legacy"}, "weight": 0})
    with pytest.raises(UnsupportedTargetError, match="'legacy', which is not a variant") as bad:
        build_http([foreign], t, state)
    assert bad.value.route == "primary"
    for key, value in (("delegate", {"name": "d"}), ("redirect", {"uri": "/x"}),
                       ("directResponse", {"status": 503})):
        route = base_route()
        route[key] = value
        with pytest.raises(UnsupportedTargetError, match=key):
            build_http([route], t, state)
    with pytest.raises(UnsupportedTargetError, match="no 'route' destinations"):
        build_http([{"name": "primary", "route": []}], t, state)
    with pytest.raises(UnsupportedTargetError, match="names must be unique"):
        build_http([base_route(), base_route()], t, state)
    twice = base_route()
    twice["route"].append({"destination": {"host": "ranker-v0.shop"}, "weight": 0})
    with pytest.raises(UnsupportedTargetError, match="twice"):
        build_http([twice], t, state)
    sticky = target(header=HEADER)
    header_route = base_route()
    header_route["match"] = [{"headers": {HEADER: {"exact": "1"}}}]
    with pytest.raises(UnsupportedTargetError, match="bucket header"):
        build_http([header_route], sticky, state)
    with pytest.raises(InvalidInputError, match="one entry per variant"):
        build_http([base_route()], t, RouteState({"v0": 100}))


def test_ownership_of_generated_routes() -> None:
    assert owner("modelrollout-sticky.primary.v7", ["primary"]) == "primary"
    assert owner("modelrollout-sticky.api.v1.v7", ["api.v1"]) == "api.v1"
    assert owner("modelrollout-sticky.api.v1.v7", ["api"]) is None
    assert owner("modelrollout-sticky.other.v7", ["primary"]) is None
    assert owner("primary", ["primary"]) is None
    # Another experiment's generated routes on the same VirtualService are left alone.
    t = target(header=HEADER)
    theirs = {"name": "modelrollout-sticky.other.v1", "route": [{"destination": {"host": "x"}}]}
    out = build_http([theirs, base_route("other"), base_route()], t, RouteState({"v0": 50, "v1": 50}))
    assert out[0] is theirs
    assert len(out) == 5


# --- properties ---------------------------------------------------------------------------------------


@st.composite
def weights_for(draw: st.DrawFn, names: list[str]) -> dict[str, int]:
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=len(names) - 1, max_size=len(names) - 1)))
    parts = [b - a for a, b in zip([0, *cuts], [*cuts, 100], strict=True)]
    return dict(zip(names, parts, strict=True))


@st.composite
def states(draw: st.DrawFn, t: TrafficTarget) -> RouteState:
    weights = draw(weights_for(list(t.names)))
    mirrored = draw(st.lists(st.sampled_from([v.name for v in t.challengers]), unique=True, max_size=2))
    percents = draw(st.lists(st.sampled_from([1.0, 12.5, 50.0, 100.0]), min_size=len(mirrored),
                             max_size=len(mirrored)))
    return RouteState(weights, tuple(Mirror(v, p) for v, p in zip(mirrored, percents, strict=True)))


Scenario = tuple[TrafficTarget, list[dict[str, Any]], RouteState, RouteState]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(1, 3))
    routes = tuple(draw(st.lists(st.sampled_from(["primary", "secondary", "api.v1"]), min_size=1, max_size=2,
                                 unique=True)))
    t = target(n, routes=routes, header=draw(st.sampled_from([None, HEADER])))
    user_names = draw(st.lists(st.sampled_from(["admin", "health", "docs", "modelrollout-sticky.other.v1"]),
                               unique=True, max_size=3))
    users = [{"name": u, "match": [{"uri": {"prefix": f"/{u}"}}],
              "route": [{"destination": {"host": f"{u}-svc"}}]} for u in user_names]
    bases = []
    for r in routes:
        extra = draw(st.fixed_dictionaries({}, optional={k: st.just(v) for k, v in USER_FIELDS.items()}))
        route = base_route(r, **extra)
        if draw(st.booleans()):
            route["match"] = [{"uri": {"prefix": "/predict"}}, {"uri": {"prefix": "/v2"}}]
        bases.append(route)
    http = draw(st.permutations(users + bases))
    earlier = draw(states(t))
    if draw(st.booleans()):
        http = build_http(http, t, earlier)  # start from an object modelrollout already wrote
    return t, list(http), earlier, draw(states(t))


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_build_http_properties(scenario: Scenario) -> None:
    t, http, _earlier, state = scenario
    snapshot = json.dumps(http, sort_keys=True)
    out = build_http(http, t, state)
    assert json.dumps(http, sort_keys=True) == snapshot  # the input is untouched

    # User routes: kept, identical, in their order.
    def users(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in items if r["name"] not in t.routes and owner(r["name"], t.routes) is None]
    assert users(out) == users(http)
    assert all(a is b for a, b in zip(users(out), users(http), strict=True))

    live = [n for n in t.names if state.weights[n] > 0]
    buckets = assign_buckets(t.names, t.champion, state.weights)
    for r in t.routes:
        i = next(k for k, item in enumerate(out) if item["name"] == r)
        base = out[i]
        assert sum(e["weight"] for e in base["route"]) == 100
        assert [e["destination"]["host"] for e in base["route"]] == [f"ranker-{n}" for n in live]
        assert read_route(base, r, t) == state
        original = next(item for item in http if item["name"] == r)
        owned = ("route", "mirror", "mirrorPercentage", "mirrors")
        assert {k: v for k, v in base.items() if k not in owned} == {
            k: v for k, v in original.items() if k not in owned}
        generated = [item for item in out if owner(item["name"], [r])]
        if t.bucket_header and len(live) > 1:
            assert out[i - len(generated):i] == generated  # just before the route
            covered: list[int] = []
            for item in generated:
                (entry,) = item["route"]
                variant = entry["destination"]["host"].removeprefix("ranker-")
                assert entry["weight"] == 100
                (regex,) = {m["headers"][HEADER]["regex"] for m in item["match"]}
                matched = [b for b in range(100) if re.fullmatch(regex, str(b))]
                assert tuple(matched) == buckets[variant]
                covered += matched
                assert "mirror" not in item
                assert "mirrors" not in item
            assert sorted(covered) == list(range(100))
        else:
            assert generated == []

    # Requests with a bucket go to the variant that owns it; others to the weighted route.
    first = next(item for item in out if item["name"] in t.routes and not owner(item["name"], t.routes))
    path = ((first.get("match") or [{}])[0].get("uri") or {}).get("prefix", "/") + "x"
    if t.bucket_header and len(live) > 1:
        for b in range(100):
            chosen = first_match(out, path, {HEADER: str(b)})
            assert [e["destination"]["host"] for e in chosen["route"]] in (
                [f"ranker-{n}"] for n in t.names if b in buckets[n])
    assert first_match(out, path, {})["name"] == first["name"]

    # Idempotent, and independent of the history: re-deriving from the status heals anything.
    assert build_http(out, t, state) == out
    assert build_http(build_http(http, t, _earlier), t, state) == out


@settings(max_examples=100, deadline=None)
@given(scenarios())
def test_restoring_the_champion_removes_everything_generated(
        scenario: Scenario) -> None:
    t, http, _earlier, state = scenario
    out = build_http(build_http(http, t, state), t, RouteState.champion_only(t))
    for r in t.routes:
        base = next(item for item in out if item["name"] == r)
        assert destinations(base) == [("ranker-v0", 100)]
        assert "mirror" not in base
        assert "mirrors" not in base
    assert not [item for item in out if owner(item["name"], t.routes)]


# --- the router with a fake API: 404 and 409 (a conflict cannot be produced on demand) -------------


class FakeCustomObjects(client.CustomObjectsApi):
    """Keeps one object in memory; the first ``conflicts`` patches fail with 409."""

    def __init__(self, obj: dict[str, Any] | None, conflicts: int = 0) -> None:
        self.obj = obj
        self.conflicts = conflicts
        self.patches: list[dict[str, Any]] = []
        self.gets = 0

    def get_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.gets += 1
        if self.obj is None:
            raise client.ApiException(status=404, reason="Not Found")
        return copy.deepcopy(self.obj)

    def patch_namespaced_custom_object(  # type: ignore[override]
            self, group: str, version: str, namespace: str, plural: str, name: str, body: dict[str, Any],
            **kwargs: Any) -> dict[str, Any]:
        assert kwargs["_content_type"] == "application/merge-patch+json"
        assert kwargs["field_manager"] == "modelrollout"
        assert self.obj is not None
        self.patches.append(copy.deepcopy(body))
        if self.conflicts:
            self.conflicts -= 1
            self.obj["metadata"]["resourceVersion"] = str(int(self.obj["metadata"]["resourceVersion"]) + 1)
            raise client.ApiException(status=409, reason="Conflict")
        assert body["metadata"]["resourceVersion"] == self.obj["metadata"]["resourceVersion"]
        self.obj["spec"]["http"] = body["spec"]["http"]
        self.obj["metadata"].setdefault("annotations", {}).update(body["metadata"]["annotations"])
        self.obj["metadata"]["resourceVersion"] = str(int(self.obj["metadata"]["resourceVersion"]) + 1)
        return copy.deepcopy(self.obj)


def vs(http: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "ranker", "namespace": "shop", "resourceVersion": "7"},
            "spec": {"hosts": ["ranker"], "http": http}}


def test_conflicts_are_retried_with_a_fresh_read() -> None:
    api = FakeCustomObjects(vs([base_route()]), conflicts=2)
    pauses: list[float] = []
    router = IstioRouter(api, retry=RetryPolicy(max_attempts=3, backoff=0.01, sleep=pauses.append))
    result = router.apply(target(), RouteState({"v0": 90, "v1": 10}))
    assert result.changed
    assert result.attempts == 3
    assert api.gets == 3
    assert [p["metadata"]["resourceVersion"] for p in api.patches] == ["7", "8", "9"]
    assert pauses == [0.01, 0.02]
    assert api.obj is not None
    assert destinations(api.obj["spec"]["http"][0]) == [("ranker-v0", 90), ("ranker-v1", 10)]
    assert json.loads(api.obj["metadata"]["annotations"][ROUTES_ANNOTATION]) == {
        "primary": {"weights": {"v0": 90, "v1": 10}, "mirrors": []}}


def test_conflicts_give_up_after_max_attempts() -> None:
    api = FakeCustomObjects(vs([base_route()]), conflicts=10)
    router = IstioRouter(api, retry=RetryPolicy(max_attempts=4, sleep=lambda _s: None))
    with pytest.raises(ConflictError, match="4 attempts"):
        router.apply(target(), RouteState({"v0": 90, "v1": 10}))
    assert len(api.patches) == 4


def test_missing_object_and_no_write_when_equal() -> None:
    router = IstioRouter(FakeCustomObjects(None))
    with pytest.raises(ObjectNotFoundError, match="VirtualService shop/ranker"):
        router.apply(target(), RouteState({"v0": 90, "v1": 10}))
    with pytest.raises(ObjectNotFoundError):
        router.current(target())
    api = FakeCustomObjects(vs([base_route()]))
    router = IstioRouter(api)
    result = router.restore_champion(target())
    assert not result.changed
    assert api.patches == []
    assert result.previous == result.achieved == RouteState({"v0": 100, "v1": 0})
    current = router.current(target(), RouteState({"v0": 100, "v1": 0}))
    assert current.in_sync
    assert current.drift == ()
    assert current.resource_version == "7"


def test_drift_is_reported_only_for_outside_changes() -> None:
    api = FakeCustomObjects(vs([base_route()]))
    router = IstioRouter(api)
    t = target()
    step = router.apply(t, RouteState({"v0": 90, "v1": 10}))
    assert step.changed
    assert step.drift == ()
    step = router.apply(t, RouteState({"v0": 75, "v1": 25}))  # a step is not drift
    assert step.changed
    assert step.drift == ()
    assert step.previous == RouteState({"v0": 90, "v1": 10})
    assert api.obj is not None
    api.obj["spec"]["http"][0]["route"][0]["weight"] = 100  # someone resets the weights
    api.obj["spec"]["http"][0]["route"].pop()
    current = router.current(t)
    assert current.state == RouteState({"v0": 100, "v1": 0})
    assert current.drift == ("VirtualService shop/ranker route 'primary': found v0=100% v1=0%; "
                             "modelrollout last set v0=75% v1=25%",)
    assert not router.current(t, RouteState({"v0": 75, "v1": 25})).in_sync
    healed = router.apply(t, RouteState({"v0": 75, "v1": 25}))
    assert healed.changed
    assert healed.drift == current.drift
    assert router.current(t).drift == ()
    # An edit of a field modelrollout does not own is neither drift nor undone.
    api.obj["spec"]["http"][0]["timeout"] = "5s"
    again = router.apply(t, RouteState({"v0": 75, "v1": 25}))
    assert not again.changed
    assert api.obj["spec"]["http"][0]["timeout"] == "5s"


def test_a_record_that_no_longer_fits_the_target_is_not_drift() -> None:
    api = FakeCustomObjects(vs([base_route()]))
    IstioRouter(api).apply(target(), RouteState({"v0": 90, "v1": 10}))
    wider = target(2)  # the spec gained a challenger since the last write
    current = IstioRouter(api).current(wider)
    assert current.drift == ()
    assert current.state == RouteState({"v0": 90, "v1": 10, "v2": 0})
    result = IstioRouter(api).apply(wider, RouteState({"v0": 80, "v1": 10, "v2": 10}))
    assert result.changed
    assert result.drift == ()


def test_sticky_routes_deleted_by_someone_are_drift() -> None:
    api = FakeCustomObjects(vs([base_route()]))
    router = IstioRouter(api)
    t = target(header=HEADER)
    router.apply(t, RouteState({"v0": 75, "v1": 25}))
    assert api.obj is not None
    assert len(api.obj["spec"]["http"]) == 3
    del api.obj["spec"]["http"][0]
    result = router.apply(t, RouteState({"v0": 75, "v1": 25}))
    assert result.changed
    assert len(result.drift) == 1
    assert "generated sticky routes" in result.drift[0]
    assert len(api.obj["spec"]["http"]) == 3


def test_a_fenced_router_writes_nothing_not_even_after_a_conflict() -> None:
    """The leader election guard is asked before every write, also before each retry after a 409:
    a process that lost its Lease between two attempts sends no second patch."""
    api = FakeCustomObjects(vs([base_route()]), conflicts=1)
    leader = [True]
    router = IstioRouter(api, retry=RetryPolicy(max_attempts=3, sleep=lambda _s: None),
                         can_write=lambda: leader[0],
                         before_write=lambda attempt: leader.__setitem__(0, attempt == 1))
    with pytest.raises(FencedError, match="VirtualService shop/ranker not written"):
        router.apply(target(), RouteState({"v0": 90, "v1": 10}))
    assert len(api.patches) == 1  # the first attempt (409); the retry was refused
    assert api.obj is not None
    assert destinations(api.obj["spec"]["http"][0]) == [("ranker-v0", 100)]
    fenced = IstioRouter(FakeCustomObjects(vs([base_route()])), can_write=lambda: False)
    with pytest.raises(FencedError):
        fenced.apply(target(), RouteState({"v0": 90, "v1": 10}))
    # Reads are not fenced, and nothing to write means nothing to refuse.
    assert fenced.current(target()).state == RouteState({"v0": 100, "v1": 0})
    assert not fenced.restore_champion(target()).changed
