"""Counts you can trust: false and true sample ratio mismatches, and the primary test, on the real
Prometheus and the real operator process, over scrape intervals of 5, 15, 30 and 60 s.

Run on demand:  ``.venv/bin/python bench/measurement.py [--runs new baseline] [--parallel] [--quick]``

What runs (on loopback; nothing is faked but the traffic):

* a local control plane (kube-apiserver, etcd, the upstream Istio CRDs and the modelrollout CRD,
  see ``modelrollout.devstack.controlplane``) and the operator as its own process (``modelrollout run``);
* one real Prometheus per scrape interval (Debian's package), each scraping the exporter of its
  group;
* an exporter in this process: the counters of every experiment's variants,
  ``bench_impressions_total`` and ``bench_clicks_total`` (labels ``run``, ``stream``, ``model``), as
  two pods per variant (two scrape targets per group, scraped at their own offsets). Traffic is
  Poisson at ``--rps`` requests per second per experiment, split by the weights of the
  experiment's VirtualService *as the operator writes them*, read by a watch and applied after the
  experiment's **route propagation delay** (0, 2, 5 or 10 s, by turn). Each pod's counters **reset**
  now and then (a pod restarted in place: a Poisson process, ``--reset-minutes`` apart on average,
  two hours by default), which loses what it counted since its last scrape, as a real restart does.

The experiments of each group (``--aa`` A/A, ``--loss`` with a true mismatch, ``--lift`` with a
better challenger, per group):

* **A/A**: both variants click at 20 %. Every step must pass; at the last step the sequential test
  waits for a verdict until ``maxDuration``, then keeps the champion. Any sample ratio mismatch
  (the condition ``SampleRatioMismatch`` True at any time) is a false one.
* **loss**: the challenger's metrics lose 2 % of its requests (its counted impressions, and the
  clicks of those, are thinned by 2 %). The mismatch must be found (the condition goes True).
* **lift**: the challenger clicks at 20 % x (1 + MDE), MDE 5 %: the power of the primary test.

Each group's timing follows its scrape interval (``minStepDuration`` eight scrapes and at least 2
minutes, ``rollout.interval`` half a scrape between 10 and 30 s, ``maxDuration`` four steps and ten
scrapes). The same streams (seeds, delays, resets) are run by each of ``--runs``:

* ``new``: this checkout (exact counts, settle, the SRM test of ``policy/srm.py``);
* ``baseline``: the operator of ``--baseline-ref`` (default: the commit before the exact counts),
  from a git worktree, with its own CRD on its own control plane, and metric templates in the
  form it reads (``sum(increase(<selector>[{{window}}]))``).

Reported per run and scrape interval: A/A experiments that ever held on SRM, and the longest hold;
true mismatches found (share, median samples to detection, and confirmations); the A/A false
promotion rate and the power at the MDE; the settle (the reason and the median seconds a step
waited before counting); and every SRM hold of an A/A with its numbers, to say why it happened.
The baseline of the ratios is the ``baseline`` run, on the same streams.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

VARIANTS = ("v6", "v7")
PODS = ("a", "b")
CLICK_RATE = 0.20
MDE = 0.05
LOSS = 0.02
DELAYS = (0.0, 2.0, 5.0, 10.0)
SCRAPES = (5, 15, 30, 60)
GROUP, VERSION, PLURAL = "modelrollout.io", "v1alpha1", "modelexperiments"
ISTIO = ("networking.istio.io", "v1", "virtualservices")
BASELINE_REF = "bae5b14"  # main before the exact counts (issue 12)
ROOT = Path(__file__).resolve().parent.parent


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- the streams ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Timing:
    """The rollout timing of one scrape group (seconds)."""

    scrape: int
    interval: int
    min_step: int
    max_duration: int

    @classmethod
    def of(cls, scrape: int, quick: bool = False) -> Timing:
        interval = min(30, max(10, scrape // 2))
        min_step = max(60 if quick else 120, 8 * scrape)
        return cls(scrape, interval, min_step, 4 * min_step + 10 * scrape)


@dataclass(frozen=True)
class Stream:
    """One experiment's traffic: what it is, and its seeded randomness."""

    index: int
    kind: str  # aa | loss | lift
    timing: Timing
    delay: float
    seed: int

    @property
    def name(self) -> str:
        return f"s{self.timing.scrape:02d}-{self.kind}-{self.index:03d}"

    @property
    def click_rates(self) -> tuple[float, float]:
        return (CLICK_RATE, CLICK_RATE * (1 + MDE) if self.kind == "lift" else CLICK_RATE)

    @property
    def losses(self) -> tuple[float, float]:
        return (0.0, LOSS if self.kind == "loss" else 0.0)


