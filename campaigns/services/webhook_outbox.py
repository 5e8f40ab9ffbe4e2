"""The webhook outbox: signed deliveries, written with the change, retried until delivered or given up.

A change that a partner must hear about writes a ``WebhookDelivery`` row in its own
transaction (an outbox), and the delivery task is queued once that transaction commits.
The task claims one attempt with a conditional UPDATE, so two copies of the same message
never both send; checks the partner's URL again and resolves its host once (DNS may have
changed since the URL was saved), refusing any address that is not public; POSTs the event
to the address it vetted (the host name goes in ``Host`` and, for https, in the TLS
handshake and certificate check); records the attempt; and on a transient failure
(connection error, timeout, a name that does not resolve, HTTP 5xx or 429) schedules the
next attempt with exponential back-off and jitter, up to the delivery's attempt limit.
Anything else fails for good at once: a refused destination (a scheme, credentials or an
address we do not send to; a manager sends the event again once the URL is fixed), a
redirect (never followed), any other 4xx. An attempt keeps the status, the timing and, for
an answer other than 2xx, at most ``RESPONSE_EXCERPT_CHARS`` printable characters of the
body. A periodic sweep re-queues deliveries whose message was lost, so a broker outage
delays events but loses none.

The outbox knows nothing of what an event means: ``webhooks`` builds each event's payload,
and a module that must act on the final outcome of its events (``deals`` confirms or
compensates the grants a ``deal.granted`` event announced) registers a handler for its event
type with ``webhook_outcome_handler_register`` (done in ``CampaignsConfig.ready``).

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
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from celery import signature
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from crossmkt_site.outbound_urls import OutboundURLRefused, pinned_connection

from ..models import Partner, WebhookAttempt, WebhookDelivery
from ..models.partners import webhook_destination
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
# What an attempt keeps of an answer that is not 2xx: a short, printable excerpt, so the delivery
# log shows what the partner said without becoming a way to read whatever answered.
RESPONSE_EXCERPT_CHARS = 200
RESPONSE_READ_BYTES = 1024
REASON_CHARS = 60
USER_AGENT = "crossmkt-webhooks/1"
# The task that makes one attempt, queued by name: the task module builds on this one, not the other way round.
DELIVER_TASK = "campaigns.tasks.deliver_webhook"

OutcomeHandler = Callable[..., object]
# Per event type, what to do once a delivery is delivered or given up for good (see webhook_outcome_handler_register).
_outcome_handlers: dict[str, OutcomeHandler] = {}


def webhook_outcome_handler_register(*, event_type: str, handler: OutcomeHandler) -> None:
    """Have ``handler(delivery=...)`` called when a delivery of this event type is delivered or given up for good.

    The handler runs inside the transaction that records the outcome, with the delivery's
    final status set. Deliveries of such an event type are final: ``webhook_redeliver``
    leaves them alone once their failure has been acted on. Registering again replaces.
    """
    _outcome_handlers[event_type] = handler


def webhook_sign(secret: str, body: bytes, timestamp: int) -> str:
    """Return the signature header value for a body sent at a unix timestamp."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},{SIGNATURE_VERSION}={digest}"


def webhook_verify(
    secret: str,
    header: str,
    body: bytes,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    *,
    now: float | None = None,
) -> bool:
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
    return json.dumps(
        envelope, ensure_ascii=False, sort_keys=True, separators=(",", ":"), cls=DjangoJSONEncoder
    ).encode()


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


def webhook_deliveries_create(
    *, events: Sequence[tuple[Partner, str, dict]], now: datetime | None = None
) -> list[WebhookDelivery]:
    """Write deliveries for (partner, event type, payload) triples and queue them once the transaction commits.

    Partners without a webhook URL get nothing. Call this inside the transaction that makes
    the change being reported, so the event exists exactly when the change does.
    """
    now = now or timezone.now()
    rows = [
        WebhookDelivery(partner=partner, event_type=event_type, payload=payload, next_attempt_at=now)
        for partner, event_type, payload in events
        if partner.webhook_url and partner.is_active
    ]
    if not rows:
        return []
    created = WebhookDelivery.objects.bulk_create(rows)
    _queue_on_commit([delivery.pk for delivery in created])
    return created


def _deliver_later(delivery_id: int, attempt: int) -> None:
    signature(DELIVER_TASK, args=(delivery_id, attempt)).delay()


def _queue_on_commit(delivery_ids: list[int]) -> None:
    def queue():
        for pk in delivery_ids:
            _deliver_later(pk, 1)

    # robust: a broker that is down must not fail the change that was just committed; the
    # sweep queues these deliveries later.
    transaction.on_commit(queue, robust=True)


@dataclass
class _Response:
    status_code: int | None
    error: str
    transient: bool
    retry_after: float | None = None


