"""Decision rules side by side on the same simulated streams.

Run on demand:  ``.venv/bin/python bench/stats_decisions.py [--runs 2000] [--seed 1]``

Three scenarios are simulated once each (A/A, challenger better by the MDE, challenger worse by
the MDE), and every rule below is applied to the very same cumulative counts:

* **ours (sequential)** -- the operator's default: the mixture-SPRT confidence sequence checked at
  every look; promote when it lies above 0, roll back when below; at ``max_n`` keep the champion.
* **fixed horizon** -- one two-proportion z-test at the planned n.
* **naive peeking** -- that z-test at every look, stopping at the first p < alpha.
* **Flagger-style** -- at every look, the challenger's own rate over the last window must stay
  above ``thresholdRange.min`` = champion's usual rate x (1 - tolerance); 5 failed checks roll
  back (Flagger's ``threshold: 5``); when the schedule ends (the planned n) with fewer, it
  promotes.
* **Argo-style** -- at every look, the measurement ``challenger rate / champion rate`` over the last
  window must be >= 1 - tolerance; more than 3 failed measurements (``failureLimit: 3``) fail the
  analysis and roll back; when the schedule ends (the planned n) it promotes.

Both threshold rules run twice: strict (tolerance = the MDE) and loose (tolerance = 3 x the MDE).

Flagger and Argo Rollouts are configured as their documentation suggests for a canary analysis:
a threshold on a query per interval, with a failure budget. Neither compares the variants with a
test, so their "promote" is not evidence that the challenger is better.

Columns: false promotions (A/A promoted), wrong rollbacks (A/A rolled back), power (better
challenger promoted), harm shipped (worse challenger promoted), harm caught (worse challenger
rolled back), and the median samples per variant at the decision (better challenger).
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from modelrollout.stats.montecarlo import Streams, decide_runs, simulate_streams
from modelrollout.stats.power import sample_size_proportions

FLAGGER_THRESHOLD = 5  # failed checks before rollback (Flagger's analysis.threshold)
ARGO_FAILURE_LIMIT = 3  # failed measurements tolerated (Argo's failureLimit)


@dataclass(frozen=True)
class Outcome:
    """Per-run result of a rule: +1 promoted, -1 rolled back, 0 no verdict; and n at the verdict."""

    sign: NDArray[np.int64]
    n_at: NDArray[np.float64]


def _window_rates(streams: Streams) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Each arm's rate over the window since the previous look (what an interval query returns)."""
    n = streams.n_per_variant.astype(np.float64)
    dn = np.diff(np.concatenate([[0.0], n]))[None, :]
    dc = np.diff(streams.control_successes, axis=1, prepend=0) / dn
    dt = np.diff(streams.treatment_successes, axis=1, prepend=0) / dn
    return dc, dt


def _budget_rule(failed: NDArray[np.bool_], budget: int, streams: Streams, horizon: int) -> Outcome:
    """Roll back at the look where failures exceed ``budget``; promote at the end of the schedule."""
    n = streams.n_per_variant
    last = int(np.nonzero(n >= horizon)[0][0]) if (n >= horizon).any() else n.size - 1
    failures = np.cumsum(failed[:, : last + 1], axis=1)
    over = failures > budget
    rolled = over.any(axis=1)
    look = np.where(rolled, np.argmax(over, axis=1), last)
    sign = np.where(rolled, -1, 1).astype(np.int64)
    return Outcome(sign=sign, n_at=n[look].astype(np.float64))


def flagger_style(streams: Streams, tolerance: float, horizon: int) -> Outcome:
    _, dt = _window_rates(streams)
    failed = dt < streams.baseline * (1.0 - tolerance)
    # Flagger rolls back when failed checks reach the threshold, i.e. exceed threshold - 1.
    return _budget_rule(failed, FLAGGER_THRESHOLD - 1, streams, horizon)


