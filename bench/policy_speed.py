"""CPU time of one ``decide()`` tick, for 2 and 5 variants.

Run on demand:  ``.venv/bin/python bench/policy_speed.py [--ticks 300]``

The experiment is driven to its second step (40 %, two strata) with synthetic cumulative counts
for the primary metric (a proportion) and two guardrails (a relative and an absolute margin),
then one ordinary tick is timed: the status of tick k with the observations of tick k + 1 (a
new tick, so every counter and statistic is updated, and the status is deep-copied as always).
The transition tick that follows (a step advance, with its second pass of the rules) is timed as
well. The baseline, measured in the same run, is the least a tick could do: a deep copy of the
same status and one fixed-horizon z-test per challenger. Times are CPU time
(``time.process_time_ns``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np

from modelrollout.api.observations import Observations
from modelrollout.api.spec import ModelExperimentSpec
from modelrollout.api.status import MetricCounters, ModelExperimentStatus, Phase
from modelrollout.policy import decide
from modelrollout.stats import proportions

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TICK = timedelta(seconds=30)


def make_spec(variants: int) -> ModelExperimentSpec:
    q = "{{variant}}"
    return ModelExperimentSpec.model_validate(
        {
            "champion": {"name": "v0", "service": "model-v0"},
            "challengers": [{"name": f"v{i}", "service": f"model-v{i}"} for i in range(1, variants)],
            "traffic": {"provider": "istio", "istio": {"virtualService": "model", "routes": ["default"]}},
            "rollout": {"steps": [20, 40, 80, 100], "minStepDuration": "2m"},
            "metrics": {
                "prometheus": {"address": "http://prometheus:9090"},
                "primary": {
                    "name": "conversion",
                    "type": "proportion",
                    "minimumDetectableEffect": 0.1,
                    "successes": f'c{{m="{q}"}}',
                    "trials": f'r{{m="{q}"}}',
                },
                "guardrails": [
                    {"name": "errors", "preset": "istio-error-rate", "maxRelativeIncrease": 0.5},
                    {
                        "name": "slow",
                        "preset": "istio-latency-over",
                        "thresholdMs": 500,
                        "maxAbsoluteIncrease": 0.02,
                    },
                ],
            },
        }
    )


class Traffic:
    """Cumulative counters grown tick by tick from the routes (all variants equal)."""

    def __init__(self, spec: ModelExperimentSpec, seed: int) -> None:
        self.spec = spec
        self.rng = np.random.default_rng(seed)
        self.totals: dict[str, dict[str, list[float]]] = {}

    def serve(self, weights: dict[str, int]) -> None:
        rates = {"conversion": 0.2, "errors": 0.01, "slow": 0.05}
        for variant, weight in weights.items():
            n = int(self.rng.binomial(6000, weight / 100.0))
            for metric, rate in rates.items():
                got = self.totals.setdefault(metric, {}).setdefault(variant, [0.0, 0.0])
                got[0] += float(self.rng.binomial(n, rate))
                got[1] += n

    def observations(self, at: datetime) -> Observations:
        metrics = {
            metric: {v: MetricCounters(successes=s, trials=n) for v, (s, n) in per.items()}
            for metric, per in self.totals.items()
        }
        return Observations(at=at, metrics=metrics, generation=1)


def make_tick(
    variants: int, seed: int
) -> tuple[Callable[[], object], Callable[[], object], Callable[[], object]]:
    """(steady tick, transition tick, baseline) closures over a status at the second step."""
    spec = make_spec(variants)
    traffic = Traffic(spec, seed)
    now = T0
    status = ModelExperimentStatus()
    decision = decide(spec, status, traffic.observations(now), now)
    while not (decision.status.current_step == 1 and decision.reason.startswith("Waiting")):
        traffic.serve(dict(decision.routes.weights))
        now += TICK
        decision = decide(spec, decision.status, traffic.observations(now), now)
        if decision.status.phase is not Phase.PROGRESSING:
            raise RuntimeError(f"the bench experiment ended early: {decision.message}")
    status = decision.status
    traffic.serve(dict(decision.routes.weights))
    steady_obs, steady_at = traffic.observations(now + TICK), now + TICK
    # A transition tick: the step's clock and samples are satisfied, so the next tick moves on.
    late = now + timedelta(hours=2)
    for _ in range(20):
        traffic.serve(dict(decision.routes.weights))
    late_obs = traffic.observations(late)
    champion = spec.champion.name
    names = [c.name for c in spec.challengers]

    def steady() -> object:
        return decide(spec, status, steady_obs, steady_at)

    def transition() -> object:
        return decide(spec, status, late_obs, late)

    def baseline() -> object:
        copy = status.model_copy(deep=True)
        totals = traffic.totals["conversion"]
        out = [proportions.ztest_proportions(*totals[champion], *totals[name]) for name in names]
        return copy, out

    probe = transition()
    if getattr(probe, "reason", None) != "StepAdvanced":
        raise RuntimeError(f"the transition tick did not advance: {getattr(probe, 'message', probe)}")
    return steady, transition, baseline


def measure(fn: Callable[[], object], ticks: int) -> list[float]:
    fn()  # warm caches and imports
    samples = []
    for _ in range(ticks):
        start = time.process_time_ns()
        fn()
        samples.append((time.process_time_ns() - start) / 1e6)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ticks", type=int, default=300)
    args = parser.parse_args()
    header = (
        f"{'variants':>8} {'tick p50 ms':>11} {'p99 ms':>7} {'transition p50 ms':>17} "
        f"{'baseline p50 ms':>15} {'tick/baseline':>13}"
    )
    print(header)
    for variants in (2, 5):
        steady, transition, base = make_tick(variants, seed=variants)
        s, t, b = measure(steady, args.ticks), measure(transition, args.ticks), measure(base, args.ticks)
        p50, p99 = statistics.median(s), float(np.percentile(s, 99))
        t50, b50 = statistics.median(t), statistics.median(b)
        print(f"{variants:>8} {p50:>11.3f} {p99:>7.3f} {t50:>17.3f} {b50:>15.3f} {p50 / b50:>13.1f}")
    print(f"\n({args.ticks} ticks each; target: about 5 ms of CPU per tick for 2 variants)")


if __name__ == "__main__":
    main()
