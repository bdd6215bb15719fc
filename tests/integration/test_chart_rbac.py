"""The Helm chart installed by the real helm into the real kube-apiserver, and the operator run with
exactly the RBAC it installs.

For each mode (every namespace, the default; or named namespaces) the test

1. `helm install`s the chart (ServiceAccount, ClusterRole/Role and bindings, Deployment);
2. asks the apiserver for a token of the installed ServiceAccount (TokenRequest) and writes a
   kubeconfig with it, so the operator authenticates as ``system:serviceaccount:NS:SA`` itself
   (not the admin impersonating it; the apiserver's own authenticator and RBAC decide);
3. runs ``modelrollout`` with the args of the installed Deployment (read back from the apiserver),
   as its own process, and checks kopf's health endpoint that the probes use;
4. applies experiments for the three providers and one whose Prometheus credentials name keys that
   do not exist, and asserts the operator reconciled them: routes moved to the first step, status
   written, Events created, the Secret and ConfigMap read (a missing key, not a 403), the finalizer
   restoring the champion on delete. The operator's log must show no RBAC denial at all;
5. checks with SelfSubjectAccessReviews what the ServiceAccount must not be able to do.

No pods run (there is no scheduler or kubelet); a separate test checks that the installed pod
template passes the "restricted" Pod Security admission of the real apiserver.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelrollout.devstack.controlplane import helm
from modelrollout.devstack.controlplane.env import LocalEnv
from modelrollout.devstack.controlplane.kube import api_client, http_get, kubeconfig, write_kubeconfig
from modelrollout.devstack.controlplane.procs import ManagedProcess, free_port
from modelrollout.devstack.controlplane.prometheus import Prometheus
from modelrollout.devstack.sim.world import experiment_manifest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modelrollout"
GROUP, VERSION, PLURAL = "modelrollout.io", "v1alpha1", "modelexperiments"
ISTIO = ("networking.istio.io", "v1", "virtualservices")
GATEWAY = ("gateway.networking.k8s.io", "v1", "httproutes")
APP = "ranker"
VARIANTS = ("v6", "v7")
FIRST_STEP = {"v6": 90, "v7": 10}
CHAMPION_ONLY = {"v6": 100, "v7": 0}
#: How the apiserver words an RBAC denial ('... is forbidden: User "..." cannot list ...'), and how
#: kopf words its fallbacks. (Not any 403: creating an Event in a namespace that is being deleted is
#: a 403 too, and the cluster-wide operator meets other tests' leftover experiments there.)
PERMISSION_PROBLEMS = (" is forbidden: User ", "Not enough permissions")

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60.0, period: float = 0.3) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except ApiException as exc:
            last = f"{exc.status} {exc.reason}"
            if exc.status in (401, 403):
                raise
        if last is not None and last is not False:
            return last
        time.sleep(period)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


# --- the cluster side ----------------------------------------------------------------------------


def create_namespace(api: Any, labels: dict[str, str] | None = None) -> str:
    name = f"t-chart-workloads-{secrets.token_hex(3)}"
    client.CoreV1Api(api).create_namespace(client.V1Namespace(
        metadata=client.V1ObjectMeta(name=name, labels={"modelrollout.io/test": "true", **(labels or {})})))
    return name


def delete_namespace(api: Any, name: str) -> None:
    with contextlib.suppress(ApiException):
        client.CoreV1Api(api).delete_namespace(name)


def given_workloads(api: Any, ns: str) -> None:
    """Services, a VirtualService, an HTTPRoute and Deployments for v6 (champion) and v7, and the
    Secret and ConfigMap the experiments' Prometheus credentials name."""
    core, apps, custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)
    for name, selector in [(f"{APP}-{v}", {"app": APP, "version": v}) for v in VARIANTS] + [
        (APP, {"app": APP})
    ]:
        core.create_namespaced_service(ns, client.V1Service(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1ServiceSpec(selector=selector, ports=[client.V1ServicePort(port=80)])))
    for i, v in enumerate(VARIANTS):
        labels = {"app": APP, "version": v}
        apps.create_namespaced_deployment(ns, client.V1Deployment(
            metadata=client.V1ObjectMeta(name=f"{APP}-{v}", labels=labels),
            spec=client.V1DeploymentSpec(
                replicas=10 if i == 0 else 0,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(containers=[client.V1Container(name="model", image="model")])))))
    for name in (APP, f"{APP}-credentials"):
        custom.create_namespaced_custom_object(*ISTIO[:2], ns, ISTIO[2], {
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": name},
            "spec": {"hosts": [name], "http": [{"name": "primary", "route": [
                {"destination": {"host": f"{APP}-v6"}, "weight": 100}]}]},
        })
    custom.create_namespaced_custom_object(*GATEWAY[:2], ns, GATEWAY[2], {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": APP},
        "spec": {"parentRefs": [{"name": "gateway"}], "rules": [
            {"name": "primary", "backendRefs": [{"name": f"{APP}-v6", "port": 80, "weight": 1}]}]},
    })
    core.create_namespaced_secret(ns, client.V1Secret(
        metadata=client.V1ObjectMeta(name="prometheus-token"), string_data={"token": "not-checked"}))
    core.create_namespaced_secret(ns, client.V1Secret(
        metadata=client.V1ObjectMeta(name="unrelated-secret"), string_data={"other": "x"}))
    core.create_namespaced_config_map(ns, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="unrelated-config"), data={"other": "x"}))


