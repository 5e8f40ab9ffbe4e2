"""python manage.py score [--model …] [--wait]: score every user with the active model runs, on the workers."""

from django.core.management.base import BaseCommand, CommandError

from crossmkt_site.errors import ApplicationError
from crossmkt_site.groups import no_worker_note

from ...services.progress import progress_bar
from ...services.scoring import SCORED_MODELS, score_all, score_chunks


class Command(BaseCommand):
    help = "Score every user with each model's active run, split into chunks of user ids for the Celery workers."

    def add_arguments(self, parser):
        parser.add_argument("--model", choices=[*SCORED_MODELS, "all"], default="all")
        parser.add_argument(
            "--wait", action="store_true", help="Wait for the workers and report (always so when tasks run eagerly)."
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=None,
            help="Seconds to wait on the workers before giving up (default: WORKER_WAIT_TIMEOUT, 900).",
        )
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, model, wait, timeout, no_progress, **options):
        models = SCORED_MODELS if model == "all" else (model,)
        from crossmkt_site.celery import app

        wait = wait or app.conf.task_always_eager
        try:
            total = len(score_chunks()) * len(models)
            with progress_bar("scoring", total, enabled=wait and not no_progress) as advance:
                result = score_all(
                    models=models, wait=wait, timeout=timeout, on_chunk=lambda done, _total: advance(done)
                )
        except ApplicationError as error:
            raise CommandError(error.message) from None
        if not wait:
            self.stdout.write(
                f"queued {result['tasks']} scoring tasks (group {result['group_id']}); add --wait to follow them"
            )
            if note := no_worker_note():
                self.stderr.write(note)
            return
        for name, count in result.items():
            self.stdout.write(self.style.SUCCESS(f"{name}: {count} users scored"))
