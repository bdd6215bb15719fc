"""The mesh stand-in: a small HTTP router that plays the part of Envoy in the e2e stack.

Envoy (and so Istio or a Gateway API implementation) cannot be installed here. This process
takes its place between the load generator and the simulated model servers, on loopback, and
behaves the way the operator needs to rely on:

**What it implements**

* It *watches* one Istio VirtualService or one Gateway API HTTPRoute on the apiserver (list, then
  watch from that resourceVersion; a new list on ``410 Gone``; reconnects with back-off on any
  error) and routes by the object's live content; a change applies as soon as the watch event
  arrives (well under a second on loopback). A deleted or missing object routes nothing (404).
* Routing as described in :mod:`modelrollout.devstack.sim.routes`: header/path/method/query matches
  (``exact``, ``prefix``, ``regex``, presence, ``withoutHeaders``), weights per request,
  Istio subsets, ``mirror``/``mirrors`` with percentages and Gateway API ``RequestMirror``
  filters. The bucket header is honoured through header matches, which is how the operator
  expresses a sticky split.
* Mirroring as Envoy does it: fire-and-forget, concurrent with the live request, ``Host`` /
  ``:authority`` with ``-shadow`` appended to the host name (``ranker`` -> ``ranker-shadow``).
  The mirror's answer never reaches the client.
* Istio's standard metrics on the admin port's ``/metrics``: ``istio_requests_total`` and
  ``istio_request_duration_milliseconds`` (``_bucket``/``_sum``/``_count``, Istio's default
  buckets 0.5 ms ... 3,600,000 ms) with Istio's 25 labels (``reporter``, ``source_workload``,
  ``destination_workload``, ``destination_service``, ``destination_version``,
  ``response_code``, ``response_flags``, ...). Each live request is reported twice, like a
  client sidecar and a server sidecar would: ``reporter="source"`` and
  ``reporter="destination"``. ``response_flags`` follows Envoy: ``-``, ``NR`` (no route, 404),
  ``NC`` (no such backend, 503), ``UF`` (connect failure, 503), ``UC`` (upstream connection
  terminated, 503), ``UT`` (upstream timeout, 504); requests that never reached a server are
  reported by the source only.
* Mirrored requests are reported the way Istio's telemetry reports shadowed traffic: by the
  receiving side only (``reporter="destination"``; the client side has no report for them,
  istio/istio#23496), with the destination labels of the shadow workload. Istio takes
  ``destination_service`` from the service metadata of the inbound cluster when there is some,
  so the label keeps the plain service name although the request's ``Host`` carries
  ``-shadow``. Queries that must exclude shadow traffic should use ``reporter="source"`` or the
  models' own live counters (``impressions_total``).
* The SDK-equivalent shadow comparison: the mesh parses the JSON ``prediction`` of the live and
  the mirrored answer to the same request and counts
  ``modelrollout_shadow_compared_total{variant, baseline}`` and
  ``modelrollout_shadow_differing_total{variant, baseline}`` (see
  :class:`modelrollout.sdk.ShadowComparator`), ``variant`` being the shadow's variant and
  ``baseline`` the live one's.
* Admin port (like Envoy's): ``/metrics``, ``/healthz`` (200 once the first list succeeded),
  ``/routes`` (the table in use, with the object's resourceVersion and generation).

**What it does not implement**: TLS and mTLS (``connection_security_policy`` is reported as
Istio would with mTLS on, ``mutual_tls``), retries, timeouts from the route, fault injection,
redirects and rewrites, header modifiers, load balancing across several endpoints of a Service
(one URL per backend), outlier detection, DestinationRules (a subset is just a name in the
backend map), hostnames and parentRefs, HTTP/2 and gRPC, request/response size metrics, and TCP
metrics. Conditions it cannot evaluate (``sourceLabels``, ``gateways``, ...) are ignored and
listed in ``/routes``.

Run: ``python -m modelrollout.devstack.sim.mesh --kubeconfig admin.kubeconfig --namespace shop
--virtual-service ranker --backend ranker-v6=http://127.0.0.1:8001,variant=v6 --backend
ranker-v7=http://127.0.0.1:8002,variant=v7 --port 0 --admin-port 0 --ready-file mesh.json``
(or ``--config mesh.json`` with the fields of :class:`MeshConfig`).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from modelrollout.devstack.sim.common import (
    LOOPBACK,
    json_response,
    run_service,
    start_site,
    wait_for_shutdown_signal,
    write_ready_file,
)
from modelrollout.devstack.sim.routes import (
    BackendRef,
    Mirror,
    RequestInfo,
    RouteParseError,
    RouteTable,
    parse_route_object,
)
from modelrollout.sdk.shadow import ShadowComparator

ISTIO_LABELS = (
    "reporter",
    "source_workload", "source_workload_namespace", "source_principal", "source_app", "source_version",
    "source_canonical_service", "source_canonical_revision", "source_cluster",
    "destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
    "destination_version", "destination_service", "destination_service_name",
    "destination_service_namespace", "destination_canonical_service", "destination_canonical_revision",
    "destination_cluster",
    "request_protocol", "response_flags", "connection_security_policy", "response_code",
    "grpc_response_status",
)
"""Istio's standard labels of ``istio_requests_total`` and ``istio_request_duration_milliseconds``."""