def experiments(prometheus_url: str) -> dict[str, dict[str, Any]]:
    """One experiment per provider (the istio one reads a bearer token from a Secret), and one
    whose credentials name keys that the Secret and ConfigMap lack."""
    out = {}
    for name, provider in (("via-istio", "istio"), ("via-gateway", "gatewayAPI"), ("via-service", "service")):
        out[name] = experiment_manifest(name, provider=provider, prometheus_url=prometheus_url,
                                        min_step_duration="10m", guardrails=[])
        out[name]["metadata"]["name"] = name
    out["via-istio"]["spec"]["metrics"]["prometheus"]["bearerTokenSecretRef"] = {
        "name": "prometheus-token", "key": "token"}
    bad = experiment_manifest("bad-credentials", prometheus_url="https://127.0.0.1:1", guardrails=[])
    bad["spec"]["traffic"]["istio"]["virtualService"] = f"{APP}-credentials"
    bad["spec"]["metrics"]["prometheus"].update(
        bearerTokenSecretRef={"name": "unrelated-secret", "key": "token"},
        caConfigMapRef={"name": "unrelated-config", "key": "ca.crt"},
    )
    out["bad-credentials"] = bad
    return out


def route_weights(api: Any, ns: str, provider: str, name: str = APP) -> dict[str, int]:
    """The split the routed object holds now, by variant, in %."""
    if provider == "service":
        apps = client.AppsV1Api(api)
        replicas = {v: apps.read_namespaced_deployment(f"{APP}-{v}", ns).spec.replicas or 0 for v in VARIANTS}
        total = sum(replicas.values()) or 1
        return {v: round(100 * r / total) for v, r in replicas.items()}
    group, version, plural = ISTIO if provider == "istio" else GATEWAY
    obj: Any = client.CustomObjectsApi(api).get_namespaced_custom_object(group, version, ns, plural, name)
    weights = dict.fromkeys(VARIANTS, 0)
    if provider == "istio":
        route = next(r for r in obj["spec"]["http"] if r.get("name") == "primary")
        for d in route["route"]:
            weights[d["destination"]["host"].removeprefix(f"{APP}-")] += int(d.get("weight", 0))
        return weights
    rule = next(r for r in obj["spec"]["rules"] if r.get("name") == "primary")
    total = sum(int(b.get("weight", 1)) for b in rule["backendRefs"]) or 1
    for b in rule["backendRefs"]:
        weights[b["name"].removeprefix(f"{APP}-")] += round(100 * int(b.get("weight", 1)) / total)
    return weights


def events_of(api: Any, ns: str, name: str) -> list[Any]:
    items = client.CoreV1Api(api).list_namespaced_event(ns).items
    return [e for e in items
            if e.involved_object.kind == "ModelExperiment" and e.involved_object.name == name]


# --- the operator's identity ---------------------------------------------------------------------


def service_account_kubeconfig(admin: Any, env: LocalEnv, ns: str, account: str, path: Path) -> Path:
    """A kubeconfig that authenticates with a fresh token of ServiceAccount ``ns/account``."""
    admin_config = yaml.safe_load(env.admin_kubeconfig.read_text())
    cluster = admin_config["clusters"][0]["cluster"]
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
        audiences=["https://kubernetes.default.svc.cluster.local"], expiration_seconds=3600))
    token = client.CoreV1Api(admin).create_namespaced_service_account_token(account, ns, request).status.token
    ca_pem = base64.b64decode(cluster["certificate-authority-data"])
    return write_kubeconfig(path, kubeconfig(cluster["server"], ca_pem, f"sa-{account}", token, namespace=ns))


