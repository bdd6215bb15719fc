"""Route tables read from an Istio VirtualService or a Gateway API HTTPRoute (pure; no I/O).

:func:`parse_virtual_service` and :func:`parse_http_route` turn the object (a dict, as the
apiserver returns it) into a :class:`RouteTable`; :meth:`RouteTable.select` picks, for one
request, the rule, the weighted backend and the mirrors, the way Envoy does with the
configuration Istio or a Gateway API implementation would generate:

* **Istio** ``spec.http[]`` in order, first match wins. A route's ``match[]`` entries are ORed and
  the conditions inside one entry ANDed: ``uri``, ``method`` (``exact``/``prefix``/``regex``),
  ``headers`` and ``withoutHeaders`` (``exact``/``prefix``/``regex``, or ``{}`` for presence),
  ``queryParams`` (``exact``/``prefix``/``regex``), ``ignoreUriCase``. ``route[]`` destinations
  (``host``, ``subset``, ``port``) with ``weight`` (a single destination without one takes
  100 %); ``mirror`` with ``mirrorPercentage.value`` (or the older ``mirrorPercent``; 100 % when
  absent) and the newer ``mirrors[]`` with ``percentage.value``. Hosts are Service names: short
  (``ranker-v7``), namespaced (``ranker-v7.shop``) or fully qualified
  (``ranker-v7.shop.svc.cluster.local``).
* **Gateway API** ``spec.rules[]``, ordered by the specification's precedence (exact path, then
  the longest prefix, method, most header matches, most query matches, then list order).
  ``matches[]``: ``path`` (``Exact``/``PathPrefix``/``RegularExpression``; the default is
  ``PathPrefix /``), ``headers`` and ``queryParams`` (``Exact``/``RegularExpression``),
  ``method``. ``backendRefs[]`` (``name``, ``namespace``, ``port``, ``weight``, default 1) and
  ``RequestMirror`` filters (``requestMirror.backendRef`` with ``percent`` or ``fraction``; 100 %
  when neither) on the rule or on a backendRef.

Regular expressions must match the whole value (RE2 full match, as in Envoy). Conditions this
stand-in does not evaluate (``sourceLabels``, ``gateways``, ``authority``, ``port``, ...) are
ignored and listed in :attr:`RouteTable.warnings`; other actions (redirects, rewrites, retries,
timeouts, fault injection, header modifiers) are not applied.

Weights are per request: a uniform draw against the cumulative weights, unless a
``weight_header`` is given, in which case its integer value (for example the bucket header)
replaces the draw, modulo the total weight -- this mirrors Envoy's ``WeightedCluster.header_name``,
which Istio does not set, so it is off by default. A sticky split is expressed instead as a
header match on the bucket header (see :mod:`modelrollout.sdk.bucket`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from modelrollout.errors import ModelRolloutError

MatchKind = Literal["exact", "prefix", "path_prefix", "regex", "present"]
CLUSTER_DOMAIN = "svc.cluster.local"


@dataclass(frozen=True)
class StringMatch:
    """One string condition: exact, prefix, Gateway API path prefix, full regex, or presence."""

    kind: MatchKind
    value: str = ""
    ignore_case: bool = False
    pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def make(cls, kind: MatchKind, value: str = "", ignore_case: bool = False) -> StringMatch:
        pattern = None
        if kind == "regex":
            pattern = re.compile(value, re.IGNORECASE if ignore_case else 0)
        return cls(kind, value, ignore_case, pattern)

    def matches(self, candidate: str | None) -> bool:
        if candidate is None:
            return False
        if self.kind == "present":
            return True
        if self.kind == "regex":
            assert self.pattern is not None
            return self.pattern.fullmatch(candidate) is not None
        value = self.value
        if self.ignore_case:
            candidate, value = candidate.lower(), value.lower()
        if self.kind == "exact":
            return candidate == value
        if self.kind == "prefix":
            return candidate.startswith(value)
        # Gateway API PathPrefix: element-wise, "/foo" matches "/foo" and "/foo/bar", not "/foobar".
        prefix = value.rstrip("/")
        return candidate == prefix or candidate.startswith(prefix + "/") or prefix == ""

    def describe(self) -> str:
        return f"{self.kind}:{self.value}" if self.kind != "present" else "present"


@dataclass(frozen=True)
class HeaderMatch:
    """A condition on a request header (names are case-insensitive); ``absent`` inverts it."""

    name: str
    match: StringMatch
    absent: bool = False

    def matches(self, headers: Mapping[str, str]) -> bool:
        found = self.match.matches(headers.get(self.name))
        return not found if self.absent else found


@dataclass(frozen=True)
class QueryMatch:
    """A condition on a query parameter."""

    name: str
    match: StringMatch

    def matches(self, query: Mapping[str, str]) -> bool:
        return self.match.matches(query.get(self.name))


@dataclass(frozen=True)
class RequestInfo:
    """What a route looks at. ``headers`` must be case-insensitive or have lowercase keys."""

    method: str
    path: str
    headers: Mapping[str, str]
    query: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RequestMatch:
    """Conditions that must all hold (one ``match[]`` entry)."""

    path: StringMatch | None = None
    method: StringMatch | None = None
    headers: tuple[HeaderMatch, ...] = ()
    query: tuple[QueryMatch, ...] = ()

    def matches(self, request: RequestInfo) -> bool:
        if self.path is not None and not self.path.matches(request.path):
            return False
        if self.method is not None and not self.method.matches(request.method.upper()):
            return False
        if not all(h.matches(request.headers) for h in self.headers):
            return False
        return all(q.matches(request.query) for q in self.query)

    def describe(self) -> str:
        parts = []
        if self.path is not None:
            parts.append(f"path {self.path.describe()}")
        if self.method is not None:
            parts.append(f"method {self.method.describe()}")
        parts += [f"{'!' if h.absent else ''}header {h.name} {h.match.describe()}" for h in self.headers]
        parts += [f"query {q.name} {q.match.describe()}" for q in self.query]
        return " and ".join(parts) or "any"


@dataclass(frozen=True)
class BackendRef:
    """A destination: a Service (and optionally an Istio subset) in a namespace."""

    service: str
    namespace: str
    subset: str | None = None
    port: int | None = None

    def describe(self) -> str:
        return self.service + (f"/{self.subset}" if self.subset else "")


@dataclass(frozen=True)
class Mirror:
    """Copy ``percent`` % of the requests to ``backend`` (answers ignored)."""

    backend: BackendRef
    percent: float


@dataclass(frozen=True)
class WeightedBackend:
    """A destination of a rule with its weight (and, for the Gateway API, its own mirrors)."""

    backend: BackendRef
    weight: int
    mirrors: tuple[Mirror, ...] = ()


@dataclass(frozen=True)
class RouteRule:
    """One Istio HTTP route or Gateway API rule. No ``matches`` means: every request."""

    name: str
    matches: tuple[RequestMatch, ...]
    backends: tuple[WeightedBackend, ...]
    mirrors: tuple[Mirror, ...] = ()

    @property
    def total_weight(self) -> int:
        return sum(max(0, b.weight) for b in self.backends)


@dataclass(frozen=True)
class Selection:
    """The routing decision for one request."""

    rule: RouteRule
    backend: BackendRef | None   # None: every weight is zero (the mesh answers 500)
    mirrors: tuple[Mirror, ...]  # the candidate mirrors; each fires with its own percentage


@dataclass(frozen=True)
class RouteTable:
    """The routes of one object, in the order in which they are tried."""

    kind: str
    name: str
    namespace: str
    resource_version: str = ""
    generation: int = 0
    rules: tuple[RouteRule, ...] = ()
    ordered: tuple[tuple[RouteRule, RequestMatch | None], ...] = ()
    warnings: tuple[str, ...] = ()

    @classmethod
    def empty(cls, kind: str = "none", name: str = "", namespace: str = "",
              resource_version: str = "") -> RouteTable:
        return cls(kind, name, namespace, resource_version)

    def match(self, request: RequestInfo) -> RouteRule | None:
        """The rule that takes ``request``, or None (Envoy's "no route", 404 NR)."""
        for rule, condition in self.ordered:
            if condition is None or condition.matches(request):
                return rule
        return None

    def select(self, request: RequestInfo, rng: random.Random,
               weight_header: str | None = None) -> Selection | None:
        """Pick the rule, the weighted backend and the candidate mirrors for ``request``."""
        rule = self.match(request)
        if rule is None:
            return None
        total = rule.total_weight
        if total <= 0:
            return Selection(rule, None, rule.mirrors)
        point = None
        if weight_header is not None:
            raw = request.headers.get(weight_header)
            if raw is not None and raw.strip().isdigit():
                point = int(raw.strip()) % total
        if point is None:
            point = int(rng.random() * total)
        chosen = rule.backends[-1]
        for weighted in rule.backends:
            weight = max(0, weighted.weight)
            if point < weight:
                chosen = weighted
                break
            point -= weight
        return Selection(rule, chosen.backend, rule.mirrors + chosen.mirrors)

    def weights(self) -> dict[str, dict[str, int]]:
        """Rule name -> destination -> weight (for dumps and tests)."""
        return {rule.name: {b.backend.describe(): b.weight for b in rule.backends} for rule in self.rules}

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "namespace": self.namespace,
            "resourceVersion": self.resource_version,
            "generation": self.generation,
            "rules": [
                {
                    "name": rule.name,
                    "matches": [m.describe() for m in rule.matches] or ["any"],
                    "backends": [{"destination": b.backend.describe(), "weight": b.weight,
                                  "mirrors": [{"destination": m.backend.describe(), "percent": m.percent}
                                              for m in b.mirrors]}
                                 for b in rule.backends],
                    "mirrors": [{"destination": m.backend.describe(), "percent": m.percent}
                                for m in rule.mirrors],
                }
                for rule in self.rules
            ],
            "warnings": list(self.warnings),
        }


