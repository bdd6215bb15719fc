"""A tick on a stale copy of the experiment (kopf's watch lagging behind the operator's own status
writes) is skipped: it would apply the routes of an older step before its status write failed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from modelrollout.controller import tick
from modelrollout.controller.config import OperatorConfig
from modelrollout.controller.state import ObjectMemo, is_stale, object_memo
from modelrollout.controller.telemetry import OperatorMetrics

pytestmark = pytest.mark.unit

T = datetime(2026, 12, 2, 15, 14, 40, 123000, tzinfo=UTC)


def body(last_tick: datetime | None) -> dict[str, object]:
    status = {} if last_tick is None else {"lastTickAt": last_tick.isoformat().replace("+00:00", "Z")}
    return {"metadata": {"name": "e", "namespace": "ns"}, "status": status}


def test_nothing_is_stale_before_this_process_wrote_a_status() -> None:
    assert not is_stale(body(None), ObjectMemo())
    assert not is_stale(body(T), ObjectMemo())


def test_a_body_older_than_the_last_status_written_is_stale() -> None:
    state = ObjectMemo(written_tick=T)
    assert is_stale(body(T - timedelta(seconds=5)), state)
    assert is_stale(body(None), state)  # (its status has no tick at all)
    assert not is_stale(body(T), state)  # the watch has caught up
    assert not is_stale(body(T + timedelta(seconds=5)), state)


def test_a_stale_body_is_read_again_and_the_tick_acts_only_on_a_current_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import yaml

    spec = yaml.safe_load(open("examples/minimal.yaml"))["spec"]  # noqa: SIM115
    ran: list[dict[str, object]] = []
    monkeypatch.setattr(tick, "run_tick", lambda b, s, state, now, logger, **_: ran.append(dict(b)))
    apiserver: list[dict[str, object]] = []  # what the GET returns; each GET is recorded

    class Custom:
        def __init__(self) -> None:
            self.gets = 0

        def get_namespaced_custom_object(self, *args: object) -> dict[str, object]:
            self.gets += 1
            return apiserver[-1]

    class Clients:
        custom = Custom()

    class Runtime:  # the tick's factories; run_tick is replaced, so they are not used
        cluster = None
        clients = Clients()
        config = OperatorConfig()
        telemetry = OperatorMetrics(standard_collectors=False)
        can_write = None

        def router(self, spec: object) -> None:
            return None

        def provider(self, spec: object, namespace: str) -> None:
            return None

    memo: dict[str, object] = {}
    state = object_memo(memo)  # type: ignore[arg-type]
    state.written_tick = T
    stale = {**body(T - timedelta(seconds=3)), "spec": spec}
    apiserver.append(stale)  # the apiserver's copy is no newer: nothing runs
    assert tick.tick(Runtime(), stale, memo, None, force=True) == OperatorConfig().timer_seconds  # type: ignore[arg-type]
    assert ran == []
    assert state.stale_bodies == 1
    assert Clients.custom.gets == 1
    current = {**body(T), "spec": spec}
    apiserver.append(current)  # the watch lags, the apiserver has our write: the tick acts on it
    tick.tick(Runtime(), stale, memo, None, force=True)  # type: ignore[arg-type]
    assert len(ran) == 1
    assert ran[0]["status"] == current["status"]
    assert Clients.custom.gets == 2
    tick.tick(Runtime(), current, memo, None, force=True)  # type: ignore[arg-type]
    assert len(ran) == 2
    assert Clients.custom.gets == 2  # a current body needs no GET
