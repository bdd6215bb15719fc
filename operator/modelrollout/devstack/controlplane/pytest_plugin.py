"""Session-scoped pytest fixtures on a real kube-apiserver, etcd and Prometheus.

Enable with ``pytest_plugins = ["modelrollout.devstack.controlplane.pytest_plugin"]`` in a conftest.

When the binaries, Prometheus or the upstream CRDs are missing, a fixture *fails* the test with
a message that says what is missing and how to get it if ``$CI`` is set, and skips it (with the
same message) otherwise. A component that does not start is always an error.

Fixtures:

``localenv``            the running :class:`~modelrollout.devstack.controlplane.env.LocalEnv` (session)
``helm_binary``         the path of the locally built helm (session; needs no apiserver)
``localenv_prometheus`` its Prometheus, started on first use (session)
``prometheus``          the same Prometheus, with every scrape target removed after the test
``k8s_admin``           a ``kubernetes.client.ApiClient`` as the admin (``system:masters``)
``k8s_user``            a ``kubernetes.client.ApiClient`` as the unprivileged user
``namespace``           a fresh namespace for this test, deleted afterwards
``admin_kubeconfig_env``  sets ``$KUBECONFIG`` (and ``$MODELROLLOUT_USER_KUBECONFIG``) for this test
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from modelrollout.devstack.controlplane import build
from modelrollout.devstack.controlplane.env import LocalEnv
from modelrollout.devstack.controlplane.errors import MissingPrerequisiteError
from modelrollout.devstack.controlplane.kube import api_client
from modelrollout.devstack.controlplane.prometheus import Prometheus


def in_ci() -> bool:
    """Whether ``$CI`` is set to something other than empty, 0 or false."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(message: str) -> NoReturn:
    """Fail (in CI) or skip (elsewhere) because a prerequisite is missing."""
    if in_ci():
        pytest.fail(f"local environment unavailable: {message}", pytrace=False)
    pytest.skip(f"local environment unavailable: {message}")


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@pytest.fixture(scope="session")
def localenv_binaries() -> build.Binaries:
    found = build.locate()
    if found is None:
        unavailable(build.missing_message())
    return found


@pytest.fixture(scope="session")
def helm_binary() -> Path:
    found = build.locate_helm()
    if found is None:
        unavailable(build.helm_missing_message())
    return found


@pytest.fixture(scope="session")
def localenv(localenv_binaries: build.Binaries,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEnv]:
    workdir = tmp_path_factory.mktemp("localenv")
    env = LocalEnv(workdir, binaries=localenv_binaries, progress=_progress)
    try:
        env.start()
    except MissingPrerequisiteError as exc:
        unavailable(str(exc))
    try:
        yield env
    finally:  # the processes are also stopped by atexit, and die with pytest (PR_SET_PDEATHSIG)
        env.stop()
        # Keep the logs (pytest keeps the last few basetemps); drop the bulky data.
        for data in (workdir / "etcd-data", workdir / "prometheus" / "data"):
            shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session")
def localenv_prometheus(localenv: LocalEnv) -> Prometheus:
    try:
        return localenv.start_prometheus()
    except MissingPrerequisiteError as exc:
        unavailable(str(exc))


@pytest.fixture
def prometheus(localenv_prometheus: Prometheus) -> Iterator[Prometheus]:
    """The session's Prometheus; the targets this test sets are removed after it."""
    yield localenv_prometheus
    localenv_prometheus.clear_targets()


@pytest.fixture(scope="session")
def k8s_admin(localenv: LocalEnv) -> Iterator[Any]:
    client = api_client(localenv.admin_kubeconfig)
    yield client
    client.close()


@pytest.fixture(scope="session")
def k8s_user(localenv: LocalEnv) -> Iterator[Any]:
    client = api_client(localenv.user_kubeconfig)
    yield client
    client.close()


def _namespace_name(nodeid: str) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", nodeid.rsplit("::", 1)[-1].lower()).strip("-")
    return f"t-{base[:48].strip('-')}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(k8s_admin: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new namespace named after the test; deleted (without waiting) afterwards."""
    from kubernetes import client

    core = client.CoreV1Api(k8s_admin)
    name = _namespace_name(request.node.nodeid)
    core.create_namespace(client.V1Namespace(
        metadata=client.V1ObjectMeta(name=name, labels={"modelrollout.io/test": "true"})))
    yield name
    try:
        core.delete_namespace(name)
    except client.ApiException as exc:
        if exc.status != 404:
            raise


@pytest.fixture
def admin_kubeconfig_env(localenv: LocalEnv, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("KUBECONFIG", str(localenv.admin_kubeconfig))
    monkeypatch.setenv("MODELROLLOUT_USER_KUBECONFIG", str(localenv.user_kubeconfig))
    return str(localenv.admin_kubeconfig)
