"""python manage.py import_outcomes FILE.csv --campaign SLUG [--partner SLUG]: an experiment run elsewhere.

Its outcomes are reported like one of ours.
"""

from django.core.management.base import BaseCommand, CommandError

from crossmkt_site.errors import ApplicationError

from ...services.outcomes import outcomes_import_file
from ._reporting import report_import


class Command(BaseCommand):
    help = (
        "Import per-user outcomes of an experiment run elsewhere: columns user_id,arm,converted,revenue. The arm named "
        "'holdout' is the control; any number of other arms. Optional pre_revenue and pre_converted (the user's "
        "spend and whether they bought before the experiment; blank: no history) let the report adjust the uplift "
        "by CUPED. Each user_id is the id the campaign's partner knows the person by (its own users, and people "
        "linked to it who consent to data sharing); other ids are rejected by line. A new slug creates an external "
        "campaign owned by --partner. "
        "Then: python manage.py campaign_report SLUG."
    )

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--campaign", required=True, help="Slug of the (external) campaign to report under.")
        parser.add_argument(
            "--partner",
            help="Slug of the partner whose user ids the file uses; required for a new campaign or one without an "
            "owner, and otherwise must be the campaign's owner.",
        )
        parser.add_argument("--encoding")
        parser.add_argument("--no-progress", action="store_true")
        parser.add_argument("--show-rejected", type=int, default=50)

    def handle(self, *args, file, campaign, partner, encoding, no_progress, show_rejected, **options):
        try:
            result = outcomes_import_file(
                file, campaign_slug=campaign, partner_slug=partner, encoding=encoding, progress=not no_progress
            )
        except ApplicationError as error:
            raise CommandError(error.message) from None
        report_import(self, result, noun="outcomes", show_rejected=show_rejected)
