"""Errors of the routers.

The reconcile layer maps them onto the spec:

* :class:`TargetError` and its subclasses mean that the cluster object named by the spec does not
  fit it (it does not exist, it has no route of that name, a route sends traffic to a destination
  that is not a variant, ...). The operator sets ``InvalidSpec=True`` with the field path; the
  attributes ``kind``, ``namespace``, ``name``, ``route`` and ``variant`` tell which field:
  ``route`` set means the route list, ``variant`` set means that variant's destination, neither
  means the object reference itself. Traffic is not moved.
* :class:`ConflictError` means that the object kept changing under the router (409 Conflict on
  every attempt). It is transient: retry on the next tick.
* Bad arguments (weights that do not sum to 100, an unknown variant name, a feature the router
  cannot do) raise :class:`modelrollout.errors.InvalidInputError`.

Other API errors (403, 500, timeouts) propagate as ``kubernetes.client.ApiException`` or
``urllib3`` errors, unchanged.
"""

from __future__ import annotations

from modelrollout.errors import ModelRolloutError


class RoutingError(ModelRolloutError):
    """Base class of the errors raised by :mod:`modelrollout.routing`."""


class TargetError(RoutingError):
    """The object the router must edit does not fit the target; the message says how to fix it."""

    def __init__(self, message: str, *, kind: str, namespace: str, name: str,
                 route: str | None = None, variant: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.route = route
        self.variant = variant


class ObjectNotFoundError(TargetError):
    """The VirtualService, HTTPRoute, Service or Deployment does not exist (404)."""


class RouteNotFoundError(TargetError):
    """The object has no route (``http[].name``) or rule (``rules[].name``) of that name."""


class UnsupportedTargetError(TargetError):
    """The object exists but cannot be routed as asked (foreign destination, delegate, limits...)."""


class ConflictError(RoutingError):
    """Every attempt to write the object met a 409 Conflict: someone else kept writing it."""
