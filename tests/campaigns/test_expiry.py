"""Offers past their date are expired by the periodic task, once, without touching redeemed ones."""

from datetime import timedelta

import pytest
from django.utils import timezone

from campaigns.models import Offer
from campaigns.services.offers import offer_expire_due
from campaigns.tasks import expire_offers
from tests.factories import OfferFactory

pytestmark = pytest.mark.django_db


def test_due_open_offers_expire_and_others_do_not():
    # given offers that are due, not yet due, and already redeemed
    past = timezone.now() - timedelta(days=20)
    due = OfferFactory(issued_at=past, expires_at=past + timedelta(days=14))
    delivered_due = OfferFactory(issued_at=past, expires_at=past + timedelta(days=1), status=Offer.Status.DELIVERED)
    fresh = OfferFactory()
    redeemed = OfferFactory(issued_at=past, expires_at=past + timedelta(days=14), status=Offer.Status.REDEEMED)

    # when the expiry runs twice
    first = offer_expire_due(batch_size=1)
    second = offer_expire_due()

    # then only the due open offers expired, and the second run changed nothing
    assert (first, second) == (2, 0)
    statuses = {o.pk: o.status for o in Offer.objects.all()}
    assert statuses[due.pk] == statuses[delivered_due.pk] == Offer.Status.EXPIRED
    assert statuses[fresh.pk] == Offer.Status.ISSUED
    assert statuses[redeemed.pk] == Offer.Status.REDEEMED


def test_expiry_task_runs_the_service():
    past = timezone.now() - timedelta(days=20)
    OfferFactory(issued_at=past, expires_at=past + timedelta(days=1))
    assert expire_offers.delay().get()["expired"] == 1
