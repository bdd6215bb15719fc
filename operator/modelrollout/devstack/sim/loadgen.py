"""A load generator: simulated users with stable ids sending ``/predict`` requests at a set rate.

``users`` users are named ``user-000000`` ... ; each request picks one uniformly at random and
carries ``x-user-id`` and the bucket header (``x-modelrollout-bucket``, the value of
:func:`modelrollout.sdk.bucket`), as an SDK or an edge would set it. Requests start on an open
schedule at ``rps`` per second (request *i* at ``t0 + i / rps``), with at most ``concurrency``
in flight (when that limit is reached the schedule slips and the report says so).

It is always bounded: it stops after ``duration_s`` seconds or ``max_requests`` requests,
whichever comes first (both have defaults and hard ceilings), or on SIGTERM/SIGINT, and then
waits at most ``drain_s`` for the requests in flight.

The report (:class:`LoadReport`, printed as JSON or written to ``--report``) counts answers by
variant (the ``variant`` field of the JSON answer), by HTTP status and by both, connection
errors, latency percentiles, its own CPU time, and -- for stickiness checks -- the users who were
served by more than one variant (and, with ``record_users``, each user's variants).

Run: ``python -m modelrollout.devstack.sim.loadgen --url http://127.0.0.1:8080/predict --users 1000
--rps 300 --duration 20 --report load.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from modelrollout.sdk.bucket import BUCKET_HEADER, DEFAULT_SALT, bucket

MAX_DURATION_S = 6 * 3600.0
MAX_REQUESTS = 50_000_000
MAX_RPS = 20_000.0


def user_id(index: int) -> str:
    """The stable id of simulated user ``index``: ``user-000123``."""
    return f"user-{index:06d}"


@dataclass(frozen=True)
class LoadConfig:
    """One bounded run of the load generator."""

    url: str
    users: int = 1000
    rps: float = 200.0
    duration_s: float = 10.0
    max_requests: int = 1_000_000
    concurrency: int = 64
    method: str = "POST"
    host: str | None = None            # Host header (the mesh's service name, e.g. "ranker")
    bucket_header: str | None = BUCKET_HEADER   # None: send no bucket header
    salt: str = DEFAULT_SALT
    user_header: str = "x-user-id"
    timeout_s: float = 10.0
    drain_s: float = 5.0
    seed: int | None = None
    record_users: bool = False

    def __post_init__(self) -> None:
        problems = []
        if not self.url.startswith("http://127.0.0.1") and not self.url.startswith("http://localhost"):
            problems.append("url must be on loopback (http://127.0.0.1:...)")
        if not 1 <= self.users <= 10_000_000:
            problems.append("users must be in [1, 10,000,000]")
        if not 0 < self.rps <= MAX_RPS:
            problems.append(f"rps must be in (0, {MAX_RPS:.0f}]")
        if not 0 < self.duration_s <= MAX_DURATION_S:
            problems.append(f"duration_s must be in (0, {MAX_DURATION_S:.0f}]")
        if not 1 <= self.max_requests <= MAX_REQUESTS:
            problems.append(f"max_requests must be in [1, {MAX_REQUESTS}]")
        if not 1 <= self.concurrency <= 4096:
            problems.append("concurrency must be in [1, 4096]")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass
class LoadReport:
    """What a run did."""

    requests: int = 0
    completed: int = 0
    duration_s: float = 0.0
    achieved_rps: float = 0.0
    target_rps: float = 0.0
    stopped_by: str = ""
    by_variant: dict[str, int] = field(default_factory=dict)
    by_status: dict[str, int] = field(default_factory=dict)
    by_variant_status: dict[str, dict[str, int]] = field(default_factory=dict)
    clicks_by_variant: dict[str, int] = field(default_factory=dict)
    connection_errors: int = 0
    timeouts: int = 0
    late_starts: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    cpu_seconds: float = 0.0
    users_seen: int = 0
    users_with_several_variants: int = 0
    user_variants: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoadReport:
        return cls(**data)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) of sorted values, nearest rank; NaN if empty."""
    if not sorted_values:
        return math.nan
    rank = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return float(sorted_values[rank])


class _Tally:
    def __init__(self, record_users: bool) -> None:
        self.by_variant: Counter[str] = Counter()
        self.by_status: Counter[str] = Counter()
        self.by_variant_status: dict[str, Counter[str]] = {}
        self.clicks: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.user_variants: dict[str, set[str]] = {}
        self.connection_errors = 0
        self.timeouts = 0
        self.completed = 0
        self.record_users = record_users

    def add(self, user: str, status: int, variant: str, click: bool, latency_ms: float) -> None:
        self.completed += 1
        code = str(status)
        self.by_status[code] += 1
        self.by_variant[variant] += 1
        self.by_variant_status.setdefault(variant, Counter())[code] += 1
        if click:
            self.clicks[variant] += 1
        self.latencies.append(latency_ms)
        if status == 200 and variant:
            self.user_variants.setdefault(user, set()).add(variant)


def request_headers(config: LoadConfig, user: str) -> dict[str, str]:
    """The headers a simulated user sends: its id, its bucket and the routed Host."""
    headers = {config.user_header: user}
    if config.bucket_header:
        headers[config.bucket_header] = str(bucket(user, salt=config.salt))
    if config.host:
        headers["Host"] = config.host
    return headers


