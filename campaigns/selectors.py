"""Reading deals, campaigns and offers as one partner may see them; anything else does not exist for it."""

from django.db.models import Q, QuerySet
from django.utils import timezone

from crossmkt_site.errors import ApplicationError

from .models import Campaign, Deal, Offer, Partner
from .services.redemption import offers_visible_to


def _not_found(what: str, field: str | None) -> ApplicationError:
    return ApplicationError(f"no such {what}", code="not_found", field=field, status=404)


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
