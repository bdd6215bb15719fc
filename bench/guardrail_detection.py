"""Guardrail rules side by side: how fast a breach is caught, and how often a healthy challenger is
rolled back, on the same simulated request streams.

Run on demand:  ``.venv/bin/python bench/guardrail_detection.py [--runs 2000] [--seed 1]``

The challenger is at a 10 % step (the champion sees 9 requests for each of its). Its error rate is
judged at every look: every 5 challenger requests up to 200, then every 50 up to 20,000 (an
operator tick of 1 s at 5-50 challenger requests per second). Scenarios, each simulated once and
judged by every rule:

* **gross breach**: the champion fails 0.1 % of requests, the challenger 30 % (a broken model);
* **clear breach**: 1 % against 3 %;
* **at the margin**: 1 % against 1.5 %, exactly the allowed relative increase of 50 % (a healthy
  challenger by the guardrail's own definition: every rollback here is a false one);
* **A/A**: 1 % against 1 %;
* **success-rate A/A**: a rate where lower is worse (conversions of 5 % and of 2 %, margin 0):
  every rollback is a false one. Here a small arm whose rate happens to fall also looks less
  variable, which a plug-in variance takes for evidence.

Rules (relative margin 0.5 on error rates, 0 on success rates, alpha 0.05, the primary's planned
n 9,257 per variant):

* **ours (scale mixture)**: the operator's guardrail, the one-sided mixture SPRT mixed over
  scales from the plan down to 10 samples per variant, with the contrast's variance at the null
  boundary (the score test's, :func:`modelrollout.stats.sequential.restricted_rates`);
* **plug-in variance**: the same with each arm's variance at its own rate (the operator before
  2026-12-03)
  (:func:`modelrollout.stats.sequential.guardrail_scales`);
* **plan-only mixture**: the same test with the plan's scale alone (the operator before the scale
  mixture);
* **Flagger-style**: every ``interval: 1m`` (600 challenger requests at 10 rps), the challenger's
  error rate over that minute must stay below ``thresholdRange.max`` = 1.5 % (the margin applied
  to the champion's usual rate); 5 failed checks in a row roll back (``threshold: 5``);
* **Argo-style**: the same measurement every minute, more than 3 failures in total fail the
  analysis (``failureLimit: 3``).

Columns: the share of runs rolled back within the horizon, and the median challenger requests at
the rollback (of the runs rolled back), with the seconds that means at 10 challenger requests per
second.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from modelrollout.stats import sequential as sq

ALPHA = 0.05
MARGIN = 0.5
PLANNED_N = 9257
CHAMPION_RATIO = 9  # the champion's requests per challenger request at a 10 % step
FLAGGER_THRESHOLD = 5
ARGO_FAILURE_LIMIT = 3
RPS = 10.0  # challenger requests per second, to turn requests into seconds
INTERVAL_REQUESTS = 600  # the threshold rules' interval of 1 m at RPS


@dataclass(frozen=True)
class Streams:
    looks: NDArray[np.int64]  # challenger requests at each look
    champion_errors: NDArray[np.int64]  # cumulative, runs x looks
    challenger_errors: NDArray[np.int64]


def simulate(champion_rate: float, challenger_rate: float, runs: int, rng: np.random.Generator) -> Streams:
    looks = np.unique(np.concatenate([np.arange(5, 201, 5), np.arange(250, 20_001, 50)]))
    step = np.diff(np.concatenate([[0], looks]))
    champion = np.cumsum(rng.binomial(step * CHAMPION_RATIO, champion_rate, size=(runs, len(looks))), axis=1)
    challenger = np.cumsum(rng.binomial(step, challenger_rate, size=(runs, len(looks))), axis=1)
    return Streams(looks, champion, challenger)


def first_true(hit: NDArray[np.bool_], looks: NDArray[np.int64]) -> NDArray[np.float64]:
    """The challenger requests at the first look where ``hit`` holds (inf: never)."""
    out: NDArray[np.float64] = np.where(hit.any(axis=1), looks[hit.argmax(axis=1)], np.inf).astype(float)
    return out


@dataclass(frozen=True)
class Scenario:
    champion_rate: float
    challenger_rate: float
    higher_is_worse: bool = True
    margin: float = MARGIN


def mixture_rule(s: Streams, sc: Scenario, *, fast: bool, null_variance: bool = True) -> NDArray[np.float64]:
    n = s.looks[None, :]
    sign = 1.0 if sc.higher_is_worse else -1.0
    f = 1.0 + sign * sc.margin
    pc, pt, vc, vt = sq.proportions_difference(s.champion_errors, CHAMPION_RATIO * n, s.challenger_errors, n)
    if null_variance:
        qc, qt = sq.restricted_rates(
            s.champion_errors + 1.0, CHAMPION_RATIO * n + 2.0, s.challenger_errors + 1.0, n + 2.0, factor=f
        )
        vc, vt = qc * (1.0 - qc) / (CHAMPION_RATIO * n), qt * (1.0 - qt) / n
    tuned = sq.sequential_noninferiority(
        1, 1000, 1, 1000, margin=sc.margin, relative=True, higher_is_worse=sc.higher_is_worse,
        planned_n_per_variant=PLANNED_N, baseline=sc.champion_rate,
        fast_n=sq.FAST_DETECTION_N if fast else None,
    )
    tau2s, weights = sq.guardrail_scales(tuned.tau2, tuned.fast_tau2)
    log_e = sq.scale_mixture_one_sided_log_e_value(sign * (pt - f * pc), vt + f * f * vc, tau2s, weights)
    return first_true(log_e > math.log(1.0 / ALPHA), s.looks)


def window_failures(s: Streams, sc: Scenario) -> tuple[NDArray[np.bool_], NDArray[np.int64]]:
    """At each interval's end, whether the challenger's rate over the interval is beyond the
    threshold (the margin applied to the champion's usual rate); and those looks."""
    at = np.flatnonzero(s.looks % INTERVAL_REQUESTS == 0)
    errors = s.challenger_errors[:, at]
    window = np.diff(errors, axis=1, prepend=0) / INTERVAL_REQUESTS
    if sc.higher_is_worse:
        failed: NDArray[np.bool_] = window > sc.champion_rate * (1.0 + sc.margin)
    else:
        failed = window < sc.champion_rate * (1.0 - sc.margin)
    return failed, s.looks[at]


def flagger_rule(s: Streams, sc: Scenario) -> NDArray[np.float64]:
    failed, looks = window_failures(s, sc)
    run = np.zeros(failed.shape[0], dtype=np.int64)
    hit = np.zeros_like(failed)
    for j in range(failed.shape[1]):
        run = np.where(failed[:, j], run + 1, 0)
        hit[:, j] = run >= FLAGGER_THRESHOLD
    return first_true(hit, looks)


def argo_rule(s: Streams, sc: Scenario) -> NDArray[np.float64]:
    failed, looks = window_failures(s, sc)
    return first_true(np.cumsum(failed, axis=1) > ARGO_FAILURE_LIMIT, looks)


SCENARIOS = {
    "gross breach (0.1 % -> 30 %)": Scenario(0.001, 0.30),
    "clear breach (1 % -> 3 %)": Scenario(0.01, 0.03),
    "at the margin (1 % -> 1.5 %)": Scenario(0.01, 0.015),
    "A/A (1 % -> 1 %)": Scenario(0.01, 0.01),
    "success A/A (5 %, lower worse)": Scenario(0.05, 0.05, higher_is_worse=False, margin=0.0),
    "success A/A (2 %, lower worse)": Scenario(0.02, 0.02, higher_is_worse=False, margin=0.0),
}
RULES = {
    "ours (scale mixture)": lambda s, c: mixture_rule(s, c, fast=True),
    "plug-in variance": lambda s, c: mixture_rule(s, c, fast=True, null_variance=False),
    "plan-only mixture": lambda s, c: mixture_rule(s, c, fast=False),
    "Flagger-style, threshold 5": flagger_rule,
    "Argo-style, failureLimit 3": argo_rule,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    print(f"{args.runs} runs per scenario, seed {args.seed}; looks every 5 then 50 challenger requests; "
          f"time at {RPS:g} challenger rps\n")
    header = f"{'scenario':<32} {'rule':<28} {'rolled back':>11} {'median requests':>16} {'seconds':>8}"
    print(header)
    print("-" * len(header))
    for scenario, sc in SCENARIOS.items():
        streams = simulate(sc.champion_rate, sc.challenger_rate, args.runs, rng)
        baseline: float | None = None
        for rule, apply in RULES.items():
            at = apply(streams, sc)
            caught = np.isfinite(at)
            share = float(caught.mean())
            median = float(np.median(at[caught])) if caught.any() else math.nan
            if baseline is None:
                baseline = median
            comparable = baseline is not None and math.isfinite(baseline) and math.isfinite(median)
            ratio = f" ({median / baseline:.1f}x)" if comparable and rule != next(iter(RULES)) else ""
            print(f"{scenario:<32} {rule:<28} {share:>11.3f} {median:>16,.0f} {median / RPS:>8.1f}{ratio}")
        print()
    elapsed = time.perf_counter() - started
    print(f"(ratios: median requests against ours in the same scenario; {elapsed:.1f} s)")


if __name__ == "__main__":
    main()
