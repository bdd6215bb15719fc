"""Run one demo scenario end to end on a private local stack, then tear all of it down.

The stack is the e2e tests' own: a kube-apiserver + etcd and a Prometheus from
:mod:`modelrollout.devstack.controlplane` (started in a fresh temporary folder on ports the kernel picks, so
another local environment on the machine is left alone), and the simulated model servers, the
mesh stand-in, the load generator and the operator process of :class:`~modelrollout.devstack.sim.world.World`.
The experiment is the scenario's file in ``examples/demo/`` with only its namespace and
Prometheus address made local.

While it runs, every change of the experiment's status is shown (a refreshing table on a
terminal, a text block per change otherwise) and appended to ``recording.jsonl``. At the end it
writes the report and says how the experiment ended and why.

Teardown is in ``finally`` and runs on success, failure, Ctrl-C (SIGINT) and SIGTERM alike; the
signal handlers raise :class:`DemoInterrupted` so the stack unwinds through it. Every child also
asks the kernel to kill it if the demo dies (``PR_SET_PDEATHSIG``), and a last sweep ends any
child of this process still alive.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import yaml

from modelrollout.devstack.demo.scenarios import (
    TERMINAL_PHASES,
    Incident,
    Scenario,
    deciding_entry,
    outcome_problems,
    steps_taken,
)
from modelrollout.errors import ModelRolloutError

Progress = Callable[[str], None]

#: The namespace the demo's experiment, Services and VirtualService live in.
DEMO_NAMESPACE = "demo"
#: How often the experiment is read while it runs (the operator ticks every second).
POLL_SECONDS = 0.5


class DemoError(ModelRolloutError):
    """The demo could not run its scenario (a component failed, a prerequisite is missing)."""


class DemoInterrupted(BaseException):
    """SIGINT or SIGTERM arrived: unwind, tearing everything down on the way."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class DemoResult:
    """How a demo run ended; :meth:`summary` is the ``--output json`` contract."""

    scenario: Scenario
    recording: Path
    final: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    report: Path | None = None
    explanation: str | None = None
    error: str | None = None
    interrupted_by: int | None = None
    wall_time_s: float = 0.0
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def phase(self) -> str | None:
        if self.final is None:
            return None  # never read: the experiment was not applied
        # An experiment the operator has not written a status for yet is pending.
        return str((self.final.get("status") or {}).get("phase") or "Pending")

    @property
    def ok(self) -> bool:
        return self.final is not None and not self.problems and self.error is None \
            and self.interrupted_by is None

    def time_to_decision_s(self) -> float | None:
        """From the experiment's start to its final phase, by the operator's own timestamps."""
        status = (self.final or {}).get("status") or {}
        try:
            started = datetime.fromisoformat(str(status["startedAt"]).replace("Z", "+00:00"))
            finished = datetime.fromisoformat(str(status["finishedAt"]).replace("Z", "+00:00"))
        except (KeyError, ValueError):
            return None
        return round((finished - started).total_seconds(), 1)

    def summary(self) -> dict[str, Any]:
        entry = deciding_entry(self.final) if self.final is not None else None
        data: dict[str, Any] = {
            "scenario": self.scenario.name,
            "phase": self.phase,
            "expected_phase": self.scenario.expected_phase,
            "ok": self.ok,
            "rule": entry.get("reason") if entry else None,
            "message": entry.get("message") if entry else None,
            "steps": self.steps,
            "time_to_decision_s": self.time_to_decision_s(),
            "report": str(self.report) if self.report else None,
            "recording": str(self.recording),
            "wall_time_s": round(self.wall_time_s, 1),
        }
        if self.problems:
            data["problems"] = self.problems
        if self.error:
            data["error"] = self.error
        if self.interrupted_by is not None:
            data["interrupted_by"] = signal.Signals(self.interrupted_by).name
        return data


