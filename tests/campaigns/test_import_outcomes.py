"""An experiment run elsewhere is imported and reported like one of ours, with any number of arms."""

import io
import json
from decimal import Decimal

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from analytics.models import ExperimentOutcome
from campaigns.models import Campaign
from tests.factories import PartnerFactory, end_users_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme():
    """The partner whose ids the outcome files use, knowing x0 to x5999, y0 to y2 and bad1, bad2."""
    partner = PartnerFactory.create(slug="acme")
    end_users_of(partner, [*(f"x{n}" for n in range(6000)), "y0", "y1", "y2", "bad1", "bad2"])
    return partner


def write_outcomes(path, arms: dict[str, tuple[int, float]], seed=0, extra_lines=()):
    rng = np.random.default_rng(seed)
    lines = ["user_id,arm,converted,revenue"]
    n = 0
    for arm, (users, rate) in arms.items():
        for _ in range(users):
            converted = rng.random() < rate
            lines.append(f"x{n},{arm},{int(converted)},{'120.00' if converted else '0'}")
            n += 1
    lines.extend(extra_lines)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def test_three_arm_experiment_is_reported_against_its_holdout(tmp_path, acme):
    # given an outside experiment with a holdout and two treated arms, plus two bad rows
    path = write_outcomes(
        tmp_path / "outcomes.csv",
        {"holdout": (2000, 0.10), "coupon": (2000, 0.16), "ticket": (2000, 0.10)},
        extra_lines=["bad1,coupon,maybe,0", "bad2,coupon,1,-3"],
    )

    out = io.StringIO()
    call_command(
        "import_outcomes", path, "--campaign", "partner-test-q3", "--partner", "acme", "--no-progress", stdout=out
    )

    # then the good rows are in, the bad ones named, and the campaign is an external one
    assert "6000 outcomes imported, 0 duplicates skipped, 2 rejected" in out.getvalue()
    assert "line 6002: converted" in out.getvalue() and "line 6003: revenue" in out.getvalue()
    assert Campaign.objects.get(slug="partner-test-q3").kind == Campaign.Kind.EXTERNAL
    # and the report compares each treated arm with the holdout
    report_out = io.StringIO()
    call_command("campaign_report", "partner-test-q3", "--format", "json", stdout=report_out)
    report = json.loads(report_out.getvalue())
    comparisons = {c["arm"]: c["conversion"] for c in report["uplift"]["comparisons"]}
    assert set(comparisons) == {"coupon", "ticket"}
    assert comparisons["coupon"]["difference_lower"] > 0
    assert comparisons["ticket"]["difference_lower"] < 0 < comparisons["ticket"]["difference_upper"]
    # re-importing the same file changes nothing
    again = io.StringIO()
    call_command(
        "import_outcomes", path, "--campaign", "partner-test-q3", "--partner", "acme", "--no-progress", stdout=again
    )
    assert "0 outcomes imported, 6000 duplicates skipped" in again.getvalue()
    assert ExperimentOutcome.objects.count() == 6000


def test_outcomes_cannot_overwrite_one_of_our_campaigns(tmp_path, acme):
    from tests.factories import CampaignFactory

    CampaignFactory.create(slug="ours")
    path = write_outcomes(tmp_path / "o.csv", {"holdout": (5, 0.1)})
    with pytest.raises(CommandError, match="is one of ours"):
        call_command("import_outcomes", path, "--campaign", "ours", "--partner", "acme", "--no-progress")


@pytest.mark.parametrize("column", range(4))
def test_a_nul_byte_rejects_its_line_by_column_and_the_rest_import(tmp_path, column, acme):
    # given an outcomes file with a NUL byte in one field of line 3 (PostgreSQL refuses NUL in text)
    bad = ["y1", "coupon", "1", "120.00"]
    bad[column] = bad[column][:1] + "\x00" + bad[column][1:]
    path = tmp_path / "o.csv"
    path.write_text(
        "\n".join(["user_id,arm,converted,revenue", "y0,holdout,0,0", ",".join(bad), "y2,coupon,1,80.00"]),
        encoding="utf-8",
    )

    out = io.StringIO()
    call_command("import_outcomes", path, "--campaign", "nul-test", "--partner", "acme", "--no-progress", stdout=out)

    # then the good rows are in and line 3 is named with its column
    name = ("user_id", "arm", "converted", "revenue")[column]
    assert "2 outcomes imported, 0 duplicates skipped, 1 rejected" in out.getvalue()
    assert f"rejected line 3: {name}: contains a NUL byte" in out.getvalue()
    assert sorted(ExperimentOutcome.objects.values_list("user_ref", flat=True)) == ["y0", "y2"]


def test_revenue_with_a_comma_or_above_the_ceiling_is_rejected_by_line(tmp_path, acme):
    # given outcomes whose revenue is written with a decimal comma (once stored as 150.00) or is absurd
    path = tmp_path / "outcomes.csv"
    path.write_text(
        'user_id,arm,converted,revenue\nx1,coupon,1,"1,50"\nx2,coupon,1,999999999999.99\nx3,holdout,1,1.50\n',
        encoding="utf-8",
    )

    # when they are imported
    out = io.StringIO()
    call_command(
        "import_outcomes", path, "--campaign", "partner-commas", "--partner", "acme", "--no-progress", stdout=out
    )

    # then those lines are rejected with the reason, and the good one is in
    text = out.getvalue()
    assert "1 outcomes imported, 0 duplicates skipped, 2 rejected" in text, text
    assert 'line 2: revenue: decimal commas are not accepted: write "1.50"' in text
    assert "line 3: revenue: above the largest amount accepted, 1000000.00" in text
    assert list(ExperimentOutcome.objects.values_list("user_ref", "revenue")) == [("x3", Decimal("1.50"))]
