"""The report's experiment statistics: CUPED beside the unadjusted uplift, the interval kind, Holm, guardrails."""

import io
import json
from datetime import timedelta
from decimal import Decimal

import numpy as np
import pytest
from django.core.management import call_command
from django.utils import timezone

from analytics.models import BehaviorEvent, EndUser
from campaigns.models import CampaignAssignment, Offer, RedemptionEntry
from campaigns.presenters.campaign_report import render_csv, render_text
from campaigns.reports.campaign_report import campaign_report
from tests.factories import CampaignFactory, PartnerFactory, RuleFactory, end_users_of

pytestmark = pytest.mark.django_db


def build_campaign(*, users=600, running=True, without_history=0.2, rollbacks=0, cancel=(0.0, 0.0), seed=3):
    """Assign ``users`` half to a coupon arm and half to the holdout; each user's pre-period spend predicts revenue.

    A user with history bought 0-4 courses of 100 CNY in the four weeks before assignment and
    afterwards buys one with probability rising with that count (plus 10 points in the coupon arm);
    a user without history has no event before assignment. ``cancel`` is the share of the coupon arm
    and of the holdout who cancel their membership within 15 days of assignment.
    """
    rng = np.random.default_rng(seed)
    now = timezone.now()
    partner = PartnerFactory.create()
    campaign = CampaignFactory.create(
        owner=partner,
        holdout_share=Decimal("0.500"),
        budget=None,
        starts_at=now - timedelta(days=40),
        ends_at=now + timedelta(days=10) if running else now - timedelta(days=30),
    )
    rule = RuleFactory.create(campaign=campaign, condition={})
    people = EndUser.objects.bulk_create(
        EndUser(external_id=f"s{i:05d}", home_partner=partner, marketing_consent=True) for i in range(users)
    )
    assigned_at = now - timedelta(days=20)
    arms = np.where(np.arange(users) % 2 == 0, "coupon", "holdout")
    CampaignAssignment.objects.bulk_create(
        CampaignAssignment(campaign=campaign, user=user, arm=arm, rule=rule)
        for user, arm in zip(people, arms, strict=True)
    )
    CampaignAssignment.objects.filter(campaign=campaign).update(assigned_at=assigned_at)
    history = rng.random(users) >= without_history
    before = np.where(history, rng.integers(0, 5, size=users), 0)
    chance = np.where(history, 0.05 + 0.18 * before, 0.3) + np.where(arms == "coupon", 0.1, 0.0)
    buys = rng.random(users) < np.clip(chance, 0, 1)
    events = []
    for i, user in enumerate(people):
        if history[i]:  # something seen before assignment, even with no purchase in the window
            events.append(
                BehaviorEvent(
                    partner=partner,
                    event_id=f"w{i}",
                    user=user,
                    kind="film_watch",
                    item_id="F1",
                    occurred_at=assigned_at - timedelta(days=60),
                )
            )
        for k in range(before[i]):
            events.append(
                BehaviorEvent(
                    partner=partner,
                    event_id=f"b{i}-{k}",
                    user=user,
                    kind="course_purchase",
                    item_id="C0",
                    amount=Decimal("100.00"),
                    occurred_at=assigned_at - timedelta(days=3 + k),
                )
            )
        if buys[i]:
            events.append(
                BehaviorEvent(
                    partner=partner,
                    event_id=f"p{i}",
                    user=user,
                    kind="course_purchase",
                    item_id="C1",
                    amount=Decimal("100.00"),
                    occurred_at=assigned_at + timedelta(days=1),
                )
            )
    cancels = rng.random(users) < np.where(arms == "coupon", cancel[0], cancel[1])
    days = rng.uniform(0.5, 15.0, size=users)
    events.extend(
        BehaviorEvent(
            partner=partner,
            event_id=f"c{i}",
            user=user,
            kind="membership_cancel",
            occurred_at=assigned_at + timedelta(days=float(days[i])),
        )
        for i, user in enumerate(people)
        if cancels[i]
    )
    BehaviorEvent.objects.bulk_create(events)
    offers = Offer.objects.bulk_create(
        Offer(
            campaign=campaign,
            rule=rule,
            user=user,
            kind="coupon",
            amount_off=Decimal("20.00"),
            cost=Decimal("2.00"),
            issued_at=assigned_at,
            expires_at=assigned_at + timedelta(days=30),
        )
        for user, arm in zip(people, arms, strict=True)
        if arm == "coupon"
    )
    redeemed = RedemptionEntry.objects.bulk_create(
        RedemptionEntry(offer=offer, kind="redeem", partner=partner, order_amount=Decimal("100.00"))
        for offer in offers[:100]
    )
    RedemptionEntry.objects.bulk_create(
        RedemptionEntry(offer=entry.offer, kind="rollback", partner=partner, reverses=entry)
        for entry in redeemed[:rollbacks]
    )
    return campaign


