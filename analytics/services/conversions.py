"""Conversions partners report: recorded once per (partner, conversion id), attributed only to what the partner may see."""

from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.utils import timezone

from campaigns.models import Partner
from campaigns.selectors import campaign_get_visible, offer_get_visible
from crossmkt_site.errors import ApplicationError
from crossmkt_site.money import to_cny

from ..models import Conversion
from ..selectors import enduser_get_visible
from .ingest import FUTURE_GRACE


def _same_report(conversion: Conversion, values: dict) -> bool:
    return all(getattr(conversion, name) == value for name, value in values.items())


def _first_report(*, partner: Partner, conversion_id: str, values: dict) -> Conversion:
    conversion = Conversion.objects.get(partner=partner, conversion_id=conversion_id)
    if not _same_report(conversion, values):
        raise ApplicationError(
            f"conversion {conversion_id!r} was already reported with different data; use a new conversion_id",
            code="conflict", field="conversion_id", status=409,
        )
    return conversion


def conversion_record(*, partner: Partner, conversion_id: str, user_id: str, amount: Decimal, occurred_at: datetime,
                      offer_code: str = "", campaign_slug: str = "", now: datetime | None = None) -> tuple[Conversion, bool]:
    """Record a partner's conversion; return it and whether it is new. A repeat returns the first report.

    The user, the offer and the campaign must be ones the partner may see (404 otherwise);
    an offer must be the user's, and a campaign given with an offer must be the offer's.
    """
    now = now or timezone.now()
    amount = to_cny(amount)
    if amount < 0:
        raise ApplicationError("a conversion amount cannot be negative", field="amount")
    if occurred_at > now + FUTURE_GRACE:
        raise ApplicationError(f"occurred_at is in the future: {occurred_at.isoformat()}", field="occurred_at", status=422)
    user = enduser_get_visible(partner=partner, external_id=user_id, field="user_id")
    offer = offer_get_visible(partner=partner, code=offer_code, field="offer_code") if offer_code else None
    if offer is not None and offer.user_id != user.pk:
        raise ApplicationError("this offer was issued to another user", field="offer_code", status=422)
    campaign = campaign_get_visible(partner=partner, slug=campaign_slug, field="campaign") if campaign_slug else None
    if offer is not None and campaign is not None and offer.campaign_id != campaign.pk:
        raise ApplicationError("the offer belongs to another campaign", field="campaign", status=422)
    if campaign is None and offer is not None:
        campaign = offer.campaign
    values = {"user": user, "amount": amount, "occurred_at": occurred_at, "offer": offer, "campaign": campaign}
    if Conversion.objects.filter(partner=partner, conversion_id=conversion_id).exists():
        return _first_report(partner=partner, conversion_id=conversion_id, values=values), False
    try:
        with transaction.atomic():
            return Conversion.objects.create(partner=partner, conversion_id=conversion_id, **values), True
    except IntegrityError:
        # The same report arrived twice at once and the other request committed first.
        if not Conversion.objects.filter(partner=partner, conversion_id=conversion_id).exists():
            raise
        return _first_report(partner=partner, conversion_id=conversion_id, values=values), False
