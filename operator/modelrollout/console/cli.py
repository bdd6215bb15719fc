"""The commands for people: ``status``, ``list`` and the manual controls.

``promote``, ``abort`` and ``retry`` set their annotation to a new value (the operator acts on
each new value once, at its next tick); ``pause`` and ``resume`` set ``spec.paused``. A failure
(unknown name, CRD not installed, apiserver unreachable) is one line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TextIO

from kubernetes.client import ApiClient
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from modelrollout.api.experiment import ANNOTATION_ABORT, ANNOTATION_PROMOTE, ANNOTATION_RETRY
from modelrollout.console import client as kube
from modelrollout.console.errors import ConsoleError
from modelrollout.console.recording import Recorder, format_time
from modelrollout.console.view import experiment_panel, experiment_text, is_terminal, list_table, list_text
from modelrollout.errors import ExitCode

#: 128 + SIGINT, as a shell reports a command stopped by Ctrl-C.
#: Polls in a row that may fail to reach the apiserver before a watch gives up.
WATCH_UNREACHABLE_LIMIT: Final = 5

_CONTROLS: Final = {
    "promote": (ANNOTATION_PROMOTE, "promotes a challenger"),
    "abort": (ANNOTATION_ABORT, "rolls back to the champion"),
    "retry": (ANNOTATION_RETRY, "starts over from Pending"),
}


# --- helpers -------------------------------------------------------------------------------------


def _reference(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def _print_json(data: Any, out: TextIO, compact: bool = False) -> None:
    if compact:
        out.write(json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n")
    else:
        out.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    out.flush()


def _is_tty(out: TextIO) -> bool:
    isatty: Callable[[], bool] | None = getattr(out, "isatty", None)
    return bool(isatty and isatty())


def _connect(args: argparse.Namespace) -> tuple[ApiClient, str]:
    api, default_namespace = kube.connect(args.kubeconfig, args.context)
    return api, args.namespace or default_namespace


def _run(command: str, body: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``body`` with a :class:`ConsoleError` as one line on stderr (exit 1), Ctrl-C as exit 130."""

    def run(args: argparse.Namespace) -> int:
        try:
            return body(args)
        except ConsoleError as exc:
            print(f"modelrollout {command}: error: {exc}", file=sys.stderr)
            return ExitCode.FAILED
        except KeyboardInterrupt:
            return ExitCode.INTERRUPTED

    return run


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


# --- status --------------------------------------------------------------------------------------


def _show(obj: Mapping[str, Any], output: str, out: TextIO) -> None:
    if output == "json":
        _print_json(obj, out)
    elif _is_tty(out):
        Console(file=out).print(experiment_panel(obj))
    else:
        out.write(experiment_text(obj))
        out.flush()


def _poll(api: ApiClient, name: str, namespace: str, failures: list[ConsoleError]) -> dict[str, Any] | None:
    """The experiment, or None after a poll that could not reach the apiserver (up to a limit)."""
    try:
        found = kube.get_experiment(api, name, namespace)
    except kube.UnreachableError as exc:
        failures.append(exc)
        if len(failures) >= WATCH_UNREACHABLE_LIMIT:
            raise
        return None
    failures.clear()
    return found


def _watch_live(
    api: ApiClient, args: argparse.Namespace, namespace: str, recorder: Recorder | None, out: TextIO
) -> int:
    """Follow the experiment in place on a terminal (rich Live), redrawn at every poll."""
    console = Console(file=out)
    failures: list[ConsoleError] = []
    obj = kube.get_experiment(api, args.name, namespace)

    def frame(current: Mapping[str, Any]) -> Group:
        note = f"watching every {args.interval:g}s, Ctrl-C to stop; polled {format_time(datetime.now(UTC))}"
        if failures:
            note += f"; apiserver unreachable ({failures[-1]})"
        return Group(experiment_panel(current), Text(note, style="dim"))

    with Live(frame(obj), console=console, auto_refresh=False, transient=False) as live:
        while True:
            if recorder is not None:
                recorder.record(obj)
            if is_terminal(obj):
                live.update(frame(obj), refresh=True)
                return ExitCode.OK
            time.sleep(args.interval)
            obj = _poll(api, args.name, namespace, failures) or obj
            live.update(frame(obj), refresh=True)


