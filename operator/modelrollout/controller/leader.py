"""Leader election on a ``coordination.k8s.io/v1`` Lease, and the fence that every write checks.

``modelrollout run --leader-elect`` lets two (or more) replicas of the operator run: the one that
holds the Lease runs kopf's handlers, the others wait as standbys. The loop is the one of client-go's
``leaderelection`` package (which controller-runtime, Argo Rollouts and Flagger use), written here
with the kubernetes client; kopf's own peering is not used.

* **Acquire.** Every ``retry_period`` a standby reads the Lease. It creates it when there is none,
  and takes it over when its holder is empty (released) or when the Lease has not changed for
  ``leaseDurationSeconds`` *as this process saw it*, on its own monotonic clock, so the clocks of
  two nodes never have to agree. Every write is a PUT with the ``resourceVersion`` that was read: of
  two standbys that race, one wins and the other gets 409 Conflict.
* **Renew.** The leader renews every ``retry_period``. When no renewal has succeeded for
  ``renew_deadline`` (counted from the *start* of the last successful one), or the Lease names
  another holder, the leader has lost, and the process exits at once with
  :attr:`~modelrollout.errors.ExitCode.LEASE_LOST` (as controller-runtime and Flagger do); the
  Deployment starts it again, as a standby.
* **Fence.** :class:`LeaderGuard` is the process-wide "still leader" flag, and it is *time based*:
  it holds until ``renew_deadline`` after the start of the last successful renewal, on the
  monotonic clock, whatever the renewing thread is doing. Every write asks it first (the routers
  before each attempt, also after a 409; the status patch; Events; notifications; kopf's own
  patches, through :func:`fence_kopf`). A process frozen past its lease (SIGSTOP, a suspended VM,
  a long pause) therefore cannot write when it thaws, even before its renewing thread has run:
  the first check that finds the deadline passed refuses the write and ends the process. A standby
  takes over no sooner than ``lease_duration`` after it *saw* the last renewal, and the leader
  stops writing ``renew_deadline`` after it *sent* it, so a deposed leader has stopped writing
  ``lease_duration - renew_deadline`` (5 s by default) before another may start.
* **Release.** On a graceful stop (SIGTERM) the leader stops kopf, closes the fence, and writes
  the Lease with an empty holder and a duration of 1 s, so a standby takes it at its next retry
  instead of a lease duration later.

What the fence cannot stop: a write that passed its check an instant before the process froze is
sent when it thaws. The routes and the status are written with the ``resourceVersion`` they were
computed from, so such a write fails with 409 if the new leader has written since; Events and
kopf's annotations carry no such precondition.

The defaults (15 s, 10 s, 2 s) are controller-runtime's and Argo Rollouts'.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import signal
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final, Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelrollout.errors import ExitCode, FencedError, InvalidInputError, ModelRolloutError

log = logging.getLogger("modelrollout.leader")

#: The Lease's default name (the chart names it after the release).
DEFAULT_LEASE_NAME: Final = "modelrollout-leader"
#: controller-runtime's and Argo Rollouts' defaults, in seconds.
DEFAULT_LEASE_DURATION: Final = 15.0
DEFAULT_RENEW_DEADLINE: Final = 10.0
DEFAULT_RETRY_PERIOD: Final = 2.0
#: client-go requires ``renew_deadline > JITTER * retry_period``; standbys wait up to that long.
JITTER: Final = 1.2
#: Where a pod finds its own namespace.
SERVICE_ACCOUNT_NAMESPACE: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

CanWrite = Callable[[], bool]
"""The guard's question, as the routers and the cluster take it: may this process write now?"""


# --- configuration -----------------------------------------------------------------------------


def default_identity(environ: Mapping[str, str] | None = None) -> str:
    """``$POD_NAME`` (the chart sets it from the downward API), else ``<hostname>_<pid>``."""
    env = os.environ if environ is None else environ
    return env.get("POD_NAME") or f"{socket.gethostname()}_{os.getpid()}"


def default_namespace(environ: Mapping[str, str] | None = None,
                      service_account_file: Path = SERVICE_ACCOUNT_NAMESPACE) -> str:
    """``$POD_NAMESPACE``, else the pod's own namespace (its ServiceAccount's), else ``default``."""
    env = os.environ if environ is None else environ
    if env.get("POD_NAMESPACE"):
        return env["POD_NAMESPACE"]
    with contextlib.suppress(OSError):
        found = service_account_file.read_text().strip()
        if found:
            return found
    return "default"


