"""Vectorised Monte Carlo of whole experiments on a proportion metric.

:func:`simulate_streams` draws cumulative success counts per look for a control and a treatment
arm (``runs x looks`` arrays, equal traffic per arm), once. Decision rules are then applied to
the very same streams, so that they are compared on identical data:

* ``sequential``: the always-valid mixture-SPRT confidence sequence of
  :mod:`modelrollout.stats.sequential`, checked at every look (the operator's default);
* ``group-sequential``: Lan–DeMets O'Brien–Fleming-type boundaries of
  :mod:`modelrollout.stats.group_sequential` at information fractions ``n / max_n``;
* ``fixed``: a pooled two-proportion z-test evaluated once, at the first look with
  ``n >= planned n`` (or at the last look when ``max_n`` is smaller);
* ``naive``: the same z-test at every look, stopping at the first ``p < alpha`` -- the
  counter-example: its false-positive rate grows with the number of looks.

:func:`run_method` summarises one rule (:class:`SimulationSummary`); :func:`decide_runs` gives
the per-run look and direction of the decision for benchmarks that need more;
:func:`simulate` does both steps for several rules.

References
----------
Armitage, P., McPherson, C. K., Rowe, B. C. (1969). Repeated significance tests on accumulating
data. JRSS A 132(2), 235-244 (the inflation of naive repeated testing).
Johari, R., Koomen, P., Pekelis, L., Walsh, D. (2017). Peeking at A/B tests. KDD 2017.
Lan, K. K. G., DeMets, D. L. (1983). Discrete sequential boundaries for clinical trials.
Biometrika 70(3), 659-663.
Fleiss, J. L., Levin, B., Paik, M. C. (2003). Statistical Methods for Rates and Proportions,
3rd ed., section 4.2 (sample size for comparing two proportions).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import special

from modelrollout.errors import InvalidInputError
from modelrollout.stats import _validate
from modelrollout.stats.group_sequential import lan_demets_boundaries
from modelrollout.stats.power import sample_size_proportions
from modelrollout.stats.sequential import (
    normal_mixture_log_e_value,
    proportions_difference,
    tau2_for_proportions,
)

METHODS: tuple[str, ...] = ("sequential", "group-sequential", "fixed", "naive")
LIFT_TYPES: tuple[str, ...] = ("relative", "absolute")
DIRECTIONS: tuple[str, ...] = ("increase", "decrease")
#: Upper bound on runs x looks, to fail clearly instead of exhausting memory.
MAX_CELLS = 50_000_000


def _int_at_least(name: str, value: Any, lower: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidInputError(f"{name} must be an integer, got {value!r}")
    if value < lower:
        raise InvalidInputError(f"{name} must be >= {lower}, got {value!r}")
    return int(value)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InvalidInputError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def _shifted_rate(baseline: float, lift: float, lift_type: str, what: str) -> float:
    rate = baseline * (1.0 + lift) if lift_type == "relative" else baseline + lift
    if not 0.0 < rate < 1.0:
        raise InvalidInputError(
            f"{what}: baseline {baseline!r} with {lift_type} lift {lift!r} gives a rate of {rate!r}, "
            "which must be in (0, 1)"
        )
    return rate


def fixed_horizon_n_two_proportions(
    baseline: float,
    mde: float,
    *,
    mde_type: str = "relative",
    alpha: float = 0.05,
    power: float = 0.8,
    direction: str = "increase",
) -> int:
    """Per-variant n of the two-sided two-proportion z-test at an MDE in ``direction``.

    A thin adapter over :func:`modelrollout.stats.power.sample_size_proportions` (pooled variance
    under H0, unpooled under H1); 9,257 for a 15 % baseline, 10 % relative MDE, alpha 0.05 and
    power 0.8.
    """
    _choice("mde_type", mde_type, LIFT_TYPES)
    _choice("direction", direction, DIRECTIONS)
    m = _validate.positive("mde", mde)
    signed = m if direction == "increase" else -m
    return sample_size_proportions(
        baseline, signed, relative=mde_type == "relative", alpha=alpha, power=power
    ).sample_size_per_variant


@dataclass(frozen=True)
class Streams:
    """Cumulative counts per look for ``runs`` simulated experiments.

    ``control_successes`` and ``treatment_successes`` have shape ``(runs, looks)``;
    ``n_per_variant[k]`` is the cumulative number of trials of *each* arm at look k.
    """

    control_successes: NDArray[np.int64]
    treatment_successes: NDArray[np.int64]
    n_per_variant: NDArray[np.int64]
    baseline: float
    treatment_rate: float
    lift: float
    lift_type: str
    look_every: int
    max_n_per_variant: int
    seed: int | None

    @property
    def runs(self) -> int:
        return int(self.control_successes.shape[0])

    @property
    def looks(self) -> int:
        return int(self.control_successes.shape[1])


def simulate_streams(
    baseline: float,
    lift: float,
    *,
    lift_type: str = "relative",
    look_every: int,
    max_n_per_variant: int,
    runs: int,
    seed: int | None = None,
) -> Streams:
    """Draw cumulative binomial counts per look for control (rate ``baseline``) and treatment.

    Parameters
    ----------
    baseline
        Control rate in (0, 1).
    lift
        True effect: treatment rate is ``baseline * (1 + lift)`` (relative) or
        ``baseline + lift`` (absolute); 0 for an A/A test.
    lift_type
        ``"relative"`` or ``"absolute"``.
    look_every
        Trials per arm between looks (>= 1).
    max_n_per_variant
        Trials per arm at the last look (>= look_every); the last look may be a short one.
    runs
        Number of simulated experiments (>= 1).
    seed
        Seed of numpy's default generator, for reproducible streams.

    Returns
    -------
    Streams
    """
    p_c = _validate.probability("baseline", baseline, open_interval=True)
    lf = _validate.finite("lift", lift)
    _choice("lift_type", lift_type, LIFT_TYPES)
    p_t = _shifted_rate(p_c, lf, lift_type, "lift")
    every = _int_at_least("look_every", look_every, 1)
    max_n = _int_at_least("max_n_per_variant", max_n_per_variant, every)
    r = _int_at_least("runs", runs, 1)
    if seed is not None:
        _int_at_least("seed", seed, 0)
    n_grid = np.minimum(np.arange(1, -(-max_n // every) + 1, dtype=np.int64) * every, max_n)
    looks = int(n_grid.size)
    if r * looks > MAX_CELLS:
        raise InvalidInputError(
            f"runs x looks = {r} x {looks} exceeds {MAX_CELLS:,}; use fewer runs or a larger look_every"
        )
    steps = np.diff(np.concatenate(([0], n_grid)))
    rng = np.random.default_rng(seed)
    control = np.cumsum(rng.binomial(steps, p_c, size=(r, looks)), axis=1, dtype=np.int64)
    treatment = np.cumsum(rng.binomial(steps, p_t, size=(r, looks)), axis=1, dtype=np.int64)
    return Streams(
        control_successes=control,
        treatment_successes=treatment,
        n_per_variant=n_grid,
        baseline=p_c,
        treatment_rate=p_t,
        lift=lf,
        lift_type=lift_type,
        look_every=every,
        max_n_per_variant=max_n,
        seed=seed,
    )


@dataclass(frozen=True)
class RunDecisions:
    """Per-run outcome of one decision rule.

    ``look_index[i]`` is the 0-based look at which run i decided, or -1; ``sign[i]`` is +1 when
    the challenger was found better, -1 when worse, 0 when undecided; ``n_at_decision[i]`` is the
    per-variant n at that look (NaN when undecided).
    """

    method: str
    look_index: NDArray[np.int64]
    sign: NDArray[np.int64]
    n_at_decision: NDArray[np.float64]
    planned_n_per_variant: int
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SimulationSummary:
    """Operating characteristics of one decision rule over simulated runs.

    Rates are fractions of all runs: ``reject_rate = promote_rate + rollback_rate`` and
    ``inconclusive_rate = 1 - reject_rate``. ``*_se`` are binomial Monte Carlo standard errors.
    ``median_n_at_decision`` and ``mean_n_at_decision`` are per variant, over the runs that
    decided (NaN when none did).
    """

    method: str
    runs: int
    looks: int
    alpha: float
    reject_rate: float
    reject_rate_se: float
    promote_rate: float
    promote_rate_se: float
    rollback_rate: float
    inconclusive_rate: float
    median_n_at_decision: float
    mean_n_at_decision: float
    planned_n_per_variant: int
    max_n_per_variant: int
    look_every: int
    baseline: float
    treatment_rate: float
    direction: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict; NaN and infinities become None."""

        def clean(v: Any) -> Any:
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, list | tuple):
                return [clean(x) for x in v]
            if isinstance(v, np.generic):
                v = v.item()
            if isinstance(v, float) and not math.isfinite(v):
                return None
            return v

        out = {k: clean(getattr(self, k)) for k in self.__dataclass_fields__}
        return out


