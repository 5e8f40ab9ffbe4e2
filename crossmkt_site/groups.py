"""Waiting on the Celery workers: is any worker there, and a group's results as each task finishes, within a time limit.

Every command that waits on workers goes through here, so each of them fails the same way:
at once with how to start a worker when none answers, and after a time limit (or when the
workers have all gone for a minute) with what is still pending. Nothing here applies when
tasks run eagerly (no broker): the calling process is the worker.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from django.conf import settings
from kombu.utils.url import maybe_sanitize_url

from .celery import app
from .errors import ApplicationError

if TYPE_CHECKING:
    from celery.result import GroupResult

POLL_SECONDS = 0.1
# A worker's main process answers control messages even while its pool is busy; a healthy one replies in milliseconds.
PING_SECONDS = 2.0
# While results are pending and none has come in for this long, ask whether any worker is still there...
CHECK_IDLE_SECONDS = 15.0
# ...and give up only when none has answered for this long (a supervisor restarting a worker takes seconds).
WORKERS_GONE_SECONDS = 60.0
HOW_TO_START = "start one with `make worker` (or `celery -A crossmkt_site worker`)"
PENDING_SHOWN = 5


class WorkersUnavailable(ApplicationError):
    """No worker consumes the queue this process sends to."""

    def __init__(self, message: str):
        super().__init__(message, code="no_worker", status=503)


class WaitTimedOut(ApplicationError):
    """The workers did not finish a group within the time limit."""

    def __init__(self, message: str):
        super().__init__(message, code="wait_timed_out", status=504)


def tasks_run_eagerly() -> bool:
    return bool(app.conf.task_always_eager)


def broker_shown() -> str:
    """Return the broker URL with any password masked, for messages."""
    return maybe_sanitize_url(app.conf.broker_url)


def workers_consuming(*, timeout: float = PING_SECONDS) -> list[str]:
    """Return the names of the workers that answer within ``timeout`` and consume this process's task queue."""
    queue = app.conf.task_default_queue
    replies = app.control.inspect(timeout=timeout).active_queues() or {}
    return sorted(name for name, queues in replies.items() if any(q.get("name") == queue for q in queues or ()))


def workers_require(*, timeout: float = PING_SECONDS) -> list[str]:
    """Return the workers that will take this process's tasks, or raise saying how to start one.

    Call before queueing work that the caller will wait for, so nothing is left queued when
    no worker is there. Nothing to check when tasks run eagerly.
    """
    if tasks_run_eagerly():
        return []
    workers = workers_consuming(timeout=timeout)
    if not workers:
        raise WorkersUnavailable(
            f"no Celery worker answered on {broker_shown()} (queue {app.conf.task_default_queue}); {HOW_TO_START}"
        )
    return workers


def no_worker_note() -> str | None:
    """Return a one-line note when work was queued and no worker consumes the queue yet, else None."""
    if tasks_run_eagerly() or workers_consuming():
        return None
    return (
        f"note: no Celery worker answered on {broker_shown()} (queue {app.conf.task_default_queue}); "
        f"the tasks wait in the queue until one starts: {HOW_TO_START}"
    )


def wait_seconds_default() -> float:
    """Return the time limit for waiting on the workers (the WORKER_WAIT_TIMEOUT setting)."""
    return float(settings.WORKER_WAIT_TIMEOUT)


def _pending_text(pending: Sequence[tuple[int, object]], total: int, labels: Sequence[str] | None) -> str:
    shown = [labels[position] if labels else f"task {position + 1}" for position, _ in pending[:PENDING_SHOWN]]
    more = f" and {len(pending) - PENDING_SHOWN} more" if len(pending) > PENDING_SHOWN else ""
    return f"{len(pending)} of {total} tasks still pending ({', '.join(shown)}{more})"


def results_as_they_finish(
    job: GroupResult, *, labels: Sequence[str] | None = None, timeout: float | None = None
) -> Iterator[tuple[int, object]]:
    """Yield (position in the group, result) for each task as it finishes; a task's error is raised.

    Raise ``WaitTimedOut`` after ``timeout`` seconds (default: the WORKER_WAIT_TIMEOUT setting),
    and ``WorkersUnavailable`` when no worker has answered for ``WORKERS_GONE_SECONDS`` while
    results were pending; either message names what is still pending (``labels`` describe the
    tasks by position), which stays queued for the next worker. Every task is safe to run twice.
    """
    limit = wait_seconds_default() if timeout is None else timeout
    eager = tasks_run_eagerly()
    started = last_progress = last_seen = time.monotonic()
    pending = list(enumerate(job.results))
    total = len(pending)
    while pending:
        still = []
        for position, result in pending:
            if result.ready():
                last_progress = time.monotonic()
                yield position, result.get(propagate=True)
            else:
                still.append((position, result))
        pending = still
        if not pending:
            return
        now = time.monotonic()
        if now - started > limit:
            raise WaitTimedOut(
                f"gave up after {limit:.0f} s waiting for the workers: {_pending_text(pending, total, labels)}; "
                "they stay queued and run when a worker takes them; wait longer with --timeout "
                "(or WORKER_WAIT_TIMEOUT)"
            )
        if not eager and now - max(last_progress, last_seen) > CHECK_IDLE_SECONDS:
            if workers_consuming():
                last_seen = time.monotonic()
            elif now - max(last_progress, last_seen) > WORKERS_GONE_SECONDS:
                raise WorkersUnavailable(
                    f"no Celery worker has answered on {broker_shown()} for {WORKERS_GONE_SECONDS:.0f} s: "
                    f"{_pending_text(pending, total, labels)}; they stay queued; {HOW_TO_START}"
                )
        time.sleep(POLL_SECONDS)
