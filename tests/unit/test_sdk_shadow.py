"""modelrollout.sdk.shadow: comparing predictions and counting the comparisons."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from modelrollout.sdk import ShadowComparator, predictions_differ

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("live", "shadow", "differ"),
    [
        ({"item": 3, "score": 0.5}, {"item": 3, "score": 0.5}, False),
        ({"item": 3, "score": 0.5}, {"item": 4, "score": 0.5}, True),
        ({"item": 3}, {"item": 3, "extra": 1}, True),
        ([1, 2, 3], [1, 2, 3], False),
        ([1, 2, 3], [1, 2], True),
        ("cat", "cat", False),
        ("cat", "dog", True),
        (True, 1, True),
        (None, None, False),
        (1, 1.0, False),
    ],
)
def test_predictions_differ(live: object, shadow: object, differ: bool) -> None:
    assert predictions_differ(live, shadow) is differ


def test_numeric_tolerance_is_relative_to_the_larger_magnitude() -> None:
    assert not predictions_differ(100.0, 100.4, tolerance=0.01)
    assert predictions_differ(100.0, 102.0, tolerance=0.01)
    assert not predictions_differ({"score": 0.500}, {"score": 0.505}, tolerance=0.01)
    assert predictions_differ({"score": 0.5}, {"score": 0.52}, tolerance=0.01)


def test_counters() -> None:
    registry = CollectorRegistry()
    comparator = ShadowComparator(registry)
    comparator.prepare("v8", "v6")
    assert comparator.record("v7", "v6", {"item": 1}, {"item": 1}) is False
    assert comparator.record("v7", "v6", {"item": 1}, {"item": 2}) is True
    assert comparator.record("v7", "v6", {"item": 5}, {"item": 5}) is False

    def value(name: str, variant: str) -> float | None:
        return registry.get_sample_value(name, {"variant": variant, "baseline": "v6"})

    assert value("modelrollout_shadow_compared_total", "v7") == 3
    assert value("modelrollout_shadow_differing_total", "v7") == 1
    assert value("modelrollout_shadow_compared_total", "v8") == 0
    assert value("modelrollout_shadow_differing_total", "v8") == 0
    assert b'modelrollout_shadow_differing_total{baseline="v6",variant="v7"} 1.0' in generate_latest(registry)
