"""The whole ModelExperiment object, and offline validation of manifests.

:func:`manifest_errors` checks a manifest with the same rules the CRD enforces and reports each
problem as ``<field path>: <message>``, with the path written the way the apiserver writes it
(``spec.challengers[1].name``), so ``modelrollout`` can validate a file before it is applied.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails

from modelrollout.api._rules import DUPLICATE_ERROR, RULE_ERROR, VALUE_RULE_ERROR, api_config
from modelrollout.api.spec import ModelExperimentSpec
from modelrollout.api.status import ModelExperimentStatus
from modelrollout.errors import InvalidInputError

GROUP: Final = "modelrollout.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "ModelExperiment"
PLURAL: Final = "modelexperiments"
SINGULAR: Final = "modelexperiment"
SHORT_NAMES: Final = ("mexp",)
CATEGORIES: Final = ("modelrollout",)
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

#: Annotations of the manual controls; their value is an id (any string), acted on once.
ANNOTATION_PROMOTE: Final = f"{GROUP}/promote"
ANNOTATION_ABORT: Final = f"{GROUP}/abort"
ANNOTATION_RETRY: Final = f"{GROUP}/retry"


class ObjectMeta(BaseModel):
    """The parts of ``metadata`` the operator reads; other keys are kept as they are."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow", frozen=True)

    name: str | None = None
    namespace: str | None = None
    generation: int | None = None
    uid: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ModelExperiment(BaseModel):
    """A whole ``ModelExperiment`` object as stored by the apiserver."""

    model_config = api_config(frozen=True, extra="forbid")

    api_version: Literal["modelrollout.io/v1alpha1"] = "modelrollout.io/v1alpha1"
    kind: Literal["ModelExperiment"] = "ModelExperiment"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: ModelExperimentSpec
    status: ModelExperimentStatus | None = None


def _path(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def _messages(error: ErrorDetails) -> Iterator[str]:
    path = _path(error["loc"])
    ctx = error.get("ctx") or {}
    if error["type"] == RULE_ERROR:
        for failure in ctx.get("failures", []):
            yield f"{path}{failure['field_path']}: {failure['message']}"
    elif error["type"] == DUPLICATE_ERROR:
        yield f"{path}[{ctx.get('index')}]: {ctx.get('message', error['msg'])}"
    elif error["type"] == VALUE_RULE_ERROR:
        yield f"{path}: {ctx.get('message', error['msg'])}"
    else:
        yield f"{path}: {error['msg']}" if path else error["msg"]


def errors_of(exc: ValidationError) -> list[str]:
    """The problems in a :class:`pydantic.ValidationError`, as ``<path>: <message>`` lines."""
    return [line for error in exc.errors(include_url=False) for line in _messages(error)]


def manifest_errors(manifest: Mapping[str, Any]) -> list[str]:
    """Every problem of a ModelExperiment manifest as ``<path>: <message>``; empty when valid."""
    try:
        ModelExperiment.model_validate(manifest)
    except ValidationError as exc:
        return errors_of(exc)
    return []


def validate_manifest(manifest: Mapping[str, Any]) -> ModelExperiment:
    """Validate a manifest (a parsed YAML or JSON mapping).

    Raises
    ------
    InvalidInputError
        With one ``<path>: <message>`` line per problem.
    """
    try:
        return ModelExperiment.model_validate(manifest)
    except ValidationError as exc:
        raise InvalidInputError("invalid ModelExperiment:\n  " + "\n  ".join(errors_of(exc))) from None


def load_manifests(path: Path) -> list[ModelExperiment]:
    """Every ModelExperiment in a YAML file (other kinds are skipped), validated."""
    found = []
    with path.open(encoding="utf-8") as handle:
        for doc in yaml.safe_load_all(handle):
            if isinstance(doc, dict) and doc.get("kind") == KIND:
                found.append(validate_manifest(doc))
    return found
