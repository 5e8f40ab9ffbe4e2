"""Deals grant their benefit when events trigger them: once per user, within the caps, confirmed or compensated."""

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.utils import timezone

from campaigns.models import Deal, DealGrant, Partner, WebhookDelivery
from campaigns.services.deals import deal_evaluate, deals_evaluate
from campaigns.services.intake import events_accept
from tests.campaigns.partner_endpoint import Reply
from tests.campaigns.test_concurrency import run_in_processes
from tests.factories import BehaviorEventFactory, CourseFactory, DealFactory, EndUserFactory, PartnerFactory

pytestmark = pytest.mark.django_db

PURCHASE = "course_purchase"


@pytest.fixture
def zhixue():
    return PartnerFactory.create(slug="zhixue", kind=Partner.Kind.KNOWLEDGE)


@pytest.fixture
def yingshi():
    return PartnerFactory.create(slug="yingshi", kind=Partner.Kind.VIDEO)


@pytest.fixture
def econ_deal(zhixue, yingshi):
    """Buy the economics course at zhixue inside the term, get a month of yingshi membership; 8 CNY per grant."""
    course = CourseFactory.create(partner=zhixue, sku="ECON101")
    now = timezone.now()
    deal = DealFactory.create(
        slug="econ-month",
        source_partner=zhixue,
        target_partner=yingshi,
        status=Deal.Status.ACTIVE,
        starts_at=now - timedelta(days=10),
        ends_at=now + timedelta(days=20),
        settlement_price=Decimal("8.00"),
    )
    deal.trigger_courses.add(course)
    return deal


def member(partner, **kwargs):
    """A user who agreed to marketing and to sharing data with partners, unless told otherwise."""
    return EndUserFactory.create(
        home_partner=partner,
        marketing_consent=kwargs.pop("marketing_consent", True),
        data_sharing_consent=kwargs.pop("data_sharing_consent", True),
        **kwargs,
    )


def buy(user, partner, sku="ECON101", days_ago=1, amount="199.00"):
    return BehaviorEventFactory.create(
        user=user,
        partner=partner,
        kind=PURCHASE,
        item_id=sku,
        amount=Decimal(amount),
        occurred_at=timezone.now() - timedelta(days=days_ago),
    )


def test_buying_a_course_of_the_set_inside_the_term_grants_the_benefit_once(econ_deal, zhixue, yingshi):
    # given users who bought in and out of the deal's terms
    buyer = member(zhixue)
    first = buy(buyer, zhixue, days_ago=3)
    buy(buyer, zhixue, days_ago=1)  # a second purchase earns nothing more
    other_course = member(zhixue)
    buy(other_course, zhixue, sku="HIST200")
    too_early = member(zhixue)
    buy(too_early, zhixue, days_ago=11)  # before the deal started
    elsewhere = member(zhixue)
    buy(elsewhere, yingshi)  # the same SKU at another partner
    private = member(zhixue, data_sharing_consent=False)
    buy(private, zhixue)
    no_marketing = member(zhixue, marketing_consent=False)
    buy(no_marketing, zhixue)

    # when the deal is evaluated
    run = deal_evaluate(deal_id=econ_deal.pk)

    # then only the buyer is granted, triggered by the first purchase, and yingshi (who pulls) has it confirmed
    grant = DealGrant.objects.get()
    assert (grant.user, grant.trigger_event, grant.status, grant.amount) == (buyer, first, "confirmed", Decimal("8.00"))
    assert run.reserved == run.confirmed == 1
    econ_deal.refresh_from_db()
    assert (econ_deal.granted_count, econ_deal.granted_amount) == (1, Decimal("8.00"))


def test_spending_the_threshold_inside_the_term_grants_at_the_event_that_crosses_it(zhixue, yingshi):
    now = timezone.now()
    deal = DealFactory.create(
        source_partner=zhixue,
        target_partner=yingshi,
        status=Deal.Status.ACTIVE,
        trigger=Deal.Trigger.SPEND_AT_LEAST,
        trigger_min_spend=Decimal("100.00"),
        starts_at=now - timedelta(days=10),
        ends_at=now + timedelta(days=20),
    )
    crosses, short, exact, outside = (member(zhixue) for _ in range(4))

    def spend(user, amount, days_ago, partner=zhixue):
        return BehaviorEventFactory.create(
            user=user,
            partner=partner,
            kind="membership_start",
            amount=Decimal(amount),
            occurred_at=now - timedelta(days=days_ago),
        )

    spend(crosses, "60.00", 5)
    crossing = spend(crosses, "50.00", 4)
    spend(crosses, "70.00", 3)
    spend(short, "99.99", 2)
    for days_ago in (5, 4, 3):
        spend(exact, "33.33", days_ago)
    reaching = spend(exact, "0.01", 2)  # 99.99 + 0.01 is exactly 100, to the fen
    spend(outside, "90.00", 12)  # before the term
    spend(outside, "90.00", 2, partner=yingshi)  # at another partner

    deal_evaluate(deal_id=deal.pk)

    grants = dict(DealGrant.objects.values_list("user_id", "trigger_event_id"))
    assert grants == {crosses.pk: crossing.pk, exact.pk: reaching.pk}


