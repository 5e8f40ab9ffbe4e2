"""The benchmark: each stage measured three ways in one run — the product, a naive baseline, the machine's limit.

Stages, in the order a run takes them (QUALITY.md sets the targets): the demo world load,
the feature build, model training, batch scoring, campaign evaluation + issuance, the
re-run of that campaign, bulk event ingest through the partner API, ``GET
users/{id}/offers/`` under load, and the live path (events at fixed rates while two workers drain
them; ``live.py``). Each stage runs in a forked process of its own, so its
peak memory is its own. Results are throughputs; the table gives the ratios.
"""

import io
import json
import multiprocessing
import os
import platform
import secrets
import time
import traceback
import urllib.request
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import Any, TypeVar

import django
import numpy as np
import pandas as pd
from django.db import connection, connections, transaction
from django.utils import timezone

from analytics.models import BehaviorEvent, EndUser, UserFeatures
from analytics.services.features import features_build
from campaigns.models import Partner
from campaigns.services.partners import partner_api_key_create
from campaigns.services.training import TRAINERS
from crossmkt_site.errors import ApplicationError

from ..world.generator import iter_world
from . import live as live_stage
from . import stages as s
from .measure import (
    NAN,
    WRITE_VARIANTS,
    StageResult,
    free_port,
    peak_memory_mb,
    require_postgresql,
    serve,
    write_costs,
)

T = TypeVar("T")
BATCH = 10_000
BASELINE_SAMPLE = 2_000
BENCH_PARTNER = "bench-ingest"


def run_isolated(function: Callable[..., T], /, **kwargs: Any) -> T:
    """Run function(**kwargs) in a forked process and return its result, so its memory peak is its own.

    The child opens its own database connection; an ApplicationError in it is raised here
    with the same message, anything else as a RuntimeError naming the original.
    """
    connections.close_all()
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)

    def child() -> None:
        for conn in connections.all(initialized_only=True):
            conn.inc_thread_sharing()
            conn.close()
        try:
            send.send(("ok", function(**kwargs)))
        except ApplicationError as error:
            send.send(("application", error.message))
        except BaseException as error:
            send.send(("error", f"{error!r}\n{traceback.format_exc()}"))
        finally:
            connections.close_all()

    process = context.Process(target=child)
    process.start()
    send.close()
    try:
        kind, payload = receive.recv()
    except EOFError:
        process.join()
        raise RuntimeError(f"a benchmark stage died (exit code {process.exitcode})") from None
    process.join()
    if kind == "application":
        raise ApplicationError(payload)
    if kind == "error":
        raise RuntimeError(f"a benchmark stage failed: {payload}")
    return payload


