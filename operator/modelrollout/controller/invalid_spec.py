"""A spec that passed the CRD's schema but not the models (an older CRD than the operator).

The status and one Warning Event say which fields and why; no tick runs, so traffic stays where it
is. The conditions InvalidSpec, Ready=False and Stalled carry the errors with ``observedGeneration``,
so ``kubectl get``, Argo CD and Flux show why nothing happens.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import kopf
from pydantic import ValidationError

from modelrollout.api.status import ConditionStatus, ConditionType, ModelExperimentStatus
from modelrollout.controller.kube import Cluster, StatusConflictError, with_removed_keys


def validation_messages(exc: ValidationError) -> str:
    """Each error of ``exc`` as ``spec.<field path>: <message>``, joined by ``; ``.

    A rule of the CRD's CEL checked by the models reports on the object that holds it, with the
    field in its message (``.steps: ...``); that field joins the path.
    """
    parts: list[str] = []
    for error in exc.errors():
        path = "spec" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(path + message if message.startswith(".") else f"{path}: {message}")
    return "; ".join(parts)


def unparsable_spec_status(
    old: Mapping[str, Any], message: str, generation: int | None, now: datetime
) -> ModelExperimentStatus | None:
    """The status of an experiment whose spec the models reject, or None when it already says so.

    Phase, steps and history are kept.
    """
    try:
        status = ModelExperimentStatus.model_validate(dict(old))
    except ValidationError:
        status = ModelExperimentStatus()
    current = status.condition(ConditionType.INVALID_SPEC)
    if (
        current is not None
        and current.status is ConditionStatus.TRUE
        and current.message == message
        and status.observed_generation == generation
    ):
        return None
    status.observed_generation = generation
    for type_, value in (
        (ConditionType.INVALID_SPEC, ConditionStatus.TRUE),
        (ConditionType.READY, ConditionStatus.FALSE),
        (ConditionType.STALLED, ConditionStatus.TRUE),
    ):
        status.set_condition(type_, value, "InvalidSpec", message, now=now, generation=generation)
    return status


def report_unparsable_spec(
    body: Mapping[str, Any], exc: ValidationError, now: datetime, cluster: Cluster
) -> None:
    """Write the status of :func:`unparsable_spec_status` and one Warning Event, once per generation."""
    metadata = body.get("metadata") or {}
    old = dict(body.get("status") or {})
    message = validation_messages(exc)
    status = unparsable_spec_status(old, message, metadata.get("generation"), now)
    if status is None:
        return  # already reported for this generation
    new = status.model_dump(by_alias=True, mode="json", exclude_none=True)
    try:
        cluster.patch_status(
            metadata["namespace"],
            metadata["name"],
            with_removed_keys(new, old),
            metadata.get("resourceVersion"),
        )
    except StatusConflictError as exc409:
        raise kopf.TemporaryError(str(exc409), delay=1) from exc409
    cluster.emit(body, "Warning", "InvalidSpec", f"the spec does not validate: {message}")
