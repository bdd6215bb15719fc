"""Announcing phase changes to the sinks of ``spec.notifications`` (webhook, Slack).

What is sent: every entry of ``status.history`` that changes the phase (started, shadow passed,
paused, resumed, promoted, rolled back, failed), in order, after the status that records it is
stored, as Kubernetes Events are. Step changes inside a phase are not sent (they are Events).

Delivery is **at least once**, and nothing is lost when the operator or a sink fails:

* each sink has a mark in ``status.notifications[<sink>].deliveredThrough``, the time of the last
  phase change it was told about; every tick sends the later ones, oldest first, and stops at the
  first failure, so a sink that is down is retried at the next tick, in order;
* the mark is written with a merge patch of ``status.notifications`` only, after the sends. If the
  operator dies between a send and that patch, the next tick sends the entry again: receivers can
  drop repeats by the payload's ``id`` (the experiment's uid, the entry's time and reason);
* a sink first seen (new in the spec) starts after the last phase change before this tick: it is
  told what happens from now on, not the past;
* after :data:`MAX_ATTEMPTS` failed attempts at one entry, that entry is given up with a Warning
  Event ``NotificationFailed`` (a Warning Event also marks the first failure), so a sink that is
  gone for good does not hold the others or grow the status.

Notifications never hold a decision: the tick has already applied the routes and stored the status.

Payloads: ``webhook`` POSTs :func:`webhook_payload` as JSON; ``slack`` POSTs an incoming-webhook
message (:func:`slack_payload`, ``text`` plus a ``mrkdwn`` section), the format Slack documents for
incoming webhooks and that Mattermost and Rocket.Chat accept.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from modelrollout.api.observations import SpecProblem, Unknown
from modelrollout.api.spec import ModelExperimentSpec, Notification, NotificationType
from modelrollout.api.status import HistoryEntry, ModelExperimentStatus, NotificationState
from modelrollout.controller.kube import Cluster
from modelrollout.routing import CanWrite
from modelrollout.routing.base import check_can_write

#: Attempts at one phase change before a sink gives it up.
MAX_ATTEMPTS: Final = 10
#: Seconds a sink may take to answer one POST.
TIMEOUT_SECONDS: Final = 5.0
_USER_AGENT: Final = "modelrollout-notifier"


@dataclass(frozen=True)
class ExperimentRef:
    """The experiment a notification is about."""

    namespace: str
    name: str
    uid: str


def phase_changes(history: Sequence[HistoryEntry]) -> list[HistoryEntry]:
    """The entries of ``history`` that change the phase, oldest first."""
    return [e for e in history if e.from_phase is not e.to_phase]


def entry_id(ref: ExperimentRef, entry: HistoryEntry) -> str:
    """A stable id of one phase change, for receivers to drop repeats."""
    return f"{ref.uid}/{entry.time.isoformat()}/{entry.reason}"


def _weights_text(weights: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {share} %" for name, share in weights.items())


def webhook_payload(ref: ExperimentRef, entry: HistoryEntry) -> dict[str, Any]:
    """The JSON a ``webhook`` sink receives for one phase change."""
    return {
        "id": entry_id(ref, entry),
        "kind": "ModelExperiment",
        "experiment": {"namespace": ref.namespace, "name": ref.name, "uid": ref.uid},
        "time": entry.time.isoformat(),
        "fromPhase": entry.from_phase.value if entry.from_phase is not None else None,
        "toPhase": entry.to_phase.value,
        "fromStep": entry.from_step,
        "toStep": entry.to_step,
        "weights": dict(entry.weights),
        "reason": entry.reason,
        "message": entry.message,
        "numbers": dict(entry.numbers),
    }


def summary(ref: ExperimentRef, entry: HistoryEntry) -> str:
    """One line for people: ``shop/ranker-v7: Progressing → Promoted (PromotedBetter)``."""
    before = entry.from_phase.value if entry.from_phase is not None else "new"
    return f"{ref.namespace}/{ref.name}: {before} → {entry.to_phase.value} ({entry.reason})"


def slack_payload(ref: ExperimentRef, entry: HistoryEntry) -> dict[str, Any]:
    """The incoming-webhook message a ``slack`` sink receives for one phase change."""
    line = summary(ref, entry)
    details = [entry.message] if entry.message else []
    if entry.weights:
        details.append(f"Weights: {_weights_text(entry.weights)}.")
    text = line + ("\n" + "\n".join(details) if details else "")
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*ModelExperiment {line}*"}}]
    if details:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(details)}})
    return {"text": text, "blocks": blocks}


PAYLOADS: Final[dict[NotificationType, Callable[[ExperimentRef, HistoryEntry], dict[str, Any]]]] = {
    NotificationType.WEBHOOK: webhook_payload,
    NotificationType.SLACK: slack_payload,
}


def post_json(url: str, payload: Mapping[str, Any], timeout: float = TIMEOUT_SECONDS) -> str | None:
    """POST ``payload`` as JSON; None on a 2xx answer, else why not (never raises)."""
    data = json.dumps(payload).encode()
    request = urllib.request.Request(
        url,
        data=data,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": _USER_AGENT},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # the sink's own URL, from the spec
            status = int(answer.status)
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{type(exc).__name__}: {reason}"
    return None if 200 <= status < 300 else f"HTTP {status}"


@dataclass
class Outcome:
    """What one round of sends did: the new marks, and the Events to emit."""

    states: dict[str, NotificationState] = field(default_factory=dict)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (reason, message)
    sent: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.states)


Post = Callable[[str, Mapping[str, Any]], "str | None"]


def deliver(
    spec: ModelExperimentSpec,
    old: ModelExperimentStatus,
    new: ModelExperimentStatus,
    ref: ExperimentRef,
    url_of: Callable[[Notification], tuple[str | None, str | None]],
    post: Post = post_json,
) -> Outcome:
    """Send every sink the phase changes it has not had yet (see the module docstring).

    ``old`` is the status before this tick (it places the start of a sink first seen), ``new`` the
    stored status after it. ``url_of`` gives a sink's URL, or why there is none (a Secret missing);
    ``post`` sends one payload and says why it failed.
    """
    out = Outcome()
    changes = phase_changes(new.history)
    if not changes or not spec.notifications:
        return out
    before_tick = phase_changes(old.history)
    start = before_tick[-1].time if before_tick else None
    for sink in spec.notifications:
        state = new.notifications.get(sink.name)
        mark = state.delivered_through if state is not None else start
        pending = [e for e in changes if mark is None or e.time > mark]
        if not pending:
            if state is None:  # remember where this sink starts, so the past is never sent
                out.states[sink.name] = NotificationState(delivered_through=start)
            continue
        current = (state or NotificationState(delivered_through=mark)).model_copy(deep=True)
        url, problem = url_of(sink)
        for entry in pending:
            error = problem if url is None else post(url, PAYLOADS[sink.type](ref, entry))
            if error is None:
                current.delivered_through, current.failures, current.last_error = entry.time, 0, None
                out.sent += 1
                continue
            current.failures += 1
            current.last_error = error
            where = f"spec.notifications[{sink.name}] ({sink.type.value})"
            if current.failures == 1:
                out.warnings.append(
                    (
                        "NotificationFailed",
                        f"{where} could not be told {summary(ref, entry)}: {error}; retried every tick, "
                        f"given up after {MAX_ATTEMPTS} attempts",
                    )
                )
            if current.failures >= MAX_ATTEMPTS:
                out.warnings.append(
                    (
                        "NotificationFailed",
                        f"{where}: gave up telling {summary(ref, entry)} after {current.failures} attempts: "
                        f"{error}",
                    )
                )
                current.delivered_through, current.failures = entry.time, 0
                continue
            break  # in order: the later ones wait for this one
        out.states[sink.name] = current
    return out


# --- the tick's side: after the status is stored ------------------------------------------------------
def sink_url(cluster: Cluster, namespace: str, sink: Notification) -> tuple[str | None, str | None]:
    """A sink's URL, or why there is none (its Secret or key is missing or unreadable)."""
    if sink.url is not None:
        return str(sink.url), None
    ref = sink.url_secret_ref
    if ref is None:  # the schema requires one of the two
        return None, "neither url nor urlSecretRef is set"
    raw = cluster.read_key("Secret", namespace, ref, f"spec.notifications[{sink.name}].urlSecretRef")
    if isinstance(raw, SpecProblem):
        return None, f"{raw.path}: {raw.message}"
    if isinstance(raw, Unknown):
        return None, raw.reason
    url = raw.decode(errors="replace").strip()
    if not url.startswith(("http://", "https://")):
        return None, f"the key {ref.key} of Secret {namespace}/{ref.name} does not hold an http(s) URL"
    return url, None


