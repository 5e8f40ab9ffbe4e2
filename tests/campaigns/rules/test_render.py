"""Tests for writing rules back out: canonical text, and the fields a rule tests."""

from __future__ import annotations

import pytest
from hypothesis import given

from campaigns.rules import ConditionError, parse, referenced_fields, render, to_json, validate, validate_text
from tests.campaigns.rules.support import PROPERTY_SETTINGS, REGISTRY, comparison, strict_json, trees

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
# Referenced fields


def test_referenced_fields_lists_each_field_once_in_order_of_appearance() -> None:
    tree = parse("propensity > 0.5 and (segment == '教师' or not propensity is null) and marketing_consent")
    assert referenced_fields(tree) == ("propensity", "segment", "marketing_consent")
    assert referenced_fields(validate(tree, REGISTRY)) == ("propensity", "segment", "marketing_consent")


# ---------------------------------------------------------------------------------------------
# Property tests: random rules


@PROPERTY_SETTINGS
@given(tree=trees)
def test_rendering_then_parsing_gives_back_the_canonical_tree(tree: dict[str, object]) -> None:
    condition = validate(tree, REGISTRY)
    canonical = to_json(condition)
    text = render(canonical)
    assert strict_json(parse(text)) == strict_json(canonical)
    assert validate_text(text, REGISTRY) == condition
    assert referenced_fields(condition) == referenced_fields(tree)
