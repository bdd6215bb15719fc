"""The local kube-apiserver is real: version, upstream CRD schemas and CEL, RBAC, controllers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelrollout.devstack.controlplane import upstream
from modelrollout.devstack.controlplane.env import LocalEnv

pytestmark = pytest.mark.integration

ISTIO = ("networking.istio.io", "v1", "virtualservices")
HTTPROUTE = ("gateway.networking.k8s.io", "v1", "httproutes")


def virtual_service(name: str, **http: Any) -> dict[str, Any]:
    route = {
        "route": [
            {"destination": {"host": "ranker-v6"}, "weight": 90},
            {"destination": {"host": "ranker-v7"}, "weight": 10},
        ],
        **http,
    }
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name},
        "spec": {"hosts": ["ranker"], "http": [{"name": "primary", **route}]},
    }


def http_route(name: str, path: str = "/predict", weight: int = 10) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {
            "parentRefs": [{"name": "edge"}],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": path}}],
                "backendRefs": [
                    {"name": "ranker-v6", "port": 8080, "weight": 100 - weight},
                    {"name": "ranker-v7", "port": 8080, "weight": weight},
                ],
            }],
        },
    }


def create(api: Any, kind: tuple[str, str, str], namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    group, version, plural = kind
    custom: Any = client.CustomObjectsApi(api)
    result: dict[str, Any] = custom.create_namespaced_custom_object(group, version, namespace, plural, body)
    return result


def rejection(call: Callable[[], object]) -> str:
    with pytest.raises(ApiException) as info:
        call()
    assert info.value.status == 422, info.value.body
    return str(info.value.body)


def test_version_tells_the_truth(k8s_admin: Any, localenv: LocalEnv) -> None:
    info = client.VersionApi(k8s_admin).get_code()
    version = localenv.binaries.versions["kubernetes"] if localenv.binaries else ""
    assert info.git_version == version
    assert (info.major, info.minor) == tuple(version.lstrip("v").split(".")[:2])
    assert info.git_tree_state == "archive"
    assert info.build_date.startswith("20")


def test_upstream_crds_are_the_pinned_ones(localenv: LocalEnv) -> None:
    folder = upstream.locate()
    assert upstream.verify(folder) == []
    assert "virtualservices.networking.istio.io" in localenv.crds
    assert "httproutes.gateway.networking.k8s.io" in localenv.crds


def test_valid_virtual_service_is_accepted(k8s_admin: Any, namespace: str) -> None:
    created = create(k8s_admin, ISTIO, namespace, virtual_service("ranker", timeout="2s"))
    weights = [r["weight"] for r in created["spec"]["http"][0]["route"]]
    assert weights == [90, 10]


def test_virtual_service_schema_rejects_a_string_weight(k8s_admin: Any, namespace: str) -> None:
    body = virtual_service("bad-weight")
    body["spec"]["http"][0]["route"][1]["weight"] = "ten"
    message = rejection(lambda: create(k8s_admin, ISTIO, namespace, body))
    assert "spec.http[0].route[1].weight" in message
    assert "must be of type integer" in message


def test_virtual_service_cel_rejects_a_tiny_timeout(k8s_admin: Any, namespace: str) -> None:
    message = rejection(lambda: create(k8s_admin, ISTIO, namespace, virtual_service("bad", timeout="1us")))
    assert "spec.http[0].timeout" in message
    assert "must be a valid duration greater than 1ms" in message


def test_valid_http_route_is_accepted(k8s_admin: Any, namespace: str) -> None:
    created = create(k8s_admin, HTTPROUTE, namespace, http_route("ranker"))
    assert [b["weight"] for b in created["spec"]["rules"][0]["backendRefs"]] == [90, 10]


def test_http_route_cel_rejects_a_relative_path(k8s_admin: Any, namespace: str) -> None:
    message = rejection(lambda: create(k8s_admin, HTTPROUTE, namespace, http_route("bad", path="predict")))
    assert "spec.rules[0].matches[0].path" in message
    assert "must be an absolute path" in message


def test_http_route_schema_rejects_a_weight_too_large(k8s_admin: Any, namespace: str) -> None:
    body = http_route("too-heavy", weight=10)
    body["spec"]["rules"][0]["backendRefs"][1]["weight"] = 2_000_000
    message = rejection(lambda: create(k8s_admin, HTTPROUTE, namespace, body))
    assert "spec.rules[0].backendRefs[1].weight" in message
    assert "less than or equal to 1000000" in message


def _eventually(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


def test_rbac_denies_the_unprivileged_user_until_a_role_grants_it(
        k8s_admin: Any, k8s_user: Any, namespace: str) -> None:
    user_core = client.CoreV1Api(k8s_user)
    user_custom = client.CustomObjectsApi(k8s_user)
    with pytest.raises(ApiException) as denied:
        user_core.list_namespaced_config_map(namespace)
    assert denied.value.status == 403
    assert "localenv-user" in str(denied.value.body)
    with pytest.raises(ApiException) as denied_vs:
        user_custom.list_namespaced_custom_object(*ISTIO[:2], namespace, ISTIO[2])
    assert denied_vs.value.status == 403

    rbac = client.RbacAuthorizationV1Api(k8s_admin)
    rbac.create_namespaced_role(namespace, client.V1Role(
        metadata=client.V1ObjectMeta(name="reader"),
        rules=[
            client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["get", "list", "watch"]),
            client.V1PolicyRule(api_groups=["networking.istio.io"], resources=["virtualservices"],
                                verbs=["get", "list"]),
        ],
    ))
    rbac.create_namespaced_role_binding(namespace, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="reader"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="reader"),
        subjects=[client.RbacV1Subject(api_group="rbac.authorization.k8s.io", kind="User",
                                       name="localenv-user")],
    ))

    def allowed() -> bool:
        try:
            user_core.list_namespaced_config_map(namespace)
            user_custom.list_namespaced_custom_object(*ISTIO[:2], namespace, ISTIO[2])
        except ApiException as exc:
            if exc.status != 403:
                raise
            return False
        return True

    assert _eventually(allowed), "the Role did not take effect"
    # Still denied what the Role does not grant.
    with pytest.raises(ApiException) as still_denied:
        user_core.create_namespaced_config_map(namespace, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="nope")))
    assert still_denied.value.status == 403
    with pytest.raises(ApiException) as other_ns:
        user_core.list_namespaced_config_map("default")
    assert other_ns.value.status == 403


def test_namespaces_delete_and_owner_references_cascade(k8s_admin: Any, localenv: LocalEnv) -> None:
    if localenv.binaries is None or localenv.binaries.kube_controller_manager is None:
        pytest.skip("kube-controller-manager is not built (modelrollout localenv build)")
    core: Any = client.CoreV1Api(k8s_admin)
    name = f"t-cascade-{int(time.time() * 1000) % 10**8}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    owner = core.create_namespaced_config_map(name, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="owner")))
    core.create_namespaced_config_map(name, client.V1ConfigMap(metadata=client.V1ObjectMeta(
        name="child",
        owner_references=[client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner",
                                                  uid=owner.metadata.uid)],
    )))
    core.delete_namespaced_config_map("owner", name)

    def child_gone() -> bool:
        names = [cm.metadata.name for cm in core.list_namespaced_config_map(name).items]
        return "child" not in names

    assert _eventually(child_gone, 30), "the garbage collector did not delete the dependent"

    core.delete_namespace(name)

    def namespace_gone() -> bool:
        try:
            core.read_namespace(name)
        except ApiException as exc:
            return bool(exc.status == 404)
        return False

    assert _eventually(namespace_gone, 60), "the namespace did not finish deleting"
