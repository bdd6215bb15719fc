"""``{{window}}`` against the real Prometheus: the range of every tick starts at the same instant.

An exporter on loopback serves one counter; Prometheus scrapes it every second. The counting
start is put one millisecond after a real sample ``t_k``; the provider then asks for the raw range
``x[{{window}}]`` at many evaluation times with every sub-second phase. With ranges rounded up to
whole seconds (the old rendering) ``t_k`` was in the range at most of those ticks, and ``increase()``
over a gap right after it then counted the gap's growth at some ticks and not at others: the false
sample ratio mismatch seen after a Prometheus restart (issue 6). Here the first sample of the
range must be ``t_(k+1)`` at every tick, which checks the rendering, the evaluation time the
provider sends, and how this Prometheus reads a range in milliseconds.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server

from modelrollout.localenv.prometheus import Prometheus
from modelrollout.metrics import PrometheusProvider, window_since
from modelrollout.observations import Unknown

pytestmark = pytest.mark.integration

TOK = secrets.token_hex(3)
JOB = f"window-{TOK}"
METRIC = f"window_probe_{TOK}_total"


def _samples(prometheus: Prometheus, at: float) -> list[float]:
    """The timestamps of the probe's raw samples in the 30 s before ``at``."""
    result = prometheus.query(f'{METRIC}{{job="{JOB}"}}[30s]', at=at)
    return [float(t) for t, _ in result[0]["values"]] if result else []


@pytest.fixture
def scraped_timestamps(prometheus: Prometheus) -> Iterator[list[float]]:
    """At least six scrapes of the probe, the timestamps of its samples."""
    registry = CollectorRegistry()
    probe = Counter(METRIC.removesuffix("_total"), "A counter that only needs to be scraped.",
                    registry=registry)
    probe.inc()
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        prometheus.set_targets(JOB, [f"127.0.0.1:{server.server_port}"])
        prometheus.wait_for_targets(JOB, 1, up=True)
        prometheus.process.wait_until(
            lambda: len(_samples(prometheus, datetime.now(UTC).timestamp())) >= 6, 30, "six scrapes")
        yield _samples(prometheus, datetime.now(UTC).timestamp())
    finally:
        prometheus.set_targets(JOB, [], wait=False)
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_the_range_of_every_tick_starts_just_after_the_counting_start(
    prometheus: Prometheus, scraped_timestamps: list[float]
) -> None:
    # Given counting started 1 ms after a real sample t_k (the next one is t_(k+1))
    t_k, t_next = scraped_timestamps[1], scraped_timestamps[2]
    start = datetime.fromtimestamp(t_k, UTC) + timedelta(milliseconds=1)
    last = scraped_timestamps[-1]
    firsts: dict[str, float | None] = {}
    with PrometheusProvider(prometheus.url) as provider:
        # When the provider asks for [{{window}}] at ticks with every sub-second phase
        for i in range(40):
            at = datetime.fromtimestamp(t_next, UTC) + timedelta(milliseconds=500 + 97 * i)
            if at.timestamp() > last:
                break
            window = window_since(start, at)
            answer = provider.query(f'{METRIC}{{job="{JOB}"}}[{window}]', at)
            assert not isinstance(answer, Unknown), answer
            values = answer[0]["values"] if answer else []
            firsts[f"{at.timestamp():.3f} [{window}]"] = float(values[0][0]) if values else None
    # Then the first sample in the range is t_(k+1) at every tick: t_k is never in it
    assert len(firsts) >= 10, firsts
    assert set(firsts.values()) == {t_next}, (t_k, t_next, firsts)
