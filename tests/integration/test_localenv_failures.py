"""Missing pieces and start-up failures give one clear message; nothing is left behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelrollout.devstack.controlplane import build
from modelrollout.devstack.controlplane.env import LocalEnv
from modelrollout.devstack.controlplane.errors import BuildError, ComponentError, MissingPrerequisiteError
from modelrollout.devstack.controlplane.procs import free_port, pid_alive, port_open, wait_ports_closed

pytestmark = pytest.mark.integration


@pytest.fixture
def squatter() -> Iterator[int]:
    """A port that something else already listens on."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def _quiet(_message: str) -> None:
    pass


# ---- missing pieces ----------------------------------------------------------------------------
def test_missing_go_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GO", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(build, "GO_FALLBACKS", ())
    with pytest.raises(MissingPrerequisiteError, match=r"Go toolchain not found: install Go >= 1\.26\.0 "
                                                        r"from https://go\.dev/dl/"):
        build.find_go("1.26.0")


def test_too_old_go_says_how_to_get_a_new_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "go"
    fake.write_text("#!/bin/sh\necho go1.21.3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("GO", str(fake))
    with pytest.raises(MissingPrerequisiteError, match=r"is 1\.21\.3, too old.*https://go\.dev/dl/"):
        build.find_go("1.26.0")


def test_failed_build_carries_the_compiler_output(tmp_path: Path) -> None:
    go = build.find_go("1.26.0")
    (tmp_path / "go.mod").write_text("module example.com/broken\n\ngo 1.26\n")
    (tmp_path / "main.go").write_text("package main\n\nfunc main() { undefinedThing() }\n")
    with pytest.raises(BuildError) as info:
        build._run_go([str(go), "build", "-o", str(tmp_path / "out"), "."], tmp_path, build._go_env(go),
                      "broken", _quiet)
    assert "failed with exit code 1" in str(info.value)
    assert "undefined: undefinedThing" in str(info.value)


def test_missing_crd_folder_fails_before_anything_starts(localenv_binaries: build.Binaries,
                                                         tmp_path: Path) -> None:
    env = LocalEnv(tmp_path / "env", binaries=localenv_binaries, upstream_crds=tmp_path / "no-such-folder",
                   progress=_quiet)
    with pytest.raises(MissingPrerequisiteError) as info:
        env.start()
    message = str(info.value)
    assert "no-such-folder" in message
    assert "MODELROLLOUT_UPSTREAM_CRDS" in message
    assert "istio" in message
    assert "gateway-api" in message
    assert env.processes == []


def test_missing_crd_folder_from_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from modelrollout.devstack.controlplane import upstream

    monkeypatch.setenv("MODELROLLOUT_UPSTREAM_CRDS", str(tmp_path / "gone"))
    with pytest.raises(MissingPrerequisiteError, match=r"gone \(from MODELROLLOUT_UPSTREAM_CRDS\)"):
        upstream.locate()


_FIXTURE_USER = """
def test_needs_the_environment(localenv):
    pass
"""


@pytest.mark.parametrize(("ci", "outcome"), [("1", "failed"), ("", "skipped")])
def test_missing_binaries_fail_in_ci_and_skip_elsewhere(tmp_path: Path, ci: str, outcome: str) -> None:
    plugin = "modelrollout.devstack.controlplane.pytest_plugin"
    (tmp_path / "conftest.py").write_text(f'pytest_plugins = ["{plugin}"]\n')
    (tmp_path / "test_user.py").write_text(_FIXTURE_USER)
    env = dict(os.environ, CI=ci, MODELROLLOUT_LOCALENV_BIN_DIR=str(tmp_path / "empty"))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         "-c", os.devnull, str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    out = proc.stdout + proc.stderr
    assert f"1 {outcome}" in out or (outcome == "failed" and "1 error" in out), out
    assert "local environment unavailable" in out
    assert "lacks an executable etcd or kube-apiserver" in out
    assert proc.returncode == (1 if ci else 0), out


# ---- start-up failures -------------------------------------------------------------------------
def test_etcd_port_clash_reports_its_log(localenv_binaries: build.Binaries, tmp_path: Path,
                                         squatter: int) -> None:
    env = LocalEnv(tmp_path / "env", binaries=localenv_binaries, etcd_ports=(squatter, free_port()),
                   apply_upstream_crds=False, progress=_quiet)
    with pytest.raises(ComponentError) as info:
        env.start()
    assert info.value.component == "etcd"
    assert "address already in use" in str(info.value)
    assert "last log lines of etcd" in str(info.value)
    assert env.processes == []


def test_apiserver_port_clash_reports_its_log_and_stops_etcd(localenv_binaries: build.Binaries,
                                                             tmp_path: Path, squatter: int) -> None:
    etcd_ports = (free_port(), free_port())
    env = LocalEnv(tmp_path / "env", binaries=localenv_binaries, apiserver_port=squatter,
                   etcd_ports=etcd_ports, apply_upstream_crds=False, progress=_quiet)
    with pytest.raises(ComponentError) as info:
        env.start()
    assert info.value.component == "kube-apiserver"
    assert "address already in use" in str(info.value)
    assert env.processes == []
    assert wait_ports_closed(list(etcd_ports), timeout=1) == []


def test_component_that_exits_at_start_up(localenv_binaries: build.Binaries, tmp_path: Path) -> None:
    broken = tmp_path / "etcd"
    broken.write_text("#!/bin/sh\necho 'fatal: the data dir is on fire' >&2\nexit 3\n")
    broken.chmod(0o755)
    binaries = build.Binaries(broken, localenv_binaries.kube_apiserver, None, {})
    env = LocalEnv(tmp_path / "env", binaries=binaries, apply_upstream_crds=False, progress=_quiet)
    with pytest.raises(ComponentError, match=r"etcd: exited with code 3 while starting") as info:
        env.start()
    assert "the data dir is on fire" in str(info.value)


_CHILD = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from modelrollout.devstack.controlplane.env import LocalEnv
    env = LocalEnv(Path(sys.argv[1]), apply_upstream_crds=False, apply_project_crds=False,
                   progress=lambda m: None)
    env.start()
    env.start_prometheus()
    print(json.dumps(env.state()["processes"]), flush=True)
    time.sleep(600)
""")


def test_processes_die_with_a_killed_test_run(localenv_binaries: build.Binaries, tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path / "env")], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line, child.stderr.read() if child.stderr else ""
        procs = json.loads(line)
        assert [p["name"] for p in procs][:2] == ["etcd", "kube-apiserver"]
        ports = [port for p in procs for port in p["ports"]]
        assert all(port_open(port) for port in ports)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    deadline = time.monotonic() + 15
    while any(pid_alive(p["pid"]) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p["name"] for p in procs if pid_alive(p["pid"])] == []
    assert wait_ports_closed(ports, timeout=10) == []
