"""The sticky split: which of the 100 buckets each variant owns, and regexes that match them.

A request carries its user's bucket, ``"0"`` .. ``"99"`` (a consistent hash of the user id, from
the SDK or the edge), in the bucket header. The mesh routers express a split with weights
``{v6: 75, v7: 25}`` as one header-matched route per variant that sends its buckets to it, ahead of
the per-request weighted route (for requests without the header). The number of buckets a variant
owns equals its weight.

**Layout.** Let the experiment have ``n`` challengers ``c_0 .. c_{n-1}`` (in the target's order,
dropped ones included, so the layout does not move when one is dropped). Challenger ``c_i`` has the
anchor ``a_i = ceil(100 i / n)``: 0 for one challenger; 0 and 50 for two; 0, 34 and 67 for three.

1. A live challenger (weight > 0) owns its *territory*, from its anchor up to the anchor of the
   next live challenger (cyclically, so the last one's territory wraps to the first one's anchor).
   It takes its buckets upwards from its anchor: ``[a_i, a_i + w_i)``.
2. If its weight exceeds its territory, the rest is taken downwards from its anchor, out of the
   unused tail of the previous live challenger's territory: ``[a_i - d_i, a_i + u_i)``.
3. If that tail is too short as well, the layout falls back to packing the live challengers one
   after the other from bucket 0 in order (always possible, since the weights sum to at most 100).
4. The champion owns every bucket left over.

Ranges are contiguous modulo 100. They grow monotonically, so a user who saw a challenger keeps
seeing it as its weight grows, whenever the fallback is not needed, which covers:

* one challenger: ``[0, w)``, e.g. 10 % -> ``0-9``, 25 % -> ``0-24``, 50 % -> ``0-49``, 100 % -> all;
* several challengers whose weights stay within ``100 / n`` each (the step weight shared by the
  live challengers): two challengers at 5 % each own ``0-4`` and ``50-54``, at 25 % each ``0-24``
  and ``50-74``; three at 10 % each own ``0-9``, ``34-43``, ``67-76``;
* a challenger dropped (weight 0): its territory goes to the live challenger before it, and the
  one after it may grow downwards into that territory's unused tail; e.g. three challengers, the
  middle one dropped, the others at 50 % each: ``0-49`` and ``50-99`` (the third grew down from 67);
* promotion: the winner owns all 100 buckets, a superset of its range.

The fallback (3) only happens when the weights of live neighbours differ so much that one of them
cannot grow in place; correctness (each variant owns exactly its weight in buckets, no overlap)
holds in every case.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from modelrollout.errors import InvalidInputError
from modelrollout.routing.base import BUCKETS


def anchors(n: int) -> list[int]:
    """The anchors ``ceil(100 i / n)`` of ``n`` challengers."""
    if n < 1:
        raise InvalidInputError(f"need at least one challenger, not {n}")
    return [(i * BUCKETS + n - 1) // n for i in range(n)]


def _span(start: int, size: int) -> tuple[int, ...]:
    return tuple(sorted((start + k) % BUCKETS for k in range(size)))


def challenger_buckets(weights: Sequence[int]) -> list[tuple[int, ...]]:
    """The buckets of each challenger, given the challengers' weights in order (see the layout)."""
    return _layout(weights)[0]


def in_place(weights: Sequence[int]) -> bool:
    """Whether the layout of ``weights`` is the anchored one (steps 1-2), not the packed fallback."""
    return _layout(weights)[1]


