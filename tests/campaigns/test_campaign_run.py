"""Running a campaign as a partnership manager sees it: the right users get the right offers, once."""

import io
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from analytics.models import ImportedBehavior
from campaigns.models import Campaign, CampaignAssignment, Offer
from campaigns.services.campaign_planning import holdout_draw, new_codes
from campaigns.services.campaign_run import campaign_dry_run, campaign_run
from tests.factories import CampaignFactory, EndUserFactory, PartnerFactory, RuleFactory

pytestmark = pytest.mark.django_db

HEAVY = {
    "all": [{"field": "purchasing_count", "op": ">", "value": 5}, {"field": "watching_count", "op": ">", "value": 10}]
}


def make_users(partner, rows):
    """Create users with the article's per-user counts: rows of (watching, purchasing, marketing consent)."""
    users = []
    for watching, purchasing, consent in rows:
        user = EndUserFactory.create(home_partner=partner, marketing_consent=consent)
        ImportedBehavior.objects.create(user=user, watching_count=watching, purchasing_count=purchasing)
        users.append(user)
    return users


@pytest.fixture
def article_campaign():
    """The article's member campaign: heavy users 20 CNY, everyone else 10 CNY; no holdout unless a test sets one."""
    partner = PartnerFactory.create(slug="zhixue")
    campaign = CampaignFactory.create(
        slug="member-day", owner=partner, holdout_share=Decimal("0"), budget=Decimal("10000.00")
    )
    RuleFactory.create(
        campaign=campaign,
        name="heavy",
        priority=200,
        exclusive=True,
        condition=HEAVY,
        amount_off=Decimal("20.00"),
        cost=Decimal("20.00"),
    )
    RuleFactory.create(
        campaign=campaign,
        name="others",
        priority=100,
        exclusive=True,
        condition={},
        amount_off=Decimal("10.00"),
        cost=Decimal("10.00"),
    )
    return campaign, partner


def test_heavy_users_get_20_and_others_10(article_campaign):
    campaign, partner = article_campaign
    heavy, light, no_consent = make_users(partner, [(15, 7, True), (3, 1, True), (20, 9, False)])

    result = campaign_run(campaign=campaign)

    offers = {offer.user_id: offer for offer in Offer.objects.all()}
    assert offers[heavy.pk].amount_off == Decimal("20.00")
    assert offers[light.pk].amount_off == Decimal("10.00")
    assert no_consent.pk not in offers  # no marketing consent, no offer
    assert result["issued"] == 2 and result["cost"] == "30.00"
    campaign.refresh_from_db()
    assert campaign.spent == Decimal("30.00") and campaign.issued_count == 2


def test_running_twice_issues_nothing_the_second_time(article_campaign):
    campaign, partner = article_campaign
    make_users(partner, [(15, 7, True), (3, 1, True)])
    campaign_run(campaign=campaign)
    codes = set(Offer.objects.values_list("code", flat=True))

    second = campaign_run(campaign=campaign)

    assert second["issued"] == 0 and second["skipped_existing"] == 2
    assert set(Offer.objects.values_list("code", flat=True)) == codes
    campaign.refresh_from_db()
    assert campaign.spent == Decimal("30.00")


def test_holdout_users_get_nothing_and_are_recorded(article_campaign):
    campaign, partner = article_campaign
    Campaign.objects.filter(pk=campaign.pk).update(holdout_share=Decimal("0.300"))
    campaign.refresh_from_db()
    users = make_users(partner, [(15, 7, True)] * 200)

    campaign_run(campaign=campaign)

    holdout = set(CampaignAssignment.objects.filter(arm="holdout").values_list("user_id", flat=True))
    treated = set(CampaignAssignment.objects.filter(arm="treatment").values_list("user_id", flat=True))
    assert holdout and treated and not holdout & treated
    assert holdout | treated == {user.pk for user in users}
    assert not Offer.objects.filter(user_id__in=holdout).exists()
    assert set(Offer.objects.values_list("user_id", flat=True)) == treated
    assert 30 <= len(holdout) <= 90  # 30% of 200, give or take chance


def test_holdout_draw_is_stable_and_uniform(article_campaign):
    campaign, _ = article_campaign
    import numpy as np

    ids = np.arange(1, 200_001)
    first, again = holdout_draw(campaign, ids), holdout_draw(campaign, ids)
    assert (first == again).all()
    assert abs((first < 0.1).mean() - 0.1) < 0.005
    assert first.min() >= 0 and first.max() < 1


