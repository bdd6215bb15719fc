"""The whole local environment: etcd + kube-apiserver (+ kube-controller-manager) + Prometheus.

Used three ways: by the pytest fixtures (:class:`LocalEnv` as a context manager, processes die
with the test run), by the demo, and by ``modelrollout localenv up|down|env`` (:func:`up`,
:func:`down`, :func:`read_state`), where the processes are detached and their PIDs kept in
``state.json`` so ``down`` can stop them later.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelrollout.devstack.controlplane import build, kube, upstream
from modelrollout.devstack.controlplane.certs import make_certificates
from modelrollout.devstack.controlplane.errors import LocalEnvError, MissingPrerequisiteError
from modelrollout.devstack.controlplane.paths import project_crd_dir
from modelrollout.devstack.controlplane.procs import ManagedProcess, kill_group, pid_runs, wait_ports_closed
from modelrollout.devstack.controlplane.prometheus import Prometheus

Progress = Callable[[str], None]
STATE_FILE = "state.json"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Endpoints:
    """What a client needs: the server URL, the kubeconfigs and Prometheus's URL."""

    server: str
    admin_kubeconfig: Path
    user_kubeconfig: Path
    prometheus_url: str | None

    def exports(self) -> str:
        """Shell lines for ``eval "$(modelrollout localenv up)"``."""
        lines = [
            f"export KUBECONFIG={shlex.quote(str(self.admin_kubeconfig))}",
            f"export MODELROLLOUT_USER_KUBECONFIG={shlex.quote(str(self.user_kubeconfig))}",
        ]
        if self.prometheus_url:
            lines.append(f"export PROMETHEUS_URL={shlex.quote(self.prometheus_url)}")
        return "\n".join(lines)


