"""The ModelExperiment CRD on a real kube-apiserver: it applies, the examples are accepted, every bad
manifest of ``tests/data/bad_manifests/cases.yaml`` is rejected at its field, defaults, printer
columns, the status subresource, and the status surviving a trip through the apiserver.
"""

from __future__ import annotations

import copy
import json
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelrollout.api import (
    CRD_NAME,
    GROUP,
    PLURAL,
    VERSION,
    AnalysisRecord,
    AppliedControls,
    ConditionStatus,
    ConditionType,
    DroppedChallenger,
    GuardrailResult,
    HistoryEntry,
    Interval,
    MetricCounters,
    MetricResult,
    ModelExperiment,
    ModelExperimentStatus,
    Phase,
    SequentialState,
    Settle,
    SettleReason,
    SettleSlice,
    SRMAlarm,
    SRMResult,
    SRMState,
    Stratum,
    VariantAnalysis,
    validate_manifest,
)
from modelrollout.api.crd import crd_document
from modelrollout.api.status import TargetSampling
from modelrollout.devstack.controlplane.env import LocalEnv
from modelrollout.devstack.controlplane.kube import apply_crds
from support.manifests import bad_manifests, merge_patch

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
TABLE: dict[str, Any] = bad_manifests()
CASES: list[dict[str, Any]] = TABLE["cases"]


def unique(name: str) -> str:
    return f"{name[:50].rstrip('-').replace('.', '-')}-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def crd(localenv: LocalEnv) -> dict[str, Any]:
    """The CRD rendered from the models (not the committed file), applied and Established."""
    document = crd_document()
    assert apply_crds(localenv.admin_kubeconfig, [document]) == [CRD_NAME]
    return document


@pytest.fixture(scope="module")
def mexp_namespace(k8s_admin: Any, crd: dict[str, Any]) -> Iterator[str]:
    core = client.CoreV1Api(k8s_admin)
    name = unique("t-crd-apiserver")
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"modelrollout.io/test": "true"}))
    )
    yield name
    try:
        core.delete_namespace(name)
    except ApiException as exc:
        if exc.status != 404:
            raise


def create(api: Any, namespace: str, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    body = copy.deepcopy(body)
    body["metadata"] = {**body.get("metadata", {}), "name": unique(body["metadata"]["name"])}
    created: dict[str, Any] = client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body, **kwargs
    )
    return created


def rejection(api: Any, namespace: str, body: dict[str, Any], status: int = 422) -> str:
    with pytest.raises(ApiException) as info:
        create(api, namespace, body)
    assert info.value.status == status, info.value.body
    message: str = json.loads(info.value.body)["message"]
    return message


def get_json(api: Any, path: str, accept: str = "application/json") -> dict[str, Any]:
    method, url, headers, _, _ = api.param_serialize(
        "GET", path, header_params={"Accept": accept}, auth_settings=["BearerToken"]
    )
    response = api.call_api(method, url, header_params=headers)
    response.read()
    assert response.status == 200, response.data
    data: dict[str, Any] = json.loads(response.data)
    return data


# --- the CRD -----------------------------------------------------------------------------------


def test_crd_is_established_with_its_names(k8s_admin: Any, crd: dict[str, Any]) -> None:
    current = client.ApiextensionsV1Api(k8s_admin).read_custom_resource_definition(CRD_NAME)
    conditions = {c.type: c.status for c in current.status.conditions}
    assert conditions["Established"] == "True"
    assert conditions["NamesAccepted"] == "True"
    assert current.status.accepted_names.short_names == ["mexp"]
    resources = get_json(k8s_admin, f"/apis/{GROUP}/{VERSION}")["resources"]
    by_name = {r["name"]: r for r in resources}
    assert by_name[PLURAL]["shortNames"] == ["mexp"]
    assert by_name[PLURAL]["categories"] == ["modelrollout"]
    assert by_name[PLURAL]["namespaced"] is True
    assert f"{PLURAL}/status" in by_name


