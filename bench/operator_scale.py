"""How the real operator process copes with N concurrent experiments on this machine.

Run on demand:  ``.venv/bin/python bench/operator_scale.py [--n 10 100 300 1000] [--window 150]``

For each N, on a fresh local control plane in a temporary folder (kube-apiserver + etcd, the
upstream Istio CRDs and the modelrollout CRD, and a real Prometheus; see
``modelrollout.devstack.controlplane``):

* N experiments, spread over ``--namespaces`` namespaces, each with its own VirtualService (route
  ``primary``) and one Service per variant (no pods: the Istio router only patches the
  VirtualService). Every field is the spec's default (``rollout.interval`` 30 s, steps 10/25/50/100,
  ``minStepDuration`` 15 m, ``analysis`` defaults) except the metrics: the primary metric of the
  README's example (clicks out of impressions, by ``model``) and its two guardrails
  (``istio-error-rate``, ``istio-latency-over`` 500 ms), so every tick sends six real PromQL queries.
* One exporter in this process (``prometheus_client`` on loopback) serves the counters of every
  experiment's variants: ``clicks_total``/``impressions_total`` (labels namespace, app, model) and
  Istio's ``istio_requests_total`` and ``istio_request_duration_milliseconds`` (by destination
  Service). At each scrape they grow by Poisson traffic (``--rps`` per experiment, split 90/10 as
  the first step routes it, equal rates for both variants), so the experiments analyse and hold.
  Prometheus scrapes it every ``--scrape-interval``.
* The objects are created first; then the operator starts as its own process
  (``python -m modelrollout.cli run --all-namespaces``, JSON logs, kopf's timer at its default
  unless ``--timer-seconds``), as after a restart with N experiments in the cluster.

What is measured, and from where:

* **first tick**: seconds from the operator's start until every experiment has logged a tick.
* **steady window**: starts one interval after every experiment has ticked (at most
  ``--first-tick-timeout``),
  and lasts ``--window`` seconds.
* **interval between ticks**: the gaps between consecutive ``tick`` log lines (kopf's JSON log,
  written when a tick has stored its status) of the same experiment, for gaps that end in the
  window; an experiment still waiting at the window's end more than 1.5 intervals after its last
  tick adds that open gap (a lower bound). Shown as p50/p95/p99 and p99 / configured interval.
* **tick duration**: tick start (``status.lastTickAt``, the tick's clock, read by a watch on the
  experiments) to its ``tick`` log line: observe, decide, route, status patch.
* **timer**: kopf's ``Timer 'timer' succeeded.`` lines: their rate (handler calls per second; the
  timer fires every ``MODELROLLOUT_TIMER_SECONDS``, 1 s by default, and skips ticks not due) and
  the p99 gap between two of one experiment (how late the executor runs the handlers).
* **ticks/s**: the sum over experiments of one over their mean gap in the window (ticks come in
  bursts, so a plain count per window would be off by a burst), against N / interval needed.
* **operator RSS** (``/proc/<pid>/status`` VmRSS, sampled every second: median over the window and
  VmHWM, the peak) and **CPU%** (utime + stime over the window; 100 % = one core of two); the CPU%
  of kube-apiserver, etcd and Prometheus over the window too, and of this bench process.
* **apiserver req/s**: ``apiserver_request_total`` from the apiserver's ``/metrics`` over the window.
* **Prometheus queries/s**: ``prometheus_http_requests_total{handler="/api/v1/query"}`` over the
  window; TCP connections to Prometheus (``/proc/net/tcp``, client side, ESTABLISHED; peak) next to
  Prometheus's own count of open HTTP connections (accepted - closed) and its limit of 512.
* **no-data ticks**: the share of ticks in the window whose rule is ``MetricsUnavailable``, with
  the condition's message (read by the same watch).

``--prometheus-max-connections`` starts Prometheus with a higher ``--web.max-connections``, a
diagnostic: the operator keeps one connection per experiment open to Prometheus, and Prometheus
serves 512 at once by default. ``--keep`` keeps each N's folder (the operator's log) for a look.

The baseline of the ratios is the smallest N, measured in the same run. The verdict per N: the
operator keeps up when every experiment ticked and the p99 interval is within 2x the configured one.
Everything is stopped on exit, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import itertools
import json
import math
import os
import re
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

VARIANTS = ("v6", "v7")
SHARES = (0.9, 0.1)  # the first step's split (steps [10, 25, 50, 100])
CLICK_RATE, ERROR_RATE, SLOW_RATE = 0.10, 0.01, 0.02
GROUP, VERSION, PLURAL = "modelrollout.io", "v1alpha1", "modelexperiments"
ISTIO = ("networking.istio.io", "v1", "virtualservices")
PROMETHEUS_MAX_CONNECTIONS = 512  # Prometheus's --web.max-connections default
TICK_MESSAGE = '"message": "tick"'
TIMER_MESSAGE = "Timer 'timer' succeeded."


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- pure helpers (unit-tested) ------------------------------------------------------------------
@dataclass(frozen=True)
class Summary:
    """Percentiles of a sample (NaN when it is empty)."""

    count: int
    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Summary:
        data = np.asarray(list(values), dtype=float)
        if data.size == 0:
            return cls(0, math.nan, math.nan, math.nan, math.nan)
        p50, p95, p99 = np.percentile(data, [50, 95, 99])
        return cls(int(data.size), float(p50), float(p95), float(p99), float(data.max()))


def parse_time(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 time (``...Z`` or ``...+00:00``)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass
class OperatorLog:
    """What the bench reads from the operator's JSON log lines."""

    ticks: dict[str, list[tuple[float, str]]] = field(default_factory=lambda: defaultdict(list))
    timers: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    failures: list[tuple[float, str]] = field(default_factory=list)  # handler failures (kopf retries them)
    pool_full: int = 0  # urllib3: "Connection pool is full, discarding connection"
    lines: int = 0


