"""Arms of any small size give a report, never an exception: a statistic they are too small for says so.

Hypothesis draws campaigns of one to three treated arms and a holdout, each of 0 to 3 users,
with any mix of converters, zero or large revenue and retention times, and runs the
statistics and both presenters on them (issue 14, item 4). Pure: no database.
"""

import csv
import io
import json
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.stats.effects import ArmData, compare_arms
from campaigns.presenters.campaign_report import render_csv, render_text
from campaigns.reports.campaign_report import CampaignReport

AMOUNTS = st.sampled_from([Decimal("0"), Decimal("0.01"), Decimal("99.00"), Decimal("999999.99")])


@st.composite
def arms(draw) -> dict[str, ArmData]:
    followed = draw(st.booleans())
    names = ["holdout", *[f"t{index}" for index in range(draw(st.integers(1, 3)))]]
    result = {}
    for name in names:
        users = draw(st.integers(0, 3))
        converted = draw(st.lists(st.booleans(), min_size=users, max_size=users))
        revenue = [draw(AMOUNTS) if bought else Decimal("0") for bought in converted]
        result[name] = ArmData(
            users=users,
            conversions=sum(converted),
            revenue=revenue,
            cost=draw(st.sampled_from([Decimal("0"), Decimal("2.50")])),
            retention_durations=[draw(st.sampled_from([0.0, 1.0, 30.0])) for _ in range(users)] if followed else None,
            retention_churned=[draw(st.booleans()) for _ in range(users)] if followed else None,
        )
    return result


def report_of(by_arm: dict[str, ArmData]) -> CampaignReport:
    evaluation = compare_arms(by_arm, "holdout", configured_shares=dict.fromkeys(by_arm, 1), resamples=50)
    return CampaignReport(
        campaign={"slug": "tiny", "name": "Tiny", "status": "running", "as_of": "2026-12-06T00:00:00+00:00"},
        funnel={"eligible": sum(arm.users for arm in by_arm.values())},
        arms=[
            {
                "arm": name,
                "users": arm.users,
                "conversions": arm.conversions,
                "conversion_rate": arm.conversions / arm.users if arm.users else None,
                "revenue": str(sum(arm.revenue, Decimal("0"))),
                "revenue_per_user": None,
            }
            for name, arm in by_arm.items()
        ],
        rules=[],
        evaluation=json.loads(json.dumps(evaluation.to_dict(), allow_nan=False)),
        warnings=[],
    )


@given(arms())
@settings(max_examples=150, deadline=None)
def test_any_small_arms_give_a_report_in_every_format(by_arm):
    report = report_of(by_arm)
    evaluation = report.evaluation
    assert evaluation is not None

    for comparison in evaluation["comparisons"]:
        treated, control = by_arm[comparison["arm"]], by_arm["holdout"]
        reasons = comparison["not_enough_data"]
        # each statistic is there, or null with a reason; never both, never neither
        for statistic in ("conversion", "revenue", "campaign_return"):
            assert (comparison[statistic] is None) == (statistic in reasons), statistic
        assert (comparison["conversion"] is None) == (min(treated.users, control.users) == 0)
        assert (comparison["revenue"] is None) == (min(treated.users, control.users) < 2)
        if comparison["revenue"] is None:
            assert "at least two users" in reasons["revenue"]
    text = render_text(report)
    rows = list(csv.reader(io.StringIO(render_csv(report))))
    missing = sum(len(c["not_enough_data"]) for c in evaluation["comparisons"])
    assert len([row for row in rows if row[0] == "not_enough_data"]) == missing + len(evaluation["not_enough_data"])
    assert text.count("not enough data (") == missing
