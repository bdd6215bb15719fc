"""`modelrollout localenv up|env|down` in a shell-like round trip, and the register() contract."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from modelrollout.devstack.controlplane import build, cli
from modelrollout.devstack.controlplane.kube import api_client
from modelrollout.devstack.controlplane.procs import pid_alive, wait_ports_closed

pytestmark = pytest.mark.integration


def run_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelrollout.devstack.controlplane.cli", "localenv", *args],
                          capture_output=True, text=True, timeout=timeout, check=False,
                          env=dict(os.environ))


def parse_exports(text: str) -> dict[str, str]:
    exports = {}
    for line in text.strip().splitlines():
        words = shlex.split(line)
        assert words[0] == "export", line
        key, _, value = words[1].partition("=")
        exports[key] = value
    return exports


def test_register_adds_the_subcommands() -> None:
    parser = argparse.ArgumentParser(prog="modelrollout")
    cli.register(parser.add_subparsers(dest="command", required=True))
    for sub in ("up", "down", "env", "build"):
        args = parser.parse_args(["localenv", sub])
        assert callable(args.func)
    assert parser.parse_args(["localenv", "up", "--dir", "x", "--no-prometheus"]).no_prometheus


def test_up_env_down_round_trip(localenv_binaries: build.Binaries, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    up = run_cli("up", "--dir", str(state_dir))
    assert up.returncode == 0, up.stderr
    try:
        exports = parse_exports(up.stdout)
        assert set(exports) == {"KUBECONFIG", "MODELROLLOUT_USER_KUBECONFIG", "PROMETHEUS_URL"}
        assert "localenv: up in" in up.stderr

        # `eval "$(modelrollout localenv up)"` works in a real shell.
        module = "modelrollout.devstack.controlplane.cli"
        command = shlex.join([sys.executable, "-m", module, "localenv", "env",
                              "--dir", str(state_dir)])
        shell = subprocess.run(["bash", "-c", f'eval "$({command})" && echo "$KUBECONFIG"'],
                               capture_output=True, text=True, check=True)
        assert shell.stdout.strip() == exports["KUBECONFIG"]

        admin: Any = api_client(Path(exports["KUBECONFIG"]))
        user: Any = api_client(Path(exports["MODELROLLOUT_USER_KUBECONFIG"]))
        try:
            core: Any = client.CoreV1Api(admin)
            names = {ns.metadata.name for ns in core.list_namespace().items}
            assert "kube-system" in names
            with pytest.raises(client.ApiException) as denied:
                client.CoreV1Api(user).list_namespaced_pod("default")
            assert denied.value.status == 403
            ext: Any = client.ApiextensionsV1Api(admin)
            crds = ext.list_custom_resource_definition().items
            assert "virtualservices.networking.istio.io" in {c.metadata.name for c in crds}
        finally:
            admin.close()
            user.close()

        again = run_cli("env", "--dir", str(state_dir))
        assert again.returncode == 0
        assert parse_exports(again.stdout) == exports
        twice = run_cli("up", "--dir", str(state_dir))
        assert twice.returncode == 0
        assert parse_exports(twice.stdout) == exports
        assert "already running" in twice.stderr
        state = json.loads(run_cli("env", "--dir", str(state_dir), "--json").stdout)
    finally:
        down = run_cli("down", "--dir", str(state_dir))
    assert down.returncode == 0, down.stderr
    assert [p["name"] for p in state["processes"] if pid_alive(p["pid"])] == []
    assert wait_ports_closed([port for p in state["processes"] for port in p["ports"]], timeout=5) == []
    assert not state_dir.exists()

    gone = run_cli("env", "--dir", str(state_dir))
    assert gone.returncode == 1
    assert "no running environment" in gone.stderr
    assert "localenv up" in gone.stderr
    assert run_cli("down", "--dir", str(state_dir)).stderr.strip() == "localenv: nothing was running"


def test_build_is_a_cache_hit_when_built(localenv_binaries: build.Binaries) -> None:
    if localenv_binaries.versions.get("source"):
        pytest.skip("binaries come from $MODELROLLOUT_LOCALENV_BIN_DIR")
    result = run_cli("build", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "cached in" in result.stderr
    assert str(localenv_binaries.kube_apiserver) in result.stdout.split()
