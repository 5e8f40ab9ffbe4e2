"""The liveness probe a load balancer polls (and the benchmark's bare Django JSON view)."""

import pytest


@pytest.mark.django_db
def test_healthz_answers_without_touching_the_database(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz/")

    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert client.post("/healthz/").status_code == 405
