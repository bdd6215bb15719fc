"""The ``modelrollout`` command (also installed as the kubectl plugin ``kubectl-modelrollout``).

The JSON printed with ``--output json`` is a contract: other tools parse it, so keys are only ever
added, never renamed. Without ``--output json`` each command prints a short readable table. Bad
arguments give one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from modelrollout.errors import ExitCode, InvalidInputError, ModelRolloutError


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, as the CLI contract promises.

    It also reads a value that starts like a negative number (``-1/100``, ``-5,1,1``, ``-.5``) as
    a value. argparse only recognises ``-1`` and ``-1.5`` as numbers and took ``--control -1/100``
    for an option, failing with "expected one argument", whereas ``--control=-1/100`` reached the
    clear message that a count must be non-negative. No option of this CLI starts with a digit, so
    nothing is shadowed. argparse has no public switch for this: ``_negative_number_matcher`` is the
    pattern it consults (the same in Python 3.6 to 3.13); ``test_cli`` runs both spellings.
    """

    _NEGATIVE_LIKE = re.compile(r"^-\.?\d")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = self._NEGATIVE_LIKE

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message}\n")


def _json_safe(value: Any) -> Any:
    """Replace NaN and infinities by None so the output is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _print_result(data: dict[str, Any], output: str, title: str) -> None:
    if output == "json":
        print(json.dumps(_json_safe(data), indent=2, sort_keys=True))
        return
    print(title)
    width = max(len(k) for k in data)
    for key, value in data.items():
        if isinstance(value, float):
            shown = f"{value:.6g}"
        elif isinstance(value, list) and all(isinstance(v, float) for v in value):
            shown = "[" + ", ".join(f"{v:.6g}" for v in value) + "]"
        elif isinstance(value, dict) or value is None:
            continue
        else:
            shown = str(value)
        print(f"  {key:<{width}}  {shown}")


def _add_output(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", "-o", choices=["table", "json"], default="table", help="output format")


# --- plan ----------------------------------------------------------------------------------------


def _cmd_plan(args: argparse.Namespace) -> int:
    from modelrollout.cli import planning

    result = planning.plan_from_args(
        metric=args.metric,
        baseline=args.baseline,
        baseline_mean=args.baseline_mean,
        baseline_sd=args.baseline_sd,
        mde=args.mde,
        mde_type=args.mde_type,
        alpha=args.alpha,
        power=args.power,
        challengers=args.challengers,
        allocation=args.allocation,
        daily_traffic=args.daily_traffic,
    )
    _print_result(result, args.output, "Sample size plan")
    return ExitCode.OK


def _register_plan(sub: Any) -> None:
    p = sub.add_parser("plan", help="planned sample size per variant and expected duration")
    p.add_argument("--metric", choices=["proportion", "mean"], default="proportion")
    p.add_argument("--baseline", type=float, help="champion's rate (proportion metric)")
    p.add_argument("--baseline-mean", type=float, help="champion's mean (mean metric)")
    p.add_argument("--baseline-sd", type=float, help="champion's standard deviation (mean metric)")
    p.add_argument("--mde", type=float, required=True, help="minimum detectable effect")
    p.add_argument("--mde-type", choices=["relative", "absolute"], default="relative")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--power", type=float, default=0.8)
    p.add_argument("--challengers", type=int, default=1, help="number of challengers (Bonferroni)")
    p.add_argument(
        "--allocation",
        type=float,
        default=None,
        help="share of traffic sent to each challenger (default: an equal split)",
    )
    p.add_argument("--daily-traffic", type=float, default=None, help="requests (units) per day")
    _add_output(p)
    p.set_defaults(func=_cmd_plan)


# --- analyze -------------------------------------------------------------------------------------


def _read_json_file(option: str, path: str) -> Any:
    """The JSON document at ``path`` (``-``: standard input), or a clear error."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"{option} {path}: cannot read it ({exc.strerror or exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{option} {path}: not JSON ({exc.msg} at line {exc.lineno})") from None


def _print_segments(doc: dict[str, Any]) -> None:
    def table(title: str, family: dict[str, Any]) -> None:
        print(f"{title} ({family['correction']}, alpha {family['alpha']:g}, "
              f"{family['level_per_segment']:.3g} per segment)")
        print(f"  {'segment':<16} {'champion':>9} {'challenger':>10} {'difference [interval]':>30} "
              f"{'p':>9}  verdict")
        for s in family["segments"]:
            if not s["evaluated"]:
                print(f"  {s['name']:<16} {'not evaluated: an arm has no trial yet':>60}")
                continue
            low, high = s["interval"]
            verdict = "HARMED" if s["harmed"] else ("exploratory" if s["exploratory"] else "not harmed")
            print(f"  {s['name']:<16} {s['champion_estimate']:>9.4g} {s['challenger_estimate']:>10.4g} "
                  f"{s['difference']:>+11.4g} [{low:+.4g}, {high:+.4g}]".ljust(71)
                  + f" {s['p_value']:>9.3g}  {verdict}")

    table("Protected segments", doc)
    if doc.get("exploratory"):
        folded = doc["exploratory"]["folded"]
        table("Exploratory view (no decision uses it)", doc["exploratory"])
        if folded:
            print(f"  other: {', '.join(folded)}")
    if doc.get("srm"):
        mismatched = doc["srm"]["mismatched"]
        split = f"mismatch in {', '.join(mismatched)}" if mismatched else "as configured"
        print(f"Sample ratio per segment: {split}")
    print(f"Decision: {doc['decision']}" + (f" ({', '.join(doc['harmed'])})" if doc["harmed"] else ""))


def _cmd_segments(args: argparse.Namespace) -> int:
    from modelrollout.cli import planning

    doc = planning.segments_from_document(
        _read_json_file("--segments", args.segments),
        alpha=args.alpha,
        direction=args.direction,
        correction=args.correction,
        planned_n=args.planned_n,
    )
    if args.output == "json":
        print(json.dumps(_json_safe(doc), indent=2, sort_keys=True))
    else:
        _print_segments(doc)
    return ExitCode.OK


def _cmd_analyze(args: argparse.Namespace) -> int:
    from modelrollout.cli import planning

    if args.segments is not None:
        if args.control is not None or args.treatment is not None:
            raise InvalidInputError("give either --segments FILE or --control and --treatment, not both")
        return _cmd_segments(args)
    if args.control is None or args.treatment is None:
        raise InvalidInputError("give --control and --treatment (or --segments FILE)")
    result = planning.analyze_from_args(
        metric=args.metric,
        control=args.control,
        treatment=args.treatment,
        test=args.test,
        alpha=args.alpha,
        direction=args.direction,
        planned_n=args.planned_n,
        practical_threshold=args.practical_threshold,
    )
    _print_result(result, args.output, f"Analysis ({result['method']})")
    return ExitCode.OK


def _register_analyze(sub: Any) -> None:
    p = sub.add_parser("analyze", help="compare a challenger with the champion from aggregates")
    p.add_argument("--metric", choices=["proportion", "mean"], default="proportion")
    p.add_argument("--control", help="successes/trials (proportion) or n,mean,sd (mean)")
    p.add_argument("--treatment", help="successes/trials (proportion) or n,mean,sd (mean)")
    p.add_argument(
        "--segments",
        metavar="FILE",
        help="per-segment counts of a proportion (JSON, '-' for stdin; shape in docs/segments.md): "
        "always-valid harm tests of each protected segment, corrected for the family",
    )
    p.add_argument(
        "--correction",
        choices=["bonferroni", "e-bh"],
        default="bonferroni",
        help="with --segments: family-wise error (bonferroni) or false discovery rate (e-bh)",
    )
    p.add_argument(
        "--test",
        choices=["z", "chi2", "chi2-yates", "welch", "sequential", "bayesian"],
        default=None,
        help="default: z for proportions, welch for means",
    )
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--direction", choices=["increase", "decrease"], default="increase")
    p.add_argument(
        "--planned-n",
        type=float,
        default=None,
        help="sequential only: planned n per variant the mixture is tuned to (default: current n)",
    )
    p.add_argument(
        "--practical-threshold",
        type=float,
        default=None,
        help="smallest relative lift worth shipping (decision needs the CI beyond it)",
    )
    _add_output(p)
    p.set_defaults(func=_cmd_analyze)


# --- simulate ------------------------------------------------------------------------------------


def _cmd_simulate(args: argparse.Namespace) -> int:
    from modelrollout.cli import planning

    def seconds(option: str, text: str | None) -> float | None:
        return None if text is None else _seconds(option, text)

    time = planning.TimeOptions(
        samples_per_hour=args.samples_per_hour,
        interval=_seconds("--interval", args.interval),
        max_duration=_seconds("--max-duration", args.max_duration),
        min_duration=_seconds("--min-duration", args.min_duration),
        lift_decay_to=args.lift_decay_to,
        lift_half_life=seconds("--lift-half-life", args.lift_half_life),
        novelty=args.novelty,
        novelty_window=_seconds("--novelty-window", args.novelty_window),
        novelty_alpha=args.novelty_alpha,
    )
    result = planning.simulate_from_args(
        metric=args.metric,
        baseline=args.baseline,
        lift=args.lift,
        mde=args.mde,
        mde_type=args.mde_type,
        method=args.method,
        look_every=args.look_every,
        max_n_per_variant=args.max_n_per_variant,
        runs=args.runs,
        seed=args.seed,
        alpha=args.alpha,
        power=args.power,
        time=time,
    )
    clock = " on a clock" if time.on_a_clock else ""
    _print_result(result, args.output, f"Simulation ({args.method}{clock}, {args.runs} runs)")
    return ExitCode.OK


def _register_simulate(sub: Any) -> None:
    p = sub.add_parser("simulate", help="Monte Carlo of whole experiments looked at every N samples")
    p.add_argument("--metric", choices=["proportion"], default="proportion")
    p.add_argument("--baseline", type=float, required=True)
    p.add_argument("--lift", type=float, required=True, help="true effect (relative unless absolute)")
    p.add_argument("--mde", type=float, required=True)
    p.add_argument("--mde-type", choices=["relative", "absolute"], default="relative")
    p.add_argument(
        "--method",
        choices=["sequential", "group-sequential", "fixed", "naive"],
        default="sequential",
    )
    p.add_argument(
        "--look-every", type=int, default=None, help="samples per variant between looks (not on a clock)"
    )
    p.add_argument("--max-n-per-variant", type=int, default=None, help="not on a clock")
    p.add_argument("--runs", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--power", type=float, default=0.8)
    clock = p.add_argument_group(
        "on a clock",
        "a look every --interval, an even split, decided as the operator does (sequential test, "
        "minDuration, novelty check); needs --samples-per-hour",
    )
    clock.add_argument("--samples-per-hour", type=float, default=None, help="traffic per variant per hour")
    clock.add_argument("--interval", default="1h", help="time between looks (default 1h)")
    clock.add_argument("--max-duration", default="14d", help="analysis.maxDuration (default 14d)")
    clock.add_argument("--min-duration", default="0s", help="analysis.minDuration (default none)")
    clock.add_argument(
        "--lift-decay-to",
        type=float,
        default=None,
        help="the lift decays from --lift to this (a novelty effect); with --lift-half-life",
    )
    clock.add_argument("--lift-half-life", default=None, help="half-life of the decay (a duration, e.g. 1d)")
    clock.add_argument("--novelty", action="store_true", help="analysis.novelty.enabled")
    clock.add_argument("--novelty-window", default="1d", help="analysis.novelty.window (default 1d)")
    clock.add_argument(
        "--novelty-alpha", type=float, default=0.05, help="analysis.novelty.alpha (default 0.05)"
    )
    _add_output(p)
    p.set_defaults(func=_cmd_simulate)


# --- run ---------------------------------------------------------------------------------------


def _seconds(option: str, text: str) -> float:
    from modelrollout.api.types import parse_duration

    try:
        return parse_duration(text).total_seconds()
    except InvalidInputError as exc:
        raise InvalidInputError(f"{option}: {exc}") from None


def _lease_config(args: argparse.Namespace) -> Any:
    from modelrollout.controller import leader

    return leader.LeaseConfig(
        name=args.lease_name,
        namespace=args.lease_namespace or leader.default_namespace(),
        identity=leader.default_identity(),
        lease_duration=_seconds("--lease-duration", args.lease_duration),
        renew_deadline=_seconds("--renew-deadline", args.renew_deadline),
        retry_period=_seconds("--retry-period", args.retry_period),
    )


def _cmd_run(args: argparse.Namespace) -> int:
    import kopf

    from modelrollout.controller.config import OperatorConfig
    from modelrollout.controller.handlers import register
    from modelrollout.controller.runtime import MEMO_CAN_WRITE, MEMO_CONFIG, MEMO_METRICS
    from modelrollout.controller.telemetry import OperatorMetrics

    namespaces = args.namespace or []
    if not namespaces and not args.all_namespaces:
        raise InvalidInputError("give --namespace NS (repeatable) or --all-namespaces")
    if args.no_cluster_scan and args.all_namespaces:
        raise InvalidInputError("--no-cluster-scan needs the namespaces named: use --namespace NS")
    config = OperatorConfig.from_environment(
        cluster_scan=not args.no_cluster_scan,
        metrics_port=args.metrics_port,
        metrics_address=args.metrics_address,
        max_workers=args.workers,
    )
    lease = _lease_config(args) if args.leader_elect else None
    registry = kopf.OperatorRegistry()
    register(registry, config)
    log_format = kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL
    kopf.configure(verbose=args.verbose, log_format=log_format, log_refkey="experiment")
    telemetry = OperatorMetrics()
    if config.metrics_port:
        # Before kopf starts: a port that cannot be bound is a bad flag, said at once (exit 2).
        telemetry.serve(config.metrics_port, config.metrics_address)

    def operate(can_write: Any = None) -> None:
        memo: dict[str, Any] = {MEMO_CONFIG: config, MEMO_METRICS: telemetry}
        if can_write is not None:
            memo[MEMO_CAN_WRITE] = can_write
        kopf.run(
            registry=registry,
            clusterwide=args.all_namespaces,
            namespaces=namespaces,
            standalone=True,
            liveness_endpoint=args.liveness,
            memo=kopf.Memo(memo),
        )

    try:
        if lease is None:
            operate()
            return ExitCode.OK
        from modelrollout.controller import leader
        from modelrollout.controller.runtime import Clients

        return leader.run_elected(
            lease,
            lambda guard, _stop: operate(guard.can_write),
            api=Clients.from_environment().api,
            liveness=args.liveness,
        )
    finally:
        telemetry.close()


def _register_run(sub: Any) -> None:
    p = sub.add_parser("run", help="run the operator (kopf) against the current kubeconfig")
    p.add_argument("--namespace", "-n", action="append", help="namespace to watch (repeatable)")
    p.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    p.add_argument("--liveness", default=None, help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=8081,
        metavar="PORT",
        help="serve the operator's own Prometheus metrics on http://ADDRESS:PORT/metrics (0: none; "
        "default 8081)",
    )
    p.add_argument(
        "--metrics-address",
        default="0.0.0.0",
        metavar="ADDRESS",
        help="the address /metrics listens on (default 0.0.0.0)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=32,
        metavar="N",
        help="threads that run ticks at once (default 32); one Prometheus address may hold three "
        "quarters of them, so that a slow one does not delay the experiments of the others",
    )
    p.add_argument(
        "--no-cluster-scan",
        action="store_true",
        help="do not list and watch CRDs and namespaces (kopf's scanning): for a role without those "
        "cluster-scope rights; needs --namespace",
    )
    p.add_argument("--verbose", action="store_true")
    p.add_argument(
        "--log-format",
        choices=["json", "text"],
        default="json",
        help="json: one object per line with the experiment's reference and the tick's fields",
    )
    election = p.add_argument_group(
        "leader election",
        "for more than one replica: only the holder of a coordination.k8s.io/v1 Lease runs the "
        "handlers; the others wait. The identity is $POD_NAME, else <hostname>_<pid>. A leader that "
        f"cannot renew the Lease before the renew deadline writes nothing more and exits with code "
        f"{int(ExitCode.LEASE_LOST)}.",
    )
    election.add_argument("--leader-elect", action="store_true", help="hold the Lease to run the handlers")
    election.add_argument("--lease-name", default="modelrollout-leader", help="default: modelrollout-leader")
    election.add_argument(
        "--lease-namespace",
        default=None,
        help="default: $POD_NAMESPACE, else the pod's own namespace, else default",
    )
    election.add_argument("--lease-duration", default="15s",
                          help="how long a standby waits after the last renewal it saw (default 15s)")
    election.add_argument("--renew-deadline", default="10s",
                          help="how long the leader keeps trying to renew before it stops (default 10s)")
    election.add_argument("--retry-period", default="2s",
                          help="between two renewals, or two attempts of a standby (default 2s)")
    p.set_defaults(func=_cmd_run)


# --- main ----------------------------------------------------------------------------------------

#: Modules whose ``register(subparsers)`` adds the commands for people: status, list and the manual
#: controls; report; demo.
PEOPLE_COMMANDS = ("modelrollout.console.cli", "modelrollout.report.cli", "modelrollout.devstack.demo.cli")

_REGISTRARS: list[Callable[[Any], None]] = [
    _register_plan,
    _register_analyze,
    _register_simulate,
    _register_run,
]


def _installed(module_name: str) -> bool:
    """Whether ``module_name`` can be imported (the dev stack is not in the wheel)."""
    try:
        return importlib.util.find_spec(module_name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="modelrollout",
        description="Progressive delivery of ML models, decided by sound statistics.",
    )
    from modelrollout import __version__

    parser.add_argument("--version", action="version", version=f"modelrollout {__version__}")
    sub: Any = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for register in _REGISTRARS:
        register(sub)
    from modelrollout.api.cli import register as register_crd

    register_crd(sub)
    for module_name in PEOPLE_COMMANDS:
        # Registered when the module is installed; an import error inside one is not hidden.
        if _installed(module_name):
            importlib.import_module(module_name).register(sub)
    try:
        from modelrollout.devstack.controlplane.cli import register as register_localenv
    except ImportError:  # the local control plane module is optional in a stripped install
        pass
    else:
        register_localenv(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except ModelRolloutError as exc:
        # The one place where an error becomes an exit: its class says which (errors.ExitCode).
        print(f"modelrollout {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"modelrollout {args.command}: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
