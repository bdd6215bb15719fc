"""The Prometheus provider against the real Prometheus of the local environment.

A test exporter (prometheus-client, on loopback) serves outcome counters, Istio's standard
metrics with Istio's labels for two workloads, Envoy cluster statistics and the SDK's shadow
counters. Prometheus scrapes it every second. The counters start at zero and are scraped at zero,
then are raised once; every reading counts the raw samples from a checkpoint at a scrape of the
zeros (``counted_since``, with no checkpoint and no anchors in memory) up to a scrape that saw the
final values, so the expected counts are the values the exporter was raised by, exactly.

Names carry a random token, so the series of other tests in the same Prometheus never match.
"""

from __future__ import annotations

import base64
import math
import secrets
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from modelrollout.api import ModelExperimentSpec
from modelrollout.api.observations import CounterReading, MetricReading, SpecProblem, Unknown
from modelrollout.api.spec import Prometheus as PrometheusSpec
from modelrollout.api.status import MetricCounters
from modelrollout.devstack.controlplane.certs import make_certificates
from modelrollout.devstack.controlplane.prometheus import Prometheus
from modelrollout.metrics import (
    DIVERGENCE,
    ISTIO_DURATION_BUCKETS_MS,
    AnchorMemo,
    CounterSet,
    Credentials,
    PrometheusProvider,
    build_counter_set,
    read_credentials,
)

pytestmark = pytest.mark.integration

TOK = secrets.token_hex(3)
NS = f"mx-{TOK}"  # the experiment's namespace in Istio's labels
OTHER_NS = f"other-{TOK}"
V6, V7, V8 = f"v6-{TOK}", f"v7-{TOK}", f"v8-{TOK}"  # v8 never has any series
JOB = f"metrics-{TOK}"
ISTIO_LABELS = ("reporter", "source_workload", "destination_workload", "destination_workload_namespace",
                "destination_service_name", "destination_service_namespace", "destination_version",
                "response_code")


