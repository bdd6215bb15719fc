"""Tests of modelrollout.routing.service: the replica split, achieved weights, and 409 retries."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes import client

from modelrollout.errors import FencedError, InvalidInputError
from modelrollout.routing import Mirror, RetryPolicy, RouteState, ServiceRouter, TrafficTarget, Variant
from modelrollout.routing.base import REPLICAS_ANNOTATION
from modelrollout.routing.service import achieved_weights, split_replicas

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("weights", "total", "expected"), [
    ({"v6": 90, "v7": 10}, 10, {"v6": 9, "v7": 1}),
    ({"v6": 90, "v7": 10}, 4, {"v6": 3, "v7": 1}),        # 0.4 rounds to 0: the challenger still gets one
    ({"v6": 75, "v7": 25}, 4, {"v6": 3, "v7": 1}),
    ({"v6": 50, "v7": 50}, 5, {"v6": 3, "v7": 2}),         # ties go to the earlier variant
    ({"v6": 100, "v7": 0}, 5, {"v6": 5, "v7": 0}),
    ({"v6": 0, "v7": 100}, 5, {"v6": 0, "v7": 5}),
    ({"v6": 80, "v7": 10, "v8": 10}, 3, {"v6": 1, "v7": 1, "v8": 1}),
    ({"v6": 10, "v7": 45, "v8": 45}, 3, {"v6": 1, "v7": 1, "v8": 1}),
])
def test_split_replicas_examples(weights: dict[str, int], total: int, expected: dict[str, int]) -> None:
    assert split_replicas(weights, total) == expected


def test_split_replicas_rejects_impossible_budgets() -> None:
    with pytest.raises(InvalidInputError, match="cannot give each of the 3 variants"):
        split_replicas({"v6": 80, "v7": 10, "v8": 10}, 2)
    with pytest.raises(InvalidInputError, match="positive"):
        split_replicas({"v6": 100, "v7": 0}, 0)
    with pytest.raises(InvalidInputError):
        split_replicas({"v6": 90, "v7": 9}, 10)


@st.composite
def splits(draw: st.DrawFn) -> tuple[dict[str, int], int]:
    n = draw(st.integers(2, 5))
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=n - 1, max_size=n - 1)))
    parts = [b - a for a, b in zip([0, *cuts], [*cuts, 100], strict=True)]
    weights = {f"v{i}": w for i, w in enumerate(parts)}
    live = sum(1 for w in parts if w > 0)
    return weights, draw(st.integers(live, 60))


@given(splits())
def test_split_replicas_properties(split: tuple[dict[str, int], int]) -> None:
    weights, total = split
    counts = split_replicas(weights, total)
    assert sum(counts.values()) == total
    assert all((counts[n] > 0) == (w > 0) for n, w in weights.items())
    forced = sum(1 for n, w in weights.items() if w > 0 and Fraction(w * total, 100) < 1)
    for n, w in weights.items():
        # Within one replica of the exact quota, plus the replicas moved to give every live variant one.
        assert abs(counts[n] - Fraction(w * total, 100)) < 1 + forced
    achieved = achieved_weights(counts)
    assert achieved is not None
    assert sum(achieved.weights.values()) == 100


def test_achieved_weights() -> None:
    assert achieved_weights({"v6": 3, "v7": 1}) == RouteState({"v6": 75, "v7": 25})
    assert achieved_weights({"v6": 2, "v7": 1}) == RouteState({"v6": 67, "v7": 33})
    assert achieved_weights({"v6": 0, "v7": 0}) is None


# --- the router with fake APIs: inputs it refuses, and 409 (not producible on demand) --------------


def _target(**kw: Any) -> TrafficTarget:
    return TrafficTarget("shop", "ranker", (Variant("v6", "ranker", deployment="ranker-v6"),
                                            Variant("v7", "ranker", deployment="ranker-v7")), "v6", **kw)


class FakeApps(client.AppsV1Api):
    def __init__(self, replicas: dict[str, int], conflicts: int = 0) -> None:
        self.api_client = None
        self.replicas = dict(replicas)
        self.versions = dict.fromkeys(replicas, 1)
        self.annotations: dict[str, dict[str, str]] = {n: {} for n in replicas}
        self.conflicts = conflicts
        self.patches: list[tuple[str, dict[str, Any]]] = []

    def read_namespaced_deployment(  # type: ignore[override]
            self, name: str, namespace: str, **_: Any) -> client.V1Deployment:
        return client.V1Deployment(
            metadata=client.V1ObjectMeta(name=name, resource_version=str(self.versions[name]),
                                         annotations=dict(self.annotations[name])),
            spec=client.V1DeploymentSpec(
                replicas=self.replicas[name], selector=client.V1LabelSelector(match_labels={"app": "ranker"}),
                template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels={"app": "ranker"}))))

    def patch_namespaced_deployment(  # type: ignore[override]
            self, name: str, namespace: str, body: dict[str, Any], **kw: Any) -> None:
        assert kw["_content_type"] == "application/merge-patch+json"
        assert set(body) == {"metadata", "spec"}
        assert set(body["spec"]) == {"replicas"}
        self.patches.append((name, body))
        if self.conflicts:
            self.conflicts -= 1
            self.versions[name] += 1
            raise client.ApiException(status=409, reason="Conflict")
        assert body["metadata"]["resourceVersion"] == str(self.versions[name])
        self.replicas[name] = body["spec"]["replicas"]
        self.annotations[name].update(body["metadata"]["annotations"])
        self.versions[name] += 1


class FakeCore:
    def __init__(self, selector: dict[str, str] | None = None) -> None:
        self.selector = {"app": "ranker"} if selector is None else selector

    def read_namespaced_service(self, name: str, namespace: str, **_: Any) -> client.V1Service:
        return client.V1Service(spec=client.V1ServiceSpec(selector=self.selector))


def test_conflicts_are_retried_and_growth_comes_first() -> None:
    apps = FakeApps({"ranker-v6": 4, "ranker-v7": 0}, conflicts=1)
    router = ServiceRouter(apps, FakeCore(), retry=RetryPolicy(sleep=lambda _s: None))  # type: ignore[arg-type]
    result = router.apply(_target(), RouteState({"v6": 90, "v7": 10}))
    assert result.changed
    assert result.attempts == 2
    assert result.achieved == RouteState({"v6": 75, "v7": 25})
    assert [name for name, _ in apps.patches] == ["ranker-v7", "ranker-v7", "ranker-v6"]
    assert apps.replicas == {"ranker-v6": 3, "ranker-v7": 1}
    assert apps.annotations["ranker-v7"] == {REPLICAS_ANNOTATION: "1"}


def test_unsupported_requests_and_bad_targets() -> None:
    router = ServiceRouter(FakeApps({"ranker-v6": 4, "ranker-v7": 0}), FakeCore())  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="cannot mirror"):
        router.apply(_target(), RouteState({"v6": 100, "v7": 0}, (Mirror("v7"),)))
    with pytest.raises(InvalidInputError, match="sticky"):
        router.apply(_target(bucket_header="x-b"), RouteState({"v6": 100, "v7": 0}))
    no_deployment = TrafficTarget("shop", "ranker", (Variant("v6", "a", deployment="ranker-v6"),
                                                     Variant("v7", "b")), "v6")
    with pytest.raises(InvalidInputError, match="Deployment of every variant"):
        router.current(no_deployment)
    from modelrollout.routing import UnsupportedTargetError
    other = ServiceRouter(FakeApps({"ranker-v6": 4, "ranker-v7": 0}), FakeCore({"app": "other"}))  # type: ignore[arg-type]
    with pytest.raises(UnsupportedTargetError, match="lack the labels") as err:
        other.current(_target())
    assert err.value.variant == "v6"
    empty = ServiceRouter(FakeApps({"ranker-v6": 0, "ranker-v7": 0}), FakeCore())  # type: ignore[arg-type]
    with pytest.raises(UnsupportedTargetError, match="no replicas to share"):
        empty.apply(_target(), RouteState({"v6": 100, "v7": 0}))


def test_a_fenced_router_scales_nothing_not_even_after_a_conflict() -> None:
    apps = FakeApps({"ranker-v6": 4, "ranker-v7": 0}, conflicts=1)
    leader = [True]
    router = ServiceRouter(apps, FakeCore(), retry=RetryPolicy(sleep=lambda _s: None),  # type: ignore[arg-type]
                           can_write=lambda: leader[0],
                           before_write=lambda attempt: leader.__setitem__(0, attempt == 1))
    with pytest.raises(FencedError, match="Deployment shop/ranker-v7 not written"):
        router.apply(_target(), RouteState({"v6": 90, "v7": 10}))
    assert [name for name, _ in apps.patches] == ["ranker-v7"]  # the 409; no retry, no shrink of v6
    assert apps.replicas == {"ranker-v6": 4, "ranker-v7": 0}
