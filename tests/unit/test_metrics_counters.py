"""Tests of modelrollout.metrics.counters: the counter selectors of a tick, built from the spec (pure)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from modelrollout.api import ModelExperimentSpec, Variant
from modelrollout.api.presets import MetricType, Preset
from modelrollout.errors import InvalidInputError
from modelrollout.metrics import DIVERGENCE, ISTIO_DURATION_BUCKETS_MS, build_counter_set
from modelrollout.metrics.counters import (
    DNS_LABEL,
    CounterMetric,
    CounterQuery,
    CounterSet,
    le_spellings,
    template_queries,
)

pytestmark = pytest.mark.unit

CLICKS = 'clicks_total{model="{{variant}}", namespace="{{namespace}}"}'
VIEWS = 'impressions_total{model="{{variant}}"}'


def spec(
    *,
    primary: dict[str, Any] | None = None,
    guardrails: list[dict[str, Any]] | None = None,
    secondary: list[dict[str, Any]] | None = None,
    challengers: int = 1,
    provider: str = "istio",
    shadow: dict[str, Any] | None = None,
    segments: dict[str, Any] | None = None,
) -> ModelExperimentSpec:
    """A valid spec: champion v6 (Service ranker-v6, Deployment ranker-v6.app), challengers v7.."""
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
    if segments is not None:
        body["metrics"]["segments"] = segments
    return ModelExperimentSpec.model_validate(body)


def guard(preset: str, **extra: Any) -> list[dict[str, Any]]:
    higher_is_worse = preset != "istio-request-success-rate"
    return [{"name": "g", "preset": preset, "maxRelativeIncrease": 0.1, "higherIsWorse": higher_is_worse,
             **extra}]


def latency(threshold: float) -> CounterSet:
    return build_counter_set(spec(guardrails=guard("istio-latency-over", thresholdMs=threshold)), "shop")


def gateway() -> CounterSet:
    return build_counter_set(spec(guardrails=guard("gateway-error-rate"), provider="gatewayAPI"), "shop")


def one(counter_set: CounterSet, name: str) -> CounterMetric:
    return next(m for m in counter_set.all_metrics() if m.name == name)


_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)(=~|!~|!=|=)"((?:[^"\\]|\\.)*)"')


def matchers(selector: str) -> dict[str, tuple[str, str]]:
    """The label matchers of a rendered selector, by label (read apart from the module's parser)."""
    body = selector[selector.index("{") + 1: selector.rindex("}")]
    found = {name: (op, re.sub(r"\\(.)", r"\1", value)) for name, op, value in _MATCHER.findall(body)}
    assert len(found) == body.count(", ") + 1, selector  # every matcher read, none twice
    return found


def metric_name(selector: str) -> str:
    return selector.split("{", 1)[0]


def selects(regex: str, value: str) -> bool:
    """Whether a PromQL regex matcher with ``regex`` matches the label value ``value`` (anchored).

    The operator's patterns escape only ASCII punctuation (``ranker\\-v6``), which RE2 and Python
    read alike, so Python's ``re`` stands in for RE2 here."""
    return re.fullmatch(regex, value) is not None


# --- user selectors -----------------------------------------------------------------------------


def test_one_varying_matcher_is_combined_into_one_regex_query() -> None:
    counter_set = build_counter_set(spec(challengers=2), "shop")
    assert counter_set.variants == ("v6", "v7", "v8")
    assert counter_set.namespace == "shop"
    metric = one(counter_set, "ctr")
    assert (metric.path, metric.type, metric.error) == ("spec.metrics.primary", MetricType.PROPORTION, None)
    successes, trials = metric.fields
    assert (successes.name, trials.name) == ("successes", "trials")
    assert successes.required
    assert trials.required
    (query,) = successes.parts
    assert query.selector == 'clicks_total{model=~"v6|v7|v8", namespace="shop"}'
    assert query.path == "spec.metrics.primary.successes"
    assert (query.label, query.variant, query.sign) == ("model", None, 1.0)
    assert dict(query.values) == {"v6": "v6", "v7": "v7", "v8": "v8"}
    assert query.shown["v7"] == 'clicks_total{model="v7", namespace="shop"}'
    assert query.described("v7") == 'clicks_total{model="v7", namespace="shop"}'
    assert query.described() == query.selector
    assert [q.selector for q in trials.parts] == ['impressions_total{model=~"v6|v7|v8"}']


def test_a_varying_value_with_a_prefix_is_combined_by_the_whole_value() -> None:
    (query,) = template_queries('up{job="ranker-{{variant}}"}', path="p", variants=["v6", "v7"],
                                namespace="shop")
    # the alternatives are regex literals (punctuation escaped), re-quoted for PromQL (\ doubled)
    assert query.selector == r'up{job=~"ranker\\-v6|ranker\\-v7"}'
    assert matchers(query.selector)["job"] == ("=~", r"ranker\-v6|ranker\-v7")
    assert dict(query.values) == {"ranker-v6": "v6", "ranker-v7": "v7"}
    assert query.variant_of({"job": "ranker-v7", "instance": "a"}) == "v7"
    assert query.variant_of({"job": "v7"}) is None


@pytest.mark.parametrize(
    "template",
    [
        'clicks_total{model=~"{{variant}}"}',  # in a regex matcher
        'clicks_total{model="{{variant}}", job="j-{{variant}}"}',  # in two matchers
        'clicks_total{model!="{{variant}}"}',  # in a != matcher
        "clicks_{{variant}}_total",  # in the metric name
    ],
)
def test_otherwise_each_variant_gets_its_own_query(template: str) -> None:
    queries = template_queries(template, path="p", variants=["v6", "v7"], namespace="shop")
    assert [q.variant for q in queries] == ["v6", "v7"]
    assert all(q.label is None for q in queries)
    assert "v7" in queries[1].selector
    assert "v6" not in queries[1].selector
    assert queries[1].variant_of({}) == "v7"  # every series of the query is the variant's
    assert queries[0].variant_of({"model": "v7"}) == "v6"


def test_one_variant_gets_a_query_of_its_own() -> None:
    (query,) = template_queries(VIEWS, path="p", variants=["v6"], namespace="shop")
    assert query.selector == 'impressions_total{model="v6"}'
    assert query.variant == "v6"


def test_a_template_is_rendered_again_from_its_parse() -> None:
    (query,) = template_queries("  clicks_total {model = '{{variant}}' , }", path="p", variants=["v6", "v7"],
                                namespace="shop")
    assert query.selector == 'clicks_total{model=~"v6|v7"}'
    assert query.shown["v6"] == 'clicks_total{model="v6"}'


@pytest.mark.parametrize("template", ['sum(clicks_total{model="{{variant}}"})',
                                      'clicks_total{model="{{variant}}"}[5m]', '{model="{{variant}}"} + 1'])
def test_a_template_that_is_no_selector_is_refused(template: str) -> None:
    with pytest.raises(InvalidInputError, match="not a PromQL series selector"):
        template_queries(template, path="p", variants=["v6", "v7"], namespace="shop")
    with pytest.raises(InvalidInputError, match="at least one variant"):
        template_queries(VIEWS, path="p", variants=[], namespace="shop")


def test_attribution_by_label_value_ignores_other_series() -> None:
    (query,) = build_counter_set(spec(), "shop").metrics[0].fields[1].parts
    assert query.variant_of({"model": "v6", "pod": "a"}) == "v6"
    assert query.variant_of({"model": "v7", "__name__": "impressions_total"}) == "v7"
    assert query.variant_of({"model": "v9"}) is None
    assert query.variant_of({"model": "V7"}) is None
    assert query.variant_of({"job": "v7"}) is None


@pytest.mark.parametrize(
    ("metric", "fields"),
    [
        ({"type": "proportion", "successes": CLICKS, "trials": VIEWS}, [("successes", "successes"),
                                                                       ("trials", "trials")]),
        ({"type": "mean", "count": 'a_count{m="{{variant}}"}', "sum": 'a_sum{m="{{variant}}"}',
          "sumOfSquares": 'a_sq{m="{{variant}}"}'},
         [("count", "count"), ("sum", "sum"), ("sumOfSquares", "sum_of_squares")]),
        ({"type": "ratio", **{f: f'{f.lower()}_total{{m="{{{{variant}}}}"}}' for f in (
            "units", "numerator", "denominator", "numeratorSquares", "denominatorSquares", "crossProducts")}},
         [("units", "units"), ("numerator", "numerator"), ("denominator", "denominator"),
          ("numeratorSquares", "numerator_squares"), ("denominatorSquares", "denominator_squares"),
          ("crossProducts", "cross_products")]),
    ],
)
def test_one_field_per_counter_of_each_type(metric: dict[str, Any], fields: list[tuple[str, str]]) -> None:
    found = one(build_counter_set(spec(secondary=[{"name": "second", **metric}], challengers=2), "shop"),
                "second")
    assert found.path == "spec.metrics.secondary[0]"
    assert found.type == MetricType(metric["type"])
    assert [(f.name, f.attr) for f in found.fields] == fields
    sample = {"proportion": "trials", "mean": "count", "ratio": "units"}[metric["type"]]
    assert found.sample_field is next(f for f in found.fields if f.name == sample)
    for f in found.fields:
        (query,) = f.parts  # one query for all three variants
        assert f.required
        assert query.path == f"spec.metrics.secondary[0].{f.name}"
        assert dict(query.values) == {"v6": "v6", "v7": "v7", "v8": "v8"}


def test_live_variants_leave_dropped_challengers_out() -> None:
    counter_set = build_counter_set(spec(challengers=3), "shop", variants=["v6", "v8"])
    (query,) = one(counter_set, "ctr").fields[0].parts
    assert query.selector == 'clicks_total{model=~"v6|v8", namespace="shop"}'
    assert one(counter_set, "ctr").variants == ("v6", "v8")
    assert counter_set.variants == ("v6", "v8")


@pytest.mark.parametrize(
    ("variants", "message"),
    [(["v7"], "champion"), (["v6", "v9"], "not in the spec"), (["v6", "v6"], "unique")],
)
def test_live_variants_are_checked(variants: list[str], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        build_counter_set(spec(), "shop", variants=variants)


def test_a_selector_used_twice_is_read_once() -> None:
    counter_set = build_counter_set(spec(guardrails=guard("istio-latency-over", thresholdMs=500)), "shop")
    selectors = [q.selector for q in counter_set.queries()]
    assert len(selectors) == len(set(selectors))
    assert len(selectors) == 2 + 2  # ctr's two, the latency preset's _count (twice in it) and _bucket


def test_a_long_selector_is_shortened_when_shown() -> None:
    query = CounterQuery(selector="x{" + "a" * 400 + '="b"}', path="p")
    assert len(query.described()) == 300
    assert query.described().endswith("...")


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
    "v7.x",
]


def _with_challenger(base: ModelExperimentSpec, **fields: Any) -> ModelExperimentSpec:
    """The spec with its challenger replaced, without validation (as if the CRD had not checked)."""
    values = {"name": "v7", "service": "ranker-v7", "deployment": "ranker-v7", **fields}
    bad = Variant.model_construct(**values)
    return base.model_copy(update={"challengers": (bad,)})


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_variant_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidInputError, match="variant name must be a Kubernetes name") as raised:
        build_counter_set(_with_challenger(spec(), name=name), "shop")
    assert repr(name) in str(raised.value)


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_variant_names_are_refused_with_presets_and_shadow(name: str) -> None:
    shadow = {"enabled": True, "divergence": {"preset": "sdk-shadow-divergence"}}
    bad = _with_challenger(spec(guardrails=guard("istio-error-rate"), shadow=shadow), name=name)
    with pytest.raises(InvalidInputError, match="variant name"):
        build_counter_set(bad, "shop")


