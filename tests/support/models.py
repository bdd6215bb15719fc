"""The simulated model servers of the e2e scenarios."""

from __future__ import annotations

from typing import Any

from modelrollout.devstack.sim.model_server import ModelConfig


def fast(variant: str, **kwargs: Any) -> ModelConfig:
    """A model server of ``variant`` that answers in about 2 ms (10 ms at p99), seeded;
    ``kwargs`` set the rest (``click_rate``, ``error_rate``, ``disagreement``, ...)."""
    return ModelConfig(variant, latency_median_ms=2.0, latency_p99_ms=10.0, seed=7, **kwargs)
