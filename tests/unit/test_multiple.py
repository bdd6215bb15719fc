"""Tests of modelrollout.stats.multiple against statsmodels.stats.multitest.multipletests."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from modelrollout.errors import InvalidInputError
from modelrollout.stats.multiple import adjust, bonferroni, holm

pytestmark = pytest.mark.unit

VECTORS = [
    [0.01],
    [0.01, 0.04],
    [0.001, 0.01, 0.02, 0.04, 0.3],
    [0.04, 0.001, 0.3, 0.02, 0.01],  # unsorted
    [0.0125, 0.0125, 0.0125, 0.0125],  # ties exactly at alpha / m
    [0.02, 0.02, 0.001, 0.5, 0.02],  # ties in the middle
    [1.0, 1.0, 0.2],  # p = 1
    [0.0, 0.5, 1.0],  # p = 0
    [0.049, 0.051, 0.9, 0.03, 0.012, 0.0004],
]


@pytest.mark.parametrize("p", VECTORS)
@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_bonferroni_matches_statsmodels(p: list[float], alpha: float) -> None:
    res = bonferroni(p, alpha)
    reject, corrected, _, _ = multipletests(p, alpha=alpha, method="bonferroni")
    np.testing.assert_allclose(res.adjusted_p_values, corrected, rtol=1e-15)
    assert list(res.reject) == list(reject)


@pytest.mark.parametrize("p", VECTORS)
@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_holm_matches_statsmodels(p: list[float], alpha: float) -> None:
    res = holm(p, alpha)
    reject, corrected, _, _ = multipletests(p, alpha=alpha, method="holm")
    np.testing.assert_allclose(res.adjusted_p_values, corrected, rtol=1e-15)
    assert list(res.reject) == list(reject)


def test_holm_hand_computed_example() -> None:
    # m = 4, sorted p: 0.01, 0.015, 0.03, 0.2 -> thresholds 0.0125, 0.01667, 0.025, 0.05:
    # reject the first two, stop at 0.03 > 0.025. Adjusted: 0.04, 0.045, 0.06, 0.2.
    res = holm([0.03, 0.01, 0.2, 0.015], 0.05)
    assert res.reject == (False, True, False, True)
    assert res.adjusted_p_values == pytest.approx((0.06, 0.04, 0.2, 0.045))
    assert res.any_rejected
    assert res.method == "Holm step-down"


def test_holm_rejects_at_least_what_bonferroni_rejects() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        p = list(rng.uniform(0, 0.1, size=rng.integers(1, 8)))
        h, b = holm(p), bonferroni(p)
        assert all(hr or not br for hr, br in zip(h.reject, b.reject, strict=True))
        assert all(ha <= ba + 1e-15 for ha, ba in zip(h.adjusted_p_values, b.adjusted_p_values, strict=True))


def test_adjust_dispatches_and_validates() -> None:
    assert adjust([0.01, 0.04]).method == "Holm step-down"
    assert adjust([0.01, 0.04], "bonferroni").adjusted_p_values == pytest.approx((0.02, 0.08))
    with pytest.raises(InvalidInputError, match="method"):
        adjust([0.01], "fdr")  # type: ignore[arg-type]


def test_invalid_inputs() -> None:
    with pytest.raises(InvalidInputError, match=r"p_values\[1\]"):
        holm([0.1, 1.2])
    with pytest.raises(InvalidInputError, match=r"p_values\[0\]"):
        bonferroni([float("nan")])
    with pytest.raises(InvalidInputError, match="at least one"):
        holm([])
    with pytest.raises(InvalidInputError, match="alpha"):
        holm([0.1], alpha=0)
