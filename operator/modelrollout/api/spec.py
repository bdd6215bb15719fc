"""The ``spec`` of a ModelExperiment: pydantic models, their CEL rules, and their documentation.

The field descriptions become the CRD's ``description`` s, so ``kubectl explain mexp.spec...``
shows them. Every cross-field rule is a :class:`~modelrollout.api._rules.SpecRule`: a CEL expression
in the CRD and the same check in Python, with the same message and field path.

The models are frozen: the policy reads the spec and never changes it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import Field, StrictBool, StrictFloat, StrictInt

from modelrollout.api._rules import Reason, SpecModel, SpecRule, all_set, any_set, cel_list, unique
from modelrollout.api.presets import PRESETS, DivergencePreset, MetricType, Preset, effective_type
from modelrollout.api.types import (
    CounterSelectorTemplate,
    DataKey,
    DNSLabel,
    Duration,
    HeaderName,
    LabelName,
    LabelValue,
    PositiveDuration,
    ResourceName,
    RouteName,
    ServiceName,
    Url,
    cel_duration_ms,
    duration_ms,
)

#: The rollout steps used when ``spec.rollout.steps`` is not given.
DEFAULT_STEPS: Final = (10, 25, 50, 100)
MAX_CHALLENGERS: Final = 5
MAX_STEPS: Final = 20
MAX_SECONDARY_METRICS: Final = 10
MAX_GUARDRAILS: Final = 20
MAX_NOTIFICATIONS: Final = 10
MAX_ROUTES: Final = 16
#: The fewest novelty windows that analysis.minDuration must span when the novelty check is on.
MIN_NOVELTY_WINDOWS: Final = 4


def _same(item: object) -> object:
    return item


def _name(item: Any) -> object:
    return item.name


def _list_map(key: str = "name") -> dict[str, Any]:
    """CRD markers of a list keyed by ``key``: duplicates are rejected, server-side apply merges."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": [key]}


_LIST_SET: Final[dict[str, Any]] = {"x-kubernetes-list-type": "set"}


# --- variants ----------------------------------------------------------------------------------


class Variant(SpecModel):
    """A model version that takes part in the experiment: the champion or a challenger."""

    name: DNSLabel = Field(
        description="Name of the variant, unique in the experiment (a DNS label). It is the value of "
        "{{variant}} in metric queries and the key of the variant in status.weights."
    )
    service: ServiceName | None = Field(
        default=None,
        description="Kubernetes Service, in the experiment's namespace, that serves this variant: the "
        "destination host (istio) or backendRef (gatewayAPI) whose weight the operator sets. Required "
        "unless traffic.provider is service.",
    )
    deployment: ResourceName | None = Field(
        default=None,
        description="Deployment, in the experiment's namespace, that runs this variant. Required when "
        "traffic.provider is service, where the split is made by scaling the Deployments.",
    )


# --- traffic -----------------------------------------------------------------------------------


class Provider(StrEnum):
    """What moves the traffic."""

    ISTIO = "istio"
    GATEWAY_API = "gatewayAPI"
    SERVICE = "service"


class IstioTraffic(SpecModel):
    """The Istio VirtualService whose route weights the operator sets."""

    virtual_service: ResourceName = Field(
        description="Name of the VirtualService in the experiment's namespace."
    )
    routes: Annotated[tuple[RouteName, ...], unique(_same, "routes must be unique")] = Field(
        min_length=1,
        max_length=MAX_ROUTES,
        description="Names of the VirtualService's http routes whose destinations are weighted; each "
        "must have destinations for the champion's and the challengers' Services.",
        json_schema_extra=_LIST_SET,
    )


class GatewayAPITraffic(SpecModel):
    """The Gateway API HTTPRoute whose backendRef weights the operator sets."""

    http_route: ResourceName = Field(description="Name of the HTTPRoute in the experiment's namespace.")
    rule_names: (
        Annotated[
            tuple[DNSLabel, ...],
            Field(min_length=1, max_length=MAX_ROUTES),
            unique(_same, "ruleNames must be unique"),
        ]
        | None
    ) = Field(
        default=None,
        description="Names of the HTTPRoute's rules whose backendRefs are weighted. Give this or "
        "ruleIndexes.",
        json_schema_extra=_LIST_SET,
    )
    rule_indexes: (
        Annotated[
            tuple[Annotated[StrictInt, Field(ge=0, le=63)], ...],
            Field(min_length=1, max_length=MAX_ROUTES),
            unique(_same, "ruleIndexes must be unique"),
        ]
        | None
    ) = Field(
        default=None,
        description="Positions (from 0) of the HTTPRoute's rules whose backendRefs are weighted. Give this "
        "or ruleNames.",
        json_schema_extra=_LIST_SET,
    )

    cel_rules = (
        SpecRule(
            cel="has(self.ruleNames) != has(self.ruleIndexes)",
            message="give exactly one of ruleNames or ruleIndexes",
            check=lambda m: (m.rule_names is None) != (m.rule_indexes is None),
            reason=Reason.REQUIRED,
        ),
    )


class ServiceTraffic(SpecModel):
    """A plain Kubernetes Service in front of both Deployments; the split follows the replica counts."""

    service: ServiceName = Field(description="The Service whose selector matches the pods of every variant.")
    replicas: StrictInt | None = Field(
        default=None,
        ge=1,
        le=10000,
        description="Total replicas shared by the variants. Default: the champion Deployment's replicas "
        "when the experiment starts. Weights are rounded to whole replicas.",
    )


class Stickiness(SpecModel):
    """Keep each user on the same variant as the steps grow, by a bucket header."""

    bucket_header: HeaderName = Field(
        default="x-modelrollout-bucket",
        description="Request header that carries the user's bucket, 0-99, from a consistent hash of "
        "the user id (the SDK's bucket() or the edge). The operator routes buckets below the "
        "challengers' share to the challengers, so a user stays put when the share grows.",
    )


