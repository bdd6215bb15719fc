"""The console commands against the real kube-apiserver: status, list, the manual controls, and
the one-line failures (unknown name, CRD not installed, apiserver unreachable).

The CLI runs in-process through ``modelrollout.cli.main``, except for one run as the kubectl
plugin. A missing CRD is tested without touching the shared one: the console is pointed at a
group, a version or a plural that this apiserver does not serve, so the 404 and the discovery
answer that explain it are real.
"""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from modelrollout.api import CRD_NAME, GROUP, PLURAL, VERSION, ModelExperimentStatus
from modelrollout.api.crd import crd_document
from modelrollout.cli import main
from modelrollout.console import client as console_client
from modelrollout.console.errors import CRDNotInstalledError, ExperimentNotFoundError
from modelrollout.console.recording import read_recording
from modelrollout.devstack.controlplane.env import LocalEnv
from modelrollout.devstack.controlplane.kube import apply_crds

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MINIMAL: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "minimal.yaml").read_text())
NAME = "ranker-v7"

PROGRESSING_STATUS: dict[str, Any] = {
    "phase": "Progressing",
    "currentStep": 1,
    "weights": {"v1": 75, "v2": 25},
    "startedAt": "2026-12-01T03:01:00Z",
    "analysis": {
        "updatedAt": "2026-12-01T03:09:00Z",
        "plannedN": 9257,
        "variants": {
            "v1": {"n": 4210, "primary": {"n": 4210, "estimate": 0.1502}},
            "v2": {
                "n": 1398,
                "primary": {
                    "n": 1398,
                    "estimate": 0.1645,
                    "difference": 0.0143,
                    "relativeLift": 0.0952,
                    "ci": {"low": -0.081, "high": 0.312},
                    "pValue": 0.41,
                    "eValue": 0.62,
                    "plannedN": 9257,
                },
                "decision": "Pending",
            },
        },
    },
    "history": [
        {
            "time": "2026-12-01T03:05:00Z",
            "fromPhase": "Progressing",
            "toPhase": "Progressing",
            "fromStep": 0,
            "toStep": 1,
            "weights": {"v1": 75, "v2": 25},
            "reason": "StepAdvanced",
            "message": "Step 1 held its minimum duration.",
        }
    ],
}
PROMOTED_STATUS: dict[str, Any] = {
    **copy.deepcopy(PROGRESSING_STATUS),
    "phase": "Promoted",
    "currentStep": 3,
    "weights": {"v1": 0, "v2": 100},
    "finishedAt": "2026-12-01T04:00:00Z",
}


def valid_status(status: dict[str, Any]) -> dict[str, Any]:
    """``status`` as the operator would write it (through the model, so the CRD accepts it)."""
    dumped: dict[str, Any] = ModelExperimentStatus.model_validate(status).model_dump(
        by_alias=True, mode="json", exclude_none=True
    )
    return dumped


@pytest.fixture(scope="module")
def crd(localenv: LocalEnv) -> None:
    """The ModelExperiment CRD, rendered from the models, applied and Established."""
    assert apply_crds(localenv.admin_kubeconfig, [crd_document()]) == [CRD_NAME]


@pytest.fixture
def experiment(k8s_admin: Any, namespace: str, crd: None) -> str:
    """A ModelExperiment (examples/minimal.yaml) in this test's namespace, without a status."""
    body = copy.deepcopy(MINIMAL)
    body["metadata"] = {"name": NAME}
    custom = client.CustomObjectsApi(k8s_admin)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    return NAME


def write_status(api: Any, namespace: str, status: dict[str, Any]) -> None:
    client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, NAME, {"status": valid_status(status)}
    )


def read(api: Any, namespace: str) -> dict[str, Any]:
    found: Any = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, NAME
    )
    return dict(found)


def finish_once_recorded(api: Any, namespace: str, recording: Path) -> threading.Thread:
    """Write the Promoted status once the watch has recorded its first snapshot (and a few polls)."""

    def finish() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (recording.exists() and recording.stat().st_size):
            time.sleep(0.05)
        time.sleep(1.0)
        write_status(api, namespace, PROMOTED_STATUS)

    writer = threading.Thread(target=finish)
    writer.start()
    return writer


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


