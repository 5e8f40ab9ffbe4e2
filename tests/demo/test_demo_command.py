"""`manage.py demo` (behind `make run` and `make demo`) goes end to end and leaves a working login."""

import io

import pytest
from django.core.management import call_command

from analytics.models import ModelRun, UserScore
from campaigns.models import CampaignAssignment, Partner
from demo.models import DemoWorld

pytestmark = pytest.mark.django_db


def test_demo_runs_end_to_end_prints_a_login_that_works_and_is_idempotent(client):
    out = io.StringIO()
    call_command("demo", "--users", "2000", "--no-progress", stdout=out)
    call_command("demo", "--users", "2000", "--no-progress", stdout=io.StringIO())

    text = out.getvalue()
    # the world, the models, the scores, the campaigns and their reports are all there
    assert DemoWorld.objects.count() == 1 and Partner.objects.count() == 5
    assert set(ModelRun.objects.filter(is_active=True).values_list("model", flat=True)) >= {
        "propensity",
        "churn",
        "clv",
        "segments",
    }
    assert UserScore.objects.filter(model="propensity").count() > 0
    assert CampaignAssignment.objects.filter(arm="holdout").exists()
    assert "Campaign report:" in text and "Uplift of treatment over holdout" in text
    # and the printed login gets into the admin
    login_line = next(line for line in text.splitlines() if line.strip().startswith("Login:"))
    username, password = (part.strip() for part in login_line.split(":", 1)[1].split("(")[0].split(" / "))
    response = client.post("/admin/login/?next=/admin/", {"username": username, "password": password})
    assert response.status_code == 302 and response.url == "/admin/"
    assert client.get("/admin/").status_code == 200