def parse_operator_log(lines: Iterable[str]) -> OperatorLog:
    """Tick times and rules, timer runs and failures, by experiment (``namespace/name``)."""
    out = OperatorLog()
    for line in lines:
        out.lines += 1
        if "Connection pool is full" in line:
            out.pool_full += 1
        is_tick = TICK_MESSAGE in line
        is_timer = TIMER_MESSAGE in line
        is_failure = "failed" in line and ('"severity": "error"' in line or '"severity": "warning"' in line)
        if not (is_tick or is_timer or is_failure):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        ref = record.get("experiment") or {}
        key = f"{ref.get('namespace')}/{ref.get('name')}"
        at = parse_time(record["timestamp"])
        if is_tick:
            out.ticks[key].append((at, str(record.get("rule"))))
        elif is_timer:
            out.timers[key].append(at)
        else:
            out.failures.append((at, short_reason(str(record.get("message")))))
    for ticks in out.ticks.values():
        ticks.sort()
    for timers in out.timers.values():
        timers.sort()
    return out


def gaps_by_key(
    times_by_key: Mapping[str, Sequence[float]], start: float, end: float, overdue_after: float | None = None
) -> tuple[dict[str, list[float]], int]:
    """Per key, the gaps between its consecutive times that end in [start, end]; and, with
    ``overdue_after``, the open gap ``end - last`` of each key whose last time is older than that
    (a lower bound of a gap still running). Returns (gaps by key, number of overdue keys)."""
    out: dict[str, list[float]] = {}
    overdue = 0
    for key, times in times_by_key.items():
        ordered = sorted(times)
        gaps = [b - a for a, b in itertools.pairwise(ordered) if start <= b <= end]
        before_end = [t for t in ordered if t <= end]
        if overdue_after is not None and before_end and end - before_end[-1] > overdue_after:
            gaps.append(end - before_end[-1])
            overdue += 1
        out[key] = gaps
    return out, overdue


def gaps_in_window(
    times_by_key: Mapping[str, Sequence[float]], start: float, end: float, overdue_after: float | None = None
) -> tuple[list[float], int]:
    """All the gaps of :func:`gaps_by_key` in one list, and the number of overdue keys."""
    by_key, overdue = gaps_by_key(times_by_key, start, end, overdue_after)
    return [g for gaps in by_key.values() for g in gaps], overdue


def rate_from_gaps(gaps_by_key: Mapping[str, Sequence[float]]) -> float:
    """Events per second summed over the keys, each at one over its mean gap (0 without gaps).
    Ticks come in bursts, so a plain count per window would be off by up to a burst."""
    return sum(len(gaps) / sum(gaps) for gaps in gaps_by_key.values() if gaps and sum(gaps) > 0)


def tick_durations(
    ends_by_key: Mapping[str, Sequence[float]], starts_by_key: Mapping[str, Iterable[float]],
    start: float, end: float,
) -> list[float]:
    """For each tick end in [start, end]: end minus the latest tick start before it that came after
    the key's previous tick end (a start without its own end, or an end without a start, is skipped)."""
    out: list[float] = []
    for key, ends in ends_by_key.items():
        starts = sorted(starts_by_key.get(key, ()))
        previous = -math.inf
        for t_end in sorted(ends):
            candidates = [s for s in starts if previous < s <= t_end]
            if candidates and start <= t_end <= end:
                out.append(t_end - candidates[-1])
            previous = t_end
    return out


_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def prom_samples(text: str, metric: str) -> list[tuple[dict[str, str], float]]:
    """The samples of ``metric`` in a Prometheus text exposition, as (labels, value)."""
    out = []
    for line in text.splitlines():
        if not line.startswith(metric) or line.startswith("#"):
            continue
        name_end = len(metric)
        if len(line) > name_end and line[name_end] not in "{ ":
            continue  # a longer metric name with the same prefix
        labels_text, _, rest = line[name_end:].partition("}") if "{" in line else ("", "", line[name_end:])
        labels = dict(_LABEL.findall(labels_text))
        try:
            value = float(rest.split()[0])
        except (IndexError, ValueError):
            continue
        out.append((labels, value))
    return out


def prom_sum(text: str, metric: str, by: Sequence[str], **match: str) -> dict[tuple[str, ...], float]:
    """``sum by (by) (metric{match})`` over one exposition."""
    sums: dict[tuple[str, ...], float] = defaultdict(float)
    for labels, value in prom_samples(text, metric):
        if all(labels.get(k) == v for k, v in match.items()):
            sums[tuple(labels.get(k, "") for k in by)] += value
    return dict(sums)


def delta_rates(before: Mapping[Any, float], after: Mapping[Any, float], seconds: float) -> dict[Any, float]:
    """Per-second increase of each counter from ``before`` to ``after``."""
    return {k: (v - before.get(k, 0.0)) / seconds for k, v in after.items() if v - before.get(k, 0.0) > 0}


def established_to(port: int, table: str) -> int:
    """ESTABLISHED client connections to 127.0.0.1:``port`` in a ``/proc/net/tcp`` table."""
    wanted = f"0100007F:{port:04X}"
    count = 0
    for line in table.splitlines()[1:]:
        parts = line.split()
        if len(parts) > 3 and parts[2] == wanted and parts[3] == "01":
            count += 1
    return count


def short_reason(message: str) -> str:
    """A condition message with the names of experiments and namespaces and the selector left out."""
    message = message.split(" (selector:", 1)[0]
    message = re.sub(r"bench-[0-9a-f]+-\d+", "<ns>", message)
    return re.sub(r"\be\d{4}\b", "<exp>", message)[:160]