def _layout(weights: Sequence[int]) -> tuple[list[tuple[int, ...]], bool]:
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, int) or not 0 <= w <= BUCKETS:
            raise InvalidInputError(f"challenger weights must be integers in 0..100, not {list(weights)}")
    if sum(weights) > BUCKETS:
        raise InvalidInputError(f"challenger weights must sum to at most 100, not {sum(weights)}")
    n = len(weights)
    result: list[tuple[int, ...]] = [() for _ in range(n)]
    live = [i for i, w in enumerate(weights) if w > 0]
    if not live:
        return result, True
    anchor = anchors(n)
    territory: dict[int, int] = {}
    for k, i in enumerate(live):
        following = live[(k + 1) % len(live)]
        territory[i] = BUCKETS if following == i else (anchor[following] - anchor[i]) % BUCKETS
    up = {i: min(weights[i], territory[i]) for i in live}
    down: dict[int, int] = {}
    fits = True
    for k, i in enumerate(live):
        extra = weights[i] - up[i]
        if extra == 0:
            down[i] = 0
            continue
        before = live[k - 1]
        if before == i or territory[before] - up[before] < extra:
            fits = False
            break
        down[i] = extra
    if fits:
        for i in live:
            result[i] = _span(anchor[i] - down[i], weights[i])
        return result, True
    cursor = 0
    for i in live:
        result[i] = _span(cursor, weights[i])
        cursor += weights[i]
    return result, False


def assign_buckets(names: Sequence[str], champion: str,
                   weights: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    """The buckets of every variant: challengers by the layout, the champion the rest."""
    challengers = [n for n in names if n != champion]
    owned = challenger_buckets([weights[n] for n in challengers])
    buckets = dict(zip(challengers, owned, strict=True))
    taken = {b for bs in owned for b in bs}
    buckets[champion] = tuple(b for b in range(BUCKETS) if b not in taken)
    return {n: buckets[n] for n in names}


def _digits(low: int, high: int) -> str:
    return str(low) if low == high else f"[{low}-{high}]"


def _run_alternatives(low: int, high: int) -> list[str]:
    """Alternatives matching the decimal strings of ``low`` .. ``high`` (0 <= low <= high <= 99)."""
    parts: list[str] = []
    if low <= 9:
        parts.append(_digits(low, min(high, 9)))
    if high >= 10:
        start = max(low, 10)
        first, last = start // 10, high // 10
        if first == last:
            parts.append(f"{first}{_digits(start % 10, high % 10)}")
            return parts
        tail = []
        if start % 10 != 0:
            parts.append(f"{first}{_digits(start % 10, 9)}")
            first += 1
        if high % 10 != 9:
            tail.append(f"{last}{_digits(0, high % 10)}")
            last -= 1
        if first <= last:
            parts.append(f"{_digits(first, last)}[0-9]")
        parts += tail
    return parts


def runs(buckets: Iterable[int]) -> list[tuple[int, int]]:
    """Maximal runs ``(low, high)`` of consecutive buckets, in order."""
    ordered = sorted(set(buckets))
    out: list[tuple[int, int]] = []
    for b in ordered:
        if not 0 <= b < BUCKETS:
            raise InvalidInputError(f"buckets must be in 0..99, not {b}")
        if out and out[-1][1] == b - 1:
            out[-1] = (out[-1][0], b)
        else:
            out.append((b, b))
    return out


def buckets_regex(buckets: Iterable[int]) -> str:
    """An anchored RE2 (and Python) regex matching exactly the decimal strings of ``buckets``.

    ``range(25)`` gives ``^([0-9]|1[0-9]|2[0-4])$``. Numbers are written without leading zeros.
    In RE2 (Envoy) ``$`` is the end of the text; header values cannot hold a newline anyway.
    """
    alternatives = [alt for low, high in runs(buckets) for alt in _run_alternatives(low, high)]
    if not alternatives:
        raise InvalidInputError("cannot write a regex for an empty set of buckets")
    return "^(" + "|".join(alternatives) + ")$"


def matched_buckets(regex: str) -> tuple[int, ...]:
    """The buckets ``0`` .. ``99`` that ``regex`` fully matches (``()`` if it does not compile)."""
    try:
        pattern = re.compile(regex)
    except re.error:
        return ()
    return tuple(b for b in range(BUCKETS) if pattern.fullmatch(str(b)))
