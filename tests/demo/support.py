"""Helpers of the tests that train on a loaded demo world: its planted truth, and a run held against it."""

from typing import Any

from analytics.models import ModelRun
from demo.selectors import demo_world_latest, model_run_truth


def loaded_truth() -> dict[str, Any]:
    """Return the planted truth of the loaded demo world (the module's `demo_world` fixture loads one)."""
    world = demo_world_latest()
    assert world is not None, "no demo world is loaded: the test needs the demo_world fixture"
    return world.truth


def run_against_truth(run: ModelRun) -> dict[str, Any]:
    """Hold a propensity, churn, CLV or segments run against the loaded world's planted truth."""
    comparison = model_run_truth(run=run, truth=loaded_truth())
    assert comparison is not None, f"{run.model} runs are not held against the planted truth"
    return comparison
