"""Pure pieces of the mesh stand-in and the load generator: configuration, labels, helpers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from modelrollout.devstack.sim import loadgen, mesh
from modelrollout.devstack.sim.loadgen import LoadConfig
from modelrollout.devstack.sim.mesh import Backend, BackendMap, IstioMetrics, MeshConfig, shadow_host
from modelrollout.devstack.sim.routes import BackendRef
from modelrollout.sdk import bucket

pytestmark = pytest.mark.unit


def test_backend_parse_and_defaults() -> None:
    backend = Backend.parse("ranker-v7=http://127.0.0.1:8002/,variant=v7,app=ranker")
    assert (backend.service, backend.url, backend.variant, backend.app) == (
        "ranker-v7",
        "http://127.0.0.1:8002/",
        "v7",
        "ranker",
    )
    resolved = backend.resolved("shop")
    assert (resolved.url, resolved.workload, resolved.version, resolved.namespace) == (
        "http://127.0.0.1:8002",
        "ranker-v7",
        "v7",
        "shop",
    )
    subset = Backend.parse("ranker/v6=http://127.0.0.1:8001").resolved("shop")
    assert (subset.service, subset.subset, subset.variant, subset.app) == ("ranker", "v6", "ranker", "ranker")
    with pytest.raises(ValueError, match="unknown key"):
        Backend.parse("a=http://127.0.0.1:1,colour=blue")
    with pytest.raises(ValueError, match="expected"):
        Backend.parse("just-a-name")


def test_backend_map_prefers_the_subset() -> None:
    backends = BackendMap(
        [
            Backend("ranker", "http://127.0.0.1:1", "v6", subset="v6"),
            Backend("ranker", "http://127.0.0.1:2", "v7", subset="v7"),
            Backend("ranker-v8", "http://127.0.0.1:3", "v8"),
        ],
        "shop",
    )

    def variant(ref: BackendRef) -> str | None:
        found = backends.get(ref)
        return found.variant if found else None

    assert variant(BackendRef("ranker", "shop", "v7")) == "v7"
    assert variant(BackendRef("ranker", "shop")) == "v6"  # the first one without a subset asked
    assert variant(BackendRef("ranker", "shop", "v9")) is None
    assert variant(BackendRef("ranker-v8", "shop")) == "v8"
    assert variant(BackendRef("nope", "shop")) is None


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("ranker", "ranker-shadow"),
        ("ranker:8080", "ranker-shadow:8080"),
        ("ranker.shop.svc.cluster.local", "ranker.shop.svc.cluster.local-shadow"),
        ("127.0.0.1:9000", "127.0.0.1-shadow:9000"),
        ("[::1]:80", "[::1]-shadow:80"),
        ("", "unknown-shadow"),
    ],
)
def test_shadow_host_appends_before_the_port(host: str, expected: str) -> None:
    assert shadow_host(host) == expected


def _config(**kwargs: object) -> MeshConfig:
    values: dict[str, object] = {
        "namespace": "shop",
        "kind": "istio",
        "route": "ranker",
        "backends": (Backend("ranker-v7", "http://127.0.0.1:8002", "v7", app="ranker"),),
    }
    values.update(kwargs)
    return MeshConfig(**values)  # type: ignore[arg-type]


def test_istio_labels_and_buckets() -> None:
    registry = CollectorRegistry()
    config = _config()
    metrics = IstioMetrics(registry, config)
    backend = config.backends[0].resolved("shop")
    metrics.record("destination", backend, 200, "-", 12.0)
    metrics.record("destination", backend, 200, "-", 700.0)
    metrics.record("source", None, 404, "NR", 0.3)
    labels = dict(zip(mesh.ISTIO_LABELS, metrics.labels("destination", backend, 200, "-"), strict=True))
    assert len(mesh.ISTIO_LABELS) == 25
    assert labels == {
        "reporter": "destination",
        "source_workload": "loadgen",
        "source_workload_namespace": "shop",
        "source_principal": "spiffe://cluster.local/ns/shop/sa/loadgen",
        "source_app": "loadgen",
        "source_version": "unknown",
        "source_canonical_service": "loadgen",
        "source_canonical_revision": "latest",
        "source_cluster": "Kubernetes",
        "destination_workload": "ranker-v7",
        "destination_workload_namespace": "shop",
        "destination_principal": "spiffe://cluster.local/ns/shop/sa/ranker-v7",
        "destination_app": "ranker",
        "destination_version": "v7",
        "destination_service": "ranker-v7.shop.svc.cluster.local",
        "destination_service_name": "ranker-v7",
        "destination_service_namespace": "shop",
        "destination_canonical_service": "ranker",
        "destination_canonical_revision": "v7",
        "destination_cluster": "Kubernetes",
        "request_protocol": "http",
        "response_flags": "-",
        "connection_security_policy": "mutual_tls",
        "response_code": "200",
        "grpc_response_status": "",
    }
    assert registry.get_sample_value("istio_requests_total", labels) == 2
    bucket_500 = registry.get_sample_value(
        "istio_request_duration_milliseconds_bucket", dict(labels, le="500.0")
    )
    bucket_1000 = registry.get_sample_value(
        "istio_request_duration_milliseconds_bucket", dict(labels, le="1000.0")
    )
    assert (bucket_500, bucket_1000) == (1, 2)
    text = generate_latest(registry).decode()
    boundaries = [
        line.split('le="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("istio_request_duration_milliseconds_bucket") and 'reporter="destination"' in line
    ]
    assert [float(b) for b in boundaries] == [*map(float, mesh.ISTIO_DURATION_BUCKETS_MS), math.inf]
    assert 'destination_workload="unknown"' in text
    assert 'response_flags="NR"' in text


def test_mesh_config_json_round_trip_and_validation(tmp_path: Path) -> None:
    config = _config(route_names=("primary",), weight_header="x-modelrollout-bucket", seed=3)
    assert MeshConfig.from_json(json.loads(json.dumps(config.to_json()))) == config
    with pytest.raises(ValueError, match="kind must be"):
        _config(kind="linkerd")
    with pytest.raises(ValueError, match="at least one backend"):
        _config(backends=())

    path = tmp_path / "mesh.json"
    path.write_text(json.dumps(config.to_json()))
    args = mesh.build_parser().parse_args(
        [
            "--config",
            str(path),
            "--http-route",
            "edge-route",
            "--backend",
            "ranker-v6=http://127.0.0.1:9,variant=v6",
        ]
    )
    parsed = mesh.config_from_args(args)
    assert (parsed.kind, parsed.route, [b.variant for b in parsed.backends]) == (
        "gatewayapi",
        "edge-route",
        ["v6"],
    )
    with pytest.raises(ValueError, match="missing"):
        mesh.config_from_args(mesh.build_parser().parse_args(["--virtual-service", "ranker"]))


def test_prediction_of() -> None:
    assert mesh.prediction_of(b'{"prediction": {"item": 3}}') == {"item": 3}
    assert mesh.prediction_of(b"not json") is None
    assert mesh.prediction_of(b"[1, 2]") is None


# ---- load generator ---------------------------------------------------------------------------
def test_load_config_is_bounded_and_loopback_only() -> None:
    LoadConfig(url="http://127.0.0.1:1/predict")
    for bad, message in (
        ({"url": "http://example.com/predict"}, "loopback"),
        ({"duration_s": 0}, "duration_s"),
        ({"duration_s": 1e9}, "duration_s"),
        ({"max_requests": 0}, "max_requests"),
        ({"rps": 0}, "rps"),
        ({"users": 0}, "users"),
        ({"concurrency": 0}, "concurrency"),
    ):
        values: dict[str, object] = {"url": "http://127.0.0.1:1/predict"}
        values.update(bad)
        with pytest.raises(ValueError, match=message):
            LoadConfig(**values)  # type: ignore[arg-type]


def test_users_and_their_headers() -> None:
    assert loadgen.user_id(123) == "user-000123"
    config = LoadConfig(url="http://127.0.0.1:1/predict", host="ranker")
    headers = loadgen.request_headers(config, "user-000123")
    assert headers == {
        "x-user-id": "user-000123",
        "x-modelrollout-bucket": str(bucket("user-000123")),
        "Host": "ranker",
    }
    salted = LoadConfig(url="http://127.0.0.1:1/predict", salt="exp-42", bucket_header="x-b")
    assert loadgen.request_headers(salted, "user-000123") == {"x-user-id": "user-000123", "x-b": "80"}
    plain = LoadConfig(url="http://127.0.0.1:1/predict", bucket_header=None)
    assert loadgen.request_headers(plain, "user-000001") == {"x-user-id": "user-000001"}


def test_percentile_and_report_round_trip() -> None:
    assert loadgen.percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert loadgen.percentile([1.0, 2.0, 3.0, 4.0], 0.99) == 4.0
    assert math.isnan(loadgen.percentile([], 0.5))
    report = loadgen.LoadReport(requests=3, by_variant={"v6": 3}, user_variants={"user-000001": ["v6"]})
    assert loadgen.LoadReport.from_json(json.loads(json.dumps(report.to_json()))) == report


def test_load_command_line() -> None:
    args = loadgen.build_parser().parse_args(
        [
            "--url",
            "http://127.0.0.1:1/predict",
            "--rps",
            "50",
            "--duration",
            "3",
            "--no-bucket-header",
            "--record-users",
        ]
    )
    config = loadgen.config_from_args(args)
    assert (config.rps, config.duration_s, config.bucket_header, config.record_users) == (
        50.0,
        3.0,
        None,
        True,
    )
