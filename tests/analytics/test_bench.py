"""The benchmark itself works at a small scale (it asserts no time; it only proves the measurement runs)."""

import io

import pytest
from django.core.management import call_command

from analytics.models import BehaviorEvent
from tests.factories import BehaviorEventFactory, EndUserFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_bench_measures_each_stage_three_ways_and_writes_the_table(tmp_path):
    # given some behaviour to build features from
    for user in EndUserFactory.create_batch(20):
        BehaviorEventFactory.create_batch(3, user=user, partner=user.home_partner)

    call_command("bench", "--stages", "features", "ingest", "--events", "300", "--output", tmp_path / "BENCHMARKS.md",
                 stdout=io.StringIO(), stderr=io.StringIO())

    table = (tmp_path / "BENCHMARKS.md").read_text()
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.strip("|").split("|")]
            for line in table.splitlines() if line.startswith("| ") and "stage" not in line}
    ingest, features = rows["bulk event ingest through the API (10k events per request)"], rows["feature build from events"]
    assert ingest[1] == "300" and ingest[2].endswith("events/s") and float(ingest[5]) > 0
    assert features[1] == "20" and features[2].endswith("users/s") and float(features[5]) > 0
    assert "cores" in table and "PostgreSQL" in table
    assert not BehaviorEvent.objects.filter(partner__slug="bench-ingest").exists()  # the run cleans up after itself
