"""The benchmark's stages beyond data in: the world, training, scoring, a campaign and its re-run, the API under load.

Each ``stage_*`` function runs in a process of its own (``bench.run_isolated``) and returns
a ``StageResult``. The product is the code the system runs; the naive baseline is the
article's notebook style (a Python function per user, one ORM write per row) on a sample;
the limit moves the same rows with raw ``COPY`` and computes with vectorised NumPy.
"""

import io
import json
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from django.db import connection, transaction
from django.utils import timezone

from analytics.models import EndUser, ModelRun, UserScore
from analytics.selectors import user_frame
from analytics.services.registry import model_run_active, model_run_artifact
from analytics.services.scoring import score_all
from campaigns.models import Campaign, CampaignAssignment, Offer, Partner, Rule
from campaigns.rules import evaluate_user, to_json, validate_text
from campaigns.selectors.rule_fields import condition_registry, item_category_sources
from campaigns.services.campaign_planning import campaign_rule_plans, holdout_draw, new_codes
from campaigns.services.campaign_run import campaign_run
from campaigns.services.partners import partner_api_key_create
from crossmkt_site.bulk import bulk_insert_frame
from crossmkt_site.celery import app
from crossmkt_site.errors import ApplicationError

from ..models import DemoWorld
from ..selectors import demo_world_latest
from ..services.training import demo_model_train
from ..services.world_load import demo_world_load
from .measure import (
    NAN,
    StageResult,
    free_port,
    peak_memory_mb,
    require_postgresql,
    serve,
    write_costs,
)

BENCH_SEED = 2026
SCORING_MODELS = ("propensity", "churn", "clv")
NAIVE_USERS = 300
BENCH_CAMPAIGN_PREFIX = "bench-campaign-"


@contextmanager
def eager_tasks() -> Iterator[None]:
    """Run Celery tasks in this process for the duration: the product's task bodies, without a broker's round trip."""
    before = app.conf.task_always_eager, app.conf.task_eager_propagates
    app.conf.task_always_eager = app.conf.task_eager_propagates = True
    try:
        yield
    finally:
        app.conf.task_always_eager, app.conf.task_eager_propagates = before


# ---------------------------------------------------------------------------------------------
# The demo world


def world_status(n_users: int) -> str:
    """Return "ready" when this database holds the benchmark's world of n_users, "empty" when it holds no users."""
    if DemoWorld.objects.filter(n_users=n_users, seed=BENCH_SEED).exists():
        return "ready"
    if not EndUser.objects.exists():
        return "empty"
    worlds = ", ".join(f"{w.n_users:,} users (seed {w.seed})" for w in DemoWorld.objects.all()) or "no demo world"
    raise ApplicationError(
        f"this database holds {EndUser.objects.count():,} users and {worlds}, not the benchmark's world of "
        f"{n_users:,} users (seed {BENCH_SEED}); point DATABASE_URL at an empty database, or pass --users to match"
    )


def stage_world(*, n_users: int, on_progress: Callable[[int], None] | None = None) -> StageResult:
    """Load the demo world with seed_demo's loader (two processes), timed; nothing to compare it with."""
    require_postgresql()
    started = time.perf_counter()
    summary = demo_world_load(n_users=n_users, seed=BENCH_SEED, processes=2, on_progress=on_progress)
    seconds = time.perf_counter() - started
    return StageResult(
        "demo world load (seed_demo, 2 processes)",
        "users/s",
        summary["users"],
        summary["users"] / seconds,
        NAN,
        NAN,
        "reported",
        peak_memory_mb(),
        seconds,
        note=f"{summary['events']:,} events",
    )


# ---------------------------------------------------------------------------------------------
# Training


