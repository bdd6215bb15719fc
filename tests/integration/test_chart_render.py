"""The Helm chart rendered by the real helm (built from its Go module by `modelrollout localenv build`).

No apiserver is needed: `helm lint --strict` and `helm template`, then assertions on the objects.
The exact RBAC rules are pinned here, so any widening is a conscious change; that they suffice is
shown against the real apiserver in test_chart_rbac.py. (That the chart's CRD copy equals the
models is tests/unit/test_crd_render.py's drift test; here only that helm ships that file.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelrollout.cli import build_parser
from modelrollout.devstack.controlplane import helm
from modelrollout.devstack.controlplane.helm import HelmError
from modelrollout.devstack.controlplane.pytest_plugin import unavailable
from support import monitoring

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modelrollout"
CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text())
NAMESPACED = {"watchNamespaces": ["team-a", "team-b"]}
#: Every monitoring object: ServiceMonitor, PrometheusRule, the dashboard's ConfigMap.
MONITORING = {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}},
                          "prometheusRule": {"enabled": True, "labels": {"release": "kps"}},
                          "dashboard": {"enabled": True}}}
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
                                                               "kopfObservers": False}}, MONITORING, HA],
                         ids=["default", "namespaced", "minimal-rbac", "monitoring", "leader-election"])
def test_lint_strict_passes(helm_binary: Path, values: dict[str, Any] | None) -> None:
    out = helm.lint(helm_binary, CHART, values=values)
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_default_install_is_cluster_wide(default_objects: list[dict[str, Any]]) -> None:
    kinds = sorted(o["kind"] for o in default_objects)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount"]
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
                         "--liveness=http://0.0.0.0:8080/healthz", "--metrics-port=8081",
                         "--metrics-address=0.0.0.0"]
    # The image's entrypoint is `modelrollout`; the args must parse as its `run` command.
    args = build_parser().parse_args(c["args"])
    assert (args.command, args.all_namespaces, args.namespace) == ("run", True, None)
    assert args.log_format == "json"
    assert args.liveness == "http://0.0.0.0:8080/healthz"
    assert (args.metrics_port, args.metrics_address) == (8081, "0.0.0.0")
    assert c["ports"] == [{"name": "health", "containerPort": 8080, "protocol": "TCP"},
                          {"name": "metrics", "containerPort": 8081, "protocol": "TCP"}]
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
    assert sorted(o["kind"] for o in scoped) == ["Deployment", "Role", "RoleBinding", "Service",
                                                 "ServiceAccount"]
    assert container(scoped)["args"][-1] == "--no-cluster-scan"  # no cluster-scope rights: no scanning
    assert "--no-cluster-scan" not in container(minimal)["args"]  # cluster-wide kopf must scan
    no_rbac = helm.template(helm_binary, CHART, values={
        "rbac": {"create": False}, "serviceAccount": {"create": False, "name": "ops-sa"}})
    assert sorted(o["kind"] for o in no_rbac) == ["Deployment", "Service"]
    assert one(no_rbac, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops-sa"
    custom = helm.template(helm_binary, CHART, values={
        "image": {"repository": "registry.example/mr", "tag": "1.2.3", "pullPolicy": "Always"},
        "logFormat": "text", "verbose": True, "health": {"port": 9000},
        "nodeSelector": {"pool": "ops"}, "tolerations": [{"key": "k", "operator": "Exists"}],
    })
    c = container(custom)
    assert (c["image"], c["imagePullPolicy"]) == ("registry.example/mr:1.2.3", "Always")
    assert c["args"][2:] == ["--log-format=text", "--liveness=http://0.0.0.0:9000/healthz",
                             "--metrics-port=8081", "--metrics-address=0.0.0.0", "--verbose"]
    assert c["ports"][0]["containerPort"] == 9000
    pod = one(custom, "Deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "ops"}
    assert pod["tolerations"] == [{"key": "k", "operator": "Exists"}]


@pytest.mark.parametrize(("values", "message"), [
    ({"replicas": 2}, "without leader election more than 1 replica would act twice"),
    ({"replicas": 0}, "replicas: at least 1"),
    ({"logFormat": "xml"}, '"xml" is not json or text'),
    ({"serviceAccount": {"create": False}}, "serviceAccount.name is required"),
    ({"metrics": {"port": 8080}}, "the metrics endpoint needs a port of its own"),
    ({"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}},
     "metrics.serviceMonitor: needs metrics.enabled and metrics.service.enabled"),
], ids=["replicas", "no-replica", "log-format", "service-account-name", "metrics-port",
        "service-monitor-without-service"])
def test_bad_values_fail_with_a_reason(helm_binary: Path, values: dict[str, Any], message: str) -> None:
    with pytest.raises(HelmError, match=message):
        helm.template(helm_binary, CHART, values=values)


def test_helm_ships_the_generated_crd(helm_binary: Path) -> None:
    objects = helm.template(helm_binary, CHART, include_crds=True)
    crd = one(objects, "CustomResourceDefinition")
    assert crd == yaml.safe_load((ROOT / "crds" / "modelexperiment.yaml").read_text())


# --- the operator's own metrics: Service, ServiceMonitor, PrometheusRule, dashboard -------------


@pytest.fixture(scope="module")
def monitoring_objects(helm_binary: Path) -> list[dict[str, Any]]:
    return helm.template(helm_binary, CHART, release="mr", namespace="ops", values=MONITORING)


@pytest.fixture(scope="module")
def promtool() -> Path:
    found = monitoring.find_promtool()
    if found is None:
        unavailable("promtool is missing: Debian's prometheus package has it (tools/install-prereqs.sh)")
    return found


def test_the_metrics_service_selects_the_pod_and_its_metrics_port(
    default_objects: list[dict[str, Any]],
) -> None:
    service = one(default_objects, "Service")
    assert service["metadata"]["name"] == "mr-modelrollout-metrics"
    assert service["metadata"]["labels"]["app.kubernetes.io/component"] == "metrics"
    pod_labels = one(default_objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8081, "targetPort": "metrics",
                                         "protocol": "TCP"}]
    # No monitoring CRD objects unless asked for: they need the Prometheus Operator's CRDs.
    assert not {"ServiceMonitor", "PrometheusRule", "ConfigMap"} & {o["kind"] for o in default_objects}


def test_metrics_can_be_turned_off_or_moved(helm_binary: Path) -> None:
    off = helm.template(helm_binary, CHART, values={"metrics": {"enabled": False}})
    assert "Service" not in {o["kind"] for o in off}
    c = container(off)
    assert c["args"][-1] == "--metrics-port=0"
    assert build_parser().parse_args(c["args"]).metrics_port == 0
    assert [p["name"] for p in c["ports"]] == ["health"]
    moved = helm.template(helm_binary, CHART, values={"metrics": {"port": 9100, "bindAddress": "127.0.0.1",
                                                                  "service": {"port": 80}}})
    c = container(moved)
    assert c["args"][-2:] == ["--metrics-port=9100", "--metrics-address=127.0.0.1"]
    assert c["ports"][1] == {"name": "metrics", "containerPort": 9100, "protocol": "TCP"}
    assert one(moved, "Service")["spec"]["ports"][0]["port"] == 80


def test_the_service_monitor_scrapes_the_metrics_service_keeping_its_labels(
    monitoring_objects: list[dict[str, Any]],
) -> None:
    monitor = one(monitoring_objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["metadata"]["namespace"] == "ops"
    service = one(monitoring_objects, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["ops"]}
    # honorLabels: the series' namespace is the experiment's, not the operator pod's
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s",
                                             "scrapeTimeout": "10s", "honorLabels": True}]


def test_the_dashboard_configmap_is_for_grafanas_sidecar(helm_binary: Path,
                                                          monitoring_objects: list[dict[str, Any]]) -> None:
    config_map = one(monitoring_objects, "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "ops"
    assert json.loads(config_map["data"]["modelrollout.json"]) == monitoring.dashboard()
    elsewhere = helm.template(helm_binary, CHART, values={"metrics": {"dashboard": {
        "enabled": True, "namespace": "grafana", "annotations": {"grafana_folder": "ModelRollout"}}}})
    moved = one(elsewhere, "ConfigMap")["metadata"]
    assert (moved["namespace"], moved["annotations"]) == ("grafana", {"grafana_folder": "ModelRollout"})


def test_the_dashboard_shows_the_fleet_and_one_experiment() -> None:
    board = monitoring.dashboard()
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource", "namespace", "experiment"]
    titles = [p["title"] for p in monitoring.panels(board)]
    for wanted in ("Experiments by phase", "Rollbacks by reason", "Decisions by rule", "Traffic weights",
                   "Lift with its always-valid interval", "Guardrails", "Sample size"):
        assert any(t.startswith(wanted) for t in titles), (wanted, titles)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    served = monitoring.served_series()
    for query in monitoring.queries(board):
        # only series the operator serves; one experiment's panels select it by both variables
        selected = set(re.findall(r"([a-zA-Z_:][\w:]*)\s*[{\[]", query.expr))
        named = set(re.findall(r"\bmodelrollout_\w+", query.expr))
        assert named, query
        assert selected | named <= served, (query, (selected | named) - served)
        if "$namespace" in query.expr:
            assert 'namespace="$namespace", experiment="$experiment"' in query.expr, query
    for panel in monitoring.panels(board):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["description"]


def test_every_dashboard_query_parses_with_promtool(promtool: Path, tmp_path: Path) -> None:
    found = monitoring.queries()
    assert len(found) >= 15
    # (a value that is not a plain word would be a regex problem inside =~; these are DNS labels)
    values = {"namespace": "shop", "experiment": "ranker-v7", "datasource": "prometheus"}
    filled = {f"dashboard:panel_{i}_{q.ref}": monitoring.fill(q.expr, values) for i, q in enumerate(found)}
    assert not any("$" in e for e in filled.values())
    rules = tmp_path / "dashboard.rules.yaml"
    rules.write_text(monitoring.recording_rules(filled))
    result = monitoring.promtool(promtool, "check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(filled)} rules found" in result.stdout + result.stderr
    # promtool does fail on a query that does not parse
    broken = "sum by (phase (modelrollout_experiments)"
    rules.write_text(monitoring.recording_rules({"dashboard:broken": broken}))
    assert monitoring.promtool(promtool, "check", "rules", str(rules)).returncode != 0


def alert_groups(objects: list[dict[str, Any]]) -> dict[str, Any]:
    rule = one(objects, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    groups: dict[str, Any] = rule["spec"]
    return groups


def test_the_alerts_pass_promtool_check_rules(promtool: Path, tmp_path: Path,
                                              monitoring_objects: list[dict[str, Any]]) -> None:
    groups = alert_groups(monitoring_objects)
    assert one(monitoring_objects, "PrometheusRule")["metadata"]["labels"]["release"] == "kps"
    alerts = [r["alert"] for g in groups["groups"] for r in g["rules"]]
    assert alerts == ["ModelExperimentHeld", "ModelExperimentRolledBack", "ModelExperimentMetricsUnavailable",
                      "ModelRolloutOperatorMetricsAbsent"]
    rules = tmp_path / "alerts.yaml"
    rules.write_text(yaml.safe_dump(groups))
    result = monitoring.promtool(promtool, "check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout + result.stderr


#: promtool's unit tests of the alerts (times from 0, the Unix epoch: a hold that began at 0 has lasted
#: the evaluation time). One experiment paused from the start; one without metrics from 10 m; one
#: rolled back at 30 m; then, in a second test, no operator series at all.
ALERT_TESTS: dict[str, Any] = {
    "evaluation_interval": "1m",
    "tests": [
        {
            "interval": "1m",
            "input_series": [
                {"series": 'modelrollout_build_info{version="0.1.0"}', "values": "1x120"},
                {"series": 'modelrollout_experiment_hold_started_timestamp_seconds{namespace="shop",'
                           'experiment="paused",reason="Paused"}', "values": "0x120"},
                {"series": 'modelrollout_experiment_hold_started_timestamp_seconds{namespace="shop",'
                           'experiment="blind",reason="MetricsUnavailable"}', "values": "_x9 600x30"},
                {"series": 'modelrollout_experiment_phase{namespace="shop",experiment="worse",'
                           'phase="RolledBack"}', "values": "0x29 1x90"},
                {"series": 'modelrollout_experiment_phase{namespace="shop",experiment="better",'
                           'phase="RolledBack"}', "values": "0x120"},
                {"series": 'modelrollout_experiment_finished_timestamp_seconds{namespace="shop",'
                           'experiment="worse"}', "values": "_x29 1800x90"},
                {"series": 'modelrollout_experiment_finished_timestamp_seconds{namespace="shop",'
                           'experiment="better"}', "values": "_x29 1800x90"},
            ],
            "alert_rule_test": [
                {"eval_time": "30m", "alertname": "ModelExperimentHeld", "exp_alerts": []},
                {"eval_time": "61m", "alertname": "ModelExperimentHeld", "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "namespace": "shop", "experiment": "paused",
                                    "reason": "Paused"},
                     "exp_annotations": {
                         "summary": "ModelExperiment shop/paused held (Paused) for 1h 1m 0s",
                         "description": "The experiment has been held by Paused for 1h 1m 0s: no step, "
                                        "no promotion. kubectl -n shop describe mexp paused says why; "
                                        "unpause it, fix what holds it, or abort it."}}]},
                {"eval_time": "14m", "alertname": "ModelExperimentMetricsUnavailable", "exp_alerts": []},
                {"eval_time": "16m", "alertname": "ModelExperimentMetricsUnavailable", "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "namespace": "shop", "experiment": "blind",
                                    "reason": "MetricsUnavailable"},
                     "exp_annotations": {
                         "summary": "ModelExperiment shop/blind has had no usable metrics for 6m 0s",
                         "description": "Its MetricsUnavailable condition says which query failed and why; "
                                        "modelrollout_prometheus_query_errors_total counts the operator's "
                                        "failed queries by reason."}}]},
                {"eval_time": "29m", "alertname": "ModelExperimentRolledBack", "exp_alerts": []},
                {"eval_time": "35m", "alertname": "ModelExperimentRolledBack", "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "namespace": "shop", "experiment": "worse"},
                     "exp_annotations": {
                         "summary": "ModelExperiment shop/worse rolled back",
                         "description": "The champion has all the traffic again. kubectl -n shop describe "
                                        "mexp worse shows the rule and the numbers; sum by (reason) "
                                        "(increase(modelrollout_rollbacks_total[1h])) counts the fleet's "
                                        "rollbacks by reason."}}]},
                {"eval_time": "50m", "alertname": "ModelExperimentRolledBack", "exp_alerts": []},
                {"eval_time": "60m", "alertname": "ModelRolloutOperatorMetricsAbsent", "exp_alerts": []},
            ],
        },
        {
            "interval": "1m",
            "input_series": [{"series": 'up{job="other"}', "values": "1x30"}],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "ModelRolloutOperatorMetricsAbsent", "exp_alerts": []},
                {"eval_time": "11m", "alertname": "ModelRolloutOperatorMetricsAbsent", "exp_alerts": [
                    {"exp_labels": {"severity": "warning"},
                     "exp_annotations": {
                         "summary": "No metrics from the modelrollout operator",
                         "description": "Prometheus has scraped no modelrollout_build_info series for "
                                        "10m. Is the operator running, and does its ServiceMonitor "
                                        "(metrics.serviceMonitor) match?"}}]},
            ],
        },
    ],
}


def test_the_alerts_fire_when_they_should_promtool_test_rules(
    promtool: Path, tmp_path: Path, monitoring_objects: list[dict[str, Any]],
) -> None:
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(alert_groups(monitoring_objects)))
    (tmp_path / "alerts_test.yaml").write_text(yaml.safe_dump({"rule_files": ["alerts.yaml"], **ALERT_TESTS}))
    result = monitoring.promtool(promtool, "test", "rules", "alerts_test.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_the_alert_thresholds_come_from_the_values(helm_binary: Path) -> None:
    objects = helm.template(helm_binary, CHART, values={"metrics": {"prometheusRule": {
        "enabled": True, "heldSeconds": 7200, "metricsUnavailableSeconds": 60, "rolledBackSeconds": 300,
        "absentFor": "2m", "severity": "page"}}})
    rules = {r["alert"]: r for g in alert_groups(objects)["groups"] for r in g["rules"]}
    assert rules["ModelExperimentHeld"]["expr"].endswith("> 7200")
    assert rules["ModelExperimentMetricsUnavailable"]["expr"].endswith("> 60")
    assert "< 300" in rules["ModelExperimentRolledBack"]["expr"]
    assert rules["ModelRolloutOperatorMetricsAbsent"]["for"] == "2m"
    assert {r["labels"]["severity"] for r in rules.values()} == {"page"}
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
                     "RoleBinding", "Service", "ServiceAccount"]
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    # A new pod starts as a standby; the old leader, stopped, hands the Lease over.
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate",
                                              "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    c = container(objects)
    assert c["args"][4:6] == ["--metrics-port=8081", "--metrics-address=0.0.0.0"]
    assert c["args"][6:] == ["--leader-elect", "--lease-name=mr-modelrollout-leader", "--lease-namespace=ops",
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
        "ClusterRole", "ClusterRoleBinding", "Deployment", "Role", "RoleBinding", "Service", "ServiceAccount"]
    assert "affinity" not in one(one_replica, "Deployment")["spec"]["template"]["spec"]
    custom = helm.template(helm_binary, CHART, release="mr", namespace="ops", values={
        "replicas": 3, "leaderElection": {"enabled": True, "leaseName": "ops-leader", "leaseDuration": "30s",
                                          "renewDeadline": "20s", "retryPeriod": "4s"},
        "podDisruptionBudget": {"minAvailable": 2}, "affinity": {"nodeAffinity": {"x": 1}},
        "env": [{"name": "EXTRA", "value": "1"}], "rbac": {"create": False},
        "serviceAccount": {"create": False, "name": "ops-sa"}})
    assert sorted(o["kind"] for o in custom) == ["Deployment", "PodDisruptionBudget", "Service"]
    c = container(custom)
    assert c["args"][7:] == ["--lease-name=ops-leader", "--lease-namespace=ops", "--lease-duration=30s",
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