def make_streams(scrapes: Sequence[int], aa: int, loss: int, lift: int, quick: bool) -> list[Stream]:
    out: list[Stream] = []
    for scrape in scrapes:
        timing = Timing.of(scrape, quick)
        for kind, count in (("aa", aa), ("loss", loss), ("lift", lift)):
            for i in range(count):
                n = len(out)
                out.append(Stream(i, kind, timing, DELAYS[n % len(DELAYS)], seed=1000 + n))
    return out


# ---- traffic ----------------------------------------------------------------------------------------
class Traffic:
    """The counters of every stream, per variant and pod, growing with Poisson traffic split by the
    routes the operator wrote (after each stream's delay), with resets now and then."""

    def __init__(
        self, streams: Sequence[Stream], run: str, rps: float, reset_minutes: float, seed: int
    ) -> None:
        self.streams = list(streams)
        self.run = run
        self.rps = rps
        self.rng = np.random.default_rng(seed)
        shape = (len(self.streams), len(VARIANTS), len(PODS))
        self.impressions = np.zeros(shape)
        self.clicks = np.zeros(shape)
        self.weights = np.tile(np.array([1.0, 0.0]), (len(self.streams), 1))
        self.pending: list[list[tuple[float, tuple[float, float]]]] = [[] for _ in self.streams]
        self.click_rates = np.array([s.click_rates for s in self.streams])
        self.keep = 1.0 - np.array([s.losses for s in self.streams])
        self.reset_rate = 0.0 if reset_minutes <= 0 else 1.0 / (60.0 * reset_minutes)
        self.resets = 0
        self.index = {s.name: i for i, s in enumerate(self.streams)}
        self.lock = threading.Lock()
        self.last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="traffic", daemon=True)

    def route(self, name: str, weights: Mapping[str, int]) -> None:
        """The operator wrote ``weights``: they reach the traffic after the stream's delay."""
        i = self.index.get(name)
        if i is None or sum(weights.values()) <= 0:
            return
        total = float(sum(weights.values()))
        split = (weights.get(VARIANTS[0], 0) / total, weights.get(VARIANTS[1], 0) / total)
        with self.lock:
            self.pending[i].append((time.monotonic() + self.streams[i].delay, split))

    def _advance(self) -> None:
        now = time.monotonic()
        dt, self.last = now - self.last, now
        for i, queue in enumerate(self.pending):
            while queue and queue[0][0] <= now:
                self.weights[i] = queue.pop(0)[1]
        lam = self.weights * self.rps * dt
        counted = self.rng.binomial(self.rng.poisson(lam), self.keep)
        pod_a = self.rng.binomial(counted, 0.5)
        for pod, n in enumerate((pod_a, counted - pod_a)):
            self.impressions[:, :, pod] += n
            self.clicks[:, :, pod] += self.rng.binomial(n, self.click_rates)
        if self.reset_rate > 0:
            hit = self.rng.random(self.impressions.shape) < self.reset_rate * dt
            if hit.any():
                self.impressions[hit] = 0.0
                self.clicks[hit] = 0.0
                self.resets += int(hit.sum())

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            with self.lock:
                self._advance()

    def start(self) -> None:
        self.last = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def collector(self, scrape: int, pod: int) -> Any:
        """The exposition of one pod of one scrape group."""
        traffic = self
        members = [i for i, s in enumerate(self.streams) if s.timing.scrape == scrape]

        class Pod:
            def collect(self) -> Iterator[Any]:
                from prometheus_client.core import CounterMetricFamily

                with traffic.lock:
                    traffic._advance()
                    impressions = traffic.impressions[members, :, pod].copy()
                    clicks = traffic.clicks[members, :, pod].copy()
                labels = ["run", "stream", "model"]
                shown = CounterMetricFamily("bench_impressions", "Predictions shown", labels=labels)
                clicked = CounterMetricFamily("bench_clicks", "Predictions clicked", labels=labels)
                for k, i in enumerate(members):
                    for j, variant in enumerate(VARIANTS):
                        key = [traffic.run, traffic.streams[i].name, variant]
                        shown.add_metric(key, impressions[k, j])
                        clicked.add_metric(key, clicks[k, j])
                yield from (shown, clicked)

        return Pod()


