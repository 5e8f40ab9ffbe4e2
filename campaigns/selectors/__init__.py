"""Reading partners, deals, campaigns and offers; as one partner may see them, anything else does not exist for it.

Settlement statements are read (and drafts computed) in ``campaigns.selectors.settlement``.
"""

from datetime import UTC
from decimal import Decimal

from django.db import connection
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from crossmkt_site.errors import ApplicationError

from ..models import Campaign, Deal, Offer, Partner


def _not_found(what: str, field: str | None) -> ApplicationError:
    return ApplicationError(f"no such {what}", code="not_found", field=field, status=404)


def partner_get(*, slug: str) -> Partner:
    """Return the partner with this slug, or a clear error."""
    try:
        return Partner.objects.get(slug=slug)
    except Partner.DoesNotExist:
        raise ApplicationError(
            f"no partner {slug!r}; see 'manage.py partner list'",
            code="not_found",
            field="slug",
            status=404,
        ) from None


def campaign_get(*, slug: str) -> Campaign:
    """Return the campaign with this slug, or a clear error."""
    campaign = Campaign.objects.filter(slug=slug).first()
    if campaign is None:
        raise ApplicationError(
            f"no campaign {slug!r}; list them in the admin or with GET /api/v1/campaigns/",
            code="not_found",
            field="slug",
            status=404,
        )
    return campaign


def offers_visible_to(partner: Partner) -> QuerySet[Offer]:
    """Return offers a partner may see and redeem: those it honours or of campaigns it runs or joins."""
    # A subquery rather than a join, so rows are not repeated and can be locked FOR UPDATE.
    joined = Campaign.partners.through.objects.filter(partner_id=partner.pk).values("campaign_id")
    return Offer.objects.filter(Q(partner_id=partner.pk) | Q(campaign__owner_id=partner.pk) | Q(campaign_id__in=joined))


def deal_list_visible(*, partner: Partner) -> QuerySet[Deal]:
    """Return the deals a partner is a side of (source or target), newest first."""
    return (
        Deal.objects.filter(Q(source_partner=partner) | Q(target_partner=partner))
        .select_related("source_partner", "target_partner")
        .order_by("-starts_at", "pk")
    )


def deal_get_visible(*, partner: Partner, slug: str) -> Deal:
    """Return one of the partner's deals by slug, or a 404 error."""
    deal = deal_list_visible(partner=partner).filter(slug=slug).first()
    if deal is None:
        raise _not_found("deal", "slug")
    return deal


def campaign_list_visible(*, partner: Partner) -> QuerySet[Campaign]:
    """Return the campaigns a partner owns or takes part in, newest first."""
    return (
        Campaign.objects.visible_to(partner)
        .select_related("owner", "deal")
        .prefetch_related("partners")
        .order_by("-starts_at", "pk")
    )


def campaign_get_visible(*, partner: Partner, slug: str, field: str | None = "slug") -> Campaign:
    """Return one of the partner's campaigns by slug, or a 404 error naming field."""
    campaign = campaign_list_visible(partner=partner).filter(slug=slug).first()
    if campaign is None:
        raise _not_found("campaign", field)
    return campaign


def offer_get_visible(*, partner: Partner, code: str, field: str | None = "code") -> Offer:
    """Return an offer the partner may see by its code, or a 404 error naming field."""
    offer = offers_visible_to(partner).filter(code=code).first()
    if offer is None:
        raise _not_found("offer", field)
    return offer


def offer_list_open_for_user(*, partner: Partner, user, now=None) -> QuerySet[Offer]:
    """Return a user's offers that can still be redeemed and that the partner may see, soonest to expire first."""
    now = now or timezone.now()
    return (
        offers_visible_to(partner)
        .filter(user=user, status__in=Offer.OPEN_STATUSES, expires_at__gt=now)
        .select_related("campaign", "partner", "deal")
        .order_by("expires_at", "pk")
    )


OPEN_OFFER_FIELDS = (
    "code",
    "kind",
    "status",
    "campaign",
    "honoured_by",
    "deal",
    "amount_off",
    "percent_off",
    "min_spend",
    "days",
    "issued_at",
    "expires_at",
)
# The rows of offer_list_open_for_user, visibility as in offers_visible_to: the partner honours
# the offer, or runs or joins its campaign.
OPEN_OFFERS_SQL = """
SELECT o.code, o.kind, o.status, c.slug, p.slug, d.slug, o.amount_off, o.percent_off, o.min_spend, o.days,
       o.issued_at, o.expires_at
FROM campaigns_offer o
JOIN campaigns_campaign c ON c.id = o.campaign_id
LEFT JOIN campaigns_partner p ON p.id = o.partner_id
LEFT JOIN campaigns_deal d ON d.id = o.deal_id
WHERE o.user_id = %s AND o.status IN (%s, %s) AND o.expires_at > %s
  AND (o.partner_id = %s OR c.owner_id = %s
       OR o.campaign_id IN (SELECT campaign_id FROM campaigns_campaign_partners WHERE partner_id = %s))
ORDER BY o.expires_at, o.id
"""


def offer_rows_open_for_user(*, partner: Partner, user_id: int, now=None) -> list[dict]:
    """The same offers as ``offer_list_open_for_user``, as the API shows them: plain values, money as "20.00".

    Partners ask for this on every page a user opens, so the statement is written out
    (building it with the ORM costs more than running it) and no model instances are made;
    tests/api/test_users.py holds it equal to the ORM selector.
    """
    now = now or timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            OPEN_OFFERS_SQL,
            [
                user_id,
                *Offer.OPEN_STATUSES,
                connection.ops.adapt_datetimefield_value(now),
                partner.pk,
                partner.pk,
                partner.pk,
            ],
        )
        return [_open_offer(dict(zip(OPEN_OFFER_FIELDS, row, strict=True))) for row in cursor.fetchall()]


def _open_offer(offer: dict) -> dict:
    for name in ("amount_off", "percent_off", "min_spend"):
        if offer[name] is not None:
            offer[name] = f"{Decimal(str(offer[name])):.2f}"
    for name in ("issued_at", "expires_at"):
        moment = offer[name]
        if isinstance(moment, str):  # SQLite hands times back as text
            moment = parse_datetime(moment)
        if timezone.is_naive(moment):
            moment = timezone.make_aware(moment, UTC)
        offer[name] = timezone.localtime(moment).isoformat()
    return offer
