"""Celery tasks of the campaigns app; each takes JSON-safe arguments and is safe to run twice."""

import os

from celery import shared_task

from .services.offers import offer_expire_due


@shared_task(name="campaigns.tasks.expire_offers", acks_late=True)
def expire_offers() -> dict:
    """Expire every open offer past its date (scheduled by beat); report which process did it."""
    return {"expired": offer_expire_due(), "worker_pid": os.getpid()}