def _pooled_z(streams: Streams) -> NDArray[np.float64]:
    n = streams.n_per_variant.astype(np.float64)[None, :]
    cs = streams.control_successes.astype(np.float64)
    ts = streams.treatment_successes.astype(np.float64)
    pbar = (cs + ts) / (2.0 * n)
    se = np.sqrt(pbar * (1.0 - pbar) * 2.0 / n)
    diff = (ts - cs) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, diff / np.where(se > 0, se, 1.0), 0.0)
    out: NDArray[np.float64] = z
    return out


def _first_true(mask: NDArray[np.bool_]) -> NDArray[np.int64]:
    first = np.argmax(mask, axis=1)
    out: NDArray[np.int64] = np.where(mask.any(axis=1), first, -1).astype(np.int64)
    return out


def decide_runs(
    streams: Streams,
    method: str,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    mde: float | None = None,
    mde_type: str = "relative",
    planned_n_per_variant: int | None = None,
    direction: str = "increase",
    tau2: float | None = None,
) -> RunDecisions:
    """Apply one decision rule to every run of ``streams``; see the module docstring.

    ``planned_n_per_variant`` defaults to :func:`fixed_horizon_n_two_proportions` of ``mde``
    at the streams' baseline; it sets the fixed test's look and tunes the sequential mixture
    (unless ``tau2`` is given).
    """
    _choice("method", method, METHODS)
    a = _validate.alpha(alpha, upper=0.5)
    _choice("direction", direction, DIRECTIONS)
    _choice("mde_type", mde_type, LIFT_TYPES)
    if planned_n_per_variant is None:
        if mde is None:
            raise InvalidInputError("give mde (with power) or planned_n_per_variant")
        plan = fixed_horizon_n_two_proportions(
            streams.baseline, mde, mde_type=mde_type, alpha=a, power=power, direction=direction
        )
    else:
        plan = _int_at_least("planned_n_per_variant", planned_n_per_variant, 1)
    n = streams.n_per_variant
    info: dict[str, Any] = {}

    cs, ts = streams.control_successes, streams.treatment_successes
    diff_sign = np.sign(ts - cs)  # equal n per arm: sign of the difference of rates
    if method == "sequential":
        if tau2 is None:
            t2 = tau2_for_proportions(streams.baseline, plan, a)
        else:
            t2 = _validate.positive("tau2", tau2)
        pc, pt, vc, vt = proportions_difference(cs, n[None, :], ts, n[None, :])
        log_e = normal_mixture_log_e_value(pt - pc, vc + vt, t2)
        look = _first_true(log_e > math.log(1.0 / a))
        info["tau2"] = t2
    elif method == "group-sequential":
        design = lan_demets_boundaries(n / streams.max_n_per_variant, a, "obrien-fleming")
        look = design.first_crossing(_pooled_z(streams))
        info["boundaries_first_last"] = [design.boundaries[0], design.boundaries[-1]]
    elif method == "naive":
        z = _pooled_z(streams)
        look = _first_true(2.0 * special.ndtr(-np.abs(z)) < a)
    else:  # fixed
        at_or_after = np.nonzero(n >= plan)[0]
        k = int(at_or_after[0]) if at_or_after.size else int(n.size - 1)
        z = _pooled_z(streams)[:, k]
        look = np.where(2.0 * special.ndtr(-np.abs(z)) < a, k, -1).astype(np.int64)
        info["fixed_look_n"] = int(n[k])

    decided = look >= 0
    rows = np.arange(streams.runs)
    sgn = np.where(decided, diff_sign[rows, np.maximum(look, 0)], 0)
    if direction == "decrease":
        sgn = -sgn
    n_at = np.where(decided, n[np.maximum(look, 0)].astype(np.float64), np.nan)
    return RunDecisions(
        method=method,
        look_index=look,
        sign=sgn.astype(np.int64),
        n_at_decision=n_at,
        planned_n_per_variant=plan,
        info=info,
    )


