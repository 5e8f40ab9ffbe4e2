"""The live stage: events posted through the API at fixed rates while two Celery workers drain the users they touch.

The stage serves the API with gunicorn (as the offers-under-load stage does), starts two Celery
workers of one process each on a queue of its own, and queues the drain tick itself at beat's
interval (``CROSSMKT_LIVE_DRAIN_SECONDS``; beat's other schedules do not run). A continuous campaign
with the rule ``watching_count >= 3`` runs over the world; each request carries three film
watches for each of 100 consenting users who had watched fewer than three, so the rule becomes
true for them and the drain issues their offers (or holds them out).

An open-loop generator sends each request at its due time whether or not the earlier ones have
been answered (a closed loop would slow down with the server and hide the backlog). While it
sends, a sampler reads how many users are pending and the age of the oldest. A rate is
*sustained* when every request was accepted, the generator kept to its schedule, and the pending
count shows no upward trend over the second half of the window (its fitted slope is below 5 % of
the rate at which users arrive). A short search over rates, starting at half the bulk-ingest
rate measured in the same run (the ingest stage: 10k events a request, no drain), finds the
highest sustained rate; then, at half that rate, the event-to-offer latency of the offers issued
(``Offer.issued_at`` − ``Offer.touched_at``) gives p50, p95 and p99.
"""

import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import connection, connections, transaction
from django.utils import timezone

from analytics.models import BehaviorEvent, PendingUser
from campaigns.models import Campaign, CampaignAssignment, Offer, Partner, Rule
from campaigns.rules import to_json, validate_text
from campaigns.selectors.rule_fields import condition_registry
from campaigns.services.live import LIVE_DRAIN_TASK
from campaigns.services.partners import partner_api_key_create
from crossmkt_site.celery import app
from crossmkt_site.errors import ApplicationError

from .measure import NAN, ROOT, StageResult, database_url, free_port, peak_memory_mb, require_postgresql, serve

LIVE_CAMPAIGN_PREFIX = "bench-live-"
LIVE_RULE = "watching_count >= 3"
WATCHES = 3  # film watches per user in a request: enough to make the rule true for a user who had none
USERS_PER_REQUEST = 100
EVENTS_PER_REQUEST = WATCHES * USERS_PER_REQUEST
WORKERS = 2
SENDERS = 32  # requests in flight at most; beyond that the generator falls behind its schedule, which is reported
GROWTH_TOLERANCE = 0.05  # a backlog growing at under 5 % of the users' arrival rate counts as bounded
MAX_TRIALS = 6
POOL_USERS = 200_000
LIVE_STAGE = "live path: events through the API with 2 workers draining, highest sustained rate"
LATENCY_STAGE = "live path: event-to-offer latency at half the sustained rate"


@dataclass
class Trial:
    """One window of events at a fixed rate: what was sent and accepted, and the backlog over time."""

    rate: float  # events/s asked for
    seconds: float
    sent: int = 0
    accepted: int = 0
    errors: int = 0
    lag: float = 0.0  # the latest a request started after its due time, s
    samples: list[tuple[float, int, float]] = field(default_factory=list)  # (s since start, pending, oldest age s)
    started_at: datetime | None = None
    campaign: Campaign | None = None
    drained: bool = True  # the backlog emptied after the window (within the stage's wait)

    @property
    def achieved(self) -> float:
        return self.accepted / self.seconds if self.seconds else NAN

    @property
    def growth(self) -> float:
        """The pending count's fitted slope over the window's second half, users/s."""
        tail = [(t, n) for t, n, _ in self.samples if t >= self.seconds / 2]
        if len(tail) < 3:
            return NAN
        times, counts = np.array(tail, dtype=float).T
        return float(np.polyfit(times, counts, 1)[0])

    @property
    def peak(self) -> int:
        return max((n for _, n, _ in self.samples), default=0)

    @property
    def oldest(self) -> float:
        return max((age for _, _, age in self.samples), default=0.0)

    @property
    def bounded(self) -> bool:
        users_rate = self.rate / WATCHES
        kept_up = self.lag <= max(1.0, self.seconds * 0.1)
        growth = self.growth
        return (
            self.errors == 0
            and kept_up
            and self.accepted >= 0.95 * self.sent
            and growth == growth
            and growth <= GROWTH_TOLERANCE * users_rate
        )

    def describe(self) -> str:
        return (
            f"{self.rate:,.0f} events/s: {'bounded' if self.bounded else 'GROWING'} "
            f"(backlog slope {self.growth:+,.1f} users/s, peak {self.peak:,}, oldest {self.oldest:.1f} s, "
            f"{self.errors} errors, generator lag {self.lag:.1f} s"
            + ("" if self.drained else "; still pending after the wait")
            + ")"
        )