# --- status --------------------------------------------------------------------------------------


@pytest.mark.usefixtures("admin_kubeconfig_env")
def test_status_of_a_pending_experiment(
    capsys: pytest.CaptureFixture[str], experiment: str, namespace: str
) -> None:
    code, out, err = run(capsys, "status", experiment, "-n", namespace)
    assert code == 0, err
    assert f"{namespace}/{NAME}" in out
    assert "Pending" in out
    assert "no analysis yet" in out


@pytest.mark.usefixtures("admin_kubeconfig_env")
def test_status_shows_phase_step_weights_and_analysis(
    capsys: pytest.CaptureFixture[str], k8s_admin: Any, experiment: str, namespace: str
) -> None:
    write_status(k8s_admin, namespace, PROGRESSING_STATUS)
    code, out, err = run(capsys, "status", experiment, "-n", namespace)
    assert code == 0, err
    assert "Progressing" in out
    assert "2 of 4 (25 %)" in out
    assert "v1 75%, v2 25%" in out
    assert "[-8.1, +31.2]%" in out
    assert "StepAdvanced" in out

    code, out, _ = run(capsys, "status", experiment, "-n", namespace, "-o", "json")
    assert code == 0
    shown = json.loads(out)
    assert shown == read(k8s_admin, namespace)
    assert shown["status"]["weights"] == {"v1": 75, "v2": 25}


def test_status_with_an_explicit_kubeconfig_and_the_context_namespace(
    capsys: pytest.CaptureFixture[str], localenv: LocalEnv, experiment: str, namespace: str, tmp_path: Path
) -> None:
    config = yaml.safe_load(localenv.admin_kubeconfig.read_text())
    for context in config["contexts"]:
        context["context"]["namespace"] = namespace
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    code, out, err = run(capsys, "status", experiment, "--kubeconfig", str(kubeconfig))
    assert code == 0, err
    assert f"{namespace}/{NAME}" in out


@pytest.mark.usefixtures("admin_kubeconfig_env")
def test_status_record_appends_a_snapshot_per_status_change(
    capsys: pytest.CaptureFixture[str], k8s_admin: Any, experiment: str, namespace: str, tmp_path: Path
) -> None:
    recording = tmp_path / "run.jsonl"
    for _ in range(2):
        assert run(capsys, "status", experiment, "-n", namespace, "--record", str(recording))[0] == 0
    write_status(k8s_admin, namespace, PROGRESSING_STATUS)
    assert run(capsys, "status", experiment, "-n", namespace, "--record", str(recording))[0] == 0
    snapshots = read_recording(recording)
    assert [s.object.get("status", {}).get("phase") for s in snapshots] == [None, "Progressing"]
    assert snapshots[1].object == read(k8s_admin, namespace)


@pytest.mark.usefixtures("admin_kubeconfig_env")
def test_watch_prints_each_change_until_a_terminal_phase(
    capsys: pytest.CaptureFixture[str], k8s_admin: Any, experiment: str, namespace: str, tmp_path: Path
) -> None:
    write_status(k8s_admin, namespace, PROGRESSING_STATUS)
    recording = tmp_path / "watch.jsonl"
    writer = finish_once_recorded(k8s_admin, namespace, recording)
    started = time.monotonic()
    try:
        code, out, err = run(
            capsys,
            *("status", experiment, "-n", namespace),
            *("-w", "--interval", "0.2", "--record", str(recording)),
        )
    finally:
        writer.join()
    assert code == 0, err
    assert time.monotonic() - started < 30
    blocks = [b for b in out.split("--- ") if b.strip()]
    # Printed once per status change, not once per poll (several polls happened in between).
    assert len(blocks) == 2
    assert "Progressing" in blocks[0]
    assert "Promoted" in blocks[1]
    assert "v1 0%, v2 100%" in blocks[1]
    assert [s.object["status"]["phase"] for s in read_recording(recording)] == ["Progressing", "Promoted"]