ISTIO_DURATION_BUCKETS_MS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
                             300000, 600000, 1800000, 3600000)
"""Istio's default bucket boundaries of ``istio_request_duration_milliseconds`` (ms)."""

ROUTE_KINDS: dict[str, tuple[str, str, str]] = {
    "istio": ("networking.istio.io", "v1", "virtualservices"),
    "gatewayapi": ("gateway.networking.k8s.io", "v1", "httproutes"),
}
CLUSTER_ID = "Kubernetes"
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailer", "trailers", "transfer-encoding", "upgrade", "host", "content-length"})


# ---- configuration ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Backend:
    """A Service the routes may name, served by one simulated model server."""

    service: str
    url: str
    variant: str = ""
    workload: str = ""
    version: str = ""
    app: str = ""
    subset: str | None = None
    namespace: str = ""

    def resolved(self, namespace: str) -> Backend:
        """Fill the defaults: workload = service, version = variant, app = service without -suffix."""
        variant = self.variant or self.version or self.service
        return dataclasses.replace(
            self,
            url=self.url.rstrip("/"),
            variant=variant,
            workload=self.workload or self.service,
            version=self.version or variant,
            app=self.app or self.service,
            namespace=self.namespace or namespace,
        )

    @classmethod
    def parse(cls, text: str) -> Backend:
        """``service[/subset]=url[,key=value...]`` with keys variant, workload, version, app, namespace."""
        head, _, url_and_rest = text.partition("=")
        if not url_and_rest:
            raise ValueError(f"backend {text!r}: expected service[/subset]=url[,key=value...]")
        service, _, subset = head.partition("/")
        url, *pairs = url_and_rest.split(",")
        values: dict[str, Any] = {"service": service.strip(), "url": url.strip(), "subset": subset or None}
        allowed = {"variant", "workload", "version", "app", "namespace"}
        for pair in pairs:
            key, _, value = pair.partition("=")
            if key.strip() not in allowed:
                known = ", ".join(sorted(allowed))
                raise ValueError(f"backend {text!r}: unknown key {key!r} (allowed: {known})")
            values[key.strip()] = value.strip()
        return cls(**values)


