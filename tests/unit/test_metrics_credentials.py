"""Tests of modelrollout.metrics.credentials for what a real apiserver cannot be made to return.

A Secret, a missing one, a bad token, a CA in a ConfigMap and a 403 are read from the real
apiserver in ``tests/integration/test_metrics_prometheus.py``.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes import client

from modelrollout.api.observations import SpecProblem, Unknown
from modelrollout.api.spec import Prometheus
from modelrollout.devstack.controlplane.procs import free_port
from modelrollout.metrics import Credentials, read_credentials

pytestmark = pytest.mark.unit

REF = Prometheus.model_validate(
    {"address": "http://p:9090", "bearerTokenSecretRef": {"name": "r", "key": "t"}})


class FakeCore:
    """Answers read_namespaced_secret with a fixed object (no network)."""

    def __init__(self, data: dict[str, str]) -> None:
        self.data = data

    def read_namespaced_secret(self, name: str, namespace: str) -> Any:
        return SimpleNamespace(data=self.data)


def test_invalid_base64_is_a_spec_error() -> None:  # the apiserver never returns it
    assert read_credentials(FakeCore({"t": "%%%"}), "shop", REF) == [
        SpecProblem("spec.metrics.prometheus.bearerTokenSecretRef",
                  "the key t of Secret shop/r is not valid base64")]


def test_a_token_that_is_not_utf8_is_a_spec_error() -> None:
    found = read_credentials(FakeCore({"t": "/w=="}), "shop", REF)
    assert isinstance(found, list)
    assert "not UTF-8" in found[0].message


def test_nothing_referenced_reads_nothing() -> None:
    bare = Prometheus.model_validate({"address": "http://p:9090"})
    assert read_credentials(object(), "shop", bare) == Credentials()


def test_an_unreachable_apiserver_is_unknown() -> None:
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{free_port()}"
    configuration.retries = False
    api = client.ApiClient(configuration)
    try:
        found = read_credentials(client.CoreV1Api(api), "shop", REF)
    finally:
        api.close()
    assert isinstance(found, Unknown)
    assert found.reason.startswith(
        "could not read Secret shop/r for spec.metrics.prometheus.bearerTokenSecretRef: ")