def stage_training(*, model: str) -> StageResult:
    """Train one model on every user as ``manage.py demo`` does; time and memory are the result."""
    users = EndUser.objects.filter(erased_at__isnull=True).count()
    world = demo_world_latest()
    if world is None:
        raise ApplicationError("no demo world to train on: run the world stage first")
    started = time.perf_counter()
    run = demo_model_train(model=model, truth=world.truth)
    seconds = time.perf_counter() - started
    return StageResult(
        f"training: {model}",
        "users/s",
        users,
        users / seconds,
        NAN,
        NAN,
        "reported",
        peak_memory_mb(),
        seconds,
        note=f"{run.n_train:,} training rows",
    )


# ---------------------------------------------------------------------------------------------
# Batch scoring


def stage_scoring(*, models: Sequence[str] = SCORING_MODELS) -> StageResult:
    """Score every user with propensity, churn and CLV, DB to DB, against a per-user loop and COPY + NumPy."""
    require_postgresql()
    runs = {}
    for model in models:
        try:
            runs[model] = model_run_active(model=model)
        except ApplicationError:
            raise ApplicationError(
                f"no active {model} model to score with: run the training stage first (bench --stages training scoring)"
            ) from None
    artifacts = {model: model_run_artifact(run) for model, run in runs.items()}
    as_of = timezone.now()

    sample = list(
        EndUser.objects.filter(erased_at__isnull=True).order_by("?").values_list("pk", flat=True)[:NAIVE_USERS]
    )
    baseline = _scoring_naive_rate(sample, runs, artifacts, as_of)

    started = time.perf_counter()
    with eager_tasks():
        scored = score_all(models=models)
    seconds = time.perf_counter() - started
    rows = sum(scored.values())

    frames, compute_seconds = _scoring_copy_numpy(runs, artifacts, as_of)
    writes = _scoring_write_costs(frames)
    written = sum(len(frame) for frame in frames)
    result = StageResult(
        "batch scoring: propensity + churn + CLV, DB → DB",
        "scores/s",
        rows,
        rows / seconds,
        baseline,
        written / (compute_seconds + writes["same_schema"]),
        "≥ 1/2 of the limit; ≥ 50× the naive baseline",
        peak_memory_mb(),
        seconds,
        note="one process, as one worker runs a chunk",
        physical=written / (compute_seconds + writes["physical"]),
        writes={"compute": compute_seconds, **writes},
        write_rows=written,
    )
    result.met = result.of_limit >= 0.5 and result.over_baseline >= 50
    return result


def _scoring_naive_rate(
    user_ids: list[int], runs: dict[str, ModelRun], artifacts: dict[str, Any], as_of: datetime
) -> float:
    """The notebook way: per user, read their row, call the model on it, save one score row with the ORM."""
    started = time.perf_counter()
    written = 0
    for user_id in user_ids:
        for model, scorer in artifacts.items():
            row = user_frame(scorer.fields, as_of=as_of, user_ids=[user_id])
            scores = scorer.score(row, as_of=as_of)
            if scores.empty:
                continue
            first = scores.iloc[0]
            value = first.get("value")
            UserScore.objects.update_or_create(
                user_id=user_id,
                model=model,
                defaults={
                    "run": runs[model],
                    "score": None
                    if first.get("score") is None or np.isnan(first.get("score", NAN))
                    else float(first["score"]),
                    "value": None if value is None or value != value else Decimal(str(value)).quantize(Decimal("0.01")),
                    "label": str(first.get("label") or ""),
                    "scored_at": as_of,
                },
            )
            written += 1
    seconds = time.perf_counter() - started
    return written / seconds if written else NAN


SCORE_COLUMNS = ("user_id", "model", "run_id", "score", "value", "label", "scored_at")


def _scoring_copy_numpy(
    runs: dict[str, ModelRun], artifacts: dict[str, Any], as_of: datetime
) -> tuple[list[pd.DataFrame], float]:
    """COPY every user's fields out in one statement per model and score them with the fitted models: the limits'
    score rows, and the seconds that took (the limits' reading and computing, common to both)."""
    started = time.perf_counter()
    frames = []
    for model, scorer in artifacts.items():
        frame = user_frame(scorer.fields, as_of=as_of)
        scores = scorer.score(frame, as_of=as_of)
        n = len(scores)
        nothing = np.full(n, NAN)
        frames.append(
            pd.DataFrame(
                {
                    "user_id": scores.index.to_numpy(dtype=np.int64),
                    "model": model,
                    "run_id": runs[model].pk,
                    "score": scores["score"].to_numpy(dtype=float) if "score" in scores else nothing,
                    "value": np.round(scores["value"].to_numpy(dtype=float), 2) if "value" in scores else nothing,
                    "label": scores["label"].fillna("").astype(str).to_numpy() if "label" in scores else "",
                    "scored_at": pd.Timestamp(as_of),
                }
            )
        )
    return frames, time.perf_counter() - started


