"""Bringing behaviour in: validate rows as columns, stage them, then upsert set-wise.

The CSV imports and the partner API share this path. Rows are validated a batch at a
time with vectorised checks; every bad row is reported with its line (or index),
column and reason and writes nothing; good rows go into a staging table (``COPY`` on
PostgreSQL) and from there into users and events with ``ON CONFLICT DO NOTHING``, so
importing the same rows twice adds nothing.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import pandas as pd
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from campaigns.models import Partner
from campaigns.services.deals import deals_evaluate_on_commit
from crossmkt_site.bulk import bulk_insert

from ..models import BehaviorEvent

EVENT_COLUMNS = ("event_id", "user_id", "partner", "kind", "item_id", "amount", "occurred_at")
MAX_ID_LENGTH = 64
# Clocks drift and time zones get confused; a day's grace, and nothing later than that.
FUTURE_GRACE = timedelta(days=1)
# [0-9], not \d: \d also matches other scripts' digits, which the database cannot read as numbers.
MONEY_PATTERN = r"[0-9]{1,12}(\.[0-9]{1,2})?"
NUMBER_PATTERN = r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?"
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
    """What an import or a bulk request did."""

    imported: int = 0
    duplicates: int = 0
    users_created: int = 0
    rejected: list[Rejection] = field(default_factory=list)

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
    """Check CNY amounts as text (no float ever touches them) and return them normalised."""
    values = values.str.replace(",", "", regex=False)
    if blank_is_zero:
        values = values.mask(values == "", "0")
    numeric = values.str.fullmatch(NUMBER_PATTERN)
    negative = numeric & values.str.startswith("-") & (values.str.strip("-0.") != "")
    checker.flag(~numeric, column, lambda i: f"not a number: {values.iloc[i]!r}")
    checker.flag(negative, column, lambda i: f"negative amount: {values.iloc[i]}")
    checker.flag(~values.str.fullmatch(MONEY_PATTERN) & ~values.str.fullmatch(r"-0*(\.0*)?"), column,
                 lambda i: f"not an amount in CNY with at most two decimals: {values.iloc[i]}")
    return values.str.lstrip("+")


def parse_timestamps(values: pd.Series, column: str, checker: RowChecker, *, now=None) -> pd.Series:
    """Parse ISO 8601 times; a time without an offset is read in TIME_ZONE; refuse far-future ones."""
    now = now or timezone.now()
    has_zone = values.map(lambda text: bool(ZONE_SUFFIX.search(text)))
    parsed = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    if has_zone.any():
        parsed[has_zone] = pd.to_datetime(values[has_zone], format="ISO8601", errors="coerce", utc=True)
    naive = ~has_zone & (values != "")
    if naive.any():
        local = pd.to_datetime(values[naive], format="ISO8601", errors="coerce")
        parsed[naive] = local.dt.tz_localize(settings.TIME_ZONE, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
    checker.flag((values == "").to_numpy(), column, "missing time")
    checker.flag(parsed.isna().to_numpy(), column, lambda i: f"not an ISO 8601 time: {values.iloc[i]!r}")
    limit = pd.Timestamp(now + FUTURE_GRACE)
    checker.flag((parsed > limit).fillna(False).to_numpy(), column, lambda i: f"in the future: {values.iloc[i]}")
    return parsed


def check_ids(values: pd.Series, column: str, checker: RowChecker) -> None:
    checker.flag((values == "").to_numpy(), column, "missing")
    checker.flag((values.str.len() > MAX_ID_LENGTH).to_numpy(), column, f"longer than {MAX_ID_LENGTH} characters")


def validate_events(columns: dict[str, Sequence[str]], positions: Sequence[int], *, partner_ids: dict[str, int],
                    now=None) -> tuple[pd.DataFrame, list[Rejection]]:
    """Check event rows given as columns of text; return the good rows ready to stage, and the rejections."""
    frame = pd.DataFrame({name: pd.Series(columns[name], dtype=object).astype(str) for name in EVENT_COLUMNS})
    checker = RowChecker(positions)
    check_ids(frame["event_id"], "event_id", checker)
    check_ids(frame["user_id"], "user_id", checker)
    partner_id = frame["partner"].map(partner_ids)
    checker.flag(partner_id.isna().to_numpy(), "partner", lambda i: f"unknown partner {frame['partner'].iloc[i]!r}")
    checker.flag((~frame["kind"].isin(BehaviorEvent.Kind.values)).to_numpy(), "kind",
                 lambda i: f"unknown kind {frame['kind'].iloc[i]!r} (one of {', '.join(BehaviorEvent.Kind.values)})")
    checker.flag((frame["item_id"].str.len() > MAX_ID_LENGTH).to_numpy(), "item_id", f"longer than {MAX_ID_LENGTH} characters")
    amount = parse_money(frame["amount"], "amount", checker)
    occurred_at = parse_timestamps(frame["occurred_at"], "occurred_at", checker, now=now)
    good = checker.good
    staged = pd.DataFrame({
        "position": np.asarray(positions)[good],
        "partner_id": partner_id[good].astype("int64").to_numpy(),
        "event_id": frame["event_id"][good].to_numpy(),
        "user_ext": frame["user_id"][good].to_numpy(),
        "kind": frame["kind"][good].to_numpy(),
        "item_id": frame["item_id"][good].to_numpy(),
        "amount": amount[good].to_numpy(),
        "occurred_at": occurred_at[good].to_numpy(),
    })
    checker.rejections.sort(key=lambda rejection: rejection.position)
    return staged, checker.rejections


_STAGING_COLUMNS = "position, partner_id, event_id, user_ext, kind, item_id, amount, occurred_at"


def stage_frame(cursor, table: str, ddl: str, frame: pd.DataFrame, columns: str) -> None:
    """Create a temporary table and fill it from a frame in one bulk write."""
    cursor.execute(f"DROP TABLE IF EXISTS {table}")
    cursor.execute(f"CREATE TEMPORARY TABLE {table} ({ddl})")
    names = [name.strip() for name in columns.split(",")]
    rows = frame[names].itertuples(index=False, name=None)
    if connection.vendor != "postgresql":
        rows = (tuple(_sqlite_value(v) for v in row) for row in rows)
    bulk_insert(cursor, table, names, rows)


def _sqlite_value(value):
    if isinstance(value, pd.Timestamp):
        return value.tz_convert("UTC").strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, np.datetime64):
        return pd.Timestamp(value).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, np.integer):
        return int(value)
    return value


def events_ingest(staged: pd.DataFrame, *, evaluate_deals: bool = True) -> IngestResult:
    """Insert validated events (and users first seen in them); duplicates by (partner, event id) are skipped.

    New events can trigger deals; a bulk loader that evaluates deals once at the end passes
    ``evaluate_deals=False``.
    """
    result = IngestResult()
    if staged.empty:
        return result
    postgres = connection.vendor == "postgresql"
    with transaction.atomic(), connection.cursor() as cursor:
        stage_frame(cursor, "staging_events",
               "position bigint, partner_id bigint, event_id varchar(64), user_ext varchar(64), kind varchar(32), "
               "item_id varchar(64), amount numeric(14, 2), occurred_at timestamp with time zone",
               staged, _STAGING_COLUMNS)
        # A user first seen here belongs to the partner of their earliest row; without a
        # record of consent they get no offers and are shared with no one.
        first_rows = (
            "SELECT DISTINCT ON (user_ext) user_ext, partner_id FROM staging_events ORDER BY user_ext, position"
            if postgres else
            # SQLite takes a bare column from the row that holds the MIN() of its group.
            "SELECT user_ext, partner_id, MIN(position) AS first_position FROM staging_events GROUP BY user_ext"
        )
        cursor.execute(
            f"""INSERT INTO analytics_enduser (external_id, home_partner_id, education, occupation, gender,
                    acquisition_channel, marketing_consent, data_sharing_consent, created_at)
                SELECT f.user_ext, f.partner_id, '', '', '', '', FALSE, FALSE, %s FROM ({first_rows}) f
                WHERE NOT EXISTS (SELECT 1 FROM analytics_enduser u WHERE u.external_id = f.user_ext)
                ON CONFLICT (external_id) DO NOTHING""",
            [timezone.now()],
        )
        result.users_created = cursor.rowcount
        cursor.execute(
            """INSERT INTO analytics_behaviorevent (partner_id, event_id, user_id, kind, item_id, amount, occurred_at, received_at)
               SELECT s.partner_id, s.event_id, u.id, s.kind, s.item_id, s.amount, s.occurred_at, %s
               FROM staging_events s JOIN analytics_enduser u ON u.external_id = s.user_ext
               WHERE TRUE
               ON CONFLICT (partner_id, event_id) DO NOTHING""",
            [timezone.now()],
        )
        result.imported = cursor.rowcount
        result.duplicates = len(staged) - result.imported
        if result.imported and evaluate_deals:
            deals_evaluate_on_commit(user_external_ids=staged["user_ext"].unique().tolist())
        cursor.execute("DROP TABLE staging_events")
    return result


def partner_ids_by_slug() -> dict[str, int]:
    return dict(Partner.objects.values_list("slug", "id"))
