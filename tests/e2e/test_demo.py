"""``modelrollout demo`` as a user runs it: its own private stack, a JSON summary, a report, and
nothing left running afterwards -- also when it is interrupted.

Unlike the other e2e tests, these do not use the session's local environment: the demo must start
(and stop) its own kube-apiserver, etcd and Prometheus, and that is what is checked here. Each run
gets its own ``$TMPDIR``; every process the demo starts inherits it, so a process whose
environment or command line names that folder after the demo exited was left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelrollout.devstack.controlplane import build
from modelrollout.devstack.controlplane.errors import MissingPrerequisiteError
from modelrollout.devstack.controlplane.prometheus import find_prometheus
from modelrollout.devstack.controlplane.pytest_plugin import unavailable

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
#: A promote or guardrail demo takes about a minute; the cap leaves room for a busy machine.
RUN_TIMEOUT_S = 420.0


@dataclass
class DemoRun:
    """One ``modelrollout demo`` subprocess and the folders it was given."""

    tmpdir: Path
    out: Path
    argv: list[str]
    env: dict[str, str]


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[DemoRun]:
    """A demo command with a private ``$TMPDIR`` and output folder; checks nothing is left behind."""
    if build.locate() is None:
        unavailable(build.missing_message())
    try:
        find_prometheus()
    except MissingPrerequisiteError as exc:
        unavailable(str(exc))
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    out = tmp_path / "out"
    env = dict(os.environ, TMPDIR=str(tmpdir), PYTHONUNBUFFERED="1")
    argv = [sys.executable, "-m", "modelrollout.cli", "demo", "--out", str(out)]
    assert processes_marked_by(tmpdir) == {}, "a process already uses the fresh TMPDIR"
    run = DemoRun(tmpdir, out, argv, env)
    yield run
    left = processes_marked_by(tmpdir)
    for pid in left:  # do not leave them to the next test either
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    assert left == {}, f"processes left behind by the demo: {left}"
    assert not list(tmpdir.glob("modelrollout-demo-*")), "the demo's temporary folder was not deleted"


def processes_marked_by(folder: Path) -> dict[int, str]:
    """Live processes whose environment or command line names ``folder`` (pid -> command line)."""
    marker = str(folder).encode()
    found = {}
    for entry in Path("/proc").glob("[0-9]*"):
        pid = int(entry.name)
        if pid == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and (marker in cmdline or marker in environ):
            found[pid] = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
    return found


def run_demo(demo: DemoRun, *args: str) -> tuple[int, dict[str, Any], str]:
    """Run the demo to its end: exit code, the JSON summary, stderr."""
    started = time.monotonic()
    proc = subprocess.run([*demo.argv, *args, "--output", "json"], env=demo.env, cwd=demo.tmpdir.parent,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    elapsed = time.monotonic() - started
    try:
        summary = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"stdout is not the JSON summary:\n{proc.stdout}\nstderr tail:\n{proc.stderr[-4000:]}")
    print(f"\n{' '.join(args)}: exit {proc.returncode} in {elapsed:.0f} s; summary: {json.dumps(summary)}")
    return proc.returncode, summary, proc.stderr


def check_outputs(summary: dict[str, Any], demo: DemoRun) -> None:
    assert summary["recording"] == str(demo.out / "recording.jsonl")
    lines = Path(summary["recording"]).read_text().splitlines()
    assert len(lines) >= 3, lines
    assert all({"time", "object"} <= set(json.loads(line)) for line in lines)
    assert summary["report"] == str(demo.out / "report.html"), summary
    assert Path(summary["report"]).is_file()
    assert summary["time_to_decision_s"] is not None
    assert summary["time_to_decision_s"] > 0


def test_promote_demo_promotes_and_leaves_nothing_running(demo: DemoRun) -> None:
    code, summary, stderr = run_demo(demo, "--scenario", "promote")
    assert code == 0, stderr[-4000:]
    assert summary["scenario"] == "promote"
    assert summary["phase"] == "Promoted" == summary["expected_phase"]
    assert summary["ok"] is True
    assert summary["rule"] == "PrimaryBetter"
    assert summary["message"].startswith("Promoted v7")
    steps = summary["steps"]
    assert steps[0] == 10, steps
    assert steps[-1] == 100, steps
    assert steps == sorted(set(steps)), steps
    check_outputs(summary, demo)
    # the progress said what it started, on stderr (stdout held only the summary)
    assert "starting a private kube-apiserver" in stderr


def test_guardrail_breach_demo_rolls_back_by_the_guardrail(demo: DemoRun) -> None:
    code, summary, stderr = run_demo(demo, "--scenario", "guardrail-breach")
    assert code == 0, stderr[-4000:]
    assert summary["phase"] == "RolledBack" == summary["expected_phase"]
    assert summary["ok"] is True
    assert summary["rule"] == "GuardrailBreach"
    assert "error-rate" in summary["message"], summary["message"]
    assert 100 not in summary["steps"], summary["steps"]
    check_outputs(summary, demo)
    assert "incident: v7 now fails 50 % of its requests" in stderr


class StderrWatcher:
    """Reads a subprocess's stderr in the background; waits for a line containing some text."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, text: str, timeout: float) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: any(text in line for line in self.lines), timeout):
                tail = "\n".join(self.lines[-40:])
                pytest.fail(f"no stderr line with {text!r} after {timeout:.0f} s:\n{tail}")

    def text(self) -> str:
        self._thread.join(timeout=10)
        return "\n".join(self.lines)


