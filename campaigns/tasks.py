"""Celery tasks of the campaigns app; each takes JSON-safe arguments and is safe to run twice.

Services queue these by name (``ISSUE_CHUNK_TASK`` and the like), so this module is the only
one of the two that imports the other.
"""

import os
from datetime import datetime

from celery import shared_task
from django.db import InterfaceError, OperationalError

from crossmkt_site.celery import countdown_limit

from .models.webhooks import DEFAULT_MAX_ATTEMPTS
from .services.campaign_run import ISSUE_CHUNK_TASK, campaign_issue_chunk
from .services.deals import EVALUATE_DEALS_TASK, deals_evaluate
from .services.live import LIVE_DRAIN_TASK, SWEEP_TASK, continuous_sweep, live_drain, live_drain_queue
from .services.offers import offer_expire_due
from .services.stock import stock_expire_due
from .services.training import RETRAIN_TASK, models_retrain
from .services.webhook_outbox import DELIVER_TASK, webhook_attempt, webhooks_requeue_due


@shared_task(name="campaigns.tasks.expire_offers", acks_late=True)
def expire_offers() -> dict:
    """Expire every open offer past its date, and pool items past theirs (scheduled by beat).

    Report which process did it.
    """
    return {"expired": offer_expire_due(), "stock_expired": stock_expire_due(), "worker_pid": os.getpid()}


@shared_task(
    name=ISSUE_CHUNK_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
)
def issue_campaign_chunk(
    campaign_id: int, low: int, high: int, as_of: str | None = None, optimisation: dict | None = None
) -> dict:
    """Assign and issue one range of user ids of a campaign; a retry issues nothing twice.

    ``as_of`` (ISO 8601) replays a run at a past moment, as the demo does for campaigns whose
    window has passed; production runs leave it empty and use the current time.
    ``optimisation`` (``{"run": model run id, "multiplier": float}``) is the plan an
    optimise-mode campaign's chunks choose with.
    """
    now = datetime.fromisoformat(as_of) if as_of else None
    result = campaign_issue_chunk(
        campaign_id=campaign_id, id_range=(low, high), now=now, optimisation=optimisation
    ).as_dict()
    result["worker_pid"] = os.getpid()
    return result


@shared_task(
    name=DELIVER_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=DEFAULT_MAX_ATTEMPTS,
)
def deliver_webhook(self, delivery_id: int, attempt: int = 1) -> dict:
    """Make one attempt at a webhook delivery; after a transient failure, retry later with the next attempt number."""
    result = webhook_attempt(delivery_id=delivery_id, attempt=attempt)
    # Run eagerly (no broker), there is no worker to come back later, so the retries follow at once.
    while result.retry_in is not None and self.request.is_eager:
        attempt += 1
        result = webhook_attempt(delivery_id=delivery_id, attempt=attempt)
    # A longer wait is left to requeue_webhooks, which sends the attempt when the stored next_attempt_at is due.
    if result.retry_in is not None and result.retry_in <= countdown_limit():
        raise self.retry(args=(delivery_id, attempt + 1), countdown=result.retry_in)
    return {**result.as_dict(), "worker_pid": os.getpid()}


@shared_task(name="campaigns.tasks.requeue_webhooks", acks_late=True)
def requeue_webhooks() -> dict:
    """Queue deliveries whose message was lost or whose attempt never reported back (scheduled by beat)."""
    return {"requeued": webhooks_requeue_due()}


@shared_task(
    name=EVALUATE_DEALS_TASK,
    acks_late=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
)
def evaluate_deals(user_ids: list[int] | None = None, user_external_ids: list[str] | None = None) -> dict:
    """Grant active deals to the users (all, or these) whose events trigger them; safe to run twice."""
    # user_external_ids: tasks queued before identities were per partner.
    runs = deals_evaluate(user_ids=user_ids, user_external_ids=user_external_ids)
    return {"deals": [run.as_dict() for run in runs], "worker_pid": os.getpid()}


@shared_task(
    name=LIVE_DRAIN_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    # A dropped database connection rolls the drain back (its users stay pending); try again soon.
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=1,
    retry_backoff_max=30,
    max_retries=8,
)
def drain_pending_users(self) -> dict:
    """Evaluate the users accepted batches left pending (queued on every batch, and by beat as a safety net)."""
    result = live_drain()
    if result.more and self.request.is_eager:
        # In process (no broker) there is no other worker and no beat: drain everything now.
        while result.more:
            more = live_drain()
            result.users, result.issued, result.more = result.users + more.users, result.issued + more.issued, more.more
    elif result.more:
        live_drain_queue()  # users are left: another drain (on any worker) goes on
    return {**result.as_dict(), "worker_pid": os.getpid()}


@shared_task(name=SWEEP_TASK, acks_late=True, autoretry_for=(OperationalError, InterfaceError), max_retries=3)
def sweep_continuous_campaigns() -> dict:
    """Queue a pass of every running continuous campaign over all users (scheduled by beat)."""
    return {"campaigns": continuous_sweep()}


@shared_task(name=RETRAIN_TASK, acks_late=True)
def retrain_models() -> dict:
    """Retrain every behaviour model as ``train --model all`` does (scheduled weekly by beat)."""
    return {"models": models_retrain()}
