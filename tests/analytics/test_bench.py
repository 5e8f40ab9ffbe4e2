"""The benchmark itself works at a small scale (it asserts no time; it only proves the measurement runs)."""

import io

import pytest
from django.core.management import call_command

from analytics.models import BehaviorEvent

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_bench_ingest_measures_all_three_ways_and_writes_the_table(tmp_path):
    out = io.StringIO()
    call_command("bench", "--stages", "ingest", "--events", "300", "--output", tmp_path / "BENCHMARKS.md",
                 stdout=out, stderr=io.StringIO())
    table = (tmp_path / "BENCHMARKS.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| bulk event ingest"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == "300" and cells[2].endswith("events/s") and float(cells[5]) > 0
    assert "cores" in table and "PostgreSQL" in table
    assert not BehaviorEvent.objects.filter(partner__slug="bench-ingest").exists()  # the run cleans up after itself
