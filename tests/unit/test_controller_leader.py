"""Leader election (controller/leader.py) on a fake Lease store and a fake clock: acquiring,
renewing, taking over an expired lease, releasing, and the time-based fence every write asks.

The same loop against the real apiserver, and two operator processes, are in
tests/integration/test_leader_election.py."""

from __future__ import annotations

import asyncio
import copy
import re
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelrollout.api.spec import ModelExperimentSpec
from modelrollout.api.status import HistoryEntry, ModelExperimentStatus, Phase
from modelrollout.controller import leader
from modelrollout.controller.kube import KubeCluster
from modelrollout.controller.leader import (
    LeaderElector,
    LeaderGuard,
    LeaseConfig,
    LeaseConflictError,
    LeaseRecord,
)
from modelrollout.controller.notify import notify
from modelrollout.errors import ExitCode, FencedError, InvalidInputError

pytestmark = pytest.mark.unit

T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


class Clock:
    """A monotonic clock and a wall clock that the test moves; ``wait`` moves both."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def wall(self) -> datetime:
        return T0 + timedelta(seconds=self.t - 1000.0)

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        if not stop.is_set():
            self.t += seconds
        return stop.is_set()


class Store:
    """One Lease in memory with the apiserver's optimistic concurrency (resourceVersion)."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.down: set[str] = set()  # identities whose requests fail (a partition)
        self.writes: list[tuple[str, dict[str, Any]]] = []

    def client(self, identity: str) -> _Client:
        return _Client(self, identity)


class _Client:
    def __init__(self, store: Store, identity: str) -> None:
        self.store, self.identity = store, identity

    def _check(self) -> None:
        if self.identity in self.store.down:
            raise TimeoutError("the apiserver does not answer")

    def get(self, timeout: float) -> dict[str, Any] | None:
        self._check()
        return copy.deepcopy(self.store.lease)

    def create(self, lease: dict[str, Any], timeout: float) -> dict[str, Any]:
        self._check()
        if self.store.lease is not None:
            raise LeaseConflictError("exists")
        return self._write(lease)

    def replace(self, lease: dict[str, Any], timeout: float) -> dict[str, Any]:
        self._check()
        assert self.store.lease is not None
        if lease["metadata"].get("resourceVersion") != self.store.lease["metadata"]["resourceVersion"]:
            raise LeaseConflictError("changed")
        return self._write(lease)

    def _write(self, lease: dict[str, Any]) -> dict[str, Any]:
        self.store.version += 1
        stored = copy.deepcopy(lease)
        stored["metadata"]["resourceVersion"] = str(self.store.version)
        self.store.lease = stored
        self.store.writes.append((self.identity, copy.deepcopy(stored["spec"])))
        return copy.deepcopy(stored)


def config(identity: str, **kw: Any) -> LeaseConfig:
    return LeaseConfig(name="modelrollout-leader", namespace="ops", identity=identity, **kw)


class Replica:
    """One operator process: its elector, its guard, and the reasons it was told it lost."""

    def __init__(self, store: Store, clock: Clock, identity: str, **kw: Any) -> None:
        self.lost: list[str] = []
        self.guard = LeaderGuard(clock=clock, on_lost=self.lost.append)
        self.elector = LeaderElector(config(identity, **kw), store.client(identity), self.guard,
                                     clock=clock, wall=clock.wall, wait=clock.wait)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store() -> Store:
    return Store()


def spec_of(store: Store) -> dict[str, Any]:
    assert store.lease is not None
    return dict(store.lease["spec"])


# --- configuration -------------------------------------------------------------------------------


def test_the_defaults_are_controller_runtimes() -> None:
    c = config("a")
    assert (c.lease_duration, c.renew_deadline, c.retry_period) == (15.0, 10.0, 2.0)
    assert c.lease_duration_seconds == 15
    assert config("a", lease_duration=2.5, renew_deadline=2.0, retry_period=1.0).lease_duration_seconds == 3


