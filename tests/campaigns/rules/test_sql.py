"""Tests for compiling rules to SQL WHERE fragments, run in SQLite against the reference evaluator."""

from __future__ import annotations

from hypothesis import given

from campaigns.rules import SqlFragment, compile_sql, evaluate_user, validate, validate_text
from tests.campaigns.rules.support import (
    PROPERTY_SETTINGS,
    REGISTRY,
    SQL_COLUMNS,
    USERS,
    select_with_sqlite,
    trees,
    users_tables,
)

# ---------------------------------------------------------------------------------------------
# SQL on hand-picked rules


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
# Property tests: random rules over random users with missing values


@PROPERTY_SETTINGS
@given(tree=trees, users=users_tables)
def test_sql_in_sqlite_selects_exactly_the_rows_the_reference_selects(
    tree: dict[str, object], users: list[dict[str, object]]
) -> None:
    condition = validate(tree, REGISTRY)
    expected = [index for index, user in enumerate(users) if evaluate_user(condition, user)]
    assert select_with_sqlite(condition, users) == expected
