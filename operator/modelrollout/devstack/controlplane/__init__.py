"""A local Kubernetes control plane and Prometheus for tests and the demo.

kube-apiserver, kube-controller-manager and etcd are built from their Go modules (see
``tools/kubebin`` and ``tools/etcdbin``) and cached by version; Prometheus is Debian's package.
Everything listens on loopback ports and is stopped by PID.
"""

from __future__ import annotations

from modelrollout.devstack.controlplane.build import Binaries, build_all, locate
from modelrollout.devstack.controlplane.env import Endpoints, LocalEnv, down, read_state, up
from modelrollout.devstack.controlplane.errors import (
    BuildError,
    ComponentError,
    LocalEnvError,
    MissingPrerequisiteError,
)
from modelrollout.devstack.controlplane.prometheus import Prometheus

__all__ = [
    "Binaries",
    "BuildError",
    "ComponentError",
    "Endpoints",
    "LocalEnv",
    "LocalEnvError",
    "MissingPrerequisiteError",
    "Prometheus",
    "build_all",
    "down",
    "locate",
    "read_state",
    "up",
]