def test_starting_a_membership_at_the_source_partner_triggers_a_membership_deal(zhixue, yingshi):
    now = timezone.now()
    deal = DealFactory.create(
        source_partner=zhixue,
        target_partner=yingshi,
        status=Deal.Status.ACTIVE,
        trigger=Deal.Trigger.MEMBERSHIP_START,
        starts_at=now - timedelta(days=10),
    )
    joined, cancelled_only = member(zhixue), member(zhixue)
    started = BehaviorEventFactory.create(
        user=joined,
        partner=zhixue,
        kind="membership_start",
        amount=Decimal("30.00"),
        occurred_at=now - timedelta(days=2),
    )
    BehaviorEventFactory.create(
        user=cancelled_only, partner=zhixue, kind="membership_cancel", occurred_at=now - timedelta(days=2)
    )

    deal_evaluate(deal_id=deal.pk)

    assert list(DealGrant.objects.values_list("user_id", "trigger_event_id")) == [(joined.pk, started.pk)]


def test_caps_take_the_earliest_triggers_first(econ_deal, zhixue):
    # given five buyers and room for three grants
    Deal.objects.filter(pk=econ_deal.pk).update(max_grants=3)
    buyers = [member(zhixue) for _ in range(5)]
    for days_ago, user in zip([5, 1, 4, 2, 3], buyers, strict=True):
        buy(user, zhixue, days_ago=days_ago)

    run = deal_evaluate(deal_id=econ_deal.pk)
    again = deal_evaluate(deal_id=econ_deal.pk)

    assert set(DealGrant.objects.values_list("user_id", flat=True)) == {buyers[0].pk, buyers[2].pk, buyers[4].pk}
    assert (run.reserved, run.cap_reached, again.reserved, again.cap_reached) == (3, True, 0, True)


def test_the_money_cap_counts_settlement_prices(econ_deal, zhixue):
    Deal.objects.filter(pk=econ_deal.pk).update(max_amount=Decimal("20.00"))
    for _ in range(4):
        buy(member(zhixue), zhixue)

    deal_evaluate(deal_id=econ_deal.pk)

    econ_deal.refresh_from_db()
    assert (econ_deal.granted_count, econ_deal.granted_amount) == (2, Decimal("16.00"))


def test_running_again_grants_nothing_new(econ_deal, zhixue, yingshi, endpoint, django_capture_on_commit_callbacks):
    server = endpoint()
    Partner.objects.filter(pk=yingshi.pk).update(webhook_url=server.url)
    for _ in range(3):
        buy(member(zhixue), zhixue)
    with django_capture_on_commit_callbacks(execute=True):
        deals_evaluate()
    grants = list(DealGrant.objects.order_by("pk").values_list("pk", "status"))

    with django_capture_on_commit_callbacks(execute=True):
        second = deals_evaluate()

    assert second[0].reserved == 0
    assert list(DealGrant.objects.order_by("pk").values_list("pk", "status")) == grants
    assert WebhookDelivery.objects.count() == 1 and len(server.received) == 1
    econ_deal.refresh_from_db()
    assert econ_deal.granted_count == 3


def test_grants_are_confirmed_when_the_partner_is_told(
    econ_deal, zhixue, yingshi, endpoint, django_capture_on_commit_callbacks
):
    # given yingshi listens, and its endpoint hiccups once
    server = endpoint(Reply(503))
    Partner.objects.filter(pk=yingshi.pk).update(webhook_url=server.url)
    buyers = [member(zhixue) for _ in range(2)]
    for user in buyers:
        buy(user, zhixue)

    # when the deal is evaluated: grants are reserved until the webhook is delivered
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        run = deal_evaluate(deal_id=econ_deal.pk)
        assert set(DealGrant.objects.values_list("status", flat=True)) == {"reserved"}
    assert callbacks and run.awaiting_partner == 2

    # then one event listed both grants, and both are confirmed
    event = json.loads(server.received[-1].body)
    assert event["type"] == "deal.granted" and event["data"]["deal"] == "econ-month"
    assert {grant["user_id"] for grant in event["data"]["grants"]} == {user.external_id for user in buyers}
    assert set(DealGrant.objects.values_list("status", flat=True)) == {"confirmed"}
    econ_deal.refresh_from_db()
    assert (econ_deal.granted_count, econ_deal.granted_amount) == (2, Decimal("16.00"))


