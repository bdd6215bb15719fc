"""Validation rules written once and enforced twice: by pydantic in Python and by CEL in the apiserver.

A :class:`SpecRule` carries a CEL expression (rendered into the CRD as ``x-kubernetes-validations``),
the same check as a Python predicate, the message, and the field it is about. Rules live in two
places:

* on a model (``cel_rules`` of a :class:`SpecModel` subclass): cross-field checks. The apiserver
  reports them at ``<object path><field_path>``; :meth:`SpecModel._check_cel_rules` reports them
  at the same path, with the same message, through a :class:`pydantic_core.PydanticCustomError` of
  type ``cel_rule`` whose context lists every failed rule;
* on a scalar type, with the :class:`Cel` annotation (``Annotated[str, Cel(rule, ...)]``): format
  checks of a single value, reported at the value's own path in both worlds.

Only the Python predicates are evaluated here; the CEL expressions are exercised against a real
kube-apiserver by the integration tests, with the same table of bad manifests that the unit tests
run through the Python side.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

#: Error type of a failed model-level rule; its context holds ``failures``.
RULE_ERROR = "cel_rule"
#: Error type of a failed type-level rule; its context holds ``reason``.
VALUE_RULE_ERROR = "cel_value_rule"
#: Error type of a repeated key in a list; its context holds ``index`` (of the repeat).
DUPLICATE_ERROR = "duplicate_key"


class Reason(StrEnum):
    """The ``reason`` of a CEL rule, which sets the apiserver's wording of the error.

    ``FieldValueDuplicate`` is left out on purpose: the apiserver drops the message with it.
    """

    INVALID = "FieldValueInvalid"
    REQUIRED = "FieldValueRequired"
    FORBIDDEN = "FieldValueForbidden"


@dataclass(frozen=True)
class SpecRule:
    """One validation rule: a CEL expression and the equivalent Python predicate.

    Attributes
    ----------
    cel : str
        The CEL expression; ``self`` is the object (or value) the rule is attached to. It must
        hold for a valid object.
    message : str
        The error message, identical in Python and in the apiserver.
    check : callable
        The Python predicate on the model instance (or the value); True when valid.
    field_path : str, optional
        The field the message is about, relative to the object (``.steps``); reported in both
        worlds as the error's path. ``None`` reports the object itself.
    reason : Reason
        How the apiserver words the error (Invalid, Required or Forbidden value).
    """

    cel: str
    message: str
    check: Callable[[Any], bool]
    field_path: str | None = None
    reason: Reason = Reason.INVALID

    def validation(self) -> dict[str, str]:
        """The rule as an entry of ``x-kubernetes-validations``."""
        entry = {"rule": self.cel, "message": self.message}
        if self.field_path is not None:
            entry["fieldPath"] = self.field_path
        if self.reason is not Reason.INVALID:
            entry["reason"] = self.reason.value
        return entry


def regex_rule(body: str, message: str) -> SpecRule:
    """A type-level rule that the whole string matches the RE2/Python regex ``body`` (no anchors)."""
    compiled = re.compile(body)
    return SpecRule(
        cel=f"self.matches('^{body}$')",
        message=message,
        check=lambda value: compiled.fullmatch(value) is not None,
    )


def any_set(names: Iterable[str], obj: str = "self") -> str:
    """CEL: at least one of the optional fields ``names`` of ``obj`` is set."""
    return " || ".join(f"has({obj}.{name})" for name in names)


def all_set(names: Iterable[str], obj: str = "self") -> str:
    """CEL: every optional field ``names`` of ``obj`` is set."""
    return " && ".join(f"has({obj}.{name})" for name in names)


def cel_list(values: Iterable[str]) -> str:
    """A CEL list literal of strings."""
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def api_config(*, frozen: bool, extra: Literal["forbid", "ignore"] = "forbid") -> ConfigDict:
    """The configuration shared by the API models: camelCase aliases, finite numbers only."""
    return ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        allow_inf_nan=False,
        extra=extra,
        frozen=frozen,
    )


class ApiModel(BaseModel):
    """Base of every API model: camelCase aliases, finite numbers, and the model-level CEL rules."""

    model_config = api_config(frozen=False)

    #: Cross-field rules of this class (rules of base classes apply too).
    cel_rules: ClassVar[tuple[SpecRule, ...]] = ()

    @classmethod
    def all_cel_rules(cls) -> tuple[SpecRule, ...]:
        """The rules of this class and of its API base classes, base classes first."""
        rules: list[SpecRule] = []
        for klass in reversed(cls.__mro__):
            own = klass.__dict__.get("cel_rules")
            if own:
                rules.extend(own)
        return tuple(rules)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        target = handler.resolve_ref_schema(json_schema)
        rules = cls.all_cel_rules()
        if rules:
            target["x-kubernetes-validations"] = [rule.validation() for rule in rules]
        return json_schema

    @model_validator(mode="after")
    def _check_cel_rules(self) -> ApiModel:
        failures = [
            {"field_path": rule.field_path or "", "message": rule.message, "reason": rule.reason.value}
            for rule in self.all_cel_rules()
            if not rule.check(self)
        ]
        if failures:
            text = "; ".join(f"{f['field_path'] or '.'}: {f['message']}" for f in failures)
            raise PydanticCustomError(RULE_ERROR, "{text}", {"text": text, "failures": failures})
        return self


class SpecModel(ApiModel):
    """Base of the spec models: immutable, unknown fields are errors (typos fail in Python too)."""

    model_config = api_config(frozen=True)


class StatusModel(ApiModel):
    """Base of the status models: mutable (the policy builds the next status), unknown fields are errors."""

    model_config = api_config(frozen=False)


@dataclass(frozen=True)
class Cel:
    """``Annotated`` marker that validates a scalar with :class:`SpecRule` s, in Python and in the CRD.

    In Python the first failed rule raises a ``cel_value_rule`` error at the value's path; in the
    CRD every rule becomes an ``x-kubernetes-validations`` entry on the value's schema.
    """

    rules: tuple[SpecRule, ...]

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._validate, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema.setdefault("x-kubernetes-validations", []).extend(r.validation() for r in self.rules)
        return json_schema

    def _validate(self, value: Any) -> Any:
        for rule in self.rules:
            if not rule.check(value):
                raise PydanticCustomError(
                    VALUE_RULE_ERROR, "{message}", {"message": rule.message, "reason": rule.reason.value}
                )
        return value


def unique(key: Callable[[Any], object], message: str) -> AfterValidator:
    """Validator of a list whose items' ``key`` must be unique, reported at the first repeat.

    The CRD enforces the same with ``x-kubernetes-list-type: map`` (or ``set``); the apiserver then
    reports ``<list>[<index>]: Duplicate value``.
    """

    def check(items: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
        seen: set[object] = set()
        for index, item in enumerate(items or ()):
            value = key(item)
            if value in seen:
                raise PydanticCustomError(DUPLICATE_ERROR, "{message}", {"message": message, "index": index})
            seen.add(value)
        return items

    return AfterValidator(check)