def _post(url: str, body: bytes, headers: dict[str, str]) -> _Response:
    """Check the URL, POST the body to the address that check vetted, and classify what happened.

    Never raises for a refused URL, a name that does not resolve, network or HTTP trouble.
    """
    try:
        destination = webhook_destination(url)
    except OutboundURLRefused as refused:
        if refused.transient:
            return _Response(None, f"cannot connect: {refused.message}", transient=True)
        return _Response(None, f"refused: {refused.message}", transient=False)
    connection = pinned_connection(destination, timeout=TIMEOUT_SECONDS)
    try:
        try:
            connection.connect()
        except OSError as error:
            return _Response(None, f"cannot connect: {_describe(error)}", transient=True)
        connection.request("POST", destination.target, body=body, headers=headers)
        response = connection.getresponse()
        status = response.status
        if 200 <= status < 300:
            return _Response(status, "", transient=False)
        reason = _printable(response.reason or "", REASON_CHARS)
        if 300 <= status < 400:
            location = _printable(response.getheader("Location") or "", RESPONSE_EXCERPT_CHARS)
            return _Response(
                status,
                f"HTTP {status} {reason}: redirect not followed (to {location or 'nowhere'}); register the final URL",
                transient=False,
            )
        excerpt = _printable(response.read(RESPONSE_READ_BYTES).decode("utf-8", "replace"), RESPONSE_EXCERPT_CHARS)
        transient = status == 429 or status >= 500
        return _Response(
            status,
            f"HTTP {status} {reason}: {excerpt}".strip().rstrip(":"),
            transient,
            _retry_after(response.getheader("Retry-After")) if transient else None,
        )
    except (http.client.HTTPException, OSError) as error:
        return _Response(None, _describe(error), transient=True)
    finally:
        connection.close()


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _printable(text: str, limit: int) -> str:
    """Return text with control and format characters as spaces, runs of spaces as one, cut to ``limit`` characters."""
    cleaned = "".join(" " if unicodedata.category(char)[0] in "CZ" else char for char in text)
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


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
        pk=delivery_id,
        status=WebhookDelivery.Status.PENDING,
        attempts=attempt - 1,
        attempt_limit__gte=attempt,
    ).update(attempts=attempt, next_attempt_at=now + timedelta(seconds=LEASE_SECONDS), updated_at=now)
    if not claimed:
        return AttemptResult(delivery_id, attempt, SKIPPED)
    delivery = WebhookDelivery.objects.select_related("partner").get(pk=delivery_id)
    partner = delivery.partner
    started = time.monotonic()
    if partner.webhook_url and partner.is_active:
        body = webhook_body(delivery)
        response = _post(
            partner.webhook_url,
            body,
            {
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": USER_AGENT,
                EVENT_ID_HEADER: str(delivery.event_id),
                EVENT_TYPE_HEADER: delivery.event_type,
                SIGNATURE_HEADER: webhook_sign(partner.webhook_secret, body, int(time.time())),
            },
        )
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
    _record(
        delivery_id=delivery_id,
        attempt=attempt,
        response=response,
        outcome=outcome,
        retry_in=retry_in,
        duration_ms=duration_ms,
    )
    if outcome != WebhookAttempt.Outcome.DELIVERED:
        logger.warning("webhook %s to %s, attempt %d: %s", delivery.event_id, partner.slug, attempt, response.error)
    return AttemptResult(delivery_id, attempt, outcome, response.status_code, retry_in)


@transaction.atomic
def _record(
    *, delivery_id: int, attempt: int, response: _Response, outcome: str, retry_in: float | None, duration_ms: int
) -> None:
    now = timezone.now()
    delivery = WebhookDelivery.objects.select_for_update().get(pk=delivery_id)
    WebhookAttempt.objects.create(
        delivery=delivery,
        number=attempt,
        attempted_at=now,
        status_code=response.status_code,
        error=response.error,
        duration_ms=duration_ms,
        outcome=outcome,
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
        if retry_in is None:  # the outcome is a retry only when there is a time to retry in
            raise ValueError("a retry needs retry_in")
        delivery.next_attempt_at = now + timedelta(seconds=retry_in)
    else:
        delivery.status, delivery.next_attempt_at = WebhookDelivery.Status.FAILED, None
    delivery.save(update_fields=["status", "delivered_at", "next_attempt_at", "last_error", "updated_at"])
    _settle(delivery)


def _settle(delivery: WebhookDelivery) -> None:
    """Finish what waited on a delivery's final outcome (deal grants are confirmed or compensated)."""
    handler = _outcome_handlers.get(delivery.event_type)
    if handler is None or delivery.status == WebhookDelivery.Status.PENDING:
        return
    handler(delivery=delivery)


def webhooks_requeue_due(*, now: datetime | None = None, limit: int = SWEEP_BATCH) -> int:
    """Queue the next attempt of deliveries whose message was lost or whose attempt never reported back.

    A delivery whose last allowed attempt never reported back is given up. Return how many
    deliveries were queued or given up. Safe to run twice: a duplicate attempt is skipped.
    """
    now = now or timezone.now()
    due = list(
        WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now - SWEEP_GRACE)
        .order_by("next_attempt_at")
        .values_list("pk", "attempts", "attempt_limit")[:limit]
    )
    if not due:
        return 0
    for pk, attempts, attempt_limit in due:
        if attempts >= attempt_limit:
            _give_up(delivery_id=pk, attempts=attempts)
        else:
            _deliver_later(pk, attempts + 1)
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

    Events with an outcome handler are left alone: their failure was already acted on (a
    failed deal grant event gave its grants back).
    """
    deliveries = list(
        WebhookDelivery.objects.select_for_update()
        .filter(pk__in=delivery_ids, status=WebhookDelivery.Status.FAILED)
        .exclude(event_type__in=list(_outcome_handlers))
    )
    now = timezone.now()
    for delivery in deliveries:
        delivery.status = WebhookDelivery.Status.PENDING
        delivery.attempt_limit = delivery.attempts + DEFAULT_MAX_ATTEMPTS
        delivery.next_attempt_at = now
    WebhookDelivery.objects.bulk_update(deliveries, ["status", "attempt_limit", "next_attempt_at"])
    for delivery in deliveries:
        transaction.on_commit(partial(_deliver_later, delivery.pk, delivery.attempts + 1), robust=True)
    return len(deliveries)
