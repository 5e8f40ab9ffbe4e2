"""The campaign report recovers the planted treatment effects, and its intervals cover them as often as they claim."""

import numpy as np
import pandas as pd
import pytest

from analytics.stats.effects import conversion_uplift
from demo.world.catalog import demo_catalog
from demo.world.generator import iter_world
from demo.world.truth import (
    expected_campaign_uplift,
    planted_truth,
    simulate_campaign_outcomes,
)

CAMPAIGN = "member-day-rewards"


def test_intervals_cover_the_planted_uplift_about_95_times_in_100():
    # given one demo world and one random 10% holdout of it
    users = pd.concat([chunk.users for chunk in iter_world(n_users=20_000, seed=11)], ignore_index=True)
    truth = planted_truth(n_users=20_000, seed=11)
    rng = np.random.default_rng(0)
    holdout = rng.random(len(users)) < 0.10
    treated = ~holdout
    key = demo_catalog().campaign(CAMPAIGN).rules[1].effect_key
    segments = users["latent_segment"].to_numpy()
    expected = expected_campaign_uplift(truth, CAMPAIGN, segments, treated, holdout, key)["conversion_uplift"]

    # when the campaign's outcomes are drawn from the planted effects under 100 seeds
    covered = 0
    for seed in range(100):
        converted, _ = simulate_campaign_outcomes(truth, CAMPAIGN, segments, treated, key, np.random.default_rng(seed))
        result = conversion_uplift(
            int(converted[treated].sum()), int(treated.sum()), int(converted[holdout].sum()), int(holdout.sum())
        )
        covered += result.difference_lower <= expected <= result.difference_upper

    # then the 95% intervals cover the truth between 90 and 99 times
    assert 90 <= covered <= 99, covered


@pytest.mark.django_db
def test_each_played_demo_campaign_reports_its_planted_effect_within_three_standard_errors():
    from analytics.services.features import features_build
    from campaigns.models import Campaign, CampaignAssignment
    from campaigns.reports.campaign_report import campaign_report
    from demo.models import DemoWorld, PlantedUser
    from demo.services.play import _effect_keys, demo_campaigns_play
    from demo.services.world_load import demo_world_load

    # given a demo world whose campaigns were played, outcomes drawn from the truth
    demo_world_load(n_users=8000, seed=5)
    features_build(full=True)
    played = [p for p in demo_campaigns_play() if "refused" not in p and p["campaign"] != "double12-flash-sale"]
    assert played
    truth = DemoWorld.objects.get().truth
    checked = 0
    for result in played:
        campaign = Campaign.objects.get(slug=result["campaign"])
        report = campaign_report(campaign=campaign).to_dict()
        if not report["uplift"]:
            continue
        conversion = report["uplift"]["comparisons"][0]["conversion"]
        assignments = pd.DataFrame(
            CampaignAssignment.objects.filter(campaign=campaign).values("user_id", "arm", "rule_id")
        )
        segments = assignments["user_id"].map(dict(PlantedUser.objects.values_list("user_id", "segment")))
        holdout = (assignments["arm"] == "holdout").to_numpy()
        expected = expected_campaign_uplift(
            truth,
            campaign.slug,
            segments.to_numpy(),
            ~holdout,
            holdout,
            assignments["rule_id"].map(_effect_keys(campaign)).to_numpy(),
        )
        # then the measured uplift lies within three standard errors of what was planted
        assert abs(conversion["difference"] - expected["conversion_uplift"]) <= 3 * conversion["standard_error"], (
            campaign.slug
        )
        # and so does the CUPED-adjusted uplift, within three of its own (smaller or equal) standard errors
        cuped = report["uplift"]["comparisons"][0]["cuped"]["conversion"]
        assert abs(cuped["estimate"] - expected["conversion_uplift"]) <= 3 * cuped["standard_error"], campaign.slug
        assert cuped["standard_error"] <= cuped["unadjusted_standard_error"] * 1.01
        checked += 1
    assert checked >= 3
