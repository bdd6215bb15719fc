"""The composition root of the operator process: made once at startup, kept in kopf's memo.

:class:`Runtime` holds what every tick shares: the Kubernetes API clients, the Prometheus providers
(one per configuration, shared by the experiments that use it), the factories that give a tick
its router and its metrics provider, and the leader election guard (``can_write``) that its
routers and its :class:`~modelrollout.controller.kube.KubeCluster` ask before every write.
kopf's startup handler builds it from the
:class:`~modelrollout.controller.config.OperatorConfig` that ``modelrollout run`` put in the memo;
every resource's memo is a shallow copy of the operator's, so each handler finds the same one.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import kopf
from kubernetes import client, config

from modelrollout.api.observations import SpecProblem, Unknown
from modelrollout.api.spec import ModelExperimentSpec, Prometheus
from modelrollout.controller.config import OperatorConfig
from modelrollout.controller.kube import FINALIZER, KubeCluster
from modelrollout.controller.schedule import TickScheduler
from modelrollout.controller.telemetry import OperatorMetrics
from modelrollout.metrics.credentials import Credentials, read_credentials
from modelrollout.metrics.prometheus import PrometheusProvider
from modelrollout.routing import CanWrite, Router, router_for

#: The keys of the runtime, the configuration, the operator's metrics and the leader election guard
#: in kopf's memo.
MEMO_RUNTIME = "modelrollout_runtime"
MEMO_CONFIG = "modelrollout_config"
MEMO_METRICS = "modelrollout_metrics"
MEMO_CAN_WRITE = "modelrollout_can_write"


@dataclass
class Clients:
    """The kubernetes API clients the operator uses (one set per process)."""

    api: client.ApiClient
    core: client.CoreV1Api
    apps: client.AppsV1Api
    custom: client.CustomObjectsApi

    @classmethod
    def from_environment(cls, pool_size: int | None = None) -> Clients:
        """In-cluster config when running in a pod, else the kubeconfig (``$KUBECONFIG``).

        ``pool_size``: the connections kept open to the apiserver. The client's default (5 per
        CPU) is below the threads that tick at once; a connection past the pool is closed after
        its request ("connection pool is full"), so every tick paid a new TLS handshake on both
        sides (``bench/operator_scale.py``)."""
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config()  # type: ignore[no-untyped-call]
        configuration = client.Configuration.get_default_copy()
        if pool_size is not None:
            configuration.connection_pool_maxsize = pool_size
        api = client.ApiClient(configuration)
        return cls(api, client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api))


@dataclass
class ProviderCache:
    """The provider of each Prometheus configuration, shared by every experiment that uses it.

    One per experiment kept one open connection per experiment: Prometheus serves 512 at once by
    default (``--web.max-connections``), so past about 500 experiments every tick of the others
    waited for its timeout and read as an outage (``bench/operator_scale.py``). Shared, the
    connections to one Prometheus are bounded by the workers. The least recently used
    configuration is closed past ``limit`` (rotated credentials leave old ones). Each provider
    tells ``on_error`` of its failed requests (the operator's query error counter).
    """

    pool_size: int
    limit: int
    on_error: Callable[[str], None] | None = None
    providers: OrderedDict[tuple[Any, ...], PrometheusProvider] = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, prometheus: Prometheus, credentials: Credentials) -> PrometheusProvider:
        key = (prometheus.address, prometheus.timeout, credentials.bearer_token, credentials.ca_pem)
        with self.lock:
            found = self.providers.get(key)
            if found is not None:
                self.providers.move_to_end(key)
                return found
            provider = PrometheusProvider.from_spec(
                prometheus, credentials, pool_size=self.pool_size, on_error=self.on_error
            )
            self.providers[key] = provider
            while len(self.providers) > self.limit:
                _, oldest = self.providers.popitem(last=False)
                oldest.close()
            return provider

    def close(self) -> None:
        with self.lock:
            for provider in self.providers.values():
                provider.close()
            self.providers.clear()


@dataclass
class Runtime:
    """What the ticks of every experiment share (see the module docstring)."""

    config: OperatorConfig
    clients: Clients
    providers: ProviderCache
    telemetry: OperatorMetrics
    #: The leader election guard (``None``: no leader election, every write is allowed).
    can_write: CanWrite | None = None
    #: What drives the ticks (set by kopf's startup handler, which starts it).
    scheduler: TickScheduler | None = None

    @classmethod
    def start(
        cls,
        operator_config: OperatorConfig,
        telemetry: OperatorMetrics | None = None,
        can_write: CanWrite | None = None,
    ) -> Runtime:
        """The runtime of ``operator_config``; ``telemetry`` is the one ``run`` serves (else a new,
        unserved one); ``can_write`` the leader election's guard."""
        telemetry = telemetry if telemetry is not None else OperatorMetrics()
        # The scheduler's workers and kopf's (create, update, delete handlers) may all be at work.
        concurrency = 2 * operator_config.max_workers
        return cls(
            operator_config,
            Clients.from_environment(pool_size=concurrency),
            ProviderCache(
                pool_size=concurrency,
                limit=operator_config.max_providers,
                on_error=telemetry.query_error,
            ),
            telemetry,
            can_write,
        )

    @property
    def cluster(self) -> KubeCluster:
        c = self.clients
        return KubeCluster(core=c.core, apps=c.apps, custom=c.custom, can_write=self.can_write)

    def router(self, spec: ModelExperimentSpec) -> Router:
        """The router of the experiment's traffic provider, fenced by the leader election guard."""
        return router_for(spec.traffic.provider.value, self.clients.api, can_write=self.can_write)

    def provider(
        self, spec: ModelExperimentSpec, namespace: str
    ) -> PrometheusProvider | list[SpecProblem] | Unknown:
        """The experiment's metrics provider, or why there is none (its credentials)."""
        prometheus = spec.metrics.prometheus
        credentials = read_credentials(self.clients.core, namespace, prometheus)
        if not isinstance(credentials, Credentials):
            return credentials
        return self.providers.get(prometheus, credentials)

    def configure(self, settings: kopf.OperatorSettings) -> None:
        """kopf settings: no peering, our finalizer name, Events from INFO up, enough workers."""
        settings.peering.standalone = True
        settings.scanning.disabled = not self.config.cluster_scan
        settings.persistence.finalizer = FINALIZER
        settings.posting.level = 20  # logging.INFO
        settings.execution.max_workers = self.config.max_workers
        settings.watching.server_timeout = 300
        settings.persistence.diffbase_storage = EssenceWithoutStatus()
        # A deleted experiment's timer may be mid-tick (a Prometheus query, a route patch); kopf
        # then re-checks whether it has exited every cancellation_polling seconds, 60 by default,
        # and only then releases the finalizer: a delete that took a minute for a tick of a second.
        settings.background.cancellation_polling = 1.0


class EssenceWithoutStatus(kopf.AnnotationsDiffBaseStorage):
    """kopf's own diff base (the same annotation), built without deep-copying the status first.

    kopf works out the *essence* of an object (spec, labels, annotations: what its update handlers
    compare) at every watch event, by deep-copying the whole object and then deleting its status.
    Each tick's status write comes back as an event, and an experiment's status is most of its
    13 KB, and ``metadata.managedFields`` much of the rest: at 1,000 experiments that copy was a
    tenth of the operator's CPU (``bench/operator_scale.py``). The essence is the same; what it
    drops is left out before the copy rather than after."""

    def build(
        self, *, body: kopf.Body, extra_fields: Any = None
    ) -> kopf.BodyEssence:
        if extra_fields:  # a handler that watches status fields: kopf's way
            return super().build(body=body, extra_fields=extra_fields)
        metadata = body.get("metadata") or {}
        slim: Any = {key: value for key, value in body.items() if key not in ("status", "metadata")}
        slim["metadata"] = {key: metadata[key] for key in _ESSENTIAL_METADATA if key in metadata}
        return super().build(body=kopf.Body(slim), extra_fields=extra_fields)


#: What kopf's essence reads of the metadata (the rest, managedFields above all, it drops).
_ESSENTIAL_METADATA = ("labels", "annotations", "ownerReferences")


def runtime_of(memo: kopf.Memo) -> Runtime:
    """The runtime that the startup handler put in kopf's memo."""
    found = memo.get(MEMO_RUNTIME)
    if not isinstance(found, Runtime):
        raise RuntimeError("the operator's runtime is not in kopf's memo: the startup handler has not run")
    return found
