"""python manage.py train --model MODEL [--json] [--observation-end DATE] [--holdout-end DATE].

MODEL is one of {propensity,churn,clv,segments,recommendations,uplift,all}.
``all`` trains the models that learn from behaviour; ``uplift`` learns from past campaigns
with a holdout, so it is trained by name once campaigns have run.
"""

import datetime as dt
import json
import time
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from analytics.services.registry import model_run_activate
from crossmkt_site.errors import ApplicationError

from ...services.training import CAMPAIGN_TRAINERS, TRAINERS
from ._reporting import report_training

MODELS = ("propensity", "churn", "clv", "segments", "recommendations")
CAMPAIGN_MODELS = ("uplift",)


DATE_CONVENTION = (
    "A DATE (2026-09-06) means through the end of that day in TIME_ZONE, as lifetimes' calibration_period_end "
    "does; an ISO 8601 time is the exclusive end itself (without an offset, in TIME_ZONE)."
)


def parse_end(text: str | None, *, option: str = "--observation-end") -> dt.datetime | None:
    """Read an end option: a date is through the end of that day in TIME_ZONE, an ISO 8601 time is the end itself.

    The end is exclusive either way: ``1997-09-30`` gives 1997-10-01 00:00 in TIME_ZONE, so
    every purchase made on 30 September counts.
    """
    if text is None:
        return None
    zone = ZoneInfo(settings.TIME_ZONE)
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        day = None
    if day is not None:
        return dt.datetime.combine(day + dt.timedelta(days=1), dt.time.min, tzinfo=zone)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(f"{option} {text!r} is not a date like 2026-09-06 or an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


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
        parser.add_argument(
            "--observation-end",
            metavar="DATE",
            help="End of the calibration / feature period. " + DATE_CONVENTION.replace("%", "%%"),
        )
        parser.add_argument(
            "--holdout-end",
            metavar="DATE",
            help="End of the CLV holdout comparison (default: through the day of the last stored event). "
            + DATE_CONVENTION.replace("%", "%%"),
        )
        activation = parser.add_mutually_exclusive_group()
        activation.add_argument(
            "--no-activate", action="store_true", help="Store the run without making it the active one."
        )
        activation.add_argument(
            "--force-activate",
            action="store_true",
            help="Make the new run active even where the quality gate finds it worse than the active one.",
        )

    def handle(self, *args, model, json: bool, observation_end, holdout_end, no_activate, force_activate, **options):
        trainers = {**TRAINERS, **CAMPAIGN_TRAINERS}
        names = MODELS if model == "all" else (model,)
        end = parse_end(observation_end, option="--observation-end")
        holdout = parse_end(holdout_end, option="--holdout-end")
        if holdout is not None and "clv" not in names:
            raise CommandError("--holdout-end ends the CLV holdout comparison; use it with --model clv or all")
        for name in names:
            started = time.monotonic()
            # Only the lifetime-value models are judged on a holdout after the observation end.
            extra = {"data_end": holdout} if name == "clv" and holdout is not None else {}
            try:
                run = trainers[name](observation_end=end, activate=not no_activate, **extra)
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
