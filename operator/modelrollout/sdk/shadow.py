"""Shadow comparison counters: how often a mirrored (shadow) prediction differs from the live one.

During the shadow phase the challenger answers a copy of live requests; its answer is thrown
away, but it is compared with the champion's answer to the same request. The share of differing
predictions is the divergence that ``spec.shadow.maxDivergence`` bounds. An application (or the
mesh stand-in, which does it on behalf of the simulated models) records each comparison with a
:class:`ShadowComparator`, which exports two Prometheus counters:

``modelrollout_shadow_compared_total{variant, baseline}``
    comparisons made for the shadow ``variant`` against the live ``baseline``;
``modelrollout_shadow_differing_total{variant, baseline}``
    those where the predictions differed.

The divergence over a window is then
``sum(increase(modelrollout_shadow_differing_total{variant="v7"}[5m]))
/ sum(increase(modelrollout_shadow_compared_total{variant="v7"}[5m]))``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter

COMPARED = "modelrollout_shadow_compared"
DIFFERING = "modelrollout_shadow_differing"


def predictions_differ(live: Any, shadow: Any, *, tolerance: float = 0.0) -> bool:
    """Whether two JSON-like predictions differ.

    Booleans differ from numbers. Numbers differ when ``|a - b| > tolerance * max(1, |a|, |b|)``;
    mappings and sequences are compared element by element; everything else with ``!=``.
    """
    if isinstance(live, bool) or isinstance(shadow, bool):  # JSON true is not the number 1
        return type(live) is not type(shadow) or live != shadow
    if isinstance(live, int | float) and isinstance(shadow, int | float):
        if tolerance <= 0.0:
            return bool(live != shadow)
        scale = max(1.0, abs(float(live)), abs(float(shadow)))
        return not math.isclose(float(live), float(shadow), rel_tol=0.0, abs_tol=tolerance * scale)
    if isinstance(live, Mapping) and isinstance(shadow, Mapping):
        if set(live) != set(shadow):
            return True
        return any(predictions_differ(live[k], shadow[k], tolerance=tolerance) for k in live)
    if (isinstance(live, Sequence) and isinstance(shadow, Sequence)
            and not isinstance(live, str | bytes) and not isinstance(shadow, str | bytes)):
        if len(live) != len(shadow):
            return True
        return any(predictions_differ(a, b, tolerance=tolerance) for a, b in zip(live, shadow, strict=True))
    return bool(live != shadow)


class ShadowComparator:
    """Counts shadow comparisons per (shadow variant, live baseline) in a Prometheus registry."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY, *, tolerance: float = 0.0) -> None:
        self.tolerance = tolerance
        self.compared = Counter(COMPARED, "Shadow predictions compared with the live prediction.",
                                ["variant", "baseline"], registry=registry)
        self.differing = Counter(DIFFERING, "Shadow predictions that differed from the live prediction.",
                                 ["variant", "baseline"], registry=registry)

    def prepare(self, variant: str, baseline: str) -> None:
        """Create both series at zero, so that ``increase()`` sees the first comparisons."""
        self.compared.labels(variant, baseline)
        self.differing.labels(variant, baseline)

    def record(self, variant: str, baseline: str, live: Any, shadow: Any) -> bool:
        """Count one comparison; return whether the predictions differed."""
        differ = predictions_differ(live, shadow, tolerance=self.tolerance)
        self.compared.labels(variant, baseline).inc()
        if differ:
            self.differing.labels(variant, baseline).inc()
        else:
            self.differing.labels(variant, baseline)
        return differ