def _scoring_write_costs(frames: list[pd.DataFrame]) -> dict[str, float]:
    """Write the score rows into a table like ours, one design choice at a time, and as the product's upsert."""

    def write(cursor: Any, table: str) -> None:
        for frame in frames:
            bulk_insert_frame(cursor, table, frame)

    def upsert(cursor: Any, table: str) -> None:
        # The product's statement (analytics.services.scoring.scores_write), on the whole run at once.
        cursor.execute(
            "CREATE TEMPORARY TABLE bench_staging_scores (user_id bigint, model varchar(32), run_id bigint, "
            "score double precision, value numeric(14, 2), label varchar(64), scored_at timestamp with time zone) "
            "ON COMMIT DROP"
        )
        write(cursor, "bench_staging_scores")
        cursor.execute("ANALYZE bench_staging_scores")
        names = ", ".join(SCORE_COLUMNS)
        cursor.execute(
            f"""INSERT INTO {table} ({names}) SELECT {names} FROM bench_staging_scores WHERE TRUE
                ON CONFLICT (user_id, model) DO UPDATE SET run_id = EXCLUDED.run_id, score = EXCLUDED.score,
                    value = EXCLUDED.value, label = EXCLUDED.label, scored_at = EXCLUDED.scored_at"""
        )

    return write_costs(
        UserScore._meta.db_table,
        write,
        upsert=upsert,
        columns=SCORE_COLUMNS,
        variants=(
            "unlogged",
            "physical",
            "foreign_keys",
            "indexes",
            "same_schema",
            "upsert_empty",
            "upsert_full",
            "built_after",
        ),
    )


# ---------------------------------------------------------------------------------------------
# A campaign, issued and re-run

BENCH_RULES = (
    # (name, condition, offer kind, amount off, days, cost)
    ("likely buyers: 20 CNY coupon", "propensity >= 0.3", "coupon", Decimal("20.00"), None, Decimal("20.00")),
    (
        "at risk: a month of membership",
        'churn_risk in ["high", "medium"]',
        "membership_grant",
        None,
        30,
        Decimal("12.00"),
    ),
    ("film watchers: 10 CNY coupon", "watching_count >= 2", "coupon", Decimal("10.00"), None, Decimal("10.00")),
)


def bench_campaign_create() -> Campaign:
    """Create a fresh running campaign of three rules over score and feature fields, removing earlier bench
    campaigns."""
    bench_campaigns_delete()
    owner = Partner.objects.filter(kind="knowledge").order_by("pk").first()
    video = Partner.objects.filter(kind="video").order_by("pk").first() or owner
    if owner is None:
        raise ApplicationError("the benchmark's campaign needs a knowledge partner: run the world stage first")
    now = timezone.now()
    campaign = Campaign.objects.create(
        slug=f"{BENCH_CAMPAIGN_PREFIX}{secrets.token_hex(3)}",
        name="Benchmark campaign",
        owner=owner,
        starts_at=now - timedelta(days=1),
        ends_at=now + timedelta(days=30),
        timezone="Asia/Shanghai",
        budget=None,
        holdout_share=Decimal("0.10"),
        per_user_limit=2,
        offer_valid_days=14,
        status=Campaign.Status.RUNNING,
    )
    registry = condition_registry()
    for rank, (name, condition, kind, amount, days, cost) in enumerate(BENCH_RULES):
        Rule.objects.create(
            campaign=campaign,
            name=name,
            priority=300 - rank,
            exclusive=False,
            condition=to_json(validate_text(condition, registry)),
            offer_kind=kind,
            benefit_partner=video if kind == "membership_grant" else owner,
            amount_off=amount,
            days=days,
            cost=cost,
        )
    return campaign


