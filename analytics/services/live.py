"""The live path's analytics half: users touched by accepted batches wait in PostgreSQL until evaluated.

Ingestion records the users of every accepted batch in ``analytics_pendinguser``, in the same
transaction as their events (``pending_users_record``): one row per user, so a burst of
batches for the same users leaves one row each, evaluated once. A drain (the campaigns app's,
which knows campaigns) claims rows with ``pending_users_claim`` inside its transaction, refreshes
those users' features and scores with ``users_refresh``, decides, and deletes the rows with
``pending_users_release`` in that same transaction: a drain that fails or is killed leaves its
users pending, and the next one takes them.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import connection, transaction
from django.utils import timezone

from crossmkt_site.bulk import ids_in_sql

from ..models import PendingUser
from .features import features_refresh_users
from .scoring import score_users

PENDING_TABLE = PendingUser._meta.db_table


def pending_users_record(*, user_ids: Iterable[int], now: datetime | None = None) -> int:
    """Mark users as touched now (inside the caller's transaction, beside their events); return how many.

    A user already pending keeps their first touch and gains a later last touch. Rows are
    written in user order, so two batches sharing users wait on each other instead of deadlocking.
    """
    ids = sorted({int(pk) for pk in user_ids})
    if not ids:
        return 0
    moment = connection.ops.adapt_datetimefield_value(now or timezone.now())
    postgres = connection.vendor == "postgresql"
    # SQLite takes at most 500 terms in a compound SELECT; PostgreSQL takes the ids as one array.
    step = len(ids) if postgres else 400
    with transaction.atomic(), connection.cursor() as cursor:
        for start in range(0, len(ids), step):
            chunk = ids[start : start + step]
            params: list = [chunk] if postgres else list(chunk)
            source = (
                "SELECT unnest(%s::bigint[]) AS user_id ORDER BY 1"
                if postgres
                else " UNION ALL ".join(["SELECT %s AS user_id"] * len(chunk))
            )
            cursor.execute(
                f"""INSERT INTO {PENDING_TABLE} (user_id, first_touched_at, last_touched_at, touches)
                    SELECT t.user_id, %s, %s, 1 FROM ({source}) t
                    WHERE TRUE
                    ON CONFLICT (user_id) DO UPDATE SET last_touched_at = EXCLUDED.last_touched_at,
                        touches = {PENDING_TABLE}.touches + 1""",
                [moment, moment, *params],
            )
    return len(ids)


@dataclass(frozen=True)
class Claimed:
    """Pending users one drain holds: ids in order, and when each was first touched."""

    user_ids: list[int]
    first_touched_at: dict[int, datetime]


def pending_users_claim(*, limit: int) -> Claimed:
    """Lock up to ``limit`` pending users, oldest first, that no other drain holds; call inside a transaction.

    The rows stay locked (``FOR UPDATE SKIP LOCKED``) until the caller's transaction ends: a
    commit that released them means they were evaluated, anything else hands them back.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("claim pending users inside the transaction that evaluates and releases them")
    lock = "FOR UPDATE SKIP LOCKED" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT user_id, first_touched_at FROM {PENDING_TABLE} ORDER BY first_touched_at, user_id LIMIT %s {lock}",
            [limit],
        )
        rows = cursor.fetchall()
    touched = {int(user_id): _aware(at) for user_id, at in rows}
    return Claimed(user_ids=sorted(touched), first_touched_at=touched)


def _aware(value) -> datetime:
    if isinstance(value, str):  # SQLite hands raw SQL times back as text
        value = datetime.fromisoformat(value)
    return value if timezone.is_aware(value) else value.replace(tzinfo=UTC)


def pending_users_release(*, user_ids: Iterable[int]) -> int:
    """Delete the pending rows of evaluated users (inside the transaction that claimed them); return how many."""
    ids = sorted({int(pk) for pk in user_ids})
    if not ids:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {PENDING_TABLE} WHERE {ids_in_sql('user_id', ids)}")
        return cursor.rowcount


def users_refresh(*, user_ids: Iterable[int], as_of: datetime | None = None) -> dict:
    """Rebuild these users' features, then score them with every active model run, as of ``as_of`` (now)."""
    as_of = as_of or timezone.now()
    ids = sorted({int(pk) for pk in user_ids})
    return {
        "features": features_refresh_users(user_ids=ids, built_at=as_of),
        "scores": score_users(user_ids=ids, as_of=as_of),
    }