def test_the_published_openapi_carries_the_descriptions(k8s_admin: Any, crd: dict[str, Any]) -> None:
    document = get_json(k8s_admin, f"/openapi/v3/apis/{GROUP}/{VERSION}")
    [schema] = [
        s for name, s in document["components"]["schemas"].items() if name.endswith("ModelExperiment")
    ]
    rollout = schema["properties"]["spec"]["properties"]["rollout"]["properties"]
    assert "Strictly increasing and ending at 100" in rollout["steps"]["description"]


# --- examples and defaults ---------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_accepted_with_the_same_defaults_as_python(
    k8s_admin: Any, mexp_namespace: str, path: Path
) -> None:
    manifest = yaml.safe_load(path.read_text())
    created = create(k8s_admin, mexp_namespace, manifest)
    # The apiserver's defaults and the models' defaults give the very same spec (and the apiserver
    # adds no field the models do not know: they forbid extra fields).
    assert ModelExperiment.model_validate(created).spec == validate_manifest(manifest).spec


def test_minimal_manifest_gets_its_defaults(k8s_admin: Any, mexp_namespace: str) -> None:
    created = create(
        k8s_admin, mexp_namespace, yaml.safe_load((ROOT / "examples" / "minimal.yaml").read_text())
    )
    name = created["metadata"]["name"]
    stored = client.CustomObjectsApi(k8s_admin).get_namespaced_custom_object(
        GROUP, VERSION, mexp_namespace, PLURAL, name
    )
    spec = stored["spec"]
    assert spec["rollout"] == {
        "steps": [10, 25, 50, 100],
        "minStepDuration": "15m",
        "minSamplesPerStep": 0,
        "interval": "30s",
    }
    assert spec["shadow"] == {
        "enabled": False,
        "mirrorPercent": 100,
        "duration": "30m",
        "maxDivergence": 0.05,
    }
    assert spec["analysis"]["alpha"] == 0.05
    assert spec["analysis"]["method"] == "sequential"
    assert spec["analysis"]["maxDuration"] == "14d"
    assert spec["analysis"]["onInconclusive"] == "keepChampion"
    assert spec["paused"] is False
    assert spec["metrics"]["primary"]["direction"] == "increase"
    assert spec["metrics"]["prometheus"]["timeout"] == "10s"
    assert "status" not in stored


# --- bad manifests -----------------------------------------------------------------------------


def test_there_are_at_least_30_bad_manifests() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_bad_manifest_is_rejected_naming_the_field(
    k8s_admin: Any, mexp_namespace: str, case: dict[str, Any]
) -> None:
    manifest = merge_patch(TABLE["base"], case["patch"])
    message = rejection(k8s_admin, mexp_namespace, manifest)
    assert f"{case['path']}: " in message, message
    assert case["message"] in message, message


def test_the_base_of_the_bad_manifests_is_accepted(k8s_admin: Any, mexp_namespace: str) -> None:
    create(k8s_admin, mexp_namespace, TABLE["base"])


def test_a_typo_is_rejected_with_strict_field_validation(k8s_admin: Any, mexp_namespace: str) -> None:
    manifest = merge_patch(TABLE["base"], {"spec": {"rollout": {"stepz": [10, 100]}}})
    with pytest.raises(ApiException) as info:
        create(k8s_admin, mexp_namespace, manifest, field_validation="Strict")
    assert info.value.status == 400
    assert 'unknown field "spec.rollout.stepz"' in json.loads(info.value.body)["message"]


# --- status ------------------------------------------------------------------------------------