def _watch_lines(
    api: ApiClient, args: argparse.Namespace, namespace: str, recorder: Recorder | None, out: TextIO
) -> int:
    """Follow the experiment as blocks of text (or JSON lines), one each time the status changes."""
    failures: list[ConsoleError] = []
    obj = kube.get_experiment(api, args.name, namespace)
    shown: Any = None
    first = True
    while True:
        if recorder is not None:
            recorder.record(obj)
        status = obj.get("status")
        if first or status != shown:
            if args.output == "json":
                _print_json(obj, out, compact=True)
            else:
                if not first:
                    out.write("\n")
                out.write(f"--- {format_time(datetime.now(UTC))}\n")
                out.write(experiment_text(obj))
                out.flush()
            shown, first = status, False
        if is_terminal(obj):
            return ExitCode.OK
        time.sleep(args.interval)
        obj = _poll(api, args.name, namespace, failures) or obj


def _cmd_status(args: argparse.Namespace) -> int:
    api, namespace = _connect(args)
    out = sys.stdout
    try:
        recorder = Recorder(Path(args.record)) if args.record else None
        if not args.watch:
            obj = kube.get_experiment(api, args.name, namespace)
            if recorder is not None:
                recorder.record(obj)
            _show(obj, args.output, out)
            return ExitCode.OK
        if _is_tty(out) and args.output != "json":
            return _watch_live(api, args, namespace, recorder, out)
        return _watch_lines(api, args, namespace, recorder, out)
    except OSError as exc:  # the recording file
        raise ConsoleError(f"cannot write recording {args.record}: {exc.strerror or exc}") from exc
    finally:
        kube.close(api)


# --- list ----------------------------------------------------------------------------------------


def _cmd_list(args: argparse.Namespace) -> int:
    api, namespace = _connect(args)
    try:
        scope = None if args.all_namespaces else namespace
        objs = kube.list_experiments(api, scope)
    finally:
        kube.close(api)
    out = sys.stdout
    if args.output == "json":
        _print_json({"apiVersion": "v1", "kind": "List", "items": objs}, out)
    elif not objs:
        where = "any namespace" if scope is None else f"namespace {scope!r}"
        print(f"No modelexperiments found in {where}.", file=sys.stderr)
    elif _is_tty(out):
        Console(file=out).print(list_table(objs))
    else:
        out.write(list_text(objs))
    return ExitCode.OK


# --- manual controls -----------------------------------------------------------------------------


def control_value(now: datetime | None = None) -> str:
    """A new annotation value: the time in RFC 3339 to the microsecond, so each use is distinct."""
    return format_time(now or datetime.now(UTC))


def _phase(obj: Mapping[str, Any]) -> str:
    return str((obj.get("status") or {}).get("phase") or "Pending")


def _control_effect(control: str, obj: Mapping[str, Any]) -> str:
    phase, finished = _phase(obj), is_terminal(obj)
    if control in ("promote", "abort") and finished:
        return f"the experiment is already {phase}: the operator will ignore it"
    if control == "retry" and not finished:
        return f"the experiment is {phase}, not finished: the operator will ignore it"
    return f"the operator {_CONTROLS[control][1]} at its next tick"


