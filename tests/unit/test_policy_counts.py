"""policy.counts: increments counted once into the strata whose span holds them, the coverage of a
variant's scrape targets, the settle of a new stratum, and inconsistent readings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from modelrollout.api.observations import CounterReading, Increment, Unknown, VariantCounts
from modelrollout.api.status import (
    ModelExperimentStatus,
    SettleReason,
    SettleSlice,
    Stratum,
    TargetSampling,
)
from modelrollout.policy import counts
from support.policy_world import make_spec

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SPEC = make_spec(rollout={"interval": "10s"})


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ts(seconds: float) -> float:
    return at(seconds).timestamp()


def reading(since: datetime | None, until: float, per: dict[str, list[tuple[float, float, float, float]]],
            **extra: VariantCounts) -> CounterReading:
    """Increments by variant: (start, end, trials, successes), one target per variant."""
    variants: dict[str, VariantCounts] = {}
    for v, incs in per.items():
        variants[v] = VariantCounts(
            fields={
                "trials": tuple(Increment(ts(a), ts(b), n, target=v) for a, b, n, _ in incs),
                "successes": tuple(Increment(ts(a), ts(b), k, target=v) for a, b, _, k in incs),
            },
            spacing=10.0,
        )
    variants.update(extra)
    return CounterReading(since=since, until=at(until), variants=variants)


def status_with(*strata: Stratum) -> ModelExperimentStatus:
    return ModelExperimentStatus(started_at=T0, counted_since=T0, strata=list(strata))


def test_an_increment_counts_once_in_the_stratum_that_holds_it_whole() -> None:
    old = Stratum(step=0, weights={"v1": 90, "v2": 10}, started_at=T0, counted_from=T0, ended_at=at(30))
    new = Stratum(step=1, weights={"v1": 75, "v2": 25}, started_at=at(30), counted_from=at(40))
    status = status_with(old, new)
    r = reading(None, 60, {
        "v1": [(0, 10, 100, 20), (10, 30, 200, 40), (25, 35, 50, 10), (40, 50, 70, 14), (50, 60, 80, 16)],
        "v2": [(0, 30, 30, 6), (30, 45, 9, 2), (45, 60, 11, 3)],
    })
    known = counts.read(SPEC, status, {"conversion": r}, ("v1", "v2"), stratify=True)
    assert status.strata[0].totals["v1"]["conversion"].trials == 300  # (25, 35] spans the change
    assert status.strata[0].totals["v2"]["conversion"].trials == 30
    assert status.strata[1].totals["v1"]["conversion"].trials == 150
    assert status.strata[1].totals["v2"]["conversion"].trials == 11  # (30, 45] starts before countedFrom
    since_start = known["conversion"]
    assert isinstance(since_start, counts.Known)
    assert since_start.values["v1"].trials == 500  # everything since the start, the straddler too
    assert status.checkpoints["conversion"] == at(60)
    # the same reading again (a replay) counts nothing twice
    counts.read(SPEC, status, {"conversion": r}, ("v1", "v2"), stratify=True)
    assert status.strata[1].totals["v1"]["conversion"].trials == 150


def test_a_reading_from_another_checkpoint_is_not_counted() -> None:
    status = status_with(Stratum(step=0, weights={"v1": 90, "v2": 10}, started_at=T0, counted_from=T0))
    status.checkpoints["conversion"] = at(20)
    r = reading(at(10), 30, {"v1": [(10, 30, 100, 10)], "v2": [(10, 30, 10, 1)]})
    known = counts.read(SPEC, status, {"conversion": r}, ("v1", "v2"), stratify=True)
    assert isinstance(known["conversion"], counts.Known)
    assert status.strata[0].totals == {}
    assert status.checkpoints["conversion"] == at(20)


def test_more_successes_than_trials_is_unknown_and_counts_nothing() -> None:
    status = status_with(Stratum(step=0, weights={"v1": 90, "v2": 10}, started_at=T0, counted_from=T0))
    r = reading(None, 30, {"v1": [(0, 30, 100, 10)], "v2": [(0, 30, 100, 150)]})
    known = counts.read(SPEC, status, {"conversion": r}, ("v1", "v2"), stratify=True)
    found = known["conversion"]
    assert isinstance(found, Unknown)
    assert "more successes (150) than trials (100)" in found.reason
    assert "conversion" not in status.checkpoints
    assert status.strata[0].totals == {}


def test_coverage_weights_each_target_by_its_rate() -> None:
    # Two pods of one variant with equal traffic; the second was not scraped for 30 of 40 seconds
    pods = {"a": TargetSampling(samples=400, seconds=40), "b": TargetSampling(samples=100, seconds=10)}
    samples, seconds = counts.coverage(pods)
    assert samples == 500
    assert seconds == pytest.approx(25.0)  # half the traffic covered 40 s, half 10 s
    assert counts.coverage({}) == (0.0, 0.0)
    assert counts.coverage({"a": TargetSampling(samples=0, seconds=30)}) == (0.0, 30.0)


def test_the_running_stratum_records_its_sampling_per_target_and_the_spans_of_resets() -> None:
    status = status_with(Stratum(step=0, weights={"v1": 50, "v2": 50}, started_at=T0, counted_from=at(5)))
    incs = (Increment(ts(5), ts(15), 100, "p1"), Increment(ts(15), ts(25), 30, "p1", reset=True),
            Increment(ts(10), ts(20), 90, "p2"), Increment(ts(0), ts(10), 7, "p3"))
    v1 = VariantCounts(fields={"trials": incs, "successes": ()}, spacing=10.0, resets=1)
    r = reading(None, 25, {"v2": [(5, 25, 200, 20)]}, v1=v1)
    counts.read(SPEC, status, {"conversion": r}, ("v1", "v2"), stratify=True)
    sampling = status.strata[0].sampling["v1"]
    assert sampling == {
        "p1": TargetSampling(samples=130, seconds=20, reset_seconds=10, reset_samples=30),
        "p2": TargetSampling(samples=90, seconds=10),
        "p3": TargetSampling(),  # seen (its increment reaches into the stratum), not reported yet
    }
    assert status.strata[0].totals["v1"]["conversion"].trials == 220
    assert status.strata[0].resets == {"v1": 1}
    # When the stratum ends, its sampling becomes one entry per variant, with its bound of losses
    counts.end_stratum(status, at(25))
    [(key, ended)] = status.strata[0].sampling["v1"].items()
    assert key == "*"
    assert (ended.samples, ended.seconds) == (220, pytest.approx(counts.coverage(sampling)[1]))
    assert ended.bounded
    assert status.strata[0].sampling["v2"]["*"].lost == 0.0  # v2: one target, clean


def _losses(
    v1: dict[str, TargetSampling], v2: dict[str, TargetSampling] | None = None
) -> dict[str, float] | None:
    stratum = Stratum(step=0, weights={"v1": 50, "v2": 50}, started_at=T0, counted_from=T0,
                      sampling={"v1": v1, "v2": v2 or {"x": TargetSampling(samples=1800, seconds=30)}})
    return counts.stratum_losses(stratum, ("v1", "v2"), at(30))


def test_what_a_stratum_may_have_missed_is_bounded() -> None:
    steady = {"a": TargetSampling(samples=900, seconds=30), "b": TargetSampling(samples=910, seconds=30)}
    assert _losses(steady) == {"v1": 0.0, "v2": 0.0}
    # b reset: its increment over 10 s counted 100 where its rate (30/s) gives 300: up to 200 lost
    reset = {**steady, "b": TargetSampling(samples=700, seconds=30, reset_seconds=10, reset_samples=100)}
    rate = (600 + 3 * 600**0.5 + 3) / 20
    expected = rate * 10 + 3 * (rate * 10) ** 0.5 + 3 - 100
    found = _losses(reset)
    assert found is not None
    assert found["v1"] == pytest.approx(expected)
    # a reset just after a scrape loses (almost) nothing: the bound is the count's noise
    just_after = TargetSampling(samples=900, seconds=30, reset_seconds=10, reset_samples=300)
    early = _losses({**steady, "b": just_after})
    assert early is not None
    assert early["v1"] < 0.35 * found["v1"]


def test_a_target_without_a_clean_increment_may_have_carried_its_whole_variant() -> None:
    # v1's second pod has only an increment across a reset (it counted 50 over 30 s): its share is
    # not known, so it may have missed the variant's whole traffic over those 30 s, which v2 (fully
    # reported, 60/s at the same weight) bounds under the null hypothesis
    found = _losses({"a": TargetSampling(samples=900, seconds=30),
                     "b": TargetSampling(samples=50, seconds=30, reset_seconds=30, reset_samples=50)})
    assert found is not None
    rate = (1800 + 3 * 1800**0.5 + 3) / 30  # v2's rate bound, its share 50 %: the variant's
    assert found["v1"] == pytest.approx(rate * 30 + 3 * (rate * 30) ** 0.5 + 3 - 50)
    unreported = _losses({"a": TargetSampling(samples=900, seconds=30), "c": TargetSampling()})
    assert unreported is not None
    assert unreported["v1"] > 1800
    # when no variant is reported by all its targets, nothing can be bounded
    assert _losses({"c": TargetSampling()}, {"d": TargetSampling()}) is None


def _slice(end: float, v1: float, v2: float) -> SettleSlice:
    return SettleSlice(end=at(end), samples={"v1": v1, "v2": v2}, exposure={"v1": 10.0, "v2": 10.0})


def test_a_slice_is_weighed_new_split_against_old() -> None:
    new, old = {"v1": 75, "v2": 25}, {"v1": 90, "v2": 10}
    assert counts.slice_log_lr(_slice(10, 750, 250), new, old) > 50
    assert counts.slice_log_lr(_slice(10, 900, 100), new, old) < -50
    assert counts.slice_log_lr(_slice(10, 0, 0), new, old) == 0.0
    assert counts.slice_log_lr(_slice(10, 100, 5), {"v1": 90, "v2": 10}, {"v1": 100, "v2": 0}) == float("inf")


def test_a_stratum_counts_once_its_latest_slices_show_the_new_split() -> None:
    stratum = Stratum(step=1, weights={"v1": 75, "v2": 25}, previous_weights={"v1": 90, "v2": 10},
                      started_at=T0, spacing=10.0)
    stratum.settling = [_slice(10, 900, 100)]  # still the old split (routes not propagated yet)
    counts.settle(SPEC, stratum, at(10))
    assert stratum.counted_from is None
    stratum.settling.append(_slice(20, 750, 250))
    counts.settle(SPEC, stratum, at(20))
    assert stratum.counted_from == at(20)
    assert stratum.settle is not None
    assert stratum.settle.reason is SettleReason.WEIGHTS_SEEN
    assert stratum.settle.seconds == 20.0
    assert stratum.settle.log_likelihood_ratio is not None
    assert stratum.settle.log_likelihood_ratio > counts.SETTLE_EVIDENCE
    assert stratum.settling == []


def test_without_evidence_a_stratum_counts_after_the_limit_unless_the_old_split_persists() -> None:
    def settled(slices: list[SettleSlice], now: float) -> Stratum:
        stratum = Stratum(step=1, weights={"v1": 75, "v2": 25}, previous_weights={"v1": 90, "v2": 10},
                          started_at=T0, spacing=10.0, settling=slices)
        counts.settle(SPEC, stratum, at(now))
        return stratum

    limit = counts.settle_limit(SPEC, Stratum(step=0, weights={}, started_at=T0, spacing=10.0))
    assert limit == timedelta(seconds=50)  # five times the longer of the scrape interval and the tick
    quiet = [_slice(t, 0, 0) for t in (10, 20, 30, 40, 50)]
    assert settled(quiet[:4], 40).counted_from is None
    late = settled(quiet, 50)
    assert late.settle is not None
    assert late.settle.reason is SettleReason.SETTLE_LIMIT
    old = [_slice(t, 900, 100) for t in (10, 20, 30, 40, 50)]
    assert settled(old, 50).counted_from is None  # the old split still: the routes have not moved
    assert settled([*old, *(_slice(t, 900, 100) for t in (60, 70, 80, 90, 100))], 100).counted_from == at(100)


def test_unchanged_weights_count_at_once() -> None:
    status = status_with(Stratum(step=0, weights={"v1": 90, "v2": 10}, started_at=T0, counted_from=T0))
    stratum = counts.open_stratum(status, 0, {"v1": 90, "v2": 10}, at(30), previous={"v1": 90, "v2": 10},
                                  srm_epoch=1)
    assert stratum.counted_from == at(30)
    assert stratum.settle is not None
    assert stratum.settle.reason is SettleReason.UNCHANGED
    assert status.strata[0].ended_at == at(30)


def test_an_increment_far_below_its_targets_rate_is_taken_as_a_reset() -> None:
    # A pod that restarted twice within a scrape interval counts past its last sample: no drop
    # shows, but it counted 30 where its rate gives about 1,000
    status = status_with(Stratum(step=0, weights={"v1": 50, "v2": 50}, started_at=T0, counted_from=T0))
    incs = (Increment(ts(0), ts(10), 1000, "p1"), Increment(ts(10), ts(20), 990, "p1"),
            Increment(ts(20), ts(30), 30, "p1"), Increment(ts(30), ts(40), 960, "p1"))
    v1 = VariantCounts(fields={"trials": incs, "successes": ()}, spacing=10.0)
    r = reading(None, 40, {"v2": [(0, 40, 4000, 40)]}, v1=v1)
    counts.read(SPEC, status, {"conversion": r}, ("v1", "v2"), stratify=True)
    p1 = status.strata[0].sampling["v1"]["p1"]
    assert (p1.reset_seconds, p1.reset_samples) == (10, 30)
    assert status.strata[0].resets == {"v1": 1}
    losses = counts.stratum_losses(status.strata[0], ("v1", "v2"), at(40))
    assert losses is not None
    assert losses["v1"] > 900  # what it lost is allowed for
    # an ordinary fluctuation is not a reset
    steady = TargetSampling(samples=2000, seconds=20)
    assert not counts.looks_reset(steady, Increment(ts(20), ts(30), 900, "p"))


def test_variants_sampled_from_the_same_targets_are_aligned() -> None:
    one = {"a": TargetSampling(samples=10, seconds=10), "b": TargetSampling(samples=12, seconds=10)}
    shared = Stratum(step=0, weights={"v1": 50, "v2": 50}, started_at=T0,
                     sampling={"v1": one, "v2": dict(one)})
    apart = Stratum(step=0, weights={"v1": 50, "v2": 50}, started_at=T0,
                    sampling={"v1": one, "v2": {"c": TargetSampling(samples=3, seconds=10)}})
    assert counts.aligned(shared, ("v1", "v2"))
    assert not counts.aligned(apart, ("v1", "v2"))
    counts.end_stratum(ModelExperimentStatus(strata=[apart]), at(10))
    assert apart.aligned is False  # kept when its sampling is folded into '*'
    assert not counts.aligned(apart, ("v1", "v2"))
