"""The segment filter language: tokens, the tree, and every error naming its text and position (pure)."""

from __future__ import annotations

from datetime import date

import pytest

from newsletter.errors import InvalidInput
from subscribers.segments import (
    All,
    AnyOf,
    Compare,
    Engaged,
    Not,
    SegmentError,
    Subscribed,
    check,
    check_name,
    parse,
    tokenize,
)

EXAMPLE = (
    'domain = "gmail.com" and attribute.plan in ("pro", "team") and not name contains "test" '
    'and subscribed after 2026-01-01 and source = "import" and engaged in last 3 sends'
)


def test_tokens_carry_kind_value_and_position():
    source = 'attribute.Plan != "a \\"b\\"" and subscribed before 2026-02-03 or (x)'
    tokens = tokenize(source)
    assert [(t.kind, t.value) for t in tokens] == [
        ("word", "attribute.plan"),
        ("op", "!="),
        ("string", 'a "b"'),
        ("word", "and"),
        ("word", "subscribed"),
        ("word", "before"),
        ("date", "2026-02-03"),
        ("word", "or"),
        ("op", "("),
        ("word", "x"),
        ("op", ")"),
        ("end", ""),
    ]
    assert all(source[t.position :].startswith(t.text) for t in tokens)
    assert [t.position for t in tokens][:4] == [0, 15, 18, 28] and tokens[-1].position == len(source)
    assert tokens[0].text == "attribute.Plan"  # the attribute's name keeps its case


def test_the_example_parses_to_its_tree():
    assert parse(EXAMPLE) == All(
        (
            Compare("domain", None, "=", ("gmail.com",), 0),
            Compare("attribute", "plan", "in", ("pro", "team"), EXAMPLE.index("attribute")),
            Not(Compare("name", None, "contains", ("test",), EXAMPLE.index("name"))),
            Subscribed("after", date(2026, 1, 1), EXAMPLE.index("subscribed")),
            Compare("source", None, "=", ("import",), EXAMPLE.index("source")),
            Engaged("engaged", 3, EXAMPLE.index("engaged"), "engaged in last 3 sends"),
        )
    )


@pytest.mark.parametrize(
    ("source", "tree"),
    [
        ('email = "A@x.org"', Compare("email", None, "=", ("A@x.org",), 0)),
        ('name != "Ann"', Compare("name", None, "!=", ("Ann",), 0)),
        ('source in ("form", "api")', Compare("source", None, "in", ("form", "api"), 0)),
        ('domain contains "mail"', Compare("domain", None, "contains", ("mail",), 0)),
        ("subscribed before 2025-12-31", Subscribed("before", date(2025, 12, 31), 0)),
        ("opened in last 1 send", Engaged("opened", 1, 0, "opened in last 1 send")),
        ("CLICKED In LAST 10 SENDS", Engaged("clicked", 10, 0, "CLICKED In LAST 10 SENDS")),
        ('not not name = "a"', Not(Not(Compare("name", None, "=", ("a",), 8)))),
    ],
)
def test_each_operator(source, tree):
    assert parse(source) == tree


def test_not_binds_tighter_than_and_which_binds_tighter_than_or_and_parentheses_group():
    def name(value: str, position: int) -> Compare:
        return Compare("name", None, "=", (value,), position)

    assert parse('name = "a" or name = "b" and name = "c"') == AnyOf(
        (name("a", 0), All((name("b", 14), name("c", 29))))
    )
    assert parse('(name = "a" or name = "b") and not name = "c"') == All(
        (AnyOf((name("a", 1), name("b", 15))), Not(name("c", 35)))
    )


@pytest.mark.parametrize(
    ("source", "reason", "text", "position"),
    [
        ("", "the filter is empty", "", 0),
        ('name = "x', "a string is not closed", '"x', 7),
        ('name = "x" & y', "unexpected character", "&", 11),
        ("subscribed after 2026-02-30", "not a date", "2026-02-30", 17),
        ('colour = "red"', "unknown field", "colour", 0),
        ('attribute = "x"', "name the attribute", "attribute", 0),
        ('name "x"', "expected =, !=, in or contains", '"x"', 5),
        ("name = x", "expected a value in double quotes", "x", 7),
        ('name in "a"', "expected ( to open the list of values", '"a"', 8),
        ('name in ("a" "b")', "expected , or ) after a value", '"b"', 13),
        ('name = "a" and', "the filter ends where a condition should follow", "", 14),
        ('name = "a" name = "b"', "expected and, or, or the end of the filter", "name", 11),
        ('(name = "a"', "expected ) to close the (", "", 11),
        ("subscribed 2026-01-01", "expected before or after", "2026-01-01", 11),
        ("subscribed after soon", "expected a date", "soon", 17),
        ("engaged last 3 sends", "expected in", "last", 8),
        ("engaged in 3 sends", "expected last", "3", 11),
        ("engaged in last 0 sends", "expected a number of sends from 1 to 1000", "0", 16),
        ("engaged in last 3 mails", "expected sends", "mails", 18),
        ('= "x"', "expected a condition", "=", 0),
        ('name = "a\x00"', "a NUL character or lone surrogate", "\\x00", 9),
        ("subscribed after 9999-12-31", "no day comes after 9999-12-31", "9999-12-31", 17),
        ("engaged in last \u0663 sends", "unexpected character", "\u0663", 16),  # an Arabic-Indic 3: digits are 0-9
    ],
)
def test_each_error_names_the_bad_part_and_where_it_is(source, reason, text, position):
    with pytest.raises(SegmentError) as caught:
        parse(source)
    error = caught.value
    assert error.reason.startswith(reason), error.reason
    assert (error.text, error.position) == (text, position)
    assert isinstance(error, InvalidInput) and error.where == "filter"
    assert f"at character {position + 1}" in str(error)
    assert error.as_json()["position"] == position


@pytest.mark.parametrize("opening", ["(", "not "])
def test_nesting_stops_at_its_depth_with_an_error_not_a_crash(opening):
    fine = opening * 32 + 'name = "a"' + (")" * 32 if opening == "(" else "")
    assert parse(fine)  # 32 levels: allowed
    deep = opening * 400 + 'name = "a"' + (")" * 400 if opening == "(" else "")
    with pytest.raises(SegmentError, match="nested too deep: at most 32 levels") as caught:
        parse(deep)
    assert caught.value.position == 32 * len(opening)


def test_a_filter_that_is_too_long_is_refused():
    with pytest.raises(SegmentError, match="at most 2000 characters"):
        tokenize('name = "' + "x" * 2000 + '"')


def test_checks_for_the_list_name_the_clause_engagement_needs_individual_tracking():
    tree = parse('name = "a" and engaged in last 2 sends')
    check(tree, tracking="individual")
    with pytest.raises(SegmentError) as caught:
        check(tree, tracking="anonymous")
    assert caught.value.text == "engaged in last 2 sends" and caught.value.position == 15
    assert "tracking to be individual (it is anonymous)" in str(caught.value)
    with pytest.raises(SegmentError, match="unknown source 'imported'") as bad_source:
        check(parse('name = "a" or source in ("form", "imported")'), tracking="off")
    assert bad_source.value.position == 14


def test_segment_names():
    assert check_name(" pro users ") == "pro users"
    for bad in ("", "-x", "a/b", "x" * 101):
        with pytest.raises(InvalidInput, match="not a segment name"):
            check_name(bad)