@pytest.mark.parametrize("namespace", HOSTILE)
def test_hostile_namespaces_are_refused(namespace: str) -> None:
    with pytest.raises(InvalidInputError, match="namespace must be a Kubernetes name"):
        build_counter_set(spec(), namespace)


@pytest.mark.parametrize("preset", ["istio-error-rate", "istio-latency-over", "gateway-error-rate"])
@pytest.mark.parametrize("service",
                         ['ranker-v7"}) or vector(1', "ranker.v7", "Ranker", "ranker|x", "ranker-v7 "])
def test_hostile_service_names_are_refused(preset: str, service: str) -> None:
    extra = {"thresholdMs": 500} if preset == "istio-latency-over" else {}
    provider = "gatewayAPI" if preset == "gateway-error-rate" else "istio"
    bad = _with_challenger(spec(guardrails=guard(preset, **extra), provider=provider), service=service)
    with pytest.raises(InvalidInputError, match="service of variant v7 must be a Kubernetes name"):
        build_counter_set(bad, "shop")


@pytest.mark.parametrize("deployment",
                         ['ranker"}) or vector(1', "ranker..v7", "ranker|.*", "Ranker", ".ranker"])
def test_hostile_deployment_names_are_refused(deployment: str) -> None:
    base = spec(guardrails=guard("istio-error-rate"), provider="service")
    bad = _with_challenger(base, service=None, deployment=deployment)
    with pytest.raises(InvalidInputError, match="deployment of variant v7 must be a Kubernetes name"):
        build_counter_set(bad, "shop")


