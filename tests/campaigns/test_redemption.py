"""Redeeming a coupon: limited coupons apply only to their courses or bundles; a batch redeems as one call each."""

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from campaigns.models import Campaign, Offer, RedemptionEntry, WebhookDelivery
from campaigns.services.redemption import RedemptionRequest, offer_redeem, offer_redeem_many
from crossmkt_site.errors import ApplicationError
from tests.factories import CampaignFactory, CourseFactory, OfferFactory, PartnerFactory, RuleFactory

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


def _world(owner, cinema):
    """A campaign of the owner's with four offers: two coupons (one limited to a course), a ticket, a trial."""
    course = CourseFactory.create()
    limited = RuleFactory.create(campaign=CampaignFactory.create(owner=owner))
    limited.applicable_courses.set([course])
    campaign = limited.campaign
    offers = [
        OfferFactory.create(campaign=campaign, rule=limited, amount_off=Decimal("30.00"), cost=Decimal("30.00")),
        OfferFactory.create(campaign=campaign, percent_off=Decimal("20.00"), amount_off=None, cost=Decimal("25.00")),
        OfferFactory.create(campaign=campaign, kind="movie_ticket", partner=cinema, cost=Decimal("40.00")),
        OfferFactory.create(campaign=campaign, kind="free_viewing", partner=cinema, cost=Decimal("15.00")),
    ]
    Campaign.objects.filter(pk=campaign.pk).update(spent=Decimal("110.00"))
    orders = [(Decimal("199.00"), course.sku), (Decimal("150.00"), ""), (Decimal("0"), ""), (Decimal("0"), "")]
    return campaign, offers, orders


def _outcome(campaign):
    """What a user of the ledger, the budget and the webhooks sees of a campaign's redemptions."""
    offers = Offer.objects.filter(campaign=campaign).order_by("pk")
    ledger = RedemptionEntry.objects.filter(offer__campaign=campaign).order_by("pk")
    hooks = WebhookDelivery.objects.filter(payload__campaign=campaign.slug).order_by("pk")
    return (
        [(o.kind, o.status, o.redeemed_at, o.spent) for o in offers],
        [(e.offer.kind, e.partner_id, e.order_amount, e.discount, bool(e.request_fingerprint)) for e in ledger],
        Campaign.objects.get(pk=campaign.pk).spent,
        [(h.partner_id, h.payload["kind"], h.payload["discount"], h.payload["order_amount"]) for h in hooks],
    )


def test_a_batch_of_redemptions_leaves_what_one_call_each_leaves():
    # given two identical campaigns, both heard by their owner and the cinema honouring their partner offers
    owner = PartnerFactory.create(webhook_url="http://127.0.0.1:9/owner")
    cinema = PartnerFactory.create(webhook_url="http://127.0.0.1:9/cinema", kind="cinema")
    one_by_one, offers_a, orders_a = _world(owner, cinema)
    batched, offers_b, orders_b = _world(owner, cinema)
    ordered = timezone.now() - dt.timedelta(minutes=5)

    # when one is redeemed a call at a time and the other in one batch, each with a key of its own
    for n, (offer, (amount, item)) in enumerate(zip(offers_a, orders_a, strict=True)):
        offer_redeem(
            code=offer.code,
            partner=offer.partner or owner,
            order_amount=amount,
            item_id=item,
            idempotency_key=f"a-{n}",
            now=ordered,
        )
    requests = [
        RedemptionRequest(
            code=offer.code,
            partner=offer.partner or owner,
            order_amount=amount,
            item_id=item,
            idempotency_key=f"b-{n}",
            now=ordered,
        )
        for n, (offer, (amount, item)) in enumerate(zip(offers_b, orders_b, strict=True))
    ]
    entries = offer_redeem_many(requests=requests)

    # then the offers, the ledger, the budget held and the webhooks are the same
    assert [entry.discount for entry in entries] == [Decimal("30.00"), Decimal("30.00"), Decimal("0"), Decimal("0")]
    assert _outcome(batched) == _outcome(one_by_one)
    # and the batch sent again returns its entries and changes nothing
    assert [entry.pk for entry in offer_redeem_many(requests=requests)] == [entry.pk for entry in entries]
    assert RedemptionEntry.objects.filter(offer__campaign=batched).count() == 4


def test_a_batch_with_a_refused_redemption_keeps_nothing():
    # given a coupon limited to a course, and an open one
    owner = PartnerFactory.create()
    campaign, offers, _ = _world(owner, PartnerFactory.create(kind="cinema"))
    requests = [
        RedemptionRequest(code=offers[1].code, partner=owner, order_amount=Decimal("99.00"), now=timezone.now()),
        RedemptionRequest(
            code=offers[0].code, partner=owner, order_amount=Decimal("99.00"), item_id="NOPE", now=timezone.now()
        ),
    ]
    # when the batch asks the limited one for another course, it is refused as offer_redeem refuses it
    with pytest.raises(ApplicationError) as refused:
        offer_redeem_many(requests=requests)
    assert refused.value.code == "not_applicable"
    # and the other coupon was not redeemed either
    assert not RedemptionEntry.objects.filter(offer__campaign=campaign).exists()
    assert set(Offer.objects.filter(campaign=campaign).values_list("status", flat=True)) == {"issued"}
    assert Campaign.objects.get(pk=campaign.pk).spent == Decimal("110.00")
