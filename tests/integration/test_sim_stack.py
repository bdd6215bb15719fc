"""The simulated stack's processes: clean teardown, run-time reconfiguration, bounded load runs,
and the mesh's watch across deletion and late creation of its route object."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from modelrollout.devstack.controlplane.env import LocalEnv
from modelrollout.devstack.controlplane.procs import pid_alive, port_open
from modelrollout.devstack.sim.loadgen import LoadConfig
from modelrollout.devstack.sim.mesh import MeshConfig
from modelrollout.devstack.sim.model_server import ModelConfig
from modelrollout.devstack.sim.stack import ModelSpec, SimStack, StackError, ab_model_specs

pytestmark = pytest.mark.integration

ISTIO = ("networking.istio.io", "v1", "virtualservices")


def quick(variant: str, **kwargs: Any) -> ModelConfig:
    return ModelConfig(variant, latency_median_ms=1.0, latency_p99_ms=5.0, seed=1, **kwargs)


def test_teardown_leaves_no_process_or_port_even_after_a_failure(tmp_path: Path) -> None:
    pids: list[int] = []
    ports: list[int] = []

    def failing_test() -> None:
        with SimStack(tmp_path) as stack:
            models = stack.start_models(
                [ModelSpec("ranker-v6", quick("v6")), ModelSpec("ranker-v7", quick("v7"))]
            )
            pids.extend(m.process.pid for m in models)
            ports.extend(m.port for m in models)
            assert all(pid_alive(p) for p in pids)
            assert all(port_open(p) for p in ports)
            raise RuntimeError("the test failed")

    with pytest.raises(RuntimeError, match="the test failed"):
        failing_test()
    assert len(pids) == 2
    assert not any(pid_alive(p) for p in pids)
    assert not any(port_open(p) for p in ports)


def test_a_component_that_cannot_start_fails_fast_with_its_log(tmp_path: Path) -> None:
    with SimStack(tmp_path, start_timeout=20) as stack:
        started = time.monotonic()
        with pytest.raises(StackError, match="mesh"):
            stack.start_mesh(_bad_mesh_config())
        assert time.monotonic() - started < 15


def _bad_mesh_config() -> MeshConfig:
    # A kubeconfig that does not exist: the process exits at start, and the stack says so with the
    # log tail instead of waiting for its timeout.
    from modelrollout.devstack.sim.mesh import Backend

    return MeshConfig(
        namespace="x",
        kind="istio",
        route="r",
        kubeconfig="/nonexistent/kubeconfig",
        backends=(Backend("a", "http://127.0.0.1:9"),),
    )


def test_models_change_behaviour_at_run_time_and_load_is_bounded(tmp_path: Path) -> None:
    with SimStack(tmp_path) as stack:
        (model,) = stack.start_models([ModelSpec("ranker-v7", quick("v7", click_rate=0.5))])
        healthy = stack.run_load(
            LoadConfig(url=model.url + "/predict", rps=500, duration_s=10, max_requests=400)
        )
        assert (healthy.requests, healthy.stopped_by, healthy.by_status) == (
            400,
            "max_requests",
            {"200": 400},
        )
        assert 120 < healthy.clicks_by_variant["v7"] < 280

        assert model.configure(error_rate=1.0)["error_rate"] == 1.0
        failing = stack.run_load(
            LoadConfig(url=model.url + "/predict", rps=500, duration_s=10, max_requests=200)
        )
        assert failing.by_status == {"500": 200}

        with pytest.raises(StackError, match="error_rate must be in"):
            model.configure(error_rate=3)
        model.configure(error_rate=0.0, latency_median_ms=30.0, latency_p99_ms=30.0)
        slow = stack.run_load(LoadConfig(url=model.url + "/predict", rps=100, duration_s=1.0))
        assert slow.stopped_by == "duration"
        assert 80 <= slow.requests <= 101
        assert slow.latency_ms["p50"] >= 30.0

        text = model.metrics_text()
        assert 'model_requests_total{code="500",model="v7",shadow="false"} 200.0' in text

        # A long run ends early on SIGTERM and still reports what it did.
        run = stack.start_load(LoadConfig(url=model.url + "/predict", rps=50, duration_s=600))
        time.sleep(1.5)
        stopped = run.stop()
        assert stopped.stopped_by == "signal"
        assert 20 <= stopped.requests <= 100
        assert not pid_alive(run.process.pid)


def test_mesh_follows_deletion_and_late_creation(
    tmp_path: Path, localenv: LocalEnv, k8s_admin: Any, namespace: str
) -> None:
    custom: Any = client.CustomObjectsApi(k8s_admin)
    group, version, plural = ISTIO
    body = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "ranker"},
        "spec": {"hosts": ["ranker"], "http": [{"route": [{"destination": {"host": "ranker-v7"}}]}]},
    }
    with SimStack(tmp_path) as stack:
        stack.start_models(ab_model_specs(quick("v6"), [quick("v7")]))
        # Started before the object exists: it routes nothing yet, and is ready (it listed once).
        mesh = stack.start_mesh(
            MeshConfig(
                namespace=namespace,
                kind="istio",
                route="ranker",
                backends=stack.backends(),
                kubeconfig=str(localenv.admin_kubeconfig),
            )
        )
        assert mesh.routes()["rules"] == []
        nothing = stack.run_load(
            LoadConfig(url=mesh.url + "/predict", host="ranker", rps=200, max_requests=20)
        )
        assert nothing.by_status == {"404": 20}

        created = custom.create_namespaced_custom_object(group, version, namespace, plural, body)
        mesh.wait_for_resource_version(created["metadata"]["resourceVersion"])
        served = stack.run_load(
            LoadConfig(url=mesh.url + "/predict", host="ranker", rps=200, max_requests=50)
        )
        assert served.by_variant == {"v7": 50}

        custom.delete_namespaced_custom_object(group, version, namespace, plural, "ranker")
        mesh.wait_for_routes(lambda r: r["rules"] == [])
        gone = stack.run_load(LoadConfig(url=mesh.url + "/predict", host="ranker", rps=200, max_requests=20))
        assert gone.by_status == {"404": 20}
        text = mesh.metrics_text()
        assert 'response_flags="NR"' in text
        assert mesh.routes()["watchRestarts"] == 0
        assert os.path.exists(mesh.process.log_path)