def _provider_block_rules(provider: Provider, attr: str, alias: str) -> tuple[SpecRule, SpecRule]:
    """The block of ``provider`` is required with it and forbidden with the other providers."""

    def present(m: Any) -> bool:
        return m.provider is not provider or getattr(m, attr) is not None

    def absent(m: Any) -> bool:
        return getattr(m, attr) is None or m.provider is provider

    return (
        SpecRule(
            cel=f"self.provider != '{provider.value}' || has(self.{alias})",
            message=f"provider {provider.value} needs the {alias} block",
            check=present,
            field_path=f".{alias}",
            reason=Reason.REQUIRED,
        ),
        SpecRule(
            cel=f"!has(self.{alias}) || self.provider == '{provider.value}'",
            message=f"the {alias} block is only allowed with provider {provider.value}",
            check=absent,
            field_path=f".{alias}",
            reason=Reason.FORBIDDEN,
        ),
    )


class Traffic(SpecModel):
    """How traffic reaches the variants, and what the operator changes to split it."""

    provider: Provider = Field(
        description="istio (VirtualService weights), gatewayAPI (HTTPRoute backendRef weights) or "
        "service (replica counts behind one Service)."
    )
    istio: IstioTraffic | None = Field(default=None, description="Required when provider is istio.")
    gateway_api: GatewayAPITraffic | None = Field(
        default=None, alias="gatewayAPI", description="Required when provider is gatewayAPI."
    )
    service: ServiceTraffic | None = Field(default=None, description="Required when provider is service.")
    stickiness: Stickiness | None = Field(
        default=None,
        description="Sticky assignment by a bucket header (istio and gatewayAPI). Without it, every "
        "request is assigned by weight on its own.",
    )

    cel_rules = (
        *_provider_block_rules(Provider.ISTIO, "istio", "istio"),
        *_provider_block_rules(Provider.GATEWAY_API, "gateway_api", "gatewayAPI"),
        *_provider_block_rules(Provider.SERVICE, "service", "service"),
        SpecRule(
            cel="!has(self.stickiness) || self.provider != 'service'",
            message="stickiness needs provider istio or gatewayAPI (header matches); "
            "provider service splits by replicas",
            check=lambda m: m.stickiness is None or m.provider is not Provider.SERVICE,
            field_path=".stickiness",
            reason=Reason.FORBIDDEN,
        ),
    )


# --- shadow ------------------------------------------------------------------------------------


class DivergenceQueries(SpecModel):
    """How to count the challenger's predictions that differ from the champion's, in shadow."""

    preset: DivergencePreset | None = Field(
        default=None,
        description="A built-in divergence metric (sdk-shadow-divergence: the SDK's shadow comparison "
        "counters). Give this or both queries.",
    )
    differing: CounterSelectorTemplate | None = Field(
        default=None,
        description="Counter selector: mirrored requests whose prediction differed from the champion's.",
    )
    compared: CounterSelectorTemplate | None = Field(
        default=None, description="Counter selector: mirrored requests whose predictions were compared."
    )

    cel_rules = (
        SpecRule(
            cel="has(self.preset) != (has(self.differing) && has(self.compared))",
            message="give either a preset or both queries differing and compared",
            check=lambda m: (m.preset is not None) != (m.differing is not None and m.compared is not None),
            reason=Reason.REQUIRED,
        ),
        SpecRule(
            cel="has(self.differing) == has(self.compared)",
            message="differing and compared go together",
            check=lambda m: (m.differing is None) == (m.compared is None),
            reason=Reason.REQUIRED,
        ),
    )


class Shadow(SpecModel):
    """An optional shadow phase: the challengers get mirrored traffic before real traffic moves."""

    enabled: StrictBool = Field(
        default=False, description="Run the shadow phase first (istio and gatewayAPI only)."
    )
    mirror_percent: StrictInt = Field(
        default=100,
        ge=1,
        le=100,
        description="Share of the champion's requests mirrored to each challenger, in %.",
    )
    duration: PositiveDuration = Field(
        default="30m",
        description="How long the guardrails and the divergence must stay within bounds before real "
        "traffic moves.",
    )
    max_divergence: StrictFloat = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Largest acceptable share of predictions that differ from the champion's.",
    )
    divergence: DivergenceQueries | None = Field(
        default=None,
        description="How to count differing predictions. Without it only the guardrails are checked "
        "in shadow.",
    )


# --- rollout -----------------------------------------------------------------------------------


class Rollout(SpecModel):
    """The traffic steps and how long each one lasts at least."""

    steps: tuple[Annotated[StrictInt, Field(ge=1, le=100)], ...] = Field(
        default=DEFAULT_STEPS,
        min_length=1,
        max_length=MAX_STEPS,
        description="Share of traffic, in %, that the challengers get at each step (shared equally by "
        "the live challengers). Strictly increasing and ending at 100.",
    )
    min_step_duration: Duration = Field(default="15m", description="Shortest time spent at a step.")
    min_samples_per_step: StrictInt = Field(
        default=0,
        ge=0,
        description="Fewest samples (primary metric trials or units) per variant before a step may end, "
        "on top of the step's share of the planned sample size.",
    )
    interval: PositiveDuration = Field(default="30s", description="How often the analysis runs.")

    cel_rules = (
        SpecRule(
            cel="self.steps.isSorted() && self.steps.all(s, self.steps.exists_one(t, t == s))",
            message="steps must be strictly increasing",
            check=lambda m: all(a < b for a, b in zip(m.steps, m.steps[1:], strict=False)),
            field_path=".steps",
        ),
        SpecRule(
            cel="self.steps[self.steps.size() - 1] == 100",
            message="the last step must be 100",
            check=lambda m: len(m.steps) > 0 and m.steps[-1] == 100,
            field_path=".steps",
        ),
    )


# --- metrics -----------------------------------------------------------------------------------

