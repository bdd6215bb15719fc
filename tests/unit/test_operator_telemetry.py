"""The operator's own metrics (controller/telemetry.py): each experiment's figures as the status
has them, bounded labels, fleet counters that exist from the start, series dropped on deletion, and
the tick's duration and lateness; the `run` flags that serve them."""

from __future__ import annotations

import urllib.request
from datetime import timedelta
from typing import Any

import pytest

from modelrollout.api.status import ConditionType, ModelExperimentStatus, Phase
from modelrollout.cli import build_parser
from modelrollout.controller import tick
from modelrollout.controller.config import OperatorConfig
from modelrollout.controller.state import object_memo
from modelrollout.controller.telemetry import (
    DEFER_REASONS,
    FAMILIES,
    HOLD_REASONS,
    OperatorMetrics,
    figures_of,
    samples,
    scrape_text,
)
from modelrollout.errors import InvalidInputError
from modelrollout.metrics.prometheus import QUERY_ERROR_REASONS
from modelrollout.policy.decision import Decision, Rule
from support.policy_world import Experiment, World, challengers, make_spec

pytestmark = pytest.mark.unit

NS, NAME = "shop", "ranker"


def metrics() -> OperatorMetrics:
    return OperatorMetrics(standard_collectors=False)


def run(exp: Experiment, telemetry: OperatorMetrics, n: int, name: str = NAME, **faults: Any) -> Decision:
    """``n`` ticks of ``exp``, each recorded as the operator records it after writing the status."""
    for _ in range(n):
        before = exp.status.phase if exp.decisions else None
        d = exp.tick(**faults)
        telemetry.record(NS, name, exp.spec, d.status, rule=d.rule, previous_phase=before)
    return exp.last


