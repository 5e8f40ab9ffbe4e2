"""Waiting on workers: a worker killed whole is replaced and the run completes; with no worker, a command says so."""

import os
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from analytics.models import EndUser, UserScore
from analytics.services.registry import model_run_save
from analytics.services.scoring import score_all
from analytics.services.training.segments import COUNT_FIELDS, SegmentScorer
from conftest import require_worker_services, skip_or_fail, start_celery_worker
from crossmkt_site.celery import app
from demo.models import DemoWorld
from tests.factories import CampaignFactory, PartnerFactory, RuleFactory

# The worker this file starts hands out a dead worker's tasks after 15 s instead of the
# production 300 s (tests/site/test_settings.py checks that default), so the test waits
# seconds, not minutes. Nothing else differs from production.
VISIBILITY_TIMEOUT_FOR_THIS_TEST = "15"
# Room for the sweep lock a killed worker may have held (CELERY_UNACKED_MUTEX_EXPIRE: 30 s here) to expire.
RECOVERY_WAIT_SECONDS = 150
SCORED = ("segments", "churn")


@pytest.fixture
def own_queue():
    """Send this test's tasks, not eagerly, to a queue of its own (no other test's worker listens there)."""
    queue = f"crossmkt-recovery-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    before = app.conf.task_always_eager, app.conf.task_default_queue
    app.conf.task_always_eager, app.conf.task_default_queue = False, queue
    try:
        yield queue
    finally:
        app.conf.task_always_eager, app.conf.task_default_queue = before
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(queue)


@pytest.fixture
def redis_broker():
    if not os.environ.get("CELERY_BROKER_URL", "").startswith("redis://"):
        skip_or_fail("needs Redis: run with CELERY_BROKER_URL=redis://127.0.0.1:6379/15")


def queued(queue: str) -> int:
    with app.connection_for_write() as conn:
        return conn.default_channel.client.llen(queue)


