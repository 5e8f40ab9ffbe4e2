"""Bringing behaviour in: validate rows as columns, stage them, then upsert set-wise.

The CSV imports and the partner API share this path. Rows are validated a batch at a
time with vectorised checks; every bad row is reported with its line (or index),
column and reason and writes nothing. For the good rows, users are looked up by their ids
in one query and the new ones created; on PostgreSQL the events are then copied straight
into the events table (``COPY``), and a batch that repeats a stored event goes through a
staging table and ``ON CONFLICT DO NOTHING`` instead, so importing the same rows twice
adds nothing.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import numpy as np
import pandas as pd
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from psycopg.errors import UniqueViolation

from crossmkt_site.bounds import event_time_window, max_amount, money_problem, out_of_window_message
from crossmkt_site.bulk import bulk_insert_frame

from ..models import BehaviorEvent
from .live import pending_users_record
from .resolution import user_ids_resolve

EVENT_COLUMNS = ("event_id", "user_id", "partner", "kind", "item_id", "amount", "occurred_at")
MAX_ID_LENGTH = 64
ZONE_SUFFIX = re.compile(r"(Z|[+-]\d{2}:?\d{2})$", re.IGNORECASE)


@dataclass(frozen=True)
class Rejection:
    """A row that was not imported: where it is, which column is at fault, and why."""

    position: int
    column: str
    reason: str

    def describe(self, unit: str = "line") -> str:
        return f"{unit} {self.position}: {self.column}: {self.reason}"


@dataclass
class IngestResult:
    """What an import or a bulk request did.

    ``users_with_new_events`` are the ids sent for the users of one batch some of whose events
    were stored now, and ``user_ids_with_new_events`` those users' own ids (what may trigger
    deals; an id string alone no longer names one person); ``add`` sums counts and rejections,
    not these.
    """

    imported: int = 0
    duplicates: int = 0
    users_created: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    users_with_new_events: list[str] = field(default_factory=list)
    user_ids_with_new_events: list[int] = field(default_factory=list)

    def add(self, other: "IngestResult") -> None:
        self.imported += other.imported
        self.duplicates += other.duplicates
        self.users_created += other.users_created
        self.rejected.extend(other.rejected)


class RowChecker:
    """Collect the first problem of each row while columns are checked one after another."""

    def __init__(self, positions: Sequence[int]):
        self.positions = np.asarray(positions)
        self.bad = np.zeros(len(positions), dtype=bool)
        self.rejections: list[Rejection] = []

    def flag(self, mask: np.ndarray, column: str, reason) -> None:
        """Reject rows where mask is true and that have no earlier problem; reason may be per-row."""
        new = np.asarray(mask, dtype=bool) & ~self.bad
        for index in np.flatnonzero(new):
            text = reason(index) if callable(reason) else reason
            self.rejections.append(Rejection(int(self.positions[index]), column, text))
        self.bad |= new

    @property
    def good(self) -> np.ndarray:
        return ~self.bad


def parse_money(values: pd.Series, column: str, checker: RowChecker, *, blank_is_zero: bool = True) -> pd.Series:
    """Check CNY amounts as text (no float ever touches them) and return them normalised.

    The rules are ``crossmkt_site.bounds``' (no comma, no sign, two decimals, the ceiling). A batch
    repeats a few prices many times, so each distinct text is checked once.
    """
    codes, distinct = pd.factorize(values.to_numpy(dtype=object))
    texts = [text or "0" for text in distinct] if blank_is_zero else list(distinct)
    ceiling = max_amount()
    problems = np.array([money_problem(text, ceiling=ceiling) for text in texts], dtype=object)
    row_problems = problems[codes]
    checker.flag(pd.notna(row_problems), column, lambda i: row_problems[i])
    return pd.Series(
        np.array([text.lstrip("+") for text in texts], dtype=object)[codes], index=values.index, dtype=object
    )


def _beyond_pandas(text: str) -> int:
    """Return -1 or 1 when ``text`` is an ISO 8601 time before or after what pandas holds (1677 to 2262), else 0."""
    try:
        year = datetime.fromisoformat(text).year
    except ValueError:
        return 0
    return -1 if year <= pd.Timestamp.min.year else 1 if year >= pd.Timestamp.max.year else 0


def parse_timestamps(values: pd.Series, column: str, checker: RowChecker, *, now=None) -> pd.Series:
    """Parse ISO 8601 times; a time without an offset is read in TIME_ZONE.

    Refuse, with the window in the message, a time outside ``crossmkt_site.bounds``' window of
    plausible times (which pandas and NumPy always hold).
    """
    now = now or timezone.now()
    has_zone = pd.Series(
        np.fromiter(
            (
                text.endswith(("Z", "z")) or ZONE_SUFFIX.search(text) is not None
                for text in values.to_numpy(dtype=object)
            ),
            dtype=bool,
            count=len(values),
        ),
        index=values.index,
    )
    parsed = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    if has_zone.any():
        parsed[has_zone] = pd.to_datetime(values[has_zone], format="ISO8601", errors="coerce", utc=True)
    naive = ~has_zone & (values != "")
    if naive.any():
        local = pd.to_datetime(values[naive], format="ISO8601", errors="coerce")
        parsed[naive] = local.dt.tz_localize(settings.TIME_ZONE, ambiguous="NaT", nonexistent="NaT").dt.tz_convert(
            "UTC"
        )
    earliest, latest = event_time_window(now)
    checker.flag((values == "").to_numpy(), column, "missing time")
    unread = parsed.isna().to_numpy()
    if unread.any():
        # Years like 0001 or 9999 are real ISO 8601 times that pandas cannot hold: say they are out of the window.
        beyond = np.zeros(len(values), dtype=int)
        for index in np.flatnonzero(unread):
            beyond[index] = _beyond_pandas(values.iloc[index])
        checker.flag(
            beyond != 0,
            column,
            lambda i: out_of_window_message(values.iloc[i], earliest, latest, future=bool(beyond[i] > 0)),
        )
        checker.flag(unread, column, lambda i: f"not an ISO 8601 time: {values.iloc[i]!r}")
    early = (parsed < pd.Timestamp(earliest)).fillna(False).to_numpy()
    late = (parsed > pd.Timestamp(latest)).fillna(False).to_numpy()
    checker.flag(early, column, lambda i: out_of_window_message(values.iloc[i], earliest, latest, future=False))
    checker.flag(late, column, lambda i: out_of_window_message(values.iloc[i], earliest, latest, future=True))
    return parsed


def check_ids(values: pd.Series, column: str, checker: RowChecker) -> None:
    checker.flag((values == "").to_numpy(), column, "missing")
    checker.flag((values.str.len() > MAX_ID_LENGTH).to_numpy(), column, f"longer than {MAX_ID_LENGTH} characters")


_EVENT_CONTENT = ("user_id", "kind", "item_id", "amount", "occurred_at")


def _check_repeated_ids(
    frame: pd.DataFrame, amount: pd.Series, occurred_at: pd.Series, checker: RowChecker, *, unit: str
) -> None:
    """Reject a good row whose event id appears earlier in the batch with other content.

    A repeat with the same content is a duplicate (stored once); with other content one of the
    two would be lost silently, so the later one is refused, naming the first and what differs.
    """
    key = frame["partner"] + "\x00" + frame["event_id"]
    repeated = (key.duplicated(keep=False) & checker.good).to_numpy()
    if not repeated.any():
        return
    rows = np.flatnonzero(repeated)
    content = pd.DataFrame(
        {
            "key": key.iloc[rows].to_numpy(),
            "user_id": frame["user_id"].iloc[rows].to_numpy(),
            "kind": frame["kind"].iloc[rows].to_numpy(),
            "item_id": frame["item_id"].iloc[rows].to_numpy(),
            "amount": [Decimal(text) for text in amount.iloc[rows]],
            "occurred_at": occurred_at.iloc[rows].to_numpy(),
            "position": checker.positions[rows],
        }
    )
    first = content.groupby("key", sort=False).transform("first")
    differs = content[list(_EVENT_CONTENT)].ne(first[list(_EVENT_CONTENT)])
    conflict = np.zeros(len(frame), dtype=bool)
    conflict[rows] = differs.any(axis=1).to_numpy()

    def reason(index: int) -> str:
        at = int(np.searchsorted(rows, index))
        fields = ", ".join(name for name in _EVENT_CONTENT if differs.iloc[at][name])
        return (
            f"event_id {frame['event_id'].iloc[index]!r} was already sent at {unit} {first['position'].iloc[at]} "
            f"of this batch with another {fields}; send each event once (a corrected event needs a new event_id)"
        )

    checker.flag(conflict, "event_id", reason)


def validate_events(
    columns: dict[str, Sequence[str]],
    positions: Sequence[int],
    *,
    partner_ids: dict[str, int],
    now=None,
    unit: str = "line",
) -> tuple[pd.DataFrame, list[Rejection]]:
    """Check event rows given as columns of text; return the good rows ready to stage, and the rejections.

    ``unit`` names the positions in messages ("line" of a file, "index" of a request's items).
    """
    frame = pd.DataFrame({name: pd.Series(columns[name], dtype=object).astype(str) for name in EVENT_COLUMNS})
    checker = RowChecker(positions)
    check_ids(frame["event_id"], "event_id", checker)
    check_ids(frame["user_id"], "user_id", checker)
    partner_id = frame["partner"].map(partner_ids)
    checker.flag(partner_id.isna().to_numpy(), "partner", lambda i: f"unknown partner {frame['partner'].iloc[i]!r}")
    checker.flag(
        (~frame["kind"].isin(BehaviorEvent.Kind.values)).to_numpy(),
        "kind",
        lambda i: f"unknown kind {frame['kind'].iloc[i]!r} (one of {', '.join(BehaviorEvent.Kind.values)})",
    )
    checker.flag(
        (frame["item_id"].str.len() > MAX_ID_LENGTH).to_numpy(), "item_id", f"longer than {MAX_ID_LENGTH} characters"
    )
    amount = parse_money(frame["amount"], "amount", checker)
    occurred_at = parse_timestamps(frame["occurred_at"], "occurred_at", checker, now=now)
    _check_repeated_ids(frame, amount, occurred_at, checker, unit=unit)
    good = checker.good
    staged = pd.DataFrame(
        {
            "position": np.asarray(positions)[good],
            "partner_id": partner_id[good].astype("int64").to_numpy(),
            "event_id": frame["event_id"][good].to_numpy(),
            "user_ext": frame["user_id"][good].to_numpy(),
            "kind": frame["kind"][good].to_numpy(),
            "item_id": frame["item_id"][good].to_numpy(),
            "amount": amount[good].to_numpy(),
            "occurred_at": occurred_at[good].array,
        }
    )
    checker.rejections.sort(key=lambda rejection: rejection.position)
    return staged, checker.rejections


def stage_frame(cursor, table: str, ddl: str, frame: pd.DataFrame, columns: str) -> None:
    """Create a temporary table and fill it from a frame in one bulk write."""
    cursor.execute(f"DROP TABLE IF EXISTS {table}")
    cursor.execute(f"CREATE TEMPORARY TABLE {table} ({ddl})")
    bulk_insert_frame(cursor, table, frame[[name.strip() for name in columns.split(",")]])


# Ids looked up per query; SQLite takes at most 32,766 parameters.
_LOOKUP_CHUNK = 5_000
_EVENT_STAGING_DDL = (
    "partner_id bigint, event_id varchar(64), user_id bigint, kind varchar(32), item_id varchar(64), "
    "amount numeric(14, 2), occurred_at timestamp with time zone, received_at timestamp with time zone"
)


def events_ingest(staged: pd.DataFrame, *, record_touched: bool = True) -> IngestResult:
    """Insert validated events (and users first seen in them); duplicates by (partner, event id) are skipped.

    ``staged`` has the columns ``validate_events`` returns. The result names the users with
    new events, for the caller to act on (new events can trigger deals). Unless
    ``record_touched`` is off (a bulk load rebuilt and scored as a whole afterwards), the users
    of a batch that stored something are left pending for the live path, in the same transaction.
    """
    result = IngestResult()
    if staged.empty:
        return result
    now = timezone.now()
    with transaction.atomic(), connection.cursor() as cursor:
        user_ids, result.users_created = _user_ids_ensure(cursor, staged, now)
        result.imported = _events_insert(
            cursor,
            pd.DataFrame(
                {
                    "partner_id": staged["partner_id"].to_numpy(dtype="int64"),
                    "event_id": staged["event_id"].to_numpy(),
                    "user_id": user_ids,
                    "kind": staged["kind"].to_numpy(),
                    "item_id": staged["item_id"].to_numpy(),
                    "amount": staged["amount"].to_numpy(),
                    "occurred_at": pd.to_datetime(staged["occurred_at"], utc=True).dt.tz_localize(None).to_numpy(),
                    "received_at": np.full(
                        len(staged), pd.Timestamp(now).tz_convert("UTC").tz_localize(None).to_datetime64()
                    ),
                }
            ),
        )
        result.duplicates = len(staged) - result.imported
        if result.imported:
            result.users_with_new_events = staged["user_ext"].unique().tolist()
            result.user_ids_with_new_events = np.unique(user_ids).tolist()
            if record_touched:
                pending_users_record(user_ids=result.user_ids_with_new_events, now=now)
    return result


def _events_insert(cursor, events: pd.DataFrame) -> int:
    """Insert the events whose (partner, event id) is not stored yet; return how many were inserted."""
    if connection.vendor == "postgresql":
        # Most batches hold only new events: COPY them straight into the table. One that holds
        # an event stored before (or twice) fails on the unique constraint, and is upserted instead.
        try:
            with transaction.atomic():
                bulk_insert_frame(cursor, "analytics_behaviorevent", events)
            return len(events)
        except UniqueViolation:
            pass
    columns = ", ".join(events.columns)
    cursor.execute("DROP TABLE IF EXISTS event_batch")
    cursor.execute(f"CREATE TEMPORARY TABLE event_batch ({_EVENT_STAGING_DDL})")
    bulk_insert_frame(cursor, "event_batch", events)
    # SQLite needs the WHERE to read ON CONFLICT as an upsert. No ANALYZE: nothing is joined.
    cursor.execute(
        f"INSERT INTO analytics_behaviorevent ({columns}) SELECT {columns} FROM event_batch "
        "WHERE TRUE ON CONFLICT (partner_id, event_id) DO NOTHING"
    )
    inserted = cursor.rowcount
    cursor.execute("DROP TABLE event_batch")
    return inserted


def _user_ids_ensure(cursor, staged: pd.DataFrame, now) -> tuple[np.ndarray, int]:
    """Return the user id each staged row's sender means by its user id, creating users as needed; and how many.

    Identity is per partner (``resolution.user_ids_resolve``): a user first seen here belongs to
    the partner that sent the row; without a record of consent they get no offers and are
    shared with no one.
    """
    return user_ids_resolve(
        cursor, staged["partner_id"].to_numpy(dtype="int64"), staged["user_ext"].to_numpy(dtype=object), now=now
    )


def user_ids_by_external_id(cursor, external_ids: list[str], *, partner_id: int) -> dict[str, int]:
    """Map the ids of one partner's own users that exist to their user ids."""
    found: dict[str, int] = {}
    for start in range(0, len(external_ids), _LOOKUP_CHUNK):
        chunk = external_ids[start : start + _LOOKUP_CHUNK]
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT external_id, id FROM analytics_enduser WHERE home_partner_id = %s AND external_id = ANY(%s)",
                [partner_id, chunk],
            )
        else:
            placeholders = ", ".join(["%s"] * len(chunk))
            cursor.execute(
                "SELECT external_id, id FROM analytics_enduser "
                f"WHERE home_partner_id = %s AND external_id IN ({placeholders})",
                [partner_id, *chunk],
            )
        found.update(cursor.fetchall())
    return found
