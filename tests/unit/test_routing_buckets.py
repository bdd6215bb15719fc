"""Tests of modelrollout.routing.buckets: regexes for bucket sets and the sticky layout."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelrollout.errors import InvalidInputError
from modelrollout.routing.buckets import (
    anchors,
    assign_buckets,
    buckets_regex,
    challenger_buckets,
    in_place,
    matched_buckets,
    runs,
)

pytestmark = pytest.mark.unit

# (No "99\n": Python's $ also matches before a final newline, RE2's does not, and a header value
# cannot hold a newline.)
NOT_BUCKETS = ["", "-1", "100", "007", "00", "05", "1 ", " 1", "a", "1a", "0x1", "٣", "5\n5"]


def _matches(regex: str) -> set[int]:
    pattern = re.compile(regex)
    return {b for b in range(100) if pattern.fullmatch(str(b))}


# --- regexes ----------------------------------------------------------------------------------------


def test_the_documented_example() -> None:
    assert buckets_regex(range(25)) == "^([0-9]|1[0-9]|2[0-4])$"
    assert buckets_regex([7]) == "^(7)$"
    assert buckets_regex(range(100)) == "^([0-9]|[1-9][0-9])$"
    assert buckets_regex(range(10, 20)) == "^(1[0-9])$"


def test_every_contiguous_range_is_matched_exactly_under_search_and_full_match() -> None:
    for low in range(100):
        for high in range(low, 100):
            regex = buckets_regex(range(low, high + 1))
            pattern = re.compile(regex)
            want = set(range(low, high + 1))
            assert _matches(regex) == want, (low, high, regex)
            # Anchored: search semantics (as a prefix/contains engine would use) give the same set.
            assert {b for b in range(100) if pattern.search(str(b))} == want
            assert not any(pattern.search(s) for s in NOT_BUCKETS), regex
            assert len(regex) < 64


@given(st.sets(st.integers(0, 99), min_size=1))
def test_any_set_of_buckets_is_matched_exactly(buckets: set[int]) -> None:
    regex = buckets_regex(buckets)
    assert _matches(regex) == buckets
    assert matched_buckets(regex) == tuple(sorted(buckets))
    assert not any(re.search(regex, s) for s in NOT_BUCKETS)


def test_runs_and_bad_input() -> None:
    assert runs([5, 1, 2, 3, 9, 8]) == [(1, 3), (5, 5), (8, 9)]
    with pytest.raises(InvalidInputError):
        buckets_regex([])
    with pytest.raises(InvalidInputError):
        buckets_regex([100])
    assert matched_buckets("(") == ()


# --- layout ----------------------------------------------------------------------------------------


def test_anchors() -> None:
    assert anchors(1) == [0]
    assert anchors(2) == [0, 50]
    assert anchors(3) == [0, 34, 67]
    assert anchors(4) == [0, 25, 50, 75]
    with pytest.raises(InvalidInputError):
        anchors(0)


def _contiguous_mod_100(buckets: tuple[int, ...]) -> bool:
    if not buckets or len(buckets) == 100:
        return True
    members = set(buckets)
    starts = [b for b in buckets if (b - 1) % 100 not in members]
    return len(starts) == 1


@st.composite
def challenger_weights(draw: st.DrawFn) -> list[int]:
    n = draw(st.integers(1, 6))
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=n, max_size=n)))
    total = cuts[-1]
    parts = [b - a for a, b in zip([0, *cuts[:-1]], cuts, strict=True)]
    assert sum(parts) == total
    return draw(st.permutations(parts))


@given(challenger_weights())
def test_layout_gives_each_challenger_exactly_its_weight_disjoint_and_contiguous(weights: list[int]) -> None:
    layout = challenger_buckets(weights)
    assert [len(b) for b in layout] == weights
    flat = [b for bs in layout for b in bs]
    assert len(flat) == len(set(flat))
    assert all(0 <= b < 100 for b in flat)
    assert all(_contiguous_mod_100(b) for b in layout)


@given(challenger_weights())
def test_the_champion_owns_the_rest(weights: list[int]) -> None:
    names = ["champ"] + [f"c{i}" for i in range(len(weights))]
    all_weights = dict(zip(names, [100 - sum(weights), *weights], strict=True))
    owned = assign_buckets(names, "champ", all_weights)
    assert {n: len(b) for n, b in owned.items()} == all_weights
    assert sorted(b for bs in owned.values() for b in bs) == list(range(100))


def test_one_challenger_grows_from_zero_monotonically() -> None:
    previous: set[int] = set()
    for w in range(101):
        (now,) = challenger_buckets([w])
        assert set(now) == set(range(w))
        assert previous <= set(now)
        previous = set(now)


@given(st.integers(1, 6), st.data())
def test_shared_steps_within_the_lanes_are_monotone(n: int, data: st.DataObject) -> None:
    lane = 100 // n
    steps = sorted(data.draw(st.lists(st.integers(0, lane), min_size=2, max_size=6)))
    previous = [set[int]() for _ in range(n)]
    for share in steps:
        layout = challenger_buckets([share] * n)
        for i in range(n):
            assert previous[i] <= set(layout[i])
            previous[i] = set(layout[i])


@given(st.integers(2, 5), st.integers(0, 4), st.data())
def test_a_challenger_grows_monotonically_while_the_others_hold(n: int, who: int,
                                                                 data: st.DataObject) -> None:
    who %= n
    others = data.draw(st.lists(st.integers(0, 100 // n), min_size=n, max_size=n))
    others[who] = 0
    room = 100 - sum(others)
    previous: set[int] = set()
    was_in_place = True
    for w in range(room + 1):
        weights = list(others)
        weights[who] = w
        layout = challenger_buckets(weights)
        now = set(layout[who])
        if was_in_place and in_place(weights):
            assert previous <= now
            # The others do not move while one challenger grows.
            assert all(set(layout[i]) == set(challenger_buckets(others)[i]) for i in range(n) if i != who)
        previous, was_in_place = now, in_place(weights)


def test_documented_layouts() -> None:
    assert challenger_buckets([10]) == [tuple(range(10))]
    assert challenger_buckets([5, 5]) == [tuple(range(5)), tuple(range(50, 55))]
    assert challenger_buckets([25, 25]) == [tuple(range(25)), tuple(range(50, 75))]
    assert challenger_buckets([10, 10, 10]) == [tuple(range(10)), tuple(range(34, 44)), tuple(range(67, 77))]
    # The middle challenger dropped: the third grows down into the first one's unused territory.
    assert challenger_buckets([17, 17, 16]) == [tuple(range(17)), tuple(range(34, 51)), tuple(range(67, 83))]
    assert challenger_buckets([50, 0, 50]) == [tuple(range(50)), (), tuple(range(50, 100))]
    assert challenger_buckets([0, 0, 100]) == [(), (), tuple(range(100))]
    # Still a superset of the ranges the survivors had before.
    assert set(range(67, 83)) <= set(range(50, 100))
    # Promotion: one challenger at 100 % owns everything.
    assert challenger_buckets([100, 0]) == [tuple(range(100)), ()]


def test_growing_down_and_the_packed_fallback() -> None:
    # The second at 55 % fills its territory [50, 100) and grows down by 5 into the first one's tail.
    layout = challenger_buckets([45, 55])
    assert layout == [tuple(range(45)), tuple(range(45, 100))]
    layout = challenger_buckets([49, 51])
    assert layout == [tuple(range(49)), tuple(range(49, 100))]
    assert in_place([45, 55])
    assert in_place([49, 51])
    # Three challengers at 1 % each but the first at 98 %: it cannot be contiguous around the others.
    assert not in_place([98, 1, 1])
    assert challenger_buckets([98, 1, 1]) == [tuple(range(98)), (98,), (99,)]


def test_bad_weights() -> None:
    with pytest.raises(InvalidInputError):
        challenger_buckets([60, 50])
    with pytest.raises(InvalidInputError):
        challenger_buckets([-1])
    with pytest.raises(InvalidInputError):
        challenger_buckets([True])