@given(st.text(min_size=0, max_size=70))
@example("ranker-v7-b")
def test_only_dns_labels_get_into_a_selector(name: str) -> None:
    bad = _with_challenger(spec(), name=name)
    if name == "v6":
        return
    if DNS_LABEL.fullmatch(name):
        (query,) = one(build_counter_set(bad, "shop"), "ctr").fields[0].parts
        escaped = name.replace("-", "\\\\-")  # a regex literal (\-), re-quoted for PromQL (\\-)
        assert query.selector == f'clicks_total{{model=~"v6|{escaped}", namespace="shop"}}'
        assert query.variant_of({"model": name}) == name
    else:
        with pytest.raises(InvalidInputError):
            build_counter_set(bad, "shop")


# --- presets ------------------------------------------------------------------------------------

BY_SERVICE = {"reporter": ("=", "destination"), "destination_service_namespace": ("=", "shop")}


def test_istio_error_rate() -> None:
    metric = one(build_counter_set(spec(guardrails=guard("istio-error-rate")), "shop"), "g")
    assert (metric.type, metric.error) == (MetricType.PROPORTION, None)
    successes, trials = metric.fields
    assert not successes.required  # a variant without any 5xx so far has 0 errors
    assert trials.required
    (errors,), (requests,) = successes.parts, trials.parts
    assert metric_name(errors.selector) == metric_name(requests.selector) == "istio_requests_total"
    assert matchers(requests.selector) == {
        **BY_SERVICE, "destination_service_name": ("=~", r"ranker\-v6|ranker\-v7")}
    assert matchers(errors.selector) == {**matchers(requests.selector), "response_code": ("=~", "5..")}
    assert requests.selector == (
        'istio_requests_total{reporter="destination", destination_service_namespace="shop", '
        r'destination_service_name=~"ranker\\-v6|ranker\\-v7"}')
    for query in (errors, requests):
        assert query.path == "spec.metrics.guardrails[0].preset"
        assert query.sign == 1.0
        assert query.label == "destination_service_name"
        assert dict(query.values) == {"ranker-v6": "v6", "ranker-v7": "v7"}
        assert query.variant_of({"destination_service_name": "ranker-v7", "response_code": "503"}) == "v7"
        assert query.variant_of({"destination_service_name": "ranker-v9"}) is None
        assert query.variant_of({"destination_workload": "ranker-v7"}) is None


