"""python manage.py bench [--users N] [--stages …]: the benchmark, on PostgreSQL."""

import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from analytics.services.progress import progress_bar
from crossmkt_site.errors import ApplicationError

from ...bench.measure import ROOT
from ...bench.run import STAGE_ORDER, bench_events, bench_run, benchmarks_markdown

NOTES_HEADING = "\n## "


class Command(BaseCommand):
    help = (
        "Measure each stage three ways (the product, a naive per-row baseline, raw COPY + NumPy as the limit) on "
        "a demo world of --users users (loaded first into an empty database) and write the table to BENCHMARKS.md."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--users", type=int, default=1_000_000, help="Users in the demo world (default 1,000,000).")
        parser.add_argument(
            "--stages",
            nargs="+",
            choices=STAGE_ORDER,
            default=list(STAGE_ORDER),
            help="Stages to run, in this order: " + ", ".join(STAGE_ORDER) + " (default: all).",
        )
        parser.add_argument(
            "--events", type=int, help="Events sent through the API (default: users / 5, 1,000 to 200,000)."
        )
        parser.add_argument(
            "--load-seconds",
            type=float,
            help="Duration of each load test (default 10 s at 500k users and more, else 3 s).",
        )
        parser.add_argument(
            "--live-seconds",
            type=float,
            help="Duration of the live stage's latency window at half the sustained rate (default 300 s at 500k "
            "users and more, else 15 s); each window of its rate search lasts a fifth of it, at least 3 s.",
        )
        parser.add_argument(
            "--output",
            default=str(ROOT / "BENCHMARKS.md"),
            help="Where to write the table; its sections after the table (## headings) are kept.",
        )
        parser.add_argument("--no-progress", action="store_true")

    def handle(
        self,
        *args: object,
        users: int,
        stages: list[str],
        events: int | None,
        load_seconds: float | None,
        live_seconds: float | None,
        output: str,
        no_progress: bool,
        **options: object,
    ) -> None:
        if users < 1000:
            raise CommandError("--users must be at least 1,000 (the models need that many to train)")
        if live_seconds is not None and live_seconds < 1:
            raise CommandError("--live-seconds must be at least 1")
        if events is not None and events < 1:
            raise CommandError("--events must be at least 1")
        started = time.monotonic()
        results: list = []
        scale = f"{users:,} users, {events or bench_events(users):,} events through the API"
        try:
            bench_run(
                n_users=users,
                stages=stages,
                n_events=events,
                load_seconds=load_seconds,
                live_seconds=live_seconds,
                echo=self.stderr.write,
                world_progress=lambda: progress_bar(f"demo world ({users:,} users)", users, enabled=not no_progress),
                results=results,
            )
        except Exception as error:
            # The stages that finished are not lost with the one that failed: their table is written, marked.
            message = error.message if isinstance(error, ApplicationError) else f"{type(error).__name__}: {error}"
            if results:
                path = self._write(
                    results,
                    scale=scale,
                    started=started,
                    output=output,
                    notes=f"**This run stopped before its last stage:** {(message.splitlines() or [''])[0]}",
                )
                self.stderr.write(f"bench: the {len(results)} measurements made before it stopped are in {path}")
            raise CommandError(message) from None
        path = self._write(results, scale=scale, started=started, output=output)
        self.stderr.write(
            f"bench: {len(results)} measurements in {(time.monotonic() - started) / 60:.1f} min; "
            f"table written to {path}"
        )

    def _write(self, results: list, *, scale: str, started: float, output: str, notes: str = "") -> Path:
        """Write the table to ``output``, keeping that file's sections after the table; print it too."""
        table = benchmarks_markdown(results, scale=scale, wall_seconds=time.monotonic() - started, notes=notes)
        path = Path(output)
        kept = ""
        if path.exists():
            previous = path.read_text(encoding="utf-8")
            if NOTES_HEADING in previous:
                kept = previous[previous.index(NOTES_HEADING) :]
        path.write_text(table + kept, encoding="utf-8")
        self.stdout.write(table)
        return path
