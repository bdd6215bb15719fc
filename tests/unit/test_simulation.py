"""Tests of modelrollout.stats.montecarlo: stream generation, the four decision rules' operating
characteristics by Monte Carlo (fixed seeds, tolerances from the MC standard error), and input
validation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from modelrollout.errors import InvalidInputError
from modelrollout.stats import montecarlo as sim
from modelrollout.stats.sequential import tau2_for_proportions

pytestmark = pytest.mark.unit

ALPHA = 0.05
PLAN = 9257  # 15 % baseline, 10 % relative MDE, alpha 0.05, power 0.8 (DESIGN.md)


def _se(p: float, runs: int) -> float:
    return math.sqrt(p * (1 - p) / runs)


def test_fixed_horizon_n_matches_the_design() -> None:
    assert sim.fixed_horizon_n_two_proportions(0.15, 0.10, alpha=0.05, power=0.8) == PLAN
    assert sim.fixed_horizon_n_two_proportions(0.15, 0.015, mde_type="absolute") == PLAN
    # a decrease needs about the same n (slightly fewer: the variance is smaller below 0.15)
    assert 8000 < sim.fixed_horizon_n_two_proportions(0.15, 0.10, direction="decrease") < PLAN


def test_streams_shape_grid_and_reproducibility() -> None:
    s = sim.simulate_streams(0.2, 0.1, look_every=30, max_n_per_variant=100, runs=50, seed=7)
    assert s.n_per_variant.tolist() == [30, 60, 90, 100]  # the last look is a short one
    assert s.control_successes.shape == (50, 4) == s.treatment_successes.shape
    assert (s.runs, s.looks) == (50, 4)
    assert np.all(np.diff(s.control_successes, axis=1) >= 0)
    assert np.all(s.treatment_successes <= s.n_per_variant)
    assert np.all(np.diff(s.treatment_successes, axis=1) <= np.diff(s.n_per_variant))
    assert s.treatment_rate == pytest.approx(0.22)
    again = sim.simulate_streams(0.2, 0.1, look_every=30, max_n_per_variant=100, runs=50, seed=7)
    assert np.array_equal(s.control_successes, again.control_successes)
    assert sim.simulate_streams(
        0.2, 0.05, lift_type="absolute", look_every=1, max_n_per_variant=1, runs=1
    ).treatment_rate == pytest.approx(0.25)


def test_stream_rates_are_right() -> None:
    # 20,000 runs x 1,000 trials at 0.15: s.e. of the mean rate sqrt(.15 .85 / 2e7) = 8e-5
    s = sim.simulate_streams(0.15, 0.10, look_every=1000, max_n_per_variant=1000, runs=20_000, seed=1)
    assert s.control_successes[:, -1].mean() / 1000 == pytest.approx(0.15, abs=4e-4)
    assert s.treatment_successes[:, -1].mean() / 1000 == pytest.approx(0.165, abs=4e-4)


@pytest.fixture(scope="module")
def aa_100_looks() -> sim.Streams:
    # A/A, 15 % baseline, monitored up to twice the planned n, 100 looks, 10,000 runs
    return sim.simulate_streams(
        0.15, 0.0, look_every=2 * PLAN // 100, max_n_per_variant=2 * PLAN, runs=10_000, seed=20240611
    )


def test_sequential_false_positive_rate_under_continuous_monitoring(aa_100_looks: sim.Streams) -> None:
    """A/A, a look at each of 100 looks: P(ever reject) <= alpha + 3 s.e. (s.e. = 0.0022 for
    R = 10,000; bound 0.0565). Measured about 0.02: Ville's bound is conservative at discrete looks."""
    r = sim.run_method(aa_100_looks, "sequential", mde=0.10)
    assert r.reject_rate <= ALPHA + 3 * _se(ALPHA, r.runs)
    assert r.promote_rate + r.rollback_rate == pytest.approx(r.reject_rate)
    assert r.planned_n_per_variant == PLAN


