"""Tests for reading rule text: the parser, and error messages located in the text."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaigns.rules import MAX_DEPTH, MAX_TEXT_LENGTH, MAX_TEXT_NESTING, ConditionError, parse, render
from tests.campaigns.rules.support import comparison, error_for_text, strict_json

# ---------------------------------------------------------------------------------------------
# Parser


def test_the_articles_rule_parses_to_an_all_of_two_comparisons() -> None:
    assert parse("watching_count > 10 and purchasing_count > 5") == {
        "all": [comparison("watching_count", ">", 10), comparison("purchasing_count", ">", 5)]
    }


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("propensity >= 0.6", comparison("propensity", ">=", 0.6)),
        (
            'segment in ["film buffs", "lapsed learners"]',
            comparison("segment", "in", ["film buffs", "lapsed learners"]),
        ),
        ("segment not in ['film buffs']", comparison("segment", "not_in", ["film buffs"])),
        ('churn_risk == "high"', comparison("churn_risk", "==", "high")),
        ("not marketing_consent", {"not": comparison("marketing_consent", "==", True)}),
        ("marketing_consent == false", comparison("marketing_consent", "==", False)),
        ("watching_count between 3 and 10", comparison("watching_count", "between", [3, 10])),
        ("propensity is null", comparison("propensity", "is_null")),
        ("propensity is not null", comparison("propensity", "not_null")),
        ("watching_count != -2", comparison("watching_count", "!=", -2)),
        ("propensity < .5", comparison("propensity", "<", 0.5)),
        ("propensity <= 1e-3", comparison("propensity", "<=", 0.001)),
        ("watching_count > 10.0", comparison("watching_count", ">", 10.0)),
    ],
)
def test_each_kind_of_comparison_parses_to_its_json_form(text: str, tree: dict[str, object]) -> None:
    assert strict_json(parse(text)) == strict_json(tree)


def test_chinese_text_survives_parsing_in_either_quote_style() -> None:
    assert parse('occupation == "教师"') == comparison("occupation", "==", "教师")
    assert parse("occupation in ['教师', '医生']") == comparison("occupation", "in", ["教师", "医生"])


def test_escapes_allow_quotes_and_backslashes_inside_text() -> None:
    assert parse(r'occupation == "say \"hi\""') == comparison("occupation", "==", 'say "hi"')
    assert parse(r"occupation == 'O\'Brien'") == comparison("occupation", "==", "O'Brien")
    assert parse(r'occupation == "a\\b"') == comparison("occupation", "==", "a\\b")
    assert parse('occupation == "it\'s"') == comparison("occupation", "==", "it's")


def test_not_binds_tighter_than_and_which_binds_tighter_than_or() -> None:
    a, b, c = (comparison(name, "==", True) for name in "abc")
    assert parse("a or b and c") == {"any": [a, {"all": [b, c]}]}
    assert parse("a and b or c") == {"any": [{"all": [a, b]}, c]}
    assert parse("not a and b") == {"all": [{"not": a}, b]}
    assert parse("not a or not b") == {"any": [{"not": a}, {"not": b}]}
    assert parse("not (a or b)") == {"not": {"any": [a, b]}}
    assert parse("(a or b) and c") == {"all": [{"any": [a, b]}, c]}


def test_not_applies_to_a_whole_comparison() -> None:
    assert parse("not watching_count > 5") == {"not": comparison("watching_count", ">", 5)}


def test_a_chain_of_ands_is_one_all_but_brackets_keep_their_group() -> None:
    a, b, c = (comparison(name, "==", True) for name in "abc")
    assert parse("a and b and c") == {"all": [a, b, c]}
    assert parse("(a and b) and c") == {"all": [{"all": [a, b]}, c]}
    assert parse("((a))") == a


def test_between_takes_its_and_before_the_next_condition() -> None:
    assert parse("watching_count between 1 and 5 and propensity > 0.5") == {
        "all": [comparison("watching_count", "between", [1, 5]), comparison("propensity", ">", 0.5)]
    }


def test_keywords_are_case_insensitive_and_whitespace_is_free() -> None:
    assert parse("A > 1 AND NOT b OR c IS NOT NULL") == parse("A > 1 and not b or c is not null")
    assert parse("x In [TRUE, False]") == comparison("x", "in", [True, False])
    assert parse("  watching_count>10\n\tand\u3000purchasing_count>5 ") == parse(
        "watching_count > 10 and purchasing_count > 5"
    )


def test_a_trailing_comma_in_a_list_is_accepted() -> None:
    assert parse('segment in ["film buffs",]') == comparison("segment", "in", ["film buffs"])


# ---------------------------------------------------------------------------------------------
# Error messages for text, as a manager reads them in the admin


def test_a_misspelt_field_is_named_located_and_corrected() -> None:
    error = error_for_text("watchng_count > 10 and purchasing_count > 5")
    assert str(error) == (
        "unknown field 'watchng_count' at column 1 (did you mean 'watching_count'?)\n"
        "    watchng_count > 10 and purchasing_count > 5\n"
        "    ^^^^^^^^^^^^^"
    )
    assert (error.line, error.column, error.path) == (1, 1, "all[0].field")


def test_a_type_error_points_at_the_operator() -> None:
    error = error_for_text('occupation == "教师" or segment > 3')
    assert error.problem == "'segment' is a category; '>' needs a number"
    assert error.column == 31
    # Chinese characters take two terminal columns, so the caret is pushed along to match.
    assert str(error).splitlines()[-1] == "    " + " " * 32 + "^"


def test_an_unknown_category_value_is_pointed_at_inside_the_list() -> None:
    error = error_for_text('segment in ["film buffs", "lapsed lerners"]')
    assert str(error).splitlines()[0] == (
        '"lapsed lerners" is not a known value of \'segment\' at column 27 (did you mean "lapsed learners"?)'
    )
    assert str(error).splitlines()[-1] == "    " + " " * 26 + "^" * len('"lapsed lerners"')


def test_errors_on_a_later_line_give_line_and_column() -> None:
    error = error_for_text("watching_count > 10\nand propensity >= 'high'")
    assert error.problem == "'propensity' is a number; \"high\" is not a number"
    assert (error.line, error.column) == (2, 19)
    assert "at line 2, column 19" in str(error)
    assert str(error).splitlines()[-2:] == ["    and propensity >= 'high'", "                      ^^^^^^"]


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("churn_risk == high", "expected a value after '==', got the name 'high' (put text in quotes: \"high\")", 15),
        ("watching_count = 3", "unexpected character '=' (did you mean '=='?)", 16),
        ("watching_count => 3", "unexpected '=>' (did you mean '>='?)", 16),
        ("a > 1 && b > 2", "unexpected '&&' (write 'and')", 7),
        ("occupation == “教师”", "unexpected character '“' (use straight quotes \" or ')", 15),
        ("(a > 1", "expected ')' to close the '(' at column 1, got the end of the condition", 7),
        ("a > 1)", "expected 'and', 'or' or the end of the condition, got ')' (there is no '(' for this ')')", 6),
        ('segment in ("a")', "expected '[' after 'in', got '(' (use square brackets, e.g. in [\"a\", \"b\"])", 12),
        ("x == null", "null is not a value to compare with (write 'field is null' to test for a missing value)", 6),
        ("propensity >= 0.6 and", "expected a field name or '(' after 'and', got the end of the condition", 22),
        (
            "watching_count 10",
            "expected a comparison after 'watching_count', got the number 10"
            " (e.g. ==, !=, >, >=, <, <=, in [...], between ... and ..., is null)",
            16,
        ),
        ("occupation == 'teacher", "this quoted text is never closed (add a closing ')", 15),
        (
            r"occupation == 'a\n'",
            "unknown escape '\\n' in quoted text (only \\\\, \\\" and \\' may follow a backslash)",
            17,
        ),
        ("segment in [1 2]", "expected ',' or ']' in the list, got the number 2", 15),
        ("x is nul", "expected 'null' after 'is', got 'nul'", 6),
        ("x between 1 or 2", "expected 'and' after the low value of 'between', got 'or'", 13),
        ("x > [1]", "a list of values only goes after 'in' or 'not in'", 5),
        ("and x", "expected a field name or '(', got 'and'", 1),
        ("watching_count between 5 and 1", "'between' needs the low value first, but 5 > 1", 24),
        (
            "marketing_consent in [true]",
            "'marketing_consent' is a bool; 'in' needs a number or a category"
            " (write 'marketing_consent', 'not marketing_consent' or compare with == true / == false)",
            19,
        ),
    ],
)
def test_text_errors_say_what_is_wrong_and_where(text: str, message: str, column: int) -> None:
    error = error_for_text(text)
    problem, _, hint = message.partition(" (")
    assert error.problem == problem
    assert error.hint == (hint[:-1] if hint else None)
    assert error.column == column
    assert str(error).splitlines()[1] == f"    {text}"


def test_empty_and_overlong_text_is_refused() -> None:
    assert str(error_for_text("   ")) == "the condition is empty (e.g. watching_count > 10)"
    assert "too long" in str(error_for_text("a" * (MAX_TEXT_LENGTH + 1)))


def test_deep_nesting_in_text_is_refused_without_exhausting_the_stack() -> None:
    error = error_for_text("(" * 5000 + "a" + ")" * 5000)
    assert error.problem == f"brackets and 'not' are nested too deeply (more than {MAX_TEXT_NESTING} levels)"
    assert error.column == MAX_TEXT_NESTING + 1
    assert "nested too deeply" in str(error_for_text("not " * 5000 + "a"))


def test_a_tree_too_deep_for_validation_is_refused_at_the_place_in_the_text() -> None:
    error = error_for_text("not " * (MAX_DEPTH + 5) + "marketing_consent")
    assert error.problem == f"the condition is nested too deeply (more than {MAX_DEPTH} levels)"
    assert error.column == 4 * MAX_DEPTH + 1


# ---------------------------------------------------------------------------------------------
# Property tests: random text

rule_words = st.sampled_from(
    [
        "a",
        "watching_count",
        "segment",
        "==",
        "!=",
        ">",
        "<=",
        "and",
        "or",
        "not",
        "in",
        "between",
        "is",
        "null",
        "true",
        "(",
        ")",
        "[",
        "]",
        ",",
        "1",
        "-2.5",
        "'x'",
        '"教师"',
        '"a\\"b"',
        "=",
        "“",
        "\n",
    ]
)


@settings(max_examples=500, deadline=None)
@given(words=st.lists(rule_words, max_size=14))
def test_any_text_either_parses_to_a_stable_tree_or_raises_a_located_condition_error(words: list[str]) -> None:
    text = " ".join(words)
    try:
        tree = parse(text)
    except ConditionError as error:
        if error.span is not None:
            assert 0 <= error.span[0] <= error.span[1] <= len(text)
            assert error.column is not None and error.line is not None
        return
    assert parse(render(tree)) == tree


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=40))
def test_arbitrary_characters_never_crash_the_parser(text: str) -> None:
    with contextlib.suppress(ConditionError):
        parse(text)