def test_grants_are_compensated_when_the_partner_cannot_be_told(
    econ_deal,
    zhixue,
    yingshi,
    endpoint,
    django_capture_on_commit_callbacks,
):
    # given room for two grants and a partner endpoint that refuses the event
    server = endpoint(Reply(400))
    Partner.objects.filter(pk=yingshi.pk).update(webhook_url=server.url)
    Deal.objects.filter(pk=econ_deal.pk).update(max_grants=2)
    refused = [member(zhixue) for _ in range(2)]
    for user in refused:
        buy(user, zhixue, days_ago=3)

    # when the deal is evaluated and the webhook fails for good
    with django_capture_on_commit_callbacks(execute=True):
        deal_evaluate(deal_id=econ_deal.pk)

    # then the grants are compensated and their places given back
    assert list(DealGrant.objects.values_list("status", flat=True)) == ["compensated"] * 2
    grant = DealGrant.objects.first()
    assert grant is not None and "HTTP 400" in grant.compensation_reason
    econ_deal.refresh_from_db()
    assert (econ_deal.granted_count, econ_deal.granted_amount) == (0, Decimal("0.00"))

    # and once the partner is fixed, new buyers get those places; the compensated users are not granted again
    later = [member(zhixue) for _ in range(3)]
    for user in later:
        buy(user, zhixue, days_ago=1)
    with django_capture_on_commit_callbacks(execute=True):
        run = deal_evaluate(deal_id=econ_deal.pk)
    assert run.reserved == 2
    confirmed = set(DealGrant.objects.filter(status="confirmed").values_list("user_id", flat=True))
    assert len(confirmed) == 2 and confirmed <= {user.pk for user in later}
    econ_deal.refresh_from_db()
    assert econ_deal.granted_count == 2


def test_a_paused_deal_grants_nothing(econ_deal, zhixue):
    Deal.objects.filter(pk=econ_deal.pk).update(status=Deal.Status.PAUSED)
    buy(member(zhixue), zhixue)

    assert deals_evaluate() == []
    assert deal_evaluate(deal_id=econ_deal.pk).reserved == 0
    assert not DealGrant.objects.exists()


def test_ingested_events_trigger_the_deal_once_committed(econ_deal, zhixue, django_capture_on_commit_callbacks):
    # given a consenting member who is not yet granted
    buyer = member(zhixue, external_id="u-econ-1")
    purchase = {
        "event_id": "p-1",
        "user_id": "u-econ-1",
        "kind": PURCHASE,
        "item_id": "ECON101",
        "amount": "199.00",
        "occurred_at": (timezone.now() - timedelta(hours=1)).isoformat(),
    }

    # when zhixue sends the purchase through the API path
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        result = events_accept(partner=zhixue, items=[purchase])
        assert not DealGrant.objects.exists()  # nothing before the events are committed

    # then the evaluation queued on commit granted the deal
    assert result.imported == 1 and callbacks
    assert DealGrant.objects.get().user == buyer


def test_the_beat_schedule_evaluates_deals_and_sweeps_webhooks():
    tasks = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"campaigns.tasks.evaluate_deals", "campaigns.tasks.requeue_webhooks"} <= tasks


def evaluate(deal_id):
    from campaigns.services.deals import deal_evaluate

    return deal_evaluate(deal_id=deal_id).reserved


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_caps_hold_with_many_evaluators_at_once(zhixue, yingshi, report_line):
    # given 60 buyers, a deal with room for 25 grants and one whose money cap allows 7 (at 8 CNY each)
    now = timezone.now()
    course = CourseFactory.create(partner=zhixue, sku="ECON101")
    by_count = DealFactory.create(
        source_partner=zhixue,
        target_partner=yingshi,
        status=Deal.Status.ACTIVE,
        max_grants=25,
        starts_at=now - timedelta(days=10),
        settlement_price=Decimal("8.00"),
    )
    by_money = DealFactory.create(
        source_partner=zhixue,
        target_partner=yingshi,
        status=Deal.Status.ACTIVE,
        max_amount=Decimal("60.00"),
        starts_at=now - timedelta(days=10),
        settlement_price=Decimal("8.00"),
    )
    for deal in (by_count, by_money):
        deal.trigger_courses.add(course)
    for _ in range(60):
        buy(member(zhixue), zhixue)

    # when six processes evaluate both deals at the same time
    outcomes = run_in_processes(evaluate, [(deal.pk,) for deal in (by_count, by_money) for _ in range(3)])

    # then each cap holds exactly, nobody is granted twice, and the counters match the grants
    for deal, cap in ((by_count, 25), (by_money, 7)):
        deal.refresh_from_db()
        grants = DealGrant.objects.filter(deal=deal)
        assert grants.count() == grants.values("user").distinct().count() == deal.granted_count == cap
        assert deal.granted_amount == Decimal("8.00") * cap
    assert sum(reserved for _, reserved in outcomes) == 32
    report_line("deal caps held with six concurrent evaluators on PostgreSQL: 25 of 60 by count, 7 by money")