class RouteParseError(ModelRolloutError, ValueError):
    """The object cannot be turned into routes (the mesh keeps its previous table)."""


# ---- Istio ------------------------------------------------------------------------------------
def parse_istio_host(host: str, namespace: str) -> tuple[str, str]:
    """(service, namespace) of an Istio destination host: short, ``svc.ns`` or an FQDN."""
    name = host.strip().lower()
    if name.endswith("." + CLUSTER_DOMAIN):
        name = name[: -len(CLUSTER_DOMAIN) - 1]
    elif name.endswith(".svc"):
        name = name[:-4]
    parts = name.split(".")
    if len(parts) == 1:
        return parts[0], namespace
    return parts[0], parts[1]


def _istio_string_match(spec: Any, where: str, *, ignore_case: bool = False) -> StringMatch:
    if not isinstance(spec, Mapping):
        raise RouteParseError(f"{where}: expected an object with exact, prefix or regex")
    kinds = [k for k in ("exact", "prefix", "regex") if k in spec]
    if not kinds:
        return StringMatch.make("present")
    if len(kinds) > 1:
        raise RouteParseError(f"{where}: only one of exact, prefix, regex may be set")
    kind = kinds[0]
    try:
        return StringMatch.make(kind, str(spec[kind]), ignore_case)  # type: ignore[arg-type]
    except re.error as exc:
        raise RouteParseError(f"{where}: invalid regex {spec[kind]!r}: {exc}") from exc