@dataclass(frozen=True)
class LeaseConfig:
    """Which Lease, who this process is, and the timings (seconds)."""

    name: str
    namespace: str
    identity: str
    lease_duration: float = DEFAULT_LEASE_DURATION
    renew_deadline: float = DEFAULT_RENEW_DEADLINE
    retry_period: float = DEFAULT_RETRY_PERIOD

    def __post_init__(self) -> None:
        for field in ("name", "namespace", "identity"):
            if not isinstance(getattr(self, field), str) or not getattr(self, field):
                raise InvalidInputError(f"the lease's {field} must be a non-empty string")
        for field in ("lease_duration", "renew_deadline", "retry_period"):
            value = getattr(self, field)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                flag = "--" + field.replace("_", "-")
                raise InvalidInputError(f"{flag} must be a positive duration, not {value!r}")
        if self.lease_duration <= self.renew_deadline:
            raise InvalidInputError(
                f"--lease-duration ({self.lease_duration:g}s) must be longer than --renew-deadline "
                f"({self.renew_deadline:g}s): a deposed leader stops writing at its renew deadline, and a "
                "standby may take over only after the lease duration"
            )
        if self.renew_deadline <= JITTER * self.retry_period:
            raise InvalidInputError(
                f"--renew-deadline ({self.renew_deadline:g}s) must be longer than {JITTER:g} × "
                f"--retry-period ({self.retry_period:g}s), so that a renewal can be retried in time"
            )

    @property
    def lease_duration_seconds(self) -> int:
        """The Lease's ``leaseDurationSeconds`` (whole seconds, rounded up)."""
        return max(1, math.ceil(self.lease_duration))


# --- the fence ---------------------------------------------------------------------------------


class LeaderGuard:
    """The process-wide "still leader" flag that every write checks (see the module docstring).

    ``clock`` is monotonic (a fake one in the unit tests). ``on_lost`` is called once, with the
    reason, when the lease is found lost: by :meth:`can_write` when the renew deadline has passed,
    or by the renewing loop; ``modelrollout run`` passes :func:`exit_lost`, which ends the process.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 on_lost: Callable[[str], None] | None = None) -> None:
        self._clock = clock
        self._on_lost = on_lost
        self._until: float | None = None
        self._closed = False
        self._lock = threading.Lock()
        self.lost_reason: str | None = None
        self.refused = 0

    def renewed(self, started: float, renew_deadline: float) -> None:
        """A renewal that started at ``started`` (monotonic) succeeded: writes are allowed until
        ``started + renew_deadline``. Nothing reopens a closed guard."""
        with self._lock:
            candidate = started + renew_deadline
            if not self._closed and (self._until is None or candidate > self._until):
                self._until = candidate

    @property
    def leading(self) -> bool:
        """Whether the guard would allow a write now (without calling ``on_lost``)."""
        until = self._until
        return not self._closed and until is not None and self._clock() < until

    def remaining(self) -> float:
        """Seconds until the renew deadline (0 when not leading)."""
        until = self._until
        return 0.0 if self._closed or until is None else max(0.0, until - self._clock())

    def can_write(self) -> bool:
        """May this process write now? False once the renew deadline has passed without a
        successful renewal (then ``on_lost`` is called), after :meth:`close`, and before the
        lease was first acquired."""
        if self.leading:
            return True
        with self._lock:
            self.refused += 1
        if self._until is not None:
            self.lose(f"the Lease was not renewed within the renew deadline (last valid until "
                      f"{self._until:.3f}, now {self._clock():.3f} on the monotonic clock)")
        return False

    def lose(self, reason: str) -> None:
        """The lease is lost: close the guard and call ``on_lost`` (once)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self.lost_reason = reason
        if self._on_lost is not None:
            self._on_lost(reason)

    def close(self) -> None:
        """A graceful stop: no write from now on, without calling ``on_lost``."""
        with self._lock:
            self._closed = True


def exit_lost(reason: str) -> None:
    """End the process at once: a deposed leader writes nothing more (no cleanup, no kopf)."""
    with contextlib.suppress(Exception):
        log.error("lost the leader's Lease: %s (noticed by thread %s); exiting with code %d", reason,
                  threading.current_thread().name, ExitCode.LEASE_LOST)
        for handler in logging.getLogger().handlers + log.handlers:
            handler.flush()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(ExitCode.LEASE_LOST)


