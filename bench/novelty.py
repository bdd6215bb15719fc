"""Novelty effects: a lift that decays is not promoted; a lift that lasts keeps its power.

Run on demand:  ``.venv/bin/python bench/novelty.py [--runs 4000] [--seed 1]``

The experiments are simulated on a clock (:func:`modelrollout.stats.montecarlo.simulate_time_streams`:
binomial counts per hour for each arm, an even split) and decided look by look as the operator
decides (:func:`~modelrollout.stats.montecarlo.decide_over_time`): the always-valid sequential
test of the primary metric every hour; a significantly worse challenger is rolled back at once; a
significantly better one is promoted once ``minDuration`` has passed, unless the novelty check has
found its lift decaying; at ``maxDuration`` the champion stays.

Each scenario is drawn once and decided three ways on the very same counts:

* **no minDuration** -- promote as soon as the test is significant (the baseline of time);
* **minDuration** -- minDuration 7d, no novelty check (the baseline of the check);
* **minDuration + novelty** -- minDuration 7d and the novelty check (windows of 1d, alpha 0.05).

Settings: baseline 10 %, MDE 5 % relative (alpha 0.05, power 0.8: a planned n of 57,763 per
variant), maxDuration 14d, a look every hour. The traffic brings the planned n in ``--plan-days``
days (2 by default). Scenarios: a lift that starts at +20 % and decays to 0 with a half-life of
1 day (the novelty effect); a constant lift at the MDE (power); no lift (A/A: false promotions).
A second table varies the traffic and the half-life: the check sees a decay only where the
windows hold enough samples to tell their lifts apart. A third gives the power at the MDE and the
time to promotion at several traffics, where the power is not already 1.

Columns: promoted (share of runs), its ratio to the minDuration-only baseline of the same run,
held by the novelty check, rolled back, and the median hours from the start to a promotion.
"""

from __future__ import annotations

import argparse
import math
import time

from modelrollout.stats.montecarlo import (
    TimeStreams,
    TimeSummary,
    decide_over_time,
    fixed_horizon_n_two_proportions,
    simulate_time_streams,
)

BASELINE = 0.10
MDE = 0.05
MIN_DURATION_HOURS = 7 * 24.0
MAX_HOURS = 14 * 24.0
WINDOW_HOURS = 24.0
START_LIFT = 0.20

RULES = ("no minDuration", "minDuration", "minDuration + novelty")


def _decide(streams: TimeStreams, rule: str) -> TimeSummary:
    return decide_over_time(
        streams,
        mde=MDE,
        min_duration_hours=0.0 if rule == "no minDuration" else MIN_DURATION_HOURS,
        novelty=rule.endswith("novelty"),
        novelty_window_hours=WINDOW_HOURS,
    )


def _ratio(x: float, base: float) -> str:
    return f"{x / base:.2f}" if base > 0 else "n/a"


