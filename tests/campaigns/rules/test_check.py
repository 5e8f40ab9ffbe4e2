"""Tests for validating JSON rules against the field registry."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaigns.rules import (
    MAX_DEPTH,
    MAX_LIST_VALUES,
    MAX_NODES,
    AllOf,
    Comparison,
    ConditionError,
    FieldSpec,
    Not,
    parse,
    render,
    to_json,
    validate,
    validate_text,
)
from tests.campaigns.rules.support import REGISTRY, comparison, error_for_json, strict_json

# ---------------------------------------------------------------------------------------------
# Validation of JSON trees


def test_a_valid_tree_becomes_condition_nodes() -> None:
    condition = validate(
        {"all": [comparison("watching_count", ">", 10), {"not": comparison("segment", "in", ["film buffs"])}]}, REGISTRY
    )
    assert condition == AllOf(
        (Comparison("watching_count", ">", 10), Not(Comparison("segment", "in", ("film buffs",))))
    )


def test_decimal_strings_of_number_fields_become_numbers() -> None:
    condition = validate(
        {"all": [comparison("propensity", ">=", "0.6"), comparison("watching_count", "between", ["3", "1e1"])]},
        REGISTRY,
    )
    assert strict_json(to_json(condition)) == strict_json(
        {"all": [comparison("propensity", ">=", 0.6), comparison("watching_count", "between", [3, 10.0])]}
    )


def test_a_group_of_one_is_replaced_by_its_member() -> None:
    assert validate({"any": [{"all": [comparison("propensity", "is_null")]}]}, REGISTRY) == Comparison(
        "propensity", "is_null"
    )


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
        (
            comparison("marketing_consent", "==", "yes"),
            "'marketing_consent' is a bool; \"yes\" is not true or false at value",
        ),
        (
            comparison("segment", "==", "Film Buffs"),
            '"Film Buffs" is not a known value of \'segment\' at value (did you mean "film buffs"?)',
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
        (
            {"field": "propensity", "value": 1},
            "the comparison has no 'op' at the top level"
            " (one of ==, !=, >, >=, <, <=, in, not_in, between, is_null, not_null)",
        ),
        (comparison("propensity", "=>", 1), "unknown operator '=>' at op (did you mean '>='?)"),
        (comparison("segment", "not in", ["教师"]), "unknown operator 'not in' at op (did you mean 'not_in'?)"),
        ({"field": "propensity", "op": ">"}, "'>' needs a value at the top level"),
        (comparison("propensity", ">", None), "the value is null at value (use 'is_null' to test for a missing value)"),
        (
            comparison("segment", "==", ["film buffs"]),
            "'==' compares with one value, not a list at value (use 'in' to match any of several values)",
        ),
        (
            comparison("segment", "in", "film buffs"),
            '\'in\' needs a list of values, got text at value (e.g. ["film buffs", "lapsed learners"])',
        ),
        (comparison("segment", "in", []), "'in' needs at least one value at value"),
        (
            comparison("segment", "in", [["film buffs"]]),
            "expected a number, text or true/false, got a list at value[0]",
        ),
        (comparison("propensity", "between", [1]), "'between' needs a list of two values [low, high] at value"),
        (
            comparison("propensity", "between", [0.9, "0.1"]),
            "'between' needs the low value first, but 0.9 > 0.1 at value",
        ),
        ({"field": "propensity", "op": "is_null", "value": 1}, "'is_null' takes no value at value"),
        (comparison("propensity", ">", math.inf), "inf is not a usable number at value (numbers must be finite)"),
        (comparison("propensity", ">", math.nan), "nan is not a usable number at value (numbers must be finite)"),
        (
            comparison("watching_count", ">", 2**53 + 1),
            "the number is too large to compare exactly at value (keep whole numbers within ±2**53)",
        ),
        (comparison("watching_count", ">", "1e999"), "the number is too large at value"),
        (
            {"field": "propensity", "op": ">", "value": 1, "valeu": 2},
            "unknown key 'valeu' at the top level (did you mean 'value'?)",
        ),
    ],
)
def test_json_errors_say_what_is_wrong_and_where(tree: Mapping[str, object], message: str) -> None:
    assert str(error_for_json(tree)) == message


def test_an_is_null_with_an_explicit_null_value_is_accepted() -> None:
    assert validate({"field": "propensity", "op": "is_null", "value": None}, REGISTRY) == Comparison(
        "propensity", "is_null"
    )


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
        FieldSpec("text")  # type: ignore[arg-type]  # an unknown field type is the point
    with pytest.raises(ValueError, match="only category"):
        FieldSpec("number", allowed_values=("1",))
    # A list, as JSON gives one, is accepted and held as a tuple.
    assert FieldSpec("category", allowed_values=["a", "b"]).allowed_values == ("a", "b")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Property tests: random JSON

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=6)
    | st.sampled_from(["all", "op", "segment", ">", "in"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["all", "any", "not", "field", "op", "value", "x"]), children, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=500, deadline=None)
@given(tree=json_values)
def test_any_json_either_validates_or_raises_a_condition_error(tree: object) -> None:
    try:
        validate(tree, REGISTRY)  # type: ignore[arg-type]  # any JSON value, not only a mapping, is the point
    except ConditionError as error:
        assert error.path is not None
