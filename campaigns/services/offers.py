"""Offer life-cycle changes that are not issuance or redemption."""

import logging

from django.db import transaction
from django.utils import timezone

from ..models import Offer

logger = logging.getLogger("crossmkt.offers")

# One UPDATE per batch keeps each transaction short on a table with millions of rows.
EXPIRY_BATCH_SIZE = 10_000


def offer_expire_due(*, now=None, batch_size: int = EXPIRY_BATCH_SIZE) -> int:
    """Mark open offers past their expiry as expired; return how many changed. Safe to run twice."""
    now = now or timezone.now()
    expired = 0
    while True:
        with transaction.atomic():
            ids = list(
                Offer.objects.filter(status__in=Offer.OPEN_STATUSES, expires_at__lte=now)
                .order_by("pk")
                .values_list("pk", flat=True)[:batch_size]
            )
            if not ids:
                break
            # The status filter is repeated so a redemption committed meanwhile is never overwritten.
            expired += Offer.objects.filter(pk__in=ids, status__in=Offer.OPEN_STATUSES).update(status=Offer.Status.EXPIRED)
    if expired:
        logger.info("expired %d offers due by %s", expired, now.isoformat())
    return expired