def fence_kopf(can_write: CanWrite) -> None:
    """Make every API write of kopf itself (its finalizer and annotation patches, the Events it
    posts) ask ``can_write`` first, and raise :class:`FencedError` instead of sending it.

    kopf sends every request through ``kopf._cogs.clients.api.request``; ``get``, ``post``,
    ``patch``, ``delete`` and ``stream`` there look it up by name at each call, so wrapping it
    fences them all. It is kopf's private module: if it moves, this fails loudly (and the
    tests of the fence with it) rather than running unfenced.
    """
    from kopf._cogs.clients import api as kopf_api

    original = getattr(kopf_api, "request", None)
    if original is None or not callable(original):
        raise ModelRolloutError("kopf has no kopf._cogs.clients.api.request to fence: leader election "
                                "cannot stop kopf's own writes with this kopf version")
    if getattr(original, "_modelrollout_fenced", False):
        return
    reads = {"GET", "HEAD", "OPTIONS"}

    async def request(*args: Any, **kwargs: Any) -> Any:
        method = str(kwargs.get("method", args[0] if args else "")).upper()
        if method not in reads and not can_write():
            url = kwargs.get("url", args[1] if len(args) > 1 else "")
            raise FencedError(f"refused kopf's {method} {url}: this process no longer holds the Lease")
        result: Awaitable[Any] = original(*args, **kwargs)
        return await result

    request._modelrollout_fenced = True  # type: ignore[attr-defined]
    request.__wrapped__ = original  # type: ignore[attr-defined]
    setattr(kopf_api, "request", request)  # noqa: B010 (a module's function, replaced on purpose)


def unfence_kopf() -> None:
    """Undo :func:`fence_kopf` (for tests that run kopf in-process afterwards)."""
    from kopf._cogs.clients import api as kopf_api

    current = getattr(kopf_api, "request", None)
    if getattr(current, "_modelrollout_fenced", False):
        setattr(kopf_api, "request", current.__wrapped__)  # type: ignore[union-attr]  # noqa: B010


# --- the Lease -----------------------------------------------------------------------------------


class LeaseConflictError(ModelRolloutError):
    """The Lease changed since it was read (409): another process wrote it first."""


def _micro_time(moment: datetime) -> str:
    """A Kubernetes ``MicroTime``: RFC 3339 with exactly six fractional digits, in UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseRecord:
    """The leader election fields of a Lease's spec."""

    holder: str
    lease_duration_seconds: int
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0

    @classmethod
    def from_lease(cls, lease: Mapping[str, Any]) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            lease_duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def spec(self) -> dict[str, Any]:
        return {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.lease_duration_seconds,
            "acquireTime": self.acquire_time,
            "renewTime": self.renew_time,
            "leaseTransitions": self.transitions,
        }


