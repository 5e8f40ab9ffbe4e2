"""Read a rule's JSON shape into condition nodes; field names and types are checked later, by check."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping

from campaigns.rules.nodes import (
    CONDITION_TYPES,
    LIST_OPS,
    MAX_DEPTH,
    MAX_LIST_VALUES,
    MAX_NODES,
    NULL_OPS,
    OPERATORS,
    AllOf,
    AnyOf,
    Comparison,
    Condition,
    ConditionError,
    JsonTree,
    Not,
    Scalar,
)


def join_path(base: str, key: str) -> str:
    """Append a key such as ``field``, ``all[2]`` or ``value[0]`` to a location path."""
    if not base:
        return key
    if not key:
        return base
    return f"{base}{key}" if key.startswith("[") else f"{base}.{key}"


def suggest(word: str, choices: Iterable[str], quote: Callable[[str], str] = lambda name: f"'{name}'") -> str | None:
    """Return a "did you mean" hint for the closest choice, or None when nothing is close."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean {quote(matches[0])}?" if matches else None


def _json_kind(value: object) -> str:
    """Name a JSON value's kind the way a manager would: text, number, list, object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


class _NodeBudget:
    """Count the nodes of a tree being read, and stop when there are too many."""

    def __init__(self) -> None:
        self.used = 0

    def spend(self, path: str) -> None:
        self.used += 1
        if self.used > MAX_NODES:
            raise ConditionError(f"the condition has too many parts (more than {MAX_NODES})", path=path)


_COMBINATOR_KEYS = ("all", "any", "not")
# Spellings from SQL and maths that string similarity would map to the wrong operator.
_OPERATOR_ALIASES = {"=": "==", "=>": ">=", "=<": "<=", "<>": "!=", "≥": ">=", "≤": "<=", "≠": "!="}
_COMPARISON_KEYS = ("field", "op", "value")


def _structure(tree: object, path: str, depth: int, budget: _NodeBudget) -> Condition:
    """Turn a JSON tree into condition nodes, checking shapes but not field names or types."""
    if depth > MAX_DEPTH:
        raise ConditionError(f"the condition is nested too deeply (more than {MAX_DEPTH} levels)", path=path)
    budget.spend(path)
    if not isinstance(tree, Mapping):
        raise ConditionError(f"expected a condition object, got {_json_kind(tree)}", path=path)
    for key in tree:
        if key not in _COMBINATOR_KEYS + _COMPARISON_KEYS:
            raise ConditionError(
                f"unknown key {key!r}", hint=suggest(str(key), _COMBINATOR_KEYS + _COMPARISON_KEYS), path=path
            )
    combinators = [key for key in _COMBINATOR_KEYS if key in tree]
    if combinators and len(tree) > 1:
        others = ", ".join(f"'{key}'" for key in tree)
        raise ConditionError(
            f"a condition object holds exactly one of 'all', 'any' or 'not', found {others}", path=path
        )
    if not tree:
        raise ConditionError("empty condition", hint="expected 'all', 'any', 'not' or a 'field' comparison", path=path)
    if combinators == ["not"]:
        child_path = join_path(path, "not")
        return Not(_structure(tree["not"], child_path, depth + 1, budget))
    if combinators:
        key = combinators[0]
        children = tree[key]
        key_path = join_path(path, key)
        if not isinstance(children, list):
            raise ConditionError(f"'{key}' needs a list of conditions, got {_json_kind(children)}", path=key_path)
        if not children:
            meaning = "everyone" if key == "all" else "no one"
            raise ConditionError(
                f"'{key}' needs at least one condition", hint=f"an empty '{key}' would match {meaning}", path=key_path
            )
        nodes = tuple(
            _structure(child, join_path(path, f"{key}[{index}]"), depth + 1, budget)
            for index, child in enumerate(children)
        )
        return AllOf(nodes) if key == "all" else AnyOf(nodes)
    return _structure_comparison(tree, path)


def _structure_comparison(tree: Mapping[str, object], path: str) -> Comparison:
    """Check a comparison's keys and the shape of its value for its operator."""
    if "field" not in tree:
        raise ConditionError("the comparison has no 'field'", path=path)
    field = tree["field"]
    if not isinstance(field, str) or not field:
        raise ConditionError(f"'field' must be a field name, got {_json_kind(field)}", path=join_path(path, "field"))
    if "op" not in tree:
        raise ConditionError("the comparison has no 'op'", hint=f"one of {', '.join(OPERATORS)}", path=path)
    op = tree["op"]
    op_path = join_path(path, "op")
    if not isinstance(op, str) or op not in OPERATORS:
        shown = op if isinstance(op, str) else _json_kind(op)
        alias = _OPERATOR_ALIASES.get(shown)
        hint = f"did you mean '{alias}'?" if alias else suggest(shown, OPERATORS)
        hint = hint or f"use one of {', '.join(OPERATORS)}"
        raise ConditionError(f"unknown operator '{shown}'", hint=hint, path=op_path)
    value_path = join_path(path, "value")
    value = tree.get("value")
    if op in NULL_OPS:
        if value is not None:
            raise ConditionError(f"'{op}' takes no value", path=value_path)
        return Comparison(field, op)
    if "value" not in tree:
        raise ConditionError(f"'{op}' needs a value", path=path)
    if op in LIST_OPS:
        if not isinstance(value, (list, tuple)):
            raise ConditionError(
                f"'{op}' needs a list of values, got {_json_kind(value)}",
                hint='e.g. ["film buffs", "lapsed learners"]',
                path=value_path,
            )
        if not value:
            raise ConditionError(f"'{op}' needs at least one value", path=value_path)
        if len(value) > MAX_LIST_VALUES:
            raise ConditionError(f"'{op}' has too many values (more than {MAX_LIST_VALUES})", path=value_path)
        items = tuple(_structure_scalar(item, join_path(value_path, f"[{index}]")) for index, item in enumerate(value))
        return Comparison(field, op, items)
    if op == "between":
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ConditionError("'between' needs a list of two values [low, high]", path=value_path)
        low, high = (_structure_scalar(item, join_path(value_path, f"[{index}]")) for index, item in enumerate(value))
        return Comparison(field, op, (low, high))
    if isinstance(value, (list, tuple)):
        raise ConditionError(
            f"'{op}' compares with one value, not a list",
            hint="use 'in' to match any of several values",
            path=value_path,
        )
    return Comparison(field, op, _structure_scalar(value, value_path))


def _structure_scalar(value: object, path: str) -> Scalar:
    """Accept a JSON constant, converting numpy-like number subclasses to plain Python numbers."""
    if value is None:
        raise ConditionError("the value is null", hint="use 'is_null' to test for a missing value", path=path)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConditionError(f"{value} is not a usable number", hint="numbers must be finite", path=path)
        return float(value)
    if isinstance(value, str):
        return str(value)
    raise ConditionError(f"expected a number, text or true/false, got {_json_kind(value)}", path=path)


def as_condition(tree: JsonTree | Condition) -> Condition:
    """Accept either condition nodes or a JSON tree, whose shape is checked on the way."""
    if isinstance(tree, CONDITION_TYPES):
        return tree
    return _structure(tree, "", 1, _NodeBudget())