def test_naive_peeking_inflates_and_corrected_methods_do_not(aa_100_looks: sim.Streams) -> None:
    """Naive z-test at every look: about 0.37 with 100 looks and 0.19-0.20 with 10 (Armitage et al.
    1969); we assert clearly above alpha (> 0.30 and > 0.15, more than 20 s.e. away). The
    group-sequential and fixed tests are at alpha within 3 s.e. (0.0065 for R = 10,000)."""
    se = _se(ALPHA, aa_100_looks.runs)
    naive100 = sim.run_method(aa_100_looks, "naive", mde=0.10)
    assert naive100.reject_rate > 0.30
    gs = sim.run_method(aa_100_looks, "group-sequential", mde=0.10)
    assert abs(gs.reject_rate - ALPHA) <= 3 * se
    fixed = sim.run_method(aa_100_looks, "fixed", mde=0.10)
    assert abs(fixed.reject_rate - ALPHA) <= 3 * se
    assert fixed.extra["fixed_look_n"] >= PLAN

    ten = sim.simulate_streams(
        0.15, 0.0, look_every=PLAN // 10 + 1, max_n_per_variant=PLAN, runs=10_000, seed=3
    )
    assert ten.looks == 10
    naive10 = sim.run_method(ten, "naive", planned_n_per_variant=PLAN)
    assert 0.15 < naive10.reject_rate < naive100.reject_rate
    assert (
        abs(sim.run_method(ten, "group-sequential", planned_n_per_variant=PLAN).reject_rate - ALPHA) <= 3 * se
    )
    assert sim.run_method(ten, "sequential", planned_n_per_variant=PLAN).reject_rate <= ALPHA + 3 * se


def test_sequential_power_at_the_mde_within_twice_the_fixed_n() -> None:
    """Effect = MDE (10 % relative on 15 %), max n = 2 x 9,257, 100 looks, 4,000 runs.

    Power must be >= 0.8; we require the estimate minus 3 s.e. (s.e. ~0.005) to clear 0.8.
    Measured about 0.88, with a median of ~8,100 per variant at decision against 9,257 fixed.
    """
    s = sim.simulate_streams(
        0.15, 0.10, look_every=2 * PLAN // 100, max_n_per_variant=2 * PLAN, runs=4000, seed=99
    )
    r = sim.run_method(s, "sequential", mde=0.10, power=0.8)
    assert r.promote_rate - 3 * r.promote_rate_se >= 0.8
    assert r.rollback_rate < 0.001  # a wrong-sign decision is (nearly) impossible at this effect
    assert r.median_n_at_decision < PLAN
    assert r.extra["tau2"] == pytest.approx(tau2_for_proportions(0.15, PLAN, ALPHA))
    # the fixed test at the planned n has its nominal power, 0.8, within 3 s.e.
    fixed = sim.run_method(s, "fixed", mde=0.10)
    assert abs(fixed.promote_rate - 0.8) <= 3 * _se(0.8, s.runs)
    assert fixed.median_n_at_decision == fixed.extra["fixed_look_n"]


def test_worse_challenger_is_rolled_back_and_direction_flips() -> None:
    s = sim.simulate_streams(0.15, -0.2, look_every=500, max_n_per_variant=10_000, runs=500, seed=5)
    inc = sim.run_method(s, "sequential", planned_n_per_variant=5000)
    assert inc.rollback_rate > 0.9
    assert inc.promote_rate == 0.0
    dec = sim.run_method(s, "sequential", planned_n_per_variant=5000, direction="decrease")
    assert dec.promote_rate == inc.rollback_rate
    assert dec.rollback_rate == inc.promote_rate
    dr = sim.decide_runs(s, "sequential", planned_n_per_variant=5000)
    assert np.all((dr.look_index >= 0) == (dr.sign != 0))
    assert np.all(np.isnan(dr.n_at_decision[dr.look_index < 0]))


def test_summary_to_dict_is_json_and_nan_becomes_none() -> None:
    s = sim.simulate_streams(0.15, 0.0, look_every=100, max_n_per_variant=200, runs=3, seed=1)
    r = sim.run_method(s, "sequential", planned_n_per_variant=10_000)
    assert r.reject_rate == 0.0
    assert math.isnan(r.median_n_at_decision)
    d = r.to_dict()
    assert d["median_n_at_decision"] is None
    assert d["mean_n_at_decision"] is None
    json.loads(json.dumps(d, allow_nan=False))
    gs = sim.run_method(s, "group-sequential", planned_n_per_variant=10_000).to_dict()
    json.dumps(gs, allow_nan=False)


