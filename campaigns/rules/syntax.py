"""Campaign rule conditions: a small, safe language for "which users qualify".

A partnership manager writes a rule such as ``watching_count > 10 and purchasing_count > 5``.
The rule is stored as JSON, checked against a registry of known fields when it is saved, and
evaluated over all users at once, either on a pandas table or as an SQL WHERE clause. Nothing
here calls ``eval()``, and nothing loops over users in Python.

JSON format
-----------
A condition is a JSON object of one of these shapes::

    {"all": [condition, ...]}                      every condition holds (at least one)
    {"any": [condition, ...]}                      some condition holds (at least one)
    {"not": condition}                             the condition does not hold
    {"field": "watching_count", "op": ">", "value": 10}

Operators, and the field types they work on:

    ==  !=                    number, category, bool    value: one constant
    >  >=  <  <=              number                    value: one constant
    between                   number                    value: [low, high], both ends included
    in  not_in                number, category          value: a non-empty list of constants
    is_null  not_null         any type                  no value (or "value": null)

Constants are JSON numbers, strings and true/false. A number field also accepts a decimal
string such as "0.6" (what Django's JSON encoder writes for a Decimal); ``validate`` turns
it into a number. Category values are compared as exact strings.

Text syntax
-----------
The admin and the command line use a text form that parses to the same tree::

    watching_count > 10 and purchasing_count > 5
    propensity >= 0.6 or segment in ["film buffs", "lapsed learners"]
    not marketing_consent and occupation == "教师"
    watching_count between 3 and 10 and churn_risk is not null

Precedence is ``not`` over ``and`` over ``or``; parentheses group. Strings take single or
double quotes, with ``\\\\``, ``\\"`` and ``\\'`` as the only escapes. ``a and b and c``
is one ``all`` with three parts, while ``(a and b) and c`` keeps the inner group. A bare
field name ``marketing_consent`` means ``marketing_consent == true``. Keywords (and, or,
not, in, between, is, null, true, false) are case-insensitive; field names are not.
``render`` writes the canonical text back, so that ``parse(render(tree)) == tree`` holds for
every tree ``to_json(validate(...))`` returns.

Missing values
--------------
None, NaN, pandas NA and SQL NULL all mean "missing". Every comparison with a missing value
is false (so ``x != 3`` does not select users whose x is missing); ``not`` is plain negation
of its already true-or-false child (so ``not x > 3`` does select them); ``is_null`` and
``not_null`` test for missing values. The reference, vectorised and SQL evaluators implement
exactly this and agree row for row.

Typical use::

    condition = validate_text("watching_count > 10", REGISTRY)    # or validate(json, REGISTRY)
    stored_json = to_json(condition)
    mask = evaluate_table(condition, features_frame)
    where = compile_sql(condition, {"watching_count": '"features"."watching_count"'})
"""

from __future__ import annotations

import difflib
import math
import operator
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias

import numpy as np
import pandas as pd

# Limits keep a hostile or broken rule from exhausting the stack, the parser or the database.
MAX_DEPTH = 20
MAX_NODES = 200
MAX_LIST_VALUES = 1000
MAX_TEXT_LENGTH = 100_000
# Text may spend two levels of nesting, a 'not' and a bracket, on one level of the tree; the
# tree's own depth is checked by validation, this only keeps the parser's stack small.
MAX_TEXT_NESTING = 2 * MAX_DEPTH
# Integers beyond 2**53 are not exactly representable as float64, so numpy, SQL and Python
# could disagree about comparisons with them.
MAX_EXACT_INTEGER = 2**53

FieldType = Literal["number", "category", "bool"]
FIELD_TYPES: tuple[FieldType, ...] = ("number", "category", "bool")

Scalar: TypeAlias = "bool | int | float | str"
JsonTree: TypeAlias = "Mapping[str, object]"

ORDERING_OPS = (">", ">=", "<", "<=")
EQUALITY_OPS = ("==", "!=")
LIST_OPS = ("in", "not_in")
NULL_OPS = ("is_null", "not_null")
OPERATORS = EQUALITY_OPS + ORDERING_OPS + LIST_OPS + ("between",) + NULL_OPS

_OPS_BY_TYPE: dict[str, frozenset[str]] = {
    "number": frozenset(OPERATORS),
    "category": frozenset(EQUALITY_OPS + LIST_OPS + NULL_OPS),
    "bool": frozenset(EQUALITY_OPS + NULL_OPS),
}

