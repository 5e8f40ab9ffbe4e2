"""Erasing a user: at their home partner's request everywhere, at a linked partner's only what it sent.

A linked partner's request removes its link and its events for the person
(``analytics.services.erasure.enduser_link_erase``) and rewrites the stored webhook payloads
that named the person to it by its id; the person's offers and everyone else's data stay.
At the home partner's request:

Offers still open are revoked and the money they reserved goes back to the campaign; offers,
the redemption ledger, conversions and campaign assignments stay, so settlements and reports
keep adding up. What happens to the user's own data is ``analytics.services.erasure``'s to say.
Stored webhook payloads that named the user (offers issued, deal grants) keep their items,
with the user row's new random id in place of the id the partners knew.
"""

from collections import defaultdict

from django.db import transaction
from django.db.models import Q, TextField
from django.db.models.functions import Cast

from analytics.models import ErasureLogEntry, UserLink
from analytics.services.erasure import enduser_erase, enduser_link_erase, enduser_lock_erasable
from crossmkt_site.errors import ApplicationError

from ..models import DealGrant, Offer, Partner, WebhookDelivery
from .offers import offer_revoke


@transaction.atomic
def user_erase(*, partner: Partner, external_id: str, api_key_prefix: str = "") -> ErasureLogEntry:
    """Erase what the partner's id stands for: its own user everywhere, or its link and what it sent; else a 404."""
    target = enduser_lock_erasable(partner_id=partner.pk, external_id=external_id)
    user = target.user
    if target.link is not None:
        entry = enduser_link_erase(link=target.link, api_key_prefix=api_key_prefix)
        webhook_payloads_pseudonymise(user_id=user.pk, external_id=external_id, pseudonym=f"erased-link-{entry.pk}")
        return entry
    linked_ids = list(UserLink.objects.filter(user=user).values_list("external_id", flat=True))
    open_codes = list(Offer.objects.filter(user=user, status__in=Offer.OPEN_STATUSES).values_list("code", flat=True))
    offers_revoked = 0
    for code in open_codes:
        try:
            offer_revoke(code=code)
            offers_revoked += 1
        except ApplicationError as error:
            # Redeemed or expired since it was listed: there is nothing left to revoke.
            if error.code != "not_open":
                raise
    entry = enduser_erase(
        user=user,
        pseudonymous_id=external_id,
        partner_id=partner.pk,
        api_key_prefix=api_key_prefix,
        offers_revoked=offers_revoked,
    )
    for known_as in {external_id, *linked_ids}:
        webhook_payloads_pseudonymise(user_id=user.pk, external_id=known_as, pseudonym=entry.user.external_id)
    return entry


def _replace_user_id(items: list, *, key: str, keys: set, external_id: str, pseudonym: str) -> bool:
    changed = False
    for item in items:
        if isinstance(item, dict) and item.get(key) in keys and item.get("user_id") == external_id:
            item["user_id"] = pseudonym
            changed = True
    return changed


@transaction.atomic
def webhook_payloads_pseudonymise(*, user_id: int, external_id: str, pseudonym: str) -> int:
    """Put ``pseudonym`` for ``external_id`` in the stored payloads that name the user; return how many changed.

    Issuance events are found by the user's offer codes within their campaigns' events, deal
    grant events by the grants' deliveries; only the user's own items change, and the rows are
    locked so that two erasures touching one event do not undo each other.
    """
    codes_by_campaign: dict[str, set[str]] = defaultdict(set)
    for slug, code in Offer.objects.filter(user_id=user_id).values_list("campaign__slug", "code"):
        codes_by_campaign[slug].add(code)
    grants = dict(DealGrant.objects.filter(user_id=user_id, delivery__isnull=False).values_list("pk", "delivery_id"))
    changed: list[WebhookDelivery] = []
    if codes_by_campaign:
        # A code is letters and digits, so it appears as itself in the payload's text.
        named = Q()
        for slug, codes in codes_by_campaign.items():
            any_code = Q()
            for code in codes:
                any_code |= Q(text__contains=code)
            named |= Q(payload__campaign=slug) & any_code
        issued = (
            WebhookDelivery.objects.select_for_update()
            .filter(event_type=WebhookDelivery.Event.OFFERS_ISSUED)
            .annotate(text=Cast("payload", TextField()))
            .filter(named)
            .order_by("pk")
        )
        for delivery in issued:
            codes = codes_by_campaign.get(delivery.payload.get("campaign"), set())
            offers = delivery.payload.get("offers") or []
            if _replace_user_id(offers, key="code", keys=codes, external_id=external_id, pseudonym=pseudonym):
                changed.append(delivery)
    if grants:
        granted = (
            WebhookDelivery.objects.select_for_update()
            .filter(pk__in=set(grants.values()), event_type=WebhookDelivery.Event.DEAL_GRANTED)
            .order_by("pk")
        )
        for grant_event in granted:
            items = grant_event.payload.get("grants") or []
            if _replace_user_id(items, key="grant", keys=set(grants), external_id=external_id, pseudonym=pseudonym):
                changed.append(grant_event)
    WebhookDelivery.objects.bulk_update(changed, ["payload"])
    return len(changed)
