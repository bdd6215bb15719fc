"""The pure helpers of bench/operator_scale.py: log parsing, gaps, rates, durations, expositions."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.unit

BENCH = Path(__file__).resolve().parents[2] / "bench" / "operator_scale.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_operator_scale", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


scale = _load()


def _line(message: str, at: str, name: str | None = "e0001", **extra: object) -> str:
    record: dict[str, object] = {"message": message, "timestamp": at, **extra}
    if name is not None:
        record["experiment"] = {"kind": "ModelExperiment", "name": name, "namespace": "ns"}
    return json.dumps(record)


def test_summary_percentiles_and_empty() -> None:
    s = scale.Summary.of(range(1, 101))
    assert s.count == 100
    assert s.p50 == pytest.approx(50.5)
    assert s.p99 == pytest.approx(99.01)
    assert s.max == 100
    empty = scale.Summary.of([])
    assert empty.count == 0
    assert math.isnan(empty.p99)


def test_parse_operator_log_reads_ticks_timers_and_failures() -> None:
    lines = [
        "$ python -m modelrollout.cli run --all-namespaces",
        _line("Activity 'configure' succeeded.", "2026-01-01T00:00:00+00:00", name=None, severity="info"),
        _line("tick", "2026-01-01T00:00:30.5+00:00", rule="Hold", severity="info"),
        _line("tick", "2026-01-01T00:00:00.5+00:00", rule="Started", severity="info"),
        _line("Timer 'timer' succeeded.", "2026-01-01T00:00:01+00:00", severity="info"),
        _line("Timer 'timer' failed temporarily: ns/e0001 changed since it was read",
              "2026-01-01T00:00:02+00:00", severity="error"),
        "Connection pool is full, discarding connection: 127.0.0.1",
        "not json at all",
    ]
    log = scale.parse_operator_log(lines)
    t0 = scale.parse_time("2026-01-01T00:00:00Z")
    assert log.ticks["ns/e0001"] == [(t0 + 0.5, "Started"), (t0 + 30.5, "Hold")]  # sorted by time
    assert log.timers["ns/e0001"] == [t0 + 1]
    assert log.failures == [(t0 + 2, "Timer 'timer' failed temporarily: ns/<exp> changed since it was read")]
    assert log.pool_full == 1
    assert log.lines == len(lines)


def test_gaps_end_in_the_window_and_overdue_keys_add_their_open_gap() -> None:
    times = {"a": [0.0, 30.0, 60.0, 90.0], "b": [0.0, 31.0], "never": [5.0]}
    gaps, overdue = scale.gaps_in_window(times, start=40.0, end=100.0, overdue_after=45.0)
    # a: 30 (ends at 60) and 30 (ends at 90); b: open gap 100 - 31 = 69; never: 95
    assert sorted(gaps) == [30.0, 30.0, 69.0, 95.0]
    assert overdue == 2
    gaps, overdue = scale.gaps_in_window(times, start=40.0, end=100.0)
    assert sorted(gaps) == [30.0, 30.0]
    assert overdue == 0


def test_gaps_by_key_and_the_rate_they_give() -> None:
    times = {"a": [0.0, 10.0, 20.0, 30.0], "b": [5.0, 25.0], "c": [12.0]}
    by_key, overdue = scale.gaps_by_key(times, 0.0, 40.0, overdue_after=25.0)
    assert by_key == {"a": [10.0, 10.0, 10.0], "b": [20.0], "c": [28.0]}  # c: the open gap 40 - 12
    assert overdue == 1
    assert scale.rate_from_gaps(by_key) == pytest.approx(1 / 10 + 1 / 20 + 1 / 28)
    assert scale.rate_from_gaps({"a": [], "b": [0.0]}) == 0.0


def test_tick_durations_pair_each_end_with_its_own_start() -> None:
    ends = {"a": [1.2, 31.5, 62.0]}
    starts = {"a": [1.0, 31.0, 45.0, 61.7]}  # 45.0: a start whose tick never logged (a 409)
    assert scale.tick_durations(ends, starts, 0.0, 100.0) == pytest.approx([0.2, 0.5, 0.3])
    assert scale.tick_durations(ends, starts, 30.0, 40.0) == pytest.approx([0.5])
    assert scale.tick_durations({"a": [5.0]}, {"a": [6.0]}, 0.0, 10.0) == []  # no start before it


def test_prom_sum_groups_samples_of_one_metric() -> None:
    text = "\n".join([
        "# HELP apiserver_request_total Counter",
        'apiserver_request_total{code="200",resource="modelexperiments",subresource="status",verb="PATCH"} 5',
        'apiserver_request_total{code="409",resource="modelexperiments",subresource="status",verb="PATCH"} 2',
        'apiserver_request_total{code="200",resource="virtualservices",subresource="",verb="GET"} 7e+00',
        'apiserver_request_total_other{verb="GET"} 100',
        'prometheus_http_requests_total{code="200",handler="/api/v1/query"} 42',
        "process_open_fds 12",
    ])
    by = ("verb", "resource", "subresource")
    assert scale.prom_sum(text, "apiserver_request_total", by) == {
        ("PATCH", "modelexperiments", "status"): 7.0,
        ("GET", "virtualservices", ""): 7.0,
    }
    assert scale.prom_sum(text, "prometheus_http_requests_total", (), handler="/api/v1/query") == {(): 42.0}
    assert scale.prom_sum(text, "process_open_fds", ()) == {(): 12.0}


def test_delta_rates_drop_counters_that_did_not_grow() -> None:
    assert scale.delta_rates({"a": 10.0, "b": 5.0}, {"a": 30.0, "b": 5.0, "c": 4.0}, 10.0) == {
        "a": 2.0, "c": 0.4}


def test_established_to_counts_client_sockets_of_a_loopback_port() -> None:
    table = "\n".join([
        "  sl  local_address rem_address   st tx_queue rx_queue",
        "   0: 0100007F:D431 0100007F:2382 01 00000000:00000000",  # client -> 9090, established
        "   1: 0100007F:D432 0100007F:2382 06 00000000:00000000",  # TIME_WAIT
        "   2: 0100007F:2382 0100007F:D431 01 00000000:00000000",  # the server's side
        "   3: 0100007F:D433 0100007F:1F90 01 00000000:00000000",  # another port
    ])
    assert scale.established_to(9090, table) == 1


def test_verdict_needs_every_experiment_and_a_p99_within_twice_the_interval() -> None:
    good = scale.Result(n=10, interval_s=30.0, first_ticked=10, gaps=scale.Summary.of([30.5] * 40),
                        ticks_per_s=0.33, no_data_share=0.0)
    assert good.keeps_up()
    assert "keeps up" in good.verdict()
    late = scale.Summary.of([30.0] * 30 + [75.0] * 10)
    slow = scale.Result(n=10, interval_s=30.0, first_ticked=10, gaps=late, ticks_per_s=0.2, no_data_share=0.5)
    assert not slow.keeps_up()
    assert "p99 interval 75.0 s > 2 x 30 s" in slow.verdict()
    assert "50 % of ticks had no metrics" in slow.verdict()
    missing = scale.Result(n=10, interval_s=30.0, first_ticked=9, gaps=scale.Summary.of([30.0]))
    assert "only 9/10 experiments ever ticked" in missing.verdict()


def test_traffic_grows_every_variant_by_its_share() -> None:
    experiments = [scale.Experiment("ns", f"e{i}") for i in range(3)]
    traffic = scale.Traffic(experiments, rps=1000.0, seed=3)
    traffic.last -= 10.0  # ten seconds of traffic at the next scrape
    families = {f.name: f for f in traffic.collect()}
    impressions = {s.labels["model"]: 0.0 for s in families["impressions"].samples}
    for sample in families["impressions"].samples:
        impressions[sample.labels["model"]] += sample.value
    assert impressions["v6"] / (impressions["v6"] + impressions["v7"]) == pytest.approx(0.9, abs=0.01)
    requests = [s for s in families["istio_requests"].samples if s.labels["response_code"] == "500"]
    assert {s.labels["destination_service_name"] for s in requests} == {
        f"e{i}-{v}" for i in range(3) for v in ("v6", "v7")}
    histogram = families["istio_request_duration_milliseconds"]
    buckets = [s for s in histogram.samples if s.name.endswith("_bucket")]
    assert {s.labels["le"] for s in buckets} == {"500.0", "+Inf"}


def test_experiment_manifest_validates_with_the_spec_defaults() -> None:
    from modelrollout.api.spec import ModelExperimentSpec
    from modelrollout.api.types import parse_duration
    from modelrollout.metrics import build_counter_set

    exp = scale.Experiment("ns", "e0001")
    manifest = scale.experiment_manifest(exp, "http://127.0.0.1:9090", None)
    spec = ModelExperimentSpec.model_validate(manifest["spec"])
    assert parse_duration(spec.rollout.interval).total_seconds() == 30
    # plain counter selectors (no {{window}}, no function): the operator counts their raw samples
    assert spec.metrics.primary.successes == \
        'clicks_total{namespace="{{namespace}}", app="e0001", model="{{variant}}"}'
    assert spec.metrics.primary.trials == \
        'impressions_total{namespace="{{namespace}}", app="e0001", model="{{variant}}"}'
    counter_set = build_counter_set(spec, "ns")
    assert counter_set.spec_errors() == []
    successes, trials = counter_set.metrics[0].fields
    assert [q.selector for q in successes.parts] == [
        f'clicks_total{{namespace="ns", app="e0001", model=~"{"|".join(scale.VARIANTS)}"}}']
    assert [q.selector for q in trials.parts] == [
        f'impressions_total{{namespace="ns", app="e0001", model=~"{"|".join(scale.VARIANTS)}"}}']
    interval = scale.experiment_manifest(exp, "http://127.0.0.1:9090", "10s")["spec"]["rollout"]
    assert interval == {"interval": "10s"}


def test_short_reason_drops_names_and_the_selector() -> None:
    message = ("no data for variant v7 from spec.metrics.primary.trials in bench-1a2b-3/e0042 "
               '(selector: impressions_total{app="e0042", model="v7"})')
    expected = "no data for variant v7 from spec.metrics.primary.trials in <ns>/<exp>"
    assert scale.short_reason(message) == expected


def test_prom_open_connections_is_accepted_minus_closed() -> None:
    text = "\n".join([
        'net_conntrack_listener_conn_accepted_total{listener_name="http"} 530',
        'net_conntrack_listener_conn_closed_total{listener_name="http"} 18',
        'net_conntrack_listener_conn_closed_total{listener_name="other"} 7',
    ])
    assert scale.prom_open_connections(text) == 512


def test_log_counter_reads_only_complete_new_lines(tmp_path: Path) -> None:
    log = tmp_path / "operator.log"
    counter = scale.LogCounter(log, "Creation is processed:")
    assert counter.count() == 0  # no file yet
    log.write_text("Creation is processed: 1 succeeded\nother\nCreation is pro")
    assert counter.count() == 1
    with log.open("a") as handle:
        handle.write("cessed: 1 succeeded\n")
    assert counter.count() == 2
    assert counter.count() == 2
