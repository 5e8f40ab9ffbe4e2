"""Waiting on the workers ends: after the time limit, or when the workers have gone, saying what is pending."""

import time

import pytest
from celery.result import AsyncResult, GroupResult
from django.core.management import CommandError, call_command

from analytics.models import EndUser
from analytics.services.registry import model_run_save
from crossmkt_site import groups
from crossmkt_site.celery import app
from tests.factories import PartnerFactory


@pytest.fixture
def sent_to_absent_workers(monkeypatch):
    """Send tasks to a queue nobody takes them from, while a worker seems to answer (it never finishes anything)."""
    before = app.conf.task_always_eager, app.conf.task_default_queue
    app.conf.task_always_eager, app.conf.task_default_queue = False, "crossmkt-nobody-takes-these"
    monkeypatch.setattr(groups, "workers_consuming", lambda **kwargs: ["busy@host"])
    try:
        yield
    finally:
        app.conf.task_always_eager, app.conf.task_default_queue = before
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete("crossmkt-nobody-takes-these")


def never_finishing_group(n: int) -> GroupResult:
    return GroupResult("never-1", [AsyncResult(f"never-sent-{i}", app=app) for i in range(n)], app=app)


@pytest.mark.django_db
def test_score_gives_up_after_its_time_limit_naming_what_is_pending(sent_to_absent_workers):
    # given an active model and users whose scoring tasks no worker finishes
    partner = PartnerFactory.create()
    EndUser.objects.bulk_create(EndUser(external_id=f"u{i}", home_partner=partner) for i in range(3))
    model_run_save(model="segments", params={}, metrics={}, n_train=0, artifact=object())
    started = time.monotonic()

    # when
    with pytest.raises(CommandError) as error:
        call_command("score", "--wait", "--model", "segments", "--timeout", "1", "--no-progress")

    # then it stopped at the limit and named the chunk still pending, and where it stays
    assert time.monotonic() - started < 5
    message = error.value.args[0]
    assert message.startswith("gave up after 1 s waiting for the workers: 1 of 1 tasks still pending (segments users ")
    assert "they stay queued" in message and "--timeout" in message


def test_the_time_limit_defaults_to_the_setting(settings, sent_to_absent_workers):
    settings.WORKER_WAIT_TIMEOUT = 0.5
    with pytest.raises(groups.WaitTimedOut, match=r"2 of 2 tasks still pending \(a, b\)"):
        list(groups.results_as_they_finish(never_finishing_group(2), labels=["a", "b"]))


def test_waiting_stops_when_no_worker_has_answered_for_a_while(monkeypatch, sent_to_absent_workers):
    # given workers that stop answering, and (for the test) a one-second patience instead of a minute
    monkeypatch.setattr(groups, "workers_consuming", lambda **kwargs: [])
    monkeypatch.setattr(groups, "CHECK_IDLE_SECONDS", 0.2)
    monkeypatch.setattr(groups, "WORKERS_GONE_SECONDS", 1.0)
    labels = [f"chunk {i}" for i in range(7)]

    # when / then
    with pytest.raises(groups.WorkersUnavailable) as error:
        list(groups.results_as_they_finish(never_finishing_group(7), labels=labels, timeout=60))
    message = error.value.message
    assert message.startswith("no Celery worker has answered on ")
    assert "7 of 7 tasks still pending (chunk 0, chunk 1, chunk 2, chunk 3, chunk 4 and 2 more)" in message
    assert "make worker" in message
