"""Redeeming offers: once only, idempotent per key, undone only by a rollback line in the ledger."""

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from crossmkt_site.errors import ApplicationError
from crossmkt_site.money import ZERO, to_cny

from ..models import Deal, Offer, Partner, RedemptionEntry, Rule, StockItem
from ..selectors import offers_visible_to
from ..selectors.grant_triggers import GrantUse, benefit_given, grants_earned, is_conditional_grant, trigger_text
from .offer_costs import budget_move, offer_use_cost, offer_use_cost_given
from .pricing import coupon_discount
from .stock import stock_release
from .webhooks import webhook_offer_redeemed, webhook_offer_redemption_rolled_back, webhook_offers_redeemed


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
    _existing_for_key_check(entry, code, fingerprint)
    return entry


def _existing_for_key_check(entry: RedemptionEntry, code: str, fingerprint: str) -> None:
    """Refuse a key's entry for a request other than the one that made it."""
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


def _refuse(offer: Offer, now) -> None:
    """Raise the reason an offer cannot be redeemed now."""
    if offer.status == Offer.Status.REDEEMED:
        raise ApplicationError("this offer has already been redeemed", code="already_redeemed", status=409)
    if offer.status == Offer.Status.REVOKED:
        raise ApplicationError("this offer was revoked", code="revoked", status=409)
    if offer.status == Offer.Status.EXPIRED or offer.expires_at <= now:
        raise ApplicationError(f"this offer expired at {offer.expires_at.isoformat()}", code="expired", status=409)


def _refuse_unearned(uses: Sequence[GrantUse]) -> None:
    """Refuse the first membership grant whose user has not met its deal's trigger since the grant was issued."""
    for use, earned in zip(uses, grants_earned(uses), strict=True):
        deal = use.offer.deal
        if not earned and deal is not None:
            raise ApplicationError(
                f"this membership grant is earned by the deal {deal.slug!r}: the user has to "
                f"{trigger_text(deal)} at {deal.source_partner.slug} after {use.offer.issued_at.isoformat()} "
                "before it can be taken up",
                code="not_earned",
                field="code",
                status=409,
            )


def _lock_deals(deal_ids: Iterable[int]) -> None:
    """Lock the deals' rows, lowest id first: a grant's redemption and a deal's evaluation then take turns."""
    ids = sorted(set(deal_ids))
    if ids:
        list(Deal.objects.select_for_update().filter(pk__in=ids).order_by("pk").values_list("pk", flat=True))


def _refuse_granted(offers: Sequence[Offer]) -> None:
    """Refuse the first membership grant whose benefit its user already has (``benefit_given``): one purchase, once.

    Otherwise the user gets two months and the target partner is paid twice (from the campaign's
    budget and in the deal's settlement). The deals' rows are locked first, so a deal evaluation
    running now either granted before this check sees it or runs after this redemption and leaves
    the event to it (``campaigns.services.deals``).
    """
    grants = [offer for offer in offers if is_conditional_grant(offer)]
    if not grants:
        return
    _lock_deals(offer.deal_id for offer in grants)  # type: ignore[misc]
    for offer, given in zip(grants, benefit_given(grants), strict=True):
        if given is not None:
            raise ApplicationError(
                f"the user already has the benefit of the deal {offer.deal.slug!r} (this grant's benefit) "  # type: ignore[union-attr]
                f"for what they did since this grant was issued ({given}); one purchase earns the benefit once",
                code="already_granted",
                field="code",
                status=409,
            )


def _applicable_items(rule: Rule) -> tuple[set[str], set[str]]:
    """Return the course SKUs and bundle slugs a rule's coupons are limited to (both empty: anything)."""
    return (
        set(rule.applicable_courses.values_list("sku", flat=True)),
        set(rule.applicable_bundles.values_list("slug", flat=True)),
    )


def _check_applicable(offer: Offer, item_id: str, applicable: tuple[set[str], set[str]] | None = None) -> None:
    """Refuse a coupon limited to some courses or bundles when the order is for something else.

    ``applicable`` is the rule's ``_applicable_items`` if already read.
    """
    rule = offer.rule
    if rule is None:
        return
    courses, bundles = applicable if applicable is not None else _applicable_items(rule)
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
    discount = _coupon_discount_checked(offer, order_amount, item_id, None)
    if is_conditional_grant(offer):
        _refuse_unearned([GrantUse(offer, now)])
    try:
        with transaction.atomic():
            # The conditional UPDATE is the single point of truth: the row lock it takes makes a
            # concurrent redemption wait, then find the offer no longer open and change nothing.
            _refuse_granted([offer])
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


