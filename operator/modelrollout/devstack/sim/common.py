"""Shared plumbing of the simulated processes: loopback servers, ready files, hashing, user
segments, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import signal
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

import prometheus_client
from aiohttp import web

LOOPBACK = "127.0.0.1"
"""Every simulated server binds this address only."""


def unit_hash(*parts: str) -> float:
    """A number in ``[0, 1)`` determined by ``parts`` (SHA-256; stable across processes)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


SEGMENT_SHARES: tuple[tuple[str, float], ...] = (("desktop", 0.6), ("mobile", 0.3), ("tablet", 0.1))
"""The simulated users' segments (their platform, fixed per user) and the share of users in each."""

SEGMENTS: tuple[str, ...] = tuple(name for name, _ in SEGMENT_SHARES)
"""The values of the ``segment`` label: ``desktop``, ``mobile``, ``tablet``."""


def segment_of(user_id: str) -> str:
    """The segment of ``user_id``: a hash of the id, so the same in every process and on every
    request; ``desktop`` for about 60 % of the users, ``mobile`` 30 %, ``tablet`` 10 %."""
    u = unit_hash("segment", user_id)
    cumulative = 0.0
    for name, share in SEGMENT_SHARES:
        cumulative += share
        if u < cumulative:
            return name
    return SEGMENT_SHARES[-1][0]


def write_ready_file(path: Path, data: Mapping[str, Any]) -> None:
    """Atomically write ``data`` as JSON to ``path`` (the parent waits for this file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(dict(data)))
    tmp.replace(path)


async def start_site(app: web.Application, port: int, host: str = LOOPBACK) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` (``port`` 0: the kernel picks one); return the runner and port."""
    if host != LOOPBACK:
        raise ValueError(f"the simulated servers bind {LOOPBACK} only, not {host}")
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    bound = int(runner.addresses[-1][1])
    return runner, bound


async def wait_for_shutdown_signal() -> None:
    """Return on SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)


def run_service(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a service coroutine to completion with the default event loop."""
    # ``*_created`` series only add noise to the scrapes of short-lived simulated processes.
    disable_created: Callable[[], None] = prometheus_client.disable_created_metrics
    disable_created()
    asyncio.run(main())


def json_response(data: Mapping[str, Any], status: int = 200) -> web.Response:
    """A compact JSON response."""
    return web.Response(body=json.dumps(data, separators=(",", ":")).encode(), status=status,
                        content_type="application/json")