@pytest.mark.usefixtures("admin_kubeconfig_env")
def test_watch_as_json_lines_of_a_finished_experiment_returns_at_once(
    capsys: pytest.CaptureFixture[str], k8s_admin: Any, experiment: str, namespace: str
) -> None:
    write_status(k8s_admin, namespace, PROMOTED_STATUS)
    code, out, err = run(capsys, "status", experiment, "-n", namespace, "-w", "-o", "json")
    assert code == 0, err
    (line,) = out.splitlines()
    assert json.loads(line)["status"]["phase"] == "Promoted"


# --- list ----------------------------------------------------------------------------------------


@pytest.mark.usefixtures("admin_kubeconfig_env")
def test_list_shows_the_experiment(
    capsys: pytest.CaptureFixture[str], k8s_admin: Any, experiment: str, namespace: str
) -> None:
    write_status(k8s_admin, namespace, PROGRESSING_STATUS)
    code, out, err = run(capsys, "list", "-n", namespace)
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "NAMESPACE", "PHASE", "STEP", "WEIGHTS", "AGE"]
    (row,) = rows
    assert row.split()[:4] == [NAME, namespace, "Progressing", "2/4"]
    assert "v1 75%, v2 25%" in row

    code, out, _ = run(capsys, "list", "-A")
    assert code == 0
    assert any(line.split()[:2] == [NAME, namespace] for line in out.splitlines())

    code, out, _ = run(capsys, "list", "-n", namespace, "-o", "json")
    assert code == 0
    assert [item["metadata"]["name"] for item in json.loads(out)["items"]] == [NAME]


@pytest.mark.usefixtures("admin_kubeconfig_env")
def test_list_of_an_empty_namespace_says_so(
    capsys: pytest.CaptureFixture[str], namespace: str, crd: None
) -> None:
    code, out, err = run(capsys, "list", "-n", namespace)
    assert code == 0
    assert out == ""
    assert one_line(err) == f"No modelexperiments found in namespace {namespace!r}."


# --- manual controls -----------------------------------------------------------------------------


@pytest.mark.usefixtures("admin_kubeconfig_env")
@pytest.mark.parametrize(
    ("control", "effect"),
    [
        ("promote", "the operator promotes a challenger at its next tick"),
        ("abort", "the operator rolls back to the champion at its next tick"),
        ("retry", "the experiment is Pending, not finished: the operator will ignore it"),
    ],
)
def test_controls_set_a_new_annotation_value_each_time(
    capsys: pytest.CaptureFixture[str],
    k8s_admin: Any,
    experiment: str,
    namespace: str,
    control: str,
    effect: str,
) -> None:
    key = f"modelrollout.io/{control}"
    values = []
    for _ in range(2):
        code, out, err = run(capsys, control, experiment, "-n", namespace)
        assert code == 0, err
        value = read(k8s_admin, namespace)["metadata"]["annotations"][key]
        assert out == f"modelexperiment {namespace}/{NAME}: annotated {key}={value} ({effect})\n"
        assert datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None
        values.append(value)
    assert values[0] != values[1]  # each use is a new value, so the operator acts again


@pytest.mark.usefixtures("admin_kubeconfig_env")
def test_promote_a_named_challenger(
    capsys: pytest.CaptureFixture[str], k8s_admin: Any, experiment: str, namespace: str
) -> None:
    code, _, err = run(capsys, "promote", experiment, "-n", namespace, "--challenger", "v2")
    assert code == 0, err
    assert read(k8s_admin, namespace)["metadata"]["annotations"]["modelrollout.io/promote"] == "v2"
    code, _, err = run(capsys, "promote", experiment, "-n", namespace, "--challenger", "v9")
    assert code == 1
    assert "'v9' is not a challenger" in one_line(err)
    assert read(k8s_admin, namespace)["metadata"]["annotations"]["modelrollout.io/promote"] == "v2"


