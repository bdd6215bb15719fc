"""The Istio router against the real kube-apiserver with the upstream Istio v1.30.3 CRDs."""

from __future__ import annotations

import copy
import json
import re
from typing import Any, cast

import pytest
from kubernetes import client

from modelrollout.routing import (
    IstioRouter,
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

VS = ("networking.istio.io", "v1")
HEADER = "x-modelrollout-bucket"
MERGE = "application/merge-patch+json"
OWNED_FIELDS = ("route", "mirror", "mirrorPercentage", "mirrors")


def vs_body() -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "ranker", "labels": {"team": "search"}, "annotations": {"owner": "ml-platform"}},
        "spec": {
            "hosts": ["ranker"], "gateways": ["mesh"],
            "http": [
                {"name": "admin", "match": [{"uri": {"prefix": "/admin"}}],
                 "route": [{"destination": {"host": "ranker-admin"}}]},
                {"name": "primary", "match": [{"uri": {"prefix": "/predict"}}], "timeout": "2s",
                 "retries": {"attempts": 3, "perTryTimeout": "500ms", "retryOn": "5xx"},
                 "headers": {"request": {"set": {"x-served-by": "mesh"}}},
                 "rewrite": {"uri": "/v1/predict"},
                 "route": [{"destination": {"host": "ranker-v6", "port": {"number": 8080}}, "weight": 100}]},
                {"name": "secondary", "match": [{"uri": {"prefix": "/batch"}}],
                 "route": [{"destination": {"host": "ranker-v6", "port": {"number": 8080}}, "weight": 100}]},
            ],
        },
    }


def target(namespace: str, header: str | None = None, routes: tuple[str, ...] = ("primary", "secondary"),
           challengers: int = 1) -> TrafficTarget:
    variants = tuple(Variant(f"v{6 + i}", f"ranker-v{6 + i}") for i in range(challengers + 1))
    return TrafficTarget(namespace, "ranker", variants, "v6", routes, header)


def create(api: client.CustomObjectsApi, namespace: str) -> dict[str, Any]:
    created = api.create_namespaced_custom_object(*VS, namespace, "virtualservices", vs_body())
    return cast(dict[str, Any], created)


def get(api: client.CustomObjectsApi, namespace: str) -> dict[str, Any]:
    return cast(dict[str, Any], api.get_namespaced_custom_object(*VS, namespace, "virtualservices", "ranker"))


def weights(obj: dict[str, Any], route: str) -> list[tuple[str, int]]:
    item = next(r for r in obj["spec"]["http"] if r.get("name") == route)
    return [(e["destination"]["host"], e["weight"]) for e in item["route"]]


def unowned(obj: dict[str, Any], routes: tuple[str, ...]) -> str:
    """The object without what the router may change, as canonical JSON."""
    rest = copy.deepcopy(obj)
    for key in ("resourceVersion", "generation", "managedFields"):
        rest["metadata"].pop(key, None)
    rest["metadata"].get("annotations", {}).pop(ROUTES_ANNOTATION, None)
    if rest["metadata"].get("annotations") == {}:
        del rest["metadata"]["annotations"]
    http = []
    for item in rest["spec"]["http"]:
        if owner(item.get("name"), routes):
            continue
        if item.get("name") in routes:
            item = {k: v for k, v in item.items() if k not in OWNED_FIELDS}
        http.append(item)
    rest["spec"]["http"] = http
    return json.dumps(rest, sort_keys=True)


def test_steps_mirror_and_restore(k8s_admin: Any, namespace: str) -> None:
    api = client.CustomObjectsApi(k8s_admin)
    original = create(api, namespace)
    router = IstioRouter(k8s_admin)
    t = target(namespace)
    fixed = unowned(original, t.routes)
    assert router.current(t).state == RouteState({"v6": 100, "v7": 0})

    for step in ([90, 10], [75, 25], [50, 50], [100, 0]):
        desired = RouteState({"v6": step[0], "v7": step[1]})
        result = router.apply(t, desired)
        assert result.changed
        assert result.drift == ()
        assert result.attempts == 1
        obj = get(api, namespace)
        expected = [(h, w) for h, w in (("ranker-v6", step[0]), ("ranker-v7", step[1])) if w > 0]
        for route in t.routes:
            assert weights(obj, route) == expected
        assert unowned(obj, t.routes) == fixed  # nothing else changed, not a byte
        again = router.apply(t, desired)  # idempotent: what the server stored is what we computed
        assert not again.changed
        assert again.resource_version == obj["metadata"]["resourceVersion"]
        current = router.current(t, desired)
        assert current.in_sync
        assert current.state == desired
        assert current.drift == ()
    # The port of the existing champion destination was kept; the new challenger entry has none.
    assert next(r for r in get(api, namespace)["spec"]["http"] if r["name"] == "primary")["route"] == [
        {"destination": {"host": "ranker-v6", "port": {"number": 8080}}, "weight": 100}]

    shadow = RouteState({"v6": 100, "v7": 0}, (Mirror("v7", 25.5),))
    assert router.apply(t, shadow).changed
    primary = next(r for r in get(api, namespace)["spec"]["http"] if r["name"] == "primary")
    assert primary["mirror"] == {"host": "ranker-v7"}
    assert primary["mirrorPercentage"] == {"value": 25.5}
    assert router.current(t).state == shadow
    off = router.restore_champion(t)
    assert off.changed
    assert off.previous == shadow
    final = get(api, namespace)
    assert "mirror" not in final["spec"]["http"][1]
    assert "mirrorPercentage" not in final["spec"]["http"][1]
    assert final["spec"]["http"][0] == original["spec"]["http"][0]
    assert json.loads(final["metadata"]["annotations"][ROUTES_ANNOTATION]) == {
        r: {"weights": {"v6": 100, "v7": 0}, "mirrors": []} for r in t.routes}
    assert final["metadata"]["labels"] == {"team": "search"}


