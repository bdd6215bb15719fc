"""The Kubernetes API for the console: ModelExperiments as plain dicts, failures as one line.

Every function turns the client's exceptions into :class:`ConsoleError` with a message a person
can act on: an unknown name, a CRD that is not installed (with how to install it), a refused
request, an apiserver that cannot be reached.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from modelrollout.api.experiment import GROUP, PLURAL, VERSION
from modelrollout.console.errors import (
    ConsoleError,
    CRDNotInstalledError,
    ExperimentNotFoundError,
    UnreachableError,
)

__all__ = [
    "EXPERIMENTS",
    "CRDNotInstalledError",
    "ConsoleError",
    "ExperimentNotFoundError",
    "Resource",
    "UnreachableError",
    "close",
    "connect",
    "get_experiment",
    "list_experiments",
    "patch_experiment",
]

#: Seconds to wait for one API request; the console is interactive, so it fails fast.
REQUEST_TIMEOUT: Final = 15.0
_IN_CLUSTER_NAMESPACE: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

# The kubeconfig loaders carry no annotations; these names give them a type.
_list_contexts: Callable[..., Any] = config.list_kube_config_contexts
_load_kubeconfig: Callable[..., Any] = config.load_kube_config
_load_incluster: Callable[..., Any] = config.load_incluster_config


@dataclass(frozen=True)
class Resource:
    """A custom resource by group, version and plural (the ModelExperiment unless told otherwise)."""

    group: str
    version: str
    plural: str

    @property
    def name(self) -> str:
        """``plural.group``, the name the CRD of this resource has."""
        return f"{self.plural}.{self.group}"


#: The ModelExperiment resource. Read at call time, so a test may point the console elsewhere.
EXPERIMENTS = Resource(GROUP, VERSION, PLURAL)


def _kubeconfig_path(kubeconfig: str | None) -> str | None:
    # The client reads $KUBECONFIG once, when it is imported; read it now so a later change holds.
    if kubeconfig:
        return kubeconfig
    from_env = os.environ.get("KUBECONFIG", "").strip()
    if from_env:
        return from_env
    default = Path("~/.kube/config").expanduser()
    return str(default) if default.exists() else None


def _namespace_of_context(kubeconfig: str, context: str | None) -> str:
    contexts, current = _list_contexts(config_file=kubeconfig)
    chosen = current if context is None else next((c for c in contexts if c.get("name") == context), None)
    namespace = ((chosen or {}).get("context") or {}).get("namespace")
    return str(namespace) if namespace else "default"


def _check_kubeconfig(path: str, context: str | None) -> None:
    """Fail with a plain sentence on the two mistakes people make: a wrong path, a wrong context."""
    if os.pathsep not in path and not Path(path).expanduser().exists():
        raise ConsoleError(f"kubeconfig {path} does not exist")
    if context is not None:
        contexts, _ = _list_contexts(config_file=path)
        names = [str(c.get("name")) for c in contexts or []]
        if context not in names:
            raise ConsoleError(f"no context {context!r} in kubeconfig {path} (contexts: {', '.join(names)})")


def connect(kubeconfig: str | None = None, context: str | None = None) -> tuple[client.ApiClient, str]:
    """An API client for the kubeconfig (``$KUBECONFIG``, then ``~/.kube/config``, then in-cluster).

    Returns
    -------
    tuple
        The ``ApiClient`` (close it when done) and the context's default namespace ("default"
        if the context names none).

    Raises
    ------
    ConsoleError
        No usable kubeconfig, or no such context.
    """
    configuration = client.Configuration()
    path = _kubeconfig_path(kubeconfig)
    try:
        if path is None:
            if context is not None or not os.environ.get("KUBERNETES_SERVICE_HOST"):
                raise ConsoleError(
                    "no kubeconfig: set $KUBECONFIG, pass --kubeconfig, or create ~/.kube/config"
                )
            _load_incluster(client_configuration=configuration)
            namespace = (
                _IN_CLUSTER_NAMESPACE.read_text().strip() if _IN_CLUSTER_NAMESPACE.exists() else "default"
            )
        else:
            _check_kubeconfig(path, context)
            _load_kubeconfig(
                config_file=path, context=context, client_configuration=configuration, persist_config=False
            )
            namespace = _namespace_of_context(path, context)
    except ConfigException as exc:
        where = f" in {path}" if path else ""
        raise ConsoleError(f"invalid kubeconfig{where}: {exc}") from exc
    except OSError as exc:
        raise ConsoleError(f"cannot read kubeconfig {path}: {exc.strerror or exc}") from exc
    # One retry at most: an apiserver that is down should be reported now, not after a backoff.
    configuration.retries = 1
    return client.ApiClient(configuration), namespace


def close(api: client.ApiClient) -> None:
    """Close the client's connection pool (``ApiClient.close`` carries no annotations)."""
    closer: Callable[[], None] = api.close
    closer()


def _status_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return f"{exc.status} {exc.reason or ''}".strip()


