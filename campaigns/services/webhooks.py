"""The events partners hear about offers: issued, redeemed, redemption rolled back, revoked.

Each function builds one kind of event's payload and writes it to the outbox
(``webhook_outbox``) inside the transaction that makes the change, so the event exists
exactly when the change does; delivery, signatures and retries are the outbox's.
"""

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from analytics.selectors import ids_known_to_partner

from ..models import Campaign, Offer, Partner, RedemptionEntry, Rule, WebhookDelivery
from .stock import HeldItem
from .webhook_outbox import EVENT_BATCH_SIZE, listening_partners, webhook_deliveries_create


def _offer_partner_ids(offer: Offer, campaign: Campaign) -> set[int]:
    """Return who hears about an offer: the partner that honours it (the owner if none is named) and the owner."""
    return {pk for pk in (offer.partner_id or campaign.owner_id, campaign.owner_id) if pk is not None}


def _money(value: object) -> str | None:
    return None if value is None else str(value)


def _offer_event(*, offer: Offer, event_type: str, data: dict) -> list[WebhookDelivery]:
    campaign = Campaign.objects.only("pk", "slug", "owner_id").get(pk=offer.campaign_id)
    partners = listening_partners(_offer_partner_ids(offer, campaign))
    payload = {"code": offer.code, "campaign": campaign.slug, "kind": offer.kind, **data}
    return webhook_deliveries_create(events=[(partner, event_type, payload) for partner in partners.values()])


def webhook_offer_redeemed(*, offer: Offer, entry: RedemptionEntry) -> list[WebhookDelivery]:
    """Tell the offer's partners that it was redeemed (inside the redemption's transaction)."""
    return _offer_event(
        offer=offer,
        event_type=WebhookDelivery.Event.OFFER_REDEEMED,
        data={
            "redeemed_at": entry.created_at.isoformat(),
            "redeemed_by": entry.partner.slug,
            "order_amount": _money(entry.order_amount),
            "discount": _money(entry.discount),
            "ledger_entry": entry.pk,
        },
    )


def webhook_offers_redeemed(*, redeemed: Sequence[tuple[Offer, RedemptionEntry]]) -> list[WebhookDelivery]:
    """``webhook_offer_redeemed`` for many redemptions at once: the same deliveries, in the same order."""
    campaigns = {
        campaign.pk: campaign
        for campaign in Campaign.objects.only("pk", "slug", "owner_id").filter(
            pk__in={offer.campaign_id for offer, _ in redeemed}
        )
    }
    listening = listening_partners(
        pk for offer, _ in redeemed for pk in _offer_partner_ids(offer, campaigns[offer.campaign_id])
    )
    events = []
    for offer, entry in redeemed:
        campaign = campaigns[offer.campaign_id]
        payload = {
            "code": offer.code,
            "campaign": campaign.slug,
            "kind": offer.kind,
            "redeemed_at": entry.created_at.isoformat(),
            "redeemed_by": entry.partner.slug,
            "order_amount": _money(entry.order_amount),
            "discount": _money(entry.discount),
            "ledger_entry": entry.pk,
        }
        # As _offer_event: the offer's listening partners, in the order the partners are listed.
        hearing = _offer_partner_ids(offer, campaign)
        events += [
            (partner, WebhookDelivery.Event.OFFER_REDEEMED, payload)
            for pk, partner in listening.items()
            if pk in hearing
        ]
    return webhook_deliveries_create(events=events)


def webhook_offer_redemption_rolled_back(*, offer: Offer, entry: RedemptionEntry) -> list[WebhookDelivery]:
    """Tell the offer's partners that its redemption was undone and what state it is in now."""
    return _offer_event(
        offer=offer,
        event_type=WebhookDelivery.Event.OFFER_REDEMPTION_ROLLED_BACK,
        data={
            "rolled_back_at": entry.created_at.isoformat(),
            "rolled_back_by": entry.partner.slug,
            "ledger_entry": entry.pk,
            "reverses": entry.reverses_id,
            "status": offer.status,
        },
    )


def webhook_offer_revoked(*, offer: Offer) -> list[WebhookDelivery]:
    """Tell the offer's partners that it was revoked and must no longer be honoured."""
    return _offer_event(
        offer=offer,
        event_type=WebhookDelivery.Event.OFFER_REVOKED,
        data={
            "revoked_at": offer.revoked_at.isoformat() if offer.revoked_at else None,
        },
    )


def webhook_offers_issued(
    *,
    campaign: Campaign,
    rules: Sequence[Rule],
    user_ids: Sequence[int],
    rule_indexes: Sequence[int],
    codes: Sequence[str],
    stock: Sequence[HeldItem | None],
    issued_at: datetime,
    expires_at: datetime,
) -> list[WebhookDelivery]:
    """Tell each listening partner about the offers of one issuance chunk, in events of at most EVENT_BATCH_SIZE offers.

    Offers are given as columns: user, index into ``rules``, code, and the pool item (id,
    partner's code) or None. A partner sees a user's pseudonymous id only if the user is
    its own or linked to it with consent, and then its own id for them; the code alone is
    enough to honour the offer.
    """
    if not len(codes):
        return []
    recipients = [
        {pk for pk in (rule.benefit_partner_id or campaign.owner_id, campaign.owner_id) if pk is not None}
        for rule in rules
    ]
    partners = listening_partners(pk for pks in recipients for pk in pks)
    if not partners:
        return []
    known = {partner_id: ids_known_to_partner(partner_id=partner_id, user_ids=user_ids) for partner_id in partners}
    benefit_partner_ids = {rule.benefit_partner_id for rule in rules if rule.benefit_partner_id is not None}
    # Keyed by id; a rule without a benefit partner (None) finds no slug.
    slugs: dict[int | None, str] = dict(Partner.objects.filter(pk__in=benefit_partner_ids).values_list("pk", "slug"))
    by_partner: dict[int, list[dict]] = defaultdict(list)
    for user_id, index, code, item in zip(user_ids, rule_indexes, codes, stock, strict=True):
        rule = rules[int(index)]
        listeners = recipients[int(index)] & partners.keys()
        if not listeners:
            continue
        for partner_id in listeners:
            by_partner[partner_id].append(
                {
                    "code": code,
                    "kind": rule.offer_kind,
                    "user_id": known[partner_id].get(int(user_id)),
                    "honoured_by": slugs.get(rule.benefit_partner_id),
                    "amount_off": _money(rule.amount_off),
                    "percent_off": _money(rule.percent_off),
                    "min_spend": _money(rule.min_spend),
                    "days": rule.days,
                    "stock_code": item[1] if item else None,
                }
            )
    events = []
    for partner_id, items in by_partner.items():
        for start in range(0, len(items), EVENT_BATCH_SIZE):
            events.append(
                (
                    partners[partner_id],
                    WebhookDelivery.Event.OFFERS_ISSUED,
                    {
                        "campaign": campaign.slug,
                        "issued_at": issued_at.isoformat(),
                        "expires_at": expires_at.isoformat(),
                        "offers": items[start : start + EVENT_BATCH_SIZE],
                    },
                )
            )
    return webhook_deliveries_create(events=events, now=issued_at)
