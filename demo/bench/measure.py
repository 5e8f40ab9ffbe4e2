"""What every benchmark stage shares: its result row, peak memory, PostgreSQL only, limit tables, a gunicorn server."""

import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.backends.utils import CursorWrapper

from crossmkt_site.errors import ApplicationError

ROOT = Path(settings.BASE_DIR)
NAN = float("nan")


@dataclass
class StageResult:
    """One stage: throughput of the product, the naive baseline and the limits, the target and whether it is met.

    ``limit`` is the same-schema limit (the same rows into a table like ours, indexes and
    foreign keys included); ``physical`` the physical limit (the same rows into an
    insert-only table with neither). ``writes`` holds the seconds the same rows took to write
    one design choice at a time (keys of ``WRITE_VARIANTS``, plus ``"compute"`` where the
    limits also read and compute); ``write_rows`` how many rows that was. ``met`` is None
    where the stage has no target (it is only reported). ``note`` carries what the numbers
    do not say (a latency, a model's training rows).
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
    physical: float = NAN
    writes: dict[str, float] = field(default_factory=dict)
    write_rows: int = 0

    @property
    def of_limit(self) -> float:
        return self.product / self.limit if self.limit else NAN

    @property
    def of_physical(self) -> float:
        return self.product / self.physical if self.physical else NAN

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


@dataclass(frozen=True)
class TableShape:
    """How a limit's table differs from ours: which of our structures it carries, and whether it is WAL-logged."""

    indexes: bool = True  # primary key, unique constraints, secondary indexes (and the identity column)
    foreign_keys: bool = True
    checks: bool = True
    logged: bool = True
    built_after: bool = False  # loaded bare, then every structure of ours added in one pass each, same transaction


SAME_SCHEMA = TableShape()
PHYSICAL = TableShape(indexes=False, foreign_keys=False, checks=False)

# The write variants a stage may time, in the order of the decomposition table: label, table shape, and whether the
# rows go in as the product's upsert (COPY into a staging table, then INSERT … ON CONFLICT DO UPDATE).
WRITE_VARIANTS: dict[str, str] = {
    "unlogged": "bare, unlogged (no WAL)",
    "physical": "bare: the physical limit",
    "foreign_keys": "+ foreign keys only",
    "indexes": "+ indexes only",
    "same_schema": "+ both: the same-schema limit",
    "upsert_empty": "as upsert, into an empty table like ours",
    "upsert_full": "as upsert, over a previous version of every row",
    "built_after": "bare, then our indexes built and foreign keys validated once",
    "ours": "into our table as it is (rolled back)",
}
VARIANT_SHAPES: dict[str, TableShape] = {
    "unlogged": TableShape(indexes=False, foreign_keys=False, checks=False, logged=False),
    "physical": PHYSICAL,
    "foreign_keys": TableShape(indexes=False, foreign_keys=True, checks=False),
    "indexes": TableShape(indexes=True, foreign_keys=False, checks=False),
    "same_schema": SAME_SCHEMA,
    "upsert_empty": SAME_SCHEMA,
    "upsert_full": SAME_SCHEMA,
    "built_after": TableShape(indexes=False, foreign_keys=False, checks=False, built_after=True),
}


@contextmanager
def table_shaped(source: str, shape: TableShape = SAME_SCHEMA, *, columns: Sequence[str] = ()) -> Iterator[str]:
    """Yield the name of a new, empty, ordinary table with ``source``'s columns and the structures ``shape`` keeps;
    dropped afterwards.

    With every structure (``SAME_SCHEMA``) it is shaped like ours: columns, identity,
    indexes, constraints and foreign keys (deferred, as Django makes them, so checked at
    commit). Without indexes it keeps only ``columns`` (the ones the limit writes; none
    named: all), so an insert-only log pays for no surrogate key. It is never a temporary
    table: the limits write as durably as the product does, unless ``shape.logged`` is false.
    """
    name = f"bench_limit_{source}"[:63]
    options = " INCLUDING DEFAULTS INCLUDING IDENTITY" if shape.indexes or shape.built_after else ""
    if shape.indexes:
        options += " INCLUDING INDEXES"
    if shape.checks:
        options += " INCLUDING CONSTRAINTS"
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {name}")
        cursor.execute(f"CREATE {'' if shape.logged else 'UNLOGGED '}TABLE {name} (LIKE {source}{options})")
        if columns and not (shape.indexes or shape.built_after):
            cursor.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                [name],
            )
            for (column,) in cursor.fetchall():
                if column not in columns:
                    cursor.execute(f"ALTER TABLE {name} DROP COLUMN {column}")
        if shape.foreign_keys:
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


