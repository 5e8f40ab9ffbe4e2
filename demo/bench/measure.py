"""What every benchmark stage shares: its result row, peak memory, PostgreSQL only, limit tables, a gunicorn server."""

import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import connection

from crossmkt_site.errors import ApplicationError

ROOT = Path(settings.BASE_DIR)
NAN = float("nan")


@dataclass
class StageResult:
    """One stage: throughput of the product, the naive baseline and the limit, the target and whether it is met.

    ``met`` is None where the stage has no target (it is only reported). ``note`` carries
    what the three numbers do not say (a latency, a model's training rows).
    """

    stage: str
    unit: str
    items: int
    product: float
    baseline: float
    limit: float
    target: str
    peak_memory_mb: float
    seconds: float = NAN
    met: bool | None = None
    note: str = ""

    @property
    def of_limit(self) -> float:
        return self.product / self.limit if self.limit else NAN

    @property
    def over_baseline(self) -> float:
        return self.product / self.baseline if self.baseline else NAN


def peak_memory_mb() -> float:
    """The largest resident size of this process and of any child it has waited for (a gunicorn server, say)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def require_postgresql() -> None:
    if connection.vendor != "postgresql":
        raise ApplicationError("the benchmark runs on PostgreSQL: set DATABASE_URL=postgres://…")


@contextmanager
def table_like(source: str) -> Iterator[str]:
    """Yield the name of a new, empty, ordinary table shaped like ``source``: columns, indexes, constraints and
    foreign keys; dropped afterwards.

    The limits write into it: the same rows, as durably (WAL-logged, not a temporary table)
    and under the same integrity checks as the product, with no framework in between.
    """
    name = f"bench_limit_{source}"[:63]
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {name}")
        cursor.execute(f"CREATE TABLE {name} (LIKE {source} INCLUDING ALL)")
        cursor.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'f'",
            [source],
        )
        for (definition,) in cursor.fetchall():
            cursor.execute(f"ALTER TABLE {name} ADD {definition}")
    try:
        yield name
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {name}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(port: int) -> subprocess.Popen:
    """Start gunicorn with two workers on loopback against this database; return once it answers."""
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "crossmkt_site.settings.local",
        "DEBUG": "false",
        "DATABASE_URL": (
            f"postgres://{db['USER']}:{db['PASSWORD'] or ''}"
            f"@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        ),
        "API_RATE_PER_KEY": "1000000/minute",
        "CONN_MAX_AGE": "60",  # connections kept, as in production
        "CROSSMKT_URLCONF": "demo.bench.urls",
    }
    # The API's throttles count in the shared cache; served as in production, that is Redis (the broker's
    # server when none is named), not the database table a laptop falls back to.
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if not env.get("CACHE_URL") and broker.startswith("redis"):
        env["CACHE_URL"] = broker
        env["CACHE_KEY_PREFIX"] = "crossmkt-bench"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "crossmkt_site.wsgi",
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            "2",
            "--timeout",
            "300",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/deals/", timeout=2)
        except urllib.error.HTTPError:
            return server  # 401: up and answering
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise ApplicationError("gunicorn did not start for the benchmark")
