"""The Helm chart rendered by the real helm (built from its Go module by `modelrollout localenv build`).

No apiserver is needed: `helm lint --strict` and `helm template`, then assertions on the objects.
The exact RBAC rules are pinned here, so any widening is a conscious change; that they suffice is
shown against the real apiserver in test_chart_rbac.py. (That the chart's CRD copy equals the
models is tests/unit/test_crd_render.py's drift test; here only that helm ships that file.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from modelrollout.cli import build_parser
from modelrollout.devstack.controlplane import helm
from modelrollout.devstack.controlplane.helm import HelmError

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modelrollout"
CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text())
NAMESPACED = {"watchNamespaces": ["team-a", "team-b"]}
HA = {"replicas": 2, "leaderElection": {"enabled": True}}

Rule = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]

#: What the operator needs in a namespace it watches (see templates/_helpers.tpl for which code
#: needs each rule).
NAMESPACED_RULES: list[Rule] = [
    (("modelrollout.io",), ("modelexperiments",), ("list", "watch", "patch")),
    (("modelrollout.io",), ("modelexperiments/status",), ("patch",)),
    (("",), ("events",), ("create",)),
    (("",), ("services",), ("get",)),
    (("apps",), ("deployments",), ("get", "patch")),
    (("networking.istio.io",), ("virtualservices",), ("get", "patch")),
    (("gateway.networking.k8s.io",), ("httproutes",), ("get", "patch")),
    (("",), ("secrets", "configmaps"), ("get",)),
]
CRD_WATCH: Rule = (("apiextensions.k8s.io",), ("customresourcedefinitions",), ("list", "watch"))
NAMESPACE_WATCH: Rule = (("",), ("namespaces",), ("list", "watch"))


def rules(obj: dict[str, Any]) -> list[Rule]:
    return [(tuple(r["apiGroups"]), tuple(r["resources"]), tuple(r["verbs"])) for r in obj["rules"]]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1
    result: dict[str, Any] = pod["containers"][0]
    return result


@pytest.fixture(scope="module")
def default_objects(helm_binary: Path) -> list[dict[str, Any]]:
    return helm.template(helm_binary, CHART, release="mr", namespace="ops")


@pytest.fixture(scope="module")
def namespaced_objects(helm_binary: Path) -> list[dict[str, Any]]:
    return helm.template(helm_binary, CHART, release="mr", namespace="ops", values=NAMESPACED)


def test_helm_is_the_pinned_build(helm_binary: Path) -> None:
    assert helm.version(helm_binary).startswith("v3.22.0")


@pytest.mark.parametrize("values", [None, NAMESPACED, {"rbac": {"readCredentials": False,
                                                               "kopfObservers": False}}, HA],
                         ids=["default", "namespaced", "minimal-rbac", "leader-election"])
def test_lint_strict_passes(helm_binary: Path, values: dict[str, Any] | None) -> None:
    out = helm.lint(helm_binary, CHART, values=values)
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_default_install_is_cluster_wide(default_objects: list[dict[str, Any]]) -> None:
    kinds = sorted(o["kind"] for o in default_objects)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "ServiceAccount"]
    role = one(default_objects, "ClusterRole")
    # Cluster-wide, kopf does not list namespaces: no NAMESPACE_WATCH.
    assert rules(role) == [*NAMESPACED_RULES, CRD_WATCH]


def test_service_account_is_wired_through(default_objects: list[dict[str, Any]]) -> None:
    account = one(default_objects, "ServiceAccount")["metadata"]
    assert account == {**account, "name": "mr-modelrollout", "namespace": "ops"}
    binding = one(default_objects, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": one(default_objects, "ClusterRole")["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mr-modelrollout", "namespace": "ops"}]
    pod = one(default_objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "mr-modelrollout"
    assert pod["automountServiceAccountToken"] is True


def test_deployment_runs_the_operator_as_the_cli_expects(default_objects: list[dict[str, Any]]) -> None:
    deployment = one(default_objects, "Deployment")
    assert deployment["metadata"]["namespace"] == "ops"
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    selector = deployment["spec"]["selector"]["matchLabels"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
    c = container(default_objects)
    assert c["image"] == f"modelrollout:{CHART_META['appVersion']}"
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["args"] == ["run", "--all-namespaces", "--log-format=json",
                         "--liveness=http://0.0.0.0:8080/healthz"]
    # The image's entrypoint is `modelrollout`; the args must parse as its `run` command.
    args = build_parser().parse_args(c["args"])
    assert (args.command, args.all_namespaces, args.namespace) == ("run", True, None)
    assert args.log_format == "json"
    assert args.liveness == "http://0.0.0.0:8080/healthz"
    assert c["ports"] == [{"name": "health", "containerPort": 8080, "protocol": "TCP"}]
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["resources"]["requests"] == {"cpu": "100m", "memory": "256Mi"}


def test_security_context_is_restricted(default_objects: list[dict[str, Any]]) -> None:
    pod = one(default_objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    c = container(default_objects)
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}}
    # A read-only root needs a writable /tmp.
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]


def test_namespaced_install_has_a_role_per_namespace(namespaced_objects: list[dict[str, Any]]) -> None:
    roles = by_kind(namespaced_objects, "Role")
    bindings = by_kind(namespaced_objects, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for role in roles:
        assert rules(role) == NAMESPACED_RULES
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["roleRef"]["name"] == roles[0]["metadata"]["name"]
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mr-modelrollout",
                                        "namespace": "ops"}]
    # Cluster-wide only what kopf's observers read; nothing of the workloads or Secrets.
    observers = one(namespaced_objects, "ClusterRole")
    assert observers["metadata"]["name"] == "mr-modelrollout-observers"
    assert rules(observers) == [CRD_WATCH, NAMESPACE_WATCH]
    assert one(namespaced_objects, "ClusterRoleBinding")["roleRef"]["name"] == "mr-modelrollout-observers"
    args = container(namespaced_objects)["args"]
    assert args[:3] == ["run", "--namespace=team-a", "--namespace=team-b"]
    parsed = build_parser().parse_args(args)
    assert parsed.namespace == ["team-a", "team-b"]
    assert parsed.all_namespaces is False


def test_every_rule_says_which_code_needs_it(helm_binary: Path) -> None:
    for extra in ([], ["--set", "watchNamespaces={team-a}"], ["--set", "leaderElection.enabled=true"]):
        text = helm.run(helm_binary, ["template", "mr", str(CHART), "--namespace", "ops", *extra]).stdout
        lines = text.splitlines()
        starts = [i for i, line in enumerate(lines) if line.strip().startswith("- apiGroups:")]
        assert starts
        for i in starts:
            assert lines[i - 1].strip().startswith("#"), f"rule without a comment: {lines[i]}"


def test_options_drop_rules_and_change_args(helm_binary: Path) -> None:
    minimal = helm.template(helm_binary, CHART, values={"rbac": {"readCredentials": False,
                                                                 "kopfObservers": False}})
    assert rules(one(minimal, "ClusterRole")) == NAMESPACED_RULES[:-1]
    scoped = helm.template(helm_binary, CHART, values={"watchNamespaces": ["a"],
                                                       "rbac": {"kopfObservers": False}})
    assert sorted(o["kind"] for o in scoped) == ["Deployment", "Role", "RoleBinding", "ServiceAccount"]
    assert container(scoped)["args"][-1] == "--no-cluster-scan"  # no cluster-scope rights: no scanning
    assert "--no-cluster-scan" not in container(minimal)["args"]  # cluster-wide kopf must scan
    no_rbac = helm.template(helm_binary, CHART, values={
        "rbac": {"create": False}, "serviceAccount": {"create": False, "name": "ops-sa"}})
    assert sorted(o["kind"] for o in no_rbac) == ["Deployment"]
    assert one(no_rbac, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops-sa"
    custom = helm.template(helm_binary, CHART, values={
        "image": {"repository": "registry.example/mr", "tag": "1.2.3", "pullPolicy": "Always"},
        "logFormat": "text", "verbose": True, "health": {"port": 9000},
        "nodeSelector": {"pool": "ops"}, "tolerations": [{"key": "k", "operator": "Exists"}],
    })
    c = container(custom)
    assert (c["image"], c["imagePullPolicy"]) == ("registry.example/mr:1.2.3", "Always")
    assert c["args"][2:] == ["--log-format=text", "--liveness=http://0.0.0.0:9000/healthz", "--verbose"]
    assert c["ports"][0]["containerPort"] == 9000
    pod = one(custom, "Deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "ops"}
    assert pod["tolerations"] == [{"key": "k", "operator": "Exists"}]


@pytest.mark.parametrize(("values", "message"), [
    ({"replicas": 2}, "without leader election more than 1 replica would act twice"),
    ({"replicas": 0}, "replicas: at least 1"),
    ({"logFormat": "xml"}, '"xml" is not json or text'),
    ({"serviceAccount": {"create": False}}, "serviceAccount.name is required"),
], ids=["replicas", "no-replica", "log-format", "service-account-name"])
def test_bad_values_fail_with_a_reason(helm_binary: Path, values: dict[str, Any], message: str) -> None:
    with pytest.raises(HelmError, match=message):
        helm.template(helm_binary, CHART, values=values)


def test_helm_ships_the_generated_crd(helm_binary: Path) -> None:
    objects = helm.template(helm_binary, CHART, include_crds=True)
    crd = one(objects, "CustomResourceDefinition")
    assert crd == yaml.safe_load((ROOT / "crds" / "modelexperiment.yaml").read_text())


# --- high availability: leader election ------------------------------------------------------------

LEASE_RULES = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
     "resourceNames": ["mr-modelrollout-leader"], "verbs": ["get", "update"]},
]


def test_two_replicas_run_with_leader_election(helm_binary: Path) -> None:
    objects = helm.template(helm_binary, CHART, release="mr", namespace="ops", values=HA)
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "PodDisruptionBudget", "Role",
                     "RoleBinding", "ServiceAccount"]
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    # A new pod starts as a standby; the old leader, stopped, hands the Lease over.
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate",
                                              "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    c = container(objects)
    assert c["args"][4:] == ["--leader-elect", "--lease-name=mr-modelrollout-leader", "--lease-namespace=ops",
                             "--lease-duration=15s", "--renew-deadline=10s", "--retry-period=2s"]
    args = build_parser().parse_args(c["args"])
    assert args.leader_elect
    assert (args.lease_name, args.lease_namespace) == ("mr-modelrollout-leader", "ops")
    assert (args.lease_duration, args.renew_deadline, args.retry_period) == ("15s", "10s", "2s")
    # The identity is the pod's name, from the downward API.
    assert c["env"] == [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    # The Lease: create (which cannot name its object), and get/update of that one Lease only.
    role = one(objects, "Role")
    assert role["metadata"]["name"] == "mr-modelrollout-leader-election"
    assert role["metadata"]["namespace"] == "ops"
    assert role["rules"] == LEASE_RULES
    binding = one(objects, "RoleBinding")
    assert binding["metadata"]["namespace"] == "ops"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "mr-modelrollout-leader-election"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mr-modelrollout", "namespace": "ops"}]
    # A drain keeps one pod; the two prefer different nodes.
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"] == {"minAvailable": 1, "selector": deployment["spec"]["selector"]}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["affinity"] == {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
        "weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                           "labelSelector": deployment["spec"]["selector"]}}]}}


def test_leader_election_options(helm_binary: Path) -> None:
    one_replica = helm.template(helm_binary, CHART, release="mr", namespace="ops",
                                values={"leaderElection": {"enabled": True}})
    assert sorted(o["kind"] for o in one_replica) == [  # no PDB for one pod
        "ClusterRole", "ClusterRoleBinding", "Deployment", "Role", "RoleBinding", "ServiceAccount"]
    assert "affinity" not in one(one_replica, "Deployment")["spec"]["template"]["spec"]
    custom = helm.template(helm_binary, CHART, release="mr", namespace="ops", values={
        "replicas": 3, "leaderElection": {"enabled": True, "leaseName": "ops-leader", "leaseDuration": "30s",
                                          "renewDeadline": "20s", "retryPeriod": "4s"},
        "podDisruptionBudget": {"minAvailable": 2}, "affinity": {"nodeAffinity": {"x": 1}},
        "env": [{"name": "EXTRA", "value": "1"}], "rbac": {"create": False},
        "serviceAccount": {"create": False, "name": "ops-sa"}})
    assert sorted(o["kind"] for o in custom) == ["Deployment", "PodDisruptionBudget"]
    c = container(custom)
    assert c["args"][5:] == ["--lease-name=ops-leader", "--lease-namespace=ops", "--lease-duration=30s",
                             "--renew-deadline=20s", "--retry-period=4s"]
    assert [e["name"] for e in c["env"]] == ["POD_NAME", "POD_NAMESPACE", "EXTRA"]
    assert one(custom, "PodDisruptionBudget")["spec"]["minAvailable"] == 2
    assert one(custom, "Deployment")["spec"]["template"]["spec"]["affinity"] == {"nodeAffinity": {"x": 1}}
    # Without leader election nothing of it is rendered, and one replica is recreated, never rolled.
    default = helm.template(helm_binary, CHART, release="mr", namespace="ops")
    assert not by_kind(default, "Role")
    assert not by_kind(default, "PodDisruptionBudget")
    assert "env" not in container(default)
    assert not [a for a in container(default)["args"] if a.startswith("--lease") or a == "--leader-elect"]

