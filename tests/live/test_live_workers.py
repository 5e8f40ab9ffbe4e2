"""The live path with real workers, beat and PostgreSQL: offers arrive by themselves, under concurrency and faults."""

import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from analytics.models import BehaviorEvent, PendingUser, UserFeatures, UserScore
from analytics.services.ingest import events_ingest
from analytics.services.registry import model_run_save
from campaigns.models import Campaign, CampaignAssignment, Deal, DealGrant, Offer, WebhookDelivery
from campaigns.services.partners import partner_api_key_create
from conftest import require_worker_services, start_celery_worker
from crossmkt_site.celery import app
from tests.factories import CampaignFactory, CourseFactory, DealFactory, EndUserFactory, PartnerFactory, RuleFactory

from .processes import WORKER_APPLICATION_NAME, Beat, PrivateRedis, use_broker, worker_env
from .scorers import WatchPropensity
from .test_live_path import stage

# Seconds a test waits for the workers to reach an expected state; generous for a shared 2-core machine.
WAIT_SECONDS = 90
# Beat's safety-net drain in these tests runs every 2 s instead of the production 30 s
# (CROSSMKT_LIVE_DRAIN_SECONDS), and a dead worker's tasks come back after 15 s instead of 300 s,
# so the tests wait seconds, not minutes. Nothing else differs from production.
FAST = {
    "CROSSMKT_LIVE_DRAIN_SECONDS": "2",
    "CROSSMKT_DEALS_SECONDS": "3",
    "CELERY_VISIBILITY_TIMEOUT": "15",
    "CELERY_UNACKED_MUTEX_EXPIRE": "20",
}


@pytest.fixture
def own_queue():
    """Send this test's tasks, not eagerly, to a queue of its own (no other test's worker listens there)."""
    queue = f"crossmkt-live-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    before = app.conf.task_always_eager, app.conf.task_default_queue, app.conf.broker_write_url
    app.conf.task_always_eager, app.conf.task_default_queue = False, queue
    try:
        yield queue
    finally:
        use_broker(before[2])  # back from a private Redis, if the test used one
        app.conf.task_always_eager, app.conf.task_default_queue = before[0], before[1]
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(queue)