NOW = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def progressing_status() -> ModelExperimentStatus:
    """A status at step 1 with every part of the loop's memory set."""
    counters = MetricCounters(successes=150.0, trials=1000.0)
    status = ModelExperimentStatus(
        observed_generation=1,
        phase=Phase.PROGRESSING,
        current_step=1,
        weights={"v6": 75, "v7": 25},
        analysis=AnalysisRecord(
            updated_at=NOW,
            planned_n=9257,
            variants={
                "v6": VariantAnalysis(n=3000, primary=MetricResult(n=3000, estimate=0.15)),
                "v7": VariantAnalysis(
                    n=1000,
                    primary=MetricResult(
                        n=1000,
                        estimate=0.1625,
                        difference=0.0125,
                        relative_lift=0.0833,
                        ci=Interval(low=-0.021, high=0.046),
                        p_value=0.71,
                        e_value=1.41,
                        planned_n=9257.0,
                        method="normal-mixture confidence sequence",
                    ),
                    guardrails={
                        "error-rate": GuardrailResult(
                            estimate=0.004,
                            champion_estimate=0.005,
                            difference=-0.001,
                            limit=0.0005,
                            p_value=1.0,
                        )
                    },
                    rule="collecting: 1000 of 9257 planned samples",
                ),
            },
            srm=SRMResult(
                p_value=0.9,
                observed_shares={"v6": 0.7501, "v7": 0.2499},
                expected_shares={"v6": 0.75, "v7": 0.25},
            ),
        ),
        started_at=NOW - timedelta(hours=1),
        step_started_at=NOW - timedelta(minutes=16),
        consecutive_errors=1,
        data_outage_since=NOW - timedelta(seconds=30),
        strata=[
            Stratum(
                step=0,
                weights={"v6": 90, "v7": 10},
                previous_weights={"v6": 100, "v7": 0},
                started_at=NOW - timedelta(hours=1),
                ended_at=NOW - timedelta(minutes=16),
                counted_from=NOW - timedelta(minutes=59),
                settle=Settle(reason=SettleReason.WEIGHTS_SEEN, seconds=60.0, log_likelihood_ratio=12.5),
                spacing=15.0,
                aligned=False,
                sampling={"v6": {"*": TargetSampling(samples=1000, seconds=2600.0, lost=12.0)},
                          "v7": {"*": TargetSampling(samples=110, seconds=2600.0)}},
                totals={"v6": {"click-through": counters}, "v7": {"click-through": counters}},
            ),
            Stratum(step=1, weights={"v6": 75, "v7": 25}, started_at=NOW - timedelta(minutes=16),
                    settling=[SettleSlice(end=NOW, samples={"v6": 7.0, "v7": 3.0},
                                          exposure={"v6": 15.0, "v7": 15.0})]),
        ],
        checkpoints={"click-through": NOW - timedelta(seconds=2)},
        sequential={
            "v7": {
                "click-through": SequentialState(
                    max_log_e_value=0.344, tau2=2.7e-4, ci=Interval(low=-0.021, high=0.046)
                ),
                "error-rate": SequentialState(max_log_e_value=0.0),
            }
        },
        srm=SRMState(epoch=1, max_log_e_value=0.02,
                     alarm=SRMAlarm(at=NOW, step=1, p_value=0.0001, observed_shares={"v7": 0.2})),
        dropped_challengers=[DroppedChallenger(name="v8", at=NOW - timedelta(minutes=5), reason="Worse")],
        applied_controls=AppliedControls(retry="1"),
    )
    status.set_condition(
        ConditionType.READY, ConditionStatus.TRUE, "Progressing", "step 1 of 4", now=NOW, generation=1
    )
    status.set_condition(
        ConditionType.METRICS_UNAVAILABLE,
        ConditionStatus.TRUE,
        "QueryFailed",
        "timeout after 10s",
        now=NOW,
        generation=1,
    )
    status.record(
        HistoryEntry(
            time=NOW - timedelta(minutes=16),
            from_phase=Phase.PROGRESSING,
            to_phase=Phase.PROGRESSING,
            from_step=0,
            to_step=1,
            weights={"v6": 75, "v7": 25},
            reason="StepAdvanced",
            message="step 0 lasted 44m with 1000 samples per variant",
            numbers={"samples": 1000, "pValue": 0.71},
        )
    )
    return status


def patch_status(
    api: Any, namespace: str, name: str, status: ModelExperimentStatus, *, exclude_none: bool
) -> dict[str, Any]:
    body = {"status": status.model_dump(by_alias=True, mode="json", exclude_none=exclude_none)}
    patched: dict[str, Any] = client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, body
    )
    return patched


@pytest.fixture
def experiment(k8s_admin: Any, mexp_namespace: str) -> dict[str, Any]:
    return create(k8s_admin, mexp_namespace, yaml.safe_load((ROOT / "examples" / "istio.yaml").read_text()))


def test_status_round_trips_through_the_apiserver(
    k8s_admin: Any, mexp_namespace: str, experiment: dict[str, Any]
) -> None:
    name = experiment["metadata"]["name"]
    status = progressing_status()
    patched = patch_status(k8s_admin, mexp_namespace, name, status, exclude_none=True)
    assert patched["metadata"]["generation"] == experiment["metadata"]["generation"]
    stored = client.CustomObjectsApi(k8s_admin).get_namespaced_custom_object_status(
        GROUP, VERSION, mexp_namespace, PLURAL, name
    )
    assert ModelExperimentStatus.model_validate(stored["status"]) == status
    assert ModelExperiment.model_validate(stored).status == status

    # A merge patch with the nulls of unset fields clears what the last status had set.
    status.data_outage_since = None
    status.consecutive_errors = 0
    status.applied_controls = None
    patched = patch_status(k8s_admin, mexp_namespace, name, status, exclude_none=False)
    assert "dataOutageSince" not in patched["status"]
    assert "appliedControls" not in patched["status"]
    assert ModelExperimentStatus.model_validate(patched["status"]) == status


def test_status_subresource_separates_spec_and_status(
    k8s_admin: Any, mexp_namespace: str, experiment: dict[str, Any]
) -> None:
    api = client.CustomObjectsApi(k8s_admin)
    name = experiment["metadata"]["name"]
    # Writing status through the main resource is ignored; writing spec bumps the generation.
    updated = api.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        mexp_namespace,
        PLURAL,
        name,
        {"spec": {"paused": True}, "status": {"phase": "Failed"}},
    )
    assert updated["metadata"]["generation"] == experiment["metadata"]["generation"] + 1
    assert "status" not in updated


def test_printer_columns_show_phase_step_weights_and_age(
    k8s_admin: Any, mexp_namespace: str, experiment: dict[str, Any]
) -> None:
    name = experiment["metadata"]["name"]
    patch_status(k8s_admin, mexp_namespace, name, progressing_status(), exclude_none=True)
    table = get_json(
        k8s_admin,
        f"/apis/{GROUP}/{VERSION}/namespaces/{mexp_namespace}/{PLURAL}/{name}",
        accept="application/json;as=Table;g=meta.k8s.io;v=v1",
    )
    columns = [c["name"] for c in table["columnDefinitions"]]
    assert columns == ["Name", "Phase", "Step", "Weights", "Age"]
    [row] = table["rows"]
    cells = dict(zip(columns, row["cells"], strict=True))
    assert cells["Name"] == name
    assert cells["Phase"] == "Progressing"
    assert cells["Step"] == 1
    assert json.loads(cells["Weights"]) == {"v6": 75, "v7": 25}
    assert cells["Age"]


def test_status_with_a_wrong_phase_is_rejected(
    k8s_admin: Any, mexp_namespace: str, experiment: dict[str, Any]
) -> None:
    with pytest.raises(ApiException) as info:
        client.CustomObjectsApi(k8s_admin).patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            mexp_namespace,
            PLURAL,
            experiment["metadata"]["name"],
            {"status": {"phase": "Done"}},
        )
    assert info.value.status == 422
    assert "status.phase: Unsupported value" in json.loads(info.value.body)["message"]


# --- kubectl -----------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_explain_and_get(
    localenv: LocalEnv, k8s_admin: Any, mexp_namespace: str, experiment: dict[str, Any]
) -> None:
    env = {
        "KUBECONFIG": str(localenv.admin_kubeconfig),
        "PATH": "/usr/bin:/bin:/usr/local/bin",
        "HOME": "/tmp",
    }
    explained = subprocess.run(
        ["kubectl", "explain", "mexp.spec.analysis.onInconclusive"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "promoteIfNonInferior" in explained
    patch_status(
        k8s_admin, mexp_namespace, experiment["metadata"]["name"], progressing_status(), exclude_none=True
    )
    listed = subprocess.run(
        ["kubectl", "get", "mexp", "-n", mexp_namespace, experiment["metadata"]["name"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    header, row = listed.splitlines()[:2]
    assert header.split() == ["NAME", "PHASE", "STEP", "WEIGHTS", "AGE"]
    assert row.split()[1:4] == ["Progressing", "1", '{"v6":75,"v7":25}']
