"""Per-user features from behaviour events: one set-based SQL statement, full or incremental.

The same query serves the stored features (as of now) and training at an earlier
observation end (``as_of``), so a model is trained on exactly what it will score.
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pandas as pd
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from crossmkt_site.bounds import MONEY_COLUMN_MAX

from ..models import UserFeatures

PURCHASE = "course_purchase"


def _local_date(column: str) -> str:
    """SQL for the calendar date of a timestamp in TIME_ZONE (purchases on one local day count once)."""
    if connection.vendor == "postgresql":
        return f"(({column}) AT TIME ZONE %(zone)s)::date"
    # SQLite has no time zones; TIME_ZONE's current offset is exact for zones without
    # daylight saving, such as the default Asia/Shanghai.
    offset = timezone.now().astimezone(ZoneInfo(settings.TIME_ZONE)).utcoffset()
    if offset is None:  # an aware time always has one
        raise ValueError(f"no UTC offset for {settings.TIME_ZONE}")
    return f"date({column}, '{int(offset.total_seconds())} seconds')"


def _feature_expressions() -> dict[str, str]:
    """Return the SQL aggregate of each feature over a user's events ``e``."""
    return {
        "watching_count": "SUM(CASE WHEN e.kind = 'film_watch' THEN 1 ELSE 0 END)",
        "course_view_count": "SUM(CASE WHEN e.kind = 'course_view' THEN 1 ELSE 0 END)",
        "purchasing_count": f"SUM(CASE WHEN e.kind = '{PURCHASE}' THEN 1 ELSE 0 END)",
        "purchase_days": f"COUNT(DISTINCT CASE WHEN e.kind = '{PURCHASE}' THEN {_local_date('e.occurred_at')} END)",
        # Capped at what the money column holds: one user's sum must not stop the build for everyone.
        "total_spend": f"CASE WHEN SUM(e.amount) > {MONEY_COLUMN_MAX} THEN {MONEY_COLUMN_MAX} "
        "ELSE COALESCE(SUM(e.amount), 0) END",
        "activity_count": "SUM(CASE WHEN e.kind = 'activity_join' THEN 1 ELSE 0 END)",
        "discounts_received": "SUM(CASE WHEN e.kind = 'offer_redeem' THEN 1 ELSE 0 END)",
        "first_event_at": "MIN(e.occurred_at)",
        "last_event_at": "MAX(e.occurred_at)",
        "first_purchase_at": f"MIN(CASE WHEN e.kind = '{PURCHASE}' THEN e.occurred_at END)",
        "last_purchase_at": f"MAX(CASE WHEN e.kind = '{PURCHASE}' THEN e.occurred_at END)",
        "membership_started_at": "MIN(CASE WHEN e.kind = 'membership_start' THEN e.occurred_at END)",
        "membership_cancelled_at": "MAX(CASE WHEN e.kind = 'membership_cancel' THEN e.occurred_at END)",
        "membership_paid": "MAX(CASE WHEN e.kind = 'membership_start' THEN e.amount END)",
    }


def features_sql(*, as_of_param: bool, user_filter: str = "", columns: Sequence[str] | None = None) -> str:
    """Return the SELECT that computes every user's features from their events (before ``as_of`` if asked).

    ``columns`` picks some of the features (all by default): a trainer that needs three
    counts spares the database the distinct-day count, which forces a sort of every event.
    """
    expressions = _feature_expressions()
    selects = ",\n            ".join(f"{expressions[name]} AS {name}" for name in (columns or expressions))
    before = "AND e.occurred_at < %(as_of)s" if as_of_param else ""
    return f"""
        SELECT e.user_id,
            {selects}
        FROM analytics_behaviorevent e
        WHERE TRUE {before} {user_filter}
        GROUP BY e.user_id
    """


_FEATURE_COLUMNS = [
    "watching_count",
    "course_view_count",
    "purchasing_count",
    "purchase_days",
    "total_spend",
    "activity_count",
    "discounts_received",
    "first_event_at",
    "last_event_at",
    "first_purchase_at",
    "last_purchase_at",
    "membership_started_at",
    "membership_cancelled_at",
    "membership_paid",
]


