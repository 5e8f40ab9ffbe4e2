"""Validate a rule against the field registry: known fields, operators that suit them, constants that fit."""

from __future__ import annotations

import math
import re

from campaigns.rules.nodes import (
    CONDITION_TYPES,
    LIST_OPS,
    MAX_EXACT_INTEGER,
    NULL_OPS,
    OPS_BY_TYPE,
    AllOf,
    AnyOf,
    Comparison,
    Condition,
    ConditionError,
    FieldSpec,
    JsonTree,
    Not,
    Registry,
    Scalar,
)
from campaigns.rules.render import render_constant, to_json
from campaigns.rules.structure import as_condition, join_path, suggest


def validate(tree: JsonTree | Condition, registry: Registry) -> Condition:
    """Check a JSON rule against the field registry and return it as normalised condition nodes.

    Normalising turns decimal strings of number fields into numbers, lists into tuples, and an
    ``all`` or ``any`` of a single condition into that condition. Raises ConditionError, with
    the JSON path of the offending part, for anything wrong.
    """
    if isinstance(tree, CONDITION_TYPES):
        # Nodes built by hand get the same shape checks as JSON, by going through JSON.
        tree = to_json(tree)
    return _check(as_condition(tree), registry, "")


def _check(condition: Condition, registry: Registry, path: str) -> Condition:
    """Check every comparison of a condition against the registry, keeping paths for errors."""
    if isinstance(condition, Not):
        return Not(_check(condition.condition, registry, join_path(path, "not")))
    if isinstance(condition, (AllOf, AnyOf)):
        key = "all" if isinstance(condition, AllOf) else "any"
        checked = tuple(
            _check(child, registry, join_path(path, f"{key}[{index}]"))
            for index, child in enumerate(condition.conditions)
        )
        if len(checked) == 1:
            return checked[0]
        return type(condition)(checked)
    return _check_comparison(condition, registry, path)


def _check_comparison(comparison: Comparison, registry: Registry, path: str) -> Comparison:
    """Check a comparison's field exists, its operator suits the field's type, and its values fit."""
    field, op = comparison.field, comparison.op
    spec = registry.get(field)
    if spec is None:
        hint = suggest(field, registry)
        if hint is None and len(registry) <= 12:
            hint = "known fields: " + ", ".join(sorted(registry))
        raise ConditionError(f"unknown field '{field}'", hint=hint, path=join_path(path, "field"))
    if op not in OPS_BY_TYPE[spec.type]:
        raise ConditionError(
            _wrong_operator_problem(field, spec.type, op),
            hint=_operator_hint(field, spec.type),
            path=join_path(path, "op"),
        )
    value_path = join_path(path, "value")
    if op in NULL_OPS:
        return comparison
    if op == "between":
        # Only number fields take 'between' (checked above), so both ends are numbers.
        low, high = (
            _check_number(field, item, join_path(value_path, f"[{index}]"))
            for index, item in enumerate(comparison.constants())
        )
        if low > high:
            shown = f"{render_constant(low)} > {render_constant(high)}"
            raise ConditionError(f"'between' needs the low value first, but {shown}", path=value_path)
        return Comparison(field, op, (low, high))
    if op in LIST_OPS:
        items = tuple(
            _check_constant(field, spec, item, join_path(value_path, f"[{index}]"))
            for index, item in enumerate(comparison.constants())
        )
        return Comparison(field, op, items)
    return Comparison(field, op, _check_constant(field, spec, comparison.constant(), value_path))


def _wrong_operator_problem(field: str, field_type: str, op: str) -> str:
    """Explain why an operator does not suit a field, in the words of the field's type."""
    if op in LIST_OPS:
        return f"'{field}' is a {field_type}; '{op}' needs a number or a category"
    return f"'{field}' is a {field_type}; '{op}' needs a number"


def _operator_hint(field: str, field_type: str) -> str:
    """Say which operators a field does support."""
    if field_type == "bool":
        return f"write '{field}', 'not {field}' or compare with == true / == false"
    return "use ==, !=, in or not in"


_DECIMAL_STRING = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _check_constant(field: str, spec: FieldSpec, value: Scalar, path: str) -> Scalar:
    """Check a constant suits the field's type and return it in normalised form."""
    if spec.type == "number":
        return _check_number(field, value, path)
    if spec.type == "bool":
        if not isinstance(value, bool):
            raise ConditionError(f"'{field}' is a bool; {render_constant(value)} is not true or false", path=path)
        return value
    if not isinstance(value, str):
        raise ConditionError(
            f"'{field}' is a category; {render_constant(value)} is not text",
            hint=f"write it in quotes: {render_constant(render_constant(value))}",
            path=path,
        )
    if spec.allowed_values is not None and value not in spec.allowed_values:
        hint = suggest(value, spec.allowed_values, quote=render_constant)
        if hint is None and len(spec.allowed_values) <= 12:
            hint = "known values: " + ", ".join(render_constant(allowed) for allowed in spec.allowed_values)
        raise ConditionError(f"{render_constant(value)} is not a known value of '{field}'", hint=hint, path=path)
    return value


def _check_number(field: str, value: Scalar, path: str) -> int | float:
    """Return a number constant, reading decimal strings, within the exactly comparable range."""
    if isinstance(value, bool):
        raise ConditionError(f"'{field}' is a number; {render_constant(value)} is not a number", path=path)
    if isinstance(value, str):
        if len(value) > 50 or not _DECIMAL_STRING.fullmatch(value):
            raise ConditionError(f"'{field}' is a number; {render_constant(value)} is not a number", path=path)
        value = float(value) if any(mark in value for mark in ".eE") else int(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConditionError("the number is too large", path=path)
    if isinstance(value, int) and abs(value) > MAX_EXACT_INTEGER:
        raise ConditionError(
            "the number is too large to compare exactly", hint="keep whole numbers within ±2**53", path=path
        )
    return value
