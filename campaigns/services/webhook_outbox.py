"""Telling partners what happened: signed webhooks, written with the change, retried until delivered or given up.

A change that a partner must hear about writes a ``WebhookDelivery`` row in its own
transaction (an outbox), and the delivery task is queued once that transaction commits.
The task claims one attempt with a conditional UPDATE, so two copies of the same message
never both send; POSTs the event with urllib; records the attempt; and on a transient
failure (connection error, timeout, HTTP 5xx or 429) schedules the next attempt with
exponential back-off and jitter, up to the delivery's attempt limit. Anything else
(3xx, other 4xx) fails for good at once. A periodic sweep re-queues deliveries whose
message was lost, so a broker outage delays events but loses none.

Signature: ``X-Crossmkt-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`` over
``"<t>.<raw body>"`` with the partner's webhook secret; see README.md, "Webhooks".
"""

import hashlib
import hmac
import http.client
import json
import logging
import random
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from analytics.models import EndUser

from ..models import Campaign, Offer, Partner, RedemptionEntry, Rule, WebhookAttempt, WebhookDelivery
from ..models.webhooks import DEFAULT_MAX_ATTEMPTS

logger = logging.getLogger("crossmkt.webhooks")

SIGNATURE_HEADER = "X-Crossmkt-Signature"
EVENT_ID_HEADER = "X-Crossmkt-Event-Id"
EVENT_TYPE_HEADER = "X-Crossmkt-Event"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_SECONDS = 300

TIMEOUT_SECONDS = 10
# Waits before attempt n+1: between half and all of 30 s * 2**(n-1), at most six hours;
# ten attempts span two to four hours, long enough to ride out a partner's deploy or outage.
BACKOFF_BASE_SECONDS = 30
BACKOFF_CAP_SECONDS = 6 * 3600
# A claimed attempt is not swept up again until it has had time to time out and report back.
LEASE_SECONDS = TIMEOUT_SECONDS + 50
# A fresh delivery is queued on commit; only one still waiting this long later is re-queued.
SWEEP_GRACE = timedelta(minutes=2)
SWEEP_BATCH = 1000
# Offers or grants per event: one chunk's issuance to one partner is split into events of at
# most this many, so a body stays around a few hundred kilobytes.
EVENT_BATCH_SIZE = 1000
RESPONSE_EXCERPT_CHARS = 300
USER_AGENT = "crossmkt-webhooks/1"


def webhook_sign(secret: str, body: bytes, timestamp: int) -> str:
    """Return the signature header value for a body sent at a unix timestamp."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},{SIGNATURE_VERSION}={digest}"


def webhook_verify(secret: str, header: str, body: bytes, tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS, *,
                   now: float | None = None) -> bool:
    """Tell whether a signature header matches the raw body and is recent enough to not be a replay.

    This is the check a partner runs on its side: take ``t`` and every ``v1`` from the
    header, refuse a ``t`` more than ``tolerance_seconds`` from now, and compare the HMAC
    of ``"<t>.<body>"`` with each ``v1`` in constant time.
    """
    timestamp, signatures = None, []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == SIGNATURE_VERSION and value:
            signatures.append(value)
    if timestamp is None or not signatures:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_seconds:
        return False
    expected = webhook_sign(secret, body, timestamp).rpartition("=")[2]
    return any(hmac.compare_digest(expected, signature) for signature in signatures)


def webhook_body(delivery: WebhookDelivery) -> bytes:
    """Return the JSON body of a delivery, byte for byte the same on every attempt."""
    envelope = {
        "id": str(delivery.event_id),
        "type": delivery.event_type,
        "created_at": delivery.created_at.isoformat(),
        "data": delivery.payload,
    }
    return json.dumps(envelope, ensure_ascii=False, sort_keys=True, separators=(",", ":"), cls=DjangoJSONEncoder).encode()


def webhook_backoff(attempt: int) -> float:
    """Return the seconds to wait after failed attempt number ``attempt``: exponential, capped, jittered."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt - 1))
    # Half fixed, half random: retries keep growing, and partners that failed together do not come back together.
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def listening_partners(partner_ids: Iterable[int | None]) -> dict[int, Partner]:
    """Return the active partners among these that have a webhook URL, by id."""
    ids = {pk for pk in partner_ids if pk is not None}
    if not ids:
        return {}
    return {p.pk: p for p in Partner.objects.filter(pk__in=ids, is_active=True).exclude(webhook_url="")}