KEYWORDS = frozenset({"and", "or", "not", "in", "between", "is", "null", "true", "false"})


class ConditionError(ValueError):
    """Report a rule that cannot be parsed or validated, and point at the part that is wrong.

    ``problem`` says what is wrong and ``hint`` how to fix it. A JSON rule is located by
    ``path`` (e.g. ``all[1].value``); a text rule by ``line`` and ``column`` (1-based), and
    the message then ends with the offending line and a caret under the bad part.
    """

    def __init__(
        self,
        problem: str,
        *,
        hint: str | None = None,
        path: str | None = None,
        text: str | None = None,
        span: tuple[int, int] | None = None,
    ) -> None:
        self.problem = problem
        self.hint = hint
        self.path = path
        self.text = text
        self.span = span
        self.line: int | None = None
        self.column: int | None = None
        if text is not None and span is not None:
            self.line = text.count("\n", 0, span[0]) + 1
            self.column = span[0] - (text.rfind("\n", 0, span[0]) + 1) + 1
        super().__init__(self._compose())

    def _compose(self) -> str:
        hint = f" ({self.hint})" if self.hint else ""
        if self.text is not None and self.span is not None:
            return f"{self.problem} at {self._text_location()}{hint}\n{self._caret_lines()}"
        if self.path is not None:
            return f"{self.problem} at {self.path or 'the top level'}{hint}"
        return f"{self.problem}{hint}"

    def _text_location(self) -> str:
        if "\n" in self.text:
            return f"line {self.line}, column {self.column}"
        return f"column {self.column}"

    def _caret_lines(self) -> str:
        start, end = self.span
        line_start = self.text.rfind("\n", 0, start) + 1
        line_end = self.text.find("\n", start)
        if line_end == -1:
            line_end = len(self.text)
        line = self.text[line_start:line_end].replace("\t", " ")
        padding = " " * _display_width(line[: start - line_start])
        carets = "^" * max(1, _display_width(self.text[start:min(end, line_end)]))
        return f"    {line}\n    {padding}{carets}"


def _display_width(text: str) -> int:
    """Count terminal columns, two for wide characters, so carets line up under Chinese text."""
    return sum(2 if unicodedata.east_asian_width(char) in ("W", "F") else 1 for char in text)


@dataclass(frozen=True)
class FieldSpec:
    """Describe a field rules may test: its type, its allowed values if a category, what it means."""

    type: FieldType
    allowed_values: tuple[str, ...] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.type not in FIELD_TYPES:
            raise ValueError(f"field type must be one of {', '.join(FIELD_TYPES)}, not {self.type!r}")
        if self.allowed_values is not None:
            if self.type != "category":
                raise ValueError("only category fields can list allowed values")
            values = tuple(self.allowed_values)
            if not all(isinstance(value, str) for value in values):
                raise ValueError("allowed values of a category must be strings")
            object.__setattr__(self, "allowed_values", values)


Registry: TypeAlias = Mapping[str, FieldSpec]


@dataclass(frozen=True)
class Comparison:
    """Test one field against a constant; ``value`` is a tuple for in, not_in and between."""

    field: str
    op: str
    value: Scalar | tuple[Scalar, ...] | None = None


@dataclass(frozen=True)
class AllOf:
    """Hold when every one of the conditions holds."""

    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    """Hold when at least one of the conditions holds."""

    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    """Hold when the condition does not hold."""

    condition: Condition


Condition: TypeAlias = "AllOf | AnyOf | Not | Comparison"
_CONDITION_TYPES = (AllOf, AnyOf, Not, Comparison)


# ---------------------------------------------------------------------------------------------
# JSON structure: shapes only, no registry


def _join_path(base: str, key: str) -> str:
    """Append a key such as ``field``, ``all[2]`` or ``value[0]`` to a location path."""
    if not base:
        return key
    if not key:
        return base
    return f"{base}{key}" if key.startswith("[") else f"{base}.{key}"


