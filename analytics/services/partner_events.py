"""Behaviour events a partner sends through the API: the same validation and upsert as the CSV import.

Items arrive as parsed JSON. They are turned into columns and each column is checked for
types and storable text in a few passes over plain lists (no serializer per item); the
well-formed rows then go through ``validate_events`` and ``events_ingest`` in one
set-based write, exactly like the rows of a file.
"""

from collections.abc import Sequence

from django.utils import timezone

from crossmkt_site.errors import ApplicationError

from .ingest import IngestResult, Rejection, events_ingest, validate_events
from .suppression import staged_without_erased

MAX_EVENTS_PER_REQUEST = 10_000
ITEM_FIELDS = ("event_id", "user_id", "kind", "item_id", "amount", "occurred_at")
WHOLE_ITEM = "*"


def check_batch_size(count: int) -> None:
    """Refuse a batch of more events than one request takes, with a 413 that says to split it."""
    if count > MAX_EVENTS_PER_REQUEST:
        raise ApplicationError(
            f"a batch takes at most {MAX_EVENTS_PER_REQUEST} events; this one has {count}: split it",
            code="too_many_events",
            field="events",
            status=413,
        )


def _json_type(value) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    return "a number"


def _text_problem(value: str) -> str | None:
    # PostgreSQL stores neither NUL characters nor lone surrogates; refuse them here, not with a 500 there.
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text"
    return None


def _check_column(name: str, values: list, first_problem: dict[int, Rejection]) -> list[str]:
    """Turn missing values into "" in place and record the first problem of each item whose value is not text.

    Return the same list, now all text.
    """
    for index, value in enumerate(values):
        if value is None:
            values[index] = ""
        elif value.__class__ is not str:
            expected = 'a decimal string such as "199.00"' if name == "amount" else "a string"
            first_problem.setdefault(index, Rejection(index, name, f"must be {expected}, not {_json_type(value)}"))
            values[index] = ""
    text = "".join(values)
    # The whole column is checked at once; only a column with a problem is searched item by item.
    if "\x00" in text or (not text.isascii() and _text_problem(text)):
        for index, value in enumerate(values):
            problem = _text_problem(value)
            if problem:
                first_problem.setdefault(index, Rejection(index, name, problem))
    return values


def events_ingest_items(*, partner_id: int, partner_slug: str, items: Sequence, now=None) -> IngestResult:
    """Ingest a partner's batch of event objects; return counts, the users with new events and every rejected item."""
    check_batch_size(len(items))
    first_problem: dict[int, Rejection] = {}
    rows = []
    for index, item in enumerate(items):
        if item.__class__ is dict:
            rows.append(item)
        else:
            first_problem[index] = Rejection(index, WHOLE_ITEM, f"must be an object, not {_json_type(item)}")
            rows.append({})
    columns: dict[str, Sequence[str]] = {}
    for name in ITEM_FIELDS:
        columns[name] = _check_column(name, [row.get(name) for row in rows], first_problem)
    result = IngestResult()
    rejected = list(first_problem.values())
    positions = [index for index in range(len(rows)) if index not in first_problem]
    if positions:
        if first_problem:
            columns = {name: [values[index] for index in positions] for name, values in columns.items()}
        columns["partner"] = [partner_slug] * len(positions)
        staged, invalid = validate_events(
            columns, positions, partner_ids={partner_slug: partner_id}, now=now or timezone.now(), unit="index"
        )
        staged, erased = staged_without_erased(staged, partner_column="partner_id")
        result = events_ingest(staged)
        rejected.extend(invalid + erased)
    result.rejected = sorted(rejected, key=lambda rejection: rejection.position)
    return result
