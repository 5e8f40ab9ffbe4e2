"""Budgets, offers and redemptions hold when many processes act at once on PostgreSQL."""

import multiprocessing
import random
from decimal import Decimal

import pytest
from django.db import connections

from campaigns.models import Campaign, Offer, RedemptionEntry
from crossmkt_site.errors import ApplicationError
from tests.factories import CampaignFactory, EndUserFactory, OfferFactory, PartnerFactory, RuleFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

PROCESSES = 6


def _in_child(target, args, queue):
    # A forked child must not share the parent's database socket.
    for connection in connections.all(initialized_only=True):
        connection.inc_thread_sharing()
        connection.close()
    try:
        queue.put(("ok", target(*args)))
    except ApplicationError as error:
        queue.put(("refused", error.code))
    except Exception as error:
        queue.put(("error", repr(error)))


def run_in_processes(target, args_list):
    """Run target(*args) in one forked process per args, released together; return their outcomes."""
    connections.close_all()
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    processes = [context.Process(target=_in_child, args=(target, args, queue)) for args in args_list]
    for process in processes:
        process.start()
    outcomes = [queue.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    errors = [detail for status, detail in outcomes if status == "error"]
    assert not errors, errors
    return outcomes


def issue_all_chunks(campaign_id, seed):
    from campaigns.services.campaign_planning import campaign_chunks
    from campaigns.services.campaign_run import campaign_issue_chunk

    chunks = campaign_chunks(chunk_users=25)
    random.Random(seed).shuffle(chunks)
    return sum(campaign_issue_chunk(campaign_id=campaign_id, id_range=chunk).issued for chunk in chunks)


def test_many_issuers_at_once_never_exceed_the_budget_or_double_issue():
    # given 300 reachable users, a rule that picks all of them at 7 CNY, and a budget for only 150 offers and a bit
    partner = PartnerFactory.create()
    users = [EndUserFactory.create(home_partner=partner) for _ in range(300)]
    campaign = CampaignFactory.create(owner=partner, budget=Decimal("1053.00"), holdout_share=Decimal("0.100"))
    RuleFactory.create(campaign=campaign, condition={}, amount_off=Decimal("7.00"), cost=Decimal("7.00"))

    # when six processes each run every chunk of the campaign, in different orders, at the same time
    outcomes = run_in_processes(issue_all_chunks, [(campaign.pk, seed) for seed in range(PROCESSES)])

    # then the budget holds to the fen, nobody has two offers, and the issuers together issued exactly what exists
    campaign.refresh_from_db()
    offers = Offer.objects.filter(campaign=campaign)
    assert campaign.spent == Decimal("7.00") * offers.count() <= campaign.budget
    assert offers.count() == 150  # 1053 // 7 = 150 offers fit
    assert offers.values("user").distinct().count() == offers.count()
    assert sum(issued for _, issued in outcomes) == offers.count()
    assert campaign.issued_count == offers.count()
    assert len(users) == 300


def redeem(code, partner_id, attempt):
    from campaigns.models import Partner
    from campaigns.services.redemption import offer_redeem

    entry = offer_redeem(
        code=code,
        partner=Partner.objects.get(pk=partner_id),
        order_amount=Decimal("199.00"),
        idempotency_key=f"attempt-{attempt}",
    )
    return entry.pk


def test_of_twenty_simultaneous_redemptions_exactly_one_succeeds():
    offer = OfferFactory.create(amount_off=Decimal("20.00"))
    partner = offer.campaign.owner
    assert partner is not None

    outcomes = run_in_processes(redeem, [(offer.code, partner.pk, attempt) for attempt in range(20)])

    assert sorted(status for status, _ in outcomes) == ["ok"] + ["refused"] * 19
    assert {detail for status, detail in outcomes if status == "refused"} == {"already_redeemed"}
    assert RedemptionEntry.objects.filter(offer=offer).count() == 1
    offer.refresh_from_db()
    assert offer.status == Offer.Status.REDEEMED


def test_the_same_idempotency_key_sent_twenty_times_at_once_redeems_once():
    offer = OfferFactory.create(amount_off=Decimal("20.00"))
    partner = offer.campaign.owner
    assert partner is not None

    outcomes = run_in_processes(redeem, [(offer.code, partner.pk, "same") for _ in range(20)])

    entry_ids = {detail for status, detail in outcomes if status == "ok"}
    assert [status for status, _ in outcomes] == ["ok"] * 20 and len(entry_ids) == 1
    assert RedemptionEntry.objects.filter(offer=offer).count() == 1
    assert Campaign.objects.get(pk=offer.campaign_id).spent == Decimal("0.00")
