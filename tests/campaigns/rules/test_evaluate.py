"""Tests for the evaluators: hand-picked users, and the vectorised evaluator against the reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from campaigns.rules import Not, compile_sql, evaluate_table, evaluate_user, validate, validate_text
from tests.campaigns.rules.support import (
    PROPERTY_SETTINGS,
    REGISTRY,
    TABLE_LAYOUTS,
    USERS,
    build_table,
    select_with_sqlite,
    trees,
    users_tables,
)

# ---------------------------------------------------------------------------------------------
# Evaluators on hand-picked users


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


# ---------------------------------------------------------------------------------------------
# Property tests: random rules over random users with missing values


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
def test_not_selects_exactly_the_other_users(tree: dict[str, object], users: list[dict[str, object]]) -> None:
    condition = validate(tree, REGISTRY)
    table = build_table(users, "plain")
    assert (evaluate_table(Not(condition), table) == ~evaluate_table(condition, table)).all()
    assert sorted(select_with_sqlite(Not(condition), users) + select_with_sqlite(condition, users)) == list(
        range(len(users))
    )
