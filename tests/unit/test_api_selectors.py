"""Tests of modelrollout.api.selectors: parsing and rendering PromQL series selectors (pure)."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from modelrollout.api.selectors import Matcher, Selector, parse_selector, quote, regex_literal
from modelrollout.errors import InvalidInputError

pytestmark = pytest.mark.unit

NOT_A_SELECTOR = "not a PromQL series selector"


#: What a pattern built by regex_literal may hold: any character but a backslash, or a backslash
#: before ASCII punctuation, which RE2 (Go's regexp/syntax) and Python's ``re`` both read as the
#: character itself; never a backslash before a letter or digit (``\z``, ``\Q``, ``\x{..}``...
#: mean different things in the two, or nothing).
PORTABLE = re.compile(r"(?:[^\\]|\\[!-/:-@\[-`{-~])*", re.DOTALL)


def m(name: str, op: str, value: str) -> Matcher:
    return Matcher(name, op, value)


# --- parsing ------------------------------------------------------------------------------------


def test_a_metric_name_alone() -> None:
    assert parse_selector("clicks_total") == Selector("clicks_total", ())
    assert parse_selector("job:clicks:rate5m") == Selector("job:clicks:rate5m", ())
    assert parse_selector("clicks_total{}") == Selector("clicks_total", ())


def test_braces_alone() -> None:
    named = Selector(None, (m("__name__", "=", "clicks_total"),))
    assert parse_selector('{__name__="clicks_total"}') == named
    assert parse_selector('{job="ranker"}') == Selector(None, (m("job", "=", "ranker"),))


def test_every_operator_in_order() -> None:
    found = parse_selector('x{a="1", b!="2", c=~"3|4", d!~"5.."}')
    assert found.metric == "x"
    assert found.matchers == (m("a", "=", "1"), m("b", "!=", "2"), m("c", "=~", "3|4"), m("d", "!~", "5.."))


def test_a_trailing_comma_is_allowed() -> None:
    assert parse_selector('x{a="1",}') == Selector("x", (m("a", "=", "1"),))
    assert parse_selector('x{a="1", b="2" , }') == Selector("x", (m("a", "=", "1"), m("b", "=", "2")))


def test_whitespace_anywhere_between_tokens() -> None:
    expected = Selector("x", (m("a", "=", "1"), m("b", "=~", "2")))
    assert parse_selector(' \t x \n{ a = "1" ,\r\n b =~ "2" } \n') == expected
    assert parse_selector('x{a="1",b=~"2"}') == expected


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (r'x{a="b\"c"}', 'b"c'),
        (r"x{a='b\'c'}", "b'c"),
        (r"""x{a='say "hi"'}""", 'say "hi"'),
        (r'x{a="back\\slash"}', "back\\slash"),
        (r'x{a="tab\tnl\ncr\r"}', "tab\tnl\ncr\r"),
        (r'x{a="\a\b\f\v"}', "\a\b\f\v"),
        (r"x{a='\"'}", '"'),
        ("x{a=`raw \\n \\\" kept`}", 'raw \\n \\" kept'),  # no escapes in backquotes
        ("x{a=`two\nlines`}", "two\nlines"),  # a raw string may hold a newline
        ('x{a="é 🙂 }{,"}', "é 🙂 }{,"),
        ('x{a=""}', ""),
    ],
)
def test_the_three_quote_styles_and_their_escapes(text: str, value: str) -> None:
    assert parse_selector(text).matchers == (m("a", "=", value),)


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("sum(x)", 4),
        ('sum(increase(clicks_total{model="v6"}[5m]))', 4),
        ("rate(x[5m])", 5),
        ("x[5m]", 2),
        ("x + y", 3),
        ('x{a="b"} offset 5m', 10),
        ("x @ 100", 3),
        ('{a="b"}{c="d"}', 8),
        ('x{a="b"}}', 9),
    ],
)
def test_expressions_are_refused_at_the_first_character_after_the_selector(text: str, position: int) -> None:
    with pytest.raises(InvalidInputError) as raised:
        parse_selector(text)
    message = str(raised.value)
    assert message.startswith(f"{NOT_A_SELECTOR}: unexpected text after the selector")
    assert f"at character {position} of {text!r}" in message
    assert 'clicks_total{model="{{variant}}"}' in message  # says what to write instead


@pytest.mark.parametrize(
    ("text", "what", "position"),
    [
        ('x{a="b', "unterminated string", 7),
        ("x{a='b}", "unterminated string", 8),
        ("x{a=`b}", "unterminated string", 8),
        ('x{a="b\\"}', "unterminated string", 10),
        pytest.param('x{a="b\nc"}', "newline in a string", 7, marks=pytest.mark.xfail(
            strict=True, reason="nit: the position is the character after the newline")),
        ('x{a="\\q"}', "unsupported escape \\q", 7),
        ('x{a="b" c="d"}', "expected ',' or '}'", 9),
        ('x{a="b"', "expected ',' or '}'", 8),
        ("x{,}", "expected a label name", 3),
        ('x{a="b",,}', "expected a label name", 9),
        ('x{1a="b"}', "expected a label name", 3),
        ("x{a}", "expected one of =, !=, =~, !~", 4),
        ('x{a=="b"}', "expected a quoted string", 5),
        ("x{a=b}", "expected a quoted string", 5),
        ("1x", "expected a metric name or '{'", 1),
    ],
)
def test_errors_say_what_and_where(text: str, what: str, position: int) -> None:
    with pytest.raises(InvalidInputError) as raised:
        parse_selector(text)
    message = str(raised.value)
    assert message.startswith(f"{NOT_A_SELECTOR}: {what}")
    assert message.endswith(f"at character {position} of {text!r}")


def test_a_long_text_is_shortened_in_the_error() -> None:
    text = "x{" + ", ".join(f'label_{i}="value"' for i in range(40)) + "} + 1"
    with pytest.raises(InvalidInputError) as raised:
        parse_selector(text)
    assert text[:197] + "..." in str(raised.value)
    assert text not in str(raised.value)


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_an_empty_selector_is_refused(text: str) -> None:
    with pytest.raises(InvalidInputError, match="it is empty"):
        parse_selector(text)


@pytest.mark.parametrize("text", ['{a=""}', '{a=~".*"}', '{a!="b"}', '{a!~"b"}', '{a="", b=~"x*"}', "{}",
                                  '{__name__=""}'])
def test_a_selector_that_selects_nothing_is_refused(text: str) -> None:
    with pytest.raises(InvalidInputError, match="needs a metric name or a label matcher that does not match"):
        parse_selector(text)


@pytest.mark.parametrize("text", ['{a=~".+"}', '{a!="", b="x"}', 'x{a=""}', '{__name__=~"clicks_.*"}'])
def test_one_matcher_that_cannot_match_empty_is_enough(text: str) -> None:
    assert isinstance(parse_selector(text), Selector)


@given(st.text(max_size=40))
def test_any_text_parses_or_is_refused_with_invalid_input(text: str) -> None:
    try:
        found = parse_selector(text)
    except InvalidInputError:
        return
    assert parse_selector(found.render()) == found


@pytest.mark.parametrize(("text", "regex"), [('x{a=~"("}', "("), ('x{a!~"[a-"}', "[a-"),
                                             ('x{a=~"a{99999999999}"}', "a{99999999999}")])
def test_regular_expressions_are_left_to_prometheus(text: str, regex: str) -> None:
    # RE2 is not Python's re: an invalid regex is Prometheus's to report (PrometheusProvider.check),
    # and no error of Python's re (re.error, OverflowError) escapes
    (found,) = parse_selector(text).matchers
    assert (found.name, found.value) == ("a", regex)


@pytest.mark.parametrize("regex", ["(", "[a-", "a{99999999999}", r"\pL+"])
def test_a_regex_python_cannot_read_may_match_empty(regex: str) -> None:
    # without a metric name, such a matcher is not enough to select something: refused, not raised
    with pytest.raises(InvalidInputError, match="needs a metric name or a label matcher"):
        parse_selector(f'{{a=~"{quote(regex)}"}}')
    with_name = parse_selector(f'{{a=~"{quote(regex)}", b="x"}}')
    assert with_name.matchers == (m("a", "=~", regex), m("b", "=", "x"))


# --- rendering ----------------------------------------------------------------------------------


def test_render_puts_the_matchers_in_their_order_in_double_quotes() -> None:
    selector = Selector("x", (m("b", "=", "2"), m("a", "!~", "1|3")))
    assert selector.render() == 'x{b="2", a!~"1|3"}'
    assert Selector(None, (m("a", "=", "b"),)).render() == '{a="b"}'
    assert Selector("x", ()).render() == "x"
    assert parse_selector(r"x{a='it\'s'}").render() == 'x{a="it\'s"}'


def test_quote_escapes_what_a_double_quoted_string_cannot_hold() -> None:
    assert quote('a"b\\c\nd\te\rf') == 'a\\"b\\\\c\\nd\\te\\rf'
    assert quote("plain-value_1.0") == "plain-value_1.0"


def test_with_matcher_replaces_or_appends() -> None:
    selector = parse_selector('x{a="1", b="2"}')
    assert selector.with_matcher(m("a", "=~", "1|9"), 0).render() == 'x{a=~"1|9", b="2"}'
    assert selector.with_matcher(m("c", "!=", "3")).render() == 'x{a="1", b="2", c!="3"}'
    assert selector.render() == 'x{a="1", b="2"}'  # unchanged


METRIC_NAMES = st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,12}", fullmatch=True)
LABEL_NAMES = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,12}", fullmatch=True)
REGEXES = st.one_of(
    st.sampled_from(["5..", ".*", ".+", "a|b", "[0-9]+", "x(y)?z", "ranker-v6|ranker-v7"]),
    st.text(max_size=10).map(re.escape),
    st.text(max_size=10).map(regex_literal),
)


@st.composite
def matchers(draw: st.DrawFn) -> Matcher:
    op = draw(st.sampled_from(["=", "!=", "=~", "!~"]))
    value = draw(REGEXES if op.endswith("~") else st.text(max_size=12))
    return Matcher(draw(LABEL_NAMES), op, value)


@st.composite
def selectors(draw: st.DrawFn) -> Selector:
    metric = draw(st.none() | METRIC_NAMES)
    found = tuple(draw(st.lists(matchers(), max_size=4)))
    if metric is None:  # something must select: a matcher that does not match ""
        found = (Matcher(draw(LABEL_NAMES), "=", draw(st.text(min_size=1, max_size=8))), *found)
    return Selector(metric, found)


@given(selectors())
def test_parse_of_render_is_the_selector(selector: Selector) -> None:
    rendered = selector.render()
    assert parse_selector(rendered) == selector
    assert parse_selector(rendered).render() == rendered


@given(selectors(), st.sampled_from(["'", "`"]))
def test_other_quotes_parse_to_the_same_selector(selector: Selector, mark: str) -> None:
    simple = Selector(selector.metric, tuple(
        Matcher(x.name, x.op, x.value) for x in selector.matchers
        if quote(x.value) == x.value and mark not in x.value
    ))
    assume(simple.metric is not None or any(x.op == "=" and x.value for x in simple.matchers))
    text = simple.render().replace('"', mark)
    assert parse_selector(text) == simple


# --- regex_literal ------------------------------------------------------------------------------

AWKWARD = ["500.0", "3.6e+06", "ranker-v6.app", "a|b", "x+y*z?", "(x)", "[x]", "{1,2}", "^$", "a\\b", "é",
           "日本", "🙂", "\n", "\t", "\x00", "a b", "-_/:@,;<>=!%&~#", '"', "'", "`", ".*", ""]


@pytest.mark.parametrize("value", AWKWARD)
def test_regex_literal_matches_exactly_its_value(value: str) -> None:
    pattern = re.compile(regex_literal(value))
    assert pattern.fullmatch(value) is not None
    for other in {value + "x", "x" + value, value[:-1], value.upper() if value.islower() else "Z", "."}:
        if other != value:
            assert pattern.fullmatch(other) is None, other


@given(st.text(max_size=12), st.text(max_size=12))
def test_regex_literal_matches_nothing_else(value: str, other: str) -> None:
    pattern = re.compile(regex_literal(value))
    assert (pattern.fullmatch(other) is not None) == (other == value)


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        ("ranker-v6.app", r"ranker\-v6\.app"),
        ("500.0", r"500\.0"),
        ("3.6e+06", r"3\.6e\+06"),
        ("a|b", r"a\|b"),
        ("a\\b", r"a\\b"),
        ("v7_x", "v7_x"),  # letters, digits and _ stay
        ("é日🙂 \t", "é日🙂 \t"),  # so does everything that is not ASCII punctuation
    ],
)
def test_regex_literal_escapes_ascii_punctuation_with_a_backslash(value: str, pattern: str) -> None:
    assert regex_literal(value) == pattern


@given(st.text(max_size=20))
def test_regex_literal_writes_only_escapes_that_re2_and_python_read_alike(value: str) -> None:
    found = regex_literal(value)
    assert PORTABLE.fullmatch(found), found
    assert re.fullmatch(found, value) is not None  # Python's re reads it (variant_of, check_selects)


@given(st.text(max_size=12))
def test_a_rendered_regex_literal_parses_again(value: str) -> None:
    selector = Selector("x", (Matcher("le", "=~", regex_literal(value)),))
    assert parse_selector(selector.render()) == selector
    if value:  # it cannot match the empty string, so it selects something on its own
        alone = Selector(None, selector.matchers)
        assert parse_selector(alone.render()) == alone


@pytest.mark.parametrize("regex", [r"\pL+", r"v\z", r"v\x{37}", r"(?i)v7", r"[[:alpha:]]+", r"\Q.\E"])
def test_re2_syntax_that_prometheus_accepts_parses(regex: str) -> None:
    assert parse_selector(f'x{{a=~"{quote(regex)}"}}').matchers == (m("a", "=~", regex),)
