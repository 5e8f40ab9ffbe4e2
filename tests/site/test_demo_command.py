"""`manage.py demo` (behind `make run` and `make demo`) leaves a working login and data."""

import io

import pytest
from django.core.management import call_command

from campaigns.models import Campaign, Partner

pytestmark = pytest.mark.django_db


def test_demo_prints_a_login_that_works_and_is_idempotent(client):
    out = io.StringIO()
    call_command("demo", stdout=out)
    call_command("demo", stdout=io.StringIO())

    text = out.getvalue()
    assert "http://127.0.0.1:8000/admin/" in text
    login_line = next(line for line in text.splitlines() if line.strip().startswith("Login:"))
    username, password = login_line.split(":", 1)[1].split("(")[0].split(" / ")
    assert Partner.objects.count() == 5
    assert Campaign.objects.count() == 1
    response = client.post("/admin/login/?next=/admin/", {"username": username.strip(), "password": password.strip()})
    assert response.status_code == 302 and response.url == "/admin/"
    assert client.get("/admin/").status_code == 200
