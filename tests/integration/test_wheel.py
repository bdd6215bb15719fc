"""The wheel (what the image installs) holds the operator and the CLI, not the dev stack, and the
`modelrollout` command still starts without it: the dev stack's commands are simply absent.

The packages are those setuptools finds with pyproject's settings (a wheel build would need the
network here, for its isolated build environment); the CLI runs from a copy of exactly them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from setuptools import find_packages

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def wheel_packages() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    (where,) = config["where"]
    return sorted(find_packages(where=str(ROOT / where), exclude=config.get("exclude", ())))


def test_the_wheel_leaves_out_the_dev_stack_and_its_cli_runs(tmp_path: Path) -> None:
    packages = wheel_packages()
    assert {"modelrollout.controller", "modelrollout.cli", "modelrollout.report"} <= set(packages)
    assert not [p for p in packages if p.startswith("modelrollout.devstack")]
    site = tmp_path / "site"
    for package in packages:
        source = ROOT / "operator" / package.replace(".", "/")
        target = site / package.replace(".", "/")
        target.mkdir(parents=True)
        for module in source.glob("*.py"):
            shutil.copy(module, target / module.name)
    help_text = subprocess.run(
        [sys.executable, "-c", "import sys; from modelrollout.cli import main; sys.exit(main(['--help']))"],
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "run" in help_text
    assert "report" in help_text
    assert "localenv" not in help_text
    assert "demo" not in help_text