def test_istio_request_success_rate() -> None:
    metric = one(build_counter_set(spec(guardrails=guard("istio-request-success-rate")), "shop"), "g")
    successes, trials = metric.fields
    (ok,), (requests,) = successes.parts, trials.parts
    assert matchers(ok.selector) == {**matchers(requests.selector), "response_code": ("!~", "5..")}
    assert not successes.required
    assert trials.required


def test_istio_latency_over_counts_all_requests_minus_the_threshold_bucket() -> None:
    metric = one(latency(500), "g")
    successes, trials = metric.fields
    count, within = successes.parts
    assert trials.parts == (count,)
    assert successes.required
    assert trials.required
    assert metric_name(count.selector) == "istio_request_duration_milliseconds_count"
    assert metric_name(within.selector) == "istio_request_duration_milliseconds_bucket"
    assert (count.sign, within.sign) == (1.0, -1.0)
    assert matchers(count.selector) == {
        **BY_SERVICE, "destination_service_name": ("=~", r"ranker\-v6|ranker\-v7")}
    le = matchers(within.selector).pop("le")
    assert {k: v for k, v in matchers(within.selector).items() if k != "le"} == matchers(count.selector)
    assert le[0] == "=~"
    assert le[1] == r"500|500\.0"
    assert selects(le[1], "500")
    assert selects(le[1], "500.0")  # the Python client's spelling
    for other in ("5000", "50", "500x0", "500.00", "250", "+Inf", "500|500.0"):
        assert not selects(le[1], other), other


