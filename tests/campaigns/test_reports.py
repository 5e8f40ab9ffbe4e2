"""The campaign report says what a campaign caused, and warns when the holdout split is off."""

import io
import json
from datetime import timedelta
from decimal import Decimal

import numpy as np
import pytest
from django.core.management import call_command
from django.utils import timezone

from analytics.models import BehaviorEvent, EndUser
from campaigns.models import CampaignAssignment, Offer
from campaigns.reports.campaign_report import campaign_report
from campaigns.reports.selectors import campaign_outcome_frame
from tests.factories import CampaignFactory, PartnerFactory, RuleFactory

pytestmark = pytest.mark.django_db


def build_experiment(*, treated_users, holdout_users, treated_rate, holdout_rate, holdout_share, seed=0):
    """Assign users to arms and give each a purchase with the arm's probability; return the campaign."""
    rng = np.random.default_rng(seed)
    partner = PartnerFactory.create()
    campaign = CampaignFactory.create(
        owner=partner, holdout_share=Decimal(holdout_share), budget=None, starts_at=timezone.now() - timedelta(days=10)
    )
    rule = RuleFactory.create(campaign=campaign, condition={})
    n = treated_users + holdout_users
    users = EndUser.objects.bulk_create(
        EndUser(external_id=f"r{i:06d}", home_partner=partner, marketing_consent=True) for i in range(n)
    )
    assigned_at = timezone.now() - timedelta(days=9)
    arms = ["treatment"] * treated_users + ["holdout"] * holdout_users
    CampaignAssignment.objects.bulk_create(
        CampaignAssignment(campaign=campaign, user=user, arm=arm, rule=rule)
        for user, arm in zip(users, arms, strict=True)
    )
    CampaignAssignment.objects.update(assigned_at=assigned_at)
    Offer.objects.bulk_create(
        Offer(
            campaign=campaign,
            rule=rule,
            user=user,
            kind="coupon",
            amount_off=Decimal("20.00"),
            cost=Decimal("2.00"),
            issued_at=assigned_at,
            expires_at=assigned_at + timedelta(days=30),
        )
        for user, arm in zip(users, arms, strict=True)
        if arm == "treatment"
    )
    buys = rng.random(n) < np.where(np.array(arms) == "treatment", treated_rate, holdout_rate)
    BehaviorEvent.objects.bulk_create(
        BehaviorEvent(
            partner=partner,
            event_id=f"p{i}",
            user=user,
            kind="course_purchase",
            item_id="C1",
            amount=Decimal("100.00"),
            occurred_at=assigned_at + timedelta(days=1),
        )
        for i, (user, buy) in enumerate(zip(users, buys, strict=True))
        if buy
    )
    return campaign


def test_report_recovers_the_effect_with_an_interval_and_funnel():
    # given 3,000 treated users converting at 15% and 3,000 held out at 10%
    campaign = build_experiment(
        treated_users=3000, holdout_users=3000, treated_rate=0.15, holdout_rate=0.10, holdout_share="0.500"
    )

    report = campaign_report(campaign=campaign).to_dict()

    funnel = report["funnel"]
    assert (funnel["eligible"], funnel["treated"], funnel["holdout"], funnel["issued"]) == (6000, 3000, 3000, 3000)
    comparison = report["uplift"]["comparisons"][0]
    conversion = comparison["conversion"]
    assert conversion["difference_lower"] < 0.05 < conversion["difference_upper"]
    assert abs(conversion["difference"] - 0.05) < 3 * conversion["standard_error"]
    # no coupon was redeemed: 6,000 CNY reserved, nothing spent, so ROI is on nothing
    assert (report["cost"]["reserved"], report["cost"]["spent"]) == ("6000.00", "0.00")
    assert comparison["campaign_return"]["cost"] == "0.00"
    assert Decimal(comparison["revenue"]["difference"]) > 0
    assert not report["warnings"]
    assert report["rules"][0]["conversion_uplift"]["difference"] == pytest.approx(conversion["difference"])


