"""A spec the CRD let through but the models reject (an older CRD than the operator): the status
says so with the field paths, once per generation, and no tick runs (traffic stays)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from modelrollout.api.spec import ModelExperimentSpec
from modelrollout.api.status import ConditionStatus, ConditionType, ModelExperimentStatus, Phase
from modelrollout.controller import invalid_spec, tick
from modelrollout.controller.config import OperatorConfig

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "minimal.yaml"


def bad_spec() -> dict[str, Any]:
    spec = yaml.safe_load(EXAMPLE.read_text())["spec"]
    spec["rollout"] = {"steps": [50, 10, 100]}
    spec["metrics"]["primary"]["minimumDetectableEffect"] = "a lot"
    return dict(spec)


def validation_error() -> ValidationError:
    with pytest.raises(ValidationError) as info:
        ModelExperimentSpec.model_validate(bad_spec())
    return info.value


def test_every_error_names_its_field_path() -> None:
    message = invalid_spec.validation_messages(validation_error())
    assert message == (
        "spec.rollout.steps: steps must be strictly increasing; "
        "spec.metrics.primary.minimumDetectableEffect: Input should be a valid number"
    )


def test_the_status_says_why_and_keeps_the_run() -> None:
    running = ModelExperimentStatus(phase=Phase.PROGRESSING, current_step=1, observed_generation=3)
    old = running.model_dump(by_alias=True, mode="json", exclude_none=True)
    status = invalid_spec.unparsable_spec_status(old, "spec.rollout.steps: bad", 4, NOW)
    assert status is not None
    assert (status.phase, status.current_step, status.observed_generation) == (Phase.PROGRESSING, 1, 4)
    got = {c.type: (c.status, c.reason, c.message, c.observed_generation) for c in status.conditions}
    assert got == {
        ConditionType.INVALID_SPEC: (ConditionStatus.TRUE, "InvalidSpec", "spec.rollout.steps: bad", 4),
        ConditionType.READY: (ConditionStatus.FALSE, "InvalidSpec", "spec.rollout.steps: bad", 4),
        ConditionType.STALLED: (ConditionStatus.TRUE, "InvalidSpec", "spec.rollout.steps: bad", 4),
    }


def test_it_is_written_once_per_generation_and_message() -> None:
    first = invalid_spec.unparsable_spec_status({}, "spec.x: bad", 2, NOW)
    assert first is not None
    stored = first.model_dump(by_alias=True, mode="json", exclude_none=True)
    later = NOW + timedelta(seconds=30)
    assert invalid_spec.unparsable_spec_status(stored, "spec.x: bad", 2, later) is None
    again = invalid_spec.unparsable_spec_status(stored, "spec.x: bad", 3, later)  # a new generation
    assert again is not None
    assert again.observed_generation == 3
    other = invalid_spec.unparsable_spec_status(stored, "spec.y: bad", 2, later)  # another error
    assert other is not None
    cond = other.condition(ConditionType.INVALID_SPEC)
    assert cond is not None
    assert cond.message == "spec.y: bad"
    assert cond.last_transition_time == NOW  # still True since the first report


def test_the_tick_writes_the_status_and_one_event_and_moves_no_traffic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The I/O edges are a fake cluster (a unit test of this module): the status patch and the Event.
    patches: list[dict[str, Any]] = []
    warnings: list[str] = []

    class Cluster:
        def patch_status(self, ns: str, name: str, status: dict[str, Any], rv: str) -> None:
            patches.append({"at": (ns, name, rv), **status})

        def emit(self, _body: object, type_: str, reason: str, message: str) -> None:
            assert type_ == "Warning"
            warnings.append(f"{reason}: {message}")

    class Runtime:
        cluster = Cluster()
        config = OperatorConfig()

    monkeypatch.setattr(tick, "run_tick", lambda *a, **k: pytest.fail("no tick on an invalid spec"))
    body: dict[str, Any] = {
        "metadata": {"namespace": "shop", "name": "ranker", "generation": 5, "resourceVersion": "77"},
        "spec": bad_spec(),
    }
    memo: dict[str, Any] = {}
    tick.tick(Runtime(), body, memo, logger=None, force=True)  # type: ignore[arg-type]
    assert len(patches) == 1
    assert patches[0]["at"] == ("shop", "ranker", "77")
    assert patches[0]["observedGeneration"] == 5
    invalid = next(c for c in patches[0]["conditions"] if c["type"] == "InvalidSpec")
    assert invalid["status"] == "True"
    assert "spec.rollout.steps: steps must be strictly increasing" in invalid["message"]
    assert len(warnings) == 1
    assert warnings[0].startswith("InvalidSpec: the spec does not validate: spec.rollout.steps")
    # The next tick sees its own report on the object and writes nothing more.
    body["status"] = {k: v for k, v in patches[0].items() if k != "at"}
    tick.tick(Runtime(), body, memo, logger=None, force=True)  # type: ignore[arg-type]
    assert (len(patches), len(warnings)) == (1, 1)
