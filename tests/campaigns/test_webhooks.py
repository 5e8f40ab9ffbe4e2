"""Partners hear about offers by signed webhooks that arrive once per event id, however often they are sent."""

import json
import os
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from celery.exceptions import Retry
from django.urls import reverse
from django.utils import timezone

from campaigns.models import Offer, Partner, Rule, StockItem, WebhookAttempt, WebhookDelivery
from campaigns.services import webhook_outbox
from campaigns.services.campaign_run import campaign_run
from campaigns.services.offers import offer_revoke
from campaigns.services.redemption import offer_redeem, offer_redemption_rollback
from campaigns.services.webhook_outbox import (
    webhook_attempt,
    webhook_backoff,
    webhook_deliveries_create,
    webhook_redeliver,
    webhook_sign,
    webhook_verify,
    webhooks_requeue_due,
)
from campaigns.tasks import deliver_webhook
from tests.campaigns.partner_endpoint import Reply
from tests.factories import (
    CampaignFactory,
    EndUserFactory,
    OfferFactory,
    PartnerFactory,
    RuleFactory,
    UserLinkFactory,
)

pytestmark = pytest.mark.django_db


def listening_partner(url: str, kind: str = Partner.Kind.CINEMA, **kwargs) -> Partner:
    return PartnerFactory.create(webhook_url=url, kind=kind, **kwargs)


def test_an_endpoint_failing_twice_then_succeeding_gets_the_event_once_by_id(
    endpoint, django_capture_on_commit_callbacks
):
    # given a cinema whose endpoint fails twice, then works, and an open offer it honours
    server = endpoint(Reply(500), Reply(503))
    cinema = listening_partner(server.url)
    offer = OfferFactory.create(partner=cinema, kind=Rule.OfferKind.MOVIE_TICKET)

    # when the offer is revoked (and the transaction commits)
    with django_capture_on_commit_callbacks(execute=True):
        offer_revoke(code=offer.code)

    # then three attempts carried one event id, so the partner can tell it got one event
    assert len(server.received) == 3
    assert len(set(server.event_ids())) == 1
    assert len({request.body for request in server.received}) == 1
    for request in server.received:
        assert webhook_verify(cinema.webhook_secret, request.headers["X-Crossmkt-Signature"], request.body)
        assert request.headers["X-Crossmkt-Event"] == "offer.revoked"
    event = json.loads(server.received[-1].body)
    assert event["id"] == server.event_ids()[0] and event["type"] == "offer.revoked"
    assert event["data"]["code"] == offer.code
    # and the delivery and every attempt are on record
    delivery = WebhookDelivery.objects.get(partner=cinema)
    assert str(delivery.event_id) == event["id"]
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("delivered", 3, None)
    attempts = list(delivery.attempt_log.order_by("number").values_list("number", "status_code", "outcome"))
    assert attempts == [(1, 500, "retry"), (2, 503, "retry"), (3, 200, "delivered")]


def test_a_tampered_body_an_old_timestamp_or_another_secret_fail_verification():
    body = b'{"id":"e1","type":"offer.revoked"}'
    now = int(time.time())
    header = webhook_sign("s3cret", body, now)

    assert webhook_verify("s3cret", header, body)
    assert not webhook_verify("s3cret", header, body.replace(b"e1", b"e2"))
    assert not webhook_verify("another", header, body)
    assert not webhook_verify("s3cret", webhook_sign("s3cret", body, now - 301), body)
    assert webhook_verify("s3cret", webhook_sign("s3cret", body, now - 299), body)
    assert not webhook_verify("s3cret", webhook_sign("s3cret", body, now + 301), body)
    assert not webhook_verify("s3cret", "", body)
    assert not webhook_verify("s3cret", f"t={now}", body)
    # a header may list several signatures (while a secret is being rotated); one match is enough
    rotated = f"t={now},v1={'0' * 64},v1={header.rpartition('=')[2]}"
    assert webhook_verify("s3cret", rotated, body)


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body():
    import hashlib
    import hmac

    body = '{"名":1}'.encode()
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert webhook_sign("k", body, 1700000000) == f"t=1700000000,v1={expected}"


def test_a_client_error_fails_at_once_without_retrying(endpoint, django_capture_on_commit_callbacks):
    server = endpoint(Reply(410))
    cinema = listening_partner(server.url)
    offer = OfferFactory.create(partner=cinema)

    with django_capture_on_commit_callbacks(execute=True):
        offer_revoke(code=offer.code)

    delivery = WebhookDelivery.objects.get(partner=cinema)
    assert len(server.received) == 1
    assert (delivery.status, delivery.attempts) == ("failed", 1)
    assert "HTTP 410" in delivery.last_error


