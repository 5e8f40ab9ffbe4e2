"""Celery tasks of the campaigns app; each takes JSON-safe arguments and is safe to run twice."""

import os

from celery import shared_task
from django.db import OperationalError

from .services.campaign_run import campaign_issue_chunk
from .services.offers import offer_expire_due


@shared_task(name="campaigns.tasks.expire_offers", acks_late=True)
def expire_offers() -> dict:
    """Expire every open offer past its date (scheduled by beat); report which process did it."""
    return {"expired": offer_expire_due(), "worker_pid": os.getpid()}


@shared_task(
    name="campaigns.tasks.issue_campaign_chunk", acks_late=True, reject_on_worker_lost=True,
    autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5,
)
def issue_campaign_chunk(campaign_id: int, low: int, high: int) -> dict:
    """Assign and issue one range of user ids of a campaign; a retry issues nothing twice."""
    result = campaign_issue_chunk(campaign_id=campaign_id, id_range=(low, high)).as_dict()
    result["worker_pid"] = os.getpid()
    return result