def test_simulate_runs_every_method_on_the_same_streams() -> None:
    out = sim.simulate(0.15, 0.1, mde=0.1, runs=200, seed=11)
    assert set(out) == set(sim.METHODS)
    for r in out.values():
        assert r.max_n_per_variant == 2 * PLAN
        assert r.looks in (100, 101)
        assert r.runs == 200
        assert r.reject_rate == pytest.approx(r.promote_rate + r.rollback_rate)
    one = sim.simulate(
        0.15,
        0.1,
        methods="naive",
        planned_n_per_variant=1000,
        look_every=100,
        max_n_per_variant=1000,
        runs=10,
        seed=1,
    )
    assert list(one) == ["naive"]
    assert one["naive"].looks == 10


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: sim.simulate_streams(0.1, 0.0, look_every=1, max_n_per_variant=10, runs=0), "runs"),
        (lambda: sim.simulate_streams(0.1, 0.0, look_every=0, max_n_per_variant=10, runs=1), "look_every"),
        (lambda: sim.simulate_streams(0.1, 0.0, look_every=20, max_n_per_variant=10, runs=1), "max_n"),
        (lambda: sim.simulate_streams(0.1, 0.0, look_every=2.5, max_n_per_variant=10, runs=1), "integer"),  # type: ignore[arg-type]
        (lambda: sim.simulate_streams(0.1, 0.0, look_every=1, max_n_per_variant=10, runs=True), "integer"),
        (lambda: sim.simulate_streams(0.0, 0.0, look_every=1, max_n_per_variant=10, runs=1), "baseline"),
        (lambda: sim.simulate_streams(1.0, 0.0, look_every=1, max_n_per_variant=10, runs=1), "baseline"),
        (lambda: sim.simulate_streams(0.6, 1.0, look_every=1, max_n_per_variant=10, runs=1), r"\(0, 1\)"),
        (
            lambda: sim.simulate_streams(
                0.1, -0.2, lift_type="absolute", look_every=1, max_n_per_variant=10, runs=1
            ),
            r"\(0, 1\)",
        ),
        (
            lambda: sim.simulate_streams(
                0.1, 0.0, lift_type="ratio", look_every=1, max_n_per_variant=10, runs=1
            ),
            "lift_type",
        ),
        (lambda: sim.simulate_streams(0.1, math.nan, look_every=1, max_n_per_variant=10, runs=1), "lift"),
        (lambda: sim.simulate_streams(0.1, 0.0, look_every=1, max_n_per_variant=10, runs=1, seed=-1), "seed"),
        (
            lambda: sim.simulate_streams(0.1, 0.0, look_every=1, max_n_per_variant=100_000, runs=1000),
            "exceeds",
        ),
        (lambda: sim.fixed_horizon_n_two_proportions(0.15, 0.0), "mde"),
        (lambda: sim.fixed_horizon_n_two_proportions(0.95, 0.1), r"\(0, 1\)"),
        (lambda: sim.simulate(0.15, 0.1, runs=10), "mde"),
        (lambda: sim.simulate(0.15, 0.1, mde=0.1, methods=["bayes"], runs=10), "method"),
    ],
)
def test_invalid_input(call: object, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        call()  # type: ignore[operator]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "thompson", "planned_n_per_variant": 10}, "method"),
        ({"method": "fixed"}, "mde"),
        ({"method": "fixed", "planned_n_per_variant": 0}, "planned_n_per_variant"),
        ({"method": "fixed", "planned_n_per_variant": 10, "alpha": 0.7}, "alpha"),
        ({"method": "fixed", "planned_n_per_variant": 10, "direction": "up"}, "direction"),
        ({"method": "fixed", "mde": 0.1, "mde_type": "odds"}, "mde_type"),
        ({"method": "fixed", "mde": 0.1, "power": 1.0}, "power"),
        ({"method": "sequential", "planned_n_per_variant": 10, "tau2": 0.0}, "tau2"),
    ],
)
def test_invalid_run_method_input(kwargs: dict[str, object], match: str) -> None:
    s = sim.simulate_streams(0.1, 0.0, look_every=5, max_n_per_variant=10, runs=2, seed=0)
    with pytest.raises(InvalidInputError, match=match):
        sim.run_method(s, **kwargs)  # type: ignore[arg-type]