class EnvoyStats(Collector):
    """``envoy_cluster_upstream_rq_xx`` as Envoy names it (no ``_total``), values set by the test."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str, str], float] = {}

    def collect(self) -> Iterator[Metric]:
        metric = Metric("envoy_cluster_upstream_rq_xx", "Upstream responses by class.", "unknown")
        for (label, cluster, code_class), value in sorted(self.values.items()):
            metric.add_sample("envoy_cluster_upstream_rq_xx",
                              {label: cluster, "envoy_response_code_class": code_class}, value)
        yield metric


@dataclass
class Scraped:
    """The exporter's values are in Prometheus: zeros up to the scrape at ``zeros`` (the first scrape
    was after ``started``), the final values in the scrape at ``at``."""

    url: str
    started: datetime
    zeros: datetime
    at: datetime


def _istio(requests: Counter, duration: Histogram, reporter: str, service: str, namespace: str,
           code: str) -> tuple[Any, Any]:
    labels = (reporter, "loadgen", f"{service}.dep", namespace, service, namespace, "v1", code)
    return requests.labels(*labels), duration.labels(*labels)


def _raise_everything(reg: dict[str, Any]) -> None:
    """The final values (the series exist already, at 0)."""
    clicks, views = reg["clicks"], reg["views"]
    clicks.labels(V6, NS).inc(30)
    views.labels(V6, NS).inc(200)
    clicks.labels(V7, NS).inc(12)
    views.labels(V7, NS).inc(100)
    for i, name in enumerate(("obs_count", "obs_sum", "obs_sq")):
        reg[name].labels(V6).inc((4, 10, 30)[i])
        reg[name].labels(V7).inc((2, 3, 5)[i])
    for i, name in enumerate(("units", "ys", "xs", "yys", "xxs", "xys")):
        reg[name].labels(V6).inc(i + 1)
        reg[name].labels(V7).inc(i + 2)
    requests, duration = reg["requests"], reg["duration"]
    ok6 = _istio(requests, duration, "destination", "ranker-v6", NS, "200")
    err6 = _istio(requests, duration, "destination", "ranker-v6", NS, "503")
    ok7 = _istio(requests, duration, "destination", "ranker-v7", NS, "200")
    ok6[0].inc(97)
    err6[0].inc(3)
    ok7[0].inc(40)
    for _ in range(80):
        ok6[1].observe(100)
    for _ in range(20):
        ok6[1].observe(700)
    for _ in range(30):
        ok7[1].observe(400)
    for _ in range(10):
        ok7[1].observe(5000)
    _istio(requests, duration, "source", "ranker-v6", NS, "200")[0].inc(500)  # the client side: not read
    _istio(requests, duration, "destination", "ranker-v6", OTHER_NS, "500")[0].inc(1000)  # elsewhere
    envoy: EnvoyStats = reg["envoy"]
    v6 = f"outbound|80||ranker-v6.{NS}.svc.cluster.local"
    v7 = f"outbound|8080|blue|ranker-v7.{NS}.svc.cluster.local"
    envoy.values.update({("envoy_cluster_name", v6, "2"): 90, ("envoy_cluster_name", v6, "5"): 10,
                         ("cluster_name", v7, "2"): 50,
                         ("envoy_cluster_name", f"outbound|80||ranker-v6.{OTHER_NS}.svc.cluster.local", "5"):
                         999})
    reg["compared"].labels(V7, V6).inc(120)
    reg["differing"].labels(V7, V6).inc(6)


def _exporter() -> tuple[CollectorRegistry, dict[str, Any]]:
    registry = CollectorRegistry()
    reg: dict[str, Any] = {
        "clicks": Counter("clicks", "Clicks.", ["model", "namespace"], registry=registry),
        "views": Counter("impressions", "Impressions.", ["model", "namespace"], registry=registry),
        "requests": Counter("istio_requests", "Requests (Istio).", ISTIO_LABELS, registry=registry),
        "duration": Histogram("istio_request_duration_milliseconds", "Duration (Istio).", ISTIO_LABELS,
                              buckets=ISTIO_DURATION_BUCKETS_MS, registry=registry),
        "compared": Counter("modelrollout_shadow_compared", "Compared.", ["variant", "baseline"],
                            registry=registry),
        "differing": Counter("modelrollout_shadow_differing", "Differing.", ["variant", "baseline"],
                             registry=registry),
        "envoy": EnvoyStats(),
    }
    for name in ("obs_count", "obs_sum", "obs_sq", "units", "ys", "xs", "yys", "xxs", "xys"):
        reg[name] = Counter(name, name, ["model"], registry=registry)
    registry.register(reg["envoy"])
    # Every series exists, at 0, before the first scrape.
    for variant in (V6, V7):
        reg["clicks"].labels(variant, NS)
        reg["views"].labels(variant, NS)
        for name in ("obs_count", "obs_sum", "obs_sq", "units", "ys", "xs", "yys", "xxs", "xys"):
            reg[name].labels(variant)
    for args in (("destination", "ranker-v6", NS, "200"), ("destination", "ranker-v6", NS, "503"),
                 ("destination", "ranker-v7", NS, "200"), ("source", "ranker-v6", NS, "200"),
                 ("destination", "ranker-v6", OTHER_NS, "500")):
        _istio(reg["requests"], reg["duration"], *args)
    reg["compared"].labels(V7, V6)
    reg["differing"].labels(V7, V6)
    reg["envoy"].values.update({
        ("envoy_cluster_name", f"outbound|80||ranker-v6.{NS}.svc.cluster.local", "2"): 0,
        ("envoy_cluster_name", f"outbound|80||ranker-v6.{NS}.svc.cluster.local", "5"): 0,
        ("cluster_name", f"outbound|8080|blue|ranker-v7.{NS}.svc.cluster.local", "2"): 0,
        ("envoy_cluster_name", f"outbound|80||ranker-v6.{OTHER_NS}.svc.cluster.local", "5"): 0,
    })
    reg["done"] = Gauge("exporter_done", "1 once the final values are set.", registry=registry)
    return registry, reg


def _scalar(prometheus: Prometheus, promql: str) -> float | None:
    result = prometheus.query(promql)
    return float(result[0]["value"][1]) if result else None


def _last_scrape(prometheus: Prometheus) -> float:
    found = _scalar(prometheus, f'timestamp(up{{job="{JOB}"}})')
    assert found is not None
    return found


@pytest.fixture(scope="module")
def scraped(localenv_prometheus: Prometheus) -> Iterator[Scraped]:
    prometheus = localenv_prometheus
    registry, reg = _exporter()
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        started = datetime.now(UTC)
        prometheus.set_targets(JOB, [f"127.0.0.1:{server.server_port}"])
        prometheus.wait_for_targets(JOB, 1, up=True)
        prometheus.process.wait_until(
            lambda: (_scalar(prometheus, f'count_over_time(up{{job="{JOB}"}}[5m])') or 0) >= 2, 30,
            "two scrapes of zeros")
        zeros = _last_scrape(prometheus)  # every sample up to here is 0
        _raise_everything(reg)
        reg["done"].set(1)
        prometheus.process.wait_until(
            lambda: _scalar(prometheus, f'exporter_done{{job="{JOB}"}}') == 1, 30, "the final values")
        seen = _scalar(prometheus, f'timestamp(exporter_done{{job="{JOB}"}})')
        assert seen is not None
        # A scrape after the one that first saw "done" has every final value.
        prometheus.process.wait_until(lambda: _last_scrape(prometheus) > seen, 30, "one more scrape")
        at = _last_scrape(prometheus)
        prometheus.set_targets(JOB, [])
        yield Scraped(prometheus.url, started, datetime.fromtimestamp(zeros, UTC),
                      datetime.fromtimestamp(at, UTC))
    finally:
        prometheus.set_targets(JOB, [], wait=False)
        server.shutdown()
        server.server_close()
        thread.join(5)


def spec(*, guardrails: list[dict[str, Any]] | None = None, secondary: list[dict[str, Any]] | None = None,
         primary: dict[str, Any] | None = None, provider: str = "istio", shadow: bool = False,
         address: str = "http://prometheus:9090") -> ModelExperimentSpec:
    variants = [{"name": name, "service": f"ranker-{name[:2]}", "deployment": f"ranker-{name[:2]}.dep"}
                for name in (V6, V7, V8)]
    traffic: dict[str, Any] = {"provider": provider}
    if provider == "istio":
        traffic["istio"] = {"virtualService": "ranker", "routes": ["primary"]}
    elif provider == "gatewayAPI":
        traffic["gatewayAPI"] = {"httpRoute": "ranker", "ruleNames": ["predict"]}
    else:
        traffic["service"] = {"service": "ranker"}
    body: dict[str, Any] = {
        "champion": variants[0], "challengers": variants[1:], "traffic": traffic,
        "metrics": {
            "prometheus": {"address": address, "timeout": "5s"},
            "primary": primary or {
                "name": "ctr", "type": "proportion", "minimumDetectableEffect": 0.05,
                "successes": 'clicks_total{model="{{variant}}", namespace="{{namespace}}"}',
                "trials": 'impressions_total{model="{{variant}}"}'},
            "secondary": secondary or [],
            "guardrails": guardrails or [],
        },
    }
    if shadow:
        body["shadow"] = {"enabled": True, "divergence": {"preset": "sdk-shadow-divergence"}}
    return ModelExperimentSpec.model_validate(body)


Counted = dict[str, "dict[str, MetricCounters] | Unknown"]


def summed(reading: MetricReading) -> dict[str, MetricCounters] | Unknown:
    """Each variant's increments added up by field, as the status keeps them."""
    if isinstance(reading, Unknown):
        return reading
    assert isinstance(reading, CounterReading)
    return {variant: MetricCounters(**{attr: math.fsum(i.value for i in increments)
                                       for attr, increments in counts.fields.items()})
            for variant, counts in reading.variants.items()}


