"""Whether the users holding membership grants have done what the grant's deal asks for since it was issued.

A campaign's membership grant carries a deal (a month of video membership for buying a
course, say): the grant is the deal's benefit, so it may be taken up only once the user has
met the deal's trigger at its source partner, after the grant was issued and by the time it
is taken up: bought a course of the deal's set (as ``deals_evaluate`` reads it: no course in
the set, no purchase qualifies), started a membership, or spent at least the threshold in that
time. One query per deal among the grants asked about.

What earns a grant (a purchase while it is open) triggers the deal's own grant too, and any
other open grant of the same deal: one purchase earns the benefit once (``benefit_given``).
"""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from analytics.models import BehaviorEvent

from ..models import Deal, DealGrant, Offer, Rule

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


def benefit_given(offers: Sequence[Offer]) -> list[str | None]:
    """Return, per grant about to be taken up (in order), what already gave its user the benefit, or None.

    A grant's benefit is already given when, since the grant was issued, the deal granted the
    user (a grant not compensated) or the user took up another grant of the deal, earlier or
    before it in ``offers``. A benefit for something done before the grant's issue is another.
    Offers that are not conditional grants get None. Two queries, whatever the number of offers.
    """
    grants = [offer for offer in offers if is_conditional_grant(offer)]
    given: list[str | None] = [None] * len(offers)
    if not grants:
        return given
    deals = {offer.deal_id for offer in grants if offer.deal_id is not None}
    users = {offer.user_id for offer in grants}
    since: dict[tuple[int | None, int], list[tuple[str, datetime | None]]] = defaultdict(list)
    for pk, deal_id, user_id, triggered_at in (
        DealGrant.objects.filter(deal_id__in=deals, user_id__in=users)
        .exclude(status=DealGrant.Status.COMPENSATED)
        .values_list("pk", "deal_id", "user_id", "triggered_at")
    ):
        since[(deal_id, user_id)].append(
            (f"the deal's grant {pk}, triggered at {triggered_at.isoformat()}", triggered_at)
        )
    for code, deal_id, user_id, redeemed_at in Offer.objects.filter(
        deal_id__in=deals,
        user_id__in=users,
        kind=Rule.OfferKind.MEMBERSHIP_GRANT,
        status=Offer.Status.REDEEMED,
        redeemed_at__isnull=False,
    ).values_list("code", "deal_id", "user_id", "redeemed_at"):
        taken_up = "" if redeemed_at is None else f" at {redeemed_at.isoformat()}"
        since[(deal_id, user_id)].append((f"grant {code}, taken up{taken_up}", redeemed_at))
    for index, offer in enumerate(offers):
        if not is_conditional_grant(offer):
            continue
        key = (offer.deal_id, offer.user_id)
        given[index] = next((what for what, when in since[key] if when is None or when >= offer.issued_at), None)
        if given[index] is None:
            # A later grant of the same deal and user among these sees this one as taken up (None: now).
            since[key].append((f"grant {offer.code}, taken up with it", None))
    return given
