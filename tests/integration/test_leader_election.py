"""Leader election on the real kube-apiserver: the Lease loop in-process, a router fenced between a
real 409 and its retry, and two operator processes (``modelrollout run --leader-elect``):

* a leader frozen (SIGSTOP) past its lease is replaced by the standby; thawed (SIGCONT) while the
  new leader is frozen in turn, so that any write could only be the old leader's, it writes no
  route, no status, no Event and no Lease, and exits with code 3;
* a graceful stop (SIGTERM) releases the Lease, and the standby takes over at its next retry.

The leader killed with SIGKILL mid-step, with the steps checked, is an e2e test
(tests/e2e/test_leader_failover.py): it needs the metrics of a whole experiment.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelrollout.controller.leader import (
    KubeLeaseStore,
    LeaderElector,
    LeaderGuard,
    LeaseConfig,
    LeaseConflictError,
)
from modelrollout.devstack.controlplane.env import LocalEnv
from modelrollout.devstack.controlplane.procs import ManagedProcess
from modelrollout.devstack.sim.world import experiment_manifest
from modelrollout.errors import ExitCode, FencedError
from modelrollout.routing import IstioRouter, RetryPolicy, RouteState, TrafficTarget, Variant

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "modelrollout.io", "v1alpha1", "modelexperiments"
ISTIO = ("networking.istio.io", "v1", "virtualservices")
APP = "ranker"
LEASE = "modelrollout-leader"
EXPERIMENT = "ranker-v7"
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, period: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except ApiException as exc:
            last = f"{exc.status} {exc.reason}"
        if last is not None and last is not False:
            return last
        time.sleep(period)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        self.t += seconds
        return stop.is_set()


def given_virtual_service(api: Any, ns: str) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(*ISTIO[:2], ns, ISTIO[2], {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": APP},
        "spec": {"hosts": [APP], "http": [{"name": "primary", "route": [
            {"destination": {"host": f"{APP}-v6"}, "weight": 100}]}]},
    })


def virtual_service(api: Any, ns: str) -> dict[str, Any]:
    found: Any = client.CustomObjectsApi(api).get_namespaced_custom_object(*ISTIO[:2], ns, ISTIO[2], APP)
    return dict(found)


def lease_spec(api: Any, ns: str) -> dict[str, Any] | None:
    try:
        found = client.CoordinationV1Api(api).read_namespaced_lease(LEASE, ns)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    spec = found.spec
    return {"holder": spec.holder_identity or "", "transitions": spec.lease_transitions,
            "duration": spec.lease_duration_seconds, "resourceVersion": found.metadata.resource_version}


def holder(api: Any, ns: str) -> str | None:
    found = lease_spec(api, ns)
    return found["holder"] if found else None


# --- the Lease loop and the fence, in-process, on the real apiserver ------------------------------


def elector(api: Any, ns: str, identity: str, clock: Clock) -> tuple[LeaderElector, list[str]]:
    lost: list[str] = []
    guard = LeaderGuard(clock=clock, on_lost=lost.append)
    config = LeaseConfig(name=LEASE, namespace=ns, identity=identity)
    return LeaderElector(config, KubeLeaseStore(api, ns, LEASE), guard, clock=clock, wait=clock.wait), lost


def test_the_lease_loop_on_the_real_apiserver(k8s_admin: Any, namespace: str) -> None:
    clock = Clock()
    a, a_lost = elector(k8s_admin, namespace, "a", clock)
    b, _ = elector(k8s_admin, namespace, "b", clock)
    assert a.try_acquire_or_renew()  # created
    created = lease_spec(k8s_admin, namespace)
    assert created is not None
    assert (created["holder"], created["transitions"], created["duration"]) == ("a", 0, 15)
    assert not b.try_acquire_or_renew()
    clock.t += 2
    assert a.try_acquire_or_renew()  # renewed: a PUT with the resourceVersion read
    renewed = lease_spec(k8s_admin, namespace)
    assert renewed is not None
    assert int(renewed["resourceVersion"]) > int(created["resourceVersion"])
    # A real 409: b read the lease, then a renewed it, then b's PUT carries the old resourceVersion.
    stale = b.store.get(2.0)
    assert stale is not None
    clock.t += 2
    assert a.try_acquire_or_renew()
    with pytest.raises(LeaseConflictError):
        b.store.replace({**stale, "spec": {**stale["spec"], "holderIdentity": "b"}}, 2.0)
    # a stops renewing; b takes over 15 s (on its clock) after it last saw the lease change.
    assert not b.try_acquire_or_renew()
    clock.t += 14.9
    assert not b.try_acquire_or_renew()
    clock.t += 0.1
    assert b.try_acquire_or_renew()
    taken = lease_spec(k8s_admin, namespace)
    assert taken is not None
    assert (taken["holder"], taken["transitions"]) == ("b", 1)
    # a's fence had closed 10 s after its last renewal started; its renewing loop finds b's name.
    assert not a.guard.can_write()
    assert a_lost
    # b releases: an empty holder and a 1 s lease, written as the apiserver's MicroTime.
    assert b.release()
    released = lease_spec(k8s_admin, namespace)
    assert released is not None
    assert (released["holder"], released["duration"], released["transitions"]) == ("", 1, 1)
    c, _ = elector(k8s_admin, namespace, "c", clock)
    assert c.try_acquire_or_renew()  # at once, no lease duration to wait
    assert lease_spec(k8s_admin, namespace)["holder"] == "c"  # type: ignore[index]


def test_a_router_fenced_between_a_real_409_and_its_retry_writes_nothing(
        k8s_admin: Any, namespace: str) -> None:
    given_virtual_service(k8s_admin, namespace)
    custom = client.CustomObjectsApi(k8s_admin)
    clock = Clock()
    guard = LeaderGuard(clock=clock)
    guard.renewed(clock.t, 10.0)
    attempts: list[int] = []

    def before_write(attempt: int) -> None:
        attempts.append(attempt)
        if attempt == 1:  # someone else writes between the router's read and its patch: a real 409
            custom.patch_namespaced_custom_object(*ISTIO[:2], namespace, ISTIO[2], APP,
                                                  {"metadata": {"labels": {"touched": "yes"}}})
        else:  # and the process is frozen past its renew deadline before the retry
            clock.t += 10.0

    router = IstioRouter(k8s_admin, retry=RetryPolicy(max_attempts=5, sleep=lambda _s: None),
                         before_write=before_write, can_write=guard.can_write)
    target = TrafficTarget(namespace, APP, (Variant("v6", f"{APP}-v6"), Variant("v7", f"{APP}-v7")), "v6",
                           routes=("primary",))
    with pytest.raises(FencedError, match=f"VirtualService {namespace}/{APP} not written"):
        router.apply(target, RouteState({"v6": 90, "v7": 10}))
    assert attempts == [1, 2]
    after = virtual_service(k8s_admin, namespace)
    assert after["metadata"]["labels"] == {"touched": "yes"}
    assert after["spec"]["http"][0]["route"] == [{"destination": {"host": f"{APP}-v6"}, "weight": 100}]
    assert "modelrollout.io/routes" not in (after["metadata"].get("annotations") or {})
    managers = {m["manager"] for m in after["metadata"]["managedFields"]}
    assert "modelrollout" not in managers  # the router's field manager never wrote


# --- two operator processes ----------------------------------------------------------------------


class SlowPrometheus:
    """Answers every query with an empty vector after ``delay`` seconds: each tick of the operator
    then spends seconds in its queries, so a signal is likely to find it in the middle of one."""

    def __init__(self, delay: float) -> None:
        body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}}).encode()

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                time.sleep(delay)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the operator left
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            do_GET = do_POST = _answer  # noqa: N815

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Cluster:
    """The test namespace: the routed objects, the experiment, and the replicas of the operator."""

    def __init__(self, env: LocalEnv, api: Any, namespace: str, workdir: Path) -> None:
        self.env, self.api, self.ns, self.workdir = env, api, namespace, workdir
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.replicas: dict[str, ManagedProcess] = {}

    def given_experiment(self, prometheus_url: str) -> None:
        for v in ("v6", "v7"):
            self.core.create_namespaced_service(self.ns, client.V1Service(
                metadata=client.V1ObjectMeta(name=f"{APP}-{v}"),
                spec=client.V1ServiceSpec(selector={"app": APP, "version": v},
                                          ports=[client.V1ServicePort(port=80)])))
        given_virtual_service(self.api, self.ns)
        manifest = experiment_manifest(EXPERIMENT, prometheus_url=prometheus_url, guardrails=[],
                                       min_step_duration="10m", analysis={"maxDataOutage": "5m"})
        manifest["spec"]["metrics"]["prometheus"]["timeout"] = "10s"
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, manifest)

    def start(self, identity: str, *extra: str) -> ManagedProcess:
        env = dict(os.environ)
        env.update(KUBECONFIG=str(self.env.admin_kubeconfig), MODELROLLOUT_TIMER_SECONDS="0.5",
                   PYTHONUNBUFFERED="1", POD_NAME=identity)
        argv = [sys.executable, "-m", "modelrollout.cli", "run", "--namespace", self.ns, "--leader-elect",
                "--lease-namespace", self.ns, "--lease-name", LEASE, "--metrics-port=0", *extra]
        process = ManagedProcess(identity, argv, self.workdir / f"{identity}.log", env=env, cwd=self.workdir)
        process.start()
        self.replicas[identity] = process
        return process

    def log(self, identity: str) -> str:
        path = self.replicas[identity].log_path
        return path.read_text(errors="replace") if path.exists() else ""

    def status(self) -> dict[str, Any]:
        found: Any = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, EXPERIMENT)
        return dict(found.get("status") or {})

    def last_tick(self) -> str | None:
        return self.status().get("lastTickAt")

    def wait_for_a_new_tick(self, after: str | None, timeout: float) -> str:
        return wait_for("a status written after " + str(after),
                        lambda: (t := self.last_tick()) is not None and t != after and t, timeout)

    def snapshot(self) -> dict[str, Any]:
        """What any write would change: the resourceVersions of the experiment, the VirtualService,
        every Event in the namespace, and the Lease."""
        found: Any = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, EXPERIMENT)
        events = sorted((e.metadata.name, e.metadata.resource_version, e.count)
                        for e in self.core.list_namespaced_event(self.ns).items)
        return {"experiment": found["metadata"]["resourceVersion"],
                "status": copy.deepcopy(found.get("status")),
                "virtualservice": virtual_service(self.api, self.ns)["metadata"]["resourceVersion"],
                "events": events,
                "lease": lease_spec(self.api, self.ns)}

    def close(self) -> None:
        for process in self.replicas.values():
            if process.returncode() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGCONT)
            process.stop()


@pytest.fixture
def cluster(localenv: LocalEnv, k8s_admin: Any, namespace: str, tmp_path: Path) -> Iterator[Cluster]:
    found = Cluster(localenv, k8s_admin, namespace, tmp_path)
    try:
        yield found
    finally:
        found.close()
        # The experiment keeps kopf's finalizer once no operator runs: drop it, so the namespace goes.
        with contextlib.suppress(ApiException):
            found.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, EXPERIMENT,
                                                        {"metadata": {"finalizers": None}})


@pytest.fixture
def slow_prometheus() -> Iterator[SlowPrometheus]:
    server = SlowPrometheus(delay=0.7)
    yield server
    server.close()


def leading(cluster: Cluster, identity: str, timeout: float) -> float:
    """Wait until ``identity`` holds the Lease; the seconds it took."""
    started = time.monotonic()
    wait_for(f"{identity} to hold the Lease", lambda: holder(cluster.api, cluster.ns) == identity, timeout,
             period=0.05)
    return time.monotonic() - started


def test_a_leader_frozen_past_its_lease_writes_nothing_when_it_thaws(
        cluster: Cluster, slow_prometheus: SlowPrometheus) -> None:
    cluster.given_experiment(slow_prometheus.url)
    a = cluster.start("op-a")
    leading(cluster, "op-a", timeout=60)
    first = cluster.wait_for_a_new_tick(None, timeout=60)
    cluster.wait_for_a_new_tick(first, timeout=30)  # a ticks on
    # b waits with a longer renew deadline of its own, so that it survives being frozen below.
    b = cluster.start("op-b", "--lease-duration", "40s", "--renew-deadline", "30s")
    wait_for("op-b waiting as a standby", lambda: "standby: waiting" in cluster.log("op-b"), timeout=60)
    assert holder(cluster.api, cluster.ns) == "op-a"

    # When the leader is frozen past its lease (its ticks take seconds: it is likely mid-tick)
    os.kill(a.pid, signal.SIGSTOP)
    frozen_at = time.monotonic()
    took = leading(cluster, "op-b", timeout=60)
    # Then the standby takes over once the lease has not changed for 15 s on its clock
    assert 15 - 2.0 - 0.5 <= took <= 15 + 2.0 * 1.2 + 3.0, took
    # and acts: a status written after the takeover
    at_takeover = cluster.last_tick()
    acted = cluster.wait_for_a_new_tick(at_takeover, timeout=30)

    # When the new leader is frozen in turn (any write from now on can only be the old leader's)
    os.kill(b.pid, signal.SIGSTOP)
    time.sleep(1.0)  # what b had sent before lands
    before = cluster.snapshot()
    # and the old leader thaws
    os.kill(a.pid, signal.SIGCONT)
    thawed_at = time.monotonic()
    code = wait_for("the old leader to exit", a.returncode, timeout=8, period=0.02)
    exited_after = time.monotonic() - thawed_at
    time.sleep(1.0)
    after = cluster.snapshot()
    os.kill(b.pid, signal.SIGCONT)

    # Then it wrote nothing (no route, no status, no Event, no Lease) and exited with its own code
    assert after == before
    assert code == ExitCode.LEASE_LOST, cluster.log("op-a")[-3000:]
    log_a = cluster.log("op-a")
    noticed = [line for line in log_a.splitlines() if "lost the leader's Lease" in line]
    assert noticed, log_a[-3000:]
    # and the new leader goes on: it still holds the Lease and writes the next status
    cluster.wait_for_a_new_tick(after["status"]["lastTickAt"], timeout=30)
    assert holder(cluster.api, cluster.ns) == "op-b"
    assert b.returncode() is None
    print(f"\nfrozen {time.monotonic() - frozen_at:.1f} s in all; takeover {took:.1f} s after SIGSTOP; "
          f"b's first status at {acted}; the old leader exited {exited_after:.2f} s after SIGCONT with "
          f"code {code}: {noticed[0][-300:]}")


def test_a_graceful_stop_releases_the_lease_and_the_standby_takes_over_at_once(
        cluster: Cluster, slow_prometheus: SlowPrometheus) -> None:
    cluster.given_experiment(slow_prometheus.url)
    a = cluster.start("op-a")
    leading(cluster, "op-a", timeout=60)
    first = cluster.wait_for_a_new_tick(None, timeout=60)
    cluster.start("op-b")
    wait_for("op-b waiting as a standby", lambda: "standby: waiting" in cluster.log("op-b"), timeout=60)
    time.sleep(3.0)  # b has seen the lease renewed: only a release lets it in before 15 s

    os.kill(a.pid, signal.SIGTERM)
    stopped_at = time.monotonic()
    seen: list[str] = []

    def taken() -> bool:
        h = holder(cluster.api, cluster.ns)
        if h is not None and (not seen or seen[-1] != h):
            seen.append(h)
        return h == "op-b"

    wait_for("op-b to hold the Lease", taken, timeout=30, period=0.02)
    took = time.monotonic() - stopped_at
    code = wait_for("op-a to exit", a.returncode, timeout=30)
    assert code == ExitCode.OK, cluster.log("op-a")[-3000:]
    assert "Lease released" in cluster.log("op-a")
    assert took < 15 - 2.0 * 1.2, took  # well before the lease could have expired
    lease = lease_spec(cluster.api, cluster.ns)
    assert lease is not None
    assert lease["transitions"] == 1
    assert lease["duration"] == 15
    cluster.wait_for_a_new_tick(cluster.last_tick(), timeout=30)  # b acts
    print(f"\nSIGTERM → op-b holds the Lease after {took:.2f} s (holders seen: {seen}); first tick {first}")
