"""Tests for the campaign rule condition language: parser, validation and the three evaluators.

The property tests are the heart of this file: on random rules and random user tables with
missing values, the vectorised evaluator and SQL run in SQLite must select exactly the users
the plain-Python reference evaluator selects, and rendering then parsing must give back the
same tree.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns.conditions import (
    MAX_DEPTH,
    MAX_LIST_VALUES,
    MAX_NODES,
    MAX_TEXT_LENGTH,
    MAX_TEXT_NESTING,
    AllOf,
    Comparison,
    ConditionError,
    FieldSpec,
    Not,
    SqlFragment,
    compile_sql,
    evaluate_table,
    evaluate_user,
    parse,
    referenced_fields,
    render,
    to_json,
    validate,
    validate_text,
)

SEGMENTS = ("film buffs", "lapsed learners", "教师", 'say "hi"')

REGISTRY = {
    "watching_count": FieldSpec("number", description="Films watched in the last 90 days."),
    "purchasing_count": FieldSpec("number", description="Courses bought in the last 90 days."),
    "propensity": FieldSpec("number", description="Modelled chance of a cross-purchase."),
    "segment": FieldSpec("category", allowed_values=SEGMENTS, description="Marketing segment."),
    "occupation": FieldSpec("category", description="Self-reported occupation, free text."),
    "marketing_consent": FieldSpec("bool", description="Agreed to marketing messages."),
}
NUMBER_FIELDS = ("watching_count", "purchasing_count", "propensity")
COUNT_FIELDS = ("watching_count", "purchasing_count")
SQL_COLUMNS = {field: f'"{field}"' for field in REGISTRY}


def comparison(field: str, op: str, value: object = None) -> dict[str, object]:
    """Build a JSON comparison the way the stored format spells it."""
    if op in ("is_null", "not_null"):
        return {"field": field, "op": op}
    return {"field": field, "op": op, "value": value}


def error_for_text(text: str) -> ConditionError:
    with pytest.raises(ConditionError) as caught:
        validate_text(text, REGISTRY)
    return caught.value


def error_for_json(tree: object) -> ConditionError:
    with pytest.raises(ConditionError) as caught:
        validate(tree, REGISTRY)
    return caught.value


def strict_json(tree: object) -> str:
    """Serialise a tree so that 10 and 10.0, or 1 and true, compare as different."""
    return json.dumps(tree, ensure_ascii=False, sort_keys=True)


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
        ('segment in ["film buffs", "lapsed learners"]', comparison("segment", "in", ["film buffs", "lapsed learners"])),
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
    assert parse("occupation == \"it's\"") == comparison("occupation", "==", "it's")


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
    assert parse("  watching_count>10\n\tand\u3000purchasing_count>5 ") == parse("watching_count > 10 and purchasing_count > 5")


def test_a_trailing_comma_in_a_list_is_accepted() -> None:
    assert parse('segment in ["film buffs",]') == comparison("segment", "in", ["film buffs"])


# ---------------------------------------------------------------------------------------------
# Rendering


@pytest.mark.parametrize(
    ("tree", "text"),
    [
        (
            {"all": [comparison("watching_count", ">", 10), comparison("purchasing_count", ">", 5)]},
            "watching_count > 10 and purchasing_count > 5",
        ),
        (
            {"any": [{"all": [comparison("a", "==", True), comparison("b", "==", True)]}, comparison("c", "<", 1.5)]},
            "(a and b) or c < 1.5",
        ),
        ({"not": comparison("marketing_consent", "==", True)}, "not marketing_consent"),
        ({"not": comparison("watching_count", ">", 5)}, "not (watching_count > 5)"),
        ({"not": {"not": comparison("a", "==", True)}}, "not (not a)"),
        (comparison("segment", "not_in", ["教师", 'say "hi"']), 'segment not in ["教师", "say \\"hi\\""]'),
        (comparison("watching_count", "between", [1, 2.5]), "watching_count between 1 and 2.5"),
        (comparison("propensity", "not_null"), "propensity is not null"),
        (comparison("marketing_consent", "!=", False), "marketing_consent != false"),
        (comparison("propensity", ">", 1e-07), "propensity > 1e-07"),
    ],
)
def test_render_writes_canonical_text(tree: dict[str, object], text: str) -> None:
    assert render(tree) == text
    assert strict_json(parse(text)) == strict_json(tree)


def test_render_accepts_validated_conditions_too() -> None:
    condition = validate_text("watching_count > 10 and not marketing_consent", REGISTRY)
    assert render(condition) == "watching_count > 10 and not marketing_consent"


def test_render_refuses_a_field_name_the_text_syntax_cannot_express() -> None:
    with pytest.raises(ConditionError, match="cannot be written as rule text"):
        render(comparison("watching count", ">", 1))
    with pytest.raises(ConditionError, match="cannot be written as rule text"):
        render(comparison("between", ">", 1))


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
        (r"occupation == 'a\n'", "unknown escape '\\n' in quoted text (only \\\\, \\\" and \\' may follow a backslash)", 17),
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
# Validation of JSON trees


def test_a_valid_tree_becomes_condition_nodes() -> None:
    condition = validate(
        {"all": [comparison("watching_count", ">", 10), {"not": comparison("segment", "in", ["film buffs"])}]}, REGISTRY
    )
    assert condition == AllOf((Comparison("watching_count", ">", 10), Not(Comparison("segment", "in", ("film buffs",)))))


def test_decimal_strings_of_number_fields_become_numbers() -> None:
    condition = validate(
        {"all": [comparison("propensity", ">=", "0.6"), comparison("watching_count", "between", ["3", "1e1"])]}, REGISTRY
    )
    assert strict_json(to_json(condition)) == strict_json(
        {"all": [comparison("propensity", ">=", 0.6), comparison("watching_count", "between", [3, 10.0])]}
    )


def test_a_group_of_one_is_replaced_by_its_member() -> None:
    assert validate({"any": [{"all": [comparison("propensity", "is_null")]}]}, REGISTRY) == Comparison("propensity", "is_null")


def test_validation_is_idempotent_on_its_own_output() -> None:
    condition = validate_text('segment in ["教师"] or not (watching_count between 1 and 3)', REGISTRY)
    assert validate(condition, REGISTRY) == condition
    assert validate(to_json(condition), REGISTRY) == condition


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        (
            {"all": [comparison("watchng_count", ">", 10)]},
            "unknown field 'watchng_count' at all[0].field (did you mean 'watching_count'?)",
        ),
        (
            comparison("zzz", ">", 1),
            "unknown field 'zzz' at field (known fields: marketing_consent, occupation, propensity, "
            "purchasing_count, segment, watching_count)",
        ),
        (
            {"all": [comparison("watching_count", ">", 1), comparison("segment", ">", 1)]},
            "'segment' is a category; '>' needs a number at all[1].op (use ==, !=, in or not in)",
        ),
        (
            comparison("segment", "between", [1, 2]),
            "'segment' is a category; 'between' needs a number at op (use ==, !=, in or not in)",
        ),
        (
            {"not": comparison("marketing_consent", "<", 1)},
            "'marketing_consent' is a bool; '<' needs a number at not.op "
            "(write 'marketing_consent', 'not marketing_consent' or compare with == true / == false)",
        ),
        (
            comparison("marketing_consent", "not_in", [True]),
            "'marketing_consent' is a bool; 'not_in' needs a number or a category at op "
            "(write 'marketing_consent', 'not marketing_consent' or compare with == true / == false)",
        ),
        (comparison("watching_count", ">", "ten"), "'watching_count' is a number; \"ten\" is not a number at value"),
        (comparison("watching_count", ">", True), "'watching_count' is a number; true is not a number at value"),
        (
            comparison("occupation", "in", ["teacher", 7]),
            "'occupation' is a category; 7 is not text at value[1] (write it in quotes: \"7\")",
        ),
        (comparison("marketing_consent", "==", "yes"), "'marketing_consent' is a bool; \"yes\" is not true or false at value"),
        (
            comparison("segment", "==", "Film Buffs"),
            "\"Film Buffs\" is not a known value of 'segment' at value (did you mean \"film buffs\"?)",
        ),
        (
            comparison("segment", "==", "gamers"),
            "\"gamers\" is not a known value of 'segment' at value "
            '(known values: "film buffs", "lapsed learners", "教师", "say \\"hi\\"")',
        ),
        ({"all": []}, "'all' needs at least one condition at all (an empty 'all' would match everyone)"),
        ({"any": []}, "'any' needs at least one condition at any (an empty 'any' would match no one)"),
        ({"all": comparison("propensity", "is_null")}, "'all' needs a list of conditions, got an object at all"),
        ([], "expected a condition object, got a list at the top level"),
        ({"all": ["propensity > 1"]}, "expected a condition object, got text at all[0]"),
        ({}, "empty condition at the top level (expected 'all', 'any', 'not' or a 'field' comparison)"),
        ({"al": []}, "unknown key 'al' at the top level (did you mean 'all'?)"),
        (
            {"all": [comparison("propensity", "is_null")], "field": "propensity"},
            "a condition object holds exactly one of 'all', 'any' or 'not', found 'all', 'field' at the top level",
        ),
        ({"op": ">", "value": 1}, "the comparison has no 'field' at the top level"),
        ({"field": 3, "op": ">", "value": 1}, "'field' must be a field name, got a number at field"),
        ({"field": "propensity", "value": 1}, "the comparison has no 'op' at the top level (one of ==, !=, >, >=, <, <=, in, not_in, between, is_null, not_null)"),
        (comparison("propensity", "=>", 1), "unknown operator '=>' at op (did you mean '>='?)"),
        (comparison("segment", "not in", ["教师"]), "unknown operator 'not in' at op (did you mean 'not_in'?)"),
        ({"field": "propensity", "op": ">"}, "'>' needs a value at the top level"),
        (comparison("propensity", ">", None), "the value is null at value (use 'is_null' to test for a missing value)"),
        (
            comparison("segment", "==", ["film buffs"]),
            "'==' compares with one value, not a list at value (use 'in' to match any of several values)",
        ),
        (comparison("segment", "in", "film buffs"), "'in' needs a list of values, got text at value (e.g. [\"film buffs\", \"lapsed learners\"])"),
        (comparison("segment", "in", []), "'in' needs at least one value at value"),
        (comparison("segment", "in", [["film buffs"]]), "expected a number, text or true/false, got a list at value[0]"),
        (comparison("propensity", "between", [1]), "'between' needs a list of two values [low, high] at value"),
        (comparison("propensity", "between", [0.9, "0.1"]), "'between' needs the low value first, but 0.9 > 0.1 at value"),
        ({"field": "propensity", "op": "is_null", "value": 1}, "'is_null' takes no value at value"),
        (comparison("propensity", ">", math.inf), "inf is not a usable number at value (numbers must be finite)"),
        (comparison("propensity", ">", math.nan), "nan is not a usable number at value (numbers must be finite)"),
        (
            comparison("watching_count", ">", 2**53 + 1),
            "the number is too large to compare exactly at value (keep whole numbers within ±2**53)",
        ),
        (comparison("watching_count", ">", "1e999"), "the number is too large at value"),
        ({"field": "propensity", "op": ">", "value": 1, "valeu": 2}, "unknown key 'valeu' at the top level (did you mean 'value'?)"),
    ],
)
def test_json_errors_say_what_is_wrong_and_where(tree: object, message: str) -> None:
    assert str(error_for_json(tree)) == message


def test_an_is_null_with_an_explicit_null_value_is_accepted() -> None:
    assert validate({"field": "propensity", "op": "is_null", "value": None}, REGISTRY) == Comparison("propensity", "is_null")


def test_condition_errors_are_value_errors() -> None:
    assert issubclass(ConditionError, ValueError)


def test_too_deep_a_tree_is_refused() -> None:
    tree: dict[str, object] = comparison("propensity", "is_null")
    for _ in range(10_000):
        tree = {"not": tree}
    error = error_for_json(tree)
    assert error.problem == f"the condition is nested too deeply (more than {MAX_DEPTH} levels)"
    assert error.path == ".".join(["not"] * MAX_DEPTH)


def test_a_tree_at_the_depth_limit_is_accepted() -> None:
    tree: dict[str, object] = comparison("propensity", "is_null")
    for _ in range(MAX_DEPTH - 1):
        tree = {"not": tree}
    validate(tree, REGISTRY)
    assert parse(render(tree)) == tree


def test_too_many_parts_are_refused() -> None:
    error = error_for_json({"any": [comparison("propensity", ">", index) for index in range(MAX_NODES)]})
    assert error.problem == f"the condition has too many parts (more than {MAX_NODES})"
    assert error.path == f"any[{MAX_NODES - 1}]"


def test_too_long_a_list_is_refused() -> None:
    error = error_for_json(comparison("propensity", "in", list(range(MAX_LIST_VALUES + 1))))
    assert error.problem == f"'in' has too many values (more than {MAX_LIST_VALUES})"


def test_field_specs_check_themselves() -> None:
    with pytest.raises(ValueError, match="field type"):
        FieldSpec("text")
    with pytest.raises(ValueError, match="only category"):
        FieldSpec("number", allowed_values=("1",))
    assert FieldSpec("category", allowed_values=["a", "b"]).allowed_values == ("a", "b")


# ---------------------------------------------------------------------------------------------
# Referenced fields


def test_referenced_fields_lists_each_field_once_in_order_of_appearance() -> None:
    tree = parse("propensity > 0.5 and (segment == '教师' or not propensity is null) and marketing_consent")
    assert referenced_fields(tree) == ("propensity", "segment", "marketing_consent")
    assert referenced_fields(validate(tree, REGISTRY)) == ("propensity", "segment", "marketing_consent")


# ---------------------------------------------------------------------------------------------
# Evaluators on hand-picked users

USERS = [
    {"watching_count": 12, "purchasing_count": 6, "propensity": 0.7, "segment": "film buffs", "occupation": "教师", "marketing_consent": True},
    {"watching_count": 3, "purchasing_count": None, "propensity": math.nan, "segment": None, "occupation": "teacher", "marketing_consent": False},
    {"watching_count": None, "purchasing_count": 9, "propensity": 0.6, "segment": "lapsed learners", "occupation": None, "marketing_consent": None},
]


def select(text: str) -> list[int]:
    """Return the indexes of USERS the rule selects, checking all three evaluators agree."""
    condition = validate_text(text, REGISTRY)
    by_reference = [index for index, user in enumerate(USERS) if evaluate_user(condition, user)]
    by_table = list(np.flatnonzero(evaluate_table(condition, pd.DataFrame(USERS))))
    by_sql = select_with_sqlite(condition, USERS)
    assert by_table == by_reference
    assert by_sql == by_reference
    return by_reference


@pytest.mark.parametrize(
    ("text", "selected"),
    [
        ("watching_count > 10 and purchasing_count > 5", [0]),
        ("propensity >= 0.6", [0, 2]),
        ('segment in ["film buffs", "lapsed learners"]', [0, 2]),
        ('occupation == "教师"', [0]),
        ("marketing_consent", [0]),
        ("marketing_consent == false", [1]),
        # Missing consent is not consent, so 'not marketing_consent' includes unknowns.
        ("not marketing_consent", [1, 2]),
        ("marketing_consent is null", [2]),
        # A comparison with a missing value is false, whichever the operator ...
        ('segment != "film buffs"', [2]),
        ('segment not in ["film buffs"]', [2]),
        ("purchasing_count != 6", [2]),
        # ... while 'not' negates that false.
        ('not segment == "film buffs"', [1, 2]),
        ("propensity is null", [1]),
        ("propensity is not null", [0, 2]),
        ("watching_count between 3 and 12", [0, 1]),
        ("watching_count < 5 or purchasing_count >= 9", [1, 2]),
    ],
)
def test_missing_values_make_comparisons_false_in_every_evaluator(text: str, selected: list[int]) -> None:
    assert select(text) == selected


def test_the_table_evaluator_reads_a_mapping_of_numpy_arrays() -> None:
    condition = validate_text("watching_count > 2 and not marketing_consent", REGISTRY)
    table = {
        "watching_count": np.array([12.0, 3.0, np.nan]),
        "marketing_consent": np.array([True, False, None], dtype=object),
    }
    mask = evaluate_table(condition, table)
    assert mask.dtype == np.bool_
    assert mask.tolist() == [False, True, False]


def test_the_table_evaluator_ignores_the_frame_index() -> None:
    frame = pd.DataFrame(USERS, index=[30, 10, 20])
    mask = evaluate_table(validate_text("propensity >= 0.6", REGISTRY), frame)
    assert mask.tolist() == [True, False, True]


def test_the_table_evaluator_handles_an_empty_table() -> None:
    frame = pd.DataFrame({field: pd.Series([], dtype=object) for field in REGISTRY})
    mask = evaluate_table(validate_text("propensity > 0 or not marketing_consent", REGISTRY), frame)
    assert mask.shape == (0,) and mask.dtype == np.bool_


def test_the_evaluators_name_a_missing_column() -> None:
    condition = validate_text("propensity > 0", REGISTRY)
    with pytest.raises(KeyError, match="propensity"):
        evaluate_table(condition, {"watching_count": np.array([1])})
    with pytest.raises(KeyError, match="propensity"):
        evaluate_user(condition, {"watching_count": 1})
    with pytest.raises(KeyError, match="propensity"):
        compile_sql(condition, {"watching_count": '"watching_count"'})


def test_sql_keeps_every_value_in_the_parameters() -> None:
    condition = validate_text(
        'watching_count > 10 and (segment in ["film buffs", "教师"] or not marketing_consent) and propensity is null',
        REGISTRY,
    )
    assert compile_sql(condition, SQL_COLUMNS) == SqlFragment(
        '(("watching_count" IS NOT NULL AND "watching_count" > %s)'
        ' AND (("segment" IS NOT NULL AND "segment" IN (%s, %s))'
        ' OR (NOT ("marketing_consent" IS NOT NULL AND "marketing_consent" = %s)))'
        ' AND ("propensity" IS NULL))',
        (10, "film buffs", "教师", True),
    )


def test_hostile_text_in_a_rule_never_reaches_the_sql_text() -> None:
    hostile = "x'); DROP TABLE users; --"
    condition = validate({"field": "occupation", "op": "==", "value": hostile}, REGISTRY)
    fragment = compile_sql(condition, SQL_COLUMNS)
    assert "DROP" not in fragment.sql and fragment.params == (hostile,)
    assert select_with_sqlite(condition, [{**USERS[0], "occupation": hostile}, USERS[1]]) == [0]


# ---------------------------------------------------------------------------------------------
# SQLite harness

SQLITE_TYPES = {
    "watching_count": "INTEGER",
    "purchasing_count": "INTEGER",
    "propensity": "REAL",
    "segment": "TEXT",
    "occupation": "TEXT",
    # Django's SQLite backend declares booleans as "bool"; SQLite stores them as 0 and 1.
    "marketing_consent": "bool",
}


def select_with_sqlite(condition: object, users: Sequence[Mapping[str, object]]) -> list[int]:
    """Load users into an in-memory SQLite table and return the row indexes the SQL selects."""
    fragment = compile_sql(condition, SQL_COLUMNS)
    connection = sqlite3.connect(":memory:")
    try:
        columns = ", ".join(f'"{field}" {sql_type}' for field, sql_type in SQLITE_TYPES.items())
        connection.execute(f"CREATE TABLE users (row_index INTEGER PRIMARY KEY, {columns})")
        placeholders = ", ".join("?" for _ in range(len(SQLITE_TYPES) + 1))
        connection.executemany(
            f"INSERT INTO users VALUES ({placeholders})",
            [[index, *(sqlite_value(user[field]) for field in SQLITE_TYPES)] for index, user in enumerate(users)],
        )
        # Django turns %s into SQLite's ? itself; the raw sqlite3 module needs it done here.
        query = f"SELECT row_index FROM users WHERE {fragment.sql.replace('%s', '?')} ORDER BY row_index"
        return [row[0] for row in connection.execute(query, fragment.params)]
    finally:
        connection.close()


def sqlite_value(value: object) -> object:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


# ---------------------------------------------------------------------------------------------
# Property tests: random rules over random users with missing values

NUMBER_POOL = (-1, 0, 1, 2, 3, 5, 10, 0.5, 0.6, 2.5, -0.0)
number_constants = st.one_of(
    st.sampled_from(NUMBER_POOL),
    st.integers(-20, 20),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
)
# Stored rules may carry numbers as decimal strings; validation must read them identically.
number_constants_as_json = st.one_of(number_constants, number_constants.map(lambda number: repr(float(number)) if isinstance(number, float) else str(number)))
OCCUPATION_POOL = ("teacher", "Teacher", "教师", "", "O'Brien", 'say "hi"', "back\\slash", "film buffs")
free_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=4)
occupation_constants = st.one_of(st.sampled_from(OCCUPATION_POOL), free_text)

CONSTANTS = {
    "watching_count": number_constants_as_json,
    "purchasing_count": number_constants_as_json,
    "propensity": number_constants_as_json,
    "segment": st.sampled_from(SEGMENTS),
    "occupation": occupation_constants,
    "marketing_consent": st.booleans(),
}
OPERATORS_BY_TYPE = {
    "number": ("==", "!=", ">", ">=", "<", "<=", "in", "not_in", "between", "is_null", "not_null"),
    "category": ("==", "!=", "in", "not_in", "is_null", "not_null"),
    "bool": ("==", "!=", "is_null", "not_null"),
}


@st.composite
def comparisons(draw: st.DrawFn) -> dict[str, object]:
    field = draw(st.sampled_from(sorted(REGISTRY)))
    op = draw(st.sampled_from(OPERATORS_BY_TYPE[REGISTRY[field].type]))
    constants = CONSTANTS[field]
    if op in ("in", "not_in"):
        return comparison(field, op, draw(st.lists(constants, min_size=1, max_size=4)))
    if op == "between":
        return comparison(field, op, sorted([draw(constants), draw(constants)], key=float))
    return comparison(field, op, draw(constants))


trees = st.recursive(
    comparisons(),
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3).map(lambda members: {"all": members}),
        st.lists(children, min_size=1, max_size=3).map(lambda members: {"any": members}),
        children.map(lambda member: {"not": member}),
    ),
    max_leaves=10,
)

missing_number = st.sampled_from([None, math.nan])
DATA = {
    "watching_count": st.one_of(missing_number, st.integers(-20, 20), st.sampled_from(NUMBER_POOL)),
    "purchasing_count": st.one_of(missing_number, st.integers(-3, 12)),
    "propensity": st.one_of(missing_number, st.sampled_from(NUMBER_POOL), st.floats(allow_nan=False)),
    "segment": st.one_of(st.none(), st.sampled_from(SEGMENTS)),
    "occupation": st.one_of(st.none(), occupation_constants),
    "marketing_consent": st.one_of(st.none(), st.booleans()),
}
users_tables = st.lists(st.fixed_dictionaries(DATA), max_size=12)

# The same users, held the ways a feature table may arrive from pandas or numpy.
TABLE_LAYOUTS = ("plain", "nullable", "numpy_objects", "bool_as_float")


def build_table(users: list[dict[str, object]], layout: str) -> pd.DataFrame | dict[str, np.ndarray]:
    """Hold users as a DataFrame or a mapping of arrays, in the given layout."""
    def column(field: str) -> list[object]:
        return [user[field] for user in users]

    if layout == "numpy_objects":
        return {field: np.array(column(field), dtype=object) for field in REGISTRY}
    if layout == "nullable":
        number_dtype, text_dtype, bool_dtype = "Float64", "string", "boolean"
    else:
        number_dtype, text_dtype, bool_dtype = "float64", object, object
    frame = pd.DataFrame({field: pd.Series(column(field), dtype=number_dtype) for field in NUMBER_FIELDS})
    for field in ("segment", "occupation"):
        frame[field] = pd.Series(column(field), dtype=text_dtype)
    consent = column("marketing_consent")
    if layout == "bool_as_float":
        frame["marketing_consent"] = pd.Series([math.nan if value is None else float(value) for value in consent], dtype="float64")
    else:
        frame["marketing_consent"] = pd.Series(consent, dtype=bool_dtype)
    # A shuffled index makes sure rows are matched by position, not by label.
    frame.index = list(reversed(range(len(users))))
    return frame


PROPERTY_SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(tree=trees, users=users_tables, layout=st.sampled_from(TABLE_LAYOUTS))
def test_the_vectorised_evaluator_agrees_with_the_reference_on_every_row(
    tree: dict[str, object], users: list[dict[str, object]], layout: str
) -> None:
    condition = validate(tree, REGISTRY)
    expected = [evaluate_user(condition, user) for user in users]
    mask = evaluate_table(condition, build_table(users, layout))
    assert mask.dtype == np.bool_ and mask.shape == (len(users),)
    assert mask.tolist() == expected


@PROPERTY_SETTINGS
@given(tree=trees, users=users_tables)
def test_sql_in_sqlite_selects_exactly_the_rows_the_reference_selects(tree: dict[str, object], users: list[dict[str, object]]) -> None:
    condition = validate(tree, REGISTRY)
    expected = [index for index, user in enumerate(users) if evaluate_user(condition, user)]
    assert select_with_sqlite(condition, users) == expected


@PROPERTY_SETTINGS
@given(tree=trees, users=users_tables)
def test_not_selects_exactly_the_other_users(tree: dict[str, object], users: list[dict[str, object]]) -> None:
    condition = validate(tree, REGISTRY)
    table = build_table(users, "plain")
    assert (evaluate_table(Not(condition), table) == ~evaluate_table(condition, table)).all()
    assert sorted(select_with_sqlite(Not(condition), users) + select_with_sqlite(condition, users)) == list(range(len(users)))


@PROPERTY_SETTINGS
@given(tree=trees)
def test_rendering_then_parsing_gives_back_the_canonical_tree(tree: dict[str, object]) -> None:
    condition = validate(tree, REGISTRY)
    canonical = to_json(condition)
    text = render(canonical)
    assert strict_json(parse(text)) == strict_json(canonical)
    assert validate_text(text, REGISTRY) == condition
    assert referenced_fields(condition) == referenced_fields(tree)


rule_words = st.sampled_from(
    ["a", "watching_count", "segment", "==", "!=", ">", "<=", "and", "or", "not", "in", "between", "is", "null",
     "true", "(", ")", "[", "]", ",", "1", "-2.5", "'x'", '"教师"', '"a\\"b"', "=", "“", "\n"]
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


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6) | st.sampled_from(["all", "op", "segment", ">", "in"]),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["all", "any", "not", "field", "op", "value", "x"]), children, max_size=3),
    max_leaves=12,
)


@settings(max_examples=500, deadline=None)
@given(tree=json_values)
def test_any_json_either_validates_or_raises_a_condition_error(tree: object) -> None:
    try:
        validate(tree, REGISTRY)
    except ConditionError as error:
        assert error.path is not None


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=40))
def test_arbitrary_characters_never_crash_the_parser(text: str) -> None:
    try:
        parse(text)
    except ConditionError:
        pass
