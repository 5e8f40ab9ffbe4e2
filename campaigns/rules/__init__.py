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

Modules, each importing only those above it: ``nodes`` (limits, operators, field specs, the
node types, ConditionError), ``structure`` (JSON shape to nodes), ``render`` (text, JSON and
referenced fields), ``check`` (validation against the registry), ``syntax`` (tokenizer and
parser), ``evaluate`` (reference and vectorised evaluators) and ``sql`` (WHERE fragments).
This package imports no Django.
"""

from campaigns.rules.check import validate
from campaigns.rules.evaluate import evaluate_table, evaluate_user
from campaigns.rules.nodes import (
    EQUALITY_OPS,
    FIELD_TYPES,
    KEYWORDS,
    LIST_OPS,
    MAX_DEPTH,
    MAX_EXACT_INTEGER,
    MAX_LIST_VALUES,
    MAX_NODES,
    MAX_TEXT_LENGTH,
    MAX_TEXT_NESTING,
    NULL_OPS,
    OPERATORS,
    ORDERING_OPS,
    AllOf,
    AnyOf,
    Comparison,
    Condition,
    ConditionError,
    FieldSpec,
    FieldType,
    JsonTree,
    Not,
    Registry,
    Scalar,
)
from campaigns.rules.render import referenced_fields, render, to_json
from campaigns.rules.sql import SqlFragment, compile_sql
from campaigns.rules.syntax import parse, validate_text

__all__ = [
    "EQUALITY_OPS",
    "FIELD_TYPES",
    "KEYWORDS",
    "LIST_OPS",
    "MAX_DEPTH",
    "MAX_EXACT_INTEGER",
    "MAX_LIST_VALUES",
    "MAX_NODES",
    "MAX_TEXT_LENGTH",
    "MAX_TEXT_NESTING",
    "NULL_OPS",
    "OPERATORS",
    "ORDERING_OPS",
    "AllOf",
    "AnyOf",
    "Comparison",
    "Condition",
    "ConditionError",
    "FieldSpec",
    "FieldType",
    "JsonTree",
    "Not",
    "Registry",
    "Scalar",
    "SqlFragment",
    "compile_sql",
    "evaluate_table",
    "evaluate_user",
    "parse",
    "referenced_fields",
    "render",
    "to_json",
    "validate",
    "validate_text",
]
