"""CPU time of one tick's analysis, for 2 and 5 variants.

Run on demand:  ``.venv/bin/python bench/stats_speed.py [--ticks 300]``

One tick's statistics, as the operator will run them for every live experiment: per challenger,
the always-valid test of the primary metric (stratified over the four rollout steps), two
one-sided guardrail tests, then the sequential SRM test over the variants and Holm across the
challengers. The baseline, measured in the same run, is the cheapest thing a tick could do: one
fixed-horizon z-test per challenger. Times are CPU time (``time.process_time``), so other load on
the machine inflates them less than wall time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from modelrollout.stats import multiple, proportions, sequential, srm, stratified

STEPS = (10, 25, 50, 100)


def make_tick(variants: int, seed: int) -> tuple[Callable[[], object], Callable[[], object]]:
    """Build (full analysis, baseline) closures over fixed synthetic counts for ``variants``."""
    rng = np.random.default_rng(seed)
    challengers = variants - 1
    # per step: trials per variant, and successes for the primary metric and two guardrails
    trials = rng.integers(2_000, 5_000, size=(len(STEPS), variants)).astype(float)
    primary = rng.binomial(trials.astype(int), 0.15).astype(float)
    errors = rng.binomial(trials.astype(int), 0.01).astype(float)
    slow = rng.binomial(trials.astype(int), 0.05).astype(float)
    total_t, total_p = trials.sum(axis=0), primary.sum(axis=0)
    total_e, total_s = errors.sum(axis=0), slow.sum(axis=0)
    expected = [[1.0 / variants] * variants for _ in STEPS]
    tau2 = sequential.tau2_for_proportions(0.15, 9257, 0.05)

    def full() -> object:
        p_values = []
        for j in range(1, challengers + 1):
            seq = sequential.sequential_test_proportions(
                total_p[0], total_t[0], total_p[j], total_t[j], alpha=0.05, tau2=tau2
            )
            strat = stratified.stratified_proportions(
                primary[:, 0].tolist(), trials[:, 0].tolist(), primary[:, j].tolist(), trials[:, j].tolist()
            )
            sequential.sequential_noninferiority(
                total_e[0],
                total_t[0],
                total_e[j],
                total_t[j],
                margin=0.10,
                relative=True,
                planned_n_per_variant=9257,
            )
            sequential.sequential_noninferiority(
                total_s[0],
                total_t[0],
                total_s[j],
                total_t[j],
                margin=0.01,
                planned_n_per_variant=9257,
            )
            p_values.append(min(seq.p_value, strat.p_value))
        srm.srm_sequential_stratified(trials.tolist(), expected)
        return multiple.holm(p_values, 0.05)

    def baseline() -> object:
        return [
            proportions.ztest_proportions(total_p[0], total_t[0], total_p[j], total_t[j])
            for j in range(1, challengers + 1)
        ]

    return full, baseline


def measure(fn: Callable[[], object], ticks: int) -> list[float]:
    fn()  # warm caches and imports
    samples = []
    for _ in range(ticks):
        start = time.process_time_ns()
        fn()
        samples.append((time.process_time_ns() - start) / 1e6)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=300)
    args = parser.parse_args()
    print(f"{'variants':>8} {'analysis p50 ms':>15} {'p99 ms':>8} {'baseline p50 ms':>15} {'ratio':>7}")
    for variants in (2, 5):
        full, base = make_tick(variants, seed=variants)
        f, b = measure(full, args.ticks), measure(base, args.ticks)
        p50, p99 = statistics.median(f), float(np.percentile(f, 99))
        b50 = statistics.median(b)
        print(f"{variants:>8} {p50:>15.3f} {p99:>8.3f} {b50:>15.3f} {p50 / b50:>7.1f}")
    print(f"\n({args.ticks} ticks each; target: well under 10 ms of CPU per tick)")


if __name__ == "__main__":
    main()