def test_latency_threshold_spellings() -> None:
    assert le_spellings(500.0) == ("500", "500.0")
    assert le_spellings(0.5) == ("0.5",)
    assert le_spellings(3600000.0) == ("3.6e+06", "3600000.0", "3600000")
    metric = one(latency(3600000), "g")
    le = matchers(metric.fields[0].parts[1].selector)["le"][1]
    for spelling in ("3.6e+06", "3600000.0", "3600000"):
        assert selects(le, spelling), spelling
    for other in ("3.6e+6", "3.6e06", "36e+05", "1.8e+06"):
        assert not selects(le, other), other


@pytest.mark.parametrize("bound", ISTIO_DURATION_BUCKETS_MS)
def test_every_istio_bucket_is_a_valid_threshold_with_each_spelling(bound: float) -> None:
    counter_set = latency(bound)
    assert counter_set.spec_errors() == []
    le = matchers(one(counter_set, "g").fields[0].parts[1].selector)["le"][1]
    assert all(selects(le, s) for s in le_spellings(bound))
    assert not selects(le, format(bound * 10, "g"))


@pytest.mark.parametrize("threshold", [499, 0.25, 750, 1e6])
def test_a_threshold_that_is_no_istio_bucket_gives_a_metric_with_an_error(threshold: float) -> None:
    counter_set = latency(threshold)
    metric = one(counter_set, "g")
    assert metric.fields == ()
    assert metric.error is not None
    assert metric.error.path == "spec.metrics.guardrails[0].thresholdMs"
    assert "is not a bucket boundary" in metric.error.message
    assert "500" in metric.error.message
    assert metric.sample_field is None
    assert counter_set.spec_errors() == [metric.error]
    assert counter_set.queries() == [q for f in one(counter_set, "ctr").fields for q in f.parts]


