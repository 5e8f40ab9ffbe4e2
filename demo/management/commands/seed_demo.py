"""python manage.py seed_demo --users N --seed S: the demo world with planted truth."""

import time

from django.core.management.base import BaseCommand, CommandError, CommandParser

from analytics.services.features import features_build
from analytics.services.progress import progress_bar

from ...services.world_load import demo_world_load


class Command(BaseCommand):
    help = (
        "Load the demo world: partners, courses, films, bundles, deals and campaigns of the cross-marketing scenarios, "
        "and N users with a year of behaviour drawn from a generative model with planted truth (stored with the data). "
        "Deterministic per seed; loading the same world again adds nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--users", type=int, default=20_000)
        parser.add_argument("--seed", type=int, default=2026)
        parser.add_argument(
            "--processes",
            type=int,
            default=2,
            help="Parallel loader processes on PostgreSQL (default 2, one per core of the reference machine).",
        )
        parser.add_argument("--no-progress", action="store_true")

    def handle(
        self, *args: object, users: int, seed: int, processes: int, no_progress: bool, **options: object
    ) -> None:
        if users < 1:
            raise CommandError("--users must be at least 1")
        started = time.monotonic()
        with progress_bar(f"demo world ({users} users, seed {seed})", users, enabled=not no_progress) as advance:
            summary = demo_world_load(n_users=users, seed=seed, on_progress=advance, processes=processes)
        loaded = time.monotonic()
        built = features_build()
        self.stdout.write(
            self.style.SUCCESS(
                f"demo world loaded in {loaded - started:.1f} s: {summary['partners']} partners, "
                f"{summary['courses']} courses, {summary['films']} films, {summary['deals']} deals, "
                f"{summary['campaigns']} campaigns, {summary['users']} new users, {summary['events']} new events "
                f"({summary['duplicate_events']} already there); "
                f"features built for {built} users in {time.monotonic() - loaded:.1f} s"
            )
        )
