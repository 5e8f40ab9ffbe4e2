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

    def handle(self, *args, slug, file, kind, **options):
        try:
            result = stock_load_file(partner=partner_get(slug=slug), kind=kind, path=file)
        except ApplicationError as error:
            raise CommandError(error.message) from None
        self.stdout.write(
            self.style.SUCCESS(
                f"{slug}: loaded {result.loaded} {kind} codes; {result.already_present} were already loaded"
            )
        )