def read(provider: PrometheusProvider, scraped: Scraped, counter_set: CounterSet,
         since: datetime | None = None) -> Counted:
    """Every metric counted from the scrape of the zeros (no checkpoint, no anchors) to the final values."""
    readings = provider.observe(counter_set, scraped.at, checkpoints={},
                                counted_since=since or scraped.zeros, memo=AnchorMemo())
    return {name: summed(reading) for name, reading in readings.items()}


def observe(scraped: Scraped, the_spec: ModelExperimentSpec, variants: Sequence[str] = (V6, V7)) -> Counted:
    with PrometheusProvider(scraped.url) as provider:
        return read(provider, scraped, build_counter_set(the_spec, NS, variants=variants))


def _counter(name: str) -> str:
    return name + '{model="{{variant}}"}'


CTR = {V6: MetricCounters(successes=30, trials=200), V7: MetricCounters(successes=12, trials=100)}


# --- readings -----------------------------------------------------------------------------------


def test_user_selectors_of_every_type(scraped: Scraped) -> None:
    mean = {"name": "latency", "type": "mean", "count": _counter("obs_count_total"),
            "sum": _counter("obs_sum_total"), "sumOfSquares": _counter("obs_sq_total")}
    ratio = {"name": "per-user", "type": "ratio", **{
        field: _counter(f"{counter}_total") for field, counter in (
            ("units", "units"), ("numerator", "ys"), ("denominator", "xs"), ("numeratorSquares", "yys"),
            ("denominatorSquares", "xxs"), ("crossProducts", "xys"))}}
    readings = observe(scraped, spec(secondary=[mean, ratio]))
    assert readings["ctr"] == CTR
    assert readings["latency"] == {V6: MetricCounters(count=4, sum=10, sum_of_squares=30),
                                   V7: MetricCounters(count=2, sum=3, sum_of_squares=5)}
    assert readings["per-user"] == {
        V6: MetricCounters(units=1, numerator=2, denominator=3, numerator_squares=4, denominator_squares=5,
                           cross_products=6),
        V7: MetricCounters(units=2, numerator=3, denominator=4, numerator_squares=5, denominator_squares=6,
                           cross_products=7)}