def _server(api: client.ApiClient) -> str:
    return str(getattr(api.configuration, "host", "") or "the apiserver")


def is_served(api: client.ApiClient, resource: Resource | None = None) -> bool:
    """Whether the apiserver serves ``resource`` (by discovery of its group and version)."""
    resource = resource or EXPERIMENTS
    custom = client.CustomObjectsApi(api)
    try:
        listing: Any = custom.get_api_resources(
            resource.group, resource.version, _request_timeout=REQUEST_TIMEOUT
        )
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return any(r.name == resource.plural for r in (listing.resources or []))


def _not_installed(resource: Resource) -> ConsoleError:
    return CRDNotInstalledError(
        f"the {resource.name} CRD is not installed ({resource.group}/{resource.version} "
        f"{resource.plural} is not served); install it with: kubectl apply -f crds/"
    )


def _translate(
    api: client.ApiClient,
    exc: Exception,
    resource: Resource,
    *,
    name: str | None = None,
    namespace: str | None = None,
) -> ConsoleError:
    """The one line that explains ``exc`` to a person."""
    if isinstance(exc, urllib3.exceptions.HTTPError):
        reason = getattr(exc, "reason", None) or exc
        if isinstance(reason, urllib3.exceptions.NewConnectionError):
            # "HTTPSConnection(host=..., port=...): Failed to establish...": the address is said already.
            reason = str(reason).split("): ", 1)[-1]
        return UnreachableError(f"cannot reach the Kubernetes API at {_server(api)}: {reason}")
    if not isinstance(exc, ApiException):
        return ConsoleError(f"request to {_server(api)} failed: {exc}")
    if exc.status == 404:
        # The same 404 means either "no such object" or "no such resource": ask discovery which.
        try:
            served = is_served(api, resource)
        except (ApiException, urllib3.exceptions.HTTPError):
            served = True
        if not served:
            return _not_installed(resource)
        if name is not None:
            kind = resource.plural.removesuffix("s")
            return ExperimentNotFoundError(f"{kind} {name!r} not found in namespace {namespace!r}")
    if exc.status in (401, 403):
        return ConsoleError(f"not allowed by {_server(api)}: {_status_message(exc)}")
    return ConsoleError(f"the Kubernetes API refused the request: {_status_message(exc)}")


def get_experiment(
    api: client.ApiClient, name: str, namespace: str, *, resource: Resource | None = None
) -> dict[str, Any]:
    """The experiment ``namespace/name`` as the API returns it.

    Raises
    ------
    ConsoleError
        Not found, CRD not installed, refused or unreachable.
    """
    resource = resource or EXPERIMENTS
    custom = client.CustomObjectsApi(api)
    try:
        found: Any = custom.get_namespaced_custom_object(
            resource.group, resource.version, namespace, resource.plural, name,
            _request_timeout=REQUEST_TIMEOUT,
        )
    except (ApiException, urllib3.exceptions.HTTPError) as exc:
        raise _translate(api, exc, resource, name=name, namespace=namespace) from exc
    return dict(found)


def list_experiments(
    api: client.ApiClient, namespace: str | None, *, resource: Resource | None = None
) -> list[dict[str, Any]]:
    """The experiments in ``namespace`` (every namespace if None), by namespace then name.

    Raises
    ------
    ConsoleError
        CRD not installed, refused or unreachable.
    """
    resource = resource or EXPERIMENTS
    custom = client.CustomObjectsApi(api)
    try:
        if namespace is None:
            listing: Any = custom.list_cluster_custom_object(
                resource.group, resource.version, resource.plural, _request_timeout=REQUEST_TIMEOUT
            )
        else:
            listing = custom.list_namespaced_custom_object(
                resource.group, resource.version, namespace, resource.plural,
                _request_timeout=REQUEST_TIMEOUT,
            )
    except (ApiException, urllib3.exceptions.HTTPError) as exc:
        raise _translate(api, exc, resource) from exc
    items = [dict(item) for item in listing.get("items", [])]
    return sorted(
        items,
        key=lambda o: (o.get("metadata", {}).get("namespace", ""), o.get("metadata", {}).get("name", "")),
    )


def patch_experiment(
    api: client.ApiClient,
    name: str,
    namespace: str,
    patch: Mapping[str, Any],
    *,
    resource: Resource | None = None,
) -> dict[str, Any]:
    """Apply a JSON merge patch (RFC 7386) to the experiment; return the object as patched.

    Raises
    ------
    ConsoleError
        Not found, CRD not installed, rejected, refused or unreachable.
    """
    resource = resource or EXPERIMENTS
    custom = client.CustomObjectsApi(api)
    try:
        patched: Any = custom.patch_namespaced_custom_object(
            resource.group, resource.version, namespace, resource.plural, name, dict(patch),
            _content_type="application/merge-patch+json",
            _request_timeout=REQUEST_TIMEOUT,
        )
    except (ApiException, urllib3.exceptions.HTTPError) as exc:
        raise _translate(api, exc, resource, name=name, namespace=namespace) from exc
    return dict(patched)