# ---- showing the experiment ----------------------------------------------------------------------
class ExperimentDisplay:
    """The experiment as it runs: a live rich table on a terminal, else a text block per change.

    Off a terminal (a log, a CI job) the text is printed only when it changed; a change of the
    phase, step or weights is printed at once, while mere new counts are printed at most every
    :attr:`text_every_s` seconds, so a log stays readable with a tick every second.
    """

    text_every_s = 5.0

    def __init__(self, stream: TextIO, *, keep_stdout_clean: bool = False) -> None:
        self.stream = stream
        self.interactive = stream.isatty()
        # With --output json the display goes to stderr and stdout must stay clean for the summary.
        self.keep_stdout_clean = keep_stdout_clean
        self._live: Any = None
        self._last_text: str | None = None
        self._last_key: tuple[Any, ...] | None = None
        self._last_printed = 0.0

    def show(self, obj: Mapping[str, Any]) -> None:
        from modelrollout.console.view import experiment_panel, experiment_text

        if self.interactive:
            panel = experiment_panel(dict(obj))
            if self._live is None:
                from rich.console import Console
                from rich.live import Live

                self._live = Live(panel, console=Console(file=self.stream), refresh_per_second=4,
                                  redirect_stdout=not self.keep_stdout_clean, redirect_stderr=True)
                self._live.start()
            else:
                self._live.update(panel, refresh=True)
            return
        status = obj.get("status") or {}
        # Ages are shown as of the last analysis, so the text changes with the status, not the clock.
        text = experiment_text(dict(obj), now=_analysis_time(status))
        key = (status.get("phase"), status.get("currentStep"), str(status.get("weights")))
        now = time.monotonic()
        if text == self._last_text:
            return
        if key == self._last_key and now - self._last_printed < self.text_every_s:
            return
        self._last_text, self._last_key, self._last_printed = text, key, now
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._live is not None:
            with contextlib.suppress(Exception):
                self._live.stop()
            self._live = None


def _analysis_time(status: Mapping[str, Any]) -> datetime | None:
    text = (status.get("analysis") or {}).get("updatedAt")
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")) if text else None
    except ValueError:
        return None


# ---- signals and processes -------------------------------------------------------------------------
class SignalGuard:
    """SIGINT and SIGTERM raise :class:`DemoInterrupted` until :meth:`stopping`; then they are noted.

    One handler for the whole run, so no signal can slip between the run and its teardown, and a
    second Ctrl-C cannot cut the teardown short. Installed even if SIGINT was ignored (a shell's
    background job), so that ``kill -INT`` still stops the demo cleanly.
    """

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.received: list[int] = []
        #: The signal that interrupted the run (even if a clean-up on the way raised another error).
        self.interrupted_by: int | None = None
        self._stopping = False
        self._noted = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> SignalGuard:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def check(self) -> None:
        """Raise :class:`DemoInterrupted` again if a signal came and its exception was swallowed.

        A handler's exception can be lost: raised while a finalizer runs, Python only prints
        "Exception ignored"; so the run also checks here between its steps.
        """
        if self.interrupted_by is not None and not self._stopping:
            raise DemoInterrupted(self.interrupted_by)

    def stopping(self) -> None:
        """From now on a signal does not interrupt: the teardown must finish."""
        self._stopping = True

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signum)
        if not self._stopping:
            if self.interrupted_by is None:
                self.interrupted_by = signum
            raise DemoInterrupted(signum)
        if not self._noted:
            self._noted = True
            self.progress("demo: still stopping everything (this takes a few seconds)")


def child_pids(parent: int | None = None) -> list[int]:
    """Live (non-zombie) processes whose parent is ``parent`` (this process by default); Linux only."""
    parent = os.getpid() if parent is None else parent
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == parent and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def stop_leftover_children(progress: Progress) -> list[int]:
    """End any child of this process still running (each leads its own process group)."""
    from modelrollout.devstack.controlplane.procs import kill_group

    leftovers = child_pids()
    for pid in leftovers:
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
        except OSError:
            argv0 = "?"
        # Typically one that was being started when a signal arrived, before it could be tracked.
        progress(f"demo: stopping leftover process {pid} ({os.path.basename(argv0)})")
        kill_group(pid, timeout=5.0)
    return leftovers


