"""What can be checked of the Dockerfile without building it (tests/e2e/test_image.py builds it
with buildah and runs it with runc).

The base image is an argument whose default is pinned by a tag, the build is in two stages (the
image holds the first stage's venv, no sources and no build tools), the dependencies are installed
with the constraints, the image runs as a fixed non-root uid (the one the chart's securityContext
names), its entrypoint is a console script of pyproject.toml, its default command parses as
``modelrollout run``, and every file it copies exists and is not left out of the build context by
.dockerignore.
"""

from __future__ import annotations

import fnmatch
import json
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelrollout.cli import build_parser

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    argument: str


def instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions, with line continuations joined and comments dropped."""
    out: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        keyword, _, argument = whole.partition(" ")
        out.append(Instruction(keyword.upper(), argument.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def exec_form(argument: str) -> list[str]:
    value = json.loads(argument)
    assert isinstance(value, list), argument
    assert all(isinstance(v, str) for v in value), argument
    return value


@pytest.fixture(scope="module")
def steps() -> list[Instruction]:
    return instructions(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def only(steps: list[Instruction], keyword: str) -> Instruction:
    found = [s for s in steps if s.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {len(found)}"
    return found[0]


def test_the_parser_joins_continuations_and_drops_comments() -> None:
    parsed = instructions("# c\nFROM a:1\nRUN x \\\n  # inner\n  && y\nUSER 5\n")
    assert parsed == [Instruction("FROM", "a:1"), Instruction("RUN", "x && y"), Instruction("USER", "5")]


def stages(steps: list[Instruction]) -> list[list[Instruction]]:
    """The instructions of each stage (a FROM and what follows it)."""
    out: list[list[Instruction]] = []
    for step in steps:
        if step.keyword == "FROM":
            out.append([])
        if out:
            out[-1].append(step)
    return out


def test_the_base_is_an_argument_whose_default_is_slim_python_311_pinned_by_tag(
    steps: list[Instruction],
) -> None:
    assert steps[0].keyword == "ARG", "ARG BASE comes before the first FROM, so every stage sees it"
    name, _, default = steps[0].argument.partition("=")
    assert name == "BASE"
    image, _, tag = default.partition(":")
    assert image == "python"
    assert tag.startswith("3.11"), tag
    assert "slim" in tag, tag
    assert [s.argument.split()[0] for s in steps if s.keyword == "FROM"] == ["${BASE}", "${BASE}"]


def test_the_image_is_the_second_stage_with_only_the_first_stages_venv(steps: list[Instruction]) -> None:
    build, final = stages(steps)
    assert build[0].argument.split()[-2:] == ["AS", "build"]
    copies = [s.argument.split() for s in final if s.keyword in ("COPY", "ADD")]
    assert copies == [["--from=build", "/opt/modelrollout", "/opt/modelrollout"]]
    assert not [s for s in final if s.keyword == "RUN" and ("pip" in s.argument or "apt" in s.argument)]
    path = next(s.argument for s in final if s.keyword == "ENV" and s.argument.startswith("PATH="))
    assert path.split()[0].removeprefix("PATH=").split(":")[0] == "/opt/modelrollout/bin"


def test_the_dependencies_are_installed_from_the_wheel_with_the_constraints(steps: list[Instruction]) -> None:
    build, _ = stages(steps)
    (run,) = [s.argument for s in build if s.keyword == "RUN"]
    assert "pip wheel --no-deps --wheel-dir /wheels ." in run
    assert "PIP_CONSTRAINT=/src/constraints/build.txt" in run
    install = run[run.index("pip install"):]
    assert "--only-binary=:all:" in install  # no compiler is needed, nor present
    assert "--constraint constraints/operator.txt /wheels/modelrollout-*.whl" in " ".join(install.split())
    assert "pip uninstall --yes pip setuptools" in run
    # The machine's CA bundle is mounted by the build, never copied in.
    assert not [s for s in steps if s.keyword in ("COPY", "ADD") and "ca-certificates" in s.argument]


def test_runs_as_the_non_root_uid_the_chart_expects(steps: list[Instruction]) -> None:
    users = [s.argument for s in steps if s.keyword == "USER"]
    assert users, "no USER: the image would run as root"
    user, _, group = users[-1].partition(":")
    # Numeric, so the kubelet can check runAsNonRoot without resolving a name.
    assert user.isdigit(), users[-1]
    assert int(user) != 0
    assert group == "" or int(group) != 0
    values = yaml.safe_load((ROOT / "charts" / "modelrollout" / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(user)
    assert values["podSecurityContext"]["runAsNonRoot"] is True
    # The user is created before it is used.
    creates = " ".join(s.argument for s in steps if s.keyword == "RUN")
    assert f"--uid {user}" in creates


def test_entrypoint_is_a_console_script_and_the_default_command_is_run(
    steps: list[Instruction], pyproject: dict[str, Any]
) -> None:
    entrypoint = exec_form(only(steps, "ENTRYPOINT").argument)
    command = exec_form(only(steps, "CMD").argument)
    scripts = pyproject["project"]["scripts"]
    assert entrypoint[0] in scripts
    assert scripts[entrypoint[0]] == "modelrollout.cli:main"
    args = build_parser().parse_args([*entrypoint[1:], *command])
    assert args.command == "run"
    assert args.all_namespaces is True


def copied_sources(steps: list[Instruction]) -> list[str]:
    sources: list[str] = []
    for step in steps:
        if step.keyword != "COPY" or "--from=" in step.argument:
            continue
        words = [w for w in shlex.split(step.argument) if not w.startswith("--")]
        assert len(words) >= 2, step
        sources += words[:-1]
    return sources


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore leaves ``path`` out (the last matching pattern wins)."""
    result = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        bare = pattern.removeprefix("!").rstrip("/")
        if fnmatch.fnmatch(path, bare) or path.startswith(bare + "/"):
            result = not negated
    return result


