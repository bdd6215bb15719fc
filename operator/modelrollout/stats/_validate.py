"""Input checks shared by the statistics modules; each raises InvalidInputError naming the value."""

from __future__ import annotations

import math
from collections.abc import Sequence

from modelrollout.errors import InvalidInputError


def finite(name: str, value: float) -> float:
    """Return ``value`` as float, or raise when it is NaN or infinite."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise InvalidInputError(f"{name} must be finite, got {value!r}")
    return v


def alpha(value: float, name: str = "alpha", upper: float = 1.0) -> float:
    """A significance level in (0, upper)."""
    v = finite(name, value)
    if not 0.0 < v < upper:
        raise InvalidInputError(f"{name} must be in (0, {upper:g}), got {value!r}")
    return v


def power(value: float, name: str = "power") -> float:
    """A power in (0, 1)."""
    v = finite(name, value)
    if not 0.0 < v < 1.0:
        raise InvalidInputError(f"{name} must be in (0, 1), got {value!r}")
    return v


def probability(name: str, value: float, *, open_interval: bool = False) -> float:
    """A probability in [0, 1], or in (0, 1) when ``open_interval``."""
    v = finite(name, value)
    if open_interval and not 0.0 < v < 1.0:
        raise InvalidInputError(f"{name} must be in (0, 1), got {value!r}")
    if not 0.0 <= v <= 1.0:
        raise InvalidInputError(f"{name} must be in [0, 1], got {value!r}")
    return v


def count(name: str, value: float) -> float:
    """A non-negative count (Prometheus counters are floats, so whole numbers are not required)."""
    v = finite(name, value)
    if v < 0:
        raise InvalidInputError(f"{name} must be >= 0, got {value!r}")
    return v


def positive(name: str, value: float) -> float:
    """A strictly positive number."""
    v = finite(name, value)
    if v <= 0:
        raise InvalidInputError(f"{name} must be > 0, got {value!r}")
    return v


def non_negative(name: str, value: float) -> float:
    """A number >= 0 (a variance, a standard deviation)."""
    v = finite(name, value)
    if v < 0:
        raise InvalidInputError(f"{name} must be >= 0, got {value!r}")
    return v


def successes_trials(prefix: str, successes: float, trials: float) -> tuple[float, float]:
    """A pair of counts with 0 <= successes <= trials and trials > 0."""
    s = count(f"{prefix} successes", successes)
    n = count(f"{prefix} trials", trials)
    if n <= 0:
        raise InvalidInputError(f"{prefix} trials must be > 0, got {trials!r}")
    if s > n:
        raise InvalidInputError(f"{prefix} successes ({successes!r}) must be <= trials ({trials!r})")
    return s, n


def probabilities(name: str, values: Sequence[float]) -> list[float]:
    """A probability vector: every entry in (0, 1], summing to 1 within 1e-9 relative."""
    vs = [finite(f"{name}[{i}]", v) for i, v in enumerate(values)]
    if len(vs) < 2:
        raise InvalidInputError(f"{name} needs at least 2 entries, got {len(vs)}")
    for i, v in enumerate(vs):
        if v <= 0:
            raise InvalidInputError(f"{name}[{i}] must be > 0, got {v!r}")
    total = sum(vs)
    if abs(total - 1.0) > 1e-9:
        raise InvalidInputError(f"{name} must sum to 1, got {total!r}")
    return vs
