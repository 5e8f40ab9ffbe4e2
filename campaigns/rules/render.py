"""Write conditions back out: canonical rule text, the stored JSON tree, and the fields a rule tests."""

from __future__ import annotations

from campaigns.rules.nodes import (
    FIELD_NAME,
    KEYWORDS,
    LIST_OPS,
    NULL_OPS,
    AllOf,
    AnyOf,
    Comparison,
    Condition,
    ConditionError,
    JsonTree,
    Not,
    Scalar,
)
from campaigns.rules.structure import as_condition


def render(tree: JsonTree | Condition) -> str:
    """Write a condition as canonical text, which parses back to the same tree."""
    return _render(as_condition(tree))


def _render(condition: Condition) -> str:
    if isinstance(condition, AllOf):
        return " and ".join(_render_operand(child) for child in condition.conditions)
    if isinstance(condition, AnyOf):
        return " or ".join(_render_operand(child) for child in condition.conditions)
    if isinstance(condition, Not):
        child = condition.condition
        if _is_bare_field(child):
            return f"not {_render(child)}"
        return f"not ({_render(child)})"
    return _render_comparison(condition)


def _render_operand(condition: Condition) -> str:
    """Bracket nested groups, so the tree's grouping survives and readers need no precedence rules."""
    if isinstance(condition, (AllOf, AnyOf)):
        return f"({_render(condition)})"
    return _render(condition)


def _is_bare_field(condition: Condition) -> bool:
    return isinstance(condition, Comparison) and condition.op == "==" and condition.value is True


def _render_comparison(comparison: Comparison) -> str:
    field = comparison.field
    if not FIELD_NAME.fullmatch(field) or field.lower() in KEYWORDS:
        raise ConditionError(f"the field name {field!r} cannot be written as rule text")
    if _is_bare_field(comparison):
        return field
    if comparison.op == "is_null":
        return f"{field} is null"
    if comparison.op == "not_null":
        return f"{field} is not null"
    if comparison.op in LIST_OPS:
        keyword = "in" if comparison.op == "in" else "not in"
        return f"{field} {keyword} [{', '.join(render_constant(item) for item in comparison.constants())}]"
    if comparison.op == "between":
        low, high = comparison.constants()
        return f"{field} between {render_constant(low)} and {render_constant(high)}"
    return f"{field} {comparison.op} {render_constant(comparison.constant())}"


def render_constant(value: Scalar) -> str:
    """Write a constant as the text syntax reads it, so it parses back to the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return float.__repr__(value)
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def to_json(condition: Condition) -> dict[str, object]:
    """Return the JSON tree of a condition, as stored in the database."""
    if isinstance(condition, AllOf):
        return {"all": [to_json(child) for child in condition.conditions]}
    if isinstance(condition, AnyOf):
        return {"any": [to_json(child) for child in condition.conditions]}
    if isinstance(condition, Not):
        return {"not": to_json(condition.condition)}
    if condition.op in NULL_OPS:
        return {"field": condition.field, "op": condition.op}
    value = list(condition.value) if isinstance(condition.value, tuple) else condition.value
    return {"field": condition.field, "op": condition.op, "value": value}


def referenced_fields(tree: JsonTree | Condition) -> tuple[str, ...]:
    """List the fields a condition tests, each once, in order of first appearance."""
    seen: dict[str, None] = {}
    pending = [as_condition(tree)]
    while pending:
        condition = pending.pop()
        if isinstance(condition, (AllOf, AnyOf)):
            pending.extend(reversed(condition.conditions))
        elif isinstance(condition, Not):
            pending.append(condition.condition)
        else:
            seen.setdefault(condition.field, None)
    return tuple(seen)