# ---- the objects -------------------------------------------------------------------------------------
def manifest(stream: Stream, run: str, prometheus_url: str, *, baseline: bool) -> dict[str, Any]:
    t = stream.timing
    selector = f'run="{run}", stream="{stream.name}", model="{{{{variant}}}}"'

    def field_of(metric: str) -> str:
        counter = f"{metric}{{{selector}}}"
        return f"sum(increase({counter}[{{{{window}}}}]))" if baseline else counter

    spec: dict[str, Any] = {
        "champion": {"name": VARIANTS[0], "service": f"{stream.name}-{VARIANTS[0]}"},
        "challengers": [{"name": VARIANTS[1], "service": f"{stream.name}-{VARIANTS[1]}"}],
        "traffic": {"provider": "istio", "istio": {"virtualService": stream.name, "routes": ["primary"]}},
        "rollout": {"steps": [10, 25, 50, 100], "minStepDuration": f"{t.min_step}s",
                    "interval": f"{t.interval}s"},
        "metrics": {
            "prometheus": {"address": prometheus_url, "timeout": "10s"},
            "primary": {"name": "click-through", "type": "proportion",
                        "successes": field_of("bench_clicks_total"),
                        "trials": field_of("bench_impressions_total"), "direction": "increase",
                        "minimumDetectableEffect": MDE},
        },
        "analysis": {"maxDuration": f"{t.max_duration}s", "onInconclusive": "keepChampion",
                     "maxConsecutiveErrors": 1000, "maxDataOutage": "10m"},
    }
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelExperiment",
            "metadata": {"name": stream.name}, "spec": spec}


def virtual_service(stream: Stream) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": stream.name},
            "spec": {"hosts": [stream.name], "http": [{"name": "primary", "route": [
                {"destination": {"host": f"{stream.name}-{VARIANTS[0]}"}, "weight": 100}]}]}}


def route_weights(vs: Mapping[str, Any]) -> tuple[str, dict[str, int]] | None:
    """(stream name, weights by variant) of a VirtualService of this bench."""
    name = (vs.get("metadata") or {}).get("name", "")
    for http in (vs.get("spec") or {}).get("http") or []:
        if http.get("name") != "primary":
            continue
        weights: dict[str, int] = {}
        for route in http.get("route") or []:
            host = (route.get("destination") or {}).get("host", "")
            variant = host.rsplit("-", 1)[-1]
            weights[variant] = int(route.get("weight", 0) or 0)
        return name, weights
    return None


# ---- observers ----------------------------------------------------------------------------------------
@dataclass
class Seen:
    """What the bench saw of one experiment."""

    phase: str = "Pending"
    srm_since: float | None = None  # the condition SampleRatioMismatch True since
    srm_first: float | None = None
    srm_holds: list[tuple[float, float]] = field(default_factory=list)  # (start, seconds)
    samples_at_first: float | None = None
    srm_confirmed: bool = False
    srm_messages: list[str] = field(default_factory=list)
    started: float | None = None
    finished: float | None = None
    settles: list[tuple[str, float]] = field(default_factory=list)
    final_status: dict[str, Any] = field(default_factory=dict)
    steps_seen: set[int] = field(default_factory=set)


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)


