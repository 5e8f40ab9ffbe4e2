"""What a campaign really spent: each offer kind costs what the cost model says, and the budget gets back the rest.

Offers are issued by the real issuance path (``campaign_issue_chunk`` over the test's users),
used through ``offer_redeem`` and ended by ``offer_expire_due`` / ``offer_revoke``; the report
is read as a manager reads it (command, JSON, CSV).
"""

import csv
import io
import json
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.models import EndUser
from campaigns.models import Campaign, CampaignAssignment, Deal, Offer, Partner, Rule, StockItem
from campaigns.reports.campaign_report import campaign_report
from campaigns.reports.selectors import campaign_outcome_frame
from campaigns.services.campaign_run import campaign_issue_chunk
from campaigns.services.offers import offer_expire_due, offer_revoke
from campaigns.services.redemption import offer_redeem, offer_redemption_rollback
from crossmkt_site.errors import ApplicationError
from tests.factories import (
    BehaviorEventFactory,
    CampaignFactory,
    CourseFactory,
    DealFactory,
    EndUserFactory,
    PartnerFactory,
    RuleFactory,
)

pytestmark = pytest.mark.django_db

ISSUED_DAYS = 14


def issue(campaign: Campaign, users: list[EndUser]) -> dict:
    """Issue the campaign's offers to exactly these users through the real issuance path."""
    ids = [user.pk for user in users]
    return campaign_issue_chunk(campaign_id=campaign.pk, id_range=(min(ids), max(ids) + 1)).as_dict()


def after_expiry() -> datetime:
    return timezone.now() + timedelta(days=ISSUED_DAYS + 1)


def lapse(offer: Offer) -> None:
    """Move an open offer's dates back so that it is due for expiry now."""
    now = timezone.now()
    Offer.objects.filter(pk=offer.pk).update(issued_at=now - timedelta(days=2), expires_at=now - timedelta(seconds=1))


def cost_of(campaign: Campaign) -> dict:
    campaign.refresh_from_db()
    return campaign_report(campaign=campaign).to_dict()["cost"]


@pytest.fixture
def owner():
    return PartnerFactory.create(slug="zhixue", kind=Partner.Kind.KNOWLEDGE)


def campaign_with(owner, *, budget="1000.00", holdout="0", **rule):
    campaign = CampaignFactory.create(
        owner=owner, budget=Decimal(budget), holdout_share=Decimal(holdout), offer_valid_days=ISSUED_DAYS
    )
    RuleFactory.create(campaign=campaign, condition={}, **rule)
    return campaign


def users_of(owner, count):
    return [EndUserFactory.create(home_partner=owner) for _ in range(count)]


def bought_a_course(deal: Deal, users: list[EndUser]) -> None:
    """Record, now, each user buying a course of the deal's set at its source partner: what earns its grants."""
    course = CourseFactory.create(partner=deal.source_partner)
    deal.trigger_courses.add(course)
    for user in users:
        BehaviorEventFactory.create(
            partner=deal.source_partner, user=user, kind="course_purchase", item_id=course.sku, amount=course.price
        )


def load_codes(partner, kind, count, *, value, paid_on_use=False, days=60, prefix="C"):
    expires_at = timezone.now() + timedelta(days=days)
    StockItem.objects.bulk_create(
        StockItem(
            partner=partner,
            kind=kind,
            code=f"{prefix}{n:04d}",
            face_value=Decimal(value),
            expires_at=expires_at,
            paid_on_use=paid_on_use,
        )
        for n in range(count)
    )


# --------------------------------------------------------------------------- coupons


def test_an_unused_coupon_costs_nothing_after_expiry_and_its_reservation_is_released(owner):
    # given two 30 CNY coupons issued from a 1,000 CNY budget
    campaign = campaign_with(owner, amount_off=Decimal("30.00"), cost=Decimal("30.00"))
    issue(campaign, users_of(owner, 2))
    campaign.refresh_from_db()
    assert campaign.spent == Decimal("60.00")  # the budget holds their face value while they are open
    assert cost_of(campaign) | {"by_arm": None} == {
        "reserved": "60.00",
        "spent": "0.00",
        "released": "0.00",
        "outstanding": "60.00",
        "beyond_reservation": "0.00",
        "budget": "1000.00",
        "budget_held": "60.00",
        "by_arm": None,
    }

    # when neither is used and both expire
    assert offer_expire_due(now=after_expiry()) == 2

    # then they cost nothing and the whole reservation is back in the budget
    campaign.refresh_from_db()
    assert campaign.spent == Decimal("0.00")
    cost = cost_of(campaign)
    assert (cost["reserved"], cost["spent"], cost["released"], cost["outstanding"]) == (
        "60.00",
        "0.00",
        "60.00",
        "0.00",
    )


