"""The helm component of the local build: its pinned version, its link flags, where it is found."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelrollout.devstack.controlplane import build

pytestmark = pytest.mark.unit


def test_helm_is_pinned_by_its_wrapper_module() -> None:
    assert build.HELM.version() == "v3.22.0"
    assert build.HELM.module_dir().name == "helmbin"
    assert (build.HELM.module_dir() / "go.sum").is_file()
    # helm is not part of the control plane: locate() never waits for it.
    assert build.HELM not in build.COMPONENTS
    assert build.HELM in build.TOOLS


def test_helm_ldflags_follow_helms_makefile() -> None:
    flags = build.helm_ldflags("v3.22.0", "v0.37.0")
    assert "-X helm.sh/helm/v3/internal/version.version=v3.22.0" in flags
    # client-go v0.37 is Kubernetes 1.37: what `helm template` reports as .Capabilities.KubeVersion.
    for pkg in ("helm.sh/helm/v3/pkg/chartutil", "helm.sh/helm/v3/pkg/lint/rules"):
        assert f"-X {pkg}.k8sVersionMajor=1" in flags
        assert f"-X {pkg}.k8sVersionMinor=37" in flags
    assert build.helm_ldflags("v3.22.0", "garbage") == [
        "-X helm.sh/helm/v3/internal/version.version=v3.22.0",
        "-X helm.sh/helm/v3/internal/version.gitTreeState=archive",
    ]
    whole = build.HELM.ldflags("v3.22.0", "2026-01-01T00:00:00Z")
    assert whole.startswith("-s -w ")
    assert "k8sVersionMinor=" in whole


def test_locate_helm_prefers_the_bin_dir_then_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(build.BIN_DIR_ENV, raising=False)
    assert build.locate_helm() is None
    assert "modelrollout localenv build" in build.helm_missing_message()

    cached = build.bin_dir(build.HELM, build.HELM.version())
    cached.mkdir(parents=True)
    (cached / "helm").write_text("#!/bin/sh\n")
    (cached / "helm").chmod(0o755)
    (cached / "stamp.json").write_text(f'{{"fingerprint": "{build.fingerprint(build.HELM.module_dir())}"}}')
    assert build.locate_helm() == cached / "helm"
    # A stamp of other go.mod/go.sum files is a stale build.
    (cached / "stamp.json").write_text('{"fingerprint": "stale"}')
    assert build.locate_helm() is None

    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv(build.BIN_DIR_ENV, str(folder))
    assert build.locate_helm() is None
    (folder / "helm").write_text("#!/bin/sh\n")
    (folder / "helm").chmod(0o755)
    assert os.access(folder / "helm", os.X_OK)
    assert build.locate_helm() == folder / "helm"
