"""Start and stop the simulated e2e stack: model servers, the mesh stand-in and load runs.

Every component is its own process (``python -m modelrollout.devstack.sim.<component>``) in its own
process group, bound to 127.0.0.1 on a port the kernel picks (the child writes the port to a
ready file, so there is no race for a port chosen in advance), with its log in ``workdir``.
:class:`SimStack` starts them, waits until they answer, and stops all of them -- and checks that
their ports are closed -- on :meth:`SimStack.stop`, on leaving its ``with`` block (also after a
failed test), at interpreter exit, and (on Linux) when the parent dies::

    with SimStack(tmp_path) as stack:
        champion, challenger = stack.start_models([
            ModelSpec("ranker-v6", ModelConfig("v6", click_rate=0.10)),
            ModelSpec("ranker-v7", ModelConfig("v7", click_rate=0.12, disagreement=0.05)),
        ])
        mesh = stack.start_mesh(MeshConfig(namespace="shop", kind="istio", route="ranker",
                                           backends=stack.backends(), kubeconfig=str(kubeconfig)))
        stack.register_targets(prometheus)          # scrape the models and the mesh
        report = stack.run_load(LoadConfig(url=mesh.url + "/predict", host="ranker", rps=300,
                                           duration_s=20))
        challenger.configure(error_rate=0.2)        # a guardrail breach from now on

The demo reuses it the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelrollout.devstack.controlplane.procs import ManagedProcess, wait_ports_closed
from modelrollout.devstack.sim.common import LOOPBACK
from modelrollout.devstack.sim.loadgen import LoadConfig, LoadReport
from modelrollout.devstack.sim.mesh import Backend, MeshConfig
from modelrollout.devstack.sim.model_server import ModelConfig
from modelrollout.errors import ModelRolloutError

if TYPE_CHECKING:
    from modelrollout.devstack.controlplane.prometheus import Prometheus

MODELS_JOB = "sim-models"
MESH_JOB = "sim-mesh"


class StackError(ModelRolloutError, RuntimeError):
    """A simulated component failed to start, answer or stop."""


def _http(method: str, url: str, body: Mapping[str, Any] | None = None,
          timeout: float = 5.0) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def _package_root() -> str:
    """The folder that holds the ``modelrollout`` package (for the children's PYTHONPATH)."""
    return str(Path(__file__).resolve().parents[3])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (Linux /proc); NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return float("nan")
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


@dataclass(frozen=True)
class ModelSpec:
    """A simulated model server to start, and the Service name the routes call it by."""

    service: str
    config: ModelConfig
    workload: str = ""
    version: str = ""
    app: str = ""
    subset: str | None = None


@dataclass
class RunningModel:
    """A started model server."""

    spec: ModelSpec
    port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def target(self) -> str:
        """``host:port`` for a Prometheus scrape target."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def variant(self) -> str:
        return self.spec.config.variant

    def backend(self) -> Backend:
        """This server as a mesh backend."""
        spec = self.spec
        return Backend(service=spec.service, url=self.url, variant=spec.config.variant,
                       workload=spec.workload, version=spec.version, app=spec.app, subset=spec.subset)

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change its configuration at run time (``error_rate=0.2``); the new configuration."""
        status, body = _http("POST", f"{self.url}/admin/config", changes)
        if status != 200:
            raise StackError(f"model {self.variant}: /admin/config answered {status}: {body[:300]!r}")
        result: dict[str, Any] = json.loads(body)
        return result

    def metrics_text(self) -> str:
        return _http("GET", f"{self.url}/metrics")[1].decode()


@dataclass
class RunningMesh:
    """A started mesh stand-in."""

    config: MeshConfig
    port: int
    admin_port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://{LOOPBACK}:{self.admin_port}"

    @property
    def target(self) -> str:
        """``host:port`` of the admin port, whose ``/metrics`` Prometheus scrapes."""
        return f"{LOOPBACK}:{self.admin_port}"

    def routes(self) -> dict[str, Any]:
        """The route table in use (``/routes``)."""
        status, body = _http("GET", f"{self.admin_url}/routes")
        if status != 200:
            raise StackError(f"mesh /routes answered {status}")
        result: dict[str, Any] = json.loads(body)
        return result

    def wait_for_routes(self, ready: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> float:
        """Wait until ``ready(routes())``; return the seconds it took."""
        started = time.monotonic()
        last: dict[str, Any] = {}
        while True:
            self.process.check_running("while waiting for routes")
            last = self.routes()
            if ready(last):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise StackError(f"mesh: routes not as expected after {timeout:.0f} s: {json.dumps(last)}")
            time.sleep(0.02)

    def wait_for_resource_version(self, resource_version: str, timeout: float = 10.0) -> float:
        """Wait until the mesh routes by the object at ``resource_version``; the seconds it took."""
        return self.wait_for_routes(lambda r: r.get("resourceVersion") == resource_version, timeout)

    def metrics_text(self) -> str:
        return _http("GET", f"{self.admin_url}/metrics")[1].decode()


@dataclass
class LoadRun:
    """A load generator running in the background."""

    config: LoadConfig
    process: ManagedProcess
    report_path: Path
    started: float = field(default_factory=time.monotonic)

    def done(self) -> bool:
        return self.process.returncode() is not None

    def wait(self, timeout: float | None = None) -> LoadReport:
        """Wait for the run to end by itself; its report."""
        limit = timeout if timeout is not None else self.config.duration_s + self.config.drain_s + 60.0
        deadline = time.monotonic() + limit
        while not self.done():
            if time.monotonic() > deadline:
                self.process.stop()
                raise StackError(f"load generator still running after {limit:.0f} s")
            time.sleep(0.05)
        return self._report()

    def stop(self) -> LoadReport:
        """End the run now (SIGTERM; it reports what it did)."""
        self.process.stop()
        return self._report()

    def _report(self) -> LoadReport:
        code = self.process.returncode()
        if not self.report_path.exists():
            raise StackError(f"load generator exited with {code} without a report:\n"
                             f"{self.process.log_tail()}")
        return LoadReport.from_json(json.loads(self.report_path.read_text()))


class SimStack:
    """Owns the simulated processes of one test or demo; stop it to end them all."""

    def __init__(self, workdir: Path, *, python: str = sys.executable, start_timeout: float = 30.0) -> None:
        self.workdir = workdir
        self.python = python
        self.start_timeout = start_timeout
        self.models: list[RunningModel] = []
        self.meshes: list[RunningMesh] = []
        self.loads: list[LoadRun] = []
        self._processes: list[ManagedProcess] = []
        self._counter = 0
        workdir.mkdir(parents=True, exist_ok=True)

    # ---- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> SimStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        root = _package_root()
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _spawn(self, name: str, module: str, args: Sequence[str]) -> tuple[ManagedProcess, Path]:
        self._counter += 1
        ready = self.workdir / f"{name}.{self._counter}.ready.json"
        ready.unlink(missing_ok=True)
        argv = [self.python, "-m", module, *args, "--ready-file", str(ready)]
        proc = ManagedProcess(name, argv, self.workdir / f"{name}.log", env=self._env(), cwd=self.workdir)
        self._processes.append(proc)
        proc.start()
        return proc, ready

    def _wait_ready(self, proc: ManagedProcess, ready: Path, health_url: Callable[[dict[str, Any]], str],
                    ) -> dict[str, Any]:
        info: dict[str, Any] = {}

        def answered() -> bool:
            if not info:
                if not ready.exists():
                    return False
                info.update(json.loads(ready.read_text()))
                proc.ports.extend(int(v) for k, v in info.items() if k.endswith("port"))
            return _http("GET", health_url(info), timeout=1.0)[0] == 200

        try:
            proc.wait_until(answered, self.start_timeout, "ready (ready file and /healthz)")
        except Exception as exc:
            raise StackError(str(exc)) from exc
        return info

    def stop(self) -> None:
        """Stop every process this stack started (newest first); check that their ports closed."""
        ports: list[int] = []
        for proc in reversed(self._processes):
            with contextlib.suppress(Exception):
                proc.stop(timeout=5.0)
            ports += proc.ports
        self._processes.clear()
        self.models.clear()
        self.meshes.clear()
        self.loads.clear()
        still_open = wait_ports_closed(ports, timeout=10.0)
        if still_open:
            raise StackError(f"ports still open after stopping the simulated stack: {still_open}")

    # ---- components ----------------------------------------------------------------------------
    def start_models(self, specs: Iterable[ModelSpec]) -> list[RunningModel]:
        """Start model servers (all at once) and wait until each answers ``/healthz``."""
        started = []
        for spec in specs:
            name = f"model-{spec.config.variant}"
            proc, ready = self._spawn(name, "modelrollout.devstack.sim.model_server",
                                      ["--variant", spec.config.variant, "--port", "0",
                                       "--config-json", json.dumps(spec.config.to_dict())])
            started.append((spec, proc, ready))
        running = []
        for spec, proc, ready in started:
            info = self._wait_ready(proc, ready, lambda i: f"http://{LOOPBACK}:{i['port']}/healthz")
            model = RunningModel(spec, int(info["port"]), proc)
            self.models.append(model)
            running.append(model)
        return running

    def restart_model(self, model: RunningModel) -> RunningModel:
        """Stop ``model``'s server and start a new one on the same port: a pod restarted in place,
        whose counters start again from zero (a counter reset, for the same series)."""
        model.process.stop(timeout=5.0)
        wait_ports_closed([model.port], timeout=10.0)
        spec = model.spec
        proc, ready = self._spawn(f"model-{spec.config.variant}", "modelrollout.devstack.sim.model_server",
                                  ["--variant", spec.config.variant, "--port", str(model.port),
                                   "--config-json", json.dumps(spec.config.to_dict())])
        self._wait_ready(proc, ready, lambda i: f"http://{LOOPBACK}:{i['port']}/healthz")
        restarted = RunningModel(spec, model.port, proc)
        self.models[self.models.index(model)] = restarted
        return restarted

    def backends(self, models: Iterable[RunningModel] | None = None) -> tuple[Backend, ...]:
        """The mesh backends of ``models`` (default: every running model)."""
        return tuple(m.backend() for m in (self.models if models is None else models))

    def start_mesh(self, config: MeshConfig) -> RunningMesh:
        """Start the mesh stand-in; wait until it has listed its route object once."""
        self._counter += 1
        config_path = self.workdir / f"mesh.{self._counter}.config.json"
        config_path.write_text(json.dumps(config.to_json(), indent=1))
        proc, ready = self._spawn("mesh", "modelrollout.devstack.sim.mesh",
                                  ["--config", str(config_path), "--port", "0", "--admin-port", "0"])
        info = self._wait_ready(proc, ready, lambda i: f"http://{LOOPBACK}:{i['admin_port']}/healthz")
        mesh = RunningMesh(config, int(info["port"]), int(info["admin_port"]), proc)
        self.meshes.append(mesh)
        return mesh

    def start_load(self, config: LoadConfig) -> LoadRun:
        """Start a bounded load run in the background."""
        self._counter += 1
        report = self.workdir / f"load.{self._counter}.report.json"
        report.unlink(missing_ok=True)
        argv = [self.python, "-m", "modelrollout.devstack.sim.loadgen", "--config-json",
                json.dumps(dataclasses.asdict(config)), "--report", str(report)]
        proc = ManagedProcess("loadgen", argv, self.workdir / "loadgen.log", env=self._env(),
                              cwd=self.workdir)
        self._processes.append(proc)
        proc.start()
        run = LoadRun(config, proc, report)
        self.loads.append(run)
        return run

    def run_load(self, config: LoadConfig, timeout: float | None = None) -> LoadReport:
        """Run a bounded load to its end; its report."""
        return self.start_load(config).wait(timeout)

    # ---- observation ---------------------------------------------------------------------------
    def scrape_targets(self) -> dict[str, list[str]]:
        """Prometheus job -> ``host:port`` targets: the models' and the meshes' ``/metrics``."""
        return {MODELS_JOB: [m.target for m in self.models], MESH_JOB: [m.target for m in self.meshes]}

    def register_targets(self, prometheus: Prometheus, *, wait_up: bool = True,
                         timeout: float = 30.0, labels: Mapping[str, str] | None = None) -> None:
        """Have ``prometheus`` (the localenv one) scrape every model and mesh of this stack.

        ``labels`` are added to every scraped series (e.g. ``namespace``, as Kubernetes service
        discovery would), so queries can select this stack's series by them.
        """
        for job, targets in self.scrape_targets().items():
            prometheus.set_targets(job, targets, labels, wait=True, timeout=timeout)
            if wait_up and targets:
                prometheus.wait_for_targets(job, len(targets), up=True, timeout=timeout)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used so far by each live process of the stack (name.pid -> seconds)."""
        return {f"{p.name}.{p.pid}": cpu_seconds(p.pid) for p in self._processes if p.returncode() is None}


def ab_model_specs(champion: ModelConfig, challengers: Sequence[ModelConfig], app: str = "ranker",
                   ) -> list[ModelSpec]:
    """Model specs with Services named ``<app>-<variant>`` (the DESIGN's ``ranker-v6``, ``ranker-v7``)."""
    return [ModelSpec(f"{app}-{c.variant}", c, app=app) for c in (champion, *challengers)]
