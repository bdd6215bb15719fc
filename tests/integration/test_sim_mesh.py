"""The simulated e2e stack on the real apiserver: the mesh stand-in follows live VirtualServices and
HTTPRoutes (weights, mirrors, sticky bucket matches), and the real Prometheus scrapes it.

Split checks use a binomial tolerance of 5 standard deviations (a false alarm about once in
1.7 million runs): ``|observed - n p| <= 5 sqrt(n p (1 - p))``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from modelrollout.devstack.controlplane.env import LocalEnv
from modelrollout.devstack.controlplane.prometheus import Prometheus
from modelrollout.devstack.sim.loadgen import LoadConfig, LoadReport
from modelrollout.devstack.sim.mesh import MeshConfig
from modelrollout.devstack.sim.model_server import ModelConfig
from modelrollout.devstack.sim.stack import RunningMesh, RunningModel, SimStack, ab_model_specs
from modelrollout.routing.buckets import buckets_regex
from modelrollout.sdk import BUCKET_HEADER, bucket

pytestmark = pytest.mark.integration

ISTIO = ("networking.istio.io", "v1", "virtualservices")
GATEWAY = ("gateway.networking.k8s.io", "v1", "httproutes")
MERGE = "application/merge-patch+json"
Z = 5.0


def assert_binomial(observed: int, n: int, p: float, what: str) -> None:
    sd = math.sqrt(n * p * (1 - p))
    assert abs(observed - n * p) <= Z * sd, (
        f"{what}: {observed} of {n}, expected {n * p:.0f} ± {Z * sd:.0f} (5 sd, p = {p})")


def fast_model(variant: str, **kwargs: Any) -> ModelConfig:
    values: dict[str, Any] = {"latency_median_ms": 2.0, "latency_p99_ms": 10.0, "prediction_seed": "ranker",
                              "seed": 7}
    values.update(kwargs)
    return ModelConfig(variant, **values)


def metric_values(text: str, name: str, **labels: str) -> list[float]:
    """Values of the exposition lines of ``name`` whose labels include ``labels``."""
    found = []
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        pairs = dict(re.findall(r'(\w+)="([^"]*)"', head))
        if all(pairs.get(k) == v for k, v in labels.items()):
            found.append(float(value))
    return found


def metric_sum(text: str, name: str, **labels: str) -> float:
    return sum(metric_values(text, name, **labels))


# ---- route objects ------------------------------------------------------------------------------
def virtual_service(name: str, http: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": name},
            "spec": {"hosts": ["ranker"], "http": http}}


def weighted(v6: int, v7: int, **extra: Any) -> dict[str, Any]:
    return {"name": "primary", "route": [{"destination": {"host": "ranker-v6"}, "weight": v6},
                                         {"destination": {"host": "ranker-v7"}, "weight": v7}], **extra}


def sticky(upto: int) -> list[dict[str, Any]]:
    return [
        {"name": "sticky-v7",
         "match": [{"headers": {BUCKET_HEADER: {"regex": buckets_regex(range(0, upto))}}}],
         "route": [{"destination": {"host": "ranker-v7"}}]},
        {"name": "primary", "route": [{"destination": {"host": "ranker-v6"}}]},
    ]


def http_route(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": name},
            "spec": {"parentRefs": [{"name": "edge"}], "rules": rules}}


def backend_ref(service: str, weight: int | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": service, "port": 8080}
    if weight is not None:
        ref["weight"] = weight
    return ref


class Objects:
    """Create and merge-patch route objects of one kind in the test namespace."""

    def __init__(self, api: Any, namespace: str, kind: tuple[str, str, str]) -> None:
        self.custom: Any = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.kind = kind

    def create(self, body: dict[str, Any]) -> str:
        group, version, plural = self.kind
        created = self.custom.create_namespaced_custom_object(group, version, self.namespace, plural, body)
        return str(created["metadata"]["resourceVersion"])

    def patch_spec(self, name: str, spec: dict[str, Any]) -> str:
        group, version, plural = self.kind
        patched = self.custom.patch_namespaced_custom_object(group, version, self.namespace, plural, name,
                                                             {"spec": spec}, _content_type=MERGE)
        return str(patched["metadata"]["resourceVersion"])


# ---- fixtures -----------------------------------------------------------------------------------
@pytest.fixture
def stack(tmp_path: Path) -> Iterator[SimStack]:
    with SimStack(tmp_path / "sim") as running:
        yield running


def start_ab(stack: SimStack, localenv: LocalEnv, namespace: str, kind: str, route: str,
             v6: ModelConfig, v7: ModelConfig) -> tuple[RunningModel, RunningModel, RunningMesh]:
    champion, challenger = stack.start_models(ab_model_specs(v6, [v7]))
    mesh = stack.start_mesh(MeshConfig(namespace=namespace, kind=kind, route=route, backends=stack.backends(),
                                       kubeconfig=str(localenv.admin_kubeconfig), seed=11))
    return champion, challenger, mesh


def load(stack: SimStack, mesh: RunningMesh, requests: int, *, rps: float = 400.0, users: int = 5000,
         record_users: bool = False, bucket_header: str | None = BUCKET_HEADER) -> LoadReport:
    report = stack.run_load(LoadConfig(url=mesh.url + "/predict", host="ranker", users=users, rps=rps,
                                       duration_s=requests / rps + 30.0, max_requests=requests, seed=3,
                                       record_users=record_users, bucket_header=bucket_header))
    assert report.requests == requests
    assert report.completed == requests, report
    return report


# ---- Istio ------------------------------------------------------------------------------------
def test_istio_weights_follow_the_live_virtual_service(stack: SimStack, localenv: LocalEnv, k8s_admin: Any,
                                                       namespace: str) -> None:
    objects = Objects(k8s_admin, namespace, ISTIO)
    objects.create(virtual_service("ranker", [weighted(90, 10)]))
    _, _, mesh = start_ab(stack, localenv, namespace, "istio", "ranker", fast_model("v6"), fast_model("v7"))
    assert mesh.routes()["rules"][0]["backends"][1]["weight"] == 10

    first = load(stack, mesh, 2000)
    assert first.by_status == {"200": 2000}
    assert_binomial(first.by_variant.get("v7", 0), 2000, 0.10, "v7 at weight 10")

    patched_at = time.monotonic()
    version = objects.patch_spec("ranker", {"http": [weighted(50, 50)]})
    mesh.wait_for_resource_version(version, timeout=5.0)
    assert time.monotonic() - patched_at < 3.0
    second = load(stack, mesh, 2000)
    assert_binomial(second.by_variant.get("v7", 0), 2000, 0.50, "v7 at weight 50")

    # The mesh's Istio metrics agree exactly with what the clients saw, for both reporters.
    text = mesh.metrics_text()
    for variant, workload in (("v6", "ranker-v6"), ("v7", "ranker-v7")):
        seen = first.by_variant.get(variant, 0) + second.by_variant.get(variant, 0)
        for reporter in ("source", "destination"):
            assert metric_sum(text, "istio_requests_total", reporter=reporter, destination_workload=workload,
                              response_code="200", destination_service_namespace=namespace) == seen
        assert metric_sum(text, "istio_request_duration_milliseconds_count", reporter="destination",
                          destination_workload=workload) == seen
    assert metric_values(text, "istio_requests_total", reporter="destination", destination_version="v7",
                         destination_service="ranker-v7." + namespace + ".svc.cluster.local",
                         destination_service_name="ranker-v7", destination_app="ranker",
                         source_workload="loadgen", request_protocol="http", response_flags="-")


def test_istio_mirror_feeds_the_shadow_and_counts_divergence(stack: SimStack, localenv: LocalEnv,
                                                             k8s_admin: Any, namespace: str) -> None:
    objects = Objects(k8s_admin, namespace, ISTIO)
    objects.create(virtual_service("ranker", [weighted(100, 0)]))
    _, challenger, mesh = start_ab(stack, localenv, namespace, "istio", "ranker", fast_model("v6"),
                                   fast_model("v7", disagreement=0.2))
    version = objects.patch_spec("ranker", {"http": [weighted(100, 0, mirror={"host": "ranker-v7"},
                                                              mirrorPercentage={"value": 100.0})]})
    mesh.wait_for_resource_version(version)

    report = load(stack, mesh, 1500, users=1_000_000)
    assert report.by_variant == {"v6": 1500}  # the client never sees the shadow's answers

    def compared() -> float:
        return metric_sum(mesh.metrics_text(), "modelrollout_shadow_compared_total", variant="v7",
                          baseline="v6")

    deadline = time.monotonic() + 10
    while compared() < 1500 and time.monotonic() < deadline:
        time.sleep(0.1)
    text = mesh.metrics_text()
    assert compared() == 1500
    differing = metric_sum(text, "modelrollout_shadow_differing_total", variant="v7", baseline="v6")
    assert_binomial(int(differing), 1500, 0.2, "shadow predictions that differ")

    # Istio reports mirrored requests at the destination only; the challenger counts no impression.
    assert metric_sum(text, "istio_requests_total", reporter="destination",
                      destination_workload="ranker-v7") == 1500
    assert metric_sum(text, "istio_requests_total", reporter="source", destination_workload="ranker-v7") == 0
    model_text = challenger.metrics_text()
    assert metric_sum(model_text, "predictions_total", model="v7", shadow="true") == 1500
    assert metric_sum(model_text, "impressions_total", model="v7") == 0


def test_istio_sticky_bucket_match_keeps_users_on_their_variant(stack: SimStack, localenv: LocalEnv,
                                                                k8s_admin: Any, namespace: str) -> None:
    objects = Objects(k8s_admin, namespace, ISTIO)
    objects.create(virtual_service("ranker", sticky(10)))
    _, _, mesh = start_ab(stack, localenv, namespace, "istio", "ranker", fast_model("v6"), fast_model("v7"))

    at_10 = load(stack, mesh, 2500, users=300, record_users=True)
    assert at_10.users_with_several_variants == 0
    for user, variants in at_10.user_variants.items():
        assert variants == (["v7"] if bucket(user) < 10 else ["v6"]), user

    version = objects.patch_spec("ranker", {"http": sticky(25)})
    mesh.wait_for_resource_version(version)
    at_25 = load(stack, mesh, 2500, users=300, record_users=True)
    assert at_25.users_with_several_variants == 0
    for user, variants in at_25.user_variants.items():
        assert variants == (["v7"] if bucket(user) < 25 else ["v6"]), user
    # Monotone: everyone who saw the challenger at 10 % still sees it at 25 %.
    was_v7 = {u for u, v in at_10.user_variants.items() if v == ["v7"]}
    now_v7 = {u for u, v in at_25.user_variants.items() if v == ["v7"]}
    assert was_v7
    assert was_v7 & set(at_25.user_variants) <= now_v7

    # Without the bucket header the sticky rule does not match: everyone goes to the champion.
    anonymous = load(stack, mesh, 300, users=300, bucket_header=None)
    assert anonymous.by_variant == {"v6": 300}


# ---- Gateway API --------------------------------------------------------------------------------
def test_http_route_weights_mirror_and_sticky_match(stack: SimStack, localenv: LocalEnv, k8s_admin: Any,
                                                    namespace: str) -> None:
    objects = Objects(k8s_admin, namespace, GATEWAY)
    predict = {"path": {"type": "PathPrefix", "value": "/predict"}}
    objects.create(http_route("ranker", [{
        "matches": [predict], "backendRefs": [backend_ref("ranker-v6", 90), backend_ref("ranker-v7", 10)]}]))
    _, challenger, mesh = start_ab(stack, localenv, namespace, "gatewayapi", "ranker", fast_model("v6"),
                                   fast_model("v7", disagreement=0.1))

    split = load(stack, mesh, 2000)
    assert_binomial(split.by_variant.get("v7", 0), 2000, 0.10, "v7 at weight 10")

    mirror = {"type": "RequestMirror",
              "requestMirror": {"backendRef": backend_ref("ranker-v7"), "percent": 50}}
    version = objects.patch_spec("ranker", {"rules": [{"matches": [predict], "filters": [mirror],
                                                       "backendRefs": [backend_ref("ranker-v6")]}]})
    mesh.wait_for_resource_version(version)
    before = metric_sum(challenger.metrics_text(), "predictions_total", model="v7", shadow="true")
    mirrored = load(stack, mesh, 1500, users=1_000_000)
    assert mirrored.by_variant == {"v6": 1500}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = mesh.metrics_text()
        shadow_requests = metric_sum(text, "istio_requests_total", reporter="destination",
                                     destination_workload="ranker-v7")
        if metric_sum(text, "modelrollout_shadow_compared_total", variant="v7") == shadow_requests:
            break
        time.sleep(0.1)
    after = metric_sum(challenger.metrics_text(), "predictions_total", model="v7", shadow="true")
    assert before == 0
    assert_binomial(int(after), 1500, 0.5, "requests mirrored at 50 %")
    compared = metric_sum(text, "modelrollout_shadow_compared_total", variant="v7")
    assert compared == after
    differing = metric_sum(text, "modelrollout_shadow_differing_total", variant="v7")
    assert_binomial(int(differing), int(compared), 0.1, "shadow predictions that differ")

    header = {"type": "RegularExpression", "name": BUCKET_HEADER, "value": buckets_regex(range(0, 20))}
    version = objects.patch_spec("ranker", {"rules": [
        {"matches": [predict], "backendRefs": [backend_ref("ranker-v6")]},
        {"matches": [dict(predict, headers=[header])], "backendRefs": [backend_ref("ranker-v7")]},
    ]})
    mesh.wait_for_resource_version(version)
    sticky_run = load(stack, mesh, 2000, users=300, record_users=True)
    assert sticky_run.users_with_several_variants == 0
    for user, variants in sticky_run.user_variants.items():
        assert variants == (["v7"] if bucket(user) < 20 else ["v6"]), user


# ---- Prometheus -------------------------------------------------------------------------------
def test_prometheus_answers_the_designs_queries(stack: SimStack, localenv: LocalEnv, k8s_admin: Any,
                                                namespace: str, prometheus: Prometheus) -> None:
    objects = Objects(k8s_admin, namespace, ISTIO)
    objects.create(virtual_service("ranker", [weighted(50, 50)]))
    _, _, mesh = start_ab(stack, localenv, namespace, "istio", "ranker", fast_model("v6", click_rate=0.10),
                          fast_model("v7", click_rate=0.20, error_rate=0.05))
    stack.register_targets(prometheus)
    report = load(stack, mesh, 2400, rps=200.0)
    ok_v7 = report.by_variant_status["v7"]["200"]

    selector = f'reporter="destination",destination_workload_namespace="{namespace}"'

    def value(promql: str) -> float:
        result = prometheus.query(promql)
        return float(result[0]["value"][1]) if result else math.nan

    # Once every target was scraped after the last request, the raw counters match the clients exactly.
    prometheus.process.wait_until(
        lambda: (value(f"sum(istio_requests_total{{{selector}}})") == report.completed
                 and value('sum(impressions_total{model="v7"})') == ok_v7
                 and value('sum(clicks_total{model="v7"})') == report.clicks_by_variant["v7"]),
        20, "scraping the final counters")

    by_workload = {r["metric"]["destination_workload"]: float(r["value"][1]) for r in prometheus.query(
        f"sum by (destination_workload) (increase(istio_requests_total{{{selector}}}[30s]))")}
    assert set(by_workload) == {"ranker-v6", "ranker-v7"}
    total = sum(by_workload.values())
    # increase() extrapolates and misses what happened before a series' first scrape: ±15 %.
    assert 0.85 * report.completed <= total <= 1.15 * report.completed
    assert abs(by_workload["ranker-v7"] / total - report.by_variant["v7"] / report.completed) < 0.05

    clicks = prometheus.query('sum(increase(clicks_total{model="v7"}[30s]))')
    trials = prometheus.query('sum(increase(impressions_total{model="v7"}[30s]))')
    assert clicks
    assert trials
    clicks_v7, trials_v7 = float(clicks[0]["value"][1]), float(trials[0]["value"][1])
    assert 0.85 * ok_v7 <= trials_v7 <= 1.15 * ok_v7
    assert 0.85 * report.clicks_by_variant["v7"] <= clicks_v7 <= 1.15 * report.clicks_by_variant["v7"]
    assert 0.15 < clicks_v7 / trials_v7 < 0.25

    errors = prometheus.query(
        f'sum(increase(istio_requests_total{{{selector},destination_workload="ranker-v7",response_code=~"5.."}}[30s]))'
        f' / sum(increase(istio_requests_total{{{selector},destination_workload="ranker-v7"}}[30s]))')
    assert errors
    assert 0.01 < float(errors[0]["value"][1]) < 0.10

    p99 = prometheus.query(
        "histogram_quantile(0.99, sum by (le, destination_workload) "
        f"(rate(istio_request_duration_milliseconds_bucket{{{selector}}}[30s])))")
    assert {r["metric"]["destination_workload"] for r in p99} == {"ranker-v6", "ranker-v7"}
    assert all(0.0 < float(r["value"][1]) <= 250.0 for r in p99)
