"""The rule language's vocabulary: limits, operators, field specs, condition nodes and its error type."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias

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

OPS_BY_TYPE: dict[str, frozenset[str]] = {
    "number": frozenset(OPERATORS),
    "category": frozenset(EQUALITY_OPS + LIST_OPS + NULL_OPS),
    "bool": frozenset(EQUALITY_OPS + NULL_OPS),
}

KEYWORDS = frozenset({"and", "or", "not", "in", "between", "is", "null", "true", "false"})
# A field name as rule text spells it; a name matching a keyword cannot be written as text.
FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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
            location = self._text_location(self.text)
            return f"{self.problem} at {location}{hint}\n{self._caret_lines(self.text, self.span)}"
        if self.path is not None:
            return f"{self.problem} at {self.path or 'the top level'}{hint}"
        return f"{self.problem}{hint}"

    def _text_location(self, text: str) -> str:
        if "\n" in text:
            return f"line {self.line}, column {self.column}"
        return f"column {self.column}"

    @staticmethod
    def _caret_lines(text: str, span: tuple[int, int]) -> str:
        start, end = span
        line_start = text.rfind("\n", 0, start) + 1
        line_end = text.find("\n", start)
        if line_end == -1:
            line_end = len(text)
        line = text[line_start:line_end].replace("\t", " ")
        padding = " " * _display_width(line[: start - line_start])
        carets = "^" * max(1, _display_width(text[start : min(end, line_end)]))
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

    def constant(self) -> Scalar:
        """Return the one constant of a comparison such as ``==`` or ``>``."""
        if self.value is None or isinstance(self.value, tuple):
            raise TypeError(f"a '{self.op}' comparison of '{self.field}' needs one constant, not {self.value!r}")
        return self.value

    def constants(self) -> tuple[Scalar, ...]:
        """Return the constants of an ``in``, ``not_in`` or ``between`` comparison."""
        if not isinstance(self.value, tuple):
            raise TypeError(f"a '{self.op}' comparison of '{self.field}' needs several constants, not {self.value!r}")
        return self.value


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
CONDITION_TYPES = (AllOf, AnyOf, Not, Comparison)