@dataclass(frozen=True)
class MeshConfig:
    """Everything the mesh stand-in needs; JSON-serialisable (``--config``)."""

    namespace: str
    kind: str                       # "istio" (VirtualService) or "gatewayapi" (HTTPRoute)
    route: str                      # the object's name
    backends: tuple[Backend, ...]
    kubeconfig: str | None = None
    route_names: tuple[str, ...] = ()   # Istio: honour only these http routes (empty: all)
    api_version: str = "v1"
    source_workload: str = "loadgen"
    source_namespace: str = ""
    source_app: str = "loadgen"
    weight_header: str | None = None    # Envoy's WeightedCluster.header_name emulation; off
    upstream_timeout_s: float = 15.0
    max_mirrors_in_flight: int = 2000
    seed: int | None = None
    watch_timeout_s: int = 30

    def __post_init__(self) -> None:
        if self.kind not in ROUTE_KINDS:
            raise ValueError(f"kind must be one of {', '.join(ROUTE_KINDS)}, not {self.kind!r}")
        if not self.backends:
            raise ValueError("at least one backend is needed")

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["backends"] = [dataclasses.asdict(b) for b in self.backends]
        data["route_names"] = list(self.route_names)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MeshConfig:
        values = dict(data)
        values["backends"] = tuple(Backend(**b) for b in values.get("backends", ()))
        values["route_names"] = tuple(values.get("route_names", ()))
        return cls(**values)


class BackendMap:
    """Looks up the backend of a route destination: by (service, subset), then by service."""

    def __init__(self, backends: Sequence[Backend], namespace: str) -> None:
        self.backends = [b.resolved(namespace) for b in backends]
        self._by_key: dict[tuple[str, str | None], Backend] = {}
        for backend in self.backends:
            self._by_key[(backend.service, backend.subset)] = backend
            self._by_key.setdefault((backend.service, None), backend)

    def get(self, ref: BackendRef) -> Backend | None:
        return self._by_key.get((ref.service, ref.subset)) or (
            None if ref.subset else self._by_key.get((ref.service, None)))


# ---- metrics ----------------------------------------------------------------------------------
class IstioMetrics:
    """``istio_requests_total`` and ``istio_request_duration_milliseconds`` with Istio's labels."""

    def __init__(self, registry: CollectorRegistry, config: MeshConfig) -> None:
        self.requests = Counter("istio_requests", "Requests handled by the mesh (Istio standard metric).",
                                ISTIO_LABELS, registry=registry)
        self.duration = Histogram("istio_request_duration_milliseconds",
                                  "Request duration in milliseconds (Istio standard metric).",
                                  ISTIO_LABELS, buckets=ISTIO_DURATION_BUCKETS_MS, registry=registry)
        source_ns = config.source_namespace or config.namespace
        self._source = (
            config.source_workload, source_ns,
            f"spiffe://cluster.local/ns/{source_ns}/sa/{config.source_workload}",
            config.source_app, "unknown", config.source_app, "latest", CLUSTER_ID,
        )
        self._children: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}

    @staticmethod
    def destination_labels(backend: Backend | None) -> tuple[str, ...]:
        if backend is None:
            return ("unknown",) * 11
        ns = backend.namespace
        return (
            backend.workload, ns, f"spiffe://cluster.local/ns/{ns}/sa/{backend.workload}", backend.app,
            backend.version, f"{backend.service}.{ns}.svc.cluster.local", backend.service, ns,
            backend.app, backend.version, CLUSTER_ID,
        )

    def labels(self, reporter: str, backend: Backend | None, code: int, flags: str) -> tuple[str, ...]:
        security = "mutual_tls" if reporter == "destination" else "unknown"
        return ((reporter, *self._source, *self.destination_labels(backend), "http", flags, security,
                 str(code), ""))

    def record(self, reporter: str, backend: Backend | None, code: int, flags: str,
               duration_ms: float) -> None:
        key = (reporter, f"{backend.service}/{backend.subset}" if backend else "", str(code), flags)
        children = self._children.get(key)
        if children is None:
            values = self.labels(reporter, backend, code, flags)
            children = (self.requests.labels(*values), self.duration.labels(*values))
            self._children[key] = children
        children[0].inc()
        children[1].observe(duration_ms)


