"""The CRD rendered from the models: structural, bounded for CEL, carrying the rules, and not drifted."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from pydantic import BaseModel

from modelrollout.api import (
    Analysis,
    DivergencePreset,
    MetricType,
    ModelExperimentSpec,
    ModelExperimentStatus,
    Phase,
    Preset,
    Provider,
    Rollout,
    Shadow,
)
from modelrollout.api.cli import register
from modelrollout.api.crd import (
    CHART_OUTPUT,
    DEFAULT_OUTPUT,
    HEADER,
    SchemaError,
    check_crd,
    crd_document,
    openapi_schema,
    render_crd,
    write_crd,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return crd_document()


@pytest.fixture(scope="module")
def version(crd: dict[str, Any]) -> dict[str, Any]:
    [only] = crd["spec"]["versions"]
    return dict(only)


@pytest.fixture(scope="module")
def spec_schema(version: dict[str, Any]) -> dict[str, Any]:
    return dict(version["schema"]["openAPIV3Schema"]["properties"]["spec"])


def nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from nodes(child, f"{path}.{name}")
    if "items" in schema:
        yield from nodes(schema["items"], f"{path}[*]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}{{*}}")


def at(schema: dict[str, Any], dotted: str) -> dict[str, Any]:
    node = schema
    for part in dotted.split("."):
        node = node["items"] if part == "[*]" else node["properties"][part]
    return node


def rules_of(node: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {r["message"]: r for r in node.get("x-kubernetes-validations", [])}


# --- drift -------------------------------------------------------------------------------------


@pytest.mark.parametrize("relative", [DEFAULT_OUTPUT, CHART_OUTPUT], ids=str)
def test_committed_crd_matches_the_models(relative: Path) -> None:
    diff = check_crd(ROOT / relative)
    assert not diff, "CRD drifted from the models; run `modelrollout crd`:\n" + "\n".join(diff[:60])


def test_rendering_is_deterministic_and_parses() -> None:
    text = render_crd()
    assert text == render_crd()
    assert text.startswith(HEADER)
    assert yaml.safe_load(text) == crd_document()


class _GoYamlLoader(yaml.SafeLoader):
    """PyYAML reading booleans as Go's YAML 1.1 parser does (kubectl and helm): y and n too."""

    bool_values: ClassVar[dict[str, bool]] = {**yaml.SafeLoader.bool_values, "y": True, "n": False}


_GoYamlLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:y|Y|n|N)$"), list("yYnN"))


def test_kubectl_and_helm_read_the_same_crd() -> None:
    # The status field `n` was written unquoted: Go's parser made it `false`, and helm install failed.
    text = render_crd()
    assert yaml.load(text, Loader=_GoYamlLoader) == crd_document()


# --- shape -------------------------------------------------------------------------------------


def test_names_scope_and_subresources(crd: dict[str, Any], version: dict[str, Any]) -> None:
    assert crd["metadata"]["name"] == "modelexperiments.modelrollout.io"
    spec = crd["spec"]
    assert (spec["group"], spec["scope"]) == ("modelrollout.io", "Namespaced")
    assert spec["names"]["kind"] == "ModelExperiment"
    assert spec["names"]["shortNames"] == ["mexp"]
    assert spec["names"]["categories"] == ["modelrollout"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: (c["type"], c["jsonPath"]) for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Phase": ("string", ".status.phase"),
        "Step": ("integer", ".status.currentStep"),
        "Weights": ("string", ".status.weights"),
        "Age": ("date", ".metadata.creationTimestamp"),
    }


def test_schema_is_structural(version: dict[str, Any]) -> None:
    forbidden = {
        "$ref",
        "anyOf",
        "allOf",
        "oneOf",
        "not",
        "title",
        "nullable",
        "uniqueItems",
        "const",
        "$defs",
        "prefixItems",
        "x-kubernetes-preserve-unknown-fields",
    }
    root = version["schema"]["openAPIV3Schema"]
    for path, node in nodes(root):
        assert "type" in node, path
        assert not forbidden & node.keys(), (path, forbidden & node.keys())
        if node["type"] == "object" and path not in ("", ".metadata"):
            assert "properties" in node or "additionalProperties" in node, path
        assert not ("properties" in node and "additionalProperties" in node), path


