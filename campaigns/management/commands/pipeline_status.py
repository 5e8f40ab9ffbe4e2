"""python manage.py pipeline_status [--json]: the pipeline health figures, as the admin page and /metrics show them."""

from typing import TextIO, cast

from django.core.management.base import BaseCommand
from django.utils import translation
from rich.console import Console
from rich.table import Table

from ...presenters.pipeline_status import pipeline_status_json, pipeline_status_tables
from ...selectors.pipeline_health import pipeline_health


class Command(BaseCommand):
    help = (
        "Print the pipeline's health: events accepted per partner, offers issued, deal grants, webhook "
        "deliveries, and each model's active run, last training (with the quality gate's decision) and last scoring."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="One JSON object instead of tables.")

    def handle(self, *args, json: bool, **options):
        health = pipeline_health()
        if json:
            self.stdout.write(pipeline_status_json(health))
            return
        # As wide as the text needs: a quality gate's sentence is long, and a pipe has no terminal width.
        console = Console(file=cast(TextIO, self.stdout), width=200, no_color=True, highlight=False, soft_wrap=False)
        with translation.override("en"):  # as every other command's output
            for table in pipeline_status_tables(health):
                if not table.rows:
                    console.print(f"{table.title}: {table.note}")
                    continue
                view = Table(title=table.title, title_justify="left")
                for column in table.columns:
                    view.add_column(column, overflow="fold")
                for row in table.rows:
                    view.add_row(*row)
                console.print(view)
                if table.note:
                    console.print(table.note)
                console.print()