async def _one(session: aiohttp.ClientSession, config: LoadConfig, user: str, tally: _Tally) -> None:
    headers = request_headers(config, user)
    started = time.perf_counter()
    try:
        async with session.request(config.method, config.url, headers=headers,
                                   data=b"{}" if config.method == "POST" else None) as response:
            body = await response.read()
            status = response.status
    except TimeoutError:
        tally.timeouts += 1
        return
    except aiohttp.ClientError:
        tally.connection_errors += 1
        return
    latency = (time.perf_counter() - started) * 1000.0
    variant, click = "", False
    if body[:1] == b"{":
        try:
            data = json.loads(body)
            variant = str(data.get("variant") or "")
            click = bool((data.get("outcome") or {}).get("click"))
        except ValueError:
            pass
    tally.add(user, status, variant, click, latency)


async def run_load(config: LoadConfig, stop: asyncio.Event | None = None) -> LoadReport:
    """Run one bounded load; return its report. ``stop`` ends it early."""
    rng = random.Random(config.seed)
    cpu_started = time.process_time()
    tally = _Tally(config.record_users)
    stop = stop or asyncio.Event()
    limit = asyncio.Semaphore(config.concurrency)
    tasks: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=config.concurrency, keepalive_timeout=30)
    timeout = aiohttp.ClientTimeout(total=config.timeout_s)
    users = [user_id(i) for i in range(config.users)]
    sent = 0
    late = 0
    stopped_by = "duration"
    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     skip_auto_headers=("User-Agent",)) as session:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        deadline = t0 + config.duration_s
        interval = 1.0 / config.rps

        async def guarded(user: str) -> None:
            try:
                await _one(session, config, user, tally)
            finally:
                limit.release()

        while True:
            if sent >= config.max_requests:
                stopped_by = "max_requests"
                break
            if stop.is_set():
                stopped_by = "signal"
                break
            due = t0 + sent * interval
            now = loop.time()
            if due >= deadline or now >= deadline:
                stopped_by = "duration"
                break
            if due > now:
                await asyncio.sleep(min(due - now, 0.25))
                continue
            if limit.locked():
                late += 1
            await limit.acquire()
            task = asyncio.create_task(guarded(rng.choice(users)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        elapsed = loop.time() - t0
        await _drain(tasks, config.drain_s)
    return _report(config, tally, sent, elapsed, stopped_by, late, time.process_time() - cpu_started)


async def _drain(tasks: set[asyncio.Task[None]], drain_s: float) -> None:
    """Wait up to ``drain_s`` for the requests in flight; cancel the rest."""
    if not tasks:
        return
    _, pending = await asyncio.wait(set(tasks), timeout=drain_s)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=1.0)


def _report(config: LoadConfig, tally: _Tally, sent: int, elapsed: float, stopped_by: str, late: int,
            cpu_seconds: float) -> LoadReport:
    latencies = sorted(tally.latencies)
    several = sum(1 for variants in tally.user_variants.values() if len(variants) > 1)
    return LoadReport(
        requests=sent,
        completed=tally.completed,
        duration_s=round(elapsed, 3),
        achieved_rps=round(sent / elapsed, 1) if elapsed > 0 else 0.0,
        target_rps=config.rps,
        stopped_by=stopped_by,
        by_variant=dict(tally.by_variant),
        by_status=dict(tally.by_status),
        by_variant_status={v: dict(c) for v, c in tally.by_variant_status.items()},
        clicks_by_variant=dict(tally.clicks),
        connection_errors=tally.connection_errors,
        timeouts=tally.timeouts,
        late_starts=late,
        cpu_seconds=round(cpu_seconds, 3),
        latency_ms={"p50": percentile(latencies, 0.5), "p90": percentile(latencies, 0.9),
                    "p99": percentile(latencies, 0.99), "max": latencies[-1] if latencies else math.nan},
        users_seen=len(tally.user_variants),
        users_with_several_variants=several,
        user_variants=({u: sorted(v) for u, v in sorted(tally.user_variants.items())}
                       if config.record_users else {}),
    )


# ---- command line -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m modelrollout.devstack.sim.loadgen",
                                     description="Bounded load of simulated users on a loopback URL.")
    parser.add_argument("--url", help="target URL, e.g. http://127.0.0.1:8080/predict")
    parser.add_argument("--config-json", help="a JSON object of LoadConfig fields (flags override it)")
    parser.add_argument("--users", type=int)
    parser.add_argument("--rps", type=float)
    parser.add_argument("--duration", type=float, dest="duration_s", help="seconds (bound)")
    parser.add_argument("--max-requests", type=int, help="requests (bound)")
    parser.add_argument("--concurrency", type=int)
    parser.add_argument("--host", help="Host header to send (the routed service name)")
    parser.add_argument("--bucket-header", help=f"bucket header name (default {BUCKET_HEADER})")
    parser.add_argument("--no-bucket-header", action="store_true", help="send no bucket header")
    parser.add_argument("--salt", help="salt of the bucket hash")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--record-users", action="store_true", help="list each user's variants in the report")
    parser.add_argument("--report", type=Path, help="write the JSON report here (default: stdout)")
    return parser


def config_from_args(args: argparse.Namespace) -> LoadConfig:
    values: dict[str, Any] = json.loads(args.config_json) if args.config_json else {}
    for key in ("url", "users", "rps", "duration_s", "max_requests", "concurrency", "host", "bucket_header",
                "salt", "seed"):
        value = getattr(args, key)
        if value is not None:
            values[key] = value
    if args.no_bucket_header:
        values["bucket_header"] = None
    if args.record_users:
        values["record_users"] = True
    if not values.get("url"):
        raise ValueError("--url is required")
    return LoadConfig(**values)


async def _main(config: LoadConfig, report_path: Path | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    report = await run_load(config, stop)
    text = json.dumps(report.to_json(), indent=1, sort_keys=True)
    if report_path is not None:
        tmp = report_path.with_name(report_path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(report_path)
    else:
        print(text, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        print(f"invalid load configuration: {exc}", file=sys.stderr)
        return 2
    asyncio.run(_main(config, args.report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
