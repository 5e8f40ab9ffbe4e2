"""python manage.py train --model MODEL [--json] [--observation-end DATE].

MODEL is one of {propensity,churn,clv,segments,recommendations,uplift,all}.
``all`` trains the models that learn from behaviour; ``uplift`` learns from past campaigns
with a holdout, so it is trained by name once campaigns have run.
"""

import datetime as dt
import json
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from analytics.services.registry import model_run_activate
from crossmkt_site.errors import ApplicationError

from ...services.training import CAMPAIGN_TRAINERS, TRAINERS
from ._reporting import report_training

MODELS = ("propensity", "churn", "clv", "segments", "recommendations")
CAMPAIGN_MODELS = ("uplift",)


def parse_observation_end(text: str | None) -> dt.datetime | None:
    """Read --observation-end as a date (midnight in TIME_ZONE) or an ISO 8601 time."""
    if text is None:
        return None
    from zoneinfo import ZoneInfo

    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(f"--observation-end {text!r} is not a date like 2026-09-06 or an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(settings.TIME_ZONE))


class Command(BaseCommand):
    help = (
        "Fit a model (or all), store it as a new version, activate it if the quality gate finds it no worse "
        "than the active one, and print its metrics and the gate's decision."
    )

    def add_arguments(self, parser):
        parser.add_argument("--model", choices=[*MODELS, *CAMPAIGN_MODELS, "all"], default="all")
        parser.add_argument(
            "--json",
            action="store_true",
            help='One JSON object per model: {"model", "version", "n_train", "params", "metrics", "is_active", '
            '"quality_gate"}.',
        )
        parser.add_argument("--observation-end", help="End of the calibration / feature period (date or ISO time).")
        activation = parser.add_mutually_exclusive_group()
        activation.add_argument(
            "--no-activate", action="store_true", help="Store the run without making it the active one."
        )
        activation.add_argument(
            "--force-activate",
            action="store_true",
            help="Make the new run active even where the quality gate finds it worse than the active one.",
        )

    def handle(self, *args, model, json: bool, observation_end, no_activate, force_activate, **options):
        trainers = {**TRAINERS, **CAMPAIGN_TRAINERS}
        names = MODELS if model == "all" else (model,)
        end = parse_observation_end(observation_end)
        for name in names:
            started = time.monotonic()
            try:
                run = trainers[name](observation_end=end, activate=not no_activate)
                if force_activate and not run.is_active:
                    run = model_run_activate(model=run.model, version=run.version, override_gate=True)
            except ApplicationError as error:
                raise CommandError(f"{name}: {error.message}") from None
            if json:
                self.stdout.write(
                    _json(
                        {
                            "model": run.model,
                            "version": run.version,
                            "n_train": run.n_train,
                            "params": run.params,
                            "metrics": run.metrics,
                            "is_active": run.is_active,
                            "quality_gate": run.quality_gate,
                        }
                    )
                )
            else:
                report_training(self, run, name=name, seconds=time.monotonic() - started)


def _json(data) -> str:
    return json.dumps(data, ensure_ascii=False, default=str)
