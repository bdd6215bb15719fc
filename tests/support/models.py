"""The simulated model servers of the e2e scenarios."""

from __future__ import annotations

from typing import Any

from modelrollout.devstack.sim.model_server import ModelConfig


def fast(variant: str, *, latency_median_ms: float = 2.0, latency_p99_ms: float = 10.0,
         **kwargs: Any) -> ModelConfig:
    """A model server of ``variant`` that answers in about 2 ms (10 ms at p99, unless the latency
    arguments say otherwise), seeded; ``kwargs`` set the rest (``click_rate``, ``error_rate``,
    ``disagreement``, ``segment_click_rates``, ...)."""
    return ModelConfig(variant, latency_median_ms=latency_median_ms, latency_p99_ms=latency_p99_ms,
                       seed=7, **kwargs)


def segmented(variant: str, click_rate: float, **segment_click_rates: float) -> ModelConfig:
    """A :func:`fast` model server whose users click at ``click_rate``, except those of the
    segments named (``mobile=0.10``), who click at the rate given for their segment."""
    return fast(variant, click_rate=click_rate, segment_click_rates=dict(segment_click_rates))
