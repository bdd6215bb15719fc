"""Tests of the Prometheus provider's failure handling, against a tiny local HTTP server.

The server stands in for Prometheus only for the faults a real one cannot produce on demand: a
500, a 422, a slow answer, a non-JSON body, a 401. Every answer of the real Prometheus (vectors,
parse errors, an unreachable server, a bearer token, TLS) is tested in
``tests/integration/test_metrics_prometheus.py``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from modelrollout.api import ModelExperimentSpec
from modelrollout.api.status import MetricCounters
from modelrollout.errors import InvalidInputError
from modelrollout.localenv.procs import free_port
from modelrollout.metrics import MetricsProvider, PrometheusProvider, build_query_set
from modelrollout.metrics.credentials import Credentials
from modelrollout.observations import ShadowCounts, SpecError, Unknown

pytestmark = pytest.mark.unit

AT = datetime(2025, 6, 1, 12, 0, 0, 250000, tzinfo=UTC)


@dataclass
class Seen:
    path: str
    params: dict[str, str]
    headers: dict[str, str]


Answer = tuple[int, bytes, float]  # status, body, delay in seconds


@dataclass
class FakeServer:
    url: str
    answer: Callable[[Seen], Answer]
    seen: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0


def vector(*pairs: tuple[str, float], label: str = "modelrollout_variant") -> bytes:
    result = [{"metric": {label: v}, "value": [1700000000.0, str(x)]} for v, x in pairs]
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()


def error(kind: str, message: str) -> bytes:
    return json.dumps({"status": "error", "errorType": kind, "error": message}).encode()


@pytest.fixture
def server() -> Iterator[FakeServer]:
    lock = threading.Lock()
    fake = FakeServer(url="", answer=lambda seen: (200, vector(("v6", 1), ("v7", 1)), 0.0))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parsed = urllib.parse.urlsplit(self.path)
            seen = Seen(parsed.path, dict(urllib.parse.parse_qsl(parsed.query)), dict(self.headers.items()))
            with lock:
                fake.seen.append(seen)
                fake.in_flight += 1
                fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
            try:
                status, body, delay = fake.answer(seen)
                time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                with lock:
                    fake.in_flight -= 1

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield fake
    httpd.shutdown()
    httpd.server_close()


def spec(guardrails: int = 0, shadow: bool = False) -> ModelExperimentSpec:
    body: dict[str, Any] = {
        "champion": {"name": "v6", "service": "ranker-v6"},
        "challengers": [{"name": "v7", "service": "ranker-v7"}],
        "traffic": {"provider": "istio", "istio": {"virtualService": "ranker", "routes": ["primary"]}},
        "metrics": {
            "prometheus": {"address": "http://prometheus:9090", "timeout": "2s"},
            "primary": {"name": "ctr", "type": "proportion", "minimumDetectableEffect": 0.05,
                        "successes": 'sum(clicks_total{model="{{variant}}"})',
                        "trials": 'sum(impressions_total{model="{{variant}}"})'},
            "guardrails": [{"name": f"g{i}", "type": "proportion", "maxRelativeIncrease": 0.1,
                            "successes": f'sum(e{i}_total{{model="{{{{variant}}}}"}})',
                            "trials": f'sum(r{i}_total{{model="{{{{variant}}}}"}})'}
                           for i in range(guardrails)],
        },
    }
    if shadow:
        body["shadow"] = {"enabled": True, "divergence": {"preset": "sdk-shadow-divergence"}}
    return ModelExperimentSpec.model_validate(body)


def by_query(answers: dict[str, bytes]) -> Callable[[Seen], Answer]:
    """Answer each query with the body of the first key it contains."""
    def answer(seen: Seen) -> Answer:
        for key, body in answers.items():
            if key in seen.params.get("query", ""):
                return 200, body, 0.0
        return 200, vector(), 0.0
    return answer


# --- requests -----------------------------------------------------------------------------------


def test_one_request_per_field_with_time_and_timeout(server: FakeServer) -> None:
    server.answer = by_query({"clicks_total": vector(("v6", 10), ("v7", 4)),
                              "impressions_total": vector(("v6", 100), ("v7", 50))})
    with PrometheusProvider(server.url, timeout=3) as provider:
        readings = provider.observe(build_query_set(spec(), "shop", "60s"), AT)
    assert readings == {"ctr": {"v6": MetricCounters(successes=10, trials=100),
                                "v7": MetricCounters(successes=4, trials=50)}}
    assert [s.path for s in server.seen] == ["/api/v1/query", "/api/v1/query"]
    assert server.seen[0].params["time"] == "1748779200.250"
    assert server.seen[0].params["timeout"] == "3"
    assert "Authorization" not in server.seen[0].headers


def test_bearer_token_header(server: FakeServer) -> None:
    from_spec = PrometheusProvider.from_spec(spec().metrics.prometheus, Credentials(bearer_token="s3cr3t"))
    assert (from_spec.address, from_spec.timeout) == ("http://prometheus:9090", 2.0)
    from_spec.close()
    provider = PrometheusProvider(server.url + "/", bearer_token="s3cr3t")
    assert provider.online() is None
    assert server.seen[0].headers["Authorization"] == "Bearer s3cr3t"
    assert "s3cr3t" not in repr(provider)
    assert "s3cr3t" not in repr(Credentials(bearer_token="s3cr3t"))
    provider.close()


def test_it_is_a_metrics_provider() -> None:
    provider: MetricsProvider = PrometheusProvider("http://127.0.0.1:9")
    assert isinstance(provider, MetricsProvider)
    provider.close()


# --- faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        (500, b"internal error", "Prometheus at {url} answered HTTP 500 for spec.metrics.primary.successes: "
                                 "internal error"),
        (502, b"<html>bad gateway</html>", "answered HTTP 502"),
        (422, error("execution", "many-to-many matching not allowed"),
         "Prometheus could not evaluate spec.metrics.primary.successes: many-to-many matching not allowed"),
        (503, error("timeout", "query timed out in expression evaluation"),
         "Prometheus timed out evaluating spec.metrics.primary.successes: query timed out"),
        (400, error("bad_data", "1:5: parse error: unexpected"),
         "PromQL error in spec.metrics.primary.successes: 1:5: parse error: unexpected"),
        (401, b"Unauthorized", "Prometheus at {url} refused the query (HTTP 401): Unauthorized; check "
                               "spec.metrics.prometheus.bearerTokenSecretRef"),
        (404, b"404 page not found", "answered HTTP 404 (is the address the base URL"),
        (200, b"<html>not json</html>", "gave an unreadable answer for spec.metrics.primary.successes"),
        (200, b'{"status": "success"}', "gave an unreadable answer"),
    ],
)
def test_http_faults_are_unknown_with_the_reason(server: FakeServer, status: int, body: bytes,
                                                 words: str) -> None:
    server.answer = lambda seen: (status, body, 0.0)
    with PrometheusProvider(server.url, timeout=2) as provider:
        readings = provider.observe(build_query_set(spec(), "shop", "60s"), AT)
    found = readings["ctr"]
    assert isinstance(found, Unknown)
    assert words.format(url=server.url) in found.reason
    assert len(server.seen) == 2  # an HTTP error is not retried; the next field is still asked


def test_a_slow_answer_times_out_and_the_rest_of_the_tick_is_skipped(server: FakeServer) -> None:
    server.answer = lambda seen: (200, vector(("v6", 1), ("v7", 1)), 3.0)
    with PrometheusProvider(server.url, timeout=0.5) as provider:
        started = time.monotonic()
        readings = provider.observe(build_query_set(spec(guardrails=3), "shop", "60s"), AT)
        elapsed = time.monotonic() - started
    assert elapsed < 2.5
    assert len(server.seen) == 1
    for reading in readings.values():
        assert reading == Unknown(f"Prometheus unreachable at {server.url}: no answer within 0.5 s")


def test_a_closed_port_is_unreachable_not_zero() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with PrometheusProvider(url, timeout=2) as provider:
        readings = provider.observe(build_query_set(spec(guardrails=2), "shop", "60s"), AT)
        shadow = provider.observe_shadow(build_query_set(spec(shadow=True), "shop", "60s"), AT)
        assert provider.online() == Unknown(f"Prometheus unreachable at {url}: Connection refused")
        checked = provider.check(build_query_set(spec(), "shop", "60s"))
    assert set(readings) == {"ctr", "g0", "g1"}
    refused = Unknown(f"Prometheus unreachable at {url}: Connection refused")
    assert all(r == refused for r in readings.values())
    assert shadow == {"v7": Unknown(f"Prometheus unreachable at {url}: Connection refused")}
    assert checked == Unknown(f"could not check the queries: {refused.reason}")


def test_an_unknown_host_is_unreachable() -> None:
    with PrometheusProvider("http://prometheus.invalid:9090", timeout=2) as provider:
        found = provider.online()
    assert isinstance(found, Unknown)
    assert found.reason.startswith("Prometheus unreachable at http://prometheus.invalid:9090: ")


def test_no_exception_escapes(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    provider = PrometheusProvider(server.url)

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("something odd")

    monkeypatch.setattr(provider._client, "custom_query", boom)
    readings = provider.observe(build_query_set(spec(), "shop", "60s"), AT)
    assert readings["ctr"] == Unknown(
        f"unexpected error querying Prometheus at {server.url}: RuntimeError: something odd")
    provider.close()


def test_naive_evaluation_time_is_unknown(server: FakeServer) -> None:
    with PrometheusProvider(server.url) as provider:
        found = provider.observe(build_query_set(spec(), "shop", "60s"), AT.replace(tzinfo=None))
    assert isinstance(found["ctr"], Unknown)
    assert "timezone-aware" in found["ctr"].reason
    assert server.seen == []


@pytest.mark.parametrize(("address", "kwargs"), [("prometheus:9090", {}), ("http://p", {"timeout": 0}),
                                                 ("http://p", {"max_concurrency": 0})])
def test_bad_arguments(address: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        PrometheusProvider(address, **kwargs)


# --- async --------------------------------------------------------------------------------------


def test_aobserve_runs_off_the_loop_with_bounded_concurrency(server: FakeServer) -> None:
    def answer(seen: Seen) -> Answer:
        return 200, vector(("v6", 1), ("v7", 2)), 0.2

    server.answer = answer
    query_set = build_query_set(spec(guardrails=5, shadow=True), "shop", "60s")

    async def run() -> tuple[Any, Any, int]:
        ticks = 0
        provider = PrometheusProvider(server.url, max_concurrency=3)
        task = asyncio.ensure_future(provider.aobserve(query_set, AT))
        while not task.done():  # the loop stays free while the queries run
            ticks += 1
            await asyncio.sleep(0.01)
        shadow = await provider.aobserve_shadow(query_set, AT)
        provider.close()
        return task.result(), shadow, ticks

    readings, shadow, ticks = asyncio.run(run())
    assert ticks > 10
    assert len(readings) == 6
    assert all(not isinstance(r, Unknown) for r in readings.values())
    assert readings["ctr"]["v7"] == MetricCounters(successes=2, trials=2)
    assert server.max_in_flight == 3
    assert len(server.seen) == 12 + 2
    # the fake answers with modelrollout_variant, the shadow preset groups by variant: no data
    assert isinstance(shadow["v7"], Unknown)
    assert shadow["v7"].reason.startswith("no data for variant v7")


def test_aobserve_skips_the_rest_once_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    query_set = build_query_set(spec(guardrails=6), "shop", "60s")

    async def run() -> Any:
        with PrometheusProvider(url, max_concurrency=1) as provider:
            return await provider.aobserve(query_set, AT)

    readings = asyncio.run(run())
    assert {r.reason for r in readings.values() if isinstance(r, Unknown)} == {
        f"Prometheus unreachable at {url}: Connection refused"}
    assert len(readings) == 7


def test_shadow_counts_from_the_preset(server: FakeServer) -> None:
    server.answer = by_query({"differing": vector(("v7", 3), label="variant"),
                              "compared": vector(("v7", 90), label="variant")})
    with PrometheusProvider(server.url) as provider:
        found = provider.observe_shadow(build_query_set(spec(shadow=True), "shop", "60s"), AT)
        assert provider.observe_shadow(build_query_set(spec(), "shop", "60s"), AT) == {}
    assert found == {"v7": ShadowCounts(compared=90, differing=3)}


# --- check --------------------------------------------------------------------------------------


def test_check_maps_bad_data_to_spec_errors(server: FakeServer) -> None:
    def answer(seen: Seen) -> Answer:
        if seen.path == "/api/v1/format_query" and "clicks_total" in seen.params["query"]:
            return 400, error("bad_data", 'invalid parameter "query": 1:5: parse error: unexpected'), 0.0
        return 200, json.dumps({"status": "success", "data": seen.params["query"]}).encode(), 0.0

    server.answer = answer
    with PrometheusProvider(server.url) as provider:
        found = provider.check(build_query_set(spec(), "shop", "60s"))
    assert found == [SpecError("spec.metrics.primary.successes",
                               "the query does not parse (rendered for variant v6): "
                               'invalid parameter "query": 1:5: parse error: unexpected')]
    assert {s.path for s in server.seen} == {"/api/v1/format_query"}


def test_check_falls_back_to_evaluation_without_format_query(server: FakeServer) -> None:
    def answer(seen: Seen) -> Answer:
        if seen.path == "/api/v1/format_query":
            return 404, b"404 page not found", 0.0
        if "impressions_total" in seen.params["query"]:
            return 400, error("bad_data", "parse error"), 0.0
        return 200, vector(), 0.0

    server.answer = answer
    with PrometheusProvider(server.url) as provider:
        found = provider.check(build_query_set(spec(), "shop", "60s"))
    assert found == [SpecError("spec.metrics.primary.trials",
                                "the query does not parse (rendered for variant v6): parse error")]
    assert [s.path for s in server.seen].count("/api/v1/format_query") == 1  # remembered


def test_check_other_failures_are_unknown(server: FakeServer) -> None:
    server.answer = lambda seen: (500, b"oops", 0.0)
    with PrometheusProvider(server.url) as provider:
        found = provider.check(build_query_set(spec(), "shop", "60s"))
    assert isinstance(found, Unknown)
    assert "answered HTTP 500" in found.reason


# --- CA file ------------------------------------------------------------------------------------


def test_the_ca_file_is_private_and_removed_on_close() -> None:
    provider = PrometheusProvider("https://127.0.0.1:1", ca_pem="-----BEGIN CERTIFICATE-----\n...")
    path = Path(provider._session.verify)
    assert path.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert path.stat().st_mode & 0o077 == 0
    provider.close()
    assert not path.exists()
    provider.close()  # twice is fine
