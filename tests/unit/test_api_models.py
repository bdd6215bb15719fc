"""The API models: examples, defaults, aliases, durations, templates, status helpers and JSON round trips."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from modelrollout.api import (
    DEFAULT_STEPS,
    HISTORY_LIMIT,
    PLACEHOLDERS,
    PRESETS,
    AnalysisRecord,
    AppliedControls,
    Condition,
    ConditionStatus,
    ConditionType,
    DroppedChallenger,
    GuardrailResult,
    HistoryEntry,
    Interval,
    MetricCounters,
    MetricResult,
    MetricType,
    ModelExperiment,
    ModelExperimentSpec,
    ModelExperimentStatus,
    Phase,
    Preset,
    Provider,
    SequentialState,
    Settle,
    SettleReason,
    SettleSlice,
    SRMAlarm,
    SRMResult,
    SRMState,
    Stratum,
    VariantAnalysis,
    VariantDecision,
    format_duration,
    load_manifests,
    manifest_errors,
    parse_duration,
    render_template,
    validate_manifest,
)
from modelrollout.errors import InvalidInputError

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "examples" / name).read_text())
    return data


# --- examples and defaults ---------------------------------------------------------------------


def test_there_is_an_example_for_each_provider_shadow_abn_and_non_inferiority() -> None:
    specs = {p.name: validate_manifest(yaml.safe_load(p.read_text())).spec for p in EXAMPLES}
    assert {s.traffic.provider for s in specs.values()} == set(Provider)
    assert any(s.shadow.enabled for s in specs.values())
    assert any(len(s.challengers) >= 3 for s in specs.values())
    assert any(s.analysis.goal == "nonInferiority" for s in specs.values())
    assert {s.metrics.primary.metric_type for s in specs.values()} == set(MetricType) - {MetricType.QUANTILE}
    assert any(g.metric_type is MetricType.QUANTILE for s in specs.values() for g in s.metrics.guardrails)
    assert any(s.metrics.segments is not None and s.metrics.segments.protected for s in specs.values())


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_valid_and_round_trips(path: Path) -> None:
    [experiment] = load_manifests(path)
    dumped = experiment.model_dump(by_alias=True, mode="json", exclude_none=True)
    assert ModelExperiment.model_validate(dumped) == experiment
    assert ModelExperiment.model_validate(json.loads(json.dumps(dumped))) == experiment


def test_minimal_manifest_gets_the_documented_defaults() -> None:
    spec = validate_manifest(example("minimal.yaml")).spec
    assert spec.rollout.steps == DEFAULT_STEPS == (10, 25, 50, 100)
    assert (spec.rollout.min_step_duration, spec.rollout.interval) == ("15m", "30s")
    assert spec.rollout.min_samples_per_step == 0
    a = spec.analysis
    assert (a.alpha, a.power, a.method, a.goal) == (0.05, 0.8, "sequential", "superiority")
    assert (a.max_duration, a.on_inconclusive, a.max_consecutive_errors) == ("14d", "keepChampion", 10)
    assert (a.max_data_outage, a.on_data_outage, a.srm_threshold) == ("10m", "rollback", 0.001)
    assert a.probability_threshold == 0.95
    assert a.non_inferiority_margin is None
    assert a.practical_threshold is None
    assert (spec.shadow.enabled, spec.shadow.mirror_percent, spec.shadow.duration) == (False, 100, "30m")
    assert spec.shadow.max_divergence == 0.05
    assert spec.paused is False
    assert spec.notifications == ()
    assert spec.metrics.primary.direction == "increase"
    assert spec.metrics.primary.mde_type == "relative"
    assert spec.metrics.prometheus.timeout == "10s"
    assert spec.metrics.secondary == ()
    assert spec.metrics.guardrails == ()


def test_yaml_is_camel_case_and_python_is_snake_case() -> None:
    spec = validate_manifest(example("gateway-api.yaml")).spec
    assert spec.traffic.gateway_api is not None
    assert spec.traffic.gateway_api.rule_names == ("predict",)
    dumped = spec.model_dump(by_alias=True, mode="json", exclude_none=True)
    assert dumped["traffic"]["gatewayAPI"]["httpRoute"] == "recommender"
    assert dumped["metrics"]["primary"]["sumOfSquares"].startswith("shop_order_value_squares_sum{")
    assert dumped["metrics"]["prometheus"]["bearerTokenSecretRef"] == {
        "name": "prometheus-reader",
        "key": "token",
    }
    # Both spellings are accepted on input.
    by_name = ModelExperimentSpec.model_validate(spec.model_dump())
    assert by_name == spec


def test_a_typo_is_an_error_that_names_the_field() -> None:
    manifest = example("minimal.yaml")
    manifest["spec"]["rollout"] = {"stepz": [10, 100]}
    assert manifest_errors(manifest) == ["spec.rollout.stepz: Extra inputs are not permitted"]


def test_validate_manifest_raises_one_line_per_problem() -> None:
    manifest = example("minimal.yaml")
    manifest["spec"]["rollout"] = {"steps": [50, 25]}
    manifest["spec"]["analysis"] = {"alpha": 0.7}
    with pytest.raises(InvalidInputError) as info:
        validate_manifest(manifest)
    lines = str(info.value).splitlines()
    assert lines[0] == "invalid ModelExperiment:"
    assert "  spec.rollout.steps: steps must be strictly increasing" in lines
    assert "  spec.rollout.steps: the last step must be 100" in lines
    assert any(line.startswith("  spec.analysis.alpha: ") for line in lines)


def test_the_spec_is_frozen_and_hashable() -> None:
    spec = validate_manifest(example("istio.yaml")).spec
    with pytest.raises(ValidationError):
        spec.paused = True  # type: ignore[misc]
    assert hash(spec) == hash(validate_manifest(example("istio.yaml")).spec)


def test_numbers_are_strict_and_finite() -> None:
    for bad in ("yes", 1):
        manifest = example("minimal.yaml")
        manifest["spec"]["paused"] = bad
        assert [e.split(":")[0] for e in manifest_errors(manifest)] == ["spec.paused"]
    manifest = example("minimal.yaml")
    manifest["spec"]["metrics"]["primary"]["minimumDetectableEffect"] = float("inf")
    assert manifest_errors(manifest)[0].startswith("spec.metrics.primary.minimumDetectableEffect: ")
    manifest["spec"]["metrics"]["primary"]["minimumDetectableEffect"] = 1  # an int is a fine number
    assert manifest_errors(manifest) == []


def test_helpers_of_the_spec() -> None:
    spec = validate_manifest(example("abn.yaml")).spec
    assert spec.variant_names() == ("base", "small", "medium", "large")
    assert spec.metrics.names() == ("conversion", "add-to-cart", "latency-mean", "error-rate")
    assert spec.metrics.primary.queries().keys() == {"successes", "trials"}
    guardrail = spec.metrics.guardrails[0]
    assert guardrail.metric_type is MetricType.PROPORTION
    assert guardrail.queries() == {}


def test_every_preset_has_a_contract() -> None:
    assert set(PRESETS) == set(Preset)
    assert [p for p in Preset if PRESETS[p].needs_threshold_ms] == [Preset.ISTIO_LATENCY_OVER]
    assert [p for p in Preset if not PRESETS[p].higher_is_worse] == [Preset.ISTIO_REQUEST_SUCCESS_RATE]


# --- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("14d", timedelta(days=14)),
        ("250ms", timedelta(milliseconds=250)),
        ("1m30s", timedelta(seconds=90)),
        ("90s", timedelta(seconds=90)),
        ("0s", timedelta(0)),
        ("1d1h1m1s1ms", timedelta(days=1, hours=1, minutes=1, seconds=1, milliseconds=1)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "s", "1.5h", "15 m", "-5m", "1w", "1H", "30s ", "5m\n", "P1D"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(InvalidInputError, match="duration must look like"):
        parse_duration(text)


def test_parse_duration_rejects_what_a_timedelta_cannot_hold() -> None:
    with pytest.raises(InvalidInputError, match="too long"):
        parse_duration("9999999999d")
    manifest = example("minimal.yaml")
    manifest["spec"]["analysis"] = {"maxDuration": "9999999999d"}
    assert manifest_errors(manifest)[0].startswith("spec.analysis.maxDuration: ")


@given(st.integers(min_value=0, max_value=10**13))
def test_format_duration_round_trips(milliseconds: int) -> None:
    value = timedelta(milliseconds=milliseconds)
    text = format_duration(value)
    assert parse_duration(text) == value
    assert format_duration(parse_duration(text)) == text


def test_format_duration_is_canonical() -> None:
    assert format_duration(timedelta(seconds=90)) == "1m30s"
    assert format_duration(timedelta(days=14)) == "14d"
    assert format_duration(timedelta(0)) == "0s"
    with pytest.raises(InvalidInputError):
        format_duration(timedelta(seconds=-1))


# --- templates ---------------------------------------------------------------------------------


def test_render_template_fills_every_placeholder() -> None:
    template = 'x_total{ns="{{namespace}}", model="{{variant}}"}'
    rendered = render_template(template, variant="v7", namespace="shop")
    assert rendered == 'x_total{ns="shop", model="v7"}'
    assert PLACEHOLDERS == ("{{variant}}", "{{namespace}}")


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ('x{m="{{variant}}", w="{{ window }}"}', "unknown placeholder"),
        ('x{m="{{variant}}", n="{{Namespace}}"}', "unknown placeholder"),
        ('x{m="{{variant}}", w="{{window}"}', "unknown placeholder"),
        ("sum(x)", "must select one variant"),
        ("{{variant}", "must select one variant"),
        ('sum(increase(x{m="{{variant}}"}[{{window}}]))', "without {{window}}"),
        ('sum(x{m="{{variant}}"})', "not an expression"),
        ('rate(x{m="{{variant}}"}[5m])', "not an expression"),
        ('x{m="{{variant}}"}[5m]', "not an expression"),
        ('x{m="{{variant}}"} + y', "not an expression"),
    ],
)
def test_bad_templates(template: str, message: str) -> None:
    manifest = example("minimal.yaml")
    manifest["spec"]["metrics"]["primary"]["successes"] = template
    [error] = manifest_errors(manifest)
    assert error.startswith("spec.metrics.primary.successes: ")
    assert message in error


# --- status ------------------------------------------------------------------------------------

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def rich_status() -> ModelExperimentStatus:
    """A status with every part of the loop's memory set."""
    counters = MetricCounters(successes=120.0, trials=1000.0)
    return ModelExperimentStatus(
        observed_generation=3,
        phase=Phase.PROGRESSING,
        current_step=1,
        weights={"v6": 75, "v7": 25},
        conditions=[
            Condition(
                type=ConditionType.READY,
                status=ConditionStatus.TRUE,
                reason="Progressing",
                message="step 1 of 4",
                last_transition_time=NOW,
                observed_generation=3,
            ),
        ],
        analysis=AnalysisRecord(
            updated_at=NOW,
            planned_n=9257,
            variants={
                "v6": VariantAnalysis(n=3000, primary=MetricResult(n=3000, estimate=0.15)),
                "v7": VariantAnalysis(
                    n=1000,
                    primary=MetricResult(
                        n=1000,
                        estimate=0.165,
                        difference=0.015,
                        relative_lift=0.1,
                        ci=Interval(low=-0.01, high=0.04),
                        p_value=0.4,
                        e_value=1.7,
                        planned_n=9257.0,
                        method="normal-mixture confidence sequence",
                        decision=VariantDecision.PENDING,
                    ),
                    guardrails={
                        "error-rate": GuardrailResult(
                            estimate=0.01,
                            champion_estimate=0.011,
                            difference=-0.001,
                            limit=0.0011,
                            p_value=1.0,
                            e_value=0.2,
                            breached=False,
                        )
                    },
                    rule="still collecting: 1000 of 9257 planned",
                ),
            },
            srm=SRMResult(
                p_value=0.62,
                observed_shares={"v6": 0.751, "v7": 0.249},
                expected_shares={"v6": 0.75, "v7": 0.25},
                mismatch=False,
            ),
        ),
        history=[
            HistoryEntry(
                time=NOW,
                from_phase=Phase.PENDING,
                to_phase=Phase.PROGRESSING,
                to_step=0,
                weights={"v6": 90, "v7": 10},
                reason="Started",
                numbers={"plannedN": 9257},
            )
        ],
        started_at=NOW - timedelta(hours=2),
        step_started_at=NOW - timedelta(minutes=20),
        consecutive_errors=2,
        data_outage_since=NOW - timedelta(seconds=60),
        strata=[
            Stratum(
                step=0,
                weights={"v6": 90, "v7": 10},
                previous_weights={"v6": 100, "v7": 0},
                started_at=NOW - timedelta(hours=2),
                ended_at=NOW - timedelta(minutes=20),
                counted_from=NOW - timedelta(hours=2) + timedelta(seconds=12),
                settle=Settle(
                    reason=SettleReason.WEIGHTS_SEEN,
                    seconds=12.0,
                    limit_seconds=150.0,
                    log_likelihood_ratio=9.5,
                    scrape_interval_seconds=15.0,
                ),
                spacing=15.0,
                resets={"v7": 1},
                totals={"v6": {"click-through": counters}, "v7": {"click-through": counters}},
            ),
            Stratum(
                step=1,
                weights={"v6": 75, "v7": 25},
                previous_weights={"v6": 90, "v7": 10},
                started_at=NOW - timedelta(minutes=20),
                settling=[
                    SettleSlice(end=NOW, samples={"v6": 75.0, "v7": 20.0}, exposure={"v6": 15.0, "v7": 14.5})
                ],
            ),
        ],
        checkpoints={"click-through": NOW - timedelta(seconds=1)},
        totals={"v6": {"click-through": counters}},
        sequential={
            "v7": {
                "click-through": SequentialState(
                    max_log_e_value=0.53, tau2=1.2e-4, ci=Interval(low=-0.01, high=0.04)
                ),
                "error-rate": SequentialState(max_log_e_value=0.0, consecutive_failures=1),
            }
        },
        srm=SRMState(
            epoch=1,
            max_log_e_value=0.1,
            alarm=SRMAlarm(
                at=NOW, step=1, p_value=0.0004, observed_shares={"v6": 0.8}, expected_shares={"v6": 0.75}
            ),
            cleared=1,
        ),
        dropped_challengers=[DroppedChallenger(name="v8", at=NOW, reason="GuardrailBreached")],
        applied_controls=AppliedControls(retry="2026-03-01T10:00:00Z"),
    )