def test_spec_lists_and_strings_are_bounded_for_cel_costs(spec_schema: dict[str, Any]) -> None:
    for path, node in nodes(spec_schema):
        if node["type"] == "array":
            assert "maxItems" in node, path
        if node["type"] == "string":
            assert "maxLength" in node or "enum" in node, path


def test_status_has_no_defaults_and_is_bounded(version: dict[str, Any]) -> None:
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    for path, node in nodes(status):
        assert "default" not in node, path
        if node["type"] == "array":
            assert "maxItems" in node, path
    assert status["properties"]["history"]["maxItems"] == 50
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert status["properties"]["phase"]["enum"] == [p.value for p in Phase]
    assert at(status, "conditions.[*].lastTransitionTime")["format"] == "date-time"


def test_every_field_is_described(version: dict[str, Any]) -> None:
    root = version["schema"]["openAPIV3Schema"]
    for section in ("spec", "status"):
        for path, node in nodes(root["properties"][section], section):
            if path.endswith("[*]") or path.endswith("{*}"):
                continue
            assert node.get("description"), f"{path} has no description (kubectl explain shows nothing)"


# --- enums and defaults ------------------------------------------------------------------------


def test_enums_come_from_the_models(spec_schema: dict[str, Any]) -> None:
    assert at(spec_schema, "traffic.provider")["enum"] == ["istio", "gatewayAPI", "service"]
    assert [p.value for p in Provider] == ["istio", "gatewayAPI", "service"]
    preset_enum = [p.value for p in Preset]
    assert at(spec_schema, "metrics.primary.preset")["enum"] == preset_enum
    assert at(spec_schema, "metrics.guardrails.[*].preset")["enum"] == preset_enum
    assert at(spec_schema, "metrics.secondary.[*].type")["enum"] == [t.value for t in MetricType]
    assert at(spec_schema, "shadow.divergence.preset")["enum"] == [p.value for p in DivergencePreset]
    assert at(spec_schema, "analysis.method")["enum"] == ["sequential", "fixed", "bayesian"]
    assert at(spec_schema, "analysis.goal")["enum"] == ["superiority", "nonInferiority"]
    assert at(spec_schema, "analysis.onInconclusive")["enum"] == [
        "keepChampion",
        "promoteIfNonInferior",
        "pause",
    ]


@pytest.mark.parametrize(
    ("field", "model"), [("rollout", Rollout), ("shadow", Shadow), ("analysis", Analysis)]
)
def test_crd_defaults_equal_the_model_defaults(
    spec_schema: dict[str, Any], field: str, model: type[BaseModel]
) -> None:
    expected = model().model_dump(by_alias=True, mode="json", exclude_none=True)
    assert spec_schema["properties"][field]["default"] == expected
    for name, value in expected.items():
        assert spec_schema["properties"][field]["properties"][name]["default"] == value


def test_bounds_are_open_api_v3(spec_schema: dict[str, Any]) -> None:
    alpha = at(spec_schema, "analysis.alpha")
    assert alpha == {
        **alpha,
        "minimum": 0,
        "exclusiveMinimum": True,
        "maximum": 0.5,
        "exclusiveMaximum": True,
    }
    mde = at(spec_schema, "metrics.primary.minimumDetectableEffect")
    assert (mde["minimum"], mde["exclusiveMinimum"]) == (0, True)
    steps = at(spec_schema, "rollout.steps")
    assert (steps["minItems"], steps["maxItems"], steps["items"]["minimum"], steps["items"]["maximum"]) == (
        1,
        20,
        1,
        100,
    )
    assert at(spec_schema, "challengers")["x-kubernetes-list-type"] == "map"
    assert at(spec_schema, "challengers")["x-kubernetes-list-map-keys"] == ["name"]
    assert at(spec_schema, "traffic.istio.routes")["x-kubernetes-list-type"] == "set"


def test_required_fields(spec_schema: dict[str, Any]) -> None:
    assert spec_schema["required"] == ["champion", "challengers", "traffic", "metrics"]
    assert at(spec_schema, "traffic")["required"] == ["provider"]
    assert at(spec_schema, "metrics.primary")["required"] == ["name", "minimumDetectableEffect"]


# --- CEL rules ---------------------------------------------------------------------------------


