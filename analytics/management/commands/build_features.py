"""python manage.py build_features [--full]: per-user features from behaviour events."""

import time

from django.core.management.base import BaseCommand

from ...services.features import features_build


class Command(BaseCommand):
    help = "Build per-user features from events: only users with new events since the last build, or --full."

    def add_arguments(self, parser):
        parser.add_argument("--full", action="store_true", help="Rebuild every user, not only those with new events.")

    def handle(self, *args, full, **options):
        started = time.monotonic()
        with self.console_status("building features"):
            users = features_build(full=full)
        self.stdout.write(self.style.SUCCESS(f"features built for {users} users in {time.monotonic() - started:.1f} s"))

    def console_status(self, message):
        from rich.console import Console

        # One set-based statement has no per-row progress to show; a spinner says it is working.
        return Console(stderr=True).status(message)
