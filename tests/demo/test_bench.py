"""The benchmark itself works at a small scale (it asserts no time; it only proves the measurement runs)."""

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from analytics.models import BehaviorEvent, PendingUser
from campaigns.models import Campaign, Offer
from conftest import require_worker_services
from demo.bench.run import STAGE_ORDER
from demo.models import DemoWorld
from tests.factories import EndUserFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

STAGES = {
    "demo world load (seed_demo, 2 processes)": "users/s",
    "feature build from events": "users/s",
    "training: propensity": "users/s",
    "training: churn": "users/s",
    "training: clv": "users/s",
    "batch scoring: propensity + churn + CLV, DB → DB": "scores/s",
    "campaign evaluation + offer issuance": "offers/s",
    "re-running the same campaign": "users/s",
    "bulk event ingest through the API (10k events per request)": "events/s",
    "GET users/{id}/offers/ under load (gunicorn -w 2, wrk, loopback)": "req/s",
}

# The stages whose limits write rows: a same-schema and a physical limit each.
WRITTEN_STAGES = (
    "batch scoring: propensity + churn + CLV, DB → DB",
    "campaign evaluation + offer issuance",
    "bulk event ingest through the API (10k events per request)",
)


def _tables(text: str) -> list[dict[str, list[str]]]:
    """Every Markdown table of the text, each as its rows' cells by their first cell (headers included)."""
    tables: list[dict[str, list[str]]] = []
    inside = False
    for line in text.splitlines():
        if not line.startswith("| "):
            inside = False
            continue
        if not inside:
            tables.append({})
            inside = True
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        tables[-1][cells[0]] = cells
    return tables


def _rows(text: str) -> dict[str, list[str]]:
    return _tables(text)[0]


def test_bench_runs_every_stage_on_a_small_world_and_writes_the_table(tmp_path):
    output = tmp_path / "BENCHMARKS.md"
    output.write_text("# Benchmarks\n\nold table\n\n## Why some stages miss\n\nkept by hand.\n")

    call_command(
        "bench",
        "--users",
        "2000",
        "--stages",
        *(stage for stage in STAGE_ORDER if stage != "live"),  # the live stage, with its workers, has its own test
        "--load-seconds",
        "1",
        "--output",
        output,
        "--no-progress",
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )

    text = output.read_text()
    rows = _rows(text)
    for stage, unit in STAGES.items():
        assert stage in rows, f"no row for {stage}"
        assert rows[stage][2].endswith(unit)
        assert float(rows[stage][11].replace(",", "")) > 0  # peak memory, MB
    assert rows["demo world load (seed_demo, 2 processes)"][1] == "2,000"
    for stage in ("feature build from events", *WRITTEN_STAGES):
        assert float(rows[stage][5]) > 0 and rows[stage][10] in ("yes", "**no**")  # a ratio to the limit, judged
    header = rows["stage"]
    assert header[4:8] == ["limit", "product / limit", "physical limit", "product / physical limit"]
    for stage in WRITTEN_STAGES:
        # Both limits measured in the same run, each with its ratio.
        assert float(rows[stage][6].replace(",", "")) > 0 and float(rows[stage][7]) > 0
    # The cost between the two limits, one design choice at a time, measured for each of those stages.
    costs = _tables(text)[1]
    assert costs["stage"][2:5] == ["read + compute", "bare, unlogged (no WAL)", "bare: the physical limit"]
    variants = {
        "batch scoring: propensity + churn + CLV, DB → DB": (
            "+ foreign keys only",
            "+ indexes only",
            "+ both: the same-schema limit",
            "as upsert, into an empty table like ours",
            "as upsert, over a previous version of every row",
        ),
        "campaign evaluation + offer issuance": ("+ foreign keys only", "+ indexes only"),
        "bulk event ingest through the API (10k events per request)": (
            "+ foreign keys only",
            "+ indexes only",
            "into our table as it is (rolled back)",
        ),
    }
    for stage, measured in variants.items():
        cells = dict(zip(costs["stage"], costs[stage], strict=True))
        assert int(cells["rows"].replace(",", "")) > 0
        for variant in ("bare: the physical limit", *measured):
            assert float(cells[variant].replace(",", "")) > 0, (stage, variant)
    assert rows["re-running the same campaign"][1] == "0"  # the re-run issued nothing
    assert "cores" in text and "PostgreSQL" in text and "2,000 users" in text
    assert "old table" not in text and text.endswith("## Why some stages miss\n\nkept by hand.\n")
    # It measured on real data and cleaned up after the parts that are not the product's.
    assert DemoWorld.objects.filter(n_users=2000).exists()
    bench_campaign = Campaign.objects.get(slug__startswith="bench-campaign-")
    assert Offer.objects.filter(campaign=bench_campaign).count() == int(
        rows["campaign evaluation + offer issuance"][1].replace(",", "")
    )
    assert not BehaviorEvent.objects.filter(partner__slug="bench-ingest").exists()


