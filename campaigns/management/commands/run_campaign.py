"""python manage.py run_campaign SLUG [--dry-run] [--continuous]: evaluate the rules and issue offers on the workers."""

from django.core.management.base import BaseCommand, CommandError

from analytics.services.progress import progress_bar
from crossmkt_site.errors import ApplicationError
from crossmkt_site.groups import no_worker_note

from ...presenters.optimise_comparison import held_out_lines
from ...selectors import campaign_get
from ...services.campaign_planning import campaign_chunks
from ...services.campaign_run import campaign_dry_run, campaign_run
from ...services.live import campaign_reach_continuous


class Command(BaseCommand):
    help = (
        "Evaluate a campaign's rules over every reachable user and issue offers; "
        "--dry-run only forecasts reach and cost."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--dry-run", action="store_true", help="Print reach and cost per rule; issue nothing.")
        parser.add_argument("--no-wait", action="store_true", help="Queue the chunks on the workers and return.")
        parser.add_argument(
            "--timeout",
            type=float,
            default=None,
            help="Seconds to wait on the workers before giving up (default: WORKER_WAIT_TIMEOUT, 900).",
        )
        parser.add_argument(
            "--continuous",
            action="store_true",
            help="Make the campaign's reach continuous (the workers then reach every user the moment a rule becomes "
            "true for them) and make the first full pass now.",
        )
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, slug, dry_run, no_wait, timeout, no_progress, continuous, **options):
        if continuous and dry_run:
            raise CommandError("--continuous changes the campaign; it cannot be combined with --dry-run")
        try:
            campaign = campaign_get(slug=slug)
            if continuous:
                campaign = campaign_reach_continuous(campaign=campaign)
                self.stdout.write(f"{slug}: reach is continuous; making the first full pass")
            chunks = len(campaign_chunks())
            with progress_bar(
                f"{'forecasting' if dry_run else 'running'} {slug}", chunks, enabled=not no_progress
            ) as advance:
                on_chunk = lambda done, total: advance(done)  # noqa: E731
                if dry_run:
                    self.print_forecast(campaign_dry_run(campaign=campaign, on_chunk=on_chunk))
                    return
                result = campaign_run(campaign=campaign, wait=not no_wait, on_chunk=on_chunk, timeout=timeout)
        except ApplicationError as error:
            raise CommandError(error.message) from None
        if no_wait:
            self.stdout.write(f"queued {result['chunks']} chunks for {slug} (group {result['group_id']})")
            if note := no_worker_note():
                self.stderr.write(note)
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"{slug}: {result['eligible']} newly eligible, {result['holdout']} held out, "
                f"{result['issued']} offers issued costing {result['cost']} CNY; "
                f"{result['skipped_existing']} already handled, {result['clamped']} not issued "
                "for lack of budget, offer cap or stock"
            )
        )

    def print_forecast(self, forecast):
        self.stdout.write(f"Dry run of {forecast.campaign}: nothing issued.")
        self.stdout.write(
            f"{'rule':<40} {'priority':>8} {'treated':>9} {'holdout':>9} {'offers':>9} {'cost (CNY)':>14}"
        )
        for rule in forecast.rules:
            self.stdout.write(
                f"{rule.rule[:40]:<40} {rule.priority:>8} {rule.treated:>9} {rule.holdout:>9} "
                f"{rule.offers:>9} {rule.cost:>14}"
            )
        self.stdout.write(
            f"{'total':<40} {'':>8} {forecast.eligible - forecast.holdout:>9} {forecast.holdout:>9} "
            f"{forecast.offers:>9} {forecast.cost:>14}"
        )
        if forecast.remaining is not None:
            verdict = (
                "fits" if forecast.cost <= forecast.remaining else "does NOT fit: issuance will stop when it runs out"
            )
            self.stdout.write(f"budget {forecast.budget} CNY, {forecast.remaining} CNY left: the forecast {verdict}")
        self.print_comparison(forecast)

    def print_comparison(self, forecast):
        comparison = forecast.comparison
        if comparison is None:
            self.stdout.write(f"Rules vs optimised: not compared ({forecast.comparison_missing})")
            return
        self.stdout.write(
            f"Rules vs optimised ({forecast.mode} mode runs; {comparison.model}, {comparison.method}, a "
            f"conversion worth {comparison.order_value} CNY; within the budget left):"
        )
        self.stdout.write(
            f"{'':<12} {'users':>9} {'holdout':>9} {'offers':>9} {'spend (CNY)':>14} "
            f"{'model forecast':>19} {'per CNY':>8}"
        )
        for strategy in (comparison.rules, comparison.optimised):
            margin = "unknown" if strategy.expected_margin is None else str(strategy.expected_margin)
            per_cny = "-" if strategy.margin_per_cny is None else str(strategy.margin_per_cny)
            self.stdout.write(
                f"{strategy.name:<12} {strategy.users:>9} {strategy.holdout:>9} {strategy.offers:>9} "
                f"{strategy.spend:>14} {margin:>19} {per_cny:>8}"
            )
        self.stdout.write(
            "  (the model forecast is in sample: the model that chose values its own choice, so it flatters it)"
        )
        for line in held_out_lines(comparison):
            self.stdout.write(line)
        for note in comparison.notes:
            self.stdout.write(f"note: {note}")