def test_a_redeemed_coupon_costs_its_discount_and_gives_back_the_rest(owner):
    # given a 30 CNY coupon and a 20% coupon whose rule reserved 15 CNY
    amount = campaign_with(owner, amount_off=Decimal("30.00"), cost=Decimal("30.00"))
    percent = campaign_with(owner, amount_off=None, percent_off=Decimal("20"), cost=Decimal("15.00"))
    users = users_of(owner, 2)
    issue(amount, users[:1])
    issue(percent, users[1:])
    small_order, big_order = Offer.objects.get(campaign=amount), Offer.objects.get(campaign=percent)

    # when the first pays for a 19.90 CNY order (the coupon takes at most the order) and the second a 100 CNY one
    offer_redeem(code=small_order.code, partner=owner, order_amount=Decimal("19.90"))
    offer_redeem(code=big_order.code, partner=owner, order_amount=Decimal("100.00"))

    # then each costs the discount the ledger records
    small_order.refresh_from_db()
    big_order.refresh_from_db()
    assert (small_order.spent, big_order.spent) == (Decimal("19.90"), Decimal("20.00"))
    amount.refresh_from_db()
    percent.refresh_from_db()
    assert amount.spent == Decimal("19.90")  # 10.10 of the 30 reserved went back to the budget
    assert cost_of(amount) | {"by_arm": None} == {
        "reserved": "30.00",
        "spent": "19.90",
        "released": "10.10",
        "outstanding": "0.00",
        "beyond_reservation": "0.00",
        "budget": "1000.00",
        "budget_held": "19.90",
        "by_arm": None,
    }
    # and a discount above the rule's estimate is spent all the same, held only up to the reservation, and flagged
    assert percent.spent == Decimal("15.00")
    report = campaign_report(campaign=percent).to_dict()
    assert (report["cost"]["spent"], report["cost"]["beyond_reservation"]) == ("20.00", "5.00")
    assert any("more off orders than their rules reserved" in warning for warning in report["warnings"])


def test_a_coupons_discount_is_counted_once_in_the_return_as_spent_not_again_as_lost_margin(owner):
    # given a 30 CNY coupon campaign holding out half its users, on a course whose partner takes 30% of each sale
    campaign = campaign_with(owner, holdout="0.5", amount_off=Decimal("30.00"), cost=Decimal("30.00"))
    CourseFactory.create(partner=owner, sku="K1", price=Decimal("100.00"), partner_share=Decimal("0.300"))
    issue(campaign, users_of(owner, 40))
    treated = list(CampaignAssignment.objects.filter(campaign=campaign).exclude(arm="holdout"))
    held = list(CampaignAssignment.objects.filter(campaign=campaign, arm="holdout"))
    assert len(treated) >= 2 and len(held) >= 2

    # when a treated user uses the coupon on a 100 CNY order and pays 70, and a held-out user pays 100 for the course
    coupon = Offer.objects.get(campaign=campaign, user_id=treated[0].user_id)
    entry = offer_redeem(code=coupon.code, partner=owner, order_amount=Decimal("100.00"), item_id="K1")
    for n, (assignment, paid) in enumerate(((treated[0], entry.order_amount - entry.discount), (held[0], "100.00"))):
        BehaviorEventFactory.create(
            partner=owner,
            event_id=f"k{n}",
            user_id=assignment.user_id,
            kind="course_purchase",
            item_id="K1",
            amount=Decimal(paid),
            occurred_at=timezone.now(),
        )

    # then revenue is what was paid, the margin is 70 x (1 - 0.3) + the 30 off (100 less the partner's 21 on what it
    # saw paid), the 30 is spent, and the ROI takes it off once
    frame = campaign_outcome_frame(campaign).set_index("user_id")
    assert frame.loc[treated[0].user_id, "revenue"] == Decimal("70.00")
    assert frame.loc[treated[0].user_id, "margin"] == Decimal("79.00")
    assert frame.loc[held[0].user_id, "margin"] == Decimal("70.00")
    report = campaign_report(campaign=campaign).to_dict()
    assert report["cost"]["spent"] == "30.00"
    result = report["uplift"]["comparisons"][0]["spend_return"]
    incremental = (Decimal("79.00") / len(treated) - Decimal("70.00") / len(held)) * len(treated)
    assert Decimal(result["incremental_margin"]) == incremental.quantize(Decimal("0.01"))
    assert Decimal(result["roi"]) == ((incremental - 30) / 30).quantize(Decimal("0.0001"))
    revenue_per_treated_user = report["uplift"]["comparisons"][0]["revenue"]["mean_treated"]
    assert Decimal(revenue_per_treated_user) == (Decimal("70.00") / len(treated)).quantize(Decimal("0.01"))

    # and a rolled-back redemption gives the margin its discount back
    offer_redemption_rollback(code=coupon.code, partner=owner)
    frame = campaign_outcome_frame(campaign).set_index("user_id")
    assert frame.loc[treated[0].user_id, "margin"] == Decimal("49.00")