def test_budget_is_never_exceeded_and_the_rest_is_clamped(article_campaign):
    campaign, partner = article_campaign
    Campaign.objects.filter(pk=campaign.pk).update(budget=Decimal("95.00"))
    campaign.refresh_from_db()
    make_users(partner, [(15, 7, True)] * 10)  # ten heavy users at 20 CNY each, 95 CNY of budget

    result = campaign_run(campaign=campaign)

    campaign.refresh_from_db()
    assert result["issued"] == 4 and result["clamped"] == 6
    assert campaign.spent == Decimal("80.00") <= campaign.budget
    # the users the budget did not reach are not recorded as treated, so a later run can reach them
    assert CampaignAssignment.objects.filter(arm="treatment").count() == 4


def test_per_user_limit_with_non_exclusive_rules(article_campaign):
    campaign, partner = article_campaign
    campaign.rules.update(exclusive=False)
    Campaign.objects.filter(pk=campaign.pk).update(per_user_limit=2)
    campaign.refresh_from_db()
    heavy, light = make_users(partner, [(15, 7, True), (3, 1, True)])

    campaign_run(campaign=campaign)

    assert sorted(Offer.objects.filter(user=heavy).values_list("sequence", "amount_off")) == [
        (0, Decimal("20.00")),
        (1, Decimal("10.00")),
    ]
    assert Offer.objects.filter(user=light).count() == 1


def test_dry_run_forecasts_reach_and_cost_and_writes_nothing(article_campaign):
    campaign, partner = article_campaign
    make_users(partner, [(15, 7, True)] * 3 + [(1, 0, True)] * 5)

    forecast = campaign_dry_run(campaign=campaign)

    assert [(r.rule, r.treated, r.offers, r.cost) for r in forecast.rules] == [
        ("heavy", 3, 3, Decimal("60.00")),
        ("others", 5, 5, Decimal("50.00")),
    ]
    assert not Offer.objects.exists() and not CampaignAssignment.objects.exists()
    out = io.StringIO()
    call_command("run_campaign", "member-day", "--dry-run", "--no-progress", stdout=out)
    assert "nothing issued" in out.getvalue() and "110.00" in out.getvalue()


def test_a_paused_campaign_issues_nothing(article_campaign):
    campaign, partner = article_campaign
    make_users(partner, [(15, 7, True)])
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.PAUSED)
    with pytest.raises(CommandError, match="is paused"):
        call_command("run_campaign", "member-day", "--no-progress", stdout=io.StringIO())
    assert not Offer.objects.exists()


def test_unknown_campaign_is_one_clear_line():
    with pytest.raises(CommandError, match="no campaign 'nope'"):
        call_command("run_campaign", "nope", "--no-progress")


def test_codes_are_unguessable_and_distinct():
    codes = new_codes(10_000)
    assert len(set(codes)) == 10_000
    assert all(len(code) == 16 and set(code) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ") for code in codes)


def test_budget_clamp_keeps_the_holdout_in_proportion(article_campaign):
    # given 2,000 heavy users, a 30% holdout, and a budget for about half of the treated users
    from campaigns.reports.campaign_report import campaign_report

    campaign, partner = article_campaign
    Campaign.objects.filter(pk=campaign.pk).update(holdout_share=Decimal("0.300"), budget=Decimal("14000.00"))
    campaign.refresh_from_db()
    EndUserFactory._meta.model.objects.bulk_create(
        EndUserFactory.build(home_partner=partner, external_id=f"b{i:05d}") for i in range(2000)
    )
    ImportedBehavior.objects.bulk_create(
        ImportedBehavior(user=user, watching_count=15, purchasing_count=7)
        for user in EndUserFactory._meta.model.objects.filter(external_id__startswith="b")
    )

    result = campaign_run(campaign=campaign)

    # then the budget cut treated users, and the holdout was cut at the same point, so the split still holds
    treated = CampaignAssignment.objects.filter(arm="treatment").count()
    holdout = CampaignAssignment.objects.filter(arm="holdout").count()
    assert result["clamped"] > 0 and treated == 700
    assert 0.25 < holdout / (holdout + treated) < 0.35
    assert not campaign_report(campaign=campaign).warnings
