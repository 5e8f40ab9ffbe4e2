"""python manage.py demo: the whole demo end to end — data, models, scores, campaigns, report — and the login."""

import time

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from analytics.models import ModelRun
from campaigns.management.commands._reporting import report_training
from campaigns.models import Campaign
from campaigns.presenters.campaign_report import render_text
from campaigns.reports.campaign_report import campaign_report
from campaigns.services.training import TRAINERS
from crossmkt_site.errors import ApplicationError
from crossmkt_site.groups import workers_require

from ...comparison import clv_compare, planted_campaign_roi, roi_compare
from ...selectors import demo_world_exists, demo_world_latest
from ...services.play import demo_campaigns_play, demo_funnel_follow_up
from ...services.training import demo_model_train

DEMO_USERNAME = "admin"
DEMO_PASSWORD = "crossmkt-demo"


class Command(BaseCommand):
    help = (
        "Create the demo admin login; load the demo world if the database has none; train, score, play the demo "
        "campaigns whose window has begun, and print their reports."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--users", type=int, default=20_000, help="Size of the demo world when one is loaded.")
        parser.add_argument("--seed", type=int, default=2026)
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args: object, users: int, seed: int, no_progress: bool, **options: object) -> None:
        # Scoring and the campaigns wait on the workers: find out now, not after loading and training.
        try:
            workers_require()
        except ApplicationError as error:
            raise CommandError(error.message) from None
        self.ensure_admin()
        quiet = ["--no-progress"] if no_progress else []
        if not demo_world_exists():
            call_command("seed_demo", "--users", users, "--seed", seed, *quiet, stdout=self.stdout)
        else:
            self.stdout.write("A demo world is already loaded; keeping it.")
        call_command("build_features", stdout=self.stdout)
        world = demo_world_latest()
        if world is None:
            raise CommandError("no demo world is loaded, although seed_demo has just run")
        self.train(world.truth)
        call_command("score", "--wait", *quiet, stdout=self.stdout)
        now = timezone.now()
        for played in demo_campaigns_play(now=now, follow_up=False):
            if "refused" in played:
                self.stdout.write(self.style.WARNING(f"not run: {played['refused']}"))
            else:
                planted = played["planted"] or {}
                self.stdout.write(
                    f"played {played['campaign']}: {played['issued']} offers issued, {played['holdout']} held out, "
                    f"{played['converted']} conversions drawn from the planted effects, "
                    f"{played['coupons_redeemed']} coupons redeemed, {played['trials_activated']} trials activated "
                    f"({played['trials_converted']} became paid), {played['tickets_used']} tickets used, "
                    f"{played['grants_activated']} grants taken up by buyers; planted ROI {planted.get('roi')}"
                )
        follow = demo_funnel_follow_up(seed=world.seed, now=now)
        self.stdout.write(
            f"after the campaigns, up to now: {follow['grants']} deal grants, {follow['grant_spend_events']} "
            f"purchases of granted users at the target partners, {follow['membership_cancels']} memberships "
            f"ended, {follow['offers_expired']} unused offers expired"
        )
        # The played campaigns' holdouts are what the uplift models learn from (and the optimise mode spends by).
        try:
            call_command("train", "--model", "uplift", stdout=self.stdout)
        except CommandError as error:
            self.stdout.write(self.style.WARNING(f"uplift model not trained: {error}"))
        truth = (demo_world_latest() or world).truth
        for campaign in Campaign.objects.filter(assignments__isnull=False).distinct().order_by("starts_at"):
            report = campaign_report(campaign=campaign)
            self.stdout.write("")
            self.stdout.write(render_text(report))
            self.planted_roi_compare(truth, campaign.slug, report.to_dict())
        self.stdout.write("")
        self.stdout.write(self.style.SUCCESS("crossmkt demo ready."))
        self.stdout.write("  Admin:    http://127.0.0.1:8000/admin/")
        self.stdout.write(f"  Login:    {DEMO_USERNAME} / {DEMO_PASSWORD}   (demo only; change it anywhere else)")
        self.stdout.write("  API docs: http://127.0.0.1:8000/api/docs/")

    def train(self, truth: dict) -> None:
        """Train every behaviour model with the setup the planted truth states, as ``train --model all`` reports it.

        The lifetime-value parameters are then held against the planted ones.
        """
        for name in TRAINERS:
            started = time.monotonic()
            try:
                run = demo_model_train(model=name, truth=truth)
            except ApplicationError as error:
                raise CommandError(f"{name}: {error.message}") from None
            report_training(self, run, name=name, seconds=time.monotonic() - started)
            if run.model == ModelRun.Model.CLV:
                relative_error = clv_compare(params=run.params, truth=truth)["max_relative_error"]
                self.stdout.write(f"  max_relative_error_vs_truth: {round(relative_error, 4)}")

    def planted_roi_compare(self, truth: dict, slug: str, report: dict) -> None:
        """Say whether the report's ROI interval holds the ROI the demo planted for the users it treated."""
        planted = planted_campaign_roi(truth, slug)
        if planted is None:
            return
        for comparison in (report["uplift"] or {}).get("comparisons", []):
            spend = comparison.get("spend_return")
            if spend is None or spend["roi"] is None:
                continue
            compared = roi_compare(
                estimate=float(spend["roi"]),
                lower=float(spend["roi_lower"]),
                upper=float(spend["roi_upper"]),
                planted=planted,
            )
            self.stdout.write(
                f"Planted ROI of the users the campaign treated (the demo's truth as of {planted.get('as_of')}): "
                f"{compared['planted']:+.4f}; the report's {comparison['arm']} ROI interval "
                f"{'holds' if compared['covered'] else 'misses'} it"
            )

    def ensure_admin(self) -> None:
        users = get_user_model().objects
        if not users.filter(username=DEMO_USERNAME).exists():
            users.create_superuser(DEMO_USERNAME, "admin@example.com", DEMO_PASSWORD)
