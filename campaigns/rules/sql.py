"""Compile conditions to SQL WHERE fragments whose constants travel only as parameters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from campaigns.rules.nodes import LIST_OPS, AllOf, AnyOf, Condition, Not, Scalar


@dataclass(frozen=True)
class SqlFragment:
    """Carry a WHERE-clause fragment with %s placeholders and the parameters that fill them, in order."""

    sql: str
    params: tuple[Scalar, ...]


_SQL_COMPARISONS = {"==": "=", "!=": "<>", ">": ">", ">=": ">=", "<": "<", "<=": "<="}


def compile_sql(condition: Condition, columns: Mapping[str, str]) -> SqlFragment:
    """Compile a condition to a WHERE fragment for PostgreSQL or SQLite.

    ``columns`` maps each referenced field to the SQL expression for its column, e.g.
    ``'"features"."watching_count"'``; these come from our code, never from a rule. Constants
    only ever travel as parameters. Every comparison is guarded with ``IS NOT NULL`` so it is
    false, never NULL, on a missing value, which keeps NOT and OR two-valued as in the other
    evaluators. Bool constants are passed as Python bools, which SQLite stores as 1 and 0.
    """
    params: list[Scalar] = []
    sql = _compile_node(condition, columns, params)
    return SqlFragment(sql, tuple(params))


def _compile_node(condition: Condition, columns: Mapping[str, str], params: list[Scalar]) -> str:
    if isinstance(condition, (AllOf, AnyOf)):
        joiner = " AND " if isinstance(condition, AllOf) else " OR "
        return "(" + joiner.join(_compile_node(child, columns, params) for child in condition.conditions) + ")"
    if isinstance(condition, Not):
        return f"(NOT {_compile_node(condition.condition, columns, params)})"
    if condition.field not in columns:
        raise KeyError(f"no SQL column is mapped for field '{condition.field}'")
    column = columns[condition.field]
    if condition.op == "is_null":
        return f"({column} IS NULL)"
    if condition.op == "not_null":
        return f"({column} IS NOT NULL)"
    if condition.op in LIST_OPS:
        params.extend(condition.constants())
        placeholders = ", ".join("%s" for _ in condition.constants())
        keyword = "IN" if condition.op == "in" else "NOT IN"
        return f"({column} IS NOT NULL AND {column} {keyword} ({placeholders}))"
    if condition.op == "between":
        params.extend(condition.constants())
        return f"({column} IS NOT NULL AND {column} >= %s AND {column} <= %s)"
    params.append(condition.constant())
    return f"({column} IS NOT NULL AND {column} {_SQL_COMPARISONS[condition.op]} %s)"