def bench_campaigns_delete() -> None:
    """Remove the benchmark's campaigns with their assignments and offers (they never have redemptions)."""
    ids = list(Campaign.objects.filter(slug__startswith=BENCH_CAMPAIGN_PREFIX).values_list("pk", flat=True))
    if not ids:
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            # Set-based: the ORM's cascade would load every offer of a million-user run into memory first.
            cursor.execute("DELETE FROM campaigns_offer WHERE campaign_id = ANY(%s)", [ids])
            cursor.execute("DELETE FROM campaigns_campaignassignment WHERE campaign_id = ANY(%s)", [ids])
        Campaign.objects.filter(pk__in=ids).delete()


def stage_campaign(*, users: int) -> StageResult:
    """Evaluate the rules over every reachable user and issue offers; against a per-user loop and raw COPY of the
    offers."""
    require_postgresql()
    campaign = bench_campaign_create()
    baseline = _campaign_naive_rate(campaign)
    started = time.perf_counter()
    with eager_tasks():
        totals = campaign_run(campaign=campaign)
    seconds = time.perf_counter() - started
    issued = totals["issued"]
    rows, writes = _offers_write_costs(campaign)
    result = StageResult(
        "campaign evaluation + offer issuance",
        "offers/s",
        issued,
        issued / seconds,
        baseline,
        rows / writes["same_schema"] if rows else NAN,
        "≥ 1/3 of the limit (raw COPY of the offer rows)",
        peak_memory_mb(),
        seconds,
        note=f"{users:,} users, {totals['eligible']:,} eligible, {totals['holdout']:,} held out; "
        f"{Offer.objects.filter(campaign=campaign).count():,} offers stored",
        physical=rows / writes["physical"] if rows else NAN,
        writes=writes,
        write_rows=rows,
    )
    result.met = result.of_limit >= 1 / 3
    return result


def _campaign_naive_rate(campaign: Campaign) -> float:
    """The notebook way, in a throwaway copy of the campaign: per user, read fields, test each rule, one ORM insert
    per offer."""
    plans = campaign_rule_plans(campaign)
    fields = sorted({name for plan in plans for name in plan.fields})
    users = list(
        EndUser.objects.filter(erased_at__isnull=True, marketing_consent=True)
        .order_by("?")
        .values_list("pk", flat=True)[:NAIVE_USERS]
    )
    now = timezone.now()
    categories = item_category_sources()
    issued = 0
    started = time.perf_counter()
    with transaction.atomic():
        for user_id in users:
            values = user_frame(fields, as_of=now, user_ids=[user_id], item_categories=categories).iloc[0].to_dict()
            matching = [plan for plan in plans if plan.condition is None or evaluate_user(plan.condition, values)]
            if not matching:
                continue
            held = holdout_draw(campaign, np.array([user_id]))[0] < float(campaign.holdout_share)
            CampaignAssignment.objects.create(
                campaign=campaign,
                user_id=user_id,
                rule=matching[0].rule,
                arm=CampaignAssignment.HOLDOUT if held else CampaignAssignment.TREATMENT,
                assigned_at=now,
            )
            if held:
                continue
            for sequence, plan in enumerate(matching[: campaign.per_user_limit]):
                rule = plan.rule
                Offer.objects.create(
                    code=new_codes(1)[0],
                    campaign=campaign,
                    rule=rule,
                    user_id=user_id,
                    sequence=sequence,
                    allowance=campaign.per_user_limit,
                    kind=rule.offer_kind,
                    partner=rule.benefit_partner,
                    amount_off=rule.amount_off,
                    days=rule.days,
                    cost=rule.cost,
                    issued_at=now,
                    expires_at=now + timedelta(days=campaign.offer_valid_days),
                )
                issued += 1
        seconds = time.perf_counter() - started
        transaction.set_rollback(True)  # the sample's offers are not kept: the product run issues them
    return issued / seconds if issued else NAN