def test_copied_files_exist_and_are_in_the_build_context(
    steps: list[Instruction], pyproject: dict[str, Any]
) -> None:
    sources = [s.rstrip("/") for s in copied_sources(steps)]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the checkout"
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [p.strip() for p in lines if p.strip() and not p.startswith("#")]
    for source in sources:
        assert not ignored(source, patterns), f"COPY {source}: left out of the context by .dockerignore"
    assert ignored(".venv", patterns)
    # `pip wheel .` needs the metadata, the readme it names and the package folder; the install
    # needs the pins.
    assert "pyproject.toml" in sources
    assert pyproject["project"]["readme"] in sources
    for folder in pyproject["tool"]["setuptools"]["packages"]["find"]["where"]:
        assert folder in sources
    assert "constraints" in sources


def removed_scipy_subpackages(run: str) -> list[str]:
    """The scipy subpackages the build stage deletes (the ``cd "$site/scipy" && rm -rf ...``)."""
    start = run.index('cd "$site/scipy" && rm -rf ') + len('cd "$site/scipy" && rm -rf ')
    return run[start:].split(")")[0].split()


def test_what_the_image_deletes_is_never_imported_by_the_pods_modules(steps: list[Instruction]) -> None:
    """A real import, in a fresh interpreter, of every module that runs in the pod (all but the dev
    stack and the report) and of the scipy modules they use: none of what the Dockerfile deletes
    is loaded. A scipy function that imported one of them lazily would fail only in the image, so
    tests/e2e/test_image.py runs a whole experiment on the image's own operator too."""
    build, _ = stages(steps)
    (run,) = [s.argument for s in build if s.keyword == "RUN"]
    scipy_gone = removed_scipy_subpackages(run)
    assert {"io", "signal", "cluster"} <= set(scipy_gone)
    assert '"$site/numpy/distutils"' in run
    probe = (
        "import importlib, pkgutil, sys, json\n"
        "import modelrollout\n"
        "for m in pkgutil.walk_packages(modelrollout.__path__, 'modelrollout.'):\n"
        "    if m.name.startswith(('modelrollout.devstack', 'modelrollout.report')):\n"
        "        continue\n"
        "    if m.name.endswith('__main__'):\n"
        "        continue\n"
        "    importlib.import_module(m.name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    argv = [sys.executable, "-c", probe]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120)
    loaded = set(json.loads(out.stdout.splitlines()[-1]))
    # The probe did import them.
    assert "scipy.stats" in loaded
    assert "kubernetes.client" in loaded
    gone = {f"scipy.{name}" for name in scipy_gone} | {"numpy.distutils"}
    assert not {m for m in loaded if ".".join(m.split(".")[:2]) in gone}
