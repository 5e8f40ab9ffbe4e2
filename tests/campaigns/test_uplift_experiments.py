"""Past campaigns read as uplift experiments: the rows are the same whatever order the database stored them in."""

import pytest

from campaigns.models import CampaignAssignment
from campaigns.selectors.uplift_experiments import uplift_experiments
from tests.factories import CampaignFactory, EndUserFactory, OfferFactory, PartnerFactory, RuleFactory

USERS = 40


@pytest.mark.django_db
def test_an_experiments_rows_come_in_user_order_whatever_order_its_assignments_were_stored_in():
    # given a campaign with a holdout whose assignments were stored latest user first, as a database that
    # reuses free space after earlier work may return them (the models and their bootstrap see rows in order)
    partner = PartnerFactory.create()
    campaign = CampaignFactory.create(owner=partner)
    rule = RuleFactory.create(campaign=campaign)
    users = EndUserFactory.create_batch(USERS, home_partner=partner)
    held = {user.pk for user in users[::4]}
    CampaignAssignment.objects.bulk_create(
        CampaignAssignment(
            campaign=campaign,
            user=user,
            arm=CampaignAssignment.HOLDOUT if user.pk in held else "treated",
            rule=rule,
        )
        for user in reversed(users)
    )
    for user in reversed(users):
        if user.pk not in held:
            OfferFactory.create(campaign=campaign, user=user, rule=rule, partner=partner)

    # when the campaign is read as an uplift experiment
    (experiment,), skipped = uplift_experiments(campaigns=[campaign])

    # then its rows are every assigned user's, in id order, held-out users as the control
    assert not skipped
    ids = experiment.rows["user_id"].tolist()
    assert ids == sorted(user.pk for user in users)
    assert set(experiment.rows.loc[experiment.rows["role"] == "control", "user_id"]) == held