def test_counting_from_before_the_first_scrape_gives_the_same_counts(scraped: Scraped) -> None:
    # no sample before the start at all: each series is anchored at its first sample (a zero)
    with PrometheusProvider(scraped.url) as provider:
        readings = read(provider, scraped, build_counter_set(spec(), NS, variants=(V6, V7)), scraped.started)
    assert readings["ctr"] == CTR


def test_the_next_reading_continues_from_the_checkpoint(scraped: Scraped) -> None:
    counter_set = build_counter_set(spec(), NS, variants=(V6, V7))
    memo = AnchorMemo()
    with PrometheusProvider(scraped.url) as provider:
        first = provider.observe(counter_set, scraped.at, checkpoints={}, counted_since=scraped.zeros,
                                 memo=memo)
        reading = first["ctr"]
        assert isinstance(reading, CounterReading)
        assert summed(reading) == CTR
        checkpoints = {"ctr": reading.until}
        with_memo = provider.observe(counter_set, scraped.at, checkpoints=checkpoints,
                                     counted_since=scraped.zeros, memo=memo)
        restarted = provider.observe(counter_set, scraped.at, checkpoints=checkpoints,
                                     counted_since=scraped.zeros, memo=AnchorMemo())
    nothing = {V6: MetricCounters(successes=0, trials=0), V7: MetricCounters(successes=0, trials=0)}
    assert summed(with_memo["ctr"]) == nothing
    assert summed(restarted["ctr"]) == nothing


