"""Pipeline health: the figures operators watch, read from the database so that every process agrees.

One selector, ``pipeline_health()``, feeds the three views of the same figures: ``/metrics``
for Prometheus (``campaigns.presenters.pipeline_metrics``), the admin page *Pipeline health*
and ``manage.py pipeline_status`` (``campaigns.presenters.pipeline_status``). The numbers live
across server processes and Celery workers, so nothing is counted in memory: each figure is
a query at read time, and each query is bounded at a million users (plans in the comments):

* events accepted per partner: a grouped count of the events table, the one figure whose cost
  grows with the data. PostgreSQL reads it with a parallel sequential scan: 2.1-2.9 s for ten
  million events (a million users' worth) on the 2-core machine, measured with EXPLAIN ANALYZE.
  It is cached in the shared cache for ``PIPELINE_EVENTS_COUNT_SECONDS`` (default 60), so
  that any number of scrapes, admin views and commands cost one count a minute (about 4% of
  one core at that scale); ``events_counted_at`` says when it was taken. Every other figure
  together took 0.02 s there.
* offers issued per campaign: ``Campaign.issued_count``, kept by issuance itself (one row per
  campaign).
* deal grants per status: the ``(deal_id, status)`` index.
* webhook deliveries per status (the outbox), and per event type for those pending or failed:
  the ``(status, next_attempt_at)`` index; pending and failed rows are the outbox's backlog,
  not its history.
* per model: the active run, the last training (and what the quality gate decided) and the
  last scoring (``ModelRun.last_scored_at``, written by ``scores_write``): the model-run table,
  a few rows per retraining.

**The live path.** ``PipelineHealth.pending`` (users touched by accepted
events and not yet evaluated, and the age of the oldest) and ``PipelineHealth.offer_latency``
(the event-to-offer latency histogram) are rendered by all three views whenever they are set;
``_pending_backlog()`` reads ``analytics.PendingUser`` (a count and the ``first_touched_at``
index's minimum) and ``_offer_latency()`` the live offers' ``issued_at - touched_at`` (a partial
index of offers the live path issued).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import cast

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, DurationField, ExpressionWrapper, F, Min, Q, Sum
from django.utils import timezone

from analytics.models import BehaviorEvent, ModelRun, PendingUser

from ..models import Campaign, DealGrant, Offer, Partner, WebhookDelivery

# Upper bounds (seconds) of the event-to-offer latency histogram; the target is p99 <= 5 s.
LATENCY_BUCKETS_SECONDS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)

EVENTS_COUNT_CACHE_KEY = "pipeline-health:events-by-partner"


@dataclass(frozen=True)
class ModelHealth:
    """One model kind: its active run, its latest training and its latest scoring."""

    model: str
    active_version: int | None
    active_trained_at: datetime | None
    last_trained_version: int | None
    last_trained_at: datetime | None
    last_gate: Mapping = field(default_factory=dict)
    last_scored_version: int | None = None
    last_scored_at: datetime | None = None


@dataclass(frozen=True)
class PendingBacklog:
    """The live path's backlog: users touched by accepted events and not yet evaluated."""

    users: int
    oldest_age_seconds: float | None


@dataclass(frozen=True)
class LatencyHistogram:
    """Event-to-offer latency as a cumulative histogram in seconds.

    ``buckets`` maps each upper bound (ending with ``float("inf")``) to the number of offers
    issued within that many seconds of the event that made their rule true.
    """

    buckets: Mapping[float, int]
    count: int
    sum_seconds: float


@dataclass(frozen=True)
class PipelineHealth:
    """Every figure of the pipeline health views, read at ``measured_at``."""

    measured_at: datetime
    events_by_partner: Mapping[str, int]
    events_counted_at: datetime
    offers_issued_by_campaign: Mapping[str, int]
    grants_by_status: Mapping[str, int]
    webhooks_by_status: Mapping[str, int]
    webhooks_open_by_event: Mapping[tuple[str, str], int]
    oldest_pending_webhook_at: datetime | None
    models: tuple[ModelHealth, ...]
    pending: PendingBacklog | None = None
    offer_latency: LatencyHistogram | None = None

    @property
    def events_total(self) -> int:
        return sum(self.events_by_partner.values())

    @property
    def offers_issued_total(self) -> int:
        return sum(self.offers_issued_by_campaign.values())

    @property
    def active_model_runs(self) -> int:
        return sum(1 for model in self.models if model.active_version is not None)


