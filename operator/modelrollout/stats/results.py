"""Result objects shared by the statistics modules.

They follow scipy's and statsmodels' style: plain, immutable records that carry the numbers, the
method that produced them and a reference, so that a decision can always be explained.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


def meets_practical_threshold(gain_low: float | None, threshold: float | None) -> bool:
    """Whether a significant gain is also large enough to act on.

    ``gain_low`` is the lower bound of the gain's interval, signed so that positive is better (the
    lift for a metric that should increase, minus the lift for one that should decrease). Without a
    ``threshold`` every significant gain is enough. Both ``modelrollout analyze`` and the operator's
    verdict call this, so they cannot disagree on the same numbers.
    """
    return threshold is None or (gain_low is not None and gain_low >= threshold)


class Verdict(StrEnum):
    """The verdict of a comparison between a challenger and the champion."""

    ROLLOUT_CHALLENGER = "ROLLOUT_CHALLENGER"
    KEEP_CHAMPION = "KEEP_CHAMPION"
    INCONCLUSIVE = "INCONCLUSIVE"


@dataclass(frozen=True)
class Interval:
    """A closed interval [low, high]; either end may be infinite for one-sided intervals."""

    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def as_list(self) -> list[float]:
        return [self.low, self.high]


@dataclass(frozen=True)
class ComparisonResult:
    """Challenger (treatment) against champion (control) on one metric.

    ``difference`` is treatment minus control on the metric's own scale; ``relative_lift`` is
    difference / control. ``p_value`` is a classical p-value for fixed-horizon tests and an
    always-valid p-value (1 / running max e-value) for sequential ones, in which case ``e_value``
    is set too.
    """

    method: str
    reference: str
    control_estimate: float
    treatment_estimate: float
    difference: float
    ci: Interval
    relative_lift: float
    relative_lift_ci: Interval
    p_value: float
    alpha: float
    statistic: float = math.nan
    e_value: float | None = None
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha

    def decision(self, direction: str = "increase") -> Verdict:
        """ROLLOUT_CHALLENGER when significantly better in ``direction``, KEEP_CHAMPION when
        significantly worse, INCONCLUSIVE otherwise."""
        if not self.significant:
            return Verdict.INCONCLUSIVE
        better = self.difference > 0 if direction == "increase" else self.difference < 0
        return Verdict.ROLLOUT_CHALLENGER if better else Verdict.KEEP_CHAMPION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci"] = self.ci.as_list()
        d["relative_lift_ci"] = self.relative_lift_ci.as_list()
        d["significant"] = self.significant
        return d
