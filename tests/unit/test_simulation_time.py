"""Tests of the clock-based Monte Carlo of modelrollout.stats.montecarlo (a lift that decays,
minDuration, the novelty check) and of ``modelrollout simulate`` on a clock (``--output json``).
Fixed seeds; tolerances from the Monte Carlo standard error."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from modelrollout.cli.main import main
from modelrollout.errors import InvalidInputError
from modelrollout.stats import montecarlo as sim

pytestmark = pytest.mark.unit

PLAN = 57_763  # 10 % baseline, 5 % relative MDE, alpha 0.05, power 0.8


def streams(lift: float, runs: int = 600, seed: int = 1, **kw: float) -> sim.TimeStreams:
    return sim.simulate_time_streams(
        0.1, lift, samples_per_hour=PLAN / 48, look_hours=1.0, max_hours=336, runs=runs, seed=seed, **kw
    )


def test_the_lift_decays_from_its_start_to_its_end_with_the_half_life() -> None:
    hours = np.array([0.0, 24.0, 48.0, 1e6])
    assert sim.lift_at(hours, 0.2, 0.0, 24.0) == pytest.approx([0.2, 0.1, 0.05, 0.0])
    assert sim.lift_at(hours, 0.2, 0.05, 24.0) == pytest.approx([0.2, 0.125, 0.0875, 0.05])
    assert sim.lift_at(hours, 0.2, None, None) == pytest.approx([0.2] * 4)
    s = streams(0.2, runs=2000, decay_to=0.0, half_life_hours=24.0)
    first, late = (
        s.treatment[:, :24].mean() / s.control[:, :24].mean(),
        s.treatment[:, 200:].mean() / s.control[:, 200:].mean(),
    )
    assert first - 1 == pytest.approx(float(s.lifts[:24].mean()), abs=0.01)
    assert late - 1 == pytest.approx(0.0, abs=0.01)
    again = streams(0.2, runs=2000, decay_to=0.0, half_life_hours=24.0)
    assert np.array_equal(again.treatment, s.treatment)


def test_min_duration_delays_promotions_to_it_and_never_a_rollback() -> None:
    better, worse = streams(0.05), streams(-0.05, seed=2)
    quick = sim.decide_over_time(better, mde=0.05)
    waited = sim.decide_over_time(better, mde=0.05, min_duration_hours=168)
    assert quick.median_hours_to_promotion < 168 <= waited.median_hours_to_promotion
    assert waited.promote_rate >= quick.promote_rate  # the same streams, more looks before the end
    assert waited.min_duration_held_rate > 0.9
    fast = sim.decide_over_time(worse, mde=0.05)
    slow = sim.decide_over_time(worse, mde=0.05, min_duration_hours=168)
    assert slow.rollback_rate == fast.rollback_rate > 0.9
    assert slow.median_hours_to_decision == fast.median_hours_to_decision < 168


def test_the_novelty_check_stops_a_decaying_lift_and_keeps_a_lasting_ones_power() -> None:
    runs = 1000
    decaying = streams(0.2, runs=runs, decay_to=0.0, half_life_hours=24.0)
    lasting = streams(0.05, runs=runs, seed=3)
    aa = streams(0.0, runs=runs, seed=4)
    kw = {"mde": 0.05, "min_duration_hours": 168.0}
    assert sim.decide_over_time(decaying, **kw).promote_rate > 0.95
    stopped = sim.decide_over_time(decaying, novelty=True, **kw)
    assert stopped.promote_rate <= 0.10
    assert stopped.novelty_held_rate >= 0.90
    without, with_check = (
        sim.decide_over_time(lasting, **kw),
        sim.decide_over_time(lasting, novelty=True, **kw),
    )
    assert with_check.promote_rate >= without.promote_rate - 0.05  # at most alpha of the check lost
    assert with_check.median_hours_to_promotion == without.median_hours_to_promotion
    se = math.sqrt(0.05 * 0.95 / runs)
    assert sim.decide_over_time(aa, novelty=True, **kw).promote_rate <= 0.05 + 3 * se


def test_bad_clock_inputs_are_refused() -> None:
    with pytest.raises(InvalidInputError):
        sim.simulate_time_streams(0.1, 0.1, samples_per_hour=0.1, look_hours=1, max_hours=10, runs=2)
    with pytest.raises(InvalidInputError):
        sim.simulate_time_streams(
            0.1, 0.1, decay_to=0.0, samples_per_hour=10, look_hours=1, max_hours=10, runs=2
        )
    with pytest.raises(InvalidInputError):
        sim.simulate_time_streams(0.1, 20.0, samples_per_hour=10, look_hours=1, max_hours=10, runs=2)


# --- the CLI ------------------------------------------------------------------------------------------

CLOCK = [
    "simulate",
    "--baseline",
    "0.1",
    "--lift",
    "0.2",
    "--lift-decay-to",
    "0",
    "--lift-half-life",
    "1d",
    "--mde",
    "0.05",
    "--samples-per-hour",
    "1203",
    "--min-duration",
    "7d",
    "--runs",
    "300",
    "--seed",
    "1",
]


def test_simulate_on_a_clock_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*CLOCK, "--novelty", "--output", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in (
        "promote_rate",
        "rollback_rate",
        "inconclusive_rate",
        "novelty_held_rate",
        "median_hours_to_promotion",
        "planned_n_per_variant",
        "min_duration_hours",
        "lift_decay_to",
        "lift_half_life_hours",
        "mode",
    ):
        assert key in out
    assert out["mode"] == "time"
    assert out["planned_n_per_variant"] == PLAN
    assert (out["min_duration_hours"], out["lift_half_life_hours"], out["novelty_window_hours"]) == (
        168,
        24,
        24,
    )
    assert out["promote_rate"] <= 0.1
    assert main([*CLOCK, "--output", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["promote_rate"] > 0.9


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--lift-half-life", "1d"], "go together"),  # replaces CLOCK's pair below
        (["--min-duration", "15d"], "--min-duration must not be longer"),
        (["--novelty-window", "a day"], "--novelty-window"),
        (["--method", "fixed"], "--method sequential"),
    ],
)
def test_simulate_on_a_clock_refuses_bad_options(
    capsys: pytest.CaptureFixture[str], extra: list[str], needle: str
) -> None:
    argv = [*CLOCK, *extra]
    if extra[0] == "--lift-half-life":
        i = argv.index("--lift-decay-to")
        del argv[i : i + 2]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert len(err.strip().splitlines()) == 1


def test_simulate_without_a_clock_needs_its_looks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--baseline", "0.1", "--lift", "0", "--mde", "0.1"]) == 2
    assert "--look-every" in capsys.readouterr().err
