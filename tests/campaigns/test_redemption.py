"""Redeeming a coupon: limited coupons apply only to their courses or bundles."""

from decimal import Decimal

import pytest

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