def who_am_i(api: Any) -> str:
    review: Any = client.AuthenticationV1Api(api).create_self_subject_review(
        client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview"))
    return str(review.status.user_info.username)


def can(api: Any, verb: str, resource: str, *, namespace: str | None = None, group: str = "",
        subresource: str | None = None, name: str | None = None) -> bool:
    """SelfSubjectAccessReview: may the client's identity do ``verb`` on ``resource`` (``name``)?"""
    attributes = client.V1ResourceAttributes(verb=verb, group=group, resource=resource,
                                             namespace=namespace, subresource=subresource, name=name)
    review: Any = client.AuthorizationV1Api(api).create_self_subject_access_review(
        client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=attributes)))
    return bool(review.status.allowed)


# --- one installed release ---------------------------------------------------------------------


@dataclass
class Release:
    name: str
    namespace: str
    deployment: Any
    notes: str

    @property
    def container(self) -> Any:
        return self.deployment.spec.template.spec.containers[0]

    @property
    def service_account(self) -> str:
        return str(self.deployment.spec.template.spec.service_account_name)


@contextlib.contextmanager
def installed(helm_binary: Path, env: LocalEnv, admin: Any, ns: str,
              values: dict[str, Any]) -> Iterator[Release]:
    name = f"mr-{secrets.token_hex(3)}"
    notes = helm.install(helm_binary, CHART, release=name, namespace=ns, kubeconfig=env.admin_kubeconfig,
                         values=values)
    try:
        deployment = client.AppsV1Api(admin).read_namespaced_deployment(f"{name}-modelrollout", ns)
        yield Release(name, ns, deployment, notes)
    finally:
        helm.uninstall(helm_binary, release=name, namespace=ns, kubeconfig=env.admin_kubeconfig)


@contextlib.contextmanager
def operator_process(args: list[str], kubeconfig_path: Path, workdir: Path,
                     env: dict[str, str] | None = None) -> Iterator[ManagedProcess]:
    environment = dict(os.environ)
    environment.update(KUBECONFIG=str(kubeconfig_path), MODELROLLOUT_TIMER_SECONDS="0.5",
                       PYTHONUNBUFFERED="1", **(env or {}))
    process = ManagedProcess("operator", [sys.executable, "-m", "modelrollout.cli", *args],
                             workdir / "operator.log", env=environment, cwd=workdir)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def operator_log(process: ManagedProcess) -> str:
    return process.log_path.read_text(errors="replace") if process.log_path.exists() else ""


# --- the tests ---------------------------------------------------------------------------------


MODES = {
    "all-namespaces": lambda workloads: {},
    "named-namespaces": lambda workloads: {"watchNamespaces": [workloads]},
    # No cluster-scope rule at all: the operator runs with --no-cluster-scan.
    "named-namespaces-without-observers": lambda workloads: {
        "watchNamespaces": [workloads], "rbac": {"kopfObservers": False}},
    # Two replicas with leader election: the Lease in the release's namespace, and its Role.
    "leader-election": lambda workloads: {"replicas": 2, "leaderElection": {"enabled": True}},
}
#: The pod name the downward API would give (there is no kubelet here): the leader's identity.
POD_NAME = "mr-modelrollout-5d4f9-x2x7q"


@pytest.mark.parametrize("mode", list(MODES))
def test_operator_reconciles_with_exactly_the_charts_rbac(
    mode: str,
    helm_binary: Path,
    localenv: LocalEnv,
    localenv_prometheus: Prometheus,
    k8s_admin: Any,
    namespace: str,
    tmp_path: Path,
) -> None:
    workloads = create_namespace(k8s_admin)
    health_port, metrics_port = free_port(), free_port()
    values = {**MODES[mode](workloads), "health": {"bindAddress": "127.0.0.1", "port": health_port},
              "metrics": {"bindAddress": "127.0.0.1", "port": metrics_port}}
    try:
        with installed(helm_binary, localenv, k8s_admin, namespace, values) as release:
            watched = "every namespace" if mode in ("all-namespaces", "leader-election") \
                else f"the namespaces {workloads}"
            assert f"It watches {watched}" in release.notes
            identity = f"system:serviceaccount:{namespace}:{release.service_account}"
            config_path = service_account_kubeconfig(k8s_admin, localenv, namespace, release.service_account,
                                                     tmp_path / "operator.kubeconfig")
            operator_api = api_client(config_path)
            try:
                assert who_am_i(operator_api) == identity
                given_workloads(k8s_admin, workloads)
                args = list(release.container.args)
                elected = mode == "leader-election"
                with operator_process(args, config_path, tmp_path,
                                      {"POD_NAME": POD_NAME} if elected else None) as operator:
                    reconcile_and_check(k8s_admin, workloads, operator, health_port, localenv_prometheus.url)
                    # the chart's metrics port serves the operator's own metrics
                    status, text = http_get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5.0)
                    assert status == 200
                    assert "modelrollout_tick_duration_seconds_count" in text
                    if elected:
                        assert lease_holder(k8s_admin, namespace, release) == POD_NAME
                if elected:  # stopped with SIGTERM: released, with the ServiceAccount's own rights
                    assert lease_holder(k8s_admin, namespace, release) == ""
                    assert "with leader election" in release.notes
                log = operator_log(operator)
                problems = [line for line in log.splitlines() if any(p in line for p in PERMISSION_PROBLEMS)]
                assert problems == [], "\n".join(problems[:10])
                check_denied(operator_api, namespace, workloads, mode)
                if elected:
                    check_lease_rights(operator_api, namespace, workloads, release)
            finally:
                operator_api.close()
    finally:
        delete_namespace(k8s_admin, workloads)