#: The query fields of each metric type, as (python attribute, CRD name).
QUERY_FIELDS: Final[dict[MetricType, tuple[tuple[str, str], ...]]] = {
    MetricType.PROPORTION: (("successes", "successes"), ("trials", "trials")),
    MetricType.MEAN: (("count", "count"), ("sum", "sum"), ("sum_of_squares", "sumOfSquares")),
    MetricType.RATIO: (
        ("units", "units"),
        ("numerator", "numerator"),
        ("denominator", "denominator"),
        ("numerator_squares", "numeratorSquares"),
        ("denominator_squares", "denominatorSquares"),
        ("cross_products", "crossProducts"),
    ),
    MetricType.QUANTILE: (("buckets", "buckets"),),
}
_ALL_QUERY_ALIASES: Final = tuple(alias for fields in QUERY_FIELDS.values() for _, alias in fields)
_ALL_QUERY_ATTRS: Final = tuple(attr for fields in QUERY_FIELDS.values() for attr, _ in fields)
_LATENCY_PRESETS: Final = tuple(p for p, info in PRESETS.items() if info.needs_threshold_ms)
_HIGHER_IS_BETTER_PRESETS: Final = tuple(p for p, info in PRESETS.items() if not info.higher_is_worse)


def _set(model: Any, attrs: tuple[str, ...]) -> list[bool]:
    return [getattr(model, a) is not None for a in attrs]


def _type_query_rules(
    metric_type: MetricType, attrs: tuple[str, ...], aliases: tuple[str, ...]
) -> list[SpecRule]:
    """A metric of ``metric_type`` needs all of its queries, and no other type may use them."""
    names = ", ".join(aliases)

    def complete(m: Any) -> bool:
        return m.preset is not None or m.type is not metric_type or all(_set(m, attrs))

    def own(m: Any) -> bool:
        return m.type is metric_type or not any(_set(m, attrs))

    return [
        SpecRule(
            cel=f"has(self.preset) || !has(self.type) || self.type != '{metric_type.value}' || "
            f"({all_set(aliases)})",
            message=f"type {metric_type.value} needs the queries {names} (or a preset)",
            check=complete,
            reason=Reason.REQUIRED,
        ),
        SpecRule(
            cel=f"(has(self.type) && self.type == '{metric_type.value}') || !({any_set(aliases)})",
            message=f"the queries {names} are only for type {metric_type.value}",
            check=own,
            reason=Reason.FORBIDDEN,
        ),
    ]


def _query_rules() -> tuple[SpecRule, ...]:
    rules = [
        SpecRule(
            cel="has(self.preset) || has(self.type)",
            message="type is required unless a preset is given",
            check=lambda m: m.preset is not None or m.type is not None,
            field_path=".type",
            reason=Reason.REQUIRED,
        ),
        SpecRule(
            cel="!has(self.preset) || !has(self.type) || "
            + " || ".join(
                f"(self.preset in {cel_list(p.value for p in Preset if PRESETS[p].type is t)} "
                f"&& self.type == '{t.value}')"
                for t in MetricType
                if any(PRESETS[p].type is t for p in Preset)
            ),
            message="type does not match the preset's type (see the preset field)",
            check=lambda m: m.preset is None or m.type is None or PRESETS[m.preset].type is m.type,
            field_path=".type",
        ),
        SpecRule(
            cel=f"!has(self.preset) || !({any_set(_ALL_QUERY_ALIASES)})",
            message="give either a preset or queries, not both",
            check=lambda m: m.preset is None or not any(_set(m, _ALL_QUERY_ATTRS)),
            field_path=".preset",
            reason=Reason.FORBIDDEN,
        ),
    ]
    for metric_type, fields in QUERY_FIELDS.items():
        rules += _type_query_rules(
            metric_type, tuple(a for a, _ in fields), tuple(alias for _, alias in fields)
        )
    latency = cel_list(_LATENCY_PRESETS)
    rules += [
        SpecRule(
            cel=f"!has(self.preset) || !(self.preset in {latency}) || has(self.thresholdMs)",
            message="a latency preset needs thresholdMs",
            check=lambda m: m.preset not in _LATENCY_PRESETS or m.threshold_ms is not None,
            field_path=".thresholdMs",
            reason=Reason.REQUIRED,
        ),
        SpecRule(
            cel=f"!has(self.thresholdMs) || (has(self.preset) && self.preset in {latency})",
            message="thresholdMs is only used by the latency presets",
            check=lambda m: m.threshold_ms is None or m.preset in _LATENCY_PRESETS,
            field_path=".thresholdMs",
            reason=Reason.FORBIDDEN,
        ),
    ]
    return tuple(rules)


_TEMPLATE_NOTE = (
    " A selector of counter series, with {{variant}} (and optionally {{namespace}}): the operator "
    "counts their raw samples exactly."
)


