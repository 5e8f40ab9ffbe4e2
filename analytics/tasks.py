"""Celery tasks of the analytics app; each takes JSON-safe arguments and is safe to run twice."""

from celery import shared_task

from .services.features import features_build


@shared_task(name="analytics.tasks.build_features", acks_late=True)
def build_features(full: bool = False) -> dict:
    """Rebuild per-user features from events (incrementally unless full)."""
    return {"users": features_build(full=full)}