def fmt(value: float | None, spec: str = ".1f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return "-"
    return f"{a / b:.2f}"


# ---- the exporter ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Experiment:
    namespace: str
    name: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def service(self, variant: str) -> str:
        return f"{self.name}-{variant}"


class Traffic:
    """Cumulative counters of every experiment's variants; they grow at each scrape."""

    def __init__(self, experiments: Sequence[Experiment], rps: float, seed: int = 1) -> None:
        self.experiments = list(experiments)
        self.rps = rps
        self.rng = np.random.default_rng(seed)
        shape = (len(self.experiments), len(VARIANTS))
        self.requests, self.clicks = np.zeros(shape), np.zeros(shape)
        self.errors, self.slow = np.zeros(shape), np.zeros(shape)
        self.last = time.monotonic()
        self.lock = threading.Lock()
        self.scrapes = 0

    def _advance(self) -> None:
        now = time.monotonic()
        dt, self.last = now - self.last, now
        lam = np.broadcast_to(np.asarray(SHARES) * self.rps * dt, self.requests.shape)
        new = self.rng.poisson(lam)
        self.requests += new
        self.clicks += self.rng.binomial(new, CLICK_RATE)
        self.errors += self.rng.binomial(new, ERROR_RATE)
        self.slow += self.rng.binomial(new, SLOW_RATE)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        with self.lock:
            self._advance()
            self.scrapes += 1
            requests, clicks = self.requests.copy(), self.clicks.copy()
            errors, slow = self.errors.copy(), self.slow.copy()
        by_model = ["namespace", "app", "model"]
        impressions = CounterMetricFamily("impressions", "Predictions shown", labels=by_model)
        clicked = CounterMetricFamily("clicks", "Predictions clicked", labels=by_model)
        istio = CounterMetricFamily("istio_requests", "Requests (Istio's standard metric)", labels=[
            "reporter", "destination_service_namespace", "destination_service_name", "response_code"])
        duration = HistogramMetricFamily("istio_request_duration_milliseconds", "Request duration", labels=[
            "reporter", "destination_service_namespace", "destination_service_name"])
        for i, exp in enumerate(self.experiments):
            for j, variant in enumerate(VARIANTS):
                impressions.add_metric([exp.namespace, exp.name, variant], requests[i, j])
                clicked.add_metric([exp.namespace, exp.name, variant], clicks[i, j])
                dest = ["destination", exp.namespace, exp.service(variant)]
                istio.add_metric([*dest, "200"], requests[i, j] - errors[i, j])
                istio.add_metric([*dest, "500"], errors[i, j])
                duration.add_metric(dest, [("500.0", requests[i, j] - slow[i, j]), ("+Inf", requests[i, j])],
                                    sum_value=requests[i, j] * 120.0)
        yield from (impressions, clicked, istio, duration)


class SlowProxy:
    """A Prometheus that answers late: a loopback HTTP server that forwards each GET to the real
    one after ``delay`` seconds (a fault a real Prometheus does not produce on demand)."""

    def __init__(self, upstream: str, delay: float) -> None:
        import http.server
        import urllib.error
        import urllib.request

        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with proxy.lock:
                    proxy.in_flight += 1
                    proxy.peak = max(proxy.peak, proxy.in_flight)
                    proxy.requests += 1
                started = time.monotonic()
                try:
                    status, body = self._forward()
                finally:
                    # Before the answer is sent: the client's next request may come as soon as it is.
                    with proxy.lock:
                        proxy.in_flight -= 1
                        proxy.log.append((started, time.monotonic(), self.client_address[1], self.path[:120]))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _forward(self) -> tuple[int, bytes]:
                time.sleep(proxy.delay)
                try:
                    with urllib.request.urlopen(upstream + self.path, timeout=30) as answer:
                        return int(answer.status), bytes(answer.read())
                except urllib.error.HTTPError as exc:  # Prometheus's own 4xx and 5xx, passed on
                    return int(exc.code), bytes(exc.read())
                except Exception as exc:
                    return 502, str(exc).encode()

            def log_message(self, *args: object) -> None:
                pass

        self.delay = delay
        self.lock = threading.Lock()
        #: Requests being answered now, the most at once, and all of them.
        self.in_flight, self.peak, self.requests = 0, 0, 0
        #: (start, end, client port, path) of every request answered.
        self.log: list[tuple[float, float, int, str]] = []
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="slow-prometheus", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def slow_count(n: int, share: float) -> int:
    """How many of ``n`` experiments read the slow Prometheus (the first ones, by name)."""
    return min(n, math.ceil(n * share)) if share > 0 else 0


# ---- the objects -------------------------------------------------------------------------------------
def experiment_manifest(exp: Experiment, prometheus_url: str, interval: str | None) -> dict[str, Any]:
    selector = f'namespace="{{{{namespace}}}}", app="{exp.name}", model="{{{{variant}}}}"'
    spec: dict[str, Any] = {
        "champion": {"name": VARIANTS[0], "service": exp.service(VARIANTS[0])},
        "challengers": [{"name": v, "service": exp.service(v)} for v in VARIANTS[1:]],
        "traffic": {"provider": "istio", "istio": {"virtualService": exp.name, "routes": ["primary"]}},
        "metrics": {
            "prometheus": {"address": prometheus_url},
            "primary": {
                "name": "click-through",
                "type": "proportion",
                "successes": f"clicks_total{{{selector}}}",
                "trials": f"impressions_total{{{selector}}}",
                "direction": "increase",
                "minimumDetectableEffect": 0.05,
            },
            "guardrails": [
                {"name": "error-rate", "preset": "istio-error-rate", "maxRelativeIncrease": 0.10},
                {"name": "latency", "preset": "istio-latency-over", "thresholdMs": 500,
                 "maxAbsoluteIncrease": 0.01},
            ],
        },
    }
    if interval is not None:
        spec["rollout"] = {"interval": interval}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelExperiment",
            "metadata": {"name": exp.name}, "spec": spec}


def virtual_service(exp: Experiment) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": exp.name},
        "spec": {"hosts": [exp.name], "http": [{"name": "primary", "route": [
            {"destination": {"host": exp.service(VARIANTS[0])}, "weight": 100}]}]},
    }


def admin_client(kubeconfig: Path, pool: int = 16) -> Any:
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.connection_pool_maxsize = pool
    return client.ApiClient(configuration)


def create_objects(api: Any, experiments: Sequence[Experiment], prometheus_url: str,
                   interval: str | None, slow: Mapping[str, str] | None = None) -> None:
    """Namespaces, Services, VirtualServices and experiments; those in ``slow`` (key -> URL) read
    that Prometheus instead of ``prometheus_url``."""
    from kubernetes import client

    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    for ns in sorted({e.namespace for e in experiments}):
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))

    def one(exp: Experiment) -> None:
        for variant in VARIANTS:
            core.create_namespaced_service(exp.namespace, client.V1Service(
                metadata=client.V1ObjectMeta(name=exp.service(variant), labels={"app": exp.name}),
                spec=client.V1ServiceSpec(selector={"app": exp.name, "version": variant},
                                          ports=[client.V1ServicePort(port=80)])))
        group, version, plural = ISTIO
        custom.create_namespaced_custom_object(group, version, exp.namespace, plural, virtual_service(exp))
        url = (slow or {}).get(exp.key, prometheus_url)
        custom.create_namespaced_custom_object(GROUP, VERSION, exp.namespace, PLURAL,
                                               experiment_manifest(exp, url, interval))

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for future in concurrent.futures.as_completed([pool.submit(one, e) for e in experiments]):
            future.result()


