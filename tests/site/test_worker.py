"""A task makes a real round trip through the broker to a separate worker process."""

import os
from datetime import timedelta

import pytest
from django.utils import timezone

from campaigns.models import Offer
from campaigns.tasks import expire_offers
from tests.factories import OfferFactory

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_expire_offers_runs_on_a_real_worker(celery_worker_process, report_line):
    # given a due offer, committed so the worker process can see it
    past = timezone.now() - timedelta(days=20)
    offer = OfferFactory.create(issued_at=past, expires_at=past + timedelta(days=1))

    # when the task is sent through the broker
    result = expire_offers.delay().get(timeout=60)

    # then another process did the work, in our database
    assert result["worker_pid"] != os.getpid()
    assert result["expired"] == 1
    offer.refresh_from_db()
    assert offer.status == Offer.Status.EXPIRED
    report_line(
        f"task campaigns.tasks.expire_offers made a round trip through {os.environ['CELERY_BROKER_URL']} "
        f"to worker pid {result['worker_pid']} (test pid {os.getpid()})"
    )
