"""The benchmark: each stage measured three ways in one run — the product, a naive baseline, the machine's limit.

Stages built so far: ``ingest`` (bulk behaviour events through the partner API over HTTP,
10,000 per request, against one ORM write per event and against raw ``COPY`` of the same
rows) and ``features`` (the set-based feature build, against a per-user ORM loop and against
COPY out, NumPy aggregation and COPY in). Results are throughputs; the table gives the ratios QUALITY.md sets targets for.
"""

import json
import os
import platform
import resource
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from campaigns.models import Partner
from campaigns.services.partners import partner_api_key_create
from crossmkt_site.errors import ApplicationError

from ..demo.world import iter_world
from ..models import BehaviorEvent, EndUser

ROOT = Path(settings.BASE_DIR)
BATCH = 10_000
BASELINE_SAMPLE = 2_000
BENCH_PARTNER = "bench-ingest"


@dataclass
class StageResult:
    """One stage: throughput of the product, the naive baseline and the limit, and the target."""

    stage: str
    unit: str
    items: int
    product: float
    baseline: float
    limit: float
    target: str
    peak_memory_mb: float

    @property
    def of_limit(self) -> float:
        return self.product / self.limit if self.limit else float("nan")

    @property
    def over_baseline(self) -> float:
        return self.product / self.baseline if self.baseline else float("nan")


def _peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _event_items(n_events: int, run: str) -> list[dict]:
    """Draw about n_events events of the demo world, with ids of this run so they are all new."""
    items: list[dict] = []
    users = n_events // 5 + 10  # about 10.6 events per user: enough to fill the request
    for chunk in iter_world(n_users=users, seed=7, chunk_size=5_000):
        events = chunk.events
        occurred = events["occurred_at"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        for row in zip(events["event_id"], events["user_id"], events["kind"], events["item_id"], events["amount"], occurred):
            items.append({"event_id": f"{run}-{row[0]}", "user_id": f"{run}-{row[1]}", "kind": row[2], "item_id": row[3],
                          "amount": row[4], "occurred_at": row[5]})
            if len(items) == n_events:
                return items
    return items


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(port: int) -> subprocess.Popen:
    """Start gunicorn with two workers on loopback against this database; return once it answers."""
    db = connection.settings_dict
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "crossmkt_site.settings.local", "DEBUG": "false",
           "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
           "API_RATE_PER_KEY": "1000000/minute"}
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "crossmkt_site.wsgi", "-b", f"127.0.0.1:{port}", "-w", "2", "--timeout", "300"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
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


def stage_ingest(*, n_events: int) -> StageResult:
    """Measure bulk event ingest through the API against one ORM write per event and raw COPY."""
    if connection.vendor != "postgresql":
        raise ApplicationError("the benchmark runs on PostgreSQL: set DATABASE_URL=postgres://…")
    partner, _ = Partner.objects.get_or_create(slug=BENCH_PARTNER, defaults={"name": "Benchmark", "kind": "knowledge"})
    _key, raw_key = partner_api_key_create(partner=partner, name="bench")
    run = secrets.token_hex(3)
    items = _event_items(n_events, run)
    bodies = [json.dumps({"events": items[i:i + BATCH]}).encode() for i in range(0, len(items), BATCH)]

    port = _free_port()
    server = _serve(port)
    try:
        started = time.perf_counter()
        accepted = 0
        for body in bodies:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/events/", data=body, method="POST", headers={
                "Authorization": f"Api-Key {raw_key}", "Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=300) as response:
                accepted += json.load(response)["accepted"]
        product = accepted / (time.perf_counter() - started)
    finally:
        server.terminate()
        server.wait(timeout=30)

    limit = _copy_rate(items, partner.pk)
    baseline = _orm_rate(items[:BASELINE_SAMPLE], partner, f"{run}b")
    _clean_up(partner, run)
    return StageResult("bulk event ingest through the API (10k events per request)", "events/s", len(items),
                       product, baseline, limit, "≥ 1/4 of raw COPY", _peak_memory_mb())


