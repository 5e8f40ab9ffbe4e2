"""Train every model ``manage.py train`` knows: analytics fits them; the catalog and past campaigns come from here.

``TRAINERS`` maps the model names to trainers called as ``trainer(*, observation_end=None,
activate=True)``, in the order ``--model all`` runs them; ``CAMPAIGN_TRAINERS`` holds those that
learn from past campaigns, not in ``all``: a fresh world has run no campaign yet, so
``train --model uplift`` runs them by name.
"""

from collections.abc import Callable, Sequence
from datetime import datetime

from analytics.models import ModelRun
from analytics.services import training
from analytics.services.training.recommendations import train_recommendations
from analytics.services.training.uplift import train_uplift
from analytics.services.uplift import experiment_rows
from crossmkt_site.errors import ApplicationError

from ..selectors.recommendations import bundled_pairs, catalog_frame
from ..selectors.uplift_experiments import uplift_experiments


def recommendations_train(
    *,
    observation_end: datetime | None = None,
    data_end: datetime | None = None,
    excluded_items: Sequence[str] = (),
    activate: bool = True,
) -> ModelRun:
    """Train the cross-domain recommender on today's catalog and its bundles."""
    return train_recommendations(
        catalog=catalog_frame(),
        bundled=bundled_pairs(),
        observation_end=observation_end,
        data_end=data_end,
        excluded_items=excluded_items,
        activate=activate,
    )


def uplift_train(*, observation_end: datetime | None = None, activate: bool = True) -> ModelRun:
    """Train the uplift models on every past experiment with a holdout."""
    experiments, skipped = uplift_experiments()
    return train_uplift(
        rows=experiment_rows(experiments, skipped=skipped), observation_end=observation_end, activate=activate
    )


TRAINERS: dict[str, Callable[..., ModelRun]] = {**training.TRAINERS, "recommendations": recommendations_train}
CAMPAIGN_TRAINERS: dict[str, Callable[..., ModelRun]] = {"uplift": uplift_train}


# The task that retrains every behaviour model, queued by beat (weekly) by name.
RETRAIN_TASK = "campaigns.tasks.retrain_models"


def models_retrain() -> dict[str, dict]:
    """Train every model ``train --model all`` trains, as that command does; report each model's new run or error.

    A model that cannot be trained now (too little data, say) is reported and the others still are.
    """
    done: dict[str, dict] = {}
    for name, trainer in TRAINERS.items():
        try:
            run = trainer(observation_end=None, activate=True)
        except ApplicationError as error:
            done[name] = {"error": error.message}
            continue
        done[name] = {"run": run.pk, "version": run.version, "active": run.is_active}
    return done