def test_a_running_campaign_shows_always_valid_intervals_with_cuped_and_holm_beside_them():
    # given a running campaign of 600 users whose pre-period purchases predict conversion
    campaign = build_campaign()
    # when
    report = campaign_report(campaign=campaign).to_dict()
    # then the report says its intervals are always-valid and gives them beside the fixed-horizon figures
    assert report["intervals"]["kind"] == "always-valid"
    comparison = report["uplift"]["comparisons"][0]
    valid, fixed = comparison["always_valid"]["conversion"], comparison["conversion"]
    assert valid["upper"] - valid["lower"] > fixed["difference_upper"] - fixed["difference_lower"]
    assert valid["lower"] <= valid["estimate"] <= valid["upper"]
    # CUPED: adjusted beside unadjusted, narrower, users without history counted
    cuped = comparison["cuped"]
    assert set(cuped["covariates"]) == {"pre_purchases", "pre_revenue", "no_history"}
    assert 60 <= cuped["users_without_history"] <= 180
    for metric in ("conversion", "revenue"):
        block = cuped[metric]
        assert block["variance_reduction"] > 0.1
        width = float(block["upper"]) - float(block["lower"])
        assert width < float(block["unadjusted_upper"]) - float(block["unadjusted_lower"])
    assert isinstance(cuped["revenue"]["estimate"], str)  # money is CNY text, never a float
    # Holm over the arm's two metrics and the rule's conversion, never below the raw p-value
    tests = report["multiple_testing"]["tests"]
    assert len(tests) == 3
    assert all(test["p_value_holm"] >= test["p_value"] for test in tests)
    assert valid["p_value_holm"] == tests[0]["p_value_holm"]
    assert "Holm" in report["methods"] and "Johari" in report["methods"] and "CUPED" in report["methods"]
    json.dumps(report, allow_nan=False)


def test_a_running_campaigns_margin_and_roi_intervals_are_always_valid_and_fixed_horizon_once_it_has_settled():
    # given a running campaign of 600 users, read now and again once its last conversions are in (no new purchase)
    campaign = build_campaign()
    settled = campaign.ends_at + timedelta(days=campaign.conversion_window_days + 1)
    running = campaign_report(campaign=campaign).to_dict()["uplift"]["comparisons"][0]["spend_return"]
    ended_report = campaign_report(campaign=campaign, now=settled)
    ended = ended_report.to_dict()["uplift"]["comparisons"][0]["spend_return"]

    # then while it runs the incremental margin's interval is the always-valid one, wider than the fixed-horizon
    # interval it has once settled, around the same estimate, and each says which it is
    assert (running["interval_kind"], ended["interval_kind"]) == ("always-valid", "fixed-horizon")
    assert "mixture SPRT" in running["interval_method"] and "hybrid score" in ended["interval_method"]
    assert running["incremental_margin"] == ended["incremental_margin"]

    def width(block):
        return Decimal(block["incremental_margin_upper"]) - Decimal(block["incremental_margin_lower"])

    assert width(running) > width(ended)
    assert Decimal(running["incremental_margin_lower"]) < Decimal(running["incremental_margin"])
    # and the text report names the kind of a running campaign's interval
    assert "always-valid CI" in render_text(campaign_report(campaign=campaign))
    assert "always-valid CI" not in render_text(ended_report)


def test_an_ended_campaign_shows_fixed_horizon_intervals_with_holm_p_values():
    campaign = build_campaign(running=False)
    report = campaign_report(campaign=campaign).to_dict()
    assert report["intervals"]["kind"] == "fixed-horizon"
    comparison = report["uplift"]["comparisons"][0]
    assert "always_valid" not in comparison
    assert comparison["conversion"]["p_value_holm"] >= comparison["conversion"]["p_value"]
    assert report["rules"][0]["conversion_uplift"]["p_value_holm"] is not None
    assert comparison["cuped"]["interval_kind"] == "fixed-horizon"


def test_rollbacks_above_the_tolerance_are_flagged_as_harm():
    # given 100 redemptions of which 15 were rolled back (tolerated: 2%)
    campaign = build_campaign(rollbacks=15)
    report = campaign_report(campaign=campaign).to_dict()
    guard = report["guardrails"][0]
    assert guard["rollbacks"]["harm"]
    assert guard["rollbacks"]["rollbacks"] == 15
    assert any("rolled back" in warning for warning in report["warnings"])
    # no member cancelled here: the churn hazard ratio says why it is missing
    assert "churn" in guard["not_enough_data"]


