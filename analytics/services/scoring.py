"""Batch scoring: every user with the active model runs, in chunks of ids that any worker can take.

A fitted artifact is a *scorer*: it names the user fields it reads (``fields``, from
``analytics.selectors.USER_FIELDS``) and turns a frame of them into a frame with a
``score`` (probability or risk, float), a ``value`` (money, CNY) and a ``label`` (segment
or band) per user. Each chunk reads its users in one query and writes one current row per
user and model with a set-based upsert, so scoring twice leaves exactly one row each.
"""

from datetime import datetime
from typing import Protocol, cast

import numpy as np
import pandas as pd
from celery import group, signature
from django.db import connection, transaction
from django.db.models import Value
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from crossmkt_site.bulk import bulk_insert_frame
from crossmkt_site.groups import results_as_they_finish, workers_require

from ..models import ModelRun, UserScore
from ..selectors import user_frame, user_id_ranges
from .features import features_build
from .registry import model_run_active, model_run_artifact

# About a second of work per model on the benchmark machine; small enough for a fair share per worker.
SCORE_CHUNK_USERS = 100_000
SCORED_MODELS = ("propensity", "churn", "clv", "segments")
# Queued by name (analytics/tasks.py registers it), so this module and the tasks never import each other.
SCORE_CHUNK_TASK = "analytics.tasks.score_users_chunk"


class Scorer(Protocol):
    fields: tuple[str, ...]

    def score(self, frame: pd.DataFrame, *, as_of: datetime) -> pd.DataFrame:
        """Return a frame indexed like ``frame`` with columns score, value, label (any may be missing)."""


def score_chunks(*, chunk_users: int = SCORE_CHUNK_USERS) -> list[tuple[int, int]]:
    return user_id_ranges(size=chunk_users)


def scores_write(*, run: ModelRun, scores: pd.DataFrame, scored_at: datetime) -> int:
    """Upsert one current score row per user for a run's model; return how many rows were written."""
    if scores.empty:
        return 0
    n = len(scores)
    nothing = pd.Series(np.nan, index=scores.index)
    rows = pd.DataFrame(
        {
            "user_id": scores.index.to_numpy(dtype=np.int64),
            "model": run.model,
            "run_id": run.pk,
            # NaN goes in as NULL: PostgreSQL would store NaN as a number larger than any other.
            "score": pd.to_numeric(scores.get("score", nothing), errors="coerce").astype(float).to_numpy(),
            # Money to the fen, as the numeric(14, 2) column keeps it.
            "value": pd.to_numeric(scores.get("value", nothing), errors="coerce").astype(float).round(2).to_numpy(),
            "label": (
                scores["label"].fillna("").astype(str) if "label" in scores else pd.Series([""] * n, index=scores.index)
            ).to_numpy(dtype=object),
            "scored_at": pd.Timestamp(scored_at),
        }
    )
    columns = list(rows.columns)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS staging_scores")
        cursor.execute(
            "CREATE TEMPORARY TABLE staging_scores (user_id bigint, model varchar(32), run_id bigint, "
            "score double precision, value numeric(14, 2), label varchar(64), scored_at timestamp with time zone)"
        )
        bulk_insert_frame(cursor, "staging_scores", rows)
        cursor.execute(
            f"""INSERT INTO {UserScore._meta.db_table} ({", ".join(columns)})
                SELECT {", ".join(columns)} FROM staging_scores WHERE TRUE
                ON CONFLICT (user_id, model) DO UPDATE SET run_id = EXCLUDED.run_id, score = EXCLUDED.score,
                    value = EXCLUDED.value, label = EXCLUDED.label, scored_at = EXCLUDED.scored_at"""
        )
        written = cursor.rowcount
        cursor.execute("DROP TABLE staging_scores")
    # Once the caller's transaction commits (at once outside one), so that chunks and live drains scoring
    # at once do not queue on the run's row: a live drain scores inside the transaction that decides and
    # issues, and holding this row's lock to its end made two drains take turns.
    transaction.on_commit(
        lambda: ModelRun.objects.filter(pk=run.pk).update(
            last_scored_at=Greatest(Coalesce("last_scored_at", Value(scored_at)), Value(scored_at))
        )
    )
    return written


def score_chunk(*, model: str, id_range: tuple[int, int], as_of: datetime | None = None) -> int:
    """Score one range of user ids with the model's active run; return how many users were scored."""
    as_of = as_of or timezone.now()
    run = model_run_active(model=model)
    scorer: Scorer = model_run_artifact(run)
    frame = user_frame(scorer.fields, as_of=as_of, id_range=id_range)
    written = 0
    if len(frame):  # not frame.empty: a scorer may read no columns and still score every row
        written = scores_write(run=run, scores=scorer.score(frame, as_of=as_of), scored_at=as_of)
    # A user the model no longer scores (a member who cancelled, say) must not keep a stale score.
    UserScore.objects.filter(model=model, user_id__gte=id_range[0], user_id__lt=id_range[1]).exclude(
        scored_at=as_of
    ).delete()
    return written


