"""Counter selectors: the PromQL series selectors that a metric's fields are counted from.

Every field of a metric (``successes``, ``trials``, ``count``, ...) names the **counter series**
it is counted from, as a PromQL vector selector with placeholders::

    clicks_total{namespace="{{namespace}}", model="{{variant}}"}

The operator reads the raw samples of every series the selector matches and counts each series'
increments exactly, with counter resets handled per series (:mod:`modelrollout.metrics.counting`).
That is why a field is a selector and not an arbitrary expression: an expression such as
``sum(increase(x[5m]))`` is already an extrapolated estimate, while the raw samples of ``x`` are
the counts themselves.

The grammar is PromQL's (https://prometheus.io/docs/prometheus/latest/querying/basics/)::

    selector := metric_name | metric_name? "{" [matcher ("," matcher)* [","]] "}"
    matcher  := label_name ("=" | "!=" | "=~" | "!~") string
    string   := "..." | '...' | `...`        (Go escapes in the quoted forms)

This module parses and renders selectors; it does no I/O. It does not check regular expressions:
they are RE2, which Python's ``re`` does not read exactly; Prometheus checks them (the operator's
check of every selector, :meth:`modelrollout.metrics.prometheus.PrometheusProvider.check`).
:func:`parse_selector` raises
:class:`~modelrollout.errors.InvalidInputError` with the position of the first error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from modelrollout.errors import InvalidInputError

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_OPERATORS: Final = ("=~", "!~", "!=", "=")
_ESCAPES: Final = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "r": "\r", "a": "\a",
                   "b": "\b", "f": "\f", "v": "\v"}
#: ASCII punctuation, escaped with a backslash in a regular expression built from a literal value
#: (RE2 and Python read such an escape as the character itself).
_PUNCTUATION = frozenset("""!"#$%&'()*+,-./:;<=>?@[\\]^`{|}~""")


@dataclass(frozen=True)
class Matcher:
    """One label matcher: ``name op "value"`` (the value unescaped)."""

    name: str
    op: str
    value: str

    def render(self) -> str:
        return f'{self.name}{self.op}"{quote(self.value)}"'


@dataclass(frozen=True)
class Selector:
    """A parsed vector selector: an optional metric name and its label matchers, in order."""

    metric: str | None
    matchers: tuple[Matcher, ...]

    def render(self) -> str:
        """The selector as PromQL (``name{a="b"}``); matchers in their order, values re-quoted."""
        inner = ", ".join(m.render() for m in self.matchers)
        if self.metric is None:
            return "{" + inner + "}"
        return self.metric if not inner else f"{self.metric}{{{inner}}}"

    def with_matcher(self, matcher: Matcher, at: int | None = None) -> Selector:
        """A copy with ``matcher`` replacing the matcher at index ``at`` (or appended)."""
        matchers = list(self.matchers)
        if at is None:
            matchers.append(matcher)
        else:
            matchers[at] = matcher
        return Selector(self.metric, tuple(matchers))

    def check_selects(self) -> None:
        """Raise unless the selector can select anything: PromQL needs a metric name or a matcher
        that does not match the empty string."""
        if self.metric is not None:
            return
        for m in self.matchers:
            if m.name == "__name__" and m.op == "=" and m.value:
                return
            if m.op == "=" and m.value:
                return
            if m.op == "=~" and not _matches_empty(m.value):
                return
        raise InvalidInputError(
            "the selector needs a metric name or a label matcher that does not match the empty string"
        )


def _matches_empty(pattern: str) -> bool:
    """Whether ``pattern`` matches the empty string; True when Python cannot tell (RE2 syntax that
    Python lacks: Prometheus checks the regex itself)."""
    try:
        return re.fullmatch(pattern, "") is not None
    except (re.error, OverflowError, RecursionError):
        return True


def quote(value: str) -> str:
    """``value`` escaped for a double-quoted PromQL string."""
    return (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
        .replace("\r", "\\r")
    )


def regex_literal(value: str) -> str:
    """A regular expression that matches exactly ``value``, in RE2 (Prometheus) and Python alike."""
    return "".join(f"\\{c}" if c in _PUNCTUATION else c for c in value)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> InvalidInputError:
        shown = self.text if len(self.text) <= 200 else self.text[:197] + "..."
        return InvalidInputError(
            f"not a PromQL series selector: {what} at character {self.pos + 1} of {shown!r}"
        )

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def name(self, pattern: re.Pattern[str], what: str) -> str:
        found = pattern.match(self.text, self.pos)
        if found is None:
            raise self.fail(f"expected {what}")
        self.pos = found.end()
        return found.group(0)

    def string(self) -> str:
        quote_char = self.peek()
        if quote_char not in ('"', "'", "`"):
            raise self.fail("expected a quoted string")
        self.pos += 1
        out: list[str] = []
        while True:
            if self.pos >= len(self.text):
                raise self.fail("unterminated string")
            c = self.text[self.pos]
            self.pos += 1
            if c == quote_char:
                return "".join(out)
            if c == "\\" and quote_char != "`":
                escaped = self.peek()
                if escaped not in _ESCAPES:
                    raise self.fail(f"unsupported escape \\{escaped}")
                out.append(_ESCAPES[escaped])
                self.pos += 1
                continue
            if c == "\n" and quote_char != "`":
                raise self.fail("newline in a string")
            out.append(c)

    def operator(self) -> str:
        for op in _OPERATORS:
            if self.text.startswith(op, self.pos):
                self.pos += len(op)
                return op
        raise self.fail("expected one of =, !=, =~, !~")

    def matchers(self) -> tuple[Matcher, ...]:
        out: list[Matcher] = []
        self.pos += 1  # "{"
        while True:
            self.skip_space()
            if self.peek() == "}":
                self.pos += 1
                return tuple(out)
            label = self.name(_LABEL_NAME, "a label name")
            self.skip_space()
            op = self.operator()
            self.skip_space()
            value = self.string()
            out.append(Matcher(label, op, value))
            self.skip_space()
            if self.peek() == ",":
                self.pos += 1
            elif self.peek() != "}":
                raise self.fail("expected ',' or '}'")

    def selector(self) -> Selector:
        self.skip_space()
        metric = None
        if self.peek() != "{":
            metric = self.name(_METRIC_NAME, "a metric name or '{'")
            self.skip_space()
        matchers: tuple[Matcher, ...] = ()
        if self.peek() == "{":
            matchers = self.matchers()
        self.skip_space()
        if self.pos != len(self.text):
            raise self.fail("unexpected text after the selector (a field is one counter selector, "
                            "not an expression: write clicks_total{model=\"{{variant}}\"})")
        return Selector(metric, matchers)


def parse_selector(text: str) -> Selector:
    """Parse a PromQL vector selector (no range, offset or ``@``); raise on anything else."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError("not a PromQL series selector: it is empty")
    selector = _Parser(text).selector()
    selector.check_selects()
    return selector
