"""experiment_manifest of the simulated world: segments and extra guardrails land in a valid spec."""

from __future__ import annotations

import pytest

from modelrollout.api.experiment import manifest_errors
from modelrollout.devstack.sim.world import experiment_manifest

pytestmark = pytest.mark.unit

P95 = {"name": "p95-latency", "preset": "istio-latency-quantile", "quantile": 0.95,
       "maxRelativeIncrease": 0.2}
SEGMENTS = {"label": "segment", "protected": [{"value": "mobile"}]}


def test_default_manifest_has_the_error_rate_guardrail_and_no_segments() -> None:
    manifest = experiment_manifest("ranker-v7")
    metrics = manifest["spec"]["metrics"]
    assert [g["name"] for g in metrics["guardrails"]] == ["error-rate"]
    assert "segments" not in metrics
    assert manifest_errors(manifest) == []


def test_segments_and_extra_guardrails_are_put_into_the_manifest() -> None:
    manifest = experiment_manifest("ranker-v7", segments=SEGMENTS, extra_guardrails=[P95])
    metrics = manifest["spec"]["metrics"]
    assert [g["name"] for g in metrics["guardrails"]] == ["error-rate", "p95-latency"]
    assert metrics["guardrails"][1] == P95
    assert metrics["segments"] == SEGMENTS
    assert manifest_errors(manifest) == []


def test_extra_guardrails_follow_the_given_guardrails() -> None:
    manifest = experiment_manifest("ranker-v7", guardrails=[], extra_guardrails=[P95])
    assert manifest["spec"]["metrics"]["guardrails"] == [P95]
    assert manifest_errors(manifest) == []
