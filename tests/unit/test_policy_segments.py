"""Segments and quantile guardrails in the policy: counts by label value, the harm rule, the latch,
and the quantile guardrail on bucket counts (issue 16).

The statistics themselves are tested against oracles in test_segments.py and test_quantiles.py;
these tests check the wiring: what is counted once, what is kept, what is carried, and what the
rules do with a harm or a breach.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from modelrollout.api.observations import CounterReading, Increment, Observations, VariantCounts
from modelrollout.api.status import ModelExperimentStatus
from modelrollout.policy import counts, guardrails, segments
from modelrollout.policy.context import Tick
from support.policy_world import T0, make_spec, roundtrip

pytestmark = pytest.mark.unit

SEGMENTS = {
    "label": "segment",
    "protected": [{"value": "mobile"}, {"value": "tablet"}],
    "exploratoryValues": 2,
}
P95 = {"name": "p95", "preset": "istio-latency-quantile", "quantile": 0.95, "maxRelativeIncrease": 0.2}
EDGES = ("5.0", "10.0", "25.0", "50.0", "100.0", "250.0")


def spec(**metrics: Any) -> Any:
    return make_spec(metrics=metrics)


def status() -> ModelExperimentStatus:
    return ModelExperimentStatus(started_at=T0, counted_since=T0)


def counted(fields: dict[str, float], start: float, end: float) -> VariantCounts:
    return VariantCounts(fields={k: (Increment(start, end, v),) for k, v in fields.items()})


def reading(
    s: ModelExperimentStatus, name: str, by_value: dict[str, dict[str, dict[str, float]]], seconds: float
) -> CounterReading:
    """A reading of ``name`` since its checkpoint: ``by_value[value][variant]`` = field sums."""
    since = s.checkpoints.get(name)
    start = (since or T0).timestamp()
    until = T0 + timedelta(seconds=seconds)
    totals: dict[str, dict[str, float]] = {}
    for by_variant in by_value.values():
        for v, fields in by_variant.items():
            for k, x in fields.items():
                totals.setdefault(v, {})[k] = totals.get(v, {}).get(k, 0.0) + x
    return CounterReading(
        since=since,
        until=until,
        variants={v: counted(f, start, until.timestamp()) for v, f in totals.items()},
        breakdown={
            value: {v: counted(f, start, until.timestamp()) for v, f in by_variant.items()}
            for value, by_variant in by_value.items()
        },
    )


def tick(the_spec: Any, seconds: float) -> Tick:
    at = T0 + timedelta(seconds=seconds)
    return Tick(the_spec, Observations(at=at, metrics={}), at, new_tick=True)


def proportions(rates: dict[str, tuple[float, float]], n: float) -> dict[str, dict[str, float]]:
    """variant -> successes and trials for ``n`` trials at the champion's and challenger's rate."""
    return {v: {"successes": rates[v][0] * n, "trials": n} for v in ("v1", "v2")}


# --- counts by label value ------------------------------------------------------------------------


def test_breakdowns_are_counted_once_and_guardrails_keep_only_the_protected_values() -> None:
    the_spec = spec(segments=SEGMENTS)
    s = status()
    cells = {"v1": {"successes": 10.0, "trials": 100.0}, "v2": {"successes": 10.0, "trials": 100.0}}
    by_value = {"mobile": cells, "desktop": cells, "tv": cells, "car": cells}
    for name in ("conversion", "errors"):
        r = reading(s, name, by_value, 30)
        for _ in range(2):  # the same reading twice: counted once
            counts.read(the_spec, s, {name: r}, ("v1", "v2"), stratify=False)
    assert sorted(s.breakdowns["conversion"]) == ["car", "desktop", "mobile", "tv"]
    assert sorted(s.breakdowns["errors"]) == ["mobile"]
    assert s.breakdowns["conversion"]["mobile"]["v1"].trials == 100.0
    assert roundtrip(s).breakdowns == s.breakdowns


def test_without_segments_nothing_is_kept_by_value() -> None:
    the_spec = spec()
    s = status()
    r = reading(s, "conversion", {"mobile": proportions({"v1": (0.1, 0), "v2": (0.1, 0)}, 100)}, 30)
    counts.read(the_spec, s, {"conversion": r}, ("v1", "v2"), stratify=False)
    assert s.breakdowns == {}


# --- the harm rule ---------------------------------------------------------------------------------


def harm_status(the_spec: Any, mobile_challenger: float, n: float) -> ModelExperimentStatus:
    s = status()
    by_value = {
        "mobile": proportions({"v1": (0.20, 0), "v2": (mobile_challenger, 0)}, n),
        "tablet": proportions({"v1": (0.20, 0), "v2": (0.20, 0)}, n),
        "desktop": proportions({"v1": (0.20, 0), "v2": (0.26, 0)}, 4 * n),
    }
    observed = {"conversion": reading(s, "conversion", by_value, 30)}
    counts.read(the_spec, s, observed, ("v1", "v2"), stratify=False)
    return s


def test_a_harmed_protected_segment_is_named_and_the_others_are_not() -> None:
    the_spec = spec(segments=SEGMENTS, guardrails=[])
    s = harm_status(the_spec, 0.10, 4000)
    [check] = segments.evaluate(tick(the_spec, 30), s, plan_n=None)
    assert check.harmed == ("mobile",)
    assert "segment mobile on conversion" in check.summary
    by_value = {(r.value, r.protected): r for r in check.records}
    assert by_value[("mobile", True)].harmed
    assert not by_value[("tablet", True)].harmed
    assert by_value[("desktop", False)].difference == pytest.approx(0.06)  # exploratory, shown
    assert not by_value[("desktop", False)].harmed
    assert s.segment_state["v2"]["conversion"]["mobile"].harmed_at == T0 + timedelta(seconds=30)


def test_no_harm_is_found_in_equal_segments() -> None:
    the_spec = spec(segments=SEGMENTS, guardrails=[])
    s = harm_status(the_spec, 0.20, 4000)
    [check] = segments.evaluate(tick(the_spec, 30), s, plan_n=None)
    assert check.harmed == ()
    assert s.segment_state["v2"]["conversion"]["mobile"].harmed_at is None


def test_a_harm_once_found_stays_found() -> None:
    the_spec = spec(segments=SEGMENTS, guardrails=[])
    s = harm_status(the_spec, 0.10, 4000)
    segments.evaluate(tick(the_spec, 30), s, plan_n=None)
    # later counts that look fine do not clear it (the finding was valid when it was made)
    for value in ("mobile", "tablet"):
        for v in ("v1", "v2"):
            s.breakdowns["conversion"][value][v] = s.breakdowns["conversion"][value]["v1"].model_copy()
    [check] = segments.evaluate(tick(the_spec, 60), roundtrip(s), plan_n=None)
    assert check.harmed == ("mobile",)


def test_the_decision_rolls_back_or_holds_as_on_segment_harm_says() -> None:
    from modelrollout.api.status import Phase
    from modelrollout.policy.analysis import Assessment
    from modelrollout.policy.decide import _Pass, _segment_harm

    for mode, reason in (("rollback", "RolledBack"), ("hold", None)):
        the_spec = spec(segments={**SEGMENTS, "onSegmentHarm": mode}, guardrails=[])
        s = harm_status(the_spec, 0.10, 4000)
        s.phase, s.current_step, s.weights = Phase.PROGRESSING, 1, {"v1": 75, "v2": 25}
        ctx = tick(the_spec, 30)
        a = Assessment(stage=Phase.PROGRESSING, segments=segments.evaluate(ctx, s, plan_n=None))
        outcome = _segment_harm(_Pass(ctx, s), a)
        assert outcome is not None
        assert outcome.reason == "SegmentHarm"
        assert "mobile" in outcome.message
        if reason is None:
            assert not outcome.transition
            assert s.phase is Phase.PROGRESSING
        else:
            assert s.phase.value == reason
            assert s.weights == {"v1": 100, "v2": 0}


# --- quantile guardrails ------------------------------------------------------------------------


def histogram(n: float, shares: tuple[float, ...]) -> dict[str, dict[str, float]]:
    """Cumulative counts at EDGES (``shares`` of ``n``), and the total."""
    out = {edge: {"trials": n * share} for edge, share in zip(EDGES, shares, strict=True)}
    out["+Inf"] = {"trials": n}
    return out


def quantile_status(the_spec: Any, challenger: tuple[float, ...], n: float) -> ModelExperimentStatus:
    s = status()
    champion = histogram(n, (0.5, 0.90, 0.99, 1.0, 1.0, 1.0))
    slow = histogram(n, challenger)
    by_value = {edge: {"v1": champion[edge], "v2": slow[edge]} for edge in (*EDGES, "+Inf")}
    counts.read(the_spec, s, {"p95": reading(s, "p95", by_value, 30)}, ("v1", "v2"), stratify=False)
    return s




def test_a_p95_two_buckets_higher_breaches_and_an_equal_one_does_not() -> None:
    the_spec = spec(guardrails=[P95])
    slow = quantile_status(the_spec, (0.1, 0.3, 0.6, 0.8, 0.99, 1.0), 5000)
    check = guardrails._check_quantile(tick(the_spec, 30), slow, the_spec.metrics.guardrails[0], "v2")
    assert check.breached
    assert check.evaluated
    assert check.result.champion_bounds is not None
    assert check.result.champion_bounds.high == 25.0
    assert check.result.challenger_bounds is not None
    assert check.result.challenger_bounds.low >= 50.0
    same = quantile_status(the_spec, (0.5, 0.90, 0.99, 1.0, 1.0, 1.0), 5000)
    check = guardrails._check_quantile(tick(the_spec, 30), same, the_spec.metrics.guardrails[0], "v2")
    assert not check.breached
    assert not check.warning


def test_the_quantile_guardrail_carries_its_edge_maxima_through_the_status() -> None:
    the_spec = spec(guardrails=[P95])
    s = quantile_status(the_spec, (0.5, 0.90, 0.99, 1.0, 1.0, 1.0), 5000)
    guardrails._check_quantile(tick(the_spec, 30), s, the_spec.metrics.guardrails[0], "v2")
    state = roundtrip(s).quantiles["v2"]["p95"]
    assert state.edges == [5.0, 10.0, 25.0, 50.0, 100.0, 250.0]
    assert len(state.champion_below) == len(state.edges) == len(state.challenger_above)
    assert max((x for x in state.champion_above if x is not None), default=0.0) > 0


# --- the per-segment sample ratio check -------------------------------------------------------------


def srm_run(
    rng: Any, *, lost: float, looks: int = 30, per_look: float = 2000.0, threshold: float = 0.001
) -> bool:
    """One stratum at 90/10 with segments mobile (20 %) and tablet (10 %), looked at ``looks`` times;
    the challenger loses ``lost`` of its mobile samples. Whether any segment's check alarms."""
    from modelrollout.api.status import MetricCounters, Stratum

    analysis = {"srmThreshold": threshold}
    the_spec = make_spec(metrics={"segments": SEGMENTS, "guardrails": []}, analysis=analysis)
    s = status()
    stratum = Stratum(step=0, weights={"v1": 90, "v2": 10}, started_at=T0, counted_from=T0)
    s.strata.append(stratum)
    totals = {"v1": 0.0, "v2": 0.0}
    for look in range(1, looks + 1):
        for v, w in (("v1", 0.9), ("v2", 0.1)):
            for value, share in (("mobile", 0.2), ("tablet", 0.1), ("desktop", 0.7)):
                n = float(rng.poisson(per_look * w * share))
                if v == "v2" and value == "mobile":
                    n = float(rng.binomial(int(n), 1.0 - lost))
                totals[v] += n
                if value != "desktop":
                    got = stratum.segment_trials.setdefault(value, {})
                    got[v] = got.get(v, 0.0) + n
            stratum.totals[v] = {"conversion": MetricCounters(successes=0.0, trials=totals[v])}
        if any(c.mismatch for c in segments.sample_ratio(tick(the_spec, 30 * look), s)):
            return True
    return False


