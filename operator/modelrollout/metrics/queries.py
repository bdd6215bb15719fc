"""Building the PromQL of one tick: pure functions from the spec to a :class:`QuerySet`.

A :class:`QuerySet` holds **one query per metric field** (``successes``, ``trials``, ``count``,
...) that returns the field **for every live variant at once**, one series per variant. A tick
thus costs one HTTP request per field, whatever the number of variants.

User templates
--------------
A template is rendered once per variant (see :func:`modelrollout.api.types.render_template`);
the renderings are combined into one query::

    label_replace(sum(<rendered for v6>), "modelrollout_variant", "v6", "", "")
    or label_replace(sum(<rendered for v7>), "modelrollout_variant", "v7", "", "")

``label_replace`` with an empty source label and an empty regex adds the constant label
``modelrollout_variant="<v>"`` to every series of its argument, so the ``or`` of the parts keeps
them all apart, and the answer names each series' variant. ``sum(...)`` makes each part one
series: a template that returns one series per pod is added up (every field is an additive
count or sum), and the sum of an empty vector stays empty, so a variant without data is still
missing rather than zero.

Why this and not one selector with a regex matcher (``model=~"v6|v7"``) grouped ``by (model)``:
that rewrite needs to know which label of which selector carries the variant, and a template may
put ``{{variant}}`` anywhere (in two selectors of a ratio, inside a longer label value such as
``job="ranker-{{variant}}"``, in a subquery). Rewriting arbitrary PromQL would need a PromQL
parser; ``label_replace`` and ``or`` work for every template that returns an instant vector,
and each part is exactly the query the user wrote and can run by hand.

Placeholders: ``{{variant}}`` is the variant's name, ``{{namespace}}`` the experiment's
namespace, ``{{window}}`` the time since counting started (the experiment's start, or the end of
its shadow phase), exact to the millisecond (``930s``, ``929200ms``), see :func:`window_since`.
Every query of a tick is evaluated at the tick's time (:func:`evaluation_time`), so the range
starts at the same instant at every tick. Queries over ``[{{window}}]`` therefore count
everything since the start, which is what :class:`~modelrollout.observations.Observations`
promises; the policy subtracts its per-step baselines.

Presets
-------
Presets group by the mesh's own label instead (``sum by (destination_service_name) (...)``), which
is how users write these queries themselves. A variant is identified in Istio's metrics by

* its **Service** (``variant.service``) in ``destination_service_name``, with
  ``destination_service_namespace`` = the experiment's namespace, for traffic providers ``istio``
  and ``gatewayAPI`` (each variant has its own Service there, and it is what the routes weight);
* its **Deployment** (``variant.deployment``) in ``destination_workload``, with
  ``destination_workload_namespace``, for provider ``service``, where all variants share one
  Service and only the workload tells them apart (Istio's workload name of a Deployment's pods is
  the Deployment's name).

All Istio presets read ``reporter="destination"`` (the server-side sidecar): it is the side
that reports mirrored requests too, so the guardrails work in the shadow phase. Requests that
never reached a variant's pods (Envoy flags ``UF``, ``NC``) are reported by the client side only
and are therefore not counted; a variant whose pods are all down has no series at all, which is
*no data* (:class:`~modelrollout.observations.Unknown`), never an error rate of zero.

``istio-error-rate``
    successes = 5xx requests, trials = all requests (``istio_requests_total``,
    ``response_code=~"5.."``);
``istio-request-success-rate``
    successes = non-5xx requests (``response_code!~"5.."``), trials = all requests;
``istio-latency-over``
    successes = requests slower than ``thresholdMs`` = ``_count`` minus the ``le="<thresholdMs>"``
    bucket of ``istio_request_duration_milliseconds``, trials = ``_count``. ``thresholdMs`` must
    be one of Istio's default bucket boundaries (:data:`ISTIO_DURATION_BUCKETS_MS`); the ``le``
    matcher accepts the spellings exporters use (``500``, ``500.0``, ``3.6e+06``);
``gateway-error-rate``
    Envoy's cluster statistics of the Gateway's proxy: successes =
    ``envoy_cluster_upstream_rq_xx{envoy_response_code_class="5"}``, trials = the same counter
    summed over all classes. The cluster name must be Istio's
    ``outbound|<port>|<subset>|<service>.<namespace>.svc.cluster.local`` (Istio's Gateway API
    implementation and ingress gateways), in the label ``envoy_cluster_name`` (plain Envoy's tag)
    or ``cluster_name`` (Istio's proxies); the Service is taken out of it with
    ``label_replace``. Istio proxies only export these statistics when the gateway's
    ``proxyStatsMatcher`` includes ``upstream_rq_``. Other implementations name their clusters
    otherwise; write the queries for them.
``sdk-shadow-divergence``
    ``modelrollout_shadow_differing_total`` out of ``modelrollout_shadow_compared_total``, the
    counters of :class:`modelrollout.sdk.ShadowComparator`, by their ``variant`` label (the
    challenger's name) with ``baseline`` = the champion's name.

In the count of events of a proportion preset, a variant that has requests but no matching ones
(no 5xx at all) gets 0 through ``... or 0 * <trials>``: zero only where the variant has traffic,
never for a variant without series.

Injection
---------
Every value substituted into PromQL (variant, namespace, Service and Deployment names) must match
a Kubernetes name pattern (:data:`DNS_LABEL`, :data:`DNS_SUBDOMAIN`) before anything is built;
anything else raises :class:`~modelrollout.errors.InvalidInputError`. The spec's CRD enforces
the same patterns; this is defence in depth, since a value with a quote, a brace or a parenthesis
could otherwise change the query.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Final

from modelrollout.api.presets import DivergencePreset, MetricType, Preset
from modelrollout.api.spec import QUERY_FIELDS, MetricQueries, ModelExperimentSpec, Provider
from modelrollout.api.types import render_template
from modelrollout.errors import InvalidInputError
from modelrollout.observations import SpecError

#: The label that names the variant of each series in the answer to a combined template query.
VARIANT_LABEL: Final = "modelrollout_variant"
#: The label into which the gateway preset extracts the Service from Envoy's cluster name.
SERVICE_LABEL: Final = "modelrollout_service"

#: A DNS label (RFC 1123): variant names and namespaces.
DNS_LABEL: Final = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
#: A DNS subdomain (RFC 1123): Deployment names.
DNS_SUBDOMAIN: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")

#: Istio's default bucket boundaries of ``istio_request_duration_milliseconds``, in ms.
ISTIO_DURATION_BUCKETS_MS: Final = (
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
)

#: Field names (CRD spelling) of the shadow divergence queries.
DIFFERING: Final = "differing"
COMPARED: Final = "compared"

_MAX_REASON_QUERY = 400


# --- the query set -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldQuery:
    """One PromQL query that returns one field of a metric for all its variants.

    Attributes
    ----------
    field
        The field, in CRD spelling (``successes``, ``sumOfSquares``, ``differing``, ...).
    promql
        The query. Its answer has one series per variant, told apart by ``label``.
    path
        The spec field the query comes from (``spec.metrics.primary.successes``, or
        ``spec.metrics.guardrails[0].preset`` for a preset), for errors and reasons.
    label
        The label of the answer that identifies the variant of a series.
    variants
        Value of ``label`` -> variant name. Series with other values are ignored.
    parts
        User templates only: the rendered template of each variant (what the user would run
        by hand), for messages and for the syntax check.
    """

    field: str
    promql: str
    path: str
    label: str
    variants: Mapping[str, str]
    parts: Mapping[str, str] = dataclasses.field(default_factory=lambda: MappingProxyType({}))

    def shown(self, variant: str | None = None) -> str:
        """The query to show in a reason: the variant's own part if there is one, else the whole,
        shortened to a few hundred characters."""
        text = self.parts.get(variant, self.promql) if variant is not None else self.promql
        text = " ".join(text.split())
        return text if len(text) <= _MAX_REASON_QUERY else text[: _MAX_REASON_QUERY - 3] + "..."


@dataclass(frozen=True)
class MetricQuery:
    """The queries of one metric (primary, secondary or guardrail).

    ``fields`` are in the order of :data:`modelrollout.api.spec.QUERY_FIELDS` for the type. When
    the metric cannot be queried at all (a ``thresholdMs`` that is no bucket boundary), ``error``
    says why and ``fields`` is empty; observing it gives :class:`~modelrollout.observations.Unknown`.
    """

    name: str
    type: MetricType
    path: str
    variants: tuple[str, ...]
    fields: tuple[FieldQuery, ...]
    error: SpecError | None = None


@dataclass(frozen=True)
class ShadowQuery:
    """The divergence queries of the shadow phase, for the live challengers."""

    path: str
    variants: tuple[str, ...]
    differing: FieldQuery | None
    compared: FieldQuery | None
    error: SpecError | None = None


@dataclass(frozen=True)
class QuerySet:
    """Everything one tick asks Prometheus, built by :func:`build_query_set`."""

    namespace: str
    window: str
    variants: tuple[str, ...]
    metrics: tuple[MetricQuery, ...]
    shadow: ShadowQuery | None = None

    def field_queries(self) -> Iterator[FieldQuery]:
        """Every query of the set: the metrics' fields, then the shadow queries."""
        for metric in self.metrics:
            yield from metric.fields
        if self.shadow is not None:
            for query in (self.shadow.differing, self.shadow.compared):
                if query is not None:
                    yield query

    def spec_errors(self) -> list[SpecError]:
        """The errors found while building (those that need no Prometheus)."""
        errors = [m.error for m in self.metrics if m.error is not None]
        if self.shadow is not None and self.shadow.error is not None:
            errors.append(self.shadow.error)
        return errors