# ---------------------------------------------------------------------------------------------
# The world's side: the campaign, the users the events are about, the films they watch


def live_campaigns_delete() -> None:
    """Remove earlier live stages' campaigns with their assignments and offers."""
    ids = list(Campaign.objects.filter(slug__startswith=LIVE_CAMPAIGN_PREFIX).values_list("pk", flat=True))
    if not ids:
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM campaigns_offer WHERE campaign_id = ANY(%s)", [ids])
            cursor.execute("DELETE FROM campaigns_campaignassignment WHERE campaign_id = ANY(%s)", [ids])
        Campaign.objects.filter(pk__in=ids).delete()


def live_campaign_create(owner: Partner) -> Campaign:
    """A running continuous campaign whose rule the stage's events make true: a 10 CNY coupon for three films.

    Every window of the stage has one of its own (the previous one ends), so each user a window
    touches is decided and issued for as on a first touch, however often the pool of users has
    been gone through."""
    Campaign.objects.filter(slug__startswith=LIVE_CAMPAIGN_PREFIX, status=Campaign.Status.RUNNING).update(
        status=Campaign.Status.ENDED
    )
    now = timezone.now()
    campaign = Campaign.objects.create(
        slug=f"{LIVE_CAMPAIGN_PREFIX}{secrets.token_hex(3)}",
        name="Benchmark live campaign",
        owner=owner,
        starts_at=now - timedelta(days=1),
        ends_at=now + timedelta(days=30),
        timezone="Asia/Shanghai",
        budget=None,
        holdout_share=Decimal("0.10"),
        per_user_limit=1,
        offer_valid_days=14,
        status=Campaign.Status.RUNNING,
        reach=Campaign.Reach.CONTINUOUS,
    )
    Rule.objects.create(
        campaign=campaign,
        name="three films: 10 CNY coupon",
        priority=100,
        exclusive=False,
        condition=to_json(validate_text(LIVE_RULE, condition_registry())),
        offer_kind="coupon",
        benefit_partner=owner,
        amount_off=Decimal("10.00"),
        cost=Decimal("10.00"),
    )
    return campaign


def live_audience() -> tuple[Partner, list[str], list[str]]:
    """The partner with the most consenting users who have watched fewer than three films, those users' external
    ids (a random sample), and film ids the world's users watch."""
    with connection.cursor() as cursor:
        below = (
            "FROM analytics_enduser u LEFT JOIN analytics_userfeatures f ON f.user_id = u.id "
            "WHERE u.marketing_consent AND u.erased_at IS NULL AND COALESCE(f.watching_count, 0) < %s"
        )
        cursor.execute(f"SELECT u.home_partner_id {below} GROUP BY 1 ORDER BY count(*) DESC LIMIT 1", [WATCHES])
        row = cursor.fetchone()
        if row is None:
            raise ApplicationError("the live stage needs consenting users who have watched fewer than three films")
        partner = Partner.objects.get(pk=row[0])
        cursor.execute(
            f"SELECT u.external_id {below} AND u.home_partner_id = %s ORDER BY random() LIMIT %s",
            [WATCHES, partner.pk, POOL_USERS],
        )
        users = [external_id for (external_id,) in cursor.fetchall()]
        cursor.execute(
            "SELECT item_id FROM analytics_behaviorevent WHERE kind = 'film_watch' AND item_id <> '' LIMIT 2000"
        )
        films = sorted({item for (item,) in cursor.fetchall()})[:50] or ["F00001"]
    return partner, users, films