def test_the_segment_sample_ratio_check_keeps_its_threshold_in_aa_runs() -> None:
    import numpy as np

    # at srmThreshold 0.001 (the default, 0.0005 per segment): 400 A/A strata of 30 looks each.
    # The bound is 0.001 of 400, i.e. nothing; allow 2 (Monte Carlo and the asymptotic mixture).
    rng = np.random.default_rng(16)
    alarms = sum(srm_run(rng, lost=0.0) for _ in range(400))
    assert alarms <= 2, alarms
    # at 0.05 the bound can be seen: at most 20 of 400 expected, 33 allowed (3 binomial sd)
    alarms = sum(srm_run(rng, lost=0.0, threshold=0.05) for _ in range(400))
    assert alarms <= 33, alarms


def test_the_segment_sample_ratio_check_finds_a_segment_that_loses_its_challenger_samples() -> None:
    import numpy as np

    rng = np.random.default_rng(17)
    found = sum(srm_run(rng, lost=0.3) for _ in range(50))
    assert found >= 48, found


def test_a_segment_sample_ratio_mismatch_holds_the_rollout() -> None:
    from modelrollout.api.status import Phase
    from modelrollout.policy.analysis import Assessment
    from modelrollout.policy.decide import _Pass, _segment_sample_ratio
    from modelrollout.policy.segments import SegmentSRM

    the_spec = spec(segments=SEGMENTS, guardrails=[])
    s = status()
    ctx = tick(the_spec, 30)
    srm = SegmentSRM("v2", "mobile", 1e-5, True, 0.07, 0.1, "segment mobile: v2 has 7 % ...")
    a = Assessment(stage=Phase.PROGRESSING, segment_srm=[srm])
    outcome = _segment_sample_ratio(_Pass(ctx, s), a)
    assert outcome is not None
    assert outcome.reason == "SegmentSampleRatioMismatch"
    assert "segment mobile" in outcome.message
    assert not outcome.transition


