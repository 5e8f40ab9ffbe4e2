"""The model registry: versioned runs with parameters, metrics, data window and the fitted artifact."""

import io
import pickle
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import Max

from crossmkt_site.errors import ApplicationError

from ..models import ModelRun
from .quality_gate import ACTIVATING_DECISIONS, FORCED, KEPT, NOT_REQUESTED, quality_gate_record


def model_run_save(
    *,
    model: str,
    params: dict,
    metrics: dict,
    n_train: int,
    artifact: object,
    data_start: datetime | None = None,
    data_end: datetime | None = None,
    activate: bool = True,
) -> ModelRun:
    """Store a fitted model as the next version of its kind, and make it the active one if it passes the gate.

    With ``activate`` the run becomes active unless the quality gate finds its held-out metric
    worse than the active run's beyond the standard error of the difference; then it is kept
    inactive (``model_run_activate(..., override_gate=True)`` activates it anyway). What the gate
    decided, and on which figures, is stored on the run either way.
    """
    buffer = io.BytesIO()
    pickle.dump(artifact, buffer, protocol=pickle.HIGHEST_PROTOCOL)
    for attempt in range(5):
        try:
            with transaction.atomic():
                version = (ModelRun.objects.filter(model=model).aggregate(v=Max("version"))["v"] or 0) + 1
                # Locked so that two trainings finishing together are each judged against the run they replace.
                active = (
                    ModelRun.objects.select_for_update().filter(model=model, is_active=True).defer("artifact").first()
                )
                gate = quality_gate_record(model=model, metrics=metrics, active=active, activate=activate)
                activates = gate["decision"] in ACTIVATING_DECISIONS
                if activates:
                    ModelRun.objects.filter(model=model, is_active=True).update(is_active=False)
                return ModelRun.objects.create(
                    model=model,
                    version=version,
                    is_active=activates,
                    quality_gate=gate,
                    params=params,
                    metrics=metrics,
                    n_train=n_train,
                    artifact=buffer.getvalue(),
                    data_start=data_start,
                    data_end=data_end,
                )
        except IntegrityError:
            # Two trainings finished at once and took the same version number; take the next.
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


def model_run_active(*, model: str) -> ModelRun:
    """Return the active run of a model, or a clear error saying how to train one."""
    run = ModelRun.objects.filter(model=model, is_active=True).first()
    if run is None:
        raise ApplicationError(
            f"no trained {model} model yet; run: python manage.py train --model {model}",
            code="not_trained",
            field="model",
        )
    return run


def model_run_artifact(run: ModelRun):
    """Return the fitted object stored with a run (written by this project only, never from outside)."""
    if run.artifact is None:
        raise TypeError(f"model run {run.pk} has no stored artifact")  # as bytes(None) would fail
    return pickle.loads(bytes(run.artifact))


@transaction.atomic
def model_run_activate(*, model: str, version: int, override_gate: bool = False) -> ModelRun:
    """Make one stored version the active one (to roll back a worse model).

    With ``override_gate`` (an operator's ``train --force-activate``) a run the quality gate
    kept is activated and its record says it was forced.
    """
    run = ModelRun.objects.select_for_update().filter(model=model, version=version).defer("artifact").first()
    if run is None:
        raise ApplicationError(f"no {model} model version {version}", code="not_found", field="version", status=404)
    ModelRun.objects.filter(model=model, is_active=True).exclude(pk=run.pk).update(is_active=False)
    updates: dict = {"is_active": True}
    if override_gate and run.quality_gate.get("decision") in (KEPT, NOT_REQUESTED):
        updates["quality_gate"] = run.quality_gate | {"decision": FORCED, "overridden": run.quality_gate["decision"]}
    ModelRun.objects.filter(pk=run.pk).update(**updates)
    for name, value in updates.items():
        setattr(run, name, value)
    return run