@dataclass(frozen=True)
class RedemptionRequest:
    """One redemption of ``offer_redeem_many``: the arguments ``offer_redeem`` takes (``now`` required)."""

    code: str
    partner: Partner
    order_amount: Decimal
    now: datetime
    idempotency_key: str = ""
    item_id: str = ""


def _coupon_discount_checked(
    offer: Offer, order_amount: Decimal, item_id: str, applicable: tuple[set[str], set[str]] | None
) -> Decimal:
    """Check a coupon fits the order (item, minimum spend) and return its discount; other kinds discount nothing."""
    if offer.kind != Rule.OfferKind.COUPON:
        return ZERO
    _check_applicable(offer, item_id, applicable)
    if order_amount < offer.min_spend:
        raise ApplicationError(
            f"this coupon needs an order of at least {offer.min_spend} CNY",
            code="below_min_spend",
            field="order_amount",
        )
    return coupon_discount(
        order_amount=order_amount,
        amount_off=offer.amount_off,
        percent_off=offer.percent_off,
        min_spend=offer.min_spend,
    )


# Rows read or written per statement, well under SQLite's limit on a statement's parameters.
_MANY_CHUNK = 500


@transaction.atomic
def offer_redeem_many(*, requests: Sequence[RedemptionRequest]) -> list[RedemptionEntry]:
    """Redeem many offers in one transaction, each as ``offer_redeem`` would; return their ledger entries in order.

    The same checks, ledger lines, offer states, costs, budget moves and webhook events as one
    ``offer_redeem`` call per request in turn, read and written a chunk of requests at a time (a
    replay of many redemptions, such as the demo's). All or nothing: a request ``offer_redeem``
    would refuse raises its error and nothing of the batch is kept. A repeated key returns its
    entry, as ``offer_redeem`` does.
    """
    entries: list[RedemptionEntry] = []
    applicable: dict[int, tuple[set[str], set[str]]] = {}
    # The deals of the batch's grants are locked before any offer or campaign row, as offer_redeem locks them
    # first: two redemptions never hold each other's rows.
    codes = sorted({request.code for request in requests})
    _lock_deals(
        deal_id
        for start in range(0, len(codes), _MANY_CHUNK)
        for deal_id in Offer.objects.filter(
            code__in=codes[start : start + _MANY_CHUNK], kind=Rule.OfferKind.MEMBERSHIP_GRANT, deal__isnull=False
        ).values_list("deal_id", flat=True)
    )
    for start in range(0, len(requests), _MANY_CHUNK):
        entries += _redeem_chunk(requests[start : start + _MANY_CHUNK], applicable)
    return entries


