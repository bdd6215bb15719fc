"""Who is harmed: per-segment harm rules side by side on the same simulated request streams.

Run on demand:  ``.venv/bin/python bench/segments.py [--runs 2000] [--seed 1]``

Eight protected segments with traffic shares 40/20/10/10/5/5/5/5 % and champion success rates
5, 8, 15, 3, 10, 2, 12 and 6 % (a success rate: higher is better). A **tick** is 1,000 requests
(both arms, all segments; each request falls in a segment by the shares and in the challenger's arm
by the step's weight), and every rule looks after every tick. The challenger goes through the
operator's steps: **10 %** for ticks 1-200, **25 %** for ticks 201-400, **50 %** for ticks 401-700.
The horizon is **700 ticks** (700,000 requests); a "day" is 100 ticks, so the horizon is 7 days.

Rules (alpha 0.05 for the family):

* **ours, Bonferroni**: :func:`modelrollout.stats.segments.segment_harm`, the always-valid
  one-sided test of each segment (margin 0) at 0.05 / 8, harmed once the running maximum of its
  e-process reaches 8 / 0.05. Each segment's mixture is tuned to the plan: at that segment's
  challenger requests by the end of the horizon (its share of 220,000) and its champion rate.
* **ours, e-BH**: the same e-processes, e-BH at 0.05 on the e-values of each tick; the operator
  acts on the first tick that names a segment.
* **ours, fast_n=None**: Bonferroni with each mixture on the plan's scale alone (an option of
  ``segment_harm`` today).
* **plug-in variance (before)**: Bonferroni with the same mixtures, but the variance of the
  difference taken at each arm's own rate, as ``sequential_noninferiority`` did before 2026-12-03.
  On the steps a small arm whose success rate happens to fall also looks less variable, and the
  e-process overshoots: this bench found it (see ``docs/segments.md``).
* **naive**: a fixed-horizon one-sided z-test per segment at 0.05 at every tick, uncorrected.
* **Statsig-style**: the same z-test at the end of day 1, day 3 and the horizon (ticks 100, 300,
  700), each segment at 0.05 / 8 (Bonferroni over the segments, not over the looks).
* **global only** (masked harm): the pooled metric, the same always-valid test at 0.05 (tuned at
  the pooled plan); "better" is its mirror image (the challenger better than the champion).

Scenarios, each simulated once and judged by every rule:

* **global null**: the challenger equals the champion in every segment. The family-wise
  false-harm rate is the share of runs in which a rule ever names a segment. Four variants:
  **independent** or **correlated** segments, on the **steps** or at a **fixed 50 %** split.
  Correlated: a shared time-of-day factor multiplies every segment's rate (both arms) at every
  tick, ``(1 + 0.3 sin(2 pi t / 100 + phase)) * exp(0.15 Z_t - 0.15^2 / 2)``, with a random phase
  per run and ``Z_t`` standard normal per tick, the same for all segments. On the steps, rates that
  move in time also make the two arms' cumulative rates average different hours (the champion's
  traffic is front-loaded: Simpson's paradox), a bias of every cumulative comparison that has
  nothing to do with the dependence between segments; the fixed split isolates the dependence.
* **masked harm** (steps): the challenger is 2 % better (relative) in five segments (40, 20, 10,
  10 and one 5 % segment) and 20 % worse in one 5 % segment (10 % -> 8 %), so its pooled rate is
  0.3 % above the champion's. A rule rolls back at the first tick it names any segment; "named"
  counts the runs in which the harmed segment is among those named then, "wrong" the runs rolled
  back first for another segment. Exposure is the harmed segment's challenger requests before the
  rollback (to the horizon when never rolled back). "promoted" is the share of runs not rolled back
  by the horizon.

Ratios are against the naive rule in the same scenario. The figures are in ``docs/segments.md``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from modelrollout.stats import segments as sg
from modelrollout.stats import sequential as sq

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

ALPHA = 0.05
SHARES = np.array([0.40, 0.20, 0.10, 0.10, 0.05, 0.05, 0.05, 0.05])
RATES = np.array([0.05, 0.08, 0.15, 0.03, 0.10, 0.02, 0.12, 0.06])
K = len(SHARES)
TICK = 1_000  # requests per tick, both arms, all segments
STEPS = ((0.10, 200), (0.25, 200), (0.50, 300))  # (challenger weight, ticks)
TICKS = sum(n for _, n in STEPS)
DAY = 100  # ticks
STATSIG_LOOKS = (DAY, 3 * DAY, TICKS)  # day 1, day 3, the end
BEFORE_FULL_STEP = STEPS[0][1] + STEPS[1][1]  # the last tick before the 50 % step
HARMED = 4  # the 5 % segment at 10 %
LIFTS = np.array([0.02, 0.02, 0.02, 0.02, -0.20, 0.0, 0.02, 0.0])
CHUNK = 250  # runs simulated at once (memory)


def step_weights(fixed: float | None) -> FloatArray:
    if fixed is not None:
        return np.full(TICKS, fixed)
    return np.repeat([w for w, _ in STEPS], [n for _, n in STEPS]).astype(float)


@dataclass(frozen=True)
class Streams:
    """Cumulative counts, runs x ticks x segments."""

    champion_trials: FloatArray
    champion_successes: FloatArray
    challenger_trials: FloatArray
    challenger_successes: FloatArray


def simulate(
    runs: int, rng: np.random.Generator, *, lifts: FloatArray, correlated: bool, fixed: float | None
) -> Streams:
    n = rng.multinomial(TICK, SHARES, size=(runs, TICKS))
    chal = rng.binomial(n, step_weights(fixed)[None, :, None])
    champ = n - chal
    factor = np.ones((runs, TICKS, 1))
    if correlated:
        phase = rng.uniform(0, 2 * math.pi, size=(runs, 1))
        t = np.arange(1, TICKS + 1)[None, :]
        shock = np.exp(0.15 * rng.standard_normal((runs, TICKS)) - 0.15**2 / 2)
        factor = ((1 + 0.3 * np.sin(2 * math.pi * t / DAY + phase)) * shock)[..., None]
    p_champ = np.clip(RATES * factor, 0, 1)
    p_chal = np.clip(RATES * (1 + lifts) * factor, 0, 1)
    return Streams(
        np.cumsum(champ, axis=1).astype(float),
        np.cumsum(rng.binomial(champ, p_champ), axis=1).astype(float),
        np.cumsum(chal, axis=1).astype(float),
        np.cumsum(rng.binomial(chal, p_chal), axis=1).astype(float),
    )


def planned_challenger_requests(fixed: float | None) -> float:
    return float(step_weights(fixed).sum() * TICK)


def segment_tuning(
    fixed: float | None, fast_n: float | None = sq.FAST_DETECTION_N
) -> list[sq.GuardrailResult]:
    """Each segment's mixture, tuned to the plan before any data: at the segment's challenger
    requests by the horizon and its champion rate (read ``tau2`` and ``fast_tau2``)."""
    planned = planned_challenger_requests(fixed)
    return [
        sq.sequential_noninferiority(
            1, 100, 1, 100, margin=0.0, higher_is_worse=False, alpha=ALPHA / K,
            planned_n_per_variant=share * planned, baseline=rate, fast_n=fast_n,
        )
        for share, rate in zip(SHARES, RATES, strict=True)
    ]


def scales_of(tuned: list[sq.GuardrailResult]) -> list[tuple[FloatArray, FloatArray]]:
    return [sq.guardrail_scales(t.tau2, t.fast_tau2) for t in tuned]


def harm_log_e(
    s: Streams, scales: list[tuple[FloatArray, FloatArray]], *, sign: float = 1.0, plug_in: bool = False
) -> tuple[FloatArray, FloatArray]:
    """Log e-values against "the challenger is not worse" (sign 1; -1: "not better") and the z of
    the same contrast, runs x ticks x segments; 0 where an arm has no request yet.

    The variance is the module's: at the null boundary, both arms at the rate fitted under "no
    difference" (:func:`modelrollout.stats.sequential.restricted_rates`, with Agresti-Caffo
    pseudo-counts). ``plug_in`` uses each arm's own rate instead (the module before 2026-12-03)."""
    seen = (s.champion_trials > 0) & (s.challenger_trials > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        pc, pt, vc, vt = sq.proportions_difference(
            s.champion_successes, s.champion_trials, s.challenger_successes, s.challenger_trials
        )
        if not plug_in:
            qc, qt = sq.restricted_rates(
                s.champion_successes + 1.0, s.champion_trials + 2.0,
                s.challenger_successes + 1.0, s.challenger_trials + 2.0,
            )
            vc, vt = qc * (1 - qc) / s.champion_trials, qt * (1 - qt) / s.challenger_trials
    contrast = np.where(seen, sign * (pc - pt), 0.0)
    var = np.where(seen, vc + vt, 1.0)
    log_e = np.zeros_like(contrast)
    for j, (tau2s, weights) in enumerate(scales):
        log_e[..., j] = sq.scale_mixture_one_sided_log_e_value(contrast[..., j], var[..., j], tau2s, weights)
    log_e = np.where(seen, log_e, 0.0)
    return log_e, contrast / np.sqrt(var)


def pooled(s: Streams) -> Streams:
    return Streams(*(a.sum(axis=-1, keepdims=True) for a in (
        s.champion_trials, s.champion_successes, s.challenger_trials, s.challenger_successes
    )))


@dataclass(frozen=True)
class Evidence:
    """What the rules read, runs x ticks x segments."""

    log_e: FloatArray  # the module's e-processes
    log_e_plan_only: FloatArray  # the same with fast_n=None (the plan's scale alone)
    log_e_plug_in: FloatArray  # the same with each arm's plug-in variance (before 2026-12-03)
    z: FloatArray  # Wald z of the harm contrast, plug-in variance


@dataclass(frozen=True)
class Tuning:
    module: list[sq.GuardrailResult]
    plan_only: list[tuple[FloatArray, FloatArray]]

    @classmethod
    def of(cls, fixed: float | None) -> Tuning:
        return cls(segment_tuning(fixed), scales_of(segment_tuning(fixed, fast_n=None)))


def evidence(s: Streams, tuning: Tuning) -> Evidence:
    scales = scales_of(tuning.module)
    log_e, _ = harm_log_e(s, scales)
    plan_only, _ = harm_log_e(s, tuning.plan_only)
    plug_in, z = harm_log_e(s, scales, plug_in=True)
    return Evidence(log_e, plan_only, plug_in, z)


def check_against_module(s: Streams, log_e: FloatArray, tuned: list[sq.GuardrailResult]) -> None:
    """The vectorised e-processes are the module's (one run, one late tick)."""
    tick = TICKS - 1
    fam = [
        sg.SegmentCounts(
            f"s{j}", s.champion_successes[0, tick, j], s.champion_trials[0, tick, j],
            s.challenger_successes[0, tick, j], s.challenger_trials[0, tick, j],
            tau2=tuned[j].tau2, fast_tau2=tuned[j].fast_tau2,
        )
        for j in range(K)
    ]
    res = sg.segment_harm(fam, higher_is_worse=False, alpha=ALPHA)
    np.testing.assert_allclose([r.log_e_value for r in res.segments], log_e[0, tick], rtol=1e-9)


# --- rules: each returns named[runs, ticks, segments], whether the rule names the segment then ---


def bonferroni(log_e: FloatArray) -> BoolArray:
    out: BoolArray = np.maximum.accumulate(log_e, axis=1) > math.log(K / ALPHA)
    return out


def rule_naive(ev: Evidence) -> BoolArray:
    out: BoolArray = ev.z > stats.norm.ppf(1 - ALPHA)
    return out


def rule_statsig(ev: Evidence) -> BoolArray:
    looks = np.zeros(TICKS, dtype=bool)
    looks[[t - 1 for t in STATSIG_LOOKS]] = True
    out: BoolArray = (ev.z > stats.norm.ppf(1 - ALPHA / K)) & looks[None, :, None]
    return out


BASELINE = "naive: z at 0.05, every tick"
RULES: dict[str, Callable[[Evidence], BoolArray]] = {
    BASELINE: rule_naive,
    "Statsig-style: 3 looks, 0.05/8": rule_statsig,
    "ours: always-valid, Bonferroni": lambda ev: bonferroni(ev.log_e),
    "ours: always-valid, e-BH": lambda ev: sg.e_bh(ev.log_e, ALPHA),
    "ours, fast_n=None (plan only)": lambda ev: bonferroni(ev.log_e_plan_only),
    "plug-in variance (before)": lambda ev: bonferroni(ev.log_e_plug_in),
}


def first_tick(named: BoolArray) -> NDArray[np.int64]:
    """The first tick index (0-based) at which any segment is named; TICKS when never."""
    any_named = named.any(axis=-1)
    out: NDArray[np.int64] = np.where(any_named.any(axis=1), any_named.argmax(axis=1), TICKS)
    return out


@dataclass
class Tally:
    """Per-rule sums over chunks of runs."""

    runs: int = 0
    rolled_back: int = 0
    harm_named: int = 0
    harm_named_before_full: int = 0
    wrong_first: int = 0
    exposed_sum: float = 0.0
    exposed_caught: list[float] = field(default_factory=list)

    def add(self, named: BoolArray, exposure: FloatArray | None) -> None:
        at = first_tick(named)
        stopped = at < TICKS
        idx = np.minimum(at, TICKS - 1)
        runs = np.arange(named.shape[0])
        harm = stopped & named[runs, idx, HARMED]
        self.runs += named.shape[0]
        self.rolled_back += int(stopped.sum())
        self.harm_named += int(harm.sum())
        self.harm_named_before_full += int((harm & (at < BEFORE_FULL_STEP)).sum())
        self.wrong_first += int((stopped & ~harm).sum())
        if exposure is not None:
            exposed = np.where(stopped, exposure[runs, idx], exposure[:, -1])
            self.exposed_sum += float(exposed.sum())
            self.exposed_caught += list(exposed[harm])


def se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / n)


def ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base > 0 else "-"


def run_chunks(
    runs: int, rng: np.random.Generator, *, lifts: FloatArray, correlated: bool, fixed: float | None,
    each: Callable[[Streams, Evidence], None],
) -> None:
    tuning = Tuning.of(fixed)
    done = 0
    while done < runs:
        n = min(CHUNK, runs - done)
        s = simulate(n, rng, lifts=lifts, correlated=correlated, fixed=fixed)
        ev = evidence(s, tuning)
        if done == 0:
            check_against_module(s, ev.log_e, tuning.module)
        each(s, ev)
        done += n


def null_scenario(
    runs: int, rng: np.random.Generator, *, correlated: bool, fixed: float | None
) -> dict[str, Tally]:
    tallies = {rule: Tally() for rule in RULES}

    def each(s: Streams, ev: Evidence) -> None:
        for rule, apply in RULES.items():
            tallies[rule].add(apply(ev), None)

    run_chunks(runs, rng, lifts=np.zeros(K), correlated=correlated, fixed=fixed, each=each)
    return tallies


def print_null(label: str, tallies: dict[str, Tally]) -> None:
    base = tallies[BASELINE].rolled_back / tallies[BASELINE].runs
    for rule, t in tallies.items():
        rate = t.rolled_back / t.runs
        print(f"{label:<27} {rule:<32} {rate:>10.4f} {se(rate, t.runs):>8.4f} {ratio(rate, base):>9}")
        label = ""