def notify(
    body: Mapping[str, Any],
    spec: ModelExperimentSpec,
    old: ModelExperimentStatus,
    new: ModelExperimentStatus,
    cluster: Cluster,
    *,
    post: Post = post_json,
    can_write: CanWrite | None = None,
) -> None:
    """Tell the sinks the phase changes they have not had, after the status is stored, and store
    what they have been told. With leader election, each send first asks ``can_write`` (a deposed
    leader tells no one; :class:`~modelrollout.errors.FencedError` ends the round)."""
    metadata = body.get("metadata") or {}
    namespace, name = metadata["namespace"], metadata["name"]
    ref = ExperimentRef(namespace, name, str(metadata.get("uid") or ""))

    def fenced_post(url: str, payload: Mapping[str, Any]) -> str | None:
        check_can_write(can_write, f"the notification {payload.get('id') or ''} of {namespace}/{name}")
        return post(url, payload)

    outcome = deliver(spec, old, new, ref, lambda sink: sink_url(cluster, namespace, sink), fenced_post)
    if outcome.changed:
        marks = {
            k: v.model_dump(by_alias=True, mode="json", exclude_none=True) for k, v in outcome.states.items()
        }
        for mark in marks.values():
            mark.setdefault("lastError", None)  # a merge patch removes a cleared error
        try:
            cluster.patch_status(namespace, name, {"notifications": marks}, None)
        except Exception as exc:  # the marks stay behind: the next tick sends again (at least once)
            cluster.emit(body, "Warning", "NotificationFailed", f"could not store what was sent: {exc}")
    for reason, message in outcome.warnings:
        cluster.emit(body, "Warning", reason, message)