def test_status_round_trips_through_json() -> None:
    status = rich_status()
    for dumped in (
        status.model_dump(by_alias=True, mode="json"),
        status.model_dump(by_alias=True, mode="json", exclude_none=True),
    ):
        assert ModelExperimentStatus.model_validate(json.loads(json.dumps(dumped))) == status
    dumped = status.model_dump(by_alias=True, mode="json", exclude_none=True)
    assert dumped["sequential"]["v7"]["click-through"] == {
        "maxLogEValue": 0.53,
        "tau2": 1.2e-4,
        "ci": {"low": -0.01, "high": 0.04},
        "consecutiveFailures": 0,
    }
    assert dumped["analysis"]["variants"]["v7"]["primary"]["pValue"] == 0.4
    assert dumped["stepStartedAt"] == "2026-03-01T11:40:00Z"


def test_status_root_ignores_fields_of_others_but_nested_models_do_not() -> None:
    status = ModelExperimentStatus.model_validate({"phase": "Paused", "kopf": {"progress": {}}})
    assert status.phase is Phase.PAUSED
    with pytest.raises(ValidationError):
        ModelExperimentStatus.model_validate({"analysis": {"plannedN": 5, "typo": 1}})


def test_status_rejects_what_json_cannot_carry() -> None:
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValidationError):
            SequentialState(max_log_e_value=bad)
    with pytest.raises(ValidationError):
        Condition(
            type=ConditionType.READY,
            status=ConditionStatus.TRUE,
            reason="Ok",
            last_transition_time=datetime(2026, 1, 1),
        )  # naive: no timezone