def test_istio_presets(scraped: Scraped) -> None:
    guardrails = [
        {"name": "errors", "preset": "istio-error-rate", "maxRelativeIncrease": 0.1},
        {"name": "success", "preset": "istio-request-success-rate", "maxRelativeIncrease": 0.1,
         "higherIsWorse": False},
        {"name": "slow", "preset": "istio-latency-over", "thresholdMs": 500, "maxAbsoluteIncrease": 0.01},
    ]
    readings = observe(scraped, spec(guardrails=guardrails))
    # reporter="source" (500 requests) and the other namespace (1000 errors) are not counted;
    # v7 has requests and no 5xx series at all: 0 errors, not "no data".
    assert readings["errors"] == {V6: MetricCounters(successes=3, trials=100),
                                  V7: MetricCounters(successes=0, trials=40)}
    assert readings["success"] == {V6: MetricCounters(successes=97, trials=100),
                                   V7: MetricCounters(successes=40, trials=40)}
    # the Python client writes le="500.0": the le matcher's spellings find it
    assert readings["slow"] == {V6: MetricCounters(successes=20, trials=100),
                                V7: MetricCounters(successes=10, trials=40)}


def test_istio_presets_by_workload_with_provider_service(scraped: Scraped) -> None:
    guardrails = [{"name": "errors", "preset": "istio-error-rate", "maxRelativeIncrease": 0.1}]
    readings = observe(scraped, spec(guardrails=guardrails, provider="service"))
    # the Deployments' names have a dot (ranker-v6.dep), escaped in the regex for RE2: still found
    assert readings["errors"] == {V6: MetricCounters(successes=3, trials=100),
                                  V7: MetricCounters(successes=0, trials=40)}


def test_gateway_error_rate_from_envoy_cluster_stats(scraped: Scraped) -> None:
    guardrails = [{"name": "gw", "preset": "gateway-error-rate", "maxRelativeIncrease": 0.1}]
    readings = observe(scraped, spec(guardrails=guardrails, provider="gatewayAPI"))
    # v6 in envoy_cluster_name, v7 in cluster_name (subset blue); the other namespace's 999 not counted
    assert readings["gw"] == {V6: MetricCounters(successes=10, trials=100),
                              V7: MetricCounters(successes=0, trials=50)}


def test_sdk_shadow_divergence(scraped: Scraped) -> None:
    readings = observe(scraped, spec(shadow=True))
    assert readings[DIVERGENCE] == {V7: MetricCounters(successes=6, trials=120)}
    assert readings["ctr"] == CTR
    without_series = observe(scraped, spec(shadow=True), variants=(V6, V7, V8))
    found = without_series[DIVERGENCE]
    assert isinstance(found, Unknown)
    assert found.reason.startswith(f"no data for variant {V8} from spec.shadow.divergence.preset")


def test_a_variant_without_series_is_unknown_never_zero(scraped: Scraped) -> None:
    guardrails = [{"name": "errors", "preset": "istio-error-rate", "maxRelativeIncrease": 0.1}]
    readings = observe(scraped, spec(guardrails=guardrails), variants=(V6, V7, V8))
    assert readings["ctr"] == Unknown(
        f"no data for variant {V8} from spec.metrics.primary.successes (selector: clicks_total"
        f'{{model="{V8}", namespace="{NS}"}})')
    assert isinstance(readings["errors"], Unknown)
    assert readings["errors"].reason.startswith(
        f"no data for variant {V8} from spec.metrics.guardrails[0].preset")


# --- checks -------------------------------------------------------------------------------------