# Unpickled scorers by model run id: a run's artifact never changes, and the live path scores a few
# users at a time, where unpickling a model each time would cost more than scoring them.
_SCORERS: dict[int, Scorer] = {}


def _scorer(run: ModelRun) -> Scorer:
    scorer = _SCORERS.get(run.pk)
    if scorer is None:
        if len(_SCORERS) > 32:
            _SCORERS.clear()
        scorer = _SCORERS[run.pk] = model_run_artifact(run)
    return scorer


def score_users(*, user_ids, as_of: datetime | None = None, models=SCORED_MODELS) -> dict[str, int]:
    """Score these users with each model's active run (a model without one is passed over); return counts.

    The live path calls this after refreshing the users' features, so every score it leaves
    carries its run and a ``scored_at`` later than the events it was computed from.
    """
    as_of = as_of or timezone.now()
    ids = sorted({int(pk) for pk in user_ids})
    scored: dict[str, int] = {}
    if not ids:
        return scored
    runs = {run.model: run for run in ModelRun.objects.filter(model__in=models, is_active=True)}
    scorers = {model: _scorer(runs[model]) for model in models if model in runs}
    if not scorers:
        return scored
    # One read of every field the scorers need: a few hundred scattered users cost a query each, not their rows.
    fields = list(dict.fromkeys(name for scorer in scorers.values() for name in scorer.fields))
    users = user_frame(fields, as_of=as_of, id_range=(ids[0], ids[-1] + 1), user_ids=ids)
    for model, scorer in scorers.items():
        frame = users[list(scorer.fields)]
        scored[model] = (
            scores_write(run=runs[model], scores=scorer.score(frame, as_of=as_of), scored_at=as_of) if len(frame) else 0
        )
        _stale_scores_delete(model=model, user_ids=ids, scored_at=as_of)
    return scored


def _stale_scores_delete(*, model: str, user_ids: list[int], scored_at: datetime) -> None:
    """Delete these users' scores by ``model`` not written at ``scored_at`` (a user the model no longer scores)."""
    if connection.vendor != "postgresql":
        UserScore.objects.filter(model=model, user_id__in=user_ids).exclude(scored_at=scored_at).delete()
        return
    # Joined with the ids, so each user is one probe of the (user_id, model) unique index. Written as
    # ``user_id IN (…)``, the planner took the (model, score) index and read every score of the model:
    # 0.14 s a model for 500 live users over a million, most of a drain.
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {UserScore._meta.db_table} s USING unnest(%s::bigint[]) AS t(user_id) "
            "WHERE s.user_id = t.user_id AND s.model = %s AND s.scored_at <> %s",
            [user_ids, model, scored_at],
        )


# The nightly refresh, queued by beat by name (analytics/tasks.py registers it).
REFRESH_TASK = "analytics.tasks.refresh_features_and_scores"


def features_and_scores_refresh() -> dict:
    """Rebuild every user's features, then queue the scoring of everyone by every model that has an active run."""
    users = features_build(full=True)
    models = tuple(ModelRun.objects.filter(model__in=SCORED_MODELS, is_active=True).values_list("model", flat=True))
    queued = score_all(models=models, wait=False) if models else {}
    return {"features": users, "scoring": queued}


def score_all(
    *,
    models=SCORED_MODELS,
    wait: bool = True,
    on_chunk=None,
    chunk_users: int = SCORE_CHUNK_USERS,
    timeout: float | None = None,
) -> dict:
    """Score every user with each model's active run, chunk by chunk on the workers (in process when eager).

    When waiting, a worker must answer before anything is queued, and the wait ends after
    ``timeout`` seconds (default: the WORKER_WAIT_TIMEOUT setting) with what is still pending.
    """
    for model in models:
        model_run_active(model=model)  # a clear error before any worker starts
    chunks = score_chunks(chunk_users=chunk_users)
    if wait:
        workers_require()
    job = group(
        signature(SCORE_CHUNK_TASK, args=(model, lo, hi)) for model in models for lo, hi in chunks
    ).apply_async()
    if not wait:
        return {"tasks": len(job.results), "group_id": job.id}
    scored = dict.fromkeys(models, 0)
    task_models = [model for model in models for _ in chunks]
    labels = [f"{model} users {lo}-{hi - 1}" for model in models for lo, hi in chunks]
    for done, (position, count) in enumerate(results_as_they_finish(job, labels=labels, timeout=timeout), 1):
        # Each task is score_chunk, which returns the number of users it scored.
        scored[task_models[position]] += cast(int, count)
        if on_chunk:
            on_chunk(done, len(job.results))
    return scored
