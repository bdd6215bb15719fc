"""Run the locally built helm (:func:`modelrollout.devstack.controlplane.build.locate_helm`) on a chart.

Used by the tests of ``charts/modelrollout``: :func:`template` renders the chart into its objects
(parsed YAML documents), :func:`lint` runs ``helm lint``, :func:`install` and :func:`uninstall`
act on the cluster of a kubeconfig (the local apiserver). helm gets its own config, cache and data
folders, so a user's repositories and plugins never change what it does.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from modelrollout.devstack.controlplane.errors import LocalEnvError


class HelmError(LocalEnvError):
    """helm exited with an error; the message carries its stderr."""


def _env(home: Path, kubeconfig: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_DATA_HOME=str(home / "data"),
    )
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return env


def run(helm: Path, args: Sequence[str], *, kubeconfig: Path | None = None,
        timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """``helm ARGS`` with private config/cache/data folders (and ``kubeconfig``, if given);
    raises :class:`HelmError` on failure."""
    with tempfile.TemporaryDirectory(prefix="modelrollout-helm-") as home:
        proc = subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=timeout,
                              check=False, env=_env(Path(home), kubeconfig))
    if proc.returncode != 0:
        raise HelmError(f"`helm {' '.join(args)}` failed with exit code {proc.returncode}:\n"
                        f"{proc.stderr.strip()}\n{proc.stdout.strip()}".rstrip())
    return proc


def _values_args(values: Mapping[str, Any] | None, folder: Path) -> list[str]:
    if not values:
        return []
    path = folder / "values.yaml"
    path.write_text(yaml.safe_dump(dict(values), sort_keys=False))
    return ["--values", str(path)]


def template(
    helm: Path,
    chart: Path,
    *,
    release: str = "modelrollout",
    namespace: str = "modelrollout",
    values: Mapping[str, Any] | None = None,
    include_crds: bool = False,
) -> list[dict[str, Any]]:
    """The objects ``helm template`` renders (empty documents dropped), in helm's order.

    ``values`` overrides the chart's values.yaml (written to a values file, so nested maps and
    lists keep their types).
    """
    with tempfile.TemporaryDirectory(prefix="modelrollout-values-") as folder:
        args = ["template", release, str(chart), "--namespace", namespace,
                *_values_args(values, Path(folder))]
        if include_crds:
            args.append("--include-crds")
        rendered = run(helm, args).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def lint(helm: Path, chart: Path, *, values: Mapping[str, Any] | None = None, strict: bool = True) -> str:
    """``helm lint [--strict]``'s output; raises :class:`HelmError` when the chart does not pass."""
    with tempfile.TemporaryDirectory(prefix="modelrollout-values-") as folder:
        args = ["lint", str(chart), *_values_args(values, Path(folder))]
        if strict:
            args.append("--strict")
        return run(helm, args).stdout


def install(
    helm: Path,
    chart: Path,
    *,
    release: str,
    namespace: str,
    kubeconfig: Path,
    values: Mapping[str, Any] | None = None,
) -> str:
    """``helm install`` into the cluster of ``kubeconfig`` (no waiting for pods); its output,
    with the chart's NOTES."""
    with tempfile.TemporaryDirectory(prefix="modelrollout-values-") as folder:
        args = ["install", release, str(chart), "--namespace", namespace,
                *_values_args(values, Path(folder))]
        return run(helm, args, kubeconfig=kubeconfig).stdout


def uninstall(helm: Path, *, release: str, namespace: str, kubeconfig: Path) -> str:
    """``helm uninstall``: deletes what the release created (CRDs are kept, as helm always does)."""
    return run(helm, ["uninstall", release, "--namespace", namespace], kubeconfig=kubeconfig).stdout


def version(helm: Path) -> str:
    """``helm version --short``, e.g. ``v3.22.0+g...``."""
    return run(helm, ["version", "--short"]).stdout.strip()