# ---- watching the route object ----------------------------------------------------------------
class RouteWatcher(threading.Thread):
    """Lists and watches one route object; calls ``publish`` with each new table (in its thread)."""

    def __init__(self, config: MeshConfig, publish: Callable[[RouteTable], None],
                 log: Callable[[str], None] = print) -> None:
        super().__init__(name="route-watcher", daemon=True)
        import kubernetes.config

        kube: Any = kubernetes  # the client has no type hints
        # Load the kubeconfig now, in the caller's thread, so that a bad one fails the start.
        self.api_client = kube.config.new_client_from_config(config_file=config.kubeconfig)
        self.config = config
        self.publish = publish
        self.log = log
        self.stopping = threading.Event()
        self.synced = threading.Event()
        self.restarts = 0
        group, _, plural = ROUTE_KINDS[config.kind]
        self.group, self.version, self.plural = group, config.api_version, plural

    def stop(self) -> None:
        self.stopping.set()

    def _apply(self, obj: Mapping[str, Any] | None, resource_version: str) -> None:
        config = self.config
        if obj is None:
            self.publish(RouteTable.empty(config.kind, config.route, config.namespace, resource_version))
            return
        try:
            table = parse_route_object(config.kind, obj, config.route_names)
        except (RouteParseError, KeyError, TypeError, ValueError) as exc:
            self.log(f"mesh: cannot use {config.route} at resourceVersion {resource_version}: {exc}; "
                     "keeping the previous routes")
            return
        self.publish(table)

    def run(self) -> None:
        import kubernetes.client
        from kubernetes.client.exceptions import ApiException

        kube: Any = kubernetes  # the client has no type hints
        custom = kube.client.CustomObjectsApi(self.api_client)
        backoff = 0.2
        resource_version = ""
        while not self.stopping.is_set():
            try:
                resource_version = self._watch_once(custom, resource_version)
                backoff = 0.2
            except ApiException as exc:
                self.restarts += 1
                resource_version = ""
                if exc.status == 410:
                    self.log("mesh: watch expired (410 Gone); listing again")
                    continue
                self.log(f"mesh: apiserver answered {exc.status} {exc.reason}; retrying in {backoff:.1f} s")
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception as exc:
                self.restarts += 1
                self.log(f"mesh: watch failed ({type(exc).__name__}: {exc}); retrying in {backoff:.1f} s")
                resource_version = ""
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
        self.api_client.close()

    def _watch_once(self, custom: Any, resource_version: str) -> str:
        """List the route when there is no resource version yet, then watch it until the watch ends;
        the last resource version seen."""
        import kubernetes.watch
        from kubernetes.client.exceptions import ApiException

        kube: Any = kubernetes
        args = (self.group, self.version, self.config.namespace, self.plural)
        selector = f"metadata.name={self.config.route}"
        if not resource_version:
            listing = custom.list_namespaced_custom_object(*args, field_selector=selector,
                                                           _request_timeout=10)
            resource_version = str(listing["metadata"]["resourceVersion"])
            items = listing.get("items") or []
            self._apply(items[0] if items else None, resource_version)
            self.synced.set()
        stream = kube.watch.Watch()
        events = stream.stream(custom.list_namespaced_custom_object, *args, field_selector=selector,
                               resource_version=resource_version, allow_watch_bookmarks=True,
                               timeout_seconds=self.config.watch_timeout_s,
                               _request_timeout=self.config.watch_timeout_s + 10)
        for event in events:
            if self.stopping.is_set():
                stream.stop()
                break
            kind, obj = event["type"], event["object"]
            if kind == "ERROR":
                if isinstance(obj, Mapping) and obj.get("code") == 410:
                    raise ApiException(status=410, reason="Gone")
                raise RuntimeError(f"watch error: {obj}")
            resource_version = str(obj["metadata"]["resourceVersion"])
            if kind in ("ADDED", "MODIFIED"):
                self._apply(obj, resource_version)
            elif kind == "DELETED":
                self._apply(None, resource_version)
        return resource_version


# ---- the proxy --------------------------------------------------------------------------------
def shadow_host(host: str) -> str:
    """Envoy's mirror authority: ``-shadow`` appended to the host name, before any port."""
    if not host:
        return "unknown-shadow"
    if host.startswith("["):  # an IPv6 literal
        end = host.find("]")
        return host[: end + 1] + "-shadow" + host[end + 1:]
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        return f"{name}-shadow:{port}"
    return host + "-shadow"


