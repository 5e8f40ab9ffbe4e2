"""Conversions partners report, attributed only to the users, offers and campaigns the partner may see."""

from datetime import datetime
from decimal import Decimal

from django.utils import timezone

from analytics.models import Conversion
from analytics.selectors import enduser_get_visible
from analytics.services.conversions import conversion_amount_check, conversion_create
from crossmkt_site.errors import ApplicationError

from ..models import Partner
from ..selectors import campaign_get_visible, offer_get_visible
from .live import live_drain_on_commit


def conversion_record(
    *,
    partner: Partner,
    conversion_id: str,
    user_id: str,
    amount: Decimal,
    occurred_at: datetime,
    offer_code: str = "",
    campaign_slug: str = "",
    now: datetime | None = None,
) -> tuple[Conversion, bool]:
    """Record a partner's conversion; return it and whether it is new. A repeat returns the first report.

    The user, the offer and the campaign must be ones the partner may see (404 otherwise);
    an offer must be the user's, and a campaign given with an offer must be the offer's.
    """
    now = now or timezone.now()
    amount = conversion_amount_check(amount=amount, occurred_at=occurred_at, now=now)
    user = enduser_get_visible(partner=partner, external_id=user_id, field="user_id")
    offer = offer_get_visible(partner=partner, code=offer_code, field="offer_code") if offer_code else None
    if offer is not None and offer.user_id != user.pk:
        raise ApplicationError("this offer was issued to another user", field="offer_code", status=422)
    campaign = campaign_get_visible(partner=partner, slug=campaign_slug, field="campaign") if campaign_slug else None
    if offer is not None and campaign is not None and offer.campaign_id != campaign.pk:
        raise ApplicationError("the offer belongs to another campaign", field="campaign", status=422)
    if campaign is None and offer is not None:
        campaign = offer.campaign
    conversion, created = conversion_create(
        partner_id=partner.pk,
        conversion_id=conversion_id,
        user=user,
        amount=amount,
        occurred_at=occurred_at,
        offer_id=None if offer is None else offer.pk,
        campaign_id=None if campaign is None else campaign.pk,
    )
    if created:
        live_drain_on_commit()  # the user is pending, recorded with the conversion
    return conversion, created
