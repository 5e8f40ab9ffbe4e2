"""Whether the users holding membership grants have done what the grant's deal asks for since it was issued.

A campaign's membership grant carries a deal (a month of video membership for buying a
course, say): the grant is the deal's benefit, so it may be taken up only once the user has
met the deal's trigger at its source partner, after the grant was issued and by the time it
is taken up: bought a course of the deal's set (as ``deals_evaluate`` reads it: no course in
the set, no purchase qualifies), started a membership, or spent at least the threshold in that
time. One query per deal among the grants asked about.
"""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from analytics.models import BehaviorEvent

from ..models import Deal, Offer, Rule

# The kind of event each single-event trigger is met by.
TRIGGER_EVENT_KINDS: dict[str, str] = {
    Deal.Trigger.COURSE_PURCHASE: BehaviorEvent.Kind.COURSE_PURCHASE,
    Deal.Trigger.MEMBERSHIP_START: BehaviorEvent.Kind.MEMBERSHIP_START,
}


@dataclass(frozen=True)
class GrantUse:
    """A membership grant to be taken up at ``at``."""

    offer: Offer
    at: datetime


def is_conditional_grant(offer: Offer) -> bool:
    """Return whether the offer is a membership grant that its deal's trigger has to earn."""
    return offer.kind == Rule.OfferKind.MEMBERSHIP_GRANT and offer.deal_id is not None


def grants_earned(uses: Sequence[GrantUse]) -> list[bool]:
    """Return, per use, whether its user met the grant's deal trigger between the grant's issue and ``at``."""
    by_deal: dict[int, list[int]] = defaultdict(list)
    for index, use in enumerate(uses):
        if is_conditional_grant(use.offer):
            by_deal[use.offer.deal_id].append(index)  # type: ignore[index]
    earned = [True] * len(uses)
    if not by_deal:
        return earned
    deals = {deal.pk: deal for deal in Deal.objects.filter(pk__in=by_deal).prefetch_related("trigger_courses")}
    for deal_id, indexes in by_deal.items():
        deal = deals[deal_id]
        asked = [uses[index] for index in indexes]
        events = BehaviorEvent.objects.filter(
            partner_id=deal.source_partner_id,
            user_id__in={use.offer.user_id for use in asked},
            occurred_at__gte=min(use.offer.issued_at for use in asked),
            occurred_at__lte=max(use.at for use in asked),
        )
        if deal.trigger in TRIGGER_EVENT_KINDS:
            events = events.filter(kind=TRIGGER_EVENT_KINDS[deal.trigger])
            if deal.trigger == Deal.Trigger.COURSE_PURCHASE:
                events = events.filter(item_id__in=[course.sku for course in deal.trigger_courses.all()])
        else:
            events = events.filter(amount__gt=0)
        by_user: dict[int, list[tuple[datetime, Decimal]]] = defaultdict(list)
        for user_id, occurred_at, amount in events.values_list("user_id", "occurred_at", "amount"):
            by_user[user_id].append((occurred_at, amount or Decimal(0)))
        for index, use in zip(indexes, asked, strict=True):
            within = [
                amount for when, amount in by_user.get(use.offer.user_id, []) if use.offer.issued_at <= when <= use.at
            ]
            if deal.trigger in TRIGGER_EVENT_KINDS:
                earned[index] = bool(within)
            else:
                earned[index] = deal.trigger_min_spend is not None and sum(within, Decimal(0)) >= deal.trigger_min_spend
    return earned


def trigger_text(deal: Deal) -> str:
    """Say what a user has to do to earn a grant of the deal."""
    if deal.trigger == Deal.Trigger.COURSE_PURCHASE:
        return "buy a course of the deal's set"
    if deal.trigger == Deal.Trigger.MEMBERSHIP_START:
        return "start a membership"
    return f"spend at least {deal.trigger_min_spend} CNY"
