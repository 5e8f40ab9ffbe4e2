"""python manage.py load_stock SLUG FILE.csv --kind {movie_ticket,free_viewing}: a partner's ticket or trial codes."""

from django.core.management.base import BaseCommand, CommandError

from crossmkt_site.errors import ApplicationError

from ...models import StockItem
from ...selectors import partner_get
from ...services.stock import stock_load_file


class Command(BaseCommand):
    help = (
        "Load a partner's movie-ticket or free-viewing codes from a CSV with columns code,value,expires_at "
        "(value in CNY; expires_at an ISO 8601 time or date, read in TIME_ZONE without an offset). "
        "All or nothing: any bad row loads nothing and is named by line. Codes already loaded are skipped."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug", help="The partner whose codes these are.")
        parser.add_argument("file")
        parser.add_argument("--kind", required=True, choices=StockItem.Kind.values)
        parser.add_argument(
            "--paid-on-use",
            action="store_true",
            help="The partner bills these codes only when used. Without it a movie ticket was bought in advance "
            "and costs its value from the moment an offer takes it.",
        )

    def handle(self, *args, slug, file, kind, paid_on_use, **options):
        try:
            result = stock_load_file(partner=partner_get(slug=slug), kind=kind, path=file, paid_on_use=paid_on_use)
        except ApplicationError as error:
            raise CommandError(error.message) from None
        self.stdout.write(
            self.style.SUCCESS(
                f"{slug}: loaded {result.loaded} {kind} codes; {result.already_present} were already loaded"
            )
        )
