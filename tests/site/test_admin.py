"""The admin as a partnership manager meets it: every page opens, history is kept, logins are throttled."""

from datetime import timedelta

import pytest
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone

from campaigns.models import Campaign
from tests.factories import (
    BehaviorEventFactory,
    CampaignFactory,
    CourseFactory,
    DealFactory,
    FilmFactory,
    OfferFactory,
    RuleFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def some_of_everything():
    rule = RuleFactory.create()
    OfferFactory.create(campaign=rule.campaign, rule=rule)
    CourseFactory.create(), FilmFactory.create(), DealFactory.create(), BehaviorEventFactory.create()
    return rule


def our_models():
    return [model for model in admin.site._registry if model._meta.app_label in {"campaigns", "analytics"}]


@pytest.mark.parametrize("language", ["zh-hans", "en"])
def test_every_list_and_detail_page_opens(manager_client, some_of_everything, language):
    manager_client.cookies["django_language"] = language
    for model in our_models():
        opts = model._meta
        changelist = manager_client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        assert changelist.status_code == 200, opts.label
        obj = model.objects.first()
        if obj is not None:
            change = manager_client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]))
            assert change.status_code == 200, opts.label


def test_admin_speaks_chinese_by_default(manager_client):
    page = manager_client.get(reverse("admin:index")).content.decode()
    assert 'lang="zh-hans"' in page
    assert "欢迎" in page


def test_campaign_page_shows_its_rules_inline(manager_client, some_of_everything):
    campaign = some_of_everything.campaign
    page = manager_client.get(reverse("admin:campaigns_campaign_change", args=[campaign.pk])).content.decode()
    assert some_of_everything.name in page


def test_changes_to_a_campaign_are_kept_in_its_history(manager_client, manager):
    # given a campaign
    starts = timezone.localtime().replace(microsecond=0)
    ends = starts + timedelta(days=30)
    campaign = CampaignFactory.create(name="Before", starts_at=starts, ends_at=ends)
    # when the manager renames it in the admin
    data = {
        "slug": campaign.slug,
        "name": "After",
        "kind": campaign.kind,
        "mode": campaign.mode,
        "reach": campaign.reach,
        "status": campaign.status,
        "owner": campaign.owner_id,
        "starts_at_0": f"{starts:%Y-%m-%d}",
        "starts_at_1": f"{starts:%H:%M:%S}",
        "ends_at_0": f"{ends:%Y-%m-%d}",
        "ends_at_1": f"{ends:%H:%M:%S}",
        "timezone": "Asia/Shanghai",
        "budget": "1000.00",
        "per_user_limit": 1,
        "holdout_share": "0.100",
        "offer_valid_days": 14,
        "conversion_window_days": 14,
        "rules-TOTAL_FORMS": 0,
        "rules-INITIAL_FORMS": 0,
        "rules-MIN_NUM_FORMS": 0,
        "rules-MAX_NUM_FORMS": 1000,
    }
    response = manager_client.post(reverse("admin:campaigns_campaign_change", args=[campaign.pk]), data)
    assert response.status_code == 302, response.content.decode()[:2000]
    # then its history says who changed what from what to what
    latest, previous = Campaign.history.filter(id=campaign.pk).order_by("-history_date")[:2]
    assert latest.history_user == manager
    delta = latest.diff_against(previous)
    assert [(c.field, c.old, c.new) for c in delta.changes] == [("name", "Before", "After")]
    history_page = manager_client.get(reverse("admin:campaigns_campaign_history", args=[campaign.pk]))
    assert "After" in history_page.content.decode()


def test_ledger_and_offers_cannot_be_edited_in_the_admin(manager_client, some_of_everything):
    offer = some_of_everything.offers.get()
    response = manager_client.post(reverse("admin:campaigns_offer_change", args=[offer.pk]), {"status": "redeemed"})
    assert response.status_code == 403
    assert manager_client.get(reverse("admin:campaigns_redemptionentry_add")).status_code == 403


def test_login_is_locked_after_repeated_failures(client, manager):
    login = reverse("admin:login")
    for _ in range(5):
        client.post(login, {"username": "manager", "password": "wrong"})
    # the right password no longer gets in from here
    response = client.post(login, {"username": "manager", "password": "a-long-password-1"})
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


def test_a_rule_with_a_bad_condition_is_refused_with_a_pointer(manager_client):
    campaign = CampaignFactory.create()
    data = {
        "campaign": campaign.pk,
        "name": "heavy",
        "priority": 100,
        "exclusive": "on",
        "offer_kind": "coupon",
        "amount_off": "20.00",
        "min_spend": "0",
        "cost": "20.00",
        "condition_text": "watchng_count > 10",
    }
    response = manager_client.post(reverse("admin:campaigns_rule_add"), data)
    page = response.content.decode()
    assert response.status_code == 200  # the form comes back
    assert "watchng_count" in page and "watching_count" in page  # names the bad part and suggests the right one
    data["condition_text"] = "watching_count > 10 and purchasing_count > 5"
    response = manager_client.post(reverse("admin:campaigns_rule_add"), data)
    assert response.status_code == 302
    rule = campaign.rules.get()
    assert rule.condition == {
        "all": [
            {"field": "watching_count", "op": ">", "value": 10},
            {"field": "purchasing_count", "op": ">", "value": 5},
        ]
    }


def test_preview_action_reports_reach_and_cost_without_issuing(manager_client):
    from analytics.models import ImportedBehavior
    from campaigns.models import Offer
    from tests.factories import EndUserFactory

    rule = RuleFactory.create(condition={"field": "watching_count", "op": ">", "value": 10}, cost="20.00")
    for watching in (15, 3):
        ImportedBehavior.objects.create(user=EndUserFactory.create(), watching_count=watching, purchasing_count=0)
    response = manager_client.post(
        reverse("admin:campaigns_campaign_changelist"),
        {"action": "preview_campaign", "_selected_action": [rule.campaign.pk]},
        follow=True,
    )
    text = response.content.decode()
    assert rule.campaign.slug in text and "CNY" in text
    assert not Offer.objects.exists()


def test_two_model_runs_compare_side_by_side(manager_client):
    from analytics.models import ModelRun

    first = ModelRun.objects.create(model="propensity", version=1, params={"C": "inf"}, metrics={"auc": 0.84, "n": 10})
    second = ModelRun.objects.create(
        model="propensity", version=2, is_active=True, params={"C": "inf"}, metrics={"auc": 0.86, "n": 10}
    )
    response = manager_client.post(
        reverse("admin:analytics_modelrun_changelist"),
        {"action": "compare_runs", "_selected_action": [first.pk, second.pk]},
        follow=True,
    )
    page = response.content.decode()
    assert "metrics.auc" in page and "0.84" in page and "0.86" in page
    assert "<strong>metrics.auc</strong>" in page and "<strong>metrics.n</strong>" not in page