def masked_scenario(runs: int, rng: np.random.Generator) -> tuple[dict[str, Tally], dict[str, float]]:
    tallies = {rule: Tally() for rule in RULES}
    g = sq.sequential_noninferiority(
        1, 100, 1, 100, margin=0.0, higher_is_worse=False, alpha=ALPHA,
        planned_n_per_variant=planned_challenger_requests(None), baseline=float(SHARES @ RATES),
    )
    pooled_scales = scales_of([g])
    glob = {"harm": 0.0, "harm_before_full": 0.0, "better": 0.0, "promoted": 0.0, "exposed": 0.0}

    def each(s: Streams, ev: Evidence) -> None:
        exposure = s.challenger_trials[..., HARMED]
        for rule, apply in RULES.items():
            tallies[rule].add(apply(ev), exposure)
        p = pooled(s)
        worse, _ = harm_log_e(p, pooled_scales)
        better, _ = harm_log_e(p, pooled_scales, sign=-1.0)
        worse_at = first_tick(np.maximum.accumulate(worse, axis=1) > math.log(1 / ALPHA))
        glob["harm"] += float((worse_at < TICKS).sum())
        glob["harm_before_full"] += float((worse_at < BEFORE_FULL_STEP).sum())
        glob["better"] += float((np.max(better, axis=(1, 2)) > math.log(1 / ALPHA)).sum())
        glob["promoted"] += float((worse_at == TICKS).sum())
        idx = np.minimum(worse_at, TICKS - 1)
        glob["exposed"] += float(exposure[np.arange(len(idx)), idx].sum())

    run_chunks(runs, rng, lifts=LIFTS, correlated=False, fixed=None, each=each)
    return tallies, {k: v / runs for k, v in glob.items()}


