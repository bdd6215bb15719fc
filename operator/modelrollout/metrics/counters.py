"""What one tick counts: pure functions from the spec to a :class:`CounterSet`.

Each field of a metric (``successes``, ``trials``, ...) is counted from **counter series**: the
raw samples of every series that a selector matches (see :mod:`modelrollout.api.selectors`).
A :class:`CounterQuery` is one selector and the rule that tells which variant a series belongs
to; a :class:`CounterField` adds up the increments of its queries (with a sign: the latency
preset counts requests over a threshold as all requests minus those within it).

User selectors
--------------
A field's template is rendered once per variant. When the renderings differ in exactly one
matcher with ``=`` (``model="{{variant}}"``, ``job="ranker-{{variant}}"``), they are combined into
one query with ``=~`` and the alternatives, and each series is told apart by that label's value:
one request per field, whatever the number of variants. Otherwise (``{{variant}}`` in the
metric name, in a regex matcher, in two matchers) each variant gets its own query.

Presets
-------
The presets select the mesh's own series and tell the variants apart by a label, the way users
write these queries themselves. A variant is identified in Istio's metrics by

* its **Service** (``variant.service``) in ``destination_service_name``, with
  ``destination_service_namespace`` = the experiment's namespace, for traffic providers ``istio``
  and ``gatewayAPI``;
* its **Deployment** (``variant.deployment``) in ``destination_workload``, with
  ``destination_workload_namespace``, for provider ``service`` (all variants share one Service).

All Istio presets read ``reporter="destination"``: the server-side sidecar also reports mirrored
requests, so the guardrails work in the shadow phase. A variant whose pods are all down has no
series at all, which is *no data*, never an error rate of zero.

``istio-error-rate``
    successes = ``istio_requests_total`` with ``response_code=~"5.."``, trials = all of it;
``istio-request-success-rate``
    successes = ``response_code!~"5.."``, trials = all requests;
``istio-latency-over``
    successes = ``istio_request_duration_milliseconds_count`` minus the ``le="<thresholdMs>"``
    bucket, trials = ``_count``. ``thresholdMs`` must be one of Istio's default bucket boundaries
    (:data:`ISTIO_DURATION_BUCKETS_MS`); the ``le`` matcher accepts the spellings exporters use;
``gateway-error-rate``
    Envoy's ``envoy_cluster_upstream_rq_xx`` of the Gateway's proxy (5xx class out of all), by
    Istio's cluster name ``outbound|<port>|<subset>|<service>.<namespace>.svc.cluster.local`` in
    ``envoy_cluster_name`` or ``cluster_name``;
``sdk-shadow-divergence``
    ``modelrollout_shadow_differing_total`` out of ``modelrollout_shadow_compared_total`` of
    :class:`modelrollout.sdk.ShadowComparator`, by ``variant`` with ``baseline`` = the champion.

The event series of a proportion preset (5xx requests, say) may not exist yet for a variant that
has trials (no error so far): that field is not *required*, and a variant without its series
counts 0 events. The trials series are required.

Injection
---------
Every value put into PromQL (variant, namespace, Service and Deployment names) must be a
Kubernetes name (:data:`DNS_LABEL`, :data:`DNS_SUBDOMAIN`) before anything is built; anything else
raises :class:`~modelrollout.errors.InvalidInputError`. User selectors are parsed after
rendering and rendered again from the parse, so a value cannot change the query's shape.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Final

from modelrollout.api.observations import ALL_BUCKET, DIVERGENCE, SpecProblem
from modelrollout.api.presets import DivergencePreset, MetricType, Preset
from modelrollout.api.selectors import Matcher, Selector, parse_selector, regex_literal
from modelrollout.api.spec import QUERY_FIELDS, MetricQueries, ModelExperimentSpec, Provider
from modelrollout.api.types import render_template
from modelrollout.errors import InvalidInputError

#: A DNS label (RFC 1123): variant names and namespaces.
DNS_LABEL: Final = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
#: A DNS subdomain (RFC 1123): Deployment names.
DNS_SUBDOMAIN: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")

#: Istio's default bucket boundaries of ``istio_request_duration_milliseconds``, in ms.
ISTIO_DURATION_BUCKETS_MS: Final = (
    0.5,
    1.0,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1000.0,
    2500.0,
    5000.0,
    10000.0,
    30000.0,
    60000.0,
    300000.0,
    600000.0,
    1800000.0,
    3600000.0,
)
#: Field names (CRD spelling) of the shadow divergence counters.
DIFFERING: Final = "differing"
COMPARED: Final = "compared"
#: The sample field of each metric type (CRD spelling): the counts the sample ratio test uses.
SAMPLE_FIELD: Final = {
    MetricType.PROPORTION: "trials",
    MetricType.MEAN: "count",
    MetricType.RATIO: "units",
    MetricType.QUANTILE: "buckets",
}
#: The label that tells a histogram's buckets apart.
LE: Final = "le"


@dataclass(frozen=True)
class CounterQuery:
    """One selector whose series are counted, and how each series is told to belong to a variant.

    Attributes
    ----------
    selector
        The PromQL series selector (it may match the series of several variants).
    path
        The spec field it comes from, for errors and reasons.
    sign
        +1, or -1 for a part that is subtracted (the latency preset's ``within`` bucket).
    label
        The label whose value names the variant; None when every series is ``variant``'s.
    values
        Label value -> variant (exact match of ``label``).
    patterns
        Variant -> regular expression that ``label``'s whole value matches (the gateway preset).
    variant
        The single variant of a per-variant query (``label`` is None).
    shown
        Variant -> the selector the user would run by hand for it (for messages).
    """

    selector: str
    path: str
    sign: float = 1.0
    label: str | None = None
    values: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    patterns: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    variant: str | None = None
    shown: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def variant_of(self, labels: Mapping[str, str]) -> str | None:
        """The variant a series with ``labels`` belongs to, or None when it belongs to none."""
        if self.label is None:
            return self.variant
        value = labels.get(self.label)
        if value is None:
            return None
        found = self.values.get(value)
        if found is not None:
            return found
        for variant, pattern in self.patterns.items():
            if re.fullmatch(pattern, value):
                return variant
        return None

    def described(self, variant: str | None = None) -> str:
        text = self.shown.get(variant, self.selector) if variant is not None else self.selector
        return text if len(text) <= 300 else text[:297] + "..."


@dataclass(frozen=True)
class CounterField:
    """One field of a metric: the sum of its queries' increments (with their signs).

    ``attr`` is the :class:`~modelrollout.api.status.MetricCounters` attribute; ``required``: a
    variant without any series of this field has *no data* (else it counts 0).
    """

    name: str
    attr: str
    parts: tuple[CounterQuery, ...]
    required: bool = True


@dataclass(frozen=True)
class CounterMetric:
    """The counters of one metric for its live variants. ``error``: it cannot be counted at all
    (a ``thresholdMs`` that is no bucket boundary); ``fields`` is then empty.

    ``split``: a label whose values the reading also counts apart (``CounterReading.breakdown``):
    the segment label, or ``le`` for a quantile's buckets. ``split_total``: only the series with
    that value of the split label count in the metric's own totals (``+Inf``: all requests).
    """

    name: str
    type: MetricType
    path: str
    variants: tuple[str, ...]
    fields: tuple[CounterField, ...]
    error: SpecProblem | None = None
    split: str | None = None
    split_total: str | None = None

    @property
    def sample_field(self) -> CounterField | None:
        wanted = SAMPLE_FIELD[self.type]
        return next((f for f in self.fields if f.name == wanted), None)


@dataclass(frozen=True)
class CounterSet:
    """Everything one tick counts, built by :func:`build_counter_set`."""

    namespace: str
    variants: tuple[str, ...]
    metrics: tuple[CounterMetric, ...]
    shadow: CounterMetric | None = None

    def all_metrics(self) -> Iterator[CounterMetric]:
        yield from self.metrics
        if self.shadow is not None:
            yield self.shadow

    def queries(self) -> list[CounterQuery]:
        """Every distinct query of the set (a selector used by two fields is read once)."""
        seen: dict[tuple[str, str | None, str | None], CounterQuery] = {}
        for metric in self.all_metrics():
            for f in metric.fields:
                for q in f.parts:
                    seen.setdefault((q.selector, q.label, q.variant), q)
        return list(seen.values())

    def spec_errors(self) -> list[SpecProblem]:
        return [m.error for m in self.all_metrics() if m.error is not None]


# --- values put into PromQL ---------------------------------------------------------------------


def _checked(value: object, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or pattern.fullmatch(value) is None or len(value) > 253:
        raise InvalidInputError(
            f"{what} must be a Kubernetes name (lowercase letters, digits, '-'"
            f"{', ' + repr('.') if pattern is DNS_SUBDOMAIN else ''}) to be used in PromQL, got {value!r}"
        )
    return value


def checked_label(value: object, what: str) -> str:
    """``value`` if it is a DNS label (safe to put into a PromQL string), else raise."""
    return _checked(value, DNS_LABEL, what)


def _alternatives(values: Sequence[str]) -> str:
    return "|".join(regex_literal(v) for v in values)


# --- user selectors -----------------------------------------------------------------------------


def render_selector(template: str, *, variant: str, namespace: str) -> Selector:
    """The template rendered for one variant and parsed (names checked first)."""
    rendered = render_template(
        template,
        variant=checked_label(variant, "variant name"),
        namespace=checked_label(namespace, "namespace"),
    )
    return parse_selector(rendered)


def _varying_matcher(parsed: Mapping[str, Selector]) -> int | None:
    """The index of the one ``=`` matcher whose value differs between the variants' selectors, when
    everything else is the same; None when they cannot be combined."""
    first = next(iter(parsed.values()))
    if any(s.metric != first.metric or len(s.matchers) != len(first.matchers) for s in parsed.values()):
        return None
    varying: list[int] = []
    for i, m in enumerate(first.matchers):
        others = [s.matchers[i] for s in parsed.values()]
        if any(o.name != m.name or o.op != m.op for o in others):
            return None
        if any(o.value != m.value for o in others):
            varying.append(i)
    if len(varying) != 1 or first.matchers[varying[0]].op != "=":
        return None
    values = [s.matchers[varying[0]].value for s in parsed.values()]
    return varying[0] if len(set(values)) == len(values) else None


def template_queries(
    template: str, *, path: str, variants: Sequence[str], namespace: str
) -> tuple[CounterQuery, ...]:
    """The queries of a user template for ``variants`` (see the module docstring)."""
    if not variants:
        raise InvalidInputError("at least one variant is needed to build a query")
    parsed = {v: render_selector(template, variant=v, namespace=namespace) for v in variants}
    shown = MappingProxyType({v: s.render() for v, s in parsed.items()})
    at = _varying_matcher(parsed) if len(variants) > 1 else None
    if at is None:
        return tuple(CounterQuery(selector=shown[v], path=path, variant=v, shown=shown) for v in variants)
    first = parsed[variants[0]]
    label = first.matchers[at].name
    values = {parsed[v].matchers[at].value: v for v in variants}
    combined = first.with_matcher(Matcher(label, "=~", _alternatives(list(values))), at)
    return (
        CounterQuery(
            selector=combined.render(), path=path, label=label, values=MappingProxyType(values), shown=shown
        ),
    )


# --- presets ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IstioTarget:
    """How the variants appear in Istio's metrics: the label, the namespace label, the values."""

    label: str
    namespace_label: str
    values: Mapping[str, str]  # label value -> variant


def istio_target(spec: ModelExperimentSpec, variants: Sequence[str]) -> IstioTarget | str:
    """The Istio label and values that identify ``variants``, or why they cannot be identified."""
    by_name = {v.name: v for v in spec.variants()}
    values: dict[str, str] = {}
    if spec.traffic.provider is Provider.SERVICE:
        for name in variants:
            deployment = by_name[name].deployment
            if deployment is None:
                return f"variant {name} has no deployment, which the Istio presets need with provider service"
            values[_checked(deployment, DNS_SUBDOMAIN, f"deployment of variant {name}")] = name
        return IstioTarget("destination_workload", "destination_workload_namespace", values)
    for name in variants:
        service = by_name[name].service
        if service is None:
            return f"variant {name} has no service, which the Istio presets need"
        values[checked_label(service, f"service of variant {name}")] = name
    return IstioTarget("destination_service_name", "destination_service_namespace", values)


def le_spellings(bound: float) -> tuple[str, ...]:
    """The ways exporters write the bucket bound ``bound`` in ``le`` (Go: ``500``, ``3.6e+06``;
    the Python client: ``500.0``)."""
    spellings = [format(bound, "g"), repr(bound)]
    if bound.is_integer():
        spellings += [str(int(bound)), f"{int(bound)}.0"]
    return tuple(dict.fromkeys(spellings))


def _istio_query(
    target: IstioTarget, namespace: str, metric: str, path: str, *extra: Matcher, sign: float = 1.0
) -> CounterQuery:
    selector = Selector(
        metric,
        (
            Matcher("reporter", "=", "destination"),
            Matcher(target.namespace_label, "=", namespace),
            Matcher(target.label, "=~", _alternatives(list(target.values))),
            *extra,
        ),
    )
    return CounterQuery(
        selector=selector.render(),
        path=path,
        sign=sign,
        label=target.label,
        values=MappingProxyType(dict(target.values)),
    )


def _istio_fields(
    preset: Preset, target: IstioTarget, namespace: str, path: str, threshold_ms: float | None
) -> tuple[CounterField, CounterField]:
    """(successes, trials) of an Istio preset."""
    if preset is Preset.ISTIO_LATENCY_OVER:
        assert threshold_ms is not None
        count = _istio_query(target, namespace, "istio_request_duration_milliseconds_count", path)
        le = Matcher("le", "=~", "|".join(regex_literal(s) for s in le_spellings(threshold_ms)))
        within = _istio_query(
            target, namespace, "istio_request_duration_milliseconds_bucket", path, le, sign=-1.0
        )
        return (
            CounterField("successes", "successes", (count, within)),
            CounterField("trials", "trials", (count,)),
        )
    requests = "istio_requests_total"
    op = "=~" if preset is Preset.ISTIO_ERROR_RATE else "!~"
    events = _istio_query(target, namespace, requests, path, Matcher("response_code", op, "5.."))
    return (
        CounterField("successes", "successes", (events,), required=False),
        CounterField("trials", "trials", (_istio_query(target, namespace, requests, path),)),
    )


def _gateway_fields(
    services: Mapping[str, str], namespace: str, path: str
) -> tuple[CounterField, CounterField]:
    """(successes, trials) of ``gateway-error-rate`` (see the module docstring)."""
    ns = regex_literal(namespace).replace(".", "[.]")

    def cluster(service: str) -> str:
        return rf"outbound\|[0-9]+\|[^|]*\|{regex_literal(service)}\.{ns}\.svc\.cluster\.local"

    alternatives = (
        f"outbound[|][0-9]+[|][^|]*[|]({_alternatives(list(services))})[.]{ns}[.]svc[.]cluster[.]local"
    )
    patterns = MappingProxyType({variant: cluster(service) for service, variant in services.items()})

    def queries(*extra: Matcher) -> tuple[CounterQuery, ...]:
        out = []
        for label in ("envoy_cluster_name", "cluster_name"):
            selector = Selector("envoy_cluster_upstream_rq_xx", (Matcher(label, "=~", alternatives), *extra))
            out.append(CounterQuery(selector=selector.render(), path=path, label=label, patterns=patterns))
        return tuple(out)

    return (
        CounterField(
            "successes", "successes", queries(Matcher("envoy_response_code_class", "=", "5")), required=False
        ),
        CounterField("trials", "trials", queries()),
    )


def _threshold_error(metric: MetricQueries, path: str) -> SpecProblem | None:
    threshold = metric.threshold_ms
    if threshold is None:
        return SpecProblem(f"{path}.thresholdMs", f"preset {metric.preset} needs thresholdMs")
    if float(threshold) not in ISTIO_DURATION_BUCKETS_MS:
        bounds = ", ".join(format(b, "g") for b in ISTIO_DURATION_BUCKETS_MS)
        return SpecProblem(
            f"{path}.thresholdMs",
            f"thresholdMs {format(threshold, 'g')} is not a bucket boundary of Istio's "
            f"istio_request_duration_milliseconds; use one of {bounds}",
        )
    return None


def _preset_metric(
    spec: ModelExperimentSpec, metric: MetricQueries, path: str, variants: Sequence[str], namespace: str
) -> CounterMetric:
    preset = metric.preset
    assert preset is not None
    preset_path = f"{path}.preset"

    def failed(error: SpecProblem) -> CounterMetric:
        return CounterMetric(metric.name, MetricType.PROPORTION, path, tuple(variants), (), error)

    if preset is Preset.GATEWAY_ERROR_RATE:
        by_name = {v.name: v for v in spec.variants()}
        services: dict[str, str] = {}
        for name in variants:
            service = by_name[name].service
            if service is None:
                needs = f"gateway-error-rate needs a service for variant {name}"
                return failed(SpecProblem(preset_path, needs))
            services[checked_label(service, f"service of variant {name}")] = name
        fields = _gateway_fields(services, namespace, preset_path)
    else:
        if preset is Preset.ISTIO_LATENCY_OVER:
            error = _threshold_error(metric, path)
            if error is not None:
                return failed(error)
        target = istio_target(spec, variants)
        if isinstance(target, str):
            return failed(SpecProblem(preset_path, target))
        if preset is Preset.ISTIO_LATENCY_QUANTILE:
            buckets = _istio_query(
                target, namespace, "istio_request_duration_milliseconds_bucket", preset_path
            )
            return CounterMetric(
                metric.name,
                MetricType.QUANTILE,
                path,
                tuple(variants),
                (CounterField("buckets", "trials", (buckets,)),),
                split=LE,
                split_total=ALL_BUCKET,
            )
        fields = _istio_fields(preset, target, namespace, preset_path, metric.threshold_ms)
    return CounterMetric(metric.name, MetricType.PROPORTION, path, tuple(variants), fields)


def counter_metric(
    spec: ModelExperimentSpec, metric: MetricQueries, path: str, variants: Sequence[str], namespace: str
) -> CounterMetric:
    """The counters of one metric for ``variants``."""
    if metric.preset is not None:
        return _preset_metric(spec, metric, path, variants, namespace)
    templates = metric.queries()
    fields = tuple(
        CounterField(
            alias,
            "trials" if metric.metric_type is MetricType.QUANTILE else attr,
            template_queries(
                templates[alias], path=f"{path}.{alias}", variants=variants, namespace=namespace
            ),
        )
        for attr, alias in QUERY_FIELDS[metric.metric_type]
    )
    if metric.metric_type is MetricType.QUANTILE:
        return CounterMetric(
            metric.name, MetricType.QUANTILE, path, tuple(variants), fields, split=LE, split_total=ALL_BUCKET
        )
    return CounterMetric(metric.name, metric.metric_type, path, tuple(variants), fields)


def divergence_metric(
    spec: ModelExperimentSpec, challengers: Sequence[str], namespace: str
) -> CounterMetric | None:
    """The shadow divergence counters of ``challengers`` (None without ``spec.shadow.divergence``).

    Counted like a proportion: ``successes`` = differing predictions, ``trials`` = compared ones.
    """
    divergence = spec.shadow.divergence
    if divergence is None or not challengers:
        return None
    path = "spec.shadow.divergence"
    names = tuple(checked_label(c, "variant name") for c in challengers)
    if divergence.preset is DivergencePreset.SDK_SHADOW_DIVERGENCE:
        champion = checked_label(spec.champion.name, "champion name")
        values = MappingProxyType({c: c for c in names})

        def sdk(metric: str) -> CounterQuery:
            selector = Selector(
                metric, (Matcher("variant", "=~", _alternatives(names)), Matcher("baseline", "=", champion))
            )
            return CounterQuery(
                selector=selector.render(), path=f"{path}.preset", label="variant", values=values
            )

        fields = (
            CounterField(
                "successes", "successes", (sdk("modelrollout_shadow_differing_total"),), required=False
            ),
            CounterField("trials", "trials", (sdk("modelrollout_shadow_compared_total"),)),
        )
        return CounterMetric(DIVERGENCE, MetricType.PROPORTION, path, names, fields)
    if divergence.differing is None or divergence.compared is None:  # unreachable for a valid spec
        error = SpecProblem(path, "give either a preset or both queries differing and compared")
        return CounterMetric(DIVERGENCE, MetricType.PROPORTION, path, names, (), error)
    fields = (
        CounterField(
            "successes",
            "successes",
            template_queries(
                divergence.differing, path=f"{path}.{DIFFERING}", variants=names, namespace=namespace
            ),
        ),
        CounterField(
            "trials",
            "trials",
            template_queries(
                divergence.compared, path=f"{path}.{COMPARED}", variants=names, namespace=namespace
            ),
        ),
    )
    return CounterMetric(DIVERGENCE, MetricType.PROPORTION, path, names, fields)


def _with_segments(spec: ModelExperimentSpec, metric: MetricQueries, counted: CounterMetric) -> CounterMetric:
    if counted.error is not None or counted.split is not None or metric.name not in spec.metrics.segmented():
        return counted
    assert spec.metrics.segments is not None
    return replace(counted, split=spec.metrics.segments.label)


def build_counter_set(
    spec: ModelExperimentSpec,
    namespace: str,
    *,
    variants: Sequence[str] | None = None,
    shadow: bool | None = None,
) -> CounterSet:
    """Everything one tick counts.

    Parameters
    ----------
    spec
        The experiment's spec.
    namespace
        The experiment's namespace.
    variants
        The live variants (default: all of the spec's); the champion must be in.
    shadow
        Whether to count the divergence (default: when the spec has ``shadow.enabled`` and
        ``shadow.divergence``); it covers the live challengers.

    Raises
    ------
    InvalidInputError
        A name that is not a Kubernetes name (injection), a variant not in the spec, or a field
        that is not a series selector.
    """
    namespace = checked_label(namespace, "namespace")
    known = spec.variant_names()
    for name in known:
        checked_label(name, "variant name")
    live = tuple(known if variants is None else variants)
    for name in live:
        if name not in known:
            raise InvalidInputError(f"variant {name!r} is not in the spec (variants: {', '.join(known)})")
    if len(set(live)) != len(live):
        raise InvalidInputError(f"variants must be unique, got {list(live)}")
    if spec.champion.name not in live:
        raise InvalidInputError(f"the champion {spec.champion.name!r} must be among the live variants")
    m = spec.metrics
    described: list[tuple[MetricQueries, str]] = [(m.primary, "spec.metrics.primary")]
    described += [(s, f"spec.metrics.secondary[{i}]") for i, s in enumerate(m.secondary)]
    described += [(g, f"spec.metrics.guardrails[{i}]") for i, g in enumerate(m.guardrails)]
    metrics = tuple(
        _with_segments(spec, metric, counter_metric(spec, metric, path, live, namespace))
        for metric, path in described
    )
    with_shadow = (spec.shadow.enabled and spec.shadow.divergence is not None) if shadow is None else shadow
    challengers = [v for v in live if v != spec.champion.name]
    divergence = divergence_metric(spec, challengers, namespace) if with_shadow else None
    return CounterSet(namespace, live, metrics, divergence)