def lease_holder(admin: Any, ns: str, release: Release) -> str:
    lease = client.CoordinationV1Api(admin).read_namespaced_lease(f"{release.name}-modelrollout-leader", ns)
    return str(lease.spec.holder_identity or "")


def reconcile_and_check(admin: Any, ns: str, operator: ManagedProcess, health_port: int,
                        prometheus_url: str) -> None:
    def healthy() -> bool:
        operator.check_running("while waiting for its health endpoint")
        with contextlib.suppress(OSError):
            status, body = http_get(f"http://127.0.0.1:{health_port}/healthz", timeout=1.0)
            return status == 200 and isinstance(json.loads(body), dict)
        return False

    wait_for("kopf's health endpoint", healthy, timeout=60)
    custom = client.CustomObjectsApi(admin)
    manifests = experiments(prometheus_url)
    for manifest in manifests.values():
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, manifest)

    def status(name: str) -> dict[str, Any]:
        obj: Any = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        return dict(obj.get("status") or {})

    # Each provider's routes moved to the first step, written by the operator as the ServiceAccount.
    for name, provider in (("via-istio", "istio"), ("via-gateway", "gatewayAPI"), ("via-service", "service")):
        wait_for(f"{name}'s routes at the first step",
                 lambda n=name, p=provider: route_weights(admin, ns, p) == FIRST_STEP, timeout=90)
        written = wait_for(f"{name}'s status", lambda n=name: status(n).get("phase") == "Progressing"
                           and status(n), timeout=30)
        assert written["weights"] == FIRST_STEP
        wait_for(f"an Event on {name}", lambda n=name: events_of(admin, ns, n), timeout=30)
        obj: Any = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        assert "modelrollout.io/finalizer" in obj["metadata"]["finalizers"]

    # The Secret and the ConfigMap were read: the keys are missing (InvalidSpec), not forbidden.
    def invalid_spec() -> dict[str, Any] | None:
        found = [c for c in status("bad-credentials").get("conditions", [])
                 if c["type"] == "InvalidSpec" and c["status"] == "True"]
        return found[0] if found else None

    condition = wait_for("InvalidSpec on bad-credentials", invalid_spec, timeout=60)
    assert f"Secret {ns}/unrelated-secret has no key token" in condition["message"]
    assert f"ConfigMap {ns}/unrelated-config has no key ca.crt" in condition["message"]
    assert route_weights(admin, ns, "istio", f"{APP}-credentials") == CHAMPION_ONLY
    wait_for("an Event on bad-credentials",
             lambda: [e for e in events_of(admin, ns, "bad-credentials") if e.reason == "InvalidSpec"],
             timeout=30)

    # Deleting the experiments: the finalizer restores each champion, then lets the object go (and
    # no finalizer is left behind to block the namespace's deletion once the operator stops).
    for name in manifests:
        custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    wait_for("every experiment deleted",
             lambda: not custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"],
             timeout=60)
    for provider in ("istio", "gatewayAPI", "service"):
        assert route_weights(admin, ns, provider) == CHAMPION_ONLY, provider


