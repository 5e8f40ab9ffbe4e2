"""Redeeming a coupon: limited coupons apply only to their courses or bundles."""

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from campaigns.services.redemption import offer_redeem
from crossmkt_site.errors import ApplicationError
from tests.factories import CourseFactory, OfferFactory, RuleFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def limited_coupon():
    course = CourseFactory.create(sku="ECO-101")
    rule = RuleFactory.create()
    rule.applicable_courses.set([course])
    return OfferFactory.create(campaign=rule.campaign, rule=rule, amount_off=Decimal("30.00"))


def test_a_limited_coupon_needs_the_item_and_refuses_others(limited_coupon):
    partner = limited_coupon.campaign.owner
    with pytest.raises(ApplicationError) as missing:
        offer_redeem(code=limited_coupon.code, partner=partner, order_amount=Decimal("199.00"))
    assert missing.value.code == "item_required"
    with pytest.raises(ApplicationError) as other:
        offer_redeem(code=limited_coupon.code, partner=partner, order_amount=Decimal("199.00"), item_id="PRG-101")
    assert other.value.code == "not_applicable" and "ECO-101" in other.value.message

    entry = offer_redeem(code=limited_coupon.code, partner=partner, order_amount=Decimal("199.00"), item_id="ECO-101")

    assert entry.discount == Decimal("30.00")


def test_an_unlimited_coupon_needs_no_item():
    offer = OfferFactory.create(rule=RuleFactory.create(), amount_off=Decimal("10.00"))
    assert offer.campaign.owner is not None
    entry = offer_redeem(code=offer.code, partner=offer.campaign.owner, order_amount=Decimal("99.00"))
    assert entry.discount == Decimal("10.00")


def test_an_order_placed_earlier_redeems_the_offer_as_of_then_and_an_expired_one_is_refused():
    # given a coupon issued ten days ago that expired three days ago
    now = timezone.now()
    offer = OfferFactory.create(
        rule=RuleFactory.create(),
        amount_off=Decimal("10.00"),
        issued_at=now - dt.timedelta(days=10),
        expires_at=now - dt.timedelta(days=3),
    )
    owner = offer.campaign.owner
    assert owner is not None
    # when an order placed after its expiry is replayed, it is refused as expired
    with pytest.raises(ApplicationError) as late:
        offer_redeem(code=offer.code, partner=owner, order_amount=Decimal("99.00"), now=now - dt.timedelta(days=1))
    assert late.value.code == "expired"

    # when an order placed while it was open is replayed, it is redeemed as of that order
    ordered = now - dt.timedelta(days=5)
    entry = offer_redeem(code=offer.code, partner=owner, order_amount=Decimal("99.00"), now=ordered)

    offer.refresh_from_db()
    assert entry.discount == Decimal("10.00") and offer.status == "redeemed" and offer.redeemed_at == ordered
