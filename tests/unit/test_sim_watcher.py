"""The mesh's route watcher under faults a real apiserver will not produce on demand: an expired
watch (410 Gone), a server error and an object it cannot parse (faked client; DESIGN allows mocks
for exactly these)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import kubernetes.client
import kubernetes.config
import kubernetes.watch
import pytest
from kubernetes.client.exceptions import ApiException

from modelrollout.devstack.sim.mesh import Backend, MeshConfig, RouteWatcher
from modelrollout.devstack.sim.routes import RouteTable

pytestmark = pytest.mark.unit


def vs(resource_version: str, v7: int, regex: str | None = None) -> dict[str, Any]:
    route: dict[str, Any] = {
        "name": "primary",
        "route": [
            {"destination": {"host": "ranker-v6"}, "weight": 100 - v7},
            {"destination": {"host": "ranker-v7"}, "weight": v7},
        ],
    }
    if regex is not None:
        route["match"] = [{"headers": {"x-modelrollout-bucket": {"regex": regex}}}]
    return {
        "metadata": {"name": "ranker", "namespace": "shop", "resourceVersion": resource_version},
        "spec": {"http": [route]},
    }


class FakeCustomObjects:
    def __init__(self) -> None:
        self.lists: list[dict[str, Any]] = []
        self.listing = [vs("10", 10), vs("20", 80), vs("30", 30)]

    def list_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.lists.append(kwargs)
        item = self.listing[min(len(self.lists) - 1, len(self.listing) - 1)]
        return {"metadata": {"resourceVersion": item["metadata"]["resourceVersion"]}, "items": [item]}


SCRIPT: list[list[dict[str, Any]] | Exception] = []
WATCHES: list[dict[str, Any]] = []


class FakeWatch:
    def stream(self, _fn: Any, *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        WATCHES.append(kwargs)
        if not SCRIPT:
            time.sleep(0.05)
            return
        step = SCRIPT.pop(0)
        if isinstance(step, Exception):
            raise step
        yield from step

    def stop(self) -> None:
        pass


class FakeApiClient:
    def close(self) -> None:
        pass


def test_relists_on_gone_recovers_from_errors_and_keeps_routes_it_cannot_parse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    custom = FakeCustomObjects()
    monkeypatch.setattr(kubernetes.config, "new_client_from_config", lambda config_file=None: FakeApiClient())
    monkeypatch.setattr(kubernetes.client, "CustomObjectsApi", lambda _api: custom)
    monkeypatch.setattr(kubernetes.watch, "Watch", FakeWatch)
    SCRIPT[:] = [
        [{"type": "MODIFIED", "object": vs("11", 50)}, {"type": "ERROR", "object": {"code": 410}}],
        [
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "21"}}},
            {"type": "MODIFIED", "object": vs("22", 60, regex="(")},  # invalid: keep the 20/80 routes
            {"type": "DELETED", "object": vs("23", 60)},
        ],
        ApiException(status=500, reason="Internal Server Error"),
    ]
    WATCHES.clear()
    published: list[RouteTable] = []
    lock = threading.Lock()

    def publish(table: RouteTable) -> None:
        with lock:
            published.append(table)

    config = MeshConfig(
        namespace="shop", kind="istio", route="ranker", backends=(Backend("ranker-v6", "http://127.0.0.1:1"),)
    )
    logs: list[str] = []
    watcher = RouteWatcher(config, publish, log=logs.append)
    watcher.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with lock:
            if len(published) >= 5:
                break
        time.sleep(0.01)
    watcher.stop()
    watcher.join(timeout=5)
    assert not watcher.is_alive()

    versions = [(t.resource_version, t.weights().get("primary", {}).get("ranker-v7")) for t in published[:5]]
    assert versions == [("10", 10), ("11", 50), ("20", 80), ("23", None), ("30", 30)]
    assert published[3].rules == ()
    assert len(custom.lists) >= 3
    assert all(call["field_selector"] == "metadata.name=ranker" for call in custom.lists)
    assert WATCHES[0]["resource_version"] == "10"
    assert WATCHES[1]["resource_version"] == "20"  # a new list after 410 Gone, then watch from it
    assert watcher.restarts >= 2
    assert any("410 Gone" in line for line in logs)
    assert any("cannot use ranker at resourceVersion 22" in line for line in logs)
    assert any("500" in line for line in logs)
    assert watcher.synced.is_set()