def observe(seen: Seen, status: Mapping[str, Any], now: float) -> None:
    seen.phase = str(status.get("phase") or "Pending")
    seen.final_status = dict(status)
    if seen.started is None and seen.phase not in ("Pending",):
        seen.started = now
    if status.get("currentStep") is not None:
        seen.steps_seen.add(int(status["currentStep"]))
    srm = _condition(status, "SampleRatioMismatch")
    held = srm is not None and srm.get("status") == "True"
    if held and seen.srm_since is None:
        seen.srm_since = now
        if seen.srm_first is None:
            seen.srm_first = now
            variants = ((status.get("analysis") or {}).get("variants") or {}).values()
            seen.samples_at_first = float(sum(float(v.get("n") or 0.0) for v in variants))
        seen.srm_messages.append(str((srm or {}).get("message", ""))[:400])
    if not held and seen.srm_since is not None:
        seen.srm_holds.append((seen.srm_since, now - seen.srm_since))
        seen.srm_since = None
    alarm = (status.get("srm") or {}).get("alarm") or {}
    seen.srm_confirmed = seen.srm_confirmed or bool(alarm.get("confirmed"))
    if seen.phase in ("Promoted", "RolledBack", "Failed") and seen.finished is None:
        seen.finished = now
        for stratum in status.get("strata") or []:
            settle = stratum.get("settle") or {}
            if settle:
                seen.settles.append((str(settle.get("reason")), float(settle.get("seconds") or 0.0)))


class Watches:
    """Watches the experiments (their status) and the VirtualServices (the routes, for the traffic)."""

    def __init__(self, api: Any, traffic: Traffic) -> None:
        self.api = api
        self.traffic = traffic
        self.seen: dict[str, Seen] = defaultdict(Seen)
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._experiments, daemon=True),
                         threading.Thread(target=self._routes, daemon=True)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()

    def _stream(self, group: str, version: str, plural: str) -> Iterator[dict[str, Any]]:
        from kubernetes import client, watch

        custom = client.CustomObjectsApi(self.api)
        while not self._stop.is_set():
            w = watch.Watch()
            try:
                for event in w.stream(custom.list_cluster_custom_object, group, version, plural,
                                      timeout_seconds=60):
                    if self._stop.is_set():
                        return
                    yield event["object"]
            except Exception as exc:  # a dropped watch: start it again
                say(f"watch {plural}: {type(exc).__name__}; again")
                time.sleep(0.5)

    def _experiments(self) -> None:
        for obj in self._stream(GROUP, VERSION, PLURAL):
            name = obj["metadata"]["name"]
            with self.lock:
                observe(self.seen[name], obj.get("status") or {}, time.time())

    def _routes(self) -> None:
        for obj in self._stream(*ISTIO):
            found = route_weights(obj)
            if found is not None:
                self.traffic.route(*found)

    def finished(self, names: Sequence[str]) -> int:
        with self.lock:
            return sum(1 for n in names if self.seen[n].finished is not None)


# ---- one run --------------------------------------------------------------------------------------------
@dataclass
class RunResult:
    run: str
    streams: list[Stream]
    seen: dict[str, Seen]
    resets: int
    wall_s: float
    operator_cpu_pct: float
    note: str = ""


def admin_client(kubeconfig: Path) -> Any:
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.connection_pool_maxsize = 16
    return client.ApiClient(configuration)


def baseline_checkout(workdir: Path, ref: str) -> Path:
    """A git worktree of ``ref`` (the operator before the change), made once."""
    tree = workdir / f"baseline-{ref}"
    if not (tree / "operator").exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), ref], check=True,
                       capture_output=True)
    return tree