def webhook_deliveries_create(*, events: Sequence[tuple[Partner, str, dict]],
                              now: datetime | None = None) -> list[WebhookDelivery]:
    """Write deliveries for (partner, event type, payload) triples and queue them once the transaction commits.

    Partners without a webhook URL get nothing. Call this inside the transaction that makes
    the change being reported, so the event exists exactly when the change does.
    """
    now = now or timezone.now()
    rows = [
        WebhookDelivery(partner=partner, event_type=event_type, payload=payload, next_attempt_at=now)
        for partner, event_type, payload in events if partner.webhook_url and partner.is_active
    ]
    if not rows:
        return []
    created = WebhookDelivery.objects.bulk_create(rows)
    _queue_on_commit([delivery.pk for delivery in created])
    return created


def _queue_on_commit(delivery_ids: list[int]) -> None:
    from ..tasks import deliver_webhook

    def queue():
        for pk in delivery_ids:
            deliver_webhook.delay(pk, 1)

    # robust: a broker that is down must not fail the change that was just committed; the
    # sweep queues these deliveries later.
    transaction.on_commit(queue, robust=True)


def _offer_partner_ids(offer: Offer, campaign: Campaign) -> set[int]:
    """Return who hears about an offer: the partner that honours it (the owner if none is named) and the owner."""
    return {pk for pk in (offer.partner_id or campaign.owner_id, campaign.owner_id) if pk is not None}


def _money(value) -> str | None:
    return None if value is None else str(value)


def _offer_event(*, offer: Offer, event_type: str, data: dict) -> list[WebhookDelivery]:
    campaign = Campaign.objects.only("pk", "slug", "owner_id").get(pk=offer.campaign_id)
    partners = listening_partners(_offer_partner_ids(offer, campaign))
    payload = {"code": offer.code, "campaign": campaign.slug, "kind": offer.kind, **data}
    return webhook_deliveries_create(events=[(partner, event_type, payload) for partner in partners.values()])


def webhook_offer_redeemed(*, offer: Offer, entry: RedemptionEntry) -> list[WebhookDelivery]:
    """Tell the offer's partners that it was redeemed (inside the redemption's transaction)."""
    return _offer_event(offer=offer, event_type=WebhookDelivery.Event.OFFER_REDEEMED, data={
        "redeemed_at": entry.created_at.isoformat(),
        "redeemed_by": entry.partner.slug,
        "order_amount": _money(entry.order_amount),
        "discount": _money(entry.discount),
        "ledger_entry": entry.pk,
    })


def webhook_offer_redemption_rolled_back(*, offer: Offer, entry: RedemptionEntry) -> list[WebhookDelivery]:
    """Tell the offer's partners that its redemption was undone and what state it is in now."""
    return _offer_event(offer=offer, event_type=WebhookDelivery.Event.OFFER_REDEMPTION_ROLLED_BACK, data={
        "rolled_back_at": entry.created_at.isoformat(),
        "rolled_back_by": entry.partner.slug,
        "ledger_entry": entry.pk,
        "reverses": entry.reverses_id,
        "status": offer.status,
    })


def webhook_offer_revoked(*, offer: Offer) -> list[WebhookDelivery]:
    """Tell the offer's partners that it was revoked and must no longer be honoured."""
    return _offer_event(offer=offer, event_type=WebhookDelivery.Event.OFFER_REVOKED, data={
        "revoked_at": offer.revoked_at.isoformat() if offer.revoked_at else None,
    })


def webhook_offers_issued(*, campaign: Campaign, rules: Sequence[Rule], user_ids: Sequence[int], rule_indexes: Sequence[int],
                          codes: Sequence[str], stock: Sequence[tuple[int, str] | None], issued_at: datetime,
                          expires_at: datetime) -> list[WebhookDelivery]:
    """Tell each listening partner about the offers of one issuance chunk, in events of at most EVENT_BATCH_SIZE offers.

    Offers are given as columns: user, index into ``rules``, code, and the pool item (id,
    partner's code) or None. A partner sees a user's pseudonymous id only if the user is
    its own or consented to data sharing; the code alone is enough to honour the offer.
    """
    if not len(codes):
        return []
    recipients = [{rule.benefit_partner_id or campaign.owner_id, campaign.owner_id} - {None} for rule in rules]
    partners = listening_partners(pk for pks in recipients for pk in pks)
    if not partners:
        return []
    users = {
        pk: (external_id, home_partner_id, shares)
        for pk, external_id, home_partner_id, shares in EndUser.objects.filter(pk__gte=min(user_ids), pk__lte=max(user_ids))
        .values_list("pk", "external_id", "home_partner_id", "data_sharing_consent")
    }
    slugs = dict(Partner.objects.filter(pk__in={rule.benefit_partner_id for rule in rules} - {None}).values_list("pk", "slug"))
    by_partner: dict[int, list[dict]] = defaultdict(list)
    for user_id, index, code, item in zip(user_ids, rule_indexes, codes, stock):
        rule = rules[int(index)]
        listeners = recipients[int(index)] & partners.keys()
        if not listeners:
            continue
        external_id, home_partner_id, shares = users[int(user_id)]
        for partner_id in listeners:
            by_partner[partner_id].append({
                "code": code,
                "kind": rule.offer_kind,
                "user_id": external_id if shares or home_partner_id == partner_id else None,
                "honoured_by": slugs.get(rule.benefit_partner_id),
                "amount_off": _money(rule.amount_off),
                "percent_off": _money(rule.percent_off),
                "min_spend": _money(rule.min_spend),
                "days": rule.days,
                "stock_code": item[1] if item else None,
            })
    events = []
    for partner_id, items in by_partner.items():
        for start in range(0, len(items), EVENT_BATCH_SIZE):
            events.append((partners[partner_id], WebhookDelivery.Event.OFFERS_ISSUED, {
                "campaign": campaign.slug,
                "issued_at": issued_at.isoformat(),
                "expires_at": expires_at.isoformat(),
                "offers": items[start:start + EVENT_BATCH_SIZE],
            }))
    return webhook_deliveries_create(events=events, now=issued_at)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirected POST loses its body or changes method; the partner should register the final URL instead.
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_opener = urllib.request.build_opener(_NoRedirects)