def test_the_cross_field_rules_are_in_the_crd(spec_schema: dict[str, Any]) -> None:
    rollout = rules_of(at(spec_schema, "rollout"))
    assert rollout["steps must be strictly increasing"]["fieldPath"] == ".steps"
    assert rollout["the last step must be 100"]["rule"] == "self.steps[self.steps.size() - 1] == 100"
    top = rules_of(spec_schema)
    assert top["challenger names must differ from the champion's name"]["fieldPath"] == ".challengers"
    assert "traffic.provider service needs the champion's deployment" in top
    traffic = rules_of(at(spec_schema, "traffic"))
    assert traffic["provider istio needs the istio block"]["reason"] == "FieldValueRequired"
    assert "the service block is only allowed with provider service" in traffic
    name = rules_of(at(spec_schema, "challengers.[*].name"))
    assert any("must be a DNS label" in m for m in name)
    template = rules_of(at(spec_schema, "metrics.primary.successes"))
    placeholder = next(r for m, r in template.items() if m.startswith("unknown placeholder"))
    assert ".replace('{{variant}}', '')" in placeholder["rule"]
    primary = rules_of(at(spec_schema, "metrics.primary"))
    assert "give either a preset or queries, not both" in primary
    assert "a latency preset needs thresholdMs" in primary
    assert "an absolute minimumDetectableEffect of a proportion must be below 1" in primary
    analysis = rules_of(at(spec_schema, "analysis"))
    assert analysis["goal nonInferiority needs nonInferiorityMargin"]["fieldPath"] == ".nonInferiorityMargin"


def test_rules_never_use_the_duplicate_reason(version: dict[str, Any]) -> None:
    # The apiserver drops the message of FieldValueDuplicate; the rules must keep theirs.
    for path, node in nodes(version["schema"]["openAPIV3Schema"]):
        for rule in node.get("x-kubernetes-validations", []):
            assert rule.get("reason", "FieldValueInvalid") != "FieldValueDuplicate", path
            assert list(rule)[:2] == ["rule", "message"], path


# --- the converter -----------------------------------------------------------------------------


def test_converter_refuses_what_a_structural_schema_cannot_say() -> None:
    class Either(BaseModel):
        value: int | str

    with pytest.raises(SchemaError, match="anyOf is only supported for Optional fields"):
        openapi_schema(Either)

    class Loose(BaseModel):
        anything: Any

    with pytest.raises(SchemaError, match="needs a type"):
        openapi_schema(Loose)


def test_spec_and_status_schemas_render_on_their_own() -> None:
    assert openapi_schema(ModelExperimentSpec)["type"] == "object"
    assert "default" not in openapi_schema(ModelExperimentStatus, keep_defaults=False)["properties"]["phase"]


# --- the command -------------------------------------------------------------------------------


def run_crd(*argv: str) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="modelrollout")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["crd", *argv])
    code: int = args.func(args)
    return code


def test_crd_command_writes_then_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "crds" / "modelexperiment.yaml"
    assert run_crd("--out", str(out)) == 0
    assert out.read_text() == render_crd()
    assert run_crd("--out", str(out)) == 0
    assert f"{out}: unchanged" in capsys.readouterr().out
    assert run_crd("--check", "--out", str(out)) == 0
    out.write_text(out.read_text().replace("    - mexp\n", "    - mx\n"))
    assert run_crd("--check", "--out", str(out)) == 1
    report = capsys.readouterr().out
    assert "differs from the models (+1 -1 lines); run `modelrollout crd`" in report
    assert "-    - mx" in report
    assert "+    - mexp" in report
    missing = tmp_path / "nowhere.yaml"
    assert run_crd("--check", "--out", str(missing)) == 1
    assert write_crd(out) is True
    assert write_crd(out) is False


def test_crd_command_defaults_to_both_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_crd() == 0
    assert (tmp_path / DEFAULT_OUTPUT).is_file()
    assert not (tmp_path / CHART_OUTPUT).exists()
    (tmp_path / "charts" / "modelrollout").mkdir(parents=True)
    assert run_crd() == 0
    assert (tmp_path / CHART_OUTPUT).read_text() == render_crd()
    assert run_crd("--check") == 0
    capsys.readouterr()
    assert run_crd("--out", "-") == 0
    assert capsys.readouterr().out == render_crd()
    assert run_crd("--check", "--out", "-") == 2