def _offers_write_costs(campaign: Campaign) -> tuple[int, dict[str, float]]:
    """COPY the campaign's offer rows, as issued, into tables like the offers table, one design choice at a time;
    return the rows and the seconds of each write."""
    buffer = io.BytesIO()
    with connection.cursor() as cursor:
        with cursor.cursor.copy(
            "COPY (SELECT * FROM campaigns_offer WHERE campaign_id = %s) TO STDOUT", (campaign.pk,)
        ) as copy:
            for block in copy:
                buffer.write(block)
        cursor.execute("SELECT COUNT(*) FROM campaigns_offer WHERE campaign_id = %s", [campaign.pk])
        rows = cursor.fetchone()[0]
    data = buffer.getvalue()
    if not rows:
        return 0, dict.fromkeys(("physical", "same_schema"), NAN)

    def write(cursor: Any, table: str) -> None:
        with cursor.cursor.copy(f"COPY {table} FROM STDIN") as copy:
            for offset in range(0, len(data), 1 << 20):
                copy.write(data[offset : offset + (1 << 20)])

    return rows, write_costs(
        "campaigns_offer",
        write,
        variants=("unlogged", "physical", "foreign_keys", "indexes", "same_schema", "built_after"),
    )


def stage_rerun(*, first_seconds: float, users: int) -> StageResult:
    """Run the same campaign again: it must issue nothing, in at most a fifth of the first run's time."""
    campaign = Campaign.objects.filter(slug__startswith=BENCH_CAMPAIGN_PREFIX).order_by("-pk").first()
    if campaign is None:
        raise ApplicationError(
            "no benchmark campaign to re-run: run the campaign stage first (bench --stages campaign rerun)"
        )
    started = time.perf_counter()
    with eager_tasks():
        totals = campaign_run(campaign=campaign)
    seconds = time.perf_counter() - started
    result = StageResult(
        "re-running the same campaign",
        "users/s",
        totals["issued"],
        users / seconds,
        users / first_seconds if first_seconds == first_seconds else NAN,
        NAN,
        "issues nothing, in ≤ 1/5 of the first run's time",
        peak_memory_mb(),
        seconds,
        note=f"issued {totals['issued']}; {totals['skipped_existing']:,} already handled; "
        "items = offers issued by the re-run, baseline = the first run",
    )
    result.met = totals["issued"] == 0 and result.over_baseline >= 5
    return result


# ---------------------------------------------------------------------------------------------
# GET users/{id}/offers/ under load

WRK_SCRIPT = """
local paths = {%(paths)s}
local counter = 0
local pause = %(pause)s
request = function()
  counter = counter + 1
  return wrk.format("GET", paths[(counter %% #paths) + 1], {["Authorization"] = "%(authorization)s"})
end
delay = function() return pause end
done = function(summary, latency, requests)
  io.write(string.format(
    'BENCH {"requests": %%d, "seconds": %%.6f, "errors": %%d, "status": %%d, "p50": %%.3f, "p99": %%.3f}\\n',
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def require_wrk() -> str:
    """The load stage's load generator: wrk, on the PATH (bench_run asks before any stage runs)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise ApplicationError("the load stage needs wrk: apt-get install wrk (Debian's package), or leave load out")
    return wrk