def test_members_cancelling_faster_in_a_treated_arm_are_flagged_as_harm():
    # given 600 users: 40% of the coupon arm cancel within 15 days, 10% of the holdout
    campaign = build_campaign(cancel=(0.4, 0.1))
    report = campaign_report(campaign=campaign).to_dict()
    churn = report["guardrails"][0]["churn"]
    assert churn["harm"] and churn["lower"] > 1
    assert any("cancel faster" in warning for warning in report["warnings"])


def test_equal_cancellation_is_not_flagged():
    campaign = build_campaign(cancel=(0.2, 0.2), seed=8)
    report = campaign_report(campaign=campaign).to_dict()
    churn = report["guardrails"][0]["churn"]
    assert churn["lower"] < 1 < churn["upper"]
    assert not churn["harm"]
    assert not any("guardrail" in warning for warning in report["warnings"])


def test_text_and_csv_show_cuped_holm_and_the_interval_kind():
    campaign = build_campaign(rollbacks=1)
    report = campaign_report(campaign=campaign)
    text, csv = render_text(report), render_csv(report)
    assert "Intervals: always-valid" in text
    assert "CUPED" in text and "variance reduction" in text
    assert "Holm p=" in text
    assert "Guardrails of coupon: " in text
    assert "cuped,coupon:conversion," in csv
    assert "cuped_variance_reduction,coupon:revenue," in csv
    assert "holm,coupon: conversion," in csv
    assert "guardrail_rollbacks,coupon,100,1," in csv


@pytest.fixture
def acme():
    """The partner whose ids the outcome files use (x0 to x799, a, b, c)."""
    partner = PartnerFactory.create(slug="acme")
    end_users_of(partner, [*(f"x{i}" for i in range(800)), "a", "b", "c"])
    return partner


def _outcomes_file(path, *, covariates: bool, seed=4):
    rng = np.random.default_rng(seed)
    lines = ["user_id,arm,converted,revenue" + (",pre_revenue,pre_converted" if covariates else "")]
    for i in range(800):
        arm = "holdout" if i % 2 else "coupon"
        pre = rng.gamma(2.0, 50.0)
        revenue = max(0.0, 0.8 * pre + rng.normal(10 if arm == "coupon" else 0, 20))
        converted = revenue > 60
        row = f"x{i},{arm},{int(converted)},{revenue:.2f}"
        if covariates:
            row += ",," if i % 10 == 0 else f",{pre:.2f},{int(pre > 80)}"
        lines.append(row)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def test_imported_outcomes_with_pre_period_columns_get_cuped(tmp_path, acme):
    # given an outside experiment of 800 users with pre_revenue and pre_converted (every tenth blank: no history)
    path = _outcomes_file(tmp_path / "outcomes.csv", covariates=True)
    call_command(
        "import_outcomes",
        path,
        "--campaign",
        "outside-cuped",
        "--partner",
        "acme",
        "--no-progress",
        stdout=io.StringIO(),
    )
    out = io.StringIO()
    # when
    call_command("campaign_report", "outside-cuped", "--format", "json", stdout=out)
    report = json.loads(out.getvalue())
    # then
    assert report["intervals"]["kind"] == "fixed-horizon"
    cuped = report["uplift"]["comparisons"][0]["cuped"]
    assert cuped["users_without_history"] == 80
    assert cuped["revenue"]["variance_reduction"] > 0.5
    assert float(cuped["revenue"]["lower"]) < 10 < float(cuped["revenue"]["upper"])


def test_imported_outcomes_without_pre_period_columns_say_why_there_is_no_cuped(tmp_path, acme):
    path = _outcomes_file(tmp_path / "outcomes.csv", covariates=False)
    call_command(
        "import_outcomes",
        path,
        "--campaign",
        "outside-plain",
        "--partner",
        "acme",
        "--no-progress",
        stdout=io.StringIO(),
    )
    out = io.StringIO()
    call_command("campaign_report", "outside-plain", stdout=out)
    assert "no CUPED (the experiment's outcomes were imported without pre_revenue" in out.getvalue()


def test_import_outcomes_rejects_a_bad_pre_period_value_by_line(tmp_path, acme):
    path = tmp_path / "bad.csv"
    path.write_text(
        "user_id,arm,converted,revenue,pre_revenue,pre_converted\n"
        "a,holdout,0,0,12.50,1\nb,coupon,1,10,-3,0\nc,coupon,0,0,4,maybe\n",
        encoding="utf-8",
    )
    out = io.StringIO()
    call_command("import_outcomes", path, "--campaign", "outside-bad", "--partner", "acme", "--no-progress", stdout=out)
    text = out.getvalue()
    assert "pre_revenue" in text and "pre_converted" in text
