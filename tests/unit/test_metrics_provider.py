"""Tests of the Prometheus provider: its requests and failure handling, against a tiny local HTTP server.

The server stands in for Prometheus for the shape of the requests and for the faults a real one
cannot produce on demand: a 500, a 422, a slow answer, a non-JSON body, a 401. Every answer of the
real Prometheus (raw samples, parse errors, an unreachable server, a bearer token, TLS) is tested
in ``tests/integration/test_metrics_prometheus.py``.
"""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelrollout.api import ModelExperimentSpec
from modelrollout.api.observations import CounterReading, MetricReading, SpecProblem, Unknown
from modelrollout.devstack.controlplane.procs import free_port
from modelrollout.errors import InvalidInputError
from modelrollout.metrics import (
    DIVERGENCE,
    AnchorMemo,
    CounterQuery,
    CounterSet,
    MetricsProvider,
    PrometheusProvider,
    build_counter_set,
)
from modelrollout.metrics.counting import seconds
from modelrollout.metrics.credentials import Credentials

pytestmark = pytest.mark.unit

AT = datetime(2025, 6, 1, 12, 0, 0, 250000, tzinfo=UTC)
S = AT.timestamp()  # 1748779200.25
SINCE = AT - timedelta(seconds=60)
CLICKS = 'clicks_total{model=~"v6|v7"}'
VIEWS = 'views_total{model=~"v6|v7"}'
#: The spec field of the first query of a tick (failure reasons name it, not the selector).
FIRST = "spec.metrics.primary.successes"


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

    def queries(self) -> list[str]:
        return [s.params.get("query", "") for s in self.seen]


def success(result: Any, kind: str = "matrix") -> bytes:
    return json.dumps({"status": "success", "data": {"resultType": kind, "result": result}}).encode()


def matrix(label: str = "model", extra: Mapping[str, str] | None = None,
           **samples: list[tuple[float, float]]) -> bytes:
    """A range-vector answer: one series per variant (``label`` = the keyword), samples (time, value)."""
    result = []
    for variant, points in samples.items():
        metric: dict[str, str] = {**(extra or {}), label: variant}
        result.append({"metric": metric, "values": [[t, str(v)] for t, v in points]})
    return success(result)


def formatted(seen: Seen) -> bytes:
    """The answer of /api/v1/format_query: the query, formatted."""
    return json.dumps({"status": "success", "data": seen.params["query"]}).encode()


def error(kind: str, message: str) -> bytes:
    return json.dumps({"status": "error", "errorType": kind, "error": message}).encode()


#: Counters that started before the counting start (at S - 70) and counted 10/4 clicks, 100/50 views.
ANSWERS = {
    "clicks_total": matrix(v6=[(S - 70, 0), (S - 10, 10)], v7=[(S - 70, 0), (S - 10, 4)]),
    "views_total": matrix(v6=[(S - 70, 0), (S - 10, 100)], v7=[(S - 70, 0), (S - 10, 50)]),
}
EXPECTED = {"v6": {"successes": 10, "trials": 100}, "v7": {"successes": 4, "trials": 50}}


@pytest.fixture
def server() -> Iterator[FakeServer]:
    lock = threading.Lock()
    fake = FakeServer(url="", answer=lambda seen: (200, success([]), 0.0))

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


def spec(guardrails: int = 0, shadow: bool = False, threshold_ms: float | None = None) -> ModelExperimentSpec:
    guards: list[dict[str, Any]] = [
        {"name": f"g{i}", "type": "proportion", "maxRelativeIncrease": 0.1,
         "successes": f'e{i}_total{{model="{{{{variant}}}}"}}',
         "trials": f'r{i}_total{{model="{{{{variant}}}}"}}'}
        for i in range(guardrails)]
    if threshold_ms is not None:
        guards.append({"name": "slow", "preset": "istio-latency-over", "thresholdMs": threshold_ms,
                       "maxAbsoluteIncrease": 0.1})
    body: dict[str, Any] = {
        "champion": {"name": "v6", "service": "ranker-v6"},
        "challengers": [{"name": "v7", "service": "ranker-v7"}],
        "traffic": {"provider": "istio", "istio": {"virtualService": "ranker", "routes": ["primary"]}},
        "metrics": {
            "prometheus": {"address": "http://prometheus:9090", "timeout": "2s"},
            "primary": {"name": "ctr", "type": "proportion", "minimumDetectableEffect": 0.05,
                        "successes": 'clicks_total{model="{{variant}}"}',
                        "trials": 'views_total{model="{{variant}}"}'},
            "guardrails": guards,
        },
    }
    if shadow:
        body["shadow"] = {"enabled": True, "divergence": {"preset": "sdk-shadow-divergence"}}
    return ModelExperimentSpec.model_validate(body)


