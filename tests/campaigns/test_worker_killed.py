"""A worker killed in the middle of a campaign run loses nothing and issues nothing twice."""

import os
import signal
import time
from decimal import Decimal

import numpy as np
import pytest
from django.utils import timezone

from analytics.models import EndUser
from campaigns.models import Offer
from campaigns.services.campaign_planning import campaign_chunks, campaign_rule_plans, load_chunk, plan_chunk
from campaigns.services.campaign_run import campaign_run
from tests.factories import CampaignFactory, PartnerFactory, RuleFactory

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

CHUNK = 100


def expected_offers(campaign):
    """Return the (user, rule, sequence) an uninterrupted run issues, computed without issuing."""
    plans = campaign_rule_plans(campaign)
    expected = set()
    for id_range in campaign_chunks(chunk_users=CHUNK):
        plan = plan_chunk(campaign, plans, load_chunk(plans, id_range, timezone.now()))
        expected |= {
            (int(u), plans[int(r)].rule.pk, int(s))
            for u, r, s in zip(plan.pick_users, plan.pick_rules, plan.pick_sequence, strict=True)
        }
    return expected


def test_killed_worker_then_rerun_gives_the_offers_of_an_uninterrupted_run(celery_worker_process, report_line):
    # given 6,000 reachable users and a campaign whose rules pick about two thirds of them
    partner = PartnerFactory.create()
    EndUser.objects.bulk_create(
        EndUser(external_id=f"k{i:06d}", home_partner=partner, age=18 + i % 50, marketing_consent=True)
        for i in range(6000)
    )
    campaign = CampaignFactory.create(owner=partner, budget=None, holdout_share=Decimal("0.200"))
    RuleFactory.create(
        campaign=campaign,
        name="older",
        priority=200,
        condition={"field": "age", "op": ">=", "value": 40},
        amount_off=Decimal("20.00"),
        cost=Decimal("20.00"),
    )
    RuleFactory.create(
        campaign=campaign,
        name="younger",
        priority=100,
        condition={"field": "age", "op": "<", "value": 30},
        amount_off=Decimal("10.00"),
        cost=Decimal("10.00"),
    )
    expected = expected_offers(campaign)

    # when the run is sent to the workers and their pool processes are killed once offers start to appear
    campaign_run(campaign=campaign, wait=False, chunk_users=CHUNK)
    deadline = time.monotonic() + 60
    while not Offer.objects.filter(campaign=campaign).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    killed = celery_worker_process.pool_pids()
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    issued_when_killed = Offer.objects.filter(campaign=campaign).count()
    assert killed and 0 < issued_when_killed < len(expected), "the kill did not land in the middle of the run"

    # and the run is repeated (on the same, recovered worker)
    campaign_run(campaign=campaign, wait=True, chunk_users=CHUNK)

    # then the offers are exactly those of an uninterrupted run, and the budget counts each once
    actual = set(Offer.objects.filter(campaign=campaign).values_list("user_id", "rule_id", "sequence"))
    assert actual == expected
    campaign.refresh_from_db()
    costs = np.array([20 if rule == campaign.rules.get(name="older").pk else 10 for _, rule, _ in actual])
    assert campaign.spent == Decimal(int(costs.sum())) and campaign.issued_count == len(expected)
    report_line(
        f"killed worker pool pids {killed} after {issued_when_killed} of {len(expected)} offers;"
        " rerun completed exactly"
    )
