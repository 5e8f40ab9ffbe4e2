"""Reads of the demo: the loaded worlds, the planted truth of users, and fitted models held against that truth."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd

from analytics.models import ModelRun
from analytics.services.registry import model_run_artifact
from analytics.services.training.propensity import propensity_rows
from analytics.services.training.segments import segments_rows

from .comparison import churn_compare, clv_compare, propensity_compare, segments_compare
from .models import DemoWorld, PlantedUser


def demo_world_latest() -> DemoWorld | None:
    """Return the most recently loaded demo world, or None without one."""
    return DemoWorld.objects.order_by("-loaded_at", "-pk").first()


def demo_world_exists() -> bool:
    """Return whether any demo world is loaded."""
    return DemoWorld.objects.exists()


def planted_users() -> pd.DataFrame:
    """Return every demo user's planted segment and purchase probability, by user id."""
    columns = ["user_id", "segment", "purchase_probability"]
    frame = pd.DataFrame(list(PlantedUser.objects.values_list(*columns)), columns=columns).set_index("user_id")
    return frame.astype({"purchase_probability": float})


def model_run_truth(*, run: ModelRun, truth: dict[str, Any]) -> dict[str, Any] | None:
    """Hold a stored propensity, churn, CLV or segments run against the planted truth (None for other models).

    What the run was fitted on is read again with its own parameters, so a propensity or
    segments run should be compared before the data it was trained on changes.
    """
    if run.model == ModelRun.Model.PROPENSITY:
        rows = propensity_rows(
            observation_end=datetime.fromisoformat(run.params["observation_end"]),
            label_window_days=run.params["label_window_days"],
            target_course=run.params["target_course"],
        )
        rows["true_probability"] = planted_users()["purchase_probability"].reindex(rows.index)
        return propensity_compare(
            params=run.params,
            metrics=run.metrics,
            scorer=model_run_artifact(run),
            rows=rows,
            planted=truth["propensity"],
        )
    if run.model == ModelRun.Model.CHURN:
        return churn_compare(metrics=run.metrics, planted=truth["churn"])
    if run.model == ModelRun.Model.CLV:
        return clv_compare(params=run.params, truth=truth)
    if run.model == ModelRun.Model.SEGMENTS:
        counts, exposure = segments_rows(as_of=datetime.fromisoformat(run.params["as_of"]))
        planted = planted_users()["segment"]
        return segments_compare(scorer=model_run_artifact(run), counts=counts, exposure=exposure, planted=planted)
    return None