# ---- observers -------------------------------------------------------------------------------------
class StatusWatch:
    """Watches every experiment; keeps each ``status.lastTickAt`` seen and the latest phase."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.starts: dict[str, set[float]] = defaultdict(set)
        self.phases: dict[str, str] = {}
        self.unavailable: list[tuple[float, str]] = []  # (tick start, why) of ticks without metrics
        self.sizes: dict[str, int] = {}  # bytes of each experiment's latest JSON (with its status)
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _note_unavailable(self, at: float, conditions: Sequence[Mapping[str, Any]]) -> None:
        for condition in conditions:
            if condition.get("type") == "MetricsUnavailable" and condition.get("status") == "True":
                self.unavailable.append((at, short_reason(str(condition.get("message", "")))))

    def ticked(self) -> int:
        with self.lock:
            return sum(1 for s in self.starts.values() if s)

    def _run(self) -> None:
        from kubernetes import client, watch

        custom = client.CustomObjectsApi(self.api)
        version: str | None = None
        while not self._stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(custom.list_cluster_custom_object, GROUP, VERSION, PLURAL,
                                           resource_version=version, timeout_seconds=30):
                    if self._stop.is_set():
                        break
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        version = None
                        break
                    meta = obj.get("metadata") or {}
                    version = meta.get("resourceVersion", version)
                    status = obj.get("status") or {}
                    key = f"{meta.get('namespace')}/{meta.get('name')}"
                    size = len(json.dumps(obj, separators=(",", ":"))) if status else 0
                    with self.lock:
                        if size:
                            self.sizes[key] = size
                        if status.get("lastTickAt"):
                            at = parse_time(status["lastTickAt"])
                            if at not in self.starts[key]:
                                self.starts[key].add(at)
                                self._note_unavailable(at, status.get("conditions") or [])
                        if status.get("phase"):
                            self.phases[key] = status["phase"]
            except Exception:
                version = None
                self._stop.wait(0.5)
            finally:
                stream.stop()


@dataclass
class ProcSample:
    at: float
    rss_kb: int
    hwm_kb: int
    threads: int


class Sampler:
    """Samples the operator's memory every second and TCP connections to two ports every 5 s."""

    def __init__(self, pid: int, ports: Mapping[str, int], prom_metrics: PromMetrics | None = None) -> None:
        self.pid = pid
        self.prom_metrics = prom_metrics
        self.ports = dict(ports)
        self.samples: list[ProcSample] = []
        self.connections: dict[str, int] = dict.fromkeys(self.ports, 0)  # peaks
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        beat = 0
        while not self._stop.is_set():
            fields: dict[str, int] = {}
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    name, _, value = line.partition(":")
                    if name in ("VmRSS", "VmHWM", "Threads"):
                        fields[name] = int(value.split()[0])
            if fields:
                self.samples.append(ProcSample(time.time(), fields.get("VmRSS", 0), fields.get("VmHWM", 0),
                                               fields.get("Threads", 0)))
            if beat % 5 == 0:
                with contextlib.suppress(OSError):
                    table = Path("/proc/net/tcp").read_text()
                    for name, port in self.ports.items():
                        self.connections[name] = max(self.connections[name], established_to(port, table))
            if beat % 10 == 0 and self.prom_metrics is not None:
                self.prom_metrics.fetch()  # the peak of Prometheus's open connections; keeps it alive
            beat += 1
            self._stop.wait(1.0)


class LogCounter:
    """Counts the lines of a growing log file that contain ``text`` (reads only what is new)."""

    def __init__(self, path: Path, text: str) -> None:
        self.path, self.text = path, text.encode()
        self.offset, self.found, self.rest = 0, 0, b""

    def count(self) -> int:
        with contextlib.suppress(OSError), self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = self.rest + handle.read()
            self.offset = handle.tell()
            complete, _, self.rest = data.rpartition(b"\n")
            self.found += complete.count(self.text)
        return self.found


class PromMetrics:
    """Prometheus's own ``/metrics`` over one keep-alive connection opened before the operator starts:
    once the operator holds Prometheus's 512 connections, a new connection would wait for a slot."""

    def __init__(self, port: int) -> None:
        import http.client

        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.lock = threading.Lock()
        self.open_peak = 0.0

    def fetch(self) -> str | None:
        with self.lock:
            try:
                self.connection.request("GET", "/metrics")
                response = self.connection.getresponse()
                body = response.read().decode("utf-8", errors="replace")
            except Exception as exc:  # OSError, http.client.HTTPException
                say(f"prometheus /metrics over the kept connection failed: {exc!r}")
                self.connection.close()
                return None
        if response.status != 200:
            return None
        self.open_peak = max(self.open_peak, prom_open_connections(body))
        return body

    def close(self) -> None:
        self.connection.close()


def prom_open_connections(text: str) -> float:
    """Prometheus's open HTTP connections: accepted minus closed."""
    http = {"listener_name": "http"}
    accepted = sum(prom_sum(text, "net_conntrack_listener_conn_accepted_total", (), **http).values())
    closed = sum(prom_sum(text, "net_conntrack_listener_conn_closed_total", (), **http).values())
    return accepted - closed


def cpu_seconds(pid: int) -> float:
    from modelrollout.devstack.sim.stack import cpu_seconds as of_pid

    return of_pid(pid)


