"""Offer life-cycle changes that are not issuance or redemption: expiry and revocation."""

import logging

from django.db import transaction
from django.utils import timezone

from crossmkt_site.errors import ApplicationError

from ..models import Offer
from .offer_costs import offer_costs_release
from .stock import stock_release
from .webhooks import webhook_offer_revoked

logger = logging.getLogger("crossmkt.offers")

# One batch per transaction keeps locks short on a table with millions of rows.
EXPIRY_BATCH_SIZE = 10_000


def offer_expire_due(*, now=None, batch_size: int = EXPIRY_BATCH_SIZE) -> int:
    """Expire open offers past their date, freeing the budget and pool items they held; return how many.

    Safe to run twice.
    """
    now = now or timezone.now()
    expired = 0
    while True:
        with transaction.atomic():
            # Locked rows cannot be redeemed meanwhile; rows another expirer holds are skipped, not waited for.
            due = list(
                Offer.objects.select_for_update(skip_locked=True)
                .filter(status__in=Offer.OPEN_STATUSES, expires_at__lte=now)
                .order_by("pk")
                .values_list("pk", flat=True)[:batch_size]
            )
            if not due:
                break
            Offer.objects.filter(pk__in=due).update(status=Offer.Status.EXPIRED)
            stock_release(offer_ids=due, now=now)
            offer_costs_release(offer_ids=due)
            expired += len(due)
    if expired:
        logger.info("expired %d offers due by %s", expired, now.isoformat())
    return expired


@transaction.atomic
def offer_revoke(*, code: str) -> Offer:
    """Revoke an open offer so it can no longer be redeemed, free what it held, and tell its partners."""
    offer = Offer.objects.select_for_update().filter(code=code).first()
    if offer is None:
        raise ApplicationError("no such offer", code="not_found", field="code", status=404)
    if offer.status not in Offer.OPEN_STATUSES:
        raise ApplicationError(
            f"only an open offer can be revoked; this one is {offer.status}", code="not_open", status=409
        )
    offer.status = Offer.Status.REVOKED
    offer.revoked_at = timezone.now()
    offer.save(update_fields=["status", "revoked_at"])
    stock_release(offer_ids=[offer.pk], now=offer.revoked_at)
    offer_costs_release(offer_ids=[offer.pk])
    webhook_offer_revoked(offer=offer)
    return offer