def wait_until(check: Callable[[], bool], what: str, seconds: float = WAIT_SECONDS) -> float:
    """Poll ``check`` until it holds; return how long it took, or fail saying what never happened."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > seconds:
            pytest.fail(f"{what}: not within {seconds} s")
        time.sleep(0.2)
    return time.monotonic() - started


class Partner:
    """A partner calling the API with its own key, as an integration does (a client per thread)."""

    def __init__(self, **fields):
        self.partner = PartnerFactory.create(**fields)
        _key, self.raw_key = partner_api_key_create(partner=self.partner, name="tests")

    def client(self) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {self.raw_key}")
        return client

    def post(self, items: list[dict], *, retry_for: float = 60) -> dict:
        """Post a batch; on a 5xx (a dropped database connection) try again, as a partner retries."""
        deadline = time.monotonic() + retry_for
        while True:
            try:
                response = self.client().post("/api/v1/events/", {"events": items}, format="json")
                if response.status_code == 200:
                    return response.json()
                problem = f"{response.status_code} {response.content[:200]!r}"
                if response.status_code < 500:
                    pytest.fail(f"batch refused: {problem}")
            except Exception as error:  # a connection terminated under the request
                problem = repr(error)
            connection.close()
            if time.monotonic() > deadline:
                pytest.fail(f"batch not accepted within {retry_for} s: {problem}")
            time.sleep(0.2)

    def offers_of(self, external_id: str) -> list[dict]:
        response = self.client().get(f"/api/v1/users/{external_id}/offers/")
        assert response.status_code == 200, response.content
        return response.json()["offers"]


def watches(external_id: str, numbers, *, kind: str = "film_watch", item: str = "F00042", amount: str = "0"):
    moment = timezone.now() - timedelta(hours=1)
    return [
        {
            "event_id": f"{external_id}-{kind}-{n}",
            "user_id": external_id,
            "kind": kind,
            "item_id": item,
            "amount": amount,
            "occurred_at": (moment + timedelta(seconds=n)).isoformat(),
        }
        for n in numbers
    ]


def watch_campaign(owner, **fields) -> Campaign:
    campaign = CampaignFactory.create(
        slug=fields.pop("slug", "watchers"), owner=owner, reach=Campaign.Reach.CONTINUOUS, **fields
    )
    RuleFactory.create(
        campaign=campaign,
        name="three films",
        condition={"field": "watching_count", "op": ">=", "value": 3},
        amount_off=Decimal("20.00"),
        cost=Decimal("20.00"),
    )
    return campaign


def in_threads(target, batches, threads: int) -> list:
    """Run ``target`` over ``batches`` from ``threads`` threads at once, each with its own database connection."""
    results: list = [None] * len(batches)
    errors: list[BaseException] = []
    lock = threading.Lock()
    todo = list(range(len(batches)))

    def work():
        try:
            while True:
                with lock:
                    if not todo:
                        return
                    index = todo.pop(0)
                results[index] = target(batches[index])
        except BaseException as error:  # handed to the test
            errors.append(error)
        finally:
            connection.close()

    pool = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=600)
    if errors:
        raise errors[0]
    return results


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_posted_events_bring_a_continuous_campaigns_offer_with_no_command_run(own_queue, report_line):
    # given a worker and beat on this test's queue, a continuous campaign for users who watched three films
    # (half of them held out), and users the partner registered with consent and no events yet
    require_worker_services()
    zhixue = Partner(slug="zhixue")
    campaign = watch_campaign(zhixue.partner, holdout_share=Decimal("0.500"))
    users = [EndUserFactory.create(external_id=f"new-{n}", home_partner=zhixue.partner) for n in range(8)]
    env = worker_env(**FAST)
    worker = start_celery_worker(own_queue, log_name="live-worker.log", concurrency=2, env=env)
    beat = Beat(own_queue, log_name="live-beat.log", env=env)
    try:
        # when the partner posts the events that make the rule true for them
        started = time.monotonic()
        first = zhixue.post([item for user in users for item in watches(user.external_id, range(3))])
        assert first["accepted"] == 24

        # then each treated user's offer is in GET users/{id}/offers/ within the wait; held-out users get
        # nothing and are recorded as holdout
        wait_until(
            lambda: CampaignAssignment.objects.filter(campaign=campaign).count() == len(users),
            "every user decided by the live path",
        )
        latency = time.monotonic() - started
        arms = dict(CampaignAssignment.objects.filter(campaign=campaign).values_list("user__external_id", "arm"))
        held = [user for user in users if arms[user.external_id] == CampaignAssignment.HOLDOUT]
        treated = [user for user in users if arms[user.external_id] == CampaignAssignment.TREATMENT]
        assert held and treated
        for user in treated:
            assert [offer["campaign"] for offer in zhixue.offers_of(user.external_id)] == ["watchers"]
        for user in held:
            assert zhixue.offers_of(user.external_id) == []
        assert all(offer.touched_at is not None for offer in Offer.objects.all())
        assert not PendingUser.objects.exists()

        # when the same batch is posted again
        again = zhixue.post([item for user in users for item in watches(user.external_id, range(3))])
        time.sleep(3)  # beat's drain tick (2 s) has had its chance

        # then nothing is stored and nothing more issued
        assert again["accepted"] == 0
        assert Offer.objects.count() == len(treated)
        assert Campaign.objects.get().issued_count == len(treated)

        # when a batch is stored but the message that would drain it is lost (stored by the service alone)
        late = EndUserFactory.create(external_id="late", home_partner=zhixue.partner)
        events_ingest(stage(zhixue.partner, "late", 3))
        assert PendingUser.objects.filter(user=late).exists()

        # then beat's safety-net drain decides for the user anyway
        waited = wait_until(
            lambda: CampaignAssignment.objects.filter(campaign=campaign, user=late).exists(),
            "beat's drain tick reaching a user whose drain was never queued",
        )
        assert not PendingUser.objects.exists()
        report_line(
            f"live path: {len(users)} users decided {latency:.1f} s after their batch was posted; "
            f"a batch without a queued drain was decided by beat's tick in {waited:.1f} s"
        )
    finally:
        beat.stop()
        worker.stop()


@pytest.mark.worker
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_for_overlapping_users_keep_the_budget_and_one_offer_per_slot(own_queue, report_line):
    # given 4 workers, a continuous campaign whose budget fits half of 100 users, and 200 batches of
    # single watches for overlapping users that take every user across the threshold
    require_worker_services()
    zhixue = Partner(slug="zhixue")
    users = [EndUserFactory.create(external_id=f"c{n:03d}", home_partner=zhixue.partner) for n in range(100)]
    campaign = watch_campaign(zhixue.partner, holdout_share=Decimal("0"), budget=Decimal("1000.00"))
    rng = random.Random(15)
    counts = dict.fromkeys((user.external_id for user in users), 0)
    batches = []
    for _ in range(200):
        batch = []
        for external_id in rng.sample(sorted(counts), 6):
            batch += watches(external_id, [counts[external_id]])
            counts[external_id] += 1
        batches.append(batch)
    assert min(counts.values()) >= 3
    env = worker_env(**FAST)
    workers = [
        start_celery_worker(own_queue, log_name=f"live-concurrency-{n}.log", concurrency=1, env=env) for n in range(4)
    ]
    try:
        # when the 200 batches are posted at once from 8 threads
        results = in_threads(zhixue.post, batches, threads=8)

        # then every batch was accepted whole
        assert sum(result["accepted"] for result in results) == sum(len(batch) for batch in batches)
        wait_until(lambda: not PendingUser.objects.exists(), "every touched user evaluated")
        wait_until(lambda: Campaign.objects.get().issued_count == 50, "the budget spent")

        # then the budget is spent exactly and never exceeded, and no user holds two offers of one slot
        campaign = Campaign.objects.get()
        assert campaign.spent == Decimal("1000.00") == campaign.budget
        assert Offer.objects.count() == 50
        slots = list(Offer.objects.values_list("user_id", "sequence"))
        assert len(set(slots)) == len(slots) and len({user for user, _ in slots}) == 50
        # and every accepted event is counted once: stored once, and once in its user's features
        stored = BehaviorEvent.objects.filter(partner=zhixue.partner).count()
        assert stored == sum(counts.values())
        features = dict(UserFeatures.objects.values_list("user__external_id", "watching_count"))
        assert features == counts
        # and the users the budget could not reach have no assignment, so a budget raise would still reach them
        assert CampaignAssignment.objects.filter(campaign=campaign).count() == 50
        report_line(f"live path: 200 concurrent batches, 4 workers: {stored} events, 50 offers, budget kept")
    finally:
        for worker in workers:
            worker.stop()


def settled(queue: str) -> bool:
    """Nothing pending, nothing queued, no deal left to evaluate: the workers have caught up."""
    with app.connection_for_write() as conn:
        queued = conn.default_channel.client.llen(queue)
    return not PendingUser.objects.exists() and queued == 0


def outcome() -> dict[str, set]:
    """What the live path and the deals produced, by ids that do not depend on when a row was written."""
    offers = set(
        Offer.objects.values_list("campaign__slug", "user__external_id", "rule__name", "sequence", "kind", "cost")
    )
    assignments = set(CampaignAssignment.objects.values_list("campaign__slug", "user__external_id", "arm"))
    grants = set(DealGrant.objects.values_list("deal__slug", "user__external_id", "trigger_event__event_id"))
    scores = set(UserScore.objects.values_list("user__external_id", "model", "run_id", "score"))
    webhook_events = set()
    for event_type, partner, payload in WebhookDelivery.objects.values_list("event_type", "partner__slug", "payload"):
        for item in payload.get("offers", payload.get("grants", [])):
            webhook_events.add((event_type, partner, item.get("user_id"), item.get("kind", "")))
    return {
        "offers": offers,
        "assignments": assignments,
        "grants": grants,
        "scores": scores,
        "webhook events": webhook_events,
    }


def forget_outcome() -> None:
    """Delete what a run produced (events and all that follows from them), keeping users, campaigns and models."""
    DealGrant.objects.all().delete()
    WebhookDelivery.objects.all().delete()
    Offer.objects.all().delete()
    CampaignAssignment.objects.all().delete()
    UserScore.objects.all().delete()
    UserFeatures.objects.all().delete()
    PendingUser.objects.all().delete()
    BehaviorEvent.objects.all().delete()
    Campaign.objects.update(spent=0, issued_count=0)
    Deal.objects.update(granted_count=0, granted_amount=0)


def terminate_worker_sessions() -> int:
    """pg_terminate_backend every database session of the workers and beat; return how many were ended."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s AND datname = current_database()",
            [WORKER_APPLICATION_NAME],
        )
        return cursor.fetchone()[0]