class MetricQueries(SpecModel):
    """A metric's name and where its numbers come from: a preset, or counter selectors of its type.

    Each field is a selector of counter series (``clicks_total{model="{{variant}}"}``); the operator
    reads their raw samples and counts each series' increments exactly, counter resets included
    (:mod:`modelrollout.metrics.counting`). A counter must only grow, except when it resets.
    """

    name: DNSLabel = Field(
        description="Name of the metric, unique among the primary, secondary and guardrail metrics."
    )
    type: MetricType | None = Field(
        default=None,
        description="proportion (successes, trials), mean (count, sum, sumOfSquares) or ratio (units, "
        "numerator, denominator, numeratorSquares, denominatorSquares, crossProducts; compared by the "
        "delta method). Implied by a preset.",
    )
    preset: Preset | None = Field(
        default=None,
        description="A built-in metric instead of queries: "
        + "; ".join(f"{p.value}: {PRESETS[p].description}" for p in Preset)
        + ". istio-latency-quantile is a quantile (guardrails only); the others are proportions.",
    )
    threshold_ms: StrictFloat | None = Field(
        default=None, gt=0, le=3_600_000, description="Latency bound in milliseconds of the latency presets."
    )
    successes: CounterSelectorTemplate | None = Field(
        default=None, description="proportion: number of events (e.g. clicks, errors)." + _TEMPLATE_NOTE
    )
    trials: CounterSelectorTemplate | None = Field(
        default=None,
        description="proportion: number of trials (e.g. impressions, requests)." + _TEMPLATE_NOTE,
    )
    count: CounterSelectorTemplate | None = Field(
        default=None, description="mean: number of observations." + _TEMPLATE_NOTE
    )
    sum: CounterSelectorTemplate | None = Field(
        default=None, description="mean: sum of the observed values." + _TEMPLATE_NOTE
    )
    sum_of_squares: CounterSelectorTemplate | None = Field(
        default=None, description="mean: sum of the squared observed values." + _TEMPLATE_NOTE
    )
    units: CounterSelectorTemplate | None = Field(
        default=None, description="ratio: number of randomization units (users)." + _TEMPLATE_NOTE
    )
    numerator: CounterSelectorTemplate | None = Field(
        default=None, description="ratio: sum over units of the numerator Y." + _TEMPLATE_NOTE
    )
    denominator: CounterSelectorTemplate | None = Field(
        default=None, description="ratio: sum over units of the denominator X." + _TEMPLATE_NOTE
    )
    numerator_squares: CounterSelectorTemplate | None = Field(
        default=None, description="ratio: sum over units of Y squared." + _TEMPLATE_NOTE
    )
    denominator_squares: CounterSelectorTemplate | None = Field(
        default=None, description="ratio: sum over units of X squared." + _TEMPLATE_NOTE
    )
    cross_products: CounterSelectorTemplate | None = Field(
        default=None, description="ratio: sum over units of Y times X." + _TEMPLATE_NOTE
    )
    buckets: CounterSelectorTemplate | None = Field(
        default=None,
        description="quantile: the cumulative bucket series of a Prometheus histogram (its _bucket "
        "series, told apart by le), e.g. request_duration_ms_bucket{model=\"{{variant}}\"}." + _TEMPLATE_NOTE,
    )

    cel_rules = _query_rules()

    @property
    def metric_type(self) -> MetricType:
        """The metric's type, given or implied by its preset."""
        found = effective_type(self.type, self.preset)
        if found is None:  # unreachable for a validated model
            raise ValueError(f"metric {self.name} has neither type nor preset")
        return found

    def queries(self) -> dict[str, str]:
        """The explicit query templates by CRD field name (empty for a preset)."""
        return {
            alias: getattr(self, attr)
            for attr, alias in QUERY_FIELDS[self.metric_type]
            if getattr(self, attr) is not None
        }


class Direction(StrEnum):
    """Which way is better for a metric."""

    INCREASE = "increase"
    DECREASE = "decrease"


class MdeType(StrEnum):
    """How an effect size is expressed: relative to the champion's value, or in the metric's units."""

    RELATIVE = "relative"
    ABSOLUTE = "absolute"


_ABSOLUTE_PROPORTION_RULE = SpecRule(
    cel="!has(self.minimumDetectableEffect) || self.mdeType != 'absolute' || "
    "(has(self.type) && self.type != 'proportion') || self.minimumDetectableEffect < 1",
    message="an absolute minimumDetectableEffect of a proportion must be below 1",
    check=lambda m: (
        m.minimum_detectable_effect is None
        or m.mde_type is not MdeType.ABSOLUTE
        or (m.type is not None and m.type is not MetricType.PROPORTION)
        or m.minimum_detectable_effect < 1
    ),
    field_path=".minimumDetectableEffect",
)


_QUANTILE_PRESETS: Final = tuple(p for p, info in PRESETS.items() if info.type is MetricType.QUANTILE)
_NOT_QUANTILE_RULE = SpecRule(
    cel="(!has(self.type) || self.type != 'quantile') && "
    f"(!has(self.preset) || !(self.preset in {cel_list(_QUANTILE_PRESETS)}))",
    message="quantile metrics are for guardrails only",
    check=lambda m: m.metric_type is not MetricType.QUANTILE if (m.type or m.preset) else True,
    field_path=".type",
)


class Metric(MetricQueries):
    """The primary metric: the outcome the experiment is about."""

    direction: Direction = Field(default=Direction.INCREASE, description="Which way is better.")
    minimum_detectable_effect: StrictFloat = Field(
        gt=0,
        description="Smallest effect worth detecting (relative by default: 0.05 is 5 % of the champion's "
        "value). With alpha and power it sets the planned sample size.",
    )
    mde_type: MdeType = Field(
        default=MdeType.RELATIVE,
        description="relative (to the champion's value) or absolute (in the metric's units); also the "
        "scale of analysis.nonInferiorityMargin and analysis.practicalThreshold.",
    )

    cel_rules = (_ABSOLUTE_PROPORTION_RULE, _NOT_QUANTILE_RULE)


class SecondaryMetric(MetricQueries):
    """A secondary metric: reported for every challenger, and decisive if asked."""

    direction: Direction = Field(default=Direction.INCREASE, description="Which way is better.")
    minimum_detectable_effect: StrictFloat | None = Field(
        default=None, gt=0, description="Smallest effect worth detecting; required when decisive."
    )
    mde_type: MdeType = Field(
        default=MdeType.RELATIVE, description="relative or absolute, as for the primary metric."
    )
    decisive: StrictBool = Field(
        default=False,
        description="A decisive metric must not be significantly worse for a challenger to be promoted "
        "(Holm-Bonferroni corrected with the primary metric).",
    )

    cel_rules = (
        _ABSOLUTE_PROPORTION_RULE,
        _NOT_QUANTILE_RULE,
        SpecRule(
            cel="!self.decisive || has(self.minimumDetectableEffect)",
            message="a decisive metric needs minimumDetectableEffect",
            check=lambda m: not m.decisive or m.minimum_detectable_effect is not None,
            field_path=".minimumDetectableEffect",
            reason=Reason.REQUIRED,
        ),
    )


