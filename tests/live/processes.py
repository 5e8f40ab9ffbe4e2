"""Processes the live-path worker tests start: Celery beat on the test database, and a private Redis server."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kombu import pools

from conftest import ROOT, worker_database_url
from crossmkt_site.celery import app

# The name the workers' (and beat's) database sessions carry, so a test can terminate exactly those.
WORKER_APPLICATION_NAME = "crossmkt-live-worker"


def worker_env(**extra: str) -> dict[str, str]:
    """Environment for a worker or beat of these tests: the test database, sessions named for pg_terminate_backend."""
    return {"DATABASE_URL": f"{worker_database_url()}?application_name={WORKER_APPLICATION_NAME}", **extra}


class Beat:
    """Celery beat with the production scheduler (django-celery-beat's DatabaseScheduler) on the test database."""

    def __init__(self, queue: str, *, log_name: str, env: dict[str, str]):
        log_path = ROOT / "test-artifacts" / log_name
        log_path.parent.mkdir(exist_ok=True)
        with log_path.open("w") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "crossmkt_site",
                    "beat",
                    "--loglevel=INFO",
                    "--scheduler=django_celery_beat.schedulers:DatabaseScheduler",
                    "--max-interval=1",
                ],
                cwd=ROOT,
                env={
                    **os.environ,
                    "DJANGO_SETTINGS_MODULE": "crossmkt_site.settings.local",
                    "CELERY_TASK_DEFAULT_QUEUE": queue,
                    "DEBUG": "false",
                    **env,
                },
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.log_path = log_path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


def free_port(start: int = 6390) -> int:
    """Return the first port from ``start`` nothing listens on."""
    for port in range(start, start + 50):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError("no free port for a private Redis")


class PrivateRedis:
    """A redis-server of this test's own (the shared one serves other test runs), which the test may restart."""

    def __init__(self, log_dir: Path):
        self.port = free_port()
        self.log_path = log_dir / f"redis-{self.port}.log"
        self.process: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        pytest.fail(f"redis-server did not start on port {self.port}; see {self.log_path}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def restart(self, down_for: float = 1.0) -> None:
        """Stop the server (its queues are lost: no persistence), wait, and start it again on the same port."""
        self.stop()
        time.sleep(down_for)
        self.start()


def use_broker(url: str) -> None:
    """Point this process's Celery app at a broker (another, or the same restarted) with fresh connection pools."""
    pools.reset()  # kombu's pools are global and keyed by URL: a restarted server's would hand out dead connections
    app.conf.broker_url = app.conf.broker_write_url = app.conf.broker_read_url = url
    app._pool = None
    app.amqp._producer_pool = None