def test_provider_service_identifies_variants_by_workload() -> None:
    counter_set = build_counter_set(spec(guardrails=guard("istio-error-rate"), provider="service"), "shop")
    successes, trials = one(counter_set, "g").fields
    (query,) = trials.parts
    assert query.label == "destination_workload"
    found = matchers(query.selector)
    assert found["reporter"] == ("=", "destination")
    assert found["destination_workload_namespace"] == ("=", "shop")
    assert "destination_service_name" not in found
    assert "destination_service_namespace" not in found
    op, regex = found["destination_workload"]
    assert (op, regex) == ("=~", r"ranker\-v6\.app|ranker\-v7\.app")
    assert selects(regex, "ranker-v6.app")
    assert selects(regex, "ranker-v7.app")
    assert not selects(regex, "ranker-v6xapp")  # the dot is a dot
    assert dict(query.values) == {"ranker-v6.app": "v6", "ranker-v7.app": "v7"}
    assert query.variant_of({"destination_workload": "ranker-v7.app"}) == "v7"
    assert successes.parts[0].label == "destination_workload"


def test_provider_service_needs_deployments_for_the_istio_presets() -> None:
    base = spec(guardrails=guard("istio-error-rate"), provider="service")
    metric = one(build_counter_set(_with_challenger(base, service=None, deployment=None), "shop"), "g")
    assert metric.fields == ()
    assert metric.error is not None
    assert metric.error.path == "spec.metrics.guardrails[0].preset"
    assert "variant v7 has no deployment" in metric.error.message


CLUSTER = "outbound|{port}|{subset}|{service}.{namespace}.svc.cluster.local"


def test_gateway_error_rate_reads_envoy_cluster_stats_by_both_label_names() -> None:
    counter_set = gateway()
    successes, trials = one(counter_set, "g").fields
    assert not successes.required
    assert trials.required
    assert [q.label for q in trials.parts] == ["envoy_cluster_name", "cluster_name"]
    assert [q.label for q in successes.parts] == ["envoy_cluster_name", "cluster_name"]
    for errors, requests in zip(successes.parts, trials.parts, strict=True):
        assert metric_name(requests.selector) == "envoy_cluster_upstream_rq_xx"
        assert matchers(errors.selector) == {
            **matchers(requests.selector), "envoy_response_code_class": ("=", "5")}
        op, regex = matchers(requests.selector)[requests.label or ""]
        assert op == "=~"
        for service in ("ranker-v6", "ranker-v7"):
            assert selects(regex, CLUSTER.format(port=80, subset="", service=service, namespace="shop"))
            assert selects(regex, CLUSTER.format(port=8080, subset="blue", service=service, namespace="shop"))
        for other in (CLUSTER.format(port=80, subset="", service="ranker-v6", namespace="other"),
                      CLUSTER.format(port=80, subset="", service="ranker-v9", namespace="shop"),
                      CLUSTER.format(port=80, subset="", service="ranker-v6x", namespace="shop"),
                      "inbound|80||ranker-v6.shop.svc.cluster.local",
                      "outbound|80||ranker-v6.shop.svc.cluster.localx"):
            assert not selects(regex, other), other
    assert "envoy_response_code_class" not in matchers(trials.parts[0].selector)


@pytest.mark.parametrize("label", ["envoy_cluster_name", "cluster_name"])
def test_gateway_series_belong_to_a_variant_by_their_cluster_name(label: str) -> None:
    counter_set = gateway()
    query = next(q for q in one(counter_set, "g").fields[1].parts if q.label == label)
    assert dict(query.values) == {}
    assert set(query.patterns) == {"v6", "v7"}

    def of(cluster: str) -> str | None:
        return query.variant_of({label: cluster, "envoy_response_code_class": "2"})

    assert of(CLUSTER.format(port=80, subset="", service="ranker-v6", namespace="shop")) == "v6"
    assert of(CLUSTER.format(port=8080, subset="blue", service="ranker-v7", namespace="shop")) == "v7"
    assert of(CLUSTER.format(port=80, subset="", service="ranker-v6", namespace="other")) is None
    assert of(CLUSTER.format(port=80, subset="", service="ranker-v6x", namespace="shop")) is None
    assert of(CLUSTER.format(port="x", subset="", service="ranker-v6", namespace="shop")) is None
    assert of("outbound|80||ranker-v6.shop.svc.cluster.local.evil") is None
    other = "cluster_name" if label == "envoy_cluster_name" else "envoy_cluster_name"
    v6 = CLUSTER.format(port=80, subset="", service="ranker-v6", namespace="shop")
    assert query.variant_of({other: v6}) is None