class Guardrail(MetricQueries):
    """A metric that must not get worse; checked at every tick, a breach rolls back at once.

    The margin is one of: ``maxRelativeIncrease`` or ``maxAbsoluteIncrease`` (tested against the
    champion with an always-valid one-sided test), or a plain ``threshold`` on the challenger's value
    with a ``failureLimit`` of consecutive ticks.
    """

    max_relative_increase: StrictFloat | None = Field(
        default=None,
        ge=0,
        description="Breach when the challenger is worse than the champion by more than this share of "
        "the champion's value (0.1: 10 % worse), with confidence 1 - analysis.alpha.",
    )
    max_absolute_increase: StrictFloat | None = Field(
        default=None,
        ge=0,
        description="Breach when the challenger is worse than the champion by more than this, in the "
        "metric's units, with confidence 1 - analysis.alpha.",
    )
    threshold: StrictFloat | None = Field(
        default=None,
        description="Breach when the challenger's value is worse than this for failureLimit consecutive "
        "ticks (no comparison with the champion).",
    )
    failure_limit: StrictInt | None = Field(
        default=None, ge=1, le=1000, description="Consecutive ticks over threshold that make a breach."
    )
    higher_is_worse: StrictBool = Field(
        default=True,
        description="Whether higher values are worse (error rates, latency). Set false for metrics "
        "such as success rates; the margins then apply downwards.",
    )
    quantile: StrictFloat | None = Field(
        default=None,
        ge=0.5,
        le=0.999,
        description="quantile guardrails: which quantile is compared (0.95 for p95, 0.99 for p99). The "
        "challenger breaches when its quantile is above the champion's by more than the margin "
        "(maxRelativeIncrease, or maxAbsoluteIncrease in the histogram's unit), decided on the bucket "
        "counts with bounds that hold under continuous looks.",
    )

    cel_rules = (
        SpecRule(
            cel="(has(self.maxRelativeIncrease) ? 1 : 0) + (has(self.maxAbsoluteIncrease) ? 1 : 0) + "
            "(has(self.threshold) ? 1 : 0) == 1",
            message="give exactly one of maxRelativeIncrease, maxAbsoluteIncrease or threshold",
            check=lambda m: (
                sum(x is not None for x in (m.max_relative_increase, m.max_absolute_increase, m.threshold))
                == 1
            ),
            reason=Reason.REQUIRED,
        ),
        SpecRule(
            cel="!has(self.threshold) || has(self.failureLimit)",
            message="threshold needs failureLimit",
            check=lambda m: m.threshold is None or m.failure_limit is not None,
            field_path=".failureLimit",
            reason=Reason.REQUIRED,
        ),
        SpecRule(
            cel="!has(self.failureLimit) || has(self.threshold)",
            message="failureLimit is only used with threshold",
            check=lambda m: m.failure_limit is None or m.threshold is not None,
            field_path=".failureLimit",
            reason=Reason.FORBIDDEN,
        ),
        SpecRule(
            cel="has(self.quantile) == ((has(self.type) && self.type == 'quantile') || "
            f"(has(self.preset) && self.preset in {cel_list(_QUANTILE_PRESETS)}))",
            message="quantile is required for a quantile guardrail, and only used there",
            check=lambda m: (m.quantile is not None)
            == ((m.type or m.preset) is not None and m.metric_type is MetricType.QUANTILE),
            field_path=".quantile",
        ),
        SpecRule(
            cel="!has(self.quantile) || (!has(self.threshold) && self.higherIsWorse)",
            message="a quantile guardrail takes maxRelativeIncrease or maxAbsoluteIncrease (higher is "
            "worse), not threshold",
            check=lambda m: m.quantile is None or (m.threshold is None and m.higher_is_worse),
            field_path=".quantile",
        ),
        SpecRule(
            cel=f"!has(self.preset) || !(self.preset in {cel_list(_HIGHER_IS_BETTER_PRESETS)}) || "
            "!self.higherIsWorse",
            message="this preset is higher-is-better: set higherIsWorse to false",
            check=lambda m: m.preset not in _HIGHER_IS_BETTER_PRESETS or not m.higher_is_worse,
            field_path=".higherIsWorse",
        ),
    )


class KeySelector(SpecModel):
    """A key of a Secret or a ConfigMap in the experiment's namespace."""

    name: ResourceName = Field(description="Name of the Secret or ConfigMap.")
    key: DataKey = Field(description="Key in its data.")


class Prometheus(SpecModel):
    """Where the metrics are read, and how to authenticate."""

    address: Url = Field(
        description="Base URL of the Prometheus HTTP API, e.g. http://prometheus.monitoring:9090."
    )
    bearer_token_secret_ref: KeySelector | None = Field(
        default=None, description="Secret key holding a bearer token sent with every query."
    )
    ca_secret_ref: KeySelector | None = Field(
        default=None, description="Secret key holding the PEM CA bundle that signs Prometheus's certificate."
    )
    ca_config_map_ref: KeySelector | None = Field(
        default=None, description="ConfigMap key holding the PEM CA bundle (instead of caSecretRef)."
    )
    timeout: PositiveDuration = Field(default="10s", description="Timeout of one query.")

    cel_rules = (
        SpecRule(
            cel="!has(self.caSecretRef) || !has(self.caConfigMapRef)",
            message="give at most one of caSecretRef and caConfigMapRef",
            check=lambda m: m.ca_secret_ref is None or m.ca_config_map_ref is None,
            field_path=".caConfigMapRef",
            reason=Reason.FORBIDDEN,
        ),
        SpecRule(
            cel="!(has(self.caSecretRef) || has(self.caConfigMapRef)) || self.address.startsWith('https://')",
            message="a CA is only used with an https:// address",
            check=lambda m: (
                (m.ca_secret_ref is None and m.ca_config_map_ref is None) or m.address.startswith("https://")
            ),
            field_path=".address",
        ),
    )


MAX_PROTECTED_SEGMENTS: Final = 20
MAX_EXPLORATORY_SEGMENTS: Final = 20


class OnSegmentHarm(StrEnum):
    """What a protected segment found harmed does to the challenger."""

    ROLLBACK = "rollback"
    HOLD = "hold"


class SegmentCorrection(StrEnum):
    """How the harm tests of the protected segments are corrected for their number."""

    BONFERRONI = "bonferroni"
    E_BH = "e-bh"