_ISTIO_IGNORED = ("authority", "scheme", "port", "sourceLabels", "gateways", "sourceNamespace",
                  "statPrefix")


def _istio_match(spec: Mapping[str, Any], where: str, warnings: list[str]) -> RequestMatch:
    ignore_case = bool(spec.get("ignoreUriCase", False))
    path = None
    if "uri" in spec:
        path = _istio_string_match(spec["uri"], f"{where}.uri", ignore_case=ignore_case)
    method = _istio_string_match(spec["method"], f"{where}.method") if "method" in spec else None
    headers = [HeaderMatch(name.lower(), _istio_string_match(cond, f"{where}.headers.{name}"))
               for name, cond in (spec.get("headers") or {}).items()]
    headers += [HeaderMatch(name.lower(), _istio_string_match(cond, f"{where}.withoutHeaders.{name}"),
                            absent=True)
                for name, cond in (spec.get("withoutHeaders") or {}).items()]
    query = [QueryMatch(name, _istio_string_match(cond, f"{where}.queryParams.{name}"))
             for name, cond in (spec.get("queryParams") or {}).items()]
    for key in _ISTIO_IGNORED:
        if key in spec:
            warnings.append(f"{where}.{key} is not evaluated by the mesh stand-in (ignored)")
    return RequestMatch(path, method, tuple(headers), tuple(query))


def _istio_destination(spec: Any, namespace: str, where: str) -> BackendRef:
    if not isinstance(spec, Mapping) or not spec.get("host"):
        raise RouteParseError(f"{where}: a destination needs a host")
    service, ns = parse_istio_host(str(spec["host"]), namespace)
    port = (spec.get("port") or {}).get("number")
    return BackendRef(service, ns, spec.get("subset") or None, int(port) if port else None)


def _percent(value: Any, where: str) -> float:
    try:
        percent = float(value)
    except (TypeError, ValueError) as exc:
        raise RouteParseError(f"{where}: not a number: {value!r}") from exc
    if not 0.0 <= percent <= 100.0:
        raise RouteParseError(f"{where}: must be in [0, 100], not {percent}")
    return percent


