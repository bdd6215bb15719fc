"""``modelrollout crd``: render the ModelExperiment CRD from the API models, or check it has not drifted.

Wire it into the main parser with ``register(subparsers)``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from modelrollout.api.crd import CHART_OUTPUT, DEFAULT_OUTPUT, check_crd, render_crd, write_crd
from modelrollout.errors import ExitCode

#: Lines of diff shown by ``--check`` for each file that drifted.
DIFF_LINES_SHOWN = 40


def _targets(outs: list[str] | None) -> list[Path]:
    if outs:
        return [Path(o) for o in outs]
    targets = [DEFAULT_OUTPUT]
    if CHART_OUTPUT.parent.parent.is_dir():  # charts/modelrollout/ exists: keep the chart's copy in step
        targets.append(CHART_OUTPUT)
    return targets


def _cmd_crd(args: argparse.Namespace) -> int:
    rendered = render_crd()
    targets = _targets(args.out)
    if "-" in (str(t) for t in targets):
        if args.check:
            print("modelrollout crd: error: --check needs a file, not -", file=sys.stderr)
            return ExitCode.USAGE
        sys.stdout.write(rendered)
        return ExitCode.OK
    if args.check:
        drifted = 0
        for path in targets:
            diff = check_crd(path, rendered)
            if not diff:
                print(f"{path}: up to date")
                continue
            drifted += 1
            added = sum(1 for line in diff if line.startswith("+") and not line.startswith("+++"))
            removed = sum(1 for line in diff if line.startswith("-") and not line.startswith("---"))
            print(f"{path}: differs from the models (+{added} -{removed} lines); run `modelrollout crd`")
            for line in diff[:DIFF_LINES_SHOWN]:
                print(f"  {line}")
            if len(diff) > DIFF_LINES_SHOWN:
                print(f"  ... {len(diff) - DIFF_LINES_SHOWN} more diff lines")
        return ExitCode.FAILED if drifted else 0
    for path in targets:
        changed = write_crd(path, rendered)
        print(f"{path}: {'written' if changed else 'unchanged'}")
    return ExitCode.OK


def register(subparsers: Any) -> None:
    """Add the ``crd`` command to ``modelrollout``'s subparsers."""
    p = subparsers.add_parser(
        "crd",
        help="render the ModelExperiment CRD from the API models (or --check it)",
        description="Render the ModelExperiment CustomResourceDefinition from the pydantic models. "
        f"Without --out it writes {DEFAULT_OUTPUT}, and {CHART_OUTPUT} when charts/modelrollout/ exists "
        "(paths relative to the current folder).",
    )
    p.add_argument(
        "--out",
        action="append",
        metavar="PATH",
        help=f"file to write or check (repeatable; - for stdout); default {DEFAULT_OUTPUT} "
        "and the chart's copy",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="do not write: exit 1 with a diff summary when a file differs from the models",
    )
    p.set_defaults(func=_cmd_crd)