class ProtectedSegment(SpecModel):
    """A value of the segment label whose users must not be served worse."""

    value: LabelValue = Field(description="The value of the segment label (for example mobile, or DE).")
    margin: StrictFloat = Field(
        default=0.0,
        ge=0,
        description="How much worse the challenger may be in this segment before it counts as harm: a "
        "share of the champion's value there (marginType relative, the default; 0.05 is 5 % worse), "
        "or in the metric's units (absolute). 0: any harm.",
    )
    margin_type: MdeType = Field(default=MdeType.RELATIVE, description="relative or absolute.")


class Segments(SpecModel):
    """Who is harmed: always-valid harm tests per protected segment, and an exploratory view.

    The segment is a label of the metric series (``segment``, ``country``, ``client_version``); the
    operator splits the series it already reads by that label, so the queries need no change, but
    every series of the primary metric and of the margin guardrails must carry it. The label
    must be fixed before treatment: a value the model itself can change (a churn flag) would
    compare unlike users.
    """

    label: LabelName = Field(description="The Prometheus label that holds the segment.")
    protected: Annotated[
        tuple[ProtectedSegment, ...], unique(lambda p: p.value, "protected segment values must be unique")
    ] = Field(
        default=(),
        max_length=MAX_PROTECTED_SEGMENTS,
        description="Values that must not be harmed: each is tested on the primary metric and on every "
        "margin guardrail (not quantiles) with an always-valid one-sided test, corrected for their number.",
        json_schema_extra=_list_map("value"),
    )
    exploratory_values: StrictInt = Field(
        default=MAX_EXPLORATORY_SEGMENTS,
        ge=0,
        le=MAX_EXPLORATORY_SEGMENTS,
        description="How many other values of the label the status shows on the primary metric (by "
        "traffic; the rest are summed as other). Exploratory: shown with intervals, never decided on.",
    )
    on_segment_harm: OnSegmentHarm = Field(
        default=OnSegmentHarm.ROLLBACK,
        description="rollback (drop the challenger, as a guardrail breach does) or hold (stop the "
        "rollout where it is, with the segment named, until a person decides).",
    )
    correction: SegmentCorrection = Field(
        default=SegmentCorrection.BONFERRONI,
        description="bonferroni: the chance that any protected segment is ever named harmed by noise "
        "is at most analysis.alpha (per metric). e-bh: the expected share of wrongly named segments "
        "is at most alpha (for long lists).",
    )


class Metrics(SpecModel):
    """What is measured: the primary metric, secondary metrics and guardrails, from Prometheus."""

    prometheus: Prometheus = Field(description="The Prometheus server to query.")
    primary: Metric = Field(description="The outcome the experiment decides on.")
    secondary: Annotated[
        tuple[SecondaryMetric, ...], unique(_name, "secondary metric names must be unique")
    ] = Field(
        default=(),
        max_length=MAX_SECONDARY_METRICS,
        description="Further outcome metrics, reported per challenger; decisive ones also gate promotion.",
        json_schema_extra=_list_map(),
    )
    guardrails: Annotated[tuple[Guardrail, ...], unique(_name, "guardrail names must be unique")] = Field(
        default=(),
        max_length=MAX_GUARDRAILS,
        description="Metrics that must not get worse; a breach rolls back at once.",
        json_schema_extra=_list_map(),
    )
    segments: Segments | None = Field(
        default=None,
        description="Test protected segments of the users for harm, and show the rest (see Segments).",
    )

    cel_rules = (
        SpecRule(
            cel="!has(self.secondary) || self.secondary.all(m, m.name != self.primary.name)",
            message="secondary metric names must differ from the primary metric's name",
            check=lambda m: all(s.name != m.primary.name for s in m.secondary),
            field_path=".secondary",
        ),
        SpecRule(
            cel="!has(self.guardrails) || self.guardrails.all(g, g.name != self.primary.name && "
            "(!has(self.secondary) || self.secondary.all(s, s.name != g.name)))",
            message="guardrail names must differ from the primary and secondary metric names",
            check=lambda m: all(
                g.name != m.primary.name and all(s.name != g.name for s in m.secondary) for g in m.guardrails
            ),
            field_path=".guardrails",
        ),
    )

    def segmented(self) -> tuple[str, ...]:
        """The metrics tested per segment (with ``segments``): the primary metric and the margin
        guardrails (proportions, means and ratios; not quantiles, whose buckets are split by le)."""
        if self.segments is None:
            return ()
        candidates = [self.primary, *(g for g in self.guardrails if g.threshold is None)]
        return tuple(m.name for m in candidates if m.metric_type is not MetricType.QUANTILE)

    def names(self) -> tuple[str, ...]:
        """Every metric name: primary, secondary, then guardrails."""
        return (self.primary.name, *(s.name for s in self.secondary), *(g.name for g in self.guardrails))


# --- analysis ----------------------------------------------------------------------------------


class Method(StrEnum):
    """How the primary metric is tested."""

    SEQUENTIAL = "sequential"
    FIXED = "fixed"
    BAYESIAN = "bayesian"


class Goal(StrEnum):
    """What a challenger must show to be promoted."""

    SUPERIORITY = "superiority"
    NON_INFERIORITY = "nonInferiority"


class OnInconclusive(StrEnum):
    """What happens at maxDuration without a verdict."""

    KEEP_CHAMPION = "keepChampion"
    PROMOTE_IF_NON_INFERIOR = "promoteIfNonInferior"
    PAUSE = "pause"


class OnDataOutage(StrEnum):
    """What happens when the metrics stay unavailable too long."""

    ROLLBACK = "rollback"
    PAUSE = "pause"