def _events_by_partner() -> tuple[dict[str, int], datetime]:
    """Return the events stored per partner slug (every partner, 0 without events) and when they were counted."""
    cached = cache.get(EVENTS_COUNT_CACHE_KEY)
    if cached is not None:
        return cached
    # A parallel sequential scan at a million users (2-3 s); hence the cache.
    counts = dict(
        BehaviorEvent.objects.order_by().values("partner_id").annotate(n=Count("id")).values_list("partner_id", "n")
    )
    result = (
        {slug: counts.get(pk, 0) for pk, slug in Partner.objects.order_by("slug").values_list("pk", "slug")},
        timezone.now(),
    )
    cache.set(EVENTS_COUNT_CACHE_KEY, result, settings.PIPELINE_EVENTS_COUNT_SECONDS)
    return result


def _models() -> tuple[ModelHealth, ...]:
    """Return each model kind's active run, latest training and latest scoring (a few rows per retraining)."""
    runs = list(
        ModelRun.objects.order_by("model", "-version").values(
            "model", "version", "is_active", "created_at", "quality_gate", "last_scored_at"
        )
    )
    result = []
    for model in ModelRun.Model.values:
        own = [run for run in runs if run["model"] == model]
        active = next((run for run in own if run["is_active"]), None)
        latest = own[0] if own else None
        scored = max(
            (run for run in own if run["last_scored_at"] is not None),
            key=lambda run: cast(datetime, run["last_scored_at"]),
            default=None,
        )
        result.append(
            ModelHealth(
                model=model,
                active_version=active["version"] if active else None,
                active_trained_at=active["created_at"] if active else None,
                last_trained_version=latest["version"] if latest else None,
                last_trained_at=latest["created_at"] if latest else None,
                last_gate=latest["quality_gate"] if latest else {},
                last_scored_version=scored["version"] if scored else None,
                last_scored_at=scored["last_scored_at"] if scored else None,
            )
        )
    return tuple(result)


def _pending_backlog() -> PendingBacklog:
    """Return the live path's pending users and the age of the oldest (the ``first_touched_at`` index)."""
    backlog = PendingUser.objects.order_by().aggregate(users=Count("pk"), oldest=Min("first_touched_at"))
    oldest = backlog["oldest"]
    age = (timezone.now() - oldest).total_seconds() if oldest is not None else None
    return PendingBacklog(users=backlog["users"], oldest_age_seconds=age)


def _offer_latency() -> LatencyHistogram:
    """Return the event-to-offer latency of every offer the live path issued, as a cumulative histogram.

    Offers of a run or a sweep have no ``touched_at`` and are not counted. The partial index on
    ``(touched_at, issued_at)`` of live offers makes this an index-only scan of those offers.
    """
    latency = ExpressionWrapper(F("issued_at") - F("touched_at"), output_field=DurationField())
    live = Offer.objects.order_by().filter(touched_at__isnull=False).annotate(latency=latency)
    figures = live.aggregate(
        count=Count("pk"),
        total=Sum("latency"),
        **{
            f"le_{index}": Count("pk", filter=Q(latency__lte=timedelta(seconds=bound)))
            for index, bound in enumerate(LATENCY_BUCKETS_SECONDS)
        },
    )
    buckets = {bound: figures[f"le_{index}"] for index, bound in enumerate(LATENCY_BUCKETS_SECONDS)}
    buckets[float("inf")] = figures["count"]
    total = figures["total"]
    return LatencyHistogram(
        buckets=buckets, count=figures["count"], sum_seconds=total.total_seconds() if total is not None else 0.0
    )


def pipeline_health() -> PipelineHealth:
    """Return the pipeline's figures as the database holds them now (events: as of ``events_counted_at``)."""
    events, counted_at = _events_by_partner()
    open_statuses = (WebhookDelivery.Status.PENDING, WebhookDelivery.Status.FAILED)
    webhooks = WebhookDelivery.objects.order_by()
    return PipelineHealth(
        measured_at=timezone.now(),
        events_by_partner=events,
        events_counted_at=counted_at,
        offers_issued_by_campaign=dict(Campaign.objects.order_by("slug").values_list("slug", "issued_count")),
        grants_by_status=dict.fromkeys(DealGrant.Status.values, 0)
        | dict(DealGrant.objects.order_by().values("status").annotate(n=Count("id")).values_list("status", "n")),
        webhooks_by_status=dict.fromkeys(WebhookDelivery.Status.values, 0)
        | dict(webhooks.values("status").annotate(n=Count("id")).values_list("status", "n")),
        webhooks_open_by_event={
            (event, status): n
            for event, status, n in webhooks.filter(status__in=open_statuses)
            .values("event_type", "status")
            .annotate(n=Count("id"))
            .values_list("event_type", "status", "n")
        },
        oldest_pending_webhook_at=webhooks.filter(status=WebhookDelivery.Status.PENDING).aggregate(
            oldest=Min("created_at")
        )["oldest"],
        models=_models(),
        pending=_pending_backlog(),
        offer_latency=_offer_latency(),
    )