def summarize(
    decisions: RunDecisions, streams: Streams, *, alpha: float, direction: str
) -> SimulationSummary:
    """Aggregate :class:`RunDecisions` into a :class:`SimulationSummary`."""
    runs = streams.runs
    decided = decisions.look_index >= 0
    reject = float(decided.mean())
    promote = float((decisions.sign > 0).mean())
    rollback = float((decisions.sign < 0).mean())
    n_dec = decisions.n_at_decision[decided]
    return SimulationSummary(
        method=decisions.method,
        runs=runs,
        looks=streams.looks,
        alpha=alpha,
        reject_rate=reject,
        reject_rate_se=math.sqrt(reject * (1 - reject) / runs),
        promote_rate=promote,
        promote_rate_se=math.sqrt(promote * (1 - promote) / runs),
        rollback_rate=rollback,
        inconclusive_rate=1.0 - reject,
        median_n_at_decision=float(np.median(n_dec)) if n_dec.size else math.nan,
        mean_n_at_decision=float(n_dec.mean()) if n_dec.size else math.nan,
        planned_n_per_variant=decisions.planned_n_per_variant,
        max_n_per_variant=streams.max_n_per_variant,
        look_every=streams.look_every,
        baseline=streams.baseline,
        treatment_rate=streams.treatment_rate,
        direction=direction,
        extra=dict(decisions.info),
    )


