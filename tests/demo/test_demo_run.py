"""Playing the demo campaigns: a campaign that reaches nobody plays as an empty one."""

import pytest
from django.utils import timezone

from campaigns.rules import to_json, validate_text

DATABASE_USERS = 1_500
SEED = 11

pytestmark = pytest.mark.django_db


def test_a_demo_campaign_that_reaches_nobody_plays_with_no_outcomes(demo_world):
    # given a started demo campaign whose rules match no one (no propensity scores exist yet)
    from campaigns.models import Campaign
    from campaigns.selectors.rule_fields import condition_registry
    from demo.models import DemoWorld
    from demo.services.play import demo_campaign_play

    campaign = (
        Campaign.objects.filter(starts_at__lte=timezone.now(), kind=Campaign.Kind.RULES).order_by("starts_at").first()
    )
    assert campaign is not None
    campaign.rules.update(condition=to_json(validate_text("propensity >= 0.5", condition_registry())))
    world = DemoWorld.objects.get()

    # when it is played
    result = demo_campaign_play(campaign=campaign, truth=world.truth, seed=world.seed, now=timezone.now())

    # then it issues nothing and records no conversions, rather than failing
    assert result["issued"] == 0 and result["converted"] == 0 and result["revenue"] == "0.00"
    assert not campaign.assignments.exists()