def running(pid: int) -> bool:
    """Tell whether a process runs (a killed one may linger as a zombie until it is reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def any_scorer() -> SegmentScorer:
    """Return a scorer that puts everyone in one segment: the test is about the workers, not the model."""
    width = len(COUNT_FIELDS)
    return SegmentScorer(
        feature_mean=np.zeros(width),
        feature_scale=np.ones(width),
        centres=np.zeros((1, width)),
        names_en=["everyone"],
        names_zh=["所有人"],
        data_start=datetime(2026, 1, 1, tzinfo=UTC),
    )


def in_thread(target, *args, **kwargs) -> tuple[threading.Thread, dict]:
    """Run ``target`` in a thread (with its own database connection); return the thread and its outcome."""
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = target(*args, **kwargs)
        except BaseException as error:  # handed to the test, which asserts on it
            outcome["error"] = error
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_whole_is_replaced_and_the_scoring_run_completes(own_queue, report_line):
    # given 3,000 users, two active models, and one worker (two pool processes) on this test's queue
    require_worker_services()
    partner = PartnerFactory.create()
    EndUser.objects.bulk_create(EndUser(external_id=f"w{i:05d}", home_partner=partner) for i in range(3000))
    for model in SCORED:
        model_run_save(model=model, params={}, metrics={}, n_train=0, artifact=any_scorer())
    env = {"CELERY_VISIBILITY_TIMEOUT": VISIBILITY_TIMEOUT_FOR_THIS_TEST, "CELERY_UNACKED_MUTEX_EXPIRE": "30"}
    first = start_celery_worker(own_queue, log_name="recovery-worker-1.log", concurrency=2, env=env)
    second = None
    try:
        # when scoring waits on the workers (120 tasks of 50 users) and the worker dies whole once scores appear
        started = time.monotonic()
        thread, outcome = in_thread(score_all, models=SCORED, wait=True, chunk_users=50)
        while not UserScore.objects.exists() and time.monotonic() - started < 60:
            time.sleep(0.01)
        killed = first.kill_whole()
        scored_when_killed = UserScore.objects.count()
        assert 0 < scored_when_killed < 2 * 3000, "the kill did not land in the middle of the run"
        deadline = time.monotonic() + 5  # a signal is delivered, not obeyed, by the time kill() returns
        while any(running(pid) for pid in killed) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(running(pid) for pid in killed), f"part of the worker survived: {killed}"
        # and a new worker starts
        second = start_celery_worker(own_queue, log_name="recovery-worker-2.log", concurrency=2, env=env)
        thread.join(timeout=RECOVERY_WAIT_SECONDS)

        # then the waiting run completes with one row per user per model
        assert not thread.is_alive(), (
            f"scoring still waiting {RECOVERY_WAIT_SECONDS} s after the restart ({UserScore.objects.count()} rows)"
        )
        assert "error" not in outcome, outcome.get("error")
        assert outcome["result"] == dict.fromkeys(SCORED, 3000)
        assert UserScore.objects.count() == 2 * 3000
        assert set(UserScore.objects.values_list("model", flat=True).distinct()) == set(SCORED)
        report_line(
            f"killed the whole worker (pids {killed}) after {scored_when_killed} of 6000 scores; "
            f"a new worker finished the run {time.monotonic() - started:.0f} s after it began"
        )
    finally:
        first.stop()
        if second:
            second.stop()


def command_in_time(*args, limit: float = 20) -> tuple[str, float]:
    """Run a management command in a thread; return the CommandError it ended with and how long it took."""
    started = time.monotonic()
    thread, outcome = in_thread(call_command, *args)
    thread.join(timeout=limit)
    assert not thread.is_alive(), f"{args[0]} was still waiting after {limit} s with no worker running"
    assert isinstance(outcome.get("error"), CommandError), outcome
    return outcome["error"].args[0], time.monotonic() - started


@pytest.mark.django_db(transaction=True)
def test_score_with_no_worker_says_how_to_start_one_and_queues_nothing(redis_broker, own_queue):
    # given an active model and a user, a broker, and no worker on the queue
    EndUser.objects.create(external_id="u1", home_partner=PartnerFactory.create())
    model_run_save(model="segments", params={}, metrics={}, n_train=0, artifact=any_scorer())

    # when
    message, seconds = command_in_time("score", "--wait", "--model", "segments", "--no-progress")

    # then
    assert message.startswith("no Celery worker answered on redis://")
    assert "make worker" in message and "celery -A crossmkt_site worker" in message
    assert seconds < 10
    assert queued(own_queue) == 0


@pytest.mark.django_db(transaction=True)
def test_run_campaign_with_no_worker_says_how_to_start_one(redis_broker, own_queue):
    # given a runnable campaign, a reachable user, and no worker
    partner = PartnerFactory.create()
    campaign = CampaignFactory.create(owner=partner, budget=None)
    RuleFactory.create(campaign=campaign, condition={"field": "age", "op": ">=", "value": 0})
    EndUser.objects.create(external_id="u1", home_partner=partner, age=30, marketing_consent=True)

    # when
    message, seconds = command_in_time("run_campaign", campaign.slug, "--no-progress")

    # then nothing was issued or queued
    assert message.startswith("no Celery worker answered on redis://") and "make worker" in message
    assert seconds < 10
    assert queued(own_queue) == 0
    assert not campaign.offers.exists()


@pytest.mark.django_db(transaction=True)
def test_demo_with_no_worker_says_so_before_loading_anything(redis_broker, own_queue):
    # when
    message, seconds = command_in_time("demo", "--users", "200", "--no-progress")

    # then it stopped at once, not after loading and training for minutes
    assert message.startswith("no Celery worker answered on redis://") and "make worker" in message
    assert seconds < 10
    assert not DemoWorld.objects.exists() and not EndUser.objects.exists()