def test_gateway_patterns_escape_a_namespace_with_a_hyphen() -> None:
    the_spec = spec(guardrails=guard("gateway-error-rate"), provider="gatewayAPI")
    query = one(build_counter_set(the_spec, "shop-eu"), "g").fields[1].parts[0]
    op, regex = matchers(query.selector)[query.label or ""]
    assert op == "=~"
    assert r"[.]shop\-eu[.]svc" in regex
    v7 = CLUSTER.format(port=80, subset="", service="ranker-v7", namespace="shop-eu")
    assert selects(regex, v7)
    assert query.variant_of({"envoy_cluster_name": v7}) == "v7"
    for other in ("shop", "shopxeu", "shop-eux"):
        cluster = CLUSTER.format(port=80, subset="", service="ranker-v7", namespace=other)
        assert not selects(regex, cluster), other
        assert query.variant_of({"envoy_cluster_name": cluster}) is None


def test_gateway_preset_needs_services() -> None:
    counter_set = build_counter_set(spec(guardrails=guard("gateway-error-rate"), provider="service"), "shop")
    error = one(counter_set, "g").error
    assert error is not None
    assert error.path == "spec.metrics.guardrails[0].preset"
    assert error.message == "gateway-error-rate needs a service for variant v6"


def test_every_preset_is_implemented() -> None:
    for preset in Preset:
        if preset is Preset.ISTIO_LATENCY_QUANTILE:
            continue  # its own test below
        extra = {"thresholdMs": 500} if preset is Preset.ISTIO_LATENCY_OVER else {}
        provider = "gatewayAPI" if preset is Preset.GATEWAY_ERROR_RATE else "istio"
        the_spec = spec(guardrails=guard(preset.value, **extra), provider=provider)
        metric = one(build_counter_set(the_spec, "shop"), "g")
        assert metric.error is None, preset
        assert [(f.name, f.attr) for f in metric.fields] == [("successes", "successes"), ("trials", "trials")]
        assert metric.sample_field is metric.fields[1]
        assert all(q.path == "spec.metrics.guardrails[0].preset" for f in metric.fields for q in f.parts)


def test_the_latency_quantile_preset_reads_the_buckets_split_by_le() -> None:
    the_spec = spec(guardrails=guard("istio-latency-quantile", quantile=0.95))
    metric = one(build_counter_set(the_spec, "shop"), "g")
    assert metric.error is None
    assert (metric.type, metric.split, metric.split_total) == (MetricType.QUANTILE, "le", "+Inf")
    [field] = metric.fields
    assert (field.name, field.attr) == ("buckets", "trials")
    assert metric.sample_field is field
    [query] = field.parts
    assert query.selector.startswith("istio_request_duration_milliseconds_bucket{")
    assert 'reporter="destination"' in query.selector


def test_a_quantile_guardrail_of_user_buckets_is_split_by_le() -> None:
    g = {"name": "g", "type": "quantile", "quantile": 0.99, "maxRelativeIncrease": 0.2,
         "buckets": 'latency_ms_bucket{model="{{variant}}"}'}
    metric = one(build_counter_set(spec(guardrails=[g]), "shop"), "g")
    assert (metric.split, metric.split_total) == ("le", "+Inf")
    [query] = metric.fields[0].parts
    assert query.selector == 'latency_ms_bucket{model=~"v6|v7"}'


