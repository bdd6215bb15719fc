"""A whole experiment on the local stack, in Given / When / Then steps.

Used by the e2e tests and by ``modelrollout demo``: the real kube-apiserver and Prometheus of
:mod:`modelrollout.devstack.controlplane`, simulated model servers and the mesh stand-in of
:mod:`modelrollout.devstack.sim`, and the operator as a separate process (``modelrollout run``), all on
loopback. In the style of Argo Rollouts' e2e suite::

    world.given_models(ModelConfig("v6", click_rate=0.2), ModelConfig("v7", click_rate=0.3))
    world.given_virtual_service()
    world.given_mesh()
    world.given_load(rps=300, duration_s=240)
    world.given_operator()
    world.when_experiment_applied(experiment_manifest("ranker-v7", ...))
    world.then_phase("Promoted", timeout=180)

Every process belongs to the world's :class:`~modelrollout.devstack.sim.stack.SimStack` or is the operator
process, and :meth:`World.close` ends all of them, also when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelrollout.api.experiment import GROUP, PLURAL, VERSION
from modelrollout.devstack.controlplane.env import LocalEnv
from modelrollout.devstack.controlplane.kube import http_get
from modelrollout.devstack.controlplane.procs import ManagedProcess, free_port
from modelrollout.devstack.controlplane.prometheus import Prometheus
from modelrollout.devstack.sim.loadgen import LoadConfig
from modelrollout.devstack.sim.mesh import MeshConfig
from modelrollout.devstack.sim.model_server import ModelConfig
from modelrollout.devstack.sim.stack import LoadRun, ModelSpec, RunningMesh, RunningModel, SimStack
from modelrollout.errors import ModelRolloutError

#: Starts the operator another way: (the arguments of ``modelrollout``, the environment it needs) ->
#: the argv to start (see :meth:`World.given_operator`).
OperatorCommand = Callable[[list[str], dict[str, str]], Sequence[str]]
#: The Prometheus job of the operator's own metrics (``/metrics`` of ``modelrollout run``).
OPERATOR_JOB = "modelrollout-operator"
ISTIO = ("networking.istio.io", "v1", "virtualservices")
GATEWAY = ("gateway.networking.k8s.io", "v1", "httproutes")
APP = "ranker"


class ScenarioError(ModelRolloutError, AssertionError):
    """A Then step that did not hold, with what was seen."""


def experiment_manifest(
    name: str,
    *,
    champion: str = "v6",
    challengers: Sequence[str] = ("v7",),
    provider: str = "istio",
    steps: Sequence[int] = (10, 25, 50, 100),
    interval: str = "1s",
    min_step_duration: str = "3s",
    min_samples_per_step: int = 0,
    mde: float = 0.25,
    method: str = "sequential",
    max_duration: str = "10m",
    on_inconclusive: str = "keepChampion",
    guardrails: Sequence[Mapping[str, Any]] | None = None,
    extra_guardrails: Sequence[Mapping[str, Any]] = (),
    segments: Mapping[str, Any] | None = None,
    shadow: Mapping[str, Any] | None = None,
    stickiness: bool = False,
    analysis: Mapping[str, Any] | None = None,
    prometheus_url: str = "http://127.0.0.1:9090",
) -> dict[str, Any]:
    """A ModelExperiment over the simulated stack, compressed in time (1 s ticks, short steps).

    The primary metric is the click-through rate the simulated models export
    (``clicks_total`` / ``impressions_total`` by ``model``); the default guardrail is Istio's
    error rate from the mesh stand-in. ``guardrails`` replaces that default, ``extra_guardrails``
    are added after it (or after ``guardrails``); ``segments`` is ``spec.metrics.segments`` as
    given (the simulated counters carry a ``segment`` label: ``desktop``, ``mobile``, ``tablet``),
    e.g. ``{"label": "segment", "protected": [{"value": "mobile"}]}``.
    """
    variants = [champion, *challengers]
    traffic: dict[str, Any] = {"provider": provider}
    if provider == "istio":
        traffic["istio"] = {"virtualService": APP, "routes": ["primary"]}
    elif provider == "gatewayAPI":
        traffic["gatewayAPI"] = {"httpRoute": APP, "ruleNames": ["primary"]}
    else:
        traffic["service"] = {"service": APP}
    if stickiness:
        traffic["stickiness"] = {"bucketHeader": "x-modelrollout-bucket"}

    def variant(v: str) -> dict[str, Any]:
        if provider == "service":
            return {"name": v, "deployment": f"{APP}-{v}"}
        return {"name": v, "service": f"{APP}-{v}"}

    selector = 'namespace="{{namespace}}", model="{{variant}}"'
    base_guardrails: Sequence[Mapping[str, Any]] = (
        guardrails if guardrails is not None
        else [{"name": "error-rate", "preset": "istio-error-rate", "maxRelativeIncrease": 0.5}]
    )
    spec: dict[str, Any] = {
        "champion": variant(champion),
        "challengers": [variant(c) for c in challengers],
        "traffic": traffic,
        "rollout": {"steps": list(steps), "minStepDuration": min_step_duration, "interval": interval,
                    "minSamplesPerStep": min_samples_per_step},
        "metrics": {
            "prometheus": {"address": prometheus_url, "timeout": "5s"},
            "primary": {
                "name": "click-through",
                "type": "proportion",
                "successes": f"clicks_total{{{selector}}}",
                "trials": f"impressions_total{{{selector}}}",
                "direction": "increase",
                "minimumDetectableEffect": mde,
            },
            "guardrails": [dict(g) for g in (*base_guardrails, *extra_guardrails)],
        },
        "analysis": {"method": method, "maxDuration": max_duration, "onInconclusive": on_inconclusive,
                     "maxConsecutiveErrors": 30, "maxDataOutage": "60s", **(analysis or {})},
    }
    if segments is not None:
        spec["metrics"]["segments"] = dict(segments)
    if shadow is not None:
        spec["shadow"] = dict(shadow)
    del variants
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelExperiment",
        "metadata": {"name": name},
        "spec": spec,
    }


@dataclass
class WeightsRecorder:
    """Polls the routed object and keeps every distinct weight split it showed, with the time."""

    read: Callable[[], dict[str, int] | None]
    period_s: float = 0.2
    seen: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="weights-recorder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                weights = self.read()
            except Exception:  # the object may not exist yet; keep polling
                weights = None
            if weights is not None and (not self.seen or self.seen[-1][1] != weights):
                self.seen.append((time.time(), weights))
            self._stop.wait(self.period_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def splits(self) -> list[dict[str, int]]:
        return [w for _, w in self.seen]


class World:
    """One scenario: its namespace, its simulated processes, its operator and its experiment."""

    def __init__(
        self,
        env: LocalEnv,
        prometheus: Prometheus,
        api: client.ApiClient,
        namespace: str,
        workdir: Path,
        *,
        python: str = sys.executable,
    ) -> None:
        self.env = env
        self.prometheus = prometheus
        self.api = api
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.workdir = workdir
        self.python = python
        self.stack = SimStack(workdir / "sim", python=python)
        self.models: dict[str, RunningModel] = {}
        self.mesh: RunningMesh | None = None
        self.load: LoadRun | None = None
        self.operator: ManagedProcess | None = None
        self.operator_starts = 0
        #: Where the operator serves its own metrics (``http://127.0.0.1:<port>/metrics``).
        self.operator_metrics_port: int | None = None
        #: The replicas started with leader election, by name.
        self.operators: dict[str, ManagedProcess] = {}
        self.experiment_name: str | None = None
        self.provider = "istio"
        self.recorder: WeightsRecorder | None = None

    # ---- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> World:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.stop()
        self.stop_operator()
        for process in self.operators.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)  # a frozen one stops gracefully too
            process.stop()
        self.stack.stop()

    # ---- Given ----------------------------------------------------------------------------------
    def given_models(self, champion: ModelConfig, *challengers: ModelConfig) -> list[RunningModel]:
        """Start one model server per variant and create a Service ``ranker-<variant>`` for each."""
        specs = [ModelSpec(f"{APP}-{c.variant}", c, app=APP, workload=f"{APP}-{c.variant}",
                           version=c.variant) for c in (champion, *challengers)]
        running = self.stack.start_models(specs)
        for model in running:
            self.models[model.variant] = model
            self._create_service(model.spec.service, {"app": APP, "version": model.variant})
        return running

    def _create_service(self, name: str, selector: Mapping[str, str]) -> None:
        body = client.V1Service(
            metadata=client.V1ObjectMeta(name=name, labels={"app": APP}),
            spec=client.V1ServiceSpec(selector=dict(selector), ports=[client.V1ServicePort(port=80)]),
        )
        self.core.create_namespaced_service(self.namespace, body)

    def given_virtual_service(self) -> None:
        """A VirtualService ``ranker`` whose route ``primary`` sends everything to the champion."""
        champion = next(iter(self.models))
        body = {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": APP},
            "spec": {
                "hosts": [APP],
                "http": [{"name": "primary", "route": [{"destination": {"host": f"{APP}-{champion}"},
                                                         "weight": 100}]}],
            },
        }
        group, version, plural = ISTIO
        self.custom.create_namespaced_custom_object(group, version, self.namespace, plural, body)
        self.provider = "istio"

    def given_http_route(self) -> None:
        """An HTTPRoute ``ranker`` whose rule ``primary`` sends everything to the champion."""
        champion = next(iter(self.models))
        body = {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": APP},
            "spec": {
                "parentRefs": [{"name": "gateway"}],
                "rules": [{"name": "primary",
                           "backendRefs": [{"name": f"{APP}-{champion}", "port": 80, "weight": 1}]}],
            },
        }
        group, version, plural = GATEWAY
        self.custom.create_namespaced_custom_object(group, version, self.namespace, plural, body)
        self.provider = "gatewayAPI"

    def given_deployments(self, champion_replicas: int = 10) -> None:
        """One Deployment per variant behind one Service ``ranker`` (the champion at full size)."""
        names = list(self.models)
        for i, v in enumerate(names):
            labels = {"app": APP, "version": v}
            body = client.V1Deployment(
                metadata=client.V1ObjectMeta(name=f"{APP}-{v}", labels=labels),
                spec=client.V1DeploymentSpec(
                    replicas=champion_replicas if i == 0 else 0,
                    selector=client.V1LabelSelector(match_labels=labels),
                    template=client.V1PodTemplateSpec(
                        metadata=client.V1ObjectMeta(labels=labels),
                        spec=client.V1PodSpec(containers=[client.V1Container(name="model", image="model")]),
                    ),
                ),
            )
            self.apps.create_namespaced_deployment(self.namespace, body)
        self._create_service(APP, {"app": APP})
        self.provider = "service"

    def given_mesh(self, *, kind: str | None = None) -> RunningMesh:
        """The mesh stand-in over the routed object, and Prometheus scraping the models and the mesh."""
        kind = kind or ("gatewayapi" if self.provider == "gatewayAPI" else "istio")
        config = MeshConfig(
            namespace=self.namespace,
            kind=kind,
            route=APP,
            backends=self.stack.backends(self.models.values()),
            kubeconfig=str(self.env.admin_kubeconfig),
            route_names=("primary",) if kind == "istio" else (),
            source_namespace=self.namespace,
        )
        self.mesh = self.stack.start_mesh(config)
        self.stack.register_targets(self.prometheus, labels={"namespace": self.namespace})
        return self.mesh

    def given_load(self, *, rps: float = 300, duration_s: float = 300, users: int = 5000,
                   sticky: bool = True, seed: int = 1) -> LoadRun:
        """Simulated users with stable ids sending requests through the mesh (bounded in time)."""
        assert self.mesh is not None, "given_mesh first"
        self.load = self.stack.start_load(
            LoadConfig(url=self.mesh.url + "/predict", rps=rps, duration_s=duration_s, users=users,
                       host=APP, bucket_header="x-modelrollout-bucket" if sticky else None, seed=seed)
        )
        return self.load

    def given_operator(
        self,
        *,
        timer_seconds: float = 0.5,
        command: OperatorCommand | None = None,
        leader_elect: bool = False,
    ) -> ManagedProcess:
        """The operator as its own process, watching this namespace, with its own metrics on a free
        loopback port that Prometheus scrapes (job ``modelrollout-operator``; not waited for: see
        :meth:`wait_for_operator_scraped`).

        By default ``python -m modelrollout.cli run --namespace NS`` of this checkout. ``command``
        starts another one instead (the image's, under runc): it is given the arguments of
        ``modelrollout`` and the environment the operator needs (``KUBECONFIG`` and the tick's
        period), and returns the argv to start; that process gets this process's environment. With
        ``leader_elect``, a replica of ``run --leader-elect`` (identity ``operator-N``, the Lease
        ``modelrollout-leader`` in this namespace): start two for a leader and a standby.
        """
        self.operator_starts += 1
        name = f"operator-{self.operator_starts}"
        needs = {"KUBECONFIG": str(self.env.admin_kubeconfig),
                 "MODELROLLOUT_TIMER_SECONDS": str(timer_seconds), "PYTHONUNBUFFERED": "1"}
        self.operator_metrics_port = free_port()
        args = ["run", "--namespace", self.namespace,
                f"--metrics-port={self.operator_metrics_port}", "--metrics-address=127.0.0.1"]
        if leader_elect:
            needs["POD_NAME"] = name
            args += ["--leader-elect", "--lease-namespace", self.namespace]
        env = dict(os.environ)
        if command is None:
            env.update(needs)
            argv = [self.python, "-m", "modelrollout.cli", *args]
        else:
            argv = list(command(args, needs))
        process = ManagedProcess(
            name, argv, self.workdir / f"{name}.log", env=env, cwd=self.workdir,
            ports=[self.operator_metrics_port],
        )
        process.start()
        if leader_elect:
            self.operators[name] = process
        else:
            self.operator = process
            # No extra target labels: the operator's series carry their own namespace label (a
            # target label of the same name would rename it exported_namespace).
            self.prometheus.set_targets(OPERATOR_JOB, [f"127.0.0.1:{self.operator_metrics_port}"], wait=False)
        return process

    def lease_holder(self) -> str | None:
        """Who holds the leader election Lease of this namespace (None: no Lease yet)."""
        try:
            lease = client.CoordinationV1Api(self.api).read_namespaced_lease("modelrollout-leader",
                                                                             self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return str((lease.spec.holder_identity if lease.spec else None) or "")

    def wait_for_operator_scraped(self, timeout: float = 30.0) -> None:
        """Wait until Prometheus scrapes the operator's ``/metrics`` healthily."""
        self.prometheus.wait_for_targets(OPERATOR_JOB, 1, up=True, timeout=timeout)

    def operator_metrics(self) -> str:
        """What the operator's ``/metrics`` serves now."""
        assert self.operator_metrics_port is not None, "given_operator first"
        status, body = http_get(f"http://127.0.0.1:{self.operator_metrics_port}/metrics", timeout=5)
        if status != 200:
            raise ScenarioError(f"the operator's /metrics answered {status}: {body[:300]}")
        return body

    def stop_operator(self, *, kill: bool = False) -> None:
        if self.operator is None:
            return
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.operator.pid, signal.SIGKILL)
        self.operator.stop()
        self.operator = None

    def record_weights(self) -> WeightsRecorder:
        """Start recording every distinct split the routed object shows."""
        self.recorder = WeightsRecorder(self.route_weights)
        self.recorder.start()
        return self.recorder

    # ---- When -----------------------------------------------------------------------------------
    def when_experiment_applied(self, manifest: Mapping[str, Any]) -> None:
        self.experiment_name = manifest["metadata"]["name"]
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, dict(manifest))

    def when_experiment_deleted(self) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self._name())

    def when_model_configured(self, variant: str, **changes: Any) -> None:
        self.models[variant].configure(**changes)

    # ---- reading --------------------------------------------------------------------------------
    def _name(self) -> str:
        assert self.experiment_name is not None, "apply an experiment first"
        return self.experiment_name

    def experiment(self) -> dict[str, Any]:
        found: Any = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, self._name()
        )
        return dict(found)

    def status(self) -> dict[str, Any]:
        return dict(self.experiment().get("status") or {})

    def phase(self) -> str | None:
        return self.status().get("phase")

    def condition(self, type_: str) -> dict[str, Any] | None:
        return next((c for c in self.status().get("conditions", []) if c.get("type") == type_), None)

    def events(self) -> list[dict[str, Any]]:
        """Events about the experiment, oldest first: ``{"type", "reason", "message", "time"}``."""
        items = self.core.list_namespaced_event(self.namespace).items
        out = []
        for e in items:
            involved = e.involved_object
            if involved.kind == "ModelExperiment" and involved.name == self.experiment_name:
                when = e.last_timestamp or e.event_time or e.first_timestamp
                out.append({"type": e.type, "reason": e.reason, "message": e.message, "time": when,
                            "count": e.count or 1})
        return sorted(out, key=lambda x: (x["time"] is None, x["time"]))

    def route_weights(self) -> dict[str, int] | None:
        """The weights the routed object holds now, by variant (None if it is not there)."""
        if self.provider == "service":
            replicas = {}
            for v in self.models:
                d = self.apps.read_namespaced_deployment(f"{APP}-{v}", self.namespace)
                replicas[v] = d.spec.replicas or 0
            total = sum(replicas.values())
            return {v: round(100 * r / total) for v, r in replicas.items()} if total else None
        group, version, plural = ISTIO if self.provider == "istio" else GATEWAY
        try:
            obj: Any = self.custom.get_namespaced_custom_object(group, version, self.namespace, plural, APP)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        by_host = {f"{APP}-{v}": v for v in self.models}
        weights = dict.fromkeys(self.models, 0)
        if self.provider == "istio":
            route = next(r for r in obj["spec"]["http"] if r.get("name") == "primary")
            entries = [(d["destination"]["host"], d.get("weight", 100 if len(route["route"]) == 1 else 0))
                       for d in route["route"]]
        else:
            rule = next(r for r in obj["spec"]["rules"] if r.get("name") == "primary")
            refs = rule.get("backendRefs", [])
            entries = [(b["name"], b.get("weight", 1)) for b in refs]
            total = sum(w for _, w in entries) or 1
            entries = [(h, round(100 * w / total)) for h, w in entries]
        for host, weight in entries:
            variant = by_host.get(host.split(".")[0])
            if variant is not None:
                weights[variant] += int(weight)
        return weights

    # ---- Then -----------------------------------------------------------------------------------
    def wait_for(
        self, what: str, predicate: Callable[[], bool], timeout: float, period: float = 0.25
    ) -> float:
        """Wait until ``predicate()``; returns the seconds it took. Raises :class:`ScenarioError`."""
        started = time.monotonic()
        while True:
            try:
                if predicate():
                    return time.monotonic() - started
            except ApiException:
                pass
            if time.monotonic() - started > timeout:
                raise ScenarioError(f"timed out after {timeout:.0f}s waiting for {what}; {self.describe()}")
            time.sleep(period)

    def then_phase(self, phase: str | Iterable[str], timeout: float) -> str:
        wanted = {phase} if isinstance(phase, str) else set(phase)
        self.wait_for(f"phase in {sorted(wanted)}", lambda: self.phase() in wanted, timeout)
        found = self.phase()
        assert found is not None
        return found

    def then_routes(self, weights: Mapping[str, int]) -> None:
        """The routed object holds ``weights`` now."""
        found = self.route_weights()
        if found != dict(weights):
            raise ScenarioError(f"routes {found} != {dict(weights)}; {self.describe()}")

    def then_condition(self, type_: str, status: str, reason: str | None = None) -> dict[str, Any]:
        """The experiment has condition ``type_`` at ``status`` (and ``reason``, when given) now."""
        found = self.condition(type_)
        wrong_reason = found is not None and reason is not None and found.get("reason") != reason
        if found is None or found.get("status") != status or wrong_reason:
            raise ScenarioError(f"condition {type_} is {found}, not {status}/{reason}; {self.describe()}")
        return found

    def then_last_history_reason(self, reason: str) -> dict[str, Any]:
        """The last history entry has ``reason``; returns it."""
        history = self.status().get("history") or []
        if not history or history[-1].get("reason") != reason:
            raise ScenarioError(f"last history reason is not {reason}: {history[-3:]}; {self.describe()}")
        return dict(history[-1])

    def then_event(
        self, reason: str, *, type_: str | None = None, timeout: float = 15
    ) -> list[dict[str, Any]]:
        """An Event with ``reason`` (and ``type_``) about the experiment, within ``timeout`` (kopf
        posts Events in the background, shortly after the status is written); returns them all."""

        def matching() -> list[dict[str, Any]]:
            return [e for e in self.events() if e["reason"] == reason and type_ in (None, e["type"])]

        self.wait_for(f"a {type_ or ''} {reason} Event".replace("  ", " "), lambda: bool(matching()), timeout)
        return matching()

    def recorded_splits(self) -> list[dict[str, int]]:
        """The full splits (summing to 100) :meth:`record_weights` saw, and the routes now when they
        differ from the last (the recorder may stop before its next poll sees the last change)."""
        assert self.recorder is not None, "record_weights first"
        splits = [s for s in self.recorder.splits() if sum(s.values()) == 100]
        final = self.route_weights()
        if final is not None and (not splits or splits[-1] != final):
            splits.append(final)
        return splits

    def _steps_and_shares(self) -> tuple[list[int], list[dict[str, int]], list[int]]:
        spec = self.experiment()["spec"]
        champion = spec["champion"]["name"]
        splits = self.recorded_splits()
        shares = [sum(w for v, w in s.items() if v != champion) for s in splits]
        return list(spec["rollout"]["steps"]), splits, shares

    def then_every_step_seen(self) -> list[dict[str, int]]:
        """The routes showed each step of the spec (the challengers' share), in order, never going
        back; returns the recorded splits."""
        steps, splits, shares = self._steps_and_shares()
        for step in steps:
            if step not in shares:
                raise ScenarioError(f"step {step} never seen in the routes: {splits}; {self.describe()}")
        if shares != sorted(shares):
            raise ScenarioError(f"weights went backwards: {splits}; {self.describe()}")
        return splits

    def then_no_step_repeated(self) -> None:
        """The routes showed each step once, in order, none skipped; the history has each
        StepAdvanced once, for steps 1..n, and never goes back a step."""
        steps, splits, shares = self._steps_and_shares()
        if [s for s in shares if s > 0] != steps:
            raise ScenarioError(f"a step was skipped or repeated: {splits}; {self.describe()}")
        history = self.status().get("history") or []
        advanced = Counter(h["toStep"] for h in history if h["reason"] == "StepAdvanced")
        if not all(n == 1 for n in advanced.values()):
            raise ScenarioError(f"a step advanced twice: {advanced}; {history}; {self.describe()}")
        if sorted(advanced) != list(range(1, len(advanced) + 1)):
            raise ScenarioError(f"a step was skipped: {history}; {self.describe()}")
        to_steps = [h["toStep"] for h in history if h.get("toStep") is not None]
        if to_steps != sorted(to_steps):
            raise ScenarioError(f"the history went back a step: {history}; {self.describe()}")

    def describe(self) -> str:
        """The experiment's phase, step, weights, conditions and last history entries, for failures."""
        try:
            st = self.status()
        except ApiException as exc:
            return f"experiment unreadable: {exc.status}"
        conditions = {c["type"]: f"{c['status']}/{c.get('reason')}" for c in st.get("conditions", [])}
        history = [f"{h.get('toPhase')}@{h.get('toStep')}:{h.get('reason')}" for h in st.get("history", [])]
        history = history[-6:]
        tail = self.operator.log_tail(15) if self.operator is not None else ""
        for name, process in self.operators.items():
            tail += f"\n{name}:\n{process.log_tail(8)}"
        strata = [{k: x.get(k) for k in ("step", "weights", "totals")} for x in st.get("strata", [])]
        return (f"phase={st.get('phase')} step={st.get('currentStep')} weights={st.get('weights')} "
                f"routes={self._safe_routes()} conditions={conditions} history={history}\n"
                f"srm={(st.get('analysis') or {}).get('srm')}\n"
                f"strata={str(strata)[:4000]}\n"
                f"operator log tail:\n{tail}")

    def _safe_routes(self) -> dict[str, int] | None:
        try:
            return self.route_weights()
        except Exception:
            return None

