"""Pipeline health as an operator meets it: /metrics for Prometheus, the admin page and pipeline_status agree.

Every figure is read from the database when asked, so the tests plant rows (events, offers
issued, grants, webhook deliveries, model runs) and check that each view shows exactly them.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone, translation
from prometheus_client.parser import text_string_to_metric_families

from analytics.models import ModelRun, PendingUser
from analytics.services.scoring import scores_write
from campaigns.models import Campaign, DealGrant, Partner, WebhookDelivery
from campaigns.presenters.pipeline_metrics import pipeline_metrics_text
from campaigns.presenters.pipeline_status import pipeline_status_tables
from campaigns.selectors.pipeline_health import pipeline_health
from tests.factories import (
    BehaviorEventFactory,
    CampaignFactory,
    DealFactory,
    EndUserFactory,
    OfferFactory,
    PartnerFactory,
)

pytestmark = pytest.mark.django_db

TOKEN = "scrape-token-0123456789"


@pytest.fixture(autouse=True)
def fresh_counts(settings):
    """Count events afresh in every test (the shared cache would keep one test's count for the next)."""
    cache.clear()
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOW_ANONYMOUS = False


@pytest.fixture
def pipeline():
    """Plant a pipeline: events at two partners, offers issued, grants, webhook deliveries and model runs."""
    now = timezone.now()
    wanda, iqiyi = PartnerFactory.create(slug="wanda"), PartnerFactory.create(slug="iqiyi")
    for _ in range(3):
        BehaviorEventFactory.create(partner=wanda)
    BehaviorEventFactory.create(partner=iqiyi)
    member_day = CampaignFactory.create(slug="member-day")
    Campaign.objects.filter(pk=member_day.pk).update(issued_count=42)
    deal = DealFactory.create(source_partner=wanda, target_partner=iqiyi)
    for status, extra in (
        (DealGrant.Status.CONFIRMED, {"confirmed_at": now}),
        (DealGrant.Status.COMPENSATED, {"compensated_at": now, "compensation_reason": "gave up"}),
        (DealGrant.Status.COMPENSATED, {"compensated_at": now, "compensation_reason": "gave up"}),
    ):
        DealGrant.objects.create(
            deal=deal,
            user=EndUserFactory.create(),
            triggered_at=now,
            reserved_at=now,
            status=status,
            amount=Decimal("8.00"),
            **extra,
        )
    WebhookDelivery.objects.create(partner=wanda, event_type="offers.issued", status="failed", attempts=10)
    WebhookDelivery.objects.create(partner=wanda, event_type="offers.issued", status="delivered", delivered_at=now)
    pending = WebhookDelivery.objects.create(partner=iqiyi, event_type="deal.granted", status="pending")
    WebhookDelivery.objects.filter(pk=pending.pk).update(created_at=now - timedelta(minutes=10))
    trained = now - timedelta(hours=2)
    ModelRun.objects.create(model="propensity", version=1, is_active=True, quality_gate={"decision": "first"})
    ModelRun.objects.create(
        model="propensity",
        version=2,
        is_active=False,
        metrics={"auc": 0.51},
        quality_gate={
            "decision": "kept",
            "metric": "auc",
            "higher_is_better": True,
            "candidate": {"value": 0.51, "se": 0.015, "n": 1500},
            "active": {"value": 0.74, "se": 0.013, "n": 1500},
            "active_version": 1,
            "worse_by": 0.23,
            "tolerance": 0.0198,
        },
    )
    ModelRun.objects.filter(model="propensity").update(created_at=trained)
    ModelRun.objects.create(model="churn", version=1, is_active=True, quality_gate={"decision": "first"})
    return {"now": now, "trained": trained}


def _families(text: str) -> dict[str, dict[tuple, float]]:
    """Return each metric's samples by their sorted labels, as Prometheus' own parser reads the text."""
    found: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def _scrape(client, **headers) -> dict[str, dict[tuple, float]]:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return _families(response.content.decode())


def test_metrics_parse_and_say_what_the_database_holds(client, pipeline):
    metrics = _scrape(client, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    events = metrics["crossmkt_events_accepted_total"]
    # Every partner has a line; those the factories made for users and campaigns sent nothing.
    assert {labels: n for labels, n in events.items() if n} == {
        (("partner", "iqiyi"),): 1.0,
        (("partner", "wanda"),): 3.0,
    }
    assert metrics["crossmkt_offers_issued_total"] == {(("campaign", "member-day"),): 42.0}
    assert metrics["crossmkt_deal_grants"] == {
        (("status", "reserved"),): 0.0,
        (("status", "confirmed"),): 1.0,
        (("status", "compensated"),): 2.0,
    }
    assert metrics["crossmkt_webhook_deliveries"] == {
        (("status", "pending"),): 1.0,
        (("status", "delivered"),): 1.0,
        (("status", "failed"),): 1.0,
    }
    assert metrics["crossmkt_webhook_deliveries_open"] == {
        (("event", "deal.granted"), ("status", "pending")): 1.0,
        (("event", "offers.issued"), ("status", "failed")): 1.0,
    }
    assert 590 <= metrics["crossmkt_webhook_oldest_pending_age_seconds"][()] <= 700
    assert metrics["crossmkt_model_active_runs"][()] == 2.0
    assert metrics["crossmkt_model_active_version"] == {(("model", "churn"),): 1.0, (("model", "propensity"),): 1.0}
    last_trained = metrics["crossmkt_model_last_trained_timestamp_seconds"]
    assert last_trained[(("gate", "kept"), ("model", "propensity"), ("version", "2"))] == pytest.approx(
        pipeline["trained"].timestamp()
    )
    assert "crossmkt_model_last_scored_timestamp_seconds" not in metrics  # nothing scored yet
    # Nothing is pending and the live path has issued nothing: zeros, not missing series.
    assert metrics["crossmkt_live_pending_users"][()] == 0
    assert metrics["crossmkt_event_to_offer_latency_seconds_count"][()] == 0


def test_metrics_need_the_token_or_a_staff_session(client, pipeline, django_user_model):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics")["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong-token").status_code == 401
    client.force_login(django_user_model.objects.create_user("partner", "p@example.com", "a-long-password-1"))
    assert client.get("/metrics").status_code == 401
    client.force_login(
        django_user_model.objects.create_user("ops", "o@example.com", "a-long-password-1", is_staff=True)
    )
    assert client.get("/metrics").status_code == 200


def test_metrics_without_a_token_setting_refuse_every_bearer(client, pipeline, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401


def _setting_under(settings_module: str, name: str, **env) -> object:
    """Return a setting as a fresh process under these settings and this environment has it."""
    base = {key: value for key, value in os.environ.items() if not key.startswith(("METRICS_", "SECRET_KEY"))}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import django, json; django.setup(); from django.conf import settings; "
            f"print(json.dumps(settings.{name}))",
        ],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        env={
            **base,
            "DJANGO_SETTINGS_MODULE": settings_module,
            "SECRET_KEY": secrets.token_urlsafe(64),
            "ALLOWED_HOSTS": "crossmkt.example.com",
            **env,
        },
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_production_never_serves_metrics_to_anyone_and_a_laptop_does():
    production = "crossmkt_site.settings.production"
    assert _setting_under(production, "METRICS_ALLOW_ANONYMOUS", METRICS_ALLOW_ANONYMOUS="1") is False
    assert _setting_under("crossmkt_site.settings.local", "METRICS_ALLOW_ANONYMOUS") is True
    assert _setting_under(production, "METRICS_TOKEN", METRICS_TOKEN="from-the-environment") == "from-the-environment"


def test_a_scoring_records_its_time_and_run_for_the_views(client, pipeline, django_capture_on_commit_callbacks):
    # given: the active propensity run scores two users
    run = ModelRun.objects.get(model="propensity", version=1)
    users = [EndUserFactory.create(), EndUserFactory.create()]
    scored_at = pipeline["now"] - timedelta(minutes=5)
    scores = pd.DataFrame({"score": [0.2, 0.7]}, index=[user.pk for user in users])

    # when: (each chunk's time is recorded once its transaction commits)
    with django_capture_on_commit_callbacks(execute=True):
        scores_write(run=run, scores=scores, scored_at=scored_at)
    with django_capture_on_commit_callbacks(execute=True):
        scores_write(run=run, scores=scores.iloc[:1], scored_at=scored_at - timedelta(hours=1))  # an older chunk

    # then: the latest time is kept, with its run
    metrics = _scrape(client, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert metrics["crossmkt_model_last_scored_timestamp_seconds"] == {
        (("model", "propensity"), ("version", "1")): pytest.approx(scored_at.timestamp())
    }
    propensity = next(model for model in pipeline_health().models if model.model == "propensity")
    assert (propensity.last_scored_version, propensity.last_scored_at) == (1, scored_at)


def test_event_counts_are_cached_for_the_configured_seconds(client, pipeline, settings):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}
    before = _scrape(client, **headers)["crossmkt_events_accepted_total"][(("partner", "iqiyi"),)]
    BehaviorEventFactory.create(partner=Partner.objects.get(slug="iqiyi"))
    assert _scrape(client, **headers)["crossmkt_events_accepted_total"][(("partner", "iqiyi"),)] == before
    cache.clear()  # the cache entry expires after PIPELINE_EVENTS_COUNT_SECONDS
    assert _scrape(client, **headers)["crossmkt_events_accepted_total"][(("partner", "iqiyi"),)] == before + 1


@pytest.mark.parametrize(
    ("language", "texts"),
    [
        ("en", ["Pipeline health", "Events accepted", "Webhook deliveries", "Kept, not activated", "wanda"]),
        ("zh-hans", ["管道健康", "已接收事件", "回调推送", "保留，未启用", "wanda"]),
    ],
)
def test_the_admin_page_shows_the_figures_in_both_languages(manager_client, pipeline, language, texts):
    manager_client.cookies["django_language"] = language

    index = manager_client.get(reverse("admin:index")).content.decode()
    page = manager_client.get(reverse("admin-pipeline-health"))

    assert reverse("admin-pipeline-health") in index
    assert page.status_code == 200
    html = page.content.decode()
    for text in texts:
        assert text in html, text
    assert "42" in html and ">3<" in html and ">4<" in html  # offers issued; wanda's events; all partners


def test_the_admin_page_is_for_staff_only(client, django_user_model, pipeline):
    client.force_login(django_user_model.objects.create_user("partner", "p@example.com", "a-long-password-1"))
    response = client.get(reverse("admin-pipeline-health"))
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_pipeline_status_prints_the_same_figures(pipeline, client):
    out = io.StringIO()
    call_command("pipeline_status", stdout=out)
    text = out.getvalue()
    for expected in (
        "Events accepted",
        "wanda",
        "offers issued: member-day",
        "deal grants: Compensated",
        "Failed: Offers issued",
        "Kept, not activated: held-out AUC 0.5100 ± 0.0150 against 0.7400 ± 0.0130 of v1: worse by 0.2300",
        "users pending",
    ):
        assert expected in text, expected

    out = io.StringIO()
    call_command("pipeline_status", "--json", stdout=out)
    data = json.loads(out.getvalue())
    metrics = _scrape(client, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert {slug: n for slug, n in data["events"]["by_partner"].items() if n} == {"iqiyi": 1, "wanda": 3}
    assert data["events"]["total"] == sum(metrics["crossmkt_events_accepted_total"].values())
    assert data["offers_issued"]["total"] == 42
    assert data["deal_grants"]["compensated"] == metrics["crossmkt_deal_grants"][(("status", "compensated"),)]
    assert data["webhook_deliveries"]["by_status"] == {"pending": 1, "delivered": 1, "failed": 1}
    assert data["active_model_runs"] == 2
    propensity = next(model for model in data["models"] if model["model"] == "propensity")
    assert propensity["active_version"] == 1 and propensity["last_trained_version"] == 2
    assert propensity["quality_gate"]["decision"] == "kept"
    assert data["pending"]["users"] == 0 and data["offer_latency"]["count"] == 0


def test_the_live_paths_backlog_and_latency_come_from_its_pending_users_and_live_offers(pipeline):
    # given: 17 users pending, the oldest touched 3.5 s ago; the live path issued 4 offers, a run one
    now = pipeline["now"]
    for n, user in enumerate(EndUserFactory.create_batch(17)):
        PendingUser.objects.create(
            user=user, first_touched_at=now - timedelta(seconds=3.5 - n * 0.1), last_touched_at=now, touches=1
        )
    campaign = CampaignFactory.create(slug="always-on")
    for seconds in (0.4, 0.9, 4.0, 12.0):
        OfferFactory.create(campaign=campaign, issued_at=now, touched_at=now - timedelta(seconds=seconds))
    OfferFactory.create(campaign=campaign, issued_at=now)  # a batch run's: no latency

    # when
    health = pipeline_health()
    metrics = _families(pipeline_metrics_text(lambda: health).decode())
    with translation.override("en"):
        tables = {table.key: table for table in pipeline_status_tables(health)}

    # then
    assert metrics["crossmkt_live_pending_users"][()] == 17
    assert 3.5 <= metrics["crossmkt_live_oldest_pending_age_seconds"][()] < 60
    buckets = metrics["crossmkt_event_to_offer_latency_seconds_bucket"]
    assert buckets[(("le", "0.5"),)] == 1 and buckets[(("le", "1.0"),)] == 2
    assert buckets[(("le", "5.0"),)] == 3 and buckets[(("le", "+Inf"),)] == 4
    assert metrics["crossmkt_event_to_offer_latency_seconds_count"][()] == 4
    assert metrics["crossmkt_event_to_offer_latency_seconds_sum"][()] == pytest.approx(17.3)
    assert ("users pending", "17") in tables["live"].rows