def of(telemetry: OperatorMetrics, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` whose labels include ``labels`` (None: no such series)."""
    found = [v for k, v in samples(telemetry, name).items() if set(labels.items()) <= set(k)]
    assert len(found) <= 1, found
    return found[0] if found else None


def better() -> Experiment:
    spec = make_spec()
    return Experiment(spec, World(spec, truth={"conversion": {"v1": 0.20, "v2": 0.26}}, rps=200))


# --- the figures of one experiment ---------------------------------------------------------------


def test_a_running_experiment_shows_its_phase_weights_samples_lift_and_p_value() -> None:
    exp, telemetry = better(), metrics()
    d = run(exp, telemetry, 12)
    assert d.phase is Phase.PROGRESSING, exp.describe()
    status = d.status
    assert status.analysis is not None
    one = {"namespace": NS, "experiment": NAME}
    # the phase, one-hot over every phase
    assert {p.value: of(telemetry, "modelrollout_experiment_phase", **one, phase=p.value) for p in Phase} == {
        p.value: 1.0 if p is Phase.PROGRESSING else 0.0 for p in Phase
    }
    assert of(telemetry, "modelrollout_experiment_step", **one) == status.current_step
    weight = "modelrollout_experiment_weight_ratio"
    weights = {v: of(telemetry, weight, **one, variant=v) for v in ("v1", "v2")}
    assert weights == {v: w / 100 for v, w in status.weights.items()}
    # samples of each variant, and the plan
    for variant, analysis in status.analysis.variants.items():
        assert analysis.primary is not None
        assert analysis.primary.n is not None
        found = of(telemetry, "modelrollout_experiment_samples", **one, variant=variant, metric="conversion")
        assert found == analysis.primary.n > 0
    assert of(telemetry, "modelrollout_experiment_planned_samples", **one, metric="conversion") == (
        status.plans["conversion"].n
    )
    # the challenger's relative lift, its always-valid interval and p-value (the champion has none)
    result = status.analysis.variants["v2"].primary
    assert result is not None
    assert result.ci is not None
    assert result.p_value is not None
    at = {**one, "variant": "v2", "metric": "conversion"}
    assert of(telemetry, "modelrollout_experiment_lift", **at) == result.relative_lift
    assert of(telemetry, "modelrollout_experiment_lift_lower", **at) == result.ci.low
    assert of(telemetry, "modelrollout_experiment_lift_upper", **at) == result.ci.high
    assert of(telemetry, "modelrollout_experiment_p_value", **at) == result.p_value
    assert of(telemetry, "modelrollout_experiment_lift", **one, variant="v1") is None
    # the guardrail, compared with its limit
    guardrail = status.analysis.variants["v2"].guardrails["errors"]
    at = {**one, "variant": "v2", "metric": "errors"}
    assert of(telemetry, "modelrollout_experiment_guardrail_difference", **at) == guardrail.difference
    assert of(telemetry, "modelrollout_experiment_guardrail_limit", **at) == guardrail.limit
    assert of(telemetry, "modelrollout_experiment_guardrail_breached", **at) == 0.0
    assert status.started_at is not None
    assert of(telemetry, "modelrollout_experiment_started_timestamp_seconds", **one) == (
        status.started_at.timestamp()
    )
    assert of(telemetry, "modelrollout_experiment_finished_timestamp_seconds", **one) is None
    assert samples(telemetry, "modelrollout_experiment_hold_started_timestamp_seconds") == {}
    # the fleet
    assert of(telemetry, "modelrollout_experiments", phase="Progressing") == 1.0
    assert of(telemetry, "modelrollout_experiments", phase="Pending") == 0.0
    assert sum(samples(telemetry, "modelrollout_decisions_total").values()) == 12


def test_an_absolute_mde_shows_the_difference_on_the_intervals_scale() -> None:
    spec = make_spec(metrics={"primary": {"mdeType": "absolute", "minimumDetectableEffect": 0.02}})
    exp, telemetry = Experiment(spec, World(spec, truth={"conversion": {"v2": 0.26}}, rps=200)), metrics()
    d = run(exp, telemetry, 12)
    assert d.status.analysis is not None
    result = d.status.analysis.variants["v2"].primary
    assert result is not None
    assert result.ci is not None
    at = {"variant": "v2", "metric": "conversion"}
    assert of(telemetry, "modelrollout_experiment_lift", **at) == result.difference
    assert result.ci.low <= result.difference <= result.ci.high
    assert of(telemetry, "modelrollout_experiment_lift_lower", **at) == result.ci.low


def test_a_pending_experiment_has_its_phase_and_nothing_it_does_not_know() -> None:
    spec = make_spec()
    figures = figures_of(spec, ModelExperimentStatus())
    assert [labels for labels, value in figures["experiment_phase"] if value == 1.0] == [("Pending",)]
    assert all(not values for family, values in figures.items() if family != "experiment_phase")


# --- bounded labels ------------------------------------------------------------------------------


def test_labels_are_bounded_to_names_from_the_spec_and_closed_enums() -> None:
    spec = make_spec(
        challengers=challengers("v2", "v3"),
        metrics={"secondary": [{"name": "revenue", "type": "proportion", "successes": 'b{m="{{variant}}"}',
                                "trials": 'r{m="{{variant}}"}'}]},
    )
    world = World(spec, truth={"conversion": {"v2": 0.26, "v3": 0.2}}, default={
        "conversion": 0.2, "errors": 0.01, "revenue": 0.5})
    exp, telemetry = Experiment(spec, world), metrics()
    run(exp, telemetry, 30)
    run(Experiment(spec, World(spec)), telemetry, 5, name="other")
    allowed = {"namespace", "experiment", "variant", "metric", "phase", "reason", "rule", "le", "version"}
    variants = {"v1", "v2", "v3"}
    metric_names = {"conversion", "revenue", "errors"}
    closed = {"phase": {p.value for p in Phase}, "rule": {r.value for r in Rule},
              "reason": {*HOLD_REASONS, *(r.value for r in Rule), *QUERY_ERROR_REASONS, *DEFER_REASONS}}
    per_experiment: dict[str, int] = {}
    for family in exp_families(telemetry):
        for sample in family.samples:
            assert set(sample.labels) <= allowed, sample
            assert sample.labels.get("variant", "v1") in variants, sample
            assert sample.labels.get("metric", "conversion") in metric_names, sample
            for label, values in closed.items():
                assert sample.labels.get(label, next(iter(values))) in values, sample
            if sample.labels.get("experiment") == NAME:
                per_experiment[sample.name] = per_experiment.get(sample.name, 0) + 1
    # each family has at most (phases | hold reasons | variants x metrics) series per experiment
    bound = max(len(Phase), len(HOLD_REASONS), len(variants) * len(metric_names))
    assert per_experiment
    assert max(per_experiment.values()) <= bound, per_experiment
    assert len(per_experiment) <= len(FAMILIES)


def exp_families(telemetry: OperatorMetrics) -> list[Any]:
    return list(telemetry.registry.collect())


def test_the_table_keeps_at_most_max_experiments() -> None:
    telemetry = OperatorMetrics(max_experiments=2, standard_collectors=False)
    spec, status = make_spec(), ModelExperimentStatus()
    for name in ("a", "b", "c"):
        telemetry.record(NS, name, spec, status, rule=Rule.HOLD, previous_phase=None)
    telemetry.record(NS, "b", spec, status, rule=Rule.HOLD, previous_phase=None)  # b is fresh again
    telemetry.record(NS, "d", spec, status, rule=Rule.HOLD, previous_phase=None)
    assert telemetry.experiments() == [(NS, "b"), (NS, "d")]
    with pytest.raises(InvalidInputError, match="max_experiments"):
        OperatorMetrics(max_experiments=0)


# --- deletion ------------------------------------------------------------------------------------


def test_a_finished_experiment_keeps_its_figures_until_it_is_deleted() -> None:
    exp, telemetry = better(), metrics()
    d = run(exp, telemetry, 80)
    assert d.phase is Phase.PROMOTED, exp.describe()
    run(Experiment(make_spec(), World(make_spec())), telemetry, 3, name="other")
    assert of(telemetry, "modelrollout_experiment_phase", experiment=NAME, phase="Promoted") == 1.0
    assert of(telemetry, "modelrollout_experiment_weight_ratio", experiment=NAME, variant="v2") == 1.0
    assert d.status.finished_at is not None
    assert of(telemetry, "modelrollout_experiment_finished_timestamp_seconds", experiment=NAME) == (
        d.status.finished_at.timestamp()
    )
    assert of(telemetry, "modelrollout_experiments", phase="Promoted") == 1.0
    text = scrape_text(telemetry)
    assert f'experiment="{NAME}"' in text
    # When it is deleted, every series of it goes; the other experiment's stay
    telemetry.forget(NS, NAME)
    text = scrape_text(telemetry)
    assert f'experiment="{NAME}"' not in text
    assert 'experiment="other"' in text
    assert of(telemetry, "modelrollout_experiments", phase="Promoted") == 0.0
    assert of(telemetry, "modelrollout_experiments", phase="Progressing") == 1.0
    telemetry.forget(NS, NAME)  # twice is harmless
    telemetry.forget(NS, "other")
    assert "experiment=" not in scrape_text(telemetry)


# --- fleet counters ------------------------------------------------------------------------------


def test_every_rule_and_error_counter_exists_from_the_start_at_zero() -> None:
    telemetry = metrics()
    decisions = samples(telemetry, "modelrollout_decisions_total")
    assert {dict(k)["rule"] for k in decisions} == {r.value for r in Rule}
    assert set(decisions.values()) == {0.0}
    rollbacks = samples(telemetry, "modelrollout_rollbacks_total")
    assert {"GuardrailBreach", "PrimaryWorse", "ManualAbort", "DataOutageRollback"} <= {
        dict(k)["reason"] for k in rollbacks}
    errors = samples(telemetry, "modelrollout_prometheus_query_errors_total")
    assert {dict(k)["reason"] for k in errors} == set(QUERY_ERROR_REASONS)
    assert of(telemetry, "modelrollout_ticks_behind_schedule_total") == 0.0
    assert of(telemetry, "modelrollout_tick_duration_seconds_count") == 0.0
    assert of(telemetry, "modelrollout_experiments", phase="Progressing") == 0.0
    assert samples(telemetry, "modelrollout_build_info")


def test_a_rollback_is_counted_once_by_the_rule_that_rolled_back() -> None:
    spec = make_spec()
    exp = Experiment(spec, World(spec, truth={"conversion": {"v2": 0.14}}, rps=200))
    telemetry = metrics()
    d = run(exp, telemetry, 80)
    assert d.phase is Phase.ROLLED_BACK, exp.describe()
    rule = next(x.rule for x in exp.decisions if x.phase is Phase.ROLLED_BACK)
    assert rule is Rule.PRIMARY_WORSE
    assert of(telemetry, "modelrollout_rollbacks_total", reason="PrimaryWorse") == 1.0
    assert sum(samples(telemetry, "modelrollout_rollbacks_total").values()) == 1.0  # not on later ticks
    assert of(telemetry, "modelrollout_decisions_total", rule="Finished") == sum(
        1 for x in exp.decisions if x.rule is Rule.FINISHED)


def test_a_hold_shows_when_it_began_and_ends_with_it() -> None:
    exp, telemetry = better(), metrics()
    run(exp, telemetry, 4)
    d = run(exp, telemetry, 2, outage=["conversion"])
    condition = d.status.condition(ConditionType.METRICS_UNAVAILABLE)
    assert condition is not None
    assert condition.status.value == "True", exp.describe()
    assert samples(telemetry, "modelrollout_experiment_hold_started_timestamp_seconds") == {
        (("experiment", NAME), ("namespace", NS), ("reason", "MetricsUnavailable")):
            condition.last_transition_time.timestamp()
    }
    run(exp, telemetry, 1)
    assert samples(telemetry, "modelrollout_experiment_hold_started_timestamp_seconds") == {}
    exp.set_spec(paused=True)
    d = run(exp, telemetry, 1)
    assert d.phase is Phase.PAUSED
    assert d.status.pause is not None
    assert of(telemetry, "modelrollout_experiment_hold_started_timestamp_seconds", reason="Paused") == (
        d.status.pause.since.timestamp()
    )


def test_query_errors_count_by_word_and_anything_else_is_other() -> None:
    telemetry = metrics()
    telemetry.query_error("unreachable")
    telemetry.query_error("unreachable")
    telemetry.query_error("a sentence that is not a word of the closed set")
    assert of(telemetry, "modelrollout_prometheus_query_errors_total", reason="unreachable") == 2.0
    assert of(telemetry, "modelrollout_prometheus_query_errors_total", reason="other") == 1.0
    assert len(samples(telemetry, "modelrollout_prometheus_query_errors_total")) == len(QUERY_ERROR_REASONS)


# --- the tick ------------------------------------------------------------------------------------


def test_the_tick_is_timed_and_one_that_starts_late_is_behind_schedule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import yaml

    spec = yaml.safe_load(open("examples/minimal.yaml"))["spec"]  # noqa: SIM115
    spec["rollout"] = {"interval": "30s"}
    monkeypatch.setattr(tick, "run_tick", lambda *a, **k: None)
    clock = [tick._now()]
    monkeypatch.setattr(tick, "_now", lambda: clock[0])

    class Runtime:
        cluster = None
        config = OperatorConfig(timer_seconds=1.0, schedule_slack_seconds=1.0)
        telemetry = metrics()
        can_write = None

        def router(self, spec: object) -> None:
            return None

        def provider(self, spec: object, namespace: str) -> None:
            return None

    runtime = Runtime()
    body = {"metadata": {"name": NAME, "namespace": NS}, "spec": spec}
    memo: dict[str, object] = {}

    def at(seconds: float, *, force: bool = False) -> None:
        clock[0] += timedelta(seconds=seconds)
        tick.tick(runtime, body, memo, None, force=force)  # type: ignore[arg-type]

    at(0, force=True)  # the first tick: nothing before it to be late after
    at(31)  # within interval + timer + slack (32 s)
    at(10)  # not due: no tick at all
    at(23)  # 33 s after the last: late
    telemetry = runtime.telemetry
    assert of(telemetry, "modelrollout_tick_duration_seconds_count") == 3.0
    assert of(telemetry, "modelrollout_ticks_behind_schedule_total") == 1.0
    assert object_memo(memo).last_tick == clock[0]  # type: ignore[arg-type]


def test_a_tick_records_the_figures_it_wrote_and_not_those_of_a_deleted_experiment() -> None:
    from support.policy_world import T0

    class Cluster:
        def patch_status(self, *args: Any) -> None:
            pass

        def emit(self, *args: Any) -> None:
            pass

        def check_references(self, *args: Any) -> list[Any]:
            return []

        def traffic_target(self, *args: Any) -> None:
            return None

    class Router:
        def apply(self, target: object, state: Any) -> Any:
            from modelrollout.routing import ApplyResult

            return ApplyResult(changed=False, achieved=state, drift=())

    from modelrollout.api.observations import Unknown

    spec = make_spec()
    telemetry = metrics()
    raw = spec.model_dump(by_alias=True, mode="json", exclude_none=True)
    body: dict[str, Any] = {"metadata": {"name": NAME, "namespace": NS, "generation": 1}, "spec": raw}
    logger = type("L", (), {"info": lambda *a, **k: None})()
    d = tick.run_tick(body, spec, object_memo({}), T0, logger, router=Router(),  # type: ignore[arg-type]
                      provider=Unknown("down"), cluster=Cluster(), telemetry=telemetry)  # type: ignore[arg-type]
    assert of(telemetry, "modelrollout_experiment_phase", experiment=NAME, phase=d.phase.value) == 1.0
    assert of(telemetry, "modelrollout_decisions_total", rule=d.rule.value) == 1.0
    telemetry.forget(NS, NAME)
    body["metadata"]["deletionTimestamp"] = "2026-03-01T12:00:00Z"
    tick.run_tick(body, spec, object_memo({}), T0, logger, router=Router(),  # type: ignore[arg-type]
                  provider=Unknown("down"), cluster=Cluster(), telemetry=telemetry)  # type: ignore[arg-type]
    assert telemetry.experiments() == []


# --- serving -------------------------------------------------------------------------------------


def test_run_serves_metrics_on_8081_by_default_and_0_serves_none() -> None:
    args = build_parser().parse_args(["run", "-A"])
    assert (args.metrics_port, args.metrics_address) == (8081, "0.0.0.0")
    args = build_parser().parse_args(["run", "-A", "--metrics-port", "0", "--metrics-address", "127.0.0.1"])
    assert (args.metrics_port, args.metrics_address) == (0, "127.0.0.1")
    config = OperatorConfig.from_environment({}, metrics_port=9100, metrics_address="127.0.0.1")
    assert (config.metrics_port, config.metrics_address) == (9100, "127.0.0.1")
    with pytest.raises(InvalidInputError, match="--metrics-port"):
        OperatorConfig(metrics_port=70000)


def test_metrics_are_served_over_http_and_a_taken_port_is_a_clear_error() -> None:
    telemetry = OperatorMetrics()  # with the process and Python collectors
    telemetry.record(NS, NAME, make_spec(), ModelExperimentStatus(), rule=Rule.HOLD, previous_phase=None)
    port = telemetry.serve(0, "127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
        series = f'modelrollout_experiment_phase{{experiment="{NAME}",namespace="{NS}",phase="Pending"}}'
        assert f"{series} 1.0" in text
        assert "process_resident_memory_bytes" in text
        assert "_created" not in text  # no _created series beside the counters
        other = OperatorMetrics(standard_collectors=False)
        with pytest.raises(InvalidInputError, match=f"--metrics-port {port}: cannot serve /metrics"):
            other.serve(port, "127.0.0.1")
    finally:
        telemetry.close()
    telemetry.close()  # twice is harmless