def test_weights_must_sum_to_100() -> None:
    with pytest.raises(ValidationError, match="weights must sum to 100"):
        ModelExperimentStatus(weights={"v6": 80, "v7": 10})
    assert ModelExperimentStatus(weights={}).weights == {}


def test_timestamps_are_kept_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    status = ModelExperimentStatus(started_at=datetime(2026, 3, 1, 13, 0, tzinfo=paris))
    assert status.started_at == NOW
    assert status.started_at.tzinfo is UTC


def test_set_condition_moves_the_transition_time_only_on_a_change() -> None:
    status = ModelExperimentStatus()
    first = status.set_condition(
        ConditionType.METRICS_UNAVAILABLE,
        ConditionStatus.TRUE,
        "QueryFailed",
        "timeout",
        now=NOW,
        generation=1,
    )
    later = NOW + timedelta(minutes=1)
    again = status.set_condition(
        ConditionType.METRICS_UNAVAILABLE,
        ConditionStatus.TRUE,
        "QueryFailed",
        "timeout again",
        now=later,
        generation=2,
    )
    assert again.last_transition_time == first.last_transition_time == NOW
    assert again.message == "timeout again"
    assert again.observed_generation == 2
    status.set_condition(ConditionType.READY, ConditionStatus.FALSE, "MetricsUnavailable", "", now=later)
    flipped = status.set_condition(
        ConditionType.METRICS_UNAVAILABLE, ConditionStatus.FALSE, "QueriesOk", "", now=later
    )
    assert flipped.last_transition_time == later
    assert [c.type for c in status.conditions] == [ConditionType.READY, ConditionType.METRICS_UNAVAILABLE]
    assert status.condition(ConditionType.SUCCEEDED) is None


