"""python manage.py campaign_report SLUG [--format text|json|csv]: what a campaign caused."""

import json

from django.core.management.base import BaseCommand, CommandError

from campaigns.selectors import campaign_get
from crossmkt_site.errors import ApplicationError

from ...presenters.campaign_report import render_csv, render_text
from ...reports.campaign_report import campaign_report


class Command(BaseCommand):
    help = "Print a campaign's funnel, uplift over the holdout with confidence intervals, cost and ROI."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--format", choices=["text", "json", "csv"], default="text")

    def handle(self, *args, slug, format, **options):
        try:
            report = campaign_report(campaign=campaign_get(slug=slug))
        except ApplicationError as error:
            raise CommandError(error.message) from None
        if format == "json":
            self.stdout.write(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
        elif format == "csv":
            self.stdout.write(render_csv(report), ending="")
        else:
            self.stdout.write(render_text(report))