class LocalEnv:
    """Start etcd, kube-apiserver and (if built) kube-controller-manager; apply CRDs.

    ``with LocalEnv(workdir) as env:`` starts everything and stops it all on exit, even after an
    error. :meth:`start_prometheus` adds a Prometheus on demand.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        binaries: build.Binaries | None = None,
        detached: bool = False,
        controller_manager: bool = True,
        upstream_crds: Path | None = None,
        apply_upstream_crds: bool = True,
        apply_project_crds: bool = True,
        etcd_ports: tuple[int, int] | None = None,
        apiserver_port: int | None = None,
        progress: Progress = _stderr,
    ) -> None:
        self.workdir = workdir
        self.binaries = binaries
        self.detached = detached
        self.use_controller_manager = controller_manager
        self.upstream_crds = upstream_crds
        self.apply_upstream_crds = apply_upstream_crds
        self.apply_project_crds = apply_project_crds
        self.etcd_ports = etcd_ports
        self.apiserver_port = apiserver_port
        self.progress = progress
        self.processes: list[ManagedProcess] = []
        self.prometheus: Prometheus | None = None
        self.server = ""
        self.admin_kubeconfig = workdir / "admin.kubeconfig"
        self.user_kubeconfig = workdir / "user.kubeconfig"
        self.tokens = kube.Tokens.generate()
        self.crds: list[str] = []
        self.start_seconds: dict[str, float] = {}

    # ---- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> LocalEnv:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _timed(self, label: str, since: float) -> None:
        self.start_seconds[label] = round(time.monotonic() - since, 2)

    def _start(self) -> None:
        t0 = time.monotonic()
        binaries = self.binaries or build.locate()
        if binaries is None:
            raise MissingPrerequisiteError(build.missing_message())
        self.binaries = binaries
        # Resolve the CRD folder before starting anything, so a missing one fails fast.
        crd_folder = upstream.locate(self.upstream_crds) if self.apply_upstream_crds else None
        self.workdir.mkdir(parents=True, exist_ok=True)
        certs = make_certificates(self.workdir / "pki")
        token_file = self.workdir / "pki" / "tokens.csv"
        self.tokens.write(token_file)

        t = time.monotonic()
        client_port, peer_port = self.etcd_ports or (None, None)
        etcd, etcd_url = kube.etcd_process(binaries.etcd, self.workdir, client_port=client_port,
                                           peer_port=peer_port, detached=self.detached)
        self._launch(etcd)
        kube.wait_etcd(etcd, etcd_url)
        self._timed("etcd", t)

        t = time.monotonic()
        apiserver, self.server = kube.apiserver_process(
            binaries.kube_apiserver, self.workdir, certs, token_file, etcd_url,
            port=self.apiserver_port, detached=self.detached,
        )
        self._launch(apiserver)
        kube.wait_apiserver(apiserver, self.server, certs.ca_cert, self.tokens.admin)
        self._timed("kube-apiserver", t)
        ca_pem = certs.ca_cert.read_bytes()
        kube.write_kubeconfig(self.admin_kubeconfig,
                              kube.kubeconfig(self.server, ca_pem, kube.ADMIN_USER, self.tokens.admin))
        kube.write_kubeconfig(self.user_kubeconfig,
                              kube.kubeconfig(self.server, ca_pem, kube.UNPRIVILEGED_USER, self.tokens.user))

        if self.use_controller_manager and binaries.kube_controller_manager is not None:
            t = time.monotonic()
            kcm, kcm_url = kube.controller_manager_process(
                binaries.kube_controller_manager, self.workdir, self.admin_kubeconfig, detached=self.detached,
            )
            self._launch(kcm)
            kube.wait_controller_manager(kcm, kcm_url)
            self._timed("kube-controller-manager", t)

        t = time.monotonic()
        documents = list(upstream.crd_documents(crd_folder)) if crd_folder else []
        project = project_crd_dir() if self.apply_project_crds else None
        if project is not None and project.is_dir():
            documents += list(upstream.crd_documents(project))
        if documents:
            self.crds = kube.apply_crds(self.admin_kubeconfig, documents)
        self._timed("crds", t)
        self._timed("total", t0)

    def _launch(self, proc: ManagedProcess) -> None:
        self.progress(f"localenv: starting {proc.name}")
        self.processes.append(proc)
        proc.start()

    def start_prometheus(self, scrape_interval: str = "1s") -> Prometheus:
        """Start (once) a Prometheus that scrapes targets set with ``set_targets``."""
        if self.prometheus is None:
            t = time.monotonic()
            prom = Prometheus(self.workdir / "prometheus", scrape_interval=scrape_interval,
                              detached=self.detached)
            self.progress("localenv: starting prometheus")
            self.processes.append(prom.process)
            prom.start()
            self.prometheus = prom
            self._timed("prometheus", t)
        return self.prometheus

    def stop(self) -> None:
        """Stop every process, newest first, and check that their ports are closed."""
        ports: list[int] = []
        for proc in reversed(self.processes):
            with contextlib.suppress(Exception):
                proc.stop()
            ports += proc.ports
        self.processes.clear()
        self.prometheus = None
        still_open = wait_ports_closed(ports, timeout=10)
        if still_open:
            raise LocalEnvError(f"ports still open after stopping the local environment: {still_open}")

    # ---- clients ---------------------------------------------------------------------------
    def endpoints(self) -> Endpoints:
        return Endpoints(self.server, self.admin_kubeconfig, self.user_kubeconfig,
                         self.prometheus.url if self.prometheus else None)

    def state(self) -> dict[str, Any]:
        binaries = self.binaries
        return {
            "server": self.server,
            "admin_kubeconfig": str(self.admin_kubeconfig),
            "user_kubeconfig": str(self.user_kubeconfig),
            "prometheus_url": self.prometheus.url if self.prometheus else None,
            "processes": [
                {"name": p.name, "pid": p.pid, "exe": p.argv[0], "ports": p.ports, "log": str(p.log_path)}
                for p in self.processes
            ],
            "versions": binaries.versions if binaries else {},
            "start_seconds": self.start_seconds,
            "crds": len(self.crds),
        }


# ---- `modelrollout localenv up|down|env` ---------------------------------------------------
def read_state(state_dir: Path) -> dict[str, Any] | None:
    path = state_dir / STATE_FILE
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def running(state: dict[str, Any]) -> bool:
    """Whether every process recorded in ``state`` still runs."""
    procs = state.get("processes", [])
    return bool(procs) and all(pid_runs(p["pid"], p["exe"]) for p in procs)


def endpoints_of(state: dict[str, Any]) -> Endpoints:
    return Endpoints(state["server"], Path(state["admin_kubeconfig"]), Path(state["user_kubeconfig"]),
                     state.get("prometheus_url"))


def up(state_dir: Path, *, prometheus: bool = True, controller_manager: bool = True,
       progress: Progress = _stderr) -> dict[str, Any]:
    """Start a detached environment in ``state_dir`` (or reuse the one running there)."""
    state = read_state(state_dir)
    if state is not None and running(state):
        progress(f"localenv: already running ({state['server']}); `modelrollout localenv down` stops it")
        return state
    if state is not None or state_dir.exists():
        down(state_dir, progress=lambda _m: None)
    env = LocalEnv(state_dir, detached=True, controller_manager=controller_manager, progress=progress)
    env.start()  # stops what it started if anything fails
    try:
        if prometheus:
            env.start_prometheus()
        state = env.state()
        (state_dir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
    except BaseException:
        env.stop()
        raise
    progress(f"localenv: up in {state['start_seconds'].get('total', 0):.1f} s (+ prometheus "
             f"{state['start_seconds'].get('prometheus', 0):.1f} s); logs in {state_dir / 'logs'}")
    return state


def down(state_dir: Path, *, progress: Progress = _stderr) -> bool:
    """Stop the environment recorded in ``state_dir`` and delete the folder. False if none ran."""
    state = read_state(state_dir)
    stopped = False
    ports: list[int] = []
    if state is not None:
        for proc in reversed(state.get("processes", [])):
            ports += proc.get("ports", [])
            if pid_runs(proc["pid"], proc["exe"]):
                progress(f"localenv: stopping {proc['name']} (pid {proc['pid']})")
                kill_group(proc["pid"])
                stopped = True
    still_open = wait_ports_closed(ports, timeout=10)
    if still_open:
        raise LocalEnvError(f"ports still open after `localenv down`: {still_open}")
    if state_dir.exists():
        shutil.rmtree(state_dir, ignore_errors=True)
    return stopped