def counters(**kwargs: Any) -> CounterSet:
    return build_counter_set(spec(**kwargs), "shop")


def by_query(answers: Mapping[str, bytes]) -> Callable[[Seen], Answer]:
    """Answer each query with the body of the first key it contains (an empty matrix otherwise)."""
    def answer(seen: Seen) -> Answer:
        for key, body in answers.items():
            if key in seen.params.get("query", ""):
                return 200, body, 0.0
        return 200, success([]), 0.0
    return answer


def observe(provider: PrometheusProvider, counter_set: CounterSet, at: datetime = AT,
            memo: AnchorMemo | None = None, checkpoint: datetime | None = None) -> dict[str, MetricReading]:
    checkpoints = {m.name: checkpoint for m in counter_set.all_metrics()}
    return provider.observe(counter_set, at, checkpoints=checkpoints, counted_since=SINCE,
                            memo=memo if memo is not None else AnchorMemo())


def sums(reading: MetricReading) -> dict[str, dict[str, float]]:
    """Each variant's increments summed by field."""
    assert isinstance(reading, CounterReading), reading
    return {v: {f: math.fsum(i.value for i in incs) for f, incs in counts.fields.items()}
            for v, counts in reading.variants.items()}


# --- requests -----------------------------------------------------------------------------------


def test_a_counter_query_is_an_instant_query_of_its_range_at_the_millisecond(server: FakeServer) -> None:
    server.answer = by_query(ANSWERS)
    with PrometheusProvider(server.url, timeout=3) as provider:
        readings = observe(provider, counters())
    assert sums(readings["ctr"]) == EXPECTED
    assert [s.path for s in server.seen] == ["/api/v1/query", "/api/v1/query"]
    # from LOOKBACK (5 min) before the counting start to the reading: 360 s
    assert server.queries() == [f"{CLICKS}[360000ms]", f"{VIEWS}[360000ms]"]
    assert server.seen[0].params["time"] == "1748779200.250"
    assert server.seen[0].params["timeout"] == "3"
    assert "Authorization" not in server.seen[0].headers


def test_the_next_reading_asks_from_the_oldest_anchor_on(server: FakeServer) -> None:
    server.answer = by_query(ANSWERS)
    memo = AnchorMemo()
    with PrometheusProvider(server.url) as provider:
        observe(provider, counters(), memo=memo)
        server.seen.clear()
        later = observe(provider, counters(), AT + timedelta(seconds=30, microseconds=999), memo,
                        checkpoint=AT)
    # from 1 ms before the last samples (S - 10) to AT + 30 s (the microseconds dropped)
    span = math.ceil(((S + 30) - (S - 10 - 0.001)) * 1000)
    assert server.queries() == [f"{CLICKS}[{span}ms]", f"{VIEWS}[{span}ms]"]
    assert 40001 <= span <= 40002
    assert server.seen[0].params["time"] == "1748779230.250"
    assert sums(later["ctr"]) == {"v6": {"successes": 0, "trials": 0}, "v7": {"successes": 0, "trials": 0}}