def test_bench_refuses_a_database_holding_other_users(tmp_path):
    EndUserFactory.create_batch(3)

    with pytest.raises(CommandError, match="point DATABASE_URL at an empty database"):
        call_command(
            "bench", "--users", "2000", "--output", tmp_path / "B.md", stdout=io.StringIO(), stderr=io.StringIO()
        )


LIVE = "live path: events through the API with 2 workers draining, highest sustained rate"
LATENCY = "live path: event-to-offer latency at half the sustained rate"
INGEST = "bulk event ingest through the API (10k events per request)"


@pytest.mark.worker
@pytest.mark.slow
def test_bench_live_stage_finds_a_sustained_rate_and_the_latency_of_the_offers_it_issued(tmp_path):
    require_worker_services()
    output = tmp_path / "BENCHMARKS.md"

    call_command(
        "bench",
        "--users",
        "2000",
        "--stages",
        "world",
        "live",
        "--live-seconds",
        "6",
        "--output",
        output,
        "--no-progress",
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )

    rows = _rows(output.read_text())
    # The bulk-ingest rate is measured in the same run (the ingest stage runs with the live one): the live row's limit.
    assert INGEST in rows
    bulk = float(rows[INGEST][2].split()[0].replace(",", ""))
    live, latency = rows[LIVE], rows[LATENCY]
    assert live[2].endswith("events/s") and float(live[4].replace(",", "")) == pytest.approx(bulk, abs=1)
    sustained = float(live[2].split()[0].replace(",", ""))
    assert 0 < sustained <= bulk * 1.1
    assert float(live[5]) == pytest.approx(sustained / bulk, rel=0.05)
    assert live[10] in ("yes", "**no**") and "bounded" in live[13]
    assert int(live[1].replace(",", "")) > 0  # events accepted over the windows
    # Offers were issued by the workers with no command run, and their latencies are ordered and positive.
    offers = int(latency[1].replace(",", ""))
    assert offers > 0 and latency[2].endswith("ms p99")
    p50, p95, p99 = (
        float(latency[13].split(f"{name} ", 1)[1].split(" ms", 1)[0].replace(",", "")) for name in ("p50", "p95", "p99")
    )
    assert 0 < p50 <= p95 <= p99 == pytest.approx(float(latency[2].split()[0].replace(",", "")), abs=1)
    assert latency[10] in ("yes", "**no**")
    last = Campaign.objects.filter(slug__startswith="bench-live-").latest("pk")
    assert last.reach == Campaign.Reach.CONTINUOUS and last.status == Campaign.Status.ENDED
    assert Offer.objects.filter(campaign=last, touched_at__isnull=False).count() == offers
    # Nothing is left pending, and the stage's own events are gone.
    assert not PendingUser.objects.exists()
    assert not BehaviorEvent.objects.filter(event_id__startswith="live").exists()


def test_bench_refuses_the_live_stage_without_a_broker_before_measuring_anything(tmp_path, monkeypatch):
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)

    with pytest.raises(CommandError, match="CELERY_BROKER_URL=redis"):
        call_command(
            "bench",
            "--users",
            "2000",
            "--stages",
            "world",
            "live",
            "--output",
            tmp_path / "B.md",
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )
    assert not DemoWorld.objects.exists()


def test_bench_refuses_the_load_stage_without_wrk_before_measuring_anything(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no wrk on it

    with pytest.raises(CommandError, match="needs wrk"):
        call_command(
            "bench",
            "--users",
            "2000",
            "--stages",
            "world",
            "load",
            "--output",
            tmp_path / "B.md",
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )
    assert not DemoWorld.objects.exists()


def test_a_stage_that_fails_leaves_the_table_of_the_stages_before_it(tmp_path, monkeypatch):
    import demo.bench.run as bench_module

    def broken(**kwargs):
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(bench_module, "stage_ingest", broken)
    output = tmp_path / "BENCHMARKS.md"
    output.write_text("# Benchmarks\n\nold table\n\n## Notes\n\nkept by hand.\n")

    with pytest.raises(CommandError, match="the disk is full"):
        call_command(
            "bench",
            "--users",
            "2000",
            "--stages",
            "world",
            "features",
            "ingest",
            "--output",
            output,
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )

    text = output.read_text()
    rows = _rows(text)
    assert "demo world load (seed_demo, 2 processes)" in rows
    assert "feature build from events" in rows
    assert "bulk event ingest through the API (10k events per request)" not in rows
    stopped = next(line for line in text.splitlines() if "stopped before its last stage" in line)
    assert "the disk is full" in stopped
    assert text.endswith("## Notes\n\nkept by hand.\n")