def prediction_of(body: bytes) -> Any:
    """The ``prediction`` field of a JSON answer, or None."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return data.get("prediction") if isinstance(data, dict) else None


class Mesh:
    """The router: one route table (swapped on each watch event), backends and metrics."""

    def __init__(self, config: MeshConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.backends = BackendMap(config.backends, config.namespace)
        self.registry = CollectorRegistry(auto_describe=True)
        self.istio = IstioMetrics(self.registry, config)
        self.shadow = ShadowComparator(self.registry)
        self.table_generation = Gauge("modelrollout_mesh_route_generation",
                                      "metadata.generation of the route object in use.",
                                      registry=self.registry)
        self.table_updates = Counter("modelrollout_mesh_route_updates", "Route tables applied.",
                                     registry=self.registry)
        self.mirrors_dropped = Counter("modelrollout_mesh_mirrors_dropped",
                                       "Mirrors not sent because too many were in flight.",
                                       registry=self.registry)
        self.table = RouteTable.empty(config.kind, config.route, config.namespace)
        self.table_applied_at = 0.0
        self.session: aiohttp.ClientSession | None = None
        self.watcher: RouteWatcher | None = None
        self._mirror_tasks: set[asyncio.Task[tuple[int, Any] | None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- route table --
    def set_table(self, table: RouteTable) -> None:
        """Use ``table`` from the next request on."""
        self.table = table
        self.table_applied_at = time.time()
        self.table_generation.set(table.generation)
        self.table_updates.inc()
        summary = json.dumps(table.weights(), separators=(",", ":"))
        mirrors = [f"{m.backend.describe()}@{m.percent:g}%" for r in table.rules for m in r.mirrors]
        print(f"mesh: routes of {table.kind} {table.name} at resourceVersion {table.resource_version}: "
              f"{summary}{' mirrors ' + ','.join(mirrors) if mirrors else ''}", flush=True)
        for warning in table.warnings:
            print(f"mesh: warning: {warning}", flush=True)

    def publish_threadsafe(self, table: RouteTable) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self.set_table, table)

    # -- lifecycle --
    async def start(self, watch: bool = True) -> None:
        self._loop = asyncio.get_running_loop()
        watcher = RouteWatcher(self.config, self.publish_threadsafe) if watch else None
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30, force_close=False)
        self.session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                             skip_auto_headers=("User-Agent", "Accept-Encoding"))
        if watcher is not None:
            self.watcher = watcher
            watcher.start()

    async def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        for task in list(self._mirror_tasks):
            task.cancel()
        if self.session is not None:
            await self.session.close()

    @property
    def synced(self) -> bool:
        return self.watcher is None or self.watcher.synced.is_set()

    # -- forwarding --
    def _upstream_headers(self, request: web.Request, host: str) -> dict[str, str]:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Host"] = host
        headers.setdefault("x-request-id", uuid.uuid4().hex)
        headers["x-forwarded-proto"] = "http"
        return headers

    async def _send(self, backend: Backend, request: web.Request, body: bytes,
                    headers: Mapping[str, str]) -> tuple[int, bytes, str, str]:
        """(status, body, content type, response flags) of one upstream request."""
        assert self.session is not None
        url = backend.url + request.path_qs
        timeout = aiohttp.ClientTimeout(total=self.config.upstream_timeout_s)
        try:
            async with self.session.request(request.method, url, data=body or None, headers=headers,
                                            timeout=timeout, allow_redirects=False) as response:
                data = await response.read()
                return response.status, data, response.headers.get("Content-Type", ""), "-"
        except TimeoutError:
            return 504, b"upstream request timeout", "text/plain", "UT"
        except aiohttp.ClientConnectorError:
            return 503, b"upstream connect error or disconnect/reset before headers", "text/plain", "UF"
        except aiohttp.ClientError:
            return 503, b"upstream connect error or disconnect/reset before headers", "text/plain", "UC"

    async def _mirror(self, backend: Backend, request: web.Request, body: bytes) -> tuple[int, Any] | None:
        headers = self._upstream_headers(request, shadow_host(request.headers.get("Host", "")))
        started = time.perf_counter()
        status, data, _, flags = await self._send(backend, request, body, headers)
        if flags in ("UF", "UT"):
            return None  # never reached (or never answered by) the shadow's server: no report
        self.istio.record("destination", backend, status, flags, (time.perf_counter() - started) * 1000.0)
        return status, prediction_of(data) if status == 200 else None

    def _start_mirrors(self, mirrors: Sequence[Mirror], request: web.Request,
                       body: bytes) -> list[tuple[Backend, asyncio.Task[tuple[int, Any] | None]]]:
        started = []
        for mirror in mirrors:
            if mirror.percent < 100.0 and self.rng.random() * 100.0 >= mirror.percent:
                continue
            backend = self.backends.get(mirror.backend)
            if backend is None:
                continue
            if len(self._mirror_tasks) >= self.config.max_mirrors_in_flight:
                self.mirrors_dropped.inc()
                continue
            task = asyncio.create_task(self._mirror(backend, request, body))
            self._mirror_tasks.add(task)
            task.add_done_callback(self._mirror_tasks.discard)
            started.append((backend, task))
        return started

    def _compare_later(self, live: Backend, live_body: bytes,
                       mirrors: list[tuple[Backend, asyncio.Task[tuple[int, Any] | None]]]) -> None:
        live_prediction = prediction_of(live_body)
        if live_prediction is None:
            return
        for shadow_backend, task in mirrors:
            def compare(done: asyncio.Task[tuple[int, Any] | None], shadow: Backend = shadow_backend) -> None:
                if done.cancelled() or done.exception() is not None:
                    return
                result = done.result()
                if result is None or result[0] != 200 or result[1] is None:
                    return
                self.shadow.record(shadow.variant, live.variant, live_prediction, result[1])

            task.add_done_callback(compare)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        body = await request.read()
        info = RequestInfo(request.method, request.path, request.headers, request.query)
        selection = self.table.select(info, self.rng, self.config.weight_header)
        if selection is None:
            self.istio.record("source", None, 404, "NR", (time.perf_counter() - started) * 1000.0)
            return web.Response(status=404, text="no route matched (NR)\n")
        if selection.backend is None:
            self.istio.record("source", None, 500, "-", (time.perf_counter() - started) * 1000.0)
            return web.Response(status=500, text="every backend of the matched rule has weight 0\n")
        backend = self.backends.get(selection.backend)
        if backend is None:
            self.istio.record("source", None, 503, "NC", (time.perf_counter() - started) * 1000.0)
            return web.Response(status=503, text=f"no backend for {selection.backend.describe()} (NC)\n")
        mirrors = self._start_mirrors(selection.mirrors, request, body) if selection.mirrors else []
        upstream_started = time.perf_counter()
        status, data, content_type, flags = await self._send(
            backend, request, body, self._upstream_headers(request, request.headers.get("Host", "")))
        finished = time.perf_counter()
        upstream_ms = (finished - upstream_started) * 1000.0
        if flags not in ("UF", "UT"):
            self.istio.record("destination", backend, status, flags, upstream_ms)
        self.istio.record("source", backend, status, flags, (finished - started) * 1000.0)
        if mirrors and status == 200:
            self._compare_later(backend, data, mirrors)
        headers = {"x-envoy-upstream-service-time": str(int(upstream_ms)), "server": "modelrollout-mesh"}
        if content_type:
            headers["Content-Type"] = content_type
        return web.Response(status=status, body=data, headers=headers)

    # -- admin --
    async def handle_metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def handle_health(self, _request: web.Request) -> web.Response:
        body = {"status": "ok" if self.synced else "syncing", "synced": self.synced,
                "resourceVersion": self.table.resource_version}
        return json_response(body, status=200 if self.synced else 503)

    async def handle_routes(self, _request: web.Request) -> web.Response:
        data = self.table.to_json()
        data["appliedAt"] = self.table_applied_at
        data["watchRestarts"] = self.watcher.restarts if self.watcher else 0
        data["backends"] = [dataclasses.asdict(b) for b in self.backends.backends]
        return json_response(data)

    def proxy_app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    def admin_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self.handle_metrics)
        app.router.add_get("/healthz", self.handle_health)
        app.router.add_get("/routes", self.handle_routes)
        return app


# ---- command line -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m modelrollout.devstack.sim.mesh",
                                     description="The mesh stand-in (plays Envoy's part) on loopback.")
    parser.add_argument("--config", type=Path, help="a JSON file with the fields of MeshConfig")
    parser.add_argument("--kubeconfig", help="kubeconfig of the apiserver to watch (default: $KUBECONFIG)")
    parser.add_argument("--namespace", help="namespace of the route object")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--virtual-service", help="watch this Istio VirtualService")
    target.add_argument("--http-route", help="watch this Gateway API HTTPRoute")
    parser.add_argument("--route-name", action="append", default=[],
                        help="Istio: honour only this http route (repeatable; default: all)")
    parser.add_argument("--backend", action="append", default=[], type=Backend.parse,
                        help="service[/subset]=url[,variant=..][,workload=..][,version=..][,app=..]")
    parser.add_argument("--source-workload", help="source_workload label of the client (default loadgen)")
    parser.add_argument("--weight-header", help="pick weighted backends by this integer header (off)")
    parser.add_argument("--seed", type=int, help="seed of the weight and mirror draws")
    parser.add_argument("--port", type=int, default=0, help="proxy port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--admin-port", type=int, default=0, help="admin port (metrics, health, routes)")
    parser.add_argument("--ready-file", type=Path, help="write {port, admin_port, pid} here once serving")
    return parser


def config_from_args(args: argparse.Namespace) -> MeshConfig:
    data: dict[str, Any] = json.loads(args.config.read_text()) if args.config else {}
    if args.kubeconfig:
        data["kubeconfig"] = args.kubeconfig
    if args.namespace:
        data["namespace"] = args.namespace
    if args.virtual_service:
        data["kind"], data["route"] = "istio", args.virtual_service
    if args.http_route:
        data["kind"], data["route"] = "gatewayapi", args.http_route
    if args.route_name:
        data["route_names"] = args.route_name
    if args.backend:
        data["backends"] = [dataclasses.asdict(b) for b in args.backend]
    for key in ("source_workload", "weight_header", "seed"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    missing = [k for k in ("namespace", "kind", "route", "backends") if not data.get(k)]
    if missing:
        raise ValueError(f"missing: {', '.join(missing)} (flags or --config)")
    return MeshConfig.from_json(data)


async def serve(config: MeshConfig, port: int = 0, admin_port: int = 0,
                ready_file: Path | None = None) -> None:
    """Serve until SIGTERM or SIGINT."""
    mesh = Mesh(config)
    await mesh.start()
    runners = []
    try:
        proxy_runner, bound = await start_site(mesh.proxy_app(), port)
        runners.append(proxy_runner)
        admin_runner, admin_bound = await start_site(mesh.admin_app(), admin_port)
        runners.append(admin_runner)
        print(f"mesh: proxy on http://{LOOPBACK}:{bound}, admin on http://{LOOPBACK}:{admin_bound}; "
              f"watching {config.kind} {config.namespace}/{config.route}", flush=True)
        if ready_file is not None:
            write_ready_file(ready_file, {"port": bound, "admin_port": admin_bound, "pid": os.getpid()})
        await wait_for_shutdown_signal()
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
        await mesh.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except (ValueError, TypeError, json.JSONDecodeError, OSError) as exc:
        print(f"invalid mesh configuration: {exc}", file=sys.stderr)
        return 2
    run_service(lambda: serve(config, args.port, args.admin_port, args.ready_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())

