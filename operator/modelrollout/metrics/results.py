"""Turning Prometheus answers into readings: pure functions, no I/O.

A query's answer is the ``result`` list of an instant-vector answer of ``/api/v1/query``
(``[{"metric": {...}, "value": [<time>, "<number>"]}, ...]``). :func:`field_values` picks one
number per variant out of it; :func:`metric_reading` checks the numbers of a metric's fields
together and makes :class:`~modelrollout.api.status.MetricCounters`; :func:`shadow_counts` does
the same for the divergence counters.

Anything that is not a clean, complete answer is an :class:`~modelrollout.observations.Unknown`
whose reason names the variant, the field and the query: a variant without a series (*no data*,
never zero), a NaN or an infinity, a negative count, more successes than trials, two series for
one variant, an answer that is not an instant vector.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from modelrollout.api.presets import MetricType
from modelrollout.api.spec import QUERY_FIELDS
from modelrollout.api.status import MetricCounters
from modelrollout.metrics.queries import COMPARED, DIFFERING, FieldQuery, MetricQuery, ShadowQuery
from modelrollout.observations import MetricReading, ShadowCounts, Unknown

#: The fields that count something and so can never be negative (CRD spelling).
NON_NEGATIVE: Final = frozenset(
    {
        "successes", "trials", "count", "sumOfSquares", "units", "numeratorSquares", "denominatorSquares",
        DIFFERING, COMPARED,
    }
)
#: Relative slack for successes <= trials (floating-point noise of increase()).
_SLACK: Final = 1e-9

#: CRD field name -> MetricCounters attribute.
_ATTRIBUTES: Final = {alias: attr for fields in QUERY_FIELDS.values() for attr, alias in fields}

#: A field's numbers per variant, or why there are none.
FieldValues = Mapping[str, float] | Unknown


def _number(raw: object) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return float(raw)
    if isinstance(raw, str):
        try:
            return float(raw)
        except ValueError:
            return None
    return None


#: One variant's number, or why it has none.
VariantValue = float | Unknown


def variant_values(query: FieldQuery, result: Any) -> Mapping[str, VariantValue] | Unknown:
    """Each variant's number from the ``result`` list of the answer to ``query``, or why it has none.

    Series whose ``query.label`` names no variant are ignored (a preset's selector may match
    more). A variant needs exactly one series with a finite value; an answer that is not an
    instant vector makes the whole field unknown.
    """
    where = f"{query.path} (query: {query.shown()})"
    if not isinstance(result, list):
        return Unknown(f"Prometheus gave an unexpected answer ({type(result).__name__}) for {where}")
    found: dict[str, list[object]] = {}
    for item in result:
        if not isinstance(item, Mapping) or not isinstance(item.get("metric"), Mapping):
            return Unknown(f"Prometheus answered a scalar or string instead of an instant vector for {where}")
        sample = item.get("value")
        if not isinstance(sample, list | tuple) or len(sample) != 2:
            return Unknown(f"Prometheus answered a range vector instead of an instant vector for {where}")
        variant = query.variants.get(str(item["metric"].get(query.label, "")))
        if variant is not None:
            found.setdefault(variant, []).append(sample[1])
    values: dict[str, VariantValue] = {}
    for variant in query.variants.values():
        raw = found.get(variant, [])
        shown = f"{query.path} (query: {query.shown(variant)})"
        if not raw:
            values[variant] = Unknown(f"no data for variant {variant} from {shown}")
            continue
        if len(raw) > 1:
            values[variant] = Unknown(f"{len(raw)} series instead of one for variant {variant} from {shown}")
            continue
        value = _number(raw[0])
        if value is None:
            values[variant] = Unknown(f"unreadable value {raw[0]!r} for variant {variant} from {shown}")
        elif not math.isfinite(value):
            values[variant] = Unknown(f"the query returned {raw[0]} for variant {variant} from {shown}")
        elif value < 0 and query.field in NON_NEGATIVE:
            values[variant] = Unknown(
                f"negative {query.field} ({value:g}) for variant {variant} from {shown}"
            )
        else:
            values[variant] = value
    return values


def field_values(query: FieldQuery, result: Any) -> FieldValues:
    """One number per variant from the answer to ``query``; the first variant without a usable
    number (in the order of ``query.variants``) makes the whole field unknown."""
    values = variant_values(query, result)
    if isinstance(values, Unknown):
        return values
    numbers: dict[str, float] = {}
    for variant, value in values.items():
        if isinstance(value, Unknown):
            return value
        numbers[variant] = value
    return numbers


def metric_reading(metric: MetricQuery, answers: Mapping[str, FieldValues]) -> MetricReading:
    """The reading of one metric from the values of its fields (by CRD field name).

    The first unknown field, in field order, makes the whole metric unknown.
    """
    if metric.error is not None:
        return Unknown(f"{metric.error.path}: {metric.error.message}")
    checked: dict[str, Mapping[str, float]] = {}
    for query in metric.fields:
        values = answers.get(query.field)
        if values is None:
            return Unknown(f"no answer for {query.path}")
        if isinstance(values, Unknown):
            return values
        checked[query.field] = values
    if metric.type is MetricType.PROPORTION:
        for variant in metric.variants:
            successes, trials = checked["successes"][variant], checked["trials"][variant]
            if successes > trials * (1 + _SLACK) + _SLACK:
                return Unknown(
                    f"more successes ({successes:g}) than trials ({trials:g}) for variant {variant} in "
                    f"metric {metric.name} ({metric.path})"
                )
    readings: dict[str, MetricCounters] = {}
    for variant in metric.variants:
        counters = {_ATTRIBUTES[name]: values[variant] for name, values in checked.items()}
        readings[variant] = MetricCounters(**counters)
    return readings


def shadow_counts(
    query: ShadowQuery, answers: Mapping[str, Mapping[str, VariantValue] | Unknown]
) -> dict[str, ShadowCounts | Unknown]:
    """The divergence counters per challenger, from :func:`variant_values` of both queries.

    A failed query makes every challenger unknown; a challenger without data is unknown on its
    own (the others keep their counts).
    """
    if query.error is not None:
        return dict.fromkeys(query.variants, Unknown(f"{query.error.path}: {query.error.message}"))
    if query.differing is None or query.compared is None:
        return dict.fromkeys(query.variants, Unknown(f"no queries for {query.path}"))
    per_field: dict[str, Mapping[str, VariantValue]] = {}
    for fq in (query.differing, query.compared):
        values = answers.get(fq.field, Unknown(f"no answer for {fq.path}"))
        if isinstance(values, Unknown):
            return dict.fromkeys(query.variants, values)
        per_field[fq.field] = values
    out: dict[str, ShadowCounts | Unknown] = {}
    for variant in query.variants:
        differing = per_field[DIFFERING].get(variant, Unknown(f"no answer for variant {variant}"))
        compared = per_field[COMPARED].get(variant, Unknown(f"no answer for variant {variant}"))
        if isinstance(differing, Unknown):
            out[variant] = differing
        elif isinstance(compared, Unknown):
            out[variant] = compared
        elif differing > compared * (1 + _SLACK) + _SLACK:
            out[variant] = Unknown(
                f"more differing ({differing:g}) than compared ({compared:g}) predictions for variant "
                f"{variant} ({query.path})"
            )
        else:
            out[variant] = ShadowCounts(compared=compared, differing=differing)
    return out
