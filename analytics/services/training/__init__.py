"""Trainers: one function per model that reads the database, fits, and stores a versioned model run.

Every trainer returns the stored ``ModelRun``, whose ``params`` and ``metrics`` are JSON-safe.
``TRAINERS`` maps the models that learn from behaviour alone to theirs, called as
``train_<model>(*, observation_end=None, activate=True)``. The recommendations and uplift
trainers also take the catalog and past experiments, which the campaigns side reads and passes
in (``campaigns.services.training``, behind ``python manage.py train``). A model's line names
its module and function; a module not written yet is left out.
"""

from collections.abc import Callable
from importlib import import_module
from importlib.util import find_spec

from ...models import ModelRun

Trainer = Callable[..., ModelRun]


def _trainer(module: str, function: str) -> Trainer | None:
    """Return the trainer function of a module of this package, or None while the module does not exist."""
    if find_spec(f"{__name__}.{module}") is None:
        return None
    return getattr(import_module(f"{__name__}.{module}"), function)


TRAINERS: dict[str, Trainer] = {
    name: trainer
    for name, trainer in {
        "propensity": _trainer("propensity", "train_propensity"),
        "churn": _trainer("churn", "train_churn"),
        "clv": _trainer("clv", "train_clv"),
        "segments": _trainer("segments", "train_segments"),
    }.items()
    if trainer is not None
}