def test_segments_split_the_primary_and_the_proportion_margin_guardrails_only() -> None:
    segments = {"label": "segment", "protected": [{"value": "mobile"}]}
    guards = [
        {"name": "g", "preset": "istio-error-rate", "maxRelativeIncrease": 0.1},
        {"name": "t", "preset": "istio-error-rate", "threshold": 0.1, "failureLimit": 2},
    ]
    counter_set = build_counter_set(spec(guardrails=guards, segments=segments), "shop")
    split = {m.name: m.split for m in counter_set.metrics}
    assert split["g"] == "segment"
    assert split["t"] is None
    assert next(iter(split.values())) == "segment"  # the primary metric


# --- shadow divergence --------------------------------------------------------------------------

SHADOW = {"enabled": True, "divergence": {"preset": "sdk-shadow-divergence"}}


def test_sdk_shadow_divergence_covers_the_live_challengers() -> None:
    counter_set = build_counter_set(spec(shadow=SHADOW, challengers=2), "shop")
    metric = counter_set.shadow
    assert metric is not None
    assert metric.name == DIVERGENCE == "shadow:divergence"
    assert (metric.type, metric.path, metric.variants) == (MetricType.PROPORTION, "spec.shadow.divergence",
                                                           ("v7", "v8"))
    assert list(counter_set.all_metrics())[-1] is metric
    differing, compared = metric.fields
    assert (differing.name, compared.name) == ("successes", "trials")
    assert not differing.required  # no differing prediction so far is 0
    assert compared.required
    (d,), (c,) = differing.parts, compared.parts
    assert d.selector == 'modelrollout_shadow_differing_total{variant=~"v7|v8", baseline="v6"}'
    assert c.selector == 'modelrollout_shadow_compared_total{variant=~"v7|v8", baseline="v6"}'
    assert d.path == c.path == "spec.shadow.divergence.preset"
    assert c.label == "variant"
    assert dict(c.values) == {"v7": "v7", "v8": "v8"}
    assert c.variant_of({"variant": "v7", "baseline": "v6"}) == "v7"
    assert c.variant_of({"variant": "v6"}) is None


def test_shadow_divergence_of_the_live_challengers_only() -> None:
    counter_set = build_counter_set(spec(shadow=SHADOW, challengers=2), "shop", variants=["v6", "v8"])
    assert counter_set.shadow is not None
    assert counter_set.shadow.variants == ("v8",)
    assert counter_set.shadow.fields[1].parts[0].selector == \
        'modelrollout_shadow_compared_total{variant=~"v8", baseline="v6"}'
    assert build_counter_set(spec(shadow=SHADOW), "shop", variants=["v6"]).shadow is None


def test_shadow_selectors() -> None:
    divergence = {"differing": 'diff_total{shadow="{{variant}}"}',
                  "compared": 'cmp_total{shadow="{{variant}}"}'}
    shadow = {"enabled": True, "divergence": divergence}
    counter_set = build_counter_set(spec(shadow=shadow, challengers=2), "shop")
    metric = counter_set.shadow
    assert metric is not None
    assert metric.variants == ("v7", "v8")  # challengers only
    differing, compared = metric.fields
    assert differing.parts[0].path == "spec.shadow.divergence.differing"
    assert compared.parts[0].path == "spec.shadow.divergence.compared"
    assert differing.parts[0].selector == 'diff_total{shadow=~"v7|v8"}'
    assert differing.required  # a user's selector is required in every field


def test_no_shadow_divergence_unless_wanted() -> None:
    assert build_counter_set(spec(), "shop").shadow is None
    off = {"enabled": False, "divergence": {"preset": "sdk-shadow-divergence"}}
    assert build_counter_set(spec(shadow=off), "shop").shadow is None
    assert build_counter_set(spec(shadow=off), "shop", shadow=True).shadow is not None
    assert build_counter_set(spec(shadow=SHADOW), "shop", shadow=False).shadow is None
    without = build_counter_set(spec(shadow=SHADOW), "shop", shadow=False)
    assert [m.name for m in without.all_metrics()] == ["ctr"]