def mean_cells(n: float, mean: float, sd: float) -> dict[str, float]:
    """count, sum and sum of squares of ``n`` values with that mean and sd."""
    return {"count": n, "sum": n * mean, "sum_of_squares": (n - 1) * sd * sd + n * mean * mean}


def test_a_mean_primary_is_tested_per_segment_too() -> None:
    from support.policy_world import spec_with_primary

    revenue = {"name": "revenue", "type": "mean", "count": 'n{m="{{variant}}"}', "sum": 's{m="{{variant}}"}',
               "sumOfSquares": 'q{m="{{variant}}"}', "minimumDetectableEffect": 0.05}
    the_spec = spec_with_primary(revenue, metrics={"segments": SEGMENTS, "guardrails": []})
    assert the_spec.metrics.segmented() == ("revenue",)
    s = status()
    by_value = {
        "mobile": {"v1": mean_cells(4000, 10.0, 3.0), "v2": mean_cells(4000, 9.0, 3.0)},
        "tablet": {"v1": mean_cells(4000, 10.0, 3.0), "v2": mean_cells(4000, 10.0, 3.0)},
    }
    counts.read(the_spec, s, {"revenue": reading(s, "revenue", by_value, 30)}, ("v1", "v2"), stratify=False)
    [check] = segments.evaluate(tick(the_spec, 30), s, plan_n=None)
    assert check.harmed == ("mobile",)
    mobile = next(r for r in check.records if r.value == "mobile")
    assert mobile.difference == pytest.approx(-1.0)
    assert mobile.n == 4000
    assert all(r.protected for r in check.records)  # no exploratory view of a mean
