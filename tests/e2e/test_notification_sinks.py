"""Phase changes reach the notification sinks, on the real stack: a webhook and a Slack-style sink
(its URL in a Secret) get every phase change once, in order; a sink that is down gets a Warning
Event and holds nothing."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from modelrollout.devstack.sim.world import World, experiment_manifest
from support.models import fast

pytestmark = pytest.mark.e2e


def test_phase_changes_reach_every_sink_once_and_a_dead_sink_holds_nothing(
    world: World, json_receiver: tuple[str, list[dict[str, Any]], list[int]]
) -> None:
    url, got, _ = json_receiver
    # Given a better challenger, a webhook, a Slack sink whose URL is in a Secret, and a sink that
    # nothing listens on
    world.given_models(fast("v6", click_rate=0.20), fast("v7", click_rate=0.30))
    world.given_virtual_service()
    world.given_mesh()
    world.given_load(rps=300, duration_s=300)
    world.core.create_namespaced_secret(world.namespace, {
        "metadata": {"name": "chat-hook"},
        "data": {"url": base64.b64encode(f"{url}/slack".encode()).decode()},
    })
    world.given_operator()
    manifest = experiment_manifest("ranker-v7", mde=0.25, prometheus_url=world.prometheus.url)
    manifest["spec"]["notifications"] = [
        {"name": "hook", "type": "webhook", "url": f"{url}/hook"},
        {"name": "chat", "type": "slack", "urlSecretRef": {"name": "chat-hook", "key": "url"}},
        {"name": "dead", "type": "webhook", "url": "http://127.0.0.1:9/nothing-listens"},
    ]
    # When the experiment is applied and runs to its end
    world.when_experiment_applied(manifest)
    world.then_phase(["Promoted", "RolledBack", "Failed"], timeout=240)
    # Then it was promoted, the dead sink did not hold it, and said so in a Warning Event
    assert world.phase() == "Promoted", world.describe()
    def told_of_promotion(g: dict[str, Any]) -> bool:
        return g["body"].get("toPhase") == "Promoted" or "→ Promoted (" in g["body"].get("text", "")

    world.wait_for("every sink told of the promotion",
                   lambda: sum(1 for g in got if told_of_promotion(g)) == 2, timeout=15)
    hook = [g["body"] for g in got if g["path"] == "/hook"]
    chat = [g["body"] for g in got if g["path"] == "/slack"]
    history = world.status()["history"]
    changes = [h for h in history if h.get("fromPhase") != h["toPhase"]]
    assert [(b["fromPhase"], b["toPhase"], b["reason"]) for b in hook] == [
        (h.get("fromPhase"), h["toPhase"], h["reason"]) for h in changes]
    assert [b["toPhase"] for b in hook] == ["Progressing", "Promoted"]
    promoted = hook[-1]
    assert promoted["weights"] == {"v6": 0, "v7": 100}
    assert promoted["numbers"] == history[-1]["numbers"]
    assert promoted["experiment"]["name"] == "ranker-v7"
    assert len({b["id"] for b in hook}) == len(hook)  # each change once
    assert [b["text"].splitlines()[0] for b in chat] == [
        f"{world.namespace}/ranker-v7: Pending → Progressing (Started)",
        f"{world.namespace}/ranker-v7: Progressing → Promoted ({history[-1]['reason']})",
    ]
    # The marks are stored after the sends (at least once), so they may trail what was received
    world.wait_for("the marks of the live sinks stored", lambda: {
        world.status()["notifications"][s].get("deliveredThrough") for s in ("hook", "chat")
    } == {history[-1]["time"]}, timeout=15)
    marks = world.status()["notifications"]
    failed = [e for e in world.events() if e["reason"] == "NotificationFailed"]
    # The dead sink is still failing on the promotion, or has given it up after its attempts
    # (the timer keeps trying a terminal experiment's sinks, so both can be seen)
    gave_up = [e for e in failed if "gave up telling" in e["message"] and "→ Promoted (" in e["message"]]
    assert marks["dead"]["failures"] >= 1 or gave_up, (marks, failed)
    assert "URLError" in marks["dead"]["lastError"]
    assert failed, world.events()
    assert failed[0]["type"] == "Warning"
    assert "spec.notifications[dead] (webhook) could not be told" in failed[0]["message"]