def test_history_is_bounded() -> None:
    status = ModelExperimentStatus()
    for i in range(HISTORY_LIMIT + 7):
        status.record(
            HistoryEntry(time=NOW + timedelta(seconds=i), to_phase=Phase.PROGRESSING, reason="Tick")
        )
    assert len(status.history) == HISTORY_LIMIT
    assert status.history[0].time == NOW + timedelta(seconds=7)
    ModelExperimentStatus.model_validate(status.model_dump(by_alias=True, mode="json"))
    with pytest.raises(ValidationError):
        ModelExperimentStatus(history=[status.history[0]] * (HISTORY_LIMIT + 1))


def test_phase_terminal() -> None:
    assert {p for p in Phase if p.terminal} == {Phase.PROMOTED, Phase.ROLLED_BACK, Phase.FAILED}


# --- property: any valid status survives JSON -------------------------------------------------

_names = st.from_regex(r"[a-z]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
_finite = st.floats(allow_nan=False, allow_infinity=False)
_probability = st.floats(min_value=0, max_value=1)
_count = st.floats(min_value=0, max_value=1e15)
_times = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7)), timezone(timedelta(hours=5, minutes=30))]),
)
_reasons = st.from_regex(r"[A-Z][A-Za-z0-9]{0,20}", fullmatch=True)
_text = st.text(max_size=40)