def _redeem_chunk(
    requests: Sequence[RedemptionRequest], applicable: dict[int, tuple[set[str], set[str]]]
) -> list[RedemptionEntry]:
    amounts = [to_cny(request.order_amount) for request in requests]
    if any(amount < 0 for amount in amounts):
        raise ApplicationError("order_amount cannot be negative", field="order_amount")
    fingerprints = [
        request_fingerprint(code=request.code, order_amount=amount, item_id=request.item_id)
        for request, amount in zip(requests, amounts, strict=True)
    ]
    keyed = {(request.partner.pk, request.idempotency_key) for request in requests if request.idempotency_key}
    existing = {
        (entry.partner_id, entry.idempotency_key): entry
        for entry in RedemptionEntry.objects.select_related("offer").filter(
            idempotency_key__in={key for _, key in keyed}
        )
        if (entry.partner_id, entry.idempotency_key) in keyed
    }
    offers: dict[tuple[int, str], Offer] = {}
    by_partner: dict[Partner, set[str]] = defaultdict(set)
    for request in requests:
        by_partner[request.partner].add(request.code)
    for partner, codes in by_partner.items():
        visible = offers_visible_to(partner).filter(code__in=codes).select_related("rule", "deal")
        offers.update({(partner.pk, offer.code): offer for offer in visible})
    items = {
        offer_id: (face_value, paid_on_use)
        for offer_id, face_value, paid_on_use in StockItem.objects.filter(
            offer_id__in=[offer.pk for offer in offers.values()]
        ).values_list("offer_id", "face_value", "paid_on_use")
    }
    _refuse_unearned(
        [
            GrantUse(offer, request.now)
            for request in requests
            if (offer := offers.get((request.partner.pk, request.code))) is not None and is_conditional_grant(offer)
        ]
    )
    _refuse_granted(
        [
            offer
            for request in requests
            if (offer := offers.get((request.partner.pk, request.code))) is not None
            and offer.status in Offer.OPEN_STATUSES
        ]
    )
    results: list[RedemptionEntry] = []
    new: list[tuple[Offer, RedemptionEntry]] = []
    made: dict[tuple[int, str], RedemptionEntry] = {}
    for request, amount, fingerprint in zip(requests, amounts, fingerprints, strict=True):
        key = (request.partner.pk, request.idempotency_key)
        entry = existing.get(key) or made.get(key) if request.idempotency_key else None
        if entry is not None:
            # As _existing_for_key: the same request gets its entry, another request is refused.
            _existing_for_key_check(entry, request.code, fingerprint)
            results.append(entry)
            continue
        offer = offers.get((request.partner.pk, request.code))
        if offer is None:
            raise ApplicationError("no such offer", code="not_found", field="code", status=404)
        if offer.status not in Offer.OPEN_STATUSES or offer.expires_at <= request.now:
            _refuse(offer, request.now)
            raise ApplicationError("this offer could not be redeemed; try again", code="conflict", status=409)
        rule = offer.rule if offer.kind == Rule.OfferKind.COUPON else None
        if rule is not None and rule.pk not in applicable:
            applicable[rule.pk] = _applicable_items(rule)
        discount = _coupon_discount_checked(
            offer, amount, request.item_id, applicable[rule.pk] if rule is not None else None
        )
        offer.status, offer.redeemed_at = Offer.Status.REDEEMED, request.now
        offer.spent = offer_use_cost_given(offer, discount=discount, item=items.get(offer.pk))
        entry = RedemptionEntry(
            offer=offer,
            kind=RedemptionEntry.Kind.REDEEM,
            partner=request.partner,
            order_amount=amount,
            discount=discount,
            idempotency_key=request.idempotency_key,
            request_fingerprint=fingerprint if request.idempotency_key else "",
        )
        if request.idempotency_key:
            made[key] = entry
        new.append((offer, entry))
        results.append(entry)
    if new:
        _redeem_write(new)
    return results


def _redeem_write(new: list[tuple[Offer, RedemptionEntry]]) -> None:
    """Write a chunk's redemptions: the offers' states, the budget given back, the ledger lines, the webhooks."""
    offers = [offer for offer, _ in new]
    if len({offer.pk for offer in offers}) != len(offers):
        raise ApplicationError("this offer has already been redeemed", code="already_redeemed", status=409)
    # As in offer_redeem, the conditional UPDATE is the single point of truth: an offer another
    # request redeemed meanwhile is no longer open, and the whole batch is refused.
    won = Offer.objects.filter(pk__in=[offer.pk for offer in offers], status__in=Offer.OPEN_STATUSES).update(
        status=Offer.Status.REDEEMED
    )
    if won != len(offers):
        raise ApplicationError("an offer of this batch was redeemed meanwhile; try again", code="conflict", status=409)
    _offers_used_write(offers)
    given_back: dict[int, Decimal] = defaultdict(Decimal)
    for offer in offers:
        given_back[offer.campaign_id] += min(offer.spent, offer.cost) - offer.cost
    for campaign_id, amount in given_back.items():
        budget_move(campaign_id=campaign_id, amount=amount)
    try:
        with transaction.atomic():
            RedemptionEntry.objects.bulk_create([entry for _, entry in new])
    except IntegrityError:
        raise ApplicationError(
            "a redemption of this batch was made meanwhile; try again", code="conflict", status=409
        ) from None
    webhook_offers_redeemed(redeemed=new)


def _offers_used_write(offers: Sequence[Offer]) -> None:
    """Write the offers' ``redeemed_at`` and ``spent``: one statement run over the rows (``bulk_update``'s
    CASE per row costs more Python than the writes themselves)."""
    meta = Offer._meta
    redeemed_at, spent = meta.get_field("redeemed_at"), meta.get_field("spent")
    with connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {meta.db_table} SET {redeemed_at.column} = %s, {spent.column} = %s WHERE {meta.pk.column} = %s",
            [
                (
                    redeemed_at.get_db_prep_save(offer.redeemed_at, connection),
                    spent.get_db_prep_save(offer.spent, connection),
                    offer.pk,
                )
                for offer in offers
            ],
        )


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
