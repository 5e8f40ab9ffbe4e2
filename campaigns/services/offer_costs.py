"""The cost model: what an offer reserves of its campaign's budget, what it really costs, and what it gives back.

Kind by kind (the campaign report's methods, ``campaigns.reports.campaign_report.COST_MODEL``,
say the same; keep them together):

* **coupon**: reserves the rule's cost per offer, and at least its amount off; costs the
  discount the redemption ledger records when it is redeemed, nothing if it is never used.
* **movie ticket**: reserves the rule's cost, and at least its code's value; costs its code's
  value from issue (the ticket was bought from the cinema), unless the code's pool says it is
  paid on use, in which case it costs the value when used. A ticket without a pool code costs
  the rule's cost when used.
* **free-viewing trial**: reserves the rule's cost, and at least its deal's settlement price
  (or its code's value); costs the video partner's settlement price (its deal's) per trial
  activated (redeemed); a trial under no deal costs its code's value, or the rule's cost.
* **membership grant**: reserves the rule's cost, and at least its deal's settlement price;
  costs the deal's settlement price when taken up (redeemed), or the rule's cost without a deal.

An open offer holds its reservation in the budget (``Campaign.spent``, shown as the budget
held). When used it holds what it cost, never more than its reservation, and gives the rest
back; when it expires or is revoked unused it gives everything back, except a prepaid ticket
whose code expires with it (bought and lost). A prepaid ticket whose code goes back to the pool
takes its cost with it: the next offer that takes the code pays it. So for every campaign

    reserved = spent + released + outstanding - spent beyond reservations

where *reserved* is the face value of every offer issued, *outstanding* what open offers hold
beyond what they have already spent, and *spent beyond reservations* is what a percent-off
coupon took off an order above the estimate its rule reserved (the only cost not bounded at
issue); the budget held, ``spent + outstanding`` less that excess, never passes the budget.
"""

from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import F

from crossmkt_site.errors import ApplicationError
from crossmkt_site.money import ZERO

from ..models import Campaign, Offer, Rule, StockItem
from .stock import HeldItem


def offer_reservation(rule: Rule, item: HeldItem | None) -> Decimal:
    """Return the face value an offer of this rule reserves at issue: the most it can cost, where that is known."""
    bounds = [rule.cost]
    if rule.offer_kind == Rule.OfferKind.COUPON and rule.amount_off is not None and rule.percent_off is None:
        bounds.append(rule.amount_off)
    if item is not None:
        bounds.append(item.face_value)
    if rule.offer_kind in (Rule.OfferKind.FREE_VIEWING, Rule.OfferKind.MEMBERSHIP_GRANT) and rule.deal is not None:
        bounds.append(rule.deal.settlement_price)
    return max(bounds)


def offer_issue_spend(kind: str, item: HeldItem | None) -> Decimal:
    """Return what an offer costs the moment it is issued: a prepaid movie ticket's code value, else nothing."""
    if kind == Rule.OfferKind.MOVIE_TICKET and item is not None and not item.paid_on_use:
        return item.face_value
    return ZERO


def offer_use_cost(offer: Offer, *, discount: Decimal) -> Decimal:
    """Return what an offer costs once used (redeemed), by kind; ``discount`` is the ledger's, for coupons."""
    item = StockItem.objects.filter(offer=offer).values_list("face_value", "paid_on_use").first()
    return offer_use_cost_given(offer, discount=discount, item=item)


def offer_use_cost_given(offer: Offer, *, discount: Decimal, item: tuple[Decimal, bool] | None) -> Decimal:
    """``offer_use_cost`` given the offer's pool code (its face value and whether it is paid on use), if it has one."""
    if offer.kind == Rule.OfferKind.COUPON:
        return discount
    if offer.kind == Rule.OfferKind.MOVIE_TICKET:
        if item is None:
            return offer.cost
        value, paid_on_use = item
        return value if paid_on_use else offer.spent
    deal = offer.deal if offer.deal_id is not None else None
    if offer.kind in (Rule.OfferKind.FREE_VIEWING, Rule.OfferKind.MEMBERSHIP_GRANT) and deal is not None:
        return deal.settlement_price
    if offer.kind == Rule.OfferKind.FREE_VIEWING and item is not None:
        return item[0]
    return offer.cost


def budget_move(*, campaign_id: int, amount: Decimal, refuse_over_budget: str | None = None) -> None:
    """Add ``amount`` (negative: give back) to what the campaign's offers hold of its budget.

    The database refuses a total past the budget; ``refuse_over_budget`` is then the message of
    the 409 raised instead of an integrity error.
    """
    if not amount:
        return
    try:
        with transaction.atomic():
            Campaign.objects.filter(pk=campaign_id).update(spent=F("spent") + amount)
    except IntegrityError:
        if refuse_over_budget is None:
            raise
        raise ApplicationError(refuse_over_budget, code="over_budget", status=409) from None


def offer_costs_release(*, offer_ids: Iterable[int]) -> dict[int, Decimal]:
    """Settle offers that just ended unused (expired, revoked): give back what they held; return it by campaign.

    Call after ``stock_release``: a prepaid ticket whose code went back to the pool is spent no
    more, one whose code expired with it stays spent.
    """
    ids = list(offer_ids)
    Offer.objects.filter(pk__in=ids, kind=Rule.OfferKind.MOVIE_TICKET, spent__gt=0, stock_item__isnull=True).update(
        spent=ZERO
    )
    freed: dict[int, Decimal] = defaultdict(Decimal)
    for campaign_id, cost, spent in Offer.objects.filter(pk__in=ids).values_list("campaign_id", "cost", "spent"):
        freed[campaign_id] += cost - min(spent, cost)
    for campaign_id, amount in freed.items():
        budget_move(campaign_id=campaign_id, amount=-amount)
    return dict(freed)