@pytest.mark.parametrize(("kw", "message"), [
    ({"lease_duration": 10.0}, "must be longer than --renew-deadline"),
    ({"renew_deadline": 2.0}, "must be longer than --renew-deadline|1.2 ×"),
    ({"retry_period": 9.0}, r"1\.2 × --retry-period"),
    ({"retry_period": 0.0}, "--retry-period must be a positive duration"),
    ({"identity": ""}, "identity must be a non-empty string"),
])
def test_bad_timings_are_refused_with_the_flag(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        config(**{"identity": "a", **kw})


def test_identity_and_namespace_come_from_the_pod(tmp_path: Path) -> None:
    assert leader.default_identity({"POD_NAME": "mr-modelrollout-7d9-abc"}) == "mr-modelrollout-7d9-abc"
    assert re.fullmatch(r".+_\d+", leader.default_identity({}))
    sa = tmp_path / "namespace"
    assert leader.default_namespace({"POD_NAMESPACE": "ops"}, sa) == "ops"
    assert leader.default_namespace({}, sa) == "default"
    sa.write_text("ml-platform\n")
    assert leader.default_namespace({}, sa) == "ml-platform"


# --- acquire, renew, take over, release --------------------------------------------------------


def test_the_first_replica_creates_the_lease_and_may_write(store: Store, clock: Clock) -> None:
    a = Replica(store, clock, "a")
    assert not a.guard.can_write()  # before it ever held the lease
    assert a.lost == []  # (never leading is not losing)
    assert a.elector.try_acquire_or_renew()
    lease = spec_of(store)
    assert lease["holderIdentity"] == "a"
    assert lease["leaseDurationSeconds"] == 15
    assert lease["leaseTransitions"] == 0
    assert MICRO_TIME.match(lease["renewTime"])
    assert lease["renewTime"] == lease["acquireTime"]
    assert a.guard.can_write()
    assert a.guard.remaining() == pytest.approx(10.0)


def test_a_standby_waits_while_the_leader_renews(store: Store, clock: Clock) -> None:
    a, b = Replica(store, clock, "a"), Replica(store, clock, "b")
    assert a.elector.try_acquire_or_renew()
    for _ in range(30):  # a minute of renewals every 2 s: b never gets it
        clock.t += 2.0
        assert a.elector.try_acquire_or_renew()
        assert not b.elector.try_acquire_or_renew()
        assert a.guard.can_write()
        assert not b.guard.can_write()
    lease = spec_of(store)
    assert lease["holderIdentity"] == "a"
    assert lease["acquireTime"] != lease["renewTime"]  # renewals keep the acquire time
    assert [who for who, _ in store.writes] == ["a"] * 31


def test_a_standby_takes_over_a_lease_unchanged_for_its_duration_on_its_own_clock(
        store: Store, clock: Clock) -> None:
    a, b = Replica(store, clock, "a"), Replica(store, clock, "b")
    assert a.elector.try_acquire_or_renew()
    clock.t += 1.0
    assert not b.elector.try_acquire_or_renew()  # b sees the record at t=1001 for the first time
    seen = clock.t
    store.down.add("a")  # a dies (or is cut off) now
    clock.t = seen + 14.9
    assert not b.elector.try_acquire_or_renew()
    clock.t = seen + 15.0
    assert b.elector.try_acquire_or_renew()
    lease = spec_of(store)
    assert (lease["holderIdentity"], lease["leaseTransitions"]) == ("b", 1)
    assert lease["acquireTime"] == lease["renewTime"]
    assert b.guard.can_write()
    # a's guard had closed at its renew deadline, 10 s after it *started* its last renewal.
    assert not a.guard.can_write()
    assert a.lost
    assert "not renewed within the renew deadline" in a.lost[0]


def test_a_standby_that_starts_late_still_waits_a_whole_lease(store: Store, clock: Clock) -> None:
    """The renewTime written by another node's clock is never trusted: a standby that first reads a
    lease long abandoned still waits leaseDurationSeconds from its own first sight."""
    a = Replica(store, clock, "a")
    assert a.elector.try_acquire_or_renew()
    clock.t += 3600
    b = Replica(store, clock, "b")
    assert not b.elector.try_acquire_or_renew()
    clock.t += 15
    assert b.elector.try_acquire_or_renew()


def test_a_deposed_leader_stops_writing_before_anyone_else_may_start(store: Store, clock: Clock) -> None:
    """Both replicas run their loops on one clock; a is cut off from the apiserver at t=+7 s. The
    last instant a may write and the first instant b holds the lease are ``lease_duration -
    renew_deadline`` apart, at least, minus one retry period of b's polling granularity."""
    a, b = Replica(store, clock, "a"), Replica(store, clock, "b")
    start = clock.t
    a_writes: list[float] = []
    b_leads: list[float] = []
    next_a = next_b = start
    while clock.t < start + 60 and not b_leads:
        if clock.t >= next_a:
            if a.guard.leading or not a.elector.leading:
                a.elector.try_acquire_or_renew()
            next_a += 2.0
        if clock.t >= next_b:
            if b.elector.try_acquire_or_renew():
                b_leads.append(clock.t)
            next_b += 2.0
        if a.guard.can_write():
            a_writes.append(clock.t)
        if clock.t >= start + 7 and "a" not in store.down:
            store.down.add("a")
        clock.t = round(clock.t + 0.1, 6)
    assert b_leads, "b never took over"
    last_a, first_b = max(a_writes), b_leads[0]
    assert last_a < start + 7 + 0.1 + 10  # a's last successful renewal started before t=+7
    assert first_b - last_a >= 15 - 10 - 0.1
    print(f"\na's last write at +{last_a - start:.1f} s, b leads at +{first_b - start:.1f} s")


def test_the_fence_is_time_based_and_closes_at_the_renew_deadline(clock: Clock) -> None:
    lost: list[str] = []
    guard = LeaderGuard(clock=clock, on_lost=lost.append)
    guard.renewed(clock.t, 10.0)
    clock.t += 9.999
    assert guard.can_write()
    clock.t += 0.001
    assert not guard.can_write()
    assert not guard.can_write()
    assert len(lost) == 1  # on_lost once
    assert guard.refused == 2
    guard.renewed(clock.t, 10.0)  # a renewal that comes back late reopens nothing
    assert not guard.can_write()
    assert not guard.leading


def test_a_late_renewal_extends_the_fence_from_when_it_started(clock: Clock) -> None:
    guard = LeaderGuard(clock=clock)
    guard.renewed(clock.t, 10.0)
    started = clock.t + 2.0
    clock.t += 5.0  # the renewal that started at +2 s took 3 s
    guard.renewed(started, 10.0)
    assert guard.remaining() == pytest.approx(7.0)
    guard.renewed(clock.t - 4.0, 10.0)  # an older start never shortens it
    assert guard.remaining() == pytest.approx(7.0)


def test_hold_renews_each_retry_period_and_gives_up_at_the_deadline(store: Store, clock: Clock) -> None:
    a = Replica(store, clock, "a")
    assert a.elector.try_acquire_or_renew()
    renewed_at: list[float] = []
    real = a.elector.try_acquire_or_renew

    def counted() -> bool:
        renewed_at.append(clock.t)
        if clock.t >= 1007.0:
            store.down.add("a")
        return real()

    a.elector.try_acquire_or_renew = counted  # type: ignore[method-assign]
    reason = a.elector.hold(threading.Event())
    # Renewals at +2, +4 and +6 succeed; from +8 on they fail (down since +7); the one of +6
    # started at +6, so the deadline is +16: the attempts of +8 to +14 are made, and at +16 the
    # guard refuses (and calls on_lost) before any further attempt.
    assert renewed_at == [1002.0, 1004.0, 1006.0, 1008.0, 1010.0, 1012.0, 1014.0]
    assert reason is not None
    assert "renew deadline" in reason
    assert a.lost == [reason]
    assert clock.t == 1016.0


def test_hold_gives_up_at_once_when_another_holds_the_lease(store: Store, clock: Clock) -> None:
    a = Replica(store, clock, "a")
    assert a.elector.try_acquire_or_renew()
    assert store.lease is not None
    store.lease["spec"]["holderIdentity"] = "b"  # e.g. b took it while a was frozen
    reason = a.elector.hold(threading.Event())
    assert reason == "the Lease is held by b"
    assert a.lost == [reason]
    assert not a.guard.can_write()
    assert clock.t == 1002.0  # one retry period, not the renew deadline


def test_hold_returns_when_stopped(store: Store, clock: Clock) -> None:
    a = Replica(store, clock, "a")
    assert a.elector.try_acquire_or_renew()
    stop = threading.Event()
    stop.set()
    assert a.elector.hold(stop) is None
    assert a.lost == []


def test_release_hands_over_at_the_standbys_next_retry(store: Store, clock: Clock) -> None:
    a, b = Replica(store, clock, "a"), Replica(store, clock, "b")
    assert a.elector.try_acquire_or_renew()
    clock.t += 1
    assert not b.elector.try_acquire_or_renew()
    assert a.elector.release()
    lease = spec_of(store)
    assert (lease["holderIdentity"], lease["leaseDurationSeconds"], lease["leaseTransitions"]) == ("", 1, 0)
    assert not a.guard.can_write()
    assert a.lost == []  # a graceful stop is not a loss
    clock.t += 0.5
    assert b.elector.try_acquire_or_renew()  # no need to wait for the old lease duration
    lease = spec_of(store)
    assert (lease["holderIdentity"], lease["leaseTransitions"]) == ("b", 1)
    assert not a.elector.release()  # a holds nothing any more


def test_of_two_standbys_racing_for_an_expired_lease_one_wins(store: Store, clock: Clock) -> None:
    a, b, c = (Replica(store, clock, n) for n in "abc")
    assert a.elector.try_acquire_or_renew()
    assert not b.elector.try_acquire_or_renew()
    assert not c.elector.try_acquire_or_renew()
    store.down.add("a")
    clock.t += 15
    # b and c both read the expired lease; b writes first; c's PUT carries the old resourceVersion.
    c_client = c.elector.store
    read = c_client.get(1.0)
    assert b.elector.try_acquire_or_renew()
    assert read is not None
    with pytest.raises(LeaseConflictError):
        c_client.replace({**read, "spec": {**read["spec"], "holderIdentity": "c"}}, 1.0)

    class RacingStore:
        """c's view: the lease read before b's write, then the PUT against the new version."""

        def get(self, timeout: float) -> dict[str, Any] | None:
            return copy.deepcopy(read)

        def create(self, lease: dict[str, Any], timeout: float) -> dict[str, Any]:
            raise AssertionError("not created")

        def replace(self, lease: dict[str, Any], timeout: float) -> dict[str, Any]:
            return c_client.replace(lease, timeout)

    c.elector.store = RacingStore()
    assert not c.elector.try_acquire_or_renew()
    assert spec_of(store)["holderIdentity"] == "b"
    assert not c.guard.can_write()


def test_an_unreachable_apiserver_is_a_failed_round_not_a_crash(store: Store, clock: Clock) -> None:
    a = Replica(store, clock, "a")
    store.down.add("a")
    assert not a.elector.try_acquire_or_renew()
    stop = threading.Event()
    calls = []

    def wait(event: threading.Event, seconds: float) -> bool:
        calls.append(seconds)
        if len(calls) == 3:
            stop.set()
        return clock.wait(event, seconds)

    a.elector._wait = wait
    assert not a.elector.acquire(stop)
    assert all(2.0 <= s <= 2.0 * leader.JITTER for s in calls)


def test_lease_record_round_trip() -> None:
    record = LeaseRecord("a", 15, "2026-12-01T06:00:00.000000Z", "2026-12-01T06:00:02.000000Z", 3)
    assert LeaseRecord.from_lease({"spec": record.spec()}) == record
    assert LeaseRecord.from_lease({"spec": {}}) == LeaseRecord("", 0)


# --- the fence on every write --------------------------------------------------------------------


class KopfResponse:
    async def __aenter__(self) -> KopfResponse:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    async def json(self) -> dict[str, Any]:
        return {}


class KopfRequests:
    """Stands in for kopf's own ``request``: records what would have been sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def __call__(self, method: str, url: str, **_: Any) -> KopfResponse:
        self.sent.append(f"{method.upper()} {url}")
        return KopfResponse()


def test_kopf_writes_are_fenced_and_its_reads_are_not(monkeypatch: pytest.MonkeyPatch) -> None:
    from kopf._cogs.clients import api as kopf_api

    sent = KopfRequests()
    monkeypatch.setattr(kopf_api, "request", sent)
    allowed = [True]
    leader.fence_kopf(lambda: allowed[0])
    leader.fence_kopf(lambda: True)  # a second call does not wrap twice (nor replace the guard)

    async def scenario() -> None:
        kw: dict[str, Any] = {"settings": None, "logger": None}
        await kopf_api.patch("/apis/x/y", payload={}, **kw)  # kopf's helpers call request() by name
        allowed[0] = False
        with pytest.raises(FencedError, match="refused kopf's PATCH /apis/x/y"):
            await kopf_api.patch("/apis/x/y", payload={}, **kw)
        with pytest.raises(FencedError, match="POST"):
            await kopf_api.post("/api/v1/namespaces/a/events", payload={}, **kw)
        with pytest.raises(FencedError, match="DELETE"):
            await kopf_api.delete("/apis/x/y", **kw)
        assert await kopf_api.get("/apis/x/y", **kw) == {}  # reads pass

    asyncio.run(scenario())
    assert sent.sent == ["PATCH /apis/x/y", "GET /apis/x/y"]
    leader.unfence_kopf()
    assert kopf_api.request is sent


def test_status_and_events_are_fenced() -> None:
    cluster = KubeCluster(core=None, apps=None, custom=None, can_write=lambda: False)  # type: ignore[arg-type]
    with pytest.raises(FencedError, match="the status of shop/ranker not written"):
        cluster.patch_status("shop", "ranker", {"phase": "Progressing"}, "7")
    with pytest.raises(FencedError, match="Event StepAdvanced on shop/ranker"):
        cluster.emit({"metadata": {"namespace": "shop", "name": "ranker"}}, "Normal", "StepAdvanced", "x")


def test_notifications_are_fenced() -> None:
    body = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "minimal.yaml").read_text())
    body["spec"]["notifications"] = [{"name": "hook", "type": "webhook", "url": "http://hooks.example/a"}]
    spec = ModelExperimentSpec.model_validate(body["spec"])
    started = HistoryEntry(time=T0, from_phase=Phase.PENDING, to_phase=Phase.PROGRESSING, reason="Started")
    posts: list[str] = []

    class Cluster:
        def patch_status(self, *a: Any) -> None:
            raise AssertionError("no mark without a send")

        def emit(self, *a: Any) -> None:
            raise AssertionError("no Event")

    def post(url: str, payload: Mapping[str, Any]) -> str | None:
        posts.append(url)
        return None

    meta = {"metadata": {"namespace": "shop", "name": "ranker", "uid": "u"}}
    with pytest.raises(FencedError, match="notification"):
        notify(meta, spec, ModelExperimentStatus(), ModelExperimentStatus(history=[started]),
               Cluster(), post=post, can_write=lambda: False)  # type: ignore[arg-type]
    assert posts == []


def test_exit_lost_exits_at_once_with_its_own_code(monkeypatch: pytest.MonkeyPatch) -> None:
    codes: list[int] = []

    def fake_exit(code: int) -> None:
        codes.append(code)

    monkeypatch.setattr(leader.os, "_exit", fake_exit)
    leader.exit_lost("test")
    assert codes == [ExitCode.LEASE_LOST] == [3]


def test_a_standby_tries_again_right_when_the_lease_expires(store: Store, clock: Clock) -> None:
    a, b = Replica(store, clock, "a"), Replica(store, clock, "b")
    assert a.elector.try_acquire_or_renew()
    store.down.add("a")
    waits: list[float] = []

    def wait(event: threading.Event, seconds: float) -> bool:
        waits.append(seconds)
        return clock.wait(event, seconds)

    b.elector._wait = wait
    started = clock.t
    assert b.elector.acquire(threading.Event())
    assert clock.t - started == pytest.approx(15.01)  # not at the next retry period after expiry
    assert all(w <= 2.0 * leader.JITTER for w in waits)



def test_run_parses_the_lease_flags_and_refuses_bad_timings(capsys: pytest.CaptureFixture[str]) -> None:
    from modelrollout.cli import build_parser, main

    args = build_parser().parse_args(["run", "-n", "shop", "--leader-elect"])
    assert (args.leader_elect, args.lease_name, args.lease_namespace) == (True, "modelrollout-leader", None)
    assert (args.lease_duration, args.renew_deadline, args.retry_period) == ("15s", "10s", "2s")
    assert not build_parser().parse_args(["run", "-n", "shop"]).leader_elect
    # Checked before anything starts: one line, exit code 2.
    assert main(["run", "-n", "shop", "--leader-elect", "--lease-duration", "10s"]) == 2
    assert "--lease-duration (10s) must be longer than --renew-deadline (10s)" in capsys.readouterr().err
    assert main(["run", "-n", "shop", "--leader-elect", "--retry-period", "soon"]) == 2
    assert "--retry-period: duration must look like 30s" in capsys.readouterr().err