def _copy_rate(items: list[dict], partner_id: int) -> float:
    """Raw COPY of the same rows into a copy of the events table (its indexes included), no framework."""
    user_numbers: dict[str, int] = {}
    rows = [(partner_id, i["event_id"], user_numbers.setdefault(i["user_id"], len(user_numbers) + 1), i["kind"],
             i["item_id"], i["amount"], i["occurred_at"], i["occurred_at"]) for i in items]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE bench_copy (LIKE analytics_behaviorevent INCLUDING ALL) ON COMMIT DROP")
        started = time.perf_counter()
        with cursor.cursor.copy("COPY bench_copy (partner_id, event_id, user_id, kind, item_id, amount, occurred_at, "
                                "received_at) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return len(rows) / (time.perf_counter() - started)


def _orm_rate(items: list[dict], partner: Partner, run: str) -> float:
    """The notebook way: look the user up or create them, then one ORM insert per event."""
    started = time.perf_counter()
    for item in items:
        user, _ = EndUser.objects.get_or_create(external_id=f"{run}-{item['user_id']}", defaults={"home_partner": partner})
        BehaviorEvent.objects.create(partner=partner, event_id=f"{run}-{item['event_id']}", user=user, kind=item["kind"],
                                     item_id=item["item_id"], amount=item["amount"],
                                     occurred_at=datetime.fromisoformat(item["occurred_at"].replace("Z", "+00:00")))
    return len(items) / (time.perf_counter() - started)


def _clean_up(partner: Partner, run: str) -> None:
    BehaviorEvent.objects.filter(partner=partner, event_id__startswith=run).delete()
    EndUser.objects.filter(external_id__startswith=run, home_partner=partner).delete()
    partner.api_keys.filter(name="bench").delete()


def stage_features(*, n_events: int | None = None) -> StageResult:
    """Measure the feature build over every user against a per-user loop and COPY out/in with NumPy."""
    if connection.vendor != "postgresql":
        raise ApplicationError("the benchmark runs on PostgreSQL: set DATABASE_URL=postgres://…")
    from .features import features_build

    users = list(EndUser.objects.filter(events__isnull=False).distinct().values_list("pk", flat=True)[:BASELINE_SAMPLE // 4])
    baseline = _features_naive_rate(users)
    started = time.perf_counter()
    built = features_build(full=True)
    product = built / (time.perf_counter() - started)
    limit = _features_copy_numpy_rate()
    return StageResult("feature build from events", "users/s", built, product, baseline, limit, "≥ 1/3 of the limit",
                       _peak_memory_mb())


def _features_naive_rate(user_ids: list[int]) -> float:
    """The notebook way: each user's events through the ORM, counted in Python, one write per user."""
    from ..models import UserFeatures

    started = time.perf_counter()
    for user_id in user_ids:
        counts: dict[str, int] = {}
        spend = 0
        for kind, amount in BehaviorEvent.objects.filter(user_id=user_id).values_list("kind", "amount"):
            counts[kind] = counts.get(kind, 0) + 1
            spend += amount
        UserFeatures.objects.filter(user_id=user_id).update(
            watching_count=counts.get("film_watch", 0), purchasing_count=counts.get("course_purchase", 0), total_spend=spend,
        )
    return len(user_ids) / (time.perf_counter() - started) if user_ids else float("nan")


def _features_copy_numpy_rate() -> float:
    """COPY the events out, aggregate per user with NumPy, COPY the result back in: no framework."""
    import io

    import numpy as np
    import pandas as pd

    started = time.perf_counter()
    buffer = io.BytesIO()
    with connection.cursor() as cursor:
        with cursor.cursor.copy("COPY (SELECT user_id, kind, amount, extract(epoch FROM occurred_at) "
                                "FROM analytics_behaviorevent) TO STDOUT") as copy:
            for block in copy:
                buffer.write(block)
        if not buffer.tell():
            return float("nan")
        buffer.seek(0)
        events = pd.read_csv(buffer, sep="\t", header=None, names=["user", "kind", "amount", "at"],
                             dtype={"user": np.int64, "kind": "category", "amount": np.float64, "at": np.float64})
        users, index = np.unique(events["user"].to_numpy(), return_inverse=True)
        kinds = events["kind"].cat.codes.to_numpy()
        counts = np.zeros((len(users), len(events["kind"].cat.categories)), dtype=np.int64)
        np.add.at(counts, (index, kinds), 1)
        spend = np.bincount(index, weights=events["amount"].to_numpy(), minlength=len(users))
        last = np.full(len(users), -np.inf)
        np.maximum.at(last, index, events["at"].to_numpy())
        with transaction.atomic():
            cursor.execute("CREATE TEMPORARY TABLE bench_features (user_id bigint, counts text, spend numeric(14, 2), "
                           "last_at double precision) ON COMMIT DROP")
            with cursor.cursor.copy("COPY bench_features FROM STDIN") as copy:
                for row in zip(users.tolist(), map(str, counts.sum(axis=1).tolist()), np.round(spend, 2).tolist(), last.tolist()):
                    copy.write_row(row)
    return len(users) / (time.perf_counter() - started)


STAGES = {"ingest": stage_ingest, "features": stage_features}


def benchmarks_markdown(results: list[StageResult], *, scale: str) -> str:
    """Render the results as the BENCHMARKS.md table, with the machine, scale, versions and date."""
    import django

    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
    lines = [
        "# Benchmarks", "",
        f"Run {timezone.now():%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores, {memory_gb:.0f} GiB, {platform.platform()}; "
        f"Python {platform.python_version()}, Django {django.get_version()}, PostgreSQL {postgres}; scale: {scale}.", "",
        "| stage | items | product | naive baseline | limit | product / limit | product / baseline | target | peak MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(f"| {r.stage} | {r.items:,} | {r.product:,.0f} {r.unit} | {r.baseline:,.0f} | {r.limit:,.0f} | "
                     f"{r.of_limit:.2f} | {r.over_baseline:.1f}× | {r.target} | {r.peak_memory_mb:,.0f} |")
    lines += ["", "Stages of QUALITY.md not built yet: batch scoring, campaign evaluation + issuance, "
              "re-run of a campaign, GET users/{id}/offers/ under load, training on 1M users.", ""]
    return "\n".join(lines)
