"""Scalar types of the API: durations, Kubernetes names, URLs and counter selector templates.

Each type is an ``Annotated`` string whose constraints show up in the CRD (``maxLength``, which
also bounds the cost of CEL rules) and whose format checks are :class:`~modelrollout.api._rules.SpecRule` s,
so Python and the apiserver reject the same values with the same message.

Durations
---------
A duration is a string of one or more ``<integer><unit>`` parts, units ``ms``, ``s``, ``m``, ``h``
and ``d`` (24 h), for example ``30s``, ``15m``, ``1h30m`` or ``14d``. Parts are added, so ``90s``
and ``1m30s`` are the same duration. The pattern is :data:`DURATION_PATTERN`;
:func:`parse_duration` turns one into a :class:`datetime.timedelta`.

Templates
---------
A metric's fields are counter series selectors with two placeholders that the operator fills in:

``{{variant}}``
    the variant's name (``spec.champion.name`` or a challenger's name); required in every field,
    since each variant needs its own series;
``{{namespace}}``
    the experiment's namespace.

The operator counts the raw samples of every series the selector matches, exactly (see
:mod:`modelrollout.api.selectors` and :mod:`modelrollout.metrics.counting`), so there is no
``{{window}}``: a field is never an aggregate over a range.
Any other ``{{...}}`` is rejected.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Final

from pydantic import AfterValidator, Field

from modelrollout.api._rules import Cel, SpecRule, regex_rule
from modelrollout.errors import InvalidInputError

# --- durations ---------------------------------------------------------------------------------

_DURATION_BODY = "([0-9]+(ms|s|m|h|d))+"
#: The pattern every duration matches (RE2 and Python alike).
DURATION_PATTERN: Final = f"^{_DURATION_BODY}$"
_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h|d)")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_MAX_DURATION_LENGTH = 32


def parse_duration(text: str) -> timedelta:
    """Parse an API duration such as ``30s``, ``15m``, ``1h30m`` or ``14d``.

    Parameters
    ----------
    text : str
        One or more ``<integer><unit>`` parts, units ``ms``, ``s``, ``m``, ``h``, ``d``; the parts
        are added.

    Returns
    -------
    datetime.timedelta

    Raises
    ------
    InvalidInputError
        When ``text`` is not a duration or is too long to represent.
    """
    if not isinstance(text, str) or re.fullmatch(_DURATION_BODY, text) is None:
        raise InvalidInputError(
            f"duration must look like 30s, 15m, 1h30m or 14d (units ms, s, m, h, d), got {text!r}"
        )
    milliseconds = 0
    for amount, unit in _DURATION_PART.findall(text):
        milliseconds += int(amount) * round(_UNIT_SECONDS[unit] * 1000)
    try:
        return timedelta(milliseconds=milliseconds)
    except OverflowError as exc:
        raise InvalidInputError(f"duration {text!r} is too long") from exc


def format_duration(value: timedelta) -> str:
    """The shortest API duration for a non-negative ``value`` (whole milliseconds).

    ``format_duration(parse_duration(s))`` is the canonical form of ``s``; ``parse_duration`` of the
    result gives ``value`` back (to the millisecond).
    """
    milliseconds = round(value.total_seconds() * 1000)
    if milliseconds < 0:
        raise InvalidInputError(f"duration must not be negative, got {value!r}")
    if milliseconds == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        amount, milliseconds = divmod(milliseconds, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)


def _representable(text: str) -> str:
    """Pass ``text`` through if it fits a timedelta (a check CEL cannot make)."""
    try:
        parse_duration(text)
    except InvalidInputError as exc:
        raise ValueError(str(exc)) from None
    return text


_DURATION_RULE = SpecRule(
    cel=f"self.matches('^{_DURATION_BODY}$')",
    message="must be a duration such as 30s, 15m, 1h30m or 14d (units ms, s, m, h, d)",
    check=lambda value: re.fullmatch(_DURATION_BODY, value) is not None,
)
_POSITIVE_RULE = SpecRule(
    cel="!self.matches('^(0+(ms|s|m|h|d))+$')",
    message="must be longer than zero",
    check=lambda value: re.fullmatch("(0+(ms|s|m|h|d))+", value) is None,
)

def cel_duration_ms(field: str) -> str:
    """A CEL expression: the duration string ``field`` (``self.minDuration``) in milliseconds.

    CEL's own ``duration()`` knows no ``d``, so the parts are summed one by one: ``findAll`` (the
    Kubernetes regex library) splits ``1d12h`` into ``1d`` and ``12h``, each becomes an int, and
    ``sum()`` (the Kubernetes list library) adds them. ``ms`` is tested before ``s`` and ``m``.
    """
    part = "p"
    size = f"{part}.size()"

    def amount(unit_length: int) -> str:
        return f"int({part}.substring(0, {size} - {unit_length}))"

    scaled = (
        f"{part}.endsWith('ms') ? {amount(2)} : "
        f"{part}.endsWith('s') ? {amount(1)} * 1000 : "
        f"{part}.endsWith('m') ? {amount(1)} * 60000 : "
        f"{part}.endsWith('h') ? {amount(1)} * 3600000 : "
        f"{amount(1)} * 86400000"
    )
    return f"{field}.findAll('[0-9]+(ms|s|m|h|d)').map({part}, {scaled}).sum()"


def duration_ms(text: str) -> int:
    """:func:`parse_duration` in whole milliseconds: what :func:`cel_duration_ms` computes in CEL."""
    return sum(int(a) * round(_UNIT_SECONDS[u] * 1000) for a, u in _DURATION_PART.findall(text))


#: A duration, zero allowed (see :func:`parse_duration`).
Duration = Annotated[
    str,
    Field(min_length=2, max_length=_MAX_DURATION_LENGTH),
    Cel((_DURATION_RULE,)),
    AfterValidator(_representable),
]
#: A duration longer than zero.
PositiveDuration = Annotated[
    str,
    Field(min_length=2, max_length=_MAX_DURATION_LENGTH),
    Cel((_DURATION_RULE, _POSITIVE_RULE)),
    AfterValidator(_representable),
]


# --- names -------------------------------------------------------------------------------------

_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = f"{_LABEL}([.]{_LABEL})*"

#: A DNS label (RFC 1123): variant, metric, guardrail and notification names.
DNSLabel = Annotated[
    str,
    Field(min_length=1, max_length=63),
    Cel(
        (
            regex_rule(
                _LABEL,
                "must be a DNS label: lowercase letters, digits and '-', "
                "starting and ending with a letter or digit",
            ),
        )
    ),
]
#: The name of a Kubernetes Service (a DNS-1035 label: starts with a letter).
ServiceName = Annotated[
    str,
    Field(min_length=1, max_length=63),
    Cel(
        (
            regex_rule(
                "[a-z]([-a-z0-9]*[a-z0-9])?",
                "must be a Service name: lowercase letters, "
                "digits and '-', starting with a letter and ending with a letter or digit",
            ),
        )
    ),
]
#: The name of a namespaced object (a DNS subdomain): Deployment, VirtualService, HTTPRoute, Secret.
ResourceName = Annotated[
    str,
    Field(min_length=1, max_length=253),
    Cel((regex_rule(_SUBDOMAIN, "must be a Kubernetes object name: lowercase DNS labels joined by '.'"),)),
]
#: A key in a Secret or a ConfigMap.
DataKey = Annotated[
    str,
    Field(min_length=1, max_length=253),
    Cel(
        (
            regex_rule(
                "[-._a-zA-Z0-9]+", "must be a Secret or ConfigMap key: letters, digits, '-', '_' and '.'"
            ),
        )
    ),
]
#: A lowercase HTTP header name.
HeaderName = Annotated[
    str,
    Field(min_length=1, max_length=128),
    Cel((regex_rule("[a-z0-9]([-_.a-z0-9]*[a-z0-9])?", "must be a lowercase HTTP header name"),)),
]
#: A Prometheus label name (not ``le``, which belongs to histograms, nor a reserved ``__`` name).
LabelName = Annotated[
    str,
    Field(min_length=1, max_length=128),
    Cel(
        (
            regex_rule("[a-zA-Z_][a-zA-Z0-9_]*", "must be a Prometheus label name"),
            SpecRule(
                cel="self != 'le' && !self.startsWith('__')",
                message="must not be le or start with __",
                check=lambda value: value != "le" and not value.startswith("__"),
            ),
        )
    ),
]
#: A value of a segment label: what the operator names in its status, Events and messages.
LabelValue = Annotated[
    str,
    Field(min_length=1, max_length=63),
    Cel((regex_rule("[A-Za-z0-9]([-_.:/@+A-Za-z0-9]*[A-Za-z0-9])?", "must be a short label value"),)),
]
#: An ``http://`` or ``https://`` URL.
Url = Annotated[
    str,
    Field(min_length=8, max_length=2048),
    Cel((regex_rule("https?://[^ ]+", "must be an http:// or https:// URL without spaces"),)),
]
#: The name of an Istio HTTP route or of a Gateway API rule.
RouteName = Annotated[str, Field(min_length=1, max_length=253)]

# --- counter selector templates ------------------------------------------------------------------

#: The placeholders a counter selector template may use.
PLACEHOLDERS: Final = ("{{variant}}", "{{namespace}}")
_MAX_TEMPLATE_LENGTH = 4096
#: The shape of a series selector: an optional metric name, then optional label matchers in braces
#: (the operator parses it fully, see :mod:`modelrollout.api.selectors`). RE2 and Python alike.
_SELECTOR_SHAPE = (
    r"[ \t\r\n]*([a-zA-Z_:][a-zA-Z0-9_:]*)?[ \t\r\n]*"
    r"([{][^{}]*([{][{](variant|namespace)[}][}][^{}]*)*[}])?[ \t\r\n]*"
)


def _without_placeholders(template: str) -> str:
    for placeholder in PLACEHOLDERS:
        template = template.replace(placeholder, "")
    return template


def render_template(template: str, *, variant: str, namespace: str) -> str:
    """Fill in a counter selector template's placeholders.

    Parameters
    ----------
    template : str
        A counter selector template (see the module docstring).
    variant, namespace : str
        The variant's name and the experiment's namespace.
    """
    return template.replace("{{variant}}", variant).replace("{{namespace}}", namespace)


_STRIP = "".join(f".replace('{p}', '')" for p in PLACEHOLDERS)
_SHAPE = re.compile(_SELECTOR_SHAPE)
_TEMPLATE_RULES = (
    SpecRule(
        cel="!self.contains('{{window}}')",
        message="a field is a counter selector that the operator counts exactly, without {{window}}: "
        'write clicks_total{model="{{variant}}"}, not sum(increase(clicks_total{...}[{{window}}]))',
        check=lambda value: "{{window}}" not in value,
    ),
    SpecRule(
        cel="self.contains('{{variant}}')",
        message="the selector must select one variant with {{variant}}",
        check=lambda value: "{{variant}}" in value,
    ),
    SpecRule(
        cel=f"!self{_STRIP}.contains('{{{{')",
        message="unknown placeholder: only {{variant}} and {{namespace}} are allowed",
        check=lambda value: "{{" not in _without_placeholders(value),
    ),
    SpecRule(
        cel=f"self.matches('^{_SELECTOR_SHAPE}$')",
        message='must be a series selector of counters, a metric name and label matchers such as '
        'clicks_total{model="{{variant}}"}, not an expression',
        check=lambda value: _SHAPE.fullmatch(value) is not None,
    ),
)

#: A template of a counter series selector (see the module docstring).
CounterSelectorTemplate = Annotated[
    str,
    Field(min_length=1, max_length=_MAX_TEMPLATE_LENGTH),
    Cel(_TEMPLATE_RULES),
]
