"""Tests of modelrollout.stats.drift against scipy and statsmodels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance
from statsmodels.stats.proportion import proportion_confint

from modelrollout.errors import InvalidInputError
from modelrollout.stats.drift import (
    counts_from_cumulative,
    disagreement_share,
    jensen_shannon,
    ks_binned,
    ks_two_sample,
)
from modelrollout.stats.results import Verdict

pytestmark = pytest.mark.unit


# --- KS on raw samples: oracle scipy.stats.ks_2samp -----------------------------------------------


@pytest.mark.parametrize(
    ("n", "m", "shift"),
    [(30, 40, 0.0), (200, 150, 0.3), (2000, 2500, 0.05), (12_000, 11_000, 0.03)],
)
def test_ks_two_sample_matches_scipy(n: int, m: int, shift: float) -> None:
    rng = np.random.default_rng(n + m)
    x = rng.normal(0, 1, n)
    y = rng.normal(shift, 1, m)
    res = ks_two_sample(list(x), list(y))
    oracle = stats.ks_2samp(x, y)
    assert res.statistic == pytest.approx(oracle.statistic, abs=1e-15)
    assert res.p_value == pytest.approx(oracle.pvalue, rel=1e-12, abs=1e-300)
    assert res.statistic_location == oracle.statistic_location
    assert res.effective_n == pytest.approx(n * m / (n + m))
    assert res.method.endswith("exact" if max(n, m) <= 10_000 else "asymptotic")


def test_ks_statistic_by_brute_force() -> None:
    x = [0.1, 0.4, 0.4, 0.9]
    y = [0.2, 0.3, 0.35, 0.5, 0.95]
    # ECDFs at every observed point: max |F_x - F_y| = |1/4 - 3/5| = 0.35, on [0.35, 0.4).
    pts = sorted(x + y)
    brute = max(abs(sum(v <= t for v in x) / 4 - sum(v <= t for v in y) / 5) for t in pts)
    assert brute == pytest.approx(0.35)
    assert ks_two_sample(x, y).statistic == pytest.approx(brute)


# --- KS on binned data -----------------------------------------------------------------------------


def _cumulative_on_integers(sample: np.ndarray, top: int) -> list[float]:
    # Prometheus-like cumulative buckets with le = 0, 1, ..., top, +Inf.
    return [float(np.sum(sample <= e)) for e in range(top + 1)] + [float(sample.size)]


@pytest.mark.parametrize(("n", "m", "p_x", "p_y"), [(800, 1200, 0.3, 0.3), (5000, 4000, 0.30, 0.32)])
def test_ks_binned_equals_raw_ks_when_data_live_on_the_edges(n: int, m: int, p_x: float, p_y: float) -> None:
    # Integer-valued data binned at every integer: the ECDF can only jump at the edges, so the
    # binned D is the raw D, and the binned p-value is ks_2samp's asymptotic p-value.
    rng = np.random.default_rng(17)
    x = rng.binomial(20, p_x, n)
    y = rng.binomial(20, p_y, m)
    edges = [float(e) for e in range(21)] + [math.inf]
    res = ks_binned(_cumulative_on_integers(x, 20), _cumulative_on_integers(y, 20), edges=edges)
    oracle = stats.ks_2samp(x, y, method="asymp")
    assert res.statistic == pytest.approx(oracle.statistic, abs=1e-12)
    assert res.p_value == pytest.approx(oracle.pvalue, rel=1e-9)
    assert res.statistic_location == oracle.statistic_location
    assert res.n_control == n
    assert res.n_treatment == m


def test_ks_binned_is_at_most_the_raw_statistic_for_continuous_data() -> None:
    rng = np.random.default_rng(4)
    x = rng.lognormal(0.0, 0.5, 3000)
    y = rng.lognormal(0.1, 0.5, 3000)
    le = np.array([0.25, 0.5, 1.0, 2.5, 5.0, np.inf])
    cx = [float(np.sum(x <= e)) for e in le]
    cy = [float(np.sum(y <= e)) for e in le]
    binned = ks_binned(cx, cy)
    raw = ks_two_sample(list(x), list(y))
    assert binned.statistic <= raw.statistic + 1e-12
    assert binned.statistic > 0.5 * raw.statistic  # bins this fine keep most of the signal
    assert math.isnan(binned.statistic_location)
    # Same effective n, smaller D: the binned p-value is never below the raw asymptotic one.
    assert binned.p_value >= stats.ks_2samp(x, y, method="asymp").pvalue


def test_ks_binned_hand_example() -> None:
    # control ECDF at edges: 0.1, 0.5, 1; treatment: 0.3, 0.6, 1 -> D = 0.2.
    res = ks_binned([10, 50, 100], [60, 120, 200])
    assert res.statistic == pytest.approx(0.2)
    en = 100 * 200 / 300
    assert res.effective_n == pytest.approx(en)
    assert res.p_value == pytest.approx(stats.kstwo.sf(0.2, round(en)))


# --- Jensen-Shannon ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "q"),
    [
        ([10, 20, 30, 40], [10, 20, 30, 40]),
        ([10, 20, 30, 40], [40, 30, 20, 10]),
        ([5, 0, 3, 0], [0, 7, 1, 2]),  # empty bins on both sides
        ([1, 0], [0, 1]),  # disjoint supports: JSD = 1 bit
        ([123.5, 77.25, 0.5], [100.0, 100.0, 1.0]),
    ],
)
def test_jensen_shannon_matches_scipy(p: list[float], q: list[float]) -> None:
    res = jensen_shannon(p, q)
    oracle = distance.jensenshannon(p, q, base=2) ** 2
    assert res.divergence == pytest.approx(oracle, abs=1e-12)
    assert res.distance == pytest.approx(math.sqrt(oracle), abs=1e-6)
    assert 0.0 <= res.divergence <= 1.0
    assert res.bins == len(p)


def test_jensen_shannon_extremes_and_smoothing() -> None:
    assert jensen_shannon([1, 0], [0, 1]).divergence == pytest.approx(1.0)
    assert jensen_shannon([3, 6, 9], [1, 2, 3]).divergence == pytest.approx(0.0, abs=1e-15)
    p, q = [5, 0, 3, 0], [0, 7, 1, 2]
    smoothed = jensen_shannon(p, q, pseudocount=0.5)
    oracle = distance.jensenshannon(np.add(p, 0.5), np.add(q, 0.5), base=2) ** 2
    assert smoothed.divergence == pytest.approx(oracle, abs=1e-12)
    assert smoothed.divergence < jensen_shannon(p, q).divergence
    assert smoothed.pseudocount == 0.5


def test_counts_from_cumulative() -> None:
    assert counts_from_cumulative([2, 5, 5, 9]) == [2.0, 3.0, 0.0, 4.0]
    with pytest.raises(InvalidInputError, match=r"cumulative\[2\]"):
        counts_from_cumulative([2, 5, 4, 9])


# --- disagreement share: oracle statsmodels proportion_confint(method="wilson") ---------------------


@pytest.mark.parametrize(("k", "n"), [(0, 50), (3, 1000), (40, 400), (7, 7), (123.0, 10_000.0)])
@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_disagreement_wilson_matches_statsmodels(k: float, n: float, alpha: float) -> None:
    res = disagreement_share(k, n, alpha=alpha)
    low, high = proportion_confint(k, n, alpha=alpha, method="wilson")
    assert res.ci.low == pytest.approx(low, abs=1e-12)
    assert res.ci.high == pytest.approx(high, abs=1e-12)
    assert res.share == pytest.approx(k / n)


def test_disagreement_verdict_against_max_divergence() -> None:
    assert disagreement_share(20, 10_000).verdict(0.01) is Verdict.ROLLOUT_CHALLENGER  # ci ~ [0.1%, 0.3%]
    assert disagreement_share(300, 10_000).verdict(0.01) is Verdict.KEEP_CHAMPION  # ci ~ [2.7%, 3.4%]
    straddling = disagreement_share(10, 1000)  # 1 % with ci ~ [0.5 %, 1.8 %]
    assert straddling.verdict(0.01) is Verdict.INCONCLUSIVE
    assert not straddling.within(0.01)
    assert not straddling.exceeds(0.01)
    assert straddling.to_dict()["ci"] == straddling.ci.as_list()


# --- validation --------------------------------------------------------------------------------------


def test_invalid_inputs() -> None:
    with pytest.raises(InvalidInputError, match="control must not be empty"):
        ks_two_sample([], [1.0])
    with pytest.raises(InvalidInputError, match=r"treatment\[1\]"):
        ks_two_sample([1.0], [1.0, math.nan])
    with pytest.raises(InvalidInputError, match="same buckets"):
        ks_binned([1, 2], [1, 2, 3])
    with pytest.raises(InvalidInputError, match="positive total"):
        ks_binned([0, 0], [1, 2])
    with pytest.raises(InvalidInputError, match="strictly increasing"):
        ks_binned([1, 2], [1, 2], edges=[1.0, 1.0])
    with pytest.raises(InvalidInputError, match=r"control_counts\[0\]"):
        jensen_shannon([-1, 2], [1, 2])
    with pytest.raises(InvalidInputError, match="same bins"):
        jensen_shannon([1, 2], [1, 2, 3])
    with pytest.raises(InvalidInputError, match="pseudocount"):
        jensen_shannon([1, 2], [1, 2], pseudocount=-0.5)
    with pytest.raises(InvalidInputError, match="differing"):
        disagreement_share(11, 10)
    with pytest.raises(InvalidInputError, match="compared"):
        disagreement_share(0, 0)
    with pytest.raises(InvalidInputError, match="max_divergence"):
        disagreement_share(1, 10).within(1.5)