def test_the_funnel_counts_treated_users_step_by_step_and_has_no_step_it_cannot_know():
    # given 200 treated users with a coupon each, of whom the first 30 used it, and their purchases
    campaign = build_experiment(
        treated_users=200, holdout_users=200, treated_rate=0.3, holdout_rate=0.1, holdout_share="0.500"
    )
    used = list(Offer.objects.filter(campaign=campaign).order_by("pk")[:30].values_list("pk", flat=True))
    Offer.objects.filter(pk__in=used).update(status=Offer.Status.REDEEMED)

    funnel = campaign_report(campaign=campaign).to_dict()["funnel"]

    # then each step is a subset of the one before, and the users who used a coupon and bought are among both
    frame = campaign_outcome_frame(campaign)
    buyers = set(frame[(frame["arm"] != "holdout") & frame["converted"]]["user_id"])
    redeemers = set(Offer.objects.filter(pk__in=used).values_list("user_id", flat=True))
    assert (funnel["users_issued"], funnel["users_redeemed"]) == (200, 30)
    assert funnel["users_redeemed_converted"] == len(buyers & redeemers)
    assert funnel["treated"] >= funnel["users_issued"] >= funnel["users_redeemed"] >= funnel["users_redeemed_converted"]
    assert funnel["converted"] == len(buyers)
    # nothing records that a partner showed an offer to its user, so there is no delivered step to show as 0
    assert "delivered" not in funnel


def test_skewed_holdout_is_flagged_before_the_uplift():
    # given a 50/50 configuration that came out 55/45
    campaign = build_experiment(
        treated_users=5500, holdout_users=4500, treated_rate=0.1, holdout_rate=0.1, holdout_share="0.500"
    )

    report = campaign_report(campaign=campaign).to_dict()

    assert report["warnings"] and "sample" in report["warnings"][0].lower()
    out = io.StringIO()
    call_command("campaign_report", campaign.slug, stdout=out)
    text = out.getvalue()
    assert text.index("WARNING") < text.index("Uplift of")


def test_report_formats_agree():
    campaign = build_experiment(
        treated_users=300, holdout_users=300, treated_rate=0.2, holdout_rate=0.1, holdout_share="0.500"
    )
    outputs = {}
    for fmt in ("json", "csv", "text"):
        out = io.StringIO()
        call_command("campaign_report", campaign.slug, "--format", fmt, stdout=out)
        outputs[fmt] = out.getvalue()
    data = json.loads(outputs["json"])
    assert data["funnel"]["treated"] == 300
    assert "arm,treatment,300" in outputs["csv"]
    assert "Funnel: eligible 600" in outputs["text"]


# ----------------------------------------------------------------- arms too small for a statistic (issue 14, item 4)


@pytest.fixture
def tiny_campaign():
    """A campaign with one treated user who bought and one held-out user who did not."""
    return build_experiment(treated_users=1, holdout_users=1, treated_rate=1.0, holdout_rate=0.0, holdout_share="0.500")


def test_api_reports_a_one_user_arm_with_not_enough_data_instead_of_a_500(tiny_campaign):
    from campaigns.services.partners import partner_api_key_create
    from tests.api.conftest import client_with_key

    client = client_with_key(partner_api_key_create(partner=tiny_campaign.owner)[1])
    client.raise_request_exception = False

    response = client.get(f"/api/v1/campaigns/{tiny_campaign.slug}/report/")

    assert response.status_code == 200, response.content[:300]
    comparison = response.json()["uplift"]["comparisons"][0]
    assert comparison["conversion"]["difference"] == 1.0
    assert comparison["revenue"] is None
    assert comparison["campaign_return"] is None
    reasons = comparison["not_enough_data"]
    assert "at least two users" in reasons["revenue"] and "1 user" in reasons["revenue"]
    assert "revenue" in reasons["campaign_return"]


def test_command_prints_not_enough_data_for_a_one_user_arm_in_every_format(tiny_campaign):
    outputs = {}
    for fmt in ("text", "csv", "json"):
        out = io.StringIO()
        call_command("campaign_report", tiny_campaign.slug, "--format", fmt, stdout=out)
        outputs[fmt] = out.getvalue()

    assert "revenue/user not enough data (each arm needs at least two users" in outputs["text"]
    assert "Uplift of treatment over holdout: conversion +1.0000" in outputs["text"]
    assert "not enough data" in outputs["csv"]
    assert json.loads(outputs["json"])["uplift"]["comparisons"][0]["revenue"] is None