class Batches:
    """The requests' bodies, made when sent: each is three film watches for each of the next 100 users of the pool."""

    def __init__(self, users: list[str], films: list[str], run: str):
        self.users, self.films, self.run = users, films, run
        self.next_user = 0
        self.lock = threading.Lock()

    def body(self, number: int, prefix: str) -> bytes:
        with self.lock:
            start = self.next_user
            self.next_user += USERS_PER_REQUEST
        moment = (timezone.now() - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        items = []
        for offset in range(USERS_PER_REQUEST):
            user = self.users[(start + offset) % len(self.users)]
            for watch in range(WATCHES):
                items.append(
                    {
                        "event_id": f"{self.run}-{prefix}-{number}-{offset}-{watch}",
                        "user_id": user,
                        "kind": "film_watch",
                        "item_id": self.films[(start + offset + watch) % len(self.films)],
                        "amount": "0",
                        "occurred_at": moment,
                    }
                )
        return json.dumps({"events": items}).encode()


# ---------------------------------------------------------------------------------------------
# Processes: two Celery workers and the drain tick


@contextmanager
def celery_workers(queue: str, *, count: int = WORKERS) -> Iterator[None]:
    """Start ``count`` Celery workers (one process each) on this database consuming ``queue``; stop them after."""
    logs = Path(tempfile.mkdtemp(prefix="crossmkt-bench-live-"))
    names = [f"bench-live-{n}-{queue}@localhost" for n in range(count)]
    processes: list[subprocess.Popen] = []
    try:
        for name in names:
            with (logs / f"{name.split('@')[0]}.log").open("w") as log:
                processes.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "celery",
                            "-A",
                            "crossmkt_site",
                            "worker",
                            "--loglevel=WARNING",
                            "--concurrency=1",
                            "--pool=prefork",
                            "--without-gossip",
                            "--without-mingle",
                            "-Q",
                            queue,
                            "-n",
                            name,
                        ],
                        cwd=ROOT,
                        env={
                            **os.environ,
                            "DJANGO_SETTINGS_MODULE": "crossmkt_site.settings.local",
                            "DATABASE_URL": database_url(),
                            "CELERY_TASK_DEFAULT_QUEUE": queue,
                            "DEBUG": "false",
                        },
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        deadline = time.monotonic() + 90
        while len(app.control.inspect(destination=names, timeout=1).ping() or {}) < count:
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                tails = "; ".join(path.read_text()[-400:] for path in logs.glob("*.log"))
                raise ApplicationError(f"the live stage's Celery workers did not start: {tails}")
            time.sleep(0.5)
        yield
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(queue)
        shutil.rmtree(logs, ignore_errors=True)


@contextmanager
def drain_tick(queue: str, seconds: float) -> Iterator[None]:
    """Queue a drain every ``seconds`` on ``queue``, as beat's drain-pending-users schedule does."""
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(seconds):
            app.send_task(LIVE_DRAIN_TASK, queue=queue)

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


# ---------------------------------------------------------------------------------------------
# The load: an open loop at a fixed rate, the backlog sampled beside it