def print_masked(tallies: dict[str, Tally], glob: dict[str, float], runs: int) -> None:
    base = tallies[BASELINE]
    base_before = base.harm_named_before_full / base.runs
    base_exposed = base.exposed_sum / base.runs
    for rule, t in tallies.items():
        before = t.harm_named_before_full / t.runs
        median = float(np.median(t.exposed_caught)) if t.exposed_caught else math.nan
        mean_exposed = t.exposed_sum / t.runs
        print(
            f"{rule:<34} {before:>9.3f} {ratio(before, base_before):>7} {t.harm_named / t.runs:>7.3f} "
            f"{t.wrong_first / t.runs:>7.3f} {median:>9,.0f} {mean_exposed:>9,.0f} "
            f"{ratio(mean_exposed, base_exposed):>7} {1 - t.rolled_back / t.runs:>8.3f}"
        )
    print(
        f"{'global only: pooled, always-valid':<34} {glob['harm_before_full']:>9.3f} "
        f"{ratio(glob['harm_before_full'], base_before):>7} {glob['harm']:>7.3f} {'-':>7} {'-':>9} "
        f"{glob['exposed']:>9,.0f} {ratio(glob['exposed'], base_exposed):>7} {glob['promoted']:>8.3f}"
    )
    print(f"{'':<34} (the global test found the challenger better in {glob['better']:.3f} of the runs)")
    print(f"(MC s.e. of a rate p: sqrt(p (1 - p) / {runs}), at most {se(0.5, runs):.4f})")


NULLS = (
    ("independent, steps", False, None),
    ("correlated, steps", True, None),
    ("independent, fixed 50 %", False, 0.5),
    ("correlated, fixed 50 %", True, 0.5),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    pooled_lift = float(SHARES @ (RATES * LIFTS)) / float(SHARES @ RATES)
    print(
        f"{args.runs} runs per scenario, seed {args.seed}; 8 segments; a look every tick of {TICK:,} "
        f"requests; steps 10/25/50 % from ticks 1/{STEPS[0][1] + 1}/{BEFORE_FULL_STEP + 1}; horizon "
        f"{TICKS} ticks; alpha {ALPHA}\n"
    )
    print("Global null: the family-wise false-harm rate (runs in which a rule ever names a segment)")
    header = f"{'scenario':<27} {'rule':<32} {'false harm':>10} {'MC s.e.':>8} {'vs naive':>9}"
    print(header)
    print("-" * len(header))
    for label, correlated, fixed in NULLS:
        print_null(label, null_scenario(args.runs, rng, correlated=correlated, fixed=fixed))
        print()
    print(
        f"Masked harm: +2 % in five segments, -20 % in one 5 % segment (10 % -> 8 %); "
        f"pooled lift {pooled_lift:+.2%}; steps"
    )
    header = (
        f"{'rule':<34} {'named<50%':>9} {'vs':>7} {'named':>7} {'wrong':>7} "
        f"{'med.exp.':>9} {'mean exp.':>9} {'vs':>7} {'promoted':>8}"
    )
    print(header)
    print("-" * len(header))
    tallies, glob = masked_scenario(args.runs, rng)
    print_masked(tallies, glob, args.runs)
    elapsed = time.perf_counter() - started
    print(
        f"\nnamed<50%: the harmed segment named before the 50 % step (tick {BEFORE_FULL_STEP + 1}); "
        "named: by the horizon;\nwrong: rolled back first for another segment; med./mean exp.: the "
        "harmed segment's challenger requests\nbefore the rollback (median of the runs where it was "
        "named; mean of all runs, to the horizon when never\nrolled back); vs: against the naive rule. "
        f"({elapsed:.0f} s)"
    )


if __name__ == "__main__":
    main()