class Novelty(SpecModel):
    """The novelty check: hold a promotion while the challenger's lift decays over time."""

    enabled: StrictBool = Field(
        default=False,
        description="Test, after every window, whether the lift of the recent window is below that of "
        "the earlier windows (always valid under continuous looks). A challenger whose lift decays is "
        "not promoted (reason NoveltyEffect). Needs minDuration of at least 4 windows.",
    )
    alpha: StrictFloat = Field(
        default=0.05,
        gt=0,
        lt=0.5,
        description="Level of the decay test: the chance that a lift that does not decay is ever "
        "reported as decaying.",
    )
    window: PositiveDuration = Field(
        default="1d",
        description="Length of a time window: the lift is estimated per window (stratified by step). "
        "Use a whole cycle of the traffic (1d), so that a daily pattern is not taken for a trend. A "
        "window runs on until each variant has 100 samples in it.",
    )


_MIN_DURATION_MS = cel_duration_ms("self.minDuration")


def _min_duration_within_max(m: Any) -> bool:
    return m.min_duration is None or duration_ms(m.min_duration) <= duration_ms(m.max_duration)


def _novelty_has_windows(m: Any) -> bool:
    if not m.novelty.enabled:
        return True
    window = duration_ms(m.novelty.window)
    return m.min_duration is not None and duration_ms(m.min_duration) >= MIN_NOVELTY_WINDOWS * window


class Analysis(SpecModel):
    """How the comparison is made and when it stops."""

    alpha: StrictFloat = Field(
        default=0.05,
        gt=0,
        lt=0.5,
        description="False-positive rate of each comparison (two-sided tests use alpha).",
    )
    power: StrictFloat = Field(
        default=0.8,
        gt=0,
        lt=1,
        description="Probability to detect an effect of minimumDetectableEffect; sets the plan.",
    )
    method: Method = Field(
        default=Method.SEQUENTIAL,
        description="sequential (always-valid confidence sequences, looked at every tick), fixed (one "
        "test at the planned sample size) or bayesian (posterior probability and expected loss).",
    )
    goal: Goal = Field(
        default=Goal.SUPERIORITY,
        description="superiority (the challenger must be better) or nonInferiority (not worse than the "
        "champion by more than nonInferiorityMargin).",
    )
    non_inferiority_margin: StrictFloat | None = Field(
        default=None,
        gt=0,
        description="Largest acceptable loss, on the primary metric's mdeType scale. Required with goal "
        "nonInferiority or onInconclusive promoteIfNonInferior.",
    )
    practical_threshold: StrictFloat | None = Field(
        default=None,
        ge=0,
        description="Smallest lift worth shipping, on the primary metric's mdeType scale: promotion needs "
        "the whole confidence interval above it. Default 0.",
    )
    max_duration: PositiveDuration = Field(default="14d", description="Longest the experiment may run.")
    min_duration: Duration | None = Field(
        default=None,
        description="Shortest time from the start of live traffic (the first step) before a promotion, "
        "for example 7d for a full weekly cycle. It never delays a rollback or a guardrail. At most "
        "maxDuration. Default: none.",
    )
    novelty: Novelty = Field(
        default=Novelty(),
        description="The novelty check (off by default): a lift that decays over time holds the promotion.",
    )
    on_inconclusive: OnInconclusive = Field(
        default=OnInconclusive.KEEP_CHAMPION,
        description="At maxDuration without a verdict: keepChampion (roll back), promoteIfNonInferior "
        "(promote a challenger shown non-inferior within nonInferiorityMargin, else roll back) or pause.",
    )
    max_consecutive_errors: StrictInt = Field(
        default=10,
        ge=1,
        le=100000,
        description="Ticks in a row with unusable metrics (failed query, empty result, NaN) before "
        "onDataOutage applies.",
    )
    max_data_outage: PositiveDuration = Field(
        default="10m", description="Longest time without usable metrics before onDataOutage applies."
    )
    on_data_outage: OnDataOutage = Field(
        default=OnDataOutage.ROLLBACK,
        description="When metrics stay unavailable: rollback (traffic back to the champion) or pause. "
        "Missing data never promotes.",
    )
    srm_threshold: StrictFloat = Field(
        default=0.001,
        gt=0,
        lt=0.5,
        description="Sample ratio mismatch alarm: always-valid p-value of the observed split against the "
        "weights below which the analysis holds.",
    )
    probability_threshold: StrictFloat = Field(
        default=0.95,
        gt=0.5,
        lt=1,
        description="bayesian: posterior probability that the challenger is better needed to promote it "
        "(and that it is worse, to roll it back).",
    )

    cel_rules = (
        SpecRule(
            cel="self.power > self.alpha",
            message="power must be greater than alpha",
            check=lambda m: m.power > m.alpha,
            field_path=".power",
        ),
        SpecRule(
            cel="self.goal != 'nonInferiority' || has(self.nonInferiorityMargin)",
            message="goal nonInferiority needs nonInferiorityMargin",
            check=lambda m: m.goal is not Goal.NON_INFERIORITY or m.non_inferiority_margin is not None,
            field_path=".nonInferiorityMargin",
            reason=Reason.REQUIRED,
        ),
        SpecRule(
            cel="self.onInconclusive != 'promoteIfNonInferior' || has(self.nonInferiorityMargin)",
            message="onInconclusive promoteIfNonInferior needs nonInferiorityMargin",
            check=lambda m: (
                m.on_inconclusive is not OnInconclusive.PROMOTE_IF_NON_INFERIOR
                or m.non_inferiority_margin is not None
            ),
            field_path=".nonInferiorityMargin",
            reason=Reason.REQUIRED,
        ),
        SpecRule(
            cel=f"!has(self.minDuration) || !has(self.maxDuration) || "
            f"{_MIN_DURATION_MS} <= {cel_duration_ms('self.maxDuration')}",
            message="minDuration must not be longer than maxDuration",
            check=_min_duration_within_max,
            field_path=".minDuration",
        ),
        SpecRule(
            cel=f"!has(self.novelty) || !self.novelty.enabled || (has(self.minDuration) && "
            f"{_MIN_DURATION_MS} >= {MIN_NOVELTY_WINDOWS} * {cel_duration_ms('self.novelty.window')})",
            message=f"novelty.enabled needs minDuration of at least {MIN_NOVELTY_WINDOWS} novelty "
            "windows (novelty.window): the check compares the lift of recent windows with earlier ones",
            check=_novelty_has_windows,
            field_path=".minDuration",
        ),
        SpecRule(
            cel="!has(self.nonInferiorityMargin) || self.goal == 'nonInferiority' || "
            "self.onInconclusive == 'promoteIfNonInferior'",
            message="nonInferiorityMargin is only used with goal nonInferiority or onInconclusive "
            "promoteIfNonInferior",
            check=lambda m: (
                m.non_inferiority_margin is None
                or m.goal is Goal.NON_INFERIORITY
                or m.on_inconclusive is OnInconclusive.PROMOTE_IF_NON_INFERIOR
            ),
            field_path=".nonInferiorityMargin",
            reason=Reason.FORBIDDEN,
        ),
    )