def test_timeouts_and_429_are_retried(endpoint, monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setattr(webhook_outbox, "TIMEOUT_SECONDS", 0.2)
    server = endpoint(Reply(429), Reply(200, delay=1.0))
    cinema = listening_partner(server.url)
    offer = OfferFactory.create(partner=cinema)

    with django_capture_on_commit_callbacks(execute=True):
        offer_revoke(code=offer.code)

    attempts = list(WebhookAttempt.objects.order_by("number").values_list("status_code", "outcome", "error"))
    assert [(code, outcome) for code, outcome, _ in attempts] == [(429, "retry"), (None, "retry"), (200, "delivered")]
    assert "timed out" in attempts[1][2]


def test_an_unreachable_endpoint_is_tried_up_to_the_limit_then_given_up(endpoint, django_capture_on_commit_callbacks):
    server = endpoint()
    url = server.url
    server.close()  # nothing listens on that port any more
    cinema = listening_partner(url)
    offer = OfferFactory.create(partner=cinema)

    with django_capture_on_commit_callbacks(execute=True):
        offer_revoke(code=offer.code)

    delivery = WebhookDelivery.objects.get(partner=cinema)
    assert (delivery.status, delivery.attempts) == ("failed", delivery.attempt_limit)
    outcomes = list(delivery.attempt_log.order_by("number").values_list("outcome", flat=True))
    assert outcomes == ["retry"] * (delivery.attempt_limit - 1) + ["failed"]
    assert "cannot connect" in delivery.last_error


def test_back_off_grows_exponentially_with_jitter_and_a_cap():
    for attempt in range(1, 12):
        ceiling = min(webhook_outbox.BACKOFF_CAP_SECONDS, webhook_outbox.BACKOFF_BASE_SECONDS * 2 ** (attempt - 1))
        waits = [webhook_backoff(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= wait <= ceiling for wait in waits)
        assert len(set(waits)) > 1  # jittered


def test_retry_after_is_honoured_and_the_next_attempt_scheduled(endpoint):
    server = endpoint(Reply(429, headers={"Retry-After": "7"}))
    cinema = listening_partner(server.url)
    (delivery,) = webhook_deliveries_create(events=[(cinema, "offer.revoked", {"code": "X"})])

    result = webhook_attempt(delivery_id=delivery.pk, attempt=1)

    delivery.refresh_from_db()
    assert result.retry_in == 7
    assert delivery.next_attempt_at is not None
    assert timedelta(seconds=6) < delivery.next_attempt_at - timezone.now() <= timedelta(seconds=7)
    assert delivery.status == "pending" and delivery.attempts == 1


def test_a_duplicate_message_for_the_same_attempt_sends_nothing(endpoint):
    server = endpoint()
    cinema = listening_partner(server.url)
    (delivery,) = webhook_deliveries_create(events=[(cinema, "offer.revoked", {"code": "X"})])

    first = webhook_attempt(delivery_id=delivery.pk, attempt=1)
    again = webhook_attempt(delivery_id=delivery.pk, attempt=1)
    later = webhook_attempt(delivery_id=delivery.pk, attempt=2)

    assert (first.outcome, again.outcome, later.outcome) == ("delivered", "skipped", "skipped")
    assert len(server.received) == 1


def test_partners_without_a_webhook_url_get_no_deliveries(django_capture_on_commit_callbacks):
    quiet = PartnerFactory.create(webhook_url="")
    inactive = PartnerFactory.create(webhook_url="http://127.0.0.1:9/never", is_active=False)
    offers = [OfferFactory.create(partner=quiet), OfferFactory.create(partner=inactive)]

    with django_capture_on_commit_callbacks(execute=True):
        for offer in offers:
            offer_revoke(code=offer.code)

    assert not WebhookDelivery.objects.exists()


def test_redemption_and_its_rollback_are_told_to_the_partners(endpoint, django_capture_on_commit_callbacks):
    # given a coupon of a campaign whose owner listens
    server = endpoint()
    owner = listening_partner(server.url, kind=Partner.Kind.KNOWLEDGE)
    offer = OfferFactory.create(campaign=CampaignFactory.create(owner=owner), amount_off=Decimal("20.00"))

    # when the owner redeems it, repeats the request with the same key, then rolls it back
    with django_capture_on_commit_callbacks(execute=True):
        offer_redeem(code=offer.code, partner=owner, order_amount=Decimal("199.00"), idempotency_key="k1")
        offer_redeem(code=offer.code, partner=owner, order_amount=Decimal("199.00"), idempotency_key="k1")
        offer_redemption_rollback(code=offer.code, partner=owner)

    # then it heard of one redemption (the repeat is the same redemption) and one rollback
    events = [json.loads(request.body) for request in server.received]
    assert [event["type"] for event in events] == ["offer.redeemed", "offer.redemption_rolled_back"]
    assert events[0]["data"]["discount"] == "20.00" and events[0]["data"]["order_amount"] == "199.00"
    assert events[1]["data"]["status"] == "issued"
    assert events[1]["data"]["reverses"] == events[0]["data"]["ledger_entry"]


def test_issuance_sends_one_event_per_chunk_and_partner_listing_its_offers(
    endpoint, django_capture_on_commit_callbacks
):
    # given an owner and a video platform that both listen, and users who do or do not share data with partners
    owner_server, video_server = endpoint(), endpoint()
    owner = listening_partner(owner_server.url, kind=Partner.Kind.KNOWLEDGE)
    video = listening_partner(video_server.url, kind=Partner.Kind.VIDEO)
    sharing = [EndUserFactory.create(home_partner=owner, data_sharing_consent=True) for _ in range(3)]
    private = [EndUserFactory.create(home_partner=owner, data_sharing_consent=False) for _ in range(2)]
    # two of the sharing ones are linked to the video platform, under its ids for them
    for index, user in enumerate(sharing[:2]):
        UserLinkFactory.create(user=user, partner=video, external_id=f"video-{index}")
    campaign = CampaignFactory.create(owner=owner, holdout_share=Decimal("0"), budget=Decimal("100.00"))
    RuleFactory.create(
        campaign=campaign,
        condition={},
        offer_kind=Rule.OfferKind.FREE_VIEWING,
        benefit_partner=video,
        amount_off=None,
        days=7,
        cost=Decimal("5.00"),
    )
    expiry = timezone.now() + timedelta(days=60)
    StockItem.objects.bulk_create(
        StockItem(partner=video, kind="free_viewing", code=f"TRIAL-{n}", expires_at=expiry) for n in range(10)
    )

    # when the campaign runs
    with django_capture_on_commit_callbacks(execute=True):
        campaign_run(campaign=campaign)

    # then each partner got exactly one event listing all five offers
    offers = {offer.code: offer for offer in Offer.objects.select_related("user", "stock_item")}
    assert len(offers) == 5
    for server in (owner_server, video_server):
        assert len(server.received) == 1
        event = json.loads(server.received[0].body)
        assert event["type"] == "offers.issued" and event["data"]["campaign"] == campaign.slug
        listed = {item["code"]: item for item in event["data"]["offers"]}
        assert listed.keys() == offers.keys()
        assert {item["stock_code"] for item in listed.values()} == {o.stock_item.code for o in offers.values()}
    # and the video platform learns who a user is only if the user is linked to it with consent, by its own id
    video_items = json.loads(video_server.received[0].body)["data"]["offers"]
    shown = {item["user_id"] for item in video_items if item["user_id"]}
    assert shown == {"video-0", "video-1"}
    owner_items = json.loads(owner_server.received[0].body)["data"]["offers"]
    assert {item["user_id"] for item in owner_items} == {user.external_id for user in sharing + private}


def test_the_sweep_sends_deliveries_whose_message_was_lost_and_gives_up_exhausted_ones(endpoint):
    # given a delivery whose queued message never arrived, and one whose last attempt never reported back
    server = endpoint()
    cinema = listening_partner(server.url)
    long_ago = timezone.now() - timedelta(minutes=10)
    lost = WebhookDelivery.objects.create(
        partner=cinema, event_type="offer.revoked", payload={}, next_attempt_at=long_ago
    )
    stuck = WebhookDelivery.objects.create(
        partner=cinema, event_type="offer.revoked", payload={}, next_attempt_at=long_ago, attempts=3, attempt_limit=3
    )
    fresh = WebhookDelivery.objects.create(
        partner=cinema, event_type="offer.revoked", payload={}, next_attempt_at=timezone.now()
    )

    # when the sweep runs
    swept = webhooks_requeue_due()

    # then the lost one is delivered, the exhausted one given up, and the fresh one left to its own message
    assert swept == 2
    statuses = dict(WebhookDelivery.objects.values_list("pk", "status"))
    assert statuses == {lost.pk: "delivered", stuck.pk: "failed", fresh.pk: "pending"}
    assert server.event_ids() == [str(lost.event_id)]


def test_a_failed_event_can_be_sent_again_with_the_same_id(endpoint, django_capture_on_commit_callbacks):
    server = endpoint(Reply(404))
    cinema = listening_partner(server.url)
    offer = OfferFactory.create(partner=cinema)
    with django_capture_on_commit_callbacks(execute=True):
        offer_revoke(code=offer.code)
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed"

    # when the partner has fixed its endpoint and a manager sends the event again
    with django_capture_on_commit_callbacks(execute=True):
        assert webhook_redeliver(delivery_ids=[delivery.pk]) == 1

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("delivered", 2)
    assert server.event_ids() == [str(delivery.event_id)] * 2


def test_the_admin_shows_deliveries_with_their_attempts(endpoint, admin_client, django_capture_on_commit_callbacks):
    server = endpoint(Reply(502))
    cinema = listening_partner(server.url)
    offer = OfferFactory.create(partner=cinema)
    with django_capture_on_commit_callbacks(execute=True):
        offer_revoke(code=offer.code)
    delivery = WebhookDelivery.objects.get()

    listing = admin_client.get(reverse("admin:campaigns_webhookdelivery_changelist"), {"status__exact": "delivered"})
    page = admin_client.get(reverse("admin:campaigns_webhookdelivery_change", args=[delivery.pk]))
    attempts = admin_client.get(reverse("admin:campaigns_webhookattempt_changelist"), {"outcome__exact": "retry"})

    assert listing.status_code == page.status_code == attempts.status_code == 200
    assert str(delivery.event_id) in listing.content.decode()
    assert "502" in page.content.decode() and "502" in attempts.content.decode()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_delivers_and_retries_after_the_partners_retry_after(
    celery_worker_process, endpoint, report_line
):
    # given a cinema that asks to be retried in a second, then accepts
    server = endpoint(Reply(429, headers={"Retry-After": "1"}))
    cinema = listening_partner(server.url)
    offer = OfferFactory.create(partner=cinema)

    # when the offer is revoked and the delivery goes through the broker to the worker
    offer_revoke(code=offer.code)
    deadline = time.monotonic() + 60
    delivery = WebhookDelivery.objects.get(partner=cinema)
    while delivery.status == "pending" and time.monotonic() < deadline:
        time.sleep(0.1)
        delivery.refresh_from_db()

    # then the worker sent it twice under one id, signed, and recorded both attempts
    assert delivery.status == "delivered"
    assert server.event_ids() == [str(delivery.event_id)] * 2
    assert all(
        webhook_verify(cinema.webhook_secret, r.headers["X-Crossmkt-Signature"], r.body) for r in server.received
    )
    assert list(delivery.attempt_log.order_by("number").values_list("status_code", flat=True)) == [429, 200]
    report_line(f"webhook {delivery.event_id} delivered by a worker after a 429 (test pid {os.getpid()})")


def test_a_retry_further_off_than_the_brokers_visibility_timeout_is_left_to_the_sweep(endpoint):
    # given a partner that asks to be tried again in an hour; Redis would hand a message held that
    # long out again every visibility timeout (300 s), so the wait must not sit in a countdown
    server = endpoint(Reply(503, headers={"Retry-After": "3600"}), Reply(503, headers={"Retry-After": "30"}))
    cinema = listening_partner(server.url)
    (later,) = webhook_deliveries_create(events=[(cinema, "offer.revoked", {"code": "X"})])
    (soon,) = webhook_deliveries_create(events=[(cinema, "offer.revoked", {"code": "Y"})])

    # when a worker makes the first attempt of each (run as a worker runs it, not eagerly)
    result = deliver_webhook.run(later.pk, 1)
    with pytest.raises(Retry):
        deliver_webhook.run(soon.pk, 1)

    # then the hour's wait is recorded for the sweep, which sends it when it is due; the short one is a countdown
    assert result["outcome"] == "retry"
    later.refresh_from_db()
    assert later.next_attempt_at is not None
    due = later.next_attempt_at - timezone.now()
    assert timedelta(minutes=59) < due <= timedelta(hours=1)
    webhooks_requeue_due(now=timezone.now() + timedelta(minutes=59))
    later.refresh_from_db()
    assert later.attempts == 1
    webhooks_requeue_due(now=later.next_attempt_at + timedelta(minutes=3))
    later.refresh_from_db()
    assert later.attempts == 2
