"""One Prometheus provider per configuration, shared by every experiment that uses it: one per
experiment kept one connection each, and past Prometheus's 512 connections the others' ticks
timed out (bench/operator_scale.py at 1,000 experiments)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from modelrollout.api.spec import Prometheus
from modelrollout.controller.runtime import ProviderCache
from modelrollout.metrics.credentials import Credentials

pytestmark = pytest.mark.unit


WORKERS = 32


@pytest.fixture
def cache() -> Iterator[ProviderCache]:
    found = ProviderCache(pool_size=WORKERS, limit=64)
    yield found
    found.close()


def prom(address: str = "http://prometheus:9090", timeout: str = "5s") -> Prometheus:
    return Prometheus.model_validate({"address": address, "timeout": timeout})


def test_experiments_with_the_same_prometheus_share_one_provider(cache: ProviderCache) -> None:
    a = cache.get(prom(), Credentials())
    assert cache.get(prom(), Credentials()) is a
    assert cache.get(prom(timeout="9s"), Credentials()) is not a
    assert cache.get(prom(), Credentials(bearer_token="t")) is not a
    assert cache.get(prom("http://other:9090"), Credentials()) is not a
    assert len(cache.providers) == 4


def test_its_pool_keeps_a_connection_per_worker(cache: ProviderCache) -> None:
    provider = cache.get(prom(), Credentials())
    adapter = provider._session.get_adapter("http://prometheus:9090/api/v1/query")
    assert adapter._pool_maxsize == WORKERS  # type: ignore[attr-defined]


def test_the_least_recently_used_configuration_is_closed_past_the_limit(cache: ProviderCache) -> None:
    cache.limit = 2
    first = cache.get(prom("http://a:9090"), Credentials())
    second = cache.get(prom("http://b:9090"), Credentials())
    assert cache.get(prom("http://a:9090"), Credentials()) is first  # a is now recent
    cache.get(prom("http://c:9090"), Credentials())
    assert [k[0] for k in cache.providers] == ["http://a:9090", "http://c:9090"]
    assert not second._cleanup.alive  # closed
    assert first._cleanup.alive


def test_the_essence_without_status_is_kopfs_own_and_in_the_same_annotation() -> None:
    """kopf compares this essence with the one stored in its annotation at every event: built
    without copying the status first, it must be exactly kopf's (or every object would look
    changed after an upgrade and tick at once)."""
    import kopf

    from modelrollout.controller.runtime import EssenceWithoutStatus

    raw = {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelExperiment",
        "metadata": {
            "name": "ranker", "namespace": "shop", "generation": 3, "resourceVersion": "99",
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
            "finalizers": ["modelrollout.io/finalizer"],
            "labels": {"team": "search"},
            "annotations": {
                "modelrollout.io/pause": "true",
                "kopf.zalando.org/last-handled-configuration": "{}",
            },
        },
        "spec": {"champion": {"name": "v1"}, "rollout": {"interval": "30s"}},
        "status": {"phase": "Progressing", "history": [{"step": 1}] * 50},
    }
    body = kopf.Body(raw)
    ours, kopfs = EssenceWithoutStatus(), kopf.AnnotationsDiffBaseStorage()
    assert ours.build(body=body) == kopfs.build(body=body)
    assert "status" not in ours.build(body=body)
    assert ours.make_keys(ours.key, body=body) == kopfs.make_keys(kopfs.key, body=body)
