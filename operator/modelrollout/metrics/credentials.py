"""Reading the Prometheus bearer token and CA bundle from the experiment's namespace.

``spec.metrics.prometheus.bearerTokenSecretRef`` names a Secret key that holds a bearer token;
``caSecretRef`` (a Secret key) or ``caConfigMapRef`` (a ConfigMap key, ``data`` or
``binaryData``) names a PEM CA bundle. :func:`read_credentials` reads them with a
``CoreV1Api`` that the reconcile layer passes in, and sorts what can go wrong:

* a missing Secret, ConfigMap or key, an empty or multi-line token, a bundle that is not PEM
  certificates: :class:`~modelrollout.api.observations.SpecProblem` at the field path
  (``spec.metrics.prometheus.bearerTokenSecretRef``), with the fix;
* the apiserver cannot be asked, or refuses (403: the operator's RBAC):
  :class:`~modelrollout.api.observations.Unknown`, to be tried again.

Nothing raises. The values never appear in a reason or a log.
"""

from __future__ import annotations

import base64
import binascii
import ssl
from dataclasses import dataclass, field
from typing import Any

from modelrollout.api.observations import SpecProblem, Unknown
from modelrollout.api.spec import KeySelector, Prometheus

_PREFIX = "spec.metrics.prometheus"


@dataclass(frozen=True)
class Credentials:
    """What the provider needs besides the address: a bearer token and a PEM CA bundle, if any."""

    bearer_token: str | None = field(default=None, repr=False)
    ca_pem: str | None = field(default=None, repr=False)


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None


def read_key(
    core: Any, kind: str, namespace: str, ref: KeySelector, path: str
) -> bytes | SpecProblem | Unknown:
    """The bytes under ``ref.key`` of a Secret or ConfigMap, or what went wrong."""
    reader = core.read_namespaced_secret if kind == "Secret" else core.read_namespaced_config_map
    try:
        obj = reader(ref.name, namespace)
    except Exception as exc:  # the kubernetes client raises ApiException, urllib3 errors, ...
        status = _status(exc)
        if status == 404:
            return SpecProblem(
                path, f"{kind} {namespace}/{ref.name} does not exist: create it with the key {ref.key}, "
                "or fix the name"
            )
        detail = f"HTTP {status} {getattr(exc, 'reason', '')}".strip() if status else type(exc).__name__
        hint = " (does the operator's role allow get on it?)" if status == 403 else ""
        return Unknown(f"could not read {kind} {namespace}/{ref.name} for {path}: {detail}{hint}")
    encoded = dict(getattr(obj, "data", None) or {})
    binary = dict(getattr(obj, "binary_data", None) or {}) if kind == "ConfigMap" else {}
    try:
        if ref.key in encoded:
            raw = encoded[ref.key] or ""
            return base64.b64decode(raw, validate=True) if kind == "Secret" else str(raw).encode()
        if ref.key in binary:
            return base64.b64decode(binary[ref.key] or "", validate=True)
    except (binascii.Error, ValueError):
        return SpecProblem(path, f"the key {ref.key} of {kind} {namespace}/{ref.name} is not valid base64")
    keys = sorted({*encoded, *binary})
    return SpecProblem(
        path, f"{kind} {namespace}/{ref.name} has no key {ref.key} (keys: {', '.join(keys) or 'none'})"
    )


def _token(raw: bytes, path: str, where: str) -> str | SpecProblem:
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return SpecProblem(path, f"the bearer token in {where} is not UTF-8 text")
    if not token:
        return SpecProblem(path, f"the bearer token in {where} is empty")
    if any(c.isspace() or not c.isprintable() for c in token):
        return SpecProblem(path, f"the bearer token in {where} must be one line without spaces")
    return token


def _ca(raw: bytes, path: str, where: str) -> str | SpecProblem:
    try:
        pem = raw.decode("ascii")
    except UnicodeDecodeError:
        return SpecProblem(path, f"the CA bundle in {where} is not PEM text")
    if "-----BEGIN CERTIFICATE-----" not in pem:
        return SpecProblem(
            path, f"the CA bundle in {where} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        )
    try:
        ssl.create_default_context(cadata=pem)
    except (ssl.SSLError, ValueError) as exc:
        return SpecProblem(path, f"the CA bundle in {where} cannot be loaded: {exc}")
    return pem


def read_credentials(
    core: Any, namespace: str, prometheus: Prometheus
) -> Credentials | list[SpecProblem] | Unknown:
    """The token and CA bundle that ``prometheus`` refers to, read in ``namespace``.

    Parameters
    ----------
    core
        A ``kubernetes.client.CoreV1Api``.
    namespace
        The experiment's namespace (the references are namespace-local).
    prometheus
        ``spec.metrics.prometheus``.

    Returns
    -------
    Credentials
        When everything referenced was read (empty when nothing is referenced).
    list of SpecProblem
        What must be fixed in the spec or the referenced objects.
    Unknown
        When the apiserver could not be asked (and no spec error was found).
    """
    errors: list[SpecProblem] = []
    unknown: Unknown | None = None
    token: str | None = None
    ca_pem: str | None = None
    wanted: list[tuple[str, str, KeySelector]] = []
    if prometheus.bearer_token_secret_ref is not None:
        wanted.append(("Secret", "bearerTokenSecretRef", prometheus.bearer_token_secret_ref))
    if prometheus.ca_secret_ref is not None:
        wanted.append(("Secret", "caSecretRef", prometheus.ca_secret_ref))
    if prometheus.ca_config_map_ref is not None:
        wanted.append(("ConfigMap", "caConfigMapRef", prometheus.ca_config_map_ref))
    for kind, name, ref in wanted:
        path = f"{_PREFIX}.{name}"
        raw = read_key(core, kind, namespace, ref, path)
        if isinstance(raw, SpecProblem):
            errors.append(raw)
            continue
        if isinstance(raw, Unknown):
            unknown = unknown or raw
            continue
        where = f"{kind} {namespace}/{ref.name} key {ref.key}"
        value = _token(raw, path, where) if name == "bearerTokenSecretRef" else _ca(raw, path, where)
        if isinstance(value, SpecProblem):
            errors.append(value)
        elif name == "bearerTokenSecretRef":
            token = value
        else:
            ca_pem = value
    if errors:
        return errors
    if unknown is not None:
        return unknown
    return Credentials(bearer_token=token, ca_pem=ca_pem)