@pytest.mark.worker
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_after_worker_redis_and_database_faults_the_outcome_is_a_fault_free_runs(
    own_queue, endpoint, tmp_path, report_line
):
    # given a private Redis (restarted below; the shared one serves other runs), workers and beat on it, a
    # continuous campaign whose partner listens for webhooks, a deal on course purchases, a propensity
    # model, 60 users, and 48 batches of watches and purchases posted over some 20 seconds
    require_worker_services()
    redis = PrivateRedis(tmp_path)
    use_broker(redis.url)
    listener = endpoint()
    zhixue = Partner(slug="zhixue", webhook_url=listener.url)
    course = CourseFactory.create(partner=zhixue.partner, sku="ECO-101")
    deal = DealFactory.create(
        slug="buy-a-course",
        source_partner=zhixue.partner,
        status=Deal.Status.ACTIVE,
        starts_at=timezone.now() - timedelta(days=1),
    )
    deal.trigger_courses.set([course])
    watch_campaign(zhixue.partner, holdout_share=Decimal("0.200"), budget=Decimal("100000.00"))
    model_run_save(model="propensity", params={}, metrics={}, n_train=0, artifact=WatchPropensity())
    users = [EndUserFactory.create(external_id=f"f{n:03d}", home_partner=zhixue.partner) for n in range(60)]
    rng = random.Random(3)
    counts = dict.fromkeys((user.external_id for user in users), 0)
    batches = []
    for number in range(48):
        batch = []
        for external_id in rng.sample(sorted(counts), 5):
            batch += watches(external_id, [counts[external_id]])
            counts[external_id] += 1
        if number % 4 == 0:
            buyer = rng.choice(sorted(counts))
            batch += watches(buyer, [number], kind="course_purchase", item="ECO-101", amount="99.00")
        batches.append(batch)
    env = worker_env(**FAST, CELERY_BROKER_URL=redis.url, CELERY_RESULT_BACKEND=redis.url)
    workers = [start_celery_worker(own_queue, log_name="live-faults-1.log", concurrency=2, env=env)]
    beat = Beat(own_queue, log_name="live-faults-beat.log", env=env)
    try:
        replaced: list[str] = []

        def supervise() -> None:
            # As systemd or Kubernetes would: a worker process that exited is started again. (Celery's Redis
            # transport can die with "Unrecoverable error" when the broker goes away while it restores
            # unacknowledged messages; production runs workers under such a supervisor.)
            for index, worker in enumerate(workers):
                if worker.process.poll() is not None:
                    replaced.append(f"worker {worker.process.pid} exited ({worker.process.returncode})")
                    workers[index] = start_celery_worker(
                        own_queue, log_name=f"live-faults-{len(replaced) + 2}.log", concurrency=2, env=env
                    )

        def caught_up() -> bool:
            supervise()
            return settled(own_queue)

        def run(faults: dict[int, Callable[[], str]]) -> tuple[dict[str, set], list[str]]:
            done = []
            for number, batch in enumerate(batches):
                if number in faults:
                    done.append(faults[number]())
                zhixue.post(batch)
                supervise()
                time.sleep(0.4)
            wait_until(caught_up, "the workers caught up", seconds=180)
            time.sleep(4)  # a last tick of the deals and the drain: nothing may change any more
            wait_until(caught_up, "the workers caught up", seconds=60)
            return outcome(), done

        # when the batches are posted with no fault
        expected, _ = run({})
        assert expected["offers"] and expected["grants"] and expected["scores"] and expected["webhook events"]
        forget_outcome()

        def kill_worker() -> str:
            killed = workers[0].kill_whole()  # the supervisor below starts another
            return f"killed worker {killed} whole (kill -9 of its process group)"

        def restart_redis() -> str:
            redis.restart()
            use_broker(redis.url)  # this process (the API server's stand-in) drops its dead connections too
            return f"restarted Redis on port {redis.port}"

        terminated: list[int] = []

        def terminate_sessions() -> str:
            # For the next 6 s, while batches keep coming, every worker session is terminated every 0.3 s.
            def keep_terminating():
                try:
                    deadline = time.monotonic() + 6
                    while time.monotonic() < deadline:
                        terminated.append(terminate_worker_sessions())
                        time.sleep(0.3)
                finally:
                    connection.close()

            terminator = threading.Thread(target=keep_terminating, daemon=True)
            terminator.start()
            threads.append(terminator)
            return "terminated the workers' database sessions every 0.3 s for 6 s"

        threads: list[threading.Thread] = []

        # when the same batches are posted while a worker is killed whole, Redis restarts and the workers'
        # database sessions are terminated
        actual, faults = run({12: kill_worker, 24: restart_redis, 34: terminate_sessions})
        for thread in threads:
            thread.join(timeout=30)
        assert sum(terminated) > 0, "no worker session was terminated"

        # then nothing is pending and the outcome is the fault-free run's, by ids
        assert not PendingUser.objects.exists()
        for name in expected:
            assert actual[name] == expected[name], f"{name} differ after the faults"
        watched = dict(
            UserFeatures.objects.filter(watching_count__gt=0).values_list("user__external_id", "watching_count")
        )
        assert watched == {key: value for key, value in counts.items() if value}
        report_line(
            "live path faults: " + "; ".join(faults) + f" ({sum(terminated)} sessions ended); "
            f"restarted by the test's supervisor: {', '.join(replaced) or 'none'}; "
            "outcome equal to the fault-free run's"
        )
    finally:
        beat.stop()
        for worker in workers:
            worker.stop()
        redis.stop()
