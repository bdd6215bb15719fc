"""Write constraints/operator.txt: the exact versions of the operator's runtime dependencies.

The image installs the operator's wheel with ``pip install --constraint constraints/operator.txt``,
so two builds install the same versions. The file holds every distribution that the runtime
dependencies of pyproject.toml (``[project] dependencies``, no extras) need, transitively, at the
version this interpreter's environment resolved (the project's .venv)::

    .venv/bin/python tools/constraints.py            # rewrite the file
    .venv/bin/python tools/constraints.py --check    # exit 1 if the file differs

tests/unit/test_constraints.py checks the file against pyproject.toml, and the image's e2e test
(tests/e2e/test_image.py) checks that the image holds exactly these versions.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import sys
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "constraints" / "operator.txt"
HEADER = """\
# The exact versions of the operator's runtime dependencies and of everything they need, for the
# image (Dockerfile: pip install --constraint constraints/operator.txt). Generated from the
# project's venv by `python tools/constraints.py`; do not edit by hand.
"""


def runtime_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[Requirement]:
    project = tomllib.loads(pyproject.read_text())["project"]
    return [Requirement(r) for r in project["dependencies"]]


def closure(roots: list[Requirement]) -> dict[str, str]:
    """Every distribution ``roots`` need in this environment, by canonical name, with its version."""
    env = {k: str(v) for k, v in default_environment().items()}
    found: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo: list[tuple[Requirement, frozenset[str]]] = [(r, frozenset()) for r in roots]
    while todo:
        req, extras = todo.pop()
        if req.marker is not None and not any(
            req.marker.evaluate({**env, "extra": e}) for e in (extras or {""})
        ):
            continue
        name = canonicalize_name(req.name)
        wanted = frozenset(req.extras)
        if (name, wanted) in seen:
            continue
        seen.add((name, wanted))
        dist = metadata.distribution(req.name)
        found[name] = dist.version
        todo += [(Requirement(r), wanted) for r in dist.requires or []]
    return dict(sorted(found.items()))


def render(pins: dict[str, str]) -> str:
    return HEADER + "".join(f"{name}=={version}\n" for name, version in pins.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is not what it would be")
    args = parser.parse_args(argv)
    text = render(closure(runtime_requirements()))
    if args.check:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(ROOT)} differs from this environment's versions", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)} ({text.count('==')} pins)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