@settings(max_examples=300, deadline=None)
@given(st.integers(1_700_000_000_000, 1_800_000_000_000), st.integers(1, 3_600_000), st.integers(0, 999))
def test_the_range_of_a_query_reaches_just_before_its_start(start_ms: int, span_ms: int, micros: int) -> None:
    # a range from just before an anchor sample (start_ms - 1 ms, as the counting asks) to a reading
    # time with microseconds: the range sent must hold the anchor and start at most 1 ms earlier
    sent: list[tuple[str, dict[str, str]]] = []
    provider = PrometheusProvider("http://127.0.0.1:9")

    def custom_query(query: str, params: dict[str, str], timeout: float) -> list[Any]:
        sent.append((query, params))
        return []

    provider._client.custom_query = custom_query
    end = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=start_ms + span_ms, microseconds=micros)
    provider.fetch_range(CounterQuery("x", "p"), start_ms / 1000 - 0.001, seconds(end))
    provider.close()
    ((query, params),) = sent
    length = int(query.removeprefix("x[").removesuffix("ms]"))
    time_ms = int(params["time"].replace(".", ""))
    assert time_ms == start_ms + span_ms  # the reading's millisecond, rounded down
    assert start_ms - 2 <= time_ms - length <= start_ms - 1


def test_a_series_without_an_anchor_is_looked_up_with_last_over_time(server: FakeServer) -> None:
    server.answer = by_query({
        "last_over_time": success([{"metric": {"model": "v7"}, "value": [S, "100"]}], "vector"),
        "clicks_total": ANSWERS["clicks_total"],
        "views_total": matrix(v6=[(S - 70, 0), (S - 10, 100)], v7=[(S - 30, 104), (S - 10, 150)]),
    })
    with PrometheusProvider(server.url) as provider:
        readings = observe(provider, counters())
    assert sums(readings["ctr"])["v7"]["trials"] == 50  # 104 - 100, then 46
    lookup = next(q for q in server.queries() if q.startswith("last_over_time"))
    assert lookup == f"last_over_time({VIEWS}[3600000ms])"
    assert server.seen[-1].params["time"] == "1748778840.250"  # at the range's start


def test_the_shadow_divergence_comes_with_the_other_metrics(server: FakeServer) -> None:
    shadow = {"variant": "v7"}
    server.answer = by_query({
        **ANSWERS,
        "differing": matrix("baseline", shadow, v6=[(S - 70, 0), (S - 10, 3)]),
        "compared": matrix("baseline", shadow, v6=[(S - 70, 0), (S - 10, 90)]),
    })
    with PrometheusProvider(server.url) as provider:
        readings = observe(provider, counters(shadow=True))
        without = observe(provider, counters())
    assert sums(readings[DIVERGENCE]) == {"v7": {"successes": 3, "trials": 90}}
    assert set(without) == {"ctr"}
    shadow_queries = [q for q in server.queries() if "shadow" in q]
    assert shadow_queries == ['modelrollout_shadow_differing_total{variant=~"v7", baseline="v6"}[360000ms]',
                              'modelrollout_shadow_compared_total{variant=~"v7", baseline="v6"}[360000ms]']


def test_the_latency_count_is_asked_once_per_tick(server: FakeServer) -> None:
    # the latency preset's _count is in both its fields: one request per tick
    services = {"destination_service_namespace": "shop", "reporter": "destination"}
    requests: dict[str, list[tuple[float, float]]] = {
        "ranker-v6": [(S - 70, 0), (S - 10, 200)], "ranker-v7": [(S - 70, 0), (S - 10, 100)]}
    within: dict[str, list[tuple[float, float]]] = {
        "ranker-v6": [(S - 70, 0), (S - 10, 190)], "ranker-v7": [(S - 70, 0), (S - 10, 80)]}
    server.answer = by_query({
        **ANSWERS,
        "_count{": matrix("destination_service_name", services, **requests),
        "_bucket{": matrix("destination_service_name", {**services, "le": "500"}, **within),
    })
    with PrometheusProvider(server.url) as provider:
        readings = observe(provider, counters(threshold_ms=500))
    assert sums(readings["slow"]) == {"v6": {"successes": 10, "trials": 200},
                                      "v7": {"successes": 20, "trials": 100}}
    names = [q.split("{")[0] for q in server.queries()]
    assert names == ["clicks_total", "views_total", "istio_request_duration_milliseconds_count",
                     "istio_request_duration_milliseconds_bucket"]