def test_sticky_split_is_accepted_and_grows_monotonically(k8s_admin: Any, namespace: str) -> None:
    api = client.CustomObjectsApi(k8s_admin)
    create(api, namespace)
    router = IstioRouter(k8s_admin)
    t = target(namespace, HEADER, routes=("primary",), challengers=2)
    seen: dict[str, set[int]] = {"v7": set(), "v8": set()}
    for share in (5, 10, 25, 50):
        desired = RouteState({"v6": 100 - 2 * share, "v7": share, "v8": share})
        assert router.apply(t, desired).changed
        http = get(api, namespace)["spec"]["http"]
        champion_route = [f"{STICKY_PREFIX}primary.v6"] if desired.weights["v6"] else []
        assert [r["name"] for r in http] == [
            "admin", f"{STICKY_PREFIX}primary.v7", f"{STICKY_PREFIX}primary.v8", *champion_route, "primary",
            "secondary"]
        for item in http:
            if not owner(item["name"], t.routes):
                continue
            (match,) = item["match"]
            assert match["uri"] == {"prefix": "/predict"}
            regex = match["headers"][HEADER]["regex"]
            buckets = {b for b in range(100) if re.fullmatch(regex, str(b))}
            variant = item["route"][0]["destination"]["host"].removeprefix("ranker-")
            assert len(buckets) == desired.weights[variant]
            assert item["timeout"] == "2s"
            assert item["rewrite"] == {"uri": "/v1/predict"}
            if variant in seen:
                assert seen[variant] <= buckets  # a user who saw a challenger keeps seeing it
                seen[variant] = buckets
        assert not router.apply(t, desired).changed
    assert seen == {"v7": set(range(50)), "v8": set(range(50, 100))}
    router.restore_champion(t)
    assert [r["name"] for r in get(api, namespace)["spec"]["http"]] == ["admin", "primary", "secondary"]


def test_drift_is_detected_and_healed(k8s_admin: Any, namespace: str) -> None:
    api = client.CustomObjectsApi(k8s_admin)
    create(api, namespace)
    router = IstioRouter(k8s_admin)
    t = target(namespace)
    desired = RouteState({"v6": 75, "v7": 25})
    router.apply(t, desired)
    # A GitOps sync puts the manifest's weights back (a merge patch of spec.http, as kubectl would).
    http = get(api, namespace)["spec"]["http"]
    http[1]["route"] = [{"destination": {"host": "ranker-v6", "port": {"number": 8080}}, "weight": 100}]
    api.patch_namespaced_custom_object(*VS, namespace, "virtualservices", "ranker", {"spec": {"http": http}},
                                       _content_type=MERGE)
    current = router.current(t, desired)
    assert not current.in_sync
    assert current.drift == (f"VirtualService {namespace}/ranker route 'primary': found v6=100% v7=0%; "
                             "modelrollout last set v6=75% v7=25%",)
    healed = router.apply(t, desired)
    assert healed.changed
    assert healed.drift == current.drift
    assert weights(get(api, namespace), "primary") == [("ranker-v6", 75), ("ranker-v7", 25)]
    assert router.current(t, desired).drift == ()


def test_a_real_conflict_is_retried(k8s_admin: Any, namespace: str) -> None:
    api = client.CustomObjectsApi(k8s_admin)
    create(api, namespace)
    t = target(namespace)

    def someone_writes(attempt: int) -> None:
        if attempt == 1:  # between the router's read and its write
            api.patch_namespaced_custom_object(*VS, namespace, "virtualservices", "ranker",
                                               {"metadata": {"labels": {"touched": "yes"}}},
                                               _content_type=MERGE)

    router = IstioRouter(k8s_admin, before_write=someone_writes)
    result = router.apply(t, RouteState({"v6": 90, "v7": 10}))
    assert result.changed
    assert result.attempts == 2
    obj = get(api, namespace)
    assert obj["metadata"]["labels"] == {"team": "search", "touched": "yes"}
    assert weights(obj, "primary") == [("ranker-v6", 90), ("ranker-v7", 10)]


def test_missing_object_and_route(k8s_admin: Any, namespace: str) -> None:
    router = IstioRouter(k8s_admin)
    with pytest.raises(ObjectNotFoundError) as missing:
        router.apply(target(namespace), RouteState({"v6": 90, "v7": 10}))
    assert missing.value.kind == "VirtualService"
    assert missing.value.route is None
    create(client.CustomObjectsApi(k8s_admin), namespace)
    with pytest.raises(RouteNotFoundError, match="'canary'") as unknown:
        router.apply(target(namespace, routes=("primary", "canary")), RouteState({"v6": 90, "v7": 10}))
    assert unknown.value.route == "canary"
