"""The router protocol and its plain inputs and outputs.

A router moves traffic between the variants of one experiment by editing one kind of cluster
object: an Istio ``VirtualService`` (:mod:`~modelrollout.routing.istio`), a Gateway API
``HTTPRoute`` (:mod:`~modelrollout.routing.gatewayapi`) or the replica counts of the Deployments
behind one ``Service`` (:mod:`~modelrollout.routing.service`). Its methods are

``current(target, desired=None) -> CurrentRoutes``
    what the object routes now, whether an :meth:`apply` would leave it unchanged, and which
    outside changes were made since the router last wrote it (drift);
``apply(target, desired) -> ApplyResult``
    make the object route ``desired``. Idempotent: nothing is written when the object already
    routes it. It reports whether it wrote, and the drift that the write healed, so that the
    caller can emit an Event;
``restore_champion(target) -> ApplyResult``
    all traffic to the champion, no mirror and no sticky routes: the state before the experiment.

The inputs are plain dataclasses (:class:`TrafficTarget`, :class:`RouteState`), not the API
models; the reconcile layer maps the spec onto them. Routers are synchronous (the kubernetes
client is); the operator calls them off its event loop.

**Ownership.** Every router edits only the fields it owns and leaves everything else byte for byte
as it found it. Each module's docstring lists the owned fields. In addition every router owns the
annotation :data:`ROUTES_ANNOTATION` (VirtualService, HTTPRoute) or :data:`REPLICAS_ANNOTATION`
(Deployment), in which it records what it last wrote. That record is how an outside write (a GitOps
sync, a person) is told apart from a step: the object differs from the record.

**Concurrency.** Every write is a JSON merge patch that carries the ``resourceVersion`` that was
read, so the API server refuses it with 409 Conflict if the object changed in between. The router
then reads again, recomputes and retries, at most ``max_attempts`` times, and raises
:class:`~modelrollout.routing.errors.ConflictError` after that.

**Fencing.** A router may be given ``can_write``, a callable that says whether this process may
still write (the operator passes its leader election guard). It is asked right before every write,
also before each retry after a 409, and a ``False`` raises :class:`~modelrollout.errors.FencedError`
instead of writing: a deposed leader never writes routes.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from modelrollout.errors import FencedError, InvalidInputError

BUCKETS = 100
"""Buckets of the sticky split: one per percent of traffic, decimal strings ``"0"`` .. ``"99"``."""

ROUTES_ANNOTATION = "modelrollout.io/routes"
"""Annotation on a VirtualService or HTTPRoute: JSON ``{route name: RouteState}`` last written."""

REPLICAS_ANNOTATION = "modelrollout.io/replicas"
"""Annotation on a Deployment: the replica count the service router last wrote."""

STICKY_PREFIX = "modelrollout-sticky."
"""Name prefix of the routes and rules a router generates for a sticky split (see ``istio``)."""

FIELD_MANAGER = "modelrollout"
"""The field manager of every write."""

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_HEADER = re.compile(r"^[a-z0-9][a-z0-9-]*$")

BeforeWrite = Callable[[int], None]
"""A hook called after a read and before the write of attempt ``n`` (1-based); a test seam."""

CanWrite = Callable[[], bool]
"""Whether this process may write now (the operator's leader election guard); see Fencing above."""


def check_can_write(can_write: CanWrite | None, what: str) -> None:
    """Raise :class:`~modelrollout.errors.FencedError` unless ``can_write`` allows a write of ``what``."""
    if can_write is not None and not can_write():
        raise FencedError(f"{what} not written: this process no longer holds the leader's Lease")


def _fail(message: str) -> InvalidInputError:
    return InvalidInputError(message)


@dataclass(frozen=True)
class Variant:
    """One variant of the experiment, as the routed object names it.

    ``destination`` is the Istio destination host (``ranker-v7`` or its FQDN), the Gateway API
    backend Service name, or, for the service router, a free label (only ``deployment`` matters).
    ``subset`` is an Istio DestinationRule subset. ``port`` is the destination port; when it is
    ``None`` an existing destination matches whatever its port is (and keeps it).
    """

    name: str
    destination: str
    subset: str | None = None
    port: int | None = None
    deployment: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise _fail(f"variant name must be a non-empty string, not {self.name!r}")
        if not isinstance(self.destination, str) or not self.destination:
            raise _fail(f"variant {self.name!r}: destination must be a non-empty string, "
                        f"not {self.destination!r}")
        if self.port is not None and (isinstance(self.port, bool) or not isinstance(self.port, int)
                                      or not 1 <= self.port <= 65535):
            raise _fail(f"variant {self.name!r}: port must be an integer in 1..65535, not {self.port!r}")
        if self.subset is not None and (not isinstance(self.subset, str) or not self.subset):
            raise _fail(f"variant {self.name!r}: subset must be a non-empty string or None")
        if self.deployment is not None and (not isinstance(self.deployment, str) or not self.deployment):
            raise _fail(f"variant {self.name!r}: deployment must be a non-empty string or None")


def label(name: str) -> str:
    """``name`` as a DNS label (lowercase ``[a-z0-9-]``), used in generated route names."""
    text = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return text or "variant"


@dataclass(frozen=True)
class TrafficTarget:
    """What to route: the object, its routes, the variants, the champion and the bucket header.

    ``name`` is the VirtualService, the HTTPRoute, or (service router) the Service in front of the
    Deployments. ``routes`` are the names of the routes (VirtualService ``http[].name``) or rules
    (HTTPRoute ``rules[].name``) whose destinations are weighted; the service router ignores them.
    ``bucket_header`` turns on the sticky split (Istio, Gateway API). ``replicas`` is the total
    replica budget of the service router (``None``: keep the total it finds).
    """

    namespace: str
    name: str
    variants: tuple[Variant, ...]
    champion: str
    routes: tuple[str, ...] = ()
    bucket_header: str | None = None
    replicas: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "variants", tuple(self.variants))
        object.__setattr__(self, "routes", tuple(self.routes))
        if not isinstance(self.namespace, str) or not self.namespace:
            raise _fail(f"namespace must be a non-empty string, not {self.namespace!r}")
        if not isinstance(self.name, str) or not self.name:
            raise _fail(f"object name must be a non-empty string, not {self.name!r}")
        self._check_variants()
        self._check_routes()
        if self.bucket_header is not None:
            self._check_bucket_header()
        if self.replicas is not None and (
            isinstance(self.replicas, bool) or not isinstance(self.replicas, int) or self.replicas < 1
        ):
            raise _fail(f"replicas must be a positive integer or None, not {self.replicas!r}")

    def _check_variants(self) -> None:
        if len(self.variants) < 2:
            raise _fail(f"need the champion and at least one challenger, not {len(self.variants)} variant(s)")
        names = [v.name for v in self.variants]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise _fail(f"variant names must be unique; repeated: {', '.join(duplicates)}")
        if self.champion not in names:
            raise _fail(f"champion {self.champion!r} is not one of the variants {names}")

    def _check_routes(self) -> None:
        for route in self.routes:
            if not isinstance(route, str) or not route:
                raise _fail(f"route names must be non-empty strings, not {route!r}")
            if route.startswith(STICKY_PREFIX):
                raise _fail(f"route {route!r}: the prefix {STICKY_PREFIX!r} is reserved for generated routes")
        if len(set(self.routes)) != len(self.routes):
            raise _fail(f"route names must be unique, not {list(self.routes)}")

    def _check_bucket_header(self) -> None:
        if not isinstance(self.bucket_header, str) or not _HEADER.match(self.bucket_header):
            raise _fail(
                f"bucket header must be a lowercase header name ([a-z0-9-]), not {self.bucket_header!r}"
            )
        names = [v.name for v in self.variants]
        labels = [label(n) for n in names]
        if len(set(labels)) != len(labels):
            raise _fail(
                f"variant names {names} collide once written as DNS labels {labels}; "
                "rename them for a sticky split"
            )

    @property
    def names(self) -> tuple[str, ...]:
        """The variant names, in order."""
        return tuple(v.name for v in self.variants)

    @property
    def challengers(self) -> tuple[Variant, ...]:
        """The variants other than the champion, in order."""
        return tuple(v for v in self.variants if v.name != self.champion)

    def variant(self, name: str) -> Variant:
        """The variant called ``name``."""
        for v in self.variants:
            if v.name == name:
                return v
        raise _fail(f"no variant {name!r}; the variants are {list(self.names)}")