def create_objects(api: Any, namespace: str, streams: Sequence[Stream], run: str, urls: Mapping[int, str],
                   baseline: bool) -> None:
    from kubernetes import client

    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    for stream in streams:
        for variant in VARIANTS:
            core.create_namespaced_service(namespace, client.V1Service(
                metadata=client.V1ObjectMeta(name=f"{stream.name}-{variant}"),
                spec=client.V1ServiceSpec(selector={"app": stream.name, "version": variant},
                                          ports=[client.V1ServicePort(port=80)])))
        custom.create_namespaced_custom_object(*ISTIO[:2], namespace, ISTIO[2], virtual_service(stream))
    for stream in streams:
        body = manifest(stream, run, urls[stream.timing.scrape], baseline=baseline)
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_one(run: str, streams: Sequence[Stream], opts: argparse.Namespace, root: Path) -> RunResult:
    from prometheus_client import CollectorRegistry, start_http_server

    from modelrollout.devstack.controlplane import kube, upstream
    from modelrollout.devstack.controlplane.env import LocalEnv
    from modelrollout.devstack.controlplane.procs import ManagedProcess, free_port
    from modelrollout.devstack.controlplane.prometheus import Prometheus

    baseline = run == "baseline"
    workdir = root / run
    workdir.mkdir(parents=True, exist_ok=True)
    tree = baseline_checkout(root, opts.baseline_ref) if baseline else ROOT
    scrapes = sorted({s.timing.scrape for s in streams})
    traffic = Traffic(streams, run, opts.rps, opts.reset_minutes, seed=opts.seed)
    servers: list[Any] = []
    operator: ManagedProcess | None = None
    watches: Watches | None = None
    started = time.monotonic()
    env_dir = workdir / "env"
    with LocalEnv(env_dir, controller_manager=False, apply_project_crds=not baseline, progress=say) as env:
        try:
            if baseline:
                kube.apply_crds(env.admin_kubeconfig, list(upstream.crd_documents(tree / "crds")))
            urls: dict[int, str] = {}
            for scrape in scrapes:
                prom = Prometheus(workdir / f"prometheus-{scrape}s", scrape_interval=f"{scrape}s")
                env.processes.append(prom.process)
                prom.start()
                targets = []
                for pod in range(len(PODS)):
                    registry = CollectorRegistry(auto_describe=False)
                    registry.register(traffic.collector(scrape, pod))
                    port = free_port()
                    server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
                    servers.append(server)
                    targets.append(f"127.0.0.1:{port}")
                prom.set_targets("bench", targets)
                urls[scrape] = prom.url
            api = admin_client(env.admin_kubeconfig)
            namespace = f"bench-{run}-{secrets.token_hex(2)}"
            create_objects(api, namespace, streams, run, urls, baseline)
            traffic.start()
            watches = Watches(api, traffic)
            watches.start()
            say(f"{run}: {len(streams)} experiments in {namespace}; starting the operator of {tree}")
            env_vars = dict(os.environ, KUBECONFIG=str(env.admin_kubeconfig), PYTHONUNBUFFERED="1",
                            PYTHONPATH=str(tree / "operator"))
            argv = [sys.executable, "-m", "modelrollout.cli", "run", "--all-namespaces"]
            operator = ManagedProcess("operator", argv, workdir / "operator.log", env=env_vars, cwd=tree)
            operator.start()
            cpu_before, t_before = cpu_seconds(operator.pid), time.monotonic()
            deadline = time.monotonic() + max(s.timing.max_duration for s in streams) + opts.grace
            names = [s.name for s in streams]
            last_report = 0.0
            while watches.finished(names) < len(names) and time.monotonic() < deadline:
                operator.check_running("while the experiments ran")
                if time.monotonic() - last_report > 120:
                    last_report = time.monotonic()
                    done = watches.finished(names)
                    say(f"{run}: {done}/{len(names)} finished; {traffic.resets} resets so far")
                time.sleep(2.0)
            cpu_pct = 100 * (cpu_seconds(operator.pid) - cpu_before) / (time.monotonic() - t_before)
            note = "" if watches.finished(names) == len(names) else (
                f"{len(names) - watches.finished(names)} experiments had not finished by the deadline")
        finally:
            if watches is not None:
                watches.stop()
            if operator is not None:
                operator.stop()
            traffic.stop()
            for server in servers:
                server.shutdown()
                server.server_close()
    assert watches is not None
    return RunResult(run, list(streams), dict(watches.seen), traffic.resets, time.monotonic() - started,
                     cpu_pct, note)


# ---- the tables ------------------------------------------------------------------------------------------
def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def _fmt(value: float, spec: str = ",.0f") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


