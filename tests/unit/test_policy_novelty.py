"""Tick-by-tick tests of ``analysis.minDuration`` and the novelty check (``analysis.novelty``).

Given a spec and a simulated world (``support.policy_world``), when the fake clock ticks
``decide``, then: a promotion waits for minDuration of live traffic and says how long is left; a
rollback (a worse challenger, a guardrail breach) never waits for it; a lift that decays holds the
promotion with ``NoveltyEffect`` and its numbers, and the experiment ends without promoting; a
lift that lasts is promoted once minDuration has passed. ``Experiment`` checks on every tick that a
replay changes nothing (the windows close once) and emits no Event again.
"""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from modelrollout.api.status import NOVELTY_WINDOWS_LIMIT, ConditionType, Phase, VariantDecision
from modelrollout.policy import EventType, Rule
from modelrollout.policy.novelty import _bounded
from support.policy_world import T0, Experiment, World, finished, make_spec, roundtrip

pytestmark = pytest.mark.unit

BASE = 0.2


def experiment(lift: float, seed: int = 3, rps: float = 200.0, **over: object) -> Experiment:
    spec = make_spec(**over)
    truth = {"conversion": {"v2": BASE * (1 + lift)}}
    return Experiment(spec, World(spec, seed=seed, rps=rps, truth=truth))


def live_start(exp: Experiment) -> object:
    return exp.status.strata[0].started_at


# --- minDuration ------------------------------------------------------------------------------------


def test_min_duration_holds_a_promotion_and_says_how_long_is_left() -> None:
    exp = experiment(0.3, analysis={"minDuration": "40m"})
    held = exp.until(lambda d: d.reason == "MinDurationNotReached")
    assert held.phase is Phase.PROGRESSING
    assert held.rule is Rule.HOLD
    assert held.step == 2  # the last step below 100: the promotion itself is what waits
    assert held.status.analysis is not None
    assert held.status.analysis.variants["v2"].decision is VariantDecision.BETTER
    assert "analysis.minDuration 40m has not passed" in held.message
    assert "to go" in held.message
    live = held.numbers["liveSeconds"]
    assert held.numbers["minDurationSeconds"] == 2400
    assert held.numbers["remainingSeconds"] == pytest.approx(2400 - live)
    exp.then_condition(ConditionType.PROGRESSING, "True", "MinDurationNotReached")
    exp.then_condition(ConditionType.READY, "True")
    done = exp.until(finished)
    assert (done.phase, done.rule) == (Phase.PROMOTED, Rule.PRIMARY_BETTER)
    promoted_at = done.status.history[-1].time
    assert promoted_at - live_start(exp) >= timedelta(minutes=40)
    # the promotion came at the first tick at or after minDuration, not later
    assert promoted_at - live_start(exp) < timedelta(minutes=40, seconds=31)
    holds = [d for d in exp.decisions if d.reason == "MinDurationNotReached"]
    assert all(d.numbers["remainingSeconds"] > 0 for d in holds)


def test_without_min_duration_the_same_challenger_is_promoted_sooner() -> None:
    exp = experiment(0.3)
    done = exp.until(finished)
    assert done.phase is Phase.PROMOTED
    assert done.status.history[-1].time - live_start(exp) < timedelta(minutes=40)
    assert all(d.reason != "MinDurationNotReached" for d in exp.decisions)


def test_min_duration_never_delays_a_rollback_of_a_worse_challenger() -> None:
    exp = experiment(-0.3, analysis={"minDuration": "20h"})
    done = exp.until(finished)
    assert (done.phase, done.rule) == (Phase.ROLLED_BACK, Rule.PRIMARY_WORSE)
    assert done.status.history[-1].time - live_start(exp) < timedelta(hours=1)
    assert all(d.reason != "MinDurationNotReached" for d in exp.decisions)


def test_min_duration_never_delays_a_guardrail_breach() -> None:
    exp = experiment(0.3, analysis={"minDuration": "20h"})
    exp.until(lambda d: d.reason == "MinDurationNotReached")
    exp.world.truth["errors"] = {"v2": 0.2}
    before = len(exp.decisions)
    done = exp.until(finished, limit=4)
    assert len(exp.decisions) - before <= 2
    assert (done.phase, done.rule) == (Phase.ROLLED_BACK, Rule.GUARDRAIL_BREACH)


def test_at_max_duration_short_of_min_duration_nothing_is_promoted() -> None:
    # the shadow phase takes 20 of the 60 minutes, so live traffic cannot reach minDuration 50m
    spec = {
        "shadow": {"enabled": True, "duration": "20m"},
        "analysis": {"minDuration": "50m", "maxDuration": "1h"},
    }
    exp = experiment(0.3, **spec)
    done = exp.until(finished)
    assert (done.phase, done.rule, done.reason) == (Phase.ROLLED_BACK, Rule.INCONCLUSIVE, "Inconclusive")
    assert "short of analysis.minDuration 50m" in done.message
    assert any(d.reason == "MinDurationNotReached" for d in exp.decisions)


def test_promote_if_non_inferior_waits_for_min_duration_after_the_fixed_look() -> None:
    exp = experiment(
        0.0,
        rps=400.0,
        analysis={
            "method": "fixed",
            "onInconclusive": "promoteIfNonInferior",
            "nonInferiorityMargin": 0.2,
            "minDuration": "3h",
            "maxDuration": "6h",
        },
    )
    done = exp.until(finished, limit=1000)
    assert done.phase is Phase.PROMOTED
    assert done.reason == "PromotedNonInferior"
    assert done.status.history[-1].time - live_start(exp) >= timedelta(hours=3)
    assert any(d.reason == "MinDurationNotReached" for d in exp.decisions)


# --- the novelty check ------------------------------------------------------------------------------

NOVELTY = {"minDuration": "1h", "maxDuration": "2h", "novelty": {"enabled": True, "window": "5m"}}


def decaying(exp: Experiment, start: float, half_life_minutes: float, limit: int = 400) -> None:
    """Tick until the end, the challenger's lift decaying from ``start`` to 0 with the half-life."""
    for _ in range(limit):
        minutes = (exp.now - T0).total_seconds() / 60
        lift = start * 0.5 ** (minutes / half_life_minutes)
        exp.world.truth["conversion"] = {"v2": BASE * (1 + lift)}
        d = exp.tick()
        if finished(d):
            return
    raise AssertionError("not finished:\n" + exp.describe())


def test_a_decaying_lift_holds_the_promotion_with_novelty_effect_and_is_never_promoted() -> None:
    exp = experiment(0.5, seed=5, rps=300.0, analysis=NOVELTY)
    decaying(exp, 0.5, half_life_minutes=8.0)
    done = exp.last
    assert done.phase is Phase.ROLLED_BACK
    assert (done.rule, done.reason) == (Rule.INCONCLUSIVE, "Inconclusive")
    assert "novelty effect" in done.message
    assert all(d.phase is not Phase.PROMOTED for d in exp.decisions)
    held = [d for d in exp.decisions if d.reason == "NoveltyEffect"]
    assert held, exp.describe()
    first = held[0]
    assert first.status.current_step == 2
    early, recent = first.numbers["v2.novelty.earlyLift"], first.numbers["v2.novelty.recentLift"]
    assert early > recent
    assert first.numbers["v2.novelty.pValue"] < 0.05
    assert "Novelty effect, not promoting" in first.message
    record = first.status.analysis
    assert record is not None
    result = record.variants["v2"].novelty
    assert result is not None
    assert result.decaying
    assert result.p_value is not None
    assert result.p_value < 0.05
    assert "novelty effect" in (record.variants["v2"].rule or "")
    # the finding emitted one Warning Event, once
    found = [e for d in exp.decisions for e in d.events if e.reason == "NoveltyEffect"]
    assert len(found) == 1
    assert found[0].type is EventType.WARNING


def test_a_lasting_lift_with_the_novelty_check_is_promoted_after_min_duration() -> None:
    exp = experiment(0.3, seed=7, analysis=NOVELTY)
    done = exp.until(finished, limit=400)
    assert (done.phase, done.rule) == (Phase.PROMOTED, Rule.PRIMARY_BETTER)
    assert done.status.history[-1].time - live_start(exp) >= timedelta(hours=1)
    assert all(d.reason != "NoveltyEffect" for d in exp.decisions)
    state = done.status.novelty
    assert state is not None
    test = state.challengers["v2"]
    assert test.found_at is None
    assert test.windows >= 10  # 5-minute windows over an hour, each closed once
    assert len(test.summaries) == test.windows
    assert all(w.end - w.start >= timedelta(minutes=5) for w in test.summaries)
    assert math.exp(-test.max_log_e_value) > 0.05


def test_the_novelty_state_survives_the_json_round_trip() -> None:
    exp = experiment(0.3, seed=7, analysis=NOVELTY)
    exp.check_roundtrip = True
    exp.ticks(30)
    assert exp.status.novelty is not None
    assert roundtrip(exp.status).novelty == exp.status.novelty


def test_window_summaries_stay_bounded_by_merging_neighbours() -> None:
    exp = experiment(0.3, seed=7, analysis=NOVELTY)
    exp.ticks(40)
    state = exp.status.novelty
    assert state is not None
    window = state.challengers["v2"].summaries[0]
    many = [window.model_copy(update={"difference": float(i)}) for i in range(NOVELTY_WINDOWS_LIMIT + 1)]
    merged = _bounded(many)
    assert len(merged) == NOVELTY_WINDOWS_LIMIT // 2 + 1
    assert merged[0].difference == pytest.approx(0.5)  # equal variances: the plain mean
    assert merged[0].variance == pytest.approx(window.variance / 2)
    assert merged[-1].difference == NOVELTY_WINDOWS_LIMIT