def _hours(x: float) -> str:
    return f"{x:.0f}" if math.isfinite(x) else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--plan-days", type=float, default=2.0, help="days of traffic to the planned n")
    args = parser.parse_args()

    planned = fixed_horizon_n_two_proportions(BASELINE, MDE)
    started = time.perf_counter()

    def streams(
        lift: float, decay_to: float | None, half_life: float | None, plan_days: float, seed: int
    ) -> TimeStreams:
        return simulate_time_streams(
            BASELINE,
            lift,
            decay_to=decay_to,
            half_life_hours=half_life,
            samples_per_hour=planned / (24.0 * plan_days),
            look_hours=1.0,
            max_hours=MAX_HOURS,
            runs=args.runs,
            seed=seed,
        )

    scenarios = {
        "+20 % decaying to 0 (half-life 1d)": streams(START_LIFT, 0.0, 24.0, args.plan_days, args.seed),
        "constant lift at the MDE (+5 %)": streams(MDE, None, None, args.plan_days, args.seed + 1),
        "A/A (no lift)": streams(0.0, None, None, args.plan_days, args.seed + 2),
    }
    results = {name: {rule: _decide(s, rule) for rule in RULES} for name, s in scenarios.items()}

    sensitivity = {}
    for i, plan_days in enumerate((2.0, 4.0, 7.0)):
        for j, half_life in enumerate((12.0, 24.0, 48.0)):
            s = streams(START_LIFT, 0.0, half_life, plan_days, args.seed + 10 + 3 * i + j)
            sensitivity[(plan_days, half_life)] = (
                _decide(s, "minDuration"),
                _decide(s, "minDuration + novelty"),
            )
    power = {}
    for i, plan_days in enumerate((2.0, 4.0, 7.0, 14.0)):
        s = streams(MDE, None, None, plan_days, args.seed + 30 + i)
        power[plan_days] = tuple(_decide(s, rule) for rule in RULES)
    elapsed = time.perf_counter() - started

    se = math.sqrt(0.05 * 0.95 / args.runs)
    print(
        f"baseline {BASELINE:.0%}, MDE {MDE:.0%} relative, alpha 0.05, power 0.8: planned n {planned:,} "
        f"per variant in {args.plan_days:g} days of traffic ({planned / (24 * args.plan_days):,.0f} per "
        f"variant per hour); a look every hour; minDuration {MIN_DURATION_HOURS / 24:g}d, maxDuration "
        f"{MAX_HOURS / 24:g}d; novelty windows {WINDOW_HOURS:g}h, alpha 0.05; {args.runs:,} runs per "
        f"scenario, seed {args.seed} (MC s.e. at 5 %: {se:.3f})\n"
    )
    header = (
        f"{'scenario':<36} {'rule':<22} {'promoted':>8} {'vs minDuration':>14} {'novelty held':>12} "
        f"{'rolled back':>11} {'median h to promotion':>21}"
    )
    print(header)
    print("-" * len(header))
    for name, by_rule in results.items():
        base = by_rule["minDuration"].promote_rate
        for rule, r in by_rule.items():
            print(
                f"{name:<36} {rule:<22} {r.promote_rate:>8.3f} {_ratio(r.promote_rate, base):>14} "
                f"{r.novelty_held_rate:>12.3f} {r.rollback_rate:>11.3f} "
                f"{_hours(r.median_hours_to_promotion):>21}"
            )
        print()

    print("A lift of +20 % decaying to 0: share promoted, minDuration 7d without / with the novelty check")
    header = f"{'days to planned n':>17} {'half-life':>9} {'without':>8} {'with':>6} {'with / without':>14}"
    print(header)
    print("-" * len(header))
    for (plan_days, half_life), (without, with_check) in sensitivity.items():
        print(
            f"{plan_days:>17g} {half_life:>8g}h {without.promote_rate:>8.3f} {with_check.promote_rate:>6.3f} "
            f"{_ratio(with_check.promote_rate, without.promote_rate):>14}"
        )
    print("\nA constant lift at the MDE: power (share promoted) and median hours to promotion, by rule")
    header = (
        f"{'days to planned n':>17} {'power: none':>11} {'minDuration':>11} {'+ novelty':>9} "
        f"{'+ novelty / minDuration':>23} {'hours: none':>11} {'minDuration':>11} {'+ novelty':>9}"
    )
    print(header)
    print("-" * len(header))
    for plan_days, (none, only, both) in power.items():
        print(
            f"{plan_days:>17g} {none.promote_rate:>11.3f} {only.promote_rate:>11.3f} "
            f"{both.promote_rate:>9.3f} {_ratio(both.promote_rate, only.promote_rate):>23} "
            f"{_hours(none.median_hours_to_promotion):>11} {_hours(only.median_hours_to_promotion):>11} "
            f"{_hours(both.median_hours_to_promotion):>9}"
        )
    print(f"\n(simulation and all rules: {elapsed:.1f} s)")


if __name__ == "__main__":
    main()
