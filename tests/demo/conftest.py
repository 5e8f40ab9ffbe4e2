"""Fixtures of the demo tests, and of the analytics tests that train on a demo world."""

import pytest
from django.db import transaction


@pytest.fixture(scope="module")
def demo_world(request, django_db_setup, django_db_blocker):
    """Load the module's demo world (its DATABASE_USERS and SEED) once, in a transaction rolled back at the end."""
    from analytics.services.features import features_build
    from demo.services.world_load import demo_world_load

    with django_db_blocker.unblock():
        outer = transaction.atomic()
        outer.__enter__()
        try:
            if getattr(request.module, "PIN_IDS", False):
                pin_ids()
            demo_world_load(n_users=request.module.DATABASE_USERS, seed=request.module.SEED)
            features_build(full=True)
            yield
        finally:
            transaction.set_rollback(True)
            outer.__exit__(None, None, None)


# Tables whose ids a demo world's outcomes depend on: holdout draws hash the campaign and user
# ids, and the demo's simulated outcomes are seeded with the campaign id.
PINNED_TABLES = ("analytics_enduser", "campaigns_campaign", "campaigns_rule")


def pin_ids(*, tables: tuple[str, ...] = PINNED_TABLES, offset: int = 0) -> None:
    """Start the ids of those tables (some of them) at fixed values, whatever other tests created before.

    Without this a module's world differs with the test files that ran before it in the same
    database (sequences do not roll back), and so does everything measured on it. ``offset``
    moves the start past the world's own rows, for what a replication creates on top of it
    (its campaigns, whose ids its holdout draws hash): the same replication then draws the same.
    """
    from django.db import connection

    with connection.cursor() as cursor:
        for number, table in enumerate(PINNED_TABLES, 1):
            if table not in tables:
                continue
            start = number * 10_000_000 + offset
            if connection.vendor == "postgresql":
                cursor.execute("SELECT setval(pg_get_serial_sequence(%s, 'id'), %s, false)", [table, start])
            else:
                cursor.execute("DELETE FROM sqlite_sequence WHERE name = %s", [table])
                cursor.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (%s, %s)", [table, start - 1])
