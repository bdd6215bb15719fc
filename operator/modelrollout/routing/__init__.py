"""Routers: move traffic between the variants of an experiment (see :mod:`.base` for the protocol).

``istio`` (VirtualService weights, mirrors and sticky header routes), ``gatewayAPI`` (HTTPRoute
backendRef weights, RequestMirror filters and sticky header rules) and ``service`` (the replica
ratio of the Deployments behind one Service). Use :func:`router_for` to get one by provider name.
"""

from __future__ import annotations

from typing import Any

from modelrollout.errors import InvalidInputError
from modelrollout.routing.base import (
    BUCKETS,
    REPLICAS_ANNOTATION,
    ROUTES_ANNOTATION,
    STICKY_PREFIX,
    ApplyResult,
    CanWrite,
    CurrentRoutes,
    Mirror,
    RetryPolicy,
    Router,
    RouteState,
    TrafficTarget,
    Variant,
)
from modelrollout.routing.errors import (
    ConflictError,
    ObjectNotFoundError,
    RouteNotFoundError,
    RoutingError,
    TargetError,
    UnsupportedTargetError,
)
from modelrollout.routing.gatewayapi import GatewayAPIRouter
from modelrollout.routing.istio import IstioRouter
from modelrollout.routing.service import ServiceRouter

PROVIDERS = ("istio", "gatewayAPI", "service")


def router_for(provider: str, api_client: Any, **options: Any) -> Router:
    """The router of ``provider`` (``istio``, ``gatewayAPI`` or ``service``) on ``api_client``."""
    if provider == "istio":
        return IstioRouter(api_client, **options)
    if provider == "gatewayAPI":
        return GatewayAPIRouter(api_client, **options)
    if provider == "service":
        return ServiceRouter(api_client, **options)
    raise InvalidInputError(f"unknown traffic provider {provider!r}; expected one of {list(PROVIDERS)}")


__all__ = [
    "BUCKETS",
    "PROVIDERS",
    "REPLICAS_ANNOTATION",
    "ROUTES_ANNOTATION",
    "STICKY_PREFIX",
    "ApplyResult",
    "CanWrite",
    "ConflictError",
    "CurrentRoutes",
    "GatewayAPIRouter",
    "IstioRouter",
    "Mirror",
    "ObjectNotFoundError",
    "RetryPolicy",
    "RouteNotFoundError",
    "RouteState",
    "Router",
    "RoutingError",
    "ServiceRouter",
    "TargetError",
    "TrafficTarget",
    "UnsupportedTargetError",
    "Variant",
    "router_for",
]