@pytest.mark.usefixtures("admin_kubeconfig_env")
def test_controls_on_a_finished_experiment_say_they_will_be_ignored(
    capsys: pytest.CaptureFixture[str], k8s_admin: Any, experiment: str, namespace: str
) -> None:
    write_status(k8s_admin, namespace, PROMOTED_STATUS)
    _, out, _ = run(capsys, "abort", experiment, "-n", namespace)
    assert "(the experiment is already Promoted: the operator will ignore it)" in out
    _, out, _ = run(capsys, "retry", experiment, "-n", namespace)
    assert "(the operator starts over from Pending at its next tick)" in out


@pytest.mark.usefixtures("admin_kubeconfig_env")
def test_pause_and_resume_flip_spec_paused(
    capsys: pytest.CaptureFixture[str], k8s_admin: Any, experiment: str, namespace: str
) -> None:
    assert not read(k8s_admin, namespace)["spec"].get("paused")
    code, out, err = run(capsys, "pause", experiment, "-n", namespace)
    assert code == 0, err
    assert read(k8s_admin, namespace)["spec"]["paused"] is True
    assert out == (
        f"modelexperiment {namespace}/{NAME}: set spec.paused=true (the operator pauses at its next tick)\n"
    )
    code, out, _ = run(capsys, "pause", experiment, "-n", namespace)
    assert "(it already was true; nothing changes)" in out
    code, out, err = run(capsys, "resume", experiment, "-n", namespace)
    assert code == 0, err
    assert read(k8s_admin, namespace)["spec"]["paused"] is False
    assert "set spec.paused=false (the operator resumes at its next tick)" in out


# --- failures ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("admin_kubeconfig_env")
@pytest.mark.parametrize("command", ["status", "promote", "abort", "retry", "pause", "resume"])
def test_unknown_name_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], namespace: str, crd: None, command: str
) -> None:
    code, out, err = run(capsys, command, "nope", "-n", namespace)
    assert code == 1
    assert out == ""
    assert one_line(err) == (
        f"modelrollout {command}: error: modelexperiment 'nope' not found in namespace '{namespace}'"
    )


ABSENT = [
    console_client.Resource("absent.modelrollout.io", "v1", "widgets"),  # no such group
    console_client.Resource(GROUP, "v9alpha9", PLURAL),  # the group, not this version
    console_client.Resource(GROUP, VERSION, "nothings"),  # the group and version, not this plural
]


@pytest.mark.parametrize("resource", ABSENT, ids=["group", "version", "plural"])
def test_a_resource_that_is_not_served_is_reported_as_a_missing_crd(
    k8s_admin: Any, namespace: str, crd: None, resource: console_client.Resource
) -> None:
    assert console_client.is_served(k8s_admin) is True
    assert console_client.is_served(k8s_admin, resource) is False
    for call in (
        lambda: console_client.get_experiment(k8s_admin, "x", namespace, resource=resource),
        lambda: console_client.list_experiments(k8s_admin, namespace, resource=resource),
        lambda: console_client.list_experiments(k8s_admin, None, resource=resource),
        lambda: console_client.patch_experiment(k8s_admin, "x", namespace, {"spec": {}}, resource=resource),
    ):
        with pytest.raises(CRDNotInstalledError) as caught:
            call()
        assert f"the {resource.name} CRD is not installed" in str(caught.value)
        assert "kubectl apply -f crds/" in str(caught.value)
    # The same 404 on a served resource is an unknown name, not a missing CRD.
    with pytest.raises(ExperimentNotFoundError):
        console_client.get_experiment(k8s_admin, "x", namespace)


@pytest.mark.usefixtures("admin_kubeconfig_env")
@pytest.mark.parametrize("argv", [["status", "x"], ["list"], ["list", "-A"], ["pause", "x"]])
def test_cli_without_the_crd_says_how_to_install_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, namespace: str, argv: list[str]
) -> None:
    monkeypatch.setattr(console_client, "EXPERIMENTS", ABSENT[0])
    code, out, err = run(capsys, *argv, "-n", namespace)
    assert code == 1
    assert out == ""
    line = one_line(err)
    assert line.startswith(
        f"modelrollout {argv[0]}: error: the widgets.absent.modelrollout.io CRD is not installed"
    )
    assert line.endswith("install it with: kubectl apply -f crds/")