def _cmd_control(args: argparse.Namespace) -> int:
    control: str = args.command
    annotation = _CONTROLS[control][0]
    api, namespace = _connect(args)
    try:
        current = kube.get_experiment(api, args.name, namespace)
        if control == "promote" and args.challenger:
            challengers = [c.get("name") for c in (current.get("spec") or {}).get("challengers") or []]
            if args.challenger not in challengers:
                raise ConsoleError(
                    f"{args.challenger!r} is not a challenger of modelexperiment {_reference(current)} "
                    f"(challengers: {', '.join(map(str, challengers)) or 'none'})"
                )
            applied = ((current.get("status") or {}).get("appliedControls") or {}).get("promote")
            if applied == args.challenger:
                raise ConsoleError(
                    f"{annotation}={args.challenger} was already acted on; omit --challenger "
                    "to promote the only or best live challenger with a new value"
                )
            value = args.challenger
        else:
            value = control_value()
        patched = kube.patch_experiment(
            api, args.name, namespace, {"metadata": {"annotations": {annotation: value}}}
        )
    finally:
        kube.close(api)
    if args.output == "json":
        _print_json(patched, sys.stdout)
    else:
        print(
            f"modelexperiment {_reference(patched)}: annotated {annotation}={value} "
            f"({_control_effect(control, patched)})"
        )
    return ExitCode.OK


def _cmd_pause(args: argparse.Namespace) -> int:
    paused: bool = args.command == "pause"
    api, namespace = _connect(args)
    try:
        current = kube.get_experiment(api, args.name, namespace)
        before = (current.get("spec") or {}).get("paused") is True
        patched = kube.patch_experiment(api, args.name, namespace, {"spec": {"paused": paused}})
    finally:
        kube.close(api)
    if args.output == "json":
        _print_json(patched, sys.stdout)
        return ExitCode.OK
    flag = "true" if paused else "false"
    if before == paused:
        effect = f"it already was {flag}; nothing changes"
    elif is_terminal(patched):
        effect = f"the experiment is {_phase(patched)}: the operator will ignore it"
    else:
        effect = f"the operator {'pauses' if paused else 'resumes'} at its next tick"
    print(f"modelexperiment {_reference(patched)}: set spec.paused={flag} ({effect})")
    return ExitCode.OK


# --- registration --------------------------------------------------------------------------------


def _add_connection(p: argparse.ArgumentParser, all_namespaces: bool = False) -> None:
    p.add_argument(
        "--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    p.add_argument("--context", default=None, help="kubeconfig context (default: the current one)")
    p.add_argument(
        "--namespace", "-n", default=None, help="namespace (default: the context's, else 'default')"
    )
    if all_namespaces:
        p.add_argument("--all-namespaces", "-A", action="store_true", help="every namespace")
    p.add_argument("--output", "-o", choices=["table", "json"], default="table", help="output format")


def register(sub: Any) -> None:
    """Add ``status``, ``list``, ``promote``, ``abort``, ``retry``, ``pause`` and ``resume``."""
    p = sub.add_parser("status", help="show a ModelExperiment: phase, step, weights, analysis")
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--watch", "-w", action="store_true", help="follow until a terminal phase (or Ctrl-C)"
    )
    p.add_argument(
        "--record",
        metavar="FILE",
        default=None,
        help="append a snapshot (JSON Lines) each time the status changes",
    )
    p.add_argument(
        "--interval", type=_positive_seconds, default=2.0, help="seconds between polls with --watch"
    )
    _add_connection(p)
    p.set_defaults(func=_run("status", _cmd_status))

    p = sub.add_parser("list", help="list ModelExperiments: phase, step, weights, age")
    _add_connection(p, all_namespaces=True)
    p.set_defaults(func=_run("list", _cmd_list))

    for control, (annotation, effect) in _CONTROLS.items():
        p = sub.add_parser(control, help=f"set {annotation} to a new value: the operator {effect}")
        p.add_argument("name", metavar="NAME")
        if control == "promote":
            p.add_argument(
                "--challenger",
                default=None,
                help="promote this challenger (default: the only live one, else the best estimate)",
            )
        _add_connection(p)
        p.set_defaults(func=_run(control, _cmd_control))

    for command, help_text in (
        ("pause", "set spec.paused=true: weights and phase freeze"),
        ("resume", "set spec.paused=false: the experiment goes on where it was"),
    ):
        p = sub.add_parser(command, help=help_text)
        p.add_argument("name", metavar="NAME")
        _add_connection(p)
        p.set_defaults(func=_run(command, _cmd_pause))