# --- values substituted into PromQL -------------------------------------------------------------


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


def _regex_alternatives(values: Sequence[str]) -> str:
    """An RE2 alternation that matches exactly ``values`` (names; dots escaped as ``[.]``)."""
    return "|".join(v.replace(".", "[.]") for v in values)


def render_window(span: timedelta) -> str:
    """A PromQL range of ``span``, rounded up to the millisecond (Prometheus's resolution), at
    least ``1ms``: ``930s`` when it is whole seconds, else milliseconds
    (``timedelta(seconds=929.2)`` gives ``929200ms``)."""
    seconds = span.total_seconds()
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidInputError(f"window must be a non-negative duration, got {span!r}")
    ms = max(1, -(-span // _MS))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


_MS: Final = timedelta(milliseconds=1)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp_ms(at: datetime) -> int:
    """``at`` in whole milliseconds since the epoch, rounded down (timezone-aware ``at``).

    The evaluation time of every query of a tick is this, in seconds with three decimals (see
    :func:`evaluation_time`), so that it and :func:`window_since` agree to the millisecond.
    """
    if at.tzinfo is None:
        raise InvalidInputError("the time must be timezone-aware")
    return (at - _EPOCH) // _MS


def evaluation_time(at: datetime) -> str:
    """The ``time`` parameter of a query evaluated at ``at``: :func:`timestamp_ms` in seconds."""
    ms = timestamp_ms(at)
    return f"{ms // 1000}.{ms % 1000:03d}"


def window_since(started_at: datetime, at: datetime) -> str:
    """The ``{{window}}`` of a tick evaluated at ``at`` (:func:`evaluation_time`) that counts
    since ``started_at``.

    The range is exact to the millisecond, so it starts at the same instant,
    ``timestamp_ms(started_at)``, at every tick. With a range rounded to whole seconds its start
    would move by up to a second from tick to tick, and a sample just before ``started_at`` would
    be in the range at one tick and out of it at the next. ``increase()`` extrapolates the first
    sample back to the range's start only when it is within about one scrape interval of it, so
    when a gap in the samples follows (Prometheus restarted, a target not scraped), one variant's
    reading would hold the gap's growth and the next would not: a sample ratio mismatch made by
    the query, latched for good by the always-valid test (seen on the real stack after a
    Prometheus restart). At a fixed start the subtraction of a stratum's baseline cancels the
    start edge, as :mod:`modelrollout.policy.counts` assumes.
    """
    if started_at.tzinfo is None or at.tzinfo is None:
        raise InvalidInputError("started_at and at must be timezone-aware")
    ms = max(1, timestamp_ms(at) - timestamp_ms(started_at))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


_WINDOW = re.compile(r"[1-9][0-9]*m?s")


# --- user templates -----------------------------------------------------------------------------


def template_part(template: str, *, variant: str, namespace: str, window: str) -> str:
    """The template rendered for one variant (names checked first)."""
    return render_template(
        template,
        variant=checked_label(variant, "variant name"),
        namespace=checked_label(namespace, "namespace"),
        window=window,
    )


def wrap_part(rendered: str, variant: str) -> str:
    """One variant's part of a combined query: one series labelled with the variant.

    The template goes on lines of its own, so that a trailing ``# comment`` cannot swallow the
    closing parentheses.
    """
    name = checked_label(variant, "variant name")
    return f'label_replace(sum(\n{rendered}\n), "{VARIANT_LABEL}", "{name}", "", "")'


def combine_template(
    template: str, *, field_name: str, path: str, variants: Sequence[str], namespace: str, window: str
) -> FieldQuery:
    """The combined query of a user template for ``variants`` (see the module docstring)."""
    if not variants:
        raise InvalidInputError("at least one variant is needed to build a query")
    parts = {v: template_part(template, variant=v, namespace=namespace, window=window) for v in variants}
    promql = "\nor\n".join(wrap_part(parts[v], v) for v in variants)
    return FieldQuery(
        field=field_name,
        promql=promql,
        path=path,
        label=VARIANT_LABEL,
        variants=MappingProxyType({v: v for v in variants}),
        parts=MappingProxyType(parts),
    )


# --- presets ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IstioTarget:
    """How the variants appear in Istio's metrics: which label, which namespace label, which
    value for each variant."""

    label: str
    namespace_label: str
    values: Mapping[str, str]  # label value -> variant


def istio_target(spec: ModelExperimentSpec, variants: Sequence[str]) -> IstioTarget | str:
    """The Istio label and values that identify ``variants`` (see the module docstring), or the
    reason why they cannot be identified."""
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


def _istio_selector(target: IstioTarget, namespace: str, *extra: str) -> str:
    matchers = [
        'reporter="destination"',
        f'{target.namespace_label}="{namespace}"',
        f'{target.label}=~"{_regex_alternatives(list(target.values))}"',
        *extra,
    ]
    return "{" + ", ".join(matchers) + "}"


def _increase_by(label: str, metric: str, selector: str, window: str) -> str:
    return f"sum by ({label}) (increase({metric}{selector}[{window}]))"


def le_spellings(bound: float) -> tuple[str, ...]:
    """The ways exporters write the bucket bound ``bound`` in ``le`` (Go: ``500``, ``3.6e+06``;
    the Python client: ``500.0``)."""
    spellings = [format(bound, "g"), repr(bound)]
    if bound.is_integer():
        spellings += [str(int(bound)), f"{int(bound)}.0"]
    return tuple(dict.fromkeys(spellings))


def _le_matcher(bound: float) -> str:
    escaped = (s.replace(".", "[.]").replace("+", "[+]") for s in le_spellings(bound))
    return f'le=~"{"|".join(escaped)}"'


def _events_or_zero(events: str, trials: str) -> str:
    """``events``, and 0 for the variants that have trials but no events series."""
    return f"{events}\nor\n0 * {trials}"


def _istio_fields(
    preset: Preset, target: IstioTarget, namespace: str, window: str, threshold_ms: float | None
) -> tuple[str, str]:
    """(successes, trials) PromQL of an Istio preset."""
    label = target.label
    requests = "istio_requests_total"
    if preset is Preset.ISTIO_LATENCY_OVER:
        assert threshold_ms is not None
        selector = _istio_selector(target, namespace)
        count = _increase_by(label, "istio_request_duration_milliseconds_count", selector, window)
        within = _increase_by(
            label,
            "istio_request_duration_milliseconds_bucket",
            _istio_selector(target, namespace, _le_matcher(threshold_ms)),
            window,
        )
        return f"clamp_min(\n{count}\n-\n{within}\n, 0)", count
    trials = _increase_by(label, requests, _istio_selector(target, namespace), window)
    code = 'response_code=~"5.."' if preset is Preset.ISTIO_ERROR_RATE else 'response_code!~"5.."'
    events = _increase_by(label, requests, _istio_selector(target, namespace, code), window)
    return _events_or_zero(events, trials), trials


def _gateway_fields(services: Sequence[str], namespace: str, window: str) -> tuple[str, str]:
    """(successes, trials) PromQL of ``gateway-error-rate`` (see the module docstring)."""
    alternatives = "(" + _regex_alternatives(services) + ")"
    ns = namespace.replace(".", "[.]")
    matching = f"outbound[|][0-9]+[|][^|]*[|]{alternatives}[.]{ns}[.]svc[.]cluster[.]local"
    extract = f"outbound[|][0-9]+[|][^|]*[|]([a-z0-9-]+)[.]{ns}[.]svc[.]cluster[.]local"

    def by_service(extra: str) -> str:
        metric = "envoy_cluster_upstream_rq_xx"
        either = (
            f'increase({metric}{{envoy_cluster_name=~"{matching}"{extra}}}[{window}])\n'
            f'or increase({metric}{{cluster_name=~"{matching}"{extra}}}[{window}])'
        )
        labelled = (
            f'label_replace(label_replace(\n{either}\n, "{SERVICE_LABEL}", "$1", "envoy_cluster_name", '
            f'"{extract}"), "{SERVICE_LABEL}", "$1", "cluster_name", "{extract}")'
        )
        return f"sum by ({SERVICE_LABEL}) (\n{labelled}\n)"

    trials = by_service("")
    return _events_or_zero(by_service(', envoy_response_code_class="5"'), trials), trials


def _threshold_error(metric: MetricQueries, path: str) -> SpecError | None:
    threshold = metric.threshold_ms
    if threshold is None:
        return SpecError(f"{path}.thresholdMs", f"preset {metric.preset} needs thresholdMs")
    if float(threshold) not in ISTIO_DURATION_BUCKETS_MS:
        bounds = ", ".join(format(b, "g") for b in ISTIO_DURATION_BUCKETS_MS)
        return SpecError(
            f"{path}.thresholdMs",
            f"thresholdMs {format(threshold, 'g')} is not a bucket boundary of Istio's "
            f"istio_request_duration_milliseconds; use one of {bounds}",
        )
    return None


def _preset_query(
    spec: ModelExperimentSpec, metric: MetricQueries, path: str, variants: Sequence[str], namespace: str,
    window: str,
) -> MetricQuery:
    preset = metric.preset
    assert preset is not None
    preset_path = f"{path}.preset"

    def failed(error: SpecError) -> MetricQuery:
        return MetricQuery(metric.name, MetricType.PROPORTION, path, tuple(variants), (), error)

    if preset is Preset.GATEWAY_ERROR_RATE:
        by_name = {v.name: v for v in spec.variants()}
        values: dict[str, str] = {}
        for name in variants:
            service = by_name[name].service
            if service is None:
                message = f"gateway-error-rate needs a service for variant {name}"
                return failed(SpecError(preset_path, message))
            values[checked_label(service, f"service of variant {name}")] = name
        successes, trials = _gateway_fields(list(values), namespace, window)
        label = SERVICE_LABEL
    else:
        if preset is Preset.ISTIO_LATENCY_OVER:
            error = _threshold_error(metric, path)
            if error is not None:
                return failed(error)
        target = istio_target(spec, variants)
        if isinstance(target, str):
            return failed(SpecError(preset_path, target))
        successes, trials = _istio_fields(preset, target, namespace, window, metric.threshold_ms)
        label, values = target.label, dict(target.values)
    frozen = MappingProxyType(values)
    return MetricQuery(
        metric.name,
        MetricType.PROPORTION,
        path,
        tuple(variants),
        (
            FieldQuery("successes", successes, preset_path, label, frozen),
            FieldQuery("trials", trials, preset_path, label, frozen),
        ),
    )


def metric_query(
    spec: ModelExperimentSpec, metric: MetricQueries, path: str, variants: Sequence[str], namespace: str,
    window: str,
) -> MetricQuery:
    """The queries of one metric for ``variants``."""
    if metric.preset is not None:
        return _preset_query(spec, metric, path, variants, namespace, window)
    templates = metric.queries()
    fields = tuple(
        combine_template(
            templates[alias],
            field_name=alias,
            path=f"{path}.{alias}",
            variants=variants,
            namespace=namespace,
            window=window,
        )
        for _, alias in QUERY_FIELDS[metric.metric_type]
    )
    return MetricQuery(metric.name, metric.metric_type, path, tuple(variants), fields)


def shadow_query(
    spec: ModelExperimentSpec, challengers: Sequence[str], namespace: str, window: str
) -> ShadowQuery | None:
    """The divergence queries for ``challengers``, or None without ``spec.shadow.divergence``."""
    divergence = spec.shadow.divergence
    if divergence is None or not challengers:
        return None
    path = "spec.shadow.divergence"
    if divergence.preset is DivergencePreset.SDK_SHADOW_DIVERGENCE:
        champion = checked_label(spec.champion.name, "champion name")
        names = [checked_label(c, "variant name") for c in challengers]
        selector = f'{{variant=~"{_regex_alternatives(names)}", baseline="{champion}"}}'
        compared = _increase_by("variant", "modelrollout_shadow_compared_total", selector, window)
        differing = _events_or_zero(
            _increase_by("variant", "modelrollout_shadow_differing_total", selector, window), compared
        )
        identity = MappingProxyType({c: c for c in names})
        preset_path = f"{path}.preset"
        return ShadowQuery(
            path,
            tuple(challengers),
            FieldQuery(DIFFERING, differing, preset_path, "variant", identity),
            FieldQuery(COMPARED, compared, preset_path, "variant", identity),
        )
    if divergence.differing is None or divergence.compared is None:  # unreachable for a valid spec
        return ShadowQuery(
            path, tuple(challengers), None, None,
            SpecError(path, "give either a preset or both queries differing and compared"),
        )
    return ShadowQuery(
        path,
        tuple(challengers),
        combine_template(
            divergence.differing, field_name=DIFFERING, path=f"{path}.{DIFFERING}", variants=challengers,
            namespace=namespace, window=window,
        ),
        combine_template(
            divergence.compared, field_name=COMPARED, path=f"{path}.{COMPARED}", variants=challengers,
            namespace=namespace, window=window,
        ),
    )


def build_query_set(
    spec: ModelExperimentSpec,
    namespace: str,
    window: str | timedelta,
    *,
    variants: Sequence[str] | None = None,
    shadow: bool | None = None,
) -> QuerySet:
    """Every query of one tick.

    Parameters
    ----------
    spec
        The experiment's spec.
    namespace
        The experiment's namespace.
    window
        ``{{window}}``: a timedelta (rendered by :func:`render_window`) or an already rendered
        ``<seconds>s`` (see :func:`window_since`).
    variants
        The live variants (default: all of the spec's). Dropped challengers are left out; the
        champion must be in.
    shadow
        Whether to build the divergence queries (default: when the spec has
        ``shadow.enabled`` and ``shadow.divergence``); they cover the live challengers.

    Raises
    ------
    InvalidInputError
        A name that is not a Kubernetes name (injection), a variant not in the spec, or a bad window.
    """
    namespace = checked_label(namespace, "namespace")
    rendered = render_window(window) if isinstance(window, timedelta) else window
    if not isinstance(rendered, str) or _WINDOW.fullmatch(rendered) is None:
        raise InvalidInputError(f"window must look like 930s or 929200ms (at least 1ms), got {window!r}")
    known = spec.variant_names()
    for name in known:
        checked_label(name, "variant name")
    live = tuple(known if variants is None else variants)
    for name in live:
        checked_label(name, "variant name")
        if name not in known:
            raise InvalidInputError(f"variant {name!r} is not in the spec (variants: {', '.join(known)})")
    if len(set(live)) != len(live):
        raise InvalidInputError(f"variants must be unique, got {list(live)}")
    if spec.champion.name not in live:
        raise InvalidInputError(f"the champion {spec.champion.name!r} must be among the live variants")
    metrics_spec = spec.metrics
    described: list[tuple[MetricQueries, str]] = [(metrics_spec.primary, "spec.metrics.primary")]
    described += [(m, f"spec.metrics.secondary[{i}]") for i, m in enumerate(metrics_spec.secondary)]
    described += [(g, f"spec.metrics.guardrails[{i}]") for i, g in enumerate(metrics_spec.guardrails)]
    metrics = tuple(metric_query(spec, m, path, live, namespace, rendered) for m, path in described)
    with_shadow = (spec.shadow.enabled and spec.shadow.divergence is not None) if shadow is None else shadow
    challengers = [v for v in live if v != spec.champion.name]
    divergence = shadow_query(spec, challengers, namespace, rendered) if with_shadow else None
    return QuerySet(namespace, rendered, live, metrics, divergence)
