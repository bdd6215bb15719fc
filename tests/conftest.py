"""Shared pytest configuration: the local-environment fixtures (kube-apiserver, etcd, Prometheus),
and a closing summary of the wall time spent in each tier (unit, integration, e2e)."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Generator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

pytest_plugins = ["modelrollout.devstack.controlplane.pytest_plugin"]

TIERS = ("unit", "integration", "e2e")
_tier_seconds: dict[str, float] = defaultdict(float)
_tier_counts: dict[str, int] = defaultdict(int)


def _tier(item: pytest.Item) -> str:
    return next((t for t in TIERS if item.get_closest_marker(t) is not None), "unmarked")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    # Wall time of the whole protocol (setup, call, teardown): the session fixtures that start the
    # control plane are charged to the first test of the tier that needs them, as CI pays them.
    started = time.monotonic()
    yield
    tier = _tier(item)
    _tier_seconds[tier] += time.monotonic() - started
    _tier_counts[tier] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _tier_counts:
        return
    terminalreporter.section("wall time by tier")
    for tier in (*TIERS, "unmarked"):
        if _tier_counts.get(tier):
            seconds = _tier_seconds[tier]
            terminalreporter.write_line(
                f"{tier:<12} {_tier_counts[tier]:>5} tests  {seconds:8.1f} s  ({seconds / 60:.1f} min)"
            )


@pytest.fixture
def json_receiver() -> Iterator[tuple[str, list[dict[str, Any]], list[int]]]:
    """An HTTP server on loopback that keeps every POST (path, content type, JSON body) and answers
    with the codes queued in the third item (200 when none): a notification sink for the tests."""
    got: list[dict[str, Any]] = []
    answers: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            got.append({"path": self.path, "type": self.headers["Content-Type"],
                        "body": json.loads(self.rfile.read(length))})
            self.send_response(answers.pop(0) if answers else 200)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", got, answers
    server.shutdown()
    server.server_close()
