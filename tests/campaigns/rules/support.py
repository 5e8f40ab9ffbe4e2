"""Shared fixtures for the rule-language tests: a field registry, hand-picked users, a SQLite harness
and the Hypothesis strategies for random rules and random user tables with missing values.

The property tests built on these are the heart of the rule tests: on random rules and random user
tables with missing values, the vectorised evaluator and SQL run in SQLite must select exactly the
users the plain-Python reference evaluator selects, and rendering then parsing must give back the
same tree.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Mapping, Sequence
from typing import cast

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from campaigns.rules import Condition, ConditionError, FieldSpec, compile_sql, validate, validate_text

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


def error_for_json(tree: Mapping[str, object]) -> ConditionError:
    with pytest.raises(ConditionError) as caught:
        validate(tree, REGISTRY)
    return caught.value


def strict_json(tree: object) -> str:
    """Serialise a tree so that 10 and 10.0, or 1 and true, compare as different."""
    return json.dumps(tree, ensure_ascii=False, sort_keys=True)


USERS: list[dict[str, object]] = [
    {
        "watching_count": 12,
        "purchasing_count": 6,
        "propensity": 0.7,
        "segment": "film buffs",
        "occupation": "教师",
        "marketing_consent": True,
    },
    {
        "watching_count": 3,
        "purchasing_count": None,
        "propensity": math.nan,
        "segment": None,
        "occupation": "teacher",
        "marketing_consent": False,
    },
    {
        "watching_count": None,
        "purchasing_count": 9,
        "propensity": 0.6,
        "segment": "lapsed learners",
        "occupation": None,
        "marketing_consent": None,
    },
]


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


def select_with_sqlite(condition: Condition, users: Sequence[Mapping[str, object]]) -> list[int]:
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
number_constants_as_json = st.one_of(
    number_constants,
    number_constants.map(lambda number: repr(float(number)) if isinstance(number, float) else str(number)),
)
OCCUPATION_POOL = ("teacher", "Teacher", "教师", "", "O'Brien", 'say "hi"', "back\\slash", "film buffs")
free_text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=4)
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
        number_dtype, text_dtype, bool_dtype = "float64", "object", "object"
    frame = pd.DataFrame({field: pd.Series(column(field), dtype=number_dtype) for field in NUMBER_FIELDS})
    for field in ("segment", "occupation"):
        frame[field] = pd.Series(column(field), dtype=text_dtype)
    consent = cast("list[bool | None]", column("marketing_consent"))  # true, false or missing in every user
    if layout == "bool_as_float":
        frame["marketing_consent"] = pd.Series(
            [math.nan if value is None else float(value) for value in consent], dtype="float64"
        )
    else:
        frame["marketing_consent"] = pd.Series(consent, dtype=bool_dtype)
    # A shuffled index makes sure rows are matched by position, not by label.
    frame.index = list(reversed(range(len(users))))
    return frame


PROPERTY_SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
