"""A Prometheus that answers slowly delays only the experiments that read it (the scheduler's
bulkhead, :mod:`modelrollout.controller.schedule`), on the real kube-apiserver and Prometheus.

Nine experiments tick every 3 s; six of them read a Prometheus that answers every request 2 s late
(a loopback proxy in front of the real one: a fault a real Prometheus does not produce on demand),
so each of their ticks takes 12 s or more. The operator runs 4 tick threads, of which one
Prometheus address may hold 3: the slow experiments queue for their 3, and the three that read
the real Prometheus keep their 3 s interval on the fourth. Without the limit, the slow ticks would
hold all four threads and the fast experiments would wait about as long as a slow tick.

The experiments, the traffic exporter and the proxy are those of ``bench/operator_scale.py``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import os
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelrollout.devstack.controlplane.env import LocalEnv
from modelrollout.devstack.controlplane.procs import ManagedProcess, free_port
from modelrollout.devstack.controlplane.prometheus import Prometheus

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "bench" / "operator_scale.py"
INTERVAL_S = 3.0
SLOW, FAST, WORKERS, DELAY_S = 6, 3, 4, 2.0


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_operator_scale", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


scale = _load()


@pytest.fixture
def exporter(localenv_prometheus: Prometheus) -> Iterator[list[Any]]:
    """The bench's experiments and the counters of their variants, scraped by the real Prometheus."""
    from prometheus_client import CollectorRegistry, start_http_server

    namespace = f"slow-{secrets.token_hex(3)}"
    experiments = [scale.Experiment(namespace, f"e{i}") for i in range(SLOW + FAST)]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(scale.Traffic(experiments, rps=5.0))
    port = free_port()
    server, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    localenv_prometheus.set_targets(f"slow-{namespace}", [f"127.0.0.1:{port}"])
    try:
        yield experiments
    finally:
        server.shutdown()
        server.server_close()


def test_a_slow_prometheus_delays_only_the_experiments_that_read_it(
    localenv: LocalEnv, localenv_prometheus: Prometheus, exporter: list[Any], tmp_path: Path
) -> None:
    experiments = exporter
    namespace = experiments[0].namespace
    api = scale.admin_client(localenv.admin_kubeconfig)
    custom = client.CustomObjectsApi(api)
    proxy = scale.SlowProxy(localenv_prometheus.url, DELAY_S)
    operator: ManagedProcess | None = None
    try:
        series = f'count(impressions_total{{namespace="{namespace}"}}) >= {2 * len(experiments)}'
        localenv_prometheus.wait_for_value(series, timeout=60)
        slow = {e.key: proxy.url for e in experiments[:SLOW]}
        scale.create_objects(api, experiments, localenv_prometheus.url, f"{INTERVAL_S:g}s", slow=slow)
        env = dict(os.environ, KUBECONFIG=str(localenv.admin_kubeconfig), PYTHONUNBUFFERED="1")
        log = tmp_path / "operator.log"
        operator = ManagedProcess("operator", [sys.executable, "-m", "modelrollout.cli", "run", "--namespace",
                                               namespace, f"--workers={WORKERS}", "--metrics-port=0"],
                                  log, env=env, cwd=tmp_path)
        operator.start()
        time.sleep(40)
        operator.check_running("while the experiments ticked")
        with log.open(errors="replace") as handle:
            ticks = scale.parse_operator_log(handle).ticks
    finally:
        if operator is not None:
            operator.stop()
        proxy.close()
        for exp in experiments:  # no operator runs now: drop kopf's finalizer so the namespace can go
            with contextlib.suppress(ApiException):
                custom.patch_namespaced_custom_object(scale.GROUP, scale.VERSION, namespace, scale.PLURAL,
                                                      exp.name, {"metadata": {"finalizers": None}})
        api.close()

    fast = [e.key for e in experiments[SLOW:]]
    # From one interval after the last fast experiment's first tick (the start: kopf lists, every
    # experiment is due at once, the slow ones take their three threads first).
    settled = max(ticks[key][0][0] for key in fast) + INTERVAL_S
    gaps = [b - a for key in fast for (a, _), (b, _) in itertools.pairwise(ticks[key]) if a >= settled]
    assert len(gaps) >= 3 * 8, (len(gaps), {k: len(v) for k, v in ticks.items()})
    assert max(gaps) <= 2 * INTERVAL_S + 1.0, sorted(gaps)[-5:]
    # The slow lane was full, and held no more than its three threads.
    (tmp_path / "proxy.json").write_text(json.dumps(sorted(proxy.log)))
    assert proxy.peak == WORKERS - WORKERS // 4, proxy.peak
    slow_ticks = sum(len(ticks.get(e.key, [])) for e in experiments[:SLOW])
    assert slow_ticks < sum(len(ticks[key]) for key in fast) / 2, slow_ticks
