"""``modelrollout report``: the report of a live experiment, a saved object or a recording.

``modelrollout report NAME --out DIR [-n NS] [--kubeconfig K] [--context C]`` reads the object
from the cluster; ``modelrollout report --from FILE --out DIR`` reads a saved object (YAML or
JSON, as ``kubectl get mexp NAME -o yaml`` writes it) or a recording (``.jsonl``). It prints the
paths written. Errors are one line on stderr, with exit code 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any, Final

import yaml

from modelrollout.errors import ExitCode
from modelrollout.report.errors import ReportError

RECORDING_SUFFIXES: Final = (".jsonl", ".ndjson")


def _single_experiment(doc: Any, path: Path) -> dict[str, Any]:
    """The one ModelExperiment in ``doc``: the object itself, or the only item of a List."""
    if isinstance(doc, dict) and doc.get("kind") == "List":
        items = [
            i for i in doc.get("items") or [] if isinstance(i, dict) and i.get("kind") == "ModelExperiment"
        ]
        if len(items) != 1:
            raise ReportError(f"{path}: a List with {len(items)} ModelExperiments; save one object")
        return items[0]
    if not isinstance(doc, dict) or doc.get("kind", "ModelExperiment") != "ModelExperiment":
        kind = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
        raise ReportError(f"{path}: not a ModelExperiment (found {kind})")
    if "spec" not in doc:
        raise ReportError(f"{path}: not a ModelExperiment (no spec)")
    return doc


def load_file(path: Path) -> tuple[dict[str, Any], list[Any] | None]:
    """The object and, for a recording, its snapshots (the object is the last snapshot's).

    Raises
    ------
    ReportError
        When the file cannot be read or holds no ModelExperiment.
    """
    if path.suffix.lower() in RECORDING_SUFFIXES:
        from modelrollout.console.errors import ConsoleError
        from modelrollout.console.recording import read_recording

        try:
            snapshots = read_recording(path)
        except ConsoleError as exc:
            raise ReportError(str(exc)) from exc
        if not snapshots:
            raise ReportError(f"{path}: the recording is empty")
        return _single_experiment(snapshots[-1].object, path), snapshots
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError:
        raise ReportError(f"{path}: not a text file") from None
    try:
        doc = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ReportError(f"{path}: invalid YAML{where}") from None
    return _single_experiment(doc, path), None


def _live(args: argparse.Namespace) -> dict[str, Any]:
    from modelrollout.console.client import connect, get_experiment
    from modelrollout.console.errors import ConsoleError

    try:
        api, default_namespace = connect(args.kubeconfig, args.context)
        with contextlib.closing(api):
            return get_experiment(api, args.name, args.namespace or default_namespace)
    except ConsoleError as exc:
        raise ReportError(str(exc)) from exc


def _cmd_report(args: argparse.Namespace) -> int:
    from modelrollout.report import write_report

    try:
        if (args.name is None) == (args.source is None):
            raise ReportError("give an experiment NAME or --from FILE (one of them)")
        if args.source is not None:
            obj, recording = load_file(Path(args.source))
        else:
            obj, recording = _live(args), None
        files = write_report(obj, Path(args.out), recording=recording)
    except ReportError as exc:
        print(f"modelrollout report: error: {_one_line(str(exc))}", file=sys.stderr)
        return ExitCode.FAILED
    print(files.html)
    for path in files.pngs.values():
        print(path)
    return ExitCode.OK


def _one_line(text: str) -> str:
    return " ".join(text.split())


def register(subparsers: Any) -> None:
    """Add the ``report`` command to ``modelrollout``'s subparsers."""
    p = subparsers.add_parser(
        "report",
        help="write an experiment's report (HTML and PNG figures)",
        description="Write report.html (self-contained) and weights.png, primary.png, guardrails.png "
        "and samples.png for a live ModelExperiment (NAME) or a saved one (--from FILE: YAML or JSON "
        "as from kubectl get -o yaml/json, or a .jsonl recording).",
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="the experiment to read from the cluster")
    p.add_argument(
        "--from", dest="source", metavar="FILE", help="a saved object (.yaml, .json) or recording (.jsonl)"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the report into")
    p.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
    p.add_argument("--context", help="kubeconfig context")
    p.set_defaults(func=_cmd_report)
