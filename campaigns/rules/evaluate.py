"""Evaluate conditions over users: a plain-Python reference for one user and a vectorised one for a table.

Each takes a condition returned by validate() or validate_text(): after validation a constant's
Python type matches its field's type (bool, str, or int/float).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd

from campaigns.rules.nodes import LIST_OPS, AllOf, AnyOf, Comparison, Condition, Not
from campaigns.rules.render import referenced_fields

Mask: TypeAlias = npt.NDArray[np.bool_]
# A column holds numbers or Python objects, depending on what it is compared with.
Column: TypeAlias = npt.NDArray[Any]

# A user's value is whatever the caller's data holds, so comparing it follows Python's own rules.
_PYTHON_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def _is_missing(value: object) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, (float, np.floating)) and math.isnan(value)


def evaluate_user(condition: Condition, user: Mapping[str, object]) -> bool:
    """Decide whether one user, given as field -> value, meets the condition.

    This is the plain-Python reference: slow, simple, and used to explain one user's
    eligibility and as the oracle the vectorised and SQL evaluators are tested against.
    Every referenced field must be a key of ``user``; None or NaN marks a missing value.
    """
    if isinstance(condition, AllOf):
        return all(evaluate_user(child, user) for child in condition.conditions)
    if isinstance(condition, AnyOf):
        return any(evaluate_user(child, user) for child in condition.conditions)
    if isinstance(condition, Not):
        return not evaluate_user(condition.condition, user)
    if condition.field not in user:
        raise KeyError(f"the user has no value for field '{condition.field}'")
    actual: Any = user[condition.field]
    if condition.op == "is_null":
        return _is_missing(actual)
    if condition.op == "not_null":
        return not _is_missing(actual)
    if _is_missing(actual):
        return False
    if condition.op == "in":
        return any(actual == item for item in condition.constants())
    if condition.op == "not_in":
        return all(actual != item for item in condition.constants())
    if condition.op == "between":
        low, high = condition.constants()
        return bool(low <= actual <= high)
    return bool(_PYTHON_COMPARISONS[condition.op](actual, condition.constant()))


_NUMPY_COMPARISONS: dict[str, np.ufunc] = {
    "==": np.equal,
    "!=": np.not_equal,
    ">": np.greater,
    ">=": np.greater_equal,
    "<": np.less,
    "<=": np.less_equal,
}


class _Columns:
    """Read the columns a condition needs from a table, converting each at most once per use."""

    def __init__(self, table: pd.DataFrame | Mapping[str, object], fields: tuple[str, ...]) -> None:
        self._series: dict[str, pd.Series] = {}
        for field in fields:
            try:
                column = table[field]
            except KeyError:
                raise KeyError(f"the table has no column for field '{field}'") from None
            self._series[field] = column if isinstance(column, pd.Series) else pd.Series(column)
        lengths = {len(series) for series in self._series.values()}
        if len(lengths) > 1:
            raise ValueError(f"the table's columns differ in length: {sorted(lengths)}")
        self.length = lengths.pop()
        self._cache: dict[tuple[str, str], Column] = {}

    def present(self, field: str) -> Mask:
        """Return True where the field has a value, False where it is missing."""
        return self._cached(field, "present", lambda series: ~series.isna().to_numpy(dtype=bool))

    def numbers(self, field: str) -> Column:
        """Return the field as numbers, NaN where missing; integer columns stay exact."""

        def convert(series: pd.Series) -> Column:
            numbers: Column
            if series.dtype.kind in "iu":
                numbers = series.to_numpy()
            else:
                numbers = pd.to_numeric(series).to_numpy(dtype=np.float64, na_value=np.nan)
            return numbers

        return self._cached(field, "numbers", convert)

    def objects(self, field: str) -> Column:
        """Return the field as Python objects, None where missing, for exact equality tests."""
        return self._cached(field, "objects", lambda series: series.to_numpy(dtype=object, na_value=None))

    def _cached(self, field: str, form: str, convert: Callable[[pd.Series], Column]) -> Column:
        key = (field, form)
        if key not in self._cache:
            self._cache[key] = convert(self._series[field])
        return self._cache[key]


def evaluate_table(condition: Condition, table: pd.DataFrame | Mapping[str, object]) -> Mask:
    """Decide for every row of a table at once whether it meets the condition.

    ``table`` is a DataFrame or a mapping of column name -> array, with a column per referenced
    field; missing values are None, NaN or pandas NA. Returns a boolean numpy array, one entry
    per row, equal row for row to ``evaluate_user``.
    """
    columns = _Columns(table, referenced_fields(condition))
    return _evaluate_node(condition, columns)


def _evaluate_node(condition: Condition, columns: _Columns) -> Mask:
    combined: Mask
    if isinstance(condition, AllOf):
        combined = np.logical_and.reduce([_evaluate_node(child, columns) for child in condition.conditions])
        return combined
    if isinstance(condition, AnyOf):
        combined = np.logical_or.reduce([_evaluate_node(child, columns) for child in condition.conditions])
        return combined
    if isinstance(condition, Not):
        return ~_evaluate_node(condition.condition, columns)
    present = columns.present(condition.field)
    if condition.op == "is_null":
        return ~present
    if condition.op == "not_null":
        return present.copy()
    return present & _compare_column(condition, columns)


def _compare_column(comparison: Comparison, columns: _Columns) -> Mask:
    """Compare a column with a comparison's constants; rows with missing values are masked later."""
    sample = comparison.value[0] if isinstance(comparison.value, tuple) else comparison.value
    compares_numbers = isinstance(sample, (int, float)) and not isinstance(sample, bool)
    values = columns.numbers(comparison.field) if compares_numbers else columns.objects(comparison.field)
    if comparison.op in LIST_OPS:
        if compares_numbers:
            hits = np.isin(values, np.array(comparison.constants(), dtype=np.float64))
        else:
            # pandas hashes objects; np.isin would try to sort strings mixed with None.
            hits = pd.Series(values, dtype=object).isin(comparison.constants()).to_numpy(dtype=bool)
        return hits if comparison.op == "in" else ~hits
    if comparison.op == "between":
        low, high = comparison.constants()
        return (values >= low) & (values <= high)
    return np.asarray(_NUMPY_COMPARISONS[comparison.op](values, comparison.constant()), dtype=bool)