def test_every_preset_and_selector_parses(prometheus: Prometheus) -> None:
    guardrails = [
        {"name": "errors", "preset": "istio-error-rate", "maxRelativeIncrease": 0.1},
        {"name": "success", "preset": "istio-request-success-rate", "maxRelativeIncrease": 0.1,
         "higherIsWorse": False},
        {"name": "slow", "preset": "istio-latency-over", "thresholdMs": 3600000, "maxAbsoluteIncrease": 0.01},
        {"name": "gw", "preset": "gateway-error-rate", "maxRelativeIncrease": 0.1},
        {"name": "quoted", "type": "proportion", "maxRelativeIncrease": 0.1,
         "successes": "x_total{m='{{variant}}', path=`/predict`, code!~\"5..\",}",
         "trials": '{__name__="y_total", m="{{variant}}", ns="{{namespace}}"}'},
    ]
    counter_set = build_counter_set(spec(guardrails=guardrails, shadow=True), NS)
    with PrometheusProvider(prometheus.url) as provider:
        assert provider.check(counter_set) == []
        assert provider.online() is None
        # the same selectors are read, and select nothing: Unknown, never zeros
        readings = provider.observe(counter_set, datetime.now(UTC), checkpoints={},
                                    counted_since=datetime.now(UTC), memo=AnchorMemo())
    assert set(readings) == {"ctr", "errors", "success", "slow", "gw", "quoted", DIVERGENCE}
    for reading in readings.values():
        assert isinstance(reading, Unknown)
        assert reading.reason.startswith("no data for variant")


def test_selectors_that_prometheus_does_not_parse_are_spec_errors(prometheus: Prometheus) -> None:
    # each parses here (a metric name, Python's regular expressions) but not in PromQL (keywords, RE2)
    primary = {"name": "ctr", "type": "proportion", "minimumDetectableEffect": 0.05,
               "successes": 'nan{model="{{variant}}"}',
               "trials": 'impressions_total{model="{{variant}}", job=~"(?=ranker)ranker"}'}
    guardrails = [{"name": "slow", "preset": "istio-latency-over", "thresholdMs": 750,
                   "maxAbsoluteIncrease": 0.1},
                  {"name": "keyword", "type": "proportion", "maxRelativeIncrease": 0.1,
                   "successes": 'bool{m="{{variant}}"}', "trials": 'r_total{m="{{variant}}"}'}]
    counter_set = build_counter_set(spec(primary=primary, guardrails=guardrails), NS)
    with PrometheusProvider(prometheus.url) as provider:
        errors = provider.check(counter_set)
    assert isinstance(errors, list)
    by_path = {e.path: e.message for e in errors}
    assert set(by_path) == {"spec.metrics.guardrails[0].thresholdMs", "spec.metrics.primary.successes",
                            "spec.metrics.primary.trials", "spec.metrics.guardrails[1].successes"}
    prefix = "the selector does not parse as a series selector: "
    assert by_path["spec.metrics.primary.successes"].startswith(prefix)
    assert "parse error" in by_path["spec.metrics.primary.successes"]
    assert by_path["spec.metrics.primary.trials"].startswith(prefix)
    assert "error parsing regexp" in by_path["spec.metrics.primary.trials"]
    assert "parse error" in by_path["spec.metrics.guardrails[1].successes"]
    assert "750" in by_path["spec.metrics.guardrails[0].thresholdMs"]


# --- Prometheus down ----------------------------------------------------------------------------


def test_prometheus_stopped_is_unknown_unreachable(localenv_prometheus: Prometheus, tmp_path: Path) -> None:
    own = Prometheus(tmp_path / "prometheus", binary=localenv_prometheus.binary)
    own.start()
    counter_set = build_counter_set(spec(shadow=True), NS, variants=(V6, V7))
    provider = PrometheusProvider(own.url, timeout=3)

    def now_reading() -> dict[str, MetricReading]:
        now = datetime.now(UTC)
        return provider.observe(counter_set, now, checkpoints={}, counted_since=now, memo=AnchorMemo())

    try:
        assert provider.online() is None
        assert provider.check(counter_set) == []
        before = now_reading()
        assert isinstance(before["ctr"], Unknown)
        assert before["ctr"].reason.startswith("no data")
    finally:
        own.stop()
    started = time.monotonic()
    refused = Unknown(f"Prometheus unreachable at {own.url}: Connection refused")
    assert now_reading() == {"ctr": refused, DIVERGENCE: refused}
    assert provider.check(counter_set) == Unknown(f"could not check the queries: {refused.reason}")
    assert time.monotonic() - started < 3
    provider.close()


