"""The Gateway API router against the real kube-apiserver with the upstream v1.6.1 HTTPRoute CRD."""

from __future__ import annotations

import copy
import json
import re
from typing import Any, cast

import pytest
from kubernetes import client

from modelrollout.routing import (
    GatewayAPIRouter,
    Mirror,
    ObjectNotFoundError,
    RouteNotFoundError,
    RouteState,
    TrafficTarget,
    Variant,
)
from modelrollout.routing.base import ROUTES_ANNOTATION, STICKY_PREFIX
from modelrollout.routing.istio import owner

pytestmark = pytest.mark.integration

ROUTE = ("gateway.networking.k8s.io", "v1")
HEADER = "x-modelrollout-bucket"
MERGE = "application/merge-patch+json"


def route_body() -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "ranker", "labels": {"team": "search"}},
        "spec": {
            "parentRefs": [{"name": "edge"}],
            "hostnames": ["ranker.example.com"],
            "rules": [
                {"name": "docs", "matches": [{"path": {"type": "PathPrefix", "value": "/docs"}}],
                 "backendRefs": [{"name": "docs", "port": 80}]},
                {"name": "primary", "matches": [{"path": {"type": "PathPrefix", "value": "/predict"}}],
                 "timeouts": {"request": "10s"},
                 "filters": [{"type": "RequestHeaderModifier",
                              "requestHeaderModifier": {"set": [{"name": "x-served-by", "value": "gw"}]}}],
                 "backendRefs": [{"name": "ranker-v6", "port": 8080}]},
            ],
        },
    }


def target(namespace: str, header: str | None = None, rules: tuple[str, ...] = ("primary",)) -> TrafficTarget:
    return TrafficTarget(namespace, "ranker", (Variant("v6", "ranker-v6"), Variant("v7", "ranker-v7")), "v6",
                         rules, header)


def create(api: client.CustomObjectsApi, namespace: str) -> dict[str, Any]:
    created = api.create_namespaced_custom_object(*ROUTE, namespace, "httproutes", route_body())
    return cast(dict[str, Any], created)


def get(api: client.CustomObjectsApi, namespace: str) -> dict[str, Any]:
    return cast(dict[str, Any], api.get_namespaced_custom_object(*ROUTE, namespace, "httproutes", "ranker"))


def primary(obj: dict[str, Any]) -> dict[str, Any]:
    rule: dict[str, Any] = next(r for r in obj["spec"]["rules"] if r.get("name") == "primary")
    return rule


def backends(obj: dict[str, Any]) -> list[tuple[str, int]]:
    return [(b["name"], b["weight"]) for b in primary(obj)["backendRefs"]]


def unowned(obj: dict[str, Any]) -> str:
    rest = copy.deepcopy(obj)
    for key in ("resourceVersion", "generation", "managedFields"):
        rest["metadata"].pop(key, None)
    rest["metadata"].get("annotations", {}).pop(ROUTES_ANNOTATION, None)
    if rest["metadata"].get("annotations") == {}:
        del rest["metadata"]["annotations"]
    rules = []
    for rule in rest["spec"]["rules"]:
        if owner(rule.get("name"), ["primary"]):
            continue
        if rule.get("name") == "primary":
            rule = {k: v for k, v in rule.items() if k != "backendRefs"}
            rule["filters"] = [f for f in rule.get("filters", []) if f["type"] != "RequestMirror"]
        rules.append(rule)
    rest["spec"]["rules"] = rules
    return json.dumps(rest, sort_keys=True)


