"""constraints/operator.txt, the image's pins, is in step with pyproject.toml's runtime dependencies.

Every runtime dependency is pinned exactly, at a version its specifier allows; nothing only the
extras need (matplotlib, the test tools) is pinned; each name is pinned once. The versions
themselves come from the venv (tools/constraints.py), and the image's e2e test checks that the
image holds exactly them. constraints/build.txt pins the build backend of [build-system].
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def read_pins(path: Path) -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep, f"{path.name}: not NAME==VERSION: {line!r}"
        assert name.strip(), f"{path.name}: no name: {line!r}"
        assert version.strip(), f"{path.name}: no version: {line!r}"
        key = canonicalize_name(name.strip())
        assert key not in pins, f"{path.name}: {key} pinned twice"
        pins[key] = Version(version.strip())
    return pins


@pytest.fixture(scope="module")
def project() -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return project


def test_every_runtime_dependency_is_pinned_at_a_version_pyproject_allows(project: dict[str, Any]) -> None:
    pins = read_pins(ROOT / "constraints" / "operator.txt")
    for requirement in map(Requirement, project["project"]["dependencies"]):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is a runtime dependency but constraints/operator.txt has no pin: " \
                             "run `.venv/bin/python tools/constraints.py`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints/operator.txt pins {name}=={pins[name]}, outside pyproject's {requirement}")


def test_nothing_only_the_extras_need_is_pinned(project: dict[str, Any]) -> None:
    pins = read_pins(ROOT / "constraints" / "operator.txt")
    runtime = {canonicalize_name(Requirement(r).name) for r in project["project"]["dependencies"]}
    extras = {canonicalize_name(Requirement(r).name)
              for group in project["project"]["optional-dependencies"].values() for r in group}
    assert "matplotlib" in extras
    assert not (extras - runtime) & set(pins), "the image would pin a tool of the extras"
    assert "modelrollout" not in pins


def test_the_build_backend_is_pinned(project: dict[str, Any]) -> None:
    pins = read_pins(ROOT / "constraints" / "build.txt")
    for requirement in map(Requirement, project["build-system"]["requires"]):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"constraints/build.txt has no pin for {requirement}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name])
