"""Training on the demo world: the production trainers, given the setup the planted truth states.

The trainers take their dates, target course and reference levels as arguments and read
nothing of the demo; this module reads them from the truth and passes them in, as a user who
knows their data would.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from analytics.models import ModelRun
from campaigns.services.training import TRAINERS

from ..comparison import truth_time


def demo_excluded_items(truth: dict[str, Any]) -> tuple[str, ...]:
    """Return the course SKUs whose purchases the demo truth leaves out of the purchase process."""
    # The propensity label alone plants purchases of the target course, after the observation end.
    return (truth["propensity"]["target_course"],)


def demo_training_options(truth: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return, per model of ``TRAINERS``, the keyword arguments that train it on the demo world's stated setup.

    Propensity: the truth's observation end, label window, target course and reference levels.
    Churn: the world's end as the data end, the truth's reference channel. CLV and
    recommendations: the truth's calibration end, the held-out period up to the world's end,
    the target course left out (its purchases are planted by the propensity label, not by the
    purchase process). Segments: as of now.
    """
    propensity, world_end = truth["propensity"], truth_time(truth["world"]["end"])
    observation_end = truth_time(propensity["observation_end"])
    calibration_end = truth_time(truth["purchase_process"]["fitting_convention"]["calibration_end"])
    # The generator stops at the world's end.
    data_end = min(timezone.now(), world_end)
    excluded = demo_excluded_items(truth)
    return {
        "propensity": {
            "observation_end": observation_end,
            "label_window_days": (truth_time(propensity["label_window_end"]) - observation_end).days,
            "target_course": propensity["target_course"],
            "reference_levels": propensity["reference_levels"],
        },
        "churn": {
            "observation_end": world_end,
            "reference_level": truth["churn"]["reference_levels"]["acquisition_channel"],
        },
        "clv": {"observation_end": calibration_end, "data_end": data_end, "excluded_items": excluded},
        "segments": {},
        "recommendations": {"observation_end": calibration_end, "data_end": data_end, "excluded_items": excluded},
    }


def demo_model_train(*, model: str, truth: dict[str, Any], activate: bool = True) -> ModelRun:
    """Train one model of ``TRAINERS`` on the demo world with the setup its truth states."""
    return TRAINERS[model](activate=activate, **demo_training_options(truth)[model])