# ---- one N -------------------------------------------------------------------------------------------
@dataclass
class Result:
    n: int
    interval_s: float
    first_tick_all_s: float | None = None
    created_s: float = math.nan  # operator start -> every experiment's first tick
    first_ticked: int = 0
    window_s: float = 0.0
    ticks_per_s: float = math.nan
    gaps: Summary = field(default_factory=lambda: Summary.of([]))
    overdue: int = 0
    durations_ms: Summary = field(default_factory=lambda: Summary.of([]))
    timer_gaps: Summary = field(default_factory=lambda: Summary.of([]))
    timer_per_s: float = math.nan
    no_data_share: float = math.nan
    rules: Counter[str] = field(default_factory=Counter)
    phases: Counter[str] = field(default_factory=Counter)
    no_data_reasons: Counter[str] = field(default_factory=Counter)
    op_cpu_pct: float = math.nan
    rss_steady_mb: float = math.nan
    rss_peak_mb: float = math.nan
    threads: int = 0
    cpu_pct: dict[str, float] = field(default_factory=dict)
    api_rps: float = math.nan
    api_top: list[tuple[str, float]] = field(default_factory=list)
    prom_qps: float = math.nan
    prom_open: float | None = None
    conns: dict[str, int] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)  # in the window, by message
    failures_at_start: Counter[str] = field(default_factory=Counter)  # before the window
    failures_total: int = 0
    ticks_in_window: int = 0
    pool_full: int = 0
    #: The operator's own counters over the window (``modelrollout_ticks_deferred_total`` by reason,
    #: ``modelrollout_ticks_behind_schedule_total``).
    op_counters: dict[str, float] = field(default_factory=dict)
    #: With ``--slow-share``: how many experiments read the slow Prometheus, and the intervals of
    #: the others (the fast ones) and of the slow ones, separately.
    slow_n: int = 0
    fast_gaps: Summary = field(default_factory=lambda: Summary.of([]))
    slow_gaps: Summary = field(default_factory=lambda: Summary.of([]))
    log_mb: float = 0.0
    note: str = ""
    prom_limit: int = PROMETHEUS_MAX_CONNECTIONS
    object_kb: float = math.nan

    @property
    def needed_per_s(self) -> float:
        return self.n / self.interval_s

    def keeps_up(self) -> bool:
        return (self.first_ticked == self.n and self.overdue == 0 and self.gaps.count > 0
                and self.gaps.p99 <= 2 * self.interval_s)

    def verdict(self) -> str:
        head = f"N={self.n}: "
        if self.keeps_up():
            text = (f"keeps up: p99 interval {self.gaps.p99:.1f} s <= 2 x {self.interval_s:g} s, "
                    f"{self.ticks_per_s:.2f} of {self.needed_per_s:.2f} ticks/s")
        else:
            why = []
            if self.first_ticked < self.n:
                why.append(f"only {self.first_ticked}/{self.n} experiments ever ticked")
            if self.overdue:
                why.append(f"{self.overdue} experiments overdue at the window's end")
            if not self.gaps.count or not self.gaps.p99 <= 2 * self.interval_s:
                why.append(f"p99 interval {fmt(self.gaps.p99)} s > 2 x {self.interval_s:g} s")
            text = "does NOT keep up: " + "; ".join(why)
        if self.no_data_share > 0.01:
            text += f"; but {100 * self.no_data_share:.0f} % of ticks had no metrics (MetricsUnavailable)"
        if self.conns.get("prometheus", 0) > self.prom_limit:
            text += (f"; the operator held {self.conns['prometheus']} connections to Prometheus, which "
                     f"serves {self.prom_limit} at once")
        return head + text + (f" ({self.note})" if self.note else "")


@dataclass
class Options:
    window_s: float
    interval: str | None
    namespaces: int
    rps: float
    scrape_interval: str
    timer_seconds: float | None
    first_tick_timeout_s: float
    keep: bool
    prometheus_max_connections: int | None = None
    py_spy: str | None = None
    slow_share: float = 0.0
    slow_delay_s: float = 5.0
    workers: int | None = None


def http_text(url: str, token: str | None = None, timeout: float = 20.0) -> str | None:
    from modelrollout.devstack.controlplane.kube import http_get

    try:
        status, body = http_get(url, token=token, verify=False, timeout=timeout)
    except Exception:
        return None
    return body if status == 200 else None


def snapshot(env: Any, prom_metrics: PromMetrics, pids: Mapping[str, int]) -> dict[str, Any]:
    """Counters of the apiserver and Prometheus and the CPU seconds of each process, now."""
    api = http_text(f"{env.server}/metrics", token=env.tokens.admin)
    prom = prom_metrics.fetch()
    out: dict[str, Any] = {"at": time.time(), "cpu": {n: cpu_seconds(p) for n, p in pids.items()}}
    by = ("verb", "resource", "subresource")
    out["api"] = prom_sum(api, "apiserver_request_total", by) if api else None
    if prom:
        out["prom_queries"] = sum(prom_sum(prom, "prometheus_http_requests_total", ("handler",),
                                           handler="/api/v1/query").values())
        out["prom_open"] = prom_open_connections(prom)
    return out


def operator_counters(port: int) -> dict[str, float]:
    """The operator's own tick counters from its ``/metrics`` (empty when it does not answer)."""
    text = http_text(f"http://127.0.0.1:{port}/metrics") or ""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("modelrollout_ticks_deferred_total", "modelrollout_ticks_behind_schedule_total")):
            name, _, value = line.rpartition(" ")
            out[name.replace("modelrollout_", "").replace("_total", "")] = float(value)
    return out


