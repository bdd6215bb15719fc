"""The service router against the real kube-apiserver: Deployments' replicas behind one Service.

No ReplicaSet controller runs, so no pod is ever created: only ``spec.replicas`` matters here.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client

from modelrollout.routing import (
    ObjectNotFoundError,
    RouteState,
    ServiceRouter,
    TrafficTarget,
    UnsupportedTargetError,
    Variant,
)
from modelrollout.routing.base import REPLICAS_ANNOTATION

pytestmark = pytest.mark.integration
MERGE = "application/merge-patch+json"


def deployment(name: str, version: str, replicas: int, app: str = "ranker") -> client.V1Deployment:
    labels = {"app": app, "version": version}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels={"team": "search"}, annotations={"owner": "ml"}),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(
                    name="model", image="registry.k8s.io/pause:3.10",
                    env=[client.V1EnvVar(name="MODEL", value=version)])]))))


def setup(k8s_admin: Any, namespace: str, champion: int = 10, challenger: int = 0,
          challenger_app: str = "ranker") -> tuple[client.AppsV1Api, TrafficTarget]:
    core = client.CoreV1Api(k8s_admin)
    apps = client.AppsV1Api(k8s_admin)
    core.create_namespaced_service(namespace, client.V1Service(
        metadata=client.V1ObjectMeta(name="ranker"),
        spec=client.V1ServiceSpec(selector={"app": "ranker"}, ports=[client.V1ServicePort(port=80)])))
    apps.create_namespaced_deployment(namespace, deployment("ranker-v6", "v6", champion))
    apps.create_namespaced_deployment(namespace, deployment("ranker-v7", "v7", challenger, challenger_app))
    t = TrafficTarget(namespace, "ranker", (Variant("v6", "ranker", deployment="ranker-v6"),
                                            Variant("v7", "ranker", deployment="ranker-v7")), "v6")
    return apps, t


def replicas(apps: client.AppsV1Api, namespace: str) -> tuple[int, int]:
    return tuple(apps.read_namespaced_deployment(n, namespace).spec.replicas  # type: ignore[return-value]
                 for n in ("ranker-v6", "ranker-v7"))


def unowned(k8s_admin: Any, apps: client.AppsV1Api, namespace: str, name: str) -> str:
    obj = k8s_admin.sanitize_for_serialization(apps.read_namespaced_deployment(name, namespace))
    for key in ("resourceVersion", "generation", "managedFields"):
        obj["metadata"].pop(key, None)
    obj["metadata"]["annotations"].pop(REPLICAS_ANNOTATION, None)
    obj["spec"].pop("replicas")
    obj.pop("status", None)
    return json.dumps(obj, sort_keys=True)


def test_steps_reach_the_replica_ratio_and_restore(k8s_admin: Any, namespace: str) -> None:
    apps, t = setup(k8s_admin, namespace)
    router = ServiceRouter(k8s_admin)
    before = {n: unowned(k8s_admin, apps, namespace, n) for n in ("ranker-v6", "ranker-v7")}
    assert router.current(t).state == RouteState({"v6": 100, "v7": 0})
    steps = (((90, 10), (9, 1)), ((75, 25), (8, 2)), ((50, 50), (5, 5)), ((100, 0), (10, 0)))
    for (w6, w7), expected in steps:
        result = router.apply(t, RouteState({"v6": w6, "v7": w7}))
        assert result.changed
        assert result.drift == ()
        assert replicas(apps, namespace) == expected
        assert result.achieved == RouteState({"v6": expected[0] * 10, "v7": expected[1] * 10})
        assert not router.apply(t, RouteState({"v6": w6, "v7": w7})).changed
        assert router.current(t, RouteState({"v6": w6, "v7": w7})).in_sync
    assert {n: unowned(k8s_admin, apps, namespace, n) for n in ("ranker-v6", "ranker-v7")} == before
    router.apply(t, RouteState({"v6": 50, "v7": 50}))
    restored = router.restore_champion(t)
    assert restored.changed
    assert restored.previous == RouteState({"v6": 50, "v7": 50})
    assert replicas(apps, namespace) == (10, 0)


def test_budget_honest_weights_drift_and_conflict(k8s_admin: Any, namespace: str) -> None:
    apps, t = setup(k8s_admin, namespace, champion=4)
    router = ServiceRouter(k8s_admin)
    result = router.apply(t, RouteState({"v6": 90, "v7": 10}))
    # The achieved weight is the honest one: 4 replicas cannot make 90/10.
    assert replicas(apps, namespace) == (3, 1)
    assert result.achieved == RouteState({"v6": 75, "v7": 25})
    # Someone scales the champion by hand: drift, healed to the replicas last written.
    apps.patch_namespaced_deployment("ranker-v6", namespace, {"spec": {"replicas": 6}}, _content_type=MERGE)
    current = router.current(t)
    assert current.drift == (f"Deployment {namespace}/ranker-v6 (variant 'v6'): found 6 replicas; "
                             "modelrollout last set 3",)

    def someone_writes(attempt: int) -> None:
        if attempt == 1:
            apps.patch_namespaced_deployment("ranker-v6", namespace,
                                             {"metadata": {"labels": {"touched": "y"}}}, _content_type=MERGE)

    racing = ServiceRouter(k8s_admin, before_write=someone_writes)
    healed = racing.apply(t, RouteState({"v6": 90, "v7": 10}))
    assert healed.changed
    assert healed.attempts == 2
    assert healed.drift == current.drift
    assert replicas(apps, namespace) == (3, 1)
    metadata = apps.read_namespaced_deployment("ranker-v6", namespace).metadata
    assert metadata is not None
    assert (metadata.labels or {})["touched"] == "y"
    # A configured budget wins over the one found.
    wide = TrafficTarget(namespace, "ranker", t.variants, "v6", replicas=20)
    assert router.apply(wide, RouteState({"v6": 90, "v7": 10})).achieved == RouteState({"v6": 90, "v7": 10})
    assert replicas(apps, namespace) == (18, 2)


def test_missing_objects_and_wrong_labels(k8s_admin: Any, namespace: str) -> None:
    router = ServiceRouter(k8s_admin)
    t = TrafficTarget(namespace, "ranker", (Variant("v6", "ranker", deployment="ranker-v6"),
                                            Variant("v7", "ranker", deployment="ranker-v7")), "v6")
    with pytest.raises(ObjectNotFoundError, match="Service"):
        router.current(t)
    apps, t = setup(k8s_admin, namespace, challenger_app="other")
    with pytest.raises(UnsupportedTargetError, match="lack the labels") as wrong:
        router.apply(t, RouteState({"v6": 90, "v7": 10}))
    assert wrong.value.variant == "v7"
    gone = TrafficTarget(namespace, "ranker", (Variant("v6", "ranker", deployment="ranker-v6"),
                                               Variant("v8", "ranker", deployment="ranker-v8")), "v6")
    with pytest.raises(ObjectNotFoundError, match="ranker-v8") as missing:
        router.current(gone)
    assert missing.value.variant == "v8"
    assert missing.value.kind == "Deployment"
    assert replicas(apps, namespace) == (10, 0)
