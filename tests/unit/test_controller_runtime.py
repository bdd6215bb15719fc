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