def _istio_mirrors(route: Mapping[str, Any], namespace: str, where: str) -> tuple[Mirror, ...]:
    mirrors: list[Mirror] = []
    if route.get("mirror"):
        percent = 100.0
        if route.get("mirrorPercentage") is not None:
            percent = _percent(route["mirrorPercentage"].get("value", 0.0), f"{where}.mirrorPercentage.value")
        elif route.get("mirrorPercent") is not None:
            percent = _percent(route["mirrorPercent"], f"{where}.mirrorPercent")
        mirrors.append(Mirror(_istio_destination(route["mirror"], namespace, f"{where}.mirror"), percent))
    for i, item in enumerate(route.get("mirrors") or []):
        percent = 100.0
        if item.get("percentage") is not None:
            percent = _percent(item["percentage"].get("value", 0.0), f"{where}.mirrors[{i}].percentage.value")
        destination = _istio_destination(item.get("destination"), namespace,
                                         f"{where}.mirrors[{i}].destination")
        mirrors.append(Mirror(destination, percent))
    return tuple(mirrors)


def parse_virtual_service(obj: Mapping[str, Any], route_names: Sequence[str] = ()) -> RouteTable:
    """The route table of an Istio VirtualService (only the named ``http`` routes, if given)."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace") or "default"
    spec = obj.get("spec") or {}
    warnings: list[str] = []
    rules: list[RouteRule] = []
    for index, route in enumerate(spec.get("http") or []):
        name = route.get("name") or f"http[{index}]"
        if route_names and route.get("name") not in route_names:
            continue
        where = f"spec.http[{index}]"
        matches = tuple(_istio_match(m, f"{where}.match[{i}]", warnings)
                        for i, m in enumerate(route.get("match") or []))
        destinations = route.get("route") or []
        backends = []
        for i, dest in enumerate(destinations):
            weight = dest.get("weight")
            if weight is None:
                weight = 100 if len(destinations) == 1 else 0
            backends.append(WeightedBackend(
                _istio_destination(dest.get("destination"), namespace, f"{where}.route[{i}].destination"),
                int(weight)))
        for key in ("redirect", "directResponse", "delegate"):
            if key in route:
                warnings.append(f"{where}.{key} is not supported by the mesh stand-in")
        rules.append(RouteRule(name, matches, tuple(backends), _istio_mirrors(route, namespace, where)))
    ordered: list[tuple[RouteRule, RequestMatch | None]] = []
    for rule in rules:
        if rule.matches:
            ordered += [(rule, m) for m in rule.matches]
        else:
            ordered.append((rule, None))
    return RouteTable("VirtualService", meta.get("name", ""), namespace, str(meta.get("resourceVersion", "")),
                      int(meta.get("generation") or 0), tuple(rules), tuple(ordered), tuple(warnings))


# ---- Gateway API ------------------------------------------------------------------------------
_GATEWAY_KINDS: dict[str, MatchKind] = {"Exact": "exact", "PathPrefix": "path_prefix",
                                        "RegularExpression": "regex"}


def _gateway_string_match(spec: Mapping[str, Any], where: str, default_type: str) -> StringMatch:
    kind_name = spec.get("type") or default_type
    if kind_name not in _GATEWAY_KINDS or (kind_name == "PathPrefix" and default_type != "PathPrefix"):
        raise RouteParseError(f"{where}.type: unsupported match type {kind_name!r}")
    try:
        default_value = "/" if default_type == "PathPrefix" else ""
        return StringMatch.make(_GATEWAY_KINDS[kind_name], str(spec.get("value", default_value)))
    except re.error as exc:
        raise RouteParseError(f"{where}: invalid regex {spec.get('value')!r}: {exc}") from exc


def _gateway_match(spec: Mapping[str, Any], where: str) -> RequestMatch:
    path_spec = spec.get("path") or {"type": "PathPrefix", "value": "/"}
    path = _gateway_string_match(path_spec, f"{where}.path", "PathPrefix")
    method = StringMatch.make("exact", str(spec["method"]).upper()) if spec.get("method") else None
    headers = tuple(
        HeaderMatch(str(h["name"]).lower(), _gateway_string_match(h, f"{where}.headers[{i}]", "Exact"))
        for i, h in enumerate(spec.get("headers") or []))
    query = tuple(QueryMatch(str(q["name"]), _gateway_string_match(q, f"{where}.queryParams[{i}]", "Exact"))
                  for i, q in enumerate(spec.get("queryParams") or []))
    return RequestMatch(path, method, headers, query)


def _gateway_ref(spec: Any, namespace: str, where: str) -> BackendRef:
    if not isinstance(spec, Mapping) or not spec.get("name"):
        raise RouteParseError(f"{where}: a backendRef needs a name")
    if spec.get("kind", "Service") != "Service" or spec.get("group", "") not in ("", "core"):
        raise RouteParseError(f"{where}: only Service backends are supported")
    port = spec.get("port")
    return BackendRef(str(spec["name"]), str(spec.get("namespace") or namespace), None,
                      int(port) if port else None)


def _gateway_mirrors(filters: Sequence[Mapping[str, Any]], namespace: str, where: str,
                     warnings: list[str]) -> tuple[Mirror, ...]:
    mirrors = []
    for i, item in enumerate(filters):
        if item.get("type") != "RequestMirror":
            warnings.append(f"{where}[{i}]: filter {item.get('type')!r} is not applied by the mesh stand-in")
            continue
        spec = item.get("requestMirror") or {}
        percent = 100.0
        if spec.get("percent") is not None:
            percent = _percent(spec["percent"], f"{where}[{i}].requestMirror.percent")
        elif spec.get("fraction") is not None:
            fraction = spec["fraction"]
            denominator = float(fraction.get("denominator", 100) or 100)
            percent = _percent(100.0 * float(fraction.get("numerator", 0)) / denominator,
                               f"{where}[{i}].requestMirror.fraction")
        mirrors.append(Mirror(_gateway_ref(spec.get("backendRef"), namespace,
                                           f"{where}[{i}].requestMirror.backendRef"), percent))
    return tuple(mirrors)


def _gateway_precedence(match: RequestMatch) -> tuple[int, int, int, int, int]:
    path = match.path
    rank, length = 0, 0
    if path is not None:
        rank = {"exact": 3, "path_prefix": 2, "prefix": 2, "regex": 1}.get(path.kind, 0)
        length = len(path.value)
    return (-rank, -length, -int(match.method is not None), -len(match.headers), -len(match.query))


def parse_http_route(obj: Mapping[str, Any]) -> RouteTable:
    """The route table of a Gateway API HTTPRoute (rules in the specification's precedence)."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace") or "default"
    spec = obj.get("spec") or {}
    warnings: list[str] = []
    rules: list[RouteRule] = []
    keyed: list[tuple[tuple[int, ...], RouteRule, RequestMatch]] = []
    for index, rule_spec in enumerate(spec.get("rules") or []):
        where = f"spec.rules[{index}]"
        name = rule_spec.get("name") or f"rules[{index}]"
        match_specs = rule_spec.get("matches") or [{"path": {"type": "PathPrefix", "value": "/"}}]
        matches = tuple(_gateway_match(m, f"{where}.matches[{i}]") for i, m in enumerate(match_specs))
        backends = []
        for i, ref in enumerate(rule_spec.get("backendRefs") or []):
            weight = ref.get("weight")
            backends.append(WeightedBackend(
                _gateway_ref(ref, namespace, f"{where}.backendRefs[{i}]"),
                1 if weight is None else int(weight),
                _gateway_mirrors(ref.get("filters") or [], namespace, f"{where}.backendRefs[{i}].filters",
                                 warnings)))
        mirrors = _gateway_mirrors(rule_spec.get("filters") or [], namespace, f"{where}.filters", warnings)
        rule = RouteRule(name, matches, tuple(backends), mirrors)
        rules.append(rule)
        for i, match in enumerate(matches):
            keyed.append(((*_gateway_precedence(match), index, i), rule, match))
    keyed.sort(key=lambda item: item[0])
    ordered: tuple[tuple[RouteRule, RequestMatch | None], ...] = tuple(
        (rule, match) for _, rule, match in keyed
    )
    return RouteTable("HTTPRoute", meta.get("name", ""), namespace, str(meta.get("resourceVersion", "")),
                      int(meta.get("generation") or 0), tuple(rules), ordered, tuple(warnings))


def parse_route_object(kind: str, obj: Mapping[str, Any], route_names: Sequence[str] = ()) -> RouteTable:
    """Dispatch on ``kind`` (``istio`` or ``gatewayapi``)."""
    if kind == "istio":
        return parse_virtual_service(obj, route_names)
    if kind == "gatewayapi":
        return parse_http_route(obj)
    raise ValueError(f"unknown route kind {kind!r} (istio or gatewayapi)")