# --- controls ----------------------------------------------------------------------------------


class NotificationType(StrEnum):
    """The kind of a notification sink."""

    WEBHOOK = "webhook"
    SLACK = "slack"


class Notification(SpecModel):
    """A sink told about phase changes (promotion, rollback, pause, failure)."""

    name: DNSLabel = Field(description="Name of the sink, unique in the experiment.")
    type: NotificationType = Field(
        description="webhook (a JSON POST of the transition) or slack (an incoming-webhook message)."
    )
    url: Url | None = Field(default=None, description="URL to post to. Give this or urlSecretRef.")
    url_secret_ref: KeySelector | None = Field(
        default=None, description="Secret key holding the URL (for URLs that embed a token)."
    )

    cel_rules = (
        SpecRule(
            cel="has(self.url) != has(self.urlSecretRef)",
            message="give exactly one of url or urlSecretRef",
            check=lambda m: (m.url is None) != (m.url_secret_ref is None),
            reason=Reason.REQUIRED,
        ),
    )


# --- the spec ----------------------------------------------------------------------------------


def _services_distinct(m: ModelExperimentSpec) -> bool:
    services = [v.service for v in m.variants() if v.service is not None]
    return len(services) == len(set(services))


class ModelExperimentSpec(SpecModel):
    """A champion, one or more challengers, and how to move traffic between them and decide."""

    champion: Variant = Field(description="The model serving today.")
    challengers: Annotated[tuple[Variant, ...], unique(_name, "challenger names must be unique")] = Field(
        min_length=1,
        max_length=MAX_CHALLENGERS,
        description="The candidate models (one for A/B, several for A/B/n).",
        json_schema_extra=_list_map(),
    )
    traffic: Traffic = Field(description="How traffic is split between the variants.")
    shadow: Shadow = Field(default=Shadow(), description="Optional shadow phase before real traffic moves.")
    rollout: Rollout = Field(default=Rollout(), description="The traffic steps.")
    metrics: Metrics = Field(description="What is measured, and where.")
    analysis: Analysis = Field(
        default=Analysis(), description="How the comparison is made and when it stops."
    )
    paused: StrictBool = Field(
        default=False,
        description="Hold everything: no analysis-driven change of weights or phase while true.",
    )
    notifications: Annotated[tuple[Notification, ...], unique(_name, "notification names must be unique")] = (
        Field(
            default=(),
            max_length=MAX_NOTIFICATIONS,
            description="Where phase changes are announced.",
            json_schema_extra=_list_map(),
        )
    )

    cel_rules = (
        SpecRule(
            cel="self.challengers.all(c, c.name != self.champion.name)",
            message="challenger names must differ from the champion's name",
            check=lambda m: all(c.name != m.champion.name for c in m.challengers),
            field_path=".challengers",
        ),
        SpecRule(
            cel="(!has(self.champion.service) || self.challengers.all(c, !has(c.service) || "
            "c.service != self.champion.service)) && self.challengers.all(c, !has(c.service) || "
            "self.challengers.exists_one(d, has(d.service) && d.service == c.service))",
            message="every variant needs its own Service",
            check=_services_distinct,
            field_path=".challengers",
        ),
        SpecRule(
            cel="self.traffic.provider == 'service' || has(self.champion.service)",
            message="the champion needs a service unless traffic.provider is service",
            check=lambda m: m.traffic.provider is Provider.SERVICE or m.champion.service is not None,
            field_path=".champion.service",
            reason=Reason.REQUIRED,
        ),
        SpecRule(
            cel="self.traffic.provider == 'service' || self.challengers.all(c, has(c.service))",
            message="every challenger needs a service unless traffic.provider is service",
            check=lambda m: (
                m.traffic.provider is Provider.SERVICE or all(c.service is not None for c in m.challengers)
            ),
            field_path=".challengers",
            reason=Reason.REQUIRED,
        ),
        SpecRule(
            cel="self.traffic.provider != 'service' || has(self.champion.deployment)",
            message="traffic.provider service needs the champion's deployment",
            check=lambda m: m.traffic.provider is not Provider.SERVICE or m.champion.deployment is not None,
            field_path=".champion.deployment",
            reason=Reason.REQUIRED,
        ),
        SpecRule(
            cel="self.traffic.provider != 'service' || self.challengers.all(c, has(c.deployment))",
            message="traffic.provider service needs every challenger's deployment",
            check=lambda m: (
                m.traffic.provider is not Provider.SERVICE
                or all(c.deployment is not None for c in m.challengers)
            ),
            field_path=".challengers",
            reason=Reason.REQUIRED,
        ),
        SpecRule(
            cel="!self.shadow.enabled || self.traffic.provider != 'service'",
            message="shadow needs traffic.provider istio or gatewayAPI (the mesh mirrors the requests)",
            check=lambda m: not m.shadow.enabled or m.traffic.provider is not Provider.SERVICE,
            field_path=".shadow.enabled",
            reason=Reason.FORBIDDEN,
        ),
    )

    def variants(self) -> tuple[Variant, ...]:
        """The champion, then the challengers."""
        return (self.champion, *self.challengers)

    def variant_names(self) -> tuple[str, ...]:
        """The names of :meth:`variants`."""
        return tuple(v.name for v in self.variants())
