"""One Prometheus provider per configuration, shared by every experiment that uses it: one per
experiment kept one connection each, and past Prometheus's 512 connections the others' ticks
timed out (bench/operator_scale.py at 1,000 experiments)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from modelrollout import reconcile
from modelrollout.api.spec import Prometheus
from modelrollout.metrics.credentials import Credentials

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    reconcile._providers.clear()
    yield
    for provider in reconcile._providers.values():
        provider.close()
    reconcile._providers.clear()


def prom(address: str = "http://prometheus:9090", timeout: str = "5s") -> Prometheus:
    return Prometheus.model_validate({"address": address, "timeout": timeout})


def test_experiments_with_the_same_prometheus_share_one_provider() -> None:
    a = reconcile.shared_provider(prom(), Credentials())
    assert reconcile.shared_provider(prom(), Credentials()) is a
    assert reconcile.shared_provider(prom(timeout="9s"), Credentials()) is not a
    assert reconcile.shared_provider(prom(), Credentials(bearer_token="t")) is not a
    assert reconcile.shared_provider(prom("http://other:9090"), Credentials()) is not a
    assert len(reconcile._providers) == 4


def test_its_pool_keeps_a_connection_per_worker() -> None:
    provider = reconcile.shared_provider(prom(), Credentials())
    adapter = provider._session.get_adapter("http://prometheus:9090/api/v1/query")
    assert adapter._pool_maxsize == reconcile.MAX_WORKERS  # type: ignore[attr-defined]


def test_the_least_recently_used_configuration_is_closed_past_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reconcile, "MAX_PROVIDERS", 2)
    first = reconcile.shared_provider(prom("http://a:9090"), Credentials())
    second = reconcile.shared_provider(prom("http://b:9090"), Credentials())
    assert reconcile.shared_provider(prom("http://a:9090"), Credentials()) is first  # a is now recent
    reconcile.shared_provider(prom("http://c:9090"), Credentials())
    assert [k[0] for k in reconcile._providers] == ["http://a:9090", "http://c:9090"]
    assert not second._cleanup.alive  # closed
    assert first._cleanup.alive
