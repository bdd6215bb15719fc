"""Tests of modelrollout.metrics.results: Prometheus answers to readings, or Unknown with the reason."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest

from modelrollout.api.presets import MetricType
from modelrollout.api.status import MetricCounters
from modelrollout.metrics.queries import FieldQuery, MetricQuery, ShadowQuery
from modelrollout.metrics.results import field_values, metric_reading, shadow_counts, variant_values
from modelrollout.observations import ShadowCounts, SpecError, Unknown

pytestmark = pytest.mark.unit

LABEL = "modelrollout_variant"


def fq(field: str = "trials", *, variants: tuple[str, ...] = ("v6", "v7"), label: str = LABEL) -> FieldQuery:
    return FieldQuery(
        field=field,
        promql=f"<{field} query>",
        path=f"spec.metrics.primary.{field}",
        label=label,
        variants=MappingProxyType({v: v for v in variants}),
        parts=MappingProxyType({v: f'{field}_total{{model="{v}"}}' for v in variants}),
    )


def series(variant: str, value: str | float, label: str = LABEL, **labels: str) -> dict[str, Any]:
    return {"metric": {label: variant, **labels}, "value": [1700000000.123, str(value)]}


def metric(kind: MetricType, fields: list[str], variants: tuple[str, ...] = ("v6", "v7")) -> MetricQuery:
    queries = tuple(fq(f, variants=variants) for f in fields)
    return MetricQuery("m", kind, "spec.metrics.primary", variants, queries)


# --- one field ----------------------------------------------------------------------------------


def test_one_number_per_variant() -> None:
    assert field_values(fq(), [series("v6", 1000), series("v7", "250.5")]) == {"v6": 1000.0, "v7": 250.5}


def test_zero_traffic_with_a_series_is_zero() -> None:
    assert field_values(fq(), [series("v6", 0), series("v7", 0)]) == {"v6": 0.0, "v7": 0.0}


def test_a_variant_without_series_is_no_data_not_zero() -> None:
    found = field_values(fq(), [series("v6", 10)])
    assert isinstance(found, Unknown)
    assert found.reason == (
        'no data for variant v7 from spec.metrics.primary.trials (query: trials_total{model="v7"})'
    )


def test_an_empty_vector_is_unknown() -> None:
    found = field_values(fq(), [])
    assert isinstance(found, Unknown)
    assert "no data for variant v6" in found.reason


@pytest.mark.parametrize("value", ["NaN", "+Inf", "-Inf"])
def test_nan_and_infinity_are_unknown(value: str) -> None:
    found = field_values(fq(), [series("v6", 1), series("v7", value)])
    assert isinstance(found, Unknown)
    assert found.reason.startswith(
        f"the query returned {value} for variant v7 from spec.metrics.primary.trials")


def test_negative_counts_are_unknown() -> None:
    found = field_values(fq("trials"), [series("v6", 1), series("v7", -3)])
    assert isinstance(found, Unknown)
    assert found.reason.startswith("negative trials (-3) for variant v7")


def test_a_negative_sum_is_a_value() -> None:  # the sum of a mean metric's values may be negative
    assert field_values(fq("sum"), [series("v6", -2.5), series("v7", 1)]) == {"v6": -2.5, "v7": 1.0}


def test_other_series_are_ignored() -> None:
    answer = [series("v6", 1), series("v7", 2), series("v9", 3), {"metric": {}, "value": [1, "4"]}]
    assert field_values(fq(), answer) == {"v6": 1.0, "v7": 2.0}


def test_two_series_for_one_variant_are_unknown() -> None:
    found = field_values(fq(), [series("v6", 1), series("v7", 2, pod="a"), series("v7", 3, pod="b")])
    assert isinstance(found, Unknown)
    assert "2 series instead of one for variant v7" in found.reason


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        ([1700000000.1, "1"], "scalar or string"),
        ([{"metric": {LABEL: "v6"}, "values": [[1, "1"], [2, "2"]]}], "range vector"),
        ({"resultType": "vector"}, "unexpected answer"),
        (None, "unexpected answer"),
    ],
)
def test_answers_that_are_not_instant_vectors(answer: Any, words: str) -> None:
    found = field_values(fq(), answer)
    assert isinstance(found, Unknown)
    assert words in found.reason


def test_unreadable_values() -> None:
    found = field_values(fq(), [series("v6", 1), {"metric": {LABEL: "v7"}, "value": [1, "lots"]}])
    assert isinstance(found, Unknown)
    assert "unreadable value 'lots' for variant v7" in found.reason


def test_presets_map_label_values_to_variants() -> None:
    query = FieldQuery("trials", "q", "spec.metrics.guardrails[0].preset", "destination_service_name",
                       MappingProxyType({"ranker-v6": "v6", "ranker-v7": "v7"}))
    answer = [series("ranker-v6", 5, "destination_service_name"),
              series("ranker-v7", 7, "destination_service_name")]
    assert field_values(query, answer) == {"v6": 5.0, "v7": 7.0}
    partial = variant_values(query, answer[:1])
    assert not isinstance(partial, Unknown)
    assert partial["v6"] == 5.0
    assert isinstance(partial["v7"], Unknown)
    assert "(query: q)" in partial["v7"].reason


# --- a metric -----------------------------------------------------------------------------------


def test_proportion_counters() -> None:
    reading = metric_reading(
        metric(MetricType.PROPORTION, ["successes", "trials"]),
        {"successes": {"v6": 10.0, "v7": 0.0}, "trials": {"v6": 100.0, "v7": 40.0}},
    )
    assert reading == {"v6": MetricCounters(successes=10, trials=100),
                       "v7": MetricCounters(successes=0, trials=40)}


def test_mean_counters() -> None:
    reading = metric_reading(
        metric(MetricType.MEAN, ["count", "sum", "sumOfSquares"], ("v6",)),
        {"count": {"v6": 4.0}, "sum": {"v6": 10.0}, "sumOfSquares": {"v6": 30.0}},
    )
    assert reading == {"v6": MetricCounters(count=4, sum=10, sum_of_squares=30)}


def test_ratio_counters() -> None:
    names = ["units", "numerator", "denominator", "numeratorSquares", "denominatorSquares", "crossProducts"]
    reading = metric_reading(metric(MetricType.RATIO, names, ("v6",)),
                             {n: {"v6": float(i + 1)} for i, n in enumerate(names)})
    assert reading == {"v6": MetricCounters(units=1, numerator=2, denominator=3, numerator_squares=4,
                                            denominator_squares=5, cross_products=6)}
    assert isinstance(reading, dict)
    assert reading["v6"].model_dump(by_alias=True, exclude_none=True) == {
        "units": 1, "numerator": 2, "denominator": 3, "numeratorSquares": 4, "denominatorSquares": 5,
        "crossProducts": 6}


def test_more_successes_than_trials_is_unknown() -> None:
    reading = metric_reading(
        metric(MetricType.PROPORTION, ["successes", "trials"]),
        {"successes": {"v6": 10.0, "v7": 41.0}, "trials": {"v6": 100.0, "v7": 40.0}},
    )
    assert isinstance(reading, Unknown)
    assert reading.reason == (
        "more successes (41) than trials (40) for variant v7 in metric m (spec.metrics.primary)")


def test_float_noise_is_not_more_successes() -> None:
    reading = metric_reading(
        metric(MetricType.PROPORTION, ["successes", "trials"], ("v6",)),
        {"successes": {"v6": 40.00000000001}, "trials": {"v6": 40.0}},
    )
    assert not isinstance(reading, Unknown)


def test_one_unknown_field_makes_the_metric_unknown() -> None:
    why = Unknown("no data for variant v7 from spec.metrics.primary.trials")
    reading = metric_reading(metric(MetricType.PROPORTION, ["successes", "trials"]),
                             {"successes": {"v6": 1.0, "v7": 1.0}, "trials": why})
    assert reading == why
    first = Unknown("first")
    assert metric_reading(metric(MetricType.PROPORTION, ["successes", "trials"]),
                          {"successes": first, "trials": why}) == first


def test_a_metric_that_cannot_be_queried_is_unknown() -> None:
    broken = MetricQuery("g", MetricType.PROPORTION, "spec.metrics.guardrails[0]", ("v6",), (),
                         SpecError("spec.metrics.guardrails[0].thresholdMs", "not a bucket"))
    assert metric_reading(broken, {}) == Unknown("spec.metrics.guardrails[0].thresholdMs: not a bucket")


# --- shadow -------------------------------------------------------------------------------------


def shadow() -> ShadowQuery:
    variants = ("v7", "v8")
    return ShadowQuery("spec.shadow.divergence", variants, fq("differing", variants=variants),
                       fq("compared", variants=variants))


def test_shadow_counts_per_challenger() -> None:
    query = shadow()
    assert query.differing is not None
    assert query.compared is not None
    answers = {
        "differing": variant_values(query.differing, [series("v7", 3), series("v8", 0)]),
        "compared": variant_values(query.compared, [series("v7", 100), series("v8", 50)]),
    }
    assert shadow_counts(query, answers) == {
        "v7": ShadowCounts(compared=100, differing=3),
        "v8": ShadowCounts(compared=50, differing=0),
    }


def test_a_challenger_without_shadow_data_is_unknown_alone() -> None:
    query = shadow()
    assert query.differing is not None
    assert query.compared is not None
    answers = {
        "differing": variant_values(query.differing, [series("v7", 3)]),
        "compared": variant_values(query.compared, [series("v7", 100), series("v8", 50)]),
    }
    found = shadow_counts(query, answers)
    assert found["v7"] == ShadowCounts(compared=100, differing=3)
    assert isinstance(found["v8"], Unknown)
    assert "no data for variant v8" in found["v8"].reason


def test_a_failed_shadow_query_makes_every_challenger_unknown() -> None:
    query = shadow()
    assert query.compared is not None
    down = Unknown("Prometheus unreachable at http://x: Connection refused")
    compared = variant_values(query.compared, [series("v7", 1), series("v8", 1)])
    answers = {"differing": down, "compared": compared}
    assert shadow_counts(query, answers) == {"v7": down, "v8": down}


def test_more_differing_than_compared_is_unknown() -> None:
    query = shadow()
    assert query.differing is not None
    assert query.compared is not None
    answers = {
        "differing": variant_values(query.differing, [series("v7", 5), series("v8", 0)]),
        "compared": variant_values(query.compared, [series("v7", 4), series("v8", 0)]),
    }
    found = shadow_counts(query, answers)
    assert isinstance(found["v7"], Unknown)
    assert "more differing (5) than compared (4)" in found["v7"].reason
    assert found["v8"] == ShadowCounts(compared=0, differing=0)
