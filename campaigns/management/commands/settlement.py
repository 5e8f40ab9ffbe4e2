"""python manage.py settlement DEAL_SLUG --period YYYY-MM [--issue] [--correct] [--format text|csv|json]."""

import json

from django.core.management.base import BaseCommand, CommandError

from crossmkt_site.errors import ApplicationError

from ...models import Deal, SettlementStatement
from ...presenters.settlement import render_csv, render_text, settlement_as_dict
from ...selectors.settlement import PERIOD_HELP, period_parse, settlement_get
from ...services.settlement import settlement_correct, settlement_issue


class Command(BaseCommand):
    help = (
        "Show what the two partners of a deal owe each other for a month (in the deal's time zone): the issued "
        "statement if there is one, else a draft computed now. --issue freezes a finished month; --correct books "
        "correction lines on an issued month for anything that changed since."
    )

    def add_arguments(self, parser):
        parser.add_argument("deal", help="The deal's slug.")
        parser.add_argument("--period", required=True, help=PERIOD_HELP)
        action = parser.add_mutually_exclusive_group()
        action.add_argument("--issue", action="store_true", help="Issue the month's statement (again: no change).")
        action.add_argument("--correct", action="store_true", help="Book corrections on the issued statement.")
        parser.add_argument("--format", choices=["text", "csv", "json"], default="text")

    def handle(self, *args, deal, period, issue, correct, format, **options):
        try:
            month = period_parse(period)
            found = Deal.objects.select_related("source_partner", "target_partner").filter(slug=deal).first()
            if found is None:
                raise ApplicationError(f"no deal {deal!r}; list them in the admin or with GET /api/v1/deals/")
            if issue:
                sheet = settlement_issue(deal=found, period=month, issued_by="manage.py settlement")
            elif correct:
                issued = SettlementStatement.objects.filter(status=SettlementStatement.Status.ISSUED)
                statement = issued.filter(deal=found, period=month).first()
                if statement is None:
                    raise ApplicationError(f"{period} of {deal!r} is not issued yet; issue it with --issue first")
                booked = settlement_correct(statement=statement, reason="manage.py settlement --correct")
                self.stderr.write(f"{len(booked)} correction lines booked")
                sheet = settlement_get(deal=found, period=month)
            else:
                sheet = settlement_get(deal=found, period=month)
        except ApplicationError as error:
            raise CommandError(error.message) from None
        if format == "json":
            self.stdout.write(json.dumps(settlement_as_dict(sheet), ensure_ascii=False, indent=2))
        elif format == "csv":
            self.stdout.write(render_csv([sheet]), ending="")
        else:
            self.stdout.write(render_text(sheet))