def _wrk(
    url_base: str, paths: list[str], *, authorization: str = "", seconds: float, connections: int, pause_ms: float = 0
) -> dict:
    """Drive the server with wrk for a fixed duration; return requests, requests/s, errors and latency percentiles
    in ms."""
    wrk = require_wrk()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            WRK_SCRIPT
            % {
                "paths": ", ".join(json.dumps(p) for p in paths),
                "authorization": authorization,
                "pause": round(pause_ms),
            }
        )
    try:
        output = subprocess.run(
            [
                wrk,
                "-t",
                "2",
                "-c",
                str(connections),
                "-d",
                f"{max(int(seconds), 1)}s",
                "--timeout",
                "5s",
                "-s",
                script.name,
                url_base,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
        )
    finally:
        Path(script.name).unlink(missing_ok=True)
    line = next(line for line in output.stdout.splitlines() if line.startswith("BENCH "))
    result = json.loads(line[len("BENCH ") :])
    result["rate"] = result["requests"] / result["seconds"]
    return result


def _wrk_at_rate(
    url_base: str, paths: list[str], *, authorization: str, seconds: float, rate: float, connections: int = 4
) -> dict:
    """Run wrk at about ``rate`` requests/s: each connection pauses between requests, the pause tuned on short runs."""
    pause = connections / rate * 1000
    for _ in range(3):
        probe = _wrk(url_base, paths, authorization=authorization, seconds=1, connections=connections, pause_ms=pause)
        # A connection's cycle is its pause plus the request's own time; aim the cycle at connections / rate.
        service = max(connections / probe["rate"] * 1000 - pause, 0) if probe["rate"] else 0
        pause = max(connections / rate * 1000 - service, 0)
    return _wrk(url_base, paths, authorization=authorization, seconds=seconds, connections=connections, pause_ms=pause)


def stage_offers_load(*, seconds: float) -> StageResult:
    """Load GET users/{id}/offers/ through gunicorn against the same answer from a bare Django view; then p99 at
    half rate."""
    require_postgresql()
    campaign = Campaign.objects.filter(slug__startswith=BENCH_CAMPAIGN_PREFIX).order_by("-pk").first()
    if campaign is None:
        raise ApplicationError("no benchmark campaign's offers to read: run the campaign stage first")
    partner = campaign.owner
    if partner is None:
        raise ApplicationError("the benchmark campaign has no owner partner whose users' offers could be read")
    users = list(
        Offer.objects.filter(campaign=campaign, user__home_partner=partner)
        .order_by("?")
        .values_list("user__external_id", flat=True)
        .distinct()[:2_000]
    )
    if not users:
        raise ApplicationError("the benchmark campaign issued no offers to its owner's users; nothing to read")
    key, raw_key = partner_api_key_create(partner=partner, name="bench-load")
    authorization = f"Api-Key {raw_key}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = serve(port)
    try:
        api = [f"/api/v1/users/{user}/offers/" for user in users]
        bare_paths = [f"/bench/bare/users/{user}/offers/" for user in users]
        for paths in (api, bare_paths):  # warm both workers' connections and caches
            _wrk(base, paths[:50], authorization=authorization, seconds=1, connections=4)
        health = _wrk(base, ["/healthz/"], seconds=seconds, connections=8)
        bare = _wrk(base, bare_paths, authorization=authorization, seconds=seconds, connections=8)
        full = _wrk(base, api, authorization=authorization, seconds=seconds, connections=8)
        half = _wrk_at_rate(base, api, authorization=authorization, seconds=seconds, rate=full["rate"] / 2)
    finally:
        server.terminate()
        server.wait(timeout=30)
        key.delete()
    errors = sum(run["errors"] + run["status"] for run in (bare, full, half))
    result = StageResult(
        "GET users/{id}/offers/ under load (gunicorn -w 2, wrk, loopback)",
        "req/s",
        full["requests"],
        full["rate"],
        NAN,
        bare["rate"],
        "≥ 70% of a bare Django JSON view; p99 ≤ 25 ms at half that rate",
        peak_memory_mb(),
        sum(run["seconds"] for run in (health, bare, full, half)),
        note=f"limit = the same answer from a bare Django view in raw SQL ({health['rate']:,.0f} req/s for "
        f"a view that reads nothing); p50 {full['p50']:.1f} ms, p99 {full['p99']:.1f} ms at full load; "
        f"p99 {half['p99']:.1f} ms at {half['rate']:,.0f} req/s (half); {errors} errors",
    )
    result.met = result.of_limit >= 0.7 and half["p99"] <= 25 and errors == 0
    return result