@dataclass
class _Response:
    status_code: int | None
    error: str
    transient: bool
    retry_after: float | None = None


def _post(url: str, body: bytes, headers: dict[str, str]) -> _Response:
    """POST a body and classify what happened; never raises for network or HTTP trouble."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _opener.open(request, timeout=TIMEOUT_SECONDS) as response:
            response.read(RESPONSE_EXCERPT_CHARS)
            return _Response(response.status, "", transient=False)
    except urllib.error.HTTPError as error:
        excerpt = error.read(RESPONSE_EXCERPT_CHARS).decode("utf-8", "replace") if error.fp else ""
        transient = error.code == 429 or error.code >= 500
        return _Response(error.code, f"HTTP {error.code} {error.reason}: {excerpt}".strip(), transient,
                         _retry_after(error.headers.get("Retry-After")) if transient else None)
    except urllib.error.URLError as error:
        return _Response(None, f"cannot connect: {error.reason}", transient=True)
    except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as error:
        return _Response(None, f"{type(error).__name__}: {error}" if str(error) else type(error).__name__, transient=True)
    except ValueError as error:
        return _Response(None, f"bad webhook URL: {error}", transient=False)


def _retry_after(value: str | None) -> float | None:
    if value and value.strip().isdigit():
        return min(max(float(value.strip()), 1.0), float(BACKOFF_CAP_SECONDS))
    return None


@dataclass
class AttemptResult:
    """What one attempt did; ``retry_in`` is set when another attempt should follow after that many seconds."""

    delivery_id: int
    attempt: int
    outcome: str
    status_code: int | None = None
    retry_in: float | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


SKIPPED = "skipped"


def webhook_attempt(*, delivery_id: int, attempt: int) -> AttemptResult:
    """Make attempt number ``attempt`` at a delivery, record it, and say whether and when to try again.

    Only the attempt that moves ``attempts`` from ``attempt - 1`` sends; a duplicate or
    stale message for the same delivery changes nothing.
    """
    now = timezone.now()
    claimed = WebhookDelivery.objects.filter(
        pk=delivery_id, status=WebhookDelivery.Status.PENDING, attempts=attempt - 1, attempt_limit__gte=attempt,
    ).update(attempts=attempt, next_attempt_at=now + timedelta(seconds=LEASE_SECONDS), updated_at=now)
    if not claimed:
        return AttemptResult(delivery_id, attempt, SKIPPED)
    delivery = WebhookDelivery.objects.select_related("partner").get(pk=delivery_id)
    partner = delivery.partner
    started = time.monotonic()
    if partner.webhook_url and partner.is_active:
        body = webhook_body(delivery)
        response = _post(partner.webhook_url, body, {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
            EVENT_ID_HEADER: str(delivery.event_id),
            EVENT_TYPE_HEADER: delivery.event_type,
            SIGNATURE_HEADER: webhook_sign(partner.webhook_secret, body, int(time.time())),
        })
    else:
        response = _Response(None, "the partner no longer has an active webhook URL", transient=False)
    duration_ms = int((time.monotonic() - started) * 1000)
    delivered = response.status_code is not None and 200 <= response.status_code < 300
    if delivered:
        outcome, retry_in = WebhookAttempt.Outcome.DELIVERED, None
    elif response.transient and attempt < delivery.attempt_limit:
        retry_in = response.retry_after or webhook_backoff(attempt)
        outcome = WebhookAttempt.Outcome.RETRY
    else:
        outcome, retry_in = WebhookAttempt.Outcome.FAILED, None
    _record(delivery_id=delivery_id, attempt=attempt, response=response, outcome=outcome, retry_in=retry_in,
            duration_ms=duration_ms)
    if outcome != WebhookAttempt.Outcome.DELIVERED:
        logger.warning("webhook %s to %s, attempt %d: %s", delivery.event_id, partner.slug, attempt, response.error)
    return AttemptResult(delivery_id, attempt, outcome, response.status_code, retry_in)


@transaction.atomic
def _record(*, delivery_id: int, attempt: int, response: _Response, outcome: str, retry_in: float | None,
            duration_ms: int) -> None:
    now = timezone.now()
    delivery = WebhookDelivery.objects.select_for_update().get(pk=delivery_id)
    WebhookAttempt.objects.create(
        delivery=delivery, number=attempt, attempted_at=now, status_code=response.status_code, error=response.error,
        duration_ms=duration_ms, outcome=outcome,
    )
    # An attempt whose lease ran out may report after a later one started; it settles the
    # delivery only if it succeeded, and otherwise leaves the later attempt in charge.
    if delivery.status != WebhookDelivery.Status.PENDING:
        return
    if outcome != WebhookAttempt.Outcome.DELIVERED and delivery.attempts != attempt:
        return
    delivery.last_error = response.error
    if outcome == WebhookAttempt.Outcome.DELIVERED:
        delivery.status, delivery.delivered_at, delivery.next_attempt_at = WebhookDelivery.Status.DELIVERED, now, None
    elif outcome == WebhookAttempt.Outcome.RETRY:
        delivery.next_attempt_at = now + timedelta(seconds=retry_in)
    else:
        delivery.status, delivery.next_attempt_at = WebhookDelivery.Status.FAILED, None
    delivery.save(update_fields=["status", "delivered_at", "next_attempt_at", "last_error", "updated_at"])
    _settle(delivery)


def _settle(delivery: WebhookDelivery) -> None:
    """Finish what waited on a delivery's final outcome: deal grants are confirmed or compensated."""
    if delivery.event_type != WebhookDelivery.Event.DEAL_GRANTED or delivery.status == WebhookDelivery.Status.PENDING:
        return
    # deals.py builds on this module, so it is imported where it is needed.
    from .deals import deal_grants_settle

    deal_grants_settle(delivery=delivery)


