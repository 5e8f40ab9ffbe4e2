"""python manage.py import_events FILE.csv: behaviour events, streamed, idempotent, every bad row named."""

from django.core.management.base import BaseCommand, CommandError

from crossmkt_site.errors import ApplicationError

from ...services.intake import events_import_file
from ._reporting import report_import


class Command(BaseCommand):
    help = (
        "Import behaviour events from a CSV with columns event_id,user_id,partner,kind,item_id,amount,occurred_at "
        "(UTF-8 with or without BOM, or GBK). Times without an offset are read in TIME_ZONE. "
        "Re-importing adds nothing; a user id not seen before creates that user, "
        "without marketing or data-sharing consent."
    )

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--encoding", help="Override the detected encoding (utf-8, utf-8-sig, gbk).")
        parser.add_argument("--no-progress", action="store_true", help="Do not draw a progress bar.")
        parser.add_argument(
            "--show-rejected", type=int, default=50, help="How many rejected rows to list (default 50)."
        )

    def handle(self, *args, file, encoding, no_progress, show_rejected, **options):
        try:
            result = events_import_file(file, encoding=encoding, progress=not no_progress)
        except ApplicationError as error:
            raise CommandError(error.message) from None
        report_import(self, result, noun="events", show_rejected=show_rejected)