# --- a bearer token and a CA, through a proxy in front of Prometheus ----------------------------


@dataclass
class Proxy:
    url: str
    seen_authorization: list[str | None]


def _proxy(upstream: str, token: str,
           tls: tuple[Path, Path] | None = None) -> tuple[Proxy, ThreadingHTTPServer]:
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            authorization = self.headers.get("Authorization")
            seen.append(authorization)
            if authorization != f"Bearer {token}":
                self._send(401, b"Unauthorized\n")
                return
            try:
                with urllib.request.urlopen(upstream + self.path, timeout=10) as response:
                    self._send(response.status, response.read())
            except urllib.error.HTTPError as exc:
                self._send(exc.code, exc.read())

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        scheme = "https"
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    return Proxy(f"{scheme}://127.0.0.1:{httpd.server_address[1]}", seen), httpd


def _secret(core: Any, namespace: str, name: str, data: dict[str, bytes]) -> None:
    core.create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name=name),
        data={k: base64.b64encode(v).decode() for k, v in data.items()}))


def test_bearer_token_from_a_secret(scraped: Scraped, k8s_admin: Any, namespace: str) -> None:
    core = client.CoreV1Api(k8s_admin)
    _secret(core, namespace, "prometheus-reader", {"token": b"s3cr3t-t0ken\n"})
    proxy, httpd = _proxy(scraped.url, "s3cr3t-t0ken")
    try:
        the_spec = spec(address=proxy.url)
        counter_set = build_counter_set(the_spec, NS, variants=(V6, V7))
        with PrometheusProvider.from_spec(the_spec.metrics.prometheus) as anonymous:
            refused = read(anonymous, scraped, counter_set)
        assert refused == {"ctr": Unknown(
            f"Prometheus at {proxy.url} refused the query (HTTP 401): Unauthorized; check "
            "spec.metrics.prometheus.bearerTokenSecretRef")}
        ref = {"name": "prometheus-reader", "key": "token"}
        prometheus_spec = PrometheusSpec.model_validate({"address": proxy.url, "bearerTokenSecretRef": ref})
        credentials = read_credentials(core, namespace, prometheus_spec)
        assert isinstance(credentials, Credentials)
        assert credentials.bearer_token == "s3cr3t-t0ken"
        with PrometheusProvider.from_spec(prometheus_spec, credentials) as provider:
            readings = read(provider, scraped, counter_set)
            assert provider.check(counter_set) == []
        assert readings["ctr"] == CTR
        assert proxy.seen_authorization[0] is None
        assert proxy.seen_authorization[-1] == "Bearer s3cr3t-t0ken"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_tls_with_a_ca_from_a_config_map(scraped: Scraped, k8s_admin: Any, namespace: str,
                                         tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "certs")
    core = client.CoreV1Api(k8s_admin)
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="prometheus-ca"), data={"ca.crt": certs.ca_cert.read_text()}))
    _secret(core, namespace, "reader", {"token": b"tls-token"})
    proxy, httpd = _proxy(scraped.url, "tls-token", tls=(certs.serving_cert, certs.serving_key))
    try:
        prometheus_spec = PrometheusSpec.model_validate({
            "address": proxy.url, "bearerTokenSecretRef": {"name": "reader", "key": "token"},
            "caConfigMapRef": {"name": "prometheus-ca", "key": "ca.crt"}})
        credentials = read_credentials(core, namespace, prometheus_spec)
        assert isinstance(credentials, Credentials)
        assert credentials.ca_pem is not None
        counter_set = build_counter_set(spec(), NS, variants=(V6, V7))
        with PrometheusProvider.from_spec(prometheus_spec, credentials) as provider:
            assert read(provider, scraped, counter_set)["ctr"] == CTR
        with PrometheusProvider(proxy.url, bearer_token="tls-token") as untrusting:
            found = untrusting.online()
        assert isinstance(found, Unknown)
        assert found.reason == f"Prometheus unreachable at {proxy.url}: TLS error: certificate verify failed"
    finally:
        httpd.shutdown()
        httpd.server_close()


# --- credentials: what goes wrong -----------------------------------------------------------------


def test_credential_errors_name_the_field(k8s_admin: Any, namespace: str, tmp_path: Path) -> None:
    core = client.CoreV1Api(k8s_admin)
    _secret(core, namespace, "empty", {"token": b"  \n"})
    _secret(core, namespace, "two-lines", {"token": b"abc\ndef"})
    _secret(core, namespace, "not-pem", {"ca.crt": b"hello"})
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="binary-ca"),
        binary_data={"ca.crt": base64.b64encode(make_certificates(tmp_path).ca_cert.read_bytes()).decode()}))
    def read(**refs: Any) -> Any:
        tls = "caSecretRef" in refs or "caConfigMapRef" in refs
        address = "https://prometheus:9090" if tls else "http://prometheus:9090"
        return read_credentials(core, namespace, PrometheusSpec.model_validate({"address": address, **refs}))

    assert read() == Credentials()
    assert read(bearerTokenSecretRef={"name": "missing", "key": "token"}) == [SpecProblem(
        "spec.metrics.prometheus.bearerTokenSecretRef",
        f"Secret {namespace}/missing does not exist: create it with the key token, or fix the name")]
    assert read(bearerTokenSecretRef={"name": "empty", "key": "tok"}) == [SpecProblem(
        "spec.metrics.prometheus.bearerTokenSecretRef",
        f"Secret {namespace}/empty has no key tok (keys: token)")]
    assert read(bearerTokenSecretRef={"name": "empty", "key": "token"}) == [SpecProblem(
        "spec.metrics.prometheus.bearerTokenSecretRef",
        f"the bearer token in Secret {namespace}/empty key token is empty")]
    found = read(bearerTokenSecretRef={"name": "two-lines", "key": "token"}, caSecretRef={"name": "not-pem",
                                                                                          "key": "ca.crt"})
    assert [e.path for e in found] == ["spec.metrics.prometheus.bearerTokenSecretRef",
                                       "spec.metrics.prometheus.caSecretRef"]
    assert "one line" in found[0].message
    assert "no PEM certificate" in found[1].message
    assert read(caConfigMapRef={"name": "missing", "key": "ca.crt"}) == [SpecProblem(
        "spec.metrics.prometheus.caConfigMapRef",
        f"ConfigMap {namespace}/missing does not exist: create it with the key ca.crt, or fix the name")]
    binary = read(caConfigMapRef={"name": "binary-ca", "key": "ca.crt"})
    assert isinstance(binary, Credentials)
    assert binary.ca_pem is not None
    assert binary.ca_pem.startswith("-----BEGIN CERTIFICATE-----")


def test_forbidden_or_unreachable_apiserver_is_unknown(k8s_user: Any, namespace: str) -> None:
    ref = PrometheusSpec.model_validate(
        {"address": "http://p:9090", "bearerTokenSecretRef": {"name": "reader", "key": "token"}})
    found = read_credentials(client.CoreV1Api(k8s_user), namespace, ref)
    assert isinstance(found, Unknown)
    assert found.reason.startswith(f"could not read Secret {namespace}/reader for "
                                   "spec.metrics.prometheus.bearerTokenSecretRef: HTTP 403")
    assert "role" in found.reason
