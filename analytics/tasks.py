"""Celery tasks of the analytics app; each takes JSON-safe arguments and is safe to run twice."""

from celery import shared_task
from django.db import InterfaceError, OperationalError

from .services.features import features_build
from .services.scoring import REFRESH_TASK, SCORE_CHUNK_TASK, features_and_scores_refresh, score_chunk


@shared_task(name="analytics.tasks.build_features", acks_late=True)
def build_features(full: bool = False) -> dict:
    """Rebuild per-user features from events (incrementally unless full)."""
    return {"users": features_build(full=full)}


@shared_task(name=SCORE_CHUNK_TASK, acks_late=True, reject_on_worker_lost=True)
def score_users_chunk(model: str, low: int, high: int) -> int:
    """Score one range of user ids with a model's active run; scoring twice leaves one row per user."""
    return score_chunk(model=model, id_range=(low, high))


@shared_task(
    name=REFRESH_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    max_retries=3,
)
def refresh_features_and_scores() -> dict:
    """Rebuild everyone's features and queue everyone's scoring with the active runs (scheduled nightly by beat)."""
    return features_and_scores_refresh()