def test_steps_mirror_and_restore(k8s_admin: Any, namespace: str) -> None:
    api = client.CustomObjectsApi(k8s_admin)
    original = create(api, namespace)
    router = GatewayAPIRouter(k8s_admin)
    t = target(namespace)
    fixed = unowned(original)
    # The server defaulted weight 1, group "" and kind Service; that reads as 100 % to the champion.
    assert router.current(t).state == RouteState({"v6": 100, "v7": 0})
    for step in ([90, 10], [75, 25], [50, 50], [100, 0]):
        desired = RouteState({"v6": step[0], "v7": step[1]})
        result = router.apply(t, desired)
        assert result.changed
        assert result.drift == ()
        obj = get(api, namespace)
        assert backends(obj) == [(n, w) for n, w in (("ranker-v6", step[0]), ("ranker-v7", step[1])) if w > 0]
        assert unowned(obj) == fixed
        assert not router.apply(t, desired).changed  # the server's defaults do not look like a change
        assert router.current(t, desired).in_sync

    for percent, field, value in ((30, "percent", 30), (12.5, "fraction", {"numerator": 1250,
                                                                           "denominator": 10000})):
        shadow = RouteState({"v6": 100, "v7": 0}, (Mirror("v7", percent),))
        assert router.apply(t, shadow).changed
        filters = primary(get(api, namespace))["filters"]
        assert filters[0]["type"] == "RequestHeaderModifier"
        assert filters[1]["requestMirror"][field] == value
        assert filters[1]["requestMirror"]["backendRef"]["name"] == "ranker-v7"
        assert not router.apply(t, shadow).changed
        assert router.current(t).state == shadow
    assert router.restore_champion(t).changed
    final = get(api, namespace)
    assert [f["type"] for f in primary(final)["filters"]] == ["RequestHeaderModifier"]
    assert unowned(final) == fixed


def test_sticky_rules_are_accepted(k8s_admin: Any, namespace: str) -> None:
    api = client.CustomObjectsApi(k8s_admin)
    create(api, namespace)
    router = GatewayAPIRouter(k8s_admin)
    t = target(namespace, HEADER)
    challenger: set[int] = set()
    for share in (10, 25, 50):
        desired = RouteState({"v6": 100 - share, "v7": share})
        assert router.apply(t, desired).changed
        rules = get(api, namespace)["spec"]["rules"]
        assert [r["name"] for r in rules] == [
            "docs", f"{STICKY_PREFIX}primary.v7", f"{STICKY_PREFIX}primary.v6", "primary"]
        sticky = rules[1]
        (match,) = sticky["matches"]
        assert match["path"] == {"type": "PathPrefix", "value": "/predict"}
        (header,) = match["headers"]
        assert header["type"] == "RegularExpression"
        assert header["name"] == HEADER
        buckets = {b for b in range(100) if re.fullmatch(header["value"], str(b))}
        assert buckets == set(range(share))
        assert challenger <= buckets
        challenger = buckets
        assert sticky["timeouts"] == {"request": "10s"}
        assert sticky["backendRefs"][0]["name"] == "ranker-v7"
        assert not router.apply(t, desired).changed
    router.restore_champion(t)
    assert [r["name"] for r in get(api, namespace)["spec"]["rules"]] == ["docs", "primary"]


def test_drift_conflict_and_errors(k8s_admin: Any, namespace: str) -> None:
    api = client.CustomObjectsApi(k8s_admin)
    router = GatewayAPIRouter(k8s_admin)
    t = target(namespace)
    with pytest.raises(ObjectNotFoundError, match="HTTPRoute"):
        router.current(t)
    create(api, namespace)
    with pytest.raises(RouteNotFoundError, match="no rule named 'canary'"):
        router.apply(target(namespace, rules=("canary",)), RouteState({"v6": 90, "v7": 10}))

    desired = RouteState({"v6": 75, "v7": 25})
    router.apply(t, desired)
    rules = get(api, namespace)["spec"]["rules"]
    rules[1]["backendRefs"][0]["weight"] = 1
    rules[1]["backendRefs"][1]["weight"] = 1
    api.patch_namespaced_custom_object(*ROUTE, namespace, "httproutes", "ranker", {"spec": {"rules": rules}},
                                       _content_type=MERGE)
    drift = router.current(t).drift
    assert drift == (f"HTTPRoute {namespace}/ranker rule 'primary': found v6=50% v7=50%; "
                     "modelrollout last set v6=75% v7=25%",)

    def someone_writes(attempt: int) -> None:
        if attempt == 1:
            api.patch_namespaced_custom_object(*ROUTE, namespace, "httproutes", "ranker",
                                               {"metadata": {"annotations": {"note": "x"}}},
                                               _content_type=MERGE)

    racing = GatewayAPIRouter(k8s_admin, before_write=someone_writes)
    healed = racing.apply(t, desired)
    assert healed.changed
    assert healed.attempts == 2
    assert healed.drift == drift
    obj = get(api, namespace)
    assert backends(obj) == [("ranker-v6", 75), ("ranker-v7", 25)]
    assert obj["metadata"]["annotations"]["note"] == "x"
