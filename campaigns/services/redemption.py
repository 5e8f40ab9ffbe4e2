"""Redeeming offers: once only, idempotent per key, undone only by a rollback line in the ledger."""

import hashlib
import json
from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.utils import timezone

from crossmkt_site.errors import ApplicationError
from crossmkt_site.money import ZERO, to_cny

from ..models import Offer, Partner, RedemptionEntry, Rule, StockItem
from ..selectors import offers_visible_to
from .offer_costs import budget_move, offer_use_cost
from .pricing import coupon_discount
from .stock import stock_release
from .webhooks import webhook_offer_redeemed, webhook_offer_redemption_rolled_back


def request_fingerprint(*, code: str, order_amount: Decimal, item_id: str) -> str:
    """Return the SHA-256 of what a redemption asks for, written canonically (199.0 and 199.00 are one amount)."""
    canonical = {"code": code, "order_amount": str(to_cny(order_amount)), "item_id": item_id}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def _existing_for_key(partner: Partner, idempotency_key: str, code: str, fingerprint: str) -> RedemptionEntry | None:
    """Return the entry this key made, if the request repeats it; refuse a key reused for another request.

    As Stripe does: a retry must send the same request, so that a client's bug that reuses a
    key for a different order is told so instead of silently getting the first order's answer.
    """
    if not idempotency_key:
        return None
    entry = (
        RedemptionEntry.objects.select_related("offer").filter(partner=partner, idempotency_key=idempotency_key).first()
    )
    if entry is None:
        return None
    if entry.offer.code != code:
        raise ApplicationError(
            "this Idempotency-Key was already used for another offer; use a new key per redemption",
            code="idempotency_key_reused",
            field="Idempotency-Key",
            status=422,
        )
    # Entries made before fingerprints were kept have none and answer any retry, as they did.
    if entry.request_fingerprint and entry.request_fingerprint != fingerprint:
        raise ApplicationError(
            "this Idempotency-Key was already used for this offer with a different request body "
            f"(order_amount {entry.order_amount}); repeat the same request to get its answer, or use a new key "
            "per redemption",
            code="idempotency_key_reused",
            field="Idempotency-Key",
            status=422,
        )
    return entry


def _refuse(offer: Offer, now) -> None:
    """Raise the reason an offer cannot be redeemed now."""
    if offer.status == Offer.Status.REDEEMED:
        raise ApplicationError("this offer has already been redeemed", code="already_redeemed", status=409)
    if offer.status == Offer.Status.REVOKED:
        raise ApplicationError("this offer was revoked", code="revoked", status=409)
    if offer.status == Offer.Status.EXPIRED or offer.expires_at <= now:
        raise ApplicationError(f"this offer expired at {offer.expires_at.isoformat()}", code="expired", status=409)


def _check_applicable(offer: Offer, item_id: str) -> None:
    """Refuse a coupon limited to some courses or bundles when the order is for something else."""
    rule = offer.rule
    if rule is None:
        return
    courses = set(rule.applicable_courses.values_list("sku", flat=True))
    bundles = set(rule.applicable_bundles.values_list("slug", flat=True))
    if not courses and not bundles:
        return
    if not item_id:
        raise ApplicationError(
            "this coupon is valid only for some courses or bundles: send the order's item_id",
            code="item_required",
            field="item_id",
            status=422,
        )
    if item_id not in courses | bundles:
        raise ApplicationError(
            f"this coupon is not valid for {item_id!r}; it applies to {', '.join(sorted(courses | bundles))}",
            code="not_applicable",
            field="item_id",
            status=422,
        )