def test_a_rolled_back_redemption_costs_nothing_again_and_holds_its_reservation(owner):
    campaign = campaign_with(owner, amount_off=Decimal("30.00"), cost=Decimal("30.00"))
    issue(campaign, users_of(owner, 1))
    offer = Offer.objects.get(campaign=campaign)
    offer_redeem(code=offer.code, partner=owner, order_amount=Decimal("99.00"))

    offer_redemption_rollback(code=offer.code, partner=owner)

    offer.refresh_from_db()
    campaign.refresh_from_db()
    assert (offer.status, offer.spent, campaign.spent) == (Offer.Status.ISSUED, Decimal("0.00"), Decimal("30.00"))


def test_a_rollback_the_spent_budget_cannot_hold_again_is_refused(owner):
    # given a coupon redeemed for 10 of its 30 CNY, and the 20 given back taken by a new offer
    campaign = campaign_with(owner, budget="30.00", amount_off=Decimal("30.00"), cost=Decimal("30.00"))
    first, _ = users_of(owner, 2)
    issue(campaign, [first])
    offer = Offer.objects.get(campaign=campaign)
    offer_redeem(code=offer.code, partner=owner, order_amount=Decimal("10.00"))
    Campaign.objects.filter(pk=campaign.pk).update(budget=Decimal("30.00"), spent=Decimal("30.00"))

    # when the redemption is rolled back, the offer would need 30 CNY of a budget that has none left
    with pytest.raises(ApplicationError) as refused:
        offer_redemption_rollback(code=offer.code, partner=owner)

    # then it is refused with the reason, and nothing changed
    assert refused.value.code == "over_budget" and "budget" in refused.value.message
    offer.refresh_from_db()
    assert (offer.status, offer.spent) == (Offer.Status.REDEEMED, Decimal("10.00"))


# --------------------------------------------------------------------------- movie tickets


@pytest.fixture
def cinema():
    return PartnerFactory.create(slug="xingguang", kind=Partner.Kind.CINEMA)


def ticket_campaign(owner, cinema, **kwargs):
    return campaign_with(
        owner, offer_kind=Rule.OfferKind.MOVIE_TICKET, benefit_partner=cinema, amount_off=None, **kwargs
    )


def test_a_ticket_costs_its_codes_value_when_issued(owner, cinema):
    # given tickets bought from the cinema at 45 CNY each, for a rule that guessed 40
    load_codes(cinema, "movie_ticket", 2, value="45.00")
    campaign = ticket_campaign(owner, cinema, cost=Decimal("40.00"))

    # when two are issued
    issue(campaign, users_of(owner, 2))

    # then each costs its code's value at once, and the budget holds that much
    assert (
        sorted(Offer.objects.filter(campaign=campaign).values_list("cost", "spent"))
        == [(Decimal("45.00"), Decimal("45.00"))] * 2
    )
    cost = cost_of(campaign)
    assert (cost["reserved"], cost["spent"], cost["outstanding"], cost["budget_held"]) == (
        "90.00",
        "90.00",
        "0.00",
        "90.00",
    )

    # and a used ticket stays spent, while an unused one whose code goes back to the pool takes its cost with it
    used, unused = Offer.objects.filter(campaign=campaign).order_by("pk")
    offer_redeem(code=used.code, partner=cinema, order_amount=Decimal("0"))
    offer_revoke(code=unused.code)
    cost = cost_of(campaign)
    assert (cost["spent"], cost["released"], cost["budget_held"]) == ("45.00", "45.00", "45.00")
    assert StockItem.objects.filter(status="returned").count() == 1