@dataclass
class GroupFigures:
    aa: int = 0
    aa_held: int = 0
    aa_longest_hold: float = 0.0
    aa_promoted: int = 0
    aa_all_steps: int = 0
    loss: int = 0
    loss_found: int = 0
    loss_confirmed: int = 0
    loss_samples: list[float] = field(default_factory=list)
    lift: int = 0
    lift_promoted: int = 0
    settles: dict[str, int] = field(default_factory=dict)
    settle_seconds: list[float] = field(default_factory=list)
    unfinished: int = 0


def figures(result: RunResult) -> dict[int, GroupFigures]:
    out: dict[int, GroupFigures] = defaultdict(GroupFigures)
    for stream in result.streams:
        g = out[stream.timing.scrape]
        seen = result.seen.get(stream.name, Seen())
        g.unfinished += seen.finished is None
        for reason, seconds in seen.settles:
            g.settles[reason] = g.settles.get(reason, 0) + 1
            if reason != "Unchanged":
                g.settle_seconds.append(seconds)
        if stream.kind == "aa":
            g.aa += 1
            g.aa_held += seen.srm_first is not None
            holds = [d for _, d in seen.srm_holds] + (
                [(seen.finished or time.time()) - seen.srm_since] if seen.srm_since is not None else [])
            g.aa_longest_hold = max([g.aa_longest_hold, *holds])
            g.aa_promoted += seen.phase == "Promoted"
            g.aa_all_steps += {0, 1, 2} <= seen.steps_seen
        elif stream.kind == "loss":
            g.loss += 1
            if seen.srm_first is not None:
                g.loss_found += 1
                g.loss_samples.append(seen.samples_at_first or math.nan)
            g.loss_confirmed += seen.srm_confirmed
        else:
            g.lift += 1
            g.lift_promoted += seen.phase == "Promoted"
    return out


def render(results: Sequence[RunResult]) -> str:
    lines: list[str] = []
    by_run = {r.run: figures(r) for r in results}
    base = by_run.get("baseline")
    header = ("| run | scrape | A/A held on SRM | longest hold | A/A promoted | A/A through every step | "
              "2 % loss found | median samples to find | confirmed | power at MDE | settle (reason: n) | "
              "median settle s |")
    lines += [header, "|" + "---|" * 12]
    for r in results:
        for scrape, g in sorted(by_run[r.run].items()):
            settles = ", ".join(f"{k} {v}" for k, v in sorted(g.settles.items())) or "-"
            lines.append(
                f"| {r.run} | {scrape} s | {g.aa_held}/{g.aa} | {_fmt(g.aa_longest_hold, '.0f')} s | "
                f"{g.aa_promoted}/{g.aa} | {g.aa_all_steps}/{g.aa} | {g.loss_found}/{g.loss} | "
                f"{_fmt(_median(g.loss_samples))} | {g.loss_confirmed}/{g.loss} | "
                f"{g.lift_promoted}/{g.lift} | "
                f"{settles} | {_fmt(_median(g.settle_seconds), '.1f')} |")
    lines.append("")
    for r in results:
        total = by_run[r.run].values()
        aa = sum(g.aa for g in total)
        lines.append(
            f"- {r.run}: {sum(g.aa_held for g in total)} of {aa} A/A lifetimes held on SRM; "
            f"{sum(g.loss_found for g in total)} of {sum(g.loss for g in total)} true 2 % losses found; "
            f"A/A false promotions {sum(g.aa_promoted for g in total)}/{aa}; power "
            f"{sum(g.lift_promoted for g in total)}/{sum(g.lift for g in total)}; {r.resets} counter resets; "
            f"operator {r.operator_cpu_pct:.0f} % of a core; {r.wall_s / 60:.0f} min"
            + (f"; {r.note}" if r.note else ""))
        if base is not None and r.run != "baseline":
            b_held = sum(g.aa_held for g in base.values())
            b_samples = _median([x for g in base.values() for x in g.loss_samples])
            n_samples = _median([x for g in total for x in g.loss_samples])
            held = sum(g.aa_held for g in total)
            lines.append(f"  against the baseline on the same streams: A/A held {held} vs {b_held}; "
                         f"median samples to find a 2 % loss {_fmt(n_samples)} vs {_fmt(b_samples)} "
                         f"(ratio {_fmt(n_samples / b_samples if b_samples else math.nan, '.2f')})")
    lines.append("")
    lines.append("SRM holds of A/A experiments (why):")
    for r in results:
        for stream in r.streams:
            seen = r.seen.get(stream.name)
            if stream.kind == "aa" and seen is not None and seen.srm_first is not None:
                lines.append(f"- {r.run} {stream.name} (delay {stream.delay:.0f} s): held "
                             f"{', '.join(f'{d:.0f} s' for _, d in seen.srm_holds) or 'until the end'}; "
                             f"{seen.srm_messages[0] if seen.srm_messages else ''}")
    return "\n".join(lines)