def webhooks_requeue_due(*, now: datetime | None = None, limit: int = SWEEP_BATCH) -> int:
    """Queue the next attempt of deliveries whose message was lost or whose attempt never reported back.

    A delivery whose last allowed attempt never reported back is given up. Return how many
    deliveries were queued or given up. Safe to run twice: a duplicate attempt is skipped.
    """
    now = now or timezone.now()
    due = list(
        WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now - SWEEP_GRACE)
        .order_by("next_attempt_at").values_list("pk", "attempts", "attempt_limit")[:limit]
    )
    if not due:
        return 0
    from ..tasks import deliver_webhook

    for pk, attempts, attempt_limit in due:
        if attempts >= attempt_limit:
            _give_up(delivery_id=pk, attempts=attempts)
        else:
            deliver_webhook.delay(pk, attempts + 1)
    return len(due)


@transaction.atomic
def _give_up(*, delivery_id: int, attempts: int) -> None:
    delivery = WebhookDelivery.objects.select_for_update().get(pk=delivery_id)
    if delivery.status != WebhookDelivery.Status.PENDING or delivery.attempts != attempts:
        return
    delivery.status, delivery.next_attempt_at = WebhookDelivery.Status.FAILED, None
    delivery.last_error = f"gave up: attempt {attempts} of {delivery.attempt_limit} never reported back"
    delivery.save(update_fields=["status", "next_attempt_at", "last_error", "updated_at"])
    _settle(delivery)


@transaction.atomic
def webhook_redeliver(*, delivery_ids: Sequence[int]) -> int:
    """Send failed events again (same event id) with a fresh round of attempts; return how many.

    Deal grant events are left alone: their failure already gave the grants back.
    """
    deliveries = list(
        WebhookDelivery.objects.select_for_update()
        .filter(pk__in=delivery_ids, status=WebhookDelivery.Status.FAILED)
        .exclude(event_type=WebhookDelivery.Event.DEAL_GRANTED)
    )
    now = timezone.now()
    for delivery in deliveries:
        delivery.status = WebhookDelivery.Status.PENDING
        delivery.attempt_limit = delivery.attempts + DEFAULT_MAX_ATTEMPTS
        delivery.next_attempt_at = now
    WebhookDelivery.objects.bulk_update(deliveries, ["status", "attempt_limit", "next_attempt_at"])
    from ..tasks import deliver_webhook

    for delivery in deliveries:
        transaction.on_commit(partial(deliver_webhook.delay, delivery.pk, delivery.attempts + 1), robust=True)
    return len(deliveries)