# ---- the manifest ------------------------------------------------------------------------------------
def load_manifest(path: Path, *, namespace: str, prometheus_url: str) -> dict[str, Any]:
    """The scenario's example with only what must be local replaced: namespace, Prometheus address."""
    from modelrollout.api.experiment import validate_manifest

    manifest = yaml.safe_load(path.read_text())
    if not isinstance(manifest, dict) or manifest.get("kind") != "ModelExperiment":
        raise DemoError(f"{path}: not a ModelExperiment manifest")
    local = copy.deepcopy(manifest)
    local.setdefault("metadata", {})["namespace"] = namespace
    local["spec"]["metrics"]["prometheus"]["address"] = prometheus_url
    validate_manifest(local)  # a broken example fails here, with the field path, not in the cluster
    return local


# ---- the run -------------------------------------------------------------------------------------------
class DemoRunner:
    """One scenario on a private stack: :meth:`run` starts it, watches it, reports it, stops it."""

    def __init__(self, scenario: Scenario, out_dir: Path, *, progress: Progress,
                 display: ExperimentDisplay | None = None, timeout_s: float | None = None,
                 python: str = sys.executable) -> None:
        self.scenario = scenario
        self.out_dir = out_dir.resolve()
        self.progress = progress
        self.display = display
        self.timeout_s = timeout_s if timeout_s is not None else scenario.timeout_s
        self.python = python
        self.recording = self.out_dir / "recording.jsonl"
        self._workdir: Path | None = None
        self._env: Any = None
        self._api: Any = None
        self._world: Any = None
        self._last_seen: dict[str, Any] | None = None
        self._guard: SignalGuard | None = None

    # ---- lifecycle ----------------------------------------------------------------------------
    def run(self) -> DemoResult:
        started = time.monotonic()
        result = DemoResult(self.scenario, self.recording)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.recording.unlink(missing_ok=True)  # one run, one recording
        with SignalGuard(self.progress) as guard:
            self._guard = guard
            try:
                self._run(result)
            except DemoInterrupted as exc:
                result.interrupted_by = exc.signum
                result.error = f"interrupted by {exc}"
                self.progress(f"demo: {exc} received: stopping everything")
            except Exception as exc:
                result.error = f"{type(exc).__name__}: {exc}"
                self.progress(f"demo: error: {result.error}")
            finally:
                guard.stopping()
                if guard.interrupted_by is not None:
                    # e.g. LocalEnv's own clean-up after the interruption failed with another error
                    result.interrupted_by = guard.interrupted_by
                if self.display is not None:
                    self.display.close()
                t = time.monotonic()
                teardown_error = self._teardown()
                result.timings_s["teardown"] = round(time.monotonic() - t, 1)
                if teardown_error and result.error is None:
                    result.error = teardown_error
        if result.final is None:
            result.final = self._last_seen  # interrupted or failed mid-run: where it stood
        if result.interrupted_by is None:
            self._finish(result)
        elif result.final is not None:
            result.steps = steps_taken(result.final)
        result.wall_time_s = time.monotonic() - started
        return result

    def _timed(self, result: DemoResult, label: str, since: float) -> None:
        result.timings_s[label] = round(time.monotonic() - since, 1)

    def _checkpoint(self) -> None:
        if self._guard is not None:
            self._guard.check()

    def _run(self, result: DemoResult) -> None:
        from modelrollout.devstack.controlplane import build
        from modelrollout.devstack.controlplane.env import LocalEnv
        from modelrollout.devstack.controlplane.kube import api_client
        from modelrollout.devstack.controlplane.paths import cache_root

        scenario = self.scenario
        example = scenario.example_path()
        if not example.is_file():
            raise DemoError(f"the scenario's manifest is missing: {example}")
        t = time.monotonic()
        binaries = build.locate()
        if binaries is None:
            self.progress(
                "demo: first run: building kube-apiserver, kube-controller-manager and etcd from their Go "
                "modules. This may take several minutes (about 4 min on 2 cores); it is cached under "
                f"{cache_root() / 'bin'} afterwards."
            )
            binaries = build.build_all(self.progress)
            self._timed(result, "build", t)

        self._workdir = Path(tempfile.mkdtemp(prefix="modelrollout-demo-"))
        self.progress(f"demo: starting a private kube-apiserver, etcd and Prometheus in {self._workdir}")
        t = time.monotonic()
        # No kube-controller-manager: nothing here needs its controllers, and it saves a process.
        env = LocalEnv(self._workdir / "localenv", binaries=binaries, controller_manager=False,
                       progress=self.progress)
        self._env = env
        env.start()
        self._checkpoint()
        prometheus = env.start_prometheus()
        self._checkpoint()
        self._timed(result, "control_plane", t)
        self.progress(f"demo: kube-apiserver at {env.server}, Prometheus at {prometheus.url}")

        t = time.monotonic()
        self._api = api_client(env.admin_kubeconfig)
        self._create_namespace(DEMO_NAMESPACE)
        world = self._start_world(env, prometheus)
        self._checkpoint()
        self._timed(result, "stack", t)

        manifest = load_manifest(example, namespace=DEMO_NAMESPACE, prometheus_url=prometheus.url)
        name = manifest["metadata"]["name"]
        world.when_experiment_applied(manifest)
        self.progress(f"demo: experiment {name} applied from {example} (scenario {scenario.name}: "
                      f"{scenario.summary})")
        t = time.monotonic()
        result.final = self._watch(world)
        self._timed(result, "experiment", t)
        phase = result.phase
        if phase not in TERMINAL_PHASES:
            raise DemoError(f"no decision within {self.timeout_s:.0f} s (phase {phase})")

    def _create_namespace(self, name: str) -> None:
        from kubernetes import client

        client.CoreV1Api(self._api).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))

    def _start_world(self, env: Any, prometheus: Any) -> Any:
        from modelrollout.devstack.sim.world import World

        scenario = self.scenario
        world = World(env, prometheus, self._api, DEMO_NAMESPACE, self._world_dir(), python=self.python)
        self._world = world
        names = ", ".join(f"{m.variant} ({m.click_rate:.0%} click-through, {m.error_rate:.0%} errors)"
                          for m in scenario.models)
        self.progress(f"demo: starting the simulated models {names}")
        world.given_models(*scenario.models)
        self._checkpoint()
        world.given_virtual_service()
        self.progress("demo: starting the mesh stand-in (routes by the VirtualService, as Envoy would)")
        world.given_mesh()
        self._checkpoint()
        self.progress(f"demo: starting the load: {scenario.rps:.0f} requests/s from simulated users")
        # Bounded like every load run: it outlives the watch by a margin, and stops with the world.
        world.given_load(rps=scenario.rps, duration_s=self.timeout_s + 60.0)
        self._checkpoint()
        self.progress("demo: starting the operator (modelrollout run)")
        world.given_operator()
        self._checkpoint()
        return world

    def _world_dir(self) -> Path:
        assert self._workdir is not None
        return self._workdir / "world"

    def _watch(self, world: Any) -> dict[str, Any] | None:
        """Read the experiment until it reaches a final phase or the timeout; record and show it."""
        from kubernetes.client.exceptions import ApiException

        from modelrollout.console.recording import Recorder

        recorder = Recorder(self.recording)
        incident = _IncidentClock(self.scenario.incident)
        deadline = time.monotonic() + self.timeout_s
        last: dict[str, Any] | None = None
        last_phase: str | None = None
        while True:
            self._checkpoint()
            try:
                last = world.experiment()
            except ApiException as exc:
                self.progress(f"demo: reading the experiment failed ({exc.status}); retrying")
            if last is not None:
                last_phase = self._show(recorder, last, last_phase)
                if last_phase in TERMINAL_PHASES:
                    if incident.at is not None:
                        self.progress(f"demo: {last_phase} {time.monotonic() - incident.at:.1f} s after the "
                                      "incident (as seen by polling every 0.5 s)")
                    return last
                incident.tick(world, last.get("status") or {}, self.progress)
            operator = world.operator
            if operator is not None and operator.returncode() is not None:
                raise DemoError(f"the operator exited with code {operator.returncode()}:\n"
                                f"{operator.log_tail(20)}")
            if time.monotonic() > deadline:
                return last
            time.sleep(POLL_SECONDS)

    def _show(self, recorder: Any, last: dict[str, Any], last_phase: str | None) -> str | None:
        """Record and show one reading of the experiment; its phase (said when it changes)."""
        self._last_seen = last
        recorder.record(last)
        if self.display is not None:
            self.display.show(last)
        phase = (last.get("status") or {}).get("phase")
        if phase != last_phase and (self.display is None or not self.display.interactive):
            self.progress(f"demo: phase {phase}")
        return phase

    def _teardown(self) -> str | None:
        """Stop everything that was started, newest first; the first problem met, if any."""
        problems: list[str] = []
        if self._world is not None or self._env is not None:
            self.progress("demo: stopping the operator, the simulated stack, Prometheus, apiserver and etcd")
        if self._world is not None:
            self._keep_logs()
            try:
                self._world.close()
            except Exception as exc:
                problems.append(f"stopping the simulated stack: {exc}")
            self._world = None
        if self._api is not None:
            with contextlib.suppress(Exception):
                self._api.close()
            self._api = None
        if self._env is not None:
            try:
                self._env.stop()
            except Exception as exc:
                problems.append(f"stopping the control plane: {exc}")
            self._env = None
        stop_leftover_children(self.progress)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        for problem in problems:
            self.progress(f"demo: {problem}")
        return problems[0] if problems else None

    def _keep_logs(self) -> None:
        """Copy the operator's log beside the recording (the temporary folder is deleted)."""
        logs = self.out_dir / "logs"
        for log in sorted(self._world_dir().glob("operator-*.log")):
            with contextlib.suppress(OSError):
                logs.mkdir(exist_ok=True)
                shutil.copyfile(log, logs / log.name)

    def _finish(self, result: DemoResult) -> None:
        """Check the outcome, then write the report and the explanation (after the stack is gone)."""
        from modelrollout.console.recording import read_recording

        if result.final is None:
            return
        snapshots = read_recording(self.recording) if self.recording.exists() else []
        result.steps = steps_taken(result.final, [s.object for s in snapshots])
        if result.error is None:
            result.problems = outcome_problems(self.scenario, result.final)
        try:
            from modelrollout.report import explain, write_report

            files = write_report(result.final, self.out_dir, recording=snapshots)
            result.report = Path(files.html)
            result.explanation = explain(result.final)
        except Exception as exc:
            self.progress(f"demo: writing the report failed: {type(exc).__name__}: {exc}")
            if result.error is None:
                result.error = f"report: {type(exc).__name__}: {exc}"


class _IncidentClock:
    """When the scenario's incident is due: ``after_s`` seconds once the experiment reached its step."""

    def __init__(self, incident: Incident | None) -> None:
        self.incident = incident
        self.step_seen: float | None = None
        self.at: float | None = None  # when the incident began (monotonic)

    def tick(self, world: Any, status: dict[str, Any], progress: Callable[[str], None]) -> None:
        incident = self.incident
        if incident is None or status.get("phase") != "Progressing":
            return
        if (status.get("currentStep") or 0) < incident.at_step:
            return
        if self.step_seen is None:
            self.step_seen = time.monotonic()
        elif time.monotonic() - self.step_seen >= incident.after_s:
            world.when_model_configured(incident.variant, **incident.changes)
            self.at = time.monotonic()
            progress(f"demo: incident: {incident.description}")
            self.incident = None