def start_py_spy(opts: Options, pid: int, n: int) -> Any:
    """``py-spy record --gil`` of the operator over the window (``--py-spy PREFIX``): collapsed stacks
    of the thread that holds the GIL, so where the CPU goes."""
    if not opts.py_spy:
        return None
    import subprocess

    out = f"{opts.py_spy}.n{n}.txt"
    argv = ["py-spy", "record", "--pid", str(pid), "--duration", str(int(opts.window_s)), "--rate", "50",
            "--format", "raw", "--nonblocking", "--threads", "--gil", "--output", out]
    say(f"N={n}: py-spy -> {out}")
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_one(n: int, opts: Options, root: Path) -> Result:
    from prometheus_client import CollectorRegistry, start_http_server

    from modelrollout.api.spec import ModelExperimentSpec
    from modelrollout.api.types import parse_duration
    from modelrollout.devstack.controlplane.env import LocalEnv
    from modelrollout.devstack.controlplane.procs import ManagedProcess, free_port
    from modelrollout.devstack.controlplane.prometheus import Prometheus

    workdir = root / f"n{n}"
    token = secrets.token_hex(2)
    namespaces = [f"bench-{token}-{i}" for i in range(max(1, min(opts.namespaces, n)))]
    experiments = [Experiment(namespaces[i % len(namespaces)], f"e{i:04d}") for i in range(n)]
    probe = ModelExperimentSpec.model_validate(experiment_manifest(experiments[0], "http://x:9090",
                                                                   opts.interval)["spec"])
    interval_s = parse_duration(probe.rollout.interval).total_seconds()
    result = Result(n=n, interval_s=interval_s,
                    prom_limit=opts.prometheus_max_connections or PROMETHEUS_MAX_CONNECTIONS)
    operator: ManagedProcess | None = None
    watch: StatusWatch | None = None
    sampler: Sampler | None = None
    server: Any = None
    api: Any = None
    prom_metrics: PromMetrics | None = None
    slow_proxy: SlowProxy | None = None
    slow_urls: dict[str, str] = {}
    with LocalEnv(workdir, controller_manager=False, progress=say) as env:
        try:
            if opts.prometheus_max_connections is None:
                prom = env.start_prometheus(scrape_interval=opts.scrape_interval)
            else:  # the same Prometheus with a higher connection limit, stopped with the env
                prom = Prometheus(workdir / "prometheus", scrape_interval=opts.scrape_interval)
                prom.process.argv.append(f"--web.max-connections={opts.prometheus_max_connections}")
                env.processes.append(prom.process)
                env.prometheus = prom
                prom.start()
            traffic = Traffic(experiments, opts.rps)
            registry = CollectorRegistry(auto_describe=False)
            registry.register(traffic)  # type: ignore[arg-type]
            port = free_port()
            server, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
            prom.set_targets("bench-exporter", [f"127.0.0.1:{port}"])
            api = admin_client(env.admin_kubeconfig)
            started = time.monotonic()
            result.slow_n = slow_count(n, opts.slow_share)
            if result.slow_n:
                slow_proxy = SlowProxy(prom.url, opts.slow_delay_s)
                say(f"N={n}: {result.slow_n} experiments read a Prometheus that answers "
                    f"{opts.slow_delay_s:g} s late ({slow_proxy.url})")
                slow_urls = {e.key: slow_proxy.url for e in experiments[:result.slow_n]}
            create_objects(api, experiments, prom.url, opts.interval, slow=slow_urls)
            say(f"N={n}: created {n} experiments, {2 * n} Services, {n} VirtualServices in "
                f"{len(namespaces)} namespaces in {time.monotonic() - started:.0f} s")
            prom.wait_for_value(f"count(impressions_total) >= {len(VARIANTS) * n}", timeout=120)
            watch = StatusWatch(api)
            watch.start()
            prom_metrics = PromMetrics(prom.port)
            prom_metrics.fetch()

            run_env = dict(os.environ, KUBECONFIG=str(env.admin_kubeconfig), PYTHONUNBUFFERED="1")
            run_env.pop("MODELROLLOUT_TIMER_SECONDS", None)
            if opts.timer_seconds is not None:
                run_env["MODELROLLOUT_TIMER_SECONDS"] = str(opts.timer_seconds)
            log_path = workdir / "operator.log"
            # (its own /metrics on a free loopback port: the default 8081 may be taken here)
            op_metrics_port = free_port()
            workers = [] if opts.workers is None else [f"--workers={opts.workers}"]
            operator = ManagedProcess("operator", [sys.executable, "-m", "modelrollout.cli", "run", *workers,
                                                   "--all-namespaces", f"--metrics-port={op_metrics_port}",
                                                   "--metrics-address=127.0.0.1"],
                                      log_path, env=run_env, cwd=workdir)
            operator_started = time.time()
            operator.start()
            api_port = int(env.server.rsplit(":", 1)[1])
            sampler = Sampler(operator.pid, {"prometheus": prom.port, "apiserver": api_port}, prom_metrics)
            sampler.start()
            say(f"N={n}: operator started (pid {operator.pid}); waiting for every first tick")
            deadline = time.monotonic() + opts.first_tick_timeout_s
            while watch.ticked() < n and time.monotonic() < deadline:
                operator.check_running("while the experiments started")
                time.sleep(1.0)
            result.created_s = time.time() - operator_started
            if watch.ticked() < n:
                result.note = (f"after {opts.first_tick_timeout_s:.0f} s: {watch.ticked()}/{n} experiments "
                               "had ticked")
            say(f"N={n}: {watch.ticked()}/{n} ticked after "
                f"{result.created_s:.0f} s; warming up {interval_s:.0f} s, then {opts.window_s:.0f} s window")
            time.sleep(interval_s)
            pids = {"operator": operator.pid, "bench": os.getpid()}
            pids.update({p.name: p.pid for p in env.processes})
            before = snapshot(env, prom_metrics, pids)
            op_before = operator_counters(op_metrics_port)
            window_start = before["at"]
            profiler = start_py_spy(opts, operator.pid, n)
            time.sleep(opts.window_s)
            if profiler is not None:
                profiler.wait(timeout=60)
            operator.check_running("during the window")
            after = snapshot(env, prom_metrics, pids)
            op_after = operator_counters(op_metrics_port)
            result.op_counters = {k: op_after.get(k, 0.0) - op_before.get(k, 0.0) for k in op_after}
            window_end = after["at"]
        finally:
            if sampler is not None:
                sampler.stop()
            if operator is not None:
                operator.stop()
            if watch is not None:
                watch.stop()
            if server is not None:
                server.shutdown()
                server.server_close()
            if api is not None:
                api.close()
            if prom_metrics is not None:
                prom_metrics.close()
            if slow_proxy is not None:
                slow_proxy.close()
    seconds = window_end - window_start
    result.window_s = seconds
    assert watch is not None
    assert sampler is not None
    with log_path.open(errors="replace") as handle:
        log = parse_operator_log(handle)
    result.log_mb = log_path.stat().st_size / 1e6
    ends = {k: [t for t, _ in v] for k, v in log.ticks.items()}
    firsts = [v[0] for v in ends.values() if v]
    result.first_ticked = len(firsts)
    if len(firsts) == n:
        result.first_tick_all_s = max(firsts) - operator_started
    in_window = [(t, rule) for v in log.ticks.values() for t, rule in v if window_start <= t <= window_end]
    result.rules = Counter(rule for _, rule in in_window)
    result.no_data_share = result.rules["MetricsUnavailable"] / len(in_window) if in_window else math.nan
    # Experiments that never ticked count as overdue since the operator started.
    for exp in experiments:
        ends.setdefault(exp.key, [operator_started])
    tick_gaps, result.overdue = gaps_by_key(ends, window_start, window_end, overdue_after=1.5 * interval_s)
    result.gaps = Summary.of(g for gaps in tick_gaps.values() for g in gaps)
    if result.slow_n:
        slow_keys = set(slow_urls)
        result.slow_gaps = Summary.of(g for k, gaps in tick_gaps.items() if k in slow_keys for g in gaps)
        result.fast_gaps = Summary.of(g for k, gaps in tick_gaps.items() if k not in slow_keys for g in gaps)
    result.ticks_per_s = rate_from_gaps(tick_gaps)
    result.ticks_in_window = len(in_window)
    result.durations_ms = Summary.of(1000 * d for d in tick_durations(ends, watch.starts, window_start,
                                                                          window_end))
    timers = {exp.key: log.timers.get(exp.key) or [operator_started] for exp in experiments}
    timer_gaps, _ = gaps_by_key(timers, window_start, window_end, overdue_after=1.5 * interval_s)
    result.timer_gaps = Summary.of(g for gaps in timer_gaps.values() for g in gaps)
    result.timer_per_s = rate_from_gaps(timer_gaps)
    result.phases = Counter(watch.phases.values())
    if watch.sizes:
        result.object_kb = statistics.mean(watch.sizes.values()) / 1024
    result.no_data_reasons = Counter(why for at, why in watch.unavailable if window_start <= at <= window_end)
    result.failures = Counter(why for at, why in log.failures if window_start <= at <= window_end)
    result.failures_total = len(log.failures)
    result.failures_at_start = Counter(why for at, why in log.failures if at < window_start)
    result.pool_full = log.pool_full
    steady = [s for s in sampler.samples if window_start <= s.at <= window_end]
    if steady:
        result.rss_steady_mb = statistics.median(s.rss_kb for s in steady) / 1024
        result.threads = max(s.threads for s in steady)
    if sampler.samples:
        result.rss_peak_mb = max(s.hwm_kb for s in sampler.samples) / 1024
    cpu = {name: 100 * (after["cpu"][name] - before["cpu"][name]) / seconds for name in before["cpu"]}
    result.op_cpu_pct = cpu.pop("operator")
    result.cpu_pct = cpu
    if before["api"] is not None and after["api"] is not None:
        rates = delta_rates(before["api"], after["api"], seconds)
        rates = {k: v for k, v in rates.items() if k[0] != "WATCH"}
        result.api_rps = sum(rates.values())
        top = sorted(rates.items(), key=lambda kv: -kv[1])[:6]
        result.api_top = [(f"{v} {r}{'/' + s if s else ''}", rate) for (v, r, s), rate in top]
    if "prom_queries" in before and "prom_queries" in after:
        result.prom_qps = (after["prom_queries"] - before["prom_queries"]) / seconds
    result.prom_open = max(after.get("prom_open", 0.0), prom_metrics.open_peak) if prom_metrics else None
    result.conns = dict(sampler.connections)
    if not opts.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


