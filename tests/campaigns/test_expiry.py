"""Offers past their date are expired by the periodic task, once, without touching redeemed ones."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from campaigns.models import Offer
from campaigns.services.offers import offer_expire_due
from campaigns.tasks import expire_offers
from tests.factories import CampaignFactory, OfferFactory

pytestmark = pytest.mark.django_db


def test_due_open_offers_expire_and_others_do_not():
    # given offers that are due, not yet due, and already redeemed
    past = timezone.now() - timedelta(days=20)
    due = OfferFactory.create(issued_at=past, expires_at=past + timedelta(days=14))
    delivered_due = OfferFactory.create(
        issued_at=past, expires_at=past + timedelta(days=1), status=Offer.Status.DELIVERED
    )
    fresh = OfferFactory.create()
    redeemed = OfferFactory.create(issued_at=past, expires_at=past + timedelta(days=14), status=Offer.Status.REDEEMED)

    # when the expiry runs twice
    first = offer_expire_due(batch_size=1)
    second = offer_expire_due()

    # then only the due open offers expired, and the second run changed nothing
    assert (first, second) == (2, 0)
    statuses = {o.pk: o.status for o in Offer.objects.all()}
    assert statuses[due.pk] == statuses[delivered_due.pk] == Offer.Status.EXPIRED
    assert statuses[fresh.pk] == Offer.Status.ISSUED
    assert statuses[redeemed.pk] == Offer.Status.REDEEMED


def test_expiry_gives_the_reserved_money_back_to_the_budget():
    # given a campaign that reserved 30 CNY for two offers, one of them due
    past = timezone.now() - timedelta(days=20)
    campaign = CampaignFactory.create(budget=Decimal("100.00"), spent=Decimal("30.00"))
    OfferFactory.create(campaign=campaign, cost=Decimal("20.00"), issued_at=past, expires_at=past + timedelta(days=1))
    OfferFactory.create(campaign=campaign, cost=Decimal("10.00"))
    # when expiry runs
    offer_expire_due()
    # then the due offer's reservation is free again
    campaign.refresh_from_db()
    assert campaign.spent == Decimal("10.00")


def test_expiry_task_runs_the_service():
    past = timezone.now() - timedelta(days=20)
    OfferFactory.create(issued_at=past, expires_at=past + timedelta(days=1))
    assert expire_offers.delay().get()["expired"] == 1
