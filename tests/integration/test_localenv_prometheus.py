"""The real Prometheus scrapes a loopback target every second and answers PromQL with its value."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from modelrollout.devstack.controlplane.prometheus import Prometheus, render_config

pytestmark = pytest.mark.integration


class _Metrics(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        if self.path != "/metrics":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def metrics_server() -> Iterator[tuple[str, type[_Metrics]]]:
    handler = type("Handler", (_Metrics,), {"body": b""})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_config_scrapes_every_second() -> None:
    config = render_config(Path("/x/targets.json"))
    assert config["global"]["scrape_interval"] == "1s"
    assert config["scrape_configs"][0]["file_sd_configs"][0]["files"] == ["/x/targets.json"]


def test_prometheus_scrapes_a_loopback_target(prometheus: Prometheus,
                                              metrics_server: tuple[str, type[_Metrics]]) -> None:
    address, handler = metrics_server
    handler.body = (
        b"# TYPE model_predictions_total counter\n"
        b'model_predictions_total{variant="v7"} 1234\n'
        b"# TYPE model_latency_seconds gauge\n"
        b"model_latency_seconds 0.125\n"
    )
    prometheus.set_targets("sim-model", [address], labels={"model": "ranker"})
    prometheus.wait_for_targets("sim-model", 1, up=True)

    value = prometheus.wait_for_value('model_predictions_total{job="sim-model",model="ranker",variant="v7"}')
    assert value == 1234
    assert prometheus.wait_for_value('model_latency_seconds{job="sim-model"}') == 0.125

    # A new value is picked up within a couple of 1 s scrapes.
    handler.body = b'model_predictions_total{variant="v7"} 2000\n'

    def updated() -> bool:
        result = prometheus.query('model_predictions_total{job="sim-model"}')
        return bool(result) and float(result[0]["value"][1]) == 2000

    prometheus.process.wait_until(updated, 15, "scraping the new value")
    peak = prometheus.query('max_over_time(model_predictions_total{job="sim-model"}[1m])')
    assert peak[0]["value"][1] == "2000"


def test_targets_are_cleared_between_tests(prometheus: Prometheus) -> None:
    assert [t for t in prometheus.active_targets() if t["labels"].get("job") == "sim-model"] == []


def test_reload_keeps_serving(prometheus: Prometheus) -> None:
    prometheus.reload()
    assert prometheus.query("vector(1)")[0]["value"][1] == "1"