def _event_items(n_events: int, run: str) -> list[dict]:
    """Draw about n_events events of the demo world, with ids of this run so they are all new."""
    items: list[dict] = []
    users = n_events // 5 + 10  # about 10.6 events per user: enough to fill the request
    for chunk in iter_world(n_users=users, seed=7, chunk_size=5_000):
        events = chunk.events
        occurred = events["occurred_at"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        # Columns of one frame (occurred is derived from one of them): equal lengths.
        for row in zip(
            events["event_id"],
            events["user_id"],
            events["kind"],
            events["item_id"],
            events["amount"],
            occurred,
            strict=True,
        ):
            items.append(
                {
                    "event_id": f"{run}-{row[0]}",
                    "user_id": f"{run}-{row[1]}",
                    "kind": row[2],
                    "item_id": row[3],
                    "amount": row[4],
                    "occurred_at": row[5],
                }
            )
            if len(items) == n_events:
                return items
    return items


def stage_ingest(*, n_events: int) -> StageResult:
    """Measure bulk event ingest through the API against one ORM write per event and raw COPY."""
    require_postgresql()
    partner, _ = Partner.objects.get_or_create(slug=BENCH_PARTNER, defaults={"name": "Benchmark", "kind": "knowledge"})
    _key, raw_key = partner_api_key_create(partner=partner, name="bench")
    run = secrets.token_hex(3)
    items = _event_items(n_events, run)
    bodies = [json.dumps({"events": items[i : i + BATCH]}).encode() for i in range(0, len(items), BATCH)]

    port = free_port()
    server = serve(port)
    try:
        started = time.perf_counter()
        accepted = 0
        for body in bodies:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/v1/events/",
                data=body,
                method="POST",
                headers={"Authorization": f"Api-Key {raw_key}", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=300) as response:
                accepted += json.load(response)["accepted"]
        seconds = time.perf_counter() - started
        product = accepted / seconds
    finally:
        server.terminate()
        server.wait(timeout=30)

    rows, writes = _copy_costs(items, partner.pk)
    baseline = _orm_rate(items[:BASELINE_SAMPLE], partner, f"{run}b")
    _clean_up(partner, run)
    result = StageResult(
        "bulk event ingest through the API (10k events per request)",
        "events/s",
        len(items),
        product,
        baseline,
        rows / writes["same_schema"] if rows else NAN,
        "≥ 1/4 of raw COPY",
        peak_memory_mb(),
        seconds,
        physical=rows / writes["physical"] if rows else NAN,
        writes=writes,
        write_rows=rows,
    )
    result.met = result.of_limit >= 1 / 4
    return result


EVENT_COLUMNS = ("partner_id", "event_id", "user_id", "kind", "item_id", "amount", "occurred_at", "received_at")


def _copy_costs(items: list[dict], partner_id: int) -> tuple[int, dict[str, float]]:
    """Raw COPY of the same rows into tables like the events table, one design choice at a time (the same-schema
    limit with indexes and foreign keys, the physical limit with neither), and into the events table itself;
    return the rows and the seconds of each write."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM analytics_enduser ORDER BY id LIMIT %s", [len(items)])
        user_ids = [row[0] for row in cursor.fetchall()]
    if not user_ids:
        return 0, dict.fromkeys(("physical", "same_schema"), NAN)
    user_numbers: dict[str, int] = {}
    rows = [
        (
            partner_id,
            i["event_id"],
            user_ids[user_numbers.setdefault(i["user_id"], len(user_numbers)) % len(user_ids)],
            i["kind"],
            i["item_id"],
            i["amount"],
            i["occurred_at"],
            i["occurred_at"],
        )
        for i in items
    ]
    statement = f"({', '.join(EVENT_COLUMNS)}) FROM STDIN"

    def write(cursor: Any, table: str) -> None:
        with cursor.cursor.copy(f"COPY {table} {statement}") as copy:
            for row in rows:
                copy.write_row(row)

    def ours(cursor: Any, table: str) -> None:
        # The product's events of this run are still stored: other ids, so the rows do not collide with them.
        with cursor.cursor.copy(f"COPY {table} {statement}") as copy:
            for row in rows:
                copy.write_row((row[0], f"limit-{row[1]}", *row[2:]))

    return len(rows), write_costs(
        "analytics_behaviorevent",
        write,
        ours=ours,
        columns=EVENT_COLUMNS,
        variants=("unlogged", "physical", "foreign_keys", "indexes", "same_schema", "built_after", "ours"),
    )


def _orm_rate(items: list[dict], partner: Partner, run: str) -> float:
    """The notebook way: look the user up or create them, then one ORM insert per event."""
    started = time.perf_counter()
    for item in items:
        user, _ = EndUser.objects.get_or_create(external_id=f"{run}-{item['user_id']}", home_partner=partner)
        BehaviorEvent.objects.create(
            partner=partner,
            event_id=f"{run}-{item['event_id']}",
            user=user,
            kind=item["kind"],
            item_id=item["item_id"],
            amount=item["amount"],
            occurred_at=datetime.fromisoformat(item["occurred_at"].replace("Z", "+00:00")),
        )
    return len(items) / (time.perf_counter() - started)


def _clean_up(partner: Partner, run: str) -> None:
    BehaviorEvent.objects.filter(partner=partner, event_id__startswith=run).delete()
    EndUser.objects.filter(external_id__startswith=run, home_partner=partner).delete()
    partner.api_keys.filter(name="bench").delete()


def stage_features() -> StageResult:
    """Measure the feature build over every user against a per-user loop and COPY out/in with NumPy."""
    require_postgresql()
    users = list(
        EndUser.objects.filter(events__isnull=False).distinct().values_list("pk", flat=True)[: BASELINE_SAMPLE // 4]
    )
    baseline = _features_naive_rate(users)
    started = time.perf_counter()
    built = features_build(full=True)
    seconds = time.perf_counter() - started
    limit = _features_copy_numpy_rate()
    result = StageResult(
        "feature build from events",
        "users/s",
        built,
        built / seconds,
        baseline,
        limit,
        "≥ 1/3 of the limit",
        peak_memory_mb(),
        seconds,
    )
    result.met = result.of_limit >= 1 / 3
    return result


def _features_naive_rate(user_ids: list[int]) -> float:
    """The notebook way: each user's events through the ORM, counted in Python, one write per user."""
    started = time.perf_counter()
    for user_id in user_ids:
        counts: dict[str, int] = {}
        spend = 0
        for kind, amount in BehaviorEvent.objects.filter(user_id=user_id).values_list("kind", "amount"):
            counts[kind] = counts.get(kind, 0) + 1
            spend += amount
        UserFeatures.objects.filter(user_id=user_id).update(
            watching_count=counts.get("film_watch", 0),
            purchasing_count=counts.get("course_purchase", 0),
            total_spend=spend,
        )
    return len(user_ids) / (time.perf_counter() - started) if user_ids else float("nan")


def _features_copy_numpy_rate() -> float:
    """COPY the events out, aggregate per user with NumPy, COPY the result back in: no framework."""
    started = time.perf_counter()
    buffer = io.BytesIO()
    with connection.cursor() as cursor:
        with cursor.cursor.copy(
            "COPY (SELECT user_id, kind, amount, extract(epoch FROM occurred_at) "
            "FROM analytics_behaviorevent) TO STDOUT"
        ) as copy:
            for block in copy:
                buffer.write(block)
        if not buffer.tell():
            return float("nan")
        buffer.seek(0)
        events = pd.read_csv(
            buffer,
            sep="\t",
            header=None,
            names=["user", "kind", "amount", "at"],
            dtype={"user": np.int64, "kind": "category", "amount": np.float64, "at": np.float64},
        )
        users, index = np.unique(events["user"].to_numpy(), return_inverse=True)
        kinds = events["kind"].cat.codes.to_numpy()
        counts = np.zeros((len(users), len(events["kind"].cat.categories)), dtype=np.int64)
        np.add.at(counts, (index, kinds), 1)
        spend = np.bincount(index, weights=events["amount"].to_numpy(), minlength=len(users))
        last = np.full(len(users), -np.inf)
        np.maximum.at(last, index, events["at"].to_numpy())
        with transaction.atomic():
            cursor.execute(
                "CREATE TEMPORARY TABLE bench_features (user_id bigint, counts text, spend numeric(14, 2), "
                "last_at double precision) ON COMMIT DROP"
            )
            with cursor.cursor.copy("COPY bench_features FROM STDIN") as copy:
                # One entry per distinct user in each (index takes exactly the values 0 .. len(users) - 1).
                for row in zip(
                    users.tolist(),
                    map(str, counts.sum(axis=1).tolist()),
                    np.round(spend, 2).tolist(),
                    last.tolist(),
                    strict=True,
                ):
                    copy.write_row(row)
    return len(users) / (time.perf_counter() - started)


def _number(value: float) -> str:
    return "—" if value != value else f"{value:,.0f}"


def _ratio(value: float, suffix: str = "") -> str:
    """A ratio to two decimals; below 0.1 to two significant digits, so a small one does not read as 0.00."""
    if value != value:
        return "—"
    if value < 0.1:
        return f"{value:.2g}{suffix}"
    return f"{value:.2f}{suffix}" if value < 10 else f"{value:,.0f}{suffix}"


def benchmarks_markdown(
    results: list[StageResult], *, scale: str, wall_seconds: float | None = None, notes: str = ""
) -> str:
    """Render the results as the BENCHMARKS.md table, with the machine, scale, versions and date."""
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
    total = sum(r.seconds for r in results if r.seconds == r.seconds)
    lines = [
        "# Benchmarks",
        "",
        f"Run {timezone.now():%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores, {memory_gb:.0f} GiB, "
        f"{platform.platform()}; Python {platform.python_version()}, Django {django.get_version()}, "
        f"PostgreSQL {postgres}; scale: {scale}; "
        + (f"the whole run took {wall_seconds / 60:.1f} min, " if wall_seconds else "")
        + f"of which the product measurements (column s) {total / 60:.1f} min.",
        "",
        "| stage | items | product | naive baseline | limit | product / limit | physical limit | "
        "product / physical limit | product / baseline | target | met | peak MB | s | note |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        met = "—" if r.met is None else ("yes" if r.met else "**no**")
        lines.append(
            f"| {r.stage} | {r.items:,} | {_number(r.product)} {r.unit} | {_number(r.baseline)} | {_number(r.limit)} | "
            f"{_ratio(r.of_limit)} | {_number(r.physical)} | {_ratio(r.of_physical)} | "
            f"{_ratio(r.over_baseline, '×')} | {r.target} | {met} | {r.peak_memory_mb:,.0f} | "
            f"{_ratio(r.seconds)} | {r.note} |"
        )
    lines += write_costs_markdown(results)
    if notes:
        lines += ["", notes.strip()]
    return "\n".join(lines) + "\n"


def write_costs_markdown(results: list[StageResult]) -> list[str]:
    """The table between the two limits: seconds to write the same rows, one design choice at a time."""
    measured = [r for r in results if r.writes]
    if not measured:
        return []
    variants = [name for name in WRITE_VARIANTS if any(name in r.writes for r in measured)]
    computed = any("compute" in r.writes for r in measured)
    lines = [
        "",
        "Between the two limits: seconds to write the same rows one design choice at a time, each into a fresh "
        "table and committed (the deferred foreign-key checks and the WAL flush included); the limits are the "
        "rows over these seconds"
        + (", plus the reading and computing where a limit computes" if computed else "")
        + ". The product's own seconds are the table's column s.",
        "",
        "| stage | rows | "
        + ("read + compute | " if computed else "")
        + " | ".join(WRITE_VARIANTS[name] for name in variants)
        + " | product |",
        "| --- | --- |" + " --- |" * (len(variants) + computed + 1),
    ]
    for r in measured:
        cells = [_seconds(r.writes.get(name, NAN)) for name in (["compute"] if computed else []) + variants]
        lines.append(f"| {r.stage} | {r.write_rows:,} | " + " | ".join(cells) + f" | {_seconds(r.seconds)} |")
    return lines


def _seconds(value: float) -> str:
    """Seconds as a table cell: two decimals, three significant digits below 0.1 s (a small world's writes)."""
    if value != value:
        return "—"
    if value < 0.1:
        return f"{value:.3g}"
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def analyze_all(echo: Callable[[str], object]) -> None:
    """Refresh the planner's statistics, as autovacuum would have by now on a live database (it may be off here)."""
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    echo(f"analyze: planner statistics refreshed in {time.perf_counter() - started:.1f} s")


STAGE_ORDER = ("world", "features", "training", "scoring", "campaign", "rerun", "ingest", "load", "live")


def bench_events(n_users: int) -> int:
    """Events sent through the API at a scale: a fifth of the users' count, within 1,000 and 200,000."""
    return min(max(n_users // 5, 1_000), 200_000)


def bench_run(
    *,
    n_users: int,
    stages: Sequence[str] = STAGE_ORDER,
    n_events: int | None = None,
    load_seconds: float | None = None,
    live_seconds: float | None = None,
    echo: Callable[[str], object] = lambda line: None,
    world_progress: Callable[[], AbstractContextManager[Callable[[int], None] | None]] | None = None,
    results: list[StageResult] | None = None,
) -> list[StageResult]:
    """Run the chosen stages in order, each in a process of its own, and return their results.

    Each result is appended to ``results`` (a new list if not given) as its stage ends, so a
    caller holding the list keeps the finished stages' figures when a later stage fails.

    ``world_progress()``, if given, is a context manager yielding a function that takes the
    number of users loaded so far (the world is loaded here: its loader forks its own workers).
    """
    require_postgresql()
    # The live stage's rate is a fraction of the bulk-ingest rate of the same run: the ingest stage runs with it.
    wanted = [name for name in STAGE_ORDER if name in stages or (name == "ingest" and "live" in stages)]
    # What the later stages need is checked before the first runs, so a run is refused at once, not after an hour.
    if "load" in wanted:
        s.require_wrk()
    if "live" in wanted:
        live_stage.require_broker()
    n_events = n_events or bench_events(n_users)
    load_seconds = load_seconds or (10.0 if n_users >= 500_000 else 3.0)
    live_seconds = live_seconds or (300.0 if n_users >= 500_000 else 15.0)
    results = [] if results is None else results

    def measured(result: StageResult) -> StageResult:
        results.append(result)
        met = "" if result.met is None else (" — target met" if result.met else " — TARGET MISSED")
        echo(
            f"  {result.stage}: {result.product:,.0f} {result.unit}, {result.seconds:,.1f} s, "
            f"peak {result.peak_memory_mb:,.0f} MB{met}"
        )
        return result

    status = s.world_status(n_users)
    if status == "ready":
        analyze_all(echo)
    if "world" in wanted:
        if status == "ready":
            echo(f"world: the demo world of {n_users:,} users is already loaded; measuring on it")
        else:
            echo(f"world: loading {n_users:,} users with seed_demo's loader …")
            with world_progress() if world_progress else nullcontext(None) as advance:
                measured(s.stage_world(n_users=n_users, on_progress=advance))
            analyze_all(echo)
    elif status != "ready":
        raise ApplicationError(f"this database has no benchmark world of {n_users:,} users: include the world stage")
    first_campaign_seconds = NAN
    bulk_rate = NAN
    for name in wanted:
        if name == "world":
            continue
        echo(f"{name} …")
        if name == "features":
            measured(run_isolated(stage_features))
        elif name == "training":
            for model in TRAINERS:
                echo(f"  training {model} …")
                try:
                    measured(run_isolated(s.stage_training, model=model))
                except ApplicationError as error:  # a model this world has no data for (no past campaign, say)
                    echo(f"  training {model}: not trained: {error.message}")
                    results.append(
                        StageResult(
                            f"training: {model}",
                            "users/s",
                            0,
                            NAN,
                            NAN,
                            NAN,
                            "reported",
                            NAN,
                            note=f"not trained: {error.message}",
                        )
                    )
        elif name == "scoring":
            measured(run_isolated(s.stage_scoring))
        elif name == "campaign":
            first_campaign_seconds = measured(run_isolated(s.stage_campaign, users=n_users)).seconds
        elif name == "rerun":
            measured(run_isolated(s.stage_rerun, first_seconds=first_campaign_seconds, users=n_users))
        elif name == "ingest":
            bulk_rate = measured(run_isolated(stage_ingest, n_events=n_events)).product
        elif name == "load":
            measured(run_isolated(s.stage_offers_load, seconds=load_seconds))
        elif name == "live":
            for result in run_isolated(live_stage.stage_live, seconds=live_seconds, bulk_rate=bulk_rate):
                measured(result)
    return results