def _suggest(word: str, choices: object, quote: Callable[[str], str] = lambda name: f"'{name}'") -> str | None:
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
                f"unknown key {key!r}", hint=_suggest(str(key), _COMBINATOR_KEYS + _COMPARISON_KEYS), path=path
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
        child_path = _join_path(path, "not")
        return Not(_structure(tree["not"], child_path, depth + 1, budget))
    if combinators:
        key = combinators[0]
        children = tree[key]
        key_path = _join_path(path, key)
        if not isinstance(children, list):
            raise ConditionError(f"'{key}' needs a list of conditions, got {_json_kind(children)}", path=key_path)
        if not children:
            meaning = "everyone" if key == "all" else "no one"
            raise ConditionError(
                f"'{key}' needs at least one condition", hint=f"an empty '{key}' would match {meaning}", path=key_path
            )
        nodes = tuple(
            _structure(child, _join_path(path, f"{key}[{index}]"), depth + 1, budget)
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
        raise ConditionError(f"'field' must be a field name, got {_json_kind(field)}", path=_join_path(path, "field"))
    if "op" not in tree:
        raise ConditionError("the comparison has no 'op'", hint=f"one of {', '.join(OPERATORS)}", path=path)
    op = tree["op"]
    op_path = _join_path(path, "op")
    if op not in OPERATORS:
        shown = op if isinstance(op, str) else _json_kind(op)
        alias = _OPERATOR_ALIASES.get(shown)
        hint = f"did you mean '{alias}'?" if alias else _suggest(shown, OPERATORS)
        hint = hint or f"use one of {', '.join(OPERATORS)}"
        raise ConditionError(f"unknown operator '{shown}'", hint=hint, path=op_path)
    value_path = _join_path(path, "value")
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
        items = tuple(_structure_scalar(item, _join_path(value_path, f"[{index}]")) for index, item in enumerate(value))
        return Comparison(field, op, items)
    if op == "between":
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ConditionError("'between' needs a list of two values [low, high]", path=value_path)
        low, high = (_structure_scalar(item, _join_path(value_path, f"[{index}]")) for index, item in enumerate(value))
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


def _as_condition(tree: JsonTree | Condition) -> Condition:
    """Accept either condition nodes or a JSON tree, whose shape is checked on the way."""
    if isinstance(tree, _CONDITION_TYPES):
        return tree
    return _structure(tree, "", 1, _NodeBudget())


# ---------------------------------------------------------------------------------------------
# Validation against the field registry


def validate(tree: JsonTree, registry: Registry) -> Condition:
    """Check a JSON rule against the field registry and return it as normalised condition nodes.

    Normalising turns decimal strings of number fields into numbers, lists into tuples, and an
    ``all`` or ``any`` of a single condition into that condition. Raises ConditionError, with
    the JSON path of the offending part, for anything wrong.
    """
    if isinstance(tree, _CONDITION_TYPES):
        # Nodes built by hand get the same shape checks as JSON, by going through JSON.
        tree = to_json(tree)
    return _check(_as_condition(tree), registry, "")


def _check(condition: Condition, registry: Registry, path: str) -> Condition:
    """Check every comparison of a condition against the registry, keeping paths for errors."""
    if isinstance(condition, Not):
        return Not(_check(condition.condition, registry, _join_path(path, "not")))
    if isinstance(condition, (AllOf, AnyOf)):
        key = "all" if isinstance(condition, AllOf) else "any"
        checked = tuple(
            _check(child, registry, _join_path(path, f"{key}[{index}]"))
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
        hint = _suggest(field, registry)
        if hint is None and len(registry) <= 12:
            hint = "known fields: " + ", ".join(sorted(registry))
        raise ConditionError(f"unknown field '{field}'", hint=hint, path=_join_path(path, "field"))
    if op not in _OPS_BY_TYPE[spec.type]:
        raise ConditionError(
            _wrong_operator_problem(field, spec.type, op),
            hint=_operator_hint(field, spec.type),
            path=_join_path(path, "op"),
        )
    value_path = _join_path(path, "value")
    if op in NULL_OPS:
        return comparison
    if op in LIST_OPS or op == "between":
        items = tuple(
            _check_constant(field, spec, item, _join_path(value_path, f"[{index}]"))
            for index, item in enumerate(comparison.value)
        )
        if op == "between" and items[0] > items[1]:
            low, high = (_render_constant(item) for item in items)
            raise ConditionError(f"'between' needs the low value first, but {low} > {high}", path=value_path)
        return Comparison(field, op, items)
    return Comparison(field, op, _check_constant(field, spec, comparison.value, value_path))


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
            raise ConditionError(f"'{field}' is a bool; {_render_constant(value)} is not true or false", path=path)
        return value
    if not isinstance(value, str):
        raise ConditionError(
            f"'{field}' is a category; {_render_constant(value)} is not text",
            hint=f"write it in quotes: {_render_constant(_render_constant(value))}",
            path=path,
        )
    if spec.allowed_values is not None and value not in spec.allowed_values:
        hint = _suggest(value, spec.allowed_values, quote=_render_constant)
        if hint is None and len(spec.allowed_values) <= 12:
            hint = "known values: " + ", ".join(_render_constant(allowed) for allowed in spec.allowed_values)
        raise ConditionError(f"{_render_constant(value)} is not a known value of '{field}'", hint=hint, path=path)
    return value


def _check_number(field: str, value: Scalar, path: str) -> int | float:
    """Return a number constant, reading decimal strings, within the exactly comparable range."""
    if isinstance(value, bool):
        raise ConditionError(f"'{field}' is a number; {_render_constant(value)} is not a number", path=path)
    if isinstance(value, str):
        if len(value) > 50 or not _DECIMAL_STRING.fullmatch(value):
            raise ConditionError(f"'{field}' is a number; {_render_constant(value)} is not a number", path=path)
        value = float(value) if any(mark in value for mark in ".eE") else int(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConditionError("the number is too large", path=path)
    if isinstance(value, int) and abs(value) > MAX_EXACT_INTEGER:
        raise ConditionError(
            "the number is too large to compare exactly", hint="keep whole numbers within ±2**53", path=path
        )
    return value


# ---------------------------------------------------------------------------------------------
# Text syntax: tokenizer


@dataclass(frozen=True)
class _Token:
    """Hold one piece of rule text: its kind, its source text, its value and where it sits."""

    kind: Literal["name", "keyword", "number", "string", "operator", "punctuation", "end"]
    text: str
    value: object
    start: int
    end: int


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_OPERATOR_TOKENS = ("==", "!=", ">=", "<=", ">", "<")
_PUNCTUATION = "()[],"
# Common slips, mostly from SQL, spreadsheets, programming languages and Chinese keyboards.
_LIKELY_MISTAKES = {
    "=>": "did you mean '>='?",
    "=<": "did you mean '<='?",
    "<>": "did you mean '!='?",
    "&&": "write 'and'",
    "||": "write 'or'",
    "&": "write 'and'",
    "|": "write 'or'",
    "!": "write 'not'",
    "=": "did you mean '=='?",
    "≥": "write '>='",
    "≤": "write '<='",
    "≠": "write '!='",
    "“": 'use straight quotes " or \'',
    "”": 'use straight quotes " or \'',
    "‘": 'use straight quotes " or \'',
    "’": 'use straight quotes " or \'',
    "（": "use the ASCII bracket (",
    "）": "use the ASCII bracket )",
    "，": "use the ASCII comma ,",
    "【": "use the ASCII bracket [",
    "】": "use the ASCII bracket ]",
}
_STRING_ESCAPES = ("\\", '"', "'")


def _tokenize(text: str) -> list[_Token]:
    """Split rule text into tokens, ending with an "end" token at the end of the text."""
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        char = text[position]
        if char.isspace():
            position += 1
            continue
        if char in "\"'":
            token = _scan_string(text, position)
        elif number := _NUMBER.match(text, position):
            token = _number_token(text, number.group(), position)
        elif name := _NAME.match(text, position):
            word = name.group()
            if word.lower() in KEYWORDS:
                token = _Token("keyword", word, word.lower(), position, name.end())
            else:
                token = _Token("name", word, word, position, name.end())
        elif text.startswith(tuple(mistake for mistake in _LIKELY_MISTAKES if len(mistake) == 2), position):
            mistake = text[position : position + 2]
            span = (position, position + 2)
            raise ConditionError(f"unexpected '{mistake}'", hint=_LIKELY_MISTAKES[mistake], text=text, span=span)
        elif operator_text := next((op for op in _OPERATOR_TOKENS if text.startswith(op, position)), None):
            token = _Token("operator", operator_text, operator_text, position, position + len(operator_text))
        elif char in _PUNCTUATION:
            token = _Token("punctuation", char, char, position, position + 1)
        else:
            span = (position, position + 1)
            hint = _LIKELY_MISTAKES.get(char)
            raise ConditionError(f"unexpected character '{char}'", hint=hint, text=text, span=span)
        tokens.append(token)
        position = token.end
    tokens.append(_Token("end", "", None, len(text), len(text)))
    return tokens


def _number_token(text: str, number_text: str, start: int) -> _Token:
    """Read a number literal: an integer unless it has a decimal point or an exponent."""
    span = (start, start + len(number_text))
    if len(number_text) > 50:
        raise ConditionError("this number is too long", text=text, span=span)
    value: int | float = float(number_text) if any(mark in number_text for mark in ".eE") else int(number_text)
    if not math.isfinite(value):
        raise ConditionError("this number is too large", text=text, span=span)
    return _Token("number", number_text, value, *span)


def _scan_string(text: str, start: int) -> _Token:
    """Read a quoted string starting at ``start``, resolving its backslash escapes."""
    quote = text[start]
    chars: list[str] = []
    position = start + 1
    while position < len(text):
        char = text[position]
        if char == quote:
            return _Token("string", text[start : position + 1], "".join(chars), start, position + 1)
        if char == "\\" and position + 1 < len(text):
            escaped = text[position + 1]
            if escaped not in _STRING_ESCAPES:
                raise ConditionError(
                    f"unknown escape '\\{escaped}' in quoted text",
                    hint="only \\\\, \\\" and \\' may follow a backslash",
                    text=text,
                    span=(position, position + 2),
                )
            chars.append(escaped)
            position += 2
            continue
        chars.append(char)
        position += 1
    raise ConditionError(
        "this quoted text is never closed", hint=f"add a closing {quote}", text=text, span=(start, start + 1)
    )


# ---------------------------------------------------------------------------------------------
# Text syntax: recursive-descent parser
#
#   condition  := or_expr END
#   or_expr    := and_expr ("or" and_expr)*
#   and_expr   := not_expr ("and" not_expr)*
#   not_expr   := "not" not_expr | primary
#   primary    := "(" or_expr ")" | comparison
#   comparison := NAME ( OPERATOR constant | ["not"] "in" list | "between" constant "and" constant
#                      | "is" ["not"] "null" | <nothing, meaning == true> )
#   list       := "[" constant ("," constant)* [","] "]"
#   constant   := NUMBER | STRING | "true" | "false"


@dataclass(frozen=True)
class _Parsed:
    """Pair a parsed piece of text's JSON tree with the text span of each part, by relative path."""

    tree: dict[str, object]
    spans: dict[str, tuple[int, int]]

    @property
    def start(self) -> int:
        return self.spans[""][0]

    @property
    def end(self) -> int:
        return self.spans[""][1]

    def spans_under(self, prefix: str) -> dict[str, tuple[int, int]]:
        """Return this piece's spans with paths relative to a parent, under ``prefix``."""
        return {_join_path(prefix, path): span for path, span in self.spans.items()}


def _describe(token: _Token) -> str:
    """Name a token for an error message."""
    if token.kind == "end":
        return "the end of the condition"
    if token.kind == "string":
        return f"the text {token.text}"
    if token.kind == "number":
        return f"the number {token.text}"
    return f"'{token.text}'"


class _Parser:
    """Parse rule text into a JSON tree, remembering where each part of the tree came from."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._tokens = _tokenize(text)
        self._index = 0
        self._nesting = 0

    def parse(self) -> _Parsed:
        """Parse the whole text as one condition."""
        if self._peek().kind == "end":
            raise ConditionError("the condition is empty", hint="e.g. watching_count > 10")
        parsed = self._parse_or()
        token = self._peek()
        if token.kind != "end":
            hint = "there is no '(' for this ')'" if token.text == ")" else None
            problem = f"expected 'and', 'or' or the end of the condition, got {_describe(token)}"
            raise self._error(problem, token, hint=hint)
        return parsed

    def _peek(self, ahead: int = 0) -> _Token:
        return self._tokens[min(self._index + ahead, len(self._tokens) - 1)]

    def _advance(self) -> _Token:
        token = self._peek()
        self._index += 1
        return token

    def _previous(self) -> _Token:
        return self._tokens[self._index - 1]

    def _at_keyword(self, word: str, ahead: int = 0) -> bool:
        token = self._peek(ahead)
        return token.kind == "keyword" and token.value == word

    def _at_punctuation(self, char: str) -> bool:
        token = self._peek()
        return token.kind == "punctuation" and token.value == char

    def _error(self, problem: str, token: _Token, hint: str | None = None) -> ConditionError:
        return ConditionError(problem, hint=hint, text=self._text, span=(token.start, token.end))

    def _parse_or(self) -> _Parsed:
        operands = [self._parse_and()]
        while self._at_keyword("or"):
            self._advance()
            operands.append(self._parse_and())
        return self._combine("any", operands)

    def _parse_and(self) -> _Parsed:
        operands = [self._parse_not()]
        while self._at_keyword("and"):
            self._advance()
            operands.append(self._parse_not())
        return self._combine("all", operands)

    def _combine(self, key: str, operands: list[_Parsed]) -> _Parsed:
        if len(operands) == 1:
            return operands[0]
        spans = {"": (operands[0].start, operands[-1].end)}
        for index, operand in enumerate(operands):
            spans.update(operand.spans_under(f"{key}[{index}]"))
        return _Parsed({key: [operand.tree for operand in operands]}, spans)

    def _parse_not(self) -> _Parsed:
        if not self._at_keyword("not"):
            return self._parse_primary()
        not_token = self._advance()
        self._enter(not_token)
        operand = self._parse_not()
        self._nesting -= 1
        return _Parsed({"not": operand.tree}, {"": (not_token.start, operand.end), **operand.spans_under("not")})

    def _enter(self, token: _Token) -> None:
        """Count one more level of brackets or 'not', refusing nesting deep enough to hurt."""
        self._nesting += 1
        if self._nesting > MAX_TEXT_NESTING:
            raise self._error(f"brackets and 'not' are nested too deeply (more than {MAX_TEXT_NESTING} levels)", token)

    def _parse_primary(self) -> _Parsed:
        token = self._peek()
        if self._at_punctuation("("):
            self._advance()
            self._enter(token)
            inner = self._parse_or()
            if not self._at_punctuation(")"):
                found = self._peek()
                problem = f"expected ')' to close the '(' at column {self._column(token)}, got {_describe(found)}"
                raise self._error(problem, found)
            self._advance()
            self._nesting -= 1
            return inner
        if token.kind == "name":
            return self._parse_comparison()
        if self._index == 0:
            raise self._error(f"expected a field name or '(', got {_describe(token)}", token)
        problem = f"expected a field name or '(' after {_describe(self._previous())}, got {_describe(token)}"
        raise self._error(problem, token)

    def _column(self, token: _Token) -> int:
        return token.start - (self._text.rfind("\n", 0, token.start) + 1) + 1

    def _parse_comparison(self) -> _Parsed:
        name = self._advance()
        field_span = (name.start, name.end)
        token = self._peek()
        if token.kind == "operator":
            self._advance()
            value, value_span = self._parse_constant(after=token)
            return self._comparison(name, token.value, (token.start, token.end), value, value_span)
        if self._at_keyword("in") or (self._at_keyword("not") and self._at_keyword("in", ahead=1)):
            op = "in" if self._at_keyword("in") else "not_in"
            first = self._advance()
            if op == "not_in":
                self._advance()
            return self._parse_list_comparison(name, op, (first.start, self._previous().end))
        if self._at_keyword("between"):
            self._advance()
            low, low_span = self._parse_constant(after=token)
            if not self._at_keyword("and"):
                found = self._peek()
                raise self._error(f"expected 'and' after the low value of 'between', got {_describe(found)}", found)
            and_token = self._advance()
            high, high_span = self._parse_constant(after=and_token)
            item_spans = {"value[0]": low_span, "value[1]": high_span}
            value_span = (low_span[0], high_span[1])
            return self._comparison(name, "between", (token.start, token.end), [low, high], value_span, item_spans)
        if self._at_keyword("is"):
            self._advance()
            op = "is_null"
            if self._at_keyword("not"):
                self._advance()
                op = "not_null"
            if not self._at_keyword("null"):
                found = self._peek()
                raise self._error(f"expected 'null' after {_describe(self._previous())}, got {_describe(found)}", found)
            null_token = self._advance()
            return _Parsed(
                {"field": name.value, "op": op},
                {"": (name.start, null_token.end), "field": field_span, "op": (token.start, null_token.end)},
            )
        if token.kind == "end" or self._at_punctuation(")") or self._at_keyword("and") or self._at_keyword("or"):
            # A bare field name reads as "is true", so that `not marketing_consent` works.
            return self._comparison(name, "==", field_span, True, field_span)
        raise self._error(
            f"expected a comparison after '{name.text}', got {_describe(token)}",
            token,
            hint="e.g. ==, !=, >, >=, <, <=, in [...], between ... and ..., is null",
        )

    def _comparison(
        self,
        name: _Token,
        op: str,
        op_span: tuple[int, int],
        value: object,
        value_span: tuple[int, int],
        item_spans: Mapping[str, tuple[int, int]] | None = None,
    ) -> _Parsed:
        spans = {"": (name.start, value_span[1]), "field": (name.start, name.end), "op": op_span, "value": value_span}
        spans.update(item_spans or {})
        return _Parsed({"field": name.value, "op": op, "value": value}, spans)

    def _parse_list_comparison(self, name: _Token, op: str, op_span: tuple[int, int]) -> _Parsed:
        opening = self._peek()
        if not self._at_punctuation("["):
            hint = 'use square brackets, e.g. in ["a", "b"]' if opening.text == "(" else 'e.g. in ["a", "b"]'
            problem = f"expected '[' after {_describe(self._previous())}, got {_describe(opening)}"
            raise self._error(problem, opening, hint=hint)
        self._advance()
        values: list[object] = []
        item_spans: dict[str, tuple[int, int]] = {}
        while not self._at_punctuation("]"):
            value, span = self._parse_constant(after=self._previous())
            item_spans[f"value[{len(values)}]"] = span
            values.append(value)
            if self._at_punctuation(","):
                self._advance()
            elif not self._at_punctuation("]"):
                raise self._error(f"expected ',' or ']' in the list, got {_describe(self._peek())}", self._peek())
        closing = self._advance()
        return self._comparison(name, op, op_span, values, (opening.start, closing.end), item_spans)

    def _parse_constant(self, after: _Token) -> tuple[Scalar, tuple[int, int]]:
        token = self._peek()
        span = (token.start, token.end)
        if token.kind in ("number", "string"):
            self._advance()
            return token.value, span
        if self._at_keyword("true") or self._at_keyword("false"):
            self._advance()
            return token.value == "true", span
        if self._at_keyword("null"):
            hint = "write 'field is null' to test for a missing value"
            raise self._error("null is not a value to compare with", token, hint=hint)
        if token.kind == "name":
            raise self._error(
                f"expected a value after {_describe(after)}, got the name '{token.text}'",
                token,
                hint=f'put text in quotes: "{token.text}"',
            )
        if token.text == "[":
            raise self._error("a list of values only goes after 'in' or 'not in'", token)
        raise self._error(f"expected a value after {_describe(after)}, got {_describe(token)}", token)


def _parse_with_spans(text: str) -> _Parsed:
    if not isinstance(text, str):
        raise ConditionError(f"a condition text must be a string, got {type(text).__name__}")
    if len(text) > MAX_TEXT_LENGTH:
        raise ConditionError(f"the condition text is too long (more than {MAX_TEXT_LENGTH} characters)")
    return _Parser(text).parse()


def parse(text: str) -> dict[str, object]:
    """Parse rule text into a JSON tree, checking syntax only; see validate_text for the registry."""
    return _parse_with_spans(text).tree


def validate_text(text: str, registry: Registry) -> Condition:
    """Parse rule text and validate it against the registry; errors point at a line and column."""
    parsed = _parse_with_spans(text)
    try:
        return validate(parsed.tree, registry)
    except ConditionError as error:
        path = error.path or ""
        while path not in parsed.spans:
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        span = parsed.spans[path]
        raise ConditionError(error.problem, hint=error.hint, path=error.path, text=text, span=span) from None


# ---------------------------------------------------------------------------------------------
# Rendering, JSON and referenced fields


def render(tree: JsonTree | Condition) -> str:
    """Write a condition as canonical text, which parses back to the same tree."""
    return _render(_as_condition(tree))


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
    if not _NAME.fullmatch(field) or field.lower() in KEYWORDS:
        raise ConditionError(f"the field name {field!r} cannot be written as rule text")
    if _is_bare_field(comparison):
        return field
    if comparison.op == "is_null":
        return f"{field} is null"
    if comparison.op == "not_null":
        return f"{field} is not null"
    if comparison.op in LIST_OPS:
        keyword = "in" if comparison.op == "in" else "not in"
        return f"{field} {keyword} [{', '.join(_render_constant(item) for item in comparison.value)}]"
    if comparison.op == "between":
        low, high = comparison.value
        return f"{field} between {_render_constant(low)} and {_render_constant(high)}"
    return f"{field} {comparison.op} {_render_constant(comparison.value)}"


def _render_constant(value: Scalar) -> str:
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
    pending = [_as_condition(tree)]
    while pending:
        condition = pending.pop()
        if isinstance(condition, (AllOf, AnyOf)):
            pending.extend(reversed(condition.conditions))
        elif isinstance(condition, Not):
            pending.append(condition.condition)
        else:
            seen.setdefault(condition.field, None)
    return tuple(seen)


# ---------------------------------------------------------------------------------------------
# Evaluators. Each takes a condition returned by validate() or validate_text(): after
# validation a constant's Python type matches its field's type (bool, str, or int/float).

_PYTHON_COMPARISONS: dict[str, Callable[[object, object], bool]] = {
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
    actual = user[condition.field]
    if condition.op == "is_null":
        return _is_missing(actual)
    if condition.op == "not_null":
        return not _is_missing(actual)
    if _is_missing(actual):
        return False
    if condition.op == "in":
        return any(actual == item for item in condition.value)
    if condition.op == "not_in":
        return all(actual != item for item in condition.value)
    if condition.op == "between":
        low, high = condition.value
        return bool(low <= actual <= high)
    return bool(_PYTHON_COMPARISONS[condition.op](actual, condition.value))


_NUMPY_COMPARISONS: dict[str, Callable[[np.ndarray, object], np.ndarray]] = {
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
        self._cache: dict[tuple[str, str], np.ndarray] = {}

    def present(self, field: str) -> np.ndarray:
        """Return True where the field has a value, False where it is missing."""
        return self._cached(field, "present", lambda series: ~series.isna().to_numpy(dtype=bool))

    def numbers(self, field: str) -> np.ndarray:
        """Return the field as numbers, NaN where missing; integer columns stay exact."""
        def convert(series: pd.Series) -> np.ndarray:
            if series.dtype.kind in "iu":
                return series.to_numpy()
            return pd.to_numeric(series).to_numpy(dtype=np.float64, na_value=np.nan)

        return self._cached(field, "numbers", convert)

    def objects(self, field: str) -> np.ndarray:
        """Return the field as Python objects, None where missing, for exact equality tests."""
        return self._cached(field, "objects", lambda series: series.to_numpy(dtype=object, na_value=None))

    def _cached(self, field: str, form: str, convert: Callable[[pd.Series], np.ndarray]) -> np.ndarray:
        key = (field, form)
        if key not in self._cache:
            self._cache[key] = convert(self._series[field])
        return self._cache[key]


def evaluate_table(condition: Condition, table: pd.DataFrame | Mapping[str, object]) -> np.ndarray:
    """Decide for every row of a table at once whether it meets the condition.

    ``table`` is a DataFrame or a mapping of column name -> array, with a column per referenced
    field; missing values are None, NaN or pandas NA. Returns a boolean numpy array, one entry
    per row, equal row for row to ``evaluate_user``.
    """
    columns = _Columns(table, referenced_fields(condition))
    return _evaluate_node(condition, columns)


def _evaluate_node(condition: Condition, columns: _Columns) -> np.ndarray:
    if isinstance(condition, AllOf):
        return np.logical_and.reduce([_evaluate_node(child, columns) for child in condition.conditions])
    if isinstance(condition, AnyOf):
        return np.logical_or.reduce([_evaluate_node(child, columns) for child in condition.conditions])
    if isinstance(condition, Not):
        return ~_evaluate_node(condition.condition, columns)
    present = columns.present(condition.field)
    if condition.op == "is_null":
        return ~present
    if condition.op == "not_null":
        return present.copy()
    return present & _compare_column(condition, columns)


def _compare_column(comparison: Comparison, columns: _Columns) -> np.ndarray:
    """Compare a column with a comparison's constants; rows with missing values are masked later."""
    sample = comparison.value[0] if isinstance(comparison.value, tuple) else comparison.value
    compares_numbers = isinstance(sample, (int, float)) and not isinstance(sample, bool)
    values = columns.numbers(comparison.field) if compares_numbers else columns.objects(comparison.field)
    if comparison.op in LIST_OPS:
        if compares_numbers:
            hits = np.isin(values, np.array(comparison.value, dtype=np.float64))
        else:
            # pandas hashes objects; np.isin would try to sort strings mixed with None.
            hits = pd.Series(values, dtype=object).isin(comparison.value).to_numpy(dtype=bool)
        return hits if comparison.op == "in" else ~hits
    if comparison.op == "between":
        low, high = comparison.value
        return (values >= low) & (values <= high)
    return np.asarray(_NUMPY_COMPARISONS[comparison.op](values, comparison.value), dtype=bool)


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
        params.extend(condition.value)
        placeholders = ", ".join("%s" for _ in condition.value)
        keyword = "IN" if condition.op == "in" else "NOT IN"
        return f"({column} IS NOT NULL AND {column} {keyword} ({placeholders}))"
    if condition.op == "between":
        params.extend(condition.value)
        return f"({column} IS NOT NULL AND {column} >= %s AND {column} <= %s)"
    params.append(condition.value)
    return f"({column} IS NOT NULL AND {column} {_SQL_COMPARISONS[condition.op]} %s)"
