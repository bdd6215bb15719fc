"""Tests of modelrollout.metrics.queries: the PromQL of a tick, built from the spec (pure)."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelrollout.api import ModelExperimentSpec, Variant
from modelrollout.api.presets import Preset
from modelrollout.errors import InvalidInputError
from modelrollout.metrics import ISTIO_DURATION_BUCKETS_MS, VARIANT_LABEL, build_query_set, render_window
from modelrollout.metrics.queries import (
    DNS_LABEL,
    QuerySet,
    evaluation_time,
    le_spellings,
    timestamp_ms,
    window_since,
)

pytestmark = pytest.mark.unit

CLICKS = 'sum(increase(clicks_total{model="{{variant}}", namespace="{{namespace}}"}[{{window}}]))'
VIEWS = 'sum(increase(impressions_total{model="{{variant}}"}[{{window}}]))'


def spec(
    *,
    primary: dict[str, Any] | None = None,
    guardrails: list[dict[str, Any]] | None = None,
    secondary: list[dict[str, Any]] | None = None,
    challengers: int = 1,
    provider: str = "istio",
    shadow: dict[str, Any] | None = None,
) -> ModelExperimentSpec:
    """A valid spec: champion v6 (Service ranker-v6), challengers v7.. (ranker-v7..)."""
    variants = [{"name": f"v{6 + i}", "service": f"ranker-v{6 + i}", "deployment": f"ranker-v{6 + i}.app"}
                for i in range(challengers + 1)]
    traffic: dict[str, Any] = {"provider": provider}
    if provider == "istio":
        traffic["istio"] = {"virtualService": "ranker", "routes": ["primary"]}
    elif provider == "gatewayAPI":
        traffic["gatewayAPI"] = {"httpRoute": "ranker", "ruleNames": ["predict"]}
    else:
        traffic["service"] = {"service": "ranker"}
        for v in variants:
            v.pop("service")
    body: dict[str, Any] = {
        "champion": variants[0],
        "challengers": variants[1:],
        "traffic": traffic,
        "metrics": {
            "prometheus": {"address": "http://prometheus:9090"},
            "primary": primary or {"name": "ctr", "type": "proportion", "successes": CLICKS, "trials": VIEWS,
                                   "minimumDetectableEffect": 0.05},
            "secondary": secondary or [],
            "guardrails": guardrails or [],
        },
    }
    if shadow is not None:
        body["shadow"] = shadow
    return ModelExperimentSpec.model_validate(body)


def one(query_set: QuerySet, name: str) -> Any:
    return next(m for m in query_set.metrics if m.name == name)


# --- window -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(929.2, "929200ms"), (930, "930s"), (0, "1ms"), (0.0004, "1ms"), (0.0011, "2ms"), (1, "1s"),
     (86400 * 14, "1209600s")],
)
def test_window_is_exact_to_the_millisecond_rounded_up(seconds: float, expected: str) -> None:
    assert render_window(timedelta(seconds=seconds)) == expected


def test_window_since_start() -> None:
    start = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert window_since(start, start + timedelta(minutes=15, seconds=29, milliseconds=1)) == "929001ms"
    assert window_since(start, start + timedelta(minutes=15, seconds=30)) == "930s"
    assert window_since(start, start - timedelta(seconds=5)) == "1ms"  # clock skew: never negative
    with pytest.raises(InvalidInputError, match="timezone-aware"):
        window_since(start.replace(tzinfo=None), start)
    with pytest.raises(InvalidInputError):
        render_window(timedelta(seconds=-1))


def _range_start_ms(at: datetime, window: str) -> int:
    """Where Prometheus starts the range ``[window]`` of a query at ``evaluation_time(at)``."""
    seconds, _, millis = evaluation_time(at).partition(".")
    end = int(seconds) * 1000 + int(millis)
    length = int(window[:-2]) if window.endswith("ms") else int(window[:-1]) * 1000
    return end - length


def test_the_range_starts_at_the_same_millisecond_at_every_tick() -> None:
    # A start with microseconds, ticks at every sub-second phase: the range must start exactly at
    # timestamp_ms(start) each time. Whole-second windows moved it by up to a second, so a sample
    # just before the start was in the range at some ticks and out of it at others.
    start = datetime(2026, 12, 1, 6, 4, 17, 638304, tzinfo=UTC)
    rng = random.Random(5)
    starts = set()
    for _ in range(2000):
        at = start + timedelta(seconds=rng.uniform(0.002, 3600), microseconds=rng.randrange(1000))
        starts.add(_range_start_ms(at, window_since(start, at)))
    assert starts == {timestamp_ms(start)}
    assert timestamp_ms(start) == 1796105057638


def test_evaluation_time_is_the_millisecond_rounded_down() -> None:
    at = datetime(2026, 12, 1, 6, 4, 17, 638999, tzinfo=UTC)
    assert evaluation_time(at) == "1796105057.638"
    assert evaluation_time(at.replace(microsecond=5000)) == "1796105057.005"
    with pytest.raises(InvalidInputError, match="timezone-aware"):
        evaluation_time(at.replace(tzinfo=None))


@pytest.mark.parametrize("window", ["0s", "0ms", "5m", "1h", "10", "-3s", "1.5s", "3s]) or vector(1", ""])
def test_a_rendered_window_must_be_seconds_or_milliseconds(window: str) -> None:
    with pytest.raises(InvalidInputError, match="window"):
        build_query_set(spec(), "shop", window)


def test_a_rendered_window_in_milliseconds_is_accepted() -> None:
    assert build_query_set(spec(), "shop", "929200ms").window == "929200ms"


# --- user templates -----------------------------------------------------------------------------


def test_template_is_rendered_per_variant_and_combined_with_label_replace_or() -> None:
    qs = build_query_set(spec(), "shop", "930s")
    assert qs.window == "930s"
    assert qs.variants == ("v6", "v7")
    assert qs.namespace == "shop"
    metric = one(qs, "ctr")
    assert metric.path == "spec.metrics.primary"
    assert metric.error is None
    successes, trials = metric.fields
    assert (successes.field, trials.field) == ("successes", "trials")
    assert successes.path == "spec.metrics.primary.successes"
    assert successes.label == VARIANT_LABEL
    assert dict(successes.variants) == {"v6": "v6", "v7": "v7"}
    part = 'sum(increase(clicks_total{model="v7", namespace="shop"}[930s]))'
    assert successes.parts["v7"] == part
    assert successes.promql == (
        'label_replace(sum(\nsum(increase(clicks_total{model="v6", namespace="shop"}[930s]))\n), '
        '"modelrollout_variant", "v6", "", "")\nor\n'
        f'label_replace(sum(\n{part}\n), "modelrollout_variant", "v7", "", "")'
    )
    assert trials.promql.count("impressions_total") == 2
    assert successes.shown("v7") == part


def test_a_trailing_comment_cannot_swallow_the_wrapping() -> None:
    qs = build_query_set(spec(primary={"name": "ctr", "type": "proportion", "minimumDetectableEffect": 0.1,
                                       "successes": CLICKS + " # clicks", "trials": VIEWS}), "shop", "60s")
    promql = one(qs, "ctr").fields[0].promql
    for line in promql.splitlines():
        if "#" in line:
            assert line.endswith("# clicks")  # the comment ends its own line; the ")" follows on the next
    assert promql.count('"modelrollout_variant"') == 2


@pytest.mark.parametrize(
    ("metric", "fields"),
    [
        ({"type": "proportion", "successes": CLICKS, "trials": VIEWS}, ["successes", "trials"]),
        ({"type": "mean", "count": "sum(a_count{m=\"{{variant}}\"})", "sum": "sum(a_sum{m=\"{{variant}}\"})",
          "sumOfSquares": "sum(a_sq{m=\"{{variant}}\"})"}, ["count", "sum", "sumOfSquares"]),
        ({"type": "ratio", **{f: f"sum({f.lower()}_total{{m=\"{{{{variant}}}}\"}})" for f in (
            "units", "numerator", "denominator", "numeratorSquares", "denominatorSquares", "crossProducts")}},
         ["units", "numerator", "denominator", "numeratorSquares", "denominatorSquares", "crossProducts"]),
    ],
)
def test_one_query_per_field_of_each_type(metric: dict[str, Any], fields: list[str]) -> None:
    secondary = [{"name": "second", **metric}]
    qs = build_query_set(spec(secondary=secondary, challengers=2), "shop", "60s")
    found = one(qs, "second")
    assert found.path == "spec.metrics.secondary[0]"
    assert [f.field for f in found.fields] == fields
    for query in found.fields:
        assert query.path == f"spec.metrics.secondary[0].{query.field}"
        assert query.promql.count("label_replace(") == 3  # one part per variant, in ONE query
        assert set(query.parts) == {"v6", "v7", "v8"}
        assert query.promql.count("\nor\n") == 2


def test_live_variants_leave_dropped_challengers_out() -> None:
    qs = build_query_set(spec(challengers=3), "shop", "60s", variants=["v6", "v8"])
    query = one(qs, "ctr").fields[0]
    assert set(query.parts) == {"v6", "v8"}
    assert '"v7"' not in query.promql
    assert one(qs, "ctr").variants == ("v6", "v8")


@pytest.mark.parametrize(
    ("variants", "message"),
    [(["v7"], "champion"), (["v6", "v9"], "not in the spec"), (["v6", "v6"], "unique")],
)
def test_live_variants_are_checked(variants: list[str], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        build_query_set(spec(), "shop", "60s", variants=variants)


# --- injection ----------------------------------------------------------------------------------

HOSTILE = [
    'v7"}) or vector(1',
    'v7"} or vector(1) #',
    "v7'",
    "V7",
    "v7\n",
    "v7 ",
    "v7|v6",
    ".*",
    "v7)",
    "v7{",
    "",
    "-v7",
    "v7-",
    "v" * 64,
    "v7\\",
    "v7`",
]


def _with_challenger(base: ModelExperimentSpec, **fields: Any) -> ModelExperimentSpec:
    """The spec with its challenger replaced, without validation (as if the CRD had not checked)."""
    values = {"name": "v7", "service": "ranker-v7", "deployment": "ranker-v7", **fields}
    bad = Variant.model_construct(**values)
    return base.model_copy(update={"challengers": (bad,)})


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_variant_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidInputError, match="variant name"):
        build_query_set(_with_challenger(spec(), name=name), "shop", "60s")


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_variant_names_are_refused_by_the_presets(name: str) -> None:
    guard = [{"name": "errors", "preset": "istio-error-rate", "maxRelativeIncrease": 0.1}]
    with pytest.raises(InvalidInputError):
        build_query_set(_with_challenger(spec(guardrails=guard), name=name), "shop", "60s")


@pytest.mark.parametrize("namespace", HOSTILE)
def test_hostile_namespaces_are_refused(namespace: str) -> None:
    with pytest.raises(InvalidInputError, match="namespace"):
        build_query_set(spec(), namespace, "60s")


@pytest.mark.parametrize("preset", ["istio-error-rate", "gateway-error-rate"])
@pytest.mark.parametrize("service", ['ranker-v7"}) or vector(1', "ranker.v7", "Ranker", "ranker|x"])
def test_hostile_service_names_are_refused(preset: str, service: str) -> None:
    guard = [{"name": "errors", "preset": preset, "maxRelativeIncrease": 0.1}]
    with pytest.raises(InvalidInputError, match="service of variant v7"):
        build_query_set(_with_challenger(spec(guardrails=guard), service=service), "shop", "60s")


@pytest.mark.parametrize("deployment", ['ranker"}) or vector(1', "ranker..v7", "ranker|.*", "Ranker"])
def test_hostile_deployment_names_are_refused(deployment: str) -> None:
    guard = [{"name": "errors", "preset": "istio-error-rate", "maxRelativeIncrease": 0.1}]
    base = spec(guardrails=guard, provider="service")
    bad = _with_challenger(base, service=None, deployment=deployment)
    with pytest.raises(InvalidInputError, match="deployment of variant v7"):
        build_query_set(bad, "shop", "60s")


@given(st.text(min_size=0, max_size=70))
def test_only_dns_labels_get_into_a_query(name: str) -> None:
    bad = _with_challenger(spec(), name=name)
    if DNS_LABEL.fullmatch(name) and name != "v6":
        qs = build_query_set(bad, "shop", "60s")
        assert f'"{name}", "", "")' in one(qs, "ctr").fields[0].promql
    elif name != "v6":
        with pytest.raises(InvalidInputError):
            build_query_set(bad, "shop", "60s")


# --- presets ------------------------------------------------------------------------------------

SEL = (
    'reporter="destination", destination_service_namespace="shop", '
    'destination_service_name=~"ranker-v6|ranker-v7"'
)


def guard(preset: str, **extra: Any) -> list[dict[str, Any]]:
    higher_is_worse = preset != "istio-request-success-rate"
    return [{"name": "g", "preset": preset, "maxRelativeIncrease": 0.1, "higherIsWorse": higher_is_worse,
             **extra}]


def test_istio_error_rate() -> None:
    metric = one(build_query_set(spec(guardrails=guard("istio-error-rate")), "shop", "930s"), "g")
    successes, trials = metric.fields
    total = f"sum by (destination_service_name) (increase(istio_requests_total{{{SEL}}}[930s]))"
    assert trials.promql == total
    assert successes.promql == (
        f'sum by (destination_service_name) (increase(istio_requests_total{{{SEL}, response_code=~"5.."}}'
        f"[930s]))\nor\n0 * {total}"
    )
    assert successes.label == trials.label == "destination_service_name"
    assert dict(successes.variants) == {"ranker-v6": "v6", "ranker-v7": "v7"}
    assert successes.path == "spec.metrics.guardrails[0].preset"
    assert successes.parts == {}


def test_istio_request_success_rate() -> None:
    metric = one(build_query_set(spec(guardrails=guard("istio-request-success-rate")), "shop", "60s"), "g")
    successes, trials = metric.fields
    assert 'response_code!~"5.."' in successes.promql
    assert successes.promql.endswith(f"or\n0 * {trials.promql}")


def test_istio_latency_over_subtracts_the_threshold_bucket() -> None:
    query_set = build_query_set(spec(guardrails=guard("istio-latency-over", thresholdMs=500)), "shop", "60s")
    metric = one(query_set, "g")
    successes, trials = metric.fields
    count = ("sum by (destination_service_name) "
             f"(increase(istio_request_duration_milliseconds_count{{{SEL}}}[60s]))")
    assert trials.promql == count
    assert successes.promql == (
        f"clamp_min(\n{count}\n-\nsum by (destination_service_name) (increase("
        f'istio_request_duration_milliseconds_bucket{{{SEL}, le=~"500|500[.]0"}}[60s]))\n, 0)'
    )


def test_latency_threshold_spellings() -> None:
    assert le_spellings(500.0) == ("500", "500.0")
    assert le_spellings(0.5) == ("0.5",)
    assert le_spellings(3600000.0) == ("3.6e+06", "3600000.0", "3600000")
    metric = one(build_query_set(spec(guardrails=guard("istio-latency-over", thresholdMs=3600000)), "shop",
                                 "60s"), "g")
    assert 'le=~"3[.]6e[+]06|3600000[.]0|3600000"' in metric.fields[0].promql


@pytest.mark.parametrize("threshold", [499, 0.25, 750, 1e6])
def test_latency_threshold_must_be_an_istio_bucket(threshold: float) -> None:
    qs = build_query_set(spec(guardrails=guard("istio-latency-over", thresholdMs=threshold)), "shop", "60s")
    metric = one(qs, "g")
    assert metric.fields == ()
    assert metric.error is not None
    assert metric.error.path == "spec.metrics.guardrails[0].thresholdMs"
    assert "500" in metric.error.message
    assert "bucket" in metric.error.message
    assert qs.spec_errors() == [metric.error]
    assert list(qs.field_queries()) == list(one(qs, "ctr").fields)


@pytest.mark.parametrize("bound", ISTIO_DURATION_BUCKETS_MS)
def test_every_istio_bucket_is_a_valid_threshold(bound: float) -> None:
    qs = build_query_set(spec(guardrails=guard("istio-latency-over", thresholdMs=bound)), "shop", "60s")
    assert qs.spec_errors() == []


def test_provider_service_identifies_variants_by_workload() -> None:
    qs = build_query_set(spec(guardrails=guard("istio-error-rate"), provider="service"), "shop", "60s")
    _successes, trials = one(qs, "g").fields
    assert trials.label == "destination_workload"
    assert 'destination_workload_namespace="shop"' in trials.promql
    assert 'destination_workload=~"ranker-v6[.]app|ranker-v7[.]app"' in trials.promql  # dots escaped
    assert dict(trials.variants) == {"ranker-v6.app": "v6", "ranker-v7.app": "v7"}


def test_gateway_error_rate_reads_envoy_cluster_stats() -> None:
    qs = build_query_set(spec(guardrails=guard("gateway-error-rate"), provider="gatewayAPI"), "shop", "60s")
    successes, trials = one(qs, "g").fields
    assert trials.label == "modelrollout_service"
    assert dict(trials.variants) == {"ranker-v6": "v6", "ranker-v7": "v7"}
    cluster = "outbound[|][0-9]+[|][^|]*[|](ranker-v6|ranker-v7)[.]shop[.]svc[.]cluster[.]local"
    assert f'envoy_cluster_upstream_rq_xx{{envoy_cluster_name=~"{cluster}"}}[60s]' in trials.promql
    assert f'envoy_cluster_upstream_rq_xx{{cluster_name=~"{cluster}"}}[60s]' in trials.promql
    assert 'envoy_response_code_class="5"' in successes.promql
    assert 'envoy_response_code_class' not in trials.promql
    assert successes.promql.endswith(f"or\n0 * {trials.promql}")
    assert re.search(r'"modelrollout_service", "\$1", "cluster_name"', trials.promql)


def test_gateway_preset_needs_services() -> None:
    qs = build_query_set(spec(guardrails=guard("gateway-error-rate"), provider="service"), "shop", "60s")
    error = one(qs, "g").error
    assert error is not None
    assert error.path == "spec.metrics.guardrails[0].preset"
    assert "service" in error.message


def test_every_preset_is_implemented() -> None:
    for preset in Preset:
        extra = {"thresholdMs": 500} if preset is Preset.ISTIO_LATENCY_OVER else {}
        provider = "gatewayAPI" if preset is Preset.GATEWAY_ERROR_RATE else "istio"
        qs = build_query_set(spec(guardrails=guard(preset.value, **extra), provider=provider), "shop", "60s")
        metric = one(qs, "g")
        assert metric.error is None, preset
        assert [f.field for f in metric.fields] == ["successes", "trials"], preset


# --- shadow -------------------------------------------------------------------------------------

SHADOW = {"enabled": True, "divergence": {"preset": "sdk-shadow-divergence"}}


def test_sdk_shadow_divergence_covers_the_live_challengers() -> None:
    qs = build_query_set(spec(shadow=SHADOW, challengers=2), "shop", "60s")
    assert qs.shadow is not None
    assert qs.shadow.variants == ("v7", "v8")
    differing, compared = qs.shadow.differing, qs.shadow.compared
    assert differing is not None
    assert compared is not None
    selector = '{variant=~"v7|v8", baseline="v6"}'
    assert compared.promql == (
        f"sum by (variant) (increase(modelrollout_shadow_compared_total{selector}[60s]))")
    assert differing.promql == (
        f"sum by (variant) (increase(modelrollout_shadow_differing_total{selector}[60s]))\nor\n0 * "
        f"{compared.promql}"
    )
    assert differing.label == "variant"
    assert dict(differing.variants) == {"v7": "v7", "v8": "v8"}
    assert differing.path == "spec.shadow.divergence.preset"
    assert [q.field for q in qs.field_queries()][-2:] == ["differing", "compared"]


def test_shadow_templates() -> None:
    divergence = {"differing": 'sum(diff_total{shadow="{{variant}}"})',
                  "compared": 'sum(cmp_total{shadow="{{variant}}"})'}
    qs = build_query_set(spec(shadow={"enabled": True, "divergence": divergence}), "shop", "60s",
                         variants=["v6", "v7"])
    assert qs.shadow is not None
    assert qs.shadow.differing is not None
    assert qs.shadow.differing.path == "spec.shadow.divergence.differing"
    assert set(qs.shadow.differing.parts) == {"v7"}  # challengers only


def test_no_shadow_queries_unless_wanted() -> None:
    assert build_query_set(spec(), "shop", "60s").shadow is None
    off = {"enabled": False, "divergence": {"preset": "sdk-shadow-divergence"}}
    assert build_query_set(spec(shadow=off), "shop", "60s").shadow is None
    assert build_query_set(spec(shadow=off), "shop", "60s", shadow=True).shadow is not None
    assert build_query_set(spec(shadow=SHADOW), "shop", "60s", shadow=False).shadow is None