class LeaseStore(Protocol):
    """Reads and writes the one Lease (a fake in the unit tests, the apiserver otherwise)."""

    def get(self, timeout: float) -> dict[str, Any] | None:
        """The Lease as JSON, or None when there is none."""
        ...

    def create(self, lease: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Create it; :class:`LeaseConflictError` when it exists."""
        ...

    def replace(self, lease: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Replace it (PUT, with the ``resourceVersion`` in ``lease``); :class:`LeaseConflictError`
        when it changed since."""
        ...


class KubeLeaseStore:
    """:class:`LeaseStore` on the kubernetes client (its own ApiClient: renewals never wait for the
    connections of busy ticks)."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str) -> None:
        self.api = client.CoordinationV1Api(api)
        self.namespace, self.name = namespace, name

    @staticmethod
    def _json(response: Any) -> dict[str, Any]:
        found = json.loads(response.data)
        if not isinstance(found, dict):
            raise ModelRolloutError(f"unexpected reply for a Lease: {found!r}")
        return found

    def get(self, timeout: float) -> dict[str, Any] | None:
        try:
            response = self.api.read_namespaced_lease(self.name, self.namespace, _preload_content=False,
                                                      _request_timeout=timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return self._json(response)

    def create(self, lease: dict[str, Any], timeout: float) -> dict[str, Any]:
        body: Any = lease  # the client sends a dict as it is
        try:
            response = self.api.create_namespaced_lease(self.namespace, body, _preload_content=False,
                                                        _request_timeout=timeout)
        except ApiException as exc:
            if exc.status == 409:
                raise LeaseConflictError(f"Lease {self.namespace}/{self.name} already exists") from None
            raise
        return self._json(response)

    def replace(self, lease: dict[str, Any], timeout: float) -> dict[str, Any]:
        body: Any = lease
        try:
            response = self.api.replace_namespaced_lease(self.name, self.namespace, body,
                                                         _preload_content=False, _request_timeout=timeout)
        except ApiException as exc:
            if exc.status == 409:
                raise LeaseConflictError(f"Lease {self.namespace}/{self.name} changed since it was read") \
                    from None
            raise
        return self._json(response)


def _wall_now() -> datetime:
    return datetime.now(UTC)


Wait = Callable[[threading.Event, float], bool]


def _wait(stop: threading.Event, seconds: float) -> bool:
    return stop.wait(seconds)


class LeaderElector:
    """Acquires, renews and releases the Lease (see the module docstring), and keeps the guard.

    ``clock`` is monotonic, ``wall`` gives the times written into the Lease, and ``wait(stop, s)``
    waits ``s`` seconds or until ``stop`` is set (True then): all three are faked in unit tests.
    """

    def __init__(self, config: LeaseConfig, store: LeaseStore, guard: LeaderGuard, *,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], datetime] = _wall_now,
                 wait: Wait = _wait, rng: random.Random | None = None) -> None:
        self.config = config
        self.store = store
        self.guard = guard
        self._clock = clock
        self._wall = wall
        self._wait = wait
        self._rng = rng or random.Random()
        self.observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self.leading = False
        self.acquired_at: float | None = None

    # -- one round ----------------------------------------------------------------------------------
    def try_acquire_or_renew(self) -> bool:
        """One round of client-go's ``tryAcquireOrRenew``: True when this process holds the Lease
        now (created, taken over, or renewed); the guard then allows writes until the renew
        deadline, counted from the start of this round."""
        started = self._clock()
        timeout = self._timeout()
        try:
            found = self.store.get(timeout)
            now = _micro_time(self._wall())
            if found is None:
                record = LeaseRecord(self.config.identity, self.config.lease_duration_seconds, now, now, 0)
                lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                         "metadata": {"name": self.config.name, "namespace": self.config.namespace},
                         "spec": record.spec()}
                return self._won(self.store.create(lease, timeout), started)
            current = LeaseRecord.from_lease(found)
            self._observe(current)
            me = self.config.identity
            if current.holder and current.holder != me and not self._expired(current):
                return False
            taking_over = current.holder != me
            record = LeaseRecord(
                holder=me,
                lease_duration_seconds=self.config.lease_duration_seconds,
                acquire_time=now if taking_over or not current.acquire_time else current.acquire_time,
                renew_time=now,
                transitions=current.transitions + (1 if taking_over else 0),
            )
            return self._won(self.store.replace({**found, "spec": record.spec()}, timeout), started)
        except LeaseConflictError as exc:
            log.info("the Lease changed under this round: %s", exc)
            return False
        except Exception as exc:  # an apiserver that does not answer is a failed round, not a crash
            log.warning("could not read or write the Lease %s/%s: %s", self.config.namespace,
                        self.config.name, exc)
            return False

    def _timeout(self) -> float:
        """A round never outlasts a retry period, nor, for the leader, its renew deadline."""
        if self.leading:
            return max(0.05, min(self.config.retry_period, self.guard.remaining()))
        return self.config.retry_period

    def _observe(self, record: LeaseRecord) -> None:
        """Remember when this process first saw this version of the record (client-go's
        ``observedTime``): the lease expires ``leaseDurationSeconds`` after that, on our clock."""
        if record != self.observed:
            self.observed = record
            self._observed_at = self._clock()

    def _expired(self, record: LeaseRecord) -> bool:
        return self._clock() >= self._observed_at + record.lease_duration_seconds

    def _won(self, lease: Mapping[str, Any], started: float) -> bool:
        self._observe(LeaseRecord.from_lease(lease))
        self.guard.renewed(started, self.config.renew_deadline)
        if not self.leading:
            self.leading = True
            self.acquired_at = self._clock()
        return True

    # -- the loops ----------------------------------------------------------------------------------
    def acquire(self, stop: threading.Event) -> bool:
        """Wait as a standby until this process holds the Lease (True), or ``stop`` is set (False)."""
        while not stop.is_set():
            if self.try_acquire_or_renew():
                return True
            if self._wait(stop, self._next_attempt()):
                return False
        return False

    def _next_attempt(self) -> float:
        """Seconds to the next attempt of a standby: a retry period (with up to 20 % jitter, so
        that standbys spread out), or sooner when the lease expires sooner on this clock."""
        wait = self.config.retry_period * (1 + self._rng.uniform(0, JITTER - 1))
        record = self.observed
        if record is not None and record.holder and record.holder != self.config.identity:
            expires_in = self._observed_at + record.lease_duration_seconds - self._clock()
            wait = min(wait, max(expires_in, 0.0) + 0.01)
        return wait

    def hold(self, stop: threading.Event) -> str | None:
        """Renew every retry period until ``stop`` is set (None) or the lease is lost (the reason;
        the guard's ``on_lost`` has been called)."""
        while not self._wait(stop, self.config.retry_period):
            if not self.guard.can_write():  # past the renew deadline: the guard has called on_lost
                return self.guard.lost_reason or "the guard was closed"
            if self.try_acquire_or_renew():
                continue
            holder = self.observed.holder if self.observed is not None else ""
            if holder and holder != self.config.identity:
                reason = f"the Lease is held by {holder}"
                self.leading = False
                self.guard.lose(reason)
                return reason
        return None

    def release(self) -> bool:
        """Close the guard, then give the Lease up (empty holder, duration 1 s) if this process
        holds it, so a standby takes it at its next retry. True when released."""
        self.guard.close()
        if not self.leading:
            return False
        self.leading = False
        try:
            found = self.store.get(self.config.retry_period)
            if found is None or LeaseRecord.from_lease(found).holder != self.config.identity:
                return False
            now = _micro_time(self._wall())
            transitions = LeaseRecord.from_lease(found).transitions
            record = LeaseRecord("", 1, now, now, transitions)
            self.store.replace({**found, "spec": record.spec()}, self.config.retry_period)
        except Exception as exc:  # the standby takes over after the lease duration instead
            log.warning("could not release the Lease: %s", exc)
            return False
        return True


# --- the process -------------------------------------------------------------------------------------


class StandbyHealth:
    """Answers the liveness URL (``--liveness``) while the process waits as a standby, so that the
    pod's probes pass; kopf serves the same URL once the process leads."""

    def __init__(self, url: str, identity: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host = parts.hostname or "0.0.0.0"
        self.port = parts.port or 80
        self.path = parts.path or "/"
        self.identity = identity
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        body = json.dumps({"leader": False, "identity": self.identity}).encode()
        path = self.path

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                ok = self.path.split("?", 1)[0] == path
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                if ok:
                    self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        threading.Thread(target=self._server.serve_forever, name="standby-health", daemon=True).start()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set ``stop`` until kopf installs its own handlers, so that a standby stops
    cleanly. (``stop`` is not given to kopf as its stop flag: kopf waits for a threading flag in an
    executor thread that nothing would end, and the process would hang at exit.)"""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())


def run_elected(config: LeaseConfig, operate: Callable[[LeaderGuard, threading.Event], None], *,
                api: client.ApiClient, liveness: str | None = None,
                on_lost: Callable[[str], None] = exit_lost) -> int:
    """Wait for the Lease, then ``operate(guard, stop)`` (kopf, which handles SIGTERM itself) while
    renewing it; release it after.

    The exit code is 0 after a graceful stop; a lost lease ends the process from ``on_lost``.
    """
    stop = threading.Event()
    _stop_on_signals(stop)
    guard = LeaderGuard(on_lost=on_lost)
    elector = LeaderElector(config, KubeLeaseStore(api, config.namespace, config.name), guard)
    standby = StandbyHealth(liveness, config.identity) if liveness else None
    waited = time.monotonic()
    if standby is not None:
        standby.start()
    log.info("standby: waiting for Lease %s/%s as %s", config.namespace, config.name, config.identity)
    try:
        acquired = elector.acquire(stop)
    finally:
        if standby is not None:
            standby.close()
    if not acquired:
        log.info("stopped while waiting for the Lease")
        return ExitCode.OK
    log.info("leading: acquired Lease %s/%s as %s after %.1f s", config.namespace, config.name,
             config.identity, time.monotonic() - waited)
    fence_kopf(guard.can_write)
    holder = threading.Thread(target=elector.hold, args=(stop,), name="lease-renewal", daemon=True)
    holder.start()
    try:
        if not stop.is_set():  # a signal since the lease was acquired: do not start kopf at all
            operate(guard, stop)
    finally:
        stop.set()
        holder.join(timeout=config.retry_period + 1)
        released = elector.release()
        log.info("stopped; Lease %s", "released" if released else "not released")
    return ExitCode.OK
