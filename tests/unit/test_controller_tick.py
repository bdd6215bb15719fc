"""The order of one tick, with fakes of its router, its metrics provider and the cluster (the way
Flagger's scheduler is tested with ``newDeploymentFixture``): routes before the status, Events
after it, a 409 that stores nothing, drift healed with an Event, the achieved split recorded, and
the reason of unreadable credentials on the condition."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml

from modelrollout.api.observations import SpecProblem, Unknown
from modelrollout.api.spec import KeySelector, ModelExperimentSpec
from modelrollout.controller.kube import StatusConflictError, traffic_target
from modelrollout.controller.observe import ProviderOrReason
from modelrollout.controller.state import ObjectMemo
from modelrollout.controller.tick import run_tick
from modelrollout.policy.decision import Decision
from modelrollout.routing import (
    ApplyResult,
    CurrentRoutes,
    RouteNotFoundError,
    Router,
    RouteState,
    TrafficTarget,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "minimal.yaml"
LOG = logging.getLogger("test-tick")


@dataclass
class Journal:
    """What the tick did, in order: ``apply``, ``patch``, ``event:<reason>``."""

    entries: list[str] = field(default_factory=list)

    def index(self, entry: str) -> int:
        return self.entries.index(entry)

    def events(self) -> list[str]:
        return [e.removeprefix("event:") for e in self.entries if e.startswith("event:")]


@dataclass
class FakeRouter:
    """A :class:`Router` that routes what it is asked, or ``achieved``; reports ``drift`` once."""

    journal: Journal
    achieved: dict[str, int] | None = None
    drift: tuple[str, ...] = ()
    fail: Exception | None = None
    applied: list[RouteState] = field(default_factory=list)
    provider: str = "istio"
    supports_mirror: bool = True
    supports_stickiness: bool = True

    def current(self, target: TrafficTarget, desired: RouteState | None = None) -> CurrentRoutes:
        return CurrentRoutes(state=self.applied[-1] if self.applied else None, in_sync=True)

    def apply(self, target: TrafficTarget, desired: RouteState) -> ApplyResult:
        self.journal.entries.append("apply")
        if self.fail is not None:
            raise self.fail
        self.applied.append(desired)
        achieved = RouteState(dict(self.achieved), desired.mirrors) if self.achieved else desired
        drift, self.drift = self.drift, ()
        return ApplyResult(changed=True, achieved=achieved, drift=drift)

    def restore_champion(self, target: TrafficTarget) -> ApplyResult:
        raise AssertionError("not used by a tick")


@dataclass
class FakeCluster:
    """A :class:`~modelrollout.controller.kube.Cluster` that keeps the status it is sent."""

    journal: Journal
    conflict: bool = False
    reference_errors: list[SpecProblem] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)

    def check_references(
        self, spec: ModelExperimentSpec, namespace: str, router: Router
    ) -> list[SpecProblem]:
        return list(self.reference_errors)

    def traffic_target(self, spec: ModelExperimentSpec, namespace: str) -> TrafficTarget:
        return traffic_target(spec, namespace)

    def patch_status(
        self, namespace: str, name: str, status: Mapping[str, Any], resource_version: str | None
    ) -> None:
        self.journal.entries.append("patch")
        if self.conflict:
            raise StatusConflictError(f"{namespace}/{name} changed since it was read")
        for key, value in status.items():
            if value is None:
                self.status.pop(key, None)
            else:
                self.status[key] = value

    def read_key(
        self, kind: str, namespace: str, ref: KeySelector, path: str
    ) -> bytes | SpecProblem | Unknown:
        raise AssertionError("no notification sinks in these tests")

    def emit(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self.journal.entries.append(f"event:{reason}")
        self.messages[reason] = f"{type_}: {message}"


@dataclass
class Fixture:
    """One experiment and the fakes around its tick (Given), and a way to run it (When)."""

    spec: ModelExperimentSpec = field(
        default_factory=lambda: ModelExperimentSpec.model_validate(
            yaml.safe_load(EXAMPLE.read_text())["spec"]
        )
    )
    journal: Journal = field(default_factory=Journal)
    state: ObjectMemo = field(default_factory=ObjectMemo)
    provider: ProviderOrReason = field(default_factory=lambda: Unknown("no metrics in this test"))
    router: FakeRouter = field(init=False)
    cluster: FakeCluster = field(init=False)
    now: datetime = NOW

    def __post_init__(self) -> None:
        self.router = FakeRouter(self.journal)
        self.cluster = FakeCluster(self.journal)

    def body(self) -> dict[str, Any]:
        return {
            "metadata": {"namespace": "shop", "name": "ranker", "generation": 1, "resourceVersion": "7"},
            "spec": self.spec.model_dump(by_alias=True, mode="json", exclude_none=True),
            "status": dict(self.cluster.status),
        }

    def tick(self, seconds: float = 30.0) -> Decision:
        self.journal.entries.clear()
        decision = run_tick(
            self.body(),
            self.spec,
            self.state,
            self.now,
            LOG,
            router=self.router,
            provider=self.provider,
            cluster=self.cluster,
        )
        self.now += timedelta(seconds=seconds)
        return decision


def test_routes_are_applied_before_the_status_is_written_and_events_follow_it() -> None:
    f = Fixture()
    decision = f.tick()
    assert decision.phase.value == "Progressing"
    assert f.journal.entries[:2] == ["apply", "patch"]
    assert f.journal.events(), "the start has an Event"
    assert all(f.journal.index(f"event:{e}") > f.journal.index("patch") for e in f.journal.events())
    assert f.router.applied[-1].weights == {"v1": 90, "v2": 10}
    assert f.cluster.status["phase"] == "Progressing"
    assert f.state.written_tick == decision.status.last_tick_at


def test_a_status_conflict_stores_nothing_and_emits_nothing() -> None:
    f = Fixture()
    f.cluster.conflict = True
    with pytest.raises(kopf.TemporaryError):
        f.tick()
    assert f.journal.entries == ["apply", "patch"]  # the routes were set; the status was refused
    assert f.cluster.status == {}
    assert f.state.written_tick is None
    # The retry, on the object as it was, takes the same step and records it once.
    f.cluster.conflict = False
    f.tick()
    assert f.cluster.status["phase"] == "Progressing"
    assert [h["toPhase"] for h in f.cluster.status["history"]] == ["Progressing"]


def test_a_route_changed_by_someone_else_is_healed_with_a_warning() -> None:
    f = Fixture()
    f.tick()
    f.router.drift = ("route default: weights v1=50, v2=50 were set outside the operator",)
    f.tick()
    assert "event:RouteDriftHealed" in f.journal.entries
    assert f.cluster.messages["RouteDriftHealed"].startswith("Warning: route default: weights v1=50")
    assert f.router.applied[-1].weights == {"v1": 90, "v2": 10}


def test_the_split_the_provider_achieves_is_recorded_with_an_event() -> None:
    f = Fixture()
    f.router.achieved = {"v1": 89, "v2": 11}  # a replica ratio, say
    f.tick()
    assert f.cluster.status["weights"] == {"v1": 89, "v2": 11}
    assert f.cluster.status["strata"][-1]["weights"] == {"v1": 89, "v2": 11}
    assert f.cluster.messages["WeightsRounded"].startswith("Normal: The traffic provider routes")
    assert f.journal.index("event:WeightsRounded") < f.journal.index("patch")


def test_the_reason_credentials_cannot_be_read_reaches_the_condition() -> None:
    f = Fixture()
    f.provider = Unknown("Secret shop/prom-token: 403 Forbidden (the operator may not read it)")
    f.tick()
    f.tick()
    conditions = {c["type"]: c for c in f.cluster.status["conditions"]}
    unavailable = conditions["MetricsUnavailable"]
    assert unavailable["status"] == "True"
    assert "Secret shop/prom-token: 403 Forbidden" in unavailable["message"]
    assert "403 Forbidden" in conditions["Ready"]["message"]


def test_a_spec_error_found_in_the_cluster_moves_no_traffic() -> None:
    f = Fixture()
    f.cluster.reference_errors = [
        SpecProblem("spec.champion.service", "Service shop/model-v1 does not exist")
    ]
    decision = f.tick()
    assert "apply" not in f.journal.entries
    assert decision.phase.value == "Pending"
    assert "spec.champion.service" in f.cluster.messages["InvalidSpec"]


def test_a_routed_object_gone_since_the_check_stores_nothing_and_is_checked_again() -> None:
    f = Fixture()
    f.router.fail = RouteNotFoundError(
        "VirtualService shop/model has no route 'default'",
        kind="VirtualService",
        namespace="shop",
        name="model",
    )
    with pytest.raises(kopf.TemporaryError):
        f.tick()
    assert f.journal.entries == ["apply", "event:InvalidSpec"]
    assert f.cluster.status == {}
    assert f.state.checked_generation is None