@st.composite
def _weights(draw: st.DrawFn) -> dict[str, int]:
    names = draw(st.lists(_names, min_size=1, max_size=6, unique=True))
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=len(names) - 1, max_size=len(names) - 1)))
    bounds = [0, *cuts, 100]
    return {n: bounds[i + 1] - bounds[i] for i, n in enumerate(names)}


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def _model(cls: Any, **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Instances of a pydantic model from a strategy per field (no inference from its signature)."""
    return st.fixed_dictionaries(fields).map(lambda kwargs: cls(**kwargs))


_intervals = _model(Interval, low=_finite, high=_finite)
_metric_results = _model(
    MetricResult,
    n=_optional(_count),
    estimate=_optional(_finite),
    difference=_optional(_finite),
    relative_lift=_optional(_finite),
    ci=_optional(_intervals),
    p_value=_optional(_probability),
    e_value=_optional(_count),
    probability=_optional(_probability),
    expected_loss=_optional(_count),
    planned_n=_optional(_count),
    method=_optional(st.text(max_size=20)),
    decision=st.sampled_from(VariantDecision),
)
_counters = _model(
    MetricCounters,
    successes=_optional(_count),
    trials=_optional(_count),
    count=_optional(_count),
    sum=_optional(_finite),
    sum_of_squares=_optional(_count),
    units=_optional(_count),
    numerator=_optional(_finite),
    denominator=_optional(_finite),
    numerator_squares=_optional(_count),
    denominator_squares=_optional(_count),
    cross_products=_optional(_finite),
)
_by_variant = st.dictionaries(_names, st.dictionaries(_names, _counters, max_size=3), max_size=3)


@st.composite
def statuses(draw: st.DrawFn) -> ModelExperimentStatus:
    weights = draw(_weights())
    return ModelExperimentStatus(
        observed_generation=draw(_optional(st.integers(0, 10**9))),
        phase=draw(st.sampled_from(Phase)),
        current_step=draw(_optional(st.integers(0, 19))),
        weights=weights,
        conditions=draw(
            st.lists(
                _model(
                    Condition,
                    type=st.sampled_from(ConditionType),
                    status=st.sampled_from(ConditionStatus),
                    reason=_reasons,
                    message=_text,
                    last_transition_time=_times,
                    observed_generation=_optional(st.integers(0, 10**6)),
                ),
                max_size=3,
                unique_by=lambda c: c.type,
            )
        ),
        analysis=draw(
            _optional(
                _model(
                    AnalysisRecord,
                    updated_at=_optional(_times),
                    planned_n=_optional(st.integers(0, 10**9)),
                    variants=st.dictionaries(
                        _names,
                        _model(
                            VariantAnalysis,
                            n=_count,
                            primary=_optional(_metric_results),
                            secondary=st.dictionaries(_names, _metric_results, max_size=2),
                            guardrails=st.dictionaries(
                                _names,
                                _model(
                                    GuardrailResult,
                                    estimate=_optional(_finite),
                                    limit=_optional(_finite),
                                    p_value=_optional(_probability),
                                    breached=st.booleans(),
                                ),
                                max_size=2,
                            ),
                            decision=st.sampled_from(VariantDecision),
                            rule=_optional(_text),
                        ),
                        max_size=3,
                    ),
                    srm=_optional(
                        _model(
                            SRMResult,
                            p_value=_optional(_probability),
                            observed_shares=st.dictionaries(_names, _probability, max_size=3),
                            mismatch=st.booleans(),
                        )
                    ),
                )
            )
        ),
        history=draw(
            st.lists(
                _model(
                    HistoryEntry,
                    time=_times,
                    from_phase=_optional(st.sampled_from(Phase)),
                    to_phase=st.sampled_from(Phase),
                    from_step=_optional(st.integers(0, 19)),
                    to_step=_optional(st.integers(0, 19)),
                    weights=st.just(weights),
                    reason=_reasons,
                    message=_text,
                    numbers=st.dictionaries(st.text(min_size=1, max_size=10), _finite, max_size=3),
                ),
                max_size=3,
            )
        ),
        started_at=draw(_optional(_times)),
        step_started_at=draw(_optional(_times)),
        consecutive_errors=draw(st.integers(0, 10**6)),
        data_outage_since=draw(_optional(_times)),
        strata=draw(
            st.lists(
                _model(
                    Stratum,
                    step=st.integers(0, 19),
                    weights=st.just(weights),
                    previous_weights=st.just(weights),
                    started_at=_times,
                    ended_at=_optional(_times),
                    counted_from=_optional(_times),
                    settle=_optional(
                        _model(
                            Settle,
                            reason=st.sampled_from(SettleReason),
                            seconds=st.floats(min_value=0, max_value=1e6),
                            log_likelihood_ratio=_optional(_finite),
                        )
                    ),
                    srm_epoch=st.integers(0, 100),
                    spacing=st.floats(min_value=0, max_value=1e4),
                    resets=st.dictionaries(_names, st.integers(0, 100), max_size=2),
                    totals=_by_variant,
                ),
                max_size=3,
            )
        ),
        sequential=draw(
            st.dictionaries(
                _names,
                st.dictionaries(
                    _names,
                    _model(
                        SequentialState,
                        max_log_e_value=_finite,
                        tau2=_optional(st.floats(min_value=1e-300, max_value=1e300)),
                        ci=_optional(_intervals),
                        consecutive_failures=st.integers(0, 1000),
                    ),
                    max_size=3,
                ),
                max_size=3,
            )
        ),
        srm=draw(_model(SRMState, epoch=st.integers(0, 50), max_log_e_value=_finite)),
        checkpoints=draw(st.dictionaries(_names, _times, max_size=2)),
        dropped_challengers=draw(
            st.lists(_model(DroppedChallenger, name=_names, at=_times, reason=_reasons), max_size=2)
        ),
        applied_controls=draw(_optional(_model(AppliedControls, promote=_optional(st.text(max_size=20))))),
        initial_replicas=draw(_optional(st.integers(0, 1000))),
    )


@settings(max_examples=150, deadline=None)
@given(statuses())
def test_any_status_round_trips_through_json(status: ModelExperimentStatus) -> None:
    text = json.dumps(status.model_dump(by_alias=True, mode="json"), allow_nan=False)
    assert ModelExperimentStatus.model_validate(json.loads(text)) == status
    pruned = json.dumps(status.model_dump(by_alias=True, mode="json", exclude_none=True), allow_nan=False)
    assert ModelExperimentStatus.model_validate(json.loads(pruned)) == status