def test_a_ticket_whose_code_expires_unused_stays_spent(owner, cinema):
    # given a bought ticket whose code runs out with the offer
    load_codes(cinema, "movie_ticket", 1, value="45.00", days=ISSUED_DAYS + 1)
    campaign = ticket_campaign(owner, cinema, cost=Decimal("45.00"))
    issue(campaign, users_of(owner, 1))

    # when the offer expires unused after the code's own date
    offer_expire_due(now=timezone.now() + timedelta(days=ISSUED_DAYS + 2))

    # then the money is lost: spent, not released
    cost = cost_of(campaign)
    assert (cost["spent"], cost["released"], cost["budget_held"]) == ("45.00", "0.00", "45.00")


def test_a_ticket_from_a_pool_paid_on_use_costs_only_when_used(owner, cinema):
    load_codes(cinema, "movie_ticket", 2, value="38.00", paid_on_use=True)
    campaign = ticket_campaign(owner, cinema, cost=Decimal("38.00"))
    issue(campaign, users_of(owner, 2))
    assert cost_of(campaign)["spent"] == "0.00"

    used, _ = Offer.objects.filter(campaign=campaign).order_by("pk")
    offer_redeem(code=used.code, partner=cinema, order_amount=Decimal("0"))
    offer_expire_due(now=after_expiry())

    cost = cost_of(campaign)
    assert (cost["reserved"], cost["spent"], cost["released"], cost["outstanding"]) == (
        "76.00",
        "38.00",
        "38.00",
        "0.00",
    )


def test_load_stock_marks_a_pool_paid_on_use(cinema, tmp_path):
    path = tmp_path / "tickets.csv"
    path.write_text("code,value,expires_at\nA1,38.00,2099-01-01\n")
    call_command("load_stock", cinema.slug, str(path), "--kind", "movie_ticket", "--paid-on-use", stdout=io.StringIO())
    assert StockItem.objects.get(code="A1").paid_on_use is True


# --------------------------------------------------------------------------- trials and membership grants


@pytest.fixture
def video():
    return PartnerFactory.create(slug="lanying", kind=Partner.Kind.VIDEO)


def test_a_trial_costs_the_settlement_price_only_when_activated(owner, video):
    # given trials under a deal whose settlement price is 12 CNY per trial, trial codes worth nothing on their own
    deal = DealFactory.create(
        source_partner=owner, target_partner=video, benefit=Deal.Benefit.FREE_VIEWING, settlement_price=Decimal("12")
    )
    load_codes(video, "free_viewing", 3, value="0.00")
    campaign = campaign_with(
        owner,
        offer_kind=Rule.OfferKind.FREE_VIEWING,
        benefit_partner=video,
        deal=deal,
        amount_off=None,
        days=7,
        cost=Decimal("0.00"),
    )
    issue(campaign, users_of(owner, 3))
    cost = cost_of(campaign)
    assert (cost["reserved"], cost["spent"]) == ("36.00", "0.00")  # each reserves the settlement price

    # when one trial is activated, one expires and one is still open
    first, second, _ = Offer.objects.filter(campaign=campaign).order_by("pk")
    offer_redeem(code=first.code, partner=video, order_amount=Decimal("0"))
    lapse(second)
    offer_expire_due()

    # then only the activated one costs, at the settlement price
    cost = cost_of(campaign)
    assert (cost["spent"], cost["released"], cost["outstanding"]) == ("12.00", "12.00", "12.00")


