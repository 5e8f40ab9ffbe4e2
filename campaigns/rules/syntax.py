"""Read rule text: a tokenizer and a recursive-descent parser that remember where each part came from."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from campaigns.rules.check import validate
from campaigns.rules.nodes import (
    FIELD_NAME,
    KEYWORDS,
    MAX_TEXT_LENGTH,
    MAX_TEXT_NESTING,
    Condition,
    ConditionError,
    Registry,
    Scalar,
)
from campaigns.rules.structure import join_path

# ---------------------------------------------------------------------------------------------
# Tokenizer


@dataclass(frozen=True)
class _Token:
    """Hold one piece of rule text: its kind, its source text, its value and where it sits."""

    kind: Literal["name", "keyword", "number", "string", "operator", "punctuation", "end"]
    text: str
    value: str | int | float | None
    start: int
    end: int


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
    "“": "use straight quotes \" or '",
    "”": "use straight quotes \" or '",
    "‘": "use straight quotes \" or '",
    "’": "use straight quotes \" or '",
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
        elif name := FIELD_NAME.match(text, position):
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
# Recursive-descent parser
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
        return {join_path(prefix, path): span for path, span in self.spans.items()}


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
            return self._comparison(name, token.text, (token.start, token.end), value, value_span)
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
            assert token.value is not None, "number and string tokens always carry their value"
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