@dataclass(frozen=True)
class Mirror:
    """Mirror ``percent`` (0 < percent <= 100) of the requests to ``variant``; responses are dropped."""

    variant: str
    percent: float = 100.0

    def __post_init__(self) -> None:
        if not isinstance(self.variant, str) or not self.variant:
            raise _fail(f"mirror variant must be a non-empty string, not {self.variant!r}")
        if isinstance(self.percent, bool) or not isinstance(self.percent, int | float) \
                or not math.isfinite(self.percent) or not 0 < self.percent <= 100:
            raise _fail(f"mirror percent must be in (0, 100], not {self.percent!r}")
        object.__setattr__(self, "percent", float(self.percent))


@dataclass(frozen=True)
class RouteState:
    """Integer weights in percent per variant (summing to 100) and the mirrors.

    There is one weight per variant of the target: a dropped challenger has weight 0. Mirrors are
    kept sorted by variant name, so equality does not depend on the order they were given in.
    """

    weights: Mapping[str, int]
    mirrors: tuple[Mirror, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.weights, Mapping) or not self.weights:
            raise _fail(f"weights must be a non-empty mapping of variant to percent, not {self.weights!r}")
        weights: dict[str, int] = {}
        for name, weight in self.weights.items():
            if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
                raise _fail(f"weight of {name!r} must be an integer percent in 0..100, not {weight!r}")
            weights[name] = weight
        total = sum(weights.values())
        if total != 100:
            raise _fail(f"weights must sum to 100, not {total}: {weights}")
        mirrors = tuple(self.mirrors)
        for m in mirrors:
            if not isinstance(m, Mirror):
                raise _fail(f"mirrors must be Mirror objects, not {m!r}")
        seen = [m.variant for m in mirrors]
        if len(set(seen)) != len(seen):
            raise _fail(f"each variant may be mirrored once, not {seen}")
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "mirrors", tuple(sorted(mirrors, key=lambda m: m.variant)))

    @classmethod
    def champion_only(cls, target: TrafficTarget) -> RouteState:
        """100 % to the champion, 0 to every challenger, no mirror."""
        return cls({n: 100 if n == target.champion else 0 for n in target.names})

    def live(self) -> list[str]:
        """The variants with a positive weight."""
        return [n for n, w in self.weights.items() if w > 0]

    def describe(self) -> str:
        """A short human-readable form: ``v6=75% v7=25%, mirror v8 100%``."""
        text = " ".join(f"{n}={w}%" for n, w in self.weights.items())
        if self.mirrors:
            text += ", " + ", ".join(f"mirror {m.variant} {m.percent:g}%" for m in self.mirrors)
        return text

    def to_json(self) -> dict[str, Any]:
        """The JSON form kept in the annotations."""
        return {"weights": dict(self.weights),
                "mirrors": [{"variant": m.variant, "percent": m.percent} for m in self.mirrors]}

    @classmethod
    def from_json(cls, data: Any) -> RouteState:
        """Inverse of :meth:`to_json`; raises InvalidInputError on anything else."""
        if not isinstance(data, dict) or not isinstance(data.get("weights"), dict):
            raise _fail(f"not a recorded route state: {data!r}")
        mirrors = data.get("mirrors") or []
        if not isinstance(mirrors, list) or not all(isinstance(m, dict) for m in mirrors):
            raise _fail(f"not a recorded list of mirrors: {mirrors!r}")
        return cls(dict(data["weights"]),
                   tuple(Mirror(m.get("variant"), m.get("percent", 100.0)) for m in mirrors))


def validate_state(target: TrafficTarget, state: RouteState) -> None:
    """Check that ``state`` has one weight per variant of ``target`` and mirrors challengers only."""
    if set(state.weights) != set(target.names):
        missing = sorted(set(target.names) - set(state.weights))
        extra = sorted(set(state.weights) - set(target.names))
        raise _fail(f"weights must have one entry per variant {list(target.names)}; "
                    f"missing {missing}, unknown {extra}")
    for m in state.mirrors:
        if m.variant not in target.names:
            raise _fail(f"mirror of unknown variant {m.variant!r}; the variants are {list(target.names)}")
        if m.variant == target.champion:
            raise _fail(f"the champion {m.variant!r} cannot be mirrored: it already gets the traffic")


def ordered(target: TrafficTarget, state: RouteState) -> RouteState:
    """``state`` with the weights in the variants' order (for stable output)."""
    return RouteState({n: state.weights[n] for n in target.names}, state.mirrors)


def largest_remainder(amounts: Mapping[str, int | float], total: int) -> dict[str, int]:
    """Integers proportional to ``amounts`` that sum to ``total`` (Hamilton's method).

    Each key gets the floor of its exact quota; the units left go to the largest fractional parts,
    ties to the earlier key. All amounts zero gives all zeros.
    """
    if total < 0:
        raise _fail(f"total must be non-negative, not {total}")
    for key, amount in amounts.items():
        if amount < 0 or not math.isfinite(amount):
            raise _fail(f"amount of {key!r} must be finite and non-negative, not {amount!r}")
    whole = sum(amounts.values())
    if whole == 0:
        return dict.fromkeys(amounts, 0)
    keys = list(amounts)
    if all(isinstance(a, int) for a in amounts.values()):
        # Exact integer arithmetic: quota = amount * total / whole.
        floors = {k: int(amounts[k]) * total // int(whole) for k in keys}
        remainders: dict[str, float] = {k: (int(amounts[k]) * total) % int(whole) for k in keys}
    else:
        quotas = {k: amounts[k] * total / whole for k in keys}
        floors = {k: math.floor(quotas[k]) for k in keys}
        remainders = {k: quotas[k] - floors[k] for k in keys}
    left = total - sum(floors.values())
    for k in sorted(keys, key=lambda k: (-remainders[k], keys.index(k)))[:left]:
        floors[k] += 1
    return floors


@dataclass(frozen=True)
class CurrentRoutes:
    """What the object routes now.

    ``state`` is read from the object (the per-request weights of the first selected route, or the
    replica ratio), ``None`` when no split can be read (all weights zero). ``in_sync`` is whether an
    :meth:`Router.apply` of the ``desired`` state given to ``current`` (or of ``state`` itself when
    none was given) would write nothing. ``drift`` lists the outside changes made since the router
    last wrote the object, one human-readable line per route or Deployment.
    """

    state: RouteState | None
    in_sync: bool
    drift: tuple[str, ...] = ()
    resource_version: str | None = None


@dataclass(frozen=True)
class ApplyResult:
    """The outcome of :meth:`Router.apply`.

    ``changed`` is whether something was written. ``drift`` lists the outside changes that the
    write overwrote (empty for an ordinary step): emit an Event for each. ``previous`` is what the
    object routed before. ``achieved`` is what it routes now: the desired state for Istio and the
    Gateway API, the replica ratio for the service router (record that one in the status: it is
    the honest weight). ``attempts`` counts read-compute-write rounds (more than one after 409s).
    """

    changed: bool
    achieved: RouteState
    previous: RouteState | None = None
    drift: tuple[str, ...] = ()
    attempts: int = 1
    resource_version: str | None = None


@runtime_checkable
class Router(Protocol):
    """Sets the traffic split of one experiment on one kind of object (see the module docstring)."""

    provider: str
    supports_mirror: bool
    supports_stickiness: bool

    def current(self, target: TrafficTarget, desired: RouteState | None = None) -> CurrentRoutes:
        """What the object routes now, and whether applying ``desired`` would change it."""
        ...

    def apply(self, target: TrafficTarget, desired: RouteState) -> ApplyResult:
        """Make the object route ``desired``; no write when it already does."""
        ...

    def restore_champion(self, target: TrafficTarget) -> ApplyResult:
        """Send all traffic to the champion and remove mirrors and sticky routes."""
        ...


def read_record(annotations: Mapping[str, str] | None, key: str = ROUTES_ANNOTATION) -> dict[str, Any]:
    """The JSON object in annotation ``key``; ``{}`` when absent or unreadable."""
    raw = (annotations or {}).get(key)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def recorded_states(annotations: Mapping[str, str] | None, routes: Iterable[str]) -> dict[str, RouteState]:
    """The states recorded for ``routes`` in :data:`ROUTES_ANNOTATION`, skipping unreadable ones."""
    record = read_record(annotations)
    states: dict[str, RouteState] = {}
    for route in routes:
        if route in record:
            try:
                states[route] = RouteState.from_json(record[route])
            except InvalidInputError:
                continue
    return states


def updated_record(annotations: Mapping[str, str] | None, routes: Sequence[str], state: RouteState) -> str:
    """The new :data:`ROUTES_ANNOTATION` value: ``state`` for ``routes``, other routes' entries kept."""
    record = read_record(annotations)
    for route in routes:
        record[route] = state.to_json()
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


@dataclass
class RetryPolicy:
    """How often to retry a write that met 409 Conflict, and the pause between attempts."""

    max_attempts: int = 5
    backoff: float = 0.05
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise _fail(f"max_attempts must be at least 1, not {self.max_attempts}")

    def pause(self, attempt: int) -> None:
        """Sleep before attempt ``attempt + 1``."""
        self.sleep(min(self.backoff * 2 ** (attempt - 1), 1.0))