def run_all(runs: Sequence[str], streams: Sequence[Stream], opts: argparse.Namespace,
            root: Path) -> list[RunResult]:
    """Each run in turn, or side by side with ``--parallel``; the results in the order asked."""
    if not opts.parallel:
        results = []
        for run in runs:
            results.append(run_one(run, streams, opts, root))
            say(f"{run}: done in {results[-1].wall_s / 60:.0f} min")
        return results
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(runs)) as pool:
        futures = [pool.submit(run_one, run, streams, opts, root) for run in runs]
        results = [f.result() for f in futures]
    for r in results:
        say(f"{r.run}: done in {r.wall_s / 60:.0f} min")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", nargs="+", default=["new", "baseline"], choices=["new", "baseline"])
    parser.add_argument("--scrapes", nargs="+", type=int, default=list(SCRAPES))
    parser.add_argument("--aa", type=int, default=50, help="A/A experiments per scrape interval")
    parser.add_argument("--loss", type=int, default=20, help="experiments with a true 2 %% loss per interval")
    parser.add_argument("--lift", type=int, default=20,
                        help="experiments with a lift of the MDE, per interval")
    parser.add_argument("--rps", type=float, default=2000.0, help="requests per second per experiment")
    parser.add_argument("--reset-minutes", type=float, default=120.0,
                        help="mean minutes between two resets of a pod")
    parser.add_argument("--grace", type=float, default=300.0, help="seconds past the longest maxDuration")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--baseline-ref", default=BASELINE_REF)
    parser.add_argument("--quick", action="store_true",
                        help="a short run to try the bench (not a measurement)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    parser.add_argument("--json", type=Path, help="also write the per-experiment observations here")
    parser.add_argument("--parallel", action="store_true",
                        help="run the runs side by side, each on its own control plane and Prometheus "
                             "(halves the wall time; both runs share the machine's load)")
    opts = parser.parse_args(argv)
    # A SIGTERM unwinds like an interrupt, so the control planes, Prometheus and operators stop too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    streams = make_streams(opts.scrapes, opts.aa, opts.loss, opts.lift, opts.quick)
    root = Path(tempfile.mkdtemp(prefix="modelrollout-measurement-"))
    results: list[RunResult] = []
    try:
        results.extend(run_all(opts.runs, streams, opts, root))
    finally:
        if opts.json is not None:
            opts.json.write_text(json.dumps({r.run: {n: {
                "phase": s.phase, "srmFirst": s.srm_first, "srmHolds": s.srm_holds,
                "samplesAtFirst": s.samples_at_first, "confirmed": s.srm_confirmed,
                "messages": s.srm_messages, "settles": s.settles, "steps": sorted(s.steps_seen),
                "srm": s.final_status.get("srm"),
                "outcome": {k: v for k, v in ((s.final_status.get("history") or [{}])[-1]).items()
                            if k in ("reason", "message", "step")},
                "analysisSrm": (s.final_status.get("analysis") or {}).get("srm"),
                "strata": [{k: st.get(k) for k in ("step", "weights", "countedFrom", "endedAt", "srmEpoch",
                                                   "spacing", "resets", "sampling")}
                           for st in s.final_status.get("strata") or []]}
                for n, s in r.seen.items()} for r in results}, indent=1))
        with contextlib.suppress(Exception):
            subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], check=False, capture_output=True)
        if not opts.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            say(f"kept {root}")
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
