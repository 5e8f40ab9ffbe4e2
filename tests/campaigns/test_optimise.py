"""Optimise mode end to end on a small world: learn uplift from an imported experiment, spend by it, report it.

Half the users are bargain hunters (they redeemed offers before) whom a coupon moves from
5% to 45% conversion; the others buy 20% of the time with or without it. An outside
experiment with a coupon arm and a holdout is imported; the uplift models learn from it.
"""

import json
import re
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from analytics.models import BehaviorEvent, EndUser, ExperimentOutcome, ModelRun
from campaigns.models import Campaign, CampaignAssignment, Offer
from campaigns.presenters.campaign_report import render_csv, render_text
from campaigns.reports.campaign_report import campaign_report
from campaigns.services.campaign_optimise import Comparison
from campaigns.services.campaign_run import campaign_dry_run, campaign_issue_chunk, campaign_run
from campaigns.services.training import uplift_train
from crossmkt_site.errors import ApplicationError
from tests.demo.conftest import pin_ids
from tests.factories import CampaignFactory, CourseFactory, PartnerFactory, RuleFactory

USERS = 2000


@pytest.fixture
def world(db):
    """Users with and without a history of redeeming offers, and an imported coupon experiment on them.

    User ids are pinned: the cross-fitting folds hash them, and without the pin the world's folds differed
    with the test files that ran before in the same database (once too few users of a fold for the dry run).
    """
    pin_ids()
    rng = np.random.default_rng(0)
    partner = PartnerFactory.create()
    CourseFactory.create(partner=partner, price=Decimal("100.00"))
    now = timezone.now()
    users = EndUser.objects.bulk_create(
        EndUser(
            external_id=f"shopper-{i}",
            home_partner=partner,
            marketing_consent=True,
            age=20 + i % 30,
            signed_up_at=now - timedelta(days=400),
        )
        for i in range(USERS)
    )
    bargain = np.arange(USERS) % 2 == 0
    BehaviorEvent.objects.bulk_create(
        BehaviorEvent(
            partner=partner, event_id=f"e-{user.pk}-{n}", user=user, kind=kind, occurred_at=now - timedelta(days=30 + n)
        )
        for user, hunter in zip(users, bargain, strict=True)
        for n, kind in enumerate(["offer_redeem"] * 5 if hunter else ["film_watch"] * 5)
    )
    experiment = Campaign.objects.create(
        slug="pilot",
        name="pilot",
        kind=Campaign.Kind.EXTERNAL,
        status=Campaign.Status.ENDED,
        starts_at=now - timedelta(days=10),
        ends_at=now - timedelta(days=3),
        holdout_share=0,
    )
    arm = np.where(rng.random(USERS) < 0.5, "coupon", "holdout")
    rate = np.where(bargain, np.where(arm == "coupon", 0.45, 0.05), 0.20)
    converted = rng.random(USERS) < rate
    ExperimentOutcome.objects.bulk_create(
        ExperimentOutcome(
            campaign=experiment,
            user_ref=user.external_id,
            user=user,
            arm=name,
            converted=bool(bought),
            revenue=Decimal("100.00") if bought else Decimal("0"),
        )
        for user, name, bought in zip(users, arm, converted, strict=True)
    )
    return {
        "partner": partner,
        "users": users,
        "bargain": {user.pk for user, hunter in zip(users, bargain, strict=True) if hunter},
        "experiment": experiment,
    }


def _optimised(world, **fields) -> Campaign:
    fields = {"mode": Campaign.Mode.OPTIMISE, **fields}
    campaign = CampaignFactory.create(
        owner=world["partner"], budget=Decimal("1000.00"), holdout_share=Decimal("0.200"), **fields
    )
    RuleFactory.create(
        campaign=campaign, name="20 CNY coupon", condition={}, amount_off=Decimal("20.00"), cost=Decimal("20.00")
    )
    return campaign


def test_uplift_is_learned_from_an_imported_experiment_and_ranks_the_users_it_changes_first(world):
    # when the uplift models are trained
    run = uplift_train()

    # then each method was evaluated on held-out users with its Qini curve and AUUC
    evaluation = run.metrics["evaluation"]
    assert set(evaluation) == {"t_learner", "transformed_outcome", "x_learner"}
    for method in evaluation.values():
        curves = method["coupon"]["conversion"]
        assert len(curves["fraction"]) == len(curves["qini"]) == 21
        assert curves["auuc_lift"] > 0
    assert run.metrics["sources"][0]["campaign"] == "pilot"
    # and the selected model predicts a larger uplift for the bargain hunters than for the others
    from analytics.services.registry import model_run_artifact
    from analytics.services.uplift import uplift_features

    bundle = model_run_artifact(run)
    ids = np.array([user.pk for user in world["users"]])
    uplift, _ = bundle.predict(uplift_features(ids, as_of=timezone.now()))
    hunters = np.isin(ids, list(world["bargain"]))
    assert uplift["coupon"][hunters].mean() > uplift["coupon"][~hunters].mean() + 0.2


