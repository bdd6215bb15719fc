"""Notifications of phase changes: payloads, order, at-least-once marks, retries and giving up."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelrollout.api.spec import ModelExperimentSpec, Notification
from modelrollout.api.status import HistoryEntry, ModelExperimentStatus, NotificationState, Phase
from modelrollout.controller.notify import (
    MAX_ATTEMPTS,
    ExperimentRef,
    deliver,
    phase_changes,
    post_json,
    slack_payload,
    webhook_payload,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
REF = ExperimentRef("shop", "ranker-v7", "uid-1")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "minimal.yaml"


def spec(*sinks: dict[str, Any]) -> ModelExperimentSpec:
    body = yaml.safe_load(EXAMPLE.read_text())["spec"]
    body["notifications"] = list(sinks)
    return ModelExperimentSpec.model_validate(body)


HOOK = {"name": "hook", "type": "webhook", "url": "http://hooks.example/a"}
CHAT = {"name": "chat", "type": "slack", "url": "http://chat.example/b"}


def entry(seconds: int, before: Phase | None, after: Phase, reason: str, **kw: Any) -> HistoryEntry:
    return HistoryEntry(time=T0 + timedelta(seconds=seconds), from_phase=before, to_phase=after,
                        reason=reason, **kw)


STARTED = entry(0, Phase.PENDING, Phase.PROGRESSING, "Started", to_step=0, weights={"v1": 90, "v2": 10})
STEP = entry(10, Phase.PROGRESSING, Phase.PROGRESSING, "StepAdvanced", from_step=0, to_step=1)
PROMOTED = entry(20, Phase.PROGRESSING, Phase.PROMOTED, "PromotedBetter", from_step=1,
                 weights={"v1": 0, "v2": 100}, message="v2 is better: lift 12 %", numbers={"lift": 0.12})


def status(*history: HistoryEntry, **marks: NotificationState) -> ModelExperimentStatus:
    return ModelExperimentStatus(history=list(history), notifications=dict(marks))


class Recorder:
    """A sink stand-in for the pure logic: records posts and fails the ones it is told to."""

    def __init__(self, fail: int = 0) -> None:
        self.posts: list[tuple[str, Mapping[str, Any]]] = []
        self.fail = fail

    def __call__(self, url: str, payload: Mapping[str, Any]) -> str | None:
        self.posts.append((url, payload))
        if self.fail > 0:
            self.fail -= 1
            return "HTTP 503 Service Unavailable"
        return None


def urls(sink: Notification) -> tuple[str | None, str | None]:
    return (str(sink.url), None) if sink.url is not None else (None, "no URL")


def test_only_phase_changes_are_announced() -> None:
    assert phase_changes([STARTED, STEP, PROMOTED]) == [STARTED, PROMOTED]


def test_the_webhook_payload_carries_the_transition_and_its_numbers() -> None:
    payload = webhook_payload(REF, PROMOTED)
    assert payload == {
        "id": f"uid-1/{PROMOTED.time.isoformat()}/PromotedBetter",
        "kind": "ModelExperiment",
        "experiment": {"namespace": "shop", "name": "ranker-v7", "uid": "uid-1"},
        "time": PROMOTED.time.isoformat(),
        "fromPhase": "Progressing", "toPhase": "Promoted", "fromStep": 1, "toStep": None,
        "weights": {"v1": 0, "v2": 100}, "reason": "PromotedBetter", "message": "v2 is better: lift 12 %",
        "numbers": {"lift": 0.12},
    }
    json.dumps(payload)  # serialisable as is


def test_the_slack_message_says_what_happened_in_one_line_then_why() -> None:
    payload = slack_payload(REF, PROMOTED)
    assert payload["text"].splitlines() == [
        "shop/ranker-v7: Progressing → Promoted (PromotedBetter)",
        "v2 is better: lift 12 %",
        "Weights: v1 0 %, v2 100 %.",
    ]
    headline = payload["blocks"][0]["text"]["text"]
    assert headline == "*ModelExperiment shop/ranker-v7: Progressing → Promoted (PromotedBetter)*"


def test_every_sink_gets_each_phase_change_once_in_order() -> None:
    post = Recorder()
    sp = spec(HOOK, CHAT)
    first = deliver(sp, status(), status(STARTED), REF, urls, post)
    assert [(u, p.get("toPhase")) for u, p in post.posts] == [
        ("http://hooks.example/a", "Progressing"), ("http://chat.example/b", None)]
    assert first.sent == 2
    marks = {k: v.delivered_through for k, v in first.states.items()}
    assert marks == {"hook": STARTED.time, "chat": STARTED.time}
    # The next tick, with the marks stored: a step (no phase change) sends nothing, changes nothing.
    stored = status(STARTED, STEP, **first.states)
    again = deliver(sp, status(STARTED, **first.states), stored, REF, urls, post)
    assert (len(post.posts), again.changed) == (2, False)
    # The promotion goes out once per sink.
    done = deliver(sp, stored, status(STARTED, STEP, PROMOTED, **first.states), REF, urls, post)
    assert [p.get("toPhase", "slack") for _, p in post.posts[2:]] == ["Promoted", "slack"]
    assert done.sent == 2


def test_a_sink_that_is_down_is_retried_in_order_and_nothing_is_lost() -> None:
    post = Recorder(fail=3)
    sp = spec(HOOK)
    marks: dict[str, NotificationState] = {}
    old = status()
    history = (STARTED, PROMOTED)
    warnings: list[str] = []
    for _ in range(3):  # down: the first entry is tried each tick; the second waits behind it
        out = deliver(sp, old, status(*history, **marks), REF, urls, post)
        marks.update(out.states)
        warnings += [m for _, m in out.warnings]
        old = status(*history, **marks)
    assert [p["reason"] for _, p in post.posts] == ["Started"] * 3
    assert marks["hook"].failures == 3
    assert marks["hook"].last_error == "HTTP 503 Service Unavailable"
    assert len(warnings) == 1  # one Warning when the trouble starts, not one per tick
    assert warnings[0].startswith(
        "spec.notifications[hook] (webhook) could not be told "
        "shop/ranker-v7: Pending → Progressing (Started): HTTP 503 Service Unavailable")
    out = deliver(sp, old, status(*history, **marks), REF, urls, post)  # back up: both, in order
    assert [p["reason"] for _, p in post.posts[3:]] == ["Started", "PromotedBetter"]
    expected = NotificationState(delivered_through=PROMOTED.time, failures=0, last_error=None)
    assert out.states["hook"] == expected


def test_a_sink_gone_for_good_gives_up_each_change_after_max_attempts() -> None:
    post = Recorder(fail=10 * MAX_ATTEMPTS)
    sp = spec(HOOK)
    marks: dict[str, NotificationState] = {}
    reasons: list[str] = []
    for i in range(MAX_ATTEMPTS):
        old = status(STARTED, **marks) if i else status()  # the sink was there when it started
        out = deliver(sp, old, status(STARTED, **marks), REF, urls, post)
        marks.update(out.states)
        reasons += [m for _, m in out.warnings]
    assert len(post.posts) == MAX_ATTEMPTS
    assert marks["hook"].delivered_through == STARTED.time  # given up: the next change is not held
    assert marks["hook"].failures == 0
    assert len(reasons) == 2
    gave_up = f"gave up telling shop/ranker-v7: Pending → Progressing (Started) after {MAX_ATTEMPTS} attempts"
    assert gave_up in reasons[1]


def test_a_sink_added_later_is_told_what_happens_from_then_on() -> None:
    post = Recorder()
    sp = spec(HOOK)
    old = status(STARTED)  # the experiment started before the sink was in the spec
    out = deliver(sp, old, status(STARTED, STEP), REF, urls, post)
    assert (post.posts, out.states["hook"].delivered_through) == ([], STARTED.time)
    stored = status(STARTED, STEP, **out.states)
    deliver(sp, stored, status(STARTED, STEP, PROMOTED, **out.states), REF, urls, post)
    assert [p["reason"] for _, p in post.posts] == ["PromotedBetter"]


def test_a_sink_without_a_url_fails_with_the_reason() -> None:
    post = Recorder()
    sp = spec({"name": "hook", "type": "webhook", "urlSecretRef": {"name": "hooks", "key": "url"}})
    out = deliver(sp, status(), status(STARTED), REF, urls, post)
    assert post.posts == []
    assert out.states["hook"].last_error == "no URL"
    assert out.states["hook"].delivered_through is None


# --- post_json against a real HTTP server on loopback ---------------------------------------------


def test_post_json_sends_json_and_reads_the_answer(
    json_receiver: tuple[str, list[dict[str, Any]], list[int]],
) -> None:
    url, got, answers = json_receiver
    assert post_json(f"{url}/hook", {"a": 1}) is None
    assert got == [{"path": "/hook", "type": "application/json", "body": {"a": 1}}]
    answers.append(500)
    assert post_json(f"{url}/hook", {"a": 2}) == "HTTP 500 Internal Server Error"


def test_post_json_reports_an_unreachable_sink() -> None:
    error = post_json("http://127.0.0.1:9/nothing", {"a": 1}, timeout=2)
    assert error is not None
    assert "URLError" in error