def pending_now() -> tuple[int, float]:
    """How many users are pending, and the age in seconds of the oldest first touch (0 when none)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(first_touched_at)), 0) "
            f"FROM {PendingUser._meta.db_table}"
        )
        count, age = cursor.fetchone()
    return int(count), float(age)


def wait_drained(seconds: float) -> bool:
    """Wait until nothing is pending; False if something still is after ``seconds``."""
    deadline = time.monotonic() + seconds
    while pending_now()[0]:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def open_loop(url: str, authorization: str, *, rate: float, seconds: float, body: Callable[[int], bytes]) -> Trial:
    """Post ``rate`` events/s for ``seconds``, each request at its due time whatever the earlier ones are doing."""
    trial = Trial(rate=rate, seconds=seconds, started_at=timezone.now())
    per_second = rate / EVENTS_PER_REQUEST
    n = max(int(per_second * seconds), 1)
    lock = threading.Lock()
    done = threading.Event()
    interval = max(seconds / 60, 0.25)

    def post(number: int, due: float) -> None:
        lag = time.monotonic() - due
        request = urllib.request.Request(
            url,
            data=body(number),
            method="POST",
            headers={"Authorization": authorization, "Content-Type": "application/json"},
        )
        accepted, failed = 0, 0
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                accepted = json.load(response)["accepted"]
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            failed = 1
        with lock:
            trial.accepted += accepted
            trial.errors += failed
            trial.lag = max(trial.lag, lag)

    def sample() -> None:
        try:
            while True:
                count, age = pending_now()
                trial.samples.append((time.monotonic() - started, count, age))
                if done.wait(interval):
                    return
        finally:
            connections.close_all()

    started = time.monotonic()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with ThreadPoolExecutor(SENDERS) as executor:
        for number in range(n):
            due = started + number / per_second
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            executor.submit(post, number, due)
            trial.sent += EVENTS_PER_REQUEST
        # Sampled to the end of the window, even if the last requests are still in flight.
        pause = started + seconds - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        done.set()
    sampler.join(timeout=30)
    return trial


def rate_search(trial: Callable[[float], Trial], bulk_rate: float, *, floor: float) -> list[Trial]:
    """Find the highest sustained rate: start at half the bulk rate, go up by half while sustained (to the bulk
    rate), halve while not, then narrow between the two by geometric means; at most ``MAX_TRIALS`` windows."""
    trials: list[Trial] = []
    low, high = 0.0, math.inf
    rate = bulk_rate / 2
    for _ in range(MAX_TRIALS):
        result = trial(rate)
        trials.append(result)
        if result.bounded:
            low = rate
        else:
            high = rate
        if high == math.inf:
            if rate >= bulk_rate:
                break
            rate = min(rate * 1.5, bulk_rate)
        elif low == 0:
            if rate / 2 < floor:
                break
            rate /= 2
        else:
            if high / low <= 1.25:
                break
            rate = math.sqrt(low * high)
    return trials


def latencies(campaign: Campaign | None, since: datetime | None) -> np.ndarray:
    """Seconds from acceptance of the events to the offer, for the campaign's offers touched since ``since``."""
    values = Offer.objects.filter(campaign=campaign, touched_at__gte=since, touched_at__isnull=False).values_list(
        "issued_at", "touched_at"
    )
    return np.array([(issued - touched).total_seconds() for issued, touched in values if touched], dtype=float)


# ---------------------------------------------------------------------------------------------
# The stage


def require_broker() -> None:
    """The live stage's workers need a broker they share with the server: Redis, named in CELERY_BROKER_URL."""
    if not os.environ.get("CELERY_BROKER_URL", "").startswith("redis"):
        raise ApplicationError(
            "the live stage starts Celery workers: set CELERY_BROKER_URL=redis://…, or leave live out of --stages"
        )


