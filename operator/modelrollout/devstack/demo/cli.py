"""``modelrollout demo``: a whole experiment on a private local stack, shown live, then a report.

Registered by :mod:`modelrollout.cli` (``register(subparsers)``). Importing this module is cheap:
the stack, the simulated models and the report are imported only when the command runs.

Exit codes: 0 when the scenario ended as it should, 1 otherwise (or when the demo could not run),
2 for bad arguments, 128 + the signal number when interrupted by SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

from modelrollout.errors import ExitCode

#: The scenarios' names, kept here so building the parser imports nothing heavy; they are the keys
#: of :data:`modelrollout.devstack.demo.scenarios.SCENARIOS`.
SCENARIO_NAMES = ("promote", "guardrail-breach", "worse", "shadow", "abn")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def default_out_dir(scenario: str) -> Path:
    """``./modelrollout-demo/<scenario>`` in the current folder."""
    return Path.cwd() / "modelrollout-demo" / scenario


def _print_outcome(summary: dict[str, Any], explanation: str | None) -> None:
    """The end of a table-mode run: the final phase, why, and where the report is."""
    print()
    if summary.get("interrupted_by"):
        print(f"Interrupted by {summary['interrupted_by']} in phase {summary['phase'] or 'none'}; "
              "everything the demo started was stopped.")
    else:
        as_expected = summary["phase"] == summary["expected_phase"] and not summary.get("problems")
        mark = "as expected" if as_expected else f"expected {summary['expected_phase']}"
        decided_by = summary["rule"] or "nothing"
        print(f"Final phase: {summary['phase'] or 'none'} ({mark}; decided by {decided_by})")
    if summary.get("steps"):
        print(f"Steps taken: {' -> '.join(f'{s} %' for s in summary['steps'])}")
    if summary.get("time_to_decision_s") is not None:
        print(f"Time to decision: {summary['time_to_decision_s']:.0f} s "
              f"(wall time {summary['wall_time_s']:.0f} s)")
    for problem in summary.get("problems", []):
        print(f"Not as expected: {problem}")
    if summary.get("error"):
        print(f"Error: {summary['error']}")
    if explanation:
        print()
        print(explanation)
    print()
    if summary.get("report"):
        print(f"Report: {summary['report']}")
    print(f"Recording: {summary['recording']}")


def _cmd_demo(args: argparse.Namespace) -> int:
    from modelrollout.devstack.demo.runner import DemoInterrupted, DemoRunner, ExperimentDisplay
    from modelrollout.devstack.demo.scenarios import SCENARIOS

    scenario = SCENARIOS[args.scenario]
    as_json = args.output == "json"
    out_dir = args.out if args.out is not None else default_out_dir(scenario.name)
    display = None if args.no_display else ExperimentDisplay(sys.stderr if as_json else sys.stdout,
                                                             keep_stdout_clean=as_json)
    _stderr(f"demo: scenario {scenario.name}: {scenario.summary}")
    runner = DemoRunner(scenario, out_dir, progress=_stderr, display=display, timeout_s=args.timeout)
    try:
        result = runner.run()
    except DemoInterrupted as exc:  # a signal between the run's end and its teardown; both done
        return 128 + exc.signum
    except KeyboardInterrupt:  # Ctrl-C while the report was written, after the teardown
        return 128 + int(signal.SIGINT)
    summary = result.summary()
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        _print_outcome(summary, result.explanation)
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in result.timings_s.items())
    _stderr(f"demo: done in {result.wall_time_s:.0f} s ({phases})")
    if result.interrupted_by is not None:
        return 128 + result.interrupted_by
    return ExitCode.OK if result.ok else ExitCode.FAILED


def register(subparsers: Any) -> None:
    """Add ``demo`` to the ``modelrollout`` command."""
    p = subparsers.add_parser(
        "demo",
        help="run a whole experiment on a private local stack, live, and write its report",
        description=(
            "Start a private kube-apiserver, etcd and Prometheus (building them on the first run, "
            "which takes minutes), simulated models behind a mesh stand-in, load and the operator; "
            "apply the scenario's experiment from examples/demo/; show it live; stop everything; "
            "and write recording.jsonl and report.html. Exit 0 when the scenario ends as it should."
        ),
    )
    p.add_argument("--scenario", choices=SCENARIO_NAMES, default="promote",
                   help="promote (default), guardrail-breach, worse, shadow or abn")
    p.add_argument("--output", "-o", choices=["table", "json"], default="table",
                   help="json: only a final summary on stdout, progress on stderr")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="folder for recording.jsonl and the report (default ./modelrollout-demo/SCENARIO)")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="give up waiting for a decision after this long (default: the scenario's)")
    p.add_argument("--no-display", action="store_true",
                   help="do not show the experiment while it runs (progress lines only)")
    p.set_defaults(func=_cmd_demo)