@pytest.mark.parametrize(
    ("signum", "when"),
    [
        # Ctrl-C while the experiment runs: the operator, the simulated stack and the control plane
        (signal.SIGINT, "demo: experiment ranker-v7 applied"),
        # SIGTERM while the control plane is still starting
        (signal.SIGTERM, "localenv: starting kube-apiserver"),
    ],
    ids=["sigint-mid-experiment", "sigterm-during-startup"],
)
def test_a_signal_tears_everything_down(demo: DemoRun, signum: signal.Signals, when: str) -> None:
    proc = subprocess.Popen([*demo.argv, "--scenario", "promote", "--output", "json"], env=demo.env,
                            cwd=demo.tmpdir.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watcher = StderrWatcher(proc)
    try:
        watcher.wait_for(when, timeout=120)
        if signum == signal.SIGINT:
            time.sleep(3)  # a few ticks into the experiment
        assert processes_marked_by(demo.tmpdir), "the demo's processes should be running by now"
        proc.send_signal(signum)
        if signum == signal.SIGINT:  # an impatient second Ctrl-C must not cut the teardown short
            time.sleep(0.5)
            proc.send_signal(signum)
        proc.wait(timeout=90)
        # (not communicate(): it would read stderr too, racing the watcher for its lines)
        assert proc.stdout is not None
        stdout = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = watcher.text()
    print(f"\n{signum.name}: exit {proc.returncode}; last lines:\n" + "\n".join(stderr.splitlines()[-6:]))
    assert proc.returncode == 128 + signum, stderr[-3000:]
    summary = json.loads(stdout)
    assert summary["ok"] is False
    assert summary["interrupted_by"] == signum.name
    if signum == signal.SIGINT:  # the summary says where the experiment stood when interrupted
        assert summary["phase"] in ("Pending", "Progressing"), summary
    assert "stopping" in stderr


def test_scenarios_match_their_example_manifests() -> None:
    """Each scenario has a valid manifest in examples/demo/ (not globbed by examples/*.yaml tests)."""
    from modelrollout.api.experiment import validate_manifest
    from modelrollout.devstack.demo.cli import SCENARIO_NAMES
    from modelrollout.devstack.demo.scenarios import SCENARIOS

    assert tuple(SCENARIOS) == SCENARIO_NAMES
    files = sorted(p.name for p in (ROOT / "examples" / "demo").glob("*.yaml"))
    assert files == sorted(s.example for s in SCENARIOS.values())
    for scenario in SCENARIOS.values():
        manifest = yaml.safe_load(scenario.example_path(ROOT).read_text())
        spec = validate_manifest(manifest).spec
        assert spec.traffic.provider == "istio", scenario.name
        assert spec.rollout.interval == "1s", scenario.name
        assert [c.name for c in spec.challengers] == [m.variant for m in scenario.models[1:]]
        assert spec.champion.name == scenario.models[0].variant