# ---- the tables ----------------------------------------------------------------------------------------
def render(results: Sequence[Result], opts: Options) -> str:
    if not results:
        return "(no results)"
    base = results[0]
    lines = [
        f"interval {base.interval_s:g} s ({'spec default' if opts.interval is None else '--interval'}), "
        f"scrape {opts.scrape_interval}, kopf timer "
        f"{'1 s (default)' if opts.timer_seconds is None else f'{opts.timer_seconds:g} s'}, "
        f"{opts.rps:g} req/s per experiment, window {opts.window_s:.0f} s, "
        f"up to {opts.namespaces} namespaces, 6 PromQL queries per tick, Prometheus --web.max-connections "
        f"{opts.prometheus_max_connections or f'{PROMETHEUS_MAX_CONNECTIONS} (default)'}",
        "",
        "keeping up (interval = gap between two ticks of one experiment; tick = lastTickAt to its log line)",
        f"{'N':>5} {'1st tick all s':>14} {'ticks/s need':>12} {'got':>6} {'got/need':>8} "
        f"{'ival p50':>8} {'p95':>6} {'p99':>6} {'p99/ival':>8} {'overdue':>7} {'gaps':>6} "
        f"{'tick p50 ms':>11} {'p99 ms':>7} {'timer/s':>7} {'timer p99 s':>11} {'no-data %':>9}",
    ]
    for r in results:
        lines.append(
            f"{r.n:>5} {fmt(r.first_tick_all_s):>14} {r.needed_per_s:>12.2f} {fmt(r.ticks_per_s, '.2f'):>6} "
            f"{ratio(r.ticks_per_s, r.needed_per_s):>8} {fmt(r.gaps.p50):>8} {fmt(r.gaps.p95):>6} "
            f"{fmt(r.gaps.p99):>6} {ratio(r.gaps.p99, r.interval_s):>8} {r.overdue:>7} {r.gaps.count:>6} "
            f"{fmt(r.durations_ms.p50, '.0f'):>11} {fmt(r.durations_ms.p99, '.0f'):>7} "
            f"{fmt(r.timer_per_s, '.0f'):>7} {fmt(r.timer_gaps.p99, '.2f'):>11} "
            f"{fmt(100 * r.no_data_share):>9}"
        )
    lines += [
        "",
        "cost over the window (CPU % of one core; the machine has 2; RSS of the operator process)",
        f"{'N':>5} {'op CPU %':>8} {'RSS MB':>7} {'peak MB':>7} {'KB/exp':>7} {'threads':>7} "
        f"{'api req/s':>9} {'prom q/s':>8} {'conns->prom':>11} {'prom open':>9} {'apiserver %':>11} "
        f"{'etcd %':>6} {'prom %':>6} {'bench %':>7} {'log MB':>6}",
    ]
    for r in results:
        per_exp = ((r.rss_steady_mb - base.rss_steady_mb) * 1024 / (r.n - base.n)) if r.n > base.n else None
        lines.append(
            f"{r.n:>5} {fmt(r.op_cpu_pct):>8} {fmt(r.rss_steady_mb):>7} {fmt(r.rss_peak_mb):>7} "
            f"{fmt(per_exp, '.0f'):>7} {r.threads:>7} {fmt(r.api_rps):>9} {fmt(r.prom_qps):>8} "
            f"{r.conns.get('prometheus', 0):>11} {fmt(r.prom_open, '.0f'):>9} "
            f"{fmt(r.cpu_pct.get('kube-apiserver')):>11} {fmt(r.cpu_pct.get('etcd')):>6} "
            f"{fmt(r.cpu_pct.get('prometheus')):>6} {fmt(r.cpu_pct.get('bench')):>7} {r.log_mb:>6.0f}"
        )
    lines += [
        "",
        f"ratios to the baseline N={base.n} (same run)",
        f"{'N':>5} {'N ratio':>7} {'ticks/s':>7} {'op CPU':>6} {'CPU/tick':>8} {'RSS':>5} {'api req/s':>9} "
        f"{'prom q/s':>8} {'tick p99':>8} {'ival p99':>8}",
    ]
    base_cpu_per_tick = base.op_cpu_pct / base.ticks_per_s if base.ticks_per_s else math.nan
    for r in results:
        cpu_per_tick = r.op_cpu_pct / r.ticks_per_s if r.ticks_per_s else math.nan
        lines.append(
            f"{r.n:>5} {r.n / base.n:>7.1f} {ratio(r.ticks_per_s, base.ticks_per_s):>7} "
            f"{ratio(r.op_cpu_pct, base.op_cpu_pct):>6} {ratio(cpu_per_tick, base_cpu_per_tick):>8} "
            f"{ratio(r.rss_steady_mb, base.rss_steady_mb):>5} {ratio(r.api_rps, base.api_rps):>9} "
            f"{ratio(r.prom_qps, base.prom_qps):>8} {ratio(r.durations_ms.p99, base.durations_ms.p99):>8} "
            f"{ratio(r.gaps.p99, base.gaps.p99):>8}"
        )
    lines += ["", "details"]
    for r in results:
        rules = ", ".join(f"{k} {v}" for k, v in r.rules.most_common(4))
        phases = ", ".join(f"{k} {v}" for k, v in r.phases.most_common())
        api = ", ".join(f"{k} {v:.1f}" for k, v in r.api_top)
        lines.append(f"N={r.n}: rules in window: {rules or '-'}; phases at end: {phases or '-'}; every "
                     f"experiment ticked {fmt(r.created_s, '.0f')} s after the operator started")
        lines.append(f"       apiserver req/s: {api or '-'}; an experiment's JSON: {fmt(r.object_kb)} KB")
        lines.append(f"       tick ms p50/p95/p99/max {fmt(r.durations_ms.p50, '.0f')}/"
                     f"{fmt(r.durations_ms.p95, '.0f')}/{fmt(r.durations_ms.p99, '.0f')}/"
                     f"{fmt(r.durations_ms.max, '.0f')} ({r.durations_ms.count} ticks); conns->apiserver "
                     f"peak {r.conns.get('apiserver', 0)}")
        failed = sum(r.failures.values())
        lines.append(f"       handler failures: {failed} in the window, {r.failures_total} in "
                     f"all; 'connection pool is full' warnings: {r.pool_full}; ticks logged in the window: "
                     f"{r.ticks_in_window}")
        if r.slow_n:
            lines.append(f"       {r.slow_n} experiments read a Prometheus {opts.slow_delay_s:g} s late: the "
                         f"others' interval p50/p99 {fmt(r.fast_gaps.p50)}/{fmt(r.fast_gaps.p99)} s "
                         f"({ratio(r.fast_gaps.p99, r.interval_s)} of the interval, "
                         f"{r.fast_gaps.count} gaps), "
                         f"the slow ones' {fmt(r.slow_gaps.p50)}/{fmt(r.slow_gaps.p99)} s")
        if r.op_counters:
            counters = ", ".join(f"{k} {v:.0f}" for k, v in sorted(r.op_counters.items()))
            lines.append(f"       the operator's counters over the window: {counters}")
        for why, count in r.no_data_reasons.most_common(3):
            lines.append(f"       no metrics ({count} ticks): {why}")
        for why, count in r.failures_at_start.most_common(2):
            lines.append(f"       failure before the window ({count}x): {why}")
        for why, count in r.failures.most_common(3):
            lines.append(f"       failure in the window ({count}x): {why}")
    lines += ["", "verdict (keeps up = every experiment ticked and p99 interval <= 2 x the configured one)"]
    lines += [r.verdict() for r in results]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, nargs="+", default=[10, 100, 300, 1000], help="experiment counts")
    parser.add_argument("--window", type=float, default=150.0, help="seconds of the steady window")
    parser.add_argument("--interval", default=None, help="spec.rollout.interval (default: the spec's, 30s)")
    parser.add_argument("--namespaces", type=int, default=5, help="namespaces to spread the experiments over")
    parser.add_argument("--rps", type=float, default=10.0, help="simulated requests/s per experiment")
    parser.add_argument("--scrape-interval", default="15s", help="Prometheus scrape interval")
    parser.add_argument("--timer-seconds", type=float, default=None,
                        help="MODELROLLOUT_TIMER_SECONDS for the operator (default: unset, 1 s)")
    parser.add_argument("--first-tick-timeout", type=float, default=420.0,
                        help="seconds to wait for every experiment's first tick")
    parser.add_argument("--stop-after", type=float, default=None,
                        help="minutes; do not start another N after this long")
    parser.add_argument("--py-spy", default=None, metavar="PREFIX",
                        help="record the operator with py-spy over the window to PREFIX.n<N>.txt")
    parser.add_argument("--slow-share", type=float, default=0.0,
                        help="share of the experiments that read a Prometheus answering --slow-delay late")
    parser.add_argument("--slow-delay", type=float, default=5.0, help="seconds the slow Prometheus waits")
    parser.add_argument("--workers", type=int, default=None,
                        help="the operator's --workers (default: its own)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs) of each N")
    parser.add_argument("--prometheus-max-connections", type=int, default=None,
                        help="start Prometheus with --web.max-connections (default: its own, 512)")
    args = parser.parse_args()
    opts = Options(window_s=args.window, interval=args.interval, namespaces=args.namespaces, rps=args.rps,
                   scrape_interval=args.scrape_interval, timer_seconds=args.timer_seconds,
                   first_tick_timeout_s=args.first_tick_timeout, keep=args.keep,
                   prometheus_max_connections=args.prometheus_max_connections, py_spy=args.py_spy,
                   slow_share=args.slow_share, slow_delay_s=args.slow_delay, workers=args.workers)

    def terminate(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored
    root = Path(tempfile.mkdtemp(prefix="operator-scale-"))
    results: list[Result] = []
    began = time.monotonic()
    try:
        for n in sorted(args.n):
            if args.stop_after is not None and time.monotonic() - began > 60 * args.stop_after:
                say(f"stopping before N={n}: --stop-after {args.stop_after:g} min reached")
                break
            results.append(run_one(n, opts, root))
            say(results[-1].verdict())
    except KeyboardInterrupt:
        say("interrupted: everything started has been stopped")
    finally:
        if args.keep:
            say(f"work folder kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(render(results, opts))


if __name__ == "__main__":
    main()