@contextmanager
def table_like(source: str) -> Iterator[str]:
    """Yield the name of a new, empty, ordinary table shaped like ``source``: columns, indexes, constraints and
    foreign keys; dropped afterwards (the same-schema limit's table)."""
    with table_shaped(source, SAME_SCHEMA) as name:
        yield name


def structures_add(cursor: CursorWrapper, source: str, table: str) -> None:
    """Give ``table`` (loaded, bare) every index, constraint and foreign key of ``source``: each index built by one
    sort, each foreign key validated by one join, rather than row by row."""
    cursor.execute(
        "SELECT contype, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass "
        "ORDER BY contype = 'f', oid",
        [source],
    )
    for number, (kind, definition) in enumerate(cursor.fetchall()):
        cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {table[:50]}_{kind}{number} {definition}")
    cursor.execute(
        "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i WHERE i.indrelid = %s::regclass "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) ORDER BY i.indexrelid",
        [source],
    )
    for number, (definition,) in enumerate(cursor.fetchall()):
        # CREATE [UNIQUE] INDEX name ON public.source USING …: a new name, on the new table.
        head, _, tail = definition.partition(" ON ")
        using = tail.split(" USING ", 1)[1]
        unique = "UNIQUE " if head.startswith("CREATE UNIQUE") else ""
        cursor.execute(f"CREATE {unique}INDEX {table[:50]}_i{number} ON {table} USING {using}")


def checkpoint() -> None:
    """Flush dirty buffers before a timed write, so each variant starts from the same state (skipped if not allowed)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("CHECKPOINT")
    except DatabaseError:
        pass  # not a superuser nor pg_checkpoint: the variants then share the checkpoints as they fall


Writer = Callable[[CursorWrapper, str], None]


def write_costs(
    source: str,
    write: Writer,
    *,
    variants: Sequence[str],
    columns: Sequence[str] = (),
    upsert: Writer | None = None,
    ours: Writer | None = None,
) -> dict[str, float]:
    """Time the same rows written into tables shaped like ``source``, one design choice at a time; seconds each.

    ``write(cursor, table)`` COPYs the rows into ``table``. Each variant is a fresh table
    and one committed transaction (the deferred foreign-key checks and the WAL flush at
    commit are in the time). ``upsert(cursor, table)`` writes the same rows as the product
    does (staging table, then ``INSERT … ON CONFLICT DO UPDATE``): ``upsert_empty`` into an
    empty table like ours, ``upsert_full`` into one already holding a version of every row
    (written and analysed before the clock starts). ``ours(cursor, table)`` writes rows
    that do not collide with the stored ones into our own table, whose indexes are full
    size; the foreign keys are checked (``SET CONSTRAINTS ALL IMMEDIATE``), then it is
    rolled back. ``built_after`` loads a bare table, then gives it our indexes and foreign
    keys in the same transaction (``structures_add``): what a bulk load into a fresh
    partition would pay.
    """
    seconds: dict[str, float] = {}
    for variant in variants:
        if variant == "ours":
            if ours is None:
                continue
            checkpoint()
            with transaction.atomic(), connection.cursor() as cursor:
                started = time.perf_counter()
                ours(cursor, source)
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
                seconds[variant] = time.perf_counter() - started
                transaction.set_rollback(True)
            continue
        if variant.startswith("upsert") and upsert is None:
            continue
        with table_shaped(source, VARIANT_SHAPES[variant], columns=columns) as table:
            if variant == "upsert_full":
                with transaction.atomic(), connection.cursor() as cursor:
                    write(cursor, table)
                with connection.cursor() as cursor:
                    cursor.execute(f"ANALYZE {table}")
            checkpoint()
            started = time.perf_counter()
            with transaction.atomic(), connection.cursor() as cursor:
                (upsert if variant.startswith("upsert") else write)(cursor, table)  # type: ignore[misc]
                if variant == "built_after":
                    structures_add(cursor, source, table)
            seconds[variant] = time.perf_counter() - started
    return seconds


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url() -> str:
    """The URL of the database this process is connected to, for the processes a stage starts."""
    db = connection.settings_dict
    return (
        f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    )


def serve(port: int, *, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start gunicorn with two workers on loopback against this database; return once it answers.

    ``env`` adds to the server's environment (the live stage names its Celery queue there).
    """
    extra = env or {}
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "crossmkt_site.settings.local",
        "DEBUG": "false",
        "DATABASE_URL": database_url(),
        "API_RATE_PER_KEY": "1000000/minute",
        "CONN_MAX_AGE": "60",  # connections kept, as in production
        "CROSSMKT_URLCONF": "demo.bench.urls",
        **extra,
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
