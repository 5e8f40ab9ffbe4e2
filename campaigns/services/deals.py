"""Deals as sagas: events trigger grants, reserved under caps, then confirmed with the partner or compensated.

For each active deal, one SQL statement finds the users whose events inside the deal's
term trigger it (the first purchase of a course in the deal's set at the source partner,
the first membership started there, or the event at which their spend there within the
term first reaches the threshold), and inserts a reserved grant for each, earliest
trigger first, as many as the caps leave room for. The deal's row lock serialises reservers,
and its CHECK constraints refuse any write past ``max_grants`` or ``max_amount``; every grant
accrues the deal's settlement price, and ``max_amount`` caps the sum of those.

The target partner is then told with one ``deal.granted`` webhook per batch of grants:
delivered confirms them, failed for good compensates them (status ``compensated``, their
place and amount given back to the caps). A partner without a webhook URL confirms by
pulling its grants through the API, so its grants are confirmed at once. One grant per
(deal, user), enforced by the database, makes every run safe to repeat. A triggering event
that a campaign's membership grant of the deal is earned by too (the grant issued before it,
and taken up or still open) is not granted again, and such a grant is refused once the deal
granted the user for an event after its issue (``campaigns.services.redemption``): one
benefit for one purchase.

Only users who gave marketing consent and agreed to share data with partners are granted
anything: the target partner has to learn who they are.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from celery import signature
from django.db import connection, transaction
from django.db.models import Count, F, Sum
from django.utils import timezone

from analytics.models import BehaviorEvent, EndUser
from analytics.selectors import ids_known_to_partner
from crossmkt_site.money import ZERO

from ..models import Course, Deal, DealGrant, Offer, Rule, WebhookDelivery
from .webhook_outbox import EVENT_BATCH_SIZE, listening_partners, webhook_deliveries_create

# Triggers met by a single event of a kind (a course purchase also has to be of a course in the deal's set).
TRIGGER_EVENT_KINDS: dict[str, str] = {
    Deal.Trigger.COURSE_PURCHASE: BehaviorEvent.Kind.COURSE_PURCHASE,
    Deal.Trigger.MEMBERSHIP_START: BehaviorEvent.Kind.MEMBERSHIP_START,
}
# The task that evaluates the deals, queued by name: the task module builds on this one, not the other way round.
EVALUATE_DEALS_TASK = "campaigns.tasks.evaluate_deals"
# User ids per IN list: well under SQLite's limit on bound variables, and a short index scan on PostgreSQL.
USER_CHUNK = 5_000


@dataclass
class DealRun:
    """What one evaluation of one deal did."""

    deal: str
    reserved: int = 0
    confirmed: int = 0
    awaiting_partner: int = 0
    cap_reached: bool = False

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def deal_room(deal: Deal) -> int | None:
    """Return how many more grants the deal's caps allow, or None when nothing caps it."""
    room = None
    if deal.max_grants is not None:
        room = max(deal.max_grants - deal.granted_count, 0)
    if deal.max_amount is not None and deal.settlement_price > 0:
        by_money = max(int((deal.max_amount - deal.granted_amount) // deal.settlement_price), 0)
        room = by_money if room is None else min(room, by_money)
    return room


def _trigger_sql(deal: Deal, user_ids: Sequence[int] | None, now: datetime) -> tuple[str, list]:
    """Return SQL selecting (user_id, event_id, occurred_at) of each user's triggering event, with its parameters."""
    adapt = connection.ops.adapt_datetimefield_value
    events = BehaviorEvent._meta.db_table
    grants = DealGrant._meta.db_table
    # Users granted already are left out before their events are ranked or summed, so a re-run stays cheap.
    user_filter = f"AND NOT EXISTS (SELECT 1 FROM {grants} g WHERE g.deal_id = %s AND g.user_id = e.user_id)"
    user_params: list = [deal.pk]
    if user_ids is not None:
        user_filter += f" AND e.user_id IN ({', '.join(['%s'] * len(user_ids))})"
        user_params += list(user_ids)
    window = [deal.source_partner_id, adapt(deal.starts_at), adapt(deal.ends_at), adapt(now)]
    in_term = "e.partner_id = %s AND e.occurred_at >= %s AND e.occurred_at < %s AND e.occurred_at <= %s"
    if deal.trigger in TRIGGER_EVENT_KINDS:
        kind_filter = "e.kind = %s"
        kind_params: list[str | int] = [TRIGGER_EVENT_KINDS[deal.trigger]]
        if deal.trigger == Deal.Trigger.COURSE_PURCHASE:
            through = Deal.trigger_courses.through._meta.db_table
            kind_filter += (
                f" AND e.item_id IN (SELECT c.sku FROM {Course._meta.db_table} c"
                f" JOIN {through} t ON t.course_id = c.id WHERE t.deal_id = %s)"
            )
            kind_params.append(deal.pk)
        sql = f"""
            SELECT user_id, event_id, occurred_at FROM (
                SELECT e.user_id, e.id AS event_id, e.occurred_at,
                       ROW_NUMBER() OVER (PARTITION BY e.user_id ORDER BY e.occurred_at, e.id) AS n
                FROM {events} e
                WHERE {in_term} AND {kind_filter} {user_filter}
            ) firsts WHERE n = 1 AND {_campaign_gave("firsts")}"""
        return sql, [*window, *kind_params, *user_params, *_campaign_gave_params(deal, now)]
    # Sums in whole fen, so SQLite's floating point cannot put a user a hair short of the threshold.
    sql = f"""
        SELECT user_id, event_id, occurred_at FROM (
            SELECT user_id, event_id, occurred_at,
                   ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY occurred_at, event_id) AS n
            FROM (
                SELECT e.user_id, e.id AS event_id, e.occurred_at,
                       SUM(CAST(ROUND(e.amount * 100) AS BIGINT)) OVER (
                           PARTITION BY e.user_id ORDER BY e.occurred_at, e.id ROWS UNBOUNDED PRECEDING
                       ) AS spent_fen
                FROM {events} e
                WHERE {in_term} AND e.amount > 0 {user_filter}
            ) running WHERE spent_fen >= %s
        ) crossings WHERE n = 1 AND {_campaign_gave("crossings")}"""
    return sql, [*window, *user_params, int(deal.trigger_min_spend * 100), *_campaign_gave_params(deal, now)]


def _campaign_gave(alias: str) -> str:
    """Return SQL true when no campaign gives the user the deal's benefit for the triggering event ``alias``.

    A campaign's membership grant of the deal issued before the event is earned by it too: when the
    user took it up after the event, or still holds it open, the event has its benefit already,
    once. A grant that expired unused, or that was taken up before the event (earned by something
    earlier), leaves the event to the deal. While a grant stays open the deal waits for it; if the
    grant expires unused, the next evaluation grants the event (if the deal's caps still allow).
    """
    return f"""NOT EXISTS (
            SELECT 1 FROM {Offer._meta.db_table} o
            WHERE o.deal_id = %s AND o.user_id = {alias}.user_id AND o.kind = %s AND o.issued_at <= {alias}.occurred_at
              AND ((o.status = %s AND o.redeemed_at >= {alias}.occurred_at)
                   OR (o.status IN (%s, %s) AND o.expires_at > %s))
        )"""


def _campaign_gave_params(deal: Deal, now: datetime) -> list:
    return [
        deal.pk,
        Rule.OfferKind.MEMBERSHIP_GRANT,
        Offer.Status.REDEEMED,
        *Offer.OPEN_STATUSES,
        connection.ops.adapt_datetimefield_value(now),
    ]


def _reserve(deal: Deal, user_ids: Sequence[int] | None, room: int | None, now: datetime) -> int:
    """Insert reserved grants for triggered users who have none, earliest first, at most ``room``; return how many."""
    trigger, trigger_params = _trigger_sql(deal, user_ids, now)
    grants, users = DealGrant._meta.db_table, EndUser._meta.db_table
    limit = "LIMIT %s" if room is not None else ""
    sql = f"""
        INSERT INTO {grants} (deal_id, user_id, trigger_event_id, triggered_at, status, amount, reserved_at,
                              compensation_reason)
        SELECT %s, t.user_id, t.event_id, t.occurred_at, %s, %s, %s, ''
        FROM ({trigger}) t JOIN {users} u ON u.id = t.user_id
        WHERE u.marketing_consent AND u.data_sharing_consent AND u.erased_at IS NULL
        ORDER BY t.occurred_at, t.user_id
        {limit}
        ON CONFLICT (deal_id, user_id) DO NOTHING"""
    params = [
        deal.pk,
        DealGrant.Status.RESERVED,
        connection.ops.adapt_decimalfield_value(deal.settlement_price),
        connection.ops.adapt_datetimefield_value(now),
        *trigger_params,
        *([room] if room is not None else []),
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def deal_evaluate(*, deal_id: int, user_ids: Sequence[int] | None = None, now: datetime | None = None) -> DealRun:
    """Reserve grants for the users (all, or these) whose events trigger a deal, then confirm or notify the partner.

    Safe to run twice and from many workers at once: the deal's row lock serialises them,
    and a user who has a grant of the deal never gets another.
    """
    now = now or timezone.now()
    with transaction.atomic():
        deal = Deal.objects.select_for_update().get(pk=deal_id)
        run = DealRun(deal=deal.slug)
        if deal.status != Deal.Status.ACTIVE or deal.starts_at > now:
            return run
        room = deal_room(deal)
        if room == 0:
            run.cap_reached = True
            return run
        run.reserved = _reserve(deal, user_ids, room, now)
        if not run.reserved:
            return run
        Deal.objects.filter(pk=deal.pk).update(
            granted_count=F("granted_count") + run.reserved,
            granted_amount=F("granted_amount") + deal.settlement_price * run.reserved,
        )
        run.cap_reached = room is not None and run.reserved == room
        fresh = DealGrant.objects.filter(deal=deal, status=DealGrant.Status.RESERVED, delivery__isnull=True)
        partner = listening_partners([deal.target_partner_id]).get(deal.target_partner_id)
        if partner is None:
            # The partner pulls its grants through the API: being recorded is being confirmed.
            run.confirmed = fresh.update(status=DealGrant.Status.CONFIRMED, confirmed_at=now)
            return run
        rows = list(
            fresh.order_by("triggered_at", "pk").values_list("pk", "user_id", "user__external_id", "triggered_at")
        )
        # The target partner's own id for the person when it has one (its user, or its link), else the home
        # partner's: the person consented to data sharing, and the grant is how the target hears of them.
        known = ids_known_to_partner(partner_id=deal.target_partner_id, user_ids=[row[1] for row in rows])
        grants = [
            (pk, known.get(user_id, external_id), triggered_at) for pk, user_id, external_id, triggered_at in rows
        ]
        batches = [grants[start : start + EVENT_BATCH_SIZE] for start in range(0, len(grants), EVENT_BATCH_SIZE)]
        deliveries = webhook_deliveries_create(
            now=now,
            events=[(partner, WebhookDelivery.Event.DEAL_GRANTED, _grant_payload(deal, batch)) for batch in batches],
        )
        for delivery, batch in zip(deliveries, batches, strict=True):
            DealGrant.objects.filter(pk__in=[pk for pk, _, _ in batch]).update(delivery=delivery)
        run.awaiting_partner = len(grants)
    return run


def _grant_payload(deal: Deal, grants: list[tuple[int, str, datetime]]) -> dict:
    return {
        "deal": deal.slug,
        "benefit": deal.benefit,
        "benefit_days": deal.benefit_days,
        "benefit_value": str(deal.benefit_value),
        "settlement_price": str(deal.settlement_price),
        "grants": [
            {"grant": pk, "user_id": external_id, "triggered_at": triggered_at.isoformat()}
            for pk, external_id, triggered_at in grants
        ],
    }


def deals_evaluate(
    *,
    user_ids: Sequence[int] | None = None,
    user_external_ids: Sequence[str] | None = None,
    now: datetime | None = None,
) -> list[DealRun]:
    """Evaluate every active deal, over all users or only over these (by user id, or by any partner's id)."""
    now = now or timezone.now()
    active = Deal.objects.filter(status=Deal.Status.ACTIVE, starts_at__lte=now).order_by("pk")
    deal_ids = list(active.values_list("pk", flat=True))
    if not deal_ids:
        return []
    user_chunks: list[list[int] | None] = [None]
    if user_ids is not None:
        ids = sorted(set(user_ids))
        user_chunks = [ids[start : start + USER_CHUNK] for start in range(0, len(ids), USER_CHUNK)]
    elif user_external_ids is not None:
        external = sorted(set(user_external_ids))
        found = [
            pk
            for start in range(0, len(external), USER_CHUNK)
            for pk in EndUser.objects.filter(external_id__in=external[start : start + USER_CHUNK]).values_list(
                "pk", flat=True
            )
        ]
        user_chunks = [found[start : start + USER_CHUNK] for start in range(0, len(found), USER_CHUNK)]
    runs = []
    for deal_id in deal_ids:
        chunk_runs = [deal_evaluate(deal_id=deal_id, user_ids=chunk, now=now) for chunk in user_chunks]
        if chunk_runs:
            total = DealRun(deal=chunk_runs[0].deal, cap_reached=any(run.cap_reached for run in chunk_runs))
            for run in chunk_runs:
                total.reserved += run.reserved
                total.confirmed += run.confirmed
                total.awaiting_partner += run.awaiting_partner
            runs.append(total)
    return runs


def deals_evaluate_on_commit(*, user_ids: Sequence[int]) -> None:
    """Queue an evaluation of the active deals for these users once the current transaction commits."""
    task = signature(EVALUATE_DEALS_TASK, kwargs={"user_ids": [int(pk) for pk in user_ids]})
    # robust: new events are committed whatever the broker says; the beat schedule catches up.
    transaction.on_commit(task.delay, robust=True)


def deal_grants_settle(*, delivery: WebhookDelivery) -> int:
    """Confirm the grants a delivered webhook announced, or compensate them if it failed for good; return how many.

    Call inside the transaction that records the delivery's outcome: the outbox does, as the
    ``deal.granted`` outcome handler registered in ``CampaignsConfig.ready``.
    """
    now = timezone.now()
    pending = DealGrant.objects.filter(delivery=delivery, status=DealGrant.Status.RESERVED)
    if delivery.status == WebhookDelivery.Status.DELIVERED:
        return pending.update(status=DealGrant.Status.CONFIRMED, confirmed_at=now)
    settled = 0
    for deal_id in list(pending.values_list("deal_id", flat=True).distinct()):
        # The caps change only under the deal's row lock, as when grants are reserved.
        Deal.objects.select_for_update().get(pk=deal_id)
        of_deal = pending.filter(deal_id=deal_id)
        totals = of_deal.aggregate(count=Count("pk"), amount=Sum("amount"))
        of_deal.update(
            status=DealGrant.Status.COMPENSATED,
            compensated_at=now,
            compensation_reason=delivery.last_error or "the partner could not be told",
        )
        Deal.objects.filter(pk=deal_id).update(
            granted_count=F("granted_count") - totals["count"],
            granted_amount=F("granted_amount") - (totals["amount"] or ZERO),
        )
        settled += totals["count"]
    return settled
