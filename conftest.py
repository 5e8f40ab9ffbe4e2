"""Root fixtures: service detection, a real Celery worker, and report headers saying what ran where."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parent
# Set by .ci/run: a test that would skip for a missing service fails instead.
REQUIRE_SERVICES = os.environ.get("CROSSMKT_REQUIRE_SERVICES") == "1"


def _broker_url() -> str:
    return os.environ.get("CELERY_BROKER_URL", "")


def pytest_report_header(config):
    engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    broker = _broker_url() or "none (tasks run eagerly)"
    return [f"crossmkt: database={engine} broker={broker} require_services={REQUIRE_SERVICES}"]


_SUMMARY_LINES: list[str] = []


def pytest_runtest_logreport(report):
    # Lines travel with the test's report, so they reach the closing summary from xdist workers too.
    if report.when == "call":
        _SUMMARY_LINES.extend(value for key, value in report.user_properties if key == "crossmkt")


def pytest_terminal_summary(terminalreporter):
    if _SUMMARY_LINES:
        terminalreporter.section("crossmkt services")
        for line in _SUMMARY_LINES:
            terminalreporter.write_line(line)


@pytest.fixture
def report_line(request):
    """Return a function that adds a line to the run's closing summary (what ran where)."""
    return lambda line: request.node.user_properties.append(("crossmkt", line))


class WorkerProcess:
    """A running Celery worker: its main process (leading a process group of its own) and the queue it consumes."""

    def __init__(self, process: subprocess.Popen, queue: str, log_path: Path):
        self.process = process
        self.queue = queue
        self.log_path = log_path

    @property
    def name(self) -> str:
        return f"{self.queue}@{os.uname().nodename}"

    def pool_pids(self) -> list[int]:
        """Return the pids of the worker's pool processes (its children)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()] if children.exists() else []

    def kill_whole(self) -> list[int]:
        """SIGKILL the worker's whole process group (main process and pool), as a crash or the OOM killer would."""
        pids = [self.process.pid, *self.pool_pids()]
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        return pids

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)


def worker_database_url() -> str:
    """Return a DATABASE_URL for the test database, so a worker process works in the test's data."""
    from django.db import connection

    db = connection.settings_dict
    host, port = db["HOST"] or "127.0.0.1", db["PORT"] or 5432
    return f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{host}:{port}/{db['NAME']}"


def start_celery_worker(queue: str, *, log_name: str, concurrency: int = 4, env: dict | None = None) -> WorkerProcess:
    """Start a Celery worker on the test database consuming ``queue``, and return once it answers a ping.

    The worker leads a new process group, so a test can kill it whole. ``env`` adds to the
    worker's environment (a test that shortens a setting says so where it passes it).
    """
    from crossmkt_site.celery import app

    log_path = ROOT / "test-artifacts" / log_name
    log_path.parent.mkdir(exist_ok=True)
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "crossmkt_site",
                "worker",
                "--loglevel=INFO",
                f"--concurrency={concurrency}",
                "--pool=prefork",
                "--without-gossip",
                "--without-mingle",
                "-Q",
                queue,
                "-n",
                f"{queue}@%h",
            ],
            cwd=ROOT,
            env={
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "crossmkt_site.settings.local",
                "DATABASE_URL": worker_database_url(),
                "CELERY_BROKER_URL": _broker_url(),
                "CELERY_TASK_DEFAULT_QUEUE": queue,
                "DEBUG": "false",
                # The scripted partner endpoints listen on 127.0.0.1, where webhooks may not go by default.
                "WEBHOOK_ALLOW_HTTP": "true",
                "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
                **(env or {}),
            },
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = WorkerProcess(process, queue, log_path)
    deadline = time.monotonic() + 60
    while not app.control.inspect(destination=[worker.name], timeout=1).ping():
        if process.poll() is not None or time.monotonic() > deadline:
            worker.stop()
            pytest.fail(f"the Celery worker did not start; see {log_path}")
    return worker


def skip_or_fail(reason: str):
    """Skip for a missing service, or fail when CI requires every service."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service missing: {reason}")
    pytest.skip(reason)


@pytest.fixture
def require_postgres(db):
    from django.db import connection

    if connection.vendor != "postgresql":
        skip_or_fail("needs PostgreSQL: run with DATABASE_URL=postgres://postgres@127.0.0.1:5432/crossmkt")


@pytest.fixture(autouse=True)
def _mark_requirements(request):
    if request.node.get_closest_marker("postgres"):
        request.getfixturevalue("require_postgres")


@pytest.fixture
def celery_worker_process(_celery_worker_session):
    """Send this test's tasks to the real worker (not eagerly); other tests keep running tasks in process."""
    from crossmkt_site.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = False
    try:
        yield _celery_worker_session
    finally:
        app.conf.task_always_eager = previous


@pytest.fixture(scope="session")
def _celery_worker_session(django_db_setup, django_db_blocker):
    """Start a real Celery worker (four pool processes) on the test database, once per test process."""
    require_worker_services()
    worker = start_celery_worker(settings.CELERY_TASK_DEFAULT_QUEUE, log_name="celery-worker.log")
    try:
        yield worker
    finally:
        worker.stop()


def require_worker_services() -> None:
    """Skip (or fail in CI) unless Redis is the broker and the test database is PostgreSQL."""
    from django.db import connection

    if not _broker_url().startswith("redis://"):
        skip_or_fail("needs Redis and a worker: run with CELERY_BROKER_URL=redis://127.0.0.1:6379/15")
    if connection.vendor != "postgresql":
        skip_or_fail("the worker tests share the test database with a worker process, which needs PostgreSQL")
