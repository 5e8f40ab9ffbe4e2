"""python manage.py bench [--stages ingest] [--events N]: the benchmark, on PostgreSQL."""

from django.core.management.base import BaseCommand, CommandError

from crossmkt_site.errors import ApplicationError

from ...services.bench import ROOT, STAGES, benchmarks_markdown


class Command(BaseCommand):
    help = ("Measure each stage three ways (the product, a naive per-row baseline, raw COPY as the limit) and write "
            "the table to BENCHMARKS.md. Built so far: ingest, features.")

    def add_arguments(self, parser):
        parser.add_argument("--stages", nargs="+", choices=sorted(STAGES), default=sorted(STAGES))
        parser.add_argument("--events", type=int, default=200_000, help="Events sent through the API (default 200,000).")
        parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))

    def handle(self, *args, stages, events, output, **options):
        if events < 1:
            raise CommandError("--events must be at least 1")
        results = []
        for name in stages:
            self.stderr.write(f"bench: {name} …")
            try:
                results.append(STAGES[name](n_events=events))
            except ApplicationError as error:
                raise CommandError(error.message) from None
        table = benchmarks_markdown(results, scale=f"{events:,} events")
        with open(output, "w", encoding="utf-8") as handle:
            handle.write(table)
        self.stdout.write(table)