def test_train_command_learns_uplift_by_name_and_says_clearly_when_there_is_nothing_to_learn_from(world):
    out = StringIO()
    call_command("train", "--model", "uplift", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["model"] == "uplift" and data["metrics"]["packages"] == "coupon"

    ExperimentOutcome.objects.all().delete()
    with pytest.raises(CommandError, match="uplift: no past experiment with a holdout"):
        call_command("train", "--model", "uplift")


def test_optimise_run_spends_the_budget_on_the_users_the_offer_changes_and_keeps_a_holdout(world):
    # given uplift learned from the pilot, and an optimise campaign whose budget reaches 50 of 2,000 users
    uplift_train()
    campaign = _optimised(world)

    # when it is previewed, then run
    forecast = campaign_dry_run(campaign=campaign)
    result = campaign_run(campaign=campaign)

    # then it stays within the budget, and the coupons go to bargain hunters
    campaign.refresh_from_db()
    offered = set(Offer.objects.filter(campaign=campaign).values_list("user_id", flat=True))
    assert result["issued"] == len(offered) > 0
    assert len(offered & world["bargain"]) >= 0.9 * len(offered)
    # and a holdout of alike users was kept and got nothing
    held = set(
        CampaignAssignment.objects.filter(campaign=campaign, arm=CampaignAssignment.HOLDOUT).values_list(
            "user_id", flat=True
        )
    )
    # and the choice (the issued and the held-out users) covered the budget, while the spend stayed within it
    # (how many of the chosen the holdout draw takes varies, so the spend itself is only about 80% of the choice)
    assert campaign.spent <= campaign.budget <= campaign.spent + Decimal("20.00") * len(held)
    assert held and not held & offered
    assert len(held & world["bargain"]) >= 0.9 * len(held)
    # and the preview forecast what was issued
    assert isinstance(forecast.comparison, Comparison)
    assert forecast.comparison.optimised.spend == campaign.spent
    # (the per-rule lines are the optimiser's picks before the budget clamp; the run cuts picks and
    # holdout at the same point of the reach order, as the comparison's budgeted strategy does)
    assert forecast.comparison.optimised.offers == result["issued"]
    assert forecast.holdout >= len(held)
    # and running it again reaches nobody twice: at most what is left of the budget goes to users not handled yet
    left = campaign.budget - campaign.spent
    handled = set(CampaignAssignment.objects.filter(campaign=campaign).values_list("user_id", flat=True))
    again = campaign_run(campaign=campaign)
    campaign.refresh_from_db()
    assert Decimal(again["cost"]) <= left and campaign.spent <= campaign.budget
    assert (
        not set(Offer.objects.filter(campaign=campaign).exclude(user_id__in=offered).values_list("user_id", flat=True))
        & handled
    )
    # and once the budget cannot buy another coupon, a run issues nothing
    if campaign.budget - campaign.spent < Decimal("20.00"):
        assert campaign_run(campaign=campaign)["issued"] == 0


def test_dry_run_prints_the_rule_based_and_the_optimised_campaign_side_by_side(world):
    # given a rule-based campaign that gives everyone a coupon, and uplift learned from the pilot
    uplift_train()
    campaign = _optimised(world, mode=Campaign.Mode.RULES)

    # when it is previewed
    out = StringIO()
    call_command("run_campaign", campaign.slug, "--dry-run", "--no-progress", stdout=out)

    # then both choices are shown with their spend and expected incremental margin, and nothing is issued
    text = out.getvalue()
    assert "Rules vs optimised" in text
    rows = {
        match[0]: match
        for match in re.findall(r"^(rules|optimised) +(\d+) +(\d+) +(\d+) +([\d.]+) +(-?[\d.]+)", text, re.M)
    }
    assert set(rows) == {"rules", "optimised"}
    for name in rows:
        assert Decimal(rows[name][4]) <= campaign.budget
    rules_per_cny = Decimal(rows["rules"][5]) / Decimal(rows["rules"][4])
    optimised_per_cny = Decimal(rows["optimised"][5]) / Decimal(rows["optimised"][4])
    assert optimised_per_cny > rules_per_cny
    assert not Offer.objects.filter(campaign=campaign).exists()
    # and the claim is made on held-out outcomes: both choices cross-fitted on the pilot's users, with intervals,
    # the optimised one earning more per CNY. (Whether the difference's interval clears zero on this 2,000-user
    # pilot depends on the fold draw, which hashes user ids: in CI's shared database it once reached -0.114; the
    # claim "above zero" is measured over seeds in tests/demo/test_optimise_truth.py instead.)
    held = {
        match[0]: (float(match[1]), float(match[2]), float(match[3]))
        for match in re.findall(
            r"^(rules|optimised) +incremental margin per CNY (-?[\d.]+) \[(-?[\d.]+), (-?[\d.]+)\]", text, re.M
        )
    }
    assert set(held) == {"rules", "optimised"}, text
    assert "3-fold cross-fitting" in text
    difference = re.search(r"^optimised - rules: ([+-][\d.]+) per CNY \[(-?[\d.]+), (-?[\d.]+)\]", text, re.M)
    assert difference is not None, text
    estimate, lower, upper = float(difference[1]), float(difference[2]), float(difference[3])
    assert lower < estimate < upper and estimate > 0
    assert held["optimised"][0] > held["rules"][0]


def test_without_a_held_out_qini_interval_above_zero_optimise_mode_runs_its_rules_and_says_why(world):
    # given a pilot whose coupon moved every user alike (bargain hunters no more than the others)
    rng = np.random.default_rng(7)
    outcomes = list(ExperimentOutcome.objects.filter(campaign=world["experiment"]))
    for outcome in outcomes:
        bought = rng.random() < (0.30 if outcome.arm == "coupon" else 0.20)
        outcome.converted = bool(bought)
        outcome.revenue = Decimal("100.00") if bought else Decimal("0")
    ExperimentOutcome.objects.bulk_update(outcomes, ["converted", "revenue"])
    out = StringIO()
    call_command("train", "--model", "uplift", stdout=out)
    assert "not above zero: its model is not used, only the rules give it" in out.getvalue()
    campaign = _optimised(world)

    # when the optimise campaign is previewed and run
    out = StringIO()
    call_command("run_campaign", campaign.slug, "--dry-run", "--no-progress", stdout=out)
    forecast = campaign_dry_run(campaign=campaign)
    campaign_run(campaign=campaign)

    # then the preview says the optimiser falls back to the rules, and why
    assert isinstance(forecast.comparison, Comparison)
    assert forecast.comparison.falls_back_to_rules
    text = out.getvalue()
    assert "falls back to the rules" in text
    # (one package, two methods selected between: each interval at 1 - 0.05 / 2)
    assert re.search(r"coupon: held-out Qini coefficient -?[\d.]+, 97.5% interval \[.*\] does not lie above zero", text)
    # and the run did what the rules do: users taken in the rules' reach order until the budget ran out, a fifth of
    # them held out by the rules' draw, bargain hunters no likelier than the others
    assert forecast.comparison.optimised_by_model == 0
    arms = CampaignAssignment.objects.filter(campaign=campaign)
    assert 0.1 <= arms.filter(arm=CampaignAssignment.HOLDOUT).count() / arms.count() <= 0.35
    offered = set(Offer.objects.filter(campaign=campaign).values_list("user_id", flat=True))
    assert len(offered) == 50
    assert len(offered & world["bargain"]) <= 0.8 * len(offered)


def test_the_optimiser_spends_on_the_trusted_packages_model_wherever_it_applies_and_leaves_the_rest_to_the_rules(
    world,
):
    # given a second pilot: a free week of films that moved every user alike (so its model is not trusted),
    # beside the coupon that moved only bargain hunters (trusted)
    rng = np.random.default_rng(11)
    now = timezone.now()
    free_week = Campaign.objects.create(
        slug="pilot-free-week",
        name="pilot-free-week",
        kind=Campaign.Kind.EXTERNAL,
        status=Campaign.Status.ENDED,
        starts_at=now - timedelta(days=9),
        ends_at=now - timedelta(days=3),
        holdout_share=0,
    )
    arm = np.where(rng.random(USERS) < 0.5, "free_viewing", "holdout")
    converted = rng.random(USERS) < np.where(arm == "free_viewing", 0.25, 0.20)
    ExperimentOutcome.objects.bulk_create(
        ExperimentOutcome(
            campaign=free_week,
            user_ref=user.external_id,
            user=user,
            arm=name,
            converted=bool(bought),
            revenue=Decimal("100.00") if bought else Decimal("0"),
        )
        for user, name, bought in zip(world["users"], arm, converted, strict=True)
    )
    run = uplift_train()
    assert run.metrics["trusted_packages"] == ["coupon"]
    assert run.metrics["untrusted_packages"] == ["free_viewing"]
    # and an optimise campaign whose first rule gives everyone the free week, and whose second gives a coupon
    # to those who watched no film (the bargain hunters; the rules read the users' built features)
    from analytics.services.features import features_build

    features_build(full=True)
    campaign = CampaignFactory.create(
        owner=world["partner"], budget=Decimal("1000.00"), holdout_share=Decimal("0.200"), mode=Campaign.Mode.OPTIMISE
    )
    RuleFactory.create(
        campaign=campaign,
        name="a free week",
        priority=200,
        exclusive=True,
        condition={},
        offer_kind="free_viewing",
        amount_off=None,
        days=7,
        cost=Decimal("0.20"),
    )
    RuleFactory.create(
        campaign=campaign,
        name="20 CNY coupon",
        priority=100,
        exclusive=True,
        condition={"field": "watching_count", "op": "<", "value": 1},
        amount_off=Decimal("20.00"),
        cost=Decimal("20.00"),
    )

    # when it is previewed and run
    out = StringIO()
    call_command("run_campaign", campaign.slug, "--dry-run", "--no-progress", stdout=out)
    forecast = campaign_dry_run(campaign=campaign)
    campaign_run(campaign=campaign)

    # then the optimiser chose coupons for bargain hunters although their first matching rule gives the free week
    comparison = forecast.comparison
    assert isinstance(comparison, Comparison)
    assert not comparison.falls_back_to_rules and comparison.optimised_by_model > 0
    offers = list(Offer.objects.filter(campaign=campaign).values_list("user_id", "kind"))
    coupons = {user for user, kind in offers if kind == "coupon"}
    free_weeks = {user for user, kind in offers if kind == "free_viewing"}
    assert coupons and coupons <= world["bargain"]
    # and no bargain hunter got the free week: its model is never used, and the coupon's applies to all of them
    assert not free_weeks & world["bargain"]
    # and the film watchers, to whom no trusted package applies, got what the rules give: the free week,
    # a fifth of them held out by the rules' draw
    others = {user.pk for user in world["users"]} - world["bargain"]
    assert len(free_weeks) >= 0.7 * len(others)
    held = set(
        CampaignAssignment.objects.filter(campaign=campaign, arm=CampaignAssignment.HOLDOUT).values_list(
            "user_id", flat=True
        )
    )
    assert 0.1 <= len(held & others) / len(others) <= 0.3
    campaign.refresh_from_db()
    assert campaign.spent <= campaign.budget
    # and the preview says which package's model is not used and how many users the rules choose for
    assert comparison.ruled_packages == ["free_viewing"]
    assert comparison.ruled_users == len(others)
    text = out.getvalue()
    assert f"the rules choose for the {len(others):,} users to whom no trusted package applies" in text
    assert "the model of free_viewing is not used" in text
    assert re.search(
        r"free_viewing: held-out Qini coefficient -?[\d.]+, 9[\d.]+% interval \[.*\] does not lie above zero", text
    )


def test_without_an_uplift_model_optimise_mode_says_how_to_train_one_and_rules_still_preview(world):
    campaign = _optimised(world)
    with pytest.raises(ApplicationError, match="train --model uplift"):
        campaign_dry_run(campaign=campaign)
    # an issuing chunk refuses to guess without the run's plan
    uplift_train()
    with pytest.raises(ApplicationError, match="run it with run_campaign"):
        campaign_issue_chunk(campaign_id=campaign.pk, id_range=(0, 10**9))

    ModelRun.objects.filter(model=ModelRun.Model.UPLIFT).update(is_active=False)
    campaign.mode = Campaign.Mode.RULES
    campaign.save()
    forecast = campaign_dry_run(campaign=campaign)
    assert forecast.comparison is None and forecast.comparison_missing is not None
    assert "train --model uplift" in forecast.comparison_missing
    assert forecast.offers > 0


def test_report_and_dashboard_show_each_uplift_models_qini_curve_and_auuc(world, admin_client):
    # given uplift learned from the pilot
    uplift_train()

    # when the pilot's report is read as data, text and CSV, and the dashboard is opened
    report = campaign_report(campaign=world["experiment"])
    data = report.to_dict()["uplift_models"]
    text, table = render_text(report), render_csv(report)
    page = admin_client.get(reverse("admin-dashboard")).content.decode()

    # then every model's AUUC and Qini curve are there
    assert data["learned_from_this_campaign"]
    assert {model["method"] for model in data["models"]} == {"t_learner", "transformed_outcome", "x_learner"}
    for model in data["models"]:
        assert len(model["qini_curve"]["qini"]) == 21 and model["auuc"] > model["auuc_random"]
        assert f"{model['method']} coupon: AUUC {model['auuc']:.4f}" in text
        assert f"uplift_model,{model['method']}:coupon," in table
    assert "qini_curve,t_learner:coupon@1.00," in table
    assert re.search(r'data-chart="line"[^>]*aria-label="[^"]*coupon[^"]*Qini', page) or re.search(
        r'data-chart="line"[^>]*aria-label="[^"]*Qini[^"]*coupon', page
    )
    assert (
        len(
            re.findall(r'<polyline class="series"[^>]*><title>(?:t_learner|x_learner|transformed_outcome)\W+AUUC', page)
        )
        == 3
    )