def check_denied(api: Any, home: str, workloads: str, mode: str) -> None:
    """What the ServiceAccount must not be able to do, and a few things it must."""
    assert can(api, "patch", "modelexperiments", namespace=workloads, group=GROUP, subresource="status")
    assert can(api, "get", "secrets", namespace=workloads)
    denied = [
        ("delete", "deployments", workloads, "apps", None),
        ("create", "deployments", workloads, "apps", None),
        ("update", "deployments", workloads, "apps", None),
        ("patch", "deployments", workloads, "apps", "scale"),
        ("list", "secrets", workloads, "", None),
        ("watch", "secrets", workloads, "", None),
        ("list", "configmaps", workloads, "", None),
        ("update", "services", workloads, "", None),
        ("get", "pods", workloads, "", None),
        ("create", "pods", workloads, "", None),
        ("get", "modelexperiments", workloads, GROUP, None),
        ("create", "modelexperiments", workloads, GROUP, None),
        ("update", "modelexperiments", workloads, GROUP, None),
        ("delete", "modelexperiments", workloads, GROUP, None),
        ("delete", "virtualservices", workloads, "networking.istio.io", None),
        ("delete", "httproutes", workloads, "gateway.networking.k8s.io", None),
        ("delete", "events", workloads, "", None),
        ("create", "rolebindings", workloads, "rbac.authorization.k8s.io", None),
        ("create", "clusterroles", None, "rbac.authorization.k8s.io", None),
        ("impersonate", "serviceaccounts", workloads, "", None),
        ("get", "customresourcedefinitions", None, "apiextensions.k8s.io", None),
        ("delete", "customresourcedefinitions", None, "apiextensions.k8s.io", None),
    ]
    if mode == "named-namespaces-without-observers":
        denied += [("list", "customresourcedefinitions", None, "apiextensions.k8s.io", None),
                   ("watch", "namespaces", None, "", None)]
    if mode.startswith("named-namespaces"):
        # Only the watched namespace: nothing in its own namespace, kube-system or at cluster scope.
        for other in (home, "kube-system"):
            denied += [("get", "secrets", other, "", None), ("patch", "deployments", other, "apps", None),
                       ("list", "modelexperiments", other, GROUP, None)]
        denied.append(("list", "modelexperiments", None, GROUP, None))
    else:
        assert can(api, "list", "modelexperiments", group=GROUP)
        denied.append(("list", "namespaces", None, "", None))
    allowed = [(verb, resource, ns, group, sub) for verb, resource, ns, group, sub in denied
               if can(api, verb, resource, namespace=ns, group=group, subresource=sub)]
    assert allowed == []


def check_lease_rights(api: Any, home: str, workloads: str, release: Release) -> None:
    """The leader election Role: create leases, get and update the one Lease, nothing more."""
    group, lease = "coordination.k8s.io", f"{release.name}-modelrollout-leader"
    for verb in ("get", "update"):
        assert can(api, verb, "leases", namespace=home, group=group, name=lease)
    assert can(api, "create", "leases", namespace=home, group=group)
    denied = [("get", home, "another-lease"), ("update", home, "another-lease"), ("delete", home, lease),
              ("patch", home, lease), ("list", home, None), ("watch", home, None),
              ("create", workloads, None), ("get", workloads, lease), ("update", "kube-system", lease)]
    allowed = [(verb, ns, name) for verb, ns, name in denied
               if can(api, verb, "leases", namespace=ns, group=group, name=name)]
    assert allowed == []


def test_installed_pod_template_meets_restricted_pod_security(
    helm_binary: Path, localenv: LocalEnv, k8s_admin: Any, tmp_path: Path,
) -> None:
    """The Deployment's pod, as installed, is admitted where Pod Security enforces "restricted";
    the same pod without its securityContext is not (so the admission really runs)."""
    ns = create_namespace(k8s_admin, labels={"pod-security.kubernetes.io/enforce": "restricted",
                                             "pod-security.kubernetes.io/enforce-version": "latest"})
    core = client.CoreV1Api(k8s_admin)
    try:
        with installed(helm_binary, localenv, k8s_admin, ns, {"rbac": {"create": False}}) as release:
            template = k8s_admin.sanitize_for_serialization(release.deployment.spec.template)
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "operator-pod", "labels": template["metadata"]["labels"]},
                   "spec": template["spec"]}
            core.create_namespaced_pod(ns, pod)
            core.delete_namespaced_pod("operator-pod", ns, grace_period_seconds=0)
            loose = json.loads(json.dumps(pod))
            loose["metadata"]["name"] = "loose-pod"
            del loose["spec"]["securityContext"]
            del loose["spec"]["containers"][0]["securityContext"]
            with pytest.raises(ApiException) as rejected:
                core.create_namespaced_pod(ns, loose)
            assert rejected.value.status == 403
            assert "violates PodSecurity" in str(rejected.value.body)
    finally:
        delete_namespace(k8s_admin, ns)
