"""Loading the demo world into the database: twice adds nothing, over part of it adds the rest, and the bulk
load of PostgreSQL leaves the events table's indexes and keys as it found them, whether it succeeds or fails."""

import pytest
from django.db import DatabaseError, connection

from analytics.models import BehaviorEvent, EndUser
from demo.models import PlantedUser
from demo.services import world_load
from demo.services.world_load import EVENT_LOAD_TABLE, demo_world_load
from demo.world.generator import iter_world

pytestmark = pytest.mark.django_db

USERS = 400
SEED = 3


def stored() -> tuple[int, int, int]:
    return EndUser.objects.count(), BehaviorEvent.objects.count(), PlantedUser.objects.count()


def world_events(n_users: int) -> int:
    return sum(len(chunk.events) for chunk in iter_world(n_users=n_users, seed=SEED))


def events_table_structure() -> tuple[list, list]:
    """The events table's indexes and constraints as PostgreSQL defines them, with whether each is validated."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'analytics_behaviorevent'::regclass"
        )
        indexes = sorted(row[0] for row in cursor.fetchall())
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid), convalidated FROM pg_constraint "
            "WHERE conrelid = 'analytics_behaviorevent'::regclass"
        )
        constraints = sorted(cursor.fetchall())
    return indexes, constraints


def load_table_exists() -> bool:
    return EVENT_LOAD_TABLE in connection.introspection.table_names()


def test_loading_the_same_world_twice_adds_nothing():
    # given the world loaded once
    first = demo_world_load(n_users=USERS, seed=SEED)
    once = stored()

    # when it is loaded again
    again = demo_world_load(n_users=USERS, seed=SEED)

    # then the first load stored every user and event, and the second nothing
    assert first["users"] == USERS and first["events"] == world_events(USERS) == once[1]
    assert once == (USERS, world_events(USERS), USERS)
    assert again["users"] == 0 and again["events"] == 0 and again["duplicate_events"] == once[1]
    assert stored() == once


def test_a_world_loaded_over_part_of_it_stores_exactly_what_is_missing():
    # given the world's first users and their events already stored (a smaller or an interrupted load)
    demo_world_load(n_users=150, seed=SEED)

    # when the whole world is loaded
    result = demo_world_load(n_users=USERS, seed=SEED)

    # then the rest is stored, and the database holds the world exactly once
    assert result["users"] == USERS - 150
    assert result["events"] == world_events(USERS) - world_events(150)
    assert stored() == (USERS, world_events(USERS), USERS)


@pytest.mark.postgres
def test_a_bulk_load_builds_the_events_tables_indexes_and_keys_again_as_they_were():
    # given an events table without events of the demo partners: the bulk load applies
    before = events_table_structure()
    assert world_load._bulk_load_applies(USERS)

    # when the world is loaded
    demo_world_load(n_users=USERS, seed=SEED)

    # then its events are stored and the table has the same indexes and validated constraints as before
    assert BehaviorEvent.objects.count() == world_events(USERS)
    assert events_table_structure() == before
    assert all(validated for _name, _definition, validated in before[1])
    assert not load_table_exists()


@pytest.mark.postgres
def test_a_bulk_load_that_fails_leaves_the_events_table_as_it_was(monkeypatch):
    # given an index that cannot be built again, so the load fails after moving the events
    before = events_table_structure()
    listed = world_load._secondary_structures
    monkeypatch.setattr(
        world_load,
        "_secondary_structures",
        lambda cursor, table: [
            *listed(cursor, table),
            ("impossible", "index", "CREATE INDEX impossible ON no_such_table (no_column)"),
        ],
    )

    # when the world is loaded
    with pytest.raises(DatabaseError):
        demo_world_load(n_users=USERS, seed=SEED)

    # then no event is stored, the table's indexes and keys are all there, and the load table is gone
    assert not BehaviorEvent.objects.exists()
    assert events_table_structure() == before
    assert not load_table_exists()
