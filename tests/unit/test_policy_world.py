"""The policy tests' own world (``support.policy_world``): its readings, its seed, its clock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from modelrollout.api.observations import CounterReading, Unknown
from modelrollout.api.status import ModelExperimentStatus, Phase
from support.policy_world import T0, Experiment, World, make_spec

pytestmark = pytest.mark.unit


def test_world_reads_increments_since_the_checkpoint_and_is_seeded() -> None:
    spec = make_spec()
    a, b = World(spec, seed=7), World(spec, seed=7)
    t1, t2 = T0 + timedelta(seconds=30), T0 + timedelta(seconds=60)
    status = ModelExperimentStatus(started_at=T0, counted_since=T0)
    for world in (a, b):
        world.observations(T0, status)  # the counters at the start
        world.serve({"v1": 90, "v2": 10}, {}, 30)
    first = a.observations(t1, status).metrics["conversion"]
    assert isinstance(first, CounterReading)
    assert first.since is None
    [inc] = first.variants["v1"].fields["trials"]
    assert (inc.start, inc.end) == (T0.timestamp(), t1.timestamp())
    assert inc.value > 2000
    assert b.observations(t1, status).metrics["conversion"] == first
    # The next reading continues from the checkpoint the policy keeps
    a.serve({"v1": 90, "v2": 10}, {}, 30)
    later = status.model_copy(update={"checkpoints": {"conversion": t1}})
    second = a.observations(t2, later).metrics["conversion"]
    assert isinstance(second, CounterReading)
    [inc2] = second.variants["v1"].fields["trials"]
    assert (inc2.start, inc2.end) == (t1.timestamp(), t2.timestamp())
    assert inc2.value > 2000
    assert a.totals["conversion"]["v1"]["trials"] == inc.value + inc2.value


def test_a_stale_variant_reads_nothing_new_and_catches_up_later() -> None:
    spec = make_spec()
    world = World(spec, seed=1)
    status = ModelExperimentStatus(started_at=T0, counted_since=T0)
    world.observations(T0, status)
    world.serve({"v1": 50, "v2": 50}, {}, 30)
    t1 = T0 + timedelta(seconds=30)
    held = world.observations(t1, status, stale={"conversion": ["v2"]}).metrics["conversion"]
    assert isinstance(held, CounterReading)
    assert held.variants["v2"].fields["trials"] == ()
    assert held.variants["v2"].lag == 30.0
    world.serve({"v1": 50, "v2": 50}, {}, 30)
    t2 = t1 + timedelta(seconds=30)
    later = world.observations(t2, status.model_copy(update={"checkpoints": {"conversion": t1}}))
    reading = later.metrics["conversion"]
    assert isinstance(reading, CounterReading)
    [inc] = reading.variants["v2"].fields["trials"]
    assert inc.start == T0.timestamp()
    assert inc.value == world.totals["conversion"]["v2"]["trials"]


def test_outage_reads_unknown_and_experiment_ticks_the_clock() -> None:
    exp = Experiment(make_spec())
    d = exp.tick()
    assert d.phase is Phase.PROGRESSING
    assert exp.now == T0 + timedelta(seconds=30)
    obs = exp.world.observations(exp.now, outage=["conversion"])
    assert isinstance(obs.metrics["conversion"], Unknown)