def offer_redeem(
    *,
    code: str,
    partner: Partner,
    order_amount: Decimal,
    idempotency_key: str = "",
    item_id: str = "",
    now: datetime | None = None,
) -> RedemptionEntry:
    """Redeem an offer for an order; of simultaneous attempts exactly one succeeds, and a repeated key returns it.

    ``item_id`` is the course SKU or bundle slug bought; a coupon limited to some courses or
    bundles needs it. ``now`` is when the order was placed (default: now): the offer must be
    open then, and it is the offer's ``redeemed_at``; the ledger line is recorded when written.
    """
    order_amount = to_cny(order_amount)
    if order_amount < 0:
        raise ApplicationError("order_amount cannot be negative", field="order_amount")
    fingerprint = request_fingerprint(code=code, order_amount=order_amount, item_id=item_id)
    existing = _existing_for_key(partner, idempotency_key, code, fingerprint)
    if existing is not None:
        return existing
    offer = offers_visible_to(partner).filter(code=code).first()
    if offer is None:
        raise ApplicationError("no such offer", code="not_found", field="code", status=404)
    now = now or timezone.now()
    if offer.status not in Offer.OPEN_STATUSES or offer.expires_at <= now:
        # A concurrent request with this same key may have redeemed it a moment ago: that is its answer.
        return _existing_or_refuse(partner, idempotency_key, fingerprint, offer, now)
    discount = ZERO
    if offer.kind == Rule.OfferKind.COUPON:
        _check_applicable(offer, item_id)
        if order_amount < offer.min_spend:
            raise ApplicationError(
                f"this coupon needs an order of at least {offer.min_spend} CNY",
                code="below_min_spend",
                field="order_amount",
            )
        discount = coupon_discount(
            order_amount=order_amount,
            amount_off=offer.amount_off,
            percent_off=offer.percent_off,
            min_spend=offer.min_spend,
        )
    try:
        with transaction.atomic():
            # The conditional UPDATE is the single point of truth: the row lock it takes makes a
            # concurrent redemption wait, then find the offer no longer open and change nothing.
            won = Offer.objects.filter(pk=offer.pk, status__in=Offer.OPEN_STATUSES, expires_at__gt=now).update(
                status=Offer.Status.REDEEMED,
                redeemed_at=now,
            )
            if not won:
                raise _LostRace
            # The cost model: the offer now costs what its kind costs on use, and gives the rest of its
            # reservation back to the budget.
            spent = offer_use_cost(offer, discount=discount)
            Offer.objects.filter(pk=offer.pk).update(spent=spent)
            budget_move(campaign_id=offer.campaign_id, amount=min(spent, offer.cost) - offer.cost)
            entry = RedemptionEntry.objects.create(
                offer=offer,
                kind=RedemptionEntry.Kind.REDEEM,
                partner=partner,
                order_amount=order_amount,
                discount=discount,
                idempotency_key=idempotency_key,
                request_fingerprint=fingerprint if idempotency_key else "",
            )
            webhook_offer_redeemed(offer=offer, entry=entry)
            return entry
    except (_LostRace, IntegrityError):
        # Someone else got there first: the same key retried concurrently gets their entry.
        offer.refresh_from_db()
        return _existing_or_refuse(partner, idempotency_key, fingerprint, offer, now)


def _existing_or_refuse(partner: Partner, idempotency_key: str, fingerprint: str, offer: Offer, now) -> RedemptionEntry:
    """Return the entry this key already made for the offer, or raise why the offer cannot be redeemed."""
    existing = _existing_for_key(partner, idempotency_key, offer.code, fingerprint)
    if existing is not None:
        return existing
    _refuse(offer, now)
    raise ApplicationError("this offer could not be redeemed; try again", code="conflict", status=409)


class _LostRace(Exception):
    pass


@transaction.atomic
def offer_redemption_rollback(*, code: str, partner: Partner, idempotency_key: str = "") -> RedemptionEntry:
    """Undo an offer's redemption with a rollback line; the offer opens again (or expires if past its date)."""
    offer = offers_visible_to(partner).filter(code=code).select_for_update(of=("self",)).first()
    if offer is None:
        raise ApplicationError("no such offer", code="not_found", field="code", status=404)
    redemption = (
        RedemptionEntry.objects.filter(offer=offer, kind=RedemptionEntry.Kind.REDEEM, reversed_by__isnull=True)
        .order_by("-created_at")
        .first()
    )
    if redemption is None:
        raise ApplicationError("this offer has no redemption to roll back", code="not_redeemed", status=409)
    now = timezone.now()
    reopened = Offer.Status.DELIVERED if offer.delivered_at else Offer.Status.ISSUED
    offer.status = reopened if offer.expires_at > now else Offer.Status.EXPIRED
    offer.redeemed_at = None
    held_before = min(offer.spent, offer.cost)
    # Unused again: only a prepaid ticket is still spent (its code's value), and only while it keeps its code.
    prepaid = StockItem.objects.filter(offer=offer, paid_on_use=False, kind=Rule.OfferKind.MOVIE_TICKET)
    if offer.status == Offer.Status.EXPIRED:
        stock_release(offer_ids=[offer.pk], now=now)
    offer.spent = prepaid.values_list("face_value", flat=True).first() or ZERO
    offer.save(update_fields=["status", "redeemed_at", "spent"])
    held_after = offer.cost if offer.status != Offer.Status.EXPIRED else min(offer.spent, offer.cost)
    budget_move(
        campaign_id=offer.campaign_id,
        amount=held_after - held_before,
        refuse_over_budget=(
            "this redemption cannot be rolled back: the offer would need its reservation back and the campaign's "
            "budget is spent meanwhile; raise the budget, or revoke the offer instead"
        ),
    )
    entry = RedemptionEntry.objects.create(
        offer=offer,
        kind=RedemptionEntry.Kind.ROLLBACK,
        partner=partner,
        reverses=redemption,
        order_amount=redemption.order_amount,
        discount=redemption.discount,
        idempotency_key=idempotency_key,
    )
    webhook_offer_redemption_rolled_back(offer=offer, entry=entry)
    return entry