def argo_style(streams: Streams, tolerance: float, horizon: int) -> Outcome:
    dc, dt = _window_rates(streams)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(dc > 0, dt / np.where(dc > 0, dc, 1.0), np.inf)
    failed = ratio < 1.0 - tolerance
    return _budget_rule(failed, ARGO_FAILURE_LIMIT, streams, horizon)


def ours_and_classics(streams: Streams, method: str, planned: int) -> Outcome:
    d = decide_runs(streams, method, alpha=0.05, planned_n_per_variant=planned)
    return Outcome(sign=d.sign, n_at=d.n_at_decision)


#: The threshold rules at a strict tolerance (the MDE) and a loose one (3 x the MDE): a threshold
#: per window is either noisy (wrong rollbacks) or blind (harm shipped); no setting is both right.
LOOSE = 3.0
RULES = (
    "ours (sequential)",
    "fixed horizon",
    "naive peeking",
    "Flagger-style strict",
    "Flagger-style loose",
    "Argo-style strict",
    "Argo-style loose",
)


def apply(rule: str, streams: Streams, mde: float, planned: int) -> Outcome:
    if rule == "ours (sequential)":
        return ours_and_classics(streams, "sequential", planned)
    if rule == "fixed horizon":
        return ours_and_classics(streams, "fixed", planned)
    if rule == "naive peeking":
        return ours_and_classics(streams, "naive", planned)
    tolerance = mde * (LOOSE if rule.endswith("loose") else 1.0)
    if rule.startswith("Flagger"):
        return flagger_style(streams, tolerance, planned)
    return argo_style(streams, tolerance, planned)


def _median(values: NDArray[np.float64]) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=float, default=0.15)
    parser.add_argument("--mde", type=float, default=0.10, help="relative")
    parser.add_argument("--looks", type=int, default=100, help="looks up to twice the planned n")
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    planned = sample_size_proportions(args.baseline, args.mde, relative=True).sample_size_per_variant
    max_n = 2 * planned
    look_every = max(1, max_n // args.looks)
    started = time.perf_counter()
    scenarios = {
        name: simulate_streams(
            args.baseline,
            lift,
            lift_type="relative",
            look_every=look_every,
            max_n_per_variant=max_n,
            runs=args.runs,
            seed=args.seed + i,
        )
        for i, (name, lift) in enumerate((("aa", 0.0), ("better", args.mde), ("worse", -args.mde)))
    }
    results = {
        rule: {name: apply(rule, s, args.mde, planned) for name, s in scenarios.items()} for rule in RULES
    }
    elapsed = time.perf_counter() - started

    se = math.sqrt(0.05 * 0.95 / args.runs)
    print(
        f"baseline {args.baseline:.0%}, MDE {args.mde:.0%} relative, alpha 0.05, power 0.8: "
        f"planned n {planned:,} per variant; looks every {look_every:,} per variant up to {max_n:,}; "
        f"{args.runs:,} runs per scenario, seed {args.seed} (MC s.e. at 5 %: {se:.3f})\n"
    )
    header = (
        f"{'rule':<21} {'false promo':>11} {'wrong rollback':>14} {'power':>7} "
        f"{'harm shipped':>12} {'harm caught':>11} {'median n (better)':>18} {'vs planned n':>12}"
    )
    print(header)
    print("-" * len(header))
    for rule in RULES:
        r = results[rule]
        med = _median(r["better"].n_at[r["better"].sign > 0])
        ratio = med / planned if math.isfinite(med) else math.nan
        print(
            f"{rule:<21} {np.mean(r['aa'].sign > 0):>11.3f} {np.mean(r['aa'].sign < 0):>14.3f} "
            f"{np.mean(r['better'].sign > 0):>7.3f} {np.mean(r['worse'].sign > 0):>12.3f} "
            f"{np.mean(r['worse'].sign < 0):>11.3f} {med:>18,.0f} {ratio:>12.2f}"
        )
    print(f"\n(simulation and all rules: {elapsed:.1f} s)")


if __name__ == "__main__":
    main()