def test_a_membership_grant_costs_the_deals_settlement_price(owner, video):
    deal = DealFactory.create(source_partner=owner, target_partner=video, settlement_price=Decimal("25.00"))
    campaign = campaign_with(
        owner, offer_kind=Rule.OfferKind.MEMBERSHIP_GRANT, deal=deal, amount_off=None, days=30, cost=Decimal("20.00")
    )
    people = users_of(owner, 1)
    issue(campaign, people)
    offer = Offer.objects.get(campaign=campaign)
    bought_a_course(deal, people)

    offer_redeem(code=offer.code, partner=owner, order_amount=Decimal("0"))

    cost = cost_of(campaign)
    assert (cost["reserved"], cost["spent"], cost["released"]) == ("25.00", "25.00", "0.00")


# --------------------------------------------------------------------------- the reports


def test_every_report_format_shows_reserved_spent_and_released(owner):
    # given a campaign with a holdout, one coupon redeemed, one expired
    campaign = campaign_with(owner, holdout="0.300", amount_off=Decimal("30.00"), cost=Decimal("30.00"))
    issue(campaign, users_of(owner, 30))
    redeemed, *_ = Offer.objects.filter(campaign=campaign).order_by("pk")
    offer_redeem(code=redeemed.code, partner=owner, order_amount=Decimal("99.00"))
    offers = Offer.objects.filter(campaign=campaign).count()
    offer_expire_due(now=after_expiry())
    reserved, released = 30 * offers, 30 * (offers - 1)

    text, as_json, as_csv = (io.StringIO() for _ in range(3))
    call_command("campaign_report", campaign.slug, stdout=text)
    call_command("campaign_report", campaign.slug, "--format", "json", stdout=as_json)
    call_command("campaign_report", campaign.slug, "--format", "csv", stdout=as_csv)

    assert f"reserved {reserved}.00 CNY, spent 30.00 CNY, released {released}.00 CNY" in text.getvalue()
    assert "ROI on spent" in text.getvalue()
    data = json.loads(as_json.getvalue())
    assert (data["cost"]["reserved"], data["cost"]["spent"], data["cost"]["released"]) == (
        f"{reserved}.00",
        "30.00",
        f"{released}.00",
    )
    spend_return = data["uplift"]["comparisons"][0]["spend_return"]
    assert spend_return["spent"] == "30.00"
    assert spend_return["roi_lower"] is not None and spend_return["roi_upper"] is not None
    rows = {(row["section"], row["name"]): row for row in csv.DictReader(io.StringIO(as_csv.getvalue()))}
    assert rows[("cost", "reserved")]["revenue"] == f"{reserved}.00"
    assert rows[("cost", "spent")]["revenue"] == "30.00"
    assert rows[("cost", "released")]["revenue"] == f"{released}.00"


def test_roi_and_incremental_margin_are_on_spent_and_the_courses_margin(owner):
    # given a course of which its partner takes 40%, treated users who all buy it and held-out users who do not
    from tests.factories import BehaviorEventFactory, CourseFactory

    course = CourseFactory.create(partner=owner, sku="ECO-101", price=Decimal("100.00"), partner_share=Decimal("0.4"))
    campaign = campaign_with(owner, holdout="0.500", amount_off=Decimal("30.00"), cost=Decimal("30.00"))
    campaign.promoted_courses.set([course])
    users = users_of(owner, 40)
    issue(campaign, users)
    treated = set(Offer.objects.filter(campaign=campaign).values_list("user_id", flat=True))
    for user in users:
        if user.pk in treated:
            offer = Offer.objects.get(campaign=campaign, user=user)
            offer_redeem(code=offer.code, partner=owner, order_amount=Decimal("100.00"))
            BehaviorEventFactory.create(
                user=user,
                partner=owner,
                kind="course_purchase",
                item_id="ECO-101",
                amount=Decimal("70.00"),
                occurred_at=timezone.now() + timedelta(seconds=1),
            )

    report = campaign_report(campaign=campaign, now=timezone.now() + timedelta(minutes=1)).to_dict()

    # then the margin is 60% of the 70 CNY paid plus the 30 CNY off (gross of the coupon: the discount is not taken
    # off twice), and ROI sets it against the 30 CNY each coupon cost, once
    spend_return = report["uplift"]["comparisons"][0]["spend_return"]
    n = len(treated)
    assert spend_return["spent"] == f"{30 * n}.00"
    assert Decimal(spend_return["incremental_margin"]) == Decimal("72.00") * n  # 70 x 0.6 + 30
    assert Decimal(spend_return["roi"]) == Decimal("1.4000")  # (72 - 30) / 30, not (42 - 30) / 30