def test_bearer_token_header(server: FakeServer) -> None:
    from_spec = PrometheusProvider.from_spec(spec().metrics.prometheus, Credentials(bearer_token="s3cr3t"))
    assert (from_spec.address, from_spec.timeout) == ("http://prometheus:9090", 2.0)
    from_spec.close()
    provider = PrometheusProvider(server.url + "/", bearer_token="s3cr3t")
    assert provider.online() is None
    assert server.seen[0].params["query"] == "vector(1)"
    assert server.seen[0].headers["Authorization"] == "Bearer s3cr3t"
    observe(provider, counters())
    assert all(s.headers["Authorization"] == "Bearer s3cr3t" for s in server.seen)
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
        (500, b"internal error", "Prometheus at {url} answered HTTP 500 for " + FIRST + ": internal error"),
        (502, b"<html>bad gateway</html>", "answered HTTP 502"),
        (422, error("execution", "expanding series: too many samples"),
         "Prometheus could not evaluate " + FIRST + ": expanding series: too many samples"),
        (503, error("timeout", "query timed out in expression evaluation"),
         "Prometheus timed out evaluating " + FIRST + ": query timed out"),
        (400, error("bad_data", "1:5: parse error: unexpected"),
         "PromQL error in " + FIRST + ": 1:5: parse error: unexpected"),
        (401, b"Unauthorized", "Prometheus at {url} refused the query (HTTP 401): Unauthorized; check "
                               "spec.metrics.prometheus.bearerTokenSecretRef"),
        (403, b"Forbidden", "refused the query (HTTP 403): Forbidden"),
        (404, b"404 page not found", "answered HTTP 404 (is the address the base URL"),
        (200, b"<html>not json</html>", "gave an unreadable answer for " + FIRST + ": JSONDecodeError"),
        (200, b'{"status": "success"}', "gave an unreadable answer"),
        (200, success([{"metric": {"model": "v6"}, "value": [1, "1"]}], "vector"),
         "Prometheus answered an instant vector instead of a range vector for " + FIRST + " (selector: "
         + CLICKS + ")"),
    ],
)
def test_http_faults_are_unknown_with_the_reason(server: FakeServer, status: int, body: bytes,
                                                 words: str) -> None:
    server.answer = lambda seen: (status, body, 0.0)
    with PrometheusProvider(server.url, timeout=2) as provider:
        readings = observe(provider, counters(guardrails=1))
    found = readings["ctr"]
    assert isinstance(found, Unknown)
    assert words.replace("{url}", server.url) in found.reason
    assert isinstance(readings["g0"], Unknown)
    if FIRST in words:  # each reason names the spec field of its query
        assert "spec.metrics.guardrails[0].successes" in readings["g0"].reason
    assert len(server.seen) == 2  # not retried; the metric stops at its first failure, the next is asked


def test_a_slow_answer_times_out_and_the_rest_of_the_tick_is_skipped(server: FakeServer) -> None:
    server.answer = lambda seen: (200, success([]), 3.0)
    with PrometheusProvider(server.url, timeout=0.5) as provider:
        started = time.monotonic()
        readings = observe(provider, counters(guardrails=3, shadow=True))
        elapsed = time.monotonic() - started
    assert elapsed < 2.5
    assert len(server.seen) == 1
    assert set(readings) == {"ctr", "g0", "g1", "g2", DIVERGENCE}
    for reading in readings.values():
        assert reading == Unknown(f"Prometheus unreachable at {server.url}: no answer within 0.5 s")


def test_a_closed_port_is_unreachable_not_zero() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    refused = Unknown(f"Prometheus unreachable at {url}: Connection refused")
    with PrometheusProvider(url, timeout=2) as provider:
        readings = observe(provider, counters(guardrails=2, shadow=True))
        assert provider.online() == refused
        checked = provider.check(counters())
    assert readings == {"ctr": refused, "g0": refused, "g1": refused, DIVERGENCE: refused}
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
    readings = observe(provider, counters())
    assert readings["ctr"] == Unknown(
        f"unexpected error querying Prometheus at {server.url}: RuntimeError: something odd")
    assert provider.online() == readings["ctr"]
    provider.close()


