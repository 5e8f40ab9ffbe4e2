"""The API fuzzed from its own OpenAPI schema: no 5xx on any input, and every response as the schema says.

Schemathesis generates requests per operation from /api/schema/ (the schema's examples,
boundary values and random data, valid and invalid) and sends them in process to the
Django app. The world holds the objects the schema's examples name, so the examples reach
the success paths too.
"""

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import negative_data_rejection
from schemathesis.config import SchemathesisConfig

from tests.api.schema_world import schema_example_world

EXAMPLES_PER_OPERATION = 40

CONFIG = SchemathesisConfig.from_dict(
    {
        "generation": {
            "max-examples": EXAMPLES_PER_OPERATION,
            # The test sends a valid key itself; requests without one are covered by the ignored-auth check.
            "with-security-parameters": False,
            "deterministic": True,
            "database": "none",
        },
        "checks": {
            # A 422 is the API refusing a well-formed request on a business rule the schema cannot state
            # (a time in the future, an offer of another user): still an acceptance of the format.
            "positive_data_acceptance": {"expected-statuses": ["2xx", "401", "404", "409", "422", "429"]},
        },
    }
)

schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application(), config=CONFIG)

# The batch endpoint answers 200 for a well-formed envelope and reports each bad item by its
# index instead of refusing the request, by design; envelope errors are tested in test_events.
ITEMS_REPORTED_NOT_REFUSED = {"/api/v1/events/"}


@pytest.fixture
def _connection_kept_open():
    # Django closes the database connection when a request finishes; that would end the test's
    # transaction here, since the app runs in process. Django's own test client does the same.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def fuzz_key(db, _connection_kept_open) -> str:
    """Build the world the schema's examples name and return the calling partner's raw key."""
    return schema_example_world()


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
@pytest.mark.django_db
def test_api_conforms_to_its_schema_on_generated_input(case, fuzz_key):
    excluded = [negative_data_rejection] if case.operation.path in ITEMS_REPORTED_NOT_REFUSED else []
    case.call_and_validate(headers={"Authorization": f"Api-Key {fuzz_key}"}, excluded_checks=excluded)