def run_method(
    streams: Streams,
    method: str,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    mde: float | None = None,
    mde_type: str = "relative",
    planned_n_per_variant: int | None = None,
    direction: str = "increase",
    tau2: float | None = None,
) -> SimulationSummary:
    """Apply ``method`` (sequential, group-sequential, fixed or naive) to ``streams`` and
    summarise; arguments as in :func:`decide_runs`."""
    dec = decide_runs(
        streams,
        method,
        alpha=alpha,
        power=power,
        mde=mde,
        mde_type=mde_type,
        planned_n_per_variant=planned_n_per_variant,
        direction=direction,
        tau2=tau2,
    )
    return summarize(dec, streams, alpha=alpha, direction=direction)


def simulate(
    baseline: float,
    lift: float,
    *,
    lift_type: str = "relative",
    methods: Sequence[str] = METHODS,
    alpha: float = 0.05,
    power: float = 0.8,
    mde: float | None = None,
    mde_type: str = "relative",
    planned_n_per_variant: int | None = None,
    direction: str = "increase",
    look_every: int | None = None,
    max_n_per_variant: int | None = None,
    runs: int = 2000,
    seed: int | None = None,
) -> dict[str, SimulationSummary]:
    """Simulate streams once and summarise every rule in ``methods`` on them.

    ``max_n_per_variant`` defaults to twice the planned n, ``look_every`` to a hundredth of
    ``max_n_per_variant`` (100 looks).
    """
    if isinstance(methods, str):
        methods = [methods]
    for m in methods:
        _choice("method", m, METHODS)
    if planned_n_per_variant is None:
        if mde is None:
            raise InvalidInputError("give mde (with power) or planned_n_per_variant")
        base = _validate.probability("baseline", baseline, open_interval=True)
        plan = fixed_horizon_n_two_proportions(
            base, mde, mde_type=mde_type, alpha=alpha, power=power, direction=direction
        )
    else:
        plan = _int_at_least("planned_n_per_variant", planned_n_per_variant, 1)
    max_n = 2 * plan if max_n_per_variant is None else max_n_per_variant
    every = max(1, max_n // 100) if look_every is None else look_every
    streams = simulate_streams(
        baseline, lift, lift_type=lift_type, look_every=every, max_n_per_variant=max_n, runs=runs, seed=seed
    )
    return {
        m: run_method(
            streams,
            m,
            alpha=alpha,
            power=power,
            mde=mde,
            mde_type=mde_type,
            planned_n_per_variant=plan,
            direction=direction,
        )
        for m in methods
    }


# --- over time: a lift that may decay, minDuration and the novelty check ----------------------------


@dataclass(frozen=True)
class TimeStreams:
    """Counts per look (not cumulative) of ``runs`` experiments on a clock.

    Each look spans ``look_hours`` and serves ``n_per_look`` trials to each arm (an even split;
    the rollout's steps are left out: they change how fast samples come, not what is tested).
    ``lifts[k]`` is the true lift during look ``k`` (taken at its midpoint).
    """

    control: NDArray[np.int64]
    treatment: NDArray[np.int64]
    n_per_look: int
    look_hours: float
    lifts: NDArray[np.float64]
    baseline: float
    lift_type: str
    seed: int | None

    @property
    def runs(self) -> int:
        return int(self.control.shape[0])

    @property
    def looks(self) -> int:
        return int(self.control.shape[1])


def lift_at(
    hours: NDArray[np.float64], lift: float, decay_to: float | None, half_life_hours: float | None
) -> NDArray[np.float64]:
    """The true lift at ``hours``: ``lift``, or decaying from it to ``decay_to`` with the half-life:
    ``decay_to + (lift - decay_to) * 2 ** (-hours / half_life_hours)``."""
    if decay_to is None:
        out: NDArray[np.float64] = np.full_like(hours, lift, dtype=np.float64)
        return out
    h = _validate.positive(
        "half_life_hours", float(half_life_hours) if half_life_hours is not None else math.nan
    )
    out = decay_to + (lift - decay_to) * np.exp2(-hours / h)
    return out


def simulate_time_streams(
    baseline: float,
    lift: float,
    *,
    decay_to: float | None = None,
    half_life_hours: float | None = None,
    lift_type: str = "relative",
    samples_per_hour: float,
    look_hours: float,
    max_hours: float,
    runs: int,
    seed: int | None = None,
) -> TimeStreams:
    """Draw binomial counts per look for a champion at ``baseline`` and a challenger whose lift
    starts at ``lift`` and, with ``decay_to``, decays towards it with ``half_life_hours``.

    ``samples_per_hour`` is per arm; looks every ``look_hours`` up to ``max_hours``.
    """
    p_c = _validate.probability("baseline", baseline, open_interval=True)
    _choice("lift_type", lift_type, LIFT_TYPES)
    rate = _validate.positive("samples_per_hour", samples_per_hour)
    dt = _validate.positive("look_hours", look_hours)
    horizon = _validate.positive("max_hours", max_hours)
    r = _int_at_least("runs", runs, 1)
    looks = max(1, math.ceil(horizon / dt - 1e-9))
    if r * looks > MAX_CELLS:
        raise InvalidInputError(
            f"runs x looks = {r} x {looks} exceeds {MAX_CELLS:,}; use fewer runs or a longer look"
        )
    n = round(rate * dt)
    if n < 1:
        raise InvalidInputError(f"samples_per_hour x look_hours must be at least 1, got {rate * dt:g}")
    mid: NDArray[np.float64] = (np.arange(looks, dtype=np.float64) + 0.5) * dt
    lifts = lift_at(mid, _validate.finite("lift", lift), decay_to, half_life_hours)
    rates = np.array([_shifted_rate(p_c, float(x), lift_type, "lift") for x in lifts])
    rng = np.random.default_rng(seed)
    control = rng.binomial(n, p_c, size=(r, looks)).astype(np.int64)
    treatment = rng.binomial(n, rates[None, :], size=(r, looks)).astype(np.int64)
    return TimeStreams(control, treatment, n, dt, lifts, p_c, lift_type, seed)


@dataclass(frozen=True)
class TimeSummary:
    """What became of the runs of :func:`decide_over_time` (rates are fractions of all runs)."""

    runs: int
    promote_rate: float
    promote_rate_se: float
    rollback_rate: float
    inconclusive_rate: float
    novelty_held_rate: float
    min_duration_held_rate: float
    median_hours_to_promotion: float
    median_hours_to_decision: float
    planned_n_per_variant: int
    hours_to_planned_n: float
    min_duration_hours: float
    novelty: bool
    novelty_window_hours: float | None
    max_hours: float

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in self.__dataclass_fields__:
            v = getattr(self, k)
            out[k] = None if isinstance(v, float) and not math.isfinite(v) else v
        return out


def _first_index(mask: NDArray[np.bool_], none: int) -> NDArray[np.int64]:
    found = _first_true(mask)
    out: NDArray[np.int64] = np.where(found >= 0, found, none).astype(np.int64)
    return out


def decide_over_time(
    streams: TimeStreams,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    mde: float,
    mde_type: str = "relative",
    min_duration_hours: float = 0.0,
    novelty: bool = False,
    novelty_window_hours: float = 24.0,
    novelty_alpha: float = 0.05,
) -> TimeSummary:
    """Decide every run as the operator does, look by look.

    * The primary metric: the always-valid mixture SPRT of the cumulative counts (the operator's
      ``sequential``), tuned to the planned n of ``mde``; once significant, the sign of the
      difference says better or worse.
    * Worse rolls back at once; ``minDuration`` never delays it.
    * Better promotes at the first look at or after ``min_duration_hours``, unless the novelty
      check (:mod:`modelrollout.stats.novelty`, windows of ``novelty_window_hours``, tuned to
      ``min_duration_hours / window`` windows) has found the lift decaying by then: then the run
      is held until ``max_hours`` and ends without a promotion (keepChampion).
    """
    from modelrollout.stats import novelty as decay

    a = _validate.alpha(alpha, upper=0.5)
    plan = fixed_horizon_n_two_proportions(streams.baseline, mde, mde_type=mde_type, alpha=a, power=power)
    looks, dt = streams.looks, streams.look_hours
    none = looks
    n = streams.n_per_look * np.arange(1, looks + 1, dtype=np.float64)
    cs, ts = np.cumsum(streams.control, axis=1), np.cumsum(streams.treatment, axis=1)
    pc, pt, vc, vt = proportions_difference(cs, n[None, :], ts, n[None, :])
    log_e = np.maximum.accumulate(
        normal_mixture_log_e_value(pt - pc, vc + vt, tau2_for_proportions(streams.baseline, plan, a)), axis=1
    )
    significant = log_e >= math.log(1.0 / a)
    worse = _first_index(significant & (pt < pc), none)
    hours = dt * np.arange(1, looks + 1, dtype=np.float64)
    eligible = significant & (pt > pc) & (hours >= min_duration_hours - 1e-9)[None, :]
    better_any = _first_index(significant & (pt > pc), none)
    promote = _first_index(eligible, none)
    found = np.full(streams.runs, none, dtype=np.int64)
    if novelty:
        length = max(1, round(_validate.positive("novelty_window_hours", novelty_window_hours) / dt))
        windows = looks // length
        if windows >= 2:
            shape = (streams.runs, windows, length)
            c = streams.control[:, : windows * length].reshape(shape).sum(axis=2)
            t = streams.treatment[:, : windows * length].reshape(shape).sum(axis=2)
            m = float(streams.n_per_look * length)
            wc, wt, wvc, wvt = proportions_difference(c, m, t, m)
            tau2 = decay.decay_tau2(min_duration_hours / (length * dt), novelty_alpha)
            path = decay.decay_log_e_path(wt - wc, wvc + wvt, tau2)
            hit = _first_true(path >= math.log(1.0 / _validate.alpha(novelty_alpha, upper=0.5)))
            found = np.where(hit >= 0, (hit + 1) * length - 1, none).astype(np.int64)
    promoted = (promote < worse) & (promote < none) & (promote < found)
    rolled = (worse < none) & ~promoted
    held_novelty = (found < none) & (promote >= found) & (found < worse) & (better_any < none)
    held_min = (
        (better_any < none)
        & (better_any < worse)
        & (hours[np.minimum(better_any, looks - 1)] < min_duration_hours)
    )
    to_promotion = hours[promote[promoted]] if promoted.any() else np.array([])
    decided_at = np.where(promoted, promote, np.where(rolled, worse, none))
    decided = decided_at < none
    to_decision = hours[decided_at[decided]]
    runs = streams.runs
    p_rate = float(promoted.mean())
    return TimeSummary(
        runs=runs,
        promote_rate=p_rate,
        promote_rate_se=math.sqrt(p_rate * (1 - p_rate) / runs),
        rollback_rate=float(rolled.mean()),
        inconclusive_rate=float(1.0 - promoted.mean() - rolled.mean()),
        novelty_held_rate=float(held_novelty.mean()),
        min_duration_held_rate=float(held_min.mean()),
        median_hours_to_promotion=float(np.median(to_promotion)) if to_promotion.size else math.nan,
        median_hours_to_decision=float(np.median(to_decision)) if to_decision.size else math.nan,
        planned_n_per_variant=plan,
        hours_to_planned_n=plan / (streams.n_per_look / dt),
        min_duration_hours=float(min_duration_hours),
        novelty=bool(novelty),
        novelty_window_hours=float(novelty_window_hours) if novelty else None,
        max_hours=looks * dt,
    )
