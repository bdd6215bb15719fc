"""``modelrollout localenv up|down|env|build``; the lead's CLI calls :func:`register`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from modelrollout.devstack.controlplane import build, env
from modelrollout.devstack.controlplane.errors import LocalEnvError
from modelrollout.devstack.controlplane.paths import default_state_dir, source_root
from modelrollout.errors import ExitCode


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.dir).resolve() if args.dir else default_state_dir()


def cmd_up(args: argparse.Namespace) -> int:
    try:
        state = env.up(_state_dir(args), prometheus=not args.no_prometheus,
                       controller_manager=not args.no_controller_manager)
    except LocalEnvError as exc:
        _err(f"modelrollout localenv up: {exc}")
        return ExitCode.FAILED
    print(env.endpoints_of(state).exports())
    return ExitCode.OK


def cmd_down(args: argparse.Namespace) -> int:
    try:
        stopped = env.down(_state_dir(args))
    except LocalEnvError as exc:
        _err(f"modelrollout localenv down: {exc}")
        return ExitCode.FAILED
    _err("localenv: stopped" if stopped else "localenv: nothing was running")
    return ExitCode.OK


def cmd_env(args: argparse.Namespace) -> int:
    state_dir = _state_dir(args)
    state = env.read_state(state_dir)
    if state is None or not env.running(state):
        _err(f"modelrollout localenv env: no running environment in {state_dir}; "
             'start one with: eval "$(modelrollout localenv up)"')
        return ExitCode.FAILED
    if args.json:
        print(json.dumps(state, indent=2))
    else:
        print(env.endpoints_of(state).exports())
    return ExitCode.OK


def cmd_build(args: argparse.Namespace) -> int:
    try:
        binaries = build.build_all(with_controller_manager=not args.no_controller_manager, force=args.force,
                                   with_helm=not args.no_helm)
    except LocalEnvError as exc:
        _err(f"modelrollout localenv build: {exc}")
        return ExitCode.FAILED
    helm = None if args.no_helm else build.locate_helm()
    for path in (binaries.etcd, binaries.kube_apiserver, binaries.kube_controller_manager, helm):
        if path is not None:
            print(path)
    return ExitCode.OK


def cmd_image(args: argparse.Namespace) -> int:
    from modelrollout.devstack import image  # buildah and umoci only when asked for

    root = Path(args.source).resolve() if args.source else source_root()
    if root is None or not (root / "Dockerfile").is_file():
        _err("modelrollout localenv image: run it in the project's checkout (or pass --source)")
        return ExitCode.FAILED
    builder = image.ImageBuilder(root, progress=_err)
    try:
        bundle = builder.bundle()
    except LocalEnvError as exc:
        _err(f"modelrollout localenv image: {exc}")
        return ExitCode.FAILED
    info = bundle.info()
    summary = {"image": bundle.tag, "bundle": str(bundle.path),
               "rootfs_mb": round(info["rootfs_bytes"] / 1e6, 1),
               "compressed_mb": round(info["compressed_bytes"] / 1e6, 1),
               "seconds": builder.timings.seconds, "cached": builder.timings.cached}
    print(json.dumps(summary, indent=2))
    return ExitCode.OK


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``localenv`` with ``up``, ``down``, ``env`` and ``build`` (each sets ``func``)."""
    parser = subparsers.add_parser(
        "localenv",
        help="a local kube-apiserver, etcd and Prometheus for tests and the demo",
        description='Start with: eval "$(modelrollout localenv up)"; stop with: modelrollout localenv down.',
    )
    sub = parser.add_subparsers(dest="localenv_command", metavar="{up,down,env,build,image}")
    sub.required = True

    def with_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--dir", help="state folder (default: $MODELROLLOUT_LOCALENV_DIR, or .localenv/ "
                                     "in the checkout, or ~/.local/state/modelrollout/devstack/controlplane)")
        return p

    p_up = with_dir(sub.add_parser(
        "up", help="start in the background; print export lines for eval",
        description="Start etcd, kube-apiserver, kube-controller-manager and Prometheus in the background "
                    "and print KUBECONFIG, MODELROLLOUT_USER_KUBECONFIG and PROMETHEUS_URL export lines.",
    ))
    p_up.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus")
    p_up.add_argument("--no-controller-manager", action="store_true",
                      help="do not start kube-controller-manager (namespaces then never finish deleting)")
    p_up.set_defaults(func=cmd_up)

    p_down = with_dir(sub.add_parser("down", help="stop the running environment and delete its folder"))
    p_down.set_defaults(func=cmd_down)

    p_env = with_dir(sub.add_parser("env", help="print the export lines of the running environment again"))
    p_env.add_argument("--json", action="store_true", help="print the whole state (PIDs, ports, versions)")
    p_env.set_defaults(func=cmd_env)

    p_build = sub.add_parser("build", help="build etcd, kube-apiserver, kube-controller-manager and helm "
                                           "(cached)")
    p_build.add_argument("--force", action="store_true", help="rebuild even if cached")
    p_build.add_argument("--no-controller-manager", action="store_true",
                         help="skip kube-controller-manager")
    p_build.add_argument("--no-helm", action="store_true",
                         help="skip helm (only the tests of the Helm chart use it)")
    p_build.set_defaults(func=cmd_build)

    p_image = sub.add_parser(
        "image", help="build the operator's image without Docker (mmdebstrap, buildah; cached)",
        description="Build a Debian bookworm base with mmdebstrap, the top-level Dockerfile on it with "
                    "buildah, and unpack the image with umoci for runc, all cached under "
                    "~/.cache/modelrollout/image; print the image's tag, bundle and sizes as JSON.",
    )
    p_image.add_argument("--source", help="the checkout to build (default: this one)")
    p_image.set_defaults(func=cmd_image)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m modelrollout.devstack.controlplane.cli``), same commands."""
    parser = argparse.ArgumentParser(prog="modelrollout")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