def test_unreachable_apiserver_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    for argv in (["status", "x"], ["list", "-A"], ["promote", "x"]):
        code, out, err = run(capsys, *argv, "--kubeconfig", str(kubeconfig))
        assert code == 1
        assert out == ""
        assert one_line(err).startswith(f"modelrollout {argv[0]}: error: cannot reach the Kubernetes API at ")


def test_bad_kubeconfig_or_context_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], localenv: LocalEnv, tmp_path: Path
) -> None:
    code, _, err = run(capsys, "list", "--kubeconfig", str(tmp_path / "absent"))
    assert code == 1
    assert one_line(err).endswith(f"kubeconfig {tmp_path / 'absent'} does not exist")
    code, _, err = run(capsys, "list", "--kubeconfig", str(localenv.admin_kubeconfig), "--context", "nope")
    assert code == 1
    assert "no context 'nope' in kubeconfig" in one_line(err)


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["status"], ["status", "x", "--interval", "0"], ["list", "-o", "yaml"]):
        with pytest.raises(SystemExit) as caught:
            main(argv)
        assert caught.value.code == 2
        assert one_line(capsys.readouterr().err).startswith(f"modelrollout {argv[0]}: error: ")


# --- the kubectl plugin --------------------------------------------------------------------------


@pytest.fixture
def plugin_path() -> str:
    kubectl = shutil.which("kubectl")
    plugin = Path(sys.executable).with_name("kubectl-modelrollout")
    if kubectl is None or not plugin.exists():
        pytest.skip("kubectl or the kubectl-modelrollout console script is not installed")
    return f"{plugin.parent}{os.pathsep}{os.environ.get('PATH', '')}"


def test_kubectl_modelrollout_status(
    plugin_path: str, localenv: LocalEnv, k8s_admin: Any, experiment: str, namespace: str
) -> None:
    write_status(k8s_admin, namespace, PROGRESSING_STATUS)
    env = {**os.environ, "PATH": plugin_path, "KUBECONFIG": str(localenv.admin_kubeconfig)}
    done = subprocess.run(
        ["kubectl", "modelrollout", "status", experiment, "-n", namespace],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Progressing" in done.stdout
    assert "v1 75%, v2 25%" in done.stdout
    missing = subprocess.run(
        ["kubectl", "modelrollout", "status", "nope", "-n", namespace],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 1
    assert f"modelexperiment 'nope' not found in namespace '{namespace}'" in missing.stderr


# --- on a terminal -------------------------------------------------------------------------------


class Terminal(io.StringIO):
    """A stdout that says it is a terminal, so the CLI draws with rich (colours, Live)."""

    def isatty(self) -> bool:
        return True


@pytest.mark.usefixtures("admin_kubeconfig_env")
def test_on_a_terminal_status_is_a_coloured_panel_and_watch_redraws_it(
    monkeypatch: pytest.MonkeyPatch, k8s_admin: Any, experiment: str, namespace: str, tmp_path: Path
) -> None:
    write_status(k8s_admin, namespace, PROGRESSING_STATUS)
    screen = Terminal()
    monkeypatch.setattr(sys, "stdout", screen)
    monkeypatch.setenv("COLUMNS", "160")  # rich's width for a terminal it cannot measure
    assert main(["status", experiment, "-n", namespace]) == 0
    assert "\x1b[" in screen.getvalue()
    assert f"modelexperiment {namespace}/{NAME}" in screen.getvalue()

    screen.seek(0)
    screen.truncate()
    recording = tmp_path / "watch.jsonl"
    writer = finish_once_recorded(k8s_admin, namespace, recording)
    try:
        code = main(
            ["status", experiment, "-n", namespace, "-w", "--interval", "0.2", "--record", str(recording)]
        )
    finally:
        writer.join()
    assert code == 0
    drawn = screen.getvalue()
    assert "Progressing" in drawn
    assert "Promoted" in drawn
    assert "Ctrl-C to stop" in drawn
    phases = [snapshot.object["status"]["phase"] for snapshot in read_recording(recording)]
    assert phases == ["Progressing", "Promoted"]