# --------------------------------------------------------------------------- the identity, as a property

KINDS = st.sampled_from(["amount_coupon", "percent_coupon", "bought_ticket", "ticket_on_use", "trial", "grant"])
FATES = st.sampled_from(["open", "redeem", "expire", "revoke", "redeem_and_roll_back"])


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    kinds=st.lists(KINDS, min_size=1, max_size=4, unique=True),
    users=st.integers(min_value=1, max_value=4),
    budget=st.integers(min_value=0, max_value=400),
    fates=st.lists(FATES, min_size=16, max_size=16),
    orders=st.lists(st.integers(min_value=0, max_value=300), min_size=16, max_size=16),
)
def test_reserved_is_spent_plus_released_plus_outstanding_and_the_budget_is_never_passed(
    owner, cinema, video, kinds, users, budget, fates, orders
):
    # given a campaign with one non-exclusive rule per kind drawn and a budget that may clamp issuance
    campaign = CampaignFactory.create(
        owner=owner,
        budget=Decimal(budget),
        holdout_share=Decimal("0"),
        per_user_limit=len(kinds),
        offer_valid_days=ISSUED_DAYS,
    )
    deal = DealFactory.create(
        source_partner=owner, target_partner=video, benefit=Deal.Benefit.FREE_VIEWING, settlement_price=Decimal("12")
    )
    prefix = f"K{campaign.pk}-"
    load_codes(cinema, "movie_ticket", 4, value="45.00", prefix=prefix + "B")
    load_codes(cinema, "movie_ticket", 4, value="38.00", paid_on_use=True, prefix=prefix + "U", days=90)
    load_codes(video, "free_viewing", 4, value="0.00", prefix=prefix + "T")
    rules: dict[str, dict[str, Any]] = {
        "amount_coupon": {"amount_off": Decimal("30.00"), "cost": Decimal("25.00")},
        "percent_coupon": {"amount_off": None, "percent_off": Decimal("20"), "cost": Decimal("15.00")},
        "bought_ticket": {"offer_kind": "movie_ticket", "benefit_partner": cinema, "amount_off": None},
        "ticket_on_use": {"offer_kind": "movie_ticket", "benefit_partner": cinema, "amount_off": None},
        "trial": {"offer_kind": "free_viewing", "benefit_partner": video, "deal": deal, "amount_off": None},
        "grant": {"offer_kind": "membership_grant", "deal": deal, "amount_off": None, "cost": Decimal("20.00")},
    }
    for priority, kind in enumerate(kinds):
        RuleFactory.create(
            campaign=campaign,
            condition={},
            exclusive=False,
            priority=100 - priority,
            **{"cost": Decimal(0)} | rules[kind],
        )
    members = users_of(owner, users)

    # when offers are issued (every member then buys the course that earns a grant) and each meets its drawn fate
    issue(campaign, members)
    bought_a_course(deal, members)
    for offer, fate, order in zip(Offer.objects.filter(campaign=campaign).order_by("pk"), fates, orders, strict=False):
        honour = cinema if offer.kind == "movie_ticket" else video if offer.kind == "free_viewing" else owner
        if fate in ("redeem", "redeem_and_roll_back"):
            offer_redeem(code=offer.code, partner=honour, order_amount=Decimal(order))
        if fate == "redeem_and_roll_back":
            try:
                offer_redemption_rollback(code=offer.code, partner=honour)
            except ApplicationError as refused:  # the budget could not hold its reservation again
                assert refused.code == "over_budget"
        if fate == "revoke":
            offer_revoke(code=offer.code)
        if fate == "expire":
            lapse(offer)
    offer_expire_due()

    # then every CNY reserved is spent, released or still outstanding, and the budget never held more than it has
    campaign.refresh_from_db()
    cost = {key: Decimal(value) for key, value in cost_of(campaign).items() if key not in ("by_arm", "budget")}
    assert cost["reserved"] == cost["spent"] + cost["released"] + cost["outstanding"] - cost["beyond_reservation"]
    assert cost["budget_held"] == cost["spent"] - cost["beyond_reservation"] + cost["outstanding"]
    assert campaign.spent == cost["budget_held"] <= campaign.budget
    assert cost["beyond_reservation"] == 0 or "percent_coupon" in kinds