def stage_live(*, seconds: float, bulk_rate: float, trial_seconds: float | None = None) -> list[StageResult]:
    """Find the highest sustained live rate as a fraction of ``bulk_rate``; at half of it, the event-to-offer
    latency over ``seconds``. Return the two rows."""
    require_postgresql()
    require_broker()
    if not bulk_rate > 0:
        raise ApplicationError("the live stage needs the bulk-ingest rate of the same run: include the ingest stage")
    trial_seconds = trial_seconds or max(seconds / 5, 3.0)
    partner, users, films = live_audience()
    owner = Partner.objects.filter(kind="knowledge").order_by("pk").first() or partner
    live_campaigns_delete()
    key, raw_key = partner_api_key_create(partner=partner, name="bench-live")
    run = f"live{secrets.token_hex(3)}"
    batches = Batches(users, films, run)
    queue = f"crossmkt-bench-live-{secrets.token_hex(4)}"
    tick = float(settings.CELERY_BEAT_SCHEDULE["drain-pending-users"]["schedule"])
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/v1/events/"
    authorization = f"Api-Key {raw_key}"
    drain_wait = max(60.0, 10 * trial_seconds)
    started = time.perf_counter()
    server = serve(port, env={"CELERY_TASK_DEFAULT_QUEUE": queue})
    window = 0

    def trial(rate: float, length: float) -> Trial:
        nonlocal window
        window += 1
        prefix = f"w{window}"
        campaign = live_campaign_create(owner)
        result = open_loop(
            url, authorization, rate=rate, seconds=length, body=lambda number: batches.body(number, prefix)
        )
        result.drained = wait_drained(drain_wait)
        result.campaign = campaign
        return result

    try:
        with celery_workers(queue), drain_tick(queue, tick):
            # Warm both gunicorn processes and both workers (connections, imports) before anything is timed.
            live_campaign_create(owner)
            open_loop(url, authorization, rate=EVENTS_PER_REQUEST * 4, seconds=1, body=lambda n: batches.body(n, "w0"))
            wait_drained(drain_wait)
            floor = EVENTS_PER_REQUEST / 2  # one request every two seconds
            trials = rate_search(lambda rate: trial(rate, trial_seconds), bulk_rate, floor=floor)
            sustained = max((t.achieved for t in trials if t.bounded), default=0.0)
            lowest = min(t.rate for t in trials)
            half = trial((sustained or lowest) / 2, seconds)
            seconds_spent = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
        key.delete()
        Campaign.objects.filter(slug__startswith=LIVE_CAMPAIGN_PREFIX).update(status=Campaign.Status.ENDED)
        BehaviorEvent.objects.filter(partner=partner, event_id__startswith=run).delete()
    lag = latencies(half.campaign, half.started_at)
    accepted = sum(t.accepted for t in (*trials, half))
    tried = "; ".join(t.describe() for t in trials)
    live = StageResult(
        LIVE_STAGE,
        "events/s",
        accepted,
        sustained,
        NAN,
        bulk_rate,
        "≥ 1/2 of bulk ingest (the limit column: the ingest stage's rate, no drain)",
        peak_memory_mb(),
        seconds_spent,
        note=f"{EVENTS_PER_REQUEST} events a request (3 film watches × {USERS_PER_REQUEST} users), open loop; rule "
        f"`{LIVE_RULE}` of a continuous campaign; {WORKERS} workers × 1 process, drain tick {tick:.0f} s; "
        f"windows of {trial_seconds:.0f} s: {tried}"
        + ("" if sustained else f"; the backlog grew at every rate tried, down to {lowest:,.0f} events/s"),
    )
    live.met = sustained >= bulk_rate / 2
    percentiles = np.percentile(lag, [50, 95, 99]) * 1000 if len(lag) else np.full(3, NAN)
    held = CampaignAssignment.objects.filter(campaign=half.campaign, arm=CampaignAssignment.HOLDOUT).count()
    latency = StageResult(
        LATENCY_STAGE,
        "ms p99",
        len(lag),
        float(percentiles[2]),
        NAN,
        NAN,
        "p99 ≤ 5 s",
        peak_memory_mb(),
        half.seconds,
        note=f"{half.rate:,.0f} events/s for {half.seconds:.0f} s: p50 {percentiles[0]:,.0f} ms, "
        f"p95 {percentiles[1]:,.0f} ms, p99 {percentiles[2]:,.0f} ms over {len(lag):,} offers "
        f"({held:,} users held out); issued_at − touched_at (the drain's decision time less the batch's "
        f"acceptance); backlog {half.describe().split(': ', 1)[1]}",
    )
    latency.met = len(lag) > 0 and percentiles[2] <= 5000
    return [live, latency]
