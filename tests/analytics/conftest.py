"""Fixtures of the analytics tests."""

import pytest
from django.db import transaction


@pytest.fixture(scope="module")
def demo_world(request, django_db_setup, django_db_blocker):
    """Load the module's demo world (its DATABASE_USERS and SEED) once, in a transaction rolled back at the end."""
    from analytics.services.demo_world import demo_world_load
    from analytics.services.features import features_build

    with django_db_blocker.unblock():
        outer = transaction.atomic()
        outer.__enter__()
        try:
            demo_world_load(n_users=request.module.DATABASE_USERS, seed=request.module.SEED)
            features_build(full=True)
            yield
        finally:
            transaction.set_rollback(True)
            outer.__exit__(None, None, None)