def test_a_naive_evaluation_time_is_unknown(server: FakeServer) -> None:
    with PrometheusProvider(server.url) as provider:
        found = observe(provider, counters(guardrails=1), AT.replace(tzinfo=None))
        checkpoint = observe(provider, counters(), checkpoint=SINCE.replace(tzinfo=None))
    naive = Unknown("the reading's time, countedSince and the checkpoints must be timezone-aware")
    assert found == {"ctr": naive, "g0": naive}
    assert checkpoint == {"ctr": naive}
    assert server.seen == []


def test_query_needs_a_timezone_aware_time(server: FakeServer) -> None:
    with PrometheusProvider(server.url) as provider:
        found = provider.query("vector(1)", AT.replace(tzinfo=None), path="probe")
    assert found == Unknown("the evaluation time of probe must be timezone-aware")
    assert server.seen == []


@pytest.mark.parametrize(("address", "kwargs"), [("prometheus:9090", {}), ("http://p", {"timeout": 0}),
                                                 ("http://p", {"max_concurrency": 0})])
def test_bad_arguments(address: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        PrometheusProvider(address, **kwargs)


# --- concurrency ------------------------------------------------------------------------------------


def test_observe_bounds_the_queries_in_flight(server: FakeServer) -> None:
    answers = by_query(ANSWERS)
    server.answer = lambda seen: (*answers(seen)[:2], 0.1)
    counter_set = counters(guardrails=2)
    with PrometheusProvider(server.url, max_concurrency=3) as provider:
        readings = observe(provider, counter_set)
    assert sums(readings["ctr"]) == EXPECTED
    assert isinstance(readings["g0"], Unknown)  # the fake has no e0_total series: no data, never zero
    assert readings["g0"].reason.startswith(
        "no data for variant v6 from spec.metrics.guardrails[0].successes")
    assert server.max_in_flight <= 3
    with PrometheusProvider(server.url) as provider:
        assert observe(provider, counter_set) == readings


def test_observe_skips_the_rest_once_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    counter_set = counters(guardrails=6)
    with PrometheusProvider(url, max_concurrency=1) as provider:
        readings = observe(provider, counter_set)
    assert len(readings) == 7
    assert set(readings.values()) == {Unknown(f"Prometheus unreachable at {url}: Connection refused")}


# --- check --------------------------------------------------------------------------------------


def test_check_parses_each_selector_as_a_range(server: FakeServer) -> None:
    server.answer = lambda seen: (200, formatted(seen), 0.0)
    with PrometheusProvider(server.url) as provider:
        assert provider.check(counters(shadow=True)) == []
    assert {s.path for s in server.seen} == {"/api/v1/format_query"}
    assert server.queries()[:2] == [f"{CLICKS}[1m]", f"{VIEWS}[1m]"]
    assert len(server.seen) == 4


def test_check_maps_bad_data_to_spec_errors(server: FakeServer) -> None:
    def answer(seen: Seen) -> Answer:
        if seen.path == "/api/v1/format_query" and "clicks_total" in seen.params["query"]:
            return 400, error("bad_data", 'invalid parameter "query": 1:5: parse error: unexpected'), 0.0
        return 200, formatted(seen), 0.0

    server.answer = answer
    with PrometheusProvider(server.url) as provider:
        found = provider.check(counters())
    assert found == [SpecProblem("spec.metrics.primary.successes",
                               "the selector does not parse as a series selector: "
                               'invalid parameter "query": 1:5: parse error: unexpected')]
    assert {s.path for s in server.seen} == {"/api/v1/format_query"}


def test_check_keeps_the_errors_found_while_building(server: FakeServer) -> None:
    server.answer = lambda seen: (200, json.dumps({"status": "success", "data": "x"}).encode(), 0.0)
    with PrometheusProvider(server.url) as provider:
        found = provider.check(counters(threshold_ms=750))
    assert isinstance(found, list)
    assert [e.path for e in found] == ["spec.metrics.guardrails[0].thresholdMs"]
    assert "750" in found[0].message
    with PrometheusProvider(f"http://127.0.0.1:{free_port()}") as down:
        assert down.check(counters(threshold_ms=750)) == found  # errors rather than Unknown


def test_check_falls_back_to_evaluation_without_format_query(server: FakeServer) -> None:
    def answer(seen: Seen) -> Answer:
        if seen.path == "/api/v1/format_query":
            return 404, b"404 page not found", 0.0
        if "views_total" in seen.params["query"]:
            return 400, error("bad_data", "parse error"), 0.0
        return 200, success([]), 0.0

    server.answer = answer
    with PrometheusProvider(server.url) as provider:
        found = provider.check(counters())
    assert found == [SpecProblem("spec.metrics.primary.trials",
                               "the selector does not parse as a series selector: parse error")]
    assert [s.path for s in server.seen].count("/api/v1/format_query") == 1  # remembered
    evaluated = [s for s in server.seen if s.path == "/api/v1/query"]
    assert [s.params["query"] for s in evaluated] == [f"{CLICKS}[1m]", f"{VIEWS}[1m]"]
    assert all("time" in s.params and "timeout" in s.params for s in evaluated)


def test_check_other_failures_are_unknown(server: FakeServer) -> None:
    server.answer = lambda seen: (500, b"oops", 0.0)
    with PrometheusProvider(server.url) as provider:
        found = provider.check(counters())
    assert found == Unknown(f"could not check the queries: Prometheus at {server.url} answered HTTP 500 for "
                            "spec.metrics.primary.successes: oops")


def test_check_stops_once_unreachable(server: FakeServer) -> None:
    server.answer = lambda seen: (200, b"{}", 3.0)
    with PrometheusProvider(server.url, timeout=0.3) as provider:
        found = provider.check(counters(guardrails=3))
    assert found == Unknown(
        f"could not check the queries: Prometheus unreachable at {server.url}: no answer within 0.3 s")
    assert len(server.seen) == 1


# --- CA file ------------------------------------------------------------------------------------


def test_the_ca_file_is_private_and_removed_on_close() -> None:
    provider = PrometheusProvider("https://127.0.0.1:1", ca_pem="-----BEGIN CERTIFICATE-----\n...")
    path = Path(str(provider._session.verify))
    assert path.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert path.stat().st_mode & 0o077 == 0
    provider.close()
    assert not path.exists()
    provider.close()  # twice is fine


# --- the operator's error counter --------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "word"),
    [
        (500, b"internal error", "http_error"),
        (422, error("execution", "expanding series: too many samples"), "execution"),
        (503, error("timeout", "query timed out in expression evaluation"), "timeout"),
        (400, error("bad_data", "1:5: parse error: unexpected"), "bad_data"),
        (401, b"Unauthorized", "unauthorized"),
        (404, b"404 page not found", "not_found"),
        (200, b"<html>not json</html>", "unreadable"),
    ],
)
def test_each_failed_request_is_told_to_on_error_in_one_word(
    server: FakeServer, status: int, body: bytes, word: str
) -> None:
    from modelrollout.metrics.prometheus import QUERY_ERROR_REASONS

    server.answer = lambda seen: (status, body, 0.0)
    words: list[str] = []
    with PrometheusProvider(server.url, timeout=2, on_error=words.append) as provider:
        observe(provider, counters(guardrails=1))
    assert word in QUERY_ERROR_REASONS
    assert words == [word] * len(server.seen)  # one per request that failed, here each one


def test_unreachable_and_slow_are_their_own_words(server: FakeServer) -> None:
    words: list[str] = []
    with PrometheusProvider(f"http://127.0.0.1:{free_port()}", timeout=2, on_error=words.append) as p:
        observe(p, counters(guardrails=2))
    assert words == ["unreachable"]  # the rest of the tick was not sent
    server.answer = lambda seen: (200, success([]), 3.0)
    slow: list[str] = []
    with PrometheusProvider(server.url, timeout=0.5, on_error=slow.append) as provider:
        observe(provider, counters())
    assert slow == ["timeout"]


def test_a_good_answer_and_the_format_query_fallback_are_no_errors(server: FakeServer) -> None:
    words: list[str] = []
    server.answer = by_query(ANSWERS)
    with PrometheusProvider(server.url, on_error=words.append) as provider:
        observe(provider, counters())
    server.answer = lambda seen: ((404, b"404 page not found", 0.0) if seen.path == "/api/v1/format_query"
                                  else (200, success([]), 0.0))
    with PrometheusProvider(server.url, on_error=words.append) as provider:
        assert provider.check(counters()) == []
    assert words == []