def features_build(*, full: bool = False) -> int:
    """Rebuild stored features; incrementally (users with events received since the last build) unless full.

    Return how many users were (re)built. Safe to run twice and concurrently with ingestion:
    the watermark is the previous build's start, so an event arriving mid-build is picked up next time.
    """
    started = timezone.now()
    params = {"zone": settings.TIME_ZONE, "built_at": started}
    user_filter = ""
    if not full:
        watermark = UserFeatures.objects.aggregate(last=Max("built_at"))["last"]
        if watermark is not None:
            user_filter = (
                "AND e.user_id IN "
                "(SELECT DISTINCT user_id FROM analytics_behaviorevent WHERE received_at >= %(watermark)s)"
            )
            params["watermark"] = watermark
    return _features_upsert(user_filter=user_filter, params=params)


def features_build_for_users(*, user_ids: Sequence[int]) -> int:
    """Rebuild these users' stored features now (after some of their events were removed); return how many.

    A user with no events left has no features row.
    """
    ids = sorted({int(pk) for pk in user_ids})
    if not ids:
        return 0
    placeholders = ", ".join(["%s"] * len(ids))
    columns = ", ".join(_FEATURE_COLUMNS)
    updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in [*_FEATURE_COLUMNS, "built_at"])
    # features_sql's own parameters are named; these ids are spelled out as numbers, which they are.
    user_filter = f"AND e.user_id IN ({', '.join(str(pk) for pk in ids)})"
    sql = f"""
        INSERT INTO analytics_userfeatures (user_id, {columns}, built_at)
        SELECT f.user_id, {", ".join("f." + name for name in _FEATURE_COLUMNS)}, %(built_at)s
        FROM ({features_sql(as_of_param=False, user_filter=user_filter)}) f
        WHERE TRUE
        ON CONFLICT (user_id) DO UPDATE SET {updates}
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, {"zone": settings.TIME_ZONE, "built_at": timezone.now()})
        rebuilt = cursor.rowcount
        cursor.execute(
            f"DELETE FROM analytics_userfeatures WHERE user_id IN ({placeholders}) "
            "AND NOT EXISTS (SELECT 1 FROM analytics_behaviorevent e WHERE e.user_id = analytics_userfeatures.user_id)",
            ids,
        )
    return rebuilt


def features_frame_as_of(*, as_of: datetime) -> pd.DataFrame:
    """Return every user's event features computed from events before ``as_of`` (for training)."""
    # In UTC: SQLite compares times as text, so a time with another offset would be compared wrongly.
    as_of = as_of.astimezone(UTC)
    with connection.cursor() as cursor:
        cursor.execute(features_sql(as_of_param=True), {"zone": settings.TIME_ZONE, "as_of": as_of})
        names = [column[0] for column in cursor.description]
        return pd.DataFrame(cursor.fetchall(), columns=names)


def features_refresh_users(*, user_ids: Sequence[int], built_at: datetime | None = None) -> int:
    """Rebuild the stored features of these users only (the live path); return how many rows were written.

    Its rows count towards the incremental build's watermark (the newest ``built_at``): the
    users an incremental build may then pass over all have a pending row of their own, which
    the live path drains, and the nightly full build rebuilds everyone.
    """
    ids = sorted({int(pk) for pk in user_ids})
    if not ids:
        return 0
    params = {"zone": settings.TIME_ZONE, "built_at": built_at or timezone.now()}
    # Integers only, read back from the database: safe to write into the statement.
    user_filter = f"AND e.user_id IN ({', '.join(map(str, ids))})"
    return _features_upsert(user_filter=user_filter, params=params)


def _features_upsert(*, user_filter: str, params: dict) -> int:
    """Compute the features of the users ``user_filter`` selects and upsert them; return the rows written."""
    columns = ", ".join(_FEATURE_COLUMNS)
    updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in [*_FEATURE_COLUMNS, "built_at"])
    sql = f"""
        INSERT INTO analytics_userfeatures (user_id, {columns}, built_at)
        SELECT f.user_id, {", ".join("f." + name for name in _FEATURE_COLUMNS)}, %(built_at)s
        FROM ({features_sql(as_of_param=False, user_filter=user_filter)}) f
        WHERE TRUE
        ON CONFLICT (user_id) DO UPDATE SET {updates}
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount
