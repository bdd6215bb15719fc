"""The operator's spec -> routing target mapping and routing error -> spec field path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from modelrollout.api.spec import ModelExperimentSpec
from modelrollout.controller.kube import target_error_to_spec_error, traffic_target, with_removed_keys
from modelrollout.routing import RouteNotFoundError, TargetError
from modelrollout.routing.errors import ObjectNotFoundError

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def spec_of(example: str) -> ModelExperimentSpec:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / example).read_text())
    return ModelExperimentSpec.model_validate(doc["spec"])


def test_istio_example_maps_to_its_virtual_service_and_routes() -> None:
    spec = spec_of("istio.yaml")
    target = traffic_target(spec, "shop")
    assert (target.namespace, target.name, target.routes) == ("shop", "ranker", ("primary",))
    assert target.champion == "v6"
    assert [(v.name, v.destination) for v in target.variants] == [("v6", "ranker-v6"), ("v7", "ranker-v7")]
    assert target.bucket_header == "x-modelrollout-bucket"


def test_service_example_maps_deployments_and_never_sticks() -> None:
    spec = spec_of("service.yaml")
    target = traffic_target(spec, "shop")
    assert target.bucket_header is None
    assert all(v.deployment for v in target.variants)
    assert target.name == spec.traffic.service.service  # type: ignore[union-attr]


def test_gateway_example_uses_rule_names() -> None:
    spec = spec_of("gateway-api.yaml")
    target = traffic_target(spec, "shop")
    gw = spec.traffic.gateway_api
    assert gw is not None
    if gw.rule_names is not None:
        assert target.routes == tuple(gw.rule_names)


def test_rule_indexes_without_a_client_is_a_target_error() -> None:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / "gateway-api.yaml").read_text())
    gw = doc["spec"]["traffic"]["gatewayAPI"]
    gw.pop("ruleNames", None)
    gw["ruleIndexes"] = [0]
    spec = ModelExperimentSpec.model_validate(doc["spec"])
    with pytest.raises(TargetError, match="ruleIndexes"):
        traffic_target(spec, "shop")


@pytest.mark.parametrize(
    ("error", "path"),
    [
        (ObjectNotFoundError("gone", kind="VirtualService", namespace="shop", name="ranker"),
         "spec.traffic.istio.virtualService"),
        (RouteNotFoundError("no route", kind="VirtualService", namespace="shop", name="ranker", route="x"),
         "spec.traffic.istio.routes"),
        (TargetError("no dest", kind="VirtualService", namespace="shop", name="ranker", variant="v7"),
         "spec.challengers[0].service"),
        (TargetError("no dest", kind="VirtualService", namespace="shop", name="ranker", variant="v6"),
         "spec.champion.service"),
    ],
)
def test_routing_errors_point_at_the_field_to_fix(error: TargetError, path: str) -> None:
    found = target_error_to_spec_error(spec_of("istio.yaml"), error)
    assert found.path == path
    assert str(error) in found.message


def test_removed_status_keys_are_sent_as_null_for_the_merge_patch() -> None:
    assert with_removed_keys({"phase": "Promoted"}, {"phase": "Progressing", "dataOutageSince": "t"}) == {
        "phase": "Promoted",
        "dataOutageSince": None,
    }
    assert with_removed_keys({"a": 1}, None) == {"a": 1}


def test_keys_removed_inside_nested_objects_are_sent_as_null_too() -> None:
    old = {"srm": {"epoch": 1, "alarm": {"at": "t"}},
           "sequential": {"v7": {"errors": {"tau2": 1.0}, "ctr": {}}},
           "strata": [{"step": 0, "settle": {"reason": "Unchanged"}}]}
    new = {"srm": {"epoch": 1}, "sequential": {"v7": {"ctr": {}}}, "strata": [{"step": 0}]}
    assert with_removed_keys(new, old) == {
        "srm": {"epoch": 1, "alarm": None},
        "sequential": {"v7": {"ctr": {}, "errors": None}},
        "strata": [{"step": 0}],  # a list is replaced whole by a merge patch
    }
