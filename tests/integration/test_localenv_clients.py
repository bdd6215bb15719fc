"""Watch, server-side apply and merge patch against the real apiserver: Python client and kopf."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import kopf
import pytest
from kopf.testing import KopfRunner
from kubernetes import client, watch

from modelrollout.devstack.controlplane import kube
from modelrollout.devstack.controlplane.env import LocalEnv

pytestmark = pytest.mark.integration

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"


def _eventually(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_watch_server_side_apply_and_merge_patch_with_the_python_client(
        k8s_admin: Any, namespace: str) -> None:
    core: Any = client.CoreV1Api(k8s_admin)
    since = core.list_namespaced_config_map(namespace).metadata.resource_version

    applied = core.patch_namespaced_config_map(
        "weights", namespace,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "weights"},
         "data": {"v6": "90", "v7": "10"}},
        field_manager="modelrollout-test", _content_type=APPLY,
    )
    assert applied.data == {"v6": "90", "v7": "10"}
    managers = {m.manager: m.operation for m in applied.metadata.managed_fields}
    assert managers == {"modelrollout-test": "Apply"}

    # A second manager that applies a field owned by the first one conflicts (409) unless forced.
    with pytest.raises(client.ApiException) as conflict:
        core.patch_namespaced_config_map(
            "weights", namespace, {"apiVersion": "v1", "kind": "ConfigMap",
                                   "metadata": {"name": "weights"}, "data": {"v7": "25"}},
            field_manager="someone-else", _content_type=APPLY,
        )
    assert conflict.value.status == 409

    merged = core.patch_namespaced_config_map(
        "weights", namespace, {"data": {"v6": "75", "v7": "25"}, "metadata": {"labels": {"step": "1"}}},
        _content_type=MERGE,
    )
    assert merged.data == {"v6": "75", "v7": "25"}
    assert merged.metadata.labels == {"step": "1"}

    seen: list[tuple[str, dict[str, str]]] = []
    watch_type: Any = watch.Watch
    stream = watch_type()
    for event in stream.stream(core.list_namespaced_config_map, namespace, resource_version=since,
                               timeout_seconds=10):
        obj = event["object"]
        if obj.metadata.name == "weights":
            seen.append((event["type"], dict(obj.data or {})))
        if len(seen) == 2:
            stream.stop()
    assert seen == [("ADDED", {"v6": "90", "v7": "10"}), ("MODIFIED", {"v6": "75", "v7": "25"})]


def test_kopf_watches_patches_and_applies(localenv: LocalEnv, k8s_admin: Any, namespace: str) -> None:
    registry = kopf.OperatorRegistry()
    ca = localenv.workdir / "pki" / "ca.crt"
    updates: list[list[int]] = []
    lock = threading.Lock()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=localenv.server, ca_path=str(ca), token=localenv.tokens.admin,
                                   default_namespace=namespace)

    @kopf.on.create("networking.istio.io", "v1", "virtualservices", registry=registry)
    def created(name: str, patch: kopf.Patch, **_: Any) -> None:
        # kopf sends this as a merge patch.
        patch.metadata.setdefault("annotations", {})["modelrollout.io/seen"] = "yes"
        # Server-side apply from inside a handler, with the Python client.
        api = kube.api_client(localenv.admin_kubeconfig)
        try:
            handler_api: Any = client.CustomObjectsApi(api)
            handler_api.patch_namespaced_custom_object(
                "networking.istio.io", "v1", namespace, "virtualservices", name,
                {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                 "metadata": {"name": name, "labels": {"modelrollout.io/managed": "true"}}},
                field_manager="modelrollout-kopf-test", _content_type=APPLY,
            )
        finally:
            api.close()

    @kopf.on.update("networking.istio.io", "v1", "virtualservices", field="spec.http", registry=registry)
    def weights_changed(new: Any, **_: Any) -> None:
        with lock:
            updates.append([r["weight"] for r in new[0]["route"]])

    settings = kopf.OperatorSettings()
    settings.watching.server_timeout = 10
    settings.posting.enabled = False
    custom: Any = client.CustomObjectsApi(k8s_admin)
    vs_api = ("networking.istio.io", "v1", namespace, "virtualservices")

    def read() -> dict[str, Any]:
        result: dict[str, Any] = custom.get_namespaced_custom_object(*vs_api, "ranker")
        return result

    with KopfRunner(["run", "--standalone", f"--namespace={namespace}"], registry=registry,
                    settings=settings, timeout=30) as runner:
        custom.create_namespaced_custom_object(*vs_api, {
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "ranker"},
            "spec": {"hosts": ["ranker"], "http": [{"route": [
                {"destination": {"host": "v6"}, "weight": 100},
                {"destination": {"host": "v7"}, "weight": 0},
            ]}]},
        })
        _eventually(lambda: read()["metadata"].get("annotations", {}).get("modelrollout.io/seen") == "yes")
        assert read()["metadata"]["labels"] == {"modelrollout.io/managed": "true"}

        custom.patch_namespaced_custom_object(*vs_api, "ranker", {"spec": {"http": [{"route": [
            {"destination": {"host": "v6"}, "weight": 90},
            {"destination": {"host": "v7"}, "weight": 10},
        ]}]}}, _content_type=MERGE)

        def saw_update() -> bool:
            with lock:
                return [90, 10] in updates

        _eventually(saw_update)
    assert runner.exception is None
    assert runner.exit_code == 0
