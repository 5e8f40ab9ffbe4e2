"""python manage.py import_behavior FILE.csv: the article's per-user table."""

from django.core.management.base import BaseCommand, CommandError

from analytics.services.imports import BEHAVIOR_OPTIONAL
from crossmkt_site.errors import ApplicationError

from ...services.intake import behavior_import_file
from ._reporting import report_import


class Command(BaseCommand):
    help = (
        "Import the per-user table with columns user_id,watching_count,purchasing_count,age,education,occupation,"
        f"purchased_course. Also understood: {','.join(BEHAVIOR_OPTIONAL)}; any other column is kept with the row. "
        "UTF-8 (with or without BOM) or GBK. Re-importing the same file changes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--partner", help="Home partner of new users (default: the only knowledge platform).")
        parser.add_argument("--encoding", help="Override the detected encoding (utf-8, utf-8-sig, gbk).")
        parser.add_argument("--no-progress", action="store_true", help="Do not draw a progress bar.")
        parser.add_argument(
            "--show-rejected", type=int, default=50, help="How many rejected rows to list (default 50)."
        )

    def handle(self, *args, file, partner, encoding, no_progress, show_rejected, **options):
        try:
            result = behavior_import_file(file, partner=partner, encoding=encoding, progress=not no_progress)
        except ApplicationError as error:
            raise CommandError(error.message) from None
        report_import(self, result, noun="users", show_rejected=show_rejected)
