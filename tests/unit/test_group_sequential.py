"""Tests of modelrollout.stats.group_sequential: published boundaries, exactness of the spent
alpha, and an independent Monte Carlo of the crossing probabilities."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import numpy as np
import pytest
from scipy import special

from modelrollout.errors import InvalidInputError
from modelrollout.stats import group_sequential as gs
from modelrollout.stats.group_sequential import (
    GroupSequentialDesign,
    Spending,
    lan_demets_boundaries,
    spending_function,
)

pytestmark = pytest.mark.unit

FIVE = [0.2, 0.4, 0.6, 0.8, 1.0]
#: two pairs of nearly equal fractions: increments far narrower than the grid of the looks before
NEARLY_EQUAL = [0.3, 0.3 + 1e-6, 0.6, 0.6 + 1e-4, 1.0]
ALL_SPENDING: list[Spending] = ["obrien-fleming", "obrien-fleming-two-sided", "pocock"]


def _brownian_z(fractions: list[float] | np.ndarray, runs: int, seed: int) -> np.ndarray:
    """Z_k = S(t_k) / sqrt(t_k) for a standard Brownian motion S, simulated directly."""
    t = np.asarray(fractions, dtype=float)
    inc = np.diff(np.concatenate(([0.0], t)))
    rng = np.random.default_rng(seed)
    s = np.cumsum(rng.standard_normal((runs, t.size)) * np.sqrt(inc), axis=1)
    z: np.ndarray = s / np.sqrt(t)
    return z


def test_obrien_fleming_five_looks_matches_published_values() -> None:
    # Lan-DeMets O'Brien-Fleming type, 5 equally spaced looks, two-sided alpha 0.05, symmetric:
    # 4.8769, 3.3569, 2.6803, 2.2898, 2.0310 (Reboussin, DeMets, Kim, Lan 2000, the Lan-DeMets
    # programs; the same values come out of ldbounds, gsDesign and rpact). Tolerance 1e-3 as
    # quoted; the integration agrees to about 1e-5.
    d = lan_demets_boundaries(FIVE, 0.05, "obrien-fleming")
    assert d.boundaries == pytest.approx([4.8769, 3.3569, 2.6803, 2.2898, 2.0310], abs=1e-3)
    assert d.boundaries == pytest.approx([4.8769, 3.3570, 2.6803, 2.2898, 2.0310], abs=2e-4)
    assert sum(d.crossing_probabilities) == pytest.approx(0.05, abs=1e-9)
    assert d.cumulative_alpha[-1] == pytest.approx(0.05)


def test_two_sided_formula_first_boundary_is_exact() -> None:
    # alpha(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt t) spends exactly P(|Z| >= z / sqrt t) at look 1
    d = lan_demets_boundaries(FIVE, 0.05, "obrien-fleming-two-sided")
    assert d.boundaries[0] == pytest.approx(special.ndtri(0.975) / math.sqrt(0.2), rel=1e-9)
    assert sum(d.crossing_probabilities) == pytest.approx(0.05, abs=1e-9)


def test_single_look_is_the_fixed_test() -> None:
    for spending in ALL_SPENDING:
        d = lan_demets_boundaries([1.0], 0.05, spending)
        assert d.boundaries[0] == pytest.approx(special.ndtri(0.975), rel=1e-9)


@pytest.mark.parametrize("spending", ALL_SPENDING)
@pytest.mark.parametrize("fractions", [FIVE, [0.1, 0.35, 0.5, 0.9, 1.0], list(np.arange(1, 101) / 100)])
def test_crossing_probabilities_equal_the_spending_increments(
    spending: Spending, fractions: list[float]
) -> None:
    d = lan_demets_boundaries(fractions, 0.05, spending)
    cumulative = spending_function(fractions, 0.05, spending)
    increments = np.diff(np.concatenate(([0.0], cumulative)))
    assert np.allclose(d.crossing_probabilities, increments, rtol=1e-7, atol=1e-15)
    if spending != "pocock":  # O'Brien-Fleming boundaries decrease with information
        assert np.all(np.diff(d.boundaries) < 0)


def test_grid_resolution_has_converged_for_100_looks() -> None:
    t = np.arange(1, 101) / 100
    coarse = lan_demets_boundaries(t, points_per_sd=10)
    fine = lan_demets_boundaries(t, points_per_sd=24)
    assert np.max(np.abs(np.subtract(coarse.boundaries, fine.boundaries))) < 1e-4


def test_partial_design_spends_alpha_at_its_last_fraction() -> None:
    d = lan_demets_boundaries([0.25, 0.5], 0.05)
    full = lan_demets_boundaries([0.25, 0.5, 0.75, 1.0], 0.05)
    assert sum(d.crossing_probabilities) == pytest.approx(float(spending_function(0.5, 0.05)))
    assert d.boundaries == pytest.approx(full.boundaries[:2], rel=1e-9)  # boundaries do not look ahead


# --- nearly equal information fractions ----------------------------------------------------------
# The increment between two nearly equal fractions is far narrower than the grid step of the look
# before; a grid resolving it grew as 1 / increment ([0.5, 0.5000001, 1.0] took 8.7 s and 1.6 GB)
# and, capped, sampled the Gaussian kernel too coarsely (final boundary 1.9623 instead of 1.9686).

# final boundary of [0.5, 1.0] at points_per_sd=120 (converged to 1e-9; the default grid is within 1e-5)
MERGED_FINE = {
    "obrien-fleming": 1.9685956406,
    "obrien-fleming-two-sided": 1.9793113428,
    "pocock": 2.2009769555,
}


@pytest.mark.parametrize("spending", ALL_SPENDING)
@pytest.mark.parametrize("gap", [1e-7, 1e-10, 1e-14])
def test_nearly_equal_fractions_give_the_merged_design(spending: Spending, gap: float) -> None:
    merged = lan_demets_boundaries([0.5, 1.0], 0.05, spending)
    d = lan_demets_boundaries([0.5, 0.5 + gap, 1.0], 0.05, spending)
    assert d.boundaries[0] == merged.boundaries[0]
    assert d.boundaries[2] == pytest.approx(merged.boundaries[1], abs=1e-3)
    assert d.boundaries[2] == pytest.approx(MERGED_FINE[spending], abs=1e-6)
    # the look in between spends almost nothing, so its boundary is just beyond the first one
    assert d.boundaries[0] < d.boundaries[1] < d.boundaries[0] + 0.01
    assert sum(d.crossing_probabilities) == pytest.approx(0.05, abs=1e-12)


@pytest.mark.parametrize("spending", ALL_SPENDING)
def test_boundaries_converge_to_the_merged_design_as_the_gap_closes(spending: Spending) -> None:
    gaps = [1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-8, 1e-12]
    errors = [
        abs(lan_demets_boundaries([0.5, 0.5 + g, 1.0], 0.05, spending).boundaries[2] - MERGED_FINE[spending])
        for g in gaps
    ]
    # the final boundary moves by O(gap) (the increment's variance) until the integration's own
    # accuracy (1e-6) is reached
    assert all(e2 <= e1 + 1e-6 for e1, e2 in itertools.pairwise(errors)), errors
    assert errors[-1] < 1e-6


@pytest.mark.parametrize(
    ("spending", "expected"),
    [
        # computed by the previous implementation, whose uniform grid (4,201 nodes) still
        # resolved this increment; 1.9686079 and 2.2010438 agree with the gap sweep above
        ("obrien-fleming", (2.962588042727569, 2.9848822824797114, 1.9686079148739108)),
        ("pocock", (2.156999218344682, 2.188696597815761, 2.2010437630459325)),
    ],
)
def test_narrow_increment_agrees_with_a_grid_that_resolves_it(
    spending: Spending, expected: tuple[float, float, float]
) -> None:
    d = lan_demets_boundaries([0.5, 0.5001, 1.0], 0.05, spending)
    assert d.boundaries == pytest.approx(expected, abs=1e-6)


def test_nearly_equal_fractions_cost_what_distinct_ones_do(monkeypatch: pytest.MonkeyPatch) -> None:
    # The cost of the integration is the number of kernel evaluations: the convolution on the grid
    # (nodes x nodes) and the local quadrature of a narrow increment (nodes x its own nodes).
    evaluations: list[int] = []
    convolve, local = gs._convolve, gs._log_local_convolution

    def counted_convolve(prev: Any, x: np.ndarray, sd: float) -> np.ndarray:
        evaluations.append(prev.x.size * x.size)
        return convolve(prev, x, sd)

    def counted_local(prev: Any, x: np.ndarray, sd: float, log_f: Any, points: int) -> np.ndarray:
        out = local(prev, x, sd, log_f, points)
        evaluations.append(x.size * (2 * math.ceil(gs._LAYER_SDS * points / 2) + 1))
        return out

    monkeypatch.setattr(gs, "_convolve", counted_convolve)
    monkeypatch.setattr(gs, "_log_local_convolution", counted_local)
    # a gap of 0.02 is about the narrowest increment the grid after t = 0.5 resolves directly
    lan_demets_boundaries([0.5, 0.52, 1.0])
    distinct = sum(evaluations)
    for gap in (1e-3, 1e-4, 1e-7, 1e-12, 1e-15):
        evaluations.clear()
        lan_demets_boundaries([0.5, 0.5 + gap, 1.0])
        # before: a 4,201-node grid at 1e-4 (1.8e7 evaluations) and 8,001 nodes below
        assert sum(evaluations) < 5 * distinct, (gap, sum(evaluations), distinct)


@pytest.mark.parametrize(
    ("spending", "fractions", "runs"),
    [
        ("obrien-fleming", FIVE, 400_000),
        ("pocock", FIVE, 400_000),
        ("obrien-fleming", [0.1, 0.35, 0.5, 0.9, 1.0], 400_000),
        ("obrien-fleming", list(np.arange(1, 101) / 100), 100_000),
        ("obrien-fleming", NEARLY_EQUAL, 400_000),
        ("pocock", NEARLY_EQUAL, 400_000),
    ],
)
def test_independent_monte_carlo_of_the_crossing_probability(
    spending: Spending, fractions: list[float], runs: int
) -> None:
    """Total null crossing probability = alpha by direct simulation of Brownian motion.

    MC s.e. of 0.05 is sqrt(.05 * .95 / R): 0.00034 for R = 400,000 and 0.00069 for 100,000;
    the test allows 3 s.e. Per-look crossing probabilities (5 looks) are checked within 4 s.e.
    of each (binomial) estimate, plus 2e-5 for the tiny first looks.
    """
    d = lan_demets_boundaries(fractions, 0.05, spending)
    first = d.first_crossing(_brownian_z(fractions, runs, seed=20240611))
    rate = float((first >= 0).mean())
    se = math.sqrt(0.05 * 0.95 / runs)
    assert abs(rate - 0.05) <= 3 * se
    if len(fractions) == 5:
        per_look = np.bincount(first[first >= 0], minlength=5) / runs
        for p_mc, p_int in zip(per_look, d.crossing_probabilities, strict=True):
            assert abs(p_mc - p_int) <= 4 * math.sqrt(p_int * (1 - p_int) / runs) + 2e-5


def test_test_helper_and_vectorised_first_crossing() -> None:
    d = lan_demets_boundaries(FIVE)
    out = d.test([1.0, -3.5])
    assert out.rejected
    assert out.look == 2
    assert out.z == -3.5
    assert out.boundary == d.boundaries[1]
    assert not d.test([1.0, 2.0, 2.0]).rejected
    assert d.test([]).look is None
    z = np.array([[0.0, 0.0, 0.0, 0.0, 2.1], [5.0, 0.0, 0.0, 0.0, 0.0], [0.0] * 5])
    assert d.first_crossing(z).tolist() == [4, 0, -1]
    assert d.nominal_p_values[-1] == pytest.approx(2 * special.ndtr(-d.boundaries[-1]))
    assert isinstance(d, GroupSequentialDesign)
    json.dumps(d.to_dict())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"information_fractions": []}, "empty"),
        ({"information_fractions": [0.5, 0.5]}, "strictly increasing"),
        ({"information_fractions": [0.0, 1.0]}, r"\(0, 1\]"),
        ({"information_fractions": [0.5, 1.2]}, r"\(0, 1\]"),
        ({"information_fractions": [0.5, math.nan]}, "finite"),
        ({"information_fractions": [[0.5, 1.0]]}, "one-dimensional"),
        ({"information_fractions": ["a"]}, "numbers"),
        ({"information_fractions": FIVE, "alpha": 1.0}, "alpha"),
        ({"information_fractions": FIVE, "spending": "haybittle"}, "spending"),
        ({"information_fractions": FIVE, "points_per_sd": 2}, "points_per_sd"),
    ],
)
def test_invalid_input(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        lan_demets_boundaries(**kwargs)  # type: ignore[arg-type]


def test_invalid_test_input() -> None:
    d = lan_demets_boundaries(FIVE)
    with pytest.raises(InvalidInputError, match="looks"):
        d.test([0.0] * 6)
    with pytest.raises(InvalidInputError, match="finite"):
        d.test([math.inf])
    with pytest.raises(InvalidInputError, match="looks"):
        d.first_crossing(np.zeros((3, 4)))
    with pytest.raises(InvalidInputError, match="spending"):
        spending_function(0.5, 0.05, "nope")  # type: ignore[arg-type]
