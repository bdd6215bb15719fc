"""The same promotion through the other traffic providers: Gateway API and the Service replica ratio."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from kubernetes import watch

from modelrollout.devstack.sim.world import GROUP, ISTIO, PLURAL, VERSION, World, experiment_manifest
from support.models import fast

pytestmark = pytest.mark.e2e


def wait_for_condition(world: World, type_: str, timeout: float) -> dict[str, Any]:
    """``kubectl wait --for=condition=<type_>``: watch the object until the condition is True."""
    w = watch.Watch()  # type: ignore[no-untyped-call]
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            stream = w.stream(  # type: ignore[no-untyped-call]
                world.custom.list_namespaced_custom_object, GROUP, VERSION, world.namespace, PLURAL,
                field_selector=f"metadata.name={world.experiment_name}",
                timeout_seconds=max(1, int(deadline - time.monotonic())),
            )
            for event in stream:
                obj = event["object"]
                for c in (obj.get("status") or {}).get("conditions", []):
                    if c.get("type") == type_ and c.get("status") == "True":
                        return dict(c)
    finally:
        w.stop()  # type: ignore[no-untyped-call]
    raise AssertionError(f"condition {type_} not True within {timeout:.0f}s; {world.describe()}")


def test_promotion_through_gateway_api_http_route(world: World) -> None:
    # Given a better challenger, behind a Gateway API HTTPRoute
    world.given_models(fast("v6", click_rate=0.20), fast("v7", click_rate=0.30))
    world.given_http_route()
    world.given_mesh()
    world.given_load(rps=200, duration_s=400)
    world.given_operator()
    recorder = world.record_weights()
    # When the experiment is applied with provider gatewayAPI
    world.when_experiment_applied(experiment_manifest(
        "ranker-v7", provider="gatewayAPI", mde=0.25, prometheus_url=world.prometheus.url))
    # Then `kubectl wait --for=condition=Succeeded` returns, the phase is Promoted,
    # and the HTTPRoute showed every step on the way
    succeeded = wait_for_condition(world, "Succeeded", timeout=150)
    assert succeeded["status"] == "True"
    assert world.phase() == "Promoted", world.describe()
    recorder.stop()
    world.then_routes({"v6": 0, "v7": 100})
    world.then_every_step_seen()  # 10, 25, 50, 100 of the manifest, never going back


class ReplicaRatioRouting:
    """kube-proxy stand-in: there are no pods here, so the mesh stand-in routes by an Istio
    VirtualService that this thread keeps equal to the Deployments' replica ratio (the share of
    the pods each variant would have behind the one Service)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.replicas: list[dict[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="replica-ratio", daemon=True)

    def start(self) -> ReplicaRatioRouting:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _read(self) -> dict[str, int]:
        apps, ns = self.world.apps, self.world.namespace
        return {v: apps.read_namespaced_deployment(f"ranker-{v}", ns).spec.replicas or 0
                for v in self.world.models}

    def _run(self) -> None:
        last: dict[str, int] | None = None
        while not self._stop.is_set():
            try:
                replicas = self._read()
                if replicas != last:
                    self.replicas.append(replicas)
                    self._write(replicas)
                    last = replicas
            except Exception:  # keep mirroring; the test checks the outcome
                pass
            self._stop.wait(0.2)

    def _write(self, replicas: dict[str, int]) -> None:
        total = sum(replicas.values())
        if not total:
            return
        route: list[dict[str, Any]] = [
            {"destination": {"host": f"ranker-{v}"}, "weight": round(100 * r / total)}
            for v, r in replicas.items() if r > 0
        ]
        route[-1]["weight"] += 100 - sum(d["weight"] for d in route)
        group, version, plural = ISTIO
        self.world.custom.patch_namespaced_custom_object(
            group, version, self.world.namespace, plural, "ranker",
            {"spec": {"http": [{"name": "primary", "route": route}]}})


def test_promotion_through_service_replica_ratio(world: World) -> None:
    # Given a better challenger as a Deployment of 0 replicas next to the champion's 10, behind one
    # Service, and traffic that follows the replica ratio (VirtualService kept equal to it)
    world.given_models(fast("v6", click_rate=0.20), fast("v7", click_rate=0.30))
    world.given_virtual_service()
    world.given_deployments(10)
    world.given_mesh(kind="istio")
    ratio = ReplicaRatioRouting(world).start()
    world.given_load(rps=200, duration_s=400)
    world.given_operator()
    # When the experiment is applied with provider service
    world.when_experiment_applied(experiment_manifest(
        "ranker-v7", provider="service", mde=0.25, prometheus_url=world.prometheus.url))
    # Then it is promoted, and the replicas followed every step
    world.then_phase(["Promoted", "RolledBack", "Failed"], timeout=150)
    assert world.phase() == "Promoted", world.describe()
    time.sleep(1)
    ratio.stop()
    print(f"replicas seen: {ratio.replicas}")
    assert ratio.replicas[-1] == {"v6": 0, "v7": 10}, ratio.replicas
    challenger = [r["v7"] for r in ratio.replicas]
    for expected in (1, 3, 5, 10):  # 10 %, 25 % (2.5 -> 3 by largest remainder), 50 %, 100 % of 10
        assert expected in challenger or (expected == 3 and 2 in challenger), (
            f"{expected} challenger replicas never seen: {ratio.replicas}")
    assert challenger == sorted(challenger), f"replicas went backwards: {ratio.replicas}"
    # Deployments that grow are written before those that shrink, so the reader may catch a surge
    # in between (8 + 5 on the way from 8/2 to 5/5), but capacity never dips below the budget
    assert all(sum(r.values()) >= 10 for r in ratio.replicas), ratio.replicas
    # And the status records the split the replicas achieve (25 % of 10 replicas is 2 or 3 of them),
    # which is the split the sample ratio test expects
    status = world.status()
    step_1 = next(s for s in status["strata"] if s["step"] == 1)
    assert step_1["weights"]["v7"] in (20, 30), step_1
    advanced = [h for h in status["history"] if h.get("toStep") == 1 and h["reason"] == "StepAdvanced"]
    assert advanced, status["history"]
    assert advanced[0]["weights"] == step_1["weights"], status["history"]
    world.then_event("WeightsRounded", timeout=15)
