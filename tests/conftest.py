"""Shared pytest configuration: the local-environment fixtures (kube-apiserver, etcd, Prometheus),
and a closing summary of the wall time spent in each tier (unit, integration, e2e)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Generator

import pytest

pytest_plugins = ["modelrollout.localenv.pytest_plugin"]

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
