"""Shared pieces of the trainers: data windows, user tables, JSON-safe output.

Times handed to raw SQL are converted to UTC first: SQLite compares timestamps as text, and
an aware datetime in another zone would be written with its own offset and compare wrongly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings
from django.db import connection
from django.utils import timezone

from crossmkt_site.bulk import query_frame
from crossmkt_site.errors import ApplicationError

from ..features import features_sql

# Stands in for a missing education, occupation or channel, so that such users still count.
UNKNOWN_LEVEL = "未知"
SECONDS_PER_DAY = 86_400.0


def as_utc(moment: datetime) -> datetime:
    """Return an aware datetime in UTC (a naive one is read in TIME_ZONE, as Django does)."""
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment.astimezone(UTC)


def sql_time(column: str) -> str:
    """Return the SQL that reads a timestamp column for ``utc_series``: microseconds since 1970 on PostgreSQL.

    A number crosses COPY and pandas' CSV parser as cheaply as any integer, where the text of
    a timestamp with its offset costs a Python string and a slow parse per row.
    """
    if connection.vendor == "postgresql":
        return f"(EXTRACT(EPOCH FROM {column}) * 1000000)::bigint"
    return column


def utc_series(values: Any) -> pd.Series:
    """Return database timestamps (``sql_time`` numbers, text or datetimes) as a UTC nanosecond series."""
    series = pd.Series(values)
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        return pd.to_datetime(series, unit="us", utc=True).astype("datetime64[ns, UTC]")
    return pd.to_datetime(series, utc=True, format="ISO8601").astype("datetime64[ns, UTC]")


def fetch_frame(sql: str, params: Mapping[str, Any] | list | None = None, *, text: Iterable[str] = ()) -> pd.DataFrame:
    """Run one SELECT and return its rows as a frame (``crossmkt_site.bulk.query_frame``: COPY and pandas' C parser).

    Numbers come back as int64 or float64 (NULL as NaN), timestamps as ISO text for
    ``utc_series`` (``sql_time`` reads them faster); the columns named in ``text`` stay strings
    (NULL as None). Booleans would arrive as "t" and "f": select them as numbers.
    """
    return query_frame(sql, params or {}, columns_as_text=text)


def event_time_bounds() -> tuple[datetime | None, datetime | None]:
    """Return the times of the first and the last behaviour event (None, None without events)."""
    frame = fetch_frame("SELECT MIN(occurred_at) AS first, MAX(occurred_at) AS last FROM analytics_behaviorevent")
    first, last = frame.iloc[0]
    if first is None:
        return None, None
    bounds = utc_series([first, last])
    return bounds.iloc[0].to_pydatetime(), bounds.iloc[1].to_pydatetime()


def users_table() -> pd.DataFrame:
    """Return every user who is not erased with demographics and imported counts, by id.

    ``imported_has_events`` says whether a user with a row of the article's imported table
    also has behaviour events (users without events are the ones that table speaks for); it
    is false without an imported row, so the database probes the events of those users only
    rather than of every user.
    """
    frame = fetch_frame(
        f"""
        SELECT u.id AS user_id, u.age, NULLIF(u.education, '') AS education,
            NULLIF(u.occupation, '') AS occupation, NULLIF(u.acquisition_channel, '') AS acquisition_channel,
            {sql_time("u.signed_up_at")} AS signed_up_at,
            CASE WHEN b.user_id IS NULL THEN 0
                WHEN EXISTS (SELECT 1 FROM analytics_behaviorevent e WHERE e.user_id = u.id) THEN 1 ELSE 0 END
                AS imported_has_events,
            CASE WHEN b.user_id IS NULL THEN 0 ELSE 1 END AS has_imported,
            b.watching_count AS imported_watching_count, b.purchasing_count AS imported_purchasing_count,
            CASE WHEN b.purchased_course THEN 1 WHEN NOT b.purchased_course THEN 0 END AS imported_purchased_course
        FROM analytics_enduser u
        LEFT JOIN analytics_importedbehavior b ON b.user_id = u.id
        WHERE u.erased_at IS NULL
        """,
        text=("education", "occupation", "acquisition_channel"),
    )
    frame = frame.set_index("user_id")
    frame["signed_up_at"] = utc_series(frame["signed_up_at"]).array
    for column in ("age", "imported_watching_count", "imported_purchasing_count", "imported_purchased_course"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    for column in ("imported_has_events", "has_imported"):
        frame[column] = frame[column].astype(bool)
    return frame


def user_channels() -> pd.Series:
    """Return the acquisition channel (None where unknown) of every user who is not erased, by id."""
    frame = fetch_frame(
        "SELECT id AS user_id, NULLIF(acquisition_channel, '') AS acquisition_channel FROM analytics_enduser "
        "WHERE erased_at IS NULL",
        text=("acquisition_channel",),
    )
    return frame.set_index("user_id")["acquisition_channel"]


def event_features(*, as_of: datetime, columns: Iterable[str]) -> pd.DataFrame:
    """Return some of every user's event features as of a time (the stored features' SQL), by user id.

    Only the columns a trainer uses are computed and read: the database skips the others'
    work, and a million users' worth of timestamps the trainer never looks at stay out of Python.
    """
    names = list(columns)
    selects = ", ".join(
        sql_time(f"f.{name}") + f" AS {name}" if name.endswith("_at") else f"f.{name}" for name in names
    )
    sql = f"SELECT f.user_id, {selects} FROM ({features_sql(as_of_param=True, columns=names)}) f"
    frame = fetch_frame(sql, {"zone": settings.TIME_ZONE, "as_of": as_utc(as_of)})
    return frame.set_index("user_id")


def numeric_columns(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Return the frame with these columns as floats (SQLite and PostgreSQL return counts and sums differently)."""
    return frame.assign(**{column: pd.to_numeric(frame[column], errors="coerce").astype(float) for column in columns})


def category_levels(values: pd.Series, *, stated_reference: str | None = None) -> tuple[list[str], str]:
    """Return the levels of a categorical column, most frequent first, and its reference level.

    The reference is the one stated when it occurs (a caller comparing coefficients with known
    ones states theirs); otherwise the most frequent level, the usual choice for stable
    contrasts. Ties are broken by the level's name, so the choice does not depend on row order.
    """
    counts = values.value_counts()
    levels = sorted(counts.index, key=lambda level: (-counts[level], str(level)))
    if not levels:
        raise ApplicationError("no values to take levels from", code="no_data")
    reference = stated_reference if stated_reference is not None and stated_reference in counts.index else levels[0]
    return levels, reference


def known_levels(values: pd.Series, levels: list[str], reference: str) -> pd.Series:
    """Return the values with missing ones as UNKNOWN_LEVEL and levels unseen in training as the reference."""
    filled = values.astype(object).where(values.notna(), UNKNOWN_LEVEL)
    return filled.where(filled.isin(levels), reference)


def json_safe(value: Any) -> Any:
    """Return value with NumPy numbers as Python ones, NaN and infinities as None, times as ISO strings."""
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray, pd.Index)):
        return [json_safe(item) for item in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (pd.Timestamp, datetime)):
        return value.isoformat()
    return value


def require(condition: bool, message: str, *, code: str = "not_enough_data") -> None:
    """Raise a clear ApplicationError when the data cannot support a fit."""
    if not condition:
        raise ApplicationError(message, code=code, field="model")
