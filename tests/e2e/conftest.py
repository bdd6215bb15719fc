"""Fixtures of the e2e tier: a World (namespace, simulated models, mesh, load, operator process)
on the session's real kube-apiserver and Prometheus."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelrollout.devstack.controlplane.env import LocalEnv
from modelrollout.devstack.controlplane.prometheus import Prometheus
from modelrollout.devstack.sim.world import World


@pytest.fixture
def world(
    localenv: LocalEnv, prometheus: Prometheus, k8s_admin: Any, namespace: str, tmp_path: Path
) -> Iterator[World]:
    with World(localenv, prometheus, k8s_admin, namespace, tmp_path) as w:
        yield w
